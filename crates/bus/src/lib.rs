//! Tideway's event bus: a CloudEvents envelope, publisher and subscriber traits, three
//! backends, the transactional outbox with its relay, and the inbox.
//!
//! # How an event travels
//!
//! ```text
//!  service A transaction ──────────────┐          ┌──────── service B transaction
//!   state change + outbox::enqueue     │          │   inbox::record + effect
//!                                      ▼          │
//!          outbox table ──Relay (one per service, lease)──▶ Publisher ──▶ Subscriber ──▶ Handler
//! ```
//!
//! 1. A service changes its state and calls [`outbox::enqueue`] in the **same** transaction,
//!    so the change and the events it emits commit together or not at all.
//! 2. A [`Relay`](outbox::Relay) per service (only one replica holds its lease) publishes the
//!    pending rows in order through a [`Publisher`] and marks them sent once the backend has
//!    accepted them: at least once, never lost.
//! 3. The backend delivers every event to every consumer group whose filter matches its
//!    subject (fan-out), and to one member of each group (competing consumers). The consumer
//!    name is the consuming service: its replicas compete, other services each get a copy.
//! 4. A [`Handler`] returns `Ok` (acknowledged) or `Err` (redelivered after a delay). After
//!    [`SubscribeOptions::max_deliveries`] failed deliveries the event goes to the dead-letter
//!    subject `tideway.dlq.<consumer>` as a [`DeadLetter`] event.
//! 5. A handler records the event id with [`inbox::record`] in the transaction of its effect,
//!    so a redelivered event is acknowledged without a second effect.
//!
//! # Backends
//!
//! * [`EmbeddedBus`] (`tideway up`): in-process. It keeps no queue of its own: publishing
//!   returns only once every matching consumer group has acknowledged (or dead-lettered) the
//!   event, so the relay marks an outbox row sent only after delivery. A process killed at
//!   any moment leaves undelivered events pending in the outbox, and the relay delivers them
//!   again on the next start. With a retention it also appends every published event to
//!   an event log (`bus_event_log`), which read models are rebuilt from. See [`embedded`].
//! * [`NatsBus`] (distributed mode): NATS JetStream, one stream for Tideway's subjects, a
//!   durable pull consumer per consuming service and filter, explicit acks, redelivery after
//!   the ack wait or a nack, a maximum number of deliveries, then the dead-letter subject.
//!   Publishing sets `Nats-Msg-Id` to the event id, so JetStream drops re-publishes inside
//!   its duplicate window. See [`nats`].
//! * [`RabbitBus`] (`bus.kind = "rabbitmq"`): RabbitMQ, events to a topic exchange (which
//!   feeds a direct and a fanout one, see [`Exchange`]), a durable quorum queue per consumer
//!   group, manual acks with bounded prefetch, publisher confirms, retries through a TTL
//!   queue, a dead-letter exchange and queue. See [`rabbitmq`].
//!
//! All are used as `Arc<dyn Bus>`; the traits return boxed futures ([`BoxFuture`]) so they
//! stay object safe without a macro.
//!
//! # Subjects
//!
//! An event's CloudEvents `type` is its subject, `tideway.<service>.<event>`; each payload
//! type declares it through [`EventType::SUBJECT`]. Subscriptions filter with NATS wildcards:
//! `*` matches one token, `>` one or more trailing tokens ([`subject::matches`]).
#![warn(missing_docs)]

pub mod contract;
pub mod dead_letters;
pub mod embedded;
pub mod event;
pub mod inbox;
pub mod nats;
pub mod outbox;
pub mod rabbitmq;
pub mod subject;

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use backon::{BackoffBuilder, ExponentialBuilder};
use tracing::Instrument;

pub use dead_letters::{DeadLetters, StoredLetter};
pub use embedded::{EmbeddedBus, EmbeddedOptions};
pub use event::{DeadLetter, Event, EventType};
pub use nats::{NatsBus, NatsOptions, StreamReader};
pub use rabbitmq::{RabbitBus, RabbitOptions};

