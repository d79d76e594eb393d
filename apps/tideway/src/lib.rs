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

pub mod audit;
pub mod chaos;
pub mod config;
#[cfg(test)]
mod contracts;
pub mod dlq;
pub mod edge;
pub mod faults;
pub mod invariants;
pub mod load;
pub mod openapi;
pub mod replay;
pub mod supervisor;

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use anyhow::Context;
use axum::Router;
use tideway_balance::Balancers;
use tideway_basket_api::BasketClient;
use tideway_bus::{
    Bus, DeadLetters, EmbeddedBus, EmbeddedOptions, NatsBus, NatsOptions, RabbitBus, RabbitOptions,
};
use tideway_catalog_api::CatalogClient;
use tideway_discovery::{Instance, Registry};
use tideway_payment_api::PaymentClient;
use tideway_runtime::{
    auth::JwtVerifier,
    client::{Availability, Transport},
    http::Readiness,
    serve,
};
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
    /// Emails to customers about their orders.
    Notification,
    /// Read models built from events: sales, revenue, the order funnel.
    Reporting,
}

impl ServiceName {
    /// Every service, in the order they start: each after the services it calls.
    pub const ALL: [Self; 8] = [
        Self::Identity,
        Self::Catalog,
        Self::Basket,
        Self::Inventory,
        Self::Payment,
        Self::Ordering,
        Self::Notification,
        Self::Reporting,
    ];

    /// Their names, in the same order.
    pub const NAMES: [&'static str; 8] = {
        let mut names = [""; 8];
        let mut i = 0;
        while i < names.len() {
            names[i] = Self::ALL[i].as_str();
            i += 1;
        }
        names
    };

    /// Whether the service publishes or consumes events.
    fn needs_bus(self) -> bool {
        !matches!(self, Self::Identity)
    }

    /// The service's name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Identity => "identity",
            Self::Catalog => "catalog",
            Self::Basket => "basket",
            Self::Inventory => "inventory",
            Self::Payment => "payment",
            Self::Ordering => "ordering",
            Self::Notification => "notification",
            Self::Reporting => "reporting",
        }
    }
}

/// Something with background work to stop after the server stops.
enum Stoppable {
    Identity(tideway_identity::Identity),
    Catalog(tideway_catalog::Catalog),
    Basket(tideway_basket::Basket),
    Inventory(tideway_inventory::Inventory),
    Payment(tideway_payment::Payment),
    Ordering(tideway_ordering::Ordering),
    Notification(tideway_notification::Notification),
    Reporting(tideway_reporting::Reporting),
    Bus(Arc<dyn Bus>),
    /// The web front's background work (the console's sampler); boxed, it is large.
    Web(Box<tideway_web::Web>),
}

/// One built service, whichever it is: the same build serves both shapes.
enum Built {
    Identity(tideway_identity::Identity),
    Catalog(tideway_catalog::Catalog),
    Basket(tideway_basket::Basket),
    Inventory(tideway_inventory::Inventory),
    Payment(tideway_payment::Payment),
    Ordering(tideway_ordering::Ordering),
    Notification(tideway_notification::Notification),
    Reporting(tideway_reporting::Reporting),
}

impl Built {
    fn router(&self) -> Router {
        match self {
            Self::Identity(service) => service.router(),
            Self::Catalog(service) => service.router(),
            Self::Basket(service) => service.router(),
            Self::Inventory(service) => service.router(),
            Self::Payment(service) => service.router(),
            Self::Ordering(service) => service.router(),
            Self::Notification(service) => service.router(),
            Self::Reporting(service) => service.router(),
        }
    }

    /// Its SQL database (none for a basket on Redis).
    fn db(&self) -> Option<&Db> {
        Some(match self {
            Self::Identity(service) => service.db(),
            Self::Catalog(service) => service.db(),
            Self::Basket(service) => return service.db(),
            Self::Inventory(service) => service.db(),
            Self::Payment(service) => service.db(),
            Self::Ordering(service) => service.db(),
            Self::Notification(service) => service.db(),
            Self::Reporting(service) => service.db(),
        })
    }

    /// Its background work (outbox relays, consumers, sweepers), stopped after serving.
    fn stoppable(&self) -> Option<Stoppable> {
        match self {
            Self::Inventory(service) => Some(Stoppable::Inventory(service.clone())),
            Self::Payment(service) => Some(Stoppable::Payment(service.clone())),
            Self::Ordering(service) => Some(Stoppable::Ordering(service.clone())),
            Self::Basket(service) => Some(Stoppable::Basket(service.clone())),
            Self::Notification(service) => Some(Stoppable::Notification(service.clone())),
            Self::Reporting(service) => Some(Stoppable::Reporting(service.clone())),
            Self::Identity(service) => Some(Stoppable::Identity(service.clone())),
            Self::Catalog(service) => Some(Stoppable::Catalog(service.clone())),
        }
    }
}

