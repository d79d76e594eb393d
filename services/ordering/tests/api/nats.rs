//! The happy path over NATS JetStream.

use std::sync::Arc;

use tideway_bus::Bus;
use tideway_inventory_api::CommitStock;
use tideway_ordering_api::{OrderConfirmed, OrderStatus};

use crate::helpers::{config, spawn_on};

#[tokio::test]
async fn a_paid_order_is_confirmed_over_nats() {
    let Some(nats) = tideway_testkit::nats().await else {
        return;
    };
    let db = tideway_testkit::sqlite().await;
    let bus: Arc<dyn Bus> = Arc::new(nats.bus().await);
    let app = spawn_on(config(db.url()), bus.clone()).await;
    let token = app.token("alice");
    let order = app.checkout_to_end(&token, None).await;
    assert_eq!(order.status, OrderStatus::Confirmed, "{order:?}");
    let order = app.finished(&token, &order.id).await;
    assert_eq!(order.timeline.len(), 4);
    assert!(order.timeline.iter().all(|e| e.status == "done"));
    assert_eq!(app.log.of::<OrderConfirmed>(&order.id).len(), 1);
    assert_eq!(app.log.of::<CommitStock>(&order.id).len(), 1);
    app.ordering.shutdown().await;
    bus.shutdown().await;
}
