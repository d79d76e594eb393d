//! Confirmed orders leave the basket: once per event, only the ordered units.

use std::sync::Arc;

use tideway_bus::{Bus, EmbeddedBus, EmbeddedOptions, Event};
use tideway_ordering_api::{OrderConfirmed, OrderLine};

use crate::helpers::{COFFEE, FakeCatalog, MUG, Stored, TEA, spawn_app};

fn line(item_id: &str, quantity: i64) -> OrderLine {
    OrderLine {
        item_id: item_id.to_owned(),
        name: "x".to_owned(),
        unit_price_minor: 100,
        quantity,
    }
}

#[tokio::test]
async fn a_confirmed_order_removes_its_units_once() {
    for store in crate::helpers::stores().await {
        let catalog = FakeCatalog::new();
        let app = spawn_app(&store, catalog.in_process()).await;
        let bus = EmbeddedBus::new(EmbeddedOptions::default()).await.unwrap();
        let dyn_bus: Arc<dyn Bus> = Arc::new(bus.clone());
        app.basket.subscribe(dyn_bus.clone()).await.unwrap();
        bus.open();

        let (alice, bob) = (app.token("alice"), app.token("bob"));
        assert_eq!(app.add(&alice, COFFEE, 3).await.status, 200);
        assert_eq!(app.add(&alice, TEA, 1).await.status, 200);
        assert_eq!(app.add(&alice, MUG, 1).await.status, 200);
        assert_eq!(app.add(&bob, COFFEE, 2).await.status, 200);

        let event = Event::new(&OrderConfirmed {
            order_id: "o1".to_owned(),
            user_id: "alice".to_owned(),
            lines: vec![line(COFFEE, 2), line(TEA, 1)],
            total_minor: 300,
        })
        .unwrap();
        // The embedded bus returns once every consumer acknowledged.
        for _ in 0..3 {
            tokio::time::timeout(std::time::Duration::from_secs(10), dyn_bus.publish(&event))
                .await
                .expect("delivered within 10 s")
                .unwrap();
        }

        let mut alice_lines = app.stored("alice").await;
        alice_lines.sort();
        let mut expected = vec![(COFFEE.to_owned(), 1), (MUG.to_owned(), 1)];
        expected.sort();
        assert_eq!(alice_lines, expected, "{:?}", store.name());
        assert_eq!(app.stored("bob").await, vec![(COFFEE.to_owned(), 2)]);

        // Deliveries of one event racing one another still apply it once.
        let second = Event::new(&OrderConfirmed {
            order_id: "o2".to_owned(),
            user_id: "bob".to_owned(),
            lines: vec![line(COFFEE, 1)],
            total_minor: 100,
        })
        .unwrap();
        let deliveries = (0..4).map(|_| {
            tokio::time::timeout(std::time::Duration::from_secs(10), dyn_bus.publish(&second))
        });
        for delivered in futures_util::future::join_all(deliveries).await {
            delivered.expect("delivered within 10 s").unwrap();
        }
        assert_eq!(
            app.stored("bob").await,
            vec![(COFFEE.to_owned(), 1)],
            "{}",
            store.name()
        );
        if let Stored::Redis { client, prefix } = &app.stored {
            // The inbox record is kept, with an expiry, beside the basket it changed.
            let mut connection = client.get_multiplexed_async_connection().await.unwrap();
            let pttl: i64 = redis::cmd("PTTL")
                .arg(format!("{prefix}:{{bob}}:inbox:basket:{}", second.id))
                .query_async(&mut connection)
                .await
                .unwrap();
            assert!(pttl > 7 * 24 * 3600 * 1000, "{pttl}");
        }
        dyn_bus.shutdown().await;
    }
}
