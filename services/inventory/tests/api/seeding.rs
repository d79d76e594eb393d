//! Seeding from the catalog: in the background, retrying until the catalog answers, never
//! overwriting a row that exists.

use std::sync::atomic::Ordering;

use tideway_bus::{EmbeddedBus, EmbeddedOptions};
use tideway_testkit::within;

use crate::helpers::{DEADLINE, FakeCatalog, TestBus, spawn_with};

#[tokio::test]
async fn stock_is_seeded_once_the_catalog_answers_without_overwriting() {
    for db in tideway_testkit::backends().await {
        // 250 items: three pages of 100; the catalog starts later than the inventory.
        let catalog = FakeCatalog::with_items(250, false);
        let bus = EmbeddedBus::new(EmbeddedOptions::default()).await.unwrap();
        let app = spawn_with(db.url(), TestBus::Embedded(bus), true, catalog.client()).await;
        // An admin's change made before seeding is kept.
        app.inventory.set_stock("item-0003", 42).await.unwrap();
        assert!(
            tokio::time::timeout(
                std::time::Duration::from_millis(300),
                app.inventory.seeded()
            )
            .await
            .is_err(),
            "not seeded while the catalog is down"
        );
        catalog.up.store(true, Ordering::SeqCst);
        assert!(within(DEADLINE, "the seeding", app.inventory.seeded()).await);
        let snapshot = app.inventory.snapshot().await.unwrap();
        assert_eq!(snapshot.stock.len(), 250);
        assert_eq!(app.counts("item-0003").await, (42, 0, 0));
        assert_eq!(app.counts("item-0010").await, (3, 0, 0));
        assert_eq!(app.counts("item-0249").await, (249 % 7, 0, 0));
        app.stop().await;

        // A restart seeds again without changing anything.
        let bus = EmbeddedBus::new(EmbeddedOptions::default()).await.unwrap();
        let again = spawn_with(db.url(), TestBus::Embedded(bus), true, catalog.client()).await;
        assert!(within(DEADLINE, "the seeding", again.inventory.seeded()).await);
        assert_eq!(again.inventory.snapshot().await.unwrap(), snapshot);
        again.stop().await;
    }
}

#[tokio::test]
async fn without_seeding_the_inventory_is_seeded_at_once_and_empty() {
    for db in tideway_testkit::backends().await {
        let catalog = FakeCatalog::with_items(5, true);
        let bus = EmbeddedBus::new(EmbeddedOptions::default()).await.unwrap();
        let app = spawn_with(db.url(), TestBus::Embedded(bus), false, catalog.client()).await;
        assert!(app.inventory.seeded().await);
        assert!(app.inventory.snapshot().await.unwrap().stock.is_empty());
        app.stop().await;
    }
}
