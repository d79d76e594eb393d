//! The catalog service: the shop's items, categories and brands.
//!
//! Everyone browses (`GET /api/catalog/items` with filters, search, sorting and pages; an
//! item; the categories with their counts; the brands), with strong ETags and
//! `Cache-Control` so the gateway and browsers can cache and revalidate. Admins create,
//! change, reprice and delete items; every change bumps the item's `version`. The contract
//! (types and typed client) is `tideway-catalog-api`. A fresh database is seeded with a demo
//! catalog ([`seed`]), idempotently, so replicas may start together.

pub mod cache;
pub mod categories;
pub mod error;
pub mod items;
pub mod seed;
pub mod time;

use std::sync::Arc;

use anyhow::Context as _;
use axum::{Extension, Router};
use serde::{Deserialize, Serialize};
use tideway_catalog_api::{PREFIX, SERVICE};
use tideway_runtime::{
    auth::JwtVerifier,
    config::{ConfigError, Validate},
    http::{HttpOptions, Readiness, service_router},
};
use tideway_store::{DatabaseUrl, Db, Migrator};

pub use error::ApiError;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The catalog's configuration (`[catalog]` in `tideway.toml`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `sqlite://path` or `postgres://…`.
    pub database_url: DatabaseUrl,
    /// Whether an empty catalog is filled with the demo catalog at start.
    pub seed: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: DatabaseUrl::sqlite("data/catalog.db"),
            seed: true,
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        // The database URL is checked as it is read (`DatabaseUrl`); nothing else to check.
        Ok(())
    }
}

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The catalog's database.
    pub db: Db,
}

/// The catalog service: a cheap-to-clone handle.
#[derive(Debug, Clone)]
pub struct Catalog {
    db: Db,
    verifier: Arc<JwtVerifier>,
}

impl Catalog {
    /// Connects to the database, migrates it, ensures the categories and, when
    /// `config.seed` is set and the catalog is empty, seeds the demo catalog.
    pub async fn build(config: &Config, verifier: Arc<JwtVerifier>) -> anyhow::Result<Self> {
        config.validate().context("invalid catalog configuration")?;
        let db = Db::open_service(SERVICE, &config.database_url, &MIGRATOR).await?;
        seed::ensure_categories(&db)
            .await
            .context("cannot create the catalog's categories")?;
        if config.seed {
            seed::seed_if_empty(&db)
                .await
                .context("cannot seed the catalog")?;
        }
        Ok(Self { db, verifier })
    }

    /// The service's router: the API under `/api/catalog` wrapped in the standard stack
    /// (request ids, access log, metrics, problems, health and readiness).
    pub fn router(&self) -> Router {
        let api = Router::new()
            .merge(items::routes())
            .merge(categories::routes());
        let api = Router::new()
            .nest(PREFIX, api)
            .with_state(AppState {
                db: self.db.clone(),
            })
            .layer(Extension(self.verifier.clone()));
        let readiness = Readiness::default().with("database", self.db.readiness());
        service_router(SERVICE, api, readiness, HttpOptions::default())
    }

    /// The catalog's database.
    pub fn db(&self) -> &Db {
        &self.db
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
