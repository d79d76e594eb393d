//! Pruning by age: what is older than the retention goes, what is newer stays, the payments
//! stay; an expired vaulted card goes whatever the retention.

use std::time::Duration;

use tideway_payment::PRUNE_RULES;
use tideway_payment_api::APPROVED_CARD;
use tideway_testkit::backends;

use crate::helpers::{order, spawn_app};

const DAY_MS: i64 = 86_400_000;

#[tokio::test]
async fn records_older_than_the_retention_are_pruned_and_newer_ones_kept() {
    for db in backends().await {
        let app = spawn_app(db.url()).await;
        let (old, _) = app.authorized_order(1000).await;
        let (new, _) = app.authorized_order(1000).await;
        app.settled().await;
        // The first order's records are 31 days old.
        for (table, column) in [
            ("idempotency", "created_at_ms"),
            ("provider_charges", "created_at_ms"),
        ] {
            let sql = format!(
                "UPDATE {table} SET {column} = {column} - {} WHERE order_id = $1",
                31 * DAY_MS
            );
            sqlx::query(&sql)
                .bind(&old)
                .execute(app.payment.db().pool())
                .await
                .unwrap();
        }
        sqlx::query("UPDATE inbox SET received_at_ms = received_at_ms - $1")
            .bind(31 * DAY_MS)
            .execute(app.payment.db().pool())
            .await
            .unwrap();
        // A card vaulted and never taken, past its expiry.
        let stale = order();
        app.vault(&stale, APPROVED_CARD).await;
        sqlx::query("UPDATE card_vault SET expires_at_ms = 1 WHERE order_id = $1")
            .bind(&stale)
            .execute(app.payment.db().pool())
            .await
            .unwrap();
        let live = order();
        app.vault(&live, APPROVED_CARD).await;

        let deleted = tideway_store::prune::prune(
            app.payment.db(),
            &PRUNE_RULES,
            Duration::from_secs(30 * 86_400),
        )
        .await
        .unwrap();
        let of = |what: &str| deleted.iter().find(|(w, _)| *w == what).unwrap().1;
        assert_eq!(of("card_vault"), 1);
        assert_eq!(of("idempotency"), 1);
        assert_eq!(of("provider_charges"), 1);
        assert!(of("inbox") >= 2, "{deleted:?}");

        let count = |sql: &'static str, id: String| {
            let app = &app;
            async move { app.count(sql, &id).await }
        };
        let idempotency = "SELECT COUNT(*) FROM idempotency WHERE order_id = $1";
        let charges = "SELECT COUNT(*) FROM provider_charges WHERE order_id = $1";
        let vault = "SELECT COUNT(*) FROM card_vault WHERE order_id = $1";
        assert_eq!(count(idempotency, old.clone()).await, 0);
        assert_eq!(count(charges, old.clone()).await, 0);
        assert_eq!(count(idempotency, new.clone()).await, 1);
        assert_eq!(count(charges, new.clone()).await, 1);
        assert_eq!(count(vault, stale).await, 0);
        assert_eq!(count(vault, live).await, 1);
        // The payments themselves are kept.
        assert!(app.stored(&old).await.is_some());
        assert!(app.stored(&new).await.is_some());

        // Run again: nothing more is old.
        let again = tideway_store::prune::prune(
            app.payment.db(),
            &PRUNE_RULES,
            Duration::from_secs(30 * 86_400),
        )
        .await
        .unwrap();
        assert!(again.iter().all(|(_, n)| *n == 0), "{again:?}");
        app.stop().await;
    }
}
