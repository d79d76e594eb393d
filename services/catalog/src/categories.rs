//! Categories with their item counts, and the brands in the catalog.

use axum::{Router, extract::State, http::HeaderMap, response::Response, routing::get};

use tideway_catalog_api::Category;

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

/// Every category with its number of items.
#[utoipa::path(
    get,
    path = "/api/v1/catalog/categories",
    tag = "catalog",
    responses(
        (status = 200, description = "The categories", body = Vec<Category>),
        (status = 304, description = "Unchanged since the `If-None-Match` ETag"),
    )
)]
pub(crate) async fn list_categories(
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

/// Every brand in the catalog, sorted.
#[utoipa::path(
    get,
    path = "/api/v1/catalog/brands",
    tag = "catalog",
    responses(
        (status = 200, description = "The brands", body = Vec<String>),
        (status = 304, description = "Unchanged since the `If-None-Match` ETag"),
    )
)]
pub(crate) async fn list_brands(
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
