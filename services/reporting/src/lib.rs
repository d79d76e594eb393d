//! The reporting service: CQRS read models built only from events, for the shop's
//! admins.
//!
//! * Events (consumer `reporting`): `OrderPlaced`, `OrderConfirmed`, `OrderCancelled`;
//!   each updates the models in the transaction that records it in the inbox, so a
//!   redelivery changes nothing: see [`projection`].
//! * Models: sales per item per day (units, revenue), revenue per day, the order funnel
//!   (placed → confirmed, or cancelled by reason), and the top items by units (from the
//!   sales table). Its own database, its own migrations.
//! * HTTP (admins): `GET /api/v1/reporting/sales`, `/revenue`, `/funnel`, `/top-items`.
//! * `tideway_reporting_projection_lag_seconds`: now minus the time of the latest event
//!   applied, refreshed every second.
//! * [`replay`] rebuilds every model from the start of the event stream.
//!
//! The contract is `tideway-reporting-api`.

pub mod error;
pub mod http;
pub mod projection;
pub mod replay;
pub mod store;

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use axum::{Extension, Router};
use serde::{Deserialize, Serialize};
use tideway_bus::{Bus, Event, Replica, SubscriptionHandle, inbox};
use tideway_reporting_api::{PREFIX, SERVICE};
use tideway_runtime::{
    auth::JwtVerifier,
    config::{ConfigError, Validate},
    http::{HttpOptions, Readiness, service_router},
    openapi::BearerAuth,
};
use tideway_store::{DatabaseUrl, Db, Migrator};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use error::ApiError;
pub use projection::Projector;

/// The reporting service's OpenAPI document: every endpoint it serves.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(http::sales, http::revenue, http::funnel, http::top_items),
    components(schemas(tideway_runtime::InvalidParam), responses(tideway_runtime::Problem)),
    modifiers(&BearerAuth),
    tags((name = "reporting", description = "Read models built from the shop's events"))
)]
pub struct ApiDoc;

/// The reporting service's OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    <ApiDoc as utoipa::OpenApi>::openapi()
}

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The reporting database's pool size.
pub const DB_CONNECTIONS: u32 = 3;

/// The projection-lag gauge.
pub const LAG_METRIC: &str = "tideway_reporting_projection_lag_seconds";

/// How often the lag gauge is refreshed while no event arrives.
const LAG_EVERY: Duration = Duration::from_secs(1);

/// The reporting service's configuration (`[reporting]` in `tideway.toml`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `sqlite://path` or `postgres://…`.
    pub database_url: DatabaseUrl,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: DatabaseUrl::sqlite("data/reporting.db"),
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }
}

/// What every HTTP handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The reporting database.
    pub db: Db,
}

