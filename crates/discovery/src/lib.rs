//! Service discovery for Tideway: where the replicas of a service are, behind one trait.
//!
//! A caller (the gateway's balancer, a typed client) asks a [`Registry`] for the
//! [`Instance`]s of a service, or watches them; a replica registers itself once it is ready
//! and deregisters before it drains. Which registry runs is configuration
//! (`discovery.kind`, see [`DiscoveryConfig`] and [`connect`]):
//!
//! | kind | registry | for | register |
//! |---|---|---|---|
//! | `static` | [`StaticRegistry`] | one process, fixed `urls` | no-op |
//! | `nats` | [`NatsRegistry`] | `tideway up --distributed` | a key in a NATS KV bucket with a TTL, re-put every TTL/3 |
//! | `dns` | [`DnsRegistry`] | Kubernetes headless Services | no-op (Kubernetes registers pods) |
//!
//! # Timings (NATS)
//!
//! With the default TTL of 5 s a replica re-puts its key every 1.67 s. A clean stop
//! ([`Registration::deregister`]) deletes the key, and watchers see it gone as soon as the
//! delete marker arrives (milliseconds). A replica that vanishes without deregistering
//! (killed, partitioned) stops heartbeating; its key is removed by the bucket's `max_age`
//! and watchers drop it once its last heartbeat is older than the TTL, checked every TTL/10,
//! so within TTL + TTL/10. The watcher prunes on its own because NATS 2.9 removes expired
//! values without delivering a delete marker to watchers.
//!
//! # DNS
//!
//! [`DnsRegistry`] resolves A/AAAA records with `hickory-resolver` (tokio runtime,
//! `/etc/resolv.conf` and `/etc/hosts`, no TLS or HTTPS resolvers): unlike
//! `tokio::net::lookup_host`, which runs the blocking `getaddrinfo` on a thread and may be
//! cached by the C library, it is async, reports "no records" apart from a failure (a headless
//! Service without ready pods is an empty list, a timeout keeps the last answer), and caps
//! its cache to the re-resolve interval. Its build cost is a few seconds.
//!
//! # Lifecycle
//!
//! Every background task is owned: a [`Registration`] owns its heartbeat (cancelled on
//! [`Registration::deregister`] or drop), and each registry owns its watchers, which stop
//! when their last receiver is dropped or on [`Registry::shutdown`].
#![warn(missing_docs)]

pub mod config;
pub mod dns;
pub mod nats;
pub mod registration;
pub mod statics;

use std::{fmt, future::Future, pin::Pin, sync::Arc};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub use config::{DiscoveryConfig, DiscoveryKind, DnsConfig, NatsConfig};
pub use dns::DnsRegistry;
pub use nats::{NatsOptions, NatsRegistry};
pub use registration::Registration;
pub use statics::StaticRegistry;

/// A boxed, sendable future: what the [`Registry`] methods return, so `dyn Registry` works.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A boxed error from a backend (NATS, DNS).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// One replica of a service, as a registry records it (JSON in the NATS bucket).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Instance {
    /// The service's name, e.g. `catalog`.
    pub service: String,
    /// The replica's id, unique within its service, e.g. `catalog-7f3a`.
    pub id: String,
    /// The replica's HTTP base URL, e.g. `http://10.0.0.7:8082`.
    pub address: String,
    /// The version the replica runs, for canary routing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The zone (rack, availability zone) the replica runs in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
}

impl Instance {
    /// An instance without version or zone.
    pub fn new(
        service: impl Into<String>,
        id: impl Into<String>,
        address: impl Into<String>,
    ) -> Self {
        Self {
            service: service.into(),
            id: id.into(),
            address: address.into(),
            version: None,
            zone: None,
        }
    }

    /// This instance, running `version`.
    #[must_use]
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// This instance, in `zone`.
    #[must_use]
    pub fn with_zone(mut self, zone: impl Into<String>) -> Self {
        self.zone = Some(zone.into());
        self
    }

    /// Checks that the service and id can be registered: each one NATS subject token
    /// (`[A-Za-z0-9_-]+`, the key is `<service>.<id>`), and an `http(s)://` address.
    pub fn check(&self) -> Result<(), DiscoveryError> {
        check_token("service", &self.service)?;
        check_token("instance id", &self.id)?;
        if !(self.address.starts_with("http://") || self.address.starts_with("https://")) {
            return Err(DiscoveryError::invalid(
                "instance address",
                format!("{:?} is not an http(s) base URL", self.address),
            ));
        }
        Ok(())
    }
}

