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
pub mod invariants;
pub mod load;

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use anyhow::Context;
use axum::Router;
use tideway_basket_api::BasketClient;
use tideway_bus::{Bus, EmbeddedBus, EmbeddedOptions, NatsBus, NatsOptions};
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
    /// Stock and reservations.
    Inventory,
    /// Payments against the simulated card provider.
    Payment,
    /// Orders and the checkout saga.
    Ordering,
}

impl ServiceName {
    /// The service's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Identity => "identity",
            Self::Catalog => "catalog",
            Self::Basket => "basket",
            Self::Inventory => "inventory",
            Self::Payment => "payment",
            Self::Ordering => "ordering",
        }
    }
}

/// Something with background work to stop after the server stops.
enum Stoppable {
    Inventory(tideway_inventory::Inventory),
    Payment(tideway_payment::Payment),
    Ordering(tideway_ordering::Ordering),
    Bus(Arc<dyn Bus>),
}

/// The services of the embedded shape, for tests and the invariant checker.
#[derive(Clone)]
pub struct Services {
    /// Users and tokens.
    pub identity: tideway_identity::Identity,
    /// Items and prices.
    pub catalog: tideway_catalog::Catalog,
    /// Baskets.
    pub basket: tideway_basket::Basket,
    /// Stock.
    pub inventory: tideway_inventory::Inventory,
    /// Payments.
    pub payment: tideway_payment::Payment,
    /// Orders.
    pub ordering: tideway_ordering::Ordering,
}

impl Services {
    /// The databases the checkout invariants are checked on.
    pub fn stores(&self) -> invariants::Stores {
        invariants::Stores {
            ordering: self.ordering.db().clone(),
            inventory: self.inventory.db().clone(),
            payment: self.payment.db().clone(),
        }
    }
}

/// The gateway with the web front beside its routes. The front calls the gateway's own
/// routes in-process (so it sees what any client sees); the console reaches the gateway and
/// every upstream directly for their health and metrics.
fn gateway_with_web(
    config: &Config,
    upstreams: HashMap<String, Transport>,
    verifier: Arc<JwtVerifier>,
) -> anyhow::Result<(tideway_gateway::Gateway, tideway_web::Web)> {
    let gateway =
        tideway_gateway::Gateway::new(&config.gateway.gateway, upstreams.clone(), verifier.clone())
            .context("configuring the gateway")?;
    let timeout = config.client_timeout();
    let api = Transport::in_process(tideway_gateway::SERVICE, gateway.router(), timeout);
    let mut services = vec![api.clone()];
    let mut names: Vec<&String> = upstreams.keys().collect();
    names.sort();
    services.extend(
        names
            .into_iter()
            .filter_map(|name| upstreams.get(name).cloned()),
    );
    let routes = config
        .gateway
        .gateway
        .routes
        .iter()
        .map(|route| tideway_web::RouteInfo {
            prefix: route.prefix.clone(),
            upstream: route.upstream.clone(),
            read: String::from(route.read.clone()),
            write: String::from(route.write.clone()),
        })
        .collect();
    let web = tideway_web::Web::new(tideway_web::WebOptions {
        api,
        verifier,
        ops: tideway_web::OpsSources { services, routes },
    });
    Ok((gateway.with_pages(web.router()), web))
}

/// A built role, bound to its socket and ready to run.
pub struct App {
    listener: TcpListener,
    router: Router,
    dbs: Vec<Db>,
    stoppables: Vec<Stoppable>,
    services: Option<Services>,
}

async fn nats_bus(config: &Config) -> anyhow::Result<Arc<dyn Bus>> {
    let bus = NatsBus::connect(NatsOptions {
        url: config.bus.nats_url.clone(),
        stream: config.bus.stream.clone(),
        root: config.bus.root.clone(),
        ..NatsOptions::default()
    })
    .await
    .with_context(|| format!("cannot connect to NATS at {}", config.bus.nats_url))?;
    Ok(Arc::new(bus))
}

