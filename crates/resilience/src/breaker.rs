//! A circuit breaker per upstream instance: when too many recent calls fail, stop calling
//! for a cool-down, then let a few probes through and close again only if they succeed.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll},
    time::Duration,
};

use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::{BoxError, Layer, Service};

use crate::ConfigError;

/// Number of buckets the rolling window is cut into; the window slides one bucket at a time.
const BUCKETS: usize = 10;

/// The call was refused without reaching the upstream because its breaker is open (or
/// half-open with all probes in flight).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker for upstream {upstream} is open")]
pub struct BreakerOpen {
    /// The upstream the breaker guards, as named when it was built.
    pub upstream: Arc<str>,
}

/// Where a breaker stands. The gauge `tideway_breaker_state` reports 0, 1 and 2 for these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls pass; outcomes are counted over the rolling window.
    Closed,
    /// Calls are refused with [`BreakerOpen`] until the cool-down has passed; the next call
    /// after it turns the breaker half-open.
    Open,
    /// Up to `half_open_probes` calls pass; all succeeding closes it, one failing reopens it.
    HalfOpen,
}

impl BreakerState {
    fn gauge_value(self) -> f64 {
        match self {
            Self::Closed => 0.0,
            Self::HalfOpen => 1.0,
            Self::Open => 2.0,
        }
    }
}

/// Parameters of a [`CircuitBreakerLayer`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerSettings {
    /// Share of failed calls in the window at which the breaker opens, in `(0, 1]`. Default 0.5.
    pub failure_rate: f64,
    /// Calls the window must hold before the rate is judged at all. Default 20.
    pub minimum_calls: u32,
    /// Length of the rolling window, at least 10 ms. Default 10 s.
    pub window: Duration,
    /// How long the breaker stays open before probing. Default 5 s.
    pub cool_down: Duration,
    /// Probe calls let through while half-open, at least 1. Default 3.
    pub half_open_probes: u32,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            failure_rate: 0.5,
            minimum_calls: 20,
            window: Duration::from_secs(10),
            cool_down: Duration::from_secs(5),
            half_open_probes: 3,
        }
    }
}

impl BreakerSettings {
    fn validate(self) -> Result<Self, ConfigError> {
        let bad = |parameter, reason| Err(ConfigError::new("circuit breaker", parameter, reason));
        if !(self.failure_rate > 0.0 && self.failure_rate <= 1.0) {
            return bad("failure_rate", "must be a share above 0 and at most 1");
        }
        if self.minimum_calls == 0 {
            return bad("minimum_calls", "must be at least 1");
        }
        if self.window < Duration::from_millis(10) {
            return bad("window", "must be at least 10 ms");
        }
        if self.cool_down.is_zero() {
            return bad("cool_down", "must be greater than zero");
        }
        if self.half_open_probes == 0 {
            return bad("half_open_probes", "must be at least 1");
        }
        Ok(self)
    }
}

/// The header of a 503 by which a service says it refuses the request because a dependency
/// of its own is down; its value names the dependency. Every replica of the service would
/// answer the same, so such an answer is no failure of the replica that sent it: breakers,
/// outlier ejection and retries leave it alone, and the outage stays with the feature that
/// needs the dependency.
pub const DEPENDENCY_DOWN: http::HeaderName =
    http::HeaderName::from_static("tideway-dependency-down");

/// Whether `response` is a 503 naming a dependency that is down ([`DEPENDENCY_DOWN`]).
pub fn refused_for_a_dependency<B>(response: &http::Response<B>) -> bool {
    response.status() == http::StatusCode::SERVICE_UNAVAILABLE
        && response.headers().contains_key(DEPENDENCY_DOWN)
}

/// Judges an outcome for an HTTP upstream: an error or a 5xx response is a failure, except
/// a 503 refusal for a dependency that is down ([`refused_for_a_dependency`]).
pub fn http_5xx_or_error<B>(result: Result<&http::Response<B>, &BoxError>) -> bool {
    match result {
        Ok(response) => response.status().is_server_error() && !refused_for_a_dependency(response),
        Err(_) => true,
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    epoch: u64,
    calls: u32,
    failures: u32,
}

#[derive(Debug)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { admitted: u32, succeeded: u32 },
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    /// Bumped on every transition, so outcomes of calls admitted before it are ignored.
    generation: u64,
    buckets: [Bucket; BUCKETS],
}