/// How a service being built reaches the services it calls and checks tokens.
enum Peers {
    /// In this process: the routers of the services built before it, and the identity
    /// service's own verifier.
    InProcess {
        routers: HashMap<&'static str, Router>,
        /// The readiness checks of the services built before it that callers watch.
        readiness: HashMap<&'static str, Readiness>,
        verifier: Option<Arc<JwtVerifier>>,
    },
    /// Over HTTP through the balancers over discovery, with the identity service's
    /// published keys.
    Remote {
        transports: HashMap<&'static str, Transport>,
        availabilities: HashMap<&'static str, Availability>,
        verifier: Arc<JwtVerifier>,
    },
}

impl Peers {
    /// A transport to `service`.
    fn transport(&self, config: &Config, service: ServiceName) -> anyhow::Result<Transport> {
        let timeout = config.client_timeout();
        let name = service.as_str();
        match self {
            Self::InProcess { routers, .. } => {
                let router = routers
                    .get(name)
                    .with_context(|| format!("the {name} service is built after its callers"))?;
                Ok(Transport::in_process(name, router.clone(), timeout))
            }
            Self::Remote { transports, .. } => transports
                .get(name)
                .cloned()
                .with_context(|| format!("no transport to the {name} service")),
        }
    }

    /// Whether `service` can take work now, read without a call: in this process its own
    /// readiness checks, polled by the caller every `balance.health_interval_ms`; across
    /// processes its balancer's view of its replicas.
    fn availability(&self, config: &Config, service: ServiceName) -> anyhow::Result<Availability> {
        let name = service.as_str();
        match self {
            Self::InProcess { readiness, .. } => {
                let readiness = readiness
                    .get(name)
                    .cloned()
                    .with_context(|| format!("the {name} service is built after its callers"))?;
                Ok(Availability::polled(
                    name,
                    config.balance.health_interval(),
                    config.balance.health_timeout(),
                    move || {
                        let readiness = readiness.clone();
                        async move { failing(readiness.check().await) }
                    },
                ))
            }
            Self::Remote { availabilities, .. } => availabilities
                .get(name)
                .cloned()
                .with_context(|| format!("no view of the {name} service")),
        }
    }

    /// The verifier of access tokens.
    fn verifier(&self) -> anyhow::Result<Arc<JwtVerifier>> {
        match self {
            Self::InProcess { verifier, .. } => verifier
                .clone()
                .context("the identity service is built before the services it verifies for"),
            Self::Remote { verifier, .. } => Ok(verifier.clone()),
        }
    }
}

