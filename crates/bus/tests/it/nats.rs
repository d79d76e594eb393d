//! What only JetStream does: duplicate publishes dropped by id, idempotent set-up.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tideway_bus::{Event, Publisher, SubscribeOptions, Subscriber};
use tideway_testkit::{DEADLINE, eventually};

use crate::helpers::{OrderPlaced, Recorder, placed};

#[tokio::test]
async fn a_republished_event_is_stored_and_delivered_once() {
    let Some(nats) = tideway_testkit::nats().await else {
        return;
    };
    let bus = nats.bus().await;
    let event = placed(1);
    bus.publish(&event).await.unwrap();
    bus.publish(&event).await.unwrap();
    bus.publish_batch(&[event.clone(), placed(2), event.clone()])
        .await
        .unwrap();
    let mut stream = bus
        .jetstream()
        .get_stream(&bus.options().stream)
        .await
        .unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 2);

    let recorder = Recorder::default();
    bus.subscribe(
        SubscribeOptions::new("inventory", "tideway.ordering.*"),
        recorder.handler("a"),
    )
    .await
    .unwrap();
    eventually(DEADLINE, "two deliveries", || recorder.len() >= 2).await;
    assert_eq!(recorder.ns(), [1, 2]);
    // The subject on the wire is under the test's root, not `tideway`.
    assert!(
        bus.wire_subject(&event.event_type)
            .starts_with(&format!("{}.", bus.options().root))
    );
    bus.shutdown().await;
}

#[tokio::test]
async fn set_up_is_idempotent_and_a_consumer_resumes_where_it_stopped() {
    let Some(nats) = tideway_testkit::nats().await else {
        return;
    };
    let first = nats.bus().await;
    let recorder = Recorder::default();
    first
        .subscribe(
            SubscribeOptions::new("inventory", "tideway.ordering.*"),
            recorder.handler("first"),
        )
        .await
        .unwrap();
    first.publish_batch(&[placed(1), placed(2)]).await.unwrap();
    eventually(DEADLINE, "two deliveries", || recorder.len() >= 2).await;
    first.shutdown().await;

    // A restarted service: the stream and its durable consumer exist and are reused; only
    // what was published meanwhile is delivered.
    let second = nats.bus().await;
    second.publish(&placed(3)).await.unwrap();
    second
        .subscribe(
            SubscribeOptions::new("inventory", "tideway.ordering.*"),
            recorder.handler("second"),
        )
        .await
        .unwrap();
    eventually(DEADLINE, "the third delivery", || recorder.len() >= 3).await;
    assert_eq!(recorder.ns(), [1, 2, 3]);
    assert_eq!(recorder.members(), ["first", "first", "second"]);
    second.shutdown().await;
}

/// A handler that records the events it is called with and answers only once `release`
/// is notified.
fn held(
    seen: &Arc<Mutex<Vec<u32>>>,
    release: &Arc<tokio::sync::Notify>,
) -> Arc<dyn tideway_bus::Handler> {
    let (seen, release) = (seen.clone(), release.clone());
    Arc::new(move |event: Event| {
        seen.lock()
            .unwrap()
            .push(event.decode::<OrderPlaced>().unwrap().n);
        let release = release.clone();
        async move {
            release.notified().await;
            Ok::<_, std::io::Error>(())
        }
    })
}

#[tokio::test]
async fn a_handler_slower_than_the_ack_wait_keeps_its_event_through_in_progress_acks() {
    let Some(nats) = tideway_testkit::nats().await else {
        return;
    };
    let ack_wait = Duration::from_millis(600);
    let options = SubscribeOptions::new("inventory", "tideway.ordering.*").ack_wait(ack_wait);
    let (first, second) = (nats.bus().await, nats.bus().await);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let release = Arc::new(tokio::sync::Notify::new());
    first
        .subscribe(options.clone(), held(&seen, &release))
        .await
        .unwrap();
    first.publish(&placed(1)).await.unwrap();
    eventually(DEADLINE, "the first delivery", || {
        !seen.lock().unwrap().is_empty()
    })
    .await;
    // A competing member stands by: without the in-progress acks, the server would hand it
    // the event once the ack wait passed.
    let recorder = Recorder::default();
    second
        .subscribe(options, recorder.handler("second"))
        .await
        .unwrap();
    // The handler takes five ack waits, then answers; a second event shows both members
    // are live and pulling.
    tokio::time::sleep(ack_wait * 5).await;
    release.notify_one();
    second.publish(&placed(2)).await.unwrap();
    eventually(DEADLINE, "the second event", || {
        recorder.ns().contains(&2) || seen.lock().unwrap().contains(&2)
    })
    .await;
    let ones = seen.lock().unwrap().iter().filter(|n| **n == 1).count();
    assert_eq!(ones, 1, "delivered once to the slow handler");
    assert!(
        !recorder.ns().contains(&1),
        "never redelivered: {:?}",
        recorder.ns()
    );
    first.shutdown().await;
    second.shutdown().await;
}

#[tokio::test]
async fn the_events_of_a_member_that_died_come_back_after_the_ack_wait() {
    let Some(nats) = tideway_testkit::nats().await else {
        return;
    };
    let options = SubscribeOptions::new("inventory", "tideway.ordering.*")
        .ack_wait(Duration::from_millis(500));
    let dying = nats.bus().await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let never = Arc::new(tokio::sync::Notify::new());
    dying
        .subscribe(options.clone(), held(&seen, &never))
        .await
        .unwrap();
    dying.publish(&placed(1)).await.unwrap();
    eventually(DEADLINE, "the delivery to the dying member", || {
        !seen.lock().unwrap().is_empty()
    })
    .await;
    // It stops mid-handler without answering, as a killed process would.
    dying.shutdown().await;
    let survivor = nats.bus().await;
    let recorder = Recorder::default();
    survivor
        .subscribe(options, recorder.handler("survivor"))
        .await
        .unwrap();
    eventually(DEADLINE, "the redelivery", || recorder.len() >= 1).await;
    assert_eq!(recorder.ns(), [1]);
    survivor.shutdown().await;
}

#[tokio::test]
async fn a_durable_consumer_made_with_another_ack_wait_is_updated() {
    let Some(nats) = tideway_testkit::nats().await else {
        return;
    };
    let recorder = Recorder::default();
    let old = nats.bus().await;
    old.subscribe(
        SubscribeOptions::new("inventory", "tideway.ordering.*").ack_wait(Duration::from_secs(30)),
        recorder.handler("old"),
    )
    .await
    .unwrap();
    old.shutdown().await;
    let new = nats.bus().await;
    new.subscribe(
        SubscribeOptions::new("inventory", "tideway.ordering.*").ack_wait(Duration::from_secs(2)),
        recorder.handler("new"),
    )
    .await
    .unwrap();
    let stream = new
        .jetstream()
        .get_stream(&new.options().stream)
        .await
        .unwrap();
    let info = stream
        .consumer_info(tideway_bus::nats::durable_name(
            "inventory",
            "tideway.ordering.*",
        ))
        .await
        .unwrap();
    assert_eq!(info.config.ack_wait, Duration::from_secs(2));
    new.shutdown().await;
}
