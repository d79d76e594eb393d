//! The GCRA limiter shared by replicas: one Lua script on Redis, run atomically, keeps each
//! key's theoretical arrival time and reads the clock from Redis (`TIME`), so replicas with
//! skewed clocks still share one limit.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use http::{HeaderValue, Request, Response, StatusCode, header::RETRY_AFTER};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::{sync::OnceCell, time::Instant};
use tower::{Layer, Service, ServiceExt};

use super::{RateDecision, check_quota};
use crate::ConfigError;

/// GCRA over milliseconds. KEYS[1]: the key; ARGV[1]: emission interval (ms per request);
/// ARGV[2]: burst. Returns {allowed, remaining, retry_after_ms, reset_ms}.
const GCRA: &str = r"
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
local tolerance = interval * burst
local new_tat = tat + interval
local allow_at = new_tat - tolerance
if allow_at > now then
  return {0, 0, allow_at - now, tat - now}
end
redis.call('SET', KEYS[1], new_tat, 'PX', new_tat - now)
return {1, math.floor((tolerance - (new_tat - now)) / interval), 0, new_tat - now}
";

/// Redis did not answer the limiter in time or refused the script.
#[derive(Debug, thiserror::Error)]
pub enum RedisUnavailable {
    /// No answer (or no connection) within the limiter's timeout.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// The connection or the script failed.
    #[error("redis rate limit script failed")]
    Failed(#[source] redis::RedisError),
    /// Not asked: Redis failed less than `outage_backoff` ago.
    #[error("redis failed less than {0:?} ago and is not asked again yet")]
    BackingOff(Duration),
}

/// Parameters of a [`RedisGcra`] and its [`GlobalRateLimitLayer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalRateLimitSettings {
    /// Requests a key may make at once, at least 1. Default 100.
    pub burst: u32,
    /// Time over which a full burst refills, at least 1 ms per request. Default 1 s.
    pub per: Duration,
    /// Prefix of every Redis key, so limits and tests do not collide. Default `"tideway:rl"`.
    pub key_prefix: String,
    /// Whether requests pass (with a warning) while Redis is unreachable; otherwise they
    /// get 503. Default true: a limiter outage should not become a shop outage.
    pub fail_open: bool,
    /// How long a check may wait for Redis, connecting included. Default 50 ms.
    pub timeout: Duration,
    /// After a failure, how long Redis is not asked at all, so during an outage requests
    /// are answered at once instead of each waiting for `timeout`. Default 1 s.
    pub outage_backoff: Duration,
}

impl Default for GlobalRateLimitSettings {
    fn default() -> Self {
        Self {
            burst: 100,
            per: Duration::from_secs(1),
            key_prefix: "tideway:rl".to_owned(),
            fail_open: true,
            timeout: Duration::from_millis(50),
            outage_backoff: Duration::from_secs(1),
        }
    }
}

/// A GCRA limiter whose state lives in Redis. Connects lazily, so a process starts (and,
/// failing open, serves) while Redis is down, and reconnects by itself afterwards.
pub struct RedisGcra {
    client: redis::Client,
    connection: OnceCell<ConnectionManager>,
    script: redis::Script,
    key_prefix: String,
    burst: u32,
    interval_ms: u64,
    timeout: Duration,
    outage_backoff: Duration,
    origin: Instant,
    /// Milliseconds after `origin` before which Redis is not asked; 0 when healthy.
    skip_until_ms: AtomicU64,
}

impl fmt::Debug for RedisGcra {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisGcra")
            .field("key_prefix", &self.key_prefix)
            .field("burst", &self.burst)
            .field("interval_ms", &self.interval_ms)
            .finish()
    }
}

impl RedisGcra {
    /// A limiter on `client`'s server with the quota and timeout of `settings`.
    pub fn new(
        client: redis::Client,
        settings: &GlobalRateLimitSettings,
    ) -> Result<Self, ConfigError> {
        let interval = check_quota("global rate limit", settings.burst, settings.per)?;
        if settings.timeout.is_zero() {
            return Err(ConfigError::new(
                "global rate limit",
                "timeout",
                "must be greater than zero",
            ));
        }
        Ok(Self {
            client,
            connection: OnceCell::new(),
            script: redis::Script::new(GCRA),
            key_prefix: settings.key_prefix.clone(),
            burst: settings.burst,
            interval_ms: interval.as_millis() as u64,
            timeout: settings.timeout,
            outage_backoff: settings.outage_backoff,
            origin: Instant::now(),
            skip_until_ms: AtomicU64::new(0),
        })
    }

    /// Counts one request against `key` and says whether it may go on.
    pub async fn check(&self, key: &str) -> Result<RateDecision, RedisUnavailable> {
        let now_ms = self.origin.elapsed().as_millis() as u64;
        let skip_until = self.skip_until_ms.load(Ordering::Relaxed);
        if now_ms < skip_until {
            return Err(RedisUnavailable::BackingOff(self.outage_backoff));
        }
        let result = tokio::time::timeout(self.timeout, self.run(key))
            .await
            .map_err(|_| RedisUnavailable::Timeout(self.timeout))
            .and_then(|result| result);
        let next = match &result {
            Ok(_) => 0,
            // Measured after the failure, so a slow failure does not eat the backoff.
            Err(_) => (self.origin.elapsed() + self.outage_backoff).as_millis() as u64,
        };
        if next != 0 || skip_until != 0 {
            self.skip_until_ms.store(next, Ordering::Relaxed);
        }
        result
    }

