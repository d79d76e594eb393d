//! The binary's configuration: one file for every role (`up`, `serve`, `gateway`).
//!
//! Defaults → `tideway.toml` (or `--config FILE`) → `TIDEWAY_*` environment, where `__`
//! separates levels: `TIDEWAY_GATEWAY__LISTEN=0.0.0.0:8080`,
//! `TIDEWAY_CATALOG__DATABASE_URL=postgres://…`. `{data_dir}` in a database URL or a key
//! path stands for `data_dir`.

use std::{net::SocketAddr, path::PathBuf};

use serde::{Deserialize, Serialize};
use tideway_gateway::{Access, LimitKey, RateRule, RouteConfig};
use tideway_runtime::{
    config::{ConfigError, Validate},
    telemetry::{LogFormat, TelemetryConfig},
};
use tideway_store::DatabaseUrl;

/// Everything the binary reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    /// Where embedded-mode files live (SQLite databases, the generated signing key).
    pub data_dir: PathBuf,
    /// This process's stable name among the replicas of its service (`catalog-1`), kept
    /// across restarts: its discovery entry, its outbox relay's lease holder. Default:
    /// `<service>-<hostname>`.
    pub instance_id: Option<String>,
    /// `version`: the version label this replica registers in discovery with
    /// (`TIDEWAY_VERSION=v2`), which gateway routes split traffic by (`catalog@v2`).
    /// Default: the binary's version.
    #[serde(default)]
    pub version: Option<String>,
    /// Logging.
    pub log: LogConfig,
    /// Spans: the OTLP exporter, sampling, the in-memory store of recent spans.
    pub telemetry: TelemetryConfig,
    /// Where each service answers when run as its own process; the gateway and the services
    /// that call one another use these in the distributed shape.
    pub urls: Urls,
    /// The deadline of a call from one service to another, in milliseconds.
    pub client_timeout_ms: u64,
    /// Seed the demo customer and admin accounts, whose passwords are public. Unset: only
    /// under `tideway up`; `true` everywhere (a demo of separate processes), `false` never.
    /// Where they are off, accounts seeded by an earlier demo are disabled.
    pub demo_users: Option<bool>,
    /// The web front.
    pub web: WebConfig,
    /// The gateway.
    pub gateway: GatewaySection,
    /// The identity service.
    pub identity: Section<tideway_identity::Config>,
    /// The catalog service.
    pub catalog: Section<tideway_catalog::Config>,
    /// The basket service.
    pub basket: Section<tideway_basket::Config>,
    /// The inventory service.
    pub inventory: Section<tideway_inventory::Config>,
    /// The payment service.
    pub payment: Section<tideway_payment::Config>,
    /// The ordering service.
    pub ordering: Section<tideway_ordering::Config>,
    /// The notification service.
    pub notification: Section<tideway_notification::Config>,
    /// The reporting service.
    pub reporting: Section<tideway_reporting::Config>,
    /// The event bus.
    pub bus: BusConfig,
    /// The limits of every server this process runs.
    pub server: ServerConfig,
    /// What `tideway up --distributed` starts its processes on.
    pub distributed: DistributedConfig,
    /// Where the replicas of each service are (`static` from `urls.*` by default, `nats`,
    /// `dns`); `tideway serve` registers there once ready.
    pub discovery: tideway_discovery::DiscoveryConfig,
    /// How calls between processes pick a replica and survive a bad one: the balancer,
    /// health checks, ejection, deadline, retry budget, breaker and bulkhead.
    pub balance: tideway_balance::BalanceConfig,
    /// Faults this process injects into the requests it serves (off by default), for
    /// chaos runs; switchable while serving through `PUT /admin/faults`.
    pub faults: crate::faults::FaultsConfig,
    /// Feature flags by name (`[flags.you-may-also-like]`, `percent = 20`): what
    /// `GET /api/v1/admin/flags` starts with, and what an edit of the file applies at run
    /// time. See docs/edge.md.
    #[serde(default)]
    pub flags: tideway_flags::FlagSet,
    /// `share_flags`: share flag changes with every other process through the NATS KV
    /// bucket `<discovery.nats.bucket>_flags` (on `discovery.nats.url`), and follow
    /// theirs. `up --distributed` sets it for every process it starts.
    #[serde(default)]
    pub share_flags: bool,
    /// The audit trail of admin actions, which the gateway records.
    pub audit: AuditConfig,
}

/// `audit`: where the gateway records admin actions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditConfig {
    /// `audit.database_url`: SQLite (`{data_dir}/audit.db`) in one process; under
    /// `up --distributed` the PostgreSQL database `<database_prefix>audit`, shared by
    /// every gateway replica.
    pub database_url: DatabaseUrl,
}

/// What `tideway up --distributed` starts its processes on: PostgreSQL (a database per
/// service, created when missing) and, through the `bus` section, NATS JetStream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DistributedConfig {
    /// A database on the PostgreSQL server that holds the services' databases; the
    /// supervisor connects there to create the missing ones.
    pub postgres_url: DatabaseUrl,
    /// Each service's database is named `<database_prefix><service>`.
    pub database_prefix: String,
    /// How long a process may take to stop after SIGTERM before it gets SIGKILL, in
    /// milliseconds.
    pub stop_grace_ms: u64,
    /// `distributed.version_env."catalog@v2"`: environment variables the replicas of one
    /// version get on top of the others' (`{ TIDEWAY_FAULTS__LATENCY_MS = "40" }`): a
    /// version's own settings under `up --distributed --versions`.
    #[serde(default)]
    pub version_env: std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>,
}

impl DistributedConfig {
    /// The database name of `service`.
    pub fn database_name(&self, service: crate::ServiceName) -> String {
        format!("{}{}", self.database_prefix, service.as_str())
    }

    /// The URL of `service`'s database: `postgres_url` pointed at [`Self::database_name`].
    pub fn database_url(&self, service: crate::ServiceName) -> Result<DatabaseUrl, ConfigError> {
        self.named_database_url(&self.database_name(service))
    }

    /// The audit trail's database: `<database_prefix>audit`.
    pub fn audit_database_name(&self) -> String {
        format!("{}audit", self.database_prefix)
    }

    /// `postgres_url` pointed at the database `name`.
    pub fn named_database_url(&self, name: &str) -> Result<DatabaseUrl, ConfigError> {
        let url = self.postgres_url.expose();
        let (base, query) = match url.split_once('?') {
            Some((base, query)) => (base, Some(query)),
            None => (url, None),
        };
        let scheme_end = base.find("://").map_or(0, |i| i + 3);
        let base = match base[scheme_end..].find('/') {
            Some(slash) => &base[..scheme_end + slash],
            None => base,
        };
        let url = match query {
            Some(query) => format!("{base}/{name}?{query}"),
            None => format!("{base}/{name}"),
        };
        DatabaseUrl::parse(&url)
            .map_err(|err| ConfigError::invalid("distributed.postgres_url", err.to_string()))
    }

    /// How long a stopping process may take before SIGKILL.
    pub fn stop_grace(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.stop_grace_ms)
    }
}

