//! The NATS JetStream bus of distributed mode.
//!
//! * One stream ([`NatsOptions::stream`], `TIDEWAY`) holds every subject under the root
//!   (`tideway.>`), dead-letter subjects (`tideway.dlq.<consumer>`) included. It is created
//!   when missing; an existing one is used as it is.
//! * Publishing sets `Nats-Msg-Id` to the event id, so a re-published event (a relay that
//!   crashed before marking its row sent) is dropped by JetStream inside the stream's
//!   duplicate window; [`Publisher::publish_batch`] sends a whole batch before awaiting the
//!   acknowledgements. The `traceparent` also travels as a header.
//! * Each subscription uses a durable pull consumer named after the consumer and its filter
//!   (`inventory-tideway_ordering_star`), created when missing, with explicit acks, the ack
//!   wait and `max_deliver = max_deliveries + 1` (an existing one with another ack wait is
//!   updated to it). Subscriptions of one consumer and filter
//!   pull from the same durable consumer, so replicas compete; each consumer has its own
//!   durable consumer, so every service gets every event.
//! * Members pull one message at a time. While a handler runs, its member sends an
//!   in-progress ack every third of the ack wait, so the ack wait can be short (a crashed
//!   member's events come back after it) while handlers may take up to
//!   [`SubscribeOptions::handler_timeout`]. `Ok` acks. `Err` or a handler past its timeout
//!   naks with the subscription's backoff delay. When delivery `max_deliveries` fails, or the
//!   server delivers once more after the last attempt timed out, the event is published to
//!   `tideway.dlq.<consumer>` as a [`DeadLetter`] (`Nats-Msg-Id` `dlq:<consumer>:<event id>`)
//!   and the original is terminated.
//!
//! # Losing the server's state
//!
//! A server may come back without its stream or consumers (a new node, a wiped store). The
//! bus then recreates them: a failed publish or pull checks the stream, creating it when it
//! is missing, and a member whose pull failed gets its durable consumer again (created
//! when missing). When the stream found differs from the one known (its creation time
//! changed), the bus counts a loss ([`Publisher::losses`]) and the outbox relays publish
//! their retained sent rows again ([`crate::outbox`]), so the events the lost stream held
//! are delivered after all.
//!
//! The subject root on the wire is configurable ([`NatsOptions::root`]) so tests can share a
//! server: events keep their `tideway.…` type, and `tideway.` is replaced by `<root>.` in
//! NATS subjects and filters.

use std::{
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_nats::{
    HeaderMap,
    header::NATS_MESSAGE_ID,
    jetstream::{
        self, AckKind,
        consumer::{AckPolicy, DeliverPolicy, pull},
        context::PublishAckFuture,
        message::PublishMessage,
        stream,
    },
};
use backon::{BackoffBuilder, ExponentialBuilder};
use bytes::Bytes;
use futures_util::{StreamExt, future::join_all};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    BoxFuture, BusError, DeadLetter, Event, Handler, Publisher, SubscribeOptions, Subscriber,
    SubscriptionHandle, subject,
};

/// NATS bus settings.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// The server, `nats://127.0.0.1:4222`.
    pub url: String,
    /// The stream name, `TIDEWAY`.
    pub stream: String,
    /// The first token of subjects on the wire, `tideway` (a unique one per test).
    pub root: String,
    /// How long JetStream remembers message ids to drop duplicates.
    pub duplicate_window: Duration,
    /// How long the stream keeps events.
    pub max_age: Duration,
    /// How long connecting may take.
    pub connect_timeout: Duration,
}

