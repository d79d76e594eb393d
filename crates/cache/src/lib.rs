//! Cache-aside for Tideway services: one API over an in-process cache (moka, bounded by
//! entries and time to live) or a shared one (Redis), chosen per use in configuration.
//!
//! ```ignore
//! let items: Cache<Item> = Cache::new("catalog_item", &config.item, &config.shared)?;
//! let item = items.get_or_load(&id, || repo::get(&db, &id)).await?;   // Option<Item>
//! items.invalidate(&id).await;                                         // on ItemChanged
//! ```
//!
//! * **Cache-aside**: [`Cache::get_or_load`] answers a stored value, or runs the loader and
//!   stores what it answers. `None` is stored too (negative caching), so a flood of reads
//!   of something missing costs one load per time to live, not one per read.
//! * **One load per key in flight**: concurrent misses of one key wait for the first
//!   caller's load and then read what it stored (single flight); a failed or cancelled load
//!   lets the next waiter try. Only the loading caller sees its error.
//! * **Invalidation**: [`Cache::invalidate`] and [`Cache::invalidate_all`], called by the
//!   owner's event handlers; the time to live bounds how long a missed event can leave a
//!   value stale. A value loaded while an invalidation happened is answered but not
//!   stored, so a slow load never puts back what an event just removed.
//! * **Redis outages degrade**: a Redis error or timeout is logged (a warning at most every
//!   few seconds), counted, and the read goes to the loader directly; for a second after a
//!   failure Redis is not asked at all. The caller never sees a cache error.
//! * **Metrics** per cache (label `cache`, resolved when the cache is built):
//!   `tideway_cache_hits_total`, `tideway_cache_misses_total` (loads),
//!   `tideway_cache_evictions_total` (memory: removed for size or age),
//!   `tideway_cache_errors_total` (Redis failures).
#![warn(missing_docs)]

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use metrics::Counter;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio::sync::{OnceCell, watch};

/// The longest time to live a use may configure: one day.
pub const MAX_TTL_MS: u64 = 86_400_000;
/// The most entries an in-process cache may be configured to hold.
pub const MAX_CAPACITY: u64 = 10_000_000;
/// How long Redis is left alone after a failure before it is asked again.
const REDIS_PAUSE: Duration = Duration::from_secs(1);
/// The shortest gap between two warnings about Redis from one cache.
const WARN_EVERY: Duration = Duration::from_secs(5);

/// Where a use keeps its entries.
///
/// Read from text with an error that says what the value is (a cache's kind):
/// configuration loaders that flatten sections lose the path below the section.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Kind {
    /// In this process (moka): fastest, each replica its own copy.
    #[default]
    Memory,
    /// In Redis: one copy shared by every replica.
    Redis,
}

impl TryFrom<String> for Kind {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        match value.as_str() {
            "memory" => Ok(Self::Memory),
            "redis" => Ok(Self::Redis),
            other => Err(format!(
                "a cache's kind is `memory` or `redis`, found {other:?}"
            )),
        }
    }
}

impl From<Kind> for String {
    fn from(kind: Kind) -> Self {
        match kind {
            Kind::Memory => "memory".to_owned(),
            Kind::Redis => "redis".to_owned(),
        }
    }
}

/// The settings of one use of a cache (`catalog.cache.item`, `basket.cache.price`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UseConfig {
    /// `memory` or `redis`.
    pub kind: Kind,
    /// How long an entry lives at most, in milliseconds (1 to [`MAX_TTL_MS`]): the bound
    /// on staleness when an invalidating event is missed.
    pub ttl_ms: u64,
    /// The most entries held in memory (1 to [`MAX_CAPACITY`]; for `memory` only).
    pub capacity: u64,
}

impl Default for UseConfig {
    fn default() -> Self {
        Self::memory(30_000, 10_000)
    }
}

impl UseConfig {
    /// An in-process use.
    pub const fn memory(ttl_ms: u64, capacity: u64) -> Self {
        Self {
            kind: Kind::Memory,
            ttl_ms,
            capacity,
        }
    }

    /// The time to live.
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms)
    }

    /// The first unacceptable field and what is expected of it, if any.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        if !(1..=MAX_TTL_MS).contains(&self.ttl_ms) {
            return Some((
                "ttl_ms",
                format!("a number of milliseconds from 1 to {MAX_TTL_MS}"),
            ));
        }
        if !(1..=MAX_CAPACITY).contains(&self.capacity) {
            return Some((
                "capacity",
                format!("a number of entries from 1 to {MAX_CAPACITY}"),
            ));
        }
        None
    }
}