/// The limits of every server (the gateway's and each service's): what a client may take
/// and how many may come at once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerConfig {
    /// How long a client may take to send a request's headers, in milliseconds; also how
    /// long a kept-alive connection may sit idle.
    pub header_read_timeout_ms: u64,
    /// How long a handler may take to produce its answer's head, in milliseconds (408).
    pub request_timeout_ms: u64,
    /// The most connections served at once.
    pub max_connections: usize,
    /// The most requests handled at once; past it, 503 with `Retry-After` before any work.
    pub max_in_flight: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        let defaults = tideway_runtime::serve::ServeOptions::default();
        Self {
            header_read_timeout_ms: u64::try_from(defaults.header_read_timeout.as_millis())
                .unwrap_or(u64::MAX),
            request_timeout_ms: u64::try_from(defaults.request_timeout.as_millis())
                .unwrap_or(u64::MAX),
            max_connections: defaults.max_connections,
            max_in_flight: defaults.max_in_flight,
        }
    }
}

impl ServerConfig {
    /// The serving options, with `grace` for shutdown.
    pub fn options(&self, grace: std::time::Duration) -> tideway_runtime::serve::ServeOptions {
        tideway_runtime::serve::ServeOptions {
            grace,
            header_read_timeout: std::time::Duration::from_millis(self.header_read_timeout_ms),
            request_timeout: std::time::Duration::from_millis(self.request_timeout_ms),
            max_connections: self.max_connections,
            max_in_flight: self.max_in_flight,
        }
    }
}

/// Which bus carries events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BusKind {
    /// In-process (only for `tideway up`), durable through each service's outbox.
    Embedded,
    /// NATS JetStream (what `tideway serve` uses unless `rabbitmq` is chosen).
    Nats,
    /// RabbitMQ (AMQP 0.9.1) at `bus.rabbitmq_url`, for `tideway up`, `up --distributed`
    /// and `serve`.
    Rabbitmq,
}

/// The event bus.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BusConfig {
    /// `embedded`, `nats` or `rabbitmq` for `tideway up`; separate processes use NATS
    /// unless it is `rabbitmq`.
    pub kind: BusKind,
    /// The NATS server.
    pub nats_url: String,
    /// The RabbitMQ broker (`amqp://user:password@host:port/vhost`, the vhost URL-encoded).
    pub rabbitmq_url: String,
    /// On RabbitMQ, how long an unused consumer queue lives before the broker deletes it
    /// (`x-expires`), in milliseconds; 0 (the default): for ever, as production needs.
    /// For throwaway systems and tests.
    pub rabbitmq_queue_expiry_ms: u64,
    /// The JetStream stream holding Tideway's events.
    pub stream: String,
    /// The first token of event subjects on the wire (`tideway`), and on RabbitMQ the
    /// prefix of every exchange and queue name; a different one lets several Tideway
    /// systems share one NATS server or RabbitMQ broker.
    pub root: String,
    /// How long NATS waits for a consumer's acknowledgement before it hands the event to
    /// another (or the restarted) replica, in milliseconds: how soon a crashed consumer's
    /// commands come back. Handlers that run longer send in-progress acks. Must be shorter
    /// than every saga step deadline.
    pub ack_wait_ms: u64,
    /// How long an outbox relay lease lasts without renewal, in milliseconds: how soon
    /// another replica takes over the relay of one that died (a restarted replica takes
    /// its own back at once). At least twice `relay_poll_ms`.
    pub relay_lease_ttl_ms: u64,
    /// How often an outbox relay looks for unsent events and renews its lease without a
    /// wake-up, in milliseconds.
    pub relay_poll_ms: u64,
    /// Where the embedded bus keeps its dead letters (`bus_dead_letters`) until they are
    /// redriven, and where `tideway dlq` reads them. NATS keeps them in the stream.
    pub dead_letters_url: DatabaseUrl,
    /// How many days the embedded bus keeps every published event in its event log
    /// (`bus_event_log`, beside the dead letters), which `tideway replay` rebuilds read
    /// models from; 0 keeps no log. NATS keeps events in the stream.
    pub event_log_days: u32,
}

/// Logging.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogConfig {
    /// `pretty` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter such as `info,sqlx=warn`; `RUST_LOG` overrides it.
    pub filter: String,
}

/// The base URL of each service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Urls {
    /// The identity service.
    pub identity: String,
    /// The catalog service.
    pub catalog: String,
    /// The basket service.
    pub basket: String,
    /// The inventory service.
    pub inventory: String,
    /// The payment service.
    pub payment: String,
    /// The ordering service.
    pub ordering: String,
    /// The notification service.
    pub notification: String,
    /// The reporting service.
    pub reporting: String,
}

impl Urls {
    /// The base URL of `service`.
    pub fn of(&self, service: crate::ServiceName) -> &str {
        use crate::ServiceName as S;
        match service {
            S::Identity => &self.identity,
            S::Catalog => &self.catalog,
            S::Basket => &self.basket,
            S::Inventory => &self.inventory,
            S::Payment => &self.payment,
            S::Ordering => &self.ordering,
            S::Notification => &self.notification,
            S::Reporting => &self.reporting,
        }
    }
}

/// The web front's section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct WebConfig {
    /// The origin browsers reach the shop at (`https://shop.example`), when a proxy in
    /// front terminates TLS or renames the host. Forms are accepted only from it; `https`
    /// makes the session cookies `Secure` and `__Host-` and adds HSTS. Unset: the request's
    /// own `Host`, plain HTTP.
    pub public_origin: Option<String>,
    /// Live streams (an order page's updates) one user may keep open at once; past it, 429.
    pub max_streams_per_user: usize,
    /// Live streams open at once across users; past it, 429.
    pub max_streams: usize,
    /// How often the console's charts read every service's `/metrics` in the background,
    /// in milliseconds (250–60000); they keep 15 minutes of readings.
    pub console_sample_ms: u64,
}

impl Default for WebConfig {
    fn default() -> Self {
        let caps = tideway_web::StreamCaps::default();
        Self {
            public_origin: None,
            max_streams_per_user: caps.per_user,
            max_streams: caps.total,
            console_sample_ms: duration_ms(tideway_web::ops::DEFAULT_SAMPLE_EVERY),
        }
    }
}

/// A duration in whole milliseconds, saturating.
fn duration_ms(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl WebConfig {
    /// The caps on live streams.
    pub fn stream_caps(&self) -> tideway_web::StreamCaps {
        tideway_web::StreamCaps {
            per_user: self.max_streams_per_user,
            total: self.max_streams,
        }
    }

    /// How often the console's charts read.
    pub fn console_sample_every(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.console_sample_ms)
    }

    /// The origin as the web front takes it.
    pub fn origin(&self) -> Result<tideway_web::PublicOrigin, ConfigError> {
        match &self.public_origin {
            Some(url) => tideway_web::PublicOrigin::parse(url)
                .map_err(|expected| ConfigError::invalid("web.public_origin", expected)),
            None => Ok(tideway_web::PublicOrigin::from_request()),
        }
    }
}

