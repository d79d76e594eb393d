//! A registry from DNS, for Kubernetes: a headless Service's name resolves to the addresses
//! of its ready pods, so resolving it again on an interval follows them as they come and go.
//!
//! Kubernetes registers and removes pods itself (through readiness), so
//! [`register`](Registry::register) is a no-op. Each address becomes an instance with the id
//! `<ip>:<port>` and the address `http://<ip>:<port>`. A name without records (a Service with
//! no ready pod) is an empty list; a failed lookup (timeout, unreachable server) keeps the
//! last answer for watchers and is an error for [`instances`](Registry::instances).

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use hickory_resolver::TokioResolver;
use tokio::sync::watch;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{Instrument, debug, info_span, instrument, warn};

use crate::{BoxFuture, DiscoveryError, Instance, Registration, Registry};

/// The name and port to resolve for one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsTarget {
    /// The service.
    pub service: String,
    /// The DNS name (or an IP literal), e.g. `catalog.tideway.svc.cluster.local`.
    pub host: String,
    /// The port the service listens on.
    pub port: u16,
}

impl DnsTarget {
    /// Parses `host:port` (`[v6]:port` for an IPv6 literal) for `service`.
    pub fn parse(service: &str, name: &str) -> Option<Self> {
        let (host, port) = name.rsplit_once(':')?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
        if host.is_empty() || host.contains(char::is_whitespace) || host.contains('/') {
            return None;
        }
        Some(Self {
            service: service.to_owned(),
            host: host.to_owned(),
            port,
        })
    }
}

/// A registry that resolves a name per service; see the [module docs](self).
#[derive(Debug)]
pub struct DnsRegistry {
    resolver: TokioResolver,
    targets: BTreeMap<String, DnsTarget>,
    interval: Duration,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl DnsRegistry {
    /// A registry resolving `targets` with the system's resolver configuration
    /// (`/etc/resolv.conf`, `/etc/hosts`); watchers re-resolve every `interval`.
    pub fn new(
        targets: impl IntoIterator<Item = DnsTarget>,
        interval: Duration,
    ) -> Result<Self, DiscoveryError> {
        if interval.is_zero() {
            return Err(DiscoveryError::invalid("interval", "must be positive"));
        }
        let mut builder = TokioResolver::builder_tokio().map_err(|err| {
            DiscoveryError::backend("read the system's resolver configuration", err)
        })?;
        // Cache no longer than one interval, so each re-resolve sees pods come and go.
        let options = builder.options_mut();
        options.positive_max_ttl = Some(interval);
        options.negative_max_ttl = Some(interval);
        Ok(Self {
            resolver: builder.build(),
            targets: targets
                .into_iter()
                .map(|t| (t.service.clone(), t))
                .collect(),
            interval,
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
        })
    }

    fn target(&self, service: &str) -> Result<&DnsTarget, DiscoveryError> {
        self.targets
            .get(service)
            .ok_or_else(|| DiscoveryError::UnknownService(service.to_owned()))
    }
}

/// The instances `target` resolves to, sorted.
#[instrument(skip_all, fields(service = %target.service, host = %target.host), err)]
async fn resolve(
    resolver: &TokioResolver,
    target: &DnsTarget,
) -> Result<Vec<Instance>, DiscoveryError> {
    let ips: Vec<IpAddr> = match resolver.lookup_ip(target.host.as_str()).await {
        Ok(lookup) => lookup.iter().collect(),
        Err(err) if err.is_no_records_found() => Vec::new(),
        Err(err) => return Err(DiscoveryError::backend("resolve a service's name", err)),
    };
    let mut instances: Vec<Instance> = ips
        .into_iter()
        .map(|ip| {
            let addr = SocketAddr::new(ip, target.port);
            Instance::new(
                target.service.as_str(),
                addr.to_string(),
                format!("http://{addr}"),
            )
        })
        .collect();
    instances.sort();
    instances.dedup();
    Ok(instances)
}

impl Registry for DnsRegistry {
    fn register(&self, instance: Instance) -> BoxFuture<'_, Result<Registration, DiscoveryError>> {
        Box::pin(async move { Ok(Registration::fixed(instance)) })
    }

