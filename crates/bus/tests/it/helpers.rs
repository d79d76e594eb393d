//! Shared test fixtures: event types, a recording handler, buses on both backends.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tideway_bus::{
    Bus, EmbeddedBus, EmbeddedOptions, Event, EventType, Handler, NatsBus, nats::durable_name,
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

/// A bus under test: the embedded one, or a private stream on the NATS test server.
pub enum TestBus {
    Embedded(EmbeddedBus),
    Nats { nats: TestNats, bus: NatsBus },
}

impl TestBus {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Embedded(_) => "embedded",
            Self::Nats { .. } => "nats",
        }
    }

    pub fn bus(&self) -> Arc<dyn Bus> {
        match self {
            Self::Embedded(bus) => Arc::new(bus.clone()),
            Self::Nats { bus, .. } => Arc::new(bus.clone()),
        }
    }

    /// A second handle, as a second process would have (NATS: a second connection).
    pub async fn another(&self) -> Arc<dyn Bus> {
        match self {
            Self::Embedded(bus) => Arc::new(bus.clone()),
            Self::Nats { nats, .. } => Arc::new(nats.bus().await),
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
    buses
}