/// The gateway's section.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GatewaySection {
    /// The address to listen on.
    pub listen: String,
    /// Bind with `SO_REUSEPORT`, so several gateway processes share `listen` (the kernel
    /// spreads connections among them). `tideway up --distributed` sets it for its gateways.
    pub reuse_port: bool,
    /// TLS termination: the gateway serves HTTPS when both files are set.
    #[serde(default)]
    pub tls: TlsFiles,
    /// Routes and limits.
    #[serde(flatten)]
    pub gateway: tideway_gateway::GatewayConfig,
    /// `gateway.known_versions`: versions (`catalog@v1,catalog@v2`) the gateway reaches
    /// besides those its routes name at start, so a configuration applied at run time may
    /// split traffic to them. `up --distributed --versions` sets it.
    #[serde(default)]
    pub known_versions: String,
    /// `gateway.upstream_urls`: versions the gateway reaches at a fixed URL instead of
    /// through discovery, `{ "catalog@v2" = "http://10.0.0.7:8082" }` — a version run
    /// outside the shape, or beside `tideway up` (one process runs no versions). Routes
    /// may split and mirror to them as to any version. Read at start.
    #[serde(default)]
    pub upstream_urls: std::collections::BTreeMap<String, String>,
    /// `gateway.share_config`: share configuration changes with the other gateway
    /// replicas through the NATS KV bucket `<discovery.nats.bucket>_gateway` (on
    /// `discovery.nats.url`). `up --distributed` sets it for its gateways.
    #[serde(default)]
    pub share_config: bool,
}

/// `gateway.tls`: a PEM certificate chain and its private key, both or neither.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TlsFiles {
    /// The certificate chain, leaf first (PEM).
    pub cert_file: Option<std::path::PathBuf>,
    /// Its private key (PKCS#8, PKCS#1 or SEC1 PEM); never logged.
    pub key_file: Option<std::path::PathBuf>,
}

impl TlsFiles {
    /// The acceptor of these files; `None` when neither is set. A missing partner, an
    /// unreadable file or a pair that does not fit is an error naming its key.
    pub fn acceptor(&self) -> Result<Option<tideway_runtime::tls::TlsAcceptor>, ConfigError> {
        use tideway_runtime::tls::{TlsError, acceptor};
        match (&self.cert_file, &self.key_file) {
            (None, None) => Ok(None),
            (Some(_), None) => Err(ConfigError::invalid(
                "gateway.tls.key_file",
                "set it with gateway.tls.cert_file",
            )),
            (None, Some(_)) => Err(ConfigError::invalid(
                "gateway.tls.cert_file",
                "set it with gateway.tls.key_file",
            )),
            (Some(cert), Some(key)) => acceptor(cert, key).map(Some).map_err(|err| {
                let key_name = match &err {
                    TlsError::Certificate { .. } => "gateway.tls.cert_file",
                    TlsError::Key { .. } | TlsError::Config(_) => "gateway.tls.key_file",
                };
                ConfigError::invalid(key_name, err.to_string())
            }),
        }
    }
}

/// A service's section: where it listens when run alone, and its own settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Section<C> {
    /// The address to listen on with `tideway serve`.
    pub listen: String,
    /// The service's settings.
    #[serde(flatten)]
    pub service: C,
}

impl Default for Config {
    fn default() -> Self {
        let identity = tideway_identity::Config {
            database_url: DatabaseUrl::sqlite("{data_dir}/identity.db"),
            signing_key_file: Some(PathBuf::from("{data_dir}/identity-signing-key.pem")),
            ..tideway_identity::Config::default()
        };
        let catalog = tideway_catalog::Config {
            database_url: DatabaseUrl::sqlite("{data_dir}/catalog.db"),
            ..tideway_catalog::Config::default()
        };
        let basket = tideway_basket::Config {
            database_url: DatabaseUrl::sqlite("{data_dir}/basket.db"),
            ..tideway_basket::Config::default()
        };
        let inventory = tideway_inventory::Config {
            database_url: DatabaseUrl::sqlite("{data_dir}/inventory.db"),
            ..tideway_inventory::Config::default()
        };
        let payment = tideway_payment::Config {
            database_url: DatabaseUrl::sqlite("{data_dir}/payment.db"),
            ..tideway_payment::Config::default()
        };
        let ordering = tideway_ordering::Config {
            database_url: DatabaseUrl::sqlite("{data_dir}/ordering.db"),
            ..tideway_ordering::Config::default()
        };
        let notification = tideway_notification::Config {
            database_url: DatabaseUrl::sqlite("{data_dir}/notification.db"),
            mailbox_dir: PathBuf::from("{data_dir}/mailbox"),
            ..tideway_notification::Config::default()
        };
        let reporting = tideway_reporting::Config {
            database_url: DatabaseUrl::sqlite("{data_dir}/reporting.db"),
        };
        let timings = tideway_bus::Timings::default();
        Self {
            data_dir: PathBuf::from("./data"),
            instance_id: None,
            version: None,
            log: LogConfig {
                format: LogFormat::Pretty,
                filter: "info,sqlx=warn".to_owned(),
            },
            urls: Urls {
                identity: "http://127.0.0.1:8081".to_owned(),
                catalog: "http://127.0.0.1:8082".to_owned(),
                basket: "http://127.0.0.1:8083".to_owned(),
                inventory: "http://127.0.0.1:8084".to_owned(),
                payment: "http://127.0.0.1:8085".to_owned(),
                ordering: "http://127.0.0.1:8086".to_owned(),
                notification: "http://127.0.0.1:8087".to_owned(),
                reporting: "http://127.0.0.1:8088".to_owned(),
            },
            client_timeout_ms: 3_000,
            demo_users: None,
            web: WebConfig::default(),
            gateway: GatewaySection {
                listen: "127.0.0.1:8080".to_owned(),
                reuse_port: false,
                tls: TlsFiles::default(),
                gateway: tideway_gateway::GatewayConfig {
                    routes: shop_routes(),
                    rate_limit: tideway_gateway::RateLimitConfig {
                        rules: shop_rate_limits(),
                        ..tideway_gateway::RateLimitConfig::default()
                    },
                    ..tideway_gateway::GatewayConfig::default()
                },
                known_versions: String::new(),
                upstream_urls: std::collections::BTreeMap::new(),
                share_config: false,
            },
            identity: Section {
                listen: "127.0.0.1:8081".to_owned(),
                service: identity,
            },
            catalog: Section {
                listen: "127.0.0.1:8082".to_owned(),
                service: catalog,
            },
            basket: Section {
                listen: "127.0.0.1:8083".to_owned(),
                service: basket,
            },
            inventory: Section {
                listen: "127.0.0.1:8084".to_owned(),
                service: inventory,
            },
            payment: Section {
                listen: "127.0.0.1:8085".to_owned(),
                service: payment,
            },
            ordering: Section {
                listen: "127.0.0.1:8086".to_owned(),
                service: ordering,
            },
            notification: Section {
                listen: "127.0.0.1:8087".to_owned(),
                service: notification,
            },
            reporting: Section {
                listen: "127.0.0.1:8088".to_owned(),
                service: reporting,
            },
            server: ServerConfig::default(),
            telemetry: TelemetryConfig::default(),
            distributed: DistributedConfig {
                postgres_url: DatabaseUrl::parse("postgres://postgres@127.0.0.1:5432/postgres")
                    .expect("the default PostgreSQL URL parses"),
                database_prefix: "tideway_".to_owned(),
                stop_grace_ms: 15_000,
                version_env: std::collections::BTreeMap::new(),
            },
            discovery: tideway_discovery::DiscoveryConfig::default(),
            balance: tideway_balance::BalanceConfig::default(),
            faults: crate::faults::FaultsConfig::default(),
            flags: shop_flags(),
            share_flags: false,
            audit: AuditConfig {
                database_url: DatabaseUrl::sqlite("{data_dir}/audit.db"),
            },
            bus: BusConfig {
                kind: BusKind::Embedded,
                nats_url: "nats://127.0.0.1:4222".to_owned(),
                rabbitmq_url: tideway_bus::RabbitOptions::default().url,
                rabbitmq_queue_expiry_ms: 0,
                stream: "TIDEWAY".to_owned(),
                root: "tideway".to_owned(),
                ack_wait_ms: millis(timings.ack_wait),
                relay_lease_ttl_ms: millis(timings.relay_lease_ttl),
                relay_poll_ms: millis(timings.relay_poll),
                dead_letters_url: DatabaseUrl::sqlite("{data_dir}/bus.db"),
                event_log_days: 7,
            },
        }
    }
}