/// `Ok` when every readiness check passed, else the failing ones.
fn failing(
    results: Vec<(std::borrow::Cow<'static, str>, Result<(), String>)>,
) -> Result<(), String> {
    let failing: Vec<String> = results
        .into_iter()
        .filter_map(|(name, result)| result.err().map(|err| format!("{name}: {err}")))
        .collect();
    if failing.is_empty() {
        Ok(())
    } else {
        Err(failing.join("; "))
    }
}

/// What the separate-process roles reach other processes through: the registry of
/// `discovery.kind` and one balancer per service over it.
struct Remote {
    registry: Arc<dyn Registry>,
    balancers: Balancers,
    /// `balance.enabled = false`: calls go to `urls.*` through this one pool instead.
    fixed: Option<(crate::config::Urls, tideway_runtime::client::HttpClient)>,
}

impl Remote {
    async fn connect(config: &Config) -> anyhow::Result<Self> {
        // The balancers resolve their metric handles as they are built: the recorder first.
        tideway_runtime::metrics::prometheus();
        let registry = tideway_discovery::connect(&config.discovery)
            .await
            .context("connecting to service discovery")?;
        let balancers = Balancers::new(registry.clone(), config.balance.clone())
            .context("configuring the balancers")?;
        let fixed = (!config.balance.enabled)
            .then(|| (config.urls.clone(), tideway_runtime::client::http_client()));
        Ok(Self {
            registry,
            balancers,
            fixed,
        })
    }

    /// A balanced transport to `name`, every call under `deadline`.
    async fn transport(
        &self,
        name: ServiceName,
        deadline: std::time::Duration,
    ) -> anyhow::Result<Transport> {
        if let Some((urls, pool)) = &self.fixed {
            return Ok(Transport::http_with(
                name.as_str(),
                urls.of(name),
                deadline,
                pool.clone(),
            )?);
        }
        self.balancers
            .transport(name.as_str(), deadline)
            .await
            .with_context(|| format!("balancing calls to the {} service", name.as_str()))
    }

    /// Whether `name` can take work now: its balancer's view of its replicas, or with
    /// `balance.enabled = false` a probe of `/health/ready` at its one address, as often and
    /// as patient as the balancers' health checks.
    async fn availability(
        &self,
        name: ServiceName,
        config: &Config,
    ) -> anyhow::Result<Availability> {
        if let Some((urls, _)) = &self.fixed {
            return Availability::probe_url(
                name.as_str(),
                urls.of(name),
                config.balance.health_interval(),
                config.balance.health_timeout(),
            )
            .with_context(|| format!("probing the {} service (urls.{0})", name.as_str()));
        }
        self.balancers
            .availability(name.as_str())
            .await
            .with_context(|| format!("following the {} service's replicas", name.as_str()))
    }

    /// Every service through its balancer, and the verifier of the identity service's keys.
    async fn peers(&self, config: &Config) -> anyhow::Result<Peers> {
        let mut transports = HashMap::new();
        let mut availabilities = HashMap::new();
        for name in ServiceName::ALL {
            transports.insert(
                name.as_str(),
                self.transport(name, config.client_timeout()).await?,
            );
            availabilities.insert(name.as_str(), self.availability(name, config).await?);
        }
        let identity = transports
            .get(ServiceName::Identity.as_str())
            .cloned()
            .context("no transport to the identity service")?;
        let verifier = Arc::new(JwtVerifier::from_jwks(
            identity,
            tideway_identity_api::JWKS_PATH,
            &config.identity.service.issuer,
            &config.identity.service.audience,
        ));
        Ok(Peers::Remote {
            transports,
            availabilities,
            verifier,
        })
    }

    async fn shutdown(&self) {
        self.balancers.shutdown().await;
        self.registry.shutdown().await;
    }
}

/// Builds `name` (connects, migrates, seeds, starts its background work), reaching the
/// services it calls through `peers` and the bus through `bus`.
async fn build(
    config: &Config,
    name: ServiceName,
    peers: &Peers,
    bus: Option<&Arc<dyn Bus>>,
) -> anyhow::Result<Built> {
    let bus = || {
        bus.cloned()
            .with_context(|| format!("the {} service needs the bus", name.as_str()))
    };
    let context = || format!("starting the {} service", name.as_str());
    let built = match name {
        // Peers in this process: the shape `tideway up` runs, where demo accounts belong.
        ServiceName::Identity => Built::Identity(
            tideway_identity::Identity::build(
                &config.identity_for(matches!(peers, Peers::InProcess { .. })),
            )
            .await
            .with_context(context)?,
        ),
        ServiceName::Catalog => Built::Catalog(
            tideway_catalog::Catalog::build(
                &config.catalog.service,
                bus()?,
                &config.replica_of(name.as_str()),
                peers.verifier()?,
            )
            .await
            .with_context(context)?,
        ),
        ServiceName::Basket => {
            let basket = tideway_basket::Basket::build(
                &config.basket.service,
                CatalogClient::new(peers.transport(config, ServiceName::Catalog)?),
                peers.verifier()?,
            )
            .await
            .with_context(context)?;
            basket.subscribe(bus()?).await.with_context(context)?;
            basket
                .follow_catalog(bus()?, &config.instance_id_of(name.as_str()))
                .await
                .with_context(context)?;
            Built::Basket(basket)
        }
        ServiceName::Inventory => Built::Inventory(
            tideway_inventory::Inventory::build(
                &config.inventory.service,
                bus()?,
                &config.replica_of(name.as_str()),
                peers.verifier()?,
                CatalogClient::new(peers.transport(config, ServiceName::Catalog)?),
            )
            .await
            .with_context(context)?,
        ),
        ServiceName::Payment => Built::Payment(
            tideway_payment::Payment::build(
                &config.payment.service,
                bus()?,
                &config.replica_of(name.as_str()),
                peers.verifier()?,
            )
            .await
            .with_context(context)?,
        ),
        ServiceName::Ordering => Built::Ordering(
            tideway_ordering::Ordering::build(
                &config.ordering.service,
                bus()?,
                &config.replica_of(name.as_str()),
                peers.verifier()?,
                BasketClient::new(peers.transport(config, ServiceName::Basket)?),
                PaymentClient::new(peers.transport(config, ServiceName::Payment)?),
                peers.availability(config, ServiceName::Inventory)?,
            )
            .await
            .with_context(context)?,
        ),
        ServiceName::Notification => Built::Notification(
            tideway_notification::Notification::build(
                &config.notification.service,
                bus()?,
                &config.replica_of(name.as_str()),
                peers.verifier()?,
            )
            .await
            .with_context(context)?,
        ),
        ServiceName::Reporting => Built::Reporting(
            tideway_reporting::Reporting::build(
                &config.reporting.service,
                bus()?,
                &config.replica_of(name.as_str()),
                peers.verifier()?,
            )
            .await
            .with_context(context)?,
        ),
    };
    Ok(built)
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
    /// Emails about orders.
    pub notification: tideway_notification::Notification,
    /// Read models from events.
    pub reporting: tideway_reporting::Reporting,
}

impl Services {
    /// The services of `built`, one of each.
    fn from_built(built: Vec<Built>) -> anyhow::Result<Self> {
        let (mut identity, mut catalog, mut basket) = (None, None, None);
        let (mut inventory, mut payment, mut ordering) = (None, None, None);
        let (mut notification, mut reporting) = (None, None);
        for service in built {
            match service {
                Built::Identity(service) => identity = Some(service),
                Built::Catalog(service) => catalog = Some(service),
                Built::Basket(service) => basket = Some(service),
                Built::Inventory(service) => inventory = Some(service),
                Built::Payment(service) => payment = Some(service),
                Built::Ordering(service) => ordering = Some(service),
                Built::Notification(service) => notification = Some(service),
                Built::Reporting(service) => reporting = Some(service),
            }
        }
        let missing = |name: &str| anyhow::anyhow!("the {name} service was not built");
        Ok(Self {
            identity: identity.ok_or_else(|| missing("identity"))?,
            catalog: catalog.ok_or_else(|| missing("catalog"))?,
            basket: basket.ok_or_else(|| missing("basket"))?,
            inventory: inventory.ok_or_else(|| missing("inventory"))?,
            payment: payment.ok_or_else(|| missing("payment"))?,
            ordering: ordering.ok_or_else(|| missing("ordering"))?,
            notification: notification.ok_or_else(|| missing("notification"))?,
            reporting: reporting.ok_or_else(|| missing("reporting"))?,
        })
    }

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
/// every upstream directly for their health and metrics. `up`: started by `tideway up`.
fn gateway_with_web(
    config: &Config,
    upstreams: HashMap<String, Transport>,
    verifier: Arc<JwtVerifier>,
    balancers: Option<Balancers>,
    up: bool,
    flags: &tideway_flags::Flags,
    audit: &tideway_audit::AuditStore,
) -> anyhow::Result<(tideway_gateway::Gateway, tideway_web::Web)> {
    let mut gateway =
        tideway_gateway::Gateway::new(&config.gateway.gateway, upstreams.clone(), verifier.clone())
            .context("configuring the gateway")?
            .with_audit(audit.clone())
            // `GET`/`PUT /api/v1/admin/flags` and `GET /api/v1/admin/audit`, which the console
            // reads through the gateway like any client.
            .with_admin(
                tideway_flags::admin_routes(flags.clone(), Arc::clone(&verifier)).merge(
                    tideway_audit::admin_routes(audit.clone(), Arc::clone(&verifier)),
                ),
            );
    record_flag_changes(flags, audit);
    if let Some(balancers) = balancers {
        gateway = gateway.with_balancers(balancers);
    }
    let timeout = config.client_timeout();
    // The front's calls carry the browser's address, so the rate limits count them as the
    // browser's own.
    let api = gateway.front_transport(timeout);
    let mut services = vec![api.clone()];
    // A version (`catalog@v2`) is not a service of its own: the replicas table and the
    // versions panel show it.
    let mut names: Vec<&String> = upstreams.keys().filter(|n| !n.contains('@')).collect();
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
        ops: tideway_web::OpsSources {
            services,
            routes,
            sample_every: config.web.console_sample_every(),
        },
        origin: config.web.origin()?,
        demo_logins: config.demo_logins(up),
        streams: config.web.stream_caps(),
        openapi: Some(openapi::json()),
        flags: flags.clone(),
    });
    // The console's charts are read in the background from the start, so opening it shows
    // the last 15 minutes at once.
    web.start_sampling();
    Ok((gateway.with_pages(web.router()), web))
}

