//! Categories with their item counts, and the brands in the catalog.

use axum::{Router, extract::State, http::HeaderMap, response::Response, routing::get};

use crate::{
    AppState,
    cache::{CATALOG_CACHE_CONTROL, render, respond},
    error::ApiError,
    items::repo,
};

/// The category and brand routes, relative to the catalog's prefix.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/categories", get(list_categories))
        .route("/brands", get(list_brands))
}

async fn list_categories(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let rendered = state
        .caches
        .categories
        .get_or_load("all", || async {
            render(&repo::categories(&state.db).await?).map(Some)
        })
        .await?
        .ok_or(ApiError::Serialize)?;
    respond(&headers, rendered, CATALOG_CACHE_CONTROL)
}

async fn list_brands(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let rendered = state
        .caches
        .brands
        .get_or_load("all", || async {
            render(&repo::brands(&state.db).await?).map(Some)
        })
        .await?
        .ok_or(ApiError::Serialize)?;
    respond(&headers, rendered, CATALOG_CACHE_CONTROL)
}