/// What every use of a service shares: the switch and the Redis of `redis` uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Shared {
    /// `false`: nothing is cached, every read loads (for comparisons and benchmarks).
    pub enabled: bool,
    /// `redis://[:password@]host:port[/db]` or `rediss://…`.
    pub redis_url: String,
    /// The most one Redis command may take, connecting included (1 to 60,000 ms).
    pub redis_timeout_ms: u64,
    /// The first part of every Redis key (`<prefix>:<cache>:<key>`).
    pub key_prefix: String,
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            enabled: true,
            redis_url: "redis://127.0.0.1:6379".to_owned(),
            redis_timeout_ms: 100,
            key_prefix: "tideway:cache".to_owned(),
        }
    }
}

impl Shared {
    /// The first unacceptable field and what is expected of it, if any.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        if !(self.redis_url.starts_with("redis://") || self.redis_url.starts_with("rediss://"))
            || redis::Client::open(self.redis_url.as_str()).is_err()
        {
            return Some((
                "redis_url",
                "redis://[:password@]host:port[/db] or rediss://…".to_owned(),
            ));
        }
        if !(1..=60_000).contains(&self.redis_timeout_ms) {
            return Some((
                "redis_timeout_ms",
                "a number of milliseconds from 1 to 60000".to_owned(),
            ));
        }
        if self.key_prefix.is_empty()
            || self.key_prefix.len() > 64
            || self
                .key_prefix
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Some(("key_prefix", "1 to 64 characters without spaces".to_owned()));
        }
        None
    }
}

/// A cache that cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A setting is not acceptable.
    #[error("invalid cache setting {key}: expected {expected}")]
    Invalid {
        /// The field (`ttl_ms`, `redis_url`, …).
        key: &'static str,
        /// What is expected.
        expected: String,
    },
}

/// A cache of `V` by string key. Cheap to clone; clones share the entries.
pub struct Cache<V> {
    inner: Arc<Inner<V>>,
}

impl<V> Clone for Cache<V> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<V> std::fmt::Debug for Cache<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let store = match &self.inner.store {
            Store::Off => "off",
            Store::Memory(_) => "memory",
            Store::Redis(_) => "redis",
        };
        f.debug_struct("Cache")
            .field("name", &self.inner.name)
            .field("store", &store)
            .finish_non_exhaustive()
    }
}

struct Inner<V> {
    name: String,
    store: Store<V>,
    /// Keys being loaded, each with the receiver its waiters watch: the sender is dropped
    /// when the load ends, however it ends.
    flights: Mutex<HashMap<String, watch::Receiver<()>>>,
    /// Bumped by every invalidation: a load that began before a bump does not store.
    epoch: AtomicU64,
    metrics: Metrics,
}

enum Store<V> {
    Off,
    Memory(moka::future::Cache<String, Option<V>>),
    Redis(RedisStore),
}

struct RedisStore {
    client: redis::Client,
    connection: OnceCell<ConnectionManager>,
    timeout: Duration,
    ttl: Duration,
    prefix: String,
    /// Until when (ms since `started`) Redis is not asked, after a failure.
    paused_until_ms: AtomicU64,
    /// When the last warning was logged (ms since `started`, plus one; 0: never).
    warned_at_ms: AtomicU64,
    started: Instant,
}

#[derive(Clone)]
struct Metrics {
    hits: Counter,
    misses: Counter,
    evictions: Counter,
    errors: Counter,
}

impl Metrics {
    fn new(name: &str) -> Self {
        let label = name.to_owned();
        Self {
            hits: metrics::counter!("tideway_cache_hits_total", "cache" => label.clone()),
            misses: metrics::counter!("tideway_cache_misses_total", "cache" => label.clone()),
            evictions: metrics::counter!("tideway_cache_evictions_total", "cache" => label.clone()),
            errors: metrics::counter!("tideway_cache_errors_total", "cache" => label),
        }
    }
}

/// What a lookup found.
enum Lookup<V> {
    Hit(Option<V>),
    Miss,
    /// The store could not answer (Redis down): read directly.
    Unavailable,
}

/// Whether a caller waits for another's load or loads itself.
enum Role {
    Wait(watch::Receiver<()>),
    Lead(watch::Sender<()>),
}

/// Removes the flight of `key` when the leading load ends (or is cancelled); dropping the
/// sender after that wakes every waiter.
struct Flight<'a, V> {
    inner: &'a Inner<V>,
    key: &'a str,
    _done: watch::Sender<()>,
}

impl<V> Drop for Flight<'_, V> {
    fn drop(&mut self) {
        self.inner
            .flights
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(self.key);
    }
}

