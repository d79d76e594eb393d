//! The running configuration: numbered versions swapped in atomically (`arc-swap`), the
//! admin endpoints that read and change it, the mirror's shadow calls and the canary
//! rollback check.
//!
//! A new version is built in full — validated, every upstream resolved, rate limits
//! compiled — before it replaces the running one, so a bad one changes nothing. A request
//! loads the version current when it arrives and keeps it to the end.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, PoisonError, Weak},
    time::Duration,
};

use arc_swap::ArcSwap;
use axum::{
    Router,
    body::{Body, Bytes, HttpBody},
    extract::{Request, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use tideway_runtime::{
    Problem,
    auth::{Claims, JwtVerifier},
    client::Transport,
    config::ConfigError,
};
use tokio::sync::{Semaphore, mpsc};

use crate::{
    Access, CONFIG_PATH, GatewayConfig, GatewayError, MIRROR_BODY_LIMIT, Route, RouteMirror,
    SWITCH_PATH, Shared, TRAFFIC_PATH, authorize,
    traffic::{self, Figures, Ledger, MirrorCounts, MirrorDiff, TrafficEvent},
};

/// How often canaries are compared with their primaries.
const ROLLBACK_CHECK: Duration = Duration::from_millis(500);

/// Shadow calls in flight at once; with the queue, what a mirror may hold.
const SHADOWS_IN_FLIGHT: usize = 8;

struct Current {
    shared: Arc<Shared>,
    config: GatewayConfig,
    version: u64,
}

/// A request copied to a shadow, with the primary's answer to compare with.
struct ShadowJob {
    route: String,
    shadow: String,
    transport: Transport,
    timeout: Duration,
    request: Request,
    line: String,
    primary_status: StatusCode,
    primary_body: Bytes,
    ignore: Arc<[String]>,
}

pub(crate) struct Live {
    current: ArcSwap<Current>,
    /// Held while a version is built and swapped in, so two changes cannot both build
    /// on the same predecessor and one be lost.
    applying: Mutex<()>,
    upstreams: HashMap<String, Transport>,
    verifier: Arc<JwtVerifier>,
    pub(crate) ledger: Ledger,
    shadows: Option<mpsc::Sender<ShadowJob>>,
    /// The latest change, for whoever shares changes with other replicas.
    changes: tokio::sync::watch::Sender<Option<TrafficEvent>>,
    /// Where admin actions are recorded, once set.
    audit: std::sync::OnceLock<Arc<crate::audit::Audit>>,
}

impl Live {
    /// Builds version 1 of `config` and, inside a runtime, starts the shadow calls and
    /// the rollback check; both hold the gateway weakly and end with it.
    pub(crate) fn start(
        config: &GatewayConfig,
        upstreams: HashMap<String, Transport>,
        verifier: Arc<JwtVerifier>,
    ) -> Result<Arc<Self>, GatewayError> {
        let ledger = Ledger::default();
        let shared = Shared::build(config, &upstreams, &verifier, &ledger)?;
        let runtime = tokio::runtime::Handle::try_current().ok();
        let (shadows, jobs) = match runtime {
            Some(_) => {
                let (tx, rx) = mpsc::channel(config.mirror_queue);
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let live = Arc::new(Self {
            current: ArcSwap::from_pointee(Current {
                shared: Arc::new(shared),
                config: config.clone(),
                version: 1,
            }),
            applying: Mutex::new(()),
            upstreams,
            verifier,
            ledger,
            shadows,
            changes: tokio::sync::watch::Sender::new(None),
            audit: std::sync::OnceLock::new(),
        });
        if let (Some(runtime), Some(jobs)) = (runtime, jobs) {
            runtime.spawn(run_shadows(Arc::downgrade(&live), jobs));
            runtime.spawn(check_canaries(Arc::downgrade(&live)));
        }
        Ok(live)
    }

    /// Records admin actions in `store` from now on (inside a runtime).
    pub(crate) fn set_audit(&self, store: tideway_audit::AuditStore) {
        let recorder = tideway_audit::Recorder::start(store.clone());
        if self
            .audit
            .set(Arc::new(crate::audit::Audit { store, recorder }))
            .is_err()
        {
            tracing::warn!("the gateway's audit trail was set already");
        }
    }

    pub(crate) fn audit(&self) -> Option<Arc<crate::audit::Audit>> {
        self.audit.get().cloned()
    }

    pub(crate) fn shared(&self) -> Arc<Shared> {
        Arc::clone(&self.current.load().shared)
    }

    pub(crate) fn changes(&self) -> tokio::sync::watch::Receiver<Option<TrafficEvent>> {
        self.changes.subscribe()
    }

    pub(crate) fn version(&self) -> u64 {
        self.current.load().version
    }

    pub(crate) fn current_config(&self) -> (u64, GatewayConfig) {
        let current = self.current.load();
        (current.version, current.config.clone())
    }

    pub(crate) fn events(&self) -> Vec<TrafficEvent> {
        self.ledger
            .events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    /// Whether shadow calls can be made (the gateway runs inside a runtime).
    pub(crate) fn mirrors(&self) -> bool {
        self.shadows.is_some()
    }

    /// Builds `config` in full and swaps it in as the next version, auditing the change.
    pub(crate) fn apply(
        &self,
        config: &GatewayConfig,
        by: &str,
        kind: &str,
        route: Option<&str>,
        detail: &str,
    ) -> Result<u64, GatewayError> {
        let _applying = self.applying.lock().unwrap_or_else(PoisonError::into_inner);
        self.apply_locked(config, by, kind, route, detail)
    }

    fn apply_locked(
        &self,
        config: &GatewayConfig,
        by: &str,
        kind: &str,
        route: Option<&str>,
        detail: &str,
    ) -> Result<u64, GatewayError> {
        let shared = Shared::build(config, &self.upstreams, &self.verifier, &self.ledger)?;
        let previous = self.current.load_full();
        let version = previous.version + 1;
        self.current.store(Arc::new(Current {
            shared: Arc::new(shared),
            config: config.clone(),
            version,
        }));
        tracing::info!(
            version,
            by,
            kind,
            route,
            detail,
            "gateway configuration applied"
        );
        let event = TrafficEvent {
            at: traffic::now_secs(),
            kind: kind.to_owned(),
            by: by.to_owned(),
            route: route.map(str::to_owned),
            detail: detail.to_owned(),
            version,
        };
        self.ledger.audit(event.clone());
        // A change another replica made is recorded where it was made.
        if let Some(audit) = self.audit.get()
            && kind != "shared"
        {
            audit.recorder.record(tideway_audit::Entry {
                actor: by.to_owned(),
                action: format!("gateway.{kind}"),
                target: route.unwrap_or(CONFIG_PATH).to_owned(),
                before: serde_json::to_value(&previous.config).ok(),
                after: serde_json::to_value(config).ok(),
                trace_id: tideway_audit::current_trace_id(),
            });
        }
        self.changes.send_replace(Some(event));
        Ok(version)
    }

    /// Sends every request of `prefix` to `to` (one of its versions), atomically.
    fn switch(&self, prefix: &str, to: &str, by: &str) -> Result<u64, Problem> {
        let _applying = self.applying.lock().unwrap_or_else(PoisonError::into_inner);
        let (_, mut config) = self.current_config();
        let Some(route) = config.routes.iter_mut().find(|r| r.prefix == prefix) else {
            return Err(Problem::invalid_field("route", "the prefix of a route"));
        };
        if !route.versions.contains_key(to) {
            return Err(Problem::invalid_field(
                "to",
                format!(
                    "one of the route's versions ({})",
                    route
                        .versions
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        let total: u32 = route.versions.values().sum::<u32>().max(1);
        let before = route.versions.clone();
        for (name, weight) in &mut route.versions {
            *weight = if name == to { total } else { 0 };
        }
        let detail = format!("all traffic to {to} (weights were {before:?})");
        self.apply_locked(&config, by, "switch", Some(prefix), &detail)
            .map_err(|err| problem_of(&config, &err))
    }

    /// Compares every canary with its primary and sets one doing worse to 0%.
    pub(crate) fn check_rollbacks(&self) {
        let (_, config) = self.current_config();
        for route in &config.routes {
            let Some(rollback) = &route.rollback else {
                continue;
            };
            let Some((primary, _)) = route
                .versions
                .iter()
                .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
            else {
                continue;
            };
            let window = Duration::from_secs(rollback.window_secs);
            let primary_figures = self.ledger.outcomes(&route.prefix, primary).figures(window);
            for (canary, weight) in &route.versions {
                if canary == primary || *weight == 0 {
                    continue;
                }
                let outcomes = self.ledger.outcomes(&route.prefix, canary);
                let figures = outcomes.figures(window);
                if let Some(reason) = traffic::verdict(rollback, &primary_figures, &figures) {
                    self.roll_back(&route.prefix, primary, canary, &reason);
                    outcomes.clear();
                    return;
                }
            }
        }
    }

    fn roll_back(&self, prefix: &str, primary: &str, canary: &str, reason: &str) {
        let _applying = self.applying.lock().unwrap_or_else(PoisonError::into_inner);
        let (_, mut config) = self.current_config();
        let Some(route) = config.routes.iter_mut().find(|r| r.prefix == prefix) else {
            return;
        };
        let moved = route.versions.get(canary).copied().unwrap_or(0);
        if moved == 0 {
            return;
        }
        route.versions.insert(canary.to_owned(), 0);
        if let Some(weight) = route.versions.get_mut(primary) {
            *weight += moved;
        }
        let detail = format!("{canary} set to 0% ({reason}); its share went to {primary}");
        match self.apply_locked(&config, "gateway", "rollback", Some(prefix), &detail) {
            Ok(version) => {
                metrics::counter!("tideway_gateway_rollbacks_total", "route" => prefix.to_owned())
                    .increment(1);
                tracing::warn!(
                    route = prefix,
                    canary,
                    primary,
                    reason,
                    version,
                    "canary rolled back"
                );
            }
            Err(err) => {
                tracing::error!(route = prefix, error = %err, "cannot roll the canary back")
            }
        }
    }

    /// Copies the request to the route's shadow once the primary answered: the answer is
    /// buffered (to compare) and handed back at once; the copy waits in a bounded queue
    /// and is dropped when the queue is full.
    pub(crate) async fn mirror(
        &self,
        route: &Route,
        mirror: &RouteMirror,
        copy: Request,
        response: Response,
    ) -> Response {
        let Some(shadows) = &self.shadows else {
            return response;
        };
        let fits = response
            .body()
            .size_hint()
            .upper()
            .is_some_and(|upper| upper <= MIRROR_BODY_LIMIT as u64);
        if !fits {
            self.dropped(&route.prefix);
            return response;
        }
        let (parts, body) = response.into_parts();
        let bytes = match axum::body::to_bytes(body, MIRROR_BODY_LIMIT).await {
            Ok(bytes) => bytes,
            Err(err) => {
                tracing::warn!(route = %route.prefix, error = %err, "cannot read the primary's answer");
                return Problem::new(StatusCode::BAD_GATEWAY)
                    .with_type("/problems/upstream-unavailable")
                    .with_detail(format!(
                        "{} gave an invalid answer",
                        route.upstream.service()
                    ))
                    .into_response();
            }
        };
        let job = ShadowJob {
            route: route.prefix.clone(),
            shadow: mirror.to.clone(),
            transport: mirror.transport.clone(),
            timeout: route.timeout,
            line: format!("{} {}", copy.method(), copy.uri().path()),
            request: copy,
            primary_status: parts.status,
            primary_body: bytes.clone(),
            ignore: Arc::clone(&mirror.ignore),
        };
        match shadows.try_send(job) {
            Ok(()) => {
                self.ledger.count_mirror(&route.prefix, |c| c.mirrored += 1);
                metrics::counter!("tideway_mirror_requests_total", "route" => route.prefix.clone())
                    .increment(1);
            }
            Err(_) => self.dropped(&route.prefix),
        }
        Response::from_parts(parts, Body::from(bytes))
    }

    fn dropped(&self, prefix: &str) {
        self.ledger.count_mirror(prefix, |c| c.dropped += 1);
        metrics::counter!("tideway_mirror_dropped_total", "route" => prefix.to_owned())
            .increment(1);
    }

    async fn shadow(&self, job: ShadowJob) {
        let answer = job
            .transport
            .send_with_timeout(job.request, job.timeout)
            .await;
        let (status, body) = match answer {
            Ok(response) => {
                let status = response.status();
                match axum::body::to_bytes(response.into_body(), MIRROR_BODY_LIMIT).await {
                    Ok(body) => (Some(status), body),
                    Err(_) => (Some(status), Bytes::new()),
                }
            }
            Err(err) => {
                tracing::debug!(route = %job.route, shadow = %job.shadow, error = %err, "shadow call failed");
                self.ledger.count_mirror(&job.route, |c| c.failed += 1);
                metrics::counter!("tideway_mirror_failures_total", "route" => job.route.clone())
                    .increment(1);
                (None, Bytes::new())
            }
        };
        let difference = if status != Some(job.primary_status) {
            Some("status".to_owned())
        } else {
            match (
                serde_json::from_slice::<serde_json::Value>(&job.primary_body),
                serde_json::from_slice::<serde_json::Value>(&body),
            ) {
                (Ok(a), Ok(b)) => traffic::json_difference(&a, &b, &job.ignore),
                _ if job.primary_body == body => None,
                _ => Some("body".to_owned()),
            }
        };
        match difference {
            None => self.ledger.count_mirror(&job.route, |c| c.same += 1),
            Some(at_field) => {
                self.ledger.count_mirror(&job.route, |c| c.different += 1);
                metrics::counter!("tideway_mirror_differences_total", "route" => job.route.clone())
                    .increment(1);
                self.ledger.keep_diff(MirrorDiff {
                    at: traffic::now_secs(),
                    route: job.route,
                    shadow: job.shadow,
                    request: job.line,
                    primary_status: job.primary_status.as_u16(),
                    shadow_status: status.map_or(0, |s| s.as_u16()),
                    at_field,
                });
            }
        }
    }

    fn report(&self) -> TrafficReport {
        let (version, config) = self.current_config();
        let routes = config
            .routes
            .iter()
            .filter(|route| !route.versions.is_empty() || route.mirror.is_some())
            .map(|route| {
                let window = Duration::from_secs(
                    route
                        .rollback
                        .as_ref()
                        .map_or(60, |rollback| rollback.window_secs),
                );
                RouteTraffic {
                    prefix: route.prefix.clone(),
                    upstream: route.upstream.clone(),
                    versions: route.versions.clone(),
                    figures: route
                        .versions
                        .keys()
                        .map(|name| {
                            let figures = self.ledger.outcomes(&route.prefix, name).figures(window);
                            (name.clone(), figures)
                        })
                        .collect(),
                    mirror: route.mirror.as_ref().map(|m| m.to.clone()),
                    rollback: route.rollback.is_some(),
                }
            })
            .collect();
        let ledger = &self.ledger;
        TrafficReport {
            version,
            routes,
            mirror: ledger
                .mirror
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            differences: ledger
                .diffs
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .cloned()
                .collect(),
            events: self.events(),
        }
    }
}

/// Takes mirrored requests off the queue, at most [`SHADOWS_IN_FLIGHT`] at once.
async fn run_shadows(live: Weak<Live>, mut jobs: mpsc::Receiver<ShadowJob>) {
    let slots = Arc::new(Semaphore::new(SHADOWS_IN_FLIGHT));
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        // Ends when the gateway (the queue's sender) is gone.
        let Some(job) = jobs.recv().await else {
            return;
        };
        let Some(live) = live.upgrade() else {
            return;
        };
        tokio::spawn(async move {
            live.shadow(job).await;
            drop(slot);
        });
    }
}

async fn check_canaries(live: Weak<Live>) {
    let mut tick = tokio::time::interval(ROLLBACK_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(live) = live.upgrade() else {
            return;
        };
        live.check_rollbacks();
    }
}

/// The answer of `GET /api/v1/admin/traffic`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TrafficReport {
    /// The running configuration's version.
    pub version: u64,
    /// Routes with versions or a mirror.
    pub routes: Vec<RouteTraffic>,
    /// Mirror counts by route.
    pub mirror: BTreeMap<String, MirrorCounts>,
    /// The latest differences between primary and shadow answers.
    pub differences: Vec<MirrorDiff>,
    /// The latest switches, rollbacks and configuration changes.
    pub events: Vec<TrafficEvent>,
}

/// One route in a [`TrafficReport`].
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RouteTraffic {
    /// The route's prefix.
    pub prefix: String,
    /// Its upstream.
    pub upstream: String,
    /// Its versions and their weights.
    pub versions: BTreeMap<String, u32>,
    /// Each version's figures over the rollback window (or the last minute).
    pub figures: BTreeMap<String, Figures>,
    /// Its shadow, if mirrored.
    #[serde(default)]
    pub mirror: Option<String>,
    /// Whether a canary is rolled back automatically.
    #[serde(default)]
    pub rollback: bool,
}

/// The answer of `GET /api/v1/admin/config` and `PUT`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConfigVersion {
    /// The version number, 1 at start, one more per change.
    pub version: u64,
    /// The gateway configuration.
    pub config: GatewayConfig,
}

/// The body of `POST /api/v1/admin/traffic/switch`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Switch {
    /// The route's prefix.
    pub route: String,
    /// The version that takes all of its traffic.
    pub to: String,
}

/// Checks the admin role; answers the admin's claims.
async fn admin(live: &Live, headers: &HeaderMap) -> Result<Claims, Response> {
    let shared = live.shared();
    match authorize(&shared, &Access::Role("admin".to_owned()), headers, false).await {
        Ok(Some(claims)) => Ok(claims),
        Ok(None) => Err(Problem::internal().into_response()),
        Err(err) => Err(err.into_response()),
    }
}

/// The problem document for a refused configuration, naming the key.
fn problem_of(config: &GatewayConfig, err: &GatewayError) -> Problem {
    match err {
        GatewayError::Invalid(ConfigError::Invalid { key, expected }) => {
            Problem::invalid_field(key.clone(), expected.clone())
        }
        GatewayError::UnknownUpstream { prefix, upstream } => {
            let index = config
                .routes
                .iter()
                .position(|r| &r.prefix == prefix)
                .unwrap_or(0);
            Problem::invalid_field(
                format!("gateway.routes[{index}]"),
                format!("an upstream the gateway knows, found `{upstream}`"),
            )
        }
        GatewayError::Invalid(other) => Problem::bad_request(other.to_string()),
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &Bytes, root: &str) -> Result<T, Problem> {
    let mut json = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut json).map_err(|err| {
        let path = err.path().to_string();
        let field = if path == "." {
            "body".to_owned()
        } else {
            format!("{root}{path}")
        };
        Problem::invalid_field(field, err.inner().to_string())
    })
}

/// `GET`/`PUT /api/v1/admin/config`, `GET /api/v1/admin/traffic`, `POST /api/v1/admin/traffic/switch`.
pub(crate) fn admin_routes(live: &Arc<Live>) -> Router {
    Router::new()
        .route(CONFIG_PATH, get(get_config).put(put_config))
        .route(TRAFFIC_PATH, get(traffic_report))
        .route(SWITCH_PATH, post(switch))
        .with_state(Arc::clone(live))
}

/// The running configuration.
#[utoipa::path(
    get,
    path = "/api/v1/admin/config",
    tag = "gateway",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The running configuration and its version", body = ConfigVersion),
        (status = 401, response = Problem),
        (status = 403, response = Problem),
        (status = 503, response = Problem),
    )
)]
pub(crate) async fn get_config(State(live): State<Arc<Live>>, headers: HeaderMap) -> Response {
    if let Err(refused) = admin(&live, &headers).await {
        return refused;
    }
    let (version, config) = live.current_config();
    axum::Json(ConfigVersion { version, config }).into_response()
}

/// Replaces the whole configuration: validated in full, swapped in at once as the next
/// version; a configuration that does not read or validate is a problem naming the key
/// (`gateway.routes[2].prefix`), and the running one stays.
#[utoipa::path(
    put,
    path = "/api/v1/admin/config",
    tag = "gateway",
    request_body = GatewayConfig,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The new configuration and its version", body = ConfigVersion),
        (status = 400, response = Problem),
        (status = 401, response = Problem),
        (status = 403, response = Problem),
        (status = 413, response = Problem),
        (status = 422, response = Problem),
        (status = 503, response = Problem),
    )
)]
pub(crate) async fn put_config(
    State(live): State<Arc<Live>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let claims = match admin(&live, &headers).await {
        Ok(claims) => claims,
        Err(refused) => return refused,
    };
    let config: GatewayConfig = match parse(&body, "gateway.") {
        Ok(config) => config,
        Err(refused) => return refused.into_response(),
    };
    match live.apply(
        &config,
        &claims.sub,
        "config",
        None,
        "configuration replaced",
    ) {
        Ok(version) => axum::Json(ConfigVersion { version, config }).into_response(),
        Err(err) => problem_of(&config, &err).into_response(),
    }
}

