//! The payment service: authorize, capture, void and refund card payments against a
//! simulated provider, driven by the checkout saga's commands over the event bus.
//!
//! * Commands (consumer `payment`): [`AuthorizePayment`] → `PaymentAuthorized` or
//!   `PaymentDeclined`; [`CapturePayment`] → `PaymentCaptured`; [`VoidPayment`] →
//!   `PaymentVoided` (an authorized payment is voided, a captured one refunded). Every reply
//!   leaves through the outbox in the transaction that records the payment's state, and every
//!   command is effectively once: see [`commands`].
//! * The provider ([`provider`]) is a trait; [`SimulatedProvider`] implements the test cards,
//!   a decline rate and a latency, and keeps its own idempotency ledger.
//! * HTTP (admins only): `GET /api/v1/payment/payments/{order_id}` and
//!   `GET /api/v1/payment/payments?limit=` (newest first).
//!
//! * The card vault ([`vault`], `POST /api/v1/payment/cards`, any signed-in user; the gateway
//!   lets only admins reach it, checkout calls it directly): a card number is parsed (12–19
//!   digits, Luhn) and kept under a token for one order until its authorization or void
//!   takes it, or `payment.card_token_ttl_secs` pass. Commands carry the token only.
//!
//! Card numbers are never logged, and kept only in the vault for that short while: a
//! payment keeps the last four digits. The contract is `tideway-payment-api`.

pub mod card;
pub mod commands;
pub mod error;
pub mod payments;
pub mod provider;
pub mod time;
pub mod vault;

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use axum::{Extension, Router};
use serde::{Deserialize, Serialize};
use tideway_bus::{
    Bus, Event, EventType, Replica, SubscriptionHandle, inbox,
    outbox::{self, Relay},
};
use tideway_ordering_api::OrderCancelled;
use tideway_payment_api::{
    AuthorizePayment, CapturePayment, PREFIX, PaymentView, SERVICE, VoidPayment,
};
use tideway_runtime::{
    auth::JwtVerifier,
    config::{ConfigError, Validate},
    http::{HttpOptions, Readiness, service_router},
    openapi::BearerAuth,
};
use tideway_store::{DatabaseUrl, Db, Migrator, prune::PruneRule};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use error::ApiError;
pub use provider::{Provider, SimulatedOptions, SimulatedProvider};

use commands::Handlers;

/// The payment service's OpenAPI document: every endpoint it serves.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        payments::list_payments,
        payments::get_payment,
        vault::vault_card,
    ),
    components(schemas(tideway_runtime::InvalidParam), responses(tideway_runtime::Problem)),
    modifiers(&BearerAuth),
    tags((name = "payment", description = "Payments (admins) and the card vault checkout uses"))
)]
pub struct ApiDoc;

/// The payment service's OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    <ApiDoc as utoipa::OpenApi>::openapi()
}

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The longest simulated provider latency accepted.
pub const MAX_LATENCY_MS: u64 = 60_000;
/// How long the vault keeps a card by default: ten minutes, far past a checkout's
/// authorization deadline and its re-sends.
pub const DEFAULT_CARD_TOKEN_TTL_SECS: u64 = 600;
/// How long kept records live by default, in days.
pub const DEFAULT_RETENTION_DAYS: u64 = 30;

/// What the pruner deletes, and when: expired vaulted cards, then what is older than
/// `payment.retention_days`. The payments themselves are kept.
pub const PRUNE_RULES: [PruneRule; 6] = [
    PruneRule::expired(
        "card_vault",
        "DELETE FROM card_vault WHERE expires_at_ms <= $1",
    ),
    PruneRule::older_than("inbox", "DELETE FROM inbox WHERE received_at_ms < $1"),
    PruneRule::older_than(
        "idempotency",
        "DELETE FROM idempotency WHERE created_at_ms < $1",
    ),
    PruneRule::older_than(
        "provider_charges",
        "DELETE FROM provider_charges WHERE created_at_ms < $1",
    ),
    PruneRule::older_than(
        "voided_orders",
        "DELETE FROM voided_orders WHERE created_at_ms < $1",
    ),
    PruneRule::older_than(
        "authorizations_in_flight",
        "DELETE FROM authorizations_in_flight WHERE started_at_ms < $1",
    ),
];

/// Handlers per command subject in this process (they compete for the commands).
pub const WORKERS_PER_COMMAND: usize = 4;

