//! Stock levels are announced: every change of `available` publishes a
//! `StockLevelChanged` with a version that only grows, in the change's transaction.

use std::sync::Arc;

use tideway_bus::{Event, EventType as _, Handler, SubscribeOptions};
use tideway_inventory_api::{StockLevelChanged, StockRejected};
use tokio::sync::mpsc;

use crate::helpers::{DEADLINE, release, reserve, spawn_app};

#[tokio::test]
async fn every_change_of_available_is_announced_with_a_growing_version() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(db.url()).await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let handler: Arc<dyn Handler> = Arc::new(move |event: Event| {
            if let Ok(level) = event.decode::<StockLevelChanged>() {
                let _ = tx.send(level);
            }
            async { Ok::<_, std::io::Error>(()) }
        });
        app.bus
            .subscribe(
                SubscribeOptions::new("catalog", StockLevelChanged::SUBJECT),
                handler,
            )
            .await
            .unwrap();
        let mut next = async || {
            tokio::time::timeout(DEADLINE, rx.recv())
                .await
                .expect("a stock level within the deadline")
                .expect("open")
        };

        app.inventory.set_stock("a", 3).await.unwrap();
        app.inventory.wake_relay();
        let first = next().await;
        assert_eq!((first.item_id.as_str(), first.available), ("a", 3));

        let reply = app.ask(&reserve("o1", &[("a", 3)])).await;
        assert!(!reply.is::<StockRejected>());
        let sold_out = next().await;
        assert_eq!(sold_out.available, 0, "the last unit reserved: sold out");
        assert!(sold_out.version > first.version);

        // A refused reservation changes nothing and announces nothing.
        let reply = app.ask(&reserve("o2", &[("a", 1)])).await;
        assert!(reply.is::<StockRejected>());

        let _ = app.ask(&release("o1")).await;
        let back = next().await;
        assert_eq!(back.available, 3);
        assert!(back.version > sold_out.version);

        app.drained().await;
        assert!(rx.try_recv().is_err(), "one level per change");
        app.stop().await;
    }
}
