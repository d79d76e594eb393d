//! The inventory service: stock per catalog item, reserved, released and committed by the
//! checkout saga's commands on the event bus.
//!
//! * Commands (`tideway.inventory.reserve-stock`, `…release-stock`, `…commit-stock`, consumer
//!   `inventory`) are handled in [`reservations`]: all lines of an order or none, never
//!   oversold under concurrency, keyed by the order id so a repeated command re-sends its
//!   stored outcome. Replies (`StockReserved`, `StockRejected`, `StockReleased`,
//!   `StockCommitted`) go through the transactional outbox, published by a relay that holds
//!   the `inventory` lease.
//! * HTTP under `/api/v1/inventory` ([`stock`]): read stock levels (everyone) and set what is
//!   available (admins).
//! * A fresh inventory is seeded from the catalog in the background ([`seed`]).
//!
//! The contract (commands, replies, views) is `tideway-inventory-api`.

pub mod error;
pub mod reservations;
pub mod seed;
pub mod stock;
pub mod time;

use std::sync::Arc;

use anyhow::Context as _;
use axum::{Extension, Router};
use serde::{Deserialize, Serialize};
use tideway_bus::{
    Bus, Event, Handler, Publisher, Replica, SubscriptionHandle, inbox,
    outbox::{self, Relay, RelayWaker},
};
use tideway_catalog_api::CatalogClient;
use tideway_inventory_api::{CommitStock, PREFIX, ReleaseStock, ReserveStock, SERVICE, StockLevel};
use tideway_runtime::{
    auth::JwtVerifier,
    config::{ConfigError, Validate},
    http::{HttpOptions, Readiness, service_router},
    openapi::BearerAuth,
};
use tideway_store::{DatabaseUrl, Db, Migrator};
use tokio::sync::watch;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use error::ApiError;
pub use reservations::{Reservation, ReservationStatus};
pub use stock::StockUpdate;

/// The inventory service's OpenAPI document: every endpoint it serves.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        stock::get_one,
        stock::get_many,
        stock::put_one,
    ),
    components(schemas(tideway_runtime::InvalidParam), responses(tideway_runtime::Problem)),
    modifiers(&BearerAuth),
    tags((name = "inventory", description = "Stock levels: public reads, admin writes"))
)]
pub struct ApiDoc;

/// The inventory service's OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    <ApiDoc as utoipa::OpenApi>::openapi()
}

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Subscriptions per command subject: how many commands of one kind run at once.
pub const WORKERS: usize = 4;

/// The inventory's configuration (`[inventory]` in `tideway.toml`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `sqlite://path` or `postgres://…`.
    pub database_url: DatabaseUrl,
    /// Whether items of the catalog without a stock row get one (with the catalog's stock).
    pub seed_from_catalog: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: DatabaseUrl::sqlite("data/inventory.db"),
            seed_from_catalog: true,
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
    /// The inventory's database.
    pub db: Db,
    /// Wakes the outbox relay after a change that announced a stock level.
    pub waker: RelayWaker,
}

/// Every stock row and every reservation: what an invariant checker reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Every stock row, by item id.
    pub stock: Vec<StockLevel>,
    /// Every reservation with its lines, by order id. Only those whose status
    /// [holds stock](ReservationStatus::holds_stock) account for `reserved` (status
    /// `reserved`) and `committed` (status `committed`) units.
    pub reservations: Vec<Reservation>,
}

impl Snapshot {
    /// Reads the stock and reservations of an inventory database: a running service's, or
    /// one a stopped or crashed process left behind. A database that cannot be read is an
    /// error, never an empty snapshot.
    pub async fn read(db: &Db) -> Result<Self, ApiError> {
        Ok(Self {
            stock: stock::all(db).await?,
            reservations: reservations::all(db).await?,
        })
    }
}

/// The inventory service: a cheap-to-clone handle.
#[derive(Clone)]
pub struct Inventory {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    verifier: Arc<JwtVerifier>,
    waker: RelayWaker,
    subscriptions: Vec<SubscriptionHandle>,
    seeded: watch::Receiver<bool>,
    tracker: TaskTracker,
    token: CancellationToken,
}

impl std::fmt::Debug for Inventory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inventory")
            .field("backend", &self.inner.db.backend())
            .field("seeded", &*self.inner.seeded.borrow())
            .finish_non_exhaustive()
    }
}