impl Default for NatsOptions {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".to_owned(),
            stream: "TIDEWAY".to_owned(),
            root: subject::ROOT.to_owned(),
            duplicate_window: Duration::from_secs(120),
            max_age: Duration::from_secs(7 * 24 * 3600),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// The JetStream bus. Cheap to clone; clones share the connection and subscriptions.
#[derive(Debug, Clone)]
pub struct NatsBus {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    js: jetstream::Context,
    stream: stream::Stream,
    /// What the stream is created with, again after a loss.
    stream_config: stream::Config,
    /// When the stream this bus knows was created: another time means another stream.
    created: Mutex<time::OffsetDateTime>,
    /// How many times the stream was found lost and recreated.
    losses: AtomicU64,
    options: NatsOptions,
    tracker: TaskTracker,
    token: CancellationToken,
}

impl NatsBus {
    /// Connects to the server and creates the stream when it is missing.
    #[tracing::instrument(skip_all, fields(url = %options.url, stream = %options.stream), err)]
    pub async fn connect(options: NatsOptions) -> Result<Self, BusError> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(options.connect_timeout)
            .name("tideway")
            .connect(options.url.as_str())
            .await
            .map_err(|err| BusError::backend(format!("connecting to {}", options.url), err))?;
        Self::with_client(client, options).await
    }

    /// Uses an existing connection; creates the stream when it is missing.
    pub async fn with_client(
        client: async_nats::Client,
        options: NatsOptions,
    ) -> Result<Self, BusError> {
        if options.root.is_empty() || options.root.contains(['.', '*', '>', ' ']) {
            return Err(BusError::invalid(
                "subject root",
                format!("{:?} must be one token", options.root),
            ));
        }
        let js = jetstream::new(client);
        let stream_config = stream::Config {
            name: options.stream.clone(),
            subjects: vec![format!("{}.>", options.root)],
            duplicate_window: options.duplicate_window,
            max_age: options.max_age,
            storage: stream::StorageType::File,
            ..Default::default()
        };
        let stream = js
            .get_or_create_stream(stream_config.clone())
            .await
            .map_err(|err| {
                BusError::backend(format!("creating the stream {}", options.stream), err)
            })?;
        let created = stream.cached_info().created;
        Ok(Self {
            inner: Arc::new(Inner {
                js,
                stream,
                stream_config,
                created: Mutex::new(created),
                losses: AtomicU64::new(0),
                options,
                tracker: TaskTracker::new(),
                token: CancellationToken::new(),
            }),
        })
    }

    /// The options in force.
    pub fn options(&self) -> &NatsOptions {
        &self.inner.options
    }