/// A boxed, sendable future: what the bus traits return, so `dyn Bus` works.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The error a handler returns to refuse an event (it is redelivered later).
pub type HandlerError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A failed bus operation.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// An event, subject or option is not acceptable.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was invalid (`subject`, `consumer name`, …).
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// Encoding or decoding an event failed.
    #[error("cannot encode or decode an event")]
    Codec(#[from] serde_json::Error),
    /// A payload's type is not the event's type.
    #[error("event type {found:?} is not the expected {expected:?}")]
    WrongType {
        /// The type the caller asked for.
        expected: &'static str,
        /// The event's type.
        found: String,
    },
    /// The backend (NATS) failed.
    #[error("bus backend error: {context}")]
    Backend {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: HandlerError,
    },
    /// The database failed (outbox, inbox, leases, dead letters).
    #[error("database error")]
    Db(#[from] sqlx::Error),
    /// The bus is shutting down.
    #[error("the bus is shut down")]
    Closed,
}

impl BusError {
    pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            what,
            reason: reason.into(),
        }
    }

    pub(crate) fn backend(context: impl Into<String>, source: impl Into<HandlerError>) -> Self {
        Self::Backend {
            context: context.into(),
            source: source.into(),
        }
    }
}

/// Handles events of one subscription. `Ok` acknowledges; `Err` asks for a redelivery.
///
/// Any `Fn(Event) -> impl Future<Output = Result<(), E>>` closure is a handler.
pub trait Handler: Send + Sync + 'static {
    /// Handles one delivery of `event`.
    fn handle(&self, event: Event) -> BoxFuture<'_, Result<(), HandlerError>>;
}

impl<F, Fut, E> Handler for F
where
    F: Fn(Event) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Into<HandlerError>,
{
    fn handle(&self, event: Event) -> BoxFuture<'_, Result<(), HandlerError>> {
        let fut = self(event);
        Box::pin(async move { fut.await.map_err(Into::into) })
    }
}

/// A handler whose every delivery is a consumer span (OpenTelemetry messaging conventions)
/// continuing the event's `traceparent`, when spans are recorded; otherwise the handler
/// itself, with nothing added per delivery. Both backends wrap every subscription in it.
pub(crate) struct Traced {
    consumer: Arc<str>,
    system: &'static str,
    inner: Arc<dyn Handler>,
}

impl Traced {
    pub(crate) fn wrap(
        system: &'static str,
        consumer: &str,
        inner: Arc<dyn Handler>,
    ) -> Arc<dyn Handler> {
        Arc::new(Self {
            consumer: consumer.into(),
            system,
            inner,
        })
    }
}

impl Handler for Traced {
    fn handle(&self, event: Event) -> BoxFuture<'_, Result<(), HandlerError>> {
        if !tideway_client::trace::spans_recorded() {
            let event_type = event.event_type.clone();
            let handling = self.inner.handle(event);
            return Box::pin(async move {
                let result = handling.await;
                meter::consumed(&self.consumer, &event_type, result.is_ok());
                result
            });
        }
        let event_type = event.event_type.clone();
        let span = tracing::info_span!(
            "consume",
            otel.name = %format_args!("process {}", event.event_type),
            otel.kind = "consumer",
            otel.status_code = tracing::field::Empty,
            service = &*self.consumer,
            messaging.system = self.system,
            messaging.operation.type = "process",
            messaging.destination.name = %event.event_type,
            messaging.consumer.group.name = &*self.consumer,
            messaging.message.id = %event.id,
            error.type = tracing::field::Empty,
        );
        let span = tideway_client::trace::child_span(span, event.traceparent.as_deref());
        let handling = self.inner.handle(event).instrument(span.clone());
        Box::pin(async move {
            let result = handling.await;
            meter::consumed(&self.consumer, &event_type, result.is_ok());
            if let Err(err) = &result {
                span.record("otel.status_code", "ERROR");
                span.record("error.type", tracing::field::display(err));
            }
            result
        })
    }
}

/// The bus's metrics (STYLE rule 18): counters per event type and consumer, both bounded
/// (event types are the contracts' subjects, consumers the services).
pub(crate) mod meter {
    /// One event accepted by the backend.
    pub(crate) fn published(system: &'static str, event_type: &str) {
        metrics::counter!("tideway_bus_published_total", "system" => system, "event_type" => event_type.to_owned())
            .increment(1);
    }

    /// One delivery handled, `ok` or not.
    pub(crate) fn consumed(consumer: &str, event_type: &str, ok: bool) {
        metrics::counter!(
            "tideway_bus_consumed_total",
            "consumer" => consumer.to_owned(),
            "event_type" => event_type.to_owned(),
            "outcome" => if ok { "ok" } else { "error" }
        )
        .increment(1);
    }