struct Shared<C> {
    upstream: Arc<str>,
    settings: BreakerSettings,
    origin: Instant,
    classify: C,
    inner: Mutex<Inner>,
    state_gauge: metrics::Gauge,
    rejected: metrics::Counter,
}

impl<C> Shared<C> {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the counters inconsistent in a way
        // that matters more than refusing all traffic would; keep going.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn epoch(&self, now: Instant) -> u64 {
        let bucket = self.settings.window.as_nanos() / BUCKETS as u128;
        (now.duration_since(self.origin).as_nanos() / bucket.max(1)) as u64
    }

    fn transition(&self, inner: &mut Inner, phase: Phase) {
        let state = match phase {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { .. } => BreakerState::Open,
            Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        };
        if matches!(phase, Phase::Closed) {
            inner.buckets = [Bucket::default(); BUCKETS];
        }
        inner.phase = phase;
        inner.generation += 1;
        self.state_gauge.set(state.gauge_value());
        tracing::info!(upstream = %self.upstream, state = ?state, "Circuit breaker changed state.");
    }

    /// Admits a call (returning the generation it belongs to) or refuses it.
    fn admit(&self) -> Option<u64> {
        let now = Instant::now();
        let mut inner = self.lock();
        if let Phase::Open { until } = inner.phase {
            if now < until {
                return None;
            }
            self.transition(
                &mut inner,
                Phase::HalfOpen {
                    admitted: 0,
                    succeeded: 0,
                },
            );
        }
        if let Phase::HalfOpen { admitted, .. } = &mut inner.phase {
            if *admitted >= self.settings.half_open_probes {
                return None;
            }
            *admitted += 1;
        }
        Some(inner.generation)
    }

    fn record(&self, generation: u64, failed: bool) {
        let now = Instant::now();
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        match &mut inner.phase {
            Phase::Closed => {
                let epoch = self.epoch(now);
                let bucket = &mut inner.buckets[(epoch % BUCKETS as u64) as usize];
                if bucket.epoch != epoch {
                    *bucket = Bucket {
                        epoch,
                        calls: 0,
                        failures: 0,
                    };
                }
                bucket.calls += 1;
                bucket.failures += u32::from(failed);
                if !failed {
                    return;
                }
                let oldest = epoch.saturating_sub(BUCKETS as u64 - 1);
                let (calls, failures) = inner
                    .buckets
                    .iter()
                    .filter(|b| b.epoch >= oldest && b.epoch <= epoch)
                    .fold((0u32, 0u32), |(c, f), b| (c + b.calls, f + b.failures));
                if calls >= self.settings.minimum_calls
                    && f64::from(failures) >= self.settings.failure_rate * f64::from(calls)
                {
                    self.transition(
                        &mut inner,
                        Phase::Open {
                            until: now + self.settings.cool_down,
                        },
                    );
                }
            }
            Phase::HalfOpen { succeeded, .. } => {
                if failed {
                    self.transition(
                        &mut inner,
                        Phase::Open {
                            until: now + self.settings.cool_down,
                        },
                    );
                } else {
                    *succeeded += 1;
                    if *succeeded >= self.settings.half_open_probes {
                        self.transition(&mut inner, Phase::Closed);
                    }
                }
            }
            Phase::Open { .. } => {}
        }
    }

    /// A half-open probe that was dropped before it finished frees its slot.
    fn release(&self, generation: u64) {
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        if let Phase::HalfOpen { admitted, .. } = &mut inner.phase {
            *admitted = admitted.saturating_sub(1);
        }
    }

    fn state(&self) -> BreakerState {
        match self.lock().phase {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { .. } => BreakerState::Open,
            Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

/// Builds [`CircuitBreaker`]s that share one breaker: build one layer per upstream instance.
///
/// `C` decides what counts as a failure: it sees the inner service's outcome and returns
/// `true` for a failure ([`http_5xx_or_error`] for HTTP upstreams).
pub struct CircuitBreakerLayer<C> {
    shared: Arc<Shared<C>>,
}

impl<C> Clone for CircuitBreakerLayer<C> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<C> fmt::Debug for CircuitBreakerLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("upstream", &self.shared.upstream)
            .field("state", &self.shared.state())
            .finish()
    }
}

