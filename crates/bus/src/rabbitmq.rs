//! The RabbitMQ bus (AMQP 0.9.1, through lapin on tokio).
//!
//! # Topology
//!
//! Every name starts with [`RabbitOptions::prefix`] (`tideway`; a unique one per test):
//!
//! | name | kind | what it is |
//! |---|---|---|
//! | `<prefix>.events` | topic exchange | every event is published here, its type (`tideway.ordering.order-placed`) the routing key |
//! | `<prefix>.direct` | direct exchange | bound to `events` with `#`: every event, routed by exact type |
//! | `<prefix>.fanout` | fanout exchange | bound to `events` with `#`: every event to every queue bound |
//! | `<prefix>.dlx` | topic exchange | the dead-letter exchange: bound to `events` with `tideway.dlq.#`, and every consumer queue's `x-dead-letter-exchange` |
//! | `<prefix>.dead-letters` | classic queue | bound to `dlx` with `#`: every dead letter until it is redriven |
//! | `<prefix>.<consumer>-<filter>` | quorum queue | a consumer group (`tideway.inventory-tideway_ordering_star`), bound to the exchange of [`SubscribeOptions::exchange`] |
//! | `<group queue>.retry` | classic queue | failed deliveries waiting for their redelivery delay |
//!
//! Everything is durable and every message persistent, so a restarted broker keeps the
//! events it had confirmed.
//!
//! # Publishing
//!
//! A dedicated channel in confirm mode. [`Publisher::publish_batch`] sends the whole batch,
//! then awaits every confirm; only then does it answer `Ok`, so the outbox marks a row sent
//! only once the broker has confirmed it. A nack, a lost connection or a missing confirm
//! fails the call and the rows stay pending: the relay publishes them again (consumers'
//! inboxes drop the repeats). Publishing waits while the bus is held closed
//! ([`RabbitOptions::held`], until [`RabbitBus::open`]), so `tideway up` can declare every
//! consumer group before the first event leaves.
//!
//! # Consuming
//!
//! Each subscription is a member consuming its group's queue on a channel of its own with
//! manual acks and a prefetch of [`RabbitOptions::prefetch`]; members of one group share the
//! queue (competing consumers), other groups have queues of their own (fan-out). A member
//! handles its deliveries one at a time, in order.
//!
//! * `Ok` acks.
//! * `Err`, or a handler past [`SubscribeOptions::handler_timeout`]: the event is published
//!   (confirmed) to the group's retry queue with a per-message TTL of the subscription's
//!   backoff and a header counting its failed deliveries, then the delivery is acked. When
//!   the TTL expires, the retry queue dead-letters it back into the group's queue. After
//!   [`SubscribeOptions::max_deliveries`] failures the member publishes a [`DeadLetter`]
//!   event on `tideway.dlq.<consumer>` instead: subscribers of that subject get it, and the
//!   `dlx` exchange keeps it in the dead-letter queue.
//! * A member that dies with deliveries in hand (its connection drops) gives them back to
//!   the queue at once; the quorum queue counts such returns (`x-delivery-count`), and a
//!   delivery that comes back after its last attempt was never answered is dead-lettered
//!   by the member that receives it. Should members keep dying on it, the queue's own
//!   `x-delivery-limit` dead-letters it to `dlx` without any member's help.
//!
//! # Losing the connection or the broker
//!
//! The bus keeps one connection and opens it again when it is lost: a failed publish
//! fails the relay's pass (which retries with backoff); a member whose consumer ended
//! reconnects with backoff, declares its group again and consumes on. On every new
//! connection the bus declares the exchanges, the dead-letter queue and every group it
//! knows before anything else; when the broker had lost the exchanges it counts a loss
//! ([`Publisher::losses`]), and the outbox relays publish their retained sent rows again.

use std::{
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use backon::{BackoffBuilder, ExponentialBuilder};
use futures_util::StreamExt;
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
    PublisherConfirm,
    message::Delivery,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions,
        BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, ExchangeBindOptions,
        ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
        QueueDeleteOptions,
    },
    types::{AMQPValue, FieldTable, ShortString},
};
use tokio::sync::watch;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    BoxFuture, BusError, DeadLetter, Event, Exchange, Handler, Publisher, SubscribeOptions,
    Subscriber, SubscriptionHandle,
    dead_letters::{self, DeadLetters, StoredLetter},
    subject,
};

/// The header counting a message's failed deliveries before this copy of it.
pub const DELIVERIES_HEADER: &str = "x-tideway-deliveries";
/// The header naming the group queue a dead letter came from (where a redrive sends it).
pub const QUEUE_HEADER: &str = "x-tideway-queue";
/// The header carrying the W3C trace context.
const TRACEPARENT_HEADER: &str = "traceparent";

/// RabbitMQ bus settings.
#[derive(Debug, Clone)]
pub struct RabbitOptions {
    /// The broker, `amqp://guest:guest@127.0.0.1:5672/%2f` (the vhost URL-encoded;
    /// `?heartbeat=N` sets the heartbeat in seconds).
    pub url: String,
    /// The first part of every exchange and queue name, `tideway` (a unique one per test, or
    /// per system sharing a broker).
    pub prefix: String,
    /// Unacknowledged deliveries a member may hold (`basic.qos`).
    pub prefetch: u16,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// Start closed: publishing waits for [`RabbitBus::open`] (every consumer group of the
    /// first events declared first).
    pub held: bool,
    /// Unused group and retry queues are deleted by the broker after this long (`x-expires`);
    /// none in production, where a queue must outlive any outage of its consumers. Tests
    /// and throwaway systems set it so that what they declare goes away.
    pub queue_expiry: Option<Duration>,
}

