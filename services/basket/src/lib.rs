//! The basket service: one basket per user (the bearer token's subject), priced through the
//! catalog at every read.
//!
//! A stored line keeps only what the user chose — the item id and the quantity — plus the
//! name and price last seen, so the basket never shows a stale price: `GET /api/basket` asks
//! the catalog for every line's current price and stock. While the catalog cannot answer,
//! the basket still reads, each line at the price last seen with `price_current: false`
//! (and not available, so ordering refuses to check it out). Writes check the item and its
//! stock with the catalog first; when the catalog cannot answer, nothing is written and the
//! caller gets a 503. Quantities are added with one atomic upsert, so concurrent adds of one item
//! all count.
//!
//! The contract (DTOs and the typed client) is in `tideway-basket-api`; the catalog is
//! reached only through its contract, `tideway-catalog-api`.

mod config;
mod error;
mod lines;
mod orders;

use std::sync::Arc;

use anyhow::Context;
use axum::{Extension, Router};
use tideway_basket_api::SERVICE;
use tideway_catalog_api::CatalogClient;
use tideway_runtime::{
    auth::JwtVerifier,
    http::{HttpOptions, Readiness, service_router},
};
use tideway_store::{Db, Migrator};

pub use config::Config;
pub use error::ApiError;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// A running basket service: its database and its HTTP router.
#[derive(Debug, Clone)]
pub struct Basket {
    db: Db,
    router: Router,
}

impl Basket {
    /// Connects to the database, migrates it, and builds the router. Prices and stock come
    /// from `catalog`; tokens are checked with `verifier`.
    pub async fn build(
        config: &Config,
        catalog: CatalogClient,
        verifier: Arc<JwtVerifier>,
    ) -> anyhow::Result<Self> {
        let db = Db::open_service(SERVICE, &config.database_url, &MIGRATOR).await?;
        let state = lines::State {
            db: db.clone(),
            catalog,
        };
        let api = lines::routes(state).layer(Extension(verifier));
        let readiness = Readiness::default().with("database", db.readiness());
        let router = service_router(SERVICE, api, readiness, HttpOptions::default());
        Ok(Self { db, router })
    }

    /// Consumes `OrderConfirmed` from `bus`: the ordered units leave the buyer's basket.
    pub async fn subscribe(
        &self,
        bus: Arc<dyn tideway_bus::Bus>,
    ) -> anyhow::Result<tideway_bus::SubscriptionHandle> {
        orders::subscribe(self.db.clone(), bus)
            .await
            .context("cannot subscribe the basket to confirmed orders")
    }

    /// The HTTP router, wrapped with the standard stack (health, metrics, problems).
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }
}