/// Records every flag change made in this process in the audit trail (a change that
/// came from another process is recorded where it was made).
fn record_flag_changes(flags: &tideway_flags::Flags, audit: &tideway_audit::AuditStore) {
    let recorder = tideway_audit::Recorder::start(audit.clone());
    flags.observe(move |change| {
        if change.kind != tideway_flags::ChangeKind::Local {
            return;
        }
        recorder.record(tideway_audit::Entry {
            actor: change.by.clone(),
            action: "flags.replace".to_owned(),
            target: tideway_flags::FLAGS_PATH.to_owned(),
            before: serde_json::to_value(&change.before).ok(),
            after: serde_json::to_value(&change.after).ok(),
            trace_id: tideway_audit::current_trace_id(),
        });
    });
}

/// Opens the audit trail at `audit.database_url`.
async fn audit_of(config: &Config) -> anyhow::Result<tideway_audit::AuditStore> {
    tideway_audit::AuditStore::open(&config.audit.database_url)
        .await
        .context("opening the audit trail (audit.database_url)")
}

/// A built role, bound to its socket and ready to run.
pub struct App {
    listener: TcpListener,
    router: Router,
    dbs: Vec<Db>,
    stoppables: Vec<Stoppable>,
    services: Option<Services>,
    serve_options: serve::ServeOptions,
    /// TLS termination (the gateway's, when `gateway.tls` is set).
    tls: Option<tideway_runtime::tls::TlsAcceptor>,
    /// The registry and balancers of a separate-process role.
    remote: Option<Remote>,
    /// The replica `tideway serve` announces once serving, and withdraws before draining,
    /// with how long it serves on after withdrawing (`discovery.drain_delay_ms`).
    announce: Option<(Instance, std::time::Duration)>,
    /// The gateway's running configuration, when this role runs a gateway.
    control: Option<tideway_gateway::GatewayControl>,
    /// Follows the configuration file, once [`App::watch_config`] started it.
    watcher: Option<edge::ConfigWatcher>,
    /// Shares the gateway's configuration changes with the other gateway replicas.
    _shared_config: Option<edge::SharedConfig>,
    /// This process's feature flags.
    flags: tideway_flags::Flags,
    /// Shares flag changes with every other process.
    _shared_flags: Option<tideway_flags::SharedFlags>,
}