impl Default for RabbitOptions {
    fn default() -> Self {
        Self {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned(),
            prefix: subject::ROOT.to_owned(),
            prefetch: 16,
            connect_timeout: Duration::from_secs(5),
            held: false,
            queue_expiry: None,
        }
    }
}

/// The names of the shared exchanges and queue under one prefix.
#[derive(Debug, Clone)]
struct Names {
    prefix: String,
    events: String,
    direct: String,
    fanout: String,
    dlx: String,
    dead_letters: String,
}

impl Names {
    fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            events: format!("{prefix}.events"),
            direct: format!("{prefix}.direct"),
            fanout: format!("{prefix}.fanout"),
            dlx: format!("{prefix}.dlx"),
            dead_letters: format!("{prefix}.dead-letters"),
        }
    }

    fn exchange(&self, kind: Exchange) -> &str {
        match kind {
            Exchange::Topic => &self.events,
            Exchange::Direct => &self.direct,
            Exchange::Fanout => &self.fanout,
        }
    }
}

/// One consumer group's queue and binding.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Group {
    queue: String,
    exchange: Exchange,
    binding: String,
    consumer: String,
    max_deliveries: u32,
}

impl Group {
    fn retry_queue(&self) -> String {
        format!("{}.retry", self.queue)
    }
}

/// The RabbitMQ bus. Cheap to clone; clones share the connection and subscriptions.
#[derive(Debug, Clone)]
pub struct RabbitBus {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    options: RabbitOptions,
    names: Names,
    connection: tokio::sync::Mutex<Option<Arc<Connection>>>,
    publisher: tokio::sync::Mutex<Option<Channel>>,
    /// Every group subscribed through this bus, declared again on each new connection.
    groups: Mutex<Vec<Group>>,
    /// Connections opened so far.
    connections: AtomicU64,
    /// How many times the broker was found without the exchanges declared before.
    losses: AtomicU64,
    open: watch::Sender<bool>,
    tracker: TaskTracker,
    token: CancellationToken,
}

/// `err` from lapin as a backend error about `context`.
fn amqp(context: impl Into<String>) -> impl FnOnce(lapin::Error) -> BusError {
    let context = context.into();
    move |err| BusError::backend(context, err)
}

/// Whether `err` is the broker's "not found" (404) for a passive declaration.
fn not_found(err: &lapin::Error) -> bool {
    matches!(err.kind(), lapin::ErrorKind::ProtocolError(e)
        if matches!(e.kind(), lapin::protocol::AMQPErrorKind::Soft(lapin::protocol::AMQPSoftError::NOTFOUND)))
}

/// Whether `err` is the broker's "precondition failed" (406): a queue declared before with
/// other arguments.
fn precondition_failed(err: &lapin::Error) -> bool {
    matches!(err.kind(), lapin::ErrorKind::ProtocolError(e)
        if matches!(e.kind(), lapin::protocol::AMQPErrorKind::Soft(lapin::protocol::AMQPSoftError::PRECONDITIONFAILED)))
}

/// A NATS-style subject filter as a topic binding key: `*` is one word in both; `>` (one or
/// more tokens) becomes `*.#` (one word, then zero or more).
pub fn binding_key(filter: &str) -> String {
    filter
        .split('.')
        .map(|token| if token == ">" { "*.#" } else { token })
        .collect::<Vec<_>>()
        .join(".")
}

/// The queue of `consumer` on `filter` through `exchange` under `prefix`.
pub fn queue_name(prefix: &str, consumer: &str, filter: &str, exchange: Exchange) -> String {
    let group = crate::nats::durable_name(consumer, filter);
    match exchange {
        Exchange::Topic => format!("{prefix}.{group}"),
        other => format!("{prefix}.{group}-{}", other.as_str()),
    }
}

fn long_string(value: &str) -> AMQPValue {
    AMQPValue::LongString(value.as_bytes().to_vec().into())
}

fn header_u32(properties: &BasicProperties, name: &str) -> Option<u32> {
    let value = properties.headers().as_ref()?.inner().get(name)?;
    let n: i64 = match value {
        AMQPValue::ShortShortInt(n) => i64::from(*n),
        AMQPValue::ShortShortUInt(n) => i64::from(*n),
        AMQPValue::ShortInt(n) => i64::from(*n),
        AMQPValue::ShortUInt(n) => i64::from(*n),
        AMQPValue::LongInt(n) => i64::from(*n),
        AMQPValue::LongUInt(n) => i64::from(*n),
        AMQPValue::LongLongInt(n) => *n,
        _ => return None,
    };
    Some(u32::try_from(n.max(0)).unwrap_or(u32::MAX))
}