    async fn run(&self, key: &str) -> Result<RateDecision, RedisUnavailable> {
        let connection = self
            .connection
            .get_or_try_init(|| {
                let config = ConnectionManagerConfig::new()
                    .set_number_of_retries(1)
                    .set_connection_timeout(self.timeout)
                    .set_response_timeout(self.timeout);
                ConnectionManager::new_with_config(self.client.clone(), config)
            })
            .await
            .map_err(RedisUnavailable::Failed)?;
        let mut connection = connection.clone();
        let (allowed, remaining, retry_after_ms, reset_ms): (i64, i64, i64, i64) = self
            .script
            .key(format!("{}:{key}", self.key_prefix))
            .arg(self.interval_ms)
            .arg(self.burst)
            .invoke_async(&mut connection)
            .await
            .map_err(RedisUnavailable::Failed)?;
        let ms = |value: i64| Duration::from_millis(u64::try_from(value).unwrap_or(0));
        Ok(RateDecision {
            allowed: allowed == 1,
            limit: self.burst,
            remaining: u32::try_from(remaining).unwrap_or(0),
            retry_after: ms(retry_after_ms),
            reset: ms(reset_ms),
        })
    }
}

struct Shared<F> {
    name: Arc<str>,
    gcra: RedisGcra,
    key: F,
    fail_open: bool,
    /// Whether the last check failed, so an outage is logged once, not per request.
    down: AtomicBool,
    limited: metrics::Counter,
    store_errors: metrics::Counter,
}

/// Builds [`GlobalRateLimit`]s sharing one [`RedisGcra`]; every replica building the same
/// settings (and `key_prefix`) shares one limit per key.
pub struct GlobalRateLimitLayer<F> {
    shared: Arc<Shared<F>>,
}

impl<F> Clone for GlobalRateLimitLayer<F> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<F> fmt::Debug for GlobalRateLimitLayer<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GlobalRateLimitLayer")
            .field("name", &self.shared.name)
            .field("gcra", &self.shared.gcra)
            .finish()
    }
}

impl<F> GlobalRateLimitLayer<F> {
    /// A limit named `name` (the label of `tideway_rate_limited_total` and
    /// `tideway_rate_limit_store_errors_total`) on `client`'s Redis, counting each request
    /// against the key `key` returns (none: not limited).
    pub fn new(
        name: impl Into<Arc<str>>,
        client: redis::Client,
        settings: &GlobalRateLimitSettings,
        key: F,
    ) -> Result<Self, ConfigError> {
        let gcra = RedisGcra::new(client, settings)?;
        let name = name.into();
        let labels = [("limit", name.to_string())];
        Ok(Self {
            shared: Arc::new(Shared {
                gcra,
                key,
                fail_open: settings.fail_open,
                down: AtomicBool::new(false),
                limited: metrics::counter!("tideway_rate_limited_total", &labels),
                store_errors: metrics::counter!("tideway_rate_limit_store_errors_total", &labels),
                name,
            }),
        })
    }
}

impl<S, F> Layer<S> for GlobalRateLimitLayer<F> {
    type Service = GlobalRateLimit<S, F>;
    fn layer(&self, inner: S) -> Self::Service {
        GlobalRateLimit {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// Answers 429 to requests over their key's limit across replicas. See
/// [`GlobalRateLimitLayer`]. Always ready: the inner service is made ready in the response
/// future, after the limit was checked.
pub struct GlobalRateLimit<S, F> {
    inner: S,
    shared: Arc<Shared<F>>,
}

impl<S: Clone, F> Clone for GlobalRateLimit<S, F> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug, F> fmt::Debug for GlobalRateLimit<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GlobalRateLimit")
            .field("inner", &self.inner)
            .field("name", &self.shared.name)
            .finish()
    }
}

/// The response future of [`GlobalRateLimit`]. Boxed because it awaits Redis and then the
/// inner service in turn; written by hand it would be a long state machine holding a
/// borrowed script invocation.
pub type GlobalRateLimitFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, F, B, ResBody> Service<Request<B>> for GlobalRateLimit<S, F>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send + 'static,
    F: Fn(&Request<B>) -> Option<String> + Send + Sync + 'static,
    B: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = GlobalRateLimitFuture<Response<ResBody>, S::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let shared = Arc::clone(&self.shared);
        let inner = self.inner.clone();
        Box::pin(async move {
            let Some(key) = (shared.key)(&req) else {
                return inner.oneshot(req).await;
            };
            match shared.gcra.check(&key).await {
                Ok(decision) => {
                    if shared.down.swap(false, Ordering::Relaxed) {
                        tracing::info!(limit = %shared.name, "Redis answers the rate limiter again.");
                    }
                    if !decision.allowed {
                        shared.limited.increment(1);
                        return Ok(decision.too_many());
                    }
                    let mut response = inner.oneshot(req).await?;
                    decision.add_headers(response.headers_mut());
                    Ok(response)
                }
                Err(error) => {
                    shared.store_errors.increment(1);
                    if !shared.down.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            limit = %shared.name,
                            fail_open = shared.fail_open,
                            error = &error as &dyn std::error::Error,
                            "Redis is unreachable for the rate limiter.",
                        );
                    }
                    if shared.fail_open {
                        inner.oneshot(req).await
                    } else {
                        let mut response = Response::new(ResBody::default());
                        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                        response
                            .headers_mut()
                            .insert(RETRY_AFTER, HeaderValue::from(1u32));
                        Ok(response)
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests;
