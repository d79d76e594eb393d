//! The card provider: a [`Provider`] trait (what a real acquirer's API offers) and the
//! [`SimulatedProvider`] the shop runs against.
//!
//! Every call carries an idempotency key, as real provider APIs take one: the same key
//! always gets the first call's answer and never moves money twice. The simulated provider
//! keeps its own ledger, the `provider_charges` table, keyed by idempotency key and written
//! outside the service's transactions (as a remote call would be), so a command re-run after
//! a crash between the provider call and the service's commit finds the charge it already
//! made instead of making a second one.
//!
//! # Simulated behaviour
//!
//! * [`DECLINED_CARD`] is always declined (`card declined`); [`INSUFFICIENT_FUNDS_CARD`]
//!   always for `insufficient funds`.
//! * Any other card (including [`APPROVED_CARD`]) is declined (`card declined`) with
//!   probability [`SimulatedOptions::decline_rate`]. The draw is a hash of the idempotency
//!   key, so it looks random across orders but a retried call gets the same answer.
//! * Every call first waits [`SimulatedOptions::latency`].
//! * A cancellation by idempotency key takes the key's ledger row first when no
//!   authorization has: the authorization then finds it and is declined. Both write the same
//!   primary key, so whichever commits first decides, on SQLite and PostgreSQL alike.

use std::time::Duration;

use tideway_bus::BoxFuture;
use tideway_payment_api::{DECLINED_CARD, INSUFFICIENT_FUNDS_CARD};
use tideway_store::{Db, Row};

use crate::{card::CardNumber, time::now_ms};

/// What to authorize.
#[derive(Debug, Clone)]
pub struct AuthorizeRequest<'a> {
    /// The caller's idempotency key.
    pub idempotency_key: &'a str,
    /// The order paid for (kept in the provider's ledger as a reference).
    pub order_id: &'a str,
    /// Amount in minor units.
    pub amount_minor: i64,
    /// ISO 4217 code.
    pub currency: &'a str,
    /// The card.
    pub card: &'a CardNumber,
}

/// The provider's answer to an authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorization {
    /// Funds are held under `charge_id`.
    Approved {
        /// The provider's reference of the hold, used to capture, void or refund it.
        charge_id: String,
    },
    /// Declined: nothing is held.
    Declined {
        /// Why, e.g. `card declined`.
        reason: String,
    },
}

/// A provider call that failed (not a decline: a decline is an answer).
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The idempotency key was already used for another operation.
    #[error("idempotency key {key:?} was used for {used_for}, not {operation}")]
    KeyReused {
        /// The key.
        key: String,
        /// The operation it was first used for.
        used_for: String,
        /// The operation asked for now.
        operation: &'static str,
    },
    /// No approved authorization has that charge id.
    #[error("no authorized charge {0}")]
    UnknownCharge(String),
    /// The provider's ledger failed (the provider is unavailable).
    #[error("the provider is unavailable")]
    Unavailable(#[from] sqlx::Error),
}

/// A card provider. Every call is idempotent by its key.
pub trait Provider: Send + Sync + std::fmt::Debug {
    /// Holds the amount on the card, or declines.
    fn authorize<'a>(
        &'a self,
        request: AuthorizeRequest<'a>,
    ) -> BoxFuture<'a, Result<Authorization, ProviderError>>;

    /// Takes the held funds of `charge_id`.
    fn capture<'a>(
        &'a self,
        idempotency_key: &'a str,
        charge_id: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>>;

    /// Releases the hold of `charge_id` (before capture).
    fn void<'a>(
        &'a self,
        idempotency_key: &'a str,
        charge_id: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>>;

    /// Returns the captured funds of `charge_id`.
    fn refund<'a>(
        &'a self,
        idempotency_key: &'a str,
        charge_id: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>>;

    /// Cancels the authorization made (or still to come) under `idempotency_key`, without
    /// knowing its charge: an approved hold is released, and an authorization arriving
    /// after the cancellation is declined. (Acquirers call this a technical cancel by
    /// merchant reference: what a caller does when it cannot know whether its request
    /// reached the provider.)
    fn cancel<'a>(
        &'a self,
        order_id: &'a str,
        idempotency_key: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>>;
}

/// The decline reason of an authorization that arrived after its cancellation.
pub const CANCELLED: &str = "cancelled before authorization";

/// How the simulated provider behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimulatedOptions {
    /// The share of otherwise approved authorizations that are declined, 0.0 to 1.0.
    pub decline_rate: f64,
    /// How long every call takes.
    pub latency: Duration,
}

