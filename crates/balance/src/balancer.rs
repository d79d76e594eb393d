//! One service's balancer: its discovered replicas (each an [`Endpoint`] with its own
//! connection pool, circuit breaker, latency estimate and ejection state), the watcher that
//! keeps them current, the active health checks, and the pick.

use std::{
    collections::HashMap,
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Request, Response, Uri, uri::Authority};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tideway_discovery::{DiscoveryError, Instance, Registry};
use tideway_resilience::{
    BreakerOpen, BreakerState, CircuitBreaker, CircuitBreakerLayer, ConfigError,
};
use tokio::time::Instant;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::{BoxError, Layer, ServiceExt};

use crate::{
    config::{BalanceConfig, Policy},
    load::{Outlier, PeakEwma},
};

/// The latency a failed call counts as in a replica's estimate, at least.
const FAILURE_PENALTY: Duration = Duration::from_secs(1);

/// The response body of a replica's answer.
pub type Incoming = hyper::body::Incoming;

type Pool = Client<HttpConnector, http_body_util::Full<Bytes>>;
type Classify = for<'a, 'b> fn(
    Result<&'a Response<Incoming>, &'b Box<dyn std::error::Error + Send + Sync + 'static>>,
) -> bool;
type Guarded = CircuitBreaker<Pool, Classify>;

/// A call found no replica to go to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no replica of {service} is registered")]
pub struct NoInstances {
    /// The service.
    pub service: String,
}

/// One replica as the balancer sees it, for `GET /api/v1/admin/instances` and the console.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InstanceStatus {
    /// Its id in discovery.
    pub id: String,
    /// Its base URL.
    pub address: String,
    /// The version it runs, if it said.
    pub version: Option<String>,
    /// Its zone, if it said.
    pub zone: Option<String>,
    /// Whether its last health check (`/health/ready`) passed.
    pub ready: bool,
    /// Whether it is ejected for failing calls in a row.
    pub ejected: bool,
    /// Its circuit breaker: `closed`, `open` or `half_open`.
    pub breaker: String,
    /// Calls per second over the last health-check interval.
    pub requests_per_sec: f64,
    /// The Peak-EWMA latency estimate, in milliseconds.
    pub ewma_latency_ms: f64,
    /// Calls in flight.
    pub in_flight: usize,
    /// Calls since it was discovered.
    pub requests_total: u64,
    /// Failed calls (5xx, connection failures) since it was discovered.
    pub errors_total: u64,
    /// Times it was ejected.
    pub ejections_total: u64,
}

/// Every replica of one service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ServiceStatus {
    /// The service.
    pub service: String,
    /// Its replicas, sorted by id.
    pub instances: Vec<InstanceStatus>,
}

struct Rate {
    at: Instant,
    total: u64,
    per_sec: f64,
}

struct Metrics {
    requests: metrics::Counter,
    errors: metrics::Counter,
    ejections: metrics::Counter,
    latency: metrics::Gauge,
    ready: metrics::Gauge,
}

