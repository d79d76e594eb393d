//! Fixed instances from configuration: `discovery.urls.<service>`, one base URL (or a list)
//! per service, the way `urls.*` reach each service today.

use std::collections::BTreeMap;

use tokio::sync::watch;

use crate::{
    BoxFuture, DiscoveryError, Instance, Registration, Registry, check_token, config::Urls,
};

/// A registry of fixed instances. Registering is a no-op; watching yields the fixed list and
/// never changes.
#[derive(Debug)]
pub struct StaticRegistry {
    services: BTreeMap<String, watch::Sender<Vec<Instance>>>,
}

impl StaticRegistry {
    /// A registry of `instances`, grouped by their service.
    pub fn new(instances: impl IntoIterator<Item = Instance>) -> Result<Self, DiscoveryError> {
        let mut grouped: BTreeMap<String, Vec<Instance>> = BTreeMap::new();
        for instance in instances {
            instance.check()?;
            grouped
                .entry(instance.service.clone())
                .or_default()
                .push(instance);
        }
        let services = grouped
            .into_iter()
            .map(|(service, mut list)| {
                list.sort();
                (service, watch::Sender::new(list))
            })
            .collect();
        Ok(Self { services })
    }

    /// A registry of the base URLs per service in `urls`; the `n`th URL of `catalog` is the
    /// instance `catalog-<n>`.
    pub fn from_urls(urls: &BTreeMap<String, Urls>) -> Result<Self, DiscoveryError> {
        let mut instances = Vec::new();
        for (service, list) in urls {
            check_token("service", service)?;
            for (n, url) in list.as_slice().iter().enumerate() {
                instances.push(Instance::new(
                    service.as_str(),
                    format!("{service}-{n}"),
                    url.trim_end_matches('/'),
                ));
            }
        }
        Self::new(instances)
    }

    fn sender(&self, service: &str) -> Result<&watch::Sender<Vec<Instance>>, DiscoveryError> {
        self.services
            .get(service)
            .ok_or_else(|| DiscoveryError::UnknownService(service.to_owned()))
    }
}

impl Registry for StaticRegistry {
    fn register(&self, instance: Instance) -> BoxFuture<'_, Result<Registration, DiscoveryError>> {
        Box::pin(async move { Ok(Registration::fixed(instance)) })
    }

    fn instances<'a>(
        &'a self,
        service: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Instance>, DiscoveryError>> {
        Box::pin(async move { Ok(self.sender(service)?.borrow().clone()) })
    }

    fn watch<'a>(
        &'a self,
        service: &'a str,
    ) -> BoxFuture<'a, Result<watch::Receiver<Vec<Instance>>, DiscoveryError>> {
        // The senders live as long as the registry, so receivers stay open.
        Box::pin(async move { Ok(self.sender(service)?.subscribe()) })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Urls> {
        pairs
            .iter()
            .map(|(service, list)| {
                (
                    (*service).to_owned(),
                    Urls::Many(list.iter().map(|u| (*u).to_owned()).collect()),
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn lists_and_watches_the_configured_urls() {
        let registry = StaticRegistry::from_urls(&urls(&[
            (
                "catalog",
                &["http://127.0.0.1:8082/", "http://127.0.0.1:9082"],
            ),
            ("basket", &["http://127.0.0.1:8083"]),
        ]))
        .expect("valid");
        let catalog = registry.instances("catalog").await.expect("known");
        let addresses: Vec<_> = catalog.iter().map(|i| i.address.as_str()).collect();
        assert_eq!(
            addresses,
            ["http://127.0.0.1:8082", "http://127.0.0.1:9082"]
        );
        assert_eq!(catalog[0].id, "catalog-0");
        let watched = registry.watch("basket").await.expect("known");
        assert_eq!(watched.borrow().len(), 1);
        assert!(!watched.has_changed().expect("sender alive"));
        assert!(matches!(
            registry.instances("payment").await,
            Err(DiscoveryError::UnknownService(_))
        ));
    }

    #[tokio::test]
    async fn registering_changes_nothing() {
        let registry = StaticRegistry::from_urls(&urls(&[("catalog", &["http://127.0.0.1:8082"])]))
            .expect("valid");
        let registration = registry
            .register(Instance::new("catalog", "other", "http://127.0.0.1:1"))
            .await
            .expect("no-op");
        registration.deregister().await.expect("no-op");
        assert_eq!(registry.instances("catalog").await.expect("known").len(), 1);
    }
}
