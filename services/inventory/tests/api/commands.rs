//! Reserve, release and commit: effects on stock, replies, stored outcomes, traces.

use tideway_inventory::{ReservationStatus, Snapshot};
use tideway_inventory_api::{StockCommitted, StockRejected, StockReleased, StockReserved};
use tideway_runtime::trace::TraceContext;

use crate::helpers::{TRACE_ID, commit, line, release, reserve, spawn_app};

#[tokio::test]
async fn reserve_then_commit_moves_units_to_sold_and_replies_in_the_orders_trace() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(db.url()).await;
        app.inventory.set_stock("a", 5).await.unwrap();
        app.inventory.set_stock("b", 3).await.unwrap();

        // Duplicate item lines are merged.
        let reply = app
            .ask(&reserve("o1", &[("a", 2), ("b", 1), ("a", 1)]))
            .await;
        assert_eq!(reply.decode::<StockReserved>().unwrap().order_id, "o1");
        let ctx = TraceContext::parse(reply.traceparent.as_deref().unwrap()).unwrap();
        assert_eq!(
            ctx.trace_id(),
            TRACE_ID,
            "the reply continues the command's trace"
        );
        assert_eq!(app.counts("a").await, (2, 3, 0));
        assert_eq!(app.counts("b").await, (2, 1, 0));
        let reservation = app.reservation("o1").await.unwrap();
        assert_eq!(reservation.status, ReservationStatus::Reserved);
        assert_eq!(reservation.lines, [line("a", 3), line("b", 1)]);

        let reply = app.ask(&commit("o1")).await;
        assert_eq!(reply.decode::<StockCommitted>().unwrap().order_id, "o1");
        assert_eq!(app.counts("a").await, (2, 0, 3));
        assert_eq!(app.counts("b").await, (2, 0, 1));

        // Committing again answers again without a second effect.
        let reply = app.ask(&commit("o1")).await;
        assert!(reply.is::<StockCommitted>());
        assert_eq!(app.counts("a").await, (2, 0, 3));

        // A committed order is not released (its stock stays sold), but it is answered.
        let reply = app.ask(&release("o1")).await;
        assert!(reply.is::<StockReleased>());
        assert_eq!(app.counts("a").await, (2, 0, 3));
        assert_eq!(
            app.reservation("o1").await.unwrap().status,
            ReservationStatus::Committed
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn release_returns_the_units_once() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(db.url()).await;
        app.inventory.set_stock("a", 4).await.unwrap();
        assert!(
            app.ask(&reserve("o1", &[("a", 3)]))
                .await
                .is::<StockReserved>()
        );
        assert_eq!(app.counts("a").await, (1, 3, 0));

        let reply = app.ask(&release("o1")).await;
        assert_eq!(reply.decode::<StockReleased>().unwrap().order_id, "o1");
        assert_eq!(app.counts("a").await, (4, 0, 0));
        let reservation = app.reservation("o1").await.unwrap();
        assert_eq!(reservation.status, ReservationStatus::Released);
        assert_eq!(reservation.reason.as_deref(), Some("payment declined"));

        // Again (a new command for the order): answered, nothing returned twice.
        assert!(app.ask(&release("o1")).await.is::<StockReleased>());
        assert_eq!(app.counts("a").await, (4, 0, 0));

        // A released order cannot be committed: no reply (its saga times out), no change.
        app.send(&commit("o1")).await;
        app.drained().await;
        assert_eq!(app.outbox_rows("o1").await, 3);
        assert_eq!(app.counts("a").await, (4, 0, 0));

        // A repeated reserve of the released order is refused, not reserved again.
        let reply = app.ask(&reserve("o1", &[("a", 3)])).await;
        assert!(reply.is::<StockRejected>(), "{reply:?}");
        assert_eq!(app.counts("a").await, (4, 0, 0));
        app.stop().await;
    }
}

#[tokio::test]
async fn a_release_before_the_reserve_makes_the_late_reserve_refused() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(db.url()).await;
        app.inventory.set_stock("a", 4).await.unwrap();
        // The saga's reserve step timed out and was compensated before the command arrived.
        assert!(app.ask(&release("late")).await.is::<StockReleased>());
        let reply = app.ask(&reserve("late", &[("a", 1)])).await;
        let rejected = reply.decode::<StockRejected>().unwrap();
        assert!(rejected.reason.contains("released"), "{rejected:?}");
        assert_eq!(app.counts("a").await, (4, 0, 0));
        // A commit for an order never seen is not answered and changes nothing.
        app.send(&commit("nobody")).await;
        app.drained().await;
        assert_eq!(app.outbox_rows("nobody").await, 0);
        assert!(app.reservation("nobody").await.is_none());
        app.stop().await;
    }
}

