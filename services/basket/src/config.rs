//! The basket service's configuration.
//!
//! The section is flattened into `[basket]` of the binary's file, where serde loses the
//! path below the section; so every value here that can be of the wrong type is read by a
//! function whose error names its own field (`` `store`: … ``), which the loader joins onto
//! the section (`basket.store`). Ranges are checked by [`Validate`], naming the full key.

use std::{fmt, time::Duration};

use serde::{Deserialize, Deserializer, Serialize, de::Error as _};
use tideway_runtime::config::{ConfigError, Validate};
use tideway_store::{DatabaseUrl, redact};

/// The longest basket lifetime accepted, in days (ten years).
const MAX_TTL_DAYS: u64 = 3650;

/// The basket service's configuration (`[basket]` in `tideway.toml`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Where baskets live: `sql` (the database at `database_url`) or `redis` (the server at
    /// `redis_url`).
    #[serde(deserialize_with = "store_kind")]
    pub store: StoreKind,
    /// `sqlite://path/to/file.db` or `postgres://user@host:port/db`; used when
    /// `store = "sql"`.
    pub database_url: DatabaseUrl,
    /// `redis://[:password@]host:port[/db]`; used when `store = "redis"`.
    #[serde(deserialize_with = "redis_url")]
    pub redis_url: RedisUrl,
    /// The first part of every Redis key (`tideway:basket`), so several shops or tests can
    /// share one server.
    #[serde(deserialize_with = "key_prefix")]
    pub redis_key_prefix: String,
    /// How long one Redis command may take, connecting included, before the request gets
    /// a 503, in milliseconds.
    #[serde(deserialize_with = "timeout_ms")]
    pub redis_timeout_ms: u64,
    /// A basket untouched (no line added or changed) for this many days is deleted.
    #[serde(deserialize_with = "ttl_days")]
    pub ttl_days: u64,
    /// The cache of the catalog's answers used to price lines (`basket.cache.*`).
    pub cache: PriceCacheConfig,
}

/// The cache of the catalog's items that prices basket lines (`[basket.cache]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PriceCacheConfig {
    /// `enabled`, `redis_url`, `redis_timeout_ms`, `key_prefix`.
    #[serde(flatten)]
    pub shared: tideway_cache::Shared,
    /// Items by id, invalidated by the catalog's events.
    pub price: tideway_cache::UseConfig,
}

impl Default for PriceCacheConfig {
    fn default() -> Self {
        Self {
            shared: tideway_cache::Shared::default(),
            price: tideway_cache::UseConfig::memory(10_000, 10_000),
        }
    }
}

/// Where baskets live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// The service's SQL database (SQLite or PostgreSQL).
    Sql,
    /// A Redis server shared by the basket's replicas.
    Redis,
}

/// A Redis URL, checked when the configuration is read. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct RedisUrl(String);

impl RedisUrl {
    /// Parses `url`: `redis://…` or `rediss://…` as the `redis` crate accepts it.
    pub fn parse(url: &str) -> Result<Self, String> {
        let url = url.trim();
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(format!(
                "a URL such as redis://127.0.0.1:6379, found {:?}",
                redact(url)
            ));
        }
        redis::Client::open(url).map_err(|err| format!("{} ({err})", redact(url)))?;
        Ok(Self(url.to_owned()))
    }

    /// The URL as configured, password included: for connecting only, never for logs.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({})", redact(&self.0))
    }
}

impl From<RedisUrl> for String {
    fn from(url: RedisUrl) -> Self {
        url.0
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            store: StoreKind::Sql,
            database_url: DatabaseUrl::sqlite("data/basket.db"),
            redis_url: RedisUrl("redis://127.0.0.1:6379".to_owned()),
            redis_key_prefix: "tideway:basket".to_owned(),
            redis_timeout_ms: 500,
            ttl_days: 30,
            cache: PriceCacheConfig::default(),
        }
    }
}

impl Config {
    /// How long an untouched basket lives.
    pub fn ttl(&self) -> Duration {
        Duration::from_secs(self.ttl_days.saturating_mul(24 * 3600))
    }

    /// The deadline of one Redis command.
    pub fn redis_timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms)
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=MAX_TTL_DAYS).contains(&self.ttl_days) {
            return Err(ConfigError::invalid(
                "basket.ttl_days",
                format!("a whole number of days from 1 to {MAX_TTL_DAYS}"),
            ));
        }
        if !(1..=60_000).contains(&self.redis_timeout_ms) {
            return Err(ConfigError::invalid(
                "basket.redis_timeout_ms",
                "a number of milliseconds from 1 to 60000",
            ));
        }
        if let Err(reason) = check_prefix(&self.redis_key_prefix) {
            return Err(ConfigError::invalid("basket.redis_key_prefix", reason));
        }
        if let Some((key, expected)) = self.cache.shared.problem() {
            return Err(ConfigError::invalid(
                format!("basket.cache.{key}"),
                expected,
            ));
        }
        if let Some((key, expected)) = self.cache.price.problem() {
            return Err(ConfigError::invalid(
                format!("basket.cache.price.{key}"),
                expected,
            ));
        }
        Ok(())
    }
}

/// A key prefix is 1 to 64 printable characters without spaces or braces (the braces of a
/// key are its Redis Cluster hash tag, which the store sets itself).
fn check_prefix(prefix: &str) -> Result<(), String> {
    let ok = !prefix.is_empty()
        && prefix.len() <= 64
        && prefix
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '{' && c != '}');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "1 to 64 printable characters without spaces or braces, found {prefix:?}"
        ))
    }
}

