//! The contract of the reporting service: read models built only from events (CQRS), as
//! its admin API shows them — sales per item per day, revenue per day, the order funnel
//! and the top items.
//!
//! The service consumes `tideway.ordering.order-placed`, `…order-confirmed` and
//! `…order-cancelled`; it emits none. Days are UTC calendar days (`YYYY-MM-DD`) of the
//! event's time; amounts are in minor units.
#![warn(missing_docs)]

use serde::{Deserialize, Serialize};

/// The service's name (and its consumer name on the bus).
pub const SERVICE: &str = "reporting";
/// The path prefix of its HTTP API.
pub const PREFIX: &str = "/api/v1/reporting";
/// Sales per item per day (admin role).
pub const SALES_PATH: &str = "/api/v1/reporting/sales";
/// Revenue per day (admin role).
pub const REVENUE_PATH: &str = "/api/v1/reporting/revenue";
/// The order funnel (admin role).
pub const FUNNEL_PATH: &str = "/api/v1/reporting/funnel";
/// The best-selling items (admin role).
pub const TOP_ITEMS_PATH: &str = "/api/v1/reporting/top-items";
/// The default number of top items.
pub const DEFAULT_TOP: u32 = 10;
/// The most top items listed at once.
pub const MAX_TOP: u32 = 100;

/// One item's sales on one day (from `OrderConfirmed` lines).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SalesRow {
    /// The UTC day, `YYYY-MM-DD`.
    pub day: String,
    /// The catalog item.
    pub item_id: String,
    /// Its name as last sold.
    pub name: String,
    /// Units sold.
    pub units: i64,
    /// Revenue: unit price × quantity, summed, in minor units.
    pub revenue_minor: i64,
}

/// Sales per item per day, oldest day first (then by item).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SalesReport {
    /// The rows.
    pub rows: Vec<SalesRow>,
}

/// One day's confirmed orders and their revenue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RevenueDay {
    /// The UTC day, `YYYY-MM-DD`.
    pub day: String,
    /// Orders confirmed that day.
    pub orders: i64,
    /// The sum of their totals, in minor units.
    pub revenue_minor: i64,
}

/// Revenue per day, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RevenueReport {
    /// The days that had a confirmed order.
    pub days: Vec<RevenueDay>,
}

/// Orders cancelled for one reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CancelReason {
    /// The reason, as `OrderCancelled.reason` gives it.
    pub reason: String,
    /// How many orders.
    pub orders: i64,
}

/// The order funnel: placed → confirmed, or cancelled (by reason).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Funnel {
    /// Orders placed.
    pub placed: i64,
    /// Orders confirmed.
    pub confirmed: i64,
    /// Orders cancelled.
    pub cancelled: i64,
    /// The cancelled orders by reason, most frequent first.
    pub cancelled_by_reason: Vec<CancelReason>,
}

/// One item's sales over the days asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TopItem {
    /// The catalog item.
    pub item_id: String,
    /// Its name as last sold.
    pub name: String,
    /// Units sold.
    pub units: i64,
    /// Revenue in minor units.
    pub revenue_minor: i64,
}

/// The best-selling items by units, most first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TopItems {
    /// The items; at most `limit`.
    pub items: Vec<TopItem>,
    /// The limit applied.
    pub limit: u32,
}