/// The payment service's configuration (`[payment]` in `tideway.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `sqlite://path` or `postgres://…`.
    pub database_url: DatabaseUrl,
    /// The share of authorizations the simulated provider declines at random (0.0 to 1.0),
    /// besides the declining test cards. Deterministic per idempotency key.
    pub decline_rate: f64,
    /// How long every simulated provider call takes, in milliseconds (at most 60000).
    pub latency_ms: u64,
    /// How long the vault keeps a card that no authorization or void took, in seconds
    /// (1 to 86400).
    pub card_token_ttl_secs: u64,
    /// How long inbox entries, idempotency records, provider records, void tombstones and
    /// unfinished authorization records are kept, in days (1 to 3650). Expired vaulted
    /// cards go within a minute of their expiry whatever this says.
    pub retention_days: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: DatabaseUrl::sqlite("data/payment.db"),
            decline_rate: 0.0,
            latency_ms: 0,
            card_token_ttl_secs: DEFAULT_CARD_TOKEN_TTL_SECS,
            retention_days: DEFAULT_RETENTION_DAYS,
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(0.0..=1.0).contains(&self.decline_rate) {
            return Err(ConfigError::invalid(
                "payment.decline_rate",
                "a number from 0.0 to 1.0",
            ));
        }
        if self.latency_ms > MAX_LATENCY_MS {
            return Err(ConfigError::invalid(
                "payment.latency_ms",
                format!("at most {MAX_LATENCY_MS} milliseconds"),
            ));
        }
        if !(1..=3650).contains(&self.retention_days) {
            return Err(ConfigError::invalid(
                "payment.retention_days",
                "1 to 3650 days",
            ));
        }
        if !(1..=86_400).contains(&self.card_token_ttl_secs) {
            return Err(ConfigError::invalid(
                "payment.card_token_ttl_secs",
                "1 to 86400 seconds",
            ));
        }
        Ok(())
    }
}

/// What every HTTP handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The payment database.
    pub db: Db,
    /// How long a vaulted card is kept, in milliseconds.
    pub card_ttl_ms: i64,
}

/// Every payment with its state, oldest first: what an invariant checker reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The payments, by creation time.
    pub payments: Vec<PaymentView>,
}

impl Snapshot {
    /// Reads the payments of a payment database: a running service's, or one a stopped or
    /// crashed process left behind. A database that cannot be read is an error, never an
    /// empty list.
    pub async fn read(db: &Db) -> Result<Self, ApiError> {
        Ok(Self {
            payments: payments::list(db, None).await?,
        })
    }
}

/// The payment service: a cheap-to-clone handle.
#[derive(Debug, Clone)]
pub struct Payment {
    db: Db,
    verifier: Arc<JwtVerifier>,
    card_ttl_ms: i64,
    provider: SimulatedProvider,
    subscriptions: Arc<Vec<SubscriptionHandle>>,
    tracker: TaskTracker,
    token: CancellationToken,
}

impl Payment {
    /// Connects, migrates, installs the outbox and inbox, starts the outbox relay (lease
    /// `payment`, held as `replica`, with its timings) and subscribes the command handlers
    /// (consumer `payment`).
    pub async fn build(
        config: &Config,
        bus: Arc<dyn Bus>,
        replica: &Replica,
        verifier: Arc<JwtVerifier>,
    ) -> anyhow::Result<Self> {
        Self::build_with(config, bus, replica, verifier, |simulated| {
            Arc::new(simulated.clone())
        })
        .await
    }

