//! The `discovery` section of the configuration: which registry, and its settings.
//!
//! ```toml
//! [discovery]
//! kind = "nats"                 # "static" (default) | "nats" | "dns"
//!
//! [discovery.urls]              # kind = "static": one base URL, or a list, per service
//! catalog = "http://127.0.0.1:8082"
//!
//! [discovery.nats]              # kind = "nats"
//! url = "nats://127.0.0.1:4222"
//! bucket = "tideway_registry"
//! ttl_ms = 5000                 # a replica re-puts its key every ttl_ms / 3
//!
//! [discovery.dns]               # kind = "dns"
//! interval_ms = 5000
//! names = { catalog = "catalog.tideway.svc.cluster.local:8080" }
//! ```

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{DiscoveryError, dns::DnsTarget, is_token, nats::NatsOptions};

/// The shortest TTL accepted: heartbeats every TTL/3 must stay well apart.
pub const MIN_TTL_MS: u64 = 300;
/// The shortest DNS re-resolve interval accepted.
pub const MIN_INTERVAL_MS: u64 = 100;

/// Which registry to run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiscoveryKind {
    /// Fixed instances from `discovery.urls`.
    #[default]
    Static,
    /// A NATS KV bucket with TTL heartbeats.
    Nats,
    /// DNS A/AAAA records, re-resolved on an interval.
    Dns,
}

/// The `discovery` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiscoveryConfig {
    /// `discovery.kind`: which registry.
    pub kind: DiscoveryKind,
    /// `discovery.drain_delay_ms`: how long a stopping replica keeps serving after it has
    /// deregistered, so that callers watching the registry stop picking it before it stops
    /// accepting (0: drain at once).
    pub drain_delay_ms: u64,
    /// `discovery.urls.<service>`: the base URL (or URLs) of each service, for `static`.
    pub urls: BTreeMap<String, Urls>,
    /// `discovery.nats`: the bucket, for `nats`.
    pub nats: NatsConfig,
    /// `discovery.dns`: the names, for `dns`.
    pub dns: DnsConfig,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            kind: DiscoveryKind::default(),
            drain_delay_ms: DEFAULT_DRAIN_DELAY_MS,
            urls: BTreeMap::new(),
            nats: NatsConfig::default(),
            dns: DnsConfig::default(),
        }
    }
}

/// The default of `discovery.drain_delay_ms`: well past the time a watcher takes to see a
/// deregistration (milliseconds on NATS KV).
pub const DEFAULT_DRAIN_DELAY_MS: u64 = 1_000;

/// One base URL or several (`catalog = "http://…"` or `catalog = ["http://…", …]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Urls {
    /// A single URL.
    One(String),
    /// Several URLs.
    Many(Vec<String>),
}

impl Urls {
    /// The URLs.
    pub fn as_slice(&self) -> &[String] {
        match self {
            Self::One(url) => std::slice::from_ref(url),
            Self::Many(urls) => urls,
        }
    }
}

/// The `discovery.nats` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    /// `discovery.nats.url`: the server.
    pub url: String,
    /// `discovery.nats.bucket`: the KV bucket (created if missing).
    pub bucket: String,
    /// `discovery.nats.ttl_ms`: how long a record lives without a heartbeat.
    pub ttl_ms: u64,
    /// `discovery.nats.connect_timeout_ms`: how long to wait for the server at start.
    pub connect_timeout_ms: u64,
}

impl Default for NatsConfig {
    fn default() -> Self {
        let options = NatsOptions::default();
        Self {
            url: options.url,
            bucket: options.bucket,
            ttl_ms: millis(options.ttl),
            connect_timeout_ms: millis(options.connect_timeout),
        }
    }
}

impl NatsConfig {
    /// The registry options these settings describe.
    pub fn options(&self) -> NatsOptions {
        NatsOptions {
            url: self.url.clone(),
            bucket: self.bucket.clone(),
            ttl: Duration::from_millis(self.ttl_ms),
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
        }
    }
}

/// The `discovery.dns` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DnsConfig {
    /// `discovery.dns.names.<service>`: `host:port` to resolve for each service, e.g.
    /// `catalog.tideway.svc.cluster.local:8080`.
    pub names: BTreeMap<String, String>,
    /// `discovery.dns.interval_ms`: how often watchers re-resolve.
    pub interval_ms: u64,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            names: BTreeMap::new(),
            interval_ms: 5_000,
        }
    }
}

impl DnsConfig {
    /// The re-resolve interval.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }

    /// The names to resolve, one per service.
    pub fn targets(&self) -> Result<Vec<DnsTarget>, DiscoveryError> {
        self.names
            .iter()
            .map(|(service, name)| {
                let key = format!("discovery.dns.names.{service}");
                if !is_token(service) {
                    return Err(DiscoveryError::config(
                        key,
                        "a service name of letters, digits, `-` or `_`",
                    ));
                }
                DnsTarget::parse(service, name)
                    .ok_or_else(|| DiscoveryError::config(key, "`host:port`, e.g. `catalog:8080`"))
            })
            .collect()
    }
}

impl DiscoveryConfig {
    /// How long a stopping replica serves on after deregistering.
    pub fn drain_delay(&self) -> Duration {
        Duration::from_millis(self.drain_delay_ms)
    }

