//! The same commands over NATS JetStream (the distributed shape), on both engines.

use std::sync::Arc;

use tideway_inventory_api::{StockCommitted, StockRejected, StockReleased, StockReserved};

use crate::helpers::{FakeCatalog, TestApp, TestBus, commit, release, reserve, spawn_with};

#[tokio::test]
async fn commands_over_jetstream_reserve_commit_release_once_each() {
    for db in tideway_testkit::backends().await {
        let Some(nats) = tideway_testkit::nats().await else {
            return;
        };
        let app = Arc::new(
            spawn_with(
                db.url(),
                TestBus::Nats(nats),
                false,
                FakeCatalog::default().client(),
            )
            .await,
        );
        app.inventory.set_stock("a", 10).await.unwrap();
        app.inventory.set_stock("b", 1).await.unwrap();

        assert!(
            app.ask(&reserve("o1", &[("a", 3)]))
                .await
                .is::<StockReserved>()
        );
        assert_eq!(app.counts("a").await, (7, 3, 0));
        assert!(app.ask(&commit("o1")).await.is::<StockCommitted>());
        assert_eq!(app.counts("a").await, (7, 0, 3));

        let reply = app.ask(&reserve("o2", &[("a", 1), ("b", 2)])).await;
        assert_eq!(reply.decode::<StockRejected>().unwrap().item_id, "b");
        assert_eq!(app.counts("a").await, (7, 0, 3));

        // Delivered three times (the same event; JetStream may drop the re-publishes, the
        // inbox drops whatever arrives): one effect, one reply.
        let reserve_o3 = reserve("o3", &[("a", 2)]);
        for _ in 0..3 {
            app.send(&reserve_o3).await;
        }
        assert!(app.reply().await.is::<StockReserved>());
        assert!(app.ask(&release("o3")).await.is::<StockReleased>());
        assert_eq!(app.counts("a").await, (7, 0, 3));
        app.drained().await;
        assert_eq!(app.outbox_rows("o3").await, 2);

        // A crowd for the last units, concurrently, across the JetStream workers.
        app.inventory.set_stock("last", 3).await.unwrap();
        let mut publishes = tokio::task::JoinSet::new();
        for n in 0..12 {
            let bus = app.bus.clone();
            let event = reserve(&format!("crowd-{n}"), &[("last", 1)]);
            publishes.spawn(async move { bus.publish(&event).await });
        }
        while let Some(published) = publishes.join_next().await {
            published.unwrap().unwrap();
        }
        let mut reserved = 0;
        for _ in 0..12 {
            if app.reply().await.is::<StockReserved>() {
                reserved += 1;
            }
        }
        assert_eq!(reserved, 3);
        assert_eq!(app.counts("last").await, (0, 3, 0));
        TestApp::stop(Arc::into_inner(app).unwrap()).await;
    }
}