impl<V> Cache<V>
where
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// The cache `name` (a metric label and part of Redis keys: letters, digits, `_`) with
    /// `config`, Redis settings from `shared`; off when `shared.enabled` is false.
    pub fn new(name: &str, config: &UseConfig, shared: &Shared) -> Result<Self, CacheError> {
        if let Some((key, expected)) = config.problem().or_else(|| shared.problem()) {
            return Err(CacheError::Invalid { key, expected });
        }
        if !shared.enabled {
            return Ok(Self::build(name, Store::Off));
        }
        Ok(match config.kind {
            Kind::Memory => Self::memory(name, config.ttl(), config.capacity),
            Kind::Redis => {
                let client = redis::Client::open(shared.redis_url.as_str()).map_err(|_| {
                    CacheError::Invalid {
                        key: "redis_url",
                        expected: "a Redis URL".to_owned(),
                    }
                })?;
                Self::build(
                    name,
                    Store::Redis(RedisStore {
                        client,
                        connection: OnceCell::new(),
                        timeout: Duration::from_millis(shared.redis_timeout_ms),
                        ttl: config.ttl(),
                        prefix: format!("{}:{name}", shared.key_prefix),
                        paused_until_ms: AtomicU64::new(0),
                        warned_at_ms: AtomicU64::new(0),
                        started: Instant::now(),
                    }),
                )
            }
        })
    }

    /// An in-process cache of at most `capacity` entries, each living at most `ttl`.
    pub fn memory(name: &str, ttl: Duration, capacity: u64) -> Self {
        let metrics = Metrics::new(name);
        let evictions = metrics.evictions.clone();
        let store = moka::future::Cache::builder()
            .max_capacity(capacity)
            .time_to_live(ttl)
            .eviction_listener(move |_key, _value, cause| {
                if cause.was_evicted() {
                    evictions.increment(1);
                }
            })
            .build();
        Self::with_metrics(name, Store::Memory(store), metrics)
    }

    /// A cache that stores nothing: every read loads.
    pub fn disabled(name: &str) -> Self {
        Self::build(name, Store::Off)
    }

    fn build(name: &str, store: Store<V>) -> Self {
        Self::with_metrics(name, store, Metrics::new(name))
    }

    fn with_metrics(name: &str, store: Store<V>, metrics: Metrics) -> Self {
        Self {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                store,
                flights: Mutex::new(HashMap::new()),
                epoch: AtomicU64::new(0),
                metrics,
            }),
        }
    }

    /// The cache's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Whether the cache stores anything.
    pub fn is_enabled(&self) -> bool {
        !matches!(self.inner.store, Store::Off)
    }

    /// The value of `key`: stored, or loaded by `load` (and stored, `None` included). While
    /// one caller loads a key, others asking for it wait and read what it stored.
    pub async fn get_or_load<F, Fut, E>(&self, key: &str, load: F) -> Result<Option<V>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<V>, E>>,
    {
        let inner = &*self.inner;
        if matches!(inner.store, Store::Off) {
            return load().await;
        }
        loop {
            match self.lookup(key).await {
                Lookup::Hit(value) => {
                    inner.metrics.hits.increment(1);
                    return Ok(value);
                }
                Lookup::Unavailable => {
                    inner.metrics.misses.increment(1);
                    return load().await;
                }
                Lookup::Miss => {}
            }
            let role = {
                let mut flights = inner.flights.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(receiver) = flights.get(key) {
                    Role::Wait(receiver.clone())
                } else {
                    let (done, receiver) = watch::channel(());
                    flights.insert(key.to_owned(), receiver);
                    Role::Lead(done)
                }
            };
            match role {
                // Ends when the loader's sender is dropped; then look again: a hit, or
                // (the load failed) this caller may load.
                Role::Wait(mut receiver) => {
                    let _ = receiver.changed().await;
                }
                Role::Lead(done) => {
                    let flight = Flight {
                        inner,
                        key,
                        _done: done,
                    };
                    inner.metrics.misses.increment(1);
                    let epoch = inner.epoch.load(Ordering::Acquire);
                    let loaded = load().await;
                    if let Ok(value) = &loaded
                        && inner.epoch.load(Ordering::Acquire) == epoch
                    {
                        self.store(key, value).await;
                    }
                    drop(flight);
                    return loaded;
                }
            }
        }
    }

    /// Removes `key`.
    pub async fn invalidate(&self, key: &str) {
        self.inner.epoch.fetch_add(1, Ordering::AcqRel);
        match &self.inner.store {
            Store::Off => {}
            Store::Memory(store) => store.invalidate(key).await,
            Store::Redis(redis) => {
                let full = redis.key(key);
                let outcome = self
                    .redis(redis, |mut c| async move {
                        redis::cmd("DEL").arg(full).query_async::<()>(&mut c).await
                    })
                    .await;
                if outcome.is_none() {
                    tracing::warn!(cache = %self.inner.name, key, "cannot invalidate a Redis cache entry; it lives out its time to live");
                }
            }
        }
    }

    /// Removes every entry.
    pub async fn invalidate_all(&self) {
        self.inner.epoch.fetch_add(1, Ordering::AcqRel);
        match &self.inner.store {
            Store::Off => {}
            Store::Memory(store) => store.invalidate_all(),
            Store::Redis(redis) => {
                let pattern = format!("{}:*", redis.prefix);
                let outcome = self
                    .redis(redis, |mut c| async move {
                        let mut cursor: u64 = 0;
                        loop {
                            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                                .arg(cursor)
                                .arg("MATCH")
                                .arg(&pattern)
                                .arg("COUNT")
                                .arg(500)
                                .query_async(&mut c)
                                .await?;
                            if !keys.is_empty() {
                                redis::cmd("DEL")
                                    .arg(keys)
                                    .query_async::<()>(&mut c)
                                    .await?;
                            }
                            if next == 0 {
                                return Ok(());
                            }
                            cursor = next;
                        }
                    })
                    .await;
                if outcome.is_none() {
                    tracing::warn!(cache = %self.inner.name, "cannot invalidate a Redis cache; its entries live out their time to live");
                }
            }
        }
    }

    async fn lookup(&self, key: &str) -> Lookup<V> {
        match &self.inner.store {
            Store::Off => Lookup::Miss,
            Store::Memory(store) => match store.get(key).await {
                Some(value) => Lookup::Hit(value),
                None => Lookup::Miss,
            },
            Store::Redis(redis) => {
                let full = redis.key(key);
                let found = self
                    .redis(redis, |mut c| async move {
                        redis::cmd("GET")
                            .arg(full)
                            .query_async::<Option<String>>(&mut c)
                            .await
                    })
                    .await;
                match found {
                    None => Lookup::Unavailable,
                    Some(None) => Lookup::Miss,
                    Some(Some(text)) => match serde_json::from_str::<Option<V>>(&text) {
                        Ok(value) => Lookup::Hit(value),
                        // Written by another version of the value type: load afresh.
                        Err(_) => Lookup::Miss,
                    },
                }
            }
        }
    }

    async fn store(&self, key: &str, value: &Option<V>) {
        match &self.inner.store {
            Store::Off => {}
            Store::Memory(store) => store.insert(key.to_owned(), value.clone()).await,
            Store::Redis(redis) => {
                let Ok(text) = serde_json::to_string(value) else {
                    return;
                };
                let full = redis.key(key);
                let ttl_ms = u64::try_from(redis.ttl.as_millis()).unwrap_or(MAX_TTL_MS);
                let _ = self
                    .redis(redis, |mut c| async move {
                        redis::cmd("SET")
                            .arg(full)
                            .arg(text)
                            .arg("PX")
                            .arg(ttl_ms)
                            .query_async::<()>(&mut c)
                            .await
                    })
                    .await;
            }
        }
    }

    /// Runs `op` on Redis under the timeout; `None` when Redis failed, timed out or is
    /// paused after a recent failure (counted, and logged at most every few seconds).
    async fn redis<T, F, Fut>(&self, redis: &RedisStore, op: F) -> Option<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let now = redis.now_ms();
        if now < redis.paused_until_ms.load(Ordering::Relaxed) {
            return None;
        }
        let attempt = async {
            let connection = redis
                .connection
                .get_or_try_init(|| {
                    let config = ConnectionManagerConfig::new()
                        .set_number_of_retries(1)
                        .set_connection_timeout(redis.timeout)
                        .set_response_timeout(redis.timeout);
                    ConnectionManager::new_with_config(redis.client.clone(), config)
                })
                .await?
                .clone();
            op(connection).await
        };
        let error = match tokio::time::timeout(redis.timeout, attempt).await {
            Ok(Ok(value)) => return Some(value),
            Ok(Err(err)) => err.to_string(),
            Err(_) => format!("no answer within {:?}", redis.timeout),
        };
        self.inner.metrics.errors.increment(1);
        let now = redis.now_ms();
        let pause = u64::try_from(REDIS_PAUSE.as_millis()).unwrap_or(1000);
        redis.paused_until_ms.store(now + pause, Ordering::Relaxed);
        let warned = redis.warned_at_ms.load(Ordering::Relaxed);
        let gap = u64::try_from(WARN_EVERY.as_millis()).unwrap_or(5000);
        if (warned == 0 || now + 1 >= warned + gap)
            && redis
                .warned_at_ms
                .compare_exchange(warned, now + 1, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(cache = %self.inner.name, error = %error, "Redis cache unavailable; reading directly");
        }
        None
    }
}

impl RedisStore {
    fn key(&self, key: &str) -> String {
        format!("{}:{key}", self.prefix)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests;
