//! What only RabbitMQ does: exchange kinds, deliveries handed back by a lost member, a
//! connection cut mid-traffic, and a broker back without its exchanges and queues.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use tideway_bus::{
    DeadLetter, Event, EventType, Exchange, Publisher, RabbitBus, RabbitOptions, SubscribeOptions,
    Subscriber,
    outbox::{self, Relay, RelayOptions},
};
use tideway_testkit::{DEADLINE, eventually, eventually_async};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::helpers::{OrderPlaced, Recorder, placed, rabbit};

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
struct Authorized {
    n: u32,
}

impl EventType for Authorized {
    const SUBJECT: &'static str = "tideway.payment.authorized";
}

#[tokio::test]
async fn direct_and_fanout_exchanges_route_what_their_consumers_ask_for() {
    let Some(rabbit) = rabbit().await else {
        return;
    };
    let bus = rabbit.bus().await;
    let (direct, fanout, topic) = (
        Recorder::default(),
        Recorder::default(),
        Recorder::default(),
    );
    bus.subscribe(
        SubscribeOptions::new("inventory", OrderPlaced::SUBJECT).exchange(Exchange::Direct),
        direct.handler("direct"),
    )
    .await
    .unwrap();
    bus.subscribe(
        SubscribeOptions::new("reporting", "tideway.>").exchange(Exchange::Fanout),
        fanout.handler("fanout"),
    )
    .await
    .unwrap();
    bus.subscribe(
        SubscribeOptions::new("ordering", "tideway.payment.*"),
        topic.handler("topic"),
    )
    .await
    .unwrap();
    // A direct exchange routes exact types; a fanout one everything.
    for refused in [
        SubscribeOptions::new("x", "tideway.ordering.*").exchange(Exchange::Direct),
        SubscribeOptions::new("x", "tideway.ordering.*").exchange(Exchange::Fanout),
    ] {
        assert!(bus.subscribe(refused, direct.handler("x")).await.is_err());
    }
    let authorized = Event::new(&Authorized { n: 2 }).unwrap();
    bus.publish_batch(&[placed(1), authorized.clone()])
        .await
        .unwrap();
    eventually(DEADLINE, "every routed delivery", || {
        direct.len() >= 1 && fanout.len() >= 2 && topic.len() >= 1
    })
    .await;
    for options in [
        SubscribeOptions::new("inventory", OrderPlaced::SUBJECT).exchange(Exchange::Direct),
        SubscribeOptions::new("reporting", "tideway.>").exchange(Exchange::Fanout),
        SubscribeOptions::new("ordering", "tideway.payment.*"),
    ] {
        eventually_async(DEADLINE, "the queues to drain", || async {
            bus.backlog(&options).await.unwrap() == 0
        })
        .await;
    }
    assert_eq!(direct.ns(), [1]);
    assert_eq!(fanout.len(), 2);
    assert_eq!(topic.events(), [authorized]);
    bus.shutdown().await;
}

/// A handler that records what it is given and never answers.
fn stuck(seen: &Arc<Mutex<Vec<u32>>>) -> Arc<dyn tideway_bus::Handler> {
    let seen = seen.clone();
    Arc::new(move |event: Event| {
        seen.lock()
            .unwrap()
            .push(event.decode::<OrderPlaced>().unwrap().n);
        async {
            std::future::pending::<()>().await;
            Ok::<_, std::io::Error>(())
        }
    })
}