    /// One delivery after the first.
    pub(crate) fn redelivered(consumer: &str, event_type: &str) {
        metrics::counter!(
            "tideway_bus_redelivered_total",
            "consumer" => consumer.to_owned(),
            "event_type" => event_type.to_owned()
        )
        .increment(1);
    }

    /// One event given up on and kept as a dead letter.
    pub(crate) fn dead_lettered(consumer: &str, event_type: &str) {
        metrics::counter!(
            "tideway_bus_dead_lettered_total",
            "consumer" => consumer.to_owned(),
            "event_type" => event_type.to_owned()
        )
        .increment(1);
    }

    /// Events the consumer has yet to receive (JetStream's pending count).
    pub(crate) fn lag(consumer: &str, pending: u64) {
        #[expect(clippy::cast_precision_loss, reason = "a gauge; exact below 2^53")]
        metrics::gauge!("tideway_bus_consumer_lag_messages", "consumer" => consumer.to_owned())
            .set(pending as f64);
    }
}

/// The producer span of publishing `event` (a child of its `traceparent`), when spans are
/// recorded; `Span::none()` otherwise.
pub(crate) fn publish_span(system: &'static str, event: &Event) -> tracing::Span {
    if !tideway_client::trace::spans_recorded() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "publish",
        otel.name = %format_args!("publish {}", event.event_type),
        otel.kind = "producer",
        messaging.system = system,
        messaging.operation.type = "send",
        messaging.destination.name = %event.event_type,
        messaging.message.id = %event.id,
    );
    tideway_client::trace::child_span(span, event.traceparent.as_deref())
}

/// Publishes events.
pub trait Publisher: Send + Sync {
    /// Publishes one event; answers once the backend has accepted it durably (JetStream
    /// stored it; the embedded bus had it acknowledged by every matching consumer group).
    fn publish<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<(), BusError>>;

    /// Publishes events in order and answers once all are accepted. Backends that can
    /// pipeline (NATS) send them all before awaiting the acknowledgements.
    fn publish_batch<'a>(&'a self, events: &'a [Event]) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move {
            for event in events {
                self.publish(event).await?;
            }
            Ok(())
        })
    }

    /// How many times this publisher found that the backend had lost the events it had
    /// accepted (a NATS server back without its stream). A relay that sees the count grow
    /// publishes its retained sent rows again, so events stored only by the lost stream
    /// reach their consumers; their inboxes drop the ones already handled.
    fn losses(&self) -> u64 {
        0
    }
}

/// How long the backend waits for a member's acknowledgement, by default, before it hands
/// the event to another member: the delay after which a crashed consumer's events come back.
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(3);

/// How long a handler may run, by default, before its delivery counts as failed.
pub const DEFAULT_HANDLER_TIMEOUT: Duration = Duration::from_secs(30);

/// What a subscription consumes and how it retries.
#[derive(Debug, Clone)]
pub struct SubscribeOptions {
    /// The durable consumer name: the consuming service (`inventory`). Subscriptions with the
    /// same consumer and filter compete for events; different consumers each get every event.
    pub consumer: String,
    /// The subject filter, with wildcards (`tideway.ordering.*`, `tideway.>`).
    pub filter: String,
    /// Deliveries before the event is dead-lettered (at least 1).
    pub max_deliveries: u32,
    /// The delay before the first redelivery after a failure; doubled each time, and each
    /// delay jittered by up to as much again.
    pub retry_delay: Duration,
    /// The longest delay between redeliveries, before jitter.
    pub max_retry_delay: Duration,
    /// How long the backend waits without hearing from the member handling an event before
    /// it delivers the event again (on NATS, JetStream's ack wait): after a crash, the
    /// consumer's events come back this long after they were handed out. A handler that
    /// runs longer is not cut off: while it runs, the member tells the server every third
    /// of this that it is still working (in-progress acks). Keep it shorter than the
    /// deadline of whoever waits for the event's effect (a saga step).
    pub ack_wait: Duration,
    /// How long a handler may run before the delivery counts as failed (and is retried).
    pub handler_timeout: Duration,
    /// Which RabbitMQ exchange the group's queue is bound to ([`Exchange::Topic`] by
    /// default). Every backend delivers the same events for a valid combination of filter
    /// and exchange; RabbitMQ routes them through that exchange.
    pub exchange: Exchange,
}

