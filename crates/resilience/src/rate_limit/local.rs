//! The in-process, keyed GCRA limiter on `governor`.

use std::{
    fmt,
    future::Future,
    hash::Hash,
    num::NonZeroU32,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use governor::{
    Quota, RateLimiter,
    clock::{Clock, DefaultClock},
    middleware::StateInformationMiddleware,
    state::keyed::DashMapStateStore,
};
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::{RateDecision, check_quota};
use crate::ConfigError;

/// How many checks pass between sweeps of keys whose buckets are full again, which keeps
/// the key map bounded by the keys seen in about one period.
const SWEEP_EVERY: u64 = 4096;

type Limiter<K, C> = RateLimiter<K, DashMapStateStore<K>, C, StateInformationMiddleware>;

/// A keyed GCRA limiter in this process, usable on its own (the gateway checks several per
/// request) or through [`RateLimitLayer`]: each key may make `burst` requests at once,
/// refilled evenly over `per`. Keys whose buckets are full again are swept every 4096
/// checks, which bounds memory by the keys seen in about one period.
pub struct LocalGcra<K: Hash + Eq + Clone, C: Clock = DefaultClock> {
    limiter: Limiter<K, C>,
    burst: u32,
    interval: Duration,
    checks: AtomicU64,
}

impl<K: Hash + Eq + Clone, C: Clock> fmt::Debug for LocalGcra<K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalGcra")
            .field("burst", &self.burst)
            .field("interval", &self.interval)
            .finish()
    }
}

impl<K: Hash + Eq + Clone> LocalGcra<K> {
    /// `burst` (≥ 1) requests per key at once, refilled evenly over `per` (at least 1 ms
    /// per request).
    pub fn new(burst: u32, per: Duration) -> Result<Self, ConfigError> {
        Self::with_clock(burst, per, DefaultClock::default())
    }
}

impl<K: Hash + Eq + Clone, C: Clock> LocalGcra<K, C> {
    /// As [`LocalGcra::new`], on the given clock (tests use governor's fake clock).
    pub fn with_clock(burst: u32, per: Duration, clock: C) -> Result<Self, ConfigError> {
        let interval = check_quota("rate limit", burst, per)?;
        let (Some(burst_nz), Some(quota)) = (NonZeroU32::new(burst), Quota::with_period(interval))
        else {
            return Err(ConfigError::new(
                "rate limit",
                "burst",
                "must be at least 1",
            ));
        };
        let limiter = RateLimiter::dashmap_with_clock(quota.allow_burst(burst_nz), clock)
            .with_middleware::<StateInformationMiddleware>();
        Ok(Self {
            limiter,
            burst,
            interval,
            checks: AtomicU64::new(0),
        })
    }

    /// The burst each key is allowed.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// Counts one request against `key` and says whether it may go on.
    pub fn check(&self, key: &K) -> RateDecision {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.limiter.retain_recent();
        }
        match self.limiter.check_key(key) {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                RateDecision {
                    allowed: true,
                    limit: self.burst,
                    remaining,
                    retry_after: Duration::ZERO,
                    reset: self.interval * (self.burst - remaining.min(self.burst)),
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.limiter.clock().now());
                RateDecision {
                    allowed: false,
                    limit: self.burst,
                    remaining: 0,
                    retry_after: wait,
                    reset: wait + self.interval * (self.burst - 1),
                }
            }
        }
    }
}

struct Shared<K: Hash + Eq + Clone, F, C: Clock> {
    name: Arc<str>,
    gcra: LocalGcra<K, C>,
    key: F,
    limited: metrics::Counter,
}

impl<K: Hash + Eq + Clone, F, C: Clock> Shared<K, F, C> {
    fn check(&self, key: &K) -> RateDecision {
        let decision = self.gcra.check(key);
        if !decision.allowed {
            self.limited.increment(1);
        }
        decision
    }
}

/// Builds [`RateLimit`]s sharing one keyed limiter: `burst` requests per `per` for each key
/// that `key` extracts from a request.
pub struct RateLimitLayer<K: Hash + Eq + Clone, F, C: Clock = DefaultClock> {
    shared: Arc<Shared<K, F, C>>,
}