#[tokio::test]
async fn a_lost_member_gives_its_delivery_back_and_past_the_limit_it_is_dead_lettered() {
    let Some(rabbit) = rabbit().await else {
        return;
    };
    let options = SubscribeOptions::new("inventory", "tideway.ordering.*").max_deliveries(2);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let first = rabbit.bus().await;
    first
        .subscribe(options.clone(), stuck(&seen))
        .await
        .unwrap();
    first.publish(&placed(1)).await.unwrap();
    eventually(DEADLINE, "the first delivery", || {
        !seen.lock().unwrap().is_empty()
    })
    .await;
    // Lost mid-handler, as a killed process would be: the queue hands it to the next.
    first.shutdown().await;
    let second = rabbit.bus().await;
    second
        .subscribe(options.clone(), stuck(&seen))
        .await
        .unwrap();
    eventually(DEADLINE, "the second delivery", || {
        seen.lock().unwrap().len() >= 2
    })
    .await;
    second.shutdown().await;
    // Both deliveries went unanswered: the next member dead-letters it unhandled.
    let third = rabbit.bus().await;
    let (handled, dead) = (Recorder::default(), Recorder::default());
    third
        .subscribe(
            SubscribeOptions::new("ops", "tideway.dlq.inventory"),
            dead.handler("ops"),
        )
        .await
        .unwrap();
    third
        .subscribe(options.clone(), handled.handler("third"))
        .await
        .unwrap();
    eventually(DEADLINE, "the dead letter", || dead.len() >= 1).await;
    let letter = DeadLetter::from_event(&dead.events()[0]).unwrap();
    assert_eq!(letter.consumer, "inventory");
    assert_eq!(letter.deliveries, 2);
    assert!(letter.error.contains("lost"), "{}", letter.error);
    assert_eq!(handled.len(), 0, "never handled a third time");
    assert_eq!(*seen.lock().unwrap(), [1, 1]);
    third.shutdown().await;
}

/// A TCP proxy in front of the broker whose connections can be cut at once.
struct Proxy {
    port: u16,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accepting: JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accepting = {
            let connections = connections.clone();
            tokio::spawn(async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    let upstream = upstream.clone();
                    let task = tokio::spawn(async move {
                        if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    connections.lock().unwrap().push(task);
                }
            })
        };
        Self {
            port,
            connections,
            accepting,
        }
    }

    /// Drops every connection open through the proxy (both sides see it closed).
    fn cut(&self) {
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accepting.abort();
    }
}

/// The broker's address (`host:port`) from an `amqp://user:pass@host:port/vhost` URL.
fn broker_address(url: &str) -> String {
    let rest = url.strip_prefix("amqp://").unwrap_or(url);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    rest.split('/').next().unwrap_or(rest).to_owned()
}

/// The events received by a consumer: past `hold_after` it waits at `gate` before
/// recording, so the next ones stay in the broker.
fn gated(
    received: &Arc<Mutex<BTreeSet<u32>>>,
    hold_after: u32,
    gate: &watch::Receiver<bool>,
) -> Arc<dyn tideway_bus::Handler> {
    let (received, gate) = (received.clone(), gate.clone());
    Arc::new(move |event: Event| {
        let received = received.clone();
        let mut gate = gate.clone();
        async move {
            let n = event.decode::<OrderPlaced>()?.n;
            if n > hold_after {
                let _ = gate.wait_for(|open| *open).await;
            }
            received.lock().unwrap().insert(n);
            Ok::<_, anyhow::Error>(())
        }
    })
}

struct Traffic {
    db: tideway_testkit::TestDb,
    waker: outbox::RelayWaker,
    tracker: TaskTracker,
    token: CancellationToken,
}

impl Traffic {
    async fn start(publisher: RabbitBus) -> Self {
        let db = tideway_testkit::sqlite().await;
        outbox::install(&db).await.unwrap();
        let tracker = TaskTracker::new();
        let token = CancellationToken::new();
        let waker = Relay::new(
            (*db).clone(),
            Arc::new(publisher),
            RelayOptions {
                poll_interval: Duration::from_millis(50),
                retry_delay: Duration::from_millis(100),
                max_retry_delay: Duration::from_millis(500),
                ..RelayOptions::default()
            },
        )
        .spawn(&tracker, token.clone());
        Self {
            db,
            waker,
            tracker,
            token,
        }
    }

    async fn enqueue(&self, range: std::ops::RangeInclusive<u32>) {
        for n in range {
            let mut tx = self.db.begin().await.unwrap();
            outbox::enqueue(&mut tx, &placed(n)).await.unwrap();
            tx.commit().await.unwrap();
            self.waker.wake();
        }
    }