fn header_str(properties: &BasicProperties, name: &str) -> Option<String> {
    match properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// The queue a message was dead-lettered from by the broker (`x-death[0].queue`).
fn death_queue(properties: &BasicProperties) -> Option<String> {
    let AMQPValue::FieldArray(deaths) = properties.headers().as_ref()?.inner().get("x-death")?
    else {
        return None;
    };
    let AMQPValue::FieldTable(first) = deaths.as_slice().first()? else {
        return None;
    };
    match first.inner().get("queue")? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The properties of an event message: persistent, JSON, its id, type and trace context,
/// and `extra` headers.
fn properties_of(event: &Event, extra: FieldTable) -> BasicProperties {
    let mut headers = extra;
    if let Some(traceparent) = &event.traceparent {
        headers.insert(TRACEPARENT_HEADER.into(), long_string(traceparent));
    }
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(event.id.as_str().into())
        .with_type(event.event_type.as_str().into())
        .with_timestamp(now_secs())
        .with_headers(headers)
}

/// Awaits one publisher confirm: `Ok` only for an ack (a returned message included: the
/// caller asked for `mandatory` when it cares).
async fn confirmed(confirm: PublisherConfirm) -> Result<Confirmation, BusError> {
    let confirmation = tokio::time::timeout(CONFIRM_TIMEOUT, confirm)
        .await
        .map_err(|_| {
            BusError::backend(
                "awaiting a publisher confirm",
                format!("no confirm within {CONFIRM_TIMEOUT:?}"),
            )
        })?
        .map_err(amqp("awaiting a publisher confirm"))?;
    if confirmation.is_nack() {
        return Err(BusError::backend(
            "publishing",
            "the broker refused the message (nack)",
        ));
    }
    Ok(confirmation)
}

/// How long a publish waits for the broker's confirm before it counts as failed (and the
/// outbox rows stay pending); a lost connection does not always fail the wait by itself.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(15);
/// How often a member checks that its channel is still open.
const CHANNEL_CHECK: Duration = Duration::from_secs(1);
/// How long an ack or nack may take before the member gives up on it (the broker gives the
/// delivery back when the channel closes).
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// The first pause before consuming again after a member's consumer ended.
const FIRST_RECONSUME_DELAY: Duration = Duration::from_millis(250);
/// The longest pause between attempts to consume again (before jitter).
const MAX_RECONSUME_DELAY: Duration = Duration::from_secs(5);

/// Delays between a member's attempts to consume again, jittered so that the members that
/// lost the broker together do not all come back at once; without end.
fn reconsume_backoff() -> ExponentialBuilder {
    ExponentialBuilder::new()
        .with_min_delay(FIRST_RECONSUME_DELAY)
        .with_max_delay(MAX_RECONSUME_DELAY)
        .with_jitter()
        .without_max_times()
}

impl RabbitBus {
    /// Connects to the broker and declares the exchanges and the dead-letter queue.
    #[tracing::instrument(skip_all, fields(prefix = %options.prefix), err)]
    pub async fn connect(options: RabbitOptions) -> Result<Self, BusError> {
        if options.prefix.is_empty()
            || !options
                .prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(BusError::invalid(
                "name prefix",
                format!("{:?} must be letters, digits, - or _", options.prefix),
            ));
        }
        if options.prefetch == 0 {
            return Err(BusError::invalid("prefetch", "must be at least 1"));
        }
        let held = options.held;
        let bus = Self {
            inner: Arc::new(Inner {
                names: Names::new(&options.prefix),
                options,
                connection: tokio::sync::Mutex::new(None),
                publisher: tokio::sync::Mutex::new(None),
                groups: Mutex::new(Vec::new()),
                connections: AtomicU64::new(0),
                losses: AtomicU64::new(0),
                open: watch::Sender::new(!held),
                tracker: TaskTracker::new(),
                token: CancellationToken::new(),
            }),
        };
        bus.connection().await?;
        tracing::info!(prefix = %bus.inner.names.prefix, "Connected to RabbitMQ.");
        Ok(bus)
    }

    /// The options in force.
    pub fn options(&self) -> &RabbitOptions {
        &self.inner.options
    }

    /// Lets publishing start on a bus connected [`held`](RabbitOptions::held).
    pub fn open(&self) {
        self.inner.open.send_replace(true);
    }

    /// The name of the topic exchange every event is published to.
    pub fn events_exchange(&self) -> &str {
        &self.inner.names.events
    }

    /// The name of the dead-letter queue.
    pub fn dead_letter_queue(&self) -> &str {
        &self.inner.names.dead_letters
    }

    /// The queue of the group of `options` on this bus.
    pub fn queue_of(&self, options: &SubscribeOptions) -> String {
        queue_name(
            &self.inner.names.prefix,
            &options.consumer,
            &options.filter,
            options.exchange,
        )
    }

    /// The queues of every group subscribed through this bus (each with its retry queue).
    pub fn queues(&self) -> Vec<String> {
        self.inner
            .groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .flat_map(|g| [g.queue.clone(), g.retry_queue()])
            .collect()
    }

    /// Messages ready in the group's queue and its retry queue: what is still to be
    /// delivered (deliveries in hand are not counted).
    pub async fn backlog(&self, options: &SubscribeOptions) -> Result<u32, BusError> {
        let queue = self.queue_of(options);
        let mut ready = 0;
        for name in [queue.clone(), format!("{queue}.retry")] {
            let channel = self.channel().await?;
            let declared = channel
                .queue_declare(
                    name.as_str().into(),
                    QueueDeclareOptions::default().passive(),
                    FieldTable::default(),
                )
                .await
                .map_err(amqp(format!("inspecting the queue {name}")))?;
            ready += declared.message_count();
            let _ = channel.close(200, "done".into()).await;
        }
        Ok(ready)
    }

    /// Deletes the exchanges, the dead-letter queue and `queues` (tests and tooling).
    pub async fn delete(&self, queues: &[String]) -> Result<(), BusError> {
        let names = &self.inner.names;
        for queue in queues.iter().chain([&names.dead_letters]) {
            let channel = self.channel().await?;
            if let Err(err) = channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await
            {
                tracing::debug!(queue = %queue, error = %err, "deleting a queue failed");
            }
            let _ = channel.close(200, "done".into()).await;
        }
        for exchange in [&names.direct, &names.fanout, &names.dlx, &names.events] {
            let channel = self.channel().await?;
            if let Err(err) = channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await
            {
                tracing::debug!(exchange = %exchange, error = %err, "deleting an exchange failed");
            }
            let _ = channel.close(200, "done".into()).await;
        }
        Ok(())
    }

    /// The connection, opened again when it was lost; each new one declares the topology
    /// first.
    async fn connection(&self) -> Result<Arc<Connection>, BusError> {
        let mut slot = self.inner.connection.lock().await;
        if let Some(connection) = &*slot
            && connection.status().connected()
        {
            return Ok(connection.clone());
        }
        let options = &self.inner.options;
        let properties = ConnectionProperties::default()
            .with_connection_name(format!("tideway {}", options.prefix).into());
        let connection = tokio::time::timeout(
            options.connect_timeout,
            Connection::connect(&options.url, properties),
        )
        .await
        .map_err(|_| {
            BusError::backend(
                "connecting to RabbitMQ",
                format!("no answer within {:?}", options.connect_timeout),
            )
        })?
        .map_err(amqp("connecting to RabbitMQ"))?;
        let connection = Arc::new(connection);
        let earlier = self.inner.connections.fetch_add(1, Ordering::SeqCst);
        self.declare_all(&connection, earlier > 0).await?;
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// A new channel on the (re)opened connection.
    async fn channel(&self) -> Result<Channel, BusError> {
        self.connection()
            .await?
            .create_channel()
            .await
            .map_err(amqp("opening a channel"))
    }

    /// Declares the exchanges, their bindings, the dead-letter queue and every known group
    /// on a new connection; `again` when an earlier connection had declared them, so that
    /// finding them missing means the broker lost its state.
    async fn declare_all(&self, connection: &Connection, again: bool) -> Result<(), BusError> {
        let names = &self.inner.names;
        let channel = connection
            .create_channel()
            .await
            .map_err(amqp("opening a channel"))?;
        let passive = ExchangeDeclareOptions {
            passive: true,
            ..ExchangeDeclareOptions::default()
        };
        let existed = match channel
            .exchange_declare(
                names.events.as_str().into(),
                ExchangeKind::Topic,
                passive,
                FieldTable::default(),
            )
            .await
        {
            Ok(()) => true,
            Err(err) if not_found(&err) => false,
            Err(err) => return Err(amqp("checking the events exchange")(err)),
        };
        if again && !existed {
            let losses = self.inner.losses.fetch_add(1, Ordering::SeqCst) + 1;
            tracing::warn!(
                prefix = %names.prefix,
                losses,
                "the RabbitMQ broker had lost its exchanges; they are declared again and the outboxes publish their sent events again"
            );
        }
        // A failed passive declaration closes the channel.
        let channel = if existed {
            channel
        } else {
            connection
                .create_channel()
                .await
                .map_err(amqp("opening a channel"))?
        };
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        for (name, kind) in [
            (&names.events, ExchangeKind::Topic),
            (&names.direct, ExchangeKind::Direct),
            (&names.fanout, ExchangeKind::Fanout),
            (&names.dlx, ExchangeKind::Topic),
        ] {
            channel
                .exchange_declare(name.as_str().into(), kind, durable, FieldTable::default())
                .await
                .map_err(amqp(format!("declaring the exchange {name}")))?;
        }
        let dead_letters = format!("{}.dlq.#", subject::ROOT);
        for (destination, key) in [
            (&names.direct, "#"),
            (&names.fanout, "#"),
            (&names.dlx, dead_letters.as_str()),
        ] {
            channel
                .exchange_bind(
                    destination.as_str().into(),
                    names.events.as_str().into(),
                    key.into(),
                    ExchangeBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(amqp(format!("binding the exchange {destination}")))?;
        }
        let mut classic = FieldTable::default();
        classic.insert("x-queue-type".into(), long_string("classic"));
        channel
            .queue_declare(
                names.dead_letters.as_str().into(),
                QueueDeclareOptions::durable(),
                classic,
            )
            .await
            .map_err(amqp("declaring the dead-letter queue"))?;
        channel
            .queue_bind(
                names.dead_letters.as_str().into(),
                names.dlx.as_str().into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(amqp("binding the dead-letter queue"))?;
        let _ = channel.close(200, "declared".into()).await;
        let groups = self
            .inner
            .groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for group in &groups {
            self.declare_group(connection, group).await?;
        }
        Ok(())
    }

    /// Declares a group's quorum queue (dead-lettering to `dlx` past its delivery limit),
    /// its binding and its retry queue (dead-lettering back into it when a TTL expires).
    async fn declare_group(&self, connection: &Connection, group: &Group) -> Result<(), BusError> {
        let names = &self.inner.names;
        let expiry = self.inner.options.queue_expiry.map(|expiry| {
            AMQPValue::LongInt(i32::try_from(expiry.as_millis()).unwrap_or(i32::MAX))
        });
        let mut arguments = FieldTable::default();
        arguments.insert("x-queue-type".into(), long_string("quorum"));
        arguments.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongInt(i32::try_from(group.max_deliveries).unwrap_or(i32::MAX)),
        );
        arguments.insert("x-dead-letter-exchange".into(), long_string(&names.dlx));
        arguments.insert(
            "x-dead-letter-routing-key".into(),
            long_string(&subject::dead_letter(&group.consumer)),
        );
        if let Some(expiry) = &expiry {
            arguments.insert("x-expires".into(), expiry.clone());
        }
        let mut retry = FieldTable::default();
        retry.insert("x-queue-type".into(), long_string("classic"));
        retry.insert("x-dead-letter-exchange".into(), long_string(""));
        retry.insert(
            "x-dead-letter-routing-key".into(),
            long_string(&group.queue),
        );
        if let Some(expiry) = expiry {
            retry.insert("x-expires".into(), expiry);
        }
        for (queue, arguments) in [
            (group.queue.clone(), arguments),
            (group.retry_queue(), retry),
        ] {
            let channel = connection
                .create_channel()
                .await
                .map_err(amqp("opening a channel"))?;
            match channel
                .queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions::durable(),
                    arguments,
                )
                .await
            {
                Ok(_) => {
                    let _ = channel.close(200, "declared".into()).await;
                }
                Err(err) if precondition_failed(&err) => {
                    // Declared earlier with other arguments (another delivery limit): the
                    // broker keeps a queue's arguments, so use it as it is.
                    tracing::warn!(queue = %queue, error = %err, "the queue exists with other arguments; using it as it is");
                }
                Err(err) => return Err(amqp(format!("declaring the queue {queue}"))(err)),
            }
        }
        let channel = connection
            .create_channel()
            .await
            .map_err(amqp("opening a channel"))?;
        channel
            .queue_bind(
                group.queue.as_str().into(),
                names.exchange(group.exchange).into(),
                group.binding.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(amqp(format!("binding the queue {}", group.queue)))?;
        let _ = channel.close(200, "declared".into()).await;
        Ok(())
    }

    /// The publishing channel (confirm mode), opened again when it was lost.
    async fn publisher(&self) -> Result<Channel, BusError> {
        let mut slot = self.inner.publisher.lock().await;
        if let Some(channel) = &*slot
            && channel.status().connected()
        {
            return Ok(channel.clone());
        }
        let channel = self.channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(amqp("enabling publisher confirms"))?;
        *slot = Some(channel.clone());
        Ok(channel)
    }

    async fn wait_open(&self) -> Result<(), BusError> {
        let mut open = self.inner.open.subscribe();
        if *open.borrow() {
            return Ok(());
        }
        tracing::debug!("publishing waits for the RabbitMQ bus to open");
        tokio::select! {
            () = self.inner.token.cancelled() => Err(BusError::Closed),
            res = open.wait_for(|open| *open) => res.map(|_| ()).map_err(|_| BusError::Closed),
        }
    }

    /// Sends `event` to the events exchange under its type; the confirm is awaited apart.
    async fn send(&self, channel: &Channel, event: &Event) -> Result<PublisherConfirm, BusError> {
        event.validate()?;
        crate::meter::published("rabbitmq", &event.event_type);
        let span = crate::publish_span("rabbitmq", event);
        let payload = event.to_bytes()?;
        let publishing = channel.basic_publish(
            self.inner.names.events.as_str().into(),
            event.event_type.as_str().into(),
            BasicPublishOptions::default(),
            &payload,
            properties_of(event, FieldTable::default()),
        );
        let sent = if span.is_none() {
            publishing.await
        } else {
            tracing::Instrument::instrument(publishing, span).await
        };
        sent.map_err(amqp(format!("publishing event {}", event.id)))
    }

    async fn publish_all(&self, events: &[Event]) -> Result<(), BusError> {
        self.wait_open().await?;
        let channel = self.publisher().await?;
        let result = async {
            let mut confirms = Vec::with_capacity(events.len());
            for event in events {
                confirms.push(self.send(&channel, event).await?);
            }
            for confirm in confirms {
                confirmed(confirm).await?;
            }
            Ok(())
        }
        .await;
        if let Err(err) = &result {
            tracing::debug!(error = %err, "a publish failed; the channel is opened again next time");
            let mut slot = self.inner.publisher.lock().await;
            if slot.as_ref().is_some_and(|c| c.id() == channel.id()) {
                *slot = None;
            }
        }
        result
    }

    /// Every message of the dead-letter queue, taken on `channel` without acknowledgement
    /// (they go back, in order, when the channel closes).
    async fn take_letters(&self, channel: &Channel) -> Result<Vec<(Delivery, Letter)>, BusError> {
        let mut taken = Vec::new();
        while let Some(message) = channel
            .basic_get(
                self.inner.names.dead_letters.as_str().into(),
                BasicGetOptions::default(),
            )
            .await
            .map_err(amqp("reading the dead-letter queue"))?
        {
            let delivery = message.delivery;
            match Letter::of(&delivery) {
                Some(letter) => taken.push((delivery, letter)),
                None => {
                    tracing::warn!(routing_key = %delivery.routing_key, "a message in the dead-letter queue is not an event; leaving it");
                }
            }
        }
        Ok(taken)
    }
}

/// A message of the dead-letter queue as the tools see it.
#[derive(Debug)]
struct Letter {
    stored: StoredLetter,
    /// The group queue it came from, where a redrive sends it.
    queue: Option<String>,
}

impl Letter {
    fn of(delivery: &Delivery) -> Option<Self> {
        let properties = &delivery.properties;
        let event = Event::from_bytes(&delivery.data).ok()?;
        let dead_at_ms = properties.timestamp().map_or(0, |s| {
            i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX)
        });
        let (letter, queue) = match DeadLetter::from_event(&event) {
            // Published by the member that gave up.
            Ok(letter) => (letter, header_str(properties, QUEUE_HEADER)),
            // Dead-lettered by the queue itself, past its delivery limit: the raw event.
            Err(_) => {
                let consumer = delivery
                    .routing_key
                    .as_str()
                    .strip_prefix(&format!("{}.dlq.", subject::ROOT))?
                    .to_owned();
                let deliveries = header_u32(properties, DELIVERIES_HEADER).unwrap_or(0)
                    + header_u32(properties, "x-delivery-count").unwrap_or(0)
                    + 1;
                let letter = DeadLetter {
                    consumer,
                    deliveries,
                    error: "the queue's delivery limit was reached without an answer from any member (each one it was handed to was lost)".to_owned(),
                    event,
                };
                (letter, death_queue(properties))
            }
        };
        Some(Self {
            stored: StoredLetter {
                id: format!("{}:{}", letter.consumer, letter.event.id),
                dead_at_ms,
                letter,
            },
            queue,
        })
    }
}

impl Publisher for RabbitBus {
    fn publish<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(self.publish_all(std::slice::from_ref(event)))
    }

    fn publish_batch<'a>(&'a self, events: &'a [Event]) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(self.publish_all(events))
    }

    fn losses(&self) -> u64 {
        self.inner.losses.load(Ordering::SeqCst)
    }
}

