//! The contract of the catalog service: its resources, the admin requests, and
//! [`CatalogClient`], the typed client other services use to read items and prices.
//!
//! Money is always an integer number of minor units (cents) with a currency code.
#![warn(missing_docs)]

use http::{HeaderMap, Method, StatusCode};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tideway_bus::EventType;
use tideway_client::{ClientError, JsonClient, Transport};

/// The service's name (metrics, logs, routes).
pub const SERVICE: &str = "catalog";
/// The path prefix of every catalog endpoint.
pub const PREFIX: &str = "/api/v1/catalog";

/// A catalog item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
pub struct Item {
    /// The item id (a UUID).
    pub id: String,
    /// The stock-keeping unit, unique.
    pub sku: String,
    /// The name.
    pub name: String,
    /// The description.
    pub description: String,
    /// The brand.
    pub brand: String,
    /// The category's id (a slug such as `coffee`).
    pub category: String,
    /// The unit price in minor units.
    pub price_minor: i64,
    /// The ISO 4217 currency code.
    pub currency: String,
    /// Units that can still be ordered: the catalog's copy of the inventory's `available`,
    /// following its `tideway.inventory.level-changed` events (so within moments of a
    /// reservation).
    pub stock: i64,
    /// Whether no unit can be ordered (`stock` is 0): the item is shown "sold out" and
    /// cannot be added to a basket.
    #[serde(default)]
    pub sold_out: bool,
    /// A monotonically increasing version, bumped by every change.
    pub version: i64,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// Last change, RFC 3339.
    pub updated_at: String,
}

/// A page of items.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ItemPage {
    /// The items on this page.
    pub items: Vec<Item>,
    /// The page number, from 1.
    pub page: u32,
    /// The page size.
    pub page_size: u32,
    /// Items matching the filters, over all pages.
    pub total: u64,
}

/// A category.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Category {
    /// The slug id.
    pub id: String,
    /// The display name.
    pub name: String,
    /// Items in the category.
    pub item_count: u64,
}

/// The body of `POST /api/v1/catalog/items` (admin).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NewItem {
    /// Unique SKU: 3–32 characters of letters, digits and `-`.
    #[schema(min_length = 3, max_length = 32, pattern = "^[A-Za-z0-9-]+$")]
    pub sku: String,
    /// 1–120 characters.
    #[schema(min_length = 1, max_length = 120)]
    pub name: String,
    /// Up to 2000 characters.
    #[serde(default)]
    #[schema(max_length = 2000)]
    pub description: String,
    /// 1–60 characters.
    #[schema(min_length = 1, max_length = 60)]
    pub brand: String,
    /// An existing category id.
    pub category: String,
    /// 1 to 100,000,000 minor units.
    #[schema(minimum = 1, maximum = 100_000_000)]
    pub price_minor: i64,
    /// A three-letter uppercase code; only the shop's currency is accepted.
    #[serde(default = "default_currency")]
    #[schema(pattern = "^[A-Z]{3}$")]
    pub currency: String,
    /// 0 to 1,000,000.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1_000_000)]
    pub stock: i64,
}

/// The body of `PUT /api/v1/catalog/items/{id}` (admin): every field optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ItemUpdate {
    /// New name.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 120)]
    pub name: Option<String>,
    /// New description.
    #[serde(default)]
    #[schema(max_length = 2000)]
    pub description: Option<String>,
    /// New brand.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 60)]
    pub brand: Option<String>,
    /// New category.
    #[serde(default)]
    pub category: Option<String>,
    /// New stock level.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1_000_000)]
    pub stock: Option<i64>,
}

/// The body of `PUT /api/v1/catalog/items/{id}/price` (admin).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PriceChange {
    /// The new unit price in minor units.
    #[schema(minimum = 1, maximum = 100_000_000)]
    pub price_minor: i64,
}

