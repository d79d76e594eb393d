//! Tideway's edge gateway.
//!
//! Config-driven routes map a path prefix to an upstream service reached through a
//! [`Transport`] — the service's router in this process, or its URL — so the same gateway
//! fronts the all-in-one process and separate processes. Per route it checks access
//! (public, any signed-in user, or a role) separately for reads and writes, verifying JWTs
//! against the identity service's JWKS; it forwards the request id, adds `X-Forwarded-*`,
//! drops hop-by-hop headers, enforces a body limit and a deadline, and maps upstream
//! failures in one place: timeout → 504, connection failure → 502, refused before sending
//! (no replica, breaker open, bulkhead full) → 503. Upstream transports may balance over
//! a service's replicas (`tideway-balance`); [`Gateway::with_balancers`] adds
//! `GET /api/v1/admin/instances` for operators.
//!
//! Before a request travels it is admitted ([`admission`]): its client address is found
//! (the peer, or `X-Forwarded-For` from a trusted proxy, or the browser's address the web
//! front passes in-process) and it is counted against the configured rate limits — by
//! address, by user or per route, in this process or in Redis — and refused with a 429
//! problem, `Retry-After` and `RateLimit-*` headers when over one.
#![warn(missing_docs)]

pub mod admission;
mod audit;
pub mod httpcache;
mod live;
mod traffic;

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::Arc,
    time::Duration,
};
use tideway_runtime::openapi::BearerAuth;

use axum::{
    Router,
    body::Body,
    extract::Request,
    http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::any,
};
use serde::{Deserialize, Serialize};
use tideway_runtime::{
    Problem,
    auth::{AuthError, Claims, JwtVerifier, bearer},
    client::{ClientError, Transport},
    config::{ConfigError, Validate},
    http::{HttpOptions, Readiness, service_router},
    versions::{self, Aliases},
};

/// The gateway's name in logs and metrics.
pub const SERVICE: &str = "gateway";

/// Who may use a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Access {
    /// Anyone.
    Public,
    /// Any user with a valid access token.
    User,
    /// Users with the named role.
    Role(String),
}

impl TryFrom<String> for Access {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        match value.as_str() {
            "public" => Ok(Self::Public),
            "user" => Ok(Self::User),
            other => match other.strip_prefix("role:") {
                Some(role) if !role.is_empty() => Ok(Self::Role(role.to_owned())),
                _ => Err(format!(
                    "expected `public`, `user` or `role:<name>`, found {other:?}"
                )),
            },
        }
    }
}

/// A string, as serde reads and writes it: `public`, `user` or `role:<name>`.
impl utoipa::PartialSchema for Access {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some("^(public|user|role:.+)$"))
            .description(Some(
                "Who may: `public` (anyone), `user` (any valid access token) or \
                 `role:<name>` (users with that role)",
            ))
            .examples(["public", "user", "role:admin"])
            .into()
    }
}

impl utoipa::ToSchema for Access {}

impl From<Access> for String {
    fn from(access: Access) -> Self {
        match access {
            Access::Public => "public".to_owned(),
            Access::User => "user".to_owned(),
            Access::Role(role) => format!("role:{role}"),
        }
    }
}

/// One route: requests whose path is `prefix` or starts with `prefix/` go to `upstream`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RouteConfig {
    /// The path prefix, e.g. `/api/v1/catalog`.
    pub prefix: String,
    /// The upstream service's name, e.g. `catalog`.
    pub upstream: String,
    /// Who may use GET, HEAD and OPTIONS.
    pub read: Access,
    /// Who may use every other method.
    pub write: Access,
    /// The deadline of an upstream call, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Versions of the upstream and their weights, e.g. `{"catalog@v1" = 95,
    /// "catalog@v2" = 5}`; each name is an upstream the gateway was given. Empty: every
    /// request goes to `upstream`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub versions: BTreeMap<String, u32>,
    /// Rules evaluated before the weights; the first that matches picks the version.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<MatchRule>,
    /// A cookie that keeps anonymous clients on one version: hashed when present, set
    /// when absent. A signed-in user is kept by their user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky_cookie: Option<String>,
    /// A share of the traffic copied to a shadow version and compared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<MirrorConfig>,
    /// When a canary doing worse than the primary is set to 0%.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackConfig>,
    /// The most memory this route's HTTP cache may use, in bytes (0: no cache); see
    /// [`httpcache`].
    #[serde(default)]
    pub cache_bytes: u64,
}