/// A value as the file or the environment gave it (`TIDEWAY_BASKET__TTL_DAYS=7` arrives
/// as a number, `=abc` as text).
#[derive(Deserialize)]
#[serde(untagged)]
enum Raw {
    Int(i64),
    Text(String),
}

fn raw<'de, D: Deserializer<'de>>(d: D, field: &str, expected: &str) -> Result<Raw, D::Error> {
    Raw::deserialize(d).map_err(|_| D::Error::custom(format!("`{field}`: expected {expected}")))
}

fn store_kind<'de, D: Deserializer<'de>>(d: D) -> Result<StoreKind, D::Error> {
    let expected = "`sql` or `redis`";
    match raw(d, "store", expected)? {
        Raw::Text(text) if text == "sql" => Ok(StoreKind::Sql),
        Raw::Text(text) if text == "redis" => Ok(StoreKind::Redis),
        Raw::Text(text) => Err(D::Error::custom(format!(
            "`store`: expected {expected}, found {text:?}"
        ))),
        Raw::Int(n) => Err(D::Error::custom(format!(
            "`store`: expected {expected}, found {n}"
        ))),
    }
}

fn redis_url<'de, D: Deserializer<'de>>(d: D) -> Result<RedisUrl, D::Error> {
    let expected = "a URL such as redis://127.0.0.1:6379";
    match raw(d, "redis_url", expected)? {
        Raw::Text(text) => RedisUrl::parse(&text)
            .map_err(|reason| D::Error::custom(format!("`redis_url`: {reason}"))),
        Raw::Int(n) => Err(D::Error::custom(format!(
            "`redis_url`: expected {expected}, found {n}"
        ))),
    }
}

fn key_prefix<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(
        match raw(d, "redis_key_prefix", "a string such as tideway:basket")? {
            Raw::Text(text) => text,
            Raw::Int(n) => n.to_string(),
        },
    )
}

fn whole<'de, D: Deserializer<'de>>(d: D, field: &str, expected: &str) -> Result<u64, D::Error> {
    let fail =
        |found: String| D::Error::custom(format!("`{field}`: expected {expected}, found {found}"));
    match raw(d, field, expected)? {
        Raw::Int(n) => u64::try_from(n).map_err(|_| fail(n.to_string())),
        Raw::Text(text) => text.trim().parse().map_err(|_| fail(format!("{text:?}"))),
    }
}

fn ttl_days<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    whole(d, "ttl_days", "a whole number of days")
}

fn timeout_ms<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    whole(d, "redis_timeout_ms", "a whole number of milliseconds")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(json: &str) -> String {
        serde_json::from_str::<Config>(json)
            .unwrap_err()
            .to_string()
    }

    fn invalid_key(config: &Config) -> String {
        match config.validate() {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn the_default_is_valid_and_a_wrong_url_is_refused_as_it_is_read() {
        assert!(Config::default().validate().is_ok());
        let err = refused(r#"{"database_url": "mysql://x"}"#);
        assert!(err.contains("sqlite://"), "{err}");
        let err = refused(r#"{"redis_url": "http://127.0.0.1:6379"}"#);
        assert!(err.starts_with("`redis_url`: "), "{err}");
    }

    #[test]
    fn every_value_of_the_wrong_type_names_its_field() {
        for (json, field) in [
            (r#"{"store": "mongo"}"#, "store"),
            (r#"{"store": 1}"#, "store"),
            (r#"{"redis_url": 6379}"#, "redis_url"),
            (r#"{"ttl_days": "soon"}"#, "ttl_days"),
            (r#"{"ttl_days": -1}"#, "ttl_days"),
            (r#"{"ttl_days": 1.5}"#, "ttl_days"),
            (r#"{"redis_timeout_ms": false}"#, "redis_timeout_ms"),
            (r#"{"redis_key_prefix": []}"#, "redis_key_prefix"),
        ] {
            let err = refused(json);
            assert!(err.starts_with(&format!("`{field}`: ")), "{json}: {err}");
        }
    }

    #[test]
    fn values_read_from_text_or_numbers_and_ranges_name_the_full_key() {
        let config: Config = serde_json::from_str(
            r#"{"store": "redis", "redis_url": "redis://:pw@10.0.0.1:6380/2",
                "ttl_days": "7", "redis_timeout_ms": 250, "redis_key_prefix": 42}"#,
        )
        .unwrap();
        assert_eq!(config.store, StoreKind::Redis);
        assert_eq!(config.redis_url.expose(), "redis://:pw@10.0.0.1:6380/2");
        assert!(!format!("{config:?}").contains("pw"), "{config:?}");
        assert_eq!(config.ttl(), Duration::from_secs(7 * 24 * 3600));
        assert_eq!(config.redis_timeout(), Duration::from_millis(250));
        assert_eq!(config.redis_key_prefix, "42");

        let with = |change: fn(&mut Config)| {
            let mut config = Config::default();
            change(&mut config);
            invalid_key(&config)
        };
        assert_eq!(with(|c| c.ttl_days = 0), "basket.ttl_days");
        assert_eq!(with(|c| c.ttl_days = 3651), "basket.ttl_days");
        assert_eq!(with(|c| c.redis_timeout_ms = 0), "basket.redis_timeout_ms");
        assert_eq!(
            with(|c| c.redis_key_prefix = "a {b}".into()),
            "basket.redis_key_prefix"
        );
        assert_eq!(
            with(|c| c.redis_key_prefix = String::new()),
            "basket.redis_key_prefix"
        );
    }
}
