//! Retries of idempotent HTTP calls with jittered exponential backoff, under a budget that
//! keeps retries to a share of the traffic so an outage is not multiplied by the callers.
//!
//! The service is tower's [`tower::retry::Retry`] driven by [`IdempotentRetryPolicy`]; the
//! budget is tower's [`TpsBudget`] and the delays come from `backon`'s exponential builder.
//!
//! Requests are cloned for each attempt, so the body type must be `Clone`: a caller with a
//! streaming body buffers it first (into `http_body_util::Full<Bytes>`, whose clone is a
//! reference count) — retrying a body that was already partly sent is impossible anyway,
//! and a bound on what is buffered belongs to the caller, who knows its limits.

use std::{sync::Arc, time::Duration};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use http::{Method, Request, Response, StatusCode};
use tower::{
    BoxError, Layer,
    retry::{
        Policy,
        budget::{Budget, TpsBudget},
    },
};

use crate::ConfigError;

/// The header whose presence makes any method safe to retry.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Parameters of a [`RetryLayer`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetrySettings {
    /// Retries after the first attempt, at most 10. Default 2.
    pub max_retries: u32,
    /// Delay before the first retry, before jitter; greater than zero. Default 25 ms.
    pub min_delay: Duration,
    /// Upper bound of any delay, at least `min_delay`. Default 1 s.
    pub max_delay: Duration,
    /// Growth of the delay per retry, at least 1. Default 2.
    pub factor: f32,
    /// Retries allowed as a share of requests over the window, in `0..=1`. Default 0.2.
    pub budget_share: f32,
    /// Window over which the budget counts requests, 1 s to 60 s. Default 10 s.
    pub budget_window: Duration,
    /// Retries per second allowed on top of the share, so a quiet client can still retry;
    /// 0 for none. Default 1.
    pub min_retries_per_sec: u32,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            max_retries: 2,
            min_delay: Duration::from_millis(25),
            max_delay: Duration::from_secs(1),
            factor: 2.0,
            budget_share: 0.2,
            budget_window: Duration::from_secs(10),
            min_retries_per_sec: 1,
        }
    }
}

impl RetrySettings {
    fn validate(self) -> Result<Self, ConfigError> {
        let bad = |parameter, reason| Err(ConfigError::new("retry", parameter, reason));
        if self.max_retries > 10 {
            return bad("max_retries", "must be at most 10");
        }
        if self.min_delay.is_zero() {
            return bad("min_delay", "must be greater than zero");
        }
        if self.max_delay < self.min_delay {
            return bad("max_delay", "must be at least min_delay");
        }
        if !(self.factor >= 1.0 && self.factor.is_finite()) {
            return bad("factor", "must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.budget_share) {
            return bad("budget_share", "must be a share between 0 and 1");
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&self.budget_window) {
            return bad("budget_window", "must be between 1 s and 60 s");
        }
        if self.min_retries_per_sec >= i32::MAX as u32 {
            return bad("min_retries_per_sec", "is too large");
        }
        Ok(self)
    }
}

#[derive(Debug)]
struct Shared {
    max_retries: u32,
    backoff: ExponentialBuilder,
    max_delay: Duration,
    budget: TpsBudget,
    retries: metrics::Counter,
    exhausted: metrics::Counter,
}

/// Decides which HTTP calls are retried: idempotent methods (GET, HEAD, PUT, DELETE,
/// OPTIONS) or requests carrying `Idempotency-Key`, after an error or a 502/503/504 (not a
/// 503 refusal for a dependency that is down, which every replica would repeat), while
/// attempts and the budget last. Each original request deposits into the budget; each retry
/// withdraws from it.
#[derive(Debug)]
pub struct IdempotentRetryPolicy {
    shared: Arc<Shared>,
    /// Retries made so far for the request this copy of the policy follows.
    attempts: u32,
    backoff: Option<ExponentialBackoff>,
}

impl Clone for IdempotentRetryPolicy {
    fn clone(&self) -> Self {
        // tower clones the service's policy once per request: each request starts afresh.
        Self {
            shared: Arc::clone(&self.shared),
            attempts: 0,
            backoff: None,
        }
    }
}

fn may_retry<B>(req: &Request<B>) -> bool {
    matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
    ) || req.headers().contains_key(IDEMPOTENCY_KEY)
}

