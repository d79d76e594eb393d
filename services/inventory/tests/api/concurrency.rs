//! The last units under a crowd: never oversold, never negative, on both engines.

use std::sync::Arc;

use tideway_inventory::ReservationStatus;
use tideway_inventory_api::{StockRejected, StockReserved};
use tokio::task::JoinSet;

use crate::helpers::{TestApp, reserve, spawn_app};

const ORDERS: usize = 50;
const UNITS: i64 = 10;

/// Publishes `ORDERS` single-unit orders at once and answers (reserved, rejected) replies.
async fn crowd(app: &Arc<TestApp>, item: &str) -> (usize, usize) {
    let mut publishes = JoinSet::new();
    for n in 0..ORDERS {
        let bus = app.bus.clone();
        let event = reserve(&format!("crowd-{n}"), &[(item, 1)]);
        publishes.spawn(async move { bus.publish(&event).await });
    }
    while let Some(published) = publishes.join_next().await {
        published.unwrap().unwrap();
    }
    let (mut reserved, mut rejected) = (0, 0);
    let mut orders = std::collections::HashSet::new();
    for _ in 0..ORDERS {
        let reply = app.reply().await;
        assert!(
            orders.insert(reply.subject.clone().unwrap()),
            "one reply per order"
        );
        if reply.is::<StockReserved>() {
            reserved += 1;
        } else {
            let rejected_reply = reply.decode::<StockRejected>().unwrap();
            assert_eq!(rejected_reply.item_id, item);
            rejected += 1;
        }
    }
    (reserved, rejected)
}

#[tokio::test]
async fn fifty_concurrent_orders_for_the_last_ten_units_confirm_exactly_ten() {
    for db in tideway_testkit::backends().await {
        let app = Arc::new(spawn_app(db.url()).await);
        app.inventory.set_stock("last", UNITS).await.unwrap();

        let (reserved, rejected) = crowd(&app, "last").await;
        assert_eq!((reserved, rejected), (10, 40), "{:?}", db.backend());
        assert_eq!(app.counts("last").await, (0, UNITS, 0));

        let snapshot = app.inventory.snapshot().await.unwrap();
        let held = snapshot
            .reservations
            .iter()
            .filter(|r| r.status == ReservationStatus::Reserved)
            .count();
        assert_eq!(held, 10);
        assert!(
            snapshot
                .stock
                .iter()
                .all(|s| s.available >= 0 && s.reserved >= 0 && s.committed >= 0)
        );
        Arc::into_inner(app).unwrap().stop().await;
    }
}
