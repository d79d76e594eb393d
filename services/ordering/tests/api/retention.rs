//! Pruning by age: finished sagas (with their step logs) and inbox entries older than
//! `ordering.retention_days` go; a saga still running stays however old; orders stay.

use std::time::Duration;

use tideway_ordering::prune_rules;
use tideway_payment_api::AuthorizePayment;
use tideway_testkit::backends;

use crate::helpers::{Answer, Script, config, spawn_app};

const OLD_MS: i64 = 31 * 86_400_000;

#[tokio::test]
async fn finished_sagas_and_inbox_entries_past_the_retention_are_pruned() {
    for db in backends().await {
        let app = spawn_app(config(db.url())).await;
        let token = app.token("alice");
        let done = app.checkout_to_end(&token, None).await;
        app.responders.set(Script {
            authorize: Answer::Silent,
            ..Script::default()
        });
        let waiting = app.checkout(&token, None).await.order_id();
        app.log
            .wait_for("the authorization request", |log| {
                !log.of::<AuthorizePayment>(&waiting).is_empty()
            })
            .await;
        let pool = app.ordering.db().pool();
        // Everything is a month old.
        for sql in [
            "UPDATE saga_instances SET updated_ms = updated_ms - $1",
            "UPDATE inbox SET received_at_ms = received_at_ms - $1",
        ] {
            sqlx::query(sql).bind(OLD_MS).execute(pool).await.unwrap();
        }
        let steps = |id: String| async move {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM saga_steps WHERE instance_id = $1")
                .bind(id)
                .fetch_one(pool)
                .await
                .unwrap()
        };
        assert!(steps(done.id.clone()).await > 0);

        // Kept for 60 days: nothing goes.
        let kept = tideway_store::prune::prune(
            app.ordering.db(),
            &prune_rules(),
            Duration::from_secs(60 * 86_400),
        )
        .await
        .unwrap();
        assert!(kept.iter().all(|(_, n)| *n == 0), "{kept:?}");

        // Kept for 30 days: the finished saga and the inbox go, the running saga stays.
        tideway_store::prune::prune(
            app.ordering.db(),
            &prune_rules(),
            Duration::from_secs(30 * 86_400),
        )
        .await
        .unwrap();
        let engine = app.ordering.saga_engine();
        assert!(engine.instance(&done.id).await.unwrap().is_none());
        assert_eq!(steps(done.id.clone()).await, 0);
        assert!(engine.instance(&waiting).await.unwrap().is_some());
        assert!(steps(waiting.clone()).await > 0);
        let inbox: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM inbox")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(inbox, 0);
        // The order is kept, without a timeline.
        let order = app.order(&token, &done.id).await;
        assert_eq!(order.status, done.status);
        assert!(order.timeline.is_empty());
    }
}
