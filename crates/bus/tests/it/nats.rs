//! What only JetStream does: duplicate publishes dropped by id, idempotent set-up.

use tideway_bus::{Publisher, SubscribeOptions, Subscriber};
use tideway_testkit::{DEADLINE, eventually};

use crate::helpers::{Recorder, placed};

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
