//! The embedded bus's event log: every published event appended once, read back in
//! publishing order page by page, pruned by age; nothing is kept without a retention.

use std::time::Duration;

use tideway_bus::{EmbeddedBus, EmbeddedOptions, Publisher, embedded};

use crate::helpers::placed;

#[tokio::test]
async fn every_published_event_is_logged_once_and_read_back_in_order() {
    for db in tideway_testkit::backends().await {
        let bus = EmbeddedBus::new(EmbeddedOptions {
            dead_letters: Some((*db).clone()),
            event_log_retention: Some(Duration::from_secs(7 * 86_400)),
        })
        .await
        .unwrap();
        bus.open();
        let events: Vec<_> = (0..5).map(placed).collect();
        for event in &events {
            bus.publish(event).await.unwrap();
        }
        // A re-publish (a relay that restarted before marking its row sent) adds nothing.
        bus.publish(&events[2]).await.unwrap();

        let first = embedded::logged_events(&db, None, 3).await.unwrap();
        assert_eq!(first.len(), 3);
        let rest = embedded::logged_events(&db, Some(&first[2].0), 10)
            .await
            .unwrap();
        assert_eq!(rest.len(), 2);
        let mut read: Vec<_> = first
            .iter()
            .chain(&rest)
            .map(|(_, e)| e.id.clone())
            .collect();
        let mut published: Vec<_> = events.iter().map(|e| e.id.clone()).collect();
        read.sort();
        published.sort();
        assert_eq!(read, published);
        assert_eq!(first[0].1.data, events[0].data);

        // Every row is older than the far future.
        let pruned = embedded::prune_event_log(&db, i64::MAX).await.unwrap();
        assert_eq!(pruned, 5);
        assert!(
            embedded::logged_events(&db, None, 10)
                .await
                .unwrap()
                .is_empty()
        );
    }
}

#[tokio::test]
async fn without_a_retention_no_log_is_kept() {
    let db = tideway_testkit::sqlite().await;
    let bus = EmbeddedBus::new(EmbeddedOptions {
        dead_letters: Some((*db).clone()),
        event_log_retention: None,
    })
    .await
    .unwrap();
    bus.open();
    bus.publish(&placed(1)).await.unwrap();
    let table = sqlx::query("SELECT 1 FROM bus_event_log")
        .fetch_optional(db.pool())
        .await;
    assert!(table.is_err(), "the log table is not even created");
}