/// The kind of exchange a RabbitMQ consumer group's queue is bound to. Events are always
/// published to the topic exchange, which feeds the direct and fanout exchanges, so a
/// subscription chooses how its queue is routed, not what publishers do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Exchange {
    /// Bound with the filter as a topic pattern (`*` one token, `>` one or more): any filter.
    #[default]
    Topic,
    /// Bound with the filter as the exact routing key: the filter must be one event type,
    /// without wildcards.
    Direct,
    /// Bound without a key, getting every event: the filter must be `tideway.>`.
    Fanout,
}

impl Exchange {
    /// The kind's name in RabbitMQ (`topic`, `direct`, `fanout`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Topic => "topic",
            Self::Direct => "direct",
            Self::Fanout => "fanout",
        }
    }
}

impl SubscribeOptions {
    /// Options for `consumer` on `filter` with defaults: 5 deliveries, retries after 1 s,
    /// 2 s, 4 s … up to 30 s (each plus up to as much again of jitter),
    /// [`DEFAULT_ACK_WAIT`], [`DEFAULT_HANDLER_TIMEOUT`].
    pub fn new(consumer: impl Into<String>, filter: impl Into<String>) -> Self {
        Self {
            consumer: consumer.into(),
            filter: filter.into(),
            max_deliveries: 5,
            retry_delay: Duration::from_secs(1),
            max_retry_delay: Duration::from_secs(30),
            ack_wait: DEFAULT_ACK_WAIT,
            handler_timeout: DEFAULT_HANDLER_TIMEOUT,
            exchange: Exchange::Topic,
        }
    }

    /// Sets the exchange kind the group's queue is bound to on RabbitMQ.
    pub fn exchange(mut self, exchange: Exchange) -> Self {
        self.exchange = exchange;
        self
    }

    /// Sets the number of deliveries before dead-lettering.
    pub fn max_deliveries(mut self, n: u32) -> Self {
        self.max_deliveries = n;
        self
    }

    /// Sets the first redelivery delay and its cap.
    pub fn retry_delay(mut self, first: Duration, max: Duration) -> Self {
        self.retry_delay = first;
        self.max_retry_delay = max;
        self
    }

    /// Sets the ack wait.
    pub fn ack_wait(mut self, ack_wait: Duration) -> Self {
        self.ack_wait = ack_wait;
        self
    }

    /// Sets how long a handler may run.
    pub fn handler_timeout(mut self, timeout: Duration) -> Self {
        self.handler_timeout = timeout;
        self
    }

    /// How often a member tells the backend that a handler is still running: a third of
    /// the ack wait (at least 10 ms), so two reminders may be lost before it redelivers.
    pub fn progress_interval(&self) -> Duration {
        (self.ack_wait / 3).max(Duration::from_millis(10))
    }

    /// The delays between deliveries: [`retry_delay`](Self::retry_delay) doubling up to
    /// [`max_retry_delay`](Self::max_retry_delay), each jittered by up to as much again (so
    /// the events failed by one outage are not all redelivered at once), one fewer than
    /// [`max_deliveries`](Self::max_deliveries).
    pub(crate) fn redelivery(&self) -> ExponentialBuilder {
        let retries = usize::try_from(self.max_deliveries.saturating_sub(1)).unwrap_or(usize::MAX);
        ExponentialBuilder::new()
            .with_min_delay(self.retry_delay)
            .with_max_delay(self.max_retry_delay)
            .with_jitter()
            .with_max_times(retries)
    }

    /// The delay before delivery `attempt + 1` after failed delivery `attempt` (1-based):
    /// the `attempt`-th of [`redelivery`](Self::redelivery)'s delays, jittered afresh.
    pub fn backoff(&self, attempt: u32) -> Duration {
        // Past 64 doublings every delay is capped; no need to walk further.
        let index = usize::try_from(attempt.saturating_sub(1).min(64)).unwrap_or(64);
        self.redelivery()
            .without_max_times()
            .build()
            .nth(index)
            .unwrap_or(self.max_retry_delay)
    }

    /// The dead-letter subject of this consumer: `tideway.dlq.<consumer>`.
    pub fn dead_letter_subject(&self) -> String {
        subject::dead_letter(&self.consumer)
    }

