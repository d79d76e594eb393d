//! Every command delivered three times (the same event id) has one effect and one reply; a
//! repeated command (a new id for the same order) re-sends the outcome without an effect.

use tideway_inventory_api::{StockCommitted, StockReleased, StockReserved};

use crate::helpers::{commit, release, reserve, spawn_app};

#[tokio::test]
async fn every_command_delivered_three_times_has_one_effect() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(db.url()).await;
        app.inventory.set_stock("a", 10).await.unwrap();

        let reserve_o1 = reserve("o1", &[("a", 3)]);
        for _ in 0..3 {
            app.send(&reserve_o1).await;
        }
        assert!(app.reply().await.is::<StockReserved>());
        assert_eq!(app.counts("a").await, (7, 3, 0));

        let commit_o1 = commit("o1");
        for _ in 0..3 {
            app.send(&commit_o1).await;
        }
        assert!(app.reply().await.is::<StockCommitted>());
        assert_eq!(app.counts("a").await, (7, 0, 3));

        let reserve_o2 = reserve("o2", &[("a", 2)]);
        let release_o2 = release("o2");
        for _ in 0..3 {
            app.send(&reserve_o2).await;
        }
        assert!(app.reply().await.is::<StockReserved>());
        for _ in 0..3 {
            app.send(&release_o2).await;
        }
        assert!(app.reply().await.is::<StockReleased>());
        assert_eq!(app.counts("a").await, (7, 0, 3));

        // One reply per distinct event, however often each was delivered.
        app.drained().await;
        assert_eq!(app.outbox_rows("o1").await, 2);
        assert_eq!(app.outbox_rows("o2").await, 2);
        let inbox: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM inbox")
            .fetch_one(app.inventory.db().pool())
            .await
            .unwrap();
        assert_eq!(inbox, 4);

        // A repeated command with a new id answers again without a second effect.
        assert!(
            app.ask(&reserve("o1", &[("a", 3)]))
                .await
                .is::<StockReserved>()
        );
        assert_eq!(app.counts("a").await, (7, 0, 3));
        app.stop().await;
    }
}