    async fn pending(&self) -> i64 {
        outbox::pending(&self.db).await.unwrap()
    }

    async fn stop(self) {
        self.token.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

#[tokio::test]
async fn a_connection_cut_mid_traffic_loses_no_event() {
    let Some(rabbit) = rabbit().await else {
        return;
    };
    let proxy = Proxy::start(broker_address(&rabbit.options().url)).await;
    let through_proxy = RabbitOptions {
        url: format!("amqp://guest:guest@127.0.0.1:{}/%2f", proxy.port),
        ..rabbit.options()
    };
    let consumer = RabbitBus::connect(through_proxy.clone()).await.unwrap();
    let publisher = RabbitBus::connect(through_proxy).await.unwrap();
    let received: Arc<Mutex<BTreeSet<u32>>> = Arc::default();
    let (gate, gate_rx) = watch::channel(false);
    consumer
        .subscribe(
            SubscribeOptions::new("inventory", "tideway.ordering.*"),
            gated(&received, 10, &gate_rx),
        )
        .await
        .unwrap();
    let traffic = Traffic::start(publisher.clone()).await;
    traffic.enqueue(1..=30).await;
    eventually(DEADLINE, "the first events", || {
        received.lock().unwrap().len() >= 10
    })
    .await;
    // Both connections drop while deliveries are in hand and publishes in flight.
    proxy.cut();
    traffic.enqueue(31..=40).await;
    gate.send_replace(true);
    traffic.enqueue(41..=60).await;
    eventually_async(DEADLINE, "every event, and every row confirmed", || async {
        received.lock().unwrap().len() == 60 && traffic.pending().await == 0
    })
    .await;
    assert_eq!(*received.lock().unwrap(), (1..=60).collect::<BTreeSet<_>>());
    assert_eq!(publisher.losses(), 0, "the broker kept its state");
    traffic.stop().await;
    consumer.shutdown().await;
    publisher.shutdown().await;
    let queues = consumer.queues();
    rabbit.bus().await.delete(&queues).await.unwrap();
}

#[tokio::test]
async fn a_broker_back_without_its_exchanges_and_queues_gets_them_again_and_every_event() {
    let Some(rabbit) = rabbit().await else {
        return;
    };
    let proxy = Proxy::start(broker_address(&rabbit.options().url)).await;
    let through_proxy = RabbitOptions {
        url: format!("amqp://guest:guest@127.0.0.1:{}/%2f", proxy.port),
        ..rabbit.options()
    };
    let bus = RabbitBus::connect(through_proxy).await.unwrap();
    let received: Arc<Mutex<BTreeSet<u32>>> = Arc::default();
    let (gate, gate_rx) = watch::channel(false);
    bus.subscribe(
        SubscribeOptions::new("inventory", "tideway.ordering.*"),
        gated(&received, 10, &gate_rx),
    )
    .await
    .unwrap();
    let traffic = Traffic::start(bus.clone()).await;
    traffic.enqueue(1..=30).await;
    eventually_async(
        DEADLINE,
        "the first events handled, all confirmed",
        || async { received.lock().unwrap().len() >= 10 && traffic.pending().await == 0 },
    )
    .await;
    // The broker loses everything this system had declared, confirmed events included,
    // and the connection drops.
    let admin = rabbit.bus().await;
    admin.delete(&bus.queues()).await.unwrap();
    admin.shutdown().await;
    proxy.cut();
    gate.send_replace(true);
    traffic.enqueue(31..=40).await;
    eventually_async(DEADLINE, "every event delivered", || async {
        received.lock().unwrap().len() == 40 && traffic.pending().await == 0
    })
    .await;
    assert_eq!(*received.lock().unwrap(), (1..=40).collect::<BTreeSet<_>>());
    assert!(bus.losses() >= 1, "the loss was noticed");
    traffic.stop().await;
    bus.shutdown().await;
    let queues = bus.queues();
    rabbit.bus().await.delete(&queues).await.unwrap();
}