/// The running flags of a process, starting with the configuration's.
fn flags_of(config: &Config) -> anyhow::Result<tideway_flags::Flags> {
    tideway_flags::Flags::new(config.flags.clone()).context("reading the feature flags")
}

/// Follows the other processes' flag changes (and shares this one's) when
/// `share_flags` is set.
async fn share_flags(
    config: &Config,
    flags: &tideway_flags::Flags,
) -> anyhow::Result<Option<tideway_flags::SharedFlags>> {
    if !config.share_flags {
        return Ok(None);
    }
    let nats = &config.discovery.nats;
    let bucket = format!("{}_flags", nats.bucket);
    let shared = tideway_flags::SharedFlags::start(&nats.url, &bucket, flags.clone())
        .await
        .context("sharing the feature flags over NATS")?;
    Ok(Some(shared))
}

/// A service's routes with the process's flags, for handlers reading
/// `tideway_flags::RequestFlags`.
fn with_flags(router: Router, flags: &tideway_flags::Flags) -> Router {
    router.layer(axum::Extension(flags.clone()))
}

/// The versions the gateway reaches at a fixed URL (`gateway.upstream_urls`), each with
/// its own connection pool.
fn versions_at_urls(config: &Config) -> anyhow::Result<Vec<(String, Transport)>> {
    config
        .gateway
        .upstream_urls
        .iter()
        .map(|(name, url)| {
            let transport = Transport::http(name, url, config.client_timeout())
                .with_context(|| format!("gateway.upstream_urls.{name:?}"))?;
            anyhow::Ok((name.clone(), transport))
        })
        .collect()
}

/// The answer header naming the version label of the replica that answered.
pub const VERSION_HEADER: &str = "x-tideway-version";

/// Every answer of `router` (injected faults included) with [`VERSION_HEADER`] set to
/// `version`, when the replica runs with a version label: which version served a request
/// can be told from its answer. Unlabelled replicas add nothing.
fn with_version_header(router: Router, version: Option<&str>) -> Router {
    let Some(value) = version.and_then(|version| axum::http::HeaderValue::from_str(version).ok())
    else {
        return router;
    };
    router.layer(axum::middleware::map_response(
        move |mut response: axum::response::Response| {
            let value = value.clone();
            async move {
                response.headers_mut().insert(VERSION_HEADER, value);
                response
            }
        },
    ))
}

/// Purges the gateway's cached catalog answers on every catalog event, on a consumer of
/// this gateway process's own (so every gateway replica hears every event).
async fn purge_on_catalog_events(
    config: &Config,
    gateway: &tideway_gateway::Gateway,
    bus: &Arc<dyn Bus>,
) -> anyhow::Result<()> {
    let purger = gateway.purger();
    let consumer: String = format!("gateway-cache-{}", config.instance_id_of("gateway"))
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
    let handler = move |_event: tideway_bus::Event| {
        purger.purge(ServiceName::Catalog.as_str());
        async { Ok::<_, std::convert::Infallible>(()) }
    };
    bus.subscribe(
        tideway_bus::SubscribeOptions::new(consumer, tideway_catalog_api::EVENTS),
        Arc::new(handler),
    )
    .await
    .context("subscribing the gateway's cache to the catalog's events")?;
    Ok(())
}

/// The bus of a separate process: RabbitMQ when `bus.kind = "rabbitmq"`, NATS otherwise;
/// with its dead letters.
async fn remote_bus(config: &Config) -> anyhow::Result<(Arc<dyn Bus>, Arc<dyn DeadLetters>)> {
    if config.bus.kind == config::BusKind::Rabbitmq {
        let rabbit = rabbit_bus_of(config, false).await?;
        return Ok((Arc::new(rabbit.clone()), Arc::new(rabbit)));
    }
    let nats = nats_bus_of(config).await?;
    Ok((Arc::new(nats.clone()), Arc::new(nats)))
}

/// The RabbitMQ bus of `config`; `held`: publishing waits for [`RabbitBus::open`].
pub async fn rabbit_bus_of(config: &Config, held: bool) -> anyhow::Result<RabbitBus> {
    RabbitBus::connect(rabbit_options(config, held))
        .await
        .with_context(|| {
            format!(
                "cannot connect to RabbitMQ at {} (bus.rabbitmq_url)",
                redact_url(&config.bus.rabbitmq_url)
            )
        })
}

/// The RabbitMQ options of `config`.
pub fn rabbit_options(config: &Config, held: bool) -> RabbitOptions {
    RabbitOptions {
        url: config.bus.rabbitmq_url.clone(),
        prefix: config.bus.root.clone(),
        held,
        queue_expiry: (config.bus.rabbitmq_queue_expiry_ms > 0)
            .then(|| std::time::Duration::from_millis(config.bus.rabbitmq_queue_expiry_ms)),
        ..RabbitOptions::default()
    }
}

/// `url` without its password, for messages.
fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((credentials, host)) => {
                let user = credentials.split(':').next().unwrap_or_default();
                format!("{scheme}://{user}:…@{host}")
            }
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

