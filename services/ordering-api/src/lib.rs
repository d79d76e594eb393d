//! The contract of the ordering service: orders, the checkout request, and the events an
//! order's life emits. Ordering orchestrates the checkout saga: reserve stock → authorize
//! payment → confirm the order → capture payment, compensating on failure.
#![warn(missing_docs)]

use schemars::JsonSchema;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use tideway_bus::EventType;

/// The service's name.
pub const SERVICE: &str = "ordering";
/// The path prefix of its HTTP API.
pub const PREFIX: &str = "/api/v1/ordering";
/// The checkout endpoint. It lives under the basket's prefix for clients; the gateway routes
/// it to ordering, which reads the basket through the basket's client.
pub const CHECKOUT_PATH: &str = "/api/v1/basket/checkout";

/// An order's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// The saga is running.
    Pending,
    /// Stock is committed, payment is captured or being captured.
    Confirmed,
    /// The saga compensated; `reason` says why.
    Cancelled,
}

/// The body of `POST /api/v1/basket/checkout` (optional: `{}` pays with the approved test card).
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CheckoutRequest {
    /// The card number: 12–19 digits (spaces allowed) with a valid check digit. Defaults to
    /// the approved test card. `Debug` shows `[REDACTED]`.
    #[serde(default, serialize_with = "tideway_payment_api::expose_option")]
    #[schema(value_type = Option<String>, example = "4242 4242 4242 4242")]
    pub card: Option<SecretString>,
}

/// The answer to a checkout: 202 Accepted with the order to watch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CheckoutAccepted {
    /// The new order.
    pub order_id: String,
    /// `pending`.
    pub status: OrderStatus,
    /// Where to watch it: `/api/v1/ordering/orders/{id}`.
    pub href: String,
}

/// One line of an order, with the price snapshotted at checkout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
pub struct OrderLine {
    /// The catalog item id.
    pub item_id: String,
    /// The item's name at checkout.
    pub name: String,
    /// Unit price in minor units at checkout.
    pub unit_price_minor: i64,
    /// Units.
    pub quantity: i64,
}

/// One entry of an order's timeline: a saga step or a compensation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TimelineEntry {
    /// The step, e.g. `reserve_stock`.
    pub step: String,
    /// `action` or `compensation`.
    pub kind: String,
    /// The step's state, e.g. `done`, `failed`, `waiting`.
    pub status: String,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// When it finished (RFC 3339), if it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// A detail, such as a failure's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// An order (`GET /api/v1/ordering/orders/{id}`; the list omits `timeline`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderView {
    /// The order id.
    pub id: String,
    /// The buyer (JWT subject).
    pub user_id: String,
    /// The state.
    pub status: OrderStatus,
    /// Why it was cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The lines.
    pub lines: Vec<OrderLine>,
    /// Total in minor units.
    pub total_minor: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// Created (RFC 3339).
    pub created_at: String,
    /// Last change (RFC 3339).
    pub updated_at: String,
    /// The trace id of the checkout request, to find every log line of the order.
    pub trace_id: String,
    /// The saga's steps with their times (only on the single-order endpoint).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<TimelineEntry>,
}

/// Event: an order was placed (the saga starts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderPlaced {
    /// The order.
    pub order_id: String,
    /// The buyer.
    pub user_id: String,
    /// The lines.
    pub lines: Vec<OrderLine>,
    /// Total in minor units.
    pub total_minor: i64,
    /// The buyer's email address (from their access token), where notifications go.
    /// Added later: absent from events written before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}
impl EventType for OrderPlaced {
    const SUBJECT: &'static str = "tideway.ordering.order-placed";
}

/// Event: an order is confirmed (the basket clears these lines; reporting counts the sale).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderConfirmed {
    /// The order.
    pub order_id: String,
    /// The buyer.
    pub user_id: String,
    /// The lines.
    pub lines: Vec<OrderLine>,
    /// Total in minor units.
    pub total_minor: i64,
}
impl EventType for OrderConfirmed {
    const SUBJECT: &'static str = "tideway.ordering.order-confirmed";
}

/// Event: an order is cancelled, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderCancelled {
    /// The order.
    pub order_id: String,
    /// The buyer.
    pub user_id: String,
    /// Why: out of stock, payment declined, a step timed out.
    pub reason: String,
}
impl EventType for OrderCancelled {
    const SUBJECT: &'static str = "tideway.ordering.order-cancelled";
}

/// A checkout saga instance as the operations console shows it (`GET /api/v1/ordering/sagas`,
/// admins only), with its order's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SagaView {
    /// The instance id, which is the order id.
    pub id: String,
    /// The saga definition's name, e.g. `checkout`.
    pub saga: String,
    /// Where the saga stands: `running`, `compensating`, `completed`, `compensated` or
    /// `failed` (a compensation failed: the order needs an operator).
    pub status: String,
    /// The step whose action (running) or compensation (compensating) is next or under way;
    /// absent once the saga has ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_step: Option<String>,
    /// Whether the current step sent a command and waits for its reply.
    pub waiting: bool,
    /// The order's state; absent when the order row is missing (it should not be).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_status: Option<OrderStatus>,
    /// Why the saga is compensating or ended as it did (the saga's own reason, else the
    /// order's cancellation reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The trace id of the order's checkout request, to find every log line of the saga.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// When the saga started (RFC 3339).
    pub created_at: String,
    /// When the saga last changed (RFC 3339).
    pub updated_at: String,
    /// Every action and compensation started, in order, with its times.
    pub steps: Vec<TimelineEntry>,
}

/// The most recently started checkout sagas (`GET /api/v1/ordering/sagas?limit=N`), newest
/// first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SagaPage {
    /// The instances, newest first; at most `limit`.
    pub items: Vec<SagaView>,
    /// The limit applied (20 unless asked, at most 100).
    pub limit: u32,
}

/// One page of the caller's orders (`GET /api/v1/ordering/orders`), newest first; the orders
/// carry no timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderPage {
    /// The orders on this page.
    pub items: Vec<OrderView>,
    /// The page number, from 1.
    pub page: u32,
    /// The page size.
    pub page_size: u32,
    /// The caller's orders over all pages.
    pub total: u64,
}