    /// Returns the first unacceptable value, naming its key. Only the selected kind's
    /// section is checked.
    pub fn check(&self) -> Result<(), DiscoveryError> {
        if self.drain_delay_ms > 60_000 {
            return Err(DiscoveryError::config(
                "discovery.drain_delay_ms",
                "milliseconds up to 60000",
            ));
        }
        match self.kind {
            DiscoveryKind::Static => {
                for (service, urls) in &self.urls {
                    let key = format!("discovery.urls.{service}");
                    if !is_token(service) {
                        return Err(DiscoveryError::config(
                            key,
                            "a service name of letters, digits, `-` or `_`",
                        ));
                    }
                    let plain_http = |url: &String| {
                        url.strip_prefix("http://")
                            .or_else(|| url.strip_prefix("https://"))
                            .is_some_and(|rest| !rest.is_empty())
                    };
                    if urls.as_slice().is_empty() || !urls.as_slice().iter().all(plain_http) {
                        return Err(DiscoveryError::config(
                            key,
                            "one or more http(s) base URLs, e.g. `http://127.0.0.1:8082`",
                        ));
                    }
                }
            }
            DiscoveryKind::Nats => {
                let nats = &self.nats;
                if nats.url.trim().is_empty() {
                    return Err(DiscoveryError::config(
                        "discovery.nats.url",
                        "a NATS server URL, e.g. `nats://127.0.0.1:4222`",
                    ));
                }
                if !is_token(&nats.bucket) {
                    return Err(DiscoveryError::config(
                        "discovery.nats.bucket",
                        "a bucket name of letters, digits, `-` or `_`",
                    ));
                }
                if nats.ttl_ms < MIN_TTL_MS {
                    return Err(DiscoveryError::config(
                        "discovery.nats.ttl_ms",
                        format!("at least {MIN_TTL_MS} milliseconds"),
                    ));
                }
                if nats.connect_timeout_ms == 0 {
                    return Err(DiscoveryError::config(
                        "discovery.nats.connect_timeout_ms",
                        "a positive number of milliseconds",
                    ));
                }
            }
            DiscoveryKind::Dns => {
                if self.dns.interval_ms < MIN_INTERVAL_MS {
                    return Err(DiscoveryError::config(
                        "discovery.dns.interval_ms",
                        format!("at least {MIN_INTERVAL_MS} milliseconds"),
                    ));
                }
                self.dns.targets()?;
            }
        }
        Ok(())
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(config: &DiscoveryConfig) -> String {
        match config.check() {
            Err(DiscoveryError::Config { key, .. }) => key,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_static_and_valid() {
        let config = DiscoveryConfig::default();
        assert_eq!(config.kind, DiscoveryKind::Static);
        assert_eq!(config.nats.ttl_ms, 5_000);
        assert_eq!(config.nats.bucket, "tideway_registry");
        assert_eq!(config.dns.interval_ms, 5_000);
        config.check().expect("defaults are valid");
    }

    #[test]
    fn reads_every_kind_from_json() {
        let config: DiscoveryConfig = serde_json::from_str(
            r#"{"kind":"nats","urls":{"catalog":"http://a:1","basket":["http://b:1","http://b:2"]},
                "nats":{"ttl_ms":900},"dns":{"names":{"catalog":"localhost:8082"}}}"#,
        )
        .expect("parse");
        assert_eq!(config.kind, DiscoveryKind::Nats);
        assert_eq!(config.urls["basket"].as_slice().len(), 2);
        assert_eq!(config.nats.options().ttl, Duration::from_millis(900));
        assert_eq!(config.nats.url, "nats://127.0.0.1:4222");
        assert_eq!(config.dns.targets().expect("valid")[0].port, 8082);
        assert!(serde_json::from_str::<DiscoveryConfig>(r#"{"kind":"consul"}"#).is_err());
        assert!(serde_json::from_str::<DiscoveryConfig>(r#"{"nats":{"ttl":1}}"#).is_err());
    }

    #[test]
    fn names_the_bad_key() {
        let mut config = DiscoveryConfig {
            kind: DiscoveryKind::Nats,
            ..DiscoveryConfig::default()
        };
        config.nats.ttl_ms = 10;
        assert_eq!(key_of(&config), "discovery.nats.ttl_ms");
        config.nats.ttl_ms = 5_000;
        config.nats.bucket = "a.b".into();
        assert_eq!(key_of(&config), "discovery.nats.bucket");

        let mut config = DiscoveryConfig::default();
        config
            .urls
            .insert("catalog".into(), Urls::One("ftp://x".into()));
        assert_eq!(key_of(&config), "discovery.urls.catalog");

        let mut config = DiscoveryConfig {
            kind: DiscoveryKind::Dns,
            ..DiscoveryConfig::default()
        };
        config.dns.names.insert("catalog".into(), "no-port".into());
        assert_eq!(key_of(&config), "discovery.dns.names.catalog");
        config
            .dns
            .names
            .insert("catalog".into(), "catalog:8080".into());
        config.dns.interval_ms = 0;
        assert_eq!(key_of(&config), "discovery.dns.interval_ms");
    }
}
