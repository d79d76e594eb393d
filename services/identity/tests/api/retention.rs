//! Pruning by age: refresh tokens and sessions that ended more than `identity.retention_days`
//! ago are deleted; live ones, and ended ones still within the retention, are kept.

use std::time::Duration;

use tideway_identity::PRUNE_RULES;
use tideway_testkit::backends;

use crate::helpers::spawn_app;

const DAY_MS: i64 = 86_400_000;

#[tokio::test]
async fn refresh_tokens_and_sessions_long_ended_are_pruned() {
    for db in backends().await {
        let app = spawn_app(db.url()).await;
        let old = app.signed_up("old@example.com").await;
        let recent = app.signed_up("recent@example.com").await;
        let live = app.signed_up("live@example.com").await;
        let pool = app.identity.db().pool();
        let now = i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap();
        // "old" ended 31 days ago, "recent" 2 days ago; "live" goes on.
        for (user, ended) in [("old@example.com", 31), ("recent@example.com", 2)] {
            for table in ["refresh_tokens", "refresh_families"] {
                let sql = format!(
                    "UPDATE {table} SET expires_at = $1 \
                     WHERE user_id = (SELECT id FROM users WHERE email = $2)"
                );
                sqlx::query(&sql)
                    .bind(now - ended * DAY_MS)
                    .bind(user)
                    .execute(pool)
                    .await
                    .unwrap();
            }
        }
        let (tokens, families) = (
            app.count("refresh_tokens").await,
            app.count("refresh_families").await,
        );
        let deleted = tideway_store::prune::prune(
            app.identity.db(),
            &PRUNE_RULES,
            Duration::from_secs(30 * 86_400),
        )
        .await
        .unwrap();
        assert_eq!(deleted, [("refresh_tokens", 1), ("refresh_families", 1)]);
        assert_eq!(app.count("refresh_tokens").await, tokens - 1);
        assert_eq!(app.count("refresh_families").await, families - 1);
        // The live session still refreshes; the recent one is still known (and refused).
        assert!(app.refresh(&live.refresh_token).await.status().is_success());
        assert!(
            !app.refresh(&recent.refresh_token)
                .await
                .status()
                .is_success()
        );
        assert!(!app.refresh(&old.refresh_token).await.status().is_success());
    }
}
