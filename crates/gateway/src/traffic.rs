//! Traffic management on a route: versions of its upstream with weights, match rules that
//! pick a version before the weights, stickiness, mirrored (shadow) traffic compared with
//! the primary's answers, and the automatic rollback of a canary that does worse than the
//! primary.
//!
//! A version is an upstream name such as `catalog@v2`: the app gives the gateway one
//! transport per version (in the distributed shape, a balancer over the replicas that
//! registered with that version label). Weights and rules are part of the route's
//! configuration, so a change — a blue/green switch, a rollback, an edit through
//! `PUT /api/v1/admin/config` — is a new configuration version swapped in at once: a request
//! keeps the table it started with, so in-flight requests finish on the version they chose.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::http::{HeaderMap, HeaderValue, header};
use serde::{Deserialize, Serialize};
use tideway_runtime::{auth::Claims, config::ConfigError};

/// A rule that sends the requests it matches to one version, before any weight is
/// considered. Exactly one of `header`, `cookie`, `user_agent` and `claim` is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MatchRule {
    /// A request header's name: matches when present (and equal to `equals`, if set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// A cookie's name: matches when present (and equal to `equals`, if set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    /// Matches when the `User-Agent` contains this text (case-insensitive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// A claim of the verified access token: `sub` (the user id, compared with `equals`)
    /// or `role` (matches when the user has the role `equals`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<String>,
    /// The value to compare with; required for `claim`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<String>,
    /// The version matching requests go to, one of the route's `versions`.
    pub to: String,
}

/// Copying a share of a route's traffic to a shadow version and comparing its answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MirrorConfig {
    /// The shadow upstream, e.g. `catalog@v2`.
    pub to: String,
    /// The share of the route's requests copied, in percent (1 to 100).
    #[serde(default = "hundred")]
    pub percent: u32,
    /// Whether writes (methods other than GET, HEAD, OPTIONS) are copied too.
    #[serde(default)]
    pub writes: bool,
    /// JSON fields ignored when answers are compared (by name, at any depth), e.g.
    /// `["updated_at", "request_id"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore: Vec<String>,
}

fn hundred() -> u32 {
    100
}

/// When a canary (any version but the one with the largest weight) is set to 0%.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackConfig {
    /// How many percentage points the canary's error rate (5xx and failed calls) may
    /// exceed the primary's.
    #[serde(default = "default_error_margin")]
    pub error_margin_percent: u32,
    /// How many milliseconds the canary's p99 latency may exceed the primary's.
    #[serde(default = "default_p99_margin")]
    pub p99_margin_ms: u64,
    /// The window the rates and latencies are measured over, in seconds.
    #[serde(default = "default_window")]
    pub window_secs: u64,
    /// The requests each side needs in the window before a verdict.
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
}

fn default_error_margin() -> u32 {
    5
}
fn default_p99_margin() -> u64 {
    250
}
fn default_window() -> u64 {
    30
}
fn default_min_requests() -> u64 {
    20
}