async fn nats_bus_of(config: &Config) -> anyhow::Result<NatsBus> {
    let bus = NatsBus::connect(NatsOptions {
        url: config.bus.nats_url.clone(),
        stream: config.bus.stream.clone(),
        root: config.bus.root.clone(),
        ..NatsOptions::default()
    })
    .await
    .with_context(|| format!("cannot connect to NATS at {}", config.bus.nats_url))?;
    Ok(bus)
}

impl App {
    /// Everything in one process: the services call one another in-process and the gateway
    /// forwards to their routers directly. Events go through the embedded bus (or NATS
    /// when `bus.kind = "nats"`, RabbitMQ when `"rabbitmq"`). Binds `config.gateway.listen`.
    pub async fn embedded(config: &Config) -> anyhow::Result<Self> {
        let mut bus_dbs = Vec::new();
        let mut rabbit = None;
        let (bus, embedded, letters): (Arc<dyn Bus>, Option<EmbeddedBus>, Arc<dyn DeadLetters>) =
            match config.bus.kind {
                config::BusKind::Embedded => {
                    let letters = dlq::open_table(config).await?;
                    bus_dbs.push(letters.clone());
                    let embedded = EmbeddedBus::new(EmbeddedOptions {
                        dead_letters: Some(letters),
                        event_log_retention: config.event_log_retention(),
                    })
                    .await
                    .context("starting the embedded bus")?;
                    (
                        Arc::new(embedded.clone()),
                        Some(embedded.clone()),
                        Arc::new(embedded),
                    )
                }
                config::BusKind::Nats => {
                    let nats = nats_bus_of(config).await?;
                    (Arc::new(nats.clone()), None, Arc::new(nats))
                }
                config::BusKind::Rabbitmq => {
                    // Held until every service has declared its queues: an event published
                    // before its consumer's queue exists would reach nobody.
                    let bus = rabbit_bus_of(config, true).await?;
                    rabbit = Some(bus.clone());
                    (Arc::new(bus.clone()), None, Arc::new(bus))
                }
            };
        let flags = flags_of(config)?;
        let mut peers = Peers::InProcess {
            routers: HashMap::new(),
            readiness: HashMap::new(),
            verifier: None,
        };
        let mut built = Vec::new();
        for name in ServiceName::ALL {
            let service = build(config, name, &peers, Some(&bus)).await?;
            if let Built::Inventory(inventory) = &service
                // In one process the catalog answers at once: start with every item stocked.
                && !matches!(
                    tokio::time::timeout(std::time::Duration::from_secs(30), inventory.seeded())
                        .await,
                    Ok(true)
                )
            {
                tracing::warn!("inventory is not seeded from the catalog yet; it keeps trying");
            }
            if let (Built::Identity(identity), Peers::InProcess { verifier, .. }) =
                (&service, &mut peers)
            {
                *verifier = Some(identity.verifier());
            }
            if let Peers::InProcess {
                routers, readiness, ..
            } = &mut peers
            {
                routers.insert(name.as_str(), with_flags(service.router(), &flags));
                // Ordering refuses checkout while the inventory is not ready.
                if let Built::Inventory(inventory) = &service {
                    readiness.insert(name.as_str(), inventory.readiness());
                }
            }
            built.push(service);
        }
        let verifier = peers.verifier()?;
        let mut upstreams: HashMap<String, Transport> = ServiceName::ALL
            .into_iter()
            .map(|name| Ok((name.as_str().to_owned(), peers.transport(config, name)?)))
            .collect::<anyhow::Result<_>>()?;
        upstreams.extend(versions_at_urls(config)?);
        let audit = audit_of(config).await?;
        let (gateway, web) =
            gateway_with_web(config, upstreams, verifier, None, true, &flags, &audit)?;
        let shared_flags = share_flags(config, &flags).await?;
        purge_on_catalog_events(config, &gateway, &bus).await?;
        web.tap_events(&bus)
            .await
            .context("subscribing the console to the bus")?;
        web.show_dead_letters(letters);
        // Every consumer has subscribed: events may flow.
        if let Some(embedded) = &embedded {
            embedded.open();
        }
        if let Some(rabbit) = &rabbit {
            rabbit.open();
        }
        let listener = serve::bind(&config.gateway.listen).await?;
        let mut dbs: Vec<Db> = built.iter().filter_map(Built::db).cloned().collect();
        dbs.extend(bus_dbs);
        dbs.push(audit.db().clone());
        // Stopped in reverse order of start: the console's sampler, ordering first, the bus
        // last.
        let mut stoppables = vec![Stoppable::Web(Box::new(web))];
        stoppables.extend(built.iter().rev().filter_map(Built::stoppable));
        stoppables.push(Stoppable::Bus(bus));
        Ok(Self {
            listener,
            router: gateway.router(),
            dbs,
            stoppables,
            services: Some(Services::from_built(built)?),
            serve_options: config.server.options(serve::DEFAULT_GRACE),
            tls: config.gateway.tls.acceptor()?,
            remote: None,
            announce: None,
            control: Some(gateway.control()),
            watcher: None,
            _shared_config: None,
            flags,
            _shared_flags: shared_flags,
        })
    }