#[tokio::test]
async fn an_order_with_one_short_line_reserves_nothing() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(db.url()).await;
        app.inventory.set_stock("a", 5).await.unwrap();
        app.inventory.set_stock("b", 1).await.unwrap();
        app.inventory.set_stock("c", 9).await.unwrap();

        let reply = app
            .ask(&reserve("o1", &[("a", 2), ("b", 2), ("c", 1)]))
            .await;
        let rejected = reply.decode::<StockRejected>().unwrap();
        assert_eq!(rejected.order_id, "o1");
        assert_eq!(rejected.item_id, "b");
        assert_eq!(rejected.reason, "only 1 of item b left, 2 requested");
        assert_eq!(app.counts("a").await, (5, 0, 0));
        assert_eq!(app.counts("b").await, (1, 0, 0));
        assert_eq!(app.counts("c").await, (9, 0, 0));
        let reservation = app.reservation("o1").await.unwrap();
        assert_eq!(reservation.status, ReservationStatus::Rejected);
        assert_eq!(reservation.item_id.as_deref(), Some("b"));

        // Duplicate lines that together exceed the stock are short too.
        let reply = app.ask(&reserve("o2", &[("b", 1), ("b", 1)])).await;
        assert_eq!(reply.decode::<StockRejected>().unwrap().item_id, "b");
        assert_eq!(app.counts("b").await, (1, 0, 0));

        // An unknown item is rejected by name.
        let reply = app.ask(&reserve("o3", &[("a", 1), ("ghost", 1)])).await;
        let rejected = reply.decode::<StockRejected>().unwrap();
        assert_eq!(rejected.item_id, "ghost");
        assert_eq!(rejected.reason, "item ghost is not stocked");
        assert_eq!(app.counts("a").await, (5, 0, 0));

        // Invalid lines are rejected without touching stock.
        for (order, lines) in [
            ("o4", vec![("a", 0)]),
            ("o5", vec![("a", -2)]),
            ("o6", vec![]),
            ("o7", vec![("a", 1), ("not an id", 1)]),
            ("o8", vec![("a", i64::MAX)]),
        ] {
            let reply = app.ask(&reserve(order, &lines)).await;
            assert!(reply.is::<StockRejected>(), "{order}: {reply:?}");
        }
        assert_eq!(app.counts("a").await, (5, 0, 0));

        // A rejected order asked again (a new command) gets the stored outcome, even once
        // stock has arrived: one order, one outcome.
        app.inventory.set_stock("b", 10).await.unwrap();
        let reply = app
            .ask(&reserve("o1", &[("a", 2), ("b", 2), ("c", 1)]))
            .await;
        assert_eq!(
            reply.decode::<StockRejected>().unwrap().reason,
            "only 1 of item b left, 2 requested"
        );
        assert_eq!(app.counts("b").await, (10, 0, 0));

        // The whole order fits now under a new id.
        assert!(
            app.ask(&reserve("o9", &[("a", 2), ("b", 2), ("c", 1)]))
                .await
                .is::<StockReserved>()
        );
        assert_eq!(app.counts("a").await, (3, 2, 0));
        assert_eq!(app.counts("b").await, (8, 2, 0));
        assert_eq!(app.counts("c").await, (8, 1, 0));
        app.stop().await;
    }
}

#[tokio::test]
async fn snapshot_lists_every_row_and_reservation() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(db.url()).await;
        app.inventory.set_stock("a", 2).await.unwrap();
        app.inventory.set_stock("b", 0).await.unwrap();
        assert!(
            app.ask(&reserve("o1", &[("a", 1)]))
                .await
                .is::<StockReserved>()
        );
        assert!(
            app.ask(&reserve("o2", &[("b", 1)]))
                .await
                .is::<StockRejected>()
        );
        let snapshot = app.inventory.snapshot().await.unwrap();
        assert_eq!(snapshot.stock.len(), 2);
        assert_eq!(snapshot.stock[0].item_id, "a");
        assert_eq!(snapshot.stock[0].reserved, 1);
        let statuses: Vec<_> = snapshot
            .reservations
            .iter()
            .map(|r| (r.order_id.as_str(), r.status))
            .collect();
        assert_eq!(
            statuses,
            [
                ("o1", ReservationStatus::Reserved),
                ("o2", ReservationStatus::Rejected)
            ]
        );
        // What a checker proves: reserved units equal the lines of reserved orders.
        let held: i64 = snapshot
            .reservations
            .iter()
            .filter(|r| r.status == ReservationStatus::Reserved)
            .flat_map(|r| r.lines.iter())
            .map(|l| l.quantity)
            .sum();
        let reserved: i64 = snapshot.stock.iter().map(|s| s.reserved).sum();
        assert_eq!(held, reserved);
        assert_eq!(Snapshot::read(app.inventory.db()).await.unwrap(), snapshot);

        // An unreadable database is an error, never an empty snapshot.
        app.inventory.db().close().await;
        assert!(app.inventory.snapshot().await.is_err());
        assert!(Snapshot::read(app.inventory.db()).await.is_err());
        app.stop().await;
    }
}
