//! Rate limits by GCRA (the generic cell rate algorithm: a token bucket kept as one
//! timestamp per key). [`RateLimit`] keeps the state in process with `governor`;
//! [`GlobalRateLimit`] keeps it in Redis through a Lua script, so replicas share one limit.
//!
//! Both answer a request over its limit with `429 Too Many Requests`, `Retry-After` and the
//! `RateLimit-Limit` / `RateLimit-Remaining` / `RateLimit-Reset` headers (reset in seconds
//! until the bucket is full again), add the three `RateLimit-*` headers to the responses
//! they let through, and keep the inner error type so they wrap an axum router directly.
//! A key-extractor closure decides whose limit a request counts against (client IP, user,
//! route…); a request it returns `None` for is not limited.

mod global;
mod local;

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header::RETRY_AFTER};

pub use global::{
    GlobalRateLimit, GlobalRateLimitFuture, GlobalRateLimitLayer, GlobalRateLimitSettings,
    RedisGcra, RedisUnavailable,
};
pub use local::{LocalGcra, RateLimit, RateLimitFuture, RateLimitLayer};

use crate::{ConfigError, shed::retry_after_seconds};

const LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// What a limiter decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    /// Whether the request may go on.
    pub allowed: bool,
    /// The burst the key is allowed (`RateLimit-Limit`).
    pub limit: u32,
    /// Requests the key may still make at once (`RateLimit-Remaining`).
    pub remaining: u32,
    /// For a refused request, how long until one more would pass (`Retry-After`).
    pub retry_after: Duration,
    /// How long until the key's bucket is full again (`RateLimit-Reset`).
    pub reset: Duration,
}

impl RateDecision {
    /// `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` (whole seconds, rounded
    /// up) for this decision.
    pub fn headers(&self) -> [(HeaderName, HeaderValue); 3] {
        let reset = self.reset.as_secs() + u64::from(self.reset.subsec_nanos() > 0);
        [
            (LIMIT, HeaderValue::from(self.limit)),
            (REMAINING, HeaderValue::from(self.remaining)),
            (RESET, HeaderValue::from(reset)),
        ]
    }

    /// Adds (replacing) the three `RateLimit-*` headers to `headers`.
    pub fn add_headers(&self, headers: &mut HeaderMap) {
        for (name, value) in self.headers() {
            headers.insert(name, value);
        }
    }

    fn too_many<B: Default>(&self) -> Response<B> {
        let mut response = Response::new(B::default());
        *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        let headers = response.headers_mut();
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from(retry_after_seconds(self.retry_after)),
        );
        self.add_headers(headers);
        response
    }
}

/// Checks the parameters both limiters share: `burst` requests per `per`.
fn check_quota(layer: &'static str, burst: u32, per: Duration) -> Result<Duration, ConfigError> {
    if burst == 0 {
        return Err(ConfigError::new(layer, "burst", "must be at least 1"));
    }
    let interval = per / burst;
    if interval < Duration::from_millis(1) {
        return Err(ConfigError::new(
            layer,
            "per",
            "must allow at least 1 ms per request",
        ));
    }
    Ok(interval)
}