/// The traffic fields of one route, checked together; `key` names the route's fields.
pub(crate) fn validate_route(
    route: &crate::RouteConfig,
    key: &dyn Fn(&str) -> String,
) -> Result<(), ConfigError> {
    for (name, weight) in &route.versions {
        if name.is_empty() {
            return Err(ConfigError::invalid(
                key("versions"),
                "upstream names such as \"catalog@v2\"",
            ));
        }
        if *weight > 10_000 {
            return Err(ConfigError::invalid(
                key(&format!("versions.\"{name}\"")),
                "a weight from 0 to 10000",
            ));
        }
    }
    if !route.versions.is_empty() && route.versions.values().all(|w| *w == 0) {
        return Err(ConfigError::invalid(
            key("versions"),
            "at least one version with a positive weight",
        ));
    }
    for (index, rule) in route.rules.iter().enumerate() {
        let rule_key = |field: &str| key(&format!("rules[{index}].{field}"));
        let set = [&rule.header, &rule.cookie, &rule.user_agent, &rule.claim]
            .iter()
            .filter(|field| field.is_some())
            .count();
        if set != 1 {
            return Err(ConfigError::invalid(
                key(&format!("rules[{index}]")),
                "exactly one of `header`, `cookie`, `user_agent` and `claim`",
            ));
        }
        if let Some(name) = &rule.header
            && axum::http::HeaderName::from_bytes(name.as_bytes()).is_err()
        {
            return Err(ConfigError::invalid(rule_key("header"), "a header name"));
        }
        if let Some(claim) = &rule.claim {
            if claim != "sub" && claim != "role" {
                return Err(ConfigError::invalid(rule_key("claim"), "`sub` or `role`"));
            }
            if rule.equals.is_none() {
                return Err(ConfigError::invalid(
                    rule_key("equals"),
                    "the value the claim is compared with",
                ));
            }
        }
        if !route.versions.contains_key(&rule.to) {
            return Err(ConfigError::invalid(
                rule_key("to"),
                format!(
                    "one of the route's versions ({}), found {:?}",
                    names(&route.versions),
                    rule.to
                ),
            ));
        }
    }
    if let Some(cookie) = &route.sticky_cookie
        && (cookie.is_empty()
            || !cookie
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
    {
        return Err(ConfigError::invalid(
            key("sticky_cookie"),
            "a cookie name of letters, digits, `_` and `-`",
        ));
    }
    if let Some(mirror) = &route.mirror {
        if mirror.to.is_empty() {
            return Err(ConfigError::invalid(key("mirror.to"), "an upstream name"));
        }
        if !(1..=100).contains(&mirror.percent) {
            return Err(ConfigError::invalid(
                key("mirror.percent"),
                "a share from 1 to 100 percent",
            ));
        }
    }
    if let Some(rollback) = &route.rollback {
        if route.versions.len() < 2 {
            return Err(ConfigError::invalid(
                key("rollback"),
                "a route with at least two versions",
            ));
        }
        if rollback.window_secs == 0 || rollback.window_secs > 3_600 {
            return Err(ConfigError::invalid(
                key("rollback.window_secs"),
                "seconds from 1 to 3600",
            ));
        }
        if rollback.error_margin_percent > 100 {
            return Err(ConfigError::invalid(
                key("rollback.error_margin_percent"),
                "percentage points from 0 to 100",
            ));
        }
        if rollback.min_requests == 0 {
            return Err(ConfigError::invalid(
                key("rollback.min_requests"),
                "a positive number of requests",
            ));
        }
    }
    Ok(())
}

fn names(versions: &BTreeMap<String, u32>) -> String {
    versions.keys().cloned().collect::<Vec<_>>().join(", ")
}

/// A compiled rule.
#[derive(Debug)]
enum Matcher {
    Header(axum::http::HeaderName, Option<String>),
    Cookie(String, Option<String>),
    UserAgent(String),
    Sub(String),
    Role(String),
}

/// A route's versions, ready to choose from: targets in name order, cumulative weights.
#[derive(Debug)]
pub(crate) struct Split {
    /// The version names, e.g. `catalog@v1`.
    pub(crate) targets: Vec<String>,
    /// Cumulative weights, same order; the last is the total.
    cumulative: Vec<u64>,
    rules: Vec<(Matcher, usize)>,
    sticky_cookie: Option<String>,
}

/// How a request's version was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chosen {
    /// A match rule.
    Rule,
    /// The weights, on a stable key (user id or cookie).
    Sticky,
    /// The weights, at random (no key).
    Random,
}

impl Split {
    /// The split of a route with `versions` (validated), or `None` for a plain route.
    pub(crate) fn new(route: &crate::RouteConfig) -> Option<Self> {
        if route.versions.is_empty() {
            return None;
        }
        let targets: Vec<String> = route.versions.keys().cloned().collect();
        let mut total = 0u64;
        let cumulative = route
            .versions
            .values()
            .map(|weight| {
                total += u64::from(*weight);
                total
            })
            .collect();
        let index = |to: &str| targets.iter().position(|t| t == to).unwrap_or(0);
        let rules: Vec<(Matcher, usize)> = route
            .rules
            .iter()
            .filter_map(|rule| {
                let matcher = if let Some(name) = &rule.header {
                    Matcher::Header(
                        axum::http::HeaderName::from_bytes(name.as_bytes()).ok()?,
                        rule.equals.clone(),
                    )
                } else if let Some(name) = &rule.cookie {
                    Matcher::Cookie(name.clone(), rule.equals.clone())
                } else if let Some(agent) = &rule.user_agent {
                    Matcher::UserAgent(agent.to_ascii_lowercase())
                } else {
                    match (rule.claim.as_deref(), &rule.equals) {
                        (Some("sub"), Some(value)) => Matcher::Sub(value.clone()),
                        (Some("role"), Some(value)) => Matcher::Role(value.clone()),
                        _ => return None,
                    }
                };
                Some((matcher, index(&rule.to)))
            })
            .collect();
        Some(Self {
            targets,
            cumulative,
            rules,
            sticky_cookie: route.sticky_cookie.clone(),
        })
    }

