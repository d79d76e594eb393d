//! Delivery shapes, retries and dead letters on both backends.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use tideway_bus::{DeadLetter, Event, SubscribeOptions};
use tideway_testkit::{DEADLINE, eventually};

use crate::helpers::{Recorder, buses, placed};

fn fast(consumer: &str, filter: &str) -> SubscribeOptions {
    SubscribeOptions::new(consumer, filter)
        .retry_delay(Duration::from_millis(50), Duration::from_millis(200))
        .ack_wait(Duration::from_secs(10))
}

#[tokio::test]
async fn members_of_one_consumer_compete_for_each_event() {
    for tb in buses().await {
        let recorder = Recorder::default();
        let (a, b) = (tb.bus(), tb.another().await);
        a.subscribe(
            fast("inventory", "tideway.ordering.*"),
            recorder.handler("a"),
        )
        .await
        .unwrap();
        b.subscribe(
            fast("inventory", "tideway.ordering.*"),
            recorder.handler("b"),
        )
        .await
        .unwrap();
        tb.open();
        let events: Vec<Event> = (0..40).map(placed).collect();
        a.publish_batch(&events).await.unwrap();
        eventually(DEADLINE, "40 deliveries", || recorder.len() >= 40).await;
        tb.settled("inventory", "tideway.ordering.*").await;
        let ids: HashSet<String> = recorder.events().into_iter().map(|e| e.id).collect();
        assert_eq!(
            recorder.len(),
            40,
            "{}: every event exactly once",
            tb.name()
        );
        assert_eq!(ids.len(), 40, "{}", tb.name());
        if tb.name() == "embedded" {
            // One event at a time, handed to the member that waited longest: both take part.
            let members: HashSet<String> = recorder.members().into_iter().collect();
            assert_eq!(members.len(), 2, "{members:?}");
        }
        a.shutdown().await;
        b.shutdown().await;
    }
}

#[tokio::test]
async fn every_consumer_gets_every_event_in_order() {
    for tb in buses().await {
        let (inventory, reporting, payment) = (
            Recorder::default(),
            Recorder::default(),
            Recorder::default(),
        );
        let bus = tb.bus();
        bus.subscribe(
            fast("inventory", "tideway.ordering.*"),
            inventory.handler("i"),
        )
        .await
        .unwrap();
        bus.subscribe(fast("reporting", "tideway.>"), reporting.handler("r"))
            .await
            .unwrap();
        // A filter that matches nothing published here gets nothing.
        bus.subscribe(fast("payment", "tideway.payment.*"), payment.handler("p"))
            .await
            .unwrap();
        tb.open();
        for n in 0..10 {
            bus.publish(&placed(n)).await.unwrap();
        }
        eventually(DEADLINE, "both consumers", || {
            inventory.len() >= 10 && reporting.len() >= 10
        })
        .await;
        tb.settled("inventory", "tideway.ordering.*").await;
        tb.settled("reporting", "tideway.>").await;
        let expected: Vec<u32> = (0..10).collect();
        assert_eq!(inventory.ns(), expected, "{}", tb.name());
        assert_eq!(reporting.ns(), expected, "{}", tb.name());
        assert_eq!(payment.len(), 0, "{}", tb.name());
        bus.shutdown().await;
    }
}

#[tokio::test]
async fn a_refused_event_is_redelivered_until_it_is_accepted() {
    for tb in buses().await {
        let attempts: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
        let handler = {
            let attempts = attempts.clone();
            Arc::new(move |event: Event| {
                let attempt = {
                    let mut attempts = attempts.lock().unwrap();
                    let n = attempts.entry(event.id.clone()).or_default();
                    *n += 1;
                    *n
                };
                async move {
                    if attempt < 3 {
                        Err(std::io::Error::other(format!("refused attempt {attempt}")))
                    } else {
                        Ok(())
                    }
                }
            })
        };
        let dead = Recorder::default();
        let bus = tb.bus();
        bus.subscribe(
            fast("inventory", "tideway.ordering.*").max_deliveries(5),
            handler,
        )
        .await
        .unwrap();
        bus.subscribe(fast("ops", "tideway.dlq.*"), dead.handler("ops"))
            .await
            .unwrap();
        tb.open();
        let events: Vec<Event> = (0..3).map(placed).collect();
        bus.publish_batch(&events).await.unwrap();
        eventually(DEADLINE, "three attempts each", || {
            let attempts = attempts.lock().unwrap();
            attempts.len() == 3 && attempts.values().all(|n| *n >= 3)
        })
        .await;
        tb.settled("inventory", "tideway.ordering.*").await;
        let attempts = attempts.lock().unwrap().clone();
        assert!(
            attempts.values().all(|n| *n == 3),
            "{}: {attempts:?}",
            tb.name()
        );
        assert_eq!(dead.len(), 0, "{}", tb.name());
        bus.shutdown().await;
    }
}

