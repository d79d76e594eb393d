//! The contract of the notification service: the emails it sends a customer when an order
//! is confirmed or cancelled or a payment is refunded, as the API shows them, and
//! [`NotificationClient`], which reads them (the web front's "my notifications" page and the
//! operations console).
//!
//! The service consumes events only (`tideway.ordering.order-placed`, `…order-confirmed`,
//! `…order-cancelled`, `tideway.payment.payment-voided` with the status `refunded`); it
//! emits none.
#![warn(missing_docs)]

use http::{HeaderMap, HeaderValue, header};
use serde::{Deserialize, Serialize};
use tideway_client::{ClientError, JsonClient, Transport};

/// The service's name.
pub const SERVICE: &str = "notification";
/// The path prefix of its HTTP API.
pub const PREFIX: &str = "/api/v1/notification";
/// The caller's notifications (user).
pub const MINE_PATH: &str = "/api/v1/notification/notifications";
/// Every customer's latest notifications (admin role).
pub const RECENT_PATH: &str = "/api/v1/notification/recent";
/// The default number of notifications listed.
pub const DEFAULT_LIMIT: u32 = 20;
/// The most notifications listed at once.
pub const MAX_LIMIT: u32 = 100;

/// What a notification tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    /// The order is confirmed and will be shipped.
    OrderConfirmed,
    /// The order is cancelled, with the reason.
    OrderCancelled,
    /// A captured payment was returned.
    PaymentRefunded,
}

impl NotificationKind {
    /// The stored and shown name (`order_confirmed`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::OrderConfirmed => "order_confirmed",
            Self::OrderCancelled => "order_cancelled",
            Self::PaymentRefunded => "payment_refunded",
        }
    }

    /// The kind named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        [
            Self::OrderConfirmed,
            Self::OrderCancelled,
            Self::PaymentRefunded,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == name)
    }
}

/// Where a notification's email stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Rendered, not yet accepted by the mail server (being retried).
    Pending,
    /// Accepted by the mail server (or written to the mailbox).
    Sent,
    /// Every attempt was refused: the event is dead-lettered and waits for a redrive.
    Failed,
}

impl DeliveryStatus {
    /// The stored and shown name (`pending`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sent => "sent",
            Self::Failed => "failed",
        }
    }

    /// The status named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Pending, Self::Sent, Self::Failed]
            .into_iter()
            .find(|status| status.as_str() == name)
    }
}

/// One notification: the email rendered for one event, and how its sending went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NotificationView {
    /// The id, which is the id of the event it tells about.
    pub id: String,
    /// The customer (JWT subject).
    pub user_id: String,
    /// The order it is about.
    pub order_id: String,
    /// The address it was sent to.
    pub to: String,
    /// What it tells.
    pub kind: NotificationKind,
    /// The email's subject line.
    pub subject: String,
    /// The email's text part.
    pub text: String,
    /// Where its sending stands.
    pub status: DeliveryStatus,
    /// How many times the mail server was tried.
    pub attempts: u32,
    /// The mail server's last refusal, while it is not sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When it was rendered (RFC 3339).
    pub created_at: String,
    /// When the mail server accepted it (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<String>,
}

/// A list of notifications, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NotificationPage {
    /// The notifications, newest first; at most `limit`.
    pub items: Vec<NotificationView>,
    /// The limit applied.
    pub limit: u32,
}

/// The typed client of the notification API.
#[derive(Debug, Clone)]
pub struct NotificationClient {
    inner: JsonClient,
}

impl NotificationClient {
    /// A client over `transport` (in-process, or HTTP through a balancer or the gateway).
    pub fn new(transport: Transport) -> Self {
        Self {
            inner: JsonClient::new(transport),
        }
    }

    /// The caller's latest notifications (`GET /api/v1/notification/notifications?limit=`).
    pub async fn mine(&self, bearer: &str, limit: u32) -> Result<NotificationPage, ClientError> {
        self.inner
            .get(&format!("{MINE_PATH}?limit={limit}"), &auth(bearer)?)
            .await
    }

    /// Every customer's latest notifications (`GET /api/v1/notification/recent?limit=`,
    /// admins only).
    pub async fn recent(&self, bearer: &str, limit: u32) -> Result<NotificationPage, ClientError> {
        self.inner
            .get(&format!("{RECENT_PATH}?limit={limit}"), &auth(bearer)?)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for kind in [
            NotificationKind::OrderConfirmed,
            NotificationKind::OrderCancelled,
            NotificationKind::PaymentRefunded,
        ] {
            assert_eq!(NotificationKind::parse(kind.as_str()), Some(kind));
            let json = serde_json::to_value(kind).unwrap_or_default();
            assert_eq!(json, kind.as_str());
        }
        for status in [
            DeliveryStatus::Pending,
            DeliveryStatus::Sent,
            DeliveryStatus::Failed,
        ] {
            assert_eq!(DeliveryStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(NotificationKind::parse("x"), None);
    }

    #[test]
    fn refuses_tokens_that_are_not_header_values() {
        assert!(auth("a\nb").is_err());
    }
}
