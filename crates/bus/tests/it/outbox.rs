//! The outbox and its relay on both engines: transactions, order, exactly one relay.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tideway_bus::{
    BoxFuture, BusError, EmbeddedBus, EmbeddedOptions, Event, Publisher, SubscribeOptions,
    Subscriber,
    outbox::{self, Lease, Relay, RelayOptions},
};
use tideway_store::Db;
use tideway_testkit::{DEADLINE, eventually, eventually_async};
use tokio_util::sync::CancellationToken;

use crate::helpers::{Recorder, buses, placed};

/// A publisher that remembers which relay published what, in front of a real bus.
#[derive(Clone)]
struct Tagged {
    tag: &'static str,
    log: Arc<Mutex<Vec<(&'static str, String)>>>,
    inner: Arc<dyn Publisher>,
}

impl Publisher for Tagged {
    fn publish<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move {
            self.inner.publish(event).await?;
            self.log.lock().unwrap().push((self.tag, event.id.clone()));
            Ok(())
        })
    }
}

fn quick(holder: &str) -> RelayOptions {
    RelayOptions {
        holder: holder.to_owned(),
        lease_ttl: Duration::from_secs(2),
        poll_interval: Duration::from_millis(50),
        retry_delay: Duration::from_millis(50),
        batch_size: 4,
        ..RelayOptions::default()
    }
}

