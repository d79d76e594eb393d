//! Admission at the edge: who a request comes from, and the rate limits it counts against.
//!
//! * The client's address is the TCP peer, unless the peer is one of
//!   `gateway.trusted_proxies`: then `X-Forwarded-For` is read from the right, skipping
//!   trusted proxies, and the first address that is not one is the client. A peer that is
//!   not trusted cannot choose its address by sending the header; the gateway replaces the
//!   header it forwards with the peer's address.
//! * The web front mounted with [`Gateway::with_pages`](crate::Gateway::with_pages) calls
//!   the routes in-process, where there is no peer: its calls carry the browser's address
//!   as a [`ClientIp`] request extension, which only code in this process can set.
//! * Rate limits are rules: a path prefix, optional methods, a key (the client's address,
//!   the token's subject, or one bucket for the route) and a GCRA quota, kept in this
//!   process (`governor`) or in Redis across gateway replicas. More specific rules (longer
//!   paths) are checked first, so a request refused by a strict rule does not use up a
//!   general one.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    str::FromStr,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use axum::{
    extract::{ConnectInfo, Request},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header::RETRY_AFTER},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use tideway_resilience::{GlobalRateLimitSettings, LocalGcra, RateDecision, RedisGcra};
use tideway_runtime::{Problem, config::ConfigError};

/// The address of the browser a call of the web front is made for. The front's transport
/// sets it; it never comes from the wire, so the gateway trusts it as it trusts a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// An address or a network (`10.0.0.0/8`, `127.0.0.1`, `fd00::/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Whether `ip` lies in this network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// A string, as serde reads and writes it: an address or a CIDR network.
impl utoipa::PartialSchema for IpNet {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some(
                "An IPv4 or IPv6 address or network in CIDR notation (`10.0.0.0/8`, `fd00::/8`)",
            ))
            .examples(["10.0.0.0/8", "127.0.0.1", "fd00::/8"])
            .into()
    }
}

impl utoipa::ToSchema for IpNet {}

impl FromStr for IpNet {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let expected = || format!("an address or network such as 10.0.0.0/8, found {value:?}");
        let (addr, prefix) = match value.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (value, None),
        };
        let addr = canonical(addr.trim().parse::<IpAddr>().map_err(|_| expected())?);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(expected)?,
            None => max,
        };
        Ok(Self { addr, prefix })
    }
}

/// Read from configuration, where an `IpNet` is an entry of `trusted_proxies`: the message
/// names that field, since a flattened section loses the path.
impl TryFrom<String> for IpNet {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        value
            .parse()
            .map_err(|err| format!("`trusted_proxies`: {err}"))
    }
}

impl From<IpNet> for String {
    fn from(net: IpNet) -> Self {
        net.to_string()
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

fn trusted(proxies: &[IpNet], ip: IpAddr) -> bool {
    proxies.iter().any(|net| net.contains(ip))
}

/// The TCP peer of a request that came over a socket.
pub(crate) fn peer(request: &Request) -> Option<IpAddr> {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| canonical(info.0.ip()))
}

/// Who a request comes from: the front's [`ClientIp`], else the peer, else (a peer in
/// `proxies`) the rightmost untrusted address of `X-Forwarded-For`. `None` for a call made
/// inside this process without an address (the console, a stream's later polls).
pub(crate) fn client_ip(request: &Request, proxies: &[IpNet]) -> Option<IpAddr> {
    if let Some(ClientIp(ip)) = request.extensions().get::<ClientIp>() {
        return Some(canonical(*ip));
    }
    let peer = peer(request)?;
    if proxies.is_empty() || !trusted(proxies, peer) {
        return Some(peer);
    }
    let mut client = peer;
    for value in request.headers().get_all("x-forwarded-for").iter().rev() {
        let Ok(value) = value.to_str() else {
            return Some(client);
        };
        for hop in value.rsplit(',') {
            let Ok(ip) = hop.trim().parse::<IpAddr>() else {
                // A malformed entry ends what can be believed.
                return Some(client);
            };
            client = canonical(ip);
            if !trusted(proxies, client) {
                return Some(client);
            }
        }
    }
    Some(client)
}

/// The `X-Forwarded-For` to send upstream: the chain so far when the peer is a trusted
/// proxy, else only what the gateway knows itself; then the peer (or the front's browser).
pub(crate) fn forwarded_for(
    headers: &mut HeaderMap,
    request_peer: Option<IpAddr>,
    front: Option<IpAddr>,
    proxies: &[IpNet],
) {
    let chain_trusted = request_peer.is_some_and(|peer| trusted(proxies, peer));
    let previous = if chain_trusted {
        let joined: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        (!joined.is_empty()).then(|| joined.join(", "))
    } else {
        None
    };
    headers.remove("x-forwarded-for");
    let Some(last) = request_peer.or(front) else {
        return;
    };
    let value = match previous {
        Some(previous) => format!("{previous}, {last}"),
        None => last.to_string(),
    };
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert("x-forwarded-for", value);
    }
}

