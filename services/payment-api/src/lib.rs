//! The contract of the payment service: authorize, capture, void and refund against a
//! simulated card provider, and the saga commands and replies that drive them.
//!
//! Every command carries an idempotency key; the same key never charges twice and always
//! gets the same reply.
#![warn(missing_docs)]

use serde::{Deserialize, Serialize};
use tideway_bus::EventType;

/// The service's name.
pub const SERVICE: &str = "payment";
/// The path prefix of its HTTP API.
pub const PREFIX: &str = "/api/payment";

/// A test card that is always approved (the default when a checkout names no card).
pub const APPROVED_CARD: &str = "4242424242424242";
/// A test card that is always declined ("card declined").
pub const DECLINED_CARD: &str = "4000000000000002";
/// A test card declined for insufficient funds.
pub const INSUFFICIENT_FUNDS_CARD: &str = "4000000000009995";

/// A payment's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Funds are held.
    Authorized,
    /// The provider declined.
    Declined,
    /// Funds are taken.
    Captured,
    /// The hold was released before capture.
    Voided,
    /// Captured funds were returned.
    Refunded,
}

/// A payment (`GET /api/payment/payments/{order_id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentView {
    /// The payment id.
    pub payment_id: String,
    /// The order it pays.
    pub order_id: String,
    /// Amount in minor units.
    pub amount_minor: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// The state.
    pub status: PaymentStatus,
    /// The last four digits of the card.
    pub card_last4: String,
    /// Why it was declined, when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decline_reason: Option<String>,
}

/// Command: authorize `amount_minor` on `card` for `order_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizePayment {
    /// The order.
    pub order_id: String,
    /// The idempotency key: a second command with it gets the first's reply.
    pub idempotency_key: String,
    /// Amount in minor units, positive.
    pub amount_minor: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// The card number (a test card; only the last four digits are stored).
    pub card: String,
}
impl EventType for AuthorizePayment {
    const SUBJECT: &'static str = "tideway.payment.authorize-payment";
}

/// Command: capture the authorized payment of `order_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapturePayment {
    /// The order.
    pub order_id: String,
    /// The idempotency key.
    pub idempotency_key: String,
}
impl EventType for CapturePayment {
    const SUBJECT: &'static str = "tideway.payment.capture-payment";
}

/// Command: void the authorization of `order_id` (no-op when there is none, or refund when
/// it was already captured).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoidPayment {
    /// The order.
    pub order_id: String,
    /// The idempotency key.
    pub idempotency_key: String,
    /// Why.
    pub reason: String,
}
impl EventType for VoidPayment {
    const SUBJECT: &'static str = "tideway.payment.void-payment";
}

/// Reply: authorized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentAuthorized {
    /// The order.
    pub order_id: String,
    /// The payment.
    pub payment_id: String,
}
impl EventType for PaymentAuthorized {
    const SUBJECT: &'static str = "tideway.payment.payment-authorized";
}

/// Reply: declined; nothing is held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentDeclined {
    /// The order.
    pub order_id: String,
    /// E.g. `card declined`, `insufficient funds`.
    pub reason: String,
}
impl EventType for PaymentDeclined {
    const SUBJECT: &'static str = "tideway.payment.payment-declined";
}

/// Reply: captured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentCaptured {
    /// The order.
    pub order_id: String,
    /// The payment.
    pub payment_id: String,
}
impl EventType for PaymentCaptured {
    const SUBJECT: &'static str = "tideway.payment.payment-captured";
}

/// Reply: voided (or refunded, when it had been captured), or there was nothing to void.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentVoided {
    /// The order.
    pub order_id: String,
    /// The final state of the payment, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<PaymentStatus>,
}
impl EventType for PaymentVoided {
    const SUBJECT: &'static str = "tideway.payment.payment-voided";
}