/// One replica: its own pool and breaker, and what the balancer knows of it.
pub(crate) struct Endpoint {
    instance: Instance,
    scheme: http::uri::Scheme,
    authority: Authority,
    pool: Pool,
    guarded: Guarded,
    breaker: CircuitBreakerLayer<Classify>,
    ready: AtomicBool,
    in_flight: AtomicUsize,
    ewma: Mutex<PeakEwma>,
    outlier: Mutex<Outlier>,
    requests: AtomicU64,
    errors: AtomicU64,
    rate: Mutex<Rate>,
    metrics: Metrics,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded values stay meaningful whatever a panicking holder did.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn pool() -> Pool {
    tideway_client::pooled()
}

/// Why an instance cannot be called.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// Its address is not an `http://host:port` URL.
    #[error("instance {id} has an unusable address {address:?}")]
    Address {
        /// The instance.
        id: String,
        /// Its address.
        address: String,
    },
    /// The breaker settings were refused.
    #[error(transparent)]
    Breaker(#[from] ConfigError),
}

impl Endpoint {
    fn new(instance: Instance, config: &BalanceConfig) -> Result<Self, EndpointError> {
        let bad = || EndpointError::Address {
            id: instance.id.clone(),
            address: instance.address.clone(),
        };
        let uri: Uri = instance.address.parse().map_err(|_| bad())?;
        let (Some(scheme), Some(authority)) = (uri.scheme().cloned(), uri.authority().cloned())
        else {
            return Err(bad());
        };
        if scheme != http::uri::Scheme::HTTP {
            return Err(bad());
        }
        let label = format!("{}/{}", instance.service, instance.id);
        let classify: Classify = tideway_resilience::http_5xx_or_error::<Incoming>;
        let breaker = CircuitBreakerLayer::new(label, config.breaker.settings(), classify)?;
        let pool = pool();
        let guarded = breaker.layer(pool.clone());
        let labels = [
            ("service", instance.service.clone()),
            ("instance", instance.id.clone()),
        ];
        let metrics = Metrics {
            requests: metrics::counter!("tideway_upstream_requests_total", &labels),
            errors: metrics::counter!("tideway_upstream_errors_total", &labels),
            ejections: metrics::counter!("tideway_upstream_ejections_total", &labels),
            latency: metrics::gauge!("tideway_upstream_ewma_latency_seconds", &labels),
            ready: metrics::gauge!("tideway_upstream_ready", &labels),
        };
        metrics.ready.set(1.0);
        let now = Instant::now();
        Ok(Self {
            instance,
            scheme,
            authority,
            pool,
            guarded,
            breaker,
            // It registered once ready; health checks keep this true from now on.
            ready: AtomicBool::new(true),
            in_flight: AtomicUsize::new(0),
            ewma: Mutex::new(PeakEwma::new(
                Duration::from_millis(config.ewma_decay_ms),
                now,
            )),
            outlier: Mutex::new(Outlier::default()),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            rate: Mutex::new(Rate {
                at: now,
                total: 0,
                per_sec: 0.0,
            }),
            metrics,
        })
    }

    fn uri(&self, path_and_query: Option<&http::uri::PathAndQuery>) -> Result<Uri, BoxError> {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(
            path_and_query
                .cloned()
                .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
        );
        Ok(Uri::from_parts(parts)?)
    }

    /// The call through this replica's breaker and pool. Boxed here, outside any async
    /// block: the breaker's classifier is a higher-ranked `fn`, which the compiler cannot
    /// prove `Send` for once it sits inside an async block's state.
    fn send(
        &self,
        request: Request<http_body_util::Full<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Incoming>, BoxError>> + Send + 'static>> {
        Box::pin(self.guarded.clone().oneshot(request))
    }

    fn eligible(&self, now: Instant) -> bool {
        self.ready.load(Ordering::Relaxed)
            && !lock(&self.outlier).is_ejected(now)
            && self.breaker.state() != BreakerState::Open
    }

    fn cost(&self, now: Instant) -> f64 {
        lock(&self.ewma).cost(self.in_flight.load(Ordering::Relaxed), now)
    }

    async fn health_check(&self, timeout: Duration) -> bool {
        let Ok(uri) = self.uri(Some(&http::uri::PathAndQuery::from_static("/health/ready"))) else {
            return false;
        };
        let Ok(request) = Request::get(uri).body(http_body_util::Full::new(Bytes::new())) else {
            return false;
        };
        let ready = matches!(
            tokio::time::timeout(timeout, self.pool.request(request)).await,
            Ok(Ok(response)) if response.status().is_success()
        );
        let was = self.ready.swap(ready, Ordering::Relaxed);
        if was != ready {
            tracing::info!(
                service = %self.instance.service,
                instance = %self.instance.id,
                ready,
                "A replica's health check changed."
            );
        }
        self.metrics.ready.set(if ready { 1.0 } else { 0.0 });
        ready
    }