/// The longest refill period a rule may have: 30 days.
const MAX_PERIOD_MS: u64 = 30 * 86_400_000;

/// What a rule counts requests by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LimitKey {
    /// The client's address.
    Ip,
    /// The access token's subject; requests without a valid token count by address.
    User,
    /// One bucket for every client of the rule's path.
    Route,
}

impl LimitKey {
    fn per(self) -> &'static str {
        match self {
            Self::Ip => "per client address",
            Self::User => "per user",
            Self::Route => "for all clients together",
        }
    }
}

/// One rate limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RateRule {
    /// The limit's name: in metrics (`tideway_rate_limited_total{limit}`), in the 429's
    /// detail and in Redis keys.
    pub name: String,
    /// The requests it counts: this path and everything under it (`/` for every route).
    pub path: String,
    /// Only these methods (upper case); empty: every method.
    #[serde(default)]
    pub methods: Vec<String>,
    /// What requests are counted by.
    pub key: LimitKey,
    /// Requests a key may make at once.
    pub burst: u32,
    /// The time in which a spent burst is refilled, evenly, in milliseconds.
    pub period_ms: u64,
}

impl RateRule {
    /// A rule counting `methods` requests under `path` by `key`: `burst` at once, refilled
    /// over `period_ms`.
    pub fn new(
        name: &str,
        path: &str,
        methods: &[&str],
        key: LimitKey,
        burst: u32,
        period_ms: u64,
    ) -> Self {
        Self {
            name: name.to_owned(),
            path: path.to_owned(),
            methods: methods.iter().map(|m| (*m).to_owned()).collect(),
            key,
            burst,
            period_ms,
        }
    }
}

/// Where the limits' state lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LimitStore {
    /// In this process: each gateway replica has its own buckets.
    Local,
    /// In Redis: every replica using the same Redis and key prefix shares one bucket.
    Global,
}

/// The gateway's rate limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct RateLimitConfig {
    /// Whether the rules apply at all.
    pub enabled: bool,
    /// `local` or `global` (Redis).
    pub store: LimitStore,
    /// The Redis of the `global` store.
    pub redis_url: String,
    /// The prefix of every Redis key (`{prefix}:{rule}:{key}`).
    pub key_prefix: String,
    /// With the `global` store: let requests pass while Redis does not answer (otherwise
    /// they get 503).
    pub fail_open: bool,
    /// How long a check may wait for Redis, in milliseconds.
    pub redis_timeout_ms: u64,
    /// The rules; a request counts against every rule that matches it.
    pub rules: Vec<RateRule>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            store: LimitStore::Local,
            redis_url: "redis://127.0.0.1:6379".to_owned(),
            key_prefix: "tideway:rl".to_owned(),
            fail_open: true,
            redis_timeout_ms: 50,
            rules: Vec::new(),
        }
    }
}