    fn instances<'a>(
        &'a self,
        service: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Instance>, DiscoveryError>> {
        Box::pin(async move { resolve(&self.resolver, self.target(service)?).await })
    }

    fn watch<'a>(
        &'a self,
        service: &'a str,
    ) -> BoxFuture<'a, Result<watch::Receiver<Vec<Instance>>, DiscoveryError>> {
        Box::pin(async move {
            let target = self.target(service)?.clone();
            let first = resolve(&self.resolver, &target).await?;
            let (sender, receiver) = watch::channel(first);
            let task = watcher(
                self.resolver.clone(),
                target,
                self.interval,
                sender,
                self.cancel.clone(),
            );
            self.tasks
                .spawn(task.instrument(info_span!("dns_watch", service)));
            Ok(receiver)
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.cancel.cancel();
            self.tasks.close();
            self.tasks.wait().await;
        })
    }
}

/// Re-resolves `target` every `interval` into `sender` until `cancel` or until no receiver
/// is left.
async fn watcher(
    resolver: TokioResolver,
    target: DnsTarget,
    interval: Duration,
    sender: watch::Sender<Vec<Instance>>,
    cancel: CancellationToken,
) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            () = sender.closed() => break,
            _ = ticks.tick() => {}
        }
        let next = tokio::select! {
            () = cancel.cancelled() => break,
            next = resolve(&resolver, &target) => next,
        };
        match next {
            Ok(next) => {
                sender.send_if_modified(|current| {
                    if *current == next {
                        false
                    } else {
                        *current = next;
                        true
                    }
                });
            }
            Err(err) => warn!(error = %err, "Re-resolving failed; keeping the last addresses."),
        }
    }
    debug!("The DNS watch stopped.");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_and_port() {
        let target = DnsTarget::parse("catalog", "catalog.tideway.svc:8080").expect("valid");
        assert_eq!(
            (target.host.as_str(), target.port),
            ("catalog.tideway.svc", 8080)
        );
        let v6 = DnsTarget::parse("catalog", "[::1]:80").expect("valid");
        assert_eq!(v6.host, "::1");
        assert!(DnsTarget::parse("catalog", "catalog").is_none());
        assert!(DnsTarget::parse("catalog", ":80").is_none());
        assert!(DnsTarget::parse("catalog", "catalog:0").is_none());
        assert!(DnsTarget::parse("catalog", "catalog:http").is_none());
    }

    #[tokio::test]
    async fn resolves_localhost_and_watches_it() {
        let targets = [
            DnsTarget::parse("catalog", "localhost:8082").expect("valid"),
            DnsTarget::parse("basket", "127.0.0.1:8083").expect("valid"),
        ];
        let registry =
            DnsRegistry::new(targets, Duration::from_millis(100)).expect("resolver config");
        let catalog = registry
            .instances("catalog")
            .await
            .expect("localhost resolves");
        assert!(
            catalog
                .iter()
                .any(|i| i.address == "http://127.0.0.1:8082" || i.address == "http://[::1]:8082"),
            "{catalog:?}"
        );
        let basket = registry
            .instances("basket")
            .await
            .expect("a literal resolves");
        assert_eq!(basket.len(), 1);
        assert_eq!(basket[0].id, "127.0.0.1:8083");

        let watched = registry.watch("catalog").await.expect("watch");
        assert_eq!(*watched.borrow(), catalog);
        // A few re-resolves later the answer is the same and nothing was published.
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert!(!watched.has_changed().expect("watcher alive"));
        registry.shutdown().await;
        assert!(watched.has_changed().is_err(), "the watcher stopped");
        assert!(matches!(
            registry.instances("payment").await,
            Err(DiscoveryError::UnknownService(_))
        ));
    }
}
