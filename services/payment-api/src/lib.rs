//! The contract of the payment service: authorize, capture, void and refund against a
//! simulated card provider, and the saga commands and replies that drive them.
//!
//! Every command carries an idempotency key; the same key never charges twice and always
//! gets the same reply.
#![warn(missing_docs)]

use http::{HeaderMap, HeaderValue, Method, header};
use schemars::JsonSchema;
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize, Serializer};
use tideway_bus::EventType;
use tideway_client::{ClientError, JsonClient, Transport};

/// The service's name.
pub const SERVICE: &str = "payment";
/// The path prefix of its HTTP API.
pub const PREFIX: &str = "/api/v1/payment";

/// Where card numbers are vaulted: `POST` a [`VaultCard`], get a [`CardToken`].
pub const CARDS_PATH: &str = "/api/v1/payment/cards";

/// A test card that is always approved (the default when a checkout names no card).
pub const APPROVED_CARD: &str = "4242424242424242";
/// A test card that is always declined ("card declined").
pub const DECLINED_CARD: &str = "4000000000000002";
/// A test card declined for insufficient funds.
pub const INSUFFICIENT_FUNDS_CARD: &str = "4000000000009995";

/// A payment's state.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema,
)]
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

/// A payment (`GET /api/v1/payment/payments/{order_id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AuthorizePayment {
    /// The order.
    pub order_id: String,
    /// The idempotency key: a second command with it gets the first's reply.
    pub idempotency_key: String,
    /// Amount in minor units, positive.
    pub amount_minor: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// The token of the card vaulted for this order at checkout ([`CardToken::token`]);
    /// the number itself never travels in a command.
    #[serde(default)]
    pub card_token: String,
}
impl EventType for AuthorizePayment {
    const SUBJECT: &'static str = "tideway.payment.authorize-payment";
}

/// Command: capture the authorized payment of `order_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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

/// The body of `POST /api/v1/payment/cards`: vault `card` for `order_id` until its
/// authorization (or void), at most the vault's time to live.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VaultCard {
    /// The order the card will pay; the token authorizes this order only.
    pub order_id: String,
    /// The card number: 12–19 digits (spaces allowed) with a valid check digit. `Debug`
    /// shows `[REDACTED]`.
    #[serde(serialize_with = "expose")]
    #[schema(value_type = String, example = "4242 4242 4242 4242")]
    pub card: SecretString,
}

/// The answer to [`VaultCard`]: a short-lived token standing for the card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CardToken {
    /// The token, carried by the saga and `AuthorizePayment` instead of the number.
    pub token: String,
    /// The card's last four digits.
    pub last4: String,
    /// When the vault forgets the card (unix milliseconds) if no authorization took it.
    pub expires_at_ms: i64,
}

/// Serializes a secret string as itself: for request bodies only, which are never logged.
pub fn expose<S: Serializer>(secret: &SecretString, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(secret.expose_secret())
}

/// Serializes an optional secret string as itself (see [`expose`]).
pub fn expose_option<S: Serializer>(
    secret: &Option<SecretString>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match secret {
        Some(secret) => serializer.serialize_some(secret.expose_secret()),
        None => serializer.serialize_none(),
    }
}

/// The typed client of the payment service, as ordering uses it at checkout.
#[derive(Debug, Clone)]
pub struct PaymentClient {
    inner: JsonClient,
}

impl PaymentClient {
    /// A client over `transport`.
    pub fn new(transport: Transport) -> Self {
        Self {
            inner: JsonClient::new(transport),
        }
    }

    /// Vaults a card for an order, on behalf of the user of `bearer`. An invalid number is a
    /// 422 problem naming `card`.
    pub async fn vault_card(
        &self,
        bearer: &str,
        request: &VaultCard,
    ) -> Result<CardToken, ClientError> {
        let value = HeaderValue::try_from(format!("Bearer {bearer}"))
            .map_err(|_| ClientError::InvalidRequest("the token is not a header value".into()))?;
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, value);
        self.inner
            .call(Method::POST, CARDS_PATH, Some(request), &headers)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vault_request_shows_no_card_in_debug_but_sends_it() {
        let request = VaultCard {
            order_id: "o-1".into(),
            card: SecretString::from(APPROVED_CARD),
        };
        assert!(!format!("{request:?}").contains("4242"));
        let json = serde_json::to_value(&request).unwrap();
        assert_eq!(json["card"], APPROVED_CARD);
    }
}