    pub(crate) fn validate(&self) -> Result<(), BusError> {
        subject::validate_consumer(&self.consumer)?;
        subject::validate_filter(&self.filter)?;
        if self.max_deliveries == 0 {
            return Err(BusError::invalid("max_deliveries", "must be at least 1"));
        }
        if self.ack_wait.is_zero() {
            return Err(BusError::invalid("ack_wait", "must be positive"));
        }
        if self.handler_timeout.is_zero() {
            return Err(BusError::invalid("handler_timeout", "must be positive"));
        }
        match self.exchange {
            Exchange::Topic => {}
            Exchange::Direct => {
                if self.filter.split('.').any(|t| t == "*" || t == ">") {
                    return Err(BusError::invalid(
                        "subject filter",
                        format!(
                            "a direct exchange routes exact event types, found the wildcard filter {:?}",
                            self.filter
                        ),
                    ));
                }
            }
            Exchange::Fanout => {
                if self.filter != format!("{}.>", subject::ROOT) {
                    return Err(BusError::invalid(
                        "subject filter",
                        format!(
                            "a fanout exchange delivers every event: the filter must be {}.>, found {:?}",
                            subject::ROOT,
                            self.filter
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// How a service's relay and subscriptions are timed. These timings are designed together
/// with the saga's step deadlines (the table in `docs/architecture.md`): a consumer killed
/// while it holds a command gets it back after [`ack_wait`](Self::ack_wait); a reply it
/// committed but had not published leaves when its restarted relay retakes the lease (at
/// once, with a stable holder id) or another replica takes over (within
/// [`takeover`](Self::takeover)). [`recovery`](Self::recovery) bounds the two together,
/// and a step's deadline must exceed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// [`SubscribeOptions::ack_wait`] of every subscription.
    pub ack_wait: Duration,
    /// [`RelayOptions::lease_ttl`](outbox::RelayOptions::lease_ttl).
    pub relay_lease_ttl: Duration,
    /// [`RelayOptions::poll_interval`](outbox::RelayOptions::poll_interval).
    pub relay_poll: Duration,
}

impl Default for Timings {
    /// [`DEFAULT_ACK_WAIT`], [`outbox::DEFAULT_LEASE_TTL`], [`outbox::DEFAULT_POLL_INTERVAL`].
    fn default() -> Self {
        Self {
            ack_wait: DEFAULT_ACK_WAIT,
            relay_lease_ttl: outbox::DEFAULT_LEASE_TTL,
            relay_poll: outbox::DEFAULT_POLL_INTERVAL,
        }
    }
}

impl Timings {
    /// The longest another replica waits to take a dead holder's relay lease over: the
    /// lease's time to live plus one poll.
    pub fn takeover(&self) -> Duration {
        self.relay_lease_ttl + self.relay_poll
    }

    /// The longest one crash of a consumer delays the answer to a command it held, besides
    /// its restart: the ack wait (the command comes back) plus a takeover (its reply leaves).
    pub fn recovery(&self) -> Duration {
        self.ack_wait + self.takeover()
    }

    /// Which timing is wrong and why, if one is: each must be positive, and the lease must
    /// outlive two polls, or a live holder would lose it between renewals.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        for (name, value) in [
            ("ack_wait", self.ack_wait),
            ("relay_lease_ttl", self.relay_lease_ttl),
            ("relay_poll", self.relay_poll),
        ] {
            if value < Duration::from_millis(10) {
                return Some((name, "must be at least 10 ms".to_owned()));
            }
        }
        if self.relay_lease_ttl < self.relay_poll * 2 {
            return Some((
                "relay_lease_ttl",
                format!(
                    "must be at least twice the relay poll interval ({:?}), or a live holder loses its lease between renewals",
                    self.relay_poll
                ),
            ));
        }
        None
    }
}

/// This process as one replica of a service on the bus: its stable id (the relay lease
/// holder) and the timings of its relay and subscriptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    /// The replica's id, the same across its restarts and different from every other live
    /// replica's (`inventory-2`).
    pub instance_id: String,
    /// The timings.
    pub timings: Timings,
}

impl Replica {
    /// Replica `instance_id` with the default timings.
    pub fn new(instance_id: impl Into<String>) -> Self {
        Self {
            instance_id: instance_id.into(),
            timings: Timings::default(),
        }
    }

    /// The relay options of service `lease_name`: this replica's id as the holder, the
    /// lease and poll timings, defaults otherwise.
    pub fn relay(&self, lease_name: &str) -> outbox::RelayOptions {
        outbox::RelayOptions {
            lease_name: lease_name.to_owned(),
            holder: self.instance_id.clone(),
            lease_ttl: self.timings.relay_lease_ttl,
            poll_interval: self.timings.relay_poll,
            ..outbox::RelayOptions::default()
        }
    }

    /// Subscription options for `consumer` on `filter` with this replica's ack wait.
    pub fn subscribe(
        &self,
        consumer: impl Into<String>,
        filter: impl Into<String>,
    ) -> SubscribeOptions {
        SubscribeOptions::new(consumer, filter).ack_wait(self.timings.ack_wait)
    }
}

/// A running subscription; [`SubscriptionHandle::stop`] ends this member (the consumer group
/// and its pending events stay). Dropping the handle does not stop it.
#[derive(Debug, Clone)]
pub struct SubscriptionHandle {
    token: tokio_util::sync::CancellationToken,
}

impl SubscriptionHandle {
    pub(crate) fn new(token: tokio_util::sync::CancellationToken) -> Self {
        Self { token }
    }

    /// Stops this subscription: no new deliveries; the one in progress is abandoned and will
    /// be redelivered to another member.
    pub fn stop(&self) {
        self.token.cancel();
    }
}

/// Consumes events.
pub trait Subscriber: Send + Sync {
    /// Starts consuming `options.filter` as `options.consumer`, calling `handler` for each
    /// event. Call it once per worker; calls with the same consumer and filter compete.
    fn subscribe(
        &self,
        options: SubscribeOptions,
        handler: Arc<dyn Handler>,
    ) -> BoxFuture<'_, Result<SubscriptionHandle, BusError>>;

    /// Stops every subscription and waits for their tasks to end.
    fn shutdown(&self) -> BoxFuture<'_, ()>;
}

/// A bus: publisher and subscriber. Used as `Arc<dyn Bus>`.
pub trait Bus: Publisher + Subscriber {}

impl<T: Publisher + Subscriber> Bus for T {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_timings_hold_together() {
        let timings = Timings::default();
        assert_eq!(timings.problem(), None);
        // Another replica takes a dead holder's lease over within 2 s.
        assert!(timings.takeover() <= Duration::from_secs(2), "{timings:?}");
        // A crashed consumer's command comes back well within the saga's shortest default
        // step deadline (10 s), so one crash costs no re-send.
        assert!(timings.recovery() < Duration::from_secs(10), "{timings:?}");
        let options = Replica::new("inventory-1").subscribe("inventory", "tideway.>");
        assert_eq!(options.ack_wait, timings.ack_wait);
        assert_eq!(options.progress_interval(), Duration::from_secs(1));
        let relay = Replica::new("inventory-1").relay("inventory");
        assert_eq!(
            (relay.lease_name.as_str(), relay.holder.as_str()),
            ("inventory", "inventory-1")
        );
        assert_eq!(
            (relay.lease_ttl, relay.poll_interval),
            (timings.relay_lease_ttl, timings.relay_poll)
        );
    }

    #[test]
    fn bad_timings_name_the_one_at_fault() {
        let short_lease = Timings {
            relay_lease_ttl: Duration::from_millis(400),
            ..Timings::default()
        };
        assert_eq!(short_lease.problem().map(|p| p.0), Some("relay_lease_ttl"));
        let zero = Timings {
            ack_wait: Duration::ZERO,
            ..Timings::default()
        };
        assert_eq!(zero.problem().map(|p| p.0), Some("ack_wait"));
        let no_poll = Timings {
            relay_poll: Duration::from_millis(1),
            ..Timings::default()
        };
        assert_eq!(no_poll.problem().map(|p| p.0), Some("relay_poll"));
    }

    #[test]
    fn redeliveries_are_jittered_capped_and_one_fewer_than_deliveries() {
        let options = SubscribeOptions::new("inventory", "tideway.ordering.*")
            .max_deliveries(6)
            .retry_delay(Duration::from_secs(1), Duration::from_secs(4));
        for _ in 0..100 {
            let delays: Vec<Duration> = options.redelivery().build().collect();
            assert_eq!(delays.len(), 5, "{delays:?}");
            for (delay, base) in delays.iter().zip([1, 2, 4, 4, 4]) {
                let base = Duration::from_secs(base);
                assert!(*delay >= base && *delay <= base * 2, "{delays:?}");
            }
        }
        let once = SubscribeOptions::new("inventory", "tideway.ordering.*").max_deliveries(1);
        assert_eq!(once.redelivery().build().count(), 0);
        for attempt in [1, 3, 10, u32::MAX] {
            let delay = options.backoff(attempt);
            assert!(delay >= Duration::from_secs(1) && delay <= Duration::from_secs(8));
        }
        assert!(options.backoff(10) >= Duration::from_secs(4));
    }
}
