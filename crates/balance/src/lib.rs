//! Load-balanced, resilient HTTP calls from one Tideway process to another service's
//! replicas.
//!
//! A [`Balancer`] follows a service's instances in discovery (`tideway-discovery`'s
//! [`Registry`]) and picks one per call: power of two choices on a Peak-EWMA latency cost
//! ([`Policy::P2c`], the default) or round robin. Each replica has its own connection pool
//! and circuit breaker; every replica's `/health/ready` is checked on an interval; a replica
//! failing calls in a row (5xx answers or connection failures) is ejected for a growing
//! period, never more than `ejection.max_share` of them at once. Around the pick sit the
//! layers of `tideway-resilience`: a deadline over the whole call, retries under a budget,
//! a bulkhead per service ([`stack`](crate::stack) has the order).
//!
//! [`Balancers::transport`] hands the stack to typed clients and the gateway as a
//! `tideway_client::Transport`, so the contract crates stay free of discovery and NATS:
//! the transport only holds a boxed tower service. In-process transports (the embedded
//! shape) never go through here. [`Balancers::availability`] hands the same view of the
//! replicas to a caller that only needs to know whether the service can take work now.
//!
//! Metrics per replica (labels `service`, `instance`): `tideway_upstream_requests_total`,
//! `tideway_upstream_errors_total`, `tideway_upstream_ejections_total`,
//! `tideway_upstream_ewma_latency_seconds`, `tideway_upstream_ready`; and the layers' own
//! (`tideway_breaker_state{upstream="<service>/<instance>"}`, `tideway_retries_total`, …).
//! See `docs/balancing.md`.
#![warn(missing_docs)]

mod balancer;
pub mod config;
mod load;
mod stack;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use tideway_client::{Availability, Transport};
use tideway_discovery::{DiscoveryError, Registry};
use tokio::sync::Mutex;

pub use balancer::{Balancer, EndpointError, InstanceStatus, NoInstances, ServiceStatus};
pub use config::{BalanceConfig, InvalidKey, Policy};

/// A balanced transport could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A layer refused a parameter.
    #[error(transparent)]
    Layer(#[from] tideway_resilience::ConfigError),
    /// A value of the `balance` section is refused.
    #[error(transparent)]
    Config(#[from] InvalidKey),
    /// The service's instances cannot be followed.
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
}

/// One balancer per service, started on first use and shared by every transport to it.
#[derive(Clone)]
pub struct Balancers {
    registry: Arc<dyn Registry>,
    config: BalanceConfig,
    started: Arc<Mutex<BTreeMap<String, Balancer>>>,
}

impl std::fmt::Debug for Balancers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balancers")
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

impl Balancers {
    /// Balancers over `registry`'s instances, configured by `config` (checked first).
    pub fn new(registry: Arc<dyn Registry>, config: BalanceConfig) -> Result<Self, InvalidKey> {
        config.check()?;
        Ok(Self {
            registry,
            config,
            started: Arc::new(Mutex::new(BTreeMap::new())),
        })
    }

    /// The balancer of `service`, started (watching discovery) if it was not yet.
    pub async fn balancer(&self, service: &str) -> Result<Balancer, DiscoveryError> {
        let mut started = self.started.lock().await;
        if let Some(balancer) = started.get(service) {
            return Ok(balancer.clone());
        }
        let balancer =
            Balancer::watch(service, Arc::clone(&self.registry), self.config.clone()).await?;
        started.insert(service.to_owned(), balancer.clone());
        Ok(balancer)
    }

    /// A transport to the replicas of `service` registered with the version label
    /// `version` (a balancer of their own, started on first use), every call under
    /// `deadline`: what a gateway route's version `catalog@v2` is reached through.
    pub async fn transport_version(
        &self,
        service: &str,
        version: &str,
        deadline: Duration,
    ) -> Result<Transport, BuildError> {
        let key = format!("{service}@{version}");
        let balancer = {
            let mut started = self.started.lock().await;
            match started.get(&key) {
                Some(balancer) => balancer.clone(),
                None => {
                    let balancer = Balancer::watch_version(
                        service,
                        Some(version),
                        Arc::clone(&self.registry),
                        self.config.clone(),
                    )
                    .await?;
                    started.insert(key, balancer.clone());
                    balancer
                }
            }
        };
        stack::transport(&balancer, &self.config, deadline)
    }

    /// Whether `service` can take a call now, read from its balancer's view of its replicas
    /// ([`Balancer::available`]; the balancer is started if it was not yet).
    pub async fn availability(&self, service: &str) -> Result<Availability, DiscoveryError> {
        let balancer = self.balancer(service).await?;
        Ok(Availability::from_view(service, move || {
            balancer.available()
        }))
    }

    /// A transport to `service` through its balancer, every call under `deadline`.
    pub async fn transport(
        &self,
        service: &str,
        deadline: Duration,
    ) -> Result<Transport, BuildError> {
        let balancer = self.balancer(service).await?;
        stack::transport(&balancer, &self.config, deadline)
    }

    /// The replicas of every service balanced to so far, sorted by service.
    pub async fn status(&self) -> Vec<ServiceStatus> {
        self.started
            .lock()
            .await
            .values()
            .map(Balancer::status)
            .collect()
    }

    /// Stops every balancer's watcher and health checks.
    pub async fn shutdown(&self) {
        let balancers: Vec<Balancer> = self.started.lock().await.values().cloned().collect();
        for balancer in balancers {
            balancer.shutdown().await;
        }
    }
}

/// A transport to `balancer`'s service (for callers holding a [`Balancer`] of their own,
/// such as [`Balancer::fixed`] in benchmarks and tests).
pub fn transport(
    balancer: &Balancer,
    config: &BalanceConfig,
    deadline: Duration,
) -> Result<Transport, BuildError> {
    config.check()?;
    stack::transport(balancer, config, deadline)
}