    /// The version for a request, how it was chosen, and the sticky cookie to set when
    /// the request had no key to hash. `prefix` salts the hash so routes split apart.
    pub(crate) fn choose(
        &self,
        prefix: &str,
        headers: &HeaderMap,
        claims: Option<&Claims>,
    ) -> (usize, Chosen, Option<HeaderValue>) {
        for (matcher, target) in &self.rules {
            if matches(matcher, headers, claims) {
                return (*target, Chosen::Rule, None);
            }
        }
        let cookie = self
            .sticky_cookie
            .as_deref()
            .and_then(|name| cookie(headers, name));
        let (point, chosen, set_cookie) = if let Some(claims) = claims {
            (stable_hash(prefix, &claims.sub), Chosen::Sticky, None)
        } else if let Some(value) = cookie {
            (stable_hash(prefix, value), Chosen::Sticky, None)
        } else if let Some(name) = &self.sticky_cookie {
            // No key yet: pick one, hash it, and hand it to the client for next time.
            let key = format!("{:016x}", rand::random::<u64>());
            let point = stable_hash(prefix, &key);
            let value =
                HeaderValue::from_str(&format!("{name}={key}; Path=/; Max-Age=2592000; HttpOnly"))
                    .ok();
            (point, Chosen::Sticky, value)
        } else {
            (rand::random::<u64>(), Chosen::Random, None)
        };
        (self.pick(point), chosen, set_cookie)
    }

    /// The version a point of the hash space falls on: the space is cut in bands in the
    /// versions' name order, so raising a canary's weight moves users onto it only.
    fn pick(&self, point: u64) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(0).max(1);
        // Scale onto 0..total through 1/10000 steps, so the bands do not depend on how the
        // hash value happens to divide by the total.
        let at = (point % 10_000) * total / 10_000;
        self.cumulative
            .iter()
            .position(|upper| at < *upper)
            .unwrap_or(self.cumulative.len().saturating_sub(1))
    }
}

fn matches(matcher: &Matcher, headers: &HeaderMap, claims: Option<&Claims>) -> bool {
    match matcher {
        Matcher::Header(name, equals) => headers.get(name).is_some_and(|value| match equals {
            Some(expected) => value.as_bytes() == expected.as_bytes(),
            None => true,
        }),
        Matcher::Cookie(name, equals) => cookie(headers, name).is_some_and(|value| match equals {
            Some(expected) => value == expected,
            None => true,
        }),
        Matcher::UserAgent(text) => headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|agent| agent.to_ascii_lowercase().contains(text.as_str())),
        Matcher::Sub(sub) => claims.is_some_and(|c| &c.sub == sub),
        Matcher::Role(role) => claims.is_some_and(|c| c.has_role(role)),
    }
}

/// The value of the cookie `name`, if the request carries it.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// FNV-1a over the route and the key: the same on every gateway replica and every build,
/// which std's hasher does not promise.
fn stable_hash(prefix: &str, key: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in prefix.bytes().chain([0u8]).chain(key.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    // FNV's low bits mix poorly on short keys; fold the high half in.
    hash ^ (hash >> 29)
}

/// Outcomes of one version of one route, over a sliding window, for the rollback check.
#[derive(Debug, Default)]
pub(crate) struct Outcomes {
    samples: Mutex<VecDeque<(Instant, Duration, bool)>>,
}

/// The most samples an [`Outcomes`] keeps: memory stays bounded whatever the rate.
const MAX_SAMPLES: usize = 8_192;

/// A version's figures over a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Figures {
    /// Requests answered in the window.
    pub requests: u64,
    /// Of which failed (5xx or no answer).
    pub errors: u64,
    /// The 99th percentile latency, in milliseconds.
    pub p99_ms: f64,
}

impl Outcomes {
    pub(crate) fn record(&self, latency: Duration, failed: bool) {
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        if samples.len() == MAX_SAMPLES {
            samples.pop_front();
        }
        samples.push_back((Instant::now(), latency, failed));
    }

    pub(crate) fn clear(&self) {
        self.samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    pub(crate) fn figures(&self, window: Duration) -> Figures {
        let now = Instant::now();
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        while samples
            .front()
            .is_some_and(|(at, _, _)| now.duration_since(*at) > window)
        {
            samples.pop_front();
        }
        let mut latencies: Vec<Duration> = samples.iter().map(|(_, d, _)| *d).collect();
        let errors = samples.iter().filter(|(_, _, failed)| *failed).count() as u64;
        drop(samples);
        latencies.sort_unstable();
        let p99 = if latencies.is_empty() {
            Duration::ZERO
        } else {
            let rank = (latencies.len() * 99).div_ceil(100).saturating_sub(1);
            latencies[rank.min(latencies.len() - 1)]
        };
        Figures {
            requests: latencies.len() as u64,
            errors,
            p99_ms: p99.as_secs_f64() * 1_000.0,
        }
    }
}

impl Figures {
    fn error_percent(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 * 100.0 / self.requests as f64
        }
    }
}

