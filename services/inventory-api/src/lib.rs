//! The contract of the inventory service: stock per catalog item, and the commands and
//! replies of the checkout saga that concern stock.
//!
//! Every command is keyed by the order id: a command delivered twice has one effect, and the
//! reply is sent again. Reservations are all-or-nothing per order.
#![warn(missing_docs)]

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tideway_bus::EventType;

/// The service's name.
pub const SERVICE: &str = "inventory";
/// The path prefix of its HTTP API.
pub const PREFIX: &str = "/api/v1/inventory";

/// One line of an order: an item and a quantity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
pub struct StockLine {
    /// The catalog item id.
    pub item_id: String,
    /// Units, at least 1.
    pub quantity: i64,
}

/// Stock of one item (`GET /api/v1/inventory/stock/{item_id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StockLevel {
    /// The catalog item id.
    pub item_id: String,
    /// Units that can still be reserved.
    pub available: i64,
    /// Units held by reservations of orders not yet confirmed or cancelled.
    pub reserved: i64,
    /// Units sold (reservations committed by confirmed orders).
    pub committed: i64,
}

/// Command: reserve every line of `order_id`, or none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReserveStock {
    /// The order.
    pub order_id: String,
    /// What to reserve.
    pub lines: Vec<StockLine>,
}
impl EventType for ReserveStock {
    const SUBJECT: &'static str = "tideway.inventory.reserve-stock";
}

/// Command: release the reservation of `order_id` (no-op when there is none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReleaseStock {
    /// The order.
    pub order_id: String,
    /// Why (kept in the reservation's history).
    pub reason: String,
}
impl EventType for ReleaseStock {
    const SUBJECT: &'static str = "tideway.inventory.release-stock";
}

/// Command: turn the reservation of `order_id` into sold stock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CommitStock {
    /// The order.
    pub order_id: String,
}
impl EventType for CommitStock {
    const SUBJECT: &'static str = "tideway.inventory.commit-stock";
}

/// Reply: every line of the order is reserved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StockReserved {
    /// The order.
    pub order_id: String,
}
impl EventType for StockReserved {
    const SUBJECT: &'static str = "tideway.inventory.stock-reserved";
}

/// Reply: the order cannot be reserved; nothing was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StockRejected {
    /// The order.
    pub order_id: String,
    /// The first item short of stock.
    pub item_id: String,
    /// Human-readable, e.g. `only 2 of "Moka pot" left, 3 requested`.
    pub reason: String,
}
impl EventType for StockRejected {
    const SUBJECT: &'static str = "tideway.inventory.stock-rejected";
}

/// Reply: the reservation of the order is released (or there was none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StockReleased {
    /// The order.
    pub order_id: String,
}
impl EventType for StockReleased {
    const SUBJECT: &'static str = "tideway.inventory.stock-released";
}

/// Reply: the reservation of the order is committed (sold).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StockCommitted {
    /// The order.
    pub order_id: String,
}
impl EventType for StockCommitted {
    const SUBJECT: &'static str = "tideway.inventory.stock-committed";
}

/// Event: the stock of an item changed (a reservation took units, a release returned them,
/// an admin set them, or the item was first stocked). Consumers keep a read copy of
/// `available` and apply an event only when its `version` is newer than the one they hold:
/// events may arrive late, twice or out of order, and the copy still ends at the latest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StockLevelChanged {
    /// The catalog item id.
    pub item_id: String,
    /// Units that can still be reserved, after the change.
    pub available: i64,
    /// The stock row's version after the change: strictly increasing per item.
    pub version: i64,
}
impl EventType for StockLevelChanged {
    const SUBJECT: &'static str = "tideway.inventory.level-changed";
}