impl RateLimitConfig {
    /// Checks every value, naming the key (`gateway.rate_limit.rules[1].burst`).
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.store == LimitStore::Global {
            if !(self.redis_url.starts_with("redis://") || self.redis_url.starts_with("rediss://"))
                || redis::Client::open(self.redis_url.as_str()).is_err()
            {
                return Err(ConfigError::invalid(
                    "gateway.rate_limit.redis_url",
                    "a URL such as redis://127.0.0.1:6379",
                ));
            }
            if self.key_prefix.is_empty() {
                return Err(ConfigError::invalid(
                    "gateway.rate_limit.key_prefix",
                    "a non-empty prefix",
                ));
            }
        }
        if !(1..=10_000).contains(&self.redis_timeout_ms) {
            return Err(ConfigError::invalid(
                "gateway.rate_limit.redis_timeout_ms",
                "milliseconds between 1 and 10000",
            ));
        }
        for (index, rule) in self.rules.iter().enumerate() {
            let key = |field: &str| format!("gateway.rate_limit.rules[{index}].{field}");
            let name_ok = !rule.name.is_empty()
                && rule.name.len() <= 64
                && rule
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !name_ok {
                return Err(ConfigError::invalid(
                    key("name"),
                    "1 to 64 of A-Z, a-z, 0-9, '-' and '_'",
                ));
            }
            if let Some(first) = self.rules[..index].iter().position(|r| r.name == rule.name) {
                return Err(ConfigError::invalid(
                    key("name"),
                    format!(
                        "the name of one rule only, found {:?}, the name of \
                         gateway.rate_limit.rules[{first}] too",
                        rule.name
                    ),
                ));
            }
            if !(rule.path == "/" || crate::is_plain_prefix(&rule.path)) {
                return Err(ConfigError::invalid(
                    key("path"),
                    format!(
                        "`/` or a path such as /api/v1/identity/login (no trailing `/`), found {:?}",
                        rule.path
                    ),
                ));
            }
            if let Some(expected) = crate::unreachable_api_path(&rule.path) {
                return Err(ConfigError::invalid(
                    key("path"),
                    format!("{expected}, found {:?}", rule.path),
                ));
            }
            for (m, method) in rule.methods.iter().enumerate() {
                if Method::from_bytes(method.as_bytes()).is_err()
                    || method.bytes().any(|b| b.is_ascii_lowercase())
                {
                    return Err(ConfigError::invalid(
                        format!("gateway.rate_limit.rules[{index}].methods[{m}]"),
                        format!("an upper-case method such as POST, found {method:?}"),
                    ));
                }
            }
            if rule.burst == 0 || rule.burst > 1_000_000_000 {
                return Err(ConfigError::invalid(
                    key("burst"),
                    "a number of requests between 1 and 1000000000",
                ));
            }
            if rule.period_ms < u64::from(rule.burst) || rule.period_ms > MAX_PERIOD_MS {
                return Err(ConfigError::invalid(
                    key("period_ms"),
                    "milliseconds, at least 1 per request of the burst and at most 30 days",
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Ip(IpAddr),
    User(String),
    Route,
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(ip) => write!(f, "ip:{ip}"),
            Self::User(sub) => write!(f, "user:{sub}"),
            Self::Route => f.write_str("route"),
        }
    }
}

enum Limiter {
    Local(LocalGcra<Key>),
    Global(RedisGcra),
}

struct Rule {
    name: String,
    path: String,
    methods: Vec<Method>,
    key: LimitKey,
    burst: u32,
    period: Duration,
    limiter: Limiter,
    limited: metrics::Counter,
    store_errors: metrics::Counter,
}

impl Rule {
    fn matches(&self, method: &Method, path: &str) -> bool {
        (self.methods.is_empty() || self.methods.contains(method))
            && (self.path == "/"
                || path
                    .strip_prefix(self.path.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/')))
    }
}

/// Which rules a check looks at: those keyed by address or route come before the token is
/// verified (so a flood costs no signature checks), those keyed by user after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    BeforeAuth,
    AfterAuth,
}

/// The rules of one gateway, built.
pub(crate) struct Admission {
    rules: Vec<Rule>,
    fail_open: bool,
    /// Whether the last check on Redis failed, so an outage is logged once.
    store_down: AtomicBool,
}

/// The decision with the fewest requests left so far: its `RateLimit-*` headers go on the
/// answer.
#[derive(Debug, Default)]
pub(crate) struct Tightest(Option<RateDecision>);

impl Tightest {
    fn keep(&mut self, decision: RateDecision) {
        match &self.0 {
            Some(kept) if kept.remaining <= decision.remaining => {}
            _ => self.0 = Some(decision),
        }
    }

    /// Adds the kept decision's headers to `response`.
    pub(crate) fn stamp(&self, response: &mut Response) {
        if let Some(decision) = &self.0 {
            decision.add_headers(response.headers_mut());
        }
    }
}

impl Admission {
    /// Builds `config`'s rules; nothing when it is disabled.
    pub(crate) fn new(config: &RateLimitConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let mut rules = Vec::new();
        if config.enabled {
            let client = match config.store {
                LimitStore::Global => {
                    Some(redis::Client::open(config.redis_url.as_str()).map_err(|_| {
                        ConfigError::invalid(
                            "gateway.rate_limit.redis_url",
                            "a URL such as redis://127.0.0.1:6379",
                        )
                    })?)
                }
                LimitStore::Local => None,
            };
            for (index, rule) in config.rules.iter().enumerate() {
                let period = Duration::from_millis(rule.period_ms);
                let refused = |err: tideway_resilience::ConfigError| {
                    ConfigError::invalid(
                        format!("gateway.rate_limit.rules[{index}].{}", err.parameter),
                        err.reason,
                    )
                };
                let limiter = match &client {
                    None => Limiter::Local(LocalGcra::new(rule.burst, period).map_err(refused)?),
                    Some(client) => Limiter::Global(
                        RedisGcra::new(
                            client.clone(),
                            &GlobalRateLimitSettings {
                                burst: rule.burst,
                                per: period,
                                key_prefix: format!("{}:{}", config.key_prefix, rule.name),
                                fail_open: config.fail_open,
                                timeout: Duration::from_millis(config.redis_timeout_ms),
                                ..GlobalRateLimitSettings::default()
                            },
                        )
                        .map_err(refused)?,
                    ),
                };
                let labels = [("limit", rule.name.clone())];
                rules.push(Rule {
                    name: rule.name.clone(),
                    path: rule.path.clone(),
                    methods: rule
                        .methods
                        .iter()
                        .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
                        .collect(),
                    key: rule.key,
                    burst: rule.burst,
                    period,
                    limiter,
                    limited: metrics::counter!("tideway_rate_limited_total", &labels),
                    store_errors: metrics::counter!(
                        "tideway_rate_limit_store_errors_total",
                        &labels
                    ),
                });
            }
        }
        // The most specific first; equal paths keep their order in the file.
        rules.sort_by_key(|rule| {
            std::cmp::Reverse(if rule.path == "/" { 0 } else { rule.path.len() })
        });
        Ok(Self {
            rules,
            fail_open: config.fail_open,
            store_down: AtomicBool::new(false),
        })
    }

    /// Whether a rule keyed by user matches: then a token on a public route is verified
    /// to find whose request it is.
    pub(crate) fn wants_user(&self, method: &Method, path: &str) -> bool {
        self.rules
            .iter()
            .any(|rule| rule.key == LimitKey::User && rule.matches(method, path))
    }

    /// Counts the request against every rule of `phase` that matches it; the first that
    /// refuses answers (429, or 503 when the store is down and fails closed).
    pub(crate) async fn check(
        &self,
        phase: Phase,
        method: &Method,
        path: &str,
        client: Option<IpAddr>,
        user: Option<&str>,
        tightest: &mut Tightest,
    ) -> Result<(), Response> {
        for rule in &self.rules {
            let in_phase = (rule.key == LimitKey::User) == (phase == Phase::AfterAuth);
            if !in_phase || !rule.matches(method, path) {
                continue;
            }
            let key = match (rule.key, user, client) {
                (LimitKey::Route, _, _) => Key::Route,
                (LimitKey::User, Some(sub), _) => Key::User(sub.to_owned()),
                (LimitKey::Ip | LimitKey::User, _, Some(ip)) => Key::Ip(ip),
                // A call from inside this process with no address: not counted by address.
                (LimitKey::Ip | LimitKey::User, _, None) => continue,
            };
            let decision = match &rule.limiter {
                Limiter::Local(gcra) => gcra.check(&key),
                Limiter::Global(gcra) => match gcra.check(&key.to_string()).await {
                    Ok(decision) => {
                        if self.store_down.swap(false, Ordering::Relaxed) {
                            tracing::info!(limit = %rule.name, "Redis answers the rate limits again.");
                        }
                        decision
                    }
                    Err(error) => {
                        rule.store_errors.increment(1);
                        if !self.store_down.swap(true, Ordering::Relaxed) {
                            tracing::warn!(
                                limit = %rule.name,
                                fail_open = self.fail_open,
                                error = &error as &dyn std::error::Error,
                                "Redis is unreachable for the rate limits.",
                            );
                        }
                        if self.fail_open {
                            continue;
                        }
                        return Err(store_unavailable());
                    }
                },
            };
            if !decision.allowed {
                rule.limited.increment(1);
                return Err(too_many(rule, &decision));
            }
            tightest.keep(decision);
        }
        Ok(())
    }
}

fn seconds(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

fn too_many(rule: &Rule, decision: &RateDecision) -> Response {
    let retry = seconds(decision.retry_after).max(1);
    let period = rule.period.as_secs_f64();
    let mut response = Problem::new(StatusCode::TOO_MANY_REQUESTS)
        .with_type("/problems/rate-limited")
        .with_title("Too many requests")
        .with_detail(format!(
            "over the `{}` limit of {} requests per {period} s {}; retry in {retry} s",
            rule.name,
            rule.burst,
            rule.key.per()
        ))
        .into_response();
    let headers = response.headers_mut();
    headers.insert(RETRY_AFTER, HeaderValue::from(retry));
    decision.add_headers(headers);
    response
}

fn store_unavailable() -> Response {
    let mut response = Problem::new(StatusCode::SERVICE_UNAVAILABLE)
        .with_type("/problems/unavailable")
        .with_detail("the rate limits cannot be checked; try again shortly")
        .into_response();
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(1u32));
    response
}

#[cfg(test)]
mod tests;