/// The shop's flags, all off until an operator turns them on.
fn shop_flags() -> tideway_flags::FlagSet {
    let panel = tideway_flags::Flag {
        description: "The item page's \"You may also like\" panel: other items of the same \
                      category from the catalog"
            .to_owned(),
        ..tideway_flags::Flag::default()
    };
    tideway_flags::FlagSet(
        [(tideway_web::YOU_MAY_ALSO_LIKE.to_owned(), panel)]
            .into_iter()
            .collect(),
    )
}

/// The shop's route table: which service answers under each prefix (the longest matching
/// prefix wins), and who may read and write there.
pub fn shop_routes() -> Vec<RouteConfig> {
    let admin = || Access::Role("admin".to_owned());
    vec![
        RouteConfig::new(
            "/api/v1/identity",
            "identity",
            Access::Public,
            Access::Public,
        ),
        // Public reads, cached at the edge (purged by the catalog's events).
        RouteConfig {
            cache_bytes: 16 * 1024 * 1024,
            ..RouteConfig::new("/api/v1/catalog", "catalog", Access::Public, admin())
        },
        RouteConfig::new("/api/v1/basket", "basket", Access::User, Access::User),
        // Checkout reads the basket but is the ordering service's.
        RouteConfig::new(
            "/api/v1/basket/checkout",
            "ordering",
            Access::User,
            Access::User,
        ),
        RouteConfig::new("/api/v1/ordering", "ordering", Access::User, Access::User),
        // Every shopper's checkouts: for the operations console. The service checks the
        // role too; the edge refuses before the request travels.
        RouteConfig::new("/api/v1/ordering/sagas", "ordering", admin(), admin()),
        RouteConfig::new("/api/v1/inventory", "inventory", Access::Public, admin()),
        RouteConfig::new("/api/v1/payment", "payment", admin(), admin()),
        // A customer reads their own notifications; the console reads everyone's.
        RouteConfig::new(
            "/api/v1/notification",
            "notification",
            Access::User,
            Access::User,
        ),
        RouteConfig::new(
            "/api/v1/notification/recent",
            "notification",
            admin(),
            admin(),
        ),
        RouteConfig::new("/api/v1/reporting", "reporting", admin(), admin()),
    ]
}

/// The shop's rate limits: strict on what costs a password hash (sign-in, registration),
/// on token refreshes and on checkouts; everything else is bounded by the servers' load
/// shedding. A file's `[[gateway.rate_limit.rules]]` replaces these whole.
pub fn shop_rate_limits() -> Vec<RateRule> {
    vec![
        // 20 at once, then one every 3 s per address.
        RateRule::new(
            "login",
            "/api/v1/identity/login",
            &["POST"],
            LimitKey::Ip,
            20,
            60_000,
        ),
        // 20 at once, then one every 30 s per address.
        RateRule::new(
            "register",
            "/api/v1/identity/register",
            &["POST"],
            LimitKey::Ip,
            20,
            600_000,
        ),
        // 30 at once, then one every 2 s per address.
        RateRule::new(
            "refresh",
            "/api/v1/identity/refresh",
            &["POST"],
            LimitKey::Ip,
            30,
            60_000,
        ),
        // 10 at once, then one every 6 s per user.
        RateRule::new(
            "checkout",
            "/api/v1/basket/checkout",
            &["POST"],
            LimitKey::User,
            10,
            60_000,
        ),
    ]
}

/// The demo accounts seeded under `tideway up`, printed at start-up and shown on the sign-in
/// page. Their passwords are public: never for a shop others can reach.
pub fn demo_users() -> Vec<tideway_identity::SeedUser> {
    vec![
        tideway_identity::SeedUser {
            email: "demo@tideway.local".to_owned(),
            password: "tideway-demo-1".to_owned().into(),
            name: "Demo Customer".to_owned(),
            roles: vec!["customer".to_owned()],
        },
        tideway_identity::SeedUser {
            email: "admin@tideway.local".to_owned(),
            password: "tideway-admin-1".to_owned().into(),
            name: "Shop Admin".to_owned(),
            roles: vec!["admin".to_owned(), "customer".to_owned()],
        },
    ]
}

impl Config {
    /// Loads the layers, replaces `{data_dir}`, and validates.
    pub fn load(file: Option<&std::path::Path>) -> Result<Self, ConfigError> {
        let figment = tideway_runtime::config::layered(&Self::default(), file)?;
        let mut config: Self = tideway_runtime::config::extract(&figment)?;
        config.resolve()?;
        Ok(config)
    }

    /// Completes a configuration built in code (tests) or loaded: replaces `{data_dir}` and
    /// validates.
    pub fn resolve(&mut self) -> Result<(), ConfigError> {
        self.resolve_data_dir()?;
        self.resolve_discovery();
        self.validate()
    }

    /// Whether the demo accounts exist in a shop started by `tideway up` (`up`) or by
    /// `serve`/`gateway`.
    pub fn demo_enabled(&self, up: bool) -> bool {
        self.demo_users.unwrap_or(up)
    }

    /// The demo accounts of this role that the configuration does not seed itself.
    fn demo_accounts(&self) -> Vec<tideway_identity::SeedUser> {
        let seeds = &self.identity.service.seed_users;
        demo_users()
            .into_iter()
            .filter(|demo| {
                !seeds
                    .iter()
                    .any(|seed| seed.email.trim().eq_ignore_ascii_case(&demo.email))
            })
            .collect()
    }

    /// The identity service's configuration for a shop started by `tideway up` (`up`) or
    /// not: with the demo accounts seeded where they are enabled, and disabled elsewhere.
    pub fn identity_for(&self, up: bool) -> tideway_identity::Config {
        let mut identity = self.identity.service.clone();
        let demos = self.demo_accounts();
        if self.demo_enabled(up) {
            identity.seed_users.extend(demos);
        } else {
            identity
                .disabled_users
                .extend(demos.into_iter().map(|demo| demo.email));
        }
        identity
    }

    /// The demo sign-ins the web front may show: those seeded in this role.
    pub fn demo_logins(&self, up: bool) -> Vec<tideway_web::DemoLogin> {
        use secrecy::ExposeSecret;
        if !self.demo_enabled(up) {
            return Vec::new();
        }
        self.demo_accounts()
            .into_iter()
            .map(|demo| tideway_web::DemoLogin {
                email: demo.email,
                password: demo.password.expose_secret().to_owned(),
            })
            .collect()
    }