fn default_timeout_ms() -> u64 {
    5_000
}

impl RouteConfig {
    /// A route with the default deadline (5 s).
    pub fn new(
        prefix: impl Into<String>,
        upstream: impl Into<String>,
        read: Access,
        write: Access,
    ) -> Self {
        Self {
            prefix: prefix.into(),
            upstream: upstream.into(),
            read,
            write,
            timeout_ms: default_timeout_ms(),
            versions: BTreeMap::new(),
            rules: Vec::new(),
            sticky_cookie: None,
            mirror: None,
            rollback: None,
            cache_bytes: 0,
        }
    }

    /// Every upstream the route may send to: `upstream`, its versions, its shadow.
    pub fn upstream_names(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.upstream.as_str())
            .chain(self.versions.keys().map(String::as_str))
            .chain(self.mirror.iter().map(|m| m.to.as_str()))
    }
}

pub use admission::{ClientIp, IpNet, LimitKey, LimitStore, RateLimitConfig, RateRule};
pub use live::{ConfigVersion, RouteTraffic, Switch, TrafficReport};
pub use traffic::{
    Figures, MatchRule, MirrorConfig, MirrorCounts, MirrorDiff, RollbackConfig, TrafficEvent,
};

/// The gateway's operator API: its own admin endpoints (instances, configuration,
/// traffic, switch).
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(instances, live::get_config, live::put_config, live::traffic_report, live::switch),
    components(schemas(tideway_runtime::InvalidParam), responses(Problem)),
    modifiers(&BearerAuth),
    tags((name = "gateway", description = "The gateway's operator API: replicas, routes, traffic (role admin)"))
)]
pub struct ApiDoc;

/// The gateway's operator API, with the documents of the admin endpoints served beside it
/// (what [`Gateway::with_admin`] mounts, such as the flags and the audit trail).
pub fn openapi(
    admin: impl IntoIterator<Item = utoipa::openapi::OpenApi>,
) -> utoipa::openapi::OpenApi {
    let mut document = <ApiDoc as utoipa::OpenApi>::openapi();
    for other in admin {
        document.merge(other);
    }
    document
}

/// The gateway's configuration.
///
/// The default has no routes and no rate limit rules: the gateway knows no services, and
/// whoever deploys it gives it its route table and limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GatewayConfig {
    /// The routes; the longest matching prefix wins.
    pub routes: Vec<RouteConfig>,
    /// The largest request body accepted, in bytes.
    pub body_limit_bytes: usize,
    /// Peers whose `X-Forwarded-For` is believed (load balancers, reverse proxies in
    /// front); from anyone else the header is ignored and replaced.
    #[serde(default)]
    pub trusted_proxies: Vec<IpNet>,
    /// Rate limits by client address, user or route.
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    /// How many mirrored requests may wait for their shadow call; more are dropped, so
    /// shadows never hold the users' requests back. Read at start.
    #[serde(default = "default_mirror_queue")]
    pub mirror_queue: usize,
    /// `false`: no route caches, whatever their `cache_bytes` (for comparisons).
    #[serde(default = "enabled")]
    pub cache_enabled: bool,
    /// `true`: unversioned `/api/…` paths are served as deprecated aliases of `/api/v1/…`
    /// (with `Deprecation` and `Link`); `false`: they find no route (404), e.g. after
    /// their sunset. Read at start.
    #[serde(default = "enabled")]
    pub unversioned_aliases: bool,
}

fn default_mirror_queue() -> usize {
    256
}

fn enabled() -> bool {
    true
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            routes: Vec::new(),
            body_limit_bytes: 64 * 1024,
            trusted_proxies: Vec::new(),
            rate_limit: RateLimitConfig::default(),
            mirror_queue: default_mirror_queue(),
            cache_enabled: true,
            unversioned_aliases: true,
        }
    }
}