    /// The JetStream context (for operations tools and tests).
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.inner.js
    }

    /// Deletes the stream and everything in it (tests and tooling).
    pub async fn delete_stream(&self) -> Result<(), BusError> {
        self.inner
            .js
            .delete_stream(&self.inner.options.stream)
            .await
            .map_err(|err| BusError::backend("deleting the stream", err))?;
        Ok(())
    }

    /// Makes sure the stream exists, creating it when the server lost it; counts a loss when
    /// the stream found is not the one known.
    pub async fn recover_stream(&self) -> Result<(), BusError> {
        let stream = self
            .inner
            .js
            .get_or_create_stream(self.inner.stream_config.clone())
            .await
            .map_err(|err| {
                BusError::backend(
                    format!("creating the stream {}", self.inner.options.stream),
                    err,
                )
            })?;
        let created = stream.cached_info().created;
        let mut known = self
            .inner
            .created
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if *known != created {
            *known = created;
            let losses = self.inner.losses.fetch_add(1, Ordering::SeqCst) + 1;
            tracing::warn!(
                stream = %self.inner.options.stream,
                losses,
                "the NATS server had lost the stream; it is recreated and the outboxes publish their sent events again"
            );
        }
        Ok(())
    }

    /// The durable consumer `durable`, recreated (with the stream) when the server lost it.
    async fn recover_consumer(
        &self,
        durable: &str,
        config: &pull::Config,
    ) -> Result<jetstream::consumer::Consumer<pull::Config>, BusError> {
        self.recover_stream().await?;
        self.inner
            .stream
            .get_or_create_consumer(durable, config.clone())
            .await
            .map_err(|err| BusError::backend(format!("creating the consumer {durable}"), err))
    }

    /// After a failed publish: recreates the stream if the server lost it (the relay
    /// publishes again on its next pass).
    async fn after_failed_publish(&self, err: &BusError) {
        tracing::debug!(error = %err, "a publish failed; checking the stream");
        if let Err(err) = self.recover_stream().await {
            tracing::debug!(error = %err, "the stream cannot be checked yet");
        }
    }

    /// `subject` (`tideway.…`) as it is on the wire (`<root>.…`).
    pub fn wire_subject(&self, subject: &str) -> String {
        match subject.strip_prefix(subject::ROOT) {
            Some(rest) if rest.starts_with('.') => format!("{}{rest}", self.inner.options.root),
            _ => subject.to_owned(),
        }
    }

    async fn send(&self, event: &Event, message_id: &str) -> Result<PublishAckFuture, BusError> {
        crate::meter::published("nats", &event.event_type);
        let span = crate::publish_span("nats", event);
        if span.is_none() {
            return self.send_untraced(event, message_id).await;
        }
        tracing::Instrument::instrument(self.send_untraced(event, message_id), span).await
    }

    async fn send_untraced(
        &self,
        event: &Event,
        message_id: &str,
    ) -> Result<PublishAckFuture, BusError> {
        event.validate()?;
        let mut headers = HeaderMap::new();
        headers.insert(NATS_MESSAGE_ID, message_id);
        if let Some(traceparent) = &event.traceparent {
            headers.insert("traceparent", traceparent.as_str());
        }
        let publish = PublishMessage::build()
            .payload(Bytes::from(event.to_bytes()?))
            .headers(headers);
        self.inner
            .js
            .send_publish(self.wire_subject(&event.event_type), publish)
            .await
            .map_err(|err| BusError::backend(format!("publishing event {}", event.id), err))
    }
}

async fn confirm(ack: PublishAckFuture) -> Result<(), BusError> {
    let ack = ack
        .await
        .map_err(|err| BusError::backend("awaiting a publish acknowledgement", err))?;
    if ack.duplicate {
        tracing::debug!(
            sequence = ack.sequence,
            "duplicate publish dropped by JetStream"
        );
    }
    Ok(())
}

/// The first pause before pulling again after a failed pull.
const FIRST_REPULL_DELAY: Duration = Duration::from_millis(250);
/// The longest pause between pulls that fail (before jitter).
const MAX_REPULL_DELAY: Duration = Duration::from_secs(5);

/// Delays between failing pulls: from [`FIRST_REPULL_DELAY`], doubling up to
/// [`MAX_REPULL_DELAY`], each jittered by up to as much again so that the members that lost
/// the server together do not all come back at once.
fn repull_backoff() -> ExponentialBuilder {
    ExponentialBuilder::new()
        .with_min_delay(FIRST_REPULL_DELAY)
        .with_max_delay(MAX_REPULL_DELAY)
        .with_jitter()
        .without_max_times()
}

/// The durable consumer's name for `consumer` on `filter`.
pub fn durable_name(consumer: &str, filter: &str) -> String {
    let filter: String = filter
        .split('.')
        .map(|token| match token {
            "*" => "star".to_owned(),
            ">" => "all".to_owned(),
            token => token
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect(),
        })
        .collect::<Vec<_>>()
        .join("_");
    format!("{consumer}-{filter}")
}