async fn enqueue_committed(db: &Db, events: &[Event]) {
    let mut tx = db.begin().await.unwrap();
    for event in events {
        outbox::enqueue(&mut tx, event).await.unwrap();
    }
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn rolled_back_events_are_never_published_and_committed_ones_once_in_order() {
    for db in tideway_testkit::backends().await {
        outbox::install(&db).await.unwrap();
        outbox::install(&db).await.unwrap(); // idempotent
        let bus = EmbeddedBus::new(EmbeddedOptions::default()).await.unwrap();
        let recorder = Recorder::default();
        bus.subscribe(
            SubscribeOptions::new("inventory", "tideway.ordering.*"),
            recorder.handler("inventory"),
        )
        .await
        .unwrap();
        bus.open();

        let mut tx = db.begin().await.unwrap();
        outbox::enqueue(&mut tx, &placed(999)).await.unwrap();
        tx.rollback().await.unwrap();
        assert_eq!(outbox::pending(&db).await.unwrap(), 0);

        // Two transactions, more rows than one batch.
        enqueue_committed(&db, &(0..6).map(placed).collect::<Vec<_>>()).await;
        enqueue_committed(&db, &(6..11).map(placed).collect::<Vec<_>>()).await;
        assert_eq!(outbox::pending(&db).await.unwrap(), 11);

        let relay = Relay::new((*db).clone(), Arc::new(bus.clone()), quick("r1"));
        assert_eq!(relay.pass().await.unwrap(), Some(11), "{:?}", db.backend());
        assert_eq!(relay.pass().await.unwrap(), Some(0));
        assert_eq!(outbox::pending(&db).await.unwrap(), 0);
        assert_eq!(
            recorder.ns(),
            (0..11).collect::<Vec<_>>(),
            "{:?}",
            db.backend()
        );
        bus.shutdown().await;
    }
}

#[tokio::test]
async fn a_running_relay_publishes_when_woken() {
    for db in tideway_testkit::backends().await {
        for tb in buses().await {
            outbox::install(&db).await.unwrap();
            sqlx::query("DELETE FROM outbox")
                .execute(db.pool())
                .await
                .unwrap();
            let recorder = Recorder::default();
            let bus = tb.bus();
            bus.subscribe(
                SubscribeOptions::new("inventory", "tideway.ordering.*"),
                recorder.handler("inventory"),
            )
            .await
            .unwrap();
            tb.open();
            let options = RelayOptions {
                // Only a wake-up can make it publish within the test's deadline.
                poll_interval: Duration::from_secs(3600),
                ..quick("r1")
            };
            let relay = Relay::new((*db).clone(), bus.clone(), options);
            let token = CancellationToken::new();
            let waker = relay.waker();
            let task = tokio::spawn(relay.run(token.clone()));
            // Let the first (empty) pass happen before enqueuing.
            eventually_async(DEADLINE, "the relay's first pass", || async {
                Lease::new(
                    (*db).clone(),
                    "outbox-relay",
                    "probe",
                    Duration::from_secs(1),
                )
                .current()
                .await
                .unwrap()
                .is_some()
            })
            .await;
            enqueue_committed(&db, &(0..5).map(placed).collect::<Vec<_>>()).await;
            waker.wake();
            eventually(DEADLINE, "five events", || recorder.len() >= 5).await;
            tb.settled("inventory", "tideway.ordering.*").await;
            assert_eq!(
                recorder.ns(),
                (0..5).collect::<Vec<_>>(),
                "{} {:?}",
                tb.name(),
                db.backend()
            );
            token.cancel();
            task.await.unwrap();
            // A graceful stop releases the lease at once.
            let lease = Lease::new(
                (*db).clone(),
                "outbox-relay",
                "other",
                Duration::from_secs(60),
            );
            assert!(lease.try_acquire().await.unwrap());
            lease.release().await.unwrap();
            bus.shutdown().await;
        }
    }
}

#[tokio::test]
async fn one_lease_holder_at_a_time_and_a_takeover_after_expiry() {
    for db in tideway_testkit::backends().await {
        outbox::install(&db).await.unwrap();
        let a = Lease::new((*db).clone(), "relay", "a", Duration::from_millis(1500));
        let b = Lease::new((*db).clone(), "relay", "b", Duration::from_millis(1500));
        let (got_a, got_b) = tokio::join!(a.try_acquire(), b.try_acquire());
        assert!(
            got_a.unwrap() ^ got_b.unwrap(),
            "{:?}: exactly one holder",
            db.backend()
        );
        let (holder, other) = if a.current().await.unwrap().unwrap().0 == "a" {
            (&a, &b)
        } else {
            (&b, &a)
        };
        assert!(holder.try_acquire().await.unwrap(), "renewal");
        assert!(!other.try_acquire().await.unwrap());
        // The holder stops renewing (it died): the other takes over once the lease expires.
        eventually_async(DEADLINE, "the takeover", || async {
            other.try_acquire().await.unwrap()
        })
        .await;
        assert!(
            !holder.try_acquire().await.unwrap(),
            "the old holder lost it"
        );
        assert_eq!(other.current().await.unwrap().unwrap().0, other.holder());
    }
}

#[tokio::test]
async fn a_relay_restarted_with_its_holder_id_takes_its_lease_back_at_once() {
    for db in tideway_testkit::backends().await {
        outbox::install(&db).await.unwrap();
        let bus = EmbeddedBus::new(EmbeddedOptions::default()).await.unwrap();
        let recorder = Recorder::default();
        bus.subscribe(
            SubscribeOptions::new("inventory", "tideway.ordering.*"),
            recorder.handler("inventory"),
        )
        .await
        .unwrap();
        bus.open();
        let log = Arc::new(Mutex::new(Vec::new()));
        let publisher = |tag| -> Arc<dyn Publisher> {
            Arc::new(Tagged {
                tag,
                log: log.clone(),
                inner: Arc::new(bus.clone()),
            })
        };
        // A lease far longer than the test: only its holder can have it back in time.
        let lasting = |holder: &str| RelayOptions {
            lease_ttl: Duration::from_secs(3600),
            ..quick(holder)
        };
        let token = CancellationToken::new();
        let before = tokio::spawn(
            Relay::new((*db).clone(), publisher("before"), lasting("inventory-1"))
                .run(token.clone()),
        );
        enqueue_committed(&db, &[placed(0)]).await;
        eventually(DEADLINE, "the first event", || recorder.len() >= 1).await;
        // Killed: the lease is left held for an hour.
        before.abort();
        let _ = before.await;
        let lease = Lease::new((*db).clone(), "outbox-relay", "x", Duration::from_secs(1));
        let (holder, expires) = lease.current().await.unwrap().unwrap();
        assert_eq!(holder, "inventory-1");
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        assert!(i128::from(expires) > i128::try_from(now_ms).unwrap() + 60_000);

        // The same replica restarts beside another one; the restarted one publishes at once.
        let other = tokio::spawn(
            Relay::new((*db).clone(), publisher("other"), lasting("inventory-2"))
                .run(token.clone()),
        );
        let after = tokio::spawn(
            Relay::new((*db).clone(), publisher("after"), lasting("inventory-1"))
                .run(token.clone()),
        );
        enqueue_committed(&db, &(1..4).map(placed).collect::<Vec<_>>()).await;
        let distinct = || {
            let mut ns = recorder.ns();
            ns.sort_unstable();
            ns.dedup();
            ns
        };
        eventually(DEADLINE, "three more events", || distinct().len() >= 4).await;
        // The first relay may have been killed between publishing event 0 and marking it
        // sent: then the restarted one publishes it again (at least once; consumers' inboxes
        // drop the repeat). Either way only the restarted holder publishes after the kill.
        let tags: Vec<&str> = log.lock().unwrap().iter().map(|(tag, _)| *tag).collect();
        assert_eq!(tags.first(), Some(&"before"), "{:?}", db.backend());
        assert!(
            tags[1..].iter().all(|tag| *tag == "after") && tags.len() <= 5,
            "{tags:?} on {:?}",
            db.backend()
        );
        assert_eq!(distinct(), [0, 1, 2, 3]);
        token.cancel();
        after.await.unwrap();
        other.await.unwrap();
        bus.shutdown().await;
    }
}

#[tokio::test]
async fn two_relays_publish_each_event_once_and_the_survivor_takes_over() {
    for db in tideway_testkit::backends().await {
        outbox::install(&db).await.unwrap();
        let bus = EmbeddedBus::new(EmbeddedOptions::default()).await.unwrap();
        let recorder = Recorder::default();
        bus.subscribe(
            SubscribeOptions::new("inventory", "tideway.ordering.*"),
            recorder.handler("inventory"),
        )
        .await
        .unwrap();
        bus.open();
        let log = Arc::new(Mutex::new(Vec::new()));
        let publisher = |tag| -> Arc<dyn Publisher> {
            Arc::new(Tagged {
                tag,
                log: log.clone(),
                inner: Arc::new(bus.clone()),
            })
        };
        let token = CancellationToken::new();
        let a =
            tokio::spawn(Relay::new((*db).clone(), publisher("a"), quick("a")).run(token.clone()));
        let b =
            tokio::spawn(Relay::new((*db).clone(), publisher("b"), quick("b")).run(token.clone()));

        enqueue_committed(&db, &(0..10).map(placed).collect::<Vec<_>>()).await;
        eventually(DEADLINE, "ten events", || recorder.len() >= 10).await;
        // Killed between publishing and marking, a relay publishes again (at least once);
        // wait for the marks so that "once each" below is a fair expectation.
        eventually_async(DEADLINE, "the rows marked sent", || async {
            outbox::pending(&db).await.unwrap() == 0
        })
        .await;
        let first: Vec<(&str, String)> = log.lock().unwrap().clone();
        let leader = first[0].0;
        assert!(
            first.iter().all(|(tag, _)| *tag == leader),
            "{:?}: one relay publishes: {first:?}",
            db.backend()
        );

        // The leader dies without releasing its lease; the other takes over after expiry.
        let (dead, survivor) = if leader == "a" { (a, b) } else { (b, a) };
        dead.abort();
        let _ = dead.await;
        enqueue_committed(&db, &(10..15).map(placed).collect::<Vec<_>>()).await;
        eventually(DEADLINE, "five more events", || recorder.len() >= 15).await;
        let after: Vec<(&str, String)> = log.lock().unwrap()[10..].to_vec();
        assert!(after.iter().all(|(tag, _)| *tag != leader), "{after:?}");
        assert_eq!(
            recorder.ns(),
            (0..15).collect::<Vec<_>>(),
            "{:?}: once each, in order",
            db.backend()
        );
        token.cancel();
        survivor.await.unwrap();
        bus.shutdown().await;
    }
}