/// Keys are named as in the `gateway` section of Tideway's configuration:
/// `gateway.routes[2].prefix`.
impl Validate for GatewayConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.body_limit_bytes == 0 {
            return Err(ConfigError::invalid(
                "gateway.body_limit_bytes",
                "a positive number of bytes",
            ));
        }
        let mut seen: HashMap<&str, usize> = HashMap::with_capacity(self.routes.len());
        for (index, route) in self.routes.iter().enumerate() {
            let key = |field: &str| format!("gateway.routes[{index}].{field}");
            if !is_plain_prefix(&route.prefix) {
                return Err(ConfigError::invalid(
                    key("prefix"),
                    format!(
                        "a path such as /api/v1/catalog (starting with `/`, not ending with `/`, \
                         without `{{`, `}}` or `*`, no segment starting with `:`), found {:?}",
                        route.prefix
                    ),
                ));
            }
            if let Some(expected) = unreachable_api_path(&route.prefix) {
                return Err(ConfigError::invalid(
                    key("prefix"),
                    format!("{expected}, found {:?}", route.prefix),
                ));
            }
            if let Some(first) = seen.insert(&route.prefix, index) {
                return Err(ConfigError::invalid(
                    key("prefix"),
                    format!(
                        "a prefix of one route only, found {:?}, the prefix of \
                         gateway.routes[{first}] too",
                        route.prefix
                    ),
                ));
            }
            if route.timeout_ms == 0 {
                return Err(ConfigError::invalid(
                    key("timeout_ms"),
                    "a positive number of milliseconds",
                ));
            }
            traffic::validate_route(route, &key)?;
        }
        if self.mirror_queue == 0 || self.mirror_queue > 65_536 {
            return Err(ConfigError::invalid(
                "gateway.mirror_queue",
                "a queue length from 1 to 65536",
            ));
        }
        self.rate_limit.validate()
    }
}

/// Whether `prefix` is a literal path the router can take as it is: the router reads `{…}`
/// and `*` as captures and refuses segments starting with `:`.
pub(crate) fn is_plain_prefix(prefix: &str) -> bool {
    prefix.starts_with('/')
        && !prefix.ends_with('/')
        && !prefix.contains(['{', '}', '*'])
        && !prefix.split('/').any(|segment| segment.starts_with(':'))
}

/// What `path` should be instead, when no request can reach it: an unversioned API path
/// (its requests are rewritten to `/api/v1/…` before routing) or one under a version that
/// does not exist. `None` for a versioned path or one outside the API.
pub(crate) fn unreachable_api_path(path: &str) -> Option<String> {
    match versions::classify(path) {
        versions::PathKind::AsIs => None,
        versions::PathKind::Alias { rest } => Some(format!(
            "a versioned path such as {} (unversioned API paths are aliases, rewritten to \
             their {} path before routing)",
            versions::successor(rest, None),
            versions::PREFIX,
        )),
        versions::PathKind::UnknownVersion(version) => Some(format!(
            "a path under {} (the API has no version {version})",
            versions::PREFIX
        )),
    }
}

/// A configuration the gateway cannot run with.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// A route names an upstream that was not given.
    #[error("route {prefix} names the upstream `{upstream}`, which is not configured")]
    UnknownUpstream {
        /// The route's prefix.
        prefix: String,
        /// The missing upstream.
        upstream: String,
    },
    /// A value is not acceptable (a malformed or duplicate prefix, a zero deadline).
    #[error("the gateway configuration is invalid")]
    Invalid(#[from] ConfigError),
}

/// A route as built for one configuration version.
struct Route {
    prefix: String,
    upstream: Transport,
    read: Access,
    write: Access,
    timeout: Duration,
    split: Option<RouteSplit>,
    mirror: Option<RouteMirror>,
    /// The route's HTTP cache (none for a route split between versions, whose answers
    /// may differ by version).
    cache: Option<httpcache::RouteCache>,
}

/// Empties the HTTP caches of the routes to one upstream: call it on that upstream's
/// change events. Cheap to clone.
#[derive(Clone)]
pub struct Purger {
    live: Arc<live::Live>,
}

impl std::fmt::Debug for Purger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Purger").finish_non_exhaustive()
    }
}

impl Purger {
    /// Purges every cached answer of the routes to `upstream`; how many routes had a cache.
    pub fn purge(&self, upstream: &str) -> usize {
        let mut purged = 0;
        for route in &self.live.shared().routes {
            if let Some(cache) = &route.cache
                && route.upstream.service() == upstream
            {
                cache.purge();
                purged += 1;
            }
        }
        purged
    }
}

/// A route's versions: the split and, in the same order, each version's transport, its
/// outcomes (kept across configuration versions) and its request counter.
struct RouteSplit {
    split: traffic::Split,
    transports: Vec<Transport>,
    outcomes: Vec<Arc<traffic::Outcomes>>,
    requests: Vec<metrics::Counter>,
}

struct RouteMirror {
    to: String,
    transport: Transport,
    percent: u32,
    writes: bool,
    ignore: Arc<[String]>,
}

