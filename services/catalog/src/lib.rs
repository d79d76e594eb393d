//! The catalog service: the shop's items, categories and brands.
//!
//! Everyone browses (`GET /api/v1/catalog/items` with filters, search, sorting and pages; an
//! item; the categories with their counts; the brands), with strong ETags and
//! `Cache-Control` so the gateway and browsers can cache and revalidate. Admins create,
//! change, reprice and delete items; every change bumps the item's `version`. The contract
//! (types and typed client) is `tideway-catalog-api`. A fresh database is seeded with a demo
//! catalog ([`seed`]), idempotently, so replicas may start together.
//!
//! Stock is the inventory's: the catalog keeps a read copy of each item's available units,
//! fed by the inventory's `tideway.inventory.level-changed` events, and publishes its own
//! changes (`tideway.catalog.*`) through its outbox ([`events`]).

pub mod cache;
pub mod categories;
pub mod error;
pub mod events;
pub mod items;
pub mod seed;
pub mod time;

use std::sync::Arc;

use anyhow::Context as _;
use axum::{Extension, Router};
use serde::{Deserialize, Serialize};
use tideway_bus::{
    Bus, Event, EventType, Handler, Publisher, Replica, SubscriptionHandle, inbox,
    outbox::{self, Relay, RelayWaker},
};
use tideway_catalog_api::{PREFIX, SERVICE};
use tideway_inventory_api::StockLevelChanged;
use tideway_runtime::{
    auth::JwtVerifier,
    config::{ConfigError, Validate},
    http::{HttpOptions, Readiness, service_router},
    openapi::BearerAuth,
};
use tideway_store::{DatabaseUrl, Db, Migrator};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use error::ApiError;

/// The catalog's OpenAPI document: every endpoint under `/api/v1/catalog`.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        items::list_items,
        items::get_item,
        items::create_item,
        items::update_item,
        items::change_price,
        items::delete_item,
        categories::list_categories,
        categories::list_brands,
    ),
    components(schemas(tideway_runtime::InvalidParam), responses(tideway_runtime::Problem)),
    modifiers(&BearerAuth),
    tags((name = "catalog", description = "Items, categories and brands: public reads, admin writes"))
)]
pub struct ApiDoc;

/// The catalog's OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    <ApiDoc as utoipa::OpenApi>::openapi()
}

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The catalog's configuration (`[catalog]` in `tideway.toml`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `sqlite://path` or `postgres://…`.
    pub database_url: DatabaseUrl,
    /// Whether an empty catalog is filled with the demo catalog at start.
    pub seed: bool,
    /// The caches of reads (`catalog.cache.*`).
    pub cache: cache::CacheConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: DatabaseUrl::sqlite("data/catalog.db"),
            seed: true,
            cache: cache::CacheConfig::default(),
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        // The database URL is checked as it is read (`DatabaseUrl`).
        match self.cache.problem() {
            Some((key, expected)) => Err(ConfigError::invalid(key, expected)),
            None => Ok(()),
        }
    }
}

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The catalog's database.
    pub db: Db,
    /// Wakes the outbox relay after a write that enqueued an event.
    pub waker: RelayWaker,
    /// The caches of rendered reads.
    pub caches: cache::Caches,
}

/// The catalog service: a cheap-to-clone handle.
#[derive(Clone)]
pub struct Catalog {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    verifier: Arc<JwtVerifier>,
    waker: RelayWaker,
    caches: cache::Caches,
    subscriptions: Vec<SubscriptionHandle>,
    tracker: TaskTracker,
    token: CancellationToken,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("backend", &self.inner.db.backend())
            .finish_non_exhaustive()
    }
}