impl Default for SimulatedOptions {
    fn default() -> Self {
        Self {
            decline_rate: 0.0,
            latency: Duration::ZERO,
        }
    }
}

/// The simulated provider, with its ledger in `provider_charges` of the given database.
#[derive(Debug, Clone)]
pub struct SimulatedProvider {
    db: Db,
    options: SimulatedOptions,
}

impl SimulatedProvider {
    /// A provider keeping its ledger in `db` (the table is created by the service's
    /// migrations).
    pub fn new(db: Db, options: SimulatedOptions) -> Self {
        Self { db, options }
    }

    /// Its options.
    pub fn options(&self) -> SimulatedOptions {
        self.options
    }

    /// How many ledger entries name `order_id` (authorizations, captures, voids, refunds).
    pub async fn ledger_entries(
        &self,
        order_id: &str,
        operation: &str,
    ) -> Result<i64, ProviderError> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM provider_charges WHERE order_id = $1 AND operation = $2",
        )
        .bind(order_id)
        .bind(operation)
        .fetch_one(self.db.pool())
        .await?)
    }

    /// How many approved authorizations of `order_id` still hold funds: neither captured,
    /// voided nor refunded.
    pub async fn held(&self, order_id: &str) -> Result<i64, ProviderError> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM provider_charges a WHERE a.order_id = $1 \
             AND a.operation = 'authorize' AND a.outcome = 'approved' AND NOT EXISTS \
             (SELECT 1 FROM provider_charges f WHERE f.charge_id = a.charge_id \
              AND f.operation IN ('capture', 'void', 'refund'))",
        )
        .bind(order_id)
        .fetch_one(self.db.pool())
        .await?)
    }

    #[tracing::instrument(skip_all, fields(order_id), err)]
    async fn do_cancel(&self, order_id: &str, key: &str) -> Result<(), ProviderError> {
        self.wait().await;
        sqlx::query(
            "INSERT INTO provider_charges (idempotency_key, operation, charge_id, order_id, \
             amount_minor, currency, card_last4, outcome, decline_reason, created_at_ms) \
             VALUES ($1, 'authorize', $2, $3, 0, '', '', 'cancelled', $4, $5) \
             ON CONFLICT (idempotency_key) DO NOTHING",
        )
        .bind(key)
        .bind(format!("ch_{}", uuid::Uuid::now_v7().simple()))
        .bind(order_id)
        .bind(CANCELLED)
        .bind(now_ms())
        .execute(self.db.pool())
        .await?;
        let row = self.entry(key, "authorize").await?;
        let outcome: String = row.try_get("outcome")?;
        if outcome == "approved" {
            let charge_id: String = row.try_get("charge_id")?;
            self.follow_up("void", &format!("{key}:cancel"), &charge_id)
                .await?;
        }
        Ok(())
    }

    /// The issuer's answer for `card` under `idempotency_key`.
    fn decide(&self, card: &CardNumber, idempotency_key: &str) -> Option<&'static str> {
        match card.digits() {
            DECLINED_CARD => Some("card declined"),
            INSUFFICIENT_FUNDS_CARD => Some("insufficient funds"),
            _ if draw(idempotency_key) < self.options.decline_rate => Some("card declined"),
            _ => None,
        }
    }

    async fn wait(&self) {
        if !self.options.latency.is_zero() {
            tokio::time::sleep(self.options.latency).await;
        }
    }

    #[tracing::instrument(skip_all, fields(order_id = %request.order_id), err)]
    async fn do_authorize(
        &self,
        request: AuthorizeRequest<'_>,
    ) -> Result<Authorization, ProviderError> {
        self.wait().await;
        let decline = self.decide(request.card, request.idempotency_key);
        let charge_id = format!("ch_{}", uuid::Uuid::now_v7().simple());
        // The first call with this key writes the entry; a repeated one finds it and answers
        // what was answered then.
        sqlx::query(
            "INSERT INTO provider_charges (idempotency_key, operation, charge_id, order_id, \
             amount_minor, currency, card_last4, outcome, decline_reason, created_at_ms) \
             VALUES ($1, 'authorize', $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (idempotency_key) DO NOTHING",
        )
        .bind(request.idempotency_key)
        .bind(&charge_id)
        .bind(request.order_id)
        .bind(request.amount_minor)
        .bind(request.currency)
        .bind(request.card.last4())
        .bind(if decline.is_some() {
            "declined"
        } else {
            "approved"
        })
        .bind(decline)
        .bind(now_ms())
        .execute(self.db.pool())
        .await?;
        let row = self.entry(request.idempotency_key, "authorize").await?;
        let outcome: String = row.try_get("outcome")?;
        Ok(if outcome == "approved" {
            Authorization::Approved {
                charge_id: row.try_get("charge_id")?,
            }
        } else {
            Authorization::Declined {
                reason: row
                    .try_get::<Option<String>, _>("decline_reason")?
                    .unwrap_or_else(|| "card declined".to_owned()),
            }
        })
    }

    /// Records `operation` on an approved authorization `charge_id` under `key`, once.
    #[tracing::instrument(skip_all, fields(operation, charge_id), err)]
    async fn follow_up(
        &self,
        operation: &'static str,
        key: &str,
        charge_id: &str,
    ) -> Result<(), ProviderError> {
        self.wait().await;
        sqlx::query(
            "INSERT INTO provider_charges (idempotency_key, operation, charge_id, order_id, \
             amount_minor, currency, card_last4, outcome, decline_reason, created_at_ms) \
             SELECT $1, $2, charge_id, order_id, amount_minor, currency, card_last4, \
             'approved', NULL, $3 FROM provider_charges \
             WHERE charge_id = $4 AND operation = 'authorize' AND outcome = 'approved' \
             ON CONFLICT (idempotency_key) DO NOTHING",
        )
        .bind(key)
        .bind(operation)
        .bind(now_ms())
        .bind(charge_id)
        .execute(self.db.pool())
        .await?;
        match self.try_entry(key).await? {
            Some(row) => {
                check_operation(key, &row, operation)?;
                Ok(())
            }
            None => Err(ProviderError::UnknownCharge(charge_id.to_owned())),
        }
    }

    async fn try_entry(&self, key: &str) -> Result<Option<tideway_store::AnyRow>, ProviderError> {
        Ok(sqlx::query(
            "SELECT operation, charge_id, outcome, decline_reason FROM provider_charges \
             WHERE idempotency_key = $1",
        )
        .bind(key)
        .fetch_optional(self.db.pool())
        .await?)
    }

    async fn entry(
        &self,
        key: &str,
        operation: &'static str,
    ) -> Result<tideway_store::AnyRow, ProviderError> {
        let row = self
            .try_entry(key)
            .await?
            .ok_or(ProviderError::Unavailable(sqlx::Error::RowNotFound))?;
        check_operation(key, &row, operation)?;
        Ok(row)
    }
}