/// Everything a request needs, built from one configuration version.
struct Shared {
    /// Longest prefix first, so the first match is the longest.
    routes: Vec<Route>,
    verifier: Arc<JwtVerifier>,
    trusted_proxies: Vec<IpNet>,
    admission: admission::Admission,
    body_limit: usize,
}

impl Shared {
    /// Builds the routes of `config` (validated first) over `upstreams`.
    fn build(
        config: &GatewayConfig,
        upstreams: &HashMap<String, Transport>,
        verifier: &Arc<JwtVerifier>,
        ledger: &traffic::Ledger,
    ) -> Result<Self, GatewayError> {
        config.validate()?;
        let transport = |route: &RouteConfig, name: &str| {
            upstreams
                .get(name)
                .cloned()
                .ok_or_else(|| GatewayError::UnknownUpstream {
                    prefix: route.prefix.clone(),
                    upstream: name.to_owned(),
                })
        };
        let mut routes = Vec::with_capacity(config.routes.len());
        for route in &config.routes {
            let split = match traffic::Split::new(route) {
                None => None,
                Some(split) => {
                    let mut transports = Vec::with_capacity(split.targets.len());
                    let mut outcomes = Vec::with_capacity(split.targets.len());
                    let mut requests = Vec::with_capacity(split.targets.len());
                    for target in &split.targets {
                        transports.push(transport(route, target)?);
                        outcomes.push(ledger.outcomes(&route.prefix, target));
                        requests.push(metrics::counter!(
                            "tideway_gateway_version_requests_total",
                            "route" => route.prefix.clone(),
                            "version" => target.clone(),
                        ));
                    }
                    Some(RouteSplit {
                        split,
                        transports,
                        outcomes,
                        requests,
                    })
                }
            };
            let mirror = match &route.mirror {
                None => None,
                Some(mirror) => Some(RouteMirror {
                    to: mirror.to.clone(),
                    transport: transport(route, &mirror.to)?,
                    percent: mirror.percent,
                    writes: mirror.writes,
                    ignore: mirror.ignore.clone().into(),
                }),
            };
            routes.push(Route {
                prefix: route.prefix.clone(),
                upstream: transport(route, &route.upstream)?,
                read: route.read.clone(),
                write: route.write.clone(),
                timeout: Duration::from_millis(route.timeout_ms),
                cache: (config.cache_enabled && route.cache_bytes > 0 && split.is_none())
                    .then(|| httpcache::RouteCache::new(&route.prefix, route.cache_bytes)),
                split,
                mirror,
            });
        }
        routes.sort_by_key(|route| std::cmp::Reverse(route.prefix.len()));
        Ok(Self {
            routes,
            verifier: Arc::clone(verifier),
            trusted_proxies: config.trusted_proxies.clone(),
            admission: admission::Admission::new(&config.rate_limit)?,
            body_limit: config.body_limit_bytes,
        })
    }