    /// One service on `config.<service>.listen`, reaching the others through discovery
    /// (`discovery.kind`) and a balancer per service, and the bus on NATS (RabbitMQ when
    /// `bus.kind = "rabbitmq"`). Once serving it
    /// registers itself as `config.instance_id_of(service)` at its bound address, and it
    /// deregisters before draining.
    pub async fn service(config: &Config, name: ServiceName) -> anyhow::Result<Self> {
        let bus = if name.needs_bus() {
            Some(remote_bus(config).await?.0)
        } else {
            None
        };
        let remote = Remote::connect(config).await?;
        let peers = remote.peers(config).await?;
        let service = build(config, name, &peers, bus.as_ref()).await?;
        let mut stoppables: Vec<Stoppable> = service.stoppable().into_iter().collect();
        stoppables.extend(bus.map(Stoppable::Bus));
        let listener = serve::bind(config.listen_of(name)).await?;
        let mut addr = listener.local_addr()?;
        if addr.ip().is_unspecified() {
            // Bound on every interface: announce the loopback one, which always answers.
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let announce = Instance::new(
            name.as_str(),
            config.instance_id_of(name.as_str()),
            format!("http://{addr}"),
        )
        .with_version(
            config
                .version
                .clone()
                .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_owned()),
        );
        let handle = tideway_resilience::FaultHandle::new();
        handle
            .set(
                config
                    .faults
                    .to_faults()
                    .map_err(|(key, expected)| anyhow::anyhow!("{key}: expected {expected}"))?,
            )
            .context("setting the injected faults")?;
        let faults = &config.faults;
        if faults.latency_ms > 0 || faults.error_share > 0.0 || faults.abort_share > 0.0 {
            tracing::warn!(faults = ?handle.current(), "This process injects faults.");
        }
        let flags = flags_of(config)?;
        let shared_flags = share_flags(config, &flags).await?;
        let router = faults::wrap(
            with_flags(service.router(), &flags),
            handle,
            peers.verifier()?,
        );
        let router = with_version_header(router, config.version.as_deref());
        Ok(Self {
            listener,
            router,
            dbs: service.db().cloned().into_iter().collect(),
            stoppables,
            services: None,
            serve_options: config.server.options(serve::DEFAULT_GRACE),
            tls: None,
            remote: Some(remote),
            announce: Some((announce, config.discovery.drain_delay())),
            control: None,
            watcher: None,
            _shared_config: None,
            flags,
            _shared_flags: shared_flags,
        })
    }