impl Inventory {
    /// Connects to the database and migrates it (with the outbox and inbox tables), starts
    /// the outbox relay (lease `inventory`, held as `replica`, with its timings), subscribes
    /// the command handlers as consumer
    /// `inventory` ([`WORKERS`] per command), and, when `config.seed_from_catalog`, starts
    /// seeding from `catalog` in the background ([`Inventory::seeded`] waits for it).
    ///
    /// On the embedded bus, call this before the bus is opened, so the handlers exist
    /// when the first command is published.
    pub async fn build(
        config: &Config,
        bus: Arc<dyn Bus>,
        replica: &Replica,
        verifier: Arc<JwtVerifier>,
        catalog: CatalogClient,
    ) -> anyhow::Result<Self> {
        config
            .validate()
            .context("invalid inventory configuration")?;
        let db = Db::open_service(SERVICE, &config.database_url, &MIGRATOR).await?;
        outbox::install(&db)
            .await
            .context("cannot create the inventory's outbox")?;
        inbox::install(&db)
            .await
            .context("cannot create the inventory's inbox")?;

        let tracker = TaskTracker::new();
        let token = CancellationToken::new();
        let publisher: Arc<dyn Publisher> = bus.clone();
        let relay = Relay::new(db.clone(), publisher, replica.relay(SERVICE));
        let waker = relay.spawn(&tracker, token.child_token());

        let commands = reservations::Commands::new(db.clone(), waker.clone());
        let handler: Arc<dyn Handler> = Arc::new(move |event: Event| {
            let commands = commands.clone();
            async move { commands.handle(event).await }
        });
        let mut subscriptions = Vec::new();
        for subject in [
            <ReserveStock as tideway_bus::EventType>::SUBJECT,
            <ReleaseStock as tideway_bus::EventType>::SUBJECT,
            <CommitStock as tideway_bus::EventType>::SUBJECT,
        ] {
            for _ in 0..WORKERS {
                let subscription = bus
                    .subscribe(replica.subscribe(SERVICE, subject), handler.clone())
                    .await
                    .with_context(|| format!("cannot subscribe to {subject}"));
                match subscription {
                    Ok(subscription) => subscriptions.push(subscription),
                    Err(err) => {
                        subscriptions.iter().for_each(SubscriptionHandle::stop);
                        token.cancel();
                        tracker.close();
                        tracker.wait().await;
                        return Err(err);
                    }
                }
            }
        }

        let (seeded_tx, seeded) = watch::channel(!config.seed_from_catalog);
        if config.seed_from_catalog {
            tracker.spawn(seed::run(
                db.clone(),
                waker.clone(),
                catalog,
                token.child_token(),
                seeded_tx,
            ));
        }
        tracker.close();
        tracing::info!(backend = ?db.backend(), seed = config.seed_from_catalog, "inventory started");
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                verifier,
                waker,
                subscriptions,
                seeded,
                tracker,
                token,
            }),
        })
    }

    /// The service's router: the API under `/api/v1/inventory` wrapped in the standard stack
    /// (request ids, access log, metrics, problems, health and readiness).
    pub fn router(&self) -> Router {
        let api = Router::new()
            .nest(PREFIX, stock::routes())
            .with_state(AppState {
                db: self.inner.db.clone(),
                waker: self.inner.waker.clone(),
            })
            .layer(Extension(self.inner.verifier.clone()))
            .merge(tideway_runtime::openapi::route(&openapi()));
        service_router(SERVICE, api, self.readiness(), HttpOptions::default())
    }

    /// What its `/health/ready` checks (the database answers), for a caller in this process
    /// that needs to know without an HTTP call.
    pub fn readiness(&self) -> Readiness {
        Readiness::default().with("database", self.inner.db.readiness())
    }

    /// The inventory's database.
    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    /// Waits until seeding from the catalog is done (at once when it is off); `false` when
    /// the service shut down first.
    pub async fn seeded(&self) -> bool {
        let mut seeded = self.inner.seeded.clone();
        tokio::select! {
            done = seeded.wait_for(|done| *done) => return done.is_ok(),
            () = self.inner.token.cancelled() => {}
        }
        *self.inner.seeded.borrow()
    }

    /// Sets the available units of `item_id` (0 to 1,000,000), creating its row; reserved
    /// and committed units are kept. For tests and admins (`PUT /stock/{item_id}`).
    pub async fn set_stock(&self, item_id: &str, available: i64) -> Result<StockLevel, ApiError> {
        if !stock::is_item_id(item_id) {
            return Err(ApiError::field(
                "item_id",
                "1–64 letters, digits, '-' or '_'",
            ));
        }
        let available = stock::validate_available(available)?;
        let level = stock::set_available(&self.inner.db, item_id, available).await?;
        self.inner.waker.wake();
        Ok(level)
    }

    /// The stock of `item_id`, if it has a row.
    pub async fn stock(&self, item_id: &str) -> Result<Option<StockLevel>, ApiError> {
        Ok(stock::get_level(&self.inner.db, item_id).await?)
    }

    /// Every stock row and reservation (for invariant checks and tests;
    /// [`Snapshot::read`] on this service's database).
    pub async fn snapshot(&self) -> Result<Snapshot, ApiError> {
        Snapshot::read(&self.inner.db).await
    }

    /// Asks the relay to publish pending replies now.
    pub fn wake_relay(&self) {
        self.inner.waker.wake();
    }

    /// Stops the subscriptions, the relay (releasing its lease) and seeding, and waits for
    /// them. The bus itself belongs to the caller.
    pub async fn shutdown(&self) {
        self.inner
            .subscriptions
            .iter()
            .for_each(SubscriptionHandle::stop);
        self.inner.token.cancel();
        self.inner.tracker.wait().await;
        tracing::info!("inventory stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_validation() {
        let config = Config::default();
        assert!(config.seed_from_catalog);
        assert_eq!(config.database_url.expose(), "sqlite://data/inventory.db");
        assert!(config.validate().is_ok());
        let err = serde_json::from_str::<Config>(r#"{"database_url": "mysql://x"}"#).unwrap_err();
        assert!(err.to_string().contains("sqlite://"), "{err}");
    }
}