/// Why a canary should be rolled back, if it should.
pub(crate) fn verdict(
    rollback: &RollbackConfig,
    primary: &Figures,
    canary: &Figures,
) -> Option<String> {
    if primary.requests < rollback.min_requests || canary.requests < rollback.min_requests {
        return None;
    }
    let (p, c) = (primary.error_percent(), canary.error_percent());
    if c - p > f64::from(rollback.error_margin_percent) {
        return Some(format!(
            "error rate {c:.1}% against the primary's {p:.1}% (margin {} points)",
            rollback.error_margin_percent
        ));
    }
    if canary.p99_ms - primary.p99_ms > rollback.p99_margin_ms as f64 {
        return Some(format!(
            "p99 {:.0} ms against the primary's {:.0} ms (margin {} ms)",
            canary.p99_ms, primary.p99_ms, rollback.p99_margin_ms
        ));
    }
    None
}

/// One audited change of a route's traffic: a switch, a rollback, a configuration edit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct TrafficEvent {
    /// Seconds since the epoch.
    pub at: u64,
    /// `switch`, `rollback` or `config`.
    pub kind: String,
    /// Who: a user id, or `gateway` for an automatic rollback, or `file`.
    pub by: String,
    /// The route's prefix, if the change is about one route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// What happened, in a sentence.
    pub detail: String,
    /// The configuration version the change produced.
    pub version: u64,
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The most audit events and mirror examples kept in memory.
pub(crate) const KEPT: usize = 50;

/// One difference between a primary's and a shadow's answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct MirrorDiff {
    /// Seconds since the epoch.
    pub at: u64,
    /// The route's prefix.
    pub route: String,
    /// The shadow version.
    pub shadow: String,
    /// The request's method and path.
    pub request: String,
    /// The primary's status.
    pub primary_status: u16,
    /// The shadow's status (0: it did not answer).
    pub shadow_status: u16,
    /// Where the answers differ: `status`, a JSON pointer such as `/items/0/price`, or
    /// `body` when one of them is not JSON.
    pub at_field: String,
}

/// Mirror counts of one route.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct MirrorCounts {
    /// Requests copied to the shadow.
    pub mirrored: u64,
    /// Copies dropped because the queue was full.
    pub dropped: u64,
    /// Answers that matched.
    pub same: u64,
    /// Answers that differed.
    pub different: u64,
    /// Shadow calls that failed (no answer).
    pub failed: u64,
}

/// Where two JSON answers first differ, ignoring fields named in `ignore`, or `None` when
/// they are the same.
pub(crate) fn json_difference(
    primary: &serde_json::Value,
    shadow: &serde_json::Value,
    ignore: &[String],
) -> Option<String> {
    fn walk(
        a: &serde_json::Value,
        b: &serde_json::Value,
        ignore: &[String],
        path: &mut String,
    ) -> Option<String> {
        use serde_json::Value;
        match (a, b) {
            (Value::Object(a), Value::Object(b)) => {
                let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
                for key in keys {
                    if ignore.iter().any(|i| i == key) {
                        continue;
                    }
                    let len = path.len();
                    path.push('/');
                    path.push_str(&key.replace('~', "~0").replace('/', "~1"));
                    let found = match (a.get(key), b.get(key)) {
                        (Some(x), Some(y)) => walk(x, y, ignore, path),
                        _ => Some(path.clone()),
                    };
                    if found.is_some() {
                        return found;
                    }
                    path.truncate(len);
                }
                None
            }
            (Value::Array(a), Value::Array(b)) => {
                if a.len() != b.len() {
                    return Some(if path.is_empty() {
                        "/".to_owned()
                    } else {
                        path.clone()
                    });
                }
                for (index, (x, y)) in a.iter().zip(b).enumerate() {
                    let len = path.len();
                    path.push('/');
                    path.push_str(&index.to_string());
                    let found = walk(x, y, ignore, path);
                    if found.is_some() {
                        return found;
                    }
                    path.truncate(len);
                }
                None
            }
            _ if a == b => None,
            _ => Some(if path.is_empty() {
                "/".to_owned()
            } else {
                path.clone()
            }),
        }
    }
    walk(primary, shadow, ignore, &mut String::new())
}