/// The reporting service: a cheap-to-clone handle.
#[derive(Debug, Clone)]
pub struct Reporting {
    db: Db,
    verifier: Arc<JwtVerifier>,
    subscriptions: Arc<Vec<SubscriptionHandle>>,
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Reporting {
    /// Opens and migrates the reporting database (with its inbox).
    pub async fn open_db(config: &Config) -> anyhow::Result<Db> {
        // A handful of connections: one write per event, and in the distributed shape
        // every process's pool counts against PostgreSQL's limit.
        let db = Db::open(
            &config.database_url,
            tideway_store::DbOptions {
                max_connections: DB_CONNECTIONS,
                ..tideway_store::DbOptions::default()
            },
        )
        .await
        .with_context(|| format!("cannot open the reporting database {}", config.database_url))?;
        db.migrate(&MIGRATOR)
            .await
            .context("cannot migrate the reporting database")?;
        inbox::install(&db)
            .await
            .context("cannot create the reporting inbox")?;
        Ok(db)
    }

    /// Connects, migrates, installs the inbox, subscribes the projections (consumer
    /// `reporting`, one member per subject) and starts the lag gauge.
    pub async fn build(
        config: &Config,
        bus: Arc<dyn Bus>,
        replica: &Replica,
        verifier: Arc<JwtVerifier>,
    ) -> anyhow::Result<Self> {
        config
            .validate()
            .context("invalid reporting configuration")?;
        let db = Self::open_db(config).await?;
        let last = store::last_event_ms(&db)
            .await
            .context("cannot read the reporting projection state")?;
        let last_event_ms = Arc::new(AtomicI64::new(last.unwrap_or(0)));
        let projector = Arc::new(Projector::new(db.clone(), last_event_ms.clone()));
        let mut subscriptions = Vec::new();
        for filter in projection::SUBJECTS {
            let projector = projector.clone();
            let handler = move |event: Event| {
                let projector = projector.clone();
                async move { projector.handle(event).await }
            };
            let subscription = bus
                .subscribe(replica.subscribe(SERVICE, filter), Arc::new(handler))
                .await
                .with_context(|| format!("cannot subscribe to {filter}"))?;
            subscriptions.push(subscription);
        }
        let (token, tracker) = (CancellationToken::new(), TaskTracker::new());
        let stop = token.clone();
        tracker.spawn(async move {
            let mut tick = tokio::time::interval(LAG_EVERY);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => record_lag(last_event_ms.load(Ordering::Relaxed)),
                }
            }
        });
        tracing::info!("reporting service started");
        Ok(Self {
            db,
            verifier,
            subscriptions: Arc::new(subscriptions),
            token,
            tracker,
        })
    }

    /// The service's router: the API under `/api/v1/reporting` wrapped in the standard stack.
    pub fn router(&self) -> Router {
        let api = Router::new()
            .nest(PREFIX, http::routes())
            .with_state(AppState {
                db: self.db.clone(),
            })
            .layer(Extension(self.verifier.clone()))
            .merge(tideway_runtime::openapi::route(&openapi()));
        let readiness = Readiness::default().with("database", self.db.readiness());
        service_router(SERVICE, api, readiness, HttpOptions::default())
    }

    /// The reporting database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Stops the subscriptions (a delivery in progress is redelivered later) and the gauge.
    pub async fn shutdown(&self) {
        for subscription in self.subscriptions.iter() {
            subscription.stop();
        }
        self.token.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// Sets the lag gauge: now minus `last_event_ms` (nothing before the first event).
pub(crate) fn record_lag(last_event_ms: i64) {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    if let Some(lag) = lag_seconds(last_event_ms, now_ms) {
        metrics::gauge!(LAG_METRIC).set(lag);
    }
}

/// The lag in seconds at `now_ms` after the latest event at `last_event_ms` (0 for an
/// event from the future); none before the first event.
fn lag_seconds(last_event_ms: i64, now_ms: i64) -> Option<f64> {
    if last_event_ms <= 0 {
        return None;
    }
    #[expect(
        clippy::cast_precision_loss,
        reason = "a lag in seconds needs no 53 bits"
    )]
    let lag = now_ms.saturating_sub(last_event_ms).max(0) as f64 / 1000.0;
    Some(lag)
}

#[cfg(test)]
mod tests {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    use super::*;

    #[test]
    fn the_lag_is_now_minus_the_latest_event() {
        assert_eq!(lag_seconds(0, 5_000), None);
        assert_eq!(lag_seconds(1_000, 3_500), Some(2.5));
        assert_eq!(lag_seconds(9_000, 3_500), Some(0.0));
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let an_hour_ago = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0))
            - 3_600_000;
        metrics::with_local_recorder(&recorder, || record_lag(an_hour_ago));
        let gauge = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .find(|(key, ..)| key.key().name() == LAG_METRIC)
            .map(|(.., value)| value);
        let Some(DebugValue::Gauge(lag)) = gauge else {
            panic!("no {LAG_METRIC} gauge: {gauge:?}");
        };
        assert!((3600.0..3700.0).contains(&lag.into_inner()), "{lag:?}");
    }
}