#[tokio::test]
async fn an_event_that_always_fails_is_dead_lettered_after_max_deliveries() {
    for tb in buses().await {
        let calls = Arc::new(Mutex::new(0_u32));
        let handler = {
            let calls = calls.clone();
            Arc::new(move |_event: Event| {
                *calls.lock().unwrap() += 1;
                async { Err::<(), _>(std::io::Error::other("stock table is on fire")) }
            })
        };
        let dead = Recorder::default();
        let bus = tb.bus();
        bus.subscribe(
            fast("inventory", "tideway.ordering.*").max_deliveries(3),
            handler,
        )
        .await
        .unwrap();
        bus.subscribe(fast("ops", "tideway.dlq.inventory"), dead.handler("ops"))
            .await
            .unwrap();
        tb.open();
        let event = placed(7);
        bus.publish(&event).await.unwrap();
        eventually(DEADLINE, "the dead letter", || dead.len() >= 1).await;
        tb.settled("inventory", "tideway.ordering.*").await;
        tb.settled("ops", "tideway.dlq.inventory").await;
        assert_eq!(*calls.lock().unwrap(), 3, "{}", tb.name());
        let letters = dead.events();
        assert_eq!(letters.len(), 1, "{}", tb.name());
        assert_eq!(letters[0].event_type, "tideway.dlq.inventory");
        let letter = DeadLetter::from_event(&letters[0]).unwrap();
        assert_eq!(letter.consumer, "inventory");
        assert_eq!(letter.deliveries, 3);
        assert!(letter.error.contains("on fire"), "{}", letter.error);
        assert_eq!(letter.event, event);
        bus.shutdown().await;
    }
}

#[tokio::test]
async fn a_handler_past_its_timeout_is_retried_and_then_dead_lettered() {
    for tb in buses().await {
        let calls = Arc::new(Mutex::new(0_u32));
        let handler = {
            let calls = calls.clone();
            Arc::new(move |_event: Event| {
                *calls.lock().unwrap() += 1;
                async {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    Ok::<_, std::io::Error>(())
                }
            })
        };
        let dead = Recorder::default();
        let bus = tb.bus();
        let options = fast("inventory", "tideway.ordering.*")
            .max_deliveries(2)
            .handler_timeout(Duration::from_secs(1));
        bus.subscribe(options, handler).await.unwrap();
        bus.subscribe(fast("ops", "tideway.dlq.inventory"), dead.handler("ops"))
            .await
            .unwrap();
        tb.open();
        bus.publish(&placed(1)).await.unwrap();
        eventually(DEADLINE, "the dead letter", || dead.len() >= 1).await;
        let letter = DeadLetter::from_event(&dead.events()[0]).unwrap();
        assert!(letter.error.contains("timeout"), "{}", letter.error);
        assert_eq!(*calls.lock().unwrap(), 2, "{}", tb.name());
        bus.shutdown().await;
    }
}

#[tokio::test]
async fn bad_subscriptions_are_refused() {
    for tb in buses().await {
        let bus = tb.bus();
        let recorder = Recorder::default();
        for options in [
            SubscribeOptions::new("in.ventory", "tideway.>"),
            SubscribeOptions::new("inventory", "orders.>"),
            SubscribeOptions::new("inventory", "tideway.>").max_deliveries(0),
        ] {
            assert!(
                bus.subscribe(options.clone(), recorder.handler("x"))
                    .await
                    .is_err(),
                "{}: {options:?}",
                tb.name()
            );
        }
        bus.shutdown().await;
    }
}