    fn update_rate(&self, now: Instant) {
        let total = self.requests.load(Ordering::Relaxed);
        let mut rate = lock(&self.rate);
        let elapsed = now.saturating_duration_since(rate.at).as_secs_f64();
        if elapsed > 0.0 {
            rate.per_sec = total.saturating_sub(rate.total) as f64 / elapsed;
            rate.at = now;
            rate.total = total;
        }
    }

    fn status(&self, now: Instant) -> InstanceStatus {
        let breaker = match self.breaker.state() {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        };
        let outlier = lock(&self.outlier).clone();
        InstanceStatus {
            id: self.instance.id.clone(),
            address: self.instance.address.clone(),
            version: self.instance.version.clone(),
            zone: self.instance.zone.clone(),
            ready: self.ready.load(Ordering::Relaxed),
            ejected: outlier.is_ejected(now),
            breaker: breaker.to_owned(),
            requests_per_sec: lock(&self.rate).per_sec,
            ewma_latency_ms: lock(&self.ewma).estimate_ns(now) / 1e6,
            in_flight: self.in_flight.load(Ordering::Relaxed),
            requests_total: self.requests.load(Ordering::Relaxed),
            errors_total: self.errors.load(Ordering::Relaxed),
            ejections_total: u64::from(outlier.ejections()),
        }
    }
}

/// Counts a call in flight on an endpoint for as long as it lives.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Inner {
    service: String,
    /// Only replicas registered with this version label, when set.
    version: Option<String>,
    config: BalanceConfig,
    endpoints: ArcSwap<Vec<Arc<Endpoint>>>,
    next: AtomicUsize,
    /// Held while deciding an ejection, so two failing replicas cannot both take the last
    /// ejection slot.
    ejecting: Mutex<()>,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

/// The balancer of one service: cheap to clone, shared by every transport to it.
#[derive(Clone)]
pub struct Balancer {
    inner: Arc<Inner>,
}

impl fmt::Debug for Balancer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balancer")
            .field("service", &self.inner.service)
            .field("instances", &self.inner.endpoints.load().len())
            .finish()
    }
}

impl Balancer {
    /// A balancer over a fixed list of instances (no watcher): for tests and benchmarks.
    pub fn fixed(service: &str, instances: Vec<Instance>, config: BalanceConfig) -> Self {
        let balancer = Self::empty(service, config);
        balancer.apply(instances);
        balancer.start_health_checks();
        balancer
    }

    /// Follows `service`'s instances in `registry`, and checks their health every
    /// `balance.health_interval_ms`. The tasks stop on [`shutdown`](Self::shutdown).
    pub async fn watch(
        service: &str,
        registry: Arc<dyn Registry>,
        config: BalanceConfig,
    ) -> Result<Self, DiscoveryError> {
        Self::watch_version(service, None, registry, config).await
    }

