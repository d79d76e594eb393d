//! The latest events on the bus, for the operations console.
//!
//! An [`EventTap`] subscribes the consumer group `ops` to every Tideway subject and keeps a
//! summary of the last events it saw in a bounded ring, so the console can list what just
//! happened and follow one trace across services through the events' `traceparent`.

use std::{
    collections::VecDeque,
    convert::Infallible,
    future::{Ready, ready},
    sync::{Arc, Mutex, PoisonError},
};

use serde::Serialize;
use tideway_bus::{Bus, BusError, Event, SubscribeOptions, SubscriptionHandle};
use time::format_description::well_known::Rfc3339;

/// The consumer group the console subscribes as.
pub const CONSUMER: &str = "ops";
/// Every Tideway subject, dead letters included (`>` matches one or more tokens).
pub const FILTER: &str = "tideway.>";

/// What the console shows of one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventSummary {
    /// The event id (a UUID v7).
    pub id: String,
    /// The CloudEvents type, which is also the subject (`tideway.ordering.order-placed`).
    pub event_type: String,
    /// The producing service (`tideway/ordering`).
    pub source: String,
    /// When it happened, RFC 3339 as in the event.
    pub time: String,
    /// What it is about (an order id), when the event says.
    pub subject: Option<String>,
    /// The 32-hex-digit trace id of its `traceparent`, when it has a valid one.
    pub trace_id: Option<String>,
}

/// A bounded ring of the latest events on the bus. Cheap to clone; clones share the ring.
#[derive(Debug, Clone)]
pub struct EventTap {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    capacity: usize,
    ring: Mutex<VecDeque<EventSummary>>,
}

impl EventSummary {
    /// The summary of `event`.
    pub fn of(event: &Event) -> Self {
        Self {
            id: event.id.clone(),
            event_type: event.event_type.clone(),
            source: event.source.clone(),
            time: event
                .time
                .format(&Rfc3339)
                .unwrap_or_else(|_| event.time.to_string()),
            subject: event.subject.clone(),
            trace_id: event.traceparent.as_deref().and_then(trace_id),
        }
    }
}