impl<K: Hash + Eq + Clone, F, C: Clock> Clone for RateLimitLayer<K, F, C> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<K: Hash + Eq + Clone, F, C: Clock> fmt::Debug for RateLimitLayer<K, F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("name", &self.shared.name)
            .field("gcra", &self.shared.gcra)
            .finish()
    }
}

impl<K: Hash + Eq + Clone, F> RateLimitLayer<K, F> {
    /// Allows each key `burst` (≥ 1) requests at once, refilled evenly over `per` (at least
    /// 1 ms per request). `name` labels `tideway_rate_limited_total` (a limit's name, never
    /// a key).
    pub fn new(
        name: impl Into<Arc<str>>,
        burst: u32,
        per: Duration,
        key: F,
    ) -> Result<Self, ConfigError> {
        Self::with_clock(name, burst, per, key, DefaultClock::default())
    }
}

impl<K: Hash + Eq + Clone, F, C: Clock> RateLimitLayer<K, F, C> {
    /// As [`RateLimitLayer::new`], on the given clock (tests use governor's fake clock).
    pub fn with_clock(
        name: impl Into<Arc<str>>,
        burst: u32,
        per: Duration,
        key: F,
        clock: C,
    ) -> Result<Self, ConfigError> {
        let gcra = LocalGcra::with_clock(burst, per, clock)?;
        let name = name.into();
        let limited = metrics::counter!("tideway_rate_limited_total", "limit" => name.to_string());
        Ok(Self {
            shared: Arc::new(Shared {
                name,
                gcra,
                key,
                limited,
            }),
        })
    }
}

impl<S, K: Hash + Eq + Clone, F, C: Clock> Layer<S> for RateLimitLayer<K, F, C> {
    type Service = RateLimit<S, K, F, C>;
    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// Answers 429 to requests over their key's limit. See [`RateLimitLayer`].
pub struct RateLimit<S, K: Hash + Eq + Clone, F, C: Clock = DefaultClock> {
    inner: S,
    shared: Arc<Shared<K, F, C>>,
}

impl<S: Clone, K: Hash + Eq + Clone, F, C: Clock> Clone for RateLimit<S, K, F, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug, K: Hash + Eq + Clone, F, C: Clock> fmt::Debug for RateLimit<S, K, F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("name", &self.shared.name)
            .finish()
    }
}

impl<S, K, F, C, B, ResBody> Service<Request<B>> for RateLimit<S, K, F, C>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    K: Hash + Eq + Clone,
    F: Fn(&Request<B>) -> Option<K>,
    C: Clock,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = RateLimitFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Refusing needs no capacity, but letting through does: wait for the inner service.
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let Some(key) = (self.shared.key)(&req) else {
            return RateLimitFuture::called(self.inner.call(req), None);
        };
        let decision = self.shared.check(&key);
        if decision.allowed {
            RateLimitFuture::called(self.inner.call(req), Some(decision))
        } else {
            RateLimitFuture {
                kind: Kind::Limited {
                    response: Some(decision.too_many()),
                },
            }
        }
    }
}

pin_project! {
    /// The response future of [`RateLimit`]: the 429 at once, or the inner call whose
    /// response gets the `RateLimit-*` headers.
    pub struct RateLimitFuture<F, B> {
        #[pin]
        kind: Kind<F, B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B> {
        Limited { response: Option<Response<B>> },
        Called {
            #[pin]
            inner: F,
            decision: Option<RateDecision>,
        },
    }
}

impl<F, B> RateLimitFuture<F, B> {
    fn called(inner: F, decision: Option<RateDecision>) -> Self {
        Self {
            kind: Kind::Called { inner, decision },
        }
    }
}

impl<F, B, E> Future for RateLimitFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Limited { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                None => panic!("RateLimitFuture polled after completion"),
            },
            KindProj::Called { inner, decision } => {
                let mut response = std::task::ready!(inner.poll(cx))?;
                if let Some(decision) = decision {
                    decision.add_headers(response.headers_mut());
                }
                Poll::Ready(Ok(response))
            }
        }
    }
}

#[cfg(test)]
mod tests;
