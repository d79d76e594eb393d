//! The one Tideway binary as a library: the configuration and the assembly of each role.
//!
//! * [`App::embedded`] — the gateway and every service in one process, calling one another
//!   in-process (`tideway up`);
//! * [`App::service`] — one service on its own port, reaching the others over HTTP
//!   (`tideway serve <service>`);
//! * [`App::gateway`] — the gateway alone, in front of services at their URLs
//!   (`tideway gateway`).
//!
//! Each is built (connected, migrated, seeded, bound) first and then run until a shutdown
//! token is cancelled, so tests build on port 0 and stop it at will.

pub mod config;
pub mod load;

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use anyhow::Context;
use axum::Router;
use tideway_catalog_api::CatalogClient;
use tideway_runtime::{auth::JwtVerifier, client::Transport, serve};
use tideway_store::Db;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// A service that `tideway serve` can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ServiceName {
    /// Users, passwords and tokens.
    Identity,
    /// Items, categories and prices.
    Catalog,
    /// Each user's basket.
    Basket,
}

impl ServiceName {
    /// The service's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Identity => "identity",
            Self::Catalog => "catalog",
            Self::Basket => "basket",
        }
    }
}

/// A built role, bound to its socket and ready to run.
pub struct App {
    listener: TcpListener,
    router: Router,
    dbs: Vec<Db>,
}

impl App {
    /// Everything in one process: the services call one another in-process and the gateway
    /// forwards to their routers directly. Binds `config.gateway.listen`.
    pub async fn embedded(config: &Config) -> anyhow::Result<Self> {
        let timeout = config.client_timeout();
        let identity = tideway_identity::Identity::build(&config.identity.service)
            .await
            .context("starting the identity service")?;
        let verifier = identity.verifier();
        let catalog = tideway_catalog::Catalog::build(&config.catalog.service, verifier.clone())
            .await
            .context("starting the catalog service")?;
        let catalog_client =
            CatalogClient::new(Transport::in_process("catalog", catalog.router(), timeout));
        let basket =
            tideway_basket::Basket::build(&config.basket.service, catalog_client, verifier.clone())
                .await
                .context("starting the basket service")?;
        let upstreams = HashMap::from([
            (
                "identity".to_owned(),
                Transport::in_process("identity", identity.router(), timeout),
            ),
            (
                "catalog".to_owned(),
                Transport::in_process("catalog", catalog.router(), timeout),
            ),
            (
                "basket".to_owned(),
                Transport::in_process("basket", basket.router(), timeout),
            ),
        ]);
        let gateway = tideway_gateway::Gateway::new(&config.gateway.gateway, upstreams, verifier)
            .context("configuring the gateway")?;
        let listener = serve::bind(&config.gateway.listen).await?;
        Ok(Self {
            listener,
            router: gateway.router(),
            dbs: vec![
                identity.db().clone(),
                catalog.db().clone(),
                basket.db().clone(),
            ],
        })
    }

    /// One service on `config.<service>.listen`, reaching the others at `config.urls`.
    pub async fn service(config: &Config, name: ServiceName) -> anyhow::Result<Self> {
        let (router, db, listen) = match name {
            ServiceName::Identity => {
                let identity = tideway_identity::Identity::build(&config.identity.service)
                    .await
                    .context("starting the identity service")?;
                (
                    identity.router(),
                    identity.db().clone(),
                    &config.identity.listen,
                )
            }
            ServiceName::Catalog => {
                let catalog = tideway_catalog::Catalog::build(
                    &config.catalog.service,
                    remote_verifier(config)?,
                )
                .await
                .context("starting the catalog service")?;
                (
                    catalog.router(),
                    catalog.db().clone(),
                    &config.catalog.listen,
                )
            }
            ServiceName::Basket => {
                let catalog = CatalogClient::new(Transport::http(
                    "catalog",
                    &config.urls.catalog,
                    config.client_timeout(),
                )?);
                let basket = tideway_basket::Basket::build(
                    &config.basket.service,
                    catalog,
                    remote_verifier(config)?,
                )
                .await
                .context("starting the basket service")?;
                (basket.router(), basket.db().clone(), &config.basket.listen)
            }
        };
        let listener = serve::bind(listen).await?;
        Ok(Self {
            listener,
            router,
            dbs: vec![db],
        })
    }

    /// The gateway alone, in front of the services at `config.urls`.
    pub async fn gateway(config: &Config) -> anyhow::Result<Self> {
        let timeout = config.client_timeout();
        let pool = tideway_runtime::client::http_client();
        let upstreams = HashMap::from([
            (
                "identity".to_owned(),
                Transport::http_with("identity", &config.urls.identity, timeout, pool.clone())?,
            ),
            (
                "catalog".to_owned(),
                Transport::http_with("catalog", &config.urls.catalog, timeout, pool.clone())?,
            ),
            (
                "basket".to_owned(),
                Transport::http_with("basket", &config.urls.basket, timeout, pool)?,
            ),
        ]);
        let gateway = tideway_gateway::Gateway::new(
            &config.gateway.gateway,
            upstreams,
            remote_verifier(config)?,
        )
        .context("configuring the gateway")?;
        let listener = serve::bind(&config.gateway.listen).await?;
        Ok(Self {
            listener,
            router: gateway.router(),
            dbs: Vec::new(),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` is cancelled, lets in-flight requests finish, then closes the
    /// database pools.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let result = serve::serve(self.listener, self.router, shutdown, serve::DEFAULT_GRACE).await;
        for db in &self.dbs {
            db.close().await;
        }
        result.context("serving HTTP")
    }
}

/// A verifier that fetches the identity service's keys over HTTP.
fn remote_verifier(config: &Config) -> anyhow::Result<Arc<JwtVerifier>> {
    let transport = Transport::http("identity", &config.urls.identity, config.client_timeout())?;
    Ok(Arc::new(JwtVerifier::from_jwks(
        transport,
        tideway_identity_api::JWKS_PATH,
        &config.identity.service.issuer,
        &config.identity.service.audience,
    )))
}