    /// Replaces `{data_dir}` in paths and URLs.
    fn resolve_data_dir(&mut self) -> Result<(), ConfigError> {
        let dir = self.data_dir.display().to_string();
        let dir = dir.trim_end_matches('/');
        for (key, url) in [
            (
                "identity.database_url",
                &mut self.identity.service.database_url,
            ),
            (
                "catalog.database_url",
                &mut self.catalog.service.database_url,
            ),
            ("basket.database_url", &mut self.basket.service.database_url),
            (
                "inventory.database_url",
                &mut self.inventory.service.database_url,
            ),
            (
                "payment.database_url",
                &mut self.payment.service.database_url,
            ),
            (
                "ordering.database_url",
                &mut self.ordering.service.database_url,
            ),
            (
                "notification.database_url",
                &mut self.notification.service.database_url,
            ),
            (
                "reporting.database_url",
                &mut self.reporting.service.database_url,
            ),
            ("bus.dead_letters_url", &mut self.bus.dead_letters_url),
            ("audit.database_url", &mut self.audit.database_url),
        ] {
            *url = url
                .replace("{data_dir}", dir)
                .map_err(|err| ConfigError::invalid(key, err.to_string()))?;
        }
        let mailbox = &mut self.notification.service.mailbox_dir;
        *mailbox = PathBuf::from(mailbox.display().to_string().replace("{data_dir}", dir));
        if let Some(file) = &mut self.identity.service.signing_key_file {
            *file = PathBuf::from(file.display().to_string().replace("{data_dir}", dir));
        }
        Ok(())
    }

    /// Static discovery defaults to `urls.*`: a service not listed under `discovery.urls`
    /// is found at its `urls.<service>`.
    fn resolve_discovery(&mut self) {
        for service in crate::ServiceName::ALL {
            self.discovery
                .urls
                .entry(service.as_str().to_owned())
                .or_insert_with(|| {
                    tideway_discovery::config::Urls::One(self.urls.of(service).to_owned())
                });
        }
    }

    /// Where `service` listens when run alone.
    pub fn listen_of(&self, service: crate::ServiceName) -> &str {
        use crate::ServiceName as S;
        match service {
            S::Identity => &self.identity.listen,
            S::Catalog => &self.catalog.listen,
            S::Basket => &self.basket.listen,
            S::Inventory => &self.inventory.listen,
            S::Payment => &self.payment.listen,
            S::Ordering => &self.ordering.listen,
            S::Notification => &self.notification.listen,
            S::Reporting => &self.reporting.listen,
        }
    }

    /// How long the embedded bus's event log keeps events (`bus.event_log_days`); none
    /// for 0.
    pub fn event_log_retention(&self) -> Option<std::time::Duration> {
        (self.bus.event_log_days > 0)
            .then(|| std::time::Duration::from_secs(u64::from(self.bus.event_log_days) * 86_400))
    }

