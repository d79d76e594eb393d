//! Shared test fixtures: event types, a recording handler, buses on both backends.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tideway_bus::{
    Bus, EmbeddedBus, EmbeddedOptions, Event, EventType, Handler, NatsBus, RabbitBus,
    RabbitOptions, SubscribeOptions, Subscriber, nats::durable_name,
};
use tideway_testkit::{DEADLINE, TestNats, eventually_async};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OrderPlaced {
    pub n: u32,
}

impl EventType for OrderPlaced {
    const SUBJECT: &'static str = "tideway.ordering.order-placed";
}

pub fn placed(n: u32) -> Event {
    Event::new(&OrderPlaced { n })
        .unwrap()
        .with_subject(format!("order-{n}"))
}

/// Records every delivery: which member handled which event.
#[derive(Clone, Default)]
pub struct Recorder {
    seen: Arc<Mutex<Vec<(String, Event)>>>,
}

impl Recorder {
    pub fn handler(&self, member: &str) -> Arc<dyn Handler> {
        let seen = self.seen.clone();
        let member = member.to_owned();
        Arc::new(move |event: Event| {
            seen.lock().unwrap().push((member.clone(), event));
            async { Ok::<_, std::io::Error>(()) }
        })
    }

    pub fn events(&self) -> Vec<Event> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|(_, e)| e.clone())
            .collect()
    }

    pub fn members(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|(m, _)| m.clone())
            .collect()
    }

    pub fn len(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn ns(&self) -> Vec<u32> {
        self.events()
            .iter()
            .map(|e| e.decode::<OrderPlaced>().unwrap().n)
            .collect()
    }
}

/// A bus under test: the embedded one, a private stream on the NATS test server, or a
/// private prefix on the RabbitMQ test broker.
pub enum TestBus {
    Embedded(EmbeddedBus),
    Nats { nats: TestNats, bus: NatsBus },
    Rabbit { rabbit: TestRabbit, bus: RabbitBus },
}

impl TestBus {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Embedded(_) => "embedded",
            Self::Nats { .. } => "nats",
            Self::Rabbit { .. } => "rabbitmq",
        }
    }

    pub fn bus(&self) -> Arc<dyn Bus> {
        match self {
            Self::Embedded(bus) => Arc::new(bus.clone()),
            Self::Nats { bus, .. } => Arc::new(bus.clone()),
            Self::Rabbit { bus, .. } => Arc::new(bus.clone()),
        }
    }

    /// A second handle, as a second process would have (NATS: a second connection).
    pub async fn another(&self) -> Arc<dyn Bus> {
        match self {
            Self::Embedded(bus) => Arc::new(bus.clone()),
            Self::Nats { nats, .. } => Arc::new(nats.bus().await),
            Self::Rabbit { rabbit, .. } => Arc::new(rabbit.bus().await),
        }
    }

    /// Lets publishing begin (the embedded bus waits for its consumers to subscribe).
    pub fn open(&self) {
        if let Self::Embedded(bus) = self {
            bus.open();
        }
    }

    /// Waits until `consumer` on `filter` has nothing pending or unacknowledged, so no
    /// further delivery can happen (the embedded bus is settled once publish returns).
    pub async fn settled(&self, consumer: &str, filter: &str) {
        if let Self::Rabbit { bus, .. } = self {
            let options = SubscribeOptions::new(consumer, filter);
            eventually_async(DEADLINE, "the queue to settle", || async {
                bus.backlog(&options).await.unwrap() == 0
            })
            .await;
        }
        if let Self::Nats { bus, .. } = self {
            let stream = bus
                .jetstream()
                .get_stream(&bus.options().stream)
                .await
                .unwrap();
            let durable = durable_name(consumer, filter);
            eventually_async(DEADLINE, "the consumer to settle", || async {
                let info = stream.consumer_info(&durable).await.unwrap();
                info.num_pending == 0 && info.num_ack_pending == 0
            })
            .await;
        }
    }
}

/// The embedded bus and, when reachable, NATS.
pub async fn buses() -> Vec<TestBus> {
    let mut buses = vec![TestBus::Embedded(
        EmbeddedBus::new(EmbeddedOptions::default()).await.unwrap(),
    )];
    if let Some(nats) = tideway_testkit::nats().await {
        let bus = nats.bus().await;
        buses.push(TestBus::Nats { nats, bus });
    }
    if let Some(rabbit) = rabbit().await {
        let bus = rabbit.bus().await;
        buses.push(TestBus::Rabbit { rabbit, bus });
    }
    buses
}

/// The URL of the RabbitMQ test broker (`TIDEWAY_TEST_RABBITMQ_URL`).
pub fn rabbit_url() -> String {
    std::env::var("TIDEWAY_TEST_RABBITMQ_URL").unwrap_or_else(|_| RabbitOptions::default().url)
}

/// A name prefix of one test's own on the RabbitMQ test broker: every bus made from it
/// shares the exchanges, and what they declared is deleted when it drops.
pub struct TestRabbit {
    options: RabbitOptions,
    made: Mutex<Vec<RabbitBus>>,
}

impl TestRabbit {
    pub fn options(&self) -> RabbitOptions {
        self.options.clone()
    }

    /// A new connection under this test's prefix: call twice for two "processes".
    pub async fn bus(&self) -> RabbitBus {
        let bus = RabbitBus::connect(self.options()).await.unwrap();
        self.made.lock().unwrap().push(bus.clone());
        bus
    }
}

impl Drop for TestRabbit {
    fn drop(&mut self) {
        let options = self.options.clone();
        let mut queues: Vec<String> = self
            .made
            .lock()
            .unwrap()
            .iter()
            .flat_map(RabbitBus::queues)
            .collect();
        queues.sort();
        queues.dedup();
        // A runtime of its own: a drop cannot await inside the test's.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                if let Ok(bus) = RabbitBus::connect(options).await {
                    let _ = bus.delete(&queues).await;
                    bus.shutdown().await;
                }
            });
        })
        .join();
    }
}

/// A fresh prefix on the RabbitMQ test broker, or `None` (with a notice) when it is
/// unreachable outside CI; with `CI=true` an unreachable broker fails the test.
pub async fn rabbit() -> Option<TestRabbit> {
    let options = RabbitOptions {
        url: rabbit_url(),
        prefix: format!("t{}", uuid::Uuid::new_v4().simple()),
        connect_timeout: Duration::from_secs(3),
        // Whatever a test leaves behind goes away once unused.
        queue_expiry: Some(Duration::from_secs(60)),
        ..RabbitOptions::default()
    };
    match RabbitBus::connect(options.clone()).await {
        Ok(probe) => {
            probe.shutdown().await;
            Some(TestRabbit {
                options,
                made: Mutex::default(),
            })
        }
        Err(err) => {
            assert!(
                !tideway_testkit::is_ci(),
                "RabbitMQ at 127.0.0.1:5672 is unusable and CI=true: {err:?} (run scripts/deps.sh)"
            );
            eprintln!(
                "note: skipping RabbitMQ half: the broker is unusable ({err}); run scripts/deps.sh"
            );
            None
        }
    }
}
