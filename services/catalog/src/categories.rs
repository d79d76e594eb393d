//! Categories with their item counts, and the brands in the catalog.

use axum::{Router, extract::State, http::HeaderMap, response::Response, routing::get};

use crate::{
    AppState,
    cache::{CATALOG_CACHE_CONTROL, cached_json},
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
    let categories = repo::categories(&state.db).await?;
    cached_json(&headers, &categories, CATALOG_CACHE_CONTROL)
}

async fn list_brands(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let brands = repo::brands(&state.db).await?;
    cached_json(&headers, &brands, CATALOG_CACHE_CONTROL)
}