impl Publisher for NatsBus {
    fn publish<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move {
            let result = async { confirm(self.send(event, &event.id).await?).await }.await;
            if let Err(err) = &result {
                self.after_failed_publish(err).await;
            }
            result
        })
    }

    fn losses(&self) -> u64 {
        self.inner.losses.load(Ordering::SeqCst)
    }

    fn publish_batch<'a>(&'a self, events: &'a [Event]) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move {
            // Send everything (in order, on one connection), then await the acks together.
            let result = async {
                let mut acks = Vec::with_capacity(events.len());
                for event in events {
                    acks.push(self.send(event, &event.id).await?);
                }
                join_all(acks.into_iter().map(confirm))
                    .await
                    .into_iter()
                    .collect::<Result<(), BusError>>()
            }
            .await;
            if let Err(err) = &result {
                self.after_failed_publish(err).await;
            }
            result
        })
    }
}

struct Member {
    bus: NatsBus,
    options: SubscribeOptions,
    handler: Arc<dyn Handler>,
    /// The durable consumer's name and configuration, to recreate it after a loss.
    durable: String,
    config: pull::Config,
}

impl Member {
    async fn run(
        self,
        mut consumer: jetstream::consumer::Consumer<pull::Config>,
        token: CancellationToken,
    ) {
        // Pulling again after a failure never gives up: this task is the subscription, and
        // one that stopped would leave a handle that looks alive over a consumer nobody
        // serves. Only `token` ends it. The delays back off and start over once a pull works.
        let mut delays = repull_backoff().build();
        loop {
            let messages = tokio::select! {
                () = token.cancelled() => return,
                // One message at a time: a message waiting in a local batch would have its
                // ack wait run out unreported and come back to another member.
                messages = consumer.stream().max_messages_per_batch(1).messages() => messages,
            };
            let failed = match messages {
                Ok(mut messages) => {
                    delays = repull_backoff().build();
                    loop {
                        let next = tokio::select! {
                            () = token.cancelled() => return,
                            next = messages.next() => next,
                        };
                        match next {
                            Some(Ok(message)) => {
                                tokio::select! {
                                    // Abandoned: the server redelivers after the ack wait.
                                    () = token.cancelled() => return,
                                    () = self.handle(message) => {}
                                }
                            }
                            Some(Err(err)) => {
                                tracing::warn!(consumer = %self.options.consumer, error = %err, "JetStream pull error");
                                break true;
                            }
                            None => break false,
                        }
                    }
                }
                Err(err) => {
                    tracing::warn!(consumer = %self.options.consumer, error = %err, "pulling from JetStream failed");
                    true
                }
            };
            if failed {
                // The server may have come back without the stream or this consumer: after
                // a pause, get both again (created when missing) and pull from the new one.
                let delay = delays.next().unwrap_or(MAX_REPULL_DELAY);
                tokio::select! {
                    () = token.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
                match self.bus.recover_consumer(&self.durable, &self.config).await {
                    Ok(recovered) => consumer = recovered,
                    Err(err) => {
                        tracing::warn!(consumer = %self.durable, error = %err, "cannot get the durable consumer yet; retrying");
                    }
                }
            }
        }
    }

    async fn handle(&self, message: jetstream::Message) {
        let options = &self.options;
        let delivered = match message.info() {
            Ok(info) => u32::try_from(info.delivered).unwrap_or(u32::MAX),
            Err(err) => {
                tracing::error!(consumer = %options.consumer, error = %err, "message without JetStream metadata");
                return;
            }
        };
        let event = match Event::from_bytes(&message.payload) {
            Ok(event) => event,
            Err(err) => {
                tracing::error!(consumer = %options.consumer, subject = %message.subject, error = %err, "message is not an event; terminating it");
                self.ack(&message, AckKind::Term).await;
                return;
            }
        };
        if let Ok(info) = message.info() {
            crate::meter::lag(&options.consumer, info.pending);
        }
        if delivered > 1 {
            crate::meter::redelivered(&options.consumer, &event.event_type);
        }
        if delivered > options.max_deliveries {
            // The last attempt was never answered (its member died, or stopped reporting
            // progress) and the server delivered once more.
            let error = format!(
                "no answer from the handler within the ack wait of {:?}",
                options.ack_wait
            );
            self.give_up(&message, event, delivered - 1, error).await;
            return;
        }
        let outcome = tokio::time::timeout(
            options.handler_timeout,
            self.handle_in_progress(&message, event.clone()),
        )
        .await;
        let error = match outcome {
            Ok(Ok(())) => {
                self.ack(&message, AckKind::Ack).await;
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
            self.give_up(&message, event, delivered, error).await;
        } else {
            self.ack(&message, AckKind::Nak(Some(options.backoff(delivered))))
                .await;
        }
    }

    /// Runs the handler on `event`, telling the server every
    /// [`SubscribeOptions::progress_interval`] that it is still at work, so that a short ack
    /// wait redelivers the events of a member that died without cutting off a slow handler.
    async fn handle_in_progress(
        &self,
        message: &jetstream::Message,
        event: Event,
    ) -> Result<(), crate::HandlerError> {
        let every = self.options.progress_interval();
        let handling = self.handler.handle(event);
        tokio::pin!(handling);
        let mut reminders = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        reminders.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                outcome = &mut handling => return outcome,
                _ = reminders.tick() => self.ack(message, AckKind::Progress).await,
            }
        }
    }