/// The traffic report: routes with versions or a mirror, their figures, the mirror's
/// differences and the latest changes.
#[utoipa::path(
    get,
    path = "/api/v1/admin/traffic",
    tag = "gateway",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The traffic report", body = TrafficReport),
        (status = 401, response = Problem),
        (status = 403, response = Problem),
        (status = 503, response = Problem),
    )
)]
pub(crate) async fn traffic_report(State(live): State<Arc<Live>>, headers: HeaderMap) -> Response {
    if let Err(refused) = admin(&live, &headers).await {
        return refused;
    }
    axum::Json(live.report()).into_response()
}

/// The blue/green switch: one version of a route takes all of its traffic (a new
/// configuration version).
#[utoipa::path(
    post,
    path = "/api/v1/admin/traffic/switch",
    tag = "gateway",
    request_body = Switch,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The configuration after the switch and its version", body = ConfigVersion),
        (status = 400, response = Problem),
        (status = 401, response = Problem),
        (status = 403, response = Problem),
        (status = 413, response = Problem),
        (status = 422, response = Problem),
        (status = 503, response = Problem),
    )
)]
pub(crate) async fn switch(
    State(live): State<Arc<Live>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let claims = match admin(&live, &headers).await {
        Ok(claims) => claims,
        Err(refused) => return refused,
    };
    let switch: Switch = match parse(&body, "") {
        Ok(switch) => switch,
        Err(refused) => return refused.into_response(),
    };
    match live.switch(&switch.route, &switch.to, &claims.sub) {
        Ok(version) => {
            let (_, config) = live.current_config();
            axum::Json(ConfigVersion { version, config }).into_response()
        }
        Err(refused) => refused.into_response(),
    }
}