    /// The deadline of service-to-service calls.
    pub fn client_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.client_timeout_ms)
    }

    /// The bus timings: `bus.ack_wait_ms`, `bus.relay_lease_ttl_ms`, `bus.relay_poll_ms`.
    pub fn bus_timings(&self) -> tideway_bus::Timings {
        tideway_bus::Timings {
            ack_wait: std::time::Duration::from_millis(self.bus.ack_wait_ms),
            relay_lease_ttl: std::time::Duration::from_millis(self.bus.relay_lease_ttl_ms),
            relay_poll: std::time::Duration::from_millis(self.bus.relay_poll_ms),
        }
    }

    /// This process as a replica of `service` on the bus: its stable id (its relay lease
    /// holder) and the bus timings.
    pub fn replica_of(&self, service: &str) -> tideway_bus::Replica {
        tideway_bus::Replica {
            instance_id: self.instance_id_of(service),
            timings: self.bus_timings(),
        }
    }

    /// Refuses bus timings and saga step deadlines that do not fit together (see the
    /// timings table in docs/architecture.md), naming the key at fault.
    fn validate_timings(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("bus.ack_wait_ms", self.bus.ack_wait_ms),
            ("bus.relay_lease_ttl_ms", self.bus.relay_lease_ttl_ms),
            ("bus.relay_poll_ms", self.bus.relay_poll_ms),
        ] {
            if value > MAX_BUS_TIMING_MS {
                return Err(ConfigError::invalid(
                    key,
                    format!("milliseconds between 10 and {MAX_BUS_TIMING_MS}"),
                ));
            }
        }
        let timings = self.bus_timings();
        if let Some((name, problem)) = timings.problem() {
            return Err(ConfigError::invalid(format!("bus.{name}_ms"), problem));
        }
        let recovery = timings.recovery();
        for (key, deadline) in self.ordering.service.step_deadlines() {
            if timings.ack_wait >= deadline {
                return Err(ConfigError::invalid(
                    "bus.ack_wait_ms",
                    format!(
                        "must be shorter than every saga step deadline, and {key} is {} ms",
                        millis(deadline)
                    ),
                ));
            }
            if recovery >= deadline {
                return Err(ConfigError::invalid(
                    key,
                    format!(
                        "must exceed bus.ack_wait_ms + bus.relay_lease_ttl_ms + bus.relay_poll_ms \
                         ({} ms), the longest one crash of a consumer holds a reply back",
                        millis(recovery)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// This process's stable id as a replica of `service`: `instance_id` when set, else
    /// `<service>-<hostname>` (the same after a restart on the same host).
    pub fn instance_id_of(&self, service: &str) -> String {
        match &self.instance_id {
            Some(id) => id.clone(),
            None => {
                let host = std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|name| name.trim().to_owned())
                    .filter(|name| !name.is_empty() && is_id_token(name))
                    .unwrap_or_else(|| "local".to_owned());
                format!("{service}-{host}")
            }
        }
    }
}

/// `d` in whole milliseconds, saturating.
fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Whether `value` is usable as an instance id: `[A-Za-z0-9_-]+`.
fn is_id_token(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether `name` is a version of a service: `catalog@v2`.
fn is_version_name(name: &str) -> bool {
    name.split_once('@').is_some_and(|(service, version)| {
        crate::ServiceName::ALL
            .iter()
            .any(|s| s.as_str() == service)
            && !version.is_empty()
    })
}

/// The longest bus timing accepted (10 minutes), so a typo cannot hold events for hours.
const MAX_BUS_TIMING_MS: u64 = 600_000;

/// The services a gateway route may name as its upstream.
const UPSTREAMS: [&str; 8] = crate::ServiceName::NAMES;

fn check_addr(key: &str, value: &str) -> Result<(), ConfigError> {
    value.parse::<SocketAddr>().map(|_| ()).map_err(|_| {
        ConfigError::invalid(
            key,
            format!("an address such as 127.0.0.1:8080, found {value:?}"),
        )
    })
}

fn check_url(key: &str, value: &str) -> Result<(), ConfigError> {
    let ok = value
        .strip_prefix("http://")
        .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            key,
            format!("a base URL such as http://127.0.0.1:8081, found {value:?}"),
        ))
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Err(tideway_flags::FlagError::Invalid { field, expected }) =
            self.flags.validate("flags.")
        {
            return Err(ConfigError::invalid(field, expected));
        }
        if let Err(reason) = tideway_runtime::telemetry::check_filter(&self.log.filter) {
            return Err(ConfigError::invalid("log.filter", reason));
        }
        if let Some((key, reason)) = self.telemetry.problem() {
            return Err(ConfigError::invalid(key, reason));
        }
        self.gateway.tls.acceptor()?;
        if let Some(id) = &self.instance_id
            && (!is_id_token(id) || id.len() > 64)
        {
            return Err(ConfigError::invalid(
                "instance_id",
                "1 to 64 of A-Z, a-z, 0-9, '-' and '_'",
            ));
        }
        if let Some(version) = &self.version
            && (!is_id_token(&version.replace('.', "_")) || version.len() > 32)
        {
            return Err(ConfigError::invalid(
                "version",
                "1 to 32 of A-Z, a-z, 0-9, '.', '-' and '_'",
            ));
        }
        for name in self
            .gateway
            .known_versions
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
        {
            if !is_version_name(name) {
                return Err(ConfigError::invalid(
                    "gateway.known_versions",
                    format!("service@version names such as catalog@v2, found {name:?}"),
                ));
            }
        }
        for (name, url) in &self.gateway.upstream_urls {
            let key = format!("gateway.upstream_urls.{name:?}");
            if !is_version_name(name) {
                return Err(ConfigError::invalid(
                    key,
                    format!("a service@version name such as catalog@v2, found {name:?}"),
                ));
            }
            check_url(&key, url)?;
        }
        for (key, value) in [
            (
                "server.header_read_timeout_ms",
                self.server.header_read_timeout_ms,
            ),
            ("server.request_timeout_ms", self.server.request_timeout_ms),
        ] {
            if !(1..=3_600_000).contains(&value) {
                return Err(ConfigError::invalid(
                    key,
                    "milliseconds between 1 and 3600000",
                ));
            }
        }
        if !(1..=1_000_000).contains(&self.server.max_in_flight) {
            return Err(ConfigError::invalid(
                "server.max_in_flight",
                "a number of requests between 1 and 1000000",
            ));
        }
        if !(1..=1_000_000).contains(&self.server.max_connections) {
            return Err(ConfigError::invalid(
                "server.max_connections",
                "a number of connections between 1 and 1000000",
            ));
        }
        check_addr("gateway.listen", &self.gateway.listen)?;
        check_addr("identity.listen", &self.identity.listen)?;
        check_addr("catalog.listen", &self.catalog.listen)?;
        check_addr("basket.listen", &self.basket.listen)?;
        check_addr("inventory.listen", &self.inventory.listen)?;
        check_addr("payment.listen", &self.payment.listen)?;
        check_addr("ordering.listen", &self.ordering.listen)?;
        check_addr("notification.listen", &self.notification.listen)?;
        check_addr("reporting.listen", &self.reporting.listen)?;
        check_url("urls.identity", &self.urls.identity)?;
        check_url("urls.catalog", &self.urls.catalog)?;
        check_url("urls.basket", &self.urls.basket)?;
        check_url("urls.inventory", &self.urls.inventory)?;
        check_url("urls.payment", &self.urls.payment)?;
        check_url("urls.ordering", &self.urls.ordering)?;
        check_url("urls.notification", &self.urls.notification)?;
        check_url("urls.reporting", &self.urls.reporting)?;
        if self.bus.event_log_days > 3650 {
            return Err(ConfigError::invalid(
                "bus.event_log_days",
                "a number of days from 0 (no log) to 3650",
            ));
        }
        if !self.bus.nats_url.starts_with("nats://") {
            return Err(ConfigError::invalid(
                "bus.nats_url",
                format!(
                    "a URL such as nats://127.0.0.1:4222, found {:?}",
                    self.bus.nats_url
                ),
            ));
        }
        if !self.bus.rabbitmq_url.starts_with("amqp://") {
            return Err(ConfigError::invalid(
                "bus.rabbitmq_url",
                "a URL such as amqp://guest:guest@127.0.0.1:5672/%2f (amqps is not supported)",
            ));
        }
        if self.bus.rabbitmq_queue_expiry_ms > i32::MAX as u64 {
            return Err(ConfigError::invalid(
                "bus.rabbitmq_queue_expiry_ms",
                "milliseconds up to 2147483647, or 0 for queues that never expire",
            ));
        }
        if self.bus.root.is_empty() || !self.bus.root.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(ConfigError::invalid(
                "bus.root",
                "a subject token of letters and digits",
            ));
        }
        if self.bus.stream.is_empty()
            || !self
                .bus
                .stream
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(ConfigError::invalid(
                "bus.stream",
                "a stream name of letters, digits, `_` and `-`",
            ));
        }
        if self.client_timeout_ms == 0 || self.client_timeout_ms > 60_000 {
            return Err(ConfigError::invalid(
                "client_timeout_ms",
                "a number of milliseconds from 1 to 60000",
            ));
        }
        self.distributed.validate()?;
        self.discovery.check().map_err(|err| match err {
            tideway_discovery::DiscoveryError::Config { key, expected } => {
                ConfigError::invalid(key, expected)
            }
            other => ConfigError::invalid("discovery", other.to_string()),
        })?;
        self.balance
            .check()
            .map_err(|err| ConfigError::invalid(err.key, err.expected))?;
        self.faults
            .to_faults()
            .map_err(|(key, expected)| ConfigError::invalid(key, expected))?;
        self.gateway.gateway.validate()?;
        for (index, route) in self.gateway.gateway.routes.iter().enumerate() {
            if !UPSTREAMS.contains(&route.upstream.as_str()) {
                return Err(ConfigError::invalid(
                    format!("gateway.routes[{index}].upstream"),
                    format!(
                        "one of {}, found {:?}",
                        UPSTREAMS.join(", "),
                        route.upstream
                    ),
                ));
            }
        }
        self.web.origin()?;
        if !(1..=1_000).contains(&self.web.max_streams_per_user) {
            return Err(ConfigError::invalid(
                "web.max_streams_per_user",
                "a number of streams between 1 and 1000",
            ));
        }
        if !(1..=1_000_000).contains(&self.web.max_streams) {
            return Err(ConfigError::invalid(
                "web.max_streams",
                "a number of streams between 1 and 1000000",
            ));
        }
        let (shortest, longest) = tideway_web::ops::SAMPLE_EVERY_RANGE;
        if !(duration_ms(shortest)..=duration_ms(longest)).contains(&self.web.console_sample_ms) {
            return Err(ConfigError::invalid(
                "web.console_sample_ms",
                format!(
                    "milliseconds between {} and {}",
                    duration_ms(shortest),
                    duration_ms(longest)
                ),
            ));
        }
        self.identity_for(true).validate()?;
        self.identity_for(false).validate()?;
        self.catalog.service.validate()?;
        self.basket.service.validate()?;
        self.inventory.service.validate()?;
        self.payment.service.validate()?;
        self.ordering.service.validate()?;
        self.notification.service.validate()?;
        self.reporting.service.validate()?;
        self.validate_timings()?;
        Ok(())
    }
}

