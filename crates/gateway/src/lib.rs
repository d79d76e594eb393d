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
//! `GET /api/admin/instances` for operators.
//!
//! Before a request travels it is admitted ([`admission`]): its client address is found
//! (the peer, or `X-Forwarded-For` from a trusted proxy, or the browser's address the web
//! front passes in-process) and it is counted against the configured rate limits — by
//! address, by user or per route, in this process or in Redis — and refused with a 429
//! problem, `Retry-After` and `RateLimit-*` headers when over one.
#![warn(missing_docs)]

pub mod admission;
pub mod httpcache;

use std::{collections::HashMap, net::IpAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    extract::{Request, State},
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteConfig {
    /// The path prefix, e.g. `/api/catalog`.
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
            cache_bytes: 0,
        }
    }
}

pub use admission::{ClientIp, IpNet, LimitKey, LimitStore, RateLimitConfig, RateRule};

/// The gateway's configuration.
///
/// The default has no routes and no rate limit rules: the gateway knows no services, and
/// whoever deploys it gives it its route table and limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// `false`: no route caches, whatever their `cache_bytes` (for comparisons).
    #[serde(default = "enabled")]
    pub cache_enabled: bool,
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
            cache_enabled: true,
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
                        "a path such as /api/catalog (starting with `/`, not ending with `/`, \
                         without `{{`, `}}` or `*`, no segment starting with `:`), found {:?}",
                        route.prefix
                    ),
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

struct Route {
    prefix: String,
    upstream: Transport,
    read: Access,
    write: Access,
    timeout: Duration,
    cache: Option<httpcache::RouteCache>,
}

