//! The contract of the basket service: its resources, its requests, and [`BasketClient`],
//! the typed client other services (ordering, at checkout) use to read and clear a
//! user's basket.
//!
//! A basket belongs to the user named by the bearer token's subject; every call takes
//! that token. Money is an integer number of minor units (cents) with a currency code.
#![warn(missing_docs)]

use http::{HeaderMap, HeaderValue, Method, header};
use serde::{Deserialize, Serialize};
use tideway_client::{ClientError, JsonClient, Transport};

/// The service's name (metrics, logs, routes).
pub const SERVICE: &str = "basket";
/// The path prefix of every basket endpoint.
pub const PREFIX: &str = "/api/v1/basket";
/// The largest quantity of one item in a basket.
pub const MAX_QUANTITY: i64 = 99;

/// A user's basket, priced with the catalog's current prices (or, while the catalog does
/// not answer, the last prices seen, each line saying so).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BasketView {
    /// The lines, oldest first.
    pub items: Vec<BasketLine>,
    /// The sum of every line total, in minor units.
    pub total_minor: i64,
    /// The ISO 4217 currency code of every amount.
    pub currency: String,
    /// The number of units in the basket (the sum of the quantities).
    pub item_count: i64,
}

/// One item of a basket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BasketLine {
    /// The catalog item id.
    pub item_id: String,
    /// The item's name.
    pub name: String,
    /// The current unit price in minor units.
    pub unit_price_minor: i64,
    /// How many units, 1 to [`MAX_QUANTITY`].
    pub quantity: i64,
    /// `unit_price_minor × quantity`.
    pub line_total_minor: i64,
    /// Whether the catalog has at least `quantity` units in stock.
    pub available: bool,
    /// Whether `unit_price_minor` is the catalog's price now; `false` while the catalog does
    /// not answer, when it is the price last seen (and the line is not `available`).
    #[serde(default = "current")]
    pub price_current: bool,
    /// Whether the item is sold out (no unit left): the line cannot be checked out until it
    /// is removed or the item is back in stock.
    #[serde(default)]
    pub sold_out: bool,
    /// Whether the catalog no longer has the item: the line is not priced (its total is 0
    /// and it adds nothing to the basket's) and cannot be checked out; remove it.
    #[serde(default)]
    pub deleted: bool,
}

fn current() -> bool {
    true
}

/// The body of `POST /api/v1/basket/items`: adds `quantity` units to the line of `item_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AddItem {
    /// The catalog item id.
    #[schema(min_length = 1, max_length = 64)]
    pub item_id: String,
    /// Units to add, 1 to [`MAX_QUANTITY`]; the line's total may not pass it either.
    #[schema(minimum = 1, maximum = 99)]
    pub quantity: i64,
}

/// The body of `PUT /api/v1/basket/items/{item_id}`: sets the line's quantity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SetQuantity {
    /// The new quantity, 1 to [`MAX_QUANTITY`].
    #[schema(minimum = 1, maximum = 99)]
    pub quantity: i64,
}

/// The typed client of the basket service.
#[derive(Debug, Clone)]
pub struct BasketClient {
    inner: JsonClient,
}

impl BasketClient {
    /// A client over `transport` (in-process or HTTP).
    pub fn new(transport: Transport) -> Self {
        Self {
            inner: JsonClient::new(transport),
        }
    }

    /// The basket of the token's user.
    pub async fn get(&self, bearer: &str) -> Result<BasketView, ClientError> {
        self.inner.get(PREFIX, &auth(bearer)?).await
    }

    /// Adds `quantity` units of `item_id` to the basket.
    pub async fn add(
        &self,
        bearer: &str,
        item_id: &str,
        quantity: i64,
    ) -> Result<BasketView, ClientError> {
        let body = AddItem {
            item_id: item_id.to_owned(),
            quantity,
        };
        self.inner
            .call(
                Method::POST,
                &format!("{PREFIX}/items"),
                Some(&body),
                &auth(bearer)?,
            )
            .await
    }

    /// Sets the quantity of the line of `item_id`.
    pub async fn set_quantity(
        &self,
        bearer: &str,
        item_id: &str,
        quantity: i64,
    ) -> Result<BasketView, ClientError> {
        self.inner
            .call(
                Method::PUT,
                &item_path(item_id),
                Some(&SetQuantity { quantity }),
                &auth(bearer)?,
            )
            .await
    }

    /// Removes the line of `item_id`.
    pub async fn remove(&self, bearer: &str, item_id: &str) -> Result<BasketView, ClientError> {
        self.inner
            .call::<(), _>(Method::DELETE, &item_path(item_id), None, &auth(bearer)?)
            .await
    }

    /// Empties the basket.
    pub async fn clear(&self, bearer: &str) -> Result<(), ClientError> {
        self.inner
            .call::<(), ()>(Method::DELETE, PREFIX, None, &auth(bearer)?)
            .await
    }
}

fn auth(bearer: &str) -> Result<HeaderMap, ClientError> {
    let value = HeaderValue::try_from(format!("Bearer {bearer}"))
        .map_err(|_| ClientError::InvalidRequest("the token is not a header value".into()))?;
    let mut headers = HeaderMap::new();
    headers.insert(header::AUTHORIZATION, value);
    Ok(headers)
}

/// The path of one line, with the id percent-encoded so any id stays one path segment.
fn item_path(item_id: &str) -> String {
    let mut path = format!("{PREFIX}/items/");
    for byte in item_id.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            path.push(char::from(byte));
        } else {
            path.push_str(&format!("%{byte:02X}"));
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_paths_keep_one_segment() {
        assert_eq!(item_path("abc-1"), "/api/v1/basket/items/abc-1");
        assert_eq!(item_path("a/b c"), "/api/v1/basket/items/a%2Fb%20c");
    }

    #[test]
    fn views_round_trip_as_json() {
        let view = BasketView {
            items: vec![BasketLine {
                item_id: "i1".into(),
                name: "Beans".into(),
                unit_price_minor: 1250,
                quantity: 2,
                line_total_minor: 2500,
                available: true,
                price_current: true,
                sold_out: false,
                deleted: false,
            }],
            total_minor: 2500,
            currency: "EUR".into(),
            item_count: 2,
        };
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["items"][0]["line_total_minor"], 2500);
        assert_eq!(serde_json::from_value::<BasketView>(json).unwrap(), view);
    }

    #[test]
    fn refuses_tokens_that_are_not_header_values() {
        assert!(matches!(auth("a\nb"), Err(ClientError::InvalidRequest(_))));
    }
}