fn check_operation(
    key: &str,
    row: &tideway_store::AnyRow,
    operation: &'static str,
) -> Result<(), ProviderError> {
    let used_for: String = row.try_get("operation")?;
    if used_for == operation {
        Ok(())
    } else {
        Err(ProviderError::KeyReused {
            key: key.to_owned(),
            used_for,
            operation,
        })
    }
}

impl Provider for SimulatedProvider {
    fn authorize<'a>(
        &'a self,
        request: AuthorizeRequest<'a>,
    ) -> BoxFuture<'a, Result<Authorization, ProviderError>> {
        Box::pin(self.do_authorize(request))
    }

    fn capture<'a>(
        &'a self,
        idempotency_key: &'a str,
        charge_id: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(self.follow_up("capture", idempotency_key, charge_id))
    }

    fn void<'a>(
        &'a self,
        idempotency_key: &'a str,
        charge_id: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(self.follow_up("void", idempotency_key, charge_id))
    }

    fn refund<'a>(
        &'a self,
        idempotency_key: &'a str,
        charge_id: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(self.follow_up("refund", idempotency_key, charge_id))
    }

    fn cancel<'a>(
        &'a self,
        order_id: &'a str,
        idempotency_key: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(self.do_cancel(order_id, idempotency_key))
    }
}

/// A number in `[0, 1)` drawn from `key` (FNV-1a, 64 bits): the same key, the same draw.
pub fn draw(key: &str) -> f64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // Mix the high bits down (FNV's low bits are weak for short keys), keep 53 bits: the
    // precision of an f64 mantissa, so the result is exact and below 1.
    hash ^= hash >> 29;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 32;
    let value = (hash >> 11) as f64;
    value / (1_u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_deterministic_uniform_enough_and_below_one() {
        assert_eq!(draw("order-1:authorize"), draw("order-1:authorize"));
        let draws: Vec<f64> = (0..10_000).map(|i| draw(&format!("key-{i}"))).collect();
        assert!(draws.iter().all(|d| (0.0..1.0).contains(d)));
        let below_half = draws.iter().filter(|d| **d < 0.5).count();
        assert!((4_500..5_500).contains(&below_half), "{below_half}");
        let below_tenth = draws.iter().filter(|d| **d < 0.1).count();
        assert!((800..1_200).contains(&below_tenth), "{below_tenth}");
    }
}