/// Empties the HTTP caches of the routes to one upstream: call it on that upstream's
/// change events. Cheap to clone.
#[derive(Clone)]
pub struct Purger {
    shared: Arc<Shared>,
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
        for route in &self.shared.routes {
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

struct Shared {
    routes: Vec<Route>,
    verifier: Arc<JwtVerifier>,
    trusted_proxies: Vec<IpNet>,
    admission: admission::Admission,
}

tokio::task_local! {
    /// The address of the browser whose page is being rendered, for the front's calls.
    static BROWSER: Option<IpAddr>;
}

/// The path of the operators' view of every replica behind the gateway.
pub const INSTANCES_PATH: &str = "/api/admin/instances";

/// The gateway, ready to be turned into a router.
pub struct Gateway {
    shared: Arc<Shared>,
    upstreams: HashMap<String, Transport>,
    options: HttpOptions,
    pages: Option<Router>,
    balancers: Option<tideway_balance::Balancers>,
}

impl Gateway {
    /// A gateway for `config`, reaching each upstream named in the routes through
    /// `upstreams` and verifying tokens with `verifier`. Refuses a configuration that does
    /// not [validate](Validate::validate).
    pub fn new(
        config: &GatewayConfig,
        upstreams: HashMap<String, Transport>,
        verifier: Arc<JwtVerifier>,
    ) -> Result<Self, GatewayError> {
        config.validate()?;
        let mut routes = Vec::with_capacity(config.routes.len());
        for route in &config.routes {
            let upstream = upstreams.get(&route.upstream).cloned().ok_or_else(|| {
                GatewayError::UnknownUpstream {
                    prefix: route.prefix.clone(),
                    upstream: route.upstream.clone(),
                }
            })?;
            routes.push(Route {
                prefix: route.prefix.clone(),
                upstream,
                read: route.read.clone(),
                write: route.write.clone(),
                timeout: Duration::from_millis(route.timeout_ms),
                cache: (config.cache_enabled && route.cache_bytes > 0)
                    .then(|| httpcache::RouteCache::new(&route.prefix, route.cache_bytes)),
            });
        }
        let admission = admission::Admission::new(&config.rate_limit)?;
        Ok(Self {
            shared: Arc::new(Shared {
                routes,
                verifier,
                trusted_proxies: config.trusted_proxies.clone(),
                admission,
            }),
            upstreams,
            options: HttpOptions {
                body_limit: config.body_limit_bytes,
            },
            pages: None,
            balancers: None,
        })
    }

    /// Serves `pages` beside the routes (a web front, static files): paths no route claims
    /// go to it, under the same observability, body limit and problem handling. Calls the
    /// pages make through [`Gateway::front_transport`] while answering a request carry that
    /// request's client address, so the rate limits count them against the browser.
    #[must_use]
    pub fn with_pages(mut self, pages: Router) -> Self {
        let shared = self.shared.clone();
        self.pages = Some(
            pages.layer(middleware::from_fn(move |request: Request, next: Next| {
                let client = admission::client_ip(&request, &shared.trusted_proxies);
                BROWSER.scope(client, next.run(request))
            })),
        );
        self
    }

    /// Reports the replicas behind `balancers` at `GET /api/admin/instances` (role admin):
    /// every instance of every service with its address, version, readiness, ejection,
    /// breaker, requests per second and EWMA latency.
    #[must_use]
    pub fn with_balancers(mut self, balancers: tideway_balance::Balancers) -> Self {
        self.balancers = Some(balancers);
        self
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
            shared: self.shared.clone(),
        }
    }

    /// The gateway's router: every route, plus health and metrics.
    pub fn router(&self) -> Router {
        let mut api = Router::new();
        for (index, route) in self.shared.routes.iter().enumerate() {
            let handler = any(
                move |State(shared): State<Arc<Shared>>, request: Request| async move {
                    proxy(&shared, index, request).await
                },
            );
            api = api
                .route(&route.prefix, handler.clone())
                .route(&format!("{}/{{*rest}}", route.prefix), handler);
        }
        let mut readiness = Readiness::default();
        for (name, transport) in &self.upstreams {
            let transport = transport.clone();
            readiness = readiness.with(name.clone(), move || {
                let transport = transport.clone();
                async move { upstream_ready(&transport).await }
            });
        }
        let mut api = api.with_state(self.shared.clone());
        if let Some(balancers) = &self.balancers {
            let shared = self.shared.clone();
            let balancers = balancers.clone();
            api = api.route(
                INSTANCES_PATH,
                axum::routing::get(move |headers: HeaderMap| {
                    let shared = shared.clone();
                    let balancers = balancers.clone();
                    async move { instances(&shared, &balancers, &headers).await }
                }),
            );
        }
        if let Some(pages) = &self.pages {
            api = api.merge(pages.clone());
        }
        service_router(SERVICE, api, readiness, self.options)
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

/// Every replica of every service the balancers know, for admins.
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

/// The answer of `GET /api/admin/instances`.
#[derive(Debug, Clone, Serialize, Deserialize)]
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

async fn proxy(shared: &Shared, index: usize, mut request: Request) -> Response {
    let Some(route) = shared.routes.get(index) else {
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
    let access = if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        &route.read
    } else {
        &route.write
    };
    let identify = limits.wants_user(method, path);
    let claims = match authorize(shared, access, request.headers(), identify).await {
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

    let pending = match &route.cache {
        Some(cache) if matches!(*request.method(), Method::GET | Method::HEAD) => {
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
    let upstream_request = Request::from_parts(parts, body);

    match route
        .upstream
        .send_with_timeout(upstream_request, route.timeout)
        .await
    {
        Ok(mut response) => {
            strip_hop_by_hop(response.headers_mut());
            let mut response = match pending {
                Some((cache, pending)) => cache
                    .complete(pending, Ok(response))
                    .await
                    .unwrap_or_else(|_| Problem::internal().into_response()),
                None => response,
            };
            tightest.stamp(&mut response);
            response
        }
        Err(err) => {
            let stale = match pending {
                Some((cache, pending)) => cache.complete(pending, Err(())).await.err().flatten(),
                None => None,
            };
            let mut response = match stale {
                Some(stale) => {
                    tracing::warn!(upstream = route.upstream.service(), prefix = %route.prefix, error = %err, "upstream call failed; answering the stored answer");
                    stale
                }
                None => upstream_failure(route, &err),
            };
            tightest.stamp(&mut response);
            response
        }
    }
}

/// The one table from upstream failures to answers.
fn upstream_failure(route: &Route, err: &ClientError) -> Response {
    let service = route.upstream.service();
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
    tracing::warn!(upstream = service, prefix = %route.prefix, error = %err, "upstream call failed");
    Problem::new(status)
        .with_type("/problems/upstream-unavailable")
        .with_detail(detail)
        .into_response()
}

#[cfg(test)]
mod tests;