impl App {
    /// Everything in one process: the services call one another in-process and the gateway
    /// forwards to their routers directly. Events go through the embedded bus (or NATS
    /// when `bus.kind = "nats"`). Binds `config.gateway.listen`.
    pub async fn embedded(config: &Config) -> anyhow::Result<Self> {
        let timeout = config.client_timeout();
        let (bus, embedded): (Arc<dyn Bus>, Option<EmbeddedBus>) = match config.bus.kind {
            config::BusKind::Embedded => {
                let embedded = EmbeddedBus::new(EmbeddedOptions::default())
                    .await
                    .context("starting the embedded bus")?;
                (Arc::new(embedded.clone()), Some(embedded))
            }
            config::BusKind::Nats => (nats_bus(config).await?, None),
        };
        let identity = tideway_identity::Identity::build(&config.identity.service)
            .await
            .context("starting the identity service")?;
        let verifier = identity.verifier();
        let catalog = tideway_catalog::Catalog::build(&config.catalog.service, verifier.clone())
            .await
            .context("starting the catalog service")?;
        let catalog_client =
            CatalogClient::new(Transport::in_process("catalog", catalog.router(), timeout));
        let basket = tideway_basket::Basket::build(
            &config.basket.service,
            catalog_client.clone(),
            verifier.clone(),
        )
        .await
        .context("starting the basket service")?;
        basket.subscribe(bus.clone()).await?;
        let inventory = tideway_inventory::Inventory::build(
            &config.inventory.service,
            bus.clone(),
            verifier.clone(),
            catalog_client,
        )
        .await
        .context("starting the inventory service")?;
        // In one process the catalog answers at once: start with every item stocked.
        if !matches!(
            tokio::time::timeout(std::time::Duration::from_secs(30), inventory.seeded()).await,
            Ok(true)
        ) {
            tracing::warn!("inventory is not seeded from the catalog yet; it keeps trying");
        }
        let payment =
            tideway_payment::Payment::build(&config.payment.service, bus.clone(), verifier.clone())
                .await
                .context("starting the payment service")?;
        let basket_client =
            BasketClient::new(Transport::in_process("basket", basket.router(), timeout));
        let ordering = tideway_ordering::Ordering::build(
            &config.ordering.service,
            bus.clone(),
            verifier.clone(),
            basket_client,
        )
        .await
        .context("starting the ordering service")?;
        let routers = [
            ("identity", identity.router()),
            ("catalog", catalog.router()),
            ("basket", basket.router()),
            ("inventory", inventory.router()),
            ("payment", payment.router()),
            ("ordering", ordering.router()),
        ];
        let upstreams: HashMap<String, Transport> = routers
            .into_iter()
            .map(|(name, router)| {
                (
                    name.to_owned(),
                    Transport::in_process(name, router, timeout),
                )
            })
            .collect();
        let (gateway, web) = gateway_with_web(config, upstreams, verifier)?;
        web.tap_events(&bus)
            .await
            .context("subscribing the console to the bus")?;
        // Every consumer has subscribed: events may flow.
        if let Some(embedded) = &embedded {
            embedded.open();
        }
        let listener = serve::bind(&config.gateway.listen).await?;
        let services = Services {
            identity,
            catalog,
            basket,
            inventory,
            payment,
            ordering,
        };
        Ok(Self {
            listener,
            router: gateway.router(),
            dbs: vec![
                services.identity.db().clone(),
                services.catalog.db().clone(),
                services.basket.db().clone(),
                services.inventory.db().clone(),
                services.payment.db().clone(),
                services.ordering.db().clone(),
            ],
            stoppables: vec![
                Stoppable::Ordering(services.ordering.clone()),
                Stoppable::Payment(services.payment.clone()),
                Stoppable::Inventory(services.inventory.clone()),
                Stoppable::Bus(bus),
            ],
            services: Some(services),
        })
    }