    async fn give_up(
        &self,
        message: &jetstream::Message,
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
        // The stream sequence of the failed message: a redriven event that fails again is
        // another message, so its second dead letter is not dropped as a duplicate.
        let sequence = message.info().map_or(0, |info| info.stream_sequence);
        let message_id = format!("dlq:{consumer}:{}:{sequence}", event.id);
        let letter = DeadLetter {
            consumer,
            deliveries,
            error,
            event,
        };
        let published = async {
            let event = letter.to_event()?;
            confirm(self.bus.send(&event, &message_id).await?).await
        }
        .await;
        match published {
            Ok(()) => {
                crate::dead_letters::counted(&self.options.consumer);
                self.ack(message, AckKind::Term).await;
            }
            Err(err) => {
                // Leave it unacknowledged: the server redelivers it and we try again.
                tracing::error!(error = %err, "publishing a dead letter failed");
            }
        }
    }

    async fn ack(&self, message: &jetstream::Message, kind: AckKind) {
        if let Err(err) = message.ack_with(kind).await {
            tracing::warn!(consumer = %self.options.consumer, error = %err, "acknowledging a message failed");
        }
    }
}

impl NatsBus {
    /// `consumer` with the ack wait of `wanted` (its configuration): a durable consumer made by an earlier
    /// version (or with other timings) is updated in place, since its ack wait decides how
    /// soon a crashed member's events come back. Kept as it is, with a warning, if the
    /// server refuses.
    async fn keep_current(
        &self,
        consumer: jetstream::consumer::Consumer<pull::Config>,
        wanted: pull::Config,
        durable: &str,
    ) -> jetstream::consumer::Consumer<pull::Config> {
        if consumer.cached_info().config.ack_wait == wanted.ack_wait {
            return consumer;
        }
        let ack_wait = wanted.ack_wait;
        match self.inner.stream.create_consumer(wanted).await {
            Ok(updated) => {
                tracing::info!(consumer = %durable, ?ack_wait, "durable consumer updated to the configured ack wait");
                updated
            }
            Err(err) => {
                tracing::warn!(consumer = %durable, error = %err, "cannot update the durable consumer's ack wait; keeping it");
                consumer
            }
        }
    }
}