/// Where the replicas of each service are.
///
/// Used as `Arc<dyn Registry>`; the methods return [`BoxFuture`]s so the trait stays object
/// safe without a macro.
pub trait Registry: Send + Sync + fmt::Debug {
    /// Announces `instance` (call once it is ready) and keeps it announced until the
    /// returned handle is deregistered or dropped.
    fn register(&self, instance: Instance) -> BoxFuture<'_, Result<Registration, DiscoveryError>>;

    /// The instances of `service` now, sorted by id.
    fn instances<'a>(
        &'a self,
        service: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Instance>, DiscoveryError>>;

    /// The instances of `service`, sorted by id, updated as they come and go. The receiver
    /// holds the current list on return; its watcher stops when the last receiver drops.
    fn watch<'a>(
        &'a self,
        service: &'a str,
    ) -> BoxFuture<'a, Result<watch::Receiver<Vec<Instance>>, DiscoveryError>>;

    /// Stops every watcher this registry started (their receivers keep the last list).
    fn shutdown(&self) -> BoxFuture<'_, ()>;
}

/// Builds the registry that `config` selects (connecting to NATS for `nats`).
pub async fn connect(config: &DiscoveryConfig) -> Result<Arc<dyn Registry>, DiscoveryError> {
    config.check()?;
    Ok(match config.kind {
        DiscoveryKind::Static => Arc::new(StaticRegistry::from_urls(&config.urls)?),
        DiscoveryKind::Nats => Arc::new(NatsRegistry::connect(config.nats.options()).await?),
        DiscoveryKind::Dns => Arc::new(DnsRegistry::new(
            config.dns.targets()?,
            config.dns.interval(),
        )?),
    })
}

/// A failed discovery operation.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// A configuration key holds an unacceptable value.
    #[error("configuration key `{key}` is invalid: expected {expected}")]
    Config {
        /// The dotted key, e.g. `discovery.nats.ttl_ms`.
        key: String,
        /// What the key accepts.
        expected: String,
    },
    /// An instance or argument is not acceptable.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was invalid (`service`, `instance id`, …).
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The registry knows nothing of this service (static and DNS registries are fixed).
    #[error("unknown service {0:?}")]
    UnknownService(String),
    /// An instance record could not be encoded.
    #[error("cannot encode an instance")]
    Codec(#[from] serde_json::Error),
    /// The backend (NATS, DNS) failed.
    #[error("discovery backend error: {context}")]
    Backend {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: BoxError,
    },
}

impl DiscoveryError {
    pub(crate) fn config(key: impl Into<String>, expected: impl Into<String>) -> Self {
        Self::Config {
            key: key.into(),
            expected: expected.into(),
        }
    }

    pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            what,
            reason: reason.into(),
        }
    }

    pub(crate) fn backend(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Backend {
            context: context.into(),
            source: source.into(),
        }
    }
}

/// Whether `token` is one plain NATS subject token (no dots, wildcards or spaces).
pub(crate) fn is_token(token: &str) -> bool {
    !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub(crate) fn check_token(what: &'static str, token: &str) -> Result<(), DiscoveryError> {
    if is_token(token) {
        Ok(())
    } else {
        Err(DiscoveryError::invalid(
            what,
            format!("{token:?} must be non-empty letters, digits, `-` or `_`"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_round_trip_through_json_without_empty_fields() {
        let plain = Instance::new("catalog", "c1", "http://127.0.0.1:8082");
        let json = serde_json::to_string(&plain).expect("encode");
        assert_eq!(
            json,
            r#"{"service":"catalog","id":"c1","address":"http://127.0.0.1:8082"}"#
        );
        let full = plain.with_version("1.2.0").with_zone("eu-1a");
        let back: Instance =
            serde_json::from_str(&serde_json::to_string(&full).expect("encode")).expect("decode");
        assert_eq!(back, full);
    }

    #[test]
    fn instances_need_plain_tokens_and_http_addresses() {
        assert!(
            Instance::new("catalog", "c-1_a", "http://x:1")
                .check()
                .is_ok()
        );
        assert!(
            Instance::new("cat.alog", "c1", "http://x:1")
                .check()
                .is_err()
        );
        assert!(
            Instance::new("catalog", "c>", "http://x:1")
                .check()
                .is_err()
        );
        assert!(Instance::new("catalog", "", "http://x:1").check().is_err());
        assert!(Instance::new("catalog", "c1", "x:1").check().is_err());
    }
}