/// What the gateway keeps about traffic across configuration versions: outcomes per
/// version for the rollback check, mirror counts and examples, the audit of changes.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    outcomes: Mutex<HashMap<(String, String), Arc<Outcomes>>>,
    pub(crate) mirror: Mutex<BTreeMap<String, MirrorCounts>>,
    pub(crate) diffs: Mutex<VecDeque<MirrorDiff>>,
    pub(crate) events: Mutex<VecDeque<TrafficEvent>>,
}

impl Ledger {
    /// The outcomes of `target` on `route`, shared by every configuration version.
    pub(crate) fn outcomes(&self, route: &str, target: &str) -> Arc<Outcomes> {
        let mut outcomes = self.outcomes.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(
            outcomes
                .entry((route.to_owned(), target.to_owned()))
                .or_default(),
        )
    }

    pub(crate) fn audit(&self, event: TrafficEvent) {
        let mut events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        if events.len() == KEPT {
            events.pop_front();
        }
        events.push_back(event);
    }

    pub(crate) fn count_mirror(&self, route: &str, count: impl FnOnce(&mut MirrorCounts)) {
        let mut mirror = self.mirror.lock().unwrap_or_else(PoisonError::into_inner);
        count(mirror.entry(route.to_owned()).or_default());
    }

    pub(crate) fn keep_diff(&self, diff: MirrorDiff) {
        let mut diffs = self.diffs.lock().unwrap_or_else(PoisonError::into_inner);
        if diffs.len() == KEPT {
            diffs.pop_front();
        }
        diffs.push_back(diff);
    }
}

/// Whether a status counts as a failure of the version that answered it.
/// Whether an answer counts against the version that gave it: a 5xx, except a 503 by which
/// the service refuses for a dependency of its own that is down (every version would answer
/// the same, so it must not roll a canary back).
pub(crate) fn failed<B>(response: &http::Response<B>) -> bool {
    response.status().is_server_error() && !tideway_resilience::refused_for_a_dependency(response)
}

#[cfg(test)]
mod unit {
    use super::*;
    use axum::http::StatusCode;

    #[test]
    fn a_refusal_for_a_dependency_is_no_failure_of_the_version() {
        let answer = |status: StatusCode, down: bool| {
            let mut response = http::Response::builder().status(status);
            if down {
                response = response.header(tideway_resilience::DEPENDENCY_DOWN, "inventory");
            }
            response.body(()).expect("a response")
        };
        assert!(failed(&answer(StatusCode::SERVICE_UNAVAILABLE, false)));
        assert!(failed(&answer(StatusCode::INTERNAL_SERVER_ERROR, true)));
        assert!(!failed(&answer(StatusCode::SERVICE_UNAVAILABLE, true)));
        assert!(!failed(&answer(StatusCode::NOT_FOUND, false)));
    }

    #[test]
    fn differences_ignore_volatile_fields_at_any_depth() {
        let a = serde_json::json!({"id": 1, "at": 5, "items": [{"price": 3, "at": 1}]});
        let b = serde_json::json!({"id": 1, "at": 6, "items": [{"price": 3, "at": 2}]});
        assert_eq!(json_difference(&a, &b, &["at".to_owned()]), None);
        assert_eq!(json_difference(&a, &b, &[]), Some("/at".to_owned()));
        let c = serde_json::json!({"id": 1, "at": 5, "items": [{"price": 4, "at": 1}]});
        assert_eq!(
            json_difference(&a, &c, &["at".to_owned()]),
            Some("/items/0/price".to_owned())
        );
    }

    #[test]
    fn a_canary_worse_by_more_than_the_margin_is_judged() {
        let rollback = RollbackConfig {
            error_margin_percent: 5,
            p99_margin_ms: 100,
            window_secs: 10,
            min_requests: 10,
        };
        let primary = Figures {
            requests: 100,
            errors: 1,
            p99_ms: 20.0,
        };
        let fine = Figures {
            requests: 20,
            errors: 1,
            p99_ms: 90.0,
        };
        let erring = Figures {
            requests: 20,
            errors: 5,
            p99_ms: 20.0,
        };
        let slow = Figures {
            requests: 20,
            errors: 0,
            p99_ms: 200.0,
        };
        let few = Figures {
            requests: 5,
            errors: 5,
            p99_ms: 20.0,
        };
        assert!(verdict(&rollback, &primary, &fine).is_none());
        assert!(verdict(&rollback, &primary, &erring).is_some());
        assert!(verdict(&rollback, &primary, &slow).is_some());
        assert!(verdict(&rollback, &primary, &few).is_none());
    }
}