    /// The gateway alone, in front of the services it finds through discovery, each
    /// through a balancer.
    pub async fn gateway(config: &Config) -> anyhow::Result<Self> {
        let remote = Remote::connect(config).await?;
        let mut upstreams = HashMap::new();
        for name in ServiceName::ALL {
            // The deadline over the body is the longest of the service's routes; each route's
            // own deadline bounds the answer's head.
            let deadline = config
                .gateway
                .gateway
                .routes
                .iter()
                .filter(|route| route.upstream == name.as_str())
                .map(|route| std::time::Duration::from_millis(route.timeout_ms))
                .chain([config.client_timeout()])
                .max()
                .unwrap_or_else(|| config.client_timeout());
            upstreams.insert(
                name.as_str().to_owned(),
                remote.transport(name, deadline).await?,
            );
        }
        // Each version a route splits to (`catalog@v2`) is a balancer over the replicas
        // registered with that label.
        let mut versions: Vec<String> = config
            .gateway
            .gateway
            .routes
            .iter()
            .flat_map(|route| route.upstream_names().map(str::to_owned))
            .chain(
                config
                    .gateway
                    .known_versions
                    .split(',')
                    .map(|name| name.trim().to_owned()),
            )
            .filter(|name| name.contains('@'))
            .collect();
        versions.sort();
        versions.dedup();
        for name in versions {
            let Some((service, version)) = name.split_once('@') else {
                continue;
            };
            if config.gateway.upstream_urls.contains_key(&name) {
                continue;
            }
            let transport = if remote.fixed.is_some() {
                anyhow::bail!(
                    "gateway: the version {name} needs balance.enabled = true (versions are \
                     found in discovery by their label)"
                );
            } else {
                remote
                    .balancers
                    .transport_version(service, version, config.client_timeout())
                    .await
                    .with_context(|| format!("balancing calls to {name}"))?
            };
            upstreams.insert(name.clone(), transport);
        }
        upstreams.extend(versions_at_urls(config)?);
        let Peers::Remote { verifier, .. } = remote.peers(config).await? else {
            anyhow::bail!("remote peers are remote");
        };
        let flags = flags_of(config)?;
        let audit = audit_of(config).await?;
        let (gateway, web) = gateway_with_web(
            config,
            upstreams,
            verifier,
            Some(remote.balancers.clone()),
            false,
            &flags,
            &audit,
        )?;
        let shared_flags = share_flags(config, &flags).await?;
        // The console shows the bus's events when the bus answers; the shop works without it.
        let mut stoppables = vec![Stoppable::Web(Box::new(web.clone()))];
        match remote_bus(config).await {
            Ok((bus, letters)) => {
                if let Err(err) = purge_on_catalog_events(config, &gateway, &bus).await {
                    tracing::warn!(error = %err, "the gateway's cache cannot follow the catalog's events; its entries live out their lifetime");
                }
                match web.tap_events(&bus).await {
                    Ok(_) => {
                        web.show_dead_letters(letters);
                        stoppables.push(Stoppable::Bus(bus));
                    }
                    Err(err) => tracing::warn!(error = %err, "the console cannot follow the bus"),
                }
            }
            Err(err) => tracing::warn!(error = %err, "the console cannot follow the bus"),
        }
        let bind = serve::BindOptions {
            reuse_port: config.gateway.reuse_port,
        };
        let listener = serve::bind_with(&config.gateway.listen, bind).await?;
        let shared_config = if config.gateway.share_config {
            let nats = &config.discovery.nats;
            let bucket = format!("{}_gateway", nats.bucket);
            Some(
                edge::SharedConfig::start(&nats.url, &bucket, gateway.control())
                    .await
                    .context("sharing the gateway configuration over NATS")?,
            )
        } else {
            None
        };
        Ok(Self {
            listener,
            router: gateway.router(),
            dbs: vec![audit.db().clone()],
            stoppables,
            services: None,
            serve_options: config.server.options(serve::DEFAULT_GRACE),
            tls: config.gateway.tls.acceptor()?,
            remote: Some(remote),
            announce: None,
            control: Some(gateway.control()),
            watcher: None,
            _shared_config: shared_config,
            flags,
            _shared_flags: shared_flags,
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

    /// Applies the gateway section and the flags of `file` whenever the file changes,
    /// without a restart (validated in full first; a bad one is logged with its key and
    /// the running one stays). Only a role with a gateway follows its file.
    pub fn watch_config(&mut self, file: &std::path::Path) -> anyhow::Result<()> {
        if let Some(control) = &self.control {
            self.watcher = Some(edge::ConfigWatcher::start(
                file,
                control.clone(),
                self.flags.clone(),
            )?);
        }
        Ok(())
    }

    /// This process's feature flags.
    pub fn flags(&self) -> &tideway_flags::Flags {
        &self.flags
    }

    /// Serves until `shutdown` is cancelled, lets in-flight requests finish, stops the
    /// services' background work and the bus, then closes the database pools. A replica
    /// registers in discovery once it serves and deregisters before it drains, then serves
    /// on for `discovery.drain_delay_ms`, so callers stop picking it before it stops
    /// accepting.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let result = match (&self.remote, self.announce) {
            (Some(remote), Some((instance, drain_delay))) => {
                let drain = CancellationToken::new();
                let serving = tokio::spawn(serve::serve_with(
                    self.listener,
                    self.router,
                    drain.clone(),
                    self.serve_options,
                ));
                let registered = match remote.registry.register(instance).await {
                    Ok(registration) => {
                        tracing::info!(instance = ?registration.instance(), "Registered in discovery.");
                        shutdown.cancelled().await;
                        if let Err(err) = registration.deregister().await {
                            tracing::warn!(error = %err, "cannot deregister from discovery");
                        }
                        // Callers see the record go within milliseconds; until they have,
                        // they may still pick this replica, so it keeps serving a moment.
                        tracing::info!(
                            drain_delay_ms = drain_delay.as_millis(),
                            "Deregistered from discovery; serving on until callers have seen it."
                        );
                        tokio::time::sleep(drain_delay).await;
                        Ok(())
                    }
                    Err(err) => Err(err),
                };
                drain.cancel();
                let served = match serving.await {
                    Ok(result) => result,
                    Err(err) => Err(std::io::Error::other(err)),
                };
                // Nobody can find a replica that did not register: it stops, saying why.
                served.context("serving HTTP").and_then(|()| {
                    registered
                        .map_err(|err| anyhow::Error::new(err).context("registering in discovery"))
                })
            }
            _ => serve::serve_tls_with(
                self.listener,
                self.router,
                shutdown,
                self.serve_options,
                self.tls,
            )
            .await
            .context("serving HTTP"),
        };
        for stoppable in &self.stoppables {
            match stoppable {
                Stoppable::Identity(service) => service.shutdown().await,
                Stoppable::Catalog(service) => service.shutdown().await,
                Stoppable::Basket(service) => service.shutdown().await,
                Stoppable::Inventory(service) => service.shutdown().await,
                Stoppable::Payment(service) => service.shutdown().await,
                Stoppable::Ordering(service) => service.shutdown().await,
                Stoppable::Notification(service) => service.shutdown().await,
                Stoppable::Reporting(service) => service.shutdown().await,
                Stoppable::Bus(bus) => bus.shutdown().await,
                Stoppable::Web(web) => web.shutdown().await,
            }
        }
        if let Some(remote) = &self.remote {
            remote.shutdown().await;
        }
        for db in &self.dbs {
            db.close().await;
        }
        result
    }
}