impl crate::DeadLetters for NatsBus {
    fn list(&self) -> BoxFuture<'_, Result<Vec<crate::StoredLetter>, BusError>> {
        Box::pin(async move {
            fn backend<E: Into<crate::HandlerError>>(
                what: &'static str,
            ) -> impl FnOnce(E) -> BusError {
                move |err| BusError::backend(format!("listing dead letters: {what}"), err)
            }
            let reader = self
                .inner
                .stream
                .create_consumer(pull::Config {
                    filter_subject: format!("{}.dlq.>", self.inner.options.root),
                    deliver_policy: DeliverPolicy::All,
                    ack_policy: AckPolicy::None,
                    inactive_threshold: Duration::from_secs(30),
                    ..Default::default()
                })
                .await
                .map_err(backend("creating a reader"))?;
            let name = reader.cached_info().name.clone();
            let pending = reader.cached_info().num_pending;
            let mut letters = Vec::new();
            let mut read = 0_u64;
            while read < pending {
                let want = usize::try_from((pending - read).min(256)).unwrap_or(256);
                let mut batch = reader
                    .fetch()
                    .max_messages(want)
                    .expires(Duration::from_secs(2))
                    .messages()
                    .await
                    .map_err(backend("fetching"))?;
                let before = read;
                while let Some(message) = batch.next().await {
                    let message = message.map_err(backend("reading"))?;
                    read += 1;
                    let Ok(info) = message.info() else { continue };
                    let (sequence, published) = (info.stream_sequence, info.published);
                    let Ok(letter) = Event::from_bytes(&message.payload)
                        .and_then(|e| DeadLetter::from_event(&e))
                    else {
                        continue;
                    };
                    letters.push(crate::StoredLetter {
                        id: sequence.to_string(),
                        dead_at_ms: i64::try_from(published.unix_timestamp_nanos() / 1_000_000)
                            .unwrap_or(0),
                        letter,
                    });
                }
                if read == before {
                    break;
                }
            }
            let _ = self.inner.stream.delete_consumer(&name).await;
            Ok(letters)
        })
    }

    fn redrive<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, BusError>> {
        Box::pin(async move {
            let sequence: u64 = id.parse().map_err(|_| {
                BusError::invalid("dead letter id", format!("{id:?} is not a stream sequence"))
            })?;
            let raw = match self.inner.stream.get_raw_message(sequence).await {
                Ok(raw) => raw,
                Err(err) if err.kind() == stream::RawMessageErrorKind::NoMessageFound => {
                    return Ok(false);
                }
                Err(err) => return Err(BusError::backend("reading a dead letter", err)),
            };
            let Ok(letter) =
                Event::from_bytes(&raw.payload).and_then(|e| DeadLetter::from_event(&e))
            else {
                return Ok(false);
            };
            tracing::info!(consumer = %letter.consumer, event_id = %letter.event.id, sequence, "Redriving a dead letter.");
            confirm(
                self.send(&letter.event, &format!("redrive:{sequence}"))
                    .await?,
            )
            .await?;
            self.inner
                .stream
                .delete_message(sequence)
                .await
                .map_err(|err| BusError::backend("deleting a redriven dead letter", err))?;
            crate::dead_letters::redriven(&letter.consumer);
            Ok(true)
        })
    }
}

/// How long one fetch of a [`StreamReader`] waits for its batch.
const READ_WAIT: Duration = Duration::from_secs(2);

/// Reads the stream's events of one filter from its first sequence, in stream order: an
/// ephemeral consumer (no acks, `DeliverPolicy::All`) that the server deletes soon after
/// the reader is dropped. What a projection is rebuilt from.
#[derive(Debug)]
pub struct StreamReader {
    consumer: jetstream::consumer::Consumer<pull::Config>,
    /// Messages left after the last one read (when the consumer was created, all of them).
    remaining: u64,
}

impl NatsBus {
    /// A reader of every event matching `filter` (`tideway.ordering.>`) from the stream's
    /// first sequence up to the last one at the time of the call.
    #[tracing::instrument(skip_all, fields(filter = %filter), err)]
    pub async fn read_from_start(&self, filter: &str) -> Result<StreamReader, BusError> {
        let config = pull::Config {
            description: Some(format!("replay of {filter}")),
            filter_subject: self.wire_subject(filter),
            ack_policy: AckPolicy::None,
            deliver_policy: DeliverPolicy::All,
            inactive_threshold: Duration::from_secs(60),
            ..Default::default()
        };
        let consumer = self
            .inner
            .stream
            .create_consumer(config)
            .await
            .map_err(|err| BusError::backend("creating a replay consumer", err))?;
        let remaining = consumer.cached_info().num_pending;
        Ok(StreamReader {
            consumer,
            remaining,
        })
    }
}