    /// One service on `config.<service>.listen`, reaching the others at `config.urls` and
    /// the bus on NATS.
    pub async fn service(config: &Config, name: ServiceName) -> anyhow::Result<Self> {
        let timeout = config.client_timeout();
        let catalog_client = || -> anyhow::Result<CatalogClient> {
            Ok(CatalogClient::new(Transport::http(
                "catalog",
                &config.urls.catalog,
                timeout,
            )?))
        };
        let mut stoppables = Vec::new();
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
                let bus = nats_bus(config).await?;
                let basket = tideway_basket::Basket::build(
                    &config.basket.service,
                    catalog_client()?,
                    remote_verifier(config)?,
                )
                .await
                .context("starting the basket service")?;
                basket.subscribe(bus.clone()).await?;
                stoppables.push(Stoppable::Bus(bus));
                (basket.router(), basket.db().clone(), &config.basket.listen)
            }
            ServiceName::Inventory => {
                let bus = nats_bus(config).await?;
                let inventory = tideway_inventory::Inventory::build(
                    &config.inventory.service,
                    bus.clone(),
                    remote_verifier(config)?,
                    catalog_client()?,
                )
                .await
                .context("starting the inventory service")?;
                stoppables.push(Stoppable::Inventory(inventory.clone()));
                stoppables.push(Stoppable::Bus(bus));
                (
                    inventory.router(),
                    inventory.db().clone(),
                    &config.inventory.listen,
                )
            }
            ServiceName::Payment => {
                let bus = nats_bus(config).await?;
                let payment = tideway_payment::Payment::build(
                    &config.payment.service,
                    bus.clone(),
                    remote_verifier(config)?,
                )
                .await
                .context("starting the payment service")?;
                stoppables.push(Stoppable::Payment(payment.clone()));
                stoppables.push(Stoppable::Bus(bus));
                (
                    payment.router(),
                    payment.db().clone(),
                    &config.payment.listen,
                )
            }
            ServiceName::Ordering => {
                let bus = nats_bus(config).await?;
                let basket =
                    BasketClient::new(Transport::http("basket", &config.urls.basket, timeout)?);
                let ordering = tideway_ordering::Ordering::build(
                    &config.ordering.service,
                    bus.clone(),
                    remote_verifier(config)?,
                    basket,
                )
                .await
                .context("starting the ordering service")?;
                stoppables.push(Stoppable::Ordering(ordering.clone()));
                stoppables.push(Stoppable::Bus(bus));
                (
                    ordering.router(),
                    ordering.db().clone(),
                    &config.ordering.listen,
                )
            }
        };
        let listener = serve::bind(listen).await?;
        Ok(Self {
            listener,
            router,
            dbs: vec![db],
            stoppables,
            services: None,
        })
    }

    /// The gateway alone, in front of the services at `config.urls`.
    pub async fn gateway(config: &Config) -> anyhow::Result<Self> {
        let timeout = config.client_timeout();
        let pool = tideway_runtime::client::http_client();
        let urls = [
            ("identity", &config.urls.identity),
            ("catalog", &config.urls.catalog),
            ("basket", &config.urls.basket),
            ("inventory", &config.urls.inventory),
            ("payment", &config.urls.payment),
            ("ordering", &config.urls.ordering),
        ];
        let mut upstreams = HashMap::new();
        for (name, url) in urls {
            upstreams.insert(
                name.to_owned(),
                Transport::http_with(name, url, timeout, pool.clone())?,
            );
        }
        let (gateway, web) = gateway_with_web(config, upstreams, remote_verifier(config)?)?;
        // The console shows the bus's events when NATS answers; the shop works without it.
        let mut stoppables = Vec::new();
        match nats_bus(config).await {
            Ok(bus) => match web.tap_events(&bus).await {
                Ok(_) => stoppables.push(Stoppable::Bus(bus)),
                Err(err) => tracing::warn!(error = %err, "the console cannot follow the bus"),
            },
            Err(err) => tracing::warn!(error = %err, "the console cannot follow the bus"),
        }
        let listener = serve::bind(&config.gateway.listen).await?;
        Ok(Self {
            listener,
            router: gateway.router(),
            dbs: Vec::new(),
            stoppables,
            services: None,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The embedded shape's services (`None` for the other roles).
    pub fn services(&self) -> Option<&Services> {
        self.services.as_ref()
    }

    /// Serves until `shutdown` is cancelled, lets in-flight requests finish, stops the
    /// services' background work and the bus, then closes the database pools.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let result = serve::serve(self.listener, self.router, shutdown, serve::DEFAULT_GRACE).await;
        for stoppable in &self.stoppables {
            match stoppable {
                Stoppable::Inventory(service) => service.shutdown().await,
                Stoppable::Payment(service) => service.shutdown().await,
                Stoppable::Ordering(service) => service.shutdown().await,
                Stoppable::Bus(bus) => bus.shutdown().await,
            }
        }
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