struct Member {
    bus: RabbitBus,
    group: Group,
    options: SubscribeOptions,
    handler: Arc<dyn Handler>,
}

impl Member {
    async fn run(self, token: CancellationToken) {
        // Consuming again after a failure never gives up: this task is the subscription.
        // Only `token` ends it; the delays start over once consuming works.
        let mut delays = reconsume_backoff().build();
        loop {
            let consuming = tokio::select! {
                () = token.cancelled() => return,
                consuming = self.consume() => consuming,
            };
            match consuming {
                Ok((channel, mut consumer)) => {
                    delays = reconsume_backoff().build();
                    // A consumer whose connection died does not always end: the channel's
                    // state is watched too.
                    let mut watch = tokio::time::interval(CHANNEL_CHECK);
                    watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        let next = tokio::select! {
                            () = token.cancelled() => {
                                // Closing gives the deliveries in hand back to the queue.
                                let _ = channel.close(200, "stopped".into()).await;
                                return;
                            }
                            _ = watch.tick() => {
                                if channel.status().connected() {
                                    continue;
                                }
                                tracing::warn!(consumer = %self.options.consumer, "the RabbitMQ channel was lost");
                                break;
                            }
                            next = consumer.next() => next,
                        };
                        match next {
                            Some(Ok(delivery)) => {
                                tokio::select! {
                                    () = token.cancelled() => {
                                        let _ = channel.close(200, "stopped".into()).await;
                                        return;
                                    }
                                    () = self.handle(&channel, delivery) => {}
                                }
                            }
                            Some(Err(err)) => {
                                tracing::warn!(consumer = %self.options.consumer, error = %err, "RabbitMQ consumer error");
                                break;
                            }
                            None => {
                                tracing::warn!(consumer = %self.options.consumer, "the RabbitMQ consumer was cancelled");
                                break;
                            }
                        }
                    }
                }
                Err(err) => {
                    tracing::warn!(consumer = %self.options.consumer, queue = %self.group.queue, error = %err, "cannot consume from RabbitMQ yet; retrying");
                }
            }
            let delay = delays.next().unwrap_or(MAX_RECONSUME_DELAY);
            tokio::select! {
                () = token.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// A channel (confirm mode, bounded prefetch) consuming the group's queue, declared
    /// again first (the broker may have lost it).
    async fn consume(&self) -> Result<(Channel, lapin::Consumer), BusError> {
        let connection = self.bus.connection().await?;
        self.bus.declare_group(&connection, &self.group).await?;
        let channel = connection
            .create_channel()
            .await
            .map_err(amqp("opening a channel"))?;
        channel
            .basic_qos(self.bus.inner.options.prefetch, BasicQosOptions::default())
            .await
            .map_err(amqp("setting the prefetch"))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(amqp("enabling publisher confirms"))?;
        let consumer = channel
            .basic_consume(
                self.group.queue.as_str().into(),
                ShortString::from(""),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(amqp(format!("consuming {}", self.group.queue)))?;
        Ok((channel, consumer))
    }

    async fn handle(&self, channel: &Channel, delivery: Delivery) {
        let options = &self.options;
        let properties = &delivery.properties;
        let delivered = header_u32(properties, DELIVERIES_HEADER)
            .unwrap_or(0)
            .saturating_add(header_u32(properties, "x-delivery-count").unwrap_or(0))
            .saturating_add(1);
        let event = match Event::from_bytes(&delivery.data) {
            Ok(event) => event,
            Err(err) => {
                tracing::error!(consumer = %options.consumer, routing_key = %delivery.routing_key, error = %err, "message is not an event; dropping it");
                ack(&delivery, &options.consumer).await;
                return;
            }
        };
        if delivered > 1 {
            crate::meter::redelivered(&options.consumer, &event.event_type);
        }
        if delivered > options.max_deliveries {
            // The last attempt was never answered (its member was lost) and the queue
            // handed it out once more.
            let error =
                "no answer from the handler: the member handling its last delivery was lost"
                    .to_owned();
            self.give_up(channel, &delivery, event, delivered - 1, error)
                .await;
            return;
        }
        let outcome =
            tokio::time::timeout(options.handler_timeout, self.handler.handle(event.clone())).await;
        let error = match outcome {
            Ok(Ok(())) => {
                ack(&delivery, &options.consumer).await;
                return;
            }
            Ok(Err(err)) => err.to_string(),
            Err(_) => format!(
                "the handler ran past its timeout of {:?}",
                options.handler_timeout
            ),
        };
        tracing::warn!(
            consumer = %options.consumer, event_id = %event.id, event_type = %event.event_type,
            attempt = delivered, error = %error, "event handler failed"
        );
        if delivered >= options.max_deliveries {
            self.give_up(channel, &delivery, event, delivered, error)
                .await;
        } else {
            self.retry_later(channel, &delivery, &event, delivered)
                .await;
        }
    }

    /// Puts a copy of the delivery in the retry queue for the backoff of failed delivery
    /// `delivered`, then acks the delivery; the copy comes back into the group's queue when
    /// its TTL expires. If the copy cannot be confirmed, the delivery goes back at once.
    async fn retry_later(
        &self,
        channel: &Channel,
        delivery: &Delivery,
        event: &Event,
        delivered: u32,
    ) {
        let delay = self.options.backoff(delivered);
        let mut headers = FieldTable::default();
        headers.insert(
            DELIVERIES_HEADER.into(),
            AMQPValue::LongLongInt(i64::from(delivered)),
        );
        let properties = properties_of(event, headers)
            .with_expiration(delay.as_millis().max(1).to_string().into());
        let published = async {
            let confirm = channel
                .basic_publish(
                    "".into(),
                    self.group.retry_queue().as_str().into(),
                    BasicPublishOptions::default(),
                    &delivery.data,
                    properties,
                )
                .await
                .map_err(amqp("publishing a retry"))?;
            confirmed(confirm).await
        }
        .await;
        match published {
            Ok(_) => ack(delivery, &self.options.consumer).await,
            Err(err) => {
                tracing::warn!(consumer = %self.options.consumer, error = %err, "cannot schedule a redelivery; giving the delivery back");
                nack(delivery, &self.options.consumer).await;
            }
        }
    }

    /// Publishes the dead letter (confirmed), then acks the delivery; if it cannot be
    /// confirmed the delivery goes back and the next member to receive it gives up again.
    async fn give_up(
        &self,
        channel: &Channel,
        delivery: &Delivery,
        event: Event,
        deliveries: u32,
        error: String,
    ) {
        let consumer = self.options.consumer.clone();
        crate::meter::dead_lettered(&consumer, &event.event_type);
        tracing::error!(
            consumer = %consumer, event_id = %event.id, event_type = %event.event_type,
            deliveries, error = %error, "event dead-lettered"
        );
        let names = &self.bus.inner.names;
        // A dead letter its own consumer cannot handle is kept, but not offered again.
        let exchange = if event
            .event_type
            .starts_with(&format!("{}.dlq.", subject::ROOT))
        {
            names.dlx.as_str()
        } else {
            names.events.as_str()
        };
        let letter = DeadLetter {
            consumer,
            deliveries,
            error,
            event,
        };
        let published = async {
            let event = letter.to_event()?;
            let mut headers = FieldTable::default();
            headers.insert(QUEUE_HEADER.into(), long_string(&self.group.queue));
            let confirm = channel
                .basic_publish(
                    exchange.into(),
                    event.event_type.as_str().into(),
                    BasicPublishOptions::default(),
                    &event.to_bytes()?,
                    properties_of(&event, headers),
                )
                .await
                .map_err(amqp("publishing a dead letter"))?;
            confirmed(confirm).await
        }
        .await;
        match published {
            Ok(_) => {
                dead_letters::counted(&self.options.consumer);
                ack(delivery, &self.options.consumer).await;
            }
            Err(err) => {
                tracing::error!(error = %err, "publishing a dead letter failed; giving the delivery back");
                nack(delivery, &self.options.consumer).await;
            }
        }
    }
}

async fn ack(delivery: &Delivery, consumer: &str) {
    match tokio::time::timeout(ACK_TIMEOUT, delivery.ack(BasicAckOptions::default())).await {
        Ok(Ok(_)) => {}
        Ok(Err(err)) => tracing::warn!(consumer, error = %err, "acknowledging a delivery failed"),
        Err(_) => tracing::warn!(consumer, "acknowledging a delivery timed out"),
    }
}

async fn nack(delivery: &Delivery, consumer: &str) {
    let options = BasicNackOptions {
        requeue: true,
        ..BasicNackOptions::default()
    };
    match tokio::time::timeout(ACK_TIMEOUT, delivery.nack(options)).await {
        Ok(Ok(_)) => {}
        Ok(Err(err)) => tracing::warn!(consumer, error = %err, "giving a delivery back failed"),
        Err(_) => tracing::warn!(consumer, "giving a delivery back timed out"),
    }
}

impl DeadLetters for RabbitBus {
    fn list(&self) -> BoxFuture<'_, Result<Vec<StoredLetter>, BusError>> {
        Box::pin(async move {
            let channel = self.channel().await?;
            let taken = self.take_letters(&channel).await;
            // Closing without acks puts every message back where it was.
            let _ = channel.close(200, "listed".into()).await;
            Ok(taken?.into_iter().map(|(_, l)| l.stored).collect())
        })
    }

    fn redrive<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, BusError>> {
        Box::pin(async move {
            crate::embedded::parse_id(id)?;
            let channel = self.channel().await?;
            let result = async {
                channel
                    .confirm_select(ConfirmSelectOptions::default())
                    .await
                    .map_err(amqp("enabling publisher confirms"))?;
                let taken = self.take_letters(&channel).await?;
                let Some((delivery, letter)) = taken.into_iter().find(|(_, l)| l.stored.id == id)
                else {
                    return Ok(false);
                };
                let event = &letter.stored.letter.event;
                tracing::info!(consumer = %letter.stored.letter.consumer, event_id = %event.id, queue = ?letter.queue, "Redriving a dead letter.");
                let payload = event.to_bytes()?;
                // To the group that failed it (its queue, through the default exchange);
                // when that queue is gone, to every group of its type.
                let mut delivered = false;
                if let Some(queue) = &letter.queue {
                    let confirm = channel
                        .basic_publish(
                            "".into(),
                            queue.as_str().into(),
                            BasicPublishOptions {
                                mandatory: true,
                                ..BasicPublishOptions::default()
                            },
                            &payload,
                            properties_of(event, FieldTable::default()),
                        )
                        .await
                        .map_err(amqp("redriving a dead letter"))?;
                    delivered = confirmed(confirm).await?.take_message().is_none();
                }
                if !delivered {
                    let confirm = channel
                        .basic_publish(
                            self.inner.names.events.as_str().into(),
                            event.event_type.as_str().into(),
                            BasicPublishOptions::default(),
                            &payload,
                            properties_of(event, FieldTable::default()),
                        )
                        .await
                        .map_err(amqp("redriving a dead letter"))?;
                    confirmed(confirm).await?;
                }
                delivery
                    .ack(BasicAckOptions::default())
                    .await
                    .map_err(amqp("removing a redriven dead letter"))?;
                dead_letters::redriven(&letter.stored.letter.consumer);
                Ok(true)
            }
            .await;
            let _ = channel.close(200, "redriven".into()).await;
            result
        })
    }
}

impl Subscriber for RabbitBus {
    fn subscribe(
        &self,
        options: SubscribeOptions,
        handler: Arc<dyn Handler>,
    ) -> BoxFuture<'_, Result<SubscriptionHandle, BusError>> {
        Box::pin(async move {
            options.validate()?;
            if self.inner.token.is_cancelled() {
                return Err(BusError::Closed);
            }
            let group = Group {
                queue: self.queue_of(&options),
                exchange: options.exchange,
                binding: match options.exchange {
                    Exchange::Topic => binding_key(&options.filter),
                    Exchange::Direct => options.filter.clone(),
                    Exchange::Fanout => String::new(),
                },
                consumer: options.consumer.clone(),
                max_deliveries: options.max_deliveries,
            };
            // Declared now, so that events published once this returns reach the group.
            let connection = self.connection().await?;
            self.declare_group(&connection, &group).await?;
            {
                let mut groups = self
                    .inner
                    .groups
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if !groups.contains(&group) {
                    groups.push(group.clone());
                }
            }
            let token = self.inner.token.child_token();
            let handler = crate::Traced::wrap("rabbitmq", &options.consumer, handler);
            let member = Member {
                bus: self.clone(),
                group,
                options,
                handler,
            };
            self.inner.tracker.spawn(member.run(token.clone()));
            Ok(SubscriptionHandle::new(token))
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.inner.token.cancel();
            self.inner.tracker.close();
            self.inner.tracker.wait().await;
            if let Some(connection) = self.inner.connection.lock().await.take() {
                let _ = connection.close(200, "shut down".into()).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_become_topic_binding_keys_with_the_same_matches() {
        assert_eq!(binding_key("tideway.ordering.*"), "tideway.ordering.*");
        assert_eq!(binding_key("tideway.>"), "tideway.*.#");
        assert_eq!(
            binding_key("tideway.dlq.inventory"),
            "tideway.dlq.inventory"
        );
        assert_eq!(
            binding_key("tideway.*.order-placed.>"),
            "tideway.*.order-placed.*.#"
        );
    }

    #[test]
    fn queue_names_carry_the_prefix_group_and_exchange_kind() {
        assert_eq!(
            queue_name(
                "tideway",
                "inventory",
                "tideway.ordering.*",
                Exchange::Topic
            ),
            "tideway.inventory-tideway_ordering_star"
        );
        assert_eq!(
            queue_name("t1", "ops", "tideway.>", Exchange::Fanout),
            "t1.ops-tideway_all-fanout"
        );
        assert_eq!(
            queue_name("t1", "ops", "tideway.a.b", Exchange::Direct),
            "t1.ops-tideway_a_b-direct"
        );
    }

    #[test]
    fn reconsuming_is_retried_for_ever_at_most_twice_the_longest_delay_apart() {
        let delays: Vec<Duration> = reconsume_backoff().build().take(1000).collect();
        assert_eq!(delays.len(), 1000);
        assert!(
            delays.iter().all(|d| *d <= MAX_RECONSUME_DELAY * 2),
            "{delays:?}"
        );
    }
}
