//! Items: browsing (`GET /items`, `GET /items/{id}`) for everyone, and creating, changing,
//! repricing and deleting for admins.

pub mod list;
pub mod repo;
pub mod validate;

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, put},
};
use tideway_catalog_api::{Item, ItemPage, ItemUpdate, NewItem, PREFIX, PriceChange};
use tideway_runtime::{
    Problem,
    auth::AdminUser,
    extract::{Json, Path, Query},
};

use crate::{
    AppState,
    cache::{CATALOG_CACHE_CONTROL, render, respond},
    error::ApiError,
};
use list::{ListParams, ListQuery};

/// The item routes, relative to the catalog's prefix.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/items", get(list_items).post(create_item))
        .route(
            "/items/{id}",
            get(get_item).put(update_item).delete(delete_item),
        )
        .route("/items/{id}/price", put(change_price))
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("no item with id {id}"))
}

/// Checks that `id` can name an item; a malformed id names none (404, like an unknown one).
fn item_id(id: &str) -> Result<&str, ApiError> {
    if validate::is_item_id(id) {
        Ok(id)
    } else {
        Err(not_found(id))
    }
}

/// A page of items: filtered, searched, sorted; or the items named by `ids`.
#[utoipa::path(
    get,
    path = "/api/v1/catalog/items",
    tag = "catalog",
    params(ListParams),
    responses(
        (status = 200, description = "A page of items", body = ItemPage),
        (status = 304, description = "Unchanged since the `If-None-Match` ETag"),
        (status = 400, response = Problem),
    )
)]
pub(crate) async fn list_items(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    let query = ListQuery::try_from(params)?;
    let key = format!("{query:?}");
    let rendered = state
        .caches
        .list
        .get_or_load(&key, || async {
            let (items, total) = repo::list(&state.db, &query).await?;
            let page = ItemPage {
                items,
                page: query.page,
                page_size: query.page_size,
                total,
            };
            render(&page).map(Some)
        })
        .await?
        .ok_or(ApiError::Serialize)?;
    respond(&headers, rendered, CATALOG_CACHE_CONTROL)
}

/// One item.
#[utoipa::path(
    get,
    path = "/api/v1/catalog/items/{id}",
    tag = "catalog",
    params(("id" = String, Path, description = "The item id")),
    responses(
        (status = 200, description = "The item", body = Item),
        (status = 304, description = "Unchanged since the `If-None-Match` ETag"),
        (status = 404, response = Problem),
    )
)]
pub(crate) async fn get_item(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = item_id(&id)?;
    let rendered = state
        .caches
        .item
        .get_or_load(id, || async {
            match repo::get(&state.db, id).await? {
                Some(item) => render(&item).map(Some),
                None => Ok(None),
            }
        })
        .await?
        .ok_or_else(|| not_found(id))?;
    respond(&headers, rendered, CATALOG_CACHE_CONTROL)
}

/// Creates an item (admins).
#[utoipa::path(
    post,
    path = "/api/v1/catalog/items",
    tag = "catalog",
    request_body = NewItem,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The new item", body = Item),
        (status = 400, response = Problem),
        (status = 401, response = Problem),
        (status = 403, response = Problem),
        (status = 409, response = Problem),
        (status = 413, response = Problem),
        (status = 415, response = Problem),
        (status = 422, response = Problem),
    )
)]
pub(crate) async fn create_item(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Json(new): Json<NewItem>,
) -> Result<Response, ApiError> {
    let new = validate::new_item(new)?;
    let id = uuid::Uuid::now_v7().to_string();
    let item = repo::insert(&state.db, &id, &new).await?;
    state.waker.wake();
    state.caches.item_changed(&item.id).await;
    tracing::info!(id = %item.id, sku = %item.sku, admin = %admin.sub, "item created");
    let location = HeaderValue::from_str(&format!("{PREFIX}/items/{}", item.id))
        .map_err(|_| ApiError::Serialize)?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(item),
    )
        .into_response())
}

/// Changes an item's description, category or stock (admins).
#[utoipa::path(
    put,
    path = "/api/v1/catalog/items/{id}",
    tag = "catalog",
    params(("id" = String, Path, description = "The item id")),
    request_body = ItemUpdate,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The changed item", body = Item),
        (status = 400, response = Problem),
        (status = 401, response = Problem),
        (status = 403, response = Problem),
        (status = 404, response = Problem),
        (status = 409, response = Problem),
        (status = 413, response = Problem),
        (status = 415, response = Problem),
        (status = 422, response = Problem),
    )
)]
pub(crate) async fn update_item(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<String>,
    Json(update): Json<ItemUpdate>,
) -> Result<Json<Item>, ApiError> {
    let id = item_id(&id)?;
    let update = validate::update(update)?;
    let item = repo::update(&state.db, id, &update)
        .await?
        .ok_or_else(|| not_found(id))?;
    state.waker.wake();
    state.caches.item_changed(&item.id).await;
    tracing::info!(id = %item.id, version = item.version, admin = %admin.sub, "item updated");
    Ok(Json(item))
}

/// Changes an item's price (admins).
#[utoipa::path(
    put,
    path = "/api/v1/catalog/items/{id}/price",
    tag = "catalog",
    params(("id" = String, Path, description = "The item id")),
    request_body = PriceChange,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The repriced item", body = Item),
        (status = 400, response = Problem),
        (status = 401, response = Problem),
        (status = 403, response = Problem),
        (status = 404, response = Problem),
        (status = 413, response = Problem),
        (status = 415, response = Problem),
        (status = 422, response = Problem),
    )
)]
pub(crate) async fn change_price(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<String>,
    Json(change): Json<PriceChange>,
) -> Result<Json<Item>, ApiError> {
    let id = item_id(&id)?;
    let price = validate::price(change.price_minor)?;
    let item = repo::set_price(&state.db, id, price)
        .await?
        .ok_or_else(|| not_found(id))?;
    state.waker.wake();
    state.caches.item_changed(&item.id).await;
    tracing::info!(id = %item.id, price_minor = price, admin = %admin.sub, "price changed");
    Ok(Json(item))
}

/// Deletes an item (admins).
#[utoipa::path(
    delete,
    path = "/api/v1/catalog/items/{id}",
    tag = "catalog",
    params(("id" = String, Path, description = "The item id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, response = Problem),
        (status = 403, response = Problem),
        (status = 404, response = Problem),
    )
)]
pub(crate) async fn delete_item(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = item_id(&id)?;
    if !repo::delete(&state.db, id).await? {
        return Err(not_found(id));
    }
    state.waker.wake();
    state.caches.item_changed(id).await;
    tracing::info!(id, admin = %admin.sub, "item deleted");
    Ok(StatusCode::NO_CONTENT)
}