impl EventTap {
    /// A tap keeping the last `capacity` events (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            inner: Arc::new(Inner {
                capacity,
                ring: Mutex::new(VecDeque::with_capacity(capacity)),
            }),
        }
    }

    /// Subscribes the `ops` group to every Tideway event on `bus`; each event is recorded
    /// and acknowledged at once. With the embedded bus, subscribe before it is opened.
    ///
    /// The subscription runs until the handle is stopped or the bus shuts down.
    #[tracing::instrument(skip_all, err)]
    pub async fn subscribe(&self, bus: &Arc<dyn Bus>) -> Result<SubscriptionHandle, BusError> {
        let tap = self.clone();
        let handler = move |event: Event| -> Ready<Result<(), Infallible>> {
            tap.record(&event);
            ready(Ok(()))
        };
        bus.subscribe(SubscribeOptions::new(CONSUMER, FILTER), Arc::new(handler))
            .await
    }

    /// Adds `event` to the ring, dropping the oldest when it is full.
    pub fn record(&self, event: &Event) {
        let summary = EventSummary::of(event);
        let mut ring = self.lock();
        while ring.len() >= self.inner.capacity {
            ring.pop_front();
        }
        ring.push_back(summary);
    }

    /// The events kept, newest first.
    pub fn recent(&self) -> Vec<EventSummary> {
        self.lock().iter().rev().cloned().collect()
    }

    /// The events kept of trace `trace_id` (32 hex digits, any case), newest first.
    pub fn for_trace(&self, trace_id: &str) -> Vec<EventSummary> {
        let trace_id = trace_id.to_ascii_lowercase();
        self.lock()
            .iter()
            .rev()
            .filter(|e| e.trace_id.as_deref() == Some(trace_id.as_str()))
            .cloned()
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<EventSummary>> {
        self.inner
            .ring
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), lower-case; `None`
/// when it is malformed or the all-zero invalid id.
pub fn trace_id(traceparent: &str) -> Option<String> {
    let mut parts = traceparent.trim().split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let parent = parts.next()?;
    let flags = parts.next()?;
    let is_hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    let valid = is_hex(version, 2)
        && !version.eq_ignore_ascii_case("ff")
        // Version 00 has exactly four fields; later versions may append more.
        && (version != "00" || parts.next().is_none())
        && is_hex(trace, 32)
        && trace.bytes().any(|b| b != b'0')
        && is_hex(parent, 16)
        && is_hex(flags, 2);
    valid.then(|| trace.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tideway_bus::{EmbeddedBus, EmbeddedOptions, Publisher, Subscriber};
    use tideway_testkit::{DEADLINE, eventually};

    use super::*;

    const TRACE_A: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const TRACE_B: &str = "0af7651916cd43dd8448eb211c80319c";

    fn event(event_type: &str, trace: &str, order: &str) -> Event {
        Event::from_json(event_type, json!({ "order_id": order }))
            .unwrap()
            .with_subject(order)
            .with_traceparent(format!("00-{trace}-00f067aa0ba902b7-01"))
    }

    async fn embedded_with_tap(capacity: usize) -> (EmbeddedBus, EventTap, SubscriptionHandle) {
        let embedded = EmbeddedBus::new(EmbeddedOptions::default()).await.unwrap();
        let bus: Arc<dyn Bus> = Arc::new(embedded.clone());
        let tap = EventTap::new(capacity);
        let handle = tap.subscribe(&bus).await.unwrap();
        // Publishing waits until every consumer group exists: open after subscribing.
        embedded.open();
        (embedded, tap, handle)
    }

    #[tokio::test]
    async fn taps_every_event_on_the_embedded_bus_newest_first() {
        let (bus, tap, handle) = embedded_with_tap(10).await;
        let placed = event("tideway.ordering.order-placed", TRACE_A, "o-1");
        let reserved = event("tideway.inventory.stock-reserved", TRACE_A, "o-1");
        let authorized = event("tideway.payment.authorized", TRACE_B, "o-2");
        for e in [&placed, &reserved, &authorized] {
            bus.publish(e).await.unwrap();
        }
        eventually(DEADLINE, "three events", || tap.recent().len() == 3).await;

        let recent = tap.recent();
        let ids: Vec<&str> = recent.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, [&authorized.id, &reserved.id, &placed.id]);
        let newest = &recent[0];
        assert_eq!(newest.event_type, "tideway.payment.authorized");
        assert_eq!(newest.source, "tideway/payment");
        assert_eq!(newest.subject.as_deref(), Some("o-2"));
        assert_eq!(newest.trace_id.as_deref(), Some(TRACE_B));
        assert_eq!(
            time::OffsetDateTime::parse(&newest.time, &Rfc3339).unwrap(),
            authorized.time
        );

        let trace_a: Vec<String> = tap.for_trace(TRACE_A).into_iter().map(|e| e.id).collect();
        assert_eq!(trace_a, [reserved.id.clone(), placed.id.clone()]);
        assert_eq!(tap.for_trace(&TRACE_B.to_uppercase()).len(), 1);
        assert!(tap.for_trace("00000000000000000000000000000001").is_empty());

        handle.stop();
        bus.shutdown().await;
    }

    #[tokio::test]
    async fn the_ring_keeps_only_the_latest_events() {
        let (bus, tap, _handle) = embedded_with_tap(2).await;
        let events: Vec<Event> = (0..5)
            .map(|i| event("tideway.catalog.item-changed", TRACE_A, &format!("i-{i}")))
            .collect();
        for e in &events {
            bus.publish(e).await.unwrap();
        }
        let last = events[4].id.clone();
        eventually(DEADLINE, "the last event", || {
            tap.recent().first().is_some_and(|e| e.id == last)
        })
        .await;

        let kept: Vec<String> = tap.recent().into_iter().map(|e| e.id).collect();
        assert_eq!(kept, [events[4].id.clone(), events[3].id.clone()]);
        let tiny = EventTap::new(0);
        tiny.record(&events[0]);
        tiny.record(&events[1]);
        assert_eq!(tiny.recent().len(), 1);
        bus.shutdown().await;
    }

    #[tokio::test]
    async fn clones_share_the_ring() {
        let tap = EventTap::new(4);
        let clone = tap.clone();
        clone.record(&event("tideway.basket.checked-out", TRACE_A, "b-1"));
        assert_eq!(tap.recent().len(), 1);
    }

    #[test]
    fn trace_ids_come_from_valid_traceparents_only() {
        let tp = |s: &str| trace_id(s);
        assert_eq!(
            tp("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").as_deref(),
            Some(TRACE_A)
        );
        assert_eq!(
            tp("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-00").as_deref(),
            Some(TRACE_A)
        );
        // A later version may append fields.
        assert_eq!(
            tp("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra").as_deref(),
            Some(TRACE_A)
        );
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47zz-00f067aa0ba902b7-01",
        ] {
            assert_eq!(tp(bad), None, "{bad:?}");
        }
        let mut untraced = event("tideway.catalog.item-changed", TRACE_A, "i-1");
        untraced.traceparent = None;
        assert_eq!(EventSummary::of(&untraced).trace_id, None);
    }
}
