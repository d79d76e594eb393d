//! Dead letters are kept durably on both backends, listed, and redriven: the redriven
//! event is handled once (the inbox) and leaves the store.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tideway_bus::{
    Bus, DeadLetters, EmbeddedBus, EmbeddedOptions, Event, SubscribeOptions, embedded, inbox,
};
use tideway_store::Db;
use tideway_testkit::{DEADLINE, eventually_async};

use crate::helpers::placed;

/// A handler that refuses everything until `accept` is set, then applies each event once
/// (inbox) by inserting a row into `effects`.
fn poisoned(db: Db, accept: Arc<AtomicBool>) -> Arc<dyn tideway_bus::Handler> {
    Arc::new(move |event: Event| {
        let (db, accept) = (db.clone(), accept.clone());
        async move {
            if !accept.load(Ordering::SeqCst) {
                return Err::<(), tideway_bus::HandlerError>("cannot handle this yet".into());
            }
            let mut tx = db.begin().await?;
            if inbox::record(&mut tx, "reporting", &event.id).await? {
                sqlx::query("INSERT INTO effects (event_id) VALUES ($1)")
                    .bind(&event.id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(())
        }
    })
}

async fn effects(db: &Db) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM effects")
        .fetch_one(db.pool())
        .await
        .unwrap()
}

async fn store() -> tideway_testkit::TestDb {
    let db = tideway_testkit::sqlite().await;
    inbox::install(&db).await.unwrap();
    sqlx::query("CREATE TABLE effects (event_id TEXT NOT NULL)")
        .execute(db.pool())
        .await
        .unwrap();
    db
}

fn options() -> SubscribeOptions {
    SubscribeOptions::new("reporting", "tideway.ordering.*")
        .max_deliveries(2)
        .retry_delay(Duration::from_millis(20), Duration::from_millis(50))
        .ack_wait(Duration::from_secs(10))
}

/// Publishes one event that fails twice, then checks the dead letter, redrives it with
/// `redrive` and checks it was handled once and left the store.
async fn kept_listed_and_redriven<F, Fut>(
    bus: Arc<dyn Bus>,
    store: Arc<dyn DeadLetters>,
    redrive: F,
) where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let db = store_db().await;
    let accept = Arc::new(AtomicBool::new(false));
    bus.subscribe(options(), poisoned((*db).clone(), accept.clone()))
        .await
        .unwrap();
    let event = placed(7);
    let publishing = {
        let (bus, event) = (bus.clone(), event.clone());
        tokio::spawn(async move { bus.publish(&event).await })
    };
    let letter = eventually_async(DEADLINE, "the dead letter", || async {
        store
            .list()
            .await
            .unwrap()
            .into_iter()
            .find(|l| l.letter.event.id == event.id)
    })
    .await;
    publishing.await.unwrap().unwrap();
    assert_eq!(letter.letter.consumer, "reporting");
    assert_eq!(letter.letter.deliveries, 2);
    assert!(letter.letter.error.contains("cannot handle"), "{letter:?}");
    assert_eq!(effects(&db).await, 0);

    accept.store(true, Ordering::SeqCst);
    assert!(redrive(letter.id.clone()).await);
    eventually_async(DEADLINE, "the redriven event's effect", || async {
        effects(&db).await == 1
    })
    .await;
    eventually_async(DEADLINE, "the dead letter to leave the store", || async {
        store.list().await.unwrap().is_empty()
    })
    .await;
    // Gone: a second redrive finds nothing, and nothing happens twice.
    assert!(!store.redrive(&letter.id).await.unwrap());
    assert_eq!(effects(&db).await, 1);
    bus.shutdown().await;
}

async fn store_db() -> tideway_testkit::TestDb {
    store().await
}

#[tokio::test]
async fn embedded_dead_letters_are_kept_in_their_table_and_redriven_in_process() {
    let letters = tideway_testkit::sqlite().await;
    let bus = EmbeddedBus::new(EmbeddedOptions {
        dead_letters: Some((*letters).clone()),
        ..EmbeddedOptions::default()
    })
    .await
    .unwrap();
    bus.open();
    let store: Arc<dyn DeadLetters> = Arc::new(bus.clone());
    let direct = store.clone();
    kept_listed_and_redriven(Arc::new(bus), store, |id| {
        let direct = direct.clone();
        async move { direct.redrive(&id).await.unwrap() }
    })
    .await;
}

#[tokio::test]
async fn embedded_dead_letters_are_redriven_when_another_process_asks() {
    let letters = tideway_testkit::sqlite().await;
    let bus = EmbeddedBus::new(EmbeddedOptions {
        dead_letters: Some((*letters).clone()),
        ..EmbeddedOptions::default()
    })
    .await
    .unwrap();
    bus.open();
    let table: Db = (*letters).clone();
    kept_listed_and_redriven(Arc::new(bus.clone()), Arc::new(bus), |id| {
        let table = table.clone();
        // What `tideway dlq redrive` does: a request row the running bus serves.
        async move { embedded::request_redrive(&table, &id).await.unwrap() }
    })
    .await;
}

#[tokio::test]
async fn nats_dead_letters_stay_in_the_stream_and_are_redriven_from_it() {
    let Some(nats) = tideway_testkit::nats().await else {
        return;
    };
    let bus = nats.bus().await;
    let store: Arc<dyn DeadLetters> = Arc::new(bus.clone());
    let direct = store.clone();
    kept_listed_and_redriven(Arc::new(bus), store, |id| {
        let direct = direct.clone();
        async move { direct.redrive(&id).await.unwrap() }
    })
    .await;
}

#[tokio::test]
async fn rabbitmq_dead_letters_wait_in_their_queue_and_are_redriven_to_their_group() {
    let Some(rabbit) = crate::helpers::rabbit().await else {
        return;
    };
    let bus = rabbit.bus().await;
    let store: Arc<dyn DeadLetters> = Arc::new(bus.clone());
    let direct = store.clone();
    kept_listed_and_redriven(Arc::new(bus), store, |id| {
        let direct = direct.clone();
        async move { direct.redrive(&id).await.unwrap() }
    })
    .await;
}
