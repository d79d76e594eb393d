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
#![warn(missing_docs)]

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    extract::{ConnectInfo, Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
    routing::any,
};
use serde::{Deserialize, Serialize};
use tideway_runtime::{
    Problem,
    auth::{AuthError, JwtVerifier, bearer},
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
        }
    }
}

/// The gateway's configuration.
///
/// The default has no routes: the gateway knows no services, and whoever deploys it gives
/// it its route table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayConfig {
    /// The routes; the longest matching prefix wins.
    pub routes: Vec<RouteConfig>,
    /// The largest request body accepted, in bytes.
    pub body_limit_bytes: usize,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            routes: Vec::new(),
            body_limit_bytes: 64 * 1024,
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
        Ok(())
    }
}

/// Whether `prefix` is a literal path the router can take as it is: the router reads `{…}`
/// and `*` as captures and refuses segments starting with `:`.
fn is_plain_prefix(prefix: &str) -> bool {
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
}

struct Shared {
    routes: Vec<Route>,
    verifier: Arc<JwtVerifier>,
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
            });
        }
        Ok(Self {
            shared: Arc::new(Shared { routes, verifier }),
            upstreams,
            options: HttpOptions {
                body_limit: config.body_limit_bytes,
            },
            pages: None,
            balancers: None,
        })
    }

    /// Serves `pages` beside the routes (a web front, static files): paths no route claims
    /// go to it, under the same observability, body limit and problem handling.
    #[must_use]
    pub fn with_pages(mut self, pages: Router) -> Self {
        self.pages = Some(pages);
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
    if let Err(err) = authorize(shared, &Access::Role("admin".to_owned()), headers).await {
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

async fn authorize(shared: &Shared, access: &Access, headers: &HeaderMap) -> Result<(), AuthError> {
    let role = match access {
        Access::Public => return Ok(()),
        Access::User => None,
        Access::Role(role) => Some(role),
    };
    let claims = shared.verifier.verify(bearer(headers)?).await?;
    match role {
        Some(role) if !claims.has_role(role) => Err(AuthError::Forbidden(role.clone())),
        _ => Ok(()),
    }
}

async fn proxy(shared: &Shared, index: usize, request: Request) -> Response {
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0);
    let Some(route) = shared.routes.get(index) else {
        return Problem::internal().into_response();
    };
    let access = if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        &route.read
    } else {
        &route.write
    };
    if let Err(err) = authorize(shared, access, request.headers()).await {
        return err.into_response();
    }

    let (mut parts, body) = request.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::HOST);
    if let Some(client) = client {
        let forwarded = match parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
        {
            Some(previous) => format!("{previous}, {}", client.ip()),
            None => client.ip().to_string(),
        };
        if let Ok(value) = HeaderValue::from_str(&forwarded) {
            parts.headers.insert("x-forwarded-for", value);
        }
    }
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
            response
        }
        Err(err) => upstream_failure(route, &err),
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