impl Catalog {
    /// Connects to the database, migrates it (with the outbox and inbox tables), ensures
    /// the categories and, when `config.seed` is set and the catalog is empty, seeds the
    /// demo catalog. Starts the outbox relay (lease `catalog`, held as `replica`) and the
    /// consumer `catalog` of the inventory's stock levels.
    ///
    /// On the embedded bus, call this before the bus is opened.
    pub async fn build(
        config: &Config,
        bus: Arc<dyn Bus>,
        replica: &Replica,
        verifier: Arc<JwtVerifier>,
    ) -> anyhow::Result<Self> {
        config.validate().context("invalid catalog configuration")?;
        let db = Db::open_service(SERVICE, &config.database_url, &MIGRATOR).await?;
        install_bus_tables(&db)
            .await
            .context("cannot create the catalog's outbox and inbox")?;
        seed::ensure_categories(&db)
            .await
            .context("cannot create the catalog's categories")?;
        if config.seed {
            seed::seed_if_empty(&db)
                .await
                .context("cannot seed the catalog")?;
        }
        let tracker = TaskTracker::new();
        let token = CancellationToken::new();
        let publisher: Arc<dyn Publisher> = bus.clone();
        let relay = Relay::new(db.clone(), publisher, replica.relay(SERVICE));
        let waker = relay.spawn(&tracker, token.child_token());
        // The caches resolve their metric handles as they are built: the recorder first.
        tideway_runtime::metrics::prometheus();
        let caches = cache::Caches::new(&config.cache).context("configuring catalog.cache")?;
        let copy = events::StockCopy::new(db.clone(), waker.clone(), caches.clone());
        let handler: Arc<dyn Handler> = Arc::new(move |event: Event| {
            let copy = copy.clone();
            async move { copy.handle(event).await }
        });
        // Each replica hears every catalog event on a consumer of its own (fan-out), so
        // each invalidates its own memory caches.
        let invalidations = caches.clone();
        let invalidate: Arc<dyn Handler> = Arc::new(move |event: Event| {
            let caches = invalidations.clone();
            async move {
                events::invalidate(&caches, &event).await;
                Ok::<_, std::convert::Infallible>(())
            }
        });
        let mut subscriptions = Vec::new();
        for (options, handler) in [
            (
                replica.subscribe(SERVICE, StockLevelChanged::SUBJECT),
                handler,
            ),
            (
                replica.subscribe(
                    events::cache_consumer(&replica.instance_id),
                    tideway_catalog_api::EVENTS,
                ),
                invalidate,
            ),
        ] {
            match bus
                .subscribe(options, handler)
                .await
                .context("cannot subscribe the catalog to its events")
            {
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
        tracker.close();
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                verifier,
                waker,
                caches,
                subscriptions,
                tracker,
                token,
            }),
        })
    }

    /// The service's router: the API under `/api/v1/catalog` wrapped in the standard stack
    /// (request ids, access log, metrics, problems, health and readiness).
    pub fn router(&self) -> Router {
        let api = Router::new()
            .merge(items::routes())
            .merge(categories::routes());
        let api = Router::new()
            .nest(PREFIX, api)
            .with_state(AppState {
                db: self.inner.db.clone(),
                waker: self.inner.waker.clone(),
                caches: self.inner.caches.clone(),
            })
            .layer(Extension(self.inner.verifier.clone()));
        let api = api.merge(tideway_runtime::openapi::route(&openapi()));
        let readiness = Readiness::default().with("database", self.inner.db.readiness());
        service_router(SERVICE, api, readiness, HttpOptions::default())
    }

    /// The catalog's database.
    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    /// The caches of rendered reads.
    pub fn caches(&self) -> &cache::Caches {
        &self.inner.caches
    }

    /// Stops the subscription and the relay (releasing its lease) and waits for them.
    pub async fn shutdown(&self) {
        self.inner
            .subscriptions
            .iter()
            .for_each(SubscriptionHandle::stop);
        self.inner.token.cancel();
        self.inner.tracker.wait().await;
        tracing::info!("catalog stopped");
    }
}

/// Creates the outbox and inbox tables. Replicas started together may race to create
/// them (on PostgreSQL the loser of `CREATE TABLE IF NOT EXISTS` gets a unique violation
/// on the catalog of types): the table exists then, so the next attempt finds it.
async fn install_bus_tables(db: &Db) -> Result<(), tideway_bus::BusError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let installed = match outbox::install(db).await {
            Ok(()) => inbox::install(db).await,
            Err(err) => Err(err),
        };
        match installed {
            Err(tideway_bus::BusError::Db(err))
                if attempt < 5 && tideway_store::is_unique_violation(&err) => {}
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_validation() {
        let config = Config::default();
        assert!(config.seed);
        assert!(config.validate().is_ok());
        let err = serde_json::from_str::<Config>(r#"{"database_url": "mysql://x"}"#).unwrap_err();
        assert!(err.to_string().contains("sqlite://"), "{err}");
    }
}