/// Event: an item was created (admin), with all it has at creation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ItemCreated {
    /// The new item.
    pub item: Item,
}
impl EventType for ItemCreated {
    const SUBJECT: &'static str = "tideway.catalog.item-created";
}

/// Event: an item's description changed (name, description, brand, category), or its
/// read copy of the stock did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ItemChanged {
    /// The item id.
    pub item_id: String,
    /// The item's version after the change.
    pub version: i64,
    /// The units that can still be ordered after the change.
    pub stock: i64,
}
impl EventType for ItemChanged {
    const SUBJECT: &'static str = "tideway.catalog.item-changed";
}

/// Event: an item's price changed (admin).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PriceChanged {
    /// The item id.
    pub item_id: String,
    /// The new unit price in minor units.
    pub price_minor: i64,
    /// The item's version after the change.
    pub version: i64,
}
impl EventType for PriceChanged {
    const SUBJECT: &'static str = "tideway.catalog.price-changed";
}

/// Event: an item was deleted (admin); it can no longer be priced or ordered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ItemDeleted {
    /// The item id.
    pub item_id: String,
}
impl EventType for ItemDeleted {
    const SUBJECT: &'static str = "tideway.catalog.item-deleted";
}

/// The filter matching every catalog event: what caches of catalog answers invalidate on.
pub const EVENTS: &str = "tideway.catalog.*";

/// The item id an event of the catalog concerns, if `event` is one.
pub fn changed_item(event: &tideway_bus::Event) -> Option<String> {
    if let Ok(created) = event.decode::<ItemCreated>() {
        return Some(created.item.id);
    }
    if let Ok(changed) = event.decode::<ItemChanged>() {
        return Some(changed.item_id);
    }
    if let Ok(changed) = event.decode::<PriceChanged>() {
        return Some(changed.item_id);
    }
    event
        .decode::<ItemDeleted>()
        .ok()
        .map(|deleted| deleted.item_id)
}

/// The shop's currency.
pub fn default_currency() -> String {
    "EUR".to_owned()
}

/// The typed client of the catalog service.
#[derive(Debug, Clone)]
pub struct CatalogClient {
    inner: JsonClient,
}

impl CatalogClient {
    /// A client over `transport` (in-process or HTTP).
    pub fn new(transport: Transport) -> Self {
        Self {
            inner: JsonClient::new(transport),
        }
    }

    /// The item `id`, or `None` when the catalog has no such item.
    pub async fn item(&self, id: &str) -> Result<Option<Item>, ClientError> {
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Ok(None);
        }
        match self
            .inner
            .get(&format!("{PREFIX}/items/{id}"), &HeaderMap::new())
            .await
        {
            Ok(item) => Ok(Some(item)),
            Err(err) if err.status() == Some(StatusCode::NOT_FOUND) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// A page of items, with `query` the URL query string (`category=coffee&page=2`).
    pub async fn items(&self, query: &str) -> Result<ItemPage, ClientError> {
        self.inner
            .get(&format!("{PREFIX}/items?{query}"), &HeaderMap::new())
            .await
    }

    /// Every category.
    pub async fn categories(&self) -> Result<Vec<Category>, ClientError> {
        self.inner
            .get(&format!("{PREFIX}/categories"), &HeaderMap::new())
            .await
    }

    /// Changes the price of `id` (needs an admin's bearer token).
    pub async fn change_price(
        &self,
        id: &str,
        price_minor: i64,
        bearer: &str,
    ) -> Result<Item, ClientError> {
        let mut headers = HeaderMap::new();
        let value = format!("Bearer {bearer}")
            .parse()
            .map_err(|_| ClientError::InvalidRequest("the token is not a header value".into()))?;
        headers.insert(http::header::AUTHORIZATION, value);
        self.inner
            .call(
                Method::PUT,
                &format!("{PREFIX}/items/{id}/price"),
                Some(&PriceChange { price_minor }),
                &headers,
            )
            .await
    }
}