    /// The route claiming `path`: the longest prefix equal to it or followed by `/`.
    fn find(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|route| {
            path.strip_prefix(route.prefix.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    }
}

tokio::task_local! {
    /// The address of the browser whose page is being rendered, for the front's calls.
    static BROWSER: Option<IpAddr>;
}

/// The path of the operators' view of every replica behind the gateway.
pub const INSTANCES_PATH: &str = "/api/v1/admin/instances";

/// The path of the gateway's running configuration (`GET`, `PUT`; role admin).
pub const CONFIG_PATH: &str = "/api/v1/admin/config";

/// The path of the traffic report: weights, versions' figures, mirror differences and the
/// audit of changes (`GET`; role admin).
pub const TRAFFIC_PATH: &str = "/api/v1/admin/traffic";

/// The path of the blue/green switch (`POST {"route": …, "to": …}`; role admin).
pub const SWITCH_PATH: &str = "/api/v1/admin/traffic/switch";

/// The gateway, ready to be turned into a router.
pub struct Gateway {
    live: Arc<live::Live>,
    upstreams: HashMap<String, Transport>,
    options: HttpOptions,
    pages: Option<Router>,
    admin: Option<Router>,
    balancers: Option<tideway_balance::Balancers>,
}

impl Gateway {
    /// A gateway for `config`, reaching each upstream named in the routes through
    /// `upstreams` and verifying tokens with `verifier`. Refuses a configuration that does
    /// not [validate](Validate::validate). Inside a Tokio runtime it also starts the
    /// mirror's shadow calls and the canary rollback check, which end with the gateway.
    pub fn new(
        config: &GatewayConfig,
        upstreams: HashMap<String, Transport>,
        verifier: Arc<JwtVerifier>,
    ) -> Result<Self, GatewayError> {
        let live = live::Live::start(config, upstreams.clone(), verifier)?;
        Ok(Self {
            live,
            upstreams,
            options: HttpOptions {
                body_limit: config.body_limit_bytes,
                aliases: if config.unversioned_aliases {
                    Aliases::Served
                } else {
                    Aliases::Refused
                },
            },
            pages: None,
            admin: None,
            balancers: None,
        })
    }

    /// Serves `pages` beside the routes (a web front, static files): paths no route claims
    /// go to it, under the same observability, body limit and problem handling. Calls the
    /// pages make through [`Gateway::front_transport`] while answering a request carry that
    /// request's client address, so the rate limits count them against the browser.
    #[must_use]
    pub fn with_pages(mut self, pages: Router) -> Self {
        let live = Arc::clone(&self.live);
        self.pages = Some(
            pages.layer(middleware::from_fn(move |request: Request, next: Next| {
                let shared = live.shared();
                let client = admission::client_ip(&request, &shared.trusted_proxies);
                BROWSER.scope(client, next.run(request))
            })),
        );
        self
    }

    /// Reports the replicas behind `balancers` at `GET /api/v1/admin/instances` (role admin):
    /// every instance of every service with its address, version, readiness, ejection,
    /// breaker, requests per second and EWMA latency.
    #[must_use]
    pub fn with_balancers(mut self, balancers: tideway_balance::Balancers) -> Self {
        self.balancers = Some(balancers);
        self
    }

    /// Serves `routes` beside the gateway's own admin endpoints (paths no route claims,
    /// such as `/api/v1/admin/flags`), under the same observability, body limit and problem
    /// handling; the calls of a web front made through [`Gateway::front_transport`] reach
    /// them too (so set them before asking for it). They check their callers themselves.
    #[must_use]
    pub fn with_admin(mut self, routes: Router) -> Self {
        self.admin = Some(match self.admin.take() {
            Some(admin) => admin.merge(routes),
            None => routes,
        });
        self
    }

    /// Records every admin action made through the gateway in `store`: each write a route
    /// admits only for a role (with the resource before — a `GET` of the same path — and
    /// the answer after), and every configuration change, switch and rollback (with the
    /// configuration before and after). Call inside a runtime.
    #[must_use]
    pub fn with_audit(self, store: tideway_audit::AuditStore) -> Self {
        self.live.set_audit(store);
        self
    }

    /// A handle to change the running configuration: what `PUT /api/v1/admin/config` uses,
    /// for a file watcher or a distributed store to apply theirs.
    pub fn control(&self) -> GatewayControl {
        GatewayControl {
            live: Arc::clone(&self.live),
        }
    }

    /// The gateway's routes in this process, for a web front mounted with
    /// [`Gateway::with_pages`]: each call made while a page is answered carries the
    /// browser's address as a [`ClientIp`] (an extension, which no client can send), so
    /// the front's calls are limited as the browser's own would be. Calls made outside a
    /// page (a stream polled after its head was sent) carry no address and are counted
    /// only by user and route.
    pub fn front_transport(&self, timeout: Duration) -> Transport {
        let router = tower::ServiceExt::map_request(self.router(), |mut request: Request| {
            if let Ok(Some(ip)) = BROWSER.try_with(|ip| *ip) {
                request.extensions_mut().insert(ClientIp(ip));
            }
            request
        });
        Transport::in_process(SERVICE, router, timeout)
    }

    /// What purges the routes' HTTP caches.
    pub fn purger(&self) -> Purger {
        Purger {
            live: Arc::clone(&self.live),
        }
    }

    /// The gateway's router: every route, the admin endpoints, plus health and metrics.
    /// Routes are looked up in the configuration version current when a request arrives,
    /// so a new version applies to the next request without a new router.
    pub fn router(&self) -> Router {
        let dispatch = {
            let live = Arc::clone(&self.live);
            let pages = self.pages.clone();
            any(move |request: Request| {
                let live = Arc::clone(&live);
                let pages = pages.clone();
                async move { dispatch(&live, pages, request).await }
            })
        };
        let mut readiness = Readiness::default();
        // A version (`catalog@v2`) is not the gateway's dependency: its primary is.
        for (name, transport) in self.upstreams.iter().filter(|(n, _)| !n.contains('@')) {
            let transport = transport.clone();
            readiness = readiness.with(name.clone(), move || {
                let transport = transport.clone();
                async move { upstream_ready(&transport).await }
            });
        }
        // The prefixes of the start-up table get routes of their own, so metrics and logs
        // keep the route template (`/api/v1/catalog/{*rest}`); routes added later are reached
        // through the catch-all. Either way the current table decides.
        let mut api = live::admin_routes(&self.live);
        if let Some(admin) = &self.admin {
            api = api.merge(admin.clone());
        }
        for route in &self.live.shared().routes {
            api = api
                .route(&route.prefix, dispatch.clone())
                .route(&format!("{}/{{*rest}}", route.prefix), dispatch.clone());
        }
        api = api.route("/{*path}", dispatch.clone());
        match &self.pages {
            // The pages keep their own route templates too; what they and no route claim
            // reaches the pages' fallback through `dispatch`.
            Some(pages) => api = api.merge(pages.clone()),
            None => api = api.route("/", dispatch),
        }
        if let Some(balancers) = &self.balancers {
            let live = Arc::clone(&self.live);
            let balancers = balancers.clone();
            api = api.route(
                INSTANCES_PATH,
                axum::routing::get(move |headers: HeaderMap| {
                    let shared = live.shared();
                    let balancers = balancers.clone();
                    async move { instances(&shared, &balancers, &headers).await }
                }),
            );
        }
        service_router(SERVICE, api, readiness, self.options)
    }
}

/// Changes the running configuration of a [`Gateway`].
#[derive(Clone)]
pub struct GatewayControl {
    live: Arc<live::Live>,
}

impl std::fmt::Debug for GatewayControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayControl")
            .field("version", &self.live.version())
            .finish_non_exhaustive()
    }
}