    /// [`Payment::build`], with the command handlers calling the provider `wrap` makes of
    /// the simulated one (a test puts a hook around it; the ledger stays the simulated
    /// provider's).
    pub async fn build_with(
        config: &Config,
        bus: Arc<dyn Bus>,
        replica: &Replica,
        verifier: Arc<JwtVerifier>,
        wrap: impl FnOnce(&SimulatedProvider) -> Arc<dyn Provider>,
    ) -> anyhow::Result<Self> {
        config.validate().context("invalid payment configuration")?;
        let db = Db::open_service(SERVICE, &config.database_url, &MIGRATOR).await?;
        outbox::install(&db)
            .await
            .context("cannot create the payment outbox")?;
        inbox::install(&db)
            .await
            .context("cannot create the payment inbox")?;

        let provider = SimulatedProvider::new(
            db.clone(),
            SimulatedOptions {
                decline_rate: config.decline_rate,
                latency: Duration::from_millis(config.latency_ms),
            },
        );
        let tracker = TaskTracker::new();
        let token = CancellationToken::new();
        tideway_store::prune::spawn(
            db.clone(),
            PRUNE_RULES.to_vec(),
            Duration::from_secs(config.retention_days.saturating_mul(86_400)),
            tideway_store::prune::DEFAULT_INTERVAL,
            &tracker,
            token.child_token(),
        );
        let relay = Relay::new(db.clone(), bus.clone(), replica.relay(SERVICE));
        let waker = relay.spawn(&tracker, token.clone());
        let handlers = Arc::new(Handlers::new(db.clone(), wrap(&provider), waker));

        // A handler may wait for the provider twice (void then nothing else, or one call):
        // give it the latency twice over on top of the usual handler timeout. The ack wait
        // stays short (in-progress acks cover a slow provider), so a command held by a
        // crashed replica comes back soon.
        let handler_timeout =
            tideway_bus::DEFAULT_HANDLER_TIMEOUT + Duration::from_millis(config.latency_ms) * 2;
        let mut subscriptions = Vec::new();
        for filter in [
            AuthorizePayment::SUBJECT,
            CapturePayment::SUBJECT,
            VoidPayment::SUBJECT,
        ] {
            for _ in 0..WORKERS_PER_COMMAND {
                let handlers = handlers.clone();
                let handler = move |event: Event| {
                    let handlers = handlers.clone();
                    async move { handlers.handle(event).await }
                };
                let subscription = bus
                    .subscribe(
                        replica
                            .subscribe(SERVICE, filter)
                            .handler_timeout(handler_timeout),
                        Arc::new(handler),
                    )
                    .await
                    .with_context(|| format!("cannot subscribe to {filter}"))?;
                subscriptions.push(subscription);
            }
        }
        // A cancelled order's card goes, whether or not its saga reached the payment (an
        // order out of stock never sends an authorization or a void). Deleting is idempotent,
        // so no inbox is needed.
        let forget = {
            let db = db.clone();
            move |event: Event| {
                let db = db.clone();
                async move {
                    let cancelled: OrderCancelled = event.decode()?;
                    vault::forget_order(&db, &cancelled.order_id).await?;
                    Ok::<_, anyhow::Error>(())
                }
            }
        };
        subscriptions.push(
            bus.subscribe(
                replica.subscribe(SERVICE, OrderCancelled::SUBJECT),
                Arc::new(forget),
            )
            .await
            .with_context(|| format!("cannot subscribe to {}", OrderCancelled::SUBJECT))?,
        );
        tracing::info!(
            decline_rate = config.decline_rate,
            latency_ms = config.latency_ms,
            "payment service started"
        );
        Ok(Self {
            db,
            verifier,
            card_ttl_ms: i64::try_from(config.card_token_ttl_secs.saturating_mul(1000))
                .unwrap_or(i64::MAX),
            provider,
            subscriptions: Arc::new(subscriptions),
            tracker,
            token,
        })
    }

    /// The service's router: the API under `/api/v1/payment` wrapped in the standard stack.
    pub fn router(&self) -> Router {
        let api = Router::new()
            .nest(PREFIX, payments::routes().merge(vault::routes()))
            .with_state(AppState {
                db: self.db.clone(),
                card_ttl_ms: self.card_ttl_ms,
            })
            .layer(Extension(self.verifier.clone()))
            .merge(tideway_runtime::openapi::route(&openapi()));
        let readiness = Readiness::default().with("database", self.db.readiness());
        service_router(SERVICE, api, readiness, HttpOptions::default())
    }

    /// The payment database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The simulated provider (its ledger shows what was charged).
    pub fn provider(&self) -> &SimulatedProvider {
        &self.provider
    }

    /// Every payment with its state, oldest first: for invariant checks
    /// ([`Snapshot::read`] on this service's database).
    pub async fn snapshot(&self) -> Result<Snapshot, ApiError> {
        Snapshot::read(&self.db).await
    }

    /// Stops the command subscriptions and the outbox relay, and waits for them.
    pub async fn shutdown(&self) {
        for subscription in self.subscriptions.iter() {
            subscription.stop();
        }
        self.token.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_validation() {
        let config = Config::default();
        assert_eq!(config.decline_rate, 0.0);
        assert_eq!(config.latency_ms, 0);
        assert!(config.validate().is_ok());
        for (bad, key) in [
            (
                Config {
                    decline_rate: 1.5,
                    ..Config::default()
                },
                "payment.decline_rate",
            ),
            (
                Config {
                    decline_rate: -0.1,
                    ..Config::default()
                },
                "payment.decline_rate",
            ),
            (
                Config {
                    decline_rate: f64::NAN,
                    ..Config::default()
                },
                "payment.decline_rate",
            ),
            (
                Config {
                    latency_ms: 60_001,
                    ..Config::default()
                },
                "payment.latency_ms",
            ),
            (
                Config {
                    retention_days: 0,
                    ..Config::default()
                },
                "payment.retention_days",
            ),
            (
                Config {
                    card_token_ttl_secs: 0,
                    ..Config::default()
                },
                "payment.card_token_ttl_secs",
            ),
        ] {
            let err = bad.validate().unwrap_err();
            assert!(err.to_string().contains(key), "{err}");
        }
        let edge = Config {
            decline_rate: 1.0,
            latency_ms: 60_000,
            ..Config::default()
        };
        assert!(edge.validate().is_ok());
    }
}