impl<C> CircuitBreakerLayer<C> {
    /// A closed breaker for `upstream` (the gauge's label: name an instance, never a path).
    pub fn new(
        upstream: impl Into<Arc<str>>,
        settings: BreakerSettings,
        classify: C,
    ) -> Result<Self, ConfigError> {
        let settings = settings.validate()?;
        let upstream = upstream.into();
        let labels = [("upstream", upstream.to_string())];
        let state_gauge = metrics::gauge!("tideway_breaker_state", &labels);
        state_gauge.set(BreakerState::Closed.gauge_value());
        let rejected = metrics::counter!("tideway_breaker_rejected_total", &labels);
        let inner = Inner {
            phase: Phase::Closed,
            generation: 0,
            buckets: Default::default(),
        };
        Ok(Self {
            shared: Arc::new(Shared {
                upstream,
                settings,
                origin: Instant::now(),
                classify,
                inner: Mutex::new(inner),
                state_gauge,
                rejected,
            }),
        })
    }

    /// Where the breaker stands now.
    pub fn state(&self) -> BreakerState {
        self.shared.state()
    }
}

impl<S, C> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreaker<S, C>;
    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// Refuses calls with [`BreakerOpen`] while its upstream is failing. See [`CircuitBreakerLayer`].
pub struct CircuitBreaker<S, C> {
    inner: S,
    shared: Arc<Shared<C>>,
}

impl<S: Clone, C> Clone for CircuitBreaker<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug, C> fmt::Debug for CircuitBreaker<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .field("upstream", &self.shared.upstream)
            .finish()
    }
}

impl<S, C> CircuitBreaker<S, C> {
    /// Where the breaker stands now.
    pub fn state(&self) -> BreakerState {
        self.shared.state()
    }
}

impl<S, C, Req> Service<Req> for CircuitBreaker<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Fn(Result<&S::Response, &BoxError>) -> bool,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BreakerFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.shared.admit() {
            Some(generation) => BreakerFuture {
                kind: Kind::Called {
                    inner: self.inner.call(req),
                    permit: Some(Permit {
                        shared: Arc::clone(&self.shared),
                        generation,
                        recorded: false,
                    }),
                },
            },
            None => {
                self.shared.rejected.increment(1);
                BreakerFuture {
                    kind: Kind::Rejected {
                        error: Some(BreakerOpen {
                            upstream: Arc::clone(&self.shared.upstream),
                        }),
                    },
                }
            }
        }
    }
}

/// A call admitted by the breaker; dropping it unfinished frees a half-open probe slot.
struct Permit<C> {
    shared: Arc<Shared<C>>,
    generation: u64,
    recorded: bool,
}

impl<C> Permit<C> {
    fn record(mut self, failed: bool) {
        self.shared.record(self.generation, failed);
        self.recorded = true;
    }
}

impl<C> Drop for Permit<C> {
    fn drop(&mut self) {
        if !self.recorded {
            self.shared.release(self.generation);
        }
    }
}

pin_project! {
    /// The response future of [`CircuitBreaker`]: a refusal, or the call whose outcome the
    /// breaker records.
    pub struct BreakerFuture<F, C> {
        #[pin]
        kind: Kind<F, C>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, C> {
        Rejected { error: Option<BreakerOpen> },
        Called {
            #[pin]
            inner: F,
            permit: Option<Permit<C>>,
        },
    }
}

impl<F, C, T, E> Future for BreakerFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Fn(Result<&T, &BoxError>) -> bool,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Rejected { error } => match error.take() {
                Some(error) => Poll::Ready(Err(error.into())),
                None => panic!("BreakerFuture polled after completion"),
            },
            KindProj::Called { inner, permit } => {
                let result = std::task::ready!(inner.poll(cx)).map_err(Into::into);
                if let Some(permit) = permit.take() {
                    let failed = (permit.shared.classify)(result.as_ref());
                    permit.record(failed);
                }
                Poll::Ready(result)
            }
        }
    }
}

#[cfg(test)]
mod tests;