impl GatewayControl {
    /// Validates `config` in full and, if it holds, swaps it in at once as the next
    /// version (answered); otherwise the running one stays and the error names the key.
    /// `by` says who changed it, for the audit.
    pub fn apply(&self, config: &GatewayConfig, by: &str) -> Result<u64, GatewayError> {
        self.live
            .apply(config, by, "config", None, "configuration replaced")
    }

    /// Applies a configuration another replica applied (`kind` `shared` in the audit, so
    /// it is not shared back), with who made it there.
    pub fn apply_shared(&self, config: &GatewayConfig, by: &str) -> Result<u64, GatewayError> {
        self.live.apply(
            config,
            by,
            "shared",
            None,
            "configuration applied by another replica",
        )
    }

    /// The running configuration and its version.
    pub fn current(&self) -> (u64, GatewayConfig) {
        self.live.current_config()
    }

    /// Follows the changes made to this gateway (the latest one; the running
    /// configuration is [`current`](Self::current)): what shares them with other replicas.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<Option<TrafficEvent>> {
        self.live.changes()
    }

    /// The audit of traffic changes kept in memory, oldest first.
    pub fn events(&self) -> Vec<TrafficEvent> {
        self.live.events()
    }
}

/// Sends a request to the route claiming its path in the current configuration version,
/// or to the pages.
async fn dispatch(live: &live::Live, pages: Option<Router>, request: Request) -> Response {
    let shared = live.shared();
    if shared.find(request.uri().path()).is_some() {
        return proxy(live, &shared, request).await;
    }
    match pages {
        Some(pages) => match tower::ServiceExt::oneshot(pages, request).await {
            Ok(response) => response,
            Err(never) => match never {},
        },
        None => Problem::not_found("this path").into_response(),
    }
}

async fn upstream_ready(transport: &Transport) -> Result<(), String> {
    let request = Request::get("/health/ready")
        .body(Body::empty())
        .map_err(|err| err.to_string())?;
    match transport.send(request).await {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(response) => Err(format!("answered {}", response.status())),
        Err(err) => Err(err.to_string()),
    }
}

/// Every replica of every service the balancers know, for admins. A gateway that does not
/// balance over discovered replicas (the embedded shape) has none to report: 404.
#[utoipa::path(
    get,
    path = "/api/v1/admin/instances",
    tag = "gateway",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every service the gateway balances, with its replicas", body = Instances),
        (status = 401, response = Problem),
        (status = 403, response = Problem),
        (status = 404, response = Problem),
        (status = 503, response = Problem),
    )
)]
async fn instances(
    shared: &Shared,
    balancers: &tideway_balance::Balancers,
    headers: &HeaderMap,
) -> Response {
    if let Err(err) = authorize(shared, &Access::Role("admin".to_owned()), headers, false).await {
        return err.into_response();
    }
    axum::Json(Instances {
        services: balancers.status().await,
    })
    .into_response()
}