impl Validate for DistributedConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.postgres_url.backend() != tideway_store::Backend::Postgres {
            return Err(ConfigError::invalid(
                "distributed.postgres_url",
                "a PostgreSQL URL such as postgres://postgres@127.0.0.1:5432/postgres",
            ));
        }
        let prefix = &self.database_prefix;
        let valid = prefix.len() <= 40
            && prefix.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Err(ConfigError::invalid(
                "distributed.database_prefix",
                "up to 40 of a-z, 0-9 and '_', not starting with a digit",
            ));
        }
        if !(1..=600_000).contains(&self.stop_grace_ms) {
            return Err(ConfigError::invalid(
                "distributed.stop_grace_ms",
                "milliseconds between 1 and 600000",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_service_has_a_database_on_the_distributed_server() {
        let mut config = Config::default();
        let url = config
            .distributed
            .database_url(crate::ServiceName::Catalog)
            .unwrap();
        assert_eq!(
            url.expose(),
            "postgres://postgres@127.0.0.1:5432/tideway_catalog"
        );
        config.distributed.postgres_url =
            DatabaseUrl::parse("postgres://u:pw@db:6432/admin?sslmode=disable").unwrap();
        config.distributed.database_prefix = "shop_".into();
        let url = config
            .distributed
            .database_url(crate::ServiceName::Ordering)
            .unwrap();
        assert_eq!(
            url.expose(),
            "postgres://u:pw@db:6432/shop_ordering?sslmode=disable"
        );
        assert_eq!(
            refused_key(|c| c.distributed.database_prefix = "Shop-".into()),
            "distributed.database_prefix"
        );
        assert_eq!(
            refused_key(|c| c.distributed.database_prefix = "1x".into()),
            "distributed.database_prefix"
        );
        assert_eq!(
            refused_key(|c| c.distributed.postgres_url = DatabaseUrl::sqlite("x.db")),
            "distributed.postgres_url"
        );
        assert_eq!(
            refused_key(|c| c.distributed.stop_grace_ms = 0),
            "distributed.stop_grace_ms"
        );
    }

    #[test]
    fn the_shop_routes_are_the_defaults() {
        let config = Config::default();
        let route = |prefix: &str| {
            config
                .gateway
                .gateway
                .routes
                .iter()
                .find(|route| route.prefix == prefix)
                .unwrap_or_else(|| panic!("no route {prefix}"))
        };
        assert_eq!(route("/api/v1/catalog").upstream, "catalog");
        assert_eq!(route("/api/v1/catalog").write, Access::Role("admin".into()));
        assert_eq!(route("/api/v1/basket/checkout").upstream, "ordering");
        assert_eq!(config.gateway.gateway.routes, shop_routes());
    }

    /// The key the default configuration with `change` applied is refused for.
    fn refused_key(change: impl FnOnce(&mut Config)) -> String {
        let mut config = Config::default();
        change(&mut config);
        match config.validate() {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn bad_log_and_span_settings_are_refused_naming_the_key() {
        assert_eq!(
            refused_key(|c| c.log.filter = "info,[[[".into()),
            "log.filter"
        );
        assert_eq!(
            refused_key(|c| c.telemetry.sample_ratio = -0.1),
            "telemetry.sample_ratio"
        );
        assert_eq!(
            refused_key(|c| c.telemetry.otlp_endpoint = Some("collector:4318".into())),
            "telemetry.otlp_endpoint"
        );
        assert_eq!(
            refused_key(|c| c.telemetry.recent_spans = usize::MAX),
            "telemetry.recent_spans"
        );
        for ms in [0, 249, 60_001] {
            assert_eq!(
                refused_key(|c| c.web.console_sample_ms = ms),
                "web.console_sample_ms"
            );
        }
    }

    #[test]
    fn bad_routes_are_refused_naming_the_route() {
        Config::default().validate().unwrap();
        fn routes(config: &mut Config) -> &mut Vec<RouteConfig> {
            &mut config.gateway.gateway.routes
        }
        assert_eq!(
            refused_key(|c| {
                let first = routes(c)[0].clone();
                routes(c).push(first);
            }),
            format!("gateway.routes[{}].prefix", shop_routes().len())
        );
        assert_eq!(
            refused_key(|c| routes(c)[2].prefix = "/api/v1/{x}".into()),
            "gateway.routes[2].prefix"
        );
        // A table written before versions: its unversioned prefixes would match nothing.
        assert_eq!(
            refused_key(|c| routes(c)[2].prefix = "/api/basket".into()),
            "gateway.routes[2].prefix"
        );
        assert_eq!(
            refused_key(|c| routes(c)[2].prefix = "/api/v2/basket".into()),
            "gateway.routes[2].prefix"
        );
        assert_eq!(
            refused_key(|c| routes(c)[1].timeout_ms = 0),
            "gateway.routes[1].timeout_ms"
        );
        assert_eq!(
            refused_key(|c| routes(c)[3].upstream = "shipping".into()),
            "gateway.routes[3].upstream"
        );
    }

    #[test]
    fn versions_at_fixed_urls_load_and_a_bad_one_is_named() {
        let config =
            from_file("[gateway.upstream_urls]\n\"catalog@v2\" = \"http://127.0.0.1:9182\"\n")
                .unwrap();
        assert_eq!(
            config.gateway.upstream_urls["catalog@v2"],
            "http://127.0.0.1:9182"
        );
        let refused = |name: &str, url: &str| {
            refused_key(|c| {
                c.gateway
                    .upstream_urls
                    .insert(name.to_owned(), url.to_owned());
            })
        };
        assert_eq!(
            refused("catalog", "http://127.0.0.1:9182"),
            "gateway.upstream_urls.\"catalog\""
        );
        assert_eq!(
            refused("shipping@v2", "http://127.0.0.1:9182"),
            "gateway.upstream_urls.\"shipping@v2\""
        );
        assert_eq!(
            refused("catalog@v2", "https://127.0.0.1:9182"),
            "gateway.upstream_urls.\"catalog@v2\""
        );
        assert_eq!(
            refused("catalog@v2", "http://127.0.0.1:9182/api"),
            "gateway.upstream_urls.\"catalog@v2\""
        );
    }

    /// The configuration loaded from a file holding `toml`.
    fn from_file(toml: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tideway.toml");
        std::fs::write(&path, toml).unwrap();
        Config::load(Some(&path))
    }

    #[test]
    fn the_cache_keys_load_and_a_bad_one_is_named() {
        let config = from_file(
            "[catalog.cache]\nenabled = false\nredis_timeout_ms = 50\n\
             [catalog.cache.item]\nkind = \"redis\"\nttl_ms = 5000\ncapacity = 7\n\
             [basket.cache.price]\nttl_ms = 2000\n\
             [gateway]\ncache_enabled = false\n",
        )
        .unwrap();
        let catalog = &config.catalog.service.cache;
        assert!(!catalog.shared.enabled);
        assert_eq!(catalog.shared.redis_timeout_ms, 50);
        assert_eq!(catalog.item.kind, tideway_cache::Kind::Redis);
        assert_eq!((catalog.item.ttl_ms, catalog.item.capacity), (5000, 7));
        assert_eq!(config.basket.service.cache.price.ttl_ms, 2000);
        assert!(!config.gateway.gateway.cache_enabled);
        let catalog_route = config
            .gateway
            .gateway
            .routes
            .iter()
            .find(|r| r.prefix == "/api/v1/catalog")
            .unwrap();
        assert!(catalog_route.cache_bytes > 0);
        assert_eq!(
            refused_key(|c| c.catalog.service.cache.list.ttl_ms = 0),
            "catalog.cache.list.ttl_ms"
        );
        assert_eq!(
            refused_key(|c| c.catalog.service.cache.shared.redis_url = "x".into()),
            "catalog.cache.redis_url"
        );
        assert_eq!(
            refused_key(|c| c.basket.service.cache.price.capacity = 0),
            "basket.cache.price.capacity"
        );
        let err = from_file("[catalog.cache.item]\nkind = \"disk\"\n").unwrap_err();
        assert!(err.to_string().contains("cache's kind"), "{err}");
        assert!(err.to_string().contains("memory"), "{err}");
    }

    #[test]
    fn the_basket_store_keys_load_and_a_bad_one_is_named() {
        let config = Config::default();
        assert_eq!(config.basket.service.store, tideway_basket::StoreKind::Sql);
        assert_eq!(config.basket.service.ttl_days, 30);
        let config = from_file(
            "[basket]\nstore = \"redis\"\nredis_url = \"redis://127.0.0.1:6390/1\"\n\
             ttl_days = 7\nredis_key_prefix = \"shop2:basket\"\nredis_timeout_ms = 200\n",
        )
        .unwrap();
        let basket = &config.basket.service;
        assert_eq!(basket.store, tideway_basket::StoreKind::Redis);
        assert_eq!(basket.redis_url.expose(), "redis://127.0.0.1:6390/1");
        assert_eq!((basket.ttl_days, basket.redis_timeout_ms), (7, 200));
        assert_eq!(basket.redis_key_prefix, "shop2:basket");
        for (toml, key) in [
            ("store = \"mongo\"", "basket.store"),
            ("redis_url = \"http://127.0.0.1:6379\"", "basket.redis_url"),
            ("ttl_days = \"soon\"", "basket.ttl_days"),
            ("ttl_days = 0", "basket.ttl_days"),
            ("redis_timeout_ms = -5", "basket.redis_timeout_ms"),
            ("redis_key_prefix = \"a b\"", "basket.redis_key_prefix"),
        ] {
            let err = from_file(&format!("[basket]\n{toml}\n")).unwrap_err();
            assert!(err.to_string().contains(key), "{toml}: {err}");
        }
    }

    #[test]
    fn strict_rate_limits_are_the_defaults_and_bad_ones_name_their_key() {
        let config = Config::default();
        let limits = &config.gateway.gateway.rate_limit;
        assert!(limits.enabled);
        let names: Vec<&str> = limits.rules.iter().map(|rule| rule.name.as_str()).collect();
        assert_eq!(names, ["login", "register", "refresh", "checkout"]);
        assert_eq!(
            refused_key(|c| c.gateway.gateway.rate_limit.rules[3].period_ms = 0),
            "gateway.rate_limit.rules[3].period_ms"
        );
        assert_eq!(
            refused_key(|c| c.gateway.gateway.rate_limit.rules[0].path = "login".into()),
            "gateway.rate_limit.rules[0].path"
        );
    }

    #[test]
    fn timings_that_do_not_fit_together_are_refused_naming_the_key() {
        let config = Config::default();
        config.validate().unwrap();
        let timings = config.bus_timings();
        assert_eq!(timings, tideway_bus::Timings::default());
        assert!(timings.takeover() <= std::time::Duration::from_secs(2));
        let replica = config.replica_of("inventory");
        assert_eq!(replica.instance_id, config.instance_id_of("inventory"));
        // The ack wait must be shorter than every step's deadline.
        assert_eq!(
            refused_key(|c| c.bus.ack_wait_ms = c.ordering.service.reserve_timeout_ms),
            "bus.ack_wait_ms"
        );
        assert_eq!(
            refused_key(|c| c.ordering.service.payment_timeout_ms = 4_000),
            "ordering.payment_timeout_ms",
            "shorter than ack wait + lease + poll"
        );
        assert_eq!(
            refused_key(|c| c.ordering.service.capture_timeout_ms = 4_500),
            "ordering.capture_timeout_ms"
        );
        // A lease that would lapse between two renewals.
        assert_eq!(
            refused_key(|c| c.bus.relay_lease_ttl_ms = c.bus.relay_poll_ms),
            "bus.relay_lease_ttl_ms"
        );
        assert_eq!(
            refused_key(|c| c.bus.relay_poll_ms = 0),
            "bus.relay_poll_ms"
        );
        assert_eq!(
            refused_key(|c| c.bus.ack_wait_ms = MAX_BUS_TIMING_MS + 1),
            "bus.ack_wait_ms"
        );
        // Shorter steps fit once the bus is timed for them.
        let mut quick = Config::default();
        quick.ordering.service.reserve_timeout_ms = 2_000;
        quick.bus.ack_wait_ms = 500;
        quick.bus.relay_lease_ttl_ms = 600;
        quick.bus.relay_poll_ms = 100;
        quick.validate().unwrap();
    }

    #[test]
    fn the_rabbitmq_bus_is_chosen_by_kind_and_a_bad_url_is_refused() {
        let config = from_file(
            "[bus]\nkind = \"rabbitmq\"\nrabbitmq_url = \"amqp://shop:secret@mq:5672/shop\"\n",
        )
        .unwrap();
        assert_eq!(config.bus.kind, BusKind::Rabbitmq);
        assert_eq!(config.bus.rabbitmq_url, "amqp://shop:secret@mq:5672/shop");
        assert_eq!(config.bus.rabbitmq_queue_expiry_ms, 0);
        assert_eq!(
            Config::default().bus.rabbitmq_url,
            "amqp://guest:guest@127.0.0.1:5672/%2f"
        );
        assert_eq!(
            refused_key(|c| c.bus.rabbitmq_url = "http://mq:5672".into()),
            "bus.rabbitmq_url"
        );
        assert_eq!(
            refused_key(|c| c.bus.rabbitmq_queue_expiry_ms = u64::MAX),
            "bus.rabbitmq_queue_expiry_ms"
        );
    }

    #[test]
    fn static_discovery_defaults_to_the_urls_and_bad_keys_are_named() {
        let mut config = Config::default();
        config.urls.catalog = "http://127.0.0.1:9999".into();
        config.resolve_discovery();
        assert_eq!(
            config.discovery.urls["catalog"].as_slice(),
            ["http://127.0.0.1:9999".to_owned()]
        );
        assert_eq!(config.discovery.urls.len(), 8);
        assert_eq!(
            refused_key(|c| {
                c.discovery.kind = tideway_discovery::DiscoveryKind::Nats;
                c.discovery.nats.ttl_ms = 1;
            }),
            "discovery.nats.ttl_ms"
        );
        assert_eq!(
            refused_key(|c| c.balance.ejection.max_share = 2.0),
            "balance.ejection.max_share"
        );
        assert_eq!(
            refused_key(|c| c.faults.latency_share = -1.0),
            "faults.latency_share"
        );
        assert_eq!(
            refused_key(|c| c.faults.error_status = 200),
            "faults.error_status"
        );
    }

    #[test]
    fn an_instance_id_is_one_token_and_stable() {
        assert_eq!(
            refused_key(|c| c.instance_id = Some("catalog 1".into())),
            "instance_id"
        );
        assert_eq!(
            refused_key(|c| c.instance_id = Some(String::new())),
            "instance_id"
        );
        let mut config = Config::default();
        let default = config.instance_id_of("catalog");
        assert!(default.starts_with("catalog-"), "{default}");
        assert_eq!(config.instance_id_of("catalog"), default);
        config.instance_id = Some("catalog-2".into());
        assert_eq!(config.instance_id_of("catalog"), "catalog-2");
    }
}
