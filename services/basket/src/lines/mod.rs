//! Basket lines: the endpoints, their rules and their pricing.

mod pricing;
mod rules;

use self::{
    pricing::Items,
    rules::{ItemId, Quantity, line_too_large},
};
use crate::{
    error::ApiError,
    store::{Added, Store, StoredLine},
};
use axum::{
    Router,
    extract::State as Shared,
    http::StatusCode,
    routing::{get, put},
};
use tideway_basket_api::{AddItem, BasketView, MAX_QUANTITY, PREFIX, SetQuantity};
use tideway_catalog_api::{CatalogClient, Item, default_currency};
use tideway_runtime::{
    Problem,
    auth::AuthUser,
    extract::{Json, Path},
};

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct State {
    pub store: Store,
    pub catalog: CatalogClient,
    /// The catalog's items, cached (invalidated by the catalog's events).
    pub prices: tideway_cache::Cache<Item>,
}

/// The basket's endpoints (without the standard stack).
pub fn routes(state: State) -> Router {
    Router::new()
        .route(PREFIX, get(show).delete(clear))
        .route(&format!("{PREFIX}/items"), axum::routing::post(add))
        .route(
            &format!("{PREFIX}/items/{{item_id}}"),
            put(set).delete(remove),
        )
        .with_state(state)
}

/// `GET /api/v1/basket`: the basket at the catalog's current prices. While the catalog does
/// not answer, the basket still shows: each line at the price last seen, marked
/// `price_current: false` (and not available, so it cannot be checked out).
#[utoipa::path(
    get,
    path = "/api/v1/basket",
    tag = "basket",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The basket at current prices", body = BasketView),
        (status = 401, response = Problem),
        (status = 503, response = Problem),
    )
)]
pub(crate) async fn show(
    Shared(state): Shared<State>,
    AuthUser(user): AuthUser,
) -> Result<Json<BasketView>, ApiError> {
    let lines = state.store.lines(&user.sub).await?;
    let items = match pricing::fetch(&state.catalog, &state.prices, &ids(&lines)).await {
        Ok(items) => items,
        Err(ApiError::CatalogUnavailable(err)) => {
            tracing::warn!(error = %err, "the catalog is unavailable; showing the last prices seen");
            pricing::Items::new()
        }
        Err(err) => return Err(err),
    };
    Ok(Json(pricing::view(&lines, &items)?))
}

/// `POST /api/v1/basket/items`: adds units of an item to its line.
#[utoipa::path(
    post,
    path = "/api/v1/basket/items",
    tag = "basket",
    request_body = AddItem,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The basket with the units added", body = BasketView),
        (status = 400, response = Problem),
        (status = 401, response = Problem),
        (status = 409, response = Problem),
        (status = 413, response = Problem),
        (status = 415, response = Problem),
        (status = 422, response = Problem),
        (status = 503, response = Problem),
    )
)]
pub(crate) async fn add(
    Shared(state): Shared<State>,
    AuthUser(user): AuthUser,
    Json(body): Json<AddItem>,
) -> Result<Json<BasketView>, ApiError> {
    let quantity = Quantity::parse(body.quantity)?.get();
    let item_id = ItemId::parse(body.item_id)?;
    let lines = state.store.lines(&user.sub).await?;
    let held = held(&lines, item_id.as_str());
    // Checked here to spare the catalog a call; the upsert checks again, atomically.
    if held + quantity > MAX_QUANTITY {
        return Err(line_too_large(held + quantity));
    }
    let mut wanted = ids(&lines);
    if held == 0 {
        wanted.push(item_id.as_str());
    }
    let mut items = pricing::fetch(&state.catalog, &state.prices, &wanted).await?;
    let item = known_item(&items, item_id.as_str())?;
    if item.currency != default_currency() {
        return Err(ApiError::invalid(
            "item_id",
            format!("the item is priced in {}", item.currency),
        ));
    }
    if item.sold_out || item.stock <= 0 {
        return Err(ApiError::SoldOut {
            item_id: item.id,
            name: item.name,
        });
    }
    if held + quantity > item.stock {
        return Err(ApiError::InsufficientStock {
            requested: held + quantity,
            stock: item.stock,
        });
    }
    let limit = MAX_QUANTITY.min(item.stock);
    if let Added::Refused { current } = state.store.add(&user.sub, &item, quantity, limit).await? {
        // Another request grew the line meanwhile; say which limit this add would pass.
        let requested = current + quantity;
        return Err(if requested > MAX_QUANTITY {
            line_too_large(requested)
        } else {
            ApiError::InsufficientStock {
                requested,
                stock: item.stock,
            }
        });
    }
    updated(&state, &user.sub, &mut items).await
}