/// The answer of `GET /api/v1/admin/instances`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Instances {
    /// Each service with its replicas.
    pub services: Vec<tideway_balance::ServiceStatus>,
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers named by `Connection` are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

/// Checks `access`; answers the verified claims, if a token was verified. On a public
/// route a token is verified only when `identify` (a rule counts by user), and a bad one
/// there just leaves the request anonymous.
async fn authorize(
    shared: &Shared,
    access: &Access,
    headers: &HeaderMap,
    identify: bool,
) -> Result<Option<Claims>, AuthError> {
    let role = match access {
        Access::Public => {
            if !identify {
                return Ok(None);
            }
            let Ok(token) = bearer(headers) else {
                return Ok(None);
            };
            return Ok(shared.verifier.verify(token).await.ok());
        }
        Access::User => None,
        Access::Role(role) => Some(role),
    };
    let claims = shared.verifier.verify(bearer(headers)?).await?;
    match role {
        Some(role) if !claims.has_role(role) => Err(AuthError::Forbidden(role.clone())),
        _ => Ok(Some(claims)),
    }
}

/// The largest primary answer buffered to compare with a shadow's; a larger one is still
/// sent to the user, just not compared.
const MIRROR_BODY_LIMIT: usize = 1024 * 1024;

async fn proxy(live: &live::Live, shared: &Shared, mut request: Request) -> Response {
    let Some(route) = shared.find(request.uri().path()) else {
        return Problem::internal().into_response();
    };
    let peer = admission::peer(&request);
    let client = admission::client_ip(&request, &shared.trusted_proxies);
    let limits = &shared.admission;
    let mut tightest = admission::Tightest::default();
    let (method, path) = (request.method(), request.uri().path());
    if let Err(refused) = limits
        .check(
            admission::Phase::BeforeAuth,
            method,
            path,
            client,
            None,
            &mut tightest,
        )
        .await
    {
        return refused;
    }
    let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    let access = if safe { &route.read } else { &route.write };
    let identify = limits.wants_user(method, path);
    // A split keeps a signed-in user on one version by their id, so it reads the token.
    let claims = match authorize(
        shared,
        access,
        request.headers(),
        identify || route.split.is_some(),
    )
    .await
    {
        Ok(claims) => claims,
        Err(err) => return err.into_response(),
    };
    if identify {
        let user = claims.as_ref().map(|claims| claims.sub.as_str());
        if let Err(refused) = limits
            .check(
                admission::Phase::AfterAuth,
                method,
                path,
                client,
                user,
                &mut tightest,
            )
            .await
        {
            return refused;
        }
    }

    // An admin action: a write only a role may make, by a signed-in user.
    let audited = match (live.audit(), &claims) {
        (Some(audit), Some(claims)) if !safe && matches!(access, Access::Role(_)) => {
            Some((audit, claims.sub.clone()))
        }
        _ => None,
    };

    let mut set_cookie = None;
    let (upstream, version) = match &route.split {
        None => (&route.upstream, None),
        Some(split) => {
            let (index, _, cookie) =
                split
                    .split
                    .choose(&route.prefix, request.headers(), claims.as_ref());
            set_cookie = cookie;
            split.requests[index].increment(1);
            (&split.transports[index], Some((split, index)))
        }
    };
    let mirror = route.mirror.as_ref().filter(|mirror| {
        (safe || mirror.writes)
            && live.mirrors()
            && (mirror.percent >= 100 || rand::random::<u32>() % 100 < mirror.percent)
    });
    // A cached answer is the route's own: no version split, no mirror copy.
    let pending = match &route.cache {
        Some(cache)
            if version.is_none() && matches!(*request.method(), Method::GET | Method::HEAD) =>
        {
            match cache
                .plan(&mut request, &route.upstream, route.timeout)
                .await
            {
                httpcache::Plan::Answer(mut response) => {
                    tightest.stamp(&mut response);
                    return response;
                }
                httpcache::Plan::Forward(pending) => Some((cache, pending)),
            }
        }
        _ => None,
    };

    let (mut parts, body) = request.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::HOST);
    let front = parts.extensions.get::<ClientIp>().map(|ip| ip.0);
    admission::forwarded_for(&mut parts.headers, peer, front, &shared.trusted_proxies);
    parts
        .headers
        .insert("x-forwarded-proto", HeaderValue::from_static("http"));
    // A mirrored request is read whole first, so the shadow gets the same body.
    let (upstream_request, shadow) = match mirror {
        None => (Request::from_parts(parts, body), None),
        Some(mirror) => {
            let bytes = match axum::body::to_bytes(body, shared.body_limit).await {
                Ok(bytes) => bytes,
                Err(_) => {
                    return Problem::new(StatusCode::PAYLOAD_TOO_LARGE)
                        .with_detail(format!(
                            "the request body is larger than {} bytes",
                            shared.body_limit
                        ))
                        .into_response();
                }
            };
            let mut copy = Request::new(Body::from(bytes.clone()));
            *copy.method_mut() = parts.method.clone();
            *copy.uri_mut() = parts.uri.clone();
            *copy.headers_mut() = parts.headers.clone();
            copy.headers_mut()
                .insert("x-tideway-shadow", HeaderValue::from_static("1"));
            (
                Request::from_parts(parts, Body::from(bytes)),
                Some((mirror, copy)),
            )
        }
    };

    let audit_line = audited.as_ref().map(|_| {
        (
            upstream_request.method().clone(),
            upstream_request.uri().path().to_owned(),
        )
    });
    let audit_before = match &audit_line {
        Some((method, _)) => {
            let (uri, headers) = (
                upstream_request.uri().clone(),
                upstream_request.headers().clone(),
            );
            Some(audit::before(upstream, method, uri, headers, route.timeout).await)
        }
        None => None,
    };

    let started = std::time::Instant::now();
    let outcome = upstream
        .send_with_timeout(upstream_request, route.timeout)
        .await;
    if let Some((split, index)) = version {
        let failed = outcome.as_ref().map_or(true, traffic::failed);
        split.outcomes[index].record(started.elapsed(), failed);
    }
    let mut response = match outcome {
        Ok(mut response) => {
            strip_hop_by_hop(response.headers_mut());
            match pending {
                Some((cache, pending)) => cache
                    .complete(pending, Ok(response))
                    .await
                    .unwrap_or_else(|_| Problem::internal().into_response()),
                None => response,
            }
        }
        Err(err) => {
            let stale = match pending {
                Some((cache, pending)) => cache.complete(pending, Err(())).await.err().flatten(),
                None => None,
            };
            match stale {
                Some(stale) => {
                    tracing::warn!(upstream = upstream.service(), prefix = %route.prefix, error = %err, "upstream call failed; answering the stored answer");
                    stale
                }
                None => upstream_failure(&route.prefix, upstream, &err),
            }
        }
    };
    if let (Some((audit, actor)), Some(before), Some((method, path))) =
        (audited, audit_before, audit_line)
    {
        response = audit::after(
            &audit,
            actor,
            upstream.service(),
            &method,
            path,
            before,
            response,
        )
        .await;
    }
    if let Some((mirror, copy)) = shadow {
        response = live.mirror(route, mirror, copy, response).await;
    }
    tightest.stamp(&mut response);
    if let Some(cookie) = set_cookie {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// The one table from upstream failures to answers.
fn upstream_failure(prefix: &str, upstream: &Transport, err: &ClientError) -> Response {
    let service = upstream.service();
    let (status, detail) = match err {
        ClientError::Timeout { timeout, .. } => (
            StatusCode::GATEWAY_TIMEOUT,
            format!("{service} did not answer within {} ms", timeout.as_millis()),
        ),
        ClientError::Connect { .. } => (
            StatusCode::BAD_GATEWAY,
            format!("{service} cannot be reached"),
        ),
        ClientError::Unavailable { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{service} is unavailable"),
        ),
        ClientError::Status { .. }
        | ClientError::Decode { .. }
        | ClientError::InvalidRequest(_) => (
            StatusCode::BAD_GATEWAY,
            format!("{service} gave an invalid answer"),
        ),
    };
    tracing::warn!(upstream = service, prefix, error = %err, "upstream call failed");
    Problem::new(status)
        .with_type("/problems/upstream-unavailable")
        .with_detail(detail)
        .into_response()
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod traffic_tests;
#[cfg(test)]
mod versions_tests;
