//! The inbox turns redeliveries into no-ops, on both engines and both buses.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tideway_bus::{Event, SubscribeOptions, inbox};
use tideway_testkit::{DEADLINE, eventually};

use crate::helpers::{buses, placed};

#[tokio::test]
async fn record_answers_true_once_per_consumer_and_event() {
    for db in tideway_testkit::backends().await {
        inbox::install(&db).await.unwrap();
        inbox::install(&db).await.unwrap(); // idempotent
        // A rolled-back record leaves nothing behind.
        let mut tx = db.begin().await.unwrap();
        assert!(inbox::record(&mut tx, "inventory", "e1").await.unwrap());
        tx.rollback().await.unwrap();
        let mut answers = Vec::new();
        for consumer in ["inventory", "inventory", "payment", "inventory"] {
            let mut tx = db.begin().await.unwrap();
            answers.push(inbox::record(&mut tx, consumer, "e1").await.unwrap());
            tx.commit().await.unwrap();
        }
        assert_eq!(answers, [true, false, true, false], "{:?}", db.backend());
        assert_eq!(inbox::prune(&db, i64::MAX).await.unwrap(), 2);
    }
}

#[tokio::test]
async fn an_event_delivered_three_times_has_one_effect() {
    for db in tideway_testkit::backends().await {
        for tb in buses().await {
            inbox::install(&db).await.unwrap();
            sqlx::query("DROP TABLE IF EXISTS effects")
                .execute(db.pool())
                .await
                .unwrap();
            sqlx::query("DELETE FROM inbox")
                .execute(db.pool())
                .await
                .unwrap();
            sqlx::query("CREATE TABLE effects (event_id TEXT NOT NULL, n BIGINT NOT NULL)")
                .execute(db.pool())
                .await
                .unwrap();
            let deliveries = Arc::new(Mutex::new(0_u32));
            let handler = {
                let deliveries = deliveries.clone();
                let db = (*db).clone();
                Arc::new(move |event: Event| {
                    let deliveries = deliveries.clone();
                    let db = db.clone();
                    async move {
                        let mut tx = db.begin().await?;
                        if inbox::record(&mut tx, "inventory", &event.id).await? {
                            sqlx::query("INSERT INTO effects (event_id, n) VALUES ($1, 1)")
                                .bind(&event.id)
                                .execute(&mut *tx)
                                .await?;
                        }
                        tx.commit().await?;
                        // The effect is committed, but the acknowledgement is "lost" twice:
                        // the bus delivers the event again.
                        let n = {
                            let mut d = deliveries.lock().unwrap();
                            *d += 1;
                            *d
                        };
                        if n < 3 {
                            return Err::<(), Box<dyn std::error::Error + Send + Sync>>(
                                "acknowledgement lost".into(),
                            );
                        }
                        Ok(())
                    }
                })
            };
            let bus = tb.another().await;
            let options = SubscribeOptions::new("inventory", "tideway.ordering.*")
                .retry_delay(Duration::from_millis(50), Duration::from_millis(100))
                .max_deliveries(5);
            bus.subscribe(options, handler).await.unwrap();
            tb.open();
            bus.publish(&placed(1)).await.unwrap();
            eventually(DEADLINE, "three deliveries", || {
                *deliveries.lock().unwrap() >= 3
            })
            .await;
            tb.settled("inventory", "tideway.ordering.*").await;
            let effects: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM effects")
                .fetch_one(db.pool())
                .await
                .unwrap();
            assert_eq!(
                *deliveries.lock().unwrap(),
                3,
                "{} {:?}",
                tb.name(),
                db.backend()
            );
            assert_eq!(effects, 1, "{} {:?}", tb.name(), db.backend());
            bus.shutdown().await;
        }
    }
}