    /// Like [`watch`](Self::watch), over the replicas of `service` registered with the
    /// version label `version` only (when given): one version of a canary or a blue/green
    /// pair.
    pub async fn watch_version(
        service: &str,
        version: Option<&str>,
        registry: Arc<dyn Registry>,
        config: BalanceConfig,
    ) -> Result<Self, DiscoveryError> {
        let mut watched = registry.watch(service).await?;
        let mut balancer = Self::empty(service, config);
        if let Some(inner) = Arc::get_mut(&mut balancer.inner) {
            inner.version = version.map(str::to_owned);
        }
        balancer.apply(watched.borrow_and_update().clone());
        let this = balancer.clone();
        balancer.inner.tasks.spawn(async move {
            loop {
                tokio::select! {
                    () = this.inner.cancel.cancelled() => break,
                    changed = watched.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        let instances = watched.borrow_and_update().clone();
                        this.apply(instances);
                    }
                }
            }
        });
        balancer.start_health_checks();
        Ok(balancer)
    }

    fn empty(service: &str, config: BalanceConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                service: service.to_owned(),
                version: None,
                config,
                endpoints: ArcSwap::from_pointee(Vec::new()),
                next: AtomicUsize::new(0),
                ejecting: Mutex::new(()),
                cancel: CancellationToken::new(),
                tasks: TaskTracker::new(),
            }),
        }
    }

    /// The service balanced over.
    pub fn service(&self) -> &str {
        &self.inner.service
    }

    /// Replaces the replicas with `instances`, keeping the state (pool, breaker, estimate)
    /// of those already known at the same address.
    fn apply(&self, instances: Vec<Instance>) {
        let current = self.inner.endpoints.load();
        let mut known: HashMap<(String, String), Arc<Endpoint>> = current
            .iter()
            .map(|e| {
                (
                    (e.instance.id.clone(), e.instance.address.clone()),
                    Arc::clone(e),
                )
            })
            .collect();
        let mut next = Vec::with_capacity(instances.len());
        for instance in instances {
            if instance.service != self.inner.service {
                continue;
            }
            if let Some(version) = &self.inner.version
                && instance.version.as_ref() != Some(version)
            {
                continue;
            }
            let key = (instance.id.clone(), instance.address.clone());
            if let Some(endpoint) = known.remove(&key) {
                next.push(endpoint);
                continue;
            }
            match Endpoint::new(instance, &self.inner.config) {
                Ok(endpoint) => {
                    tracing::info!(
                        service = %self.inner.service,
                        instance = %endpoint.instance.id,
                        address = %endpoint.instance.address,
                        "A replica joined the balancer."
                    );
                    next.push(Arc::new(endpoint));
                }
                Err(err) => tracing::warn!(error = %err, "A replica cannot be balanced to."),
            }
        }
        for endpoint in known.values() {
            tracing::info!(
                service = %self.inner.service,
                instance = %endpoint.instance.id,
                "A replica left the balancer."
            );
        }
        self.inner.endpoints.store(Arc::new(next));
    }

    fn start_health_checks(&self) {
        let this = self.clone();
        let interval = self.inner.config.health_interval();
        let timeout = self.inner.config.health_timeout();
        self.inner.tasks.spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = this.inner.cancel.cancelled() => break,
                    _ = ticks.tick() => {}
                }
                let endpoints = this.inner.endpoints.load_full();
                let mut checks = tokio::task::JoinSet::new();
                for endpoint in endpoints.iter() {
                    let endpoint = Arc::clone(endpoint);
                    checks.spawn(async move { endpoint.health_check(timeout).await });
                }
                while checks.join_next().await.is_some() {}
                let now = Instant::now();
                for endpoint in endpoints.iter() {
                    endpoint.update_rate(now);
                }
            }
        });
    }

    /// Picks the replica for the next call: among those ready, not ejected and whose
    /// breaker is not open — or, when none is, among all, so that a call still has a
    /// chance — by the configured policy.
    pub(crate) fn pick(&self) -> Option<Arc<Endpoint>> {
        let endpoints = self.inner.endpoints.load();
        let now = Instant::now();
        let mut eligible: Vec<&Arc<Endpoint>> =
            endpoints.iter().filter(|e| e.eligible(now)).collect();
        if eligible.is_empty() {
            eligible = endpoints.iter().collect();
        }
        let chosen = match eligible.len() {
            0 => return None,
            1 => eligible[0],
            n => match self.inner.config.policy {
                Policy::RoundRobin => eligible[self.inner.next.fetch_add(1, Ordering::Relaxed) % n],
                Policy::P2c => {
                    let mut rng = rand::thread_rng();
                    let a = rng.gen_range(0..n);
                    let b = (a + rng.gen_range(1..n)) % n;
                    let (a, b) = (eligible[a], eligible[b]);
                    if b.cost(now) < a.cost(now) { b } else { a }
                }
            },
        };
        Some(Arc::clone(chosen))
    }

    /// Sends `request` (path and query only) to `endpoint`, recording its latency and
    /// outcome.
    pub(crate) async fn call(
        &self,
        endpoint: &Endpoint,
        mut request: Request<http_body_util::Full<Bytes>>,
    ) -> Result<Response<Incoming>, BoxError> {
        *request.uri_mut() = endpoint.uri(request.uri().path_and_query())?;
        let started = Instant::now();
        let result = {
            let _in_flight = InFlight::enter(&endpoint.in_flight);
            endpoint.send(request).await
        };
        if matches!(&result, Err(err) if err.is::<BreakerOpen>()) {
            // Refused before it left: says nothing about the replica's latency or health.
            return result;
        }
        let now = Instant::now();
        // A 503 refusal for a dependency of the service's own is no failure of this replica:
        // every replica would answer it.
        let failed = tideway_resilience::http_5xx_or_error(result.as_ref());
        let mut rtt = now.saturating_duration_since(started);
        if failed {
            // A failure is often fast (a refused connection, an instant 503): counted at its
            // own speed it would make the failing replica the cheapest one to pick.
            rtt = rtt.max(FAILURE_PENALTY);
        }
        let estimate = {
            let mut ewma = lock(&endpoint.ewma);
            ewma.observe(rtt, now);
            ewma.estimate_ns(now)
        };
        endpoint.metrics.latency.set(estimate / 1e9);
        endpoint.requests.fetch_add(1, Ordering::Relaxed);
        endpoint.metrics.requests.increment(1);
        if failed {
            endpoint.errors.fetch_add(1, Ordering::Relaxed);
            endpoint.metrics.errors.increment(1);
            self.failed(endpoint, now);
        } else {
            lock(&endpoint.outlier).succeeded();
        }
        result
    }

    fn failed(&self, endpoint: &Endpoint, now: Instant) {
        let _deciding = lock(&self.inner.ejecting);
        let endpoints = self.inner.endpoints.load();
        let ejected = endpoints
            .iter()
            .filter(|e| lock(&e.outlier).is_ejected(now))
            .count();
        let limit =
            (endpoints.len() as f64 * self.inner.config.ejection.max_share).floor() as usize;
        // At least one replica stays in rotation, whatever the share says.
        let limit = limit.min(endpoints.len().saturating_sub(1));
        let ejection =
            lock(&endpoint.outlier).failed(&self.inner.config.ejection, now, ejected < limit);
        if let Some(period) = ejection {
            endpoint.metrics.ejections.increment(1);
            tracing::warn!(
                service = %self.inner.service,
                instance = %endpoint.instance.id,
                period_ms = u64::try_from(period.as_millis()).unwrap_or(u64::MAX),
                "A replica was ejected after failing calls in a row."
            );
        }
    }

    /// Whether a call would find a replica to go to now: one is registered, passed its last
    /// health check, is not ejected and its breaker is not open. Reads what the health checks
    /// and calls recorded, no I/O: one replica restarting leaves the service available while
    /// another is ready.
    pub fn available(&self) -> bool {
        let now = Instant::now();
        self.inner.endpoints.load().iter().any(|e| e.eligible(now))
    }

    /// Every replica and what the balancer knows of it, sorted by id.
    pub fn status(&self) -> ServiceStatus {
        let now = Instant::now();
        let mut instances: Vec<InstanceStatus> = self
            .inner
            .endpoints
            .load()
            .iter()
            .map(|e| e.status(now))
            .collect();
        instances.sort_by(|a, b| a.id.cmp(&b.id));
        ServiceStatus {
            service: match &self.inner.version {
                Some(version) => format!("{}@{version}", self.inner.service),
                None => self.inner.service.clone(),
            },
            instances,
        }
    }

    /// Stops the watcher and the health checks.
    pub async fn shutdown(&self) {
        self.inner.cancel.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }
}

#[cfg(test)]
#[path = "balancer_tests.rs"]
mod tests;