impl StreamReader {
    /// The next `max` events at most; empty once the reader has reached the end.
    pub async fn next_batch(&mut self, max: usize) -> Result<Vec<Event>, BusError> {
        if self.remaining == 0 {
            return Ok(Vec::new());
        }
        let mut messages = self
            .consumer
            .fetch()
            .max_messages(max)
            .expires(READ_WAIT)
            .messages()
            .await
            .map_err(|err| BusError::backend("fetching from the replay consumer", err))?;
        let mut events = Vec::new();
        while let Some(message) = messages.next().await {
            let message =
                message.map_err(|err| BusError::backend("reading the replay consumer", err))?;
            if let Ok(info) = message.info() {
                self.remaining = info.pending;
            }
            match Event::from_bytes(&message.payload) {
                Ok(event) => events.push(event),
                Err(err) => {
                    tracing::warn!(subject = %message.subject, error = %err, "skipping a message that is not an event");
                }
            }
            if self.remaining == 0 {
                break;
            }
        }
        if events.is_empty() {
            // Nothing came within the wait: what was pending is gone (aged out).
            self.remaining = 0;
        }
        Ok(events)
    }
}

impl Subscriber for NatsBus {
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
            let durable = durable_name(&options.consumer, &options.filter);
            let config = pull::Config {
                durable_name: Some(durable.clone()),
                description: Some(format!("{} on {}", options.consumer, options.filter)),
                filter_subject: self.wire_subject(&options.filter),
                ack_policy: AckPolicy::Explicit,
                deliver_policy: DeliverPolicy::All,
                ack_wait: options.ack_wait,
                max_deliver: i64::from(options.max_deliveries) + 1,
                ..Default::default()
            };
            let consumer = self
                .inner
                .stream
                .get_or_create_consumer(&durable, config.clone())
                .await
                .map_err(|err| {
                    BusError::backend(format!("creating the consumer {durable}"), err)
                })?;
            let consumer = self.keep_current(consumer, config.clone(), &durable).await;
            let token = self.inner.token.child_token();
            let handler = crate::Traced::wrap("nats", &options.consumer, handler);
            let member = Member {
                bus: self.clone(),
                options,
                handler,
                durable,
                config,
            };
            self.inner
                .tracker
                .spawn(member.run(consumer, token.clone()));
            Ok(SubscriptionHandle::new(token))
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.inner.token.cancel();
            self.inner.tracker.close();
            self.inner.tracker.wait().await;
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use backon::BackoffBuilder;

    use super::{FIRST_REPULL_DELAY, MAX_REPULL_DELAY, durable_name, repull_backoff};

    #[test]
    fn pulls_are_retried_for_ever_at_most_twice_the_longest_delay_apart() {
        let delays: Vec<Duration> = repull_backoff().build().take(1000).collect();
        assert_eq!(delays.len(), 1000);
        assert!(delays[0] >= FIRST_REPULL_DELAY && delays[0] <= FIRST_REPULL_DELAY * 2);
        assert!(
            delays.iter().all(|d| *d <= MAX_REPULL_DELAY * 2),
            "{delays:?}"
        );
    }

    #[test]
    fn durable_names_are_valid_and_readable() {
        assert_eq!(
            durable_name("inventory", "tideway.ordering.*"),
            "inventory-tideway_ordering_star"
        );
        assert_eq!(
            durable_name("reporting", "tideway.>"),
            "reporting-tideway_all"
        );
        assert_eq!(durable_name("x", "tideway.a/b.c"), "x-tideway_a_b_c");
    }
}
