//! The price cache: lines are priced from cached catalog answers, and the catalog's events
//! take a changed item out of the cache.

use std::sync::Arc;

use tideway_bus::{Bus, EmbeddedBus, EmbeddedOptions, Event};
use tideway_catalog_api::{ItemDeleted, PriceChanged};
use tideway_testkit::TestTokens;

use crate::helpers::{COFFEE, FakeCatalog, spawn_configured, stores};

#[tokio::test]
async fn prices_are_cached_until_the_catalog_announces_a_change() {
    for store in stores().await {
        let fake = FakeCatalog::new();
        let mut config = store.config();
        config.cache = tideway_basket::PriceCacheConfig::default();
        let app =
            spawn_configured(&config, config.ttl(), fake.in_process(), TestTokens::new()).await;
        let bus = EmbeddedBus::new(EmbeddedOptions::default()).await.unwrap();
        let dyn_bus: Arc<dyn Bus> = Arc::new(bus.clone());
        app.basket
            .follow_catalog(dyn_bus.clone(), "basket-1")
            .await
            .unwrap();
        bus.open();
        let token = app.token("alice");
        let before = app.add(&token, COFFEE, 1).await.view().items[0].unit_price_minor;

        // Changed behind the basket's back: the cached answer stands (within its TTL).
        fake.set_price(COFFEE, before + 100);
        assert_eq!(app.view(&token).await.items[0].unit_price_minor, before);

        // Announced: the next read asks the catalog.
        let event = Event::new(&PriceChanged {
            item_id: COFFEE.to_owned(),
            price_minor: before + 100,
            version: 2,
        })
        .unwrap()
        .with_subject(COFFEE);
        dyn_bus.publish(&event).await.unwrap();
        assert_eq!(
            app.view(&token).await.items[0].unit_price_minor,
            before + 100
        );

        // A deleted item: its line is marked and never priced from the cache.
        fake.remove(COFFEE);
        let event = Event::new(&ItemDeleted {
            item_id: COFFEE.to_owned(),
        })
        .unwrap()
        .with_subject(COFFEE);
        dyn_bus.publish(&event).await.unwrap();
        let view = app.view(&token).await;
        assert!(view.items[0].deleted, "{view:?}");
        assert_eq!(view.total_minor, 0);
        dyn_bus.shutdown().await;
    }
}