fn worth_retrying<Res>(result: &Result<Response<Res>, BoxError>) -> bool {
    match result {
        // Another replica would refuse for the same dependency.
        Ok(response) if crate::refused_for_a_dependency(response) => false,
        Ok(response) => matches!(
            response.status(),
            StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
        ),
        Err(_) => true,
    }
}

impl<B, Res> Policy<Request<B>, Response<Res>, BoxError> for IdempotentRetryPolicy
where
    B: Clone,
{
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        _req: &mut Request<B>,
        result: &mut Result<Response<Res>, BoxError>,
    ) -> Option<Self::Future> {
        if !worth_retrying(result) || self.attempts >= self.shared.max_retries {
            return None;
        }
        if !self.shared.budget.withdraw() {
            self.shared.exhausted.increment(1);
            return None;
        }
        self.attempts += 1;
        self.shared.retries.increment(1);
        let shared = &self.shared;
        let delay = self
            .backoff
            .get_or_insert_with(|| shared.backoff.build())
            .next()
            .unwrap_or(shared.max_delay);
        Some(tokio::time::sleep(delay))
    }

    fn clone_request(&mut self, req: &Request<B>) -> Option<Request<B>> {
        if self.attempts == 0 {
            // Called once per original request on the service's own copy of the policy.
            self.shared.budget.deposit();
        }
        if !may_retry(req) {
            return None;
        }
        let mut clone = Request::new(req.body().clone());
        *clone.method_mut() = req.method().clone();
        *clone.uri_mut() = req.uri().clone();
        *clone.version_mut() = req.version();
        *clone.headers_mut() = req.headers().clone();
        *clone.extensions_mut() = req.extensions().clone();
        Some(clone)
    }
}

/// The retrying service [`RetryLayer`] builds: tower's, with [`IdempotentRetryPolicy`].
pub type Retry<S> = tower::retry::Retry<IdempotentRetryPolicy, S>;

/// Builds [`Retry`] services sharing one budget: build one layer per upstream (service),
/// so the budget measures that upstream's traffic.
///
/// The inner service's error must be [`BoxError`] (what every layer here returns); the
/// last attempt's outcome is returned as it is, so this layer adds no error of its own.
#[derive(Debug, Clone)]
pub struct RetryLayer {
    policy: IdempotentRetryPolicy,
}

impl RetryLayer {
    /// A layer retrying calls to `upstream` (the metrics' label) as `settings` allow.
    pub fn new(upstream: &str, settings: RetrySettings) -> Result<Self, ConfigError> {
        let settings = settings.validate()?;
        let backoff = ExponentialBuilder::new()
            .with_min_delay(settings.min_delay)
            .with_max_delay(settings.max_delay)
            .with_factor(settings.factor)
            .with_jitter()
            .without_max_times();
        let labels = [("upstream", upstream.to_owned())];
        let shared = Shared {
            max_retries: settings.max_retries,
            backoff,
            max_delay: settings.max_delay,
            budget: TpsBudget::new(
                settings.budget_window,
                settings.min_retries_per_sec,
                settings.budget_share,
            ),
            retries: metrics::counter!("tideway_retries_total", &labels),
            exhausted: metrics::counter!("tideway_retry_budget_exhausted_total", &labels),
        };
        Ok(Self {
            policy: IdempotentRetryPolicy {
                shared: Arc::new(shared),
                attempts: 0,
                backoff: None,
            },
        })
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;
    fn layer(&self, inner: S) -> Self::Service {
        tower::retry::Retry::new(self.policy.clone(), inner)
    }
}

#[cfg(test)]
mod tests;
