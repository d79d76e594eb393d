//! The basket service: one basket per user (the bearer token's subject), priced through the
//! catalog at every read.
//!
//! A stored line keeps only what the user chose — the item id and the quantity — plus the
//! name and price last seen, so the basket never shows a stale price: `GET /api/v1/basket` asks
//! the catalog for every line's current price and stock. While the catalog cannot answer,
//! the basket still reads, each line at the price last seen with `price_current: false`
//! (and not available, so ordering refuses to check it out). Writes check the item and its
//! stock with the catalog first; when the catalog cannot answer, nothing is written and the
//! caller gets a 503. Quantities are added with one atomic upsert, so concurrent adds of one item
//! all count.
//!
//! Baskets live in the service's SQL database or in Redis (`basket.store`), the same API
//! and rules on both (see the `store` module); with Redis, any replica serves any user and a replica
//! holds no state of its own. A basket untouched for `basket.ttl_days` expires.
//!
//! The contract (DTOs and the typed client) is in `tideway-basket-api`; the catalog is
//! reached only through its contract, `tideway-catalog-api`.

mod config;
mod error;
mod lines;
mod orders;
mod store;

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use axum::{Extension, Router};
use tideway_basket_api::SERVICE;
use tideway_catalog_api::CatalogClient;
use tideway_runtime::{
    auth::JwtVerifier,
    http::{HttpOptions, Readiness, service_router},
    openapi::BearerAuth,
};
use tideway_store::{Db, Migrator};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use config::{Config, PriceCacheConfig, RedisUrl, StoreKind};
pub use error::ApiError;

use crate::store::{Sql, Store, redis::RedisStore};

/// The basket service's OpenAPI document: every endpoint it serves.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        lines::show,
        lines::add,
        lines::set,
        lines::remove,
        lines::clear,
    ),
    components(schemas(tideway_runtime::InvalidParam), responses(tideway_runtime::Problem)),
    modifiers(&BearerAuth),
    tags((name = "basket", description = "The signed-in user's basket, priced by the catalog"))
)]
pub struct ApiDoc;

/// The basket service's OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    <ApiDoc as utoipa::OpenApi>::openapi()
}

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The longest pause between two sweeps of expired baskets on SQL.
const MAX_SWEEP_INTERVAL: Duration = Duration::from_secs(3600);

/// A running basket service: its store, its HTTP router, and the sweep of expired baskets
/// (SQL only: Redis expires keys itself).
#[derive(Debug, Clone)]
pub struct Basket {
    store: Store,
    prices: tideway_cache::Cache<tideway_catalog_api::Item>,
    router: Router,
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl Basket {
    /// Opens the store of `config.store` (connects to the database and migrates it, or
    /// prepares the Redis client, which connects on first use) and builds the router.
    /// Prices and stock come from `catalog`; tokens are checked with `verifier`.
    pub async fn build(
        config: &Config,
        catalog: CatalogClient,
        verifier: Arc<JwtVerifier>,
    ) -> anyhow::Result<Self> {
        Self::build_with_ttl(config, config.ttl(), catalog, verifier).await
    }

    /// Like [`build`](Self::build), with baskets expiring after `ttl` instead of
    /// `config.ttl_days` (tests use seconds).
    pub async fn build_with_ttl(
        config: &Config,
        ttl: Duration,
        catalog: CatalogClient,
        verifier: Arc<JwtVerifier>,
    ) -> anyhow::Result<Self> {
        let tasks = TaskTracker::new();
        let stop = CancellationToken::new();
        let (store, readiness) = match config.store {
            StoreKind::Sql => {
                let db = Db::open_service(SERVICE, &config.database_url, &MIGRATOR).await?;
                let readiness = Readiness::default().with("database", db.readiness());
                let sql = Sql { db, ttl };
                tasks.spawn(sweep(sql.clone(), stop.clone()));
                (Store::Sql(sql), readiness)
            }
            StoreKind::Redis => {
                let redis = RedisStore::new(config, ttl).with_context(|| {
                    format!("cannot use basket.redis_url {:?}", config.redis_url)
                })?;
                let check = redis.clone();
                let readiness = Readiness::default().with("redis", move || {
                    let redis = check.clone();
                    async move { redis.ping().await.map_err(|err| err.to_string()) }
                });
                (Store::Redis(redis), readiness)
            }
        };
        tasks.close();
        // The price cache resolves its metric handles as it is built: the recorder first.
        tideway_runtime::metrics::prometheus();
        let prices =
            tideway_cache::Cache::new("basket_price", &config.cache.price, &config.cache.shared)
                .context("configuring basket.cache")?;
        let state = lines::State {
            store: store.clone(),
            catalog,
            prices: prices.clone(),
        };
        let api = lines::routes(state)
            .layer(Extension(verifier))
            .merge(tideway_runtime::openapi::route(&openapi()));
        let router = service_router(SERVICE, api, readiness, HttpOptions::default());
        Ok(Self {
            store,
            prices,
            router,
            tasks,
            stop,
        })
    }

    /// Consumes `OrderConfirmed` from `bus`: the ordered units leave the buyer's basket.
    pub async fn subscribe(
        &self,
        bus: Arc<dyn tideway_bus::Bus>,
    ) -> anyhow::Result<tideway_bus::SubscriptionHandle> {
        orders::subscribe(self.store.clone(), bus)
            .await
            .context("cannot subscribe the basket to confirmed orders")
    }

    /// Follows the catalog's events on `bus` as replica `instance_id` (a consumer of its
    /// own, so every replica hears every event): a changed, repriced, restocked or deleted
    /// item leaves the price cache, so the next read asks the catalog.
    pub async fn follow_catalog(
        &self,
        bus: Arc<dyn tideway_bus::Bus>,
        instance_id: &str,
    ) -> anyhow::Result<tideway_bus::SubscriptionHandle> {
        let prices = self.prices.clone();
        let handler = move |event: tideway_bus::Event| {
            let prices = prices.clone();
            async move {
                if let Some(item_id) = tideway_catalog_api::changed_item(&event) {
                    prices.invalidate(&item_id).await;
                }
                Ok::<_, std::convert::Infallible>(())
            }
        };
        let consumer: String = format!("{SERVICE}-prices-{instance_id}")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .take(64)
            .collect();
        bus.subscribe(
            tideway_bus::SubscribeOptions::new(consumer, tideway_catalog_api::EVENTS),
            Arc::new(handler),
        )
        .await
        .context("cannot subscribe the basket to the catalog's events")
    }

    /// The HTTP router, wrapped with the standard stack (health, metrics, problems).
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// The database, when baskets are on SQL.
    pub fn db(&self) -> Option<&Db> {
        match &self.store {
            Store::Sql(sql) => Some(&sql.db),
            Store::Redis(_) => None,
        }
    }

    /// Stops the sweep of expired baskets and waits for it.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.tasks.wait().await;
    }
}

/// Deletes expired baskets every quarter of their lifetime (at most hourly) until `stop`.
async fn sweep(sql: Sql, stop: CancellationToken) {
    let every = (sql.ttl / 4).clamp(Duration::from_millis(10), MAX_SWEEP_INTERVAL);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        match store::sql::sweep(&sql.db, sql.ttl).await {
            Ok(0) => {}
            Ok(lines) => tracing::info!(lines, "deleted expired baskets"),
            Err(err) => tracing::warn!(error = %err, "cannot sweep expired baskets; trying later"),
        }
    }
}