/// `PUT /api/v1/basket/items/{item_id}`: sets the quantity of a line.
#[utoipa::path(
    put,
    path = "/api/v1/basket/items/{item_id}",
    tag = "basket",
    params(("item_id" = String, Path, description = "The catalog item id")),
    request_body = SetQuantity,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The basket with the line changed", body = BasketView),
        (status = 400, response = Problem),
        (status = 401, response = Problem),
        (status = 404, response = Problem),
        (status = 409, response = Problem),
        (status = 413, response = Problem),
        (status = 415, response = Problem),
        (status = 422, response = Problem),
        (status = 503, response = Problem),
    )
)]
pub(crate) async fn set(
    Shared(state): Shared<State>,
    AuthUser(user): AuthUser,
    Path(item_id): Path<String>,
    Json(body): Json<SetQuantity>,
) -> Result<Json<BasketView>, ApiError> {
    let quantity = Quantity::parse(body.quantity)?.get();
    let lines = state.store.lines(&user.sub).await?;
    if held(&lines, &item_id) == 0 {
        return Err(not_in_basket(&item_id));
    }
    let mut items = pricing::fetch(&state.catalog, &state.prices, &ids(&lines)).await?;
    let item = known_item(&items, &item_id)?;
    if item.sold_out || item.stock <= 0 {
        return Err(ApiError::SoldOut {
            item_id: item.id,
            name: item.name,
        });
    }
    if quantity > item.stock {
        return Err(ApiError::InsufficientStock {
            requested: quantity,
            stock: item.stock,
        });
    }
    if !state.store.set(&user.sub, &item, quantity).await? {
        return Err(not_in_basket(&item_id));
    }
    updated(&state, &user.sub, &mut items).await
}

/// `DELETE /api/v1/basket/items/{item_id}`: removes a line.
#[utoipa::path(
    delete,
    path = "/api/v1/basket/items/{item_id}",
    tag = "basket",
    params(("item_id" = String, Path, description = "The catalog item id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The basket without the line", body = BasketView),
        (status = 401, response = Problem),
        (status = 404, response = Problem),
        (status = 503, response = Problem),
    )
)]
pub(crate) async fn remove(
    Shared(state): Shared<State>,
    AuthUser(user): AuthUser,
    Path(item_id): Path<String>,
) -> Result<Json<BasketView>, ApiError> {
    let lines = state.store.lines(&user.sub).await?;
    if held(&lines, &item_id) == 0 {
        return Err(not_in_basket(&item_id));
    }
    // Price the remaining lines first: when the catalog is down, nothing is removed.
    let remaining: Vec<&str> = ids(&lines)
        .into_iter()
        .filter(|id| *id != item_id)
        .collect();
    let mut items = pricing::fetch(&state.catalog, &state.prices, &remaining).await?;
    if !state.store.remove(&user.sub, &item_id).await? {
        return Err(not_in_basket(&item_id));
    }
    updated(&state, &user.sub, &mut items).await
}

/// `DELETE /api/v1/basket`: empties the basket.
#[utoipa::path(
    delete,
    path = "/api/v1/basket",
    tag = "basket",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "The basket is empty"),
        (status = 401, response = Problem),
        (status = 503, response = Problem),
    )
)]
pub(crate) async fn clear(
    Shared(state): Shared<State>,
    AuthUser(user): AuthUser,
) -> Result<StatusCode, ApiError> {
    state.store.clear(&user.sub).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The basket after a write, priced with the answers gathered before it.
async fn updated(
    state: &State,
    user: &str,
    items: &mut Items,
) -> Result<Json<BasketView>, ApiError> {
    let lines = state.store.lines(user).await?;
    pricing::complete(&state.catalog, &state.prices, &lines, items).await;
    Ok(Json(pricing::view(&lines, items)?))
}

fn ids(lines: &[StoredLine]) -> Vec<&str> {
    lines.iter().map(|line| line.item_id.as_str()).collect()
}

fn held(lines: &[StoredLine], item_id: &str) -> i64 {
    lines
        .iter()
        .find(|line| line.item_id == item_id)
        .map_or(0, |line| line.quantity)
}

fn known_item(items: &Items, item_id: &str) -> Result<Item, ApiError> {
    items
        .get(item_id)
        .cloned()
        .flatten()
        .ok_or_else(|| ApiError::invalid("item_id", "the catalog has no such item"))
}

fn not_in_basket(item_id: &str) -> ApiError {
    ApiError::NotFound(format!("item {item_id} is not in the basket"))
}
