//! The in-process bus of embedded mode (`tideway up`).
//!
//! # Where durability comes from
//!
//! The embedded bus holds no queue that outlives a call. [`Publisher::publish`] delivers the
//! event to every consumer group whose filter matches its subject and returns only when each
//! group has acknowledged it, or has failed it [`SubscribeOptions::max_deliveries`] times and
//! dead-lettered it. The only publisher is the outbox [`Relay`](crate::outbox::Relay), which
//! marks a row sent after `publish` returns. So an event stays pending in its service's
//! outbox until every consumer has handled it; a process killed at any moment (SIGKILL
//! included) restarts with those rows still pending, and the relay delivers them again:
//! nothing is lost, and consumers' [`inbox`](crate::inbox) turns the repeats into no-ops.
//! This needs no cursor or ack table per group, because the publisher's row is the only
//! state, and it is only cleared once nobody needs it any more.
//!
//! The cost: a publisher's relay delivers one event at a time and waits for its slowest
//! consumer (including retry delays), which suits one process.
//!
//! # Consumer groups
//!
//! Subscriptions with the same consumer name and filter form a group; the group gets every
//! matching event once and hands it to one free member (competing consumers). Different
//! groups each get every event (fan-out). A group outlives its members: an event for a
//! group whose members all stopped waits for the next member.
//!
//! Groups exist only once services have subscribed, so `publish` waits until
//! [`EmbeddedBus::open`] is called: `tideway up` subscribes every service, then opens the
//! bus, and relays that started earlier simply wait.
//!
//! # Dead letters
//!
//! After the last failed delivery the event is logged, recorded in the `bus_dead_letters`
//! table when [`EmbeddedOptions::dead_letters`] names a database, and published as a
//! [`DeadLetter`] event on `tideway.dlq.<consumer>` to whichever groups subscribe to it.
//!
//! # Event log
//!
//! With [`EmbeddedOptions::event_log_retention`] set (and a database in
//! [`EmbeddedOptions::dead_letters`]), every published event is also appended to the
//! `bus_event_log` table of that database: one insert before delivery, in the same place as
//! the dead letters. Rows older than the retention are pruned (at open, then hourly). It
//! is what a projection is rebuilt from ([`logged_events`]): the embedded bus's
//! counterpart of a JetStream stream read from its first sequence.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use backon::Retryable;
use futures_util::future::join_all;
use tideway_store::{Db, Row};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;

use crate::{
    BoxFuture, BusError, DeadLetter, Event, Handler, Publisher, SubscribeOptions, Subscriber,
    SubscriptionHandle,
    dead_letters::{self, DeadLetters, StoredLetter},
    inbox::now_ms,
    subject,
};

/// The dead-letter table of the embedded bus; idempotent.
pub const DEAD_LETTER_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS bus_dead_letters (
    consumer TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    deliveries BIGINT NOT NULL,
    error TEXT NOT NULL,
    event TEXT NOT NULL,
    dead_at_ms BIGINT NOT NULL,
    PRIMARY KEY (consumer, event_id)
)";

/// Redrives asked for by another process (the `tideway dlq` tool); idempotent.
pub const REDRIVE_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS bus_dead_letter_redrives (
    consumer TEXT NOT NULL,
    event_id TEXT NOT NULL,
    requested_at_ms BIGINT NOT NULL,
    PRIMARY KEY (consumer, event_id)
)";

/// The event log of the embedded bus (every published event); idempotent.
pub const EVENT_LOG_SCHEMA: [&str; 2] = [
    "CREATE TABLE IF NOT EXISTS bus_event_log (
    event_id TEXT PRIMARY KEY,
    event_type TEXT NOT NULL,
    event TEXT NOT NULL,
    published_at_ms BIGINT NOT NULL
)",
    "CREATE INDEX IF NOT EXISTS bus_event_log_by_time ON bus_event_log (published_at_ms, event_id)",
];

/// How often a running bus prunes its event log.
pub const EVENT_LOG_PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// How often a running bus looks for redrives asked for by another process.
pub const REDRIVE_POLL: Duration = Duration::from_millis(500);

/// Creates the dead-letter tables when they are missing.
#[tracing::instrument(skip_all, err)]
pub async fn install_dead_letters(db: &Db) -> Result<(), BusError> {
    sqlx::query(DEAD_LETTER_SCHEMA).execute(db.pool()).await?;
    sqlx::query(REDRIVE_SCHEMA).execute(db.pool()).await?;
    Ok(())
}

/// Creates the event log when it is missing.
#[tracing::instrument(skip_all, err)]
pub async fn install_event_log(db: &Db) -> Result<(), BusError> {
    crate::inbox::install_schema(db, &EVENT_LOG_SCHEMA).await
}

/// Where a reader of the event log stands: the last row read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogCursor {
    /// When that event was published (unix milliseconds).
    pub published_at_ms: i64,
    /// Its id.
    pub event_id: String,
}

/// Up to `limit` events of the log after `after` (from the start when `None`), in the
/// order they were published (ties by id), each with its cursor.
#[tracing::instrument(skip_all, err)]
pub async fn logged_events(
    db: &Db,
    after: Option<&LogCursor>,
    limit: u32,
) -> Result<Vec<(LogCursor, Event)>, BusError> {
    let start = after.cloned().unwrap_or(LogCursor {
        published_at_ms: i64::MIN,
        event_id: String::new(),
    });
    let rows = sqlx::query(
        "SELECT event_id, event, published_at_ms FROM bus_event_log \
         WHERE published_at_ms > $1 OR (published_at_ms = $1 AND event_id > $2) \
         ORDER BY published_at_ms, event_id LIMIT $3",
    )
    .bind(start.published_at_ms)
    .bind(&start.event_id)
    .bind(i64::from(limit))
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|row| {
            let event: String = row.try_get("event")?;
            Ok((
                LogCursor {
                    published_at_ms: row.try_get("published_at_ms")?,
                    event_id: row.try_get("event_id")?,
                },
                serde_json::from_str(&event)?,
            ))
        })
        .collect()
}

/// Deletes the events of the log published before `before_ms`; how many.
#[tracing::instrument(skip_all, err)]
pub async fn prune_event_log(db: &Db, before_ms: i64) -> Result<u64, BusError> {
    Ok(
        sqlx::query("DELETE FROM bus_event_log WHERE published_at_ms < $1")
            .bind(before_ms)
            .execute(db.pool())
            .await?
            .rows_affected(),
    )
}

/// Every dead letter recorded in `db` with its id (`<consumer>:<event id>`), oldest first.
pub async fn stored_letters(db: &Db) -> Result<Vec<StoredLetter>, BusError> {
    let rows = sqlx::query(
        "SELECT consumer, deliveries, error, event, dead_at_ms FROM bus_dead_letters \
         ORDER BY dead_at_ms, event_id",
    )
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(stored).collect()
}

fn stored(row: &tideway_store::AnyRow) -> Result<StoredLetter, BusError> {
    let event: String = row.try_get("event")?;
    let deliveries: i64 = row.try_get("deliveries")?;
    let letter = DeadLetter {
        consumer: row.try_get("consumer")?,
        deliveries: u32::try_from(deliveries).unwrap_or(u32::MAX),
        error: row.try_get("error")?,
        event: serde_json::from_str(&event)?,
    };
    Ok(StoredLetter {
        id: format!("{}:{}", letter.consumer, letter.event.id),
        dead_at_ms: row.try_get("dead_at_ms")?,
        letter,
    })
}

/// `<consumer>:<event id>` split in two.
pub fn parse_id(id: &str) -> Result<(&str, &str), BusError> {
    id.split_once(':')
        .filter(|(consumer, event)| !consumer.is_empty() && !event.is_empty())
        .ok_or_else(|| {
            BusError::invalid(
                "dead letter id",
                format!("{id:?} is not <consumer>:<event id>"),
            )
        })
}

/// Asks the bus running on `db` to redrive dead letter `id`; `false` when there is none.
pub async fn request_redrive(db: &Db, id: &str) -> Result<bool, BusError> {
    let (consumer, event_id) = parse_id(id)?;
    let exists =
        sqlx::query("SELECT 1 FROM bus_dead_letters WHERE consumer = $1 AND event_id = $2")
            .bind(consumer)
            .bind(event_id)
            .fetch_optional(db.pool())
            .await?
            .is_some();
    if exists {
        sqlx::query(
            "INSERT INTO bus_dead_letter_redrives (consumer, event_id, requested_at_ms) \
             VALUES ($1, $2, $3) ON CONFLICT (consumer, event_id) DO NOTHING",
        )
        .bind(consumer)
        .bind(event_id)
        .bind(now_ms())
        .execute(db.pool())
        .await?;
    }
    Ok(exists)
}

/// Every dead letter recorded in `db`, oldest first.
pub async fn dead_letters(db: &Db) -> Result<Vec<DeadLetter>, BusError> {
    let rows = sqlx::query(
        "SELECT consumer, deliveries, error, event FROM bus_dead_letters ORDER BY dead_at_ms, event_id",
    )
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|row| {
            let event: String = row.try_get("event")?;
            let deliveries: i64 = row.try_get("deliveries")?;
            Ok(DeadLetter {
                consumer: row.try_get("consumer")?,
                deliveries: u32::try_from(deliveries).unwrap_or(u32::MAX),
                error: row.try_get("error")?,
                event: serde_json::from_str(&event)?,
            })
        })
        .collect()
}

/// Embedded bus settings.
#[derive(Debug, Clone, Default)]
pub struct EmbeddedOptions {
    /// Where to record dead letters (`bus_dead_letters`, created by the bus); none: they
    /// are only logged and published on the dead-letter subject.
    pub dead_letters: Option<Db>,
    /// How long the event log (`bus_event_log`, in the `dead_letters` database) keeps
    /// each published event; none: no log is kept.
    pub event_log_retention: Option<Duration>,
}

/// The in-process bus. Cheap to clone; clones share the groups.
#[derive(Debug, Clone)]
pub struct EmbeddedBus {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    groups: Mutex<Vec<Arc<Group>>>,
    open: watch::Sender<bool>,
    tracker: TaskTracker,
    token: CancellationToken,
    options: EmbeddedOptions,
}

#[derive(Debug)]
struct Group {
    options: SubscribeOptions,
    queue: mpsc::UnboundedSender<Work>,
    inbox: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Work>>>,
}

#[derive(Debug)]
struct Work {
    event: Event,
    reply: oneshot::Sender<Result<(), String>>,
}

/// Why one delivery failed: the handler's error is worth a redelivery, a closed bus is not.
#[derive(Debug)]
enum Failure {
    Handler(String),
    Closed,
}

impl EmbeddedBus {
    /// A closed bus: subscribe every consumer, then [`open`](Self::open) it.
    pub async fn new(options: EmbeddedOptions) -> Result<Self, BusError> {
        if let Some(db) = &options.dead_letters {
            install_dead_letters(db).await?;
            if options.event_log_retention.is_some() {
                install_event_log(db).await?;
            }
        }
        Ok(Self {
            inner: Arc::new(Inner {
                groups: Mutex::new(Vec::new()),
                open: watch::Sender::new(false),
                tracker: TaskTracker::new(),
                token: CancellationToken::new(),
                options,
            }),
        })
    }

    /// Lets publishing start (every consumer group that must see the first events exists),
    /// and, with a dead-letter table, starts serving the redrives other processes ask for.
    pub fn open(&self) {
        if self.inner.open.send_replace(true) {
            return;
        }
        if let Some(db) = self.inner.options.dead_letters.clone() {
            let bus = self.clone();
            let token = self.inner.token.clone();
            let retention = self.inner.options.event_log_retention;
            self.inner.tracker.spawn(async move {
                let mut tick = tokio::time::interval(REDRIVE_POLL);
                let mut pruned: Option<std::time::Instant> = None;
                loop {
                    tokio::select! {
                        () = token.cancelled() => return,
                        _ = tick.tick() => {}
                    }
                    if let Some(retention) = retention
                        && pruned.is_none_or(|at| at.elapsed() >= EVENT_LOG_PRUNE_EVERY)
                    {
                        pruned = Some(std::time::Instant::now());
                        let keep_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
                        match prune_event_log(&db, now_ms().saturating_sub(keep_ms)).await {
                            Ok(n) if n > 0 => tracing::info!(pruned = n, "Pruned the event log."),
                            Ok(_) => {}
                            Err(err) => tracing::warn!(error = %err, "pruning the event log failed; trying again later"),
                        }
                    }
                    if let Err(err) = bus.serve_requests(&db).await {
                        tracing::warn!(error = %err, "serving dead-letter redrives failed; trying again");
                    }
                }
            });
        }
    }

    async fn serve_requests(&self, db: &Db) -> Result<(), BusError> {
        let rows = sqlx::query(
            "SELECT consumer, event_id FROM bus_dead_letter_redrives ORDER BY requested_at_ms",
        )
        .fetch_all(db.pool())
        .await?;
        for row in rows {
            let consumer: String = row.try_get("consumer")?;
            let event_id: String = row.try_get("event_id")?;
            self.redrive_in(db, &consumer, &event_id).await?;
            sqlx::query(
                "DELETE FROM bus_dead_letter_redrives WHERE consumer = $1 AND event_id = $2",
            )
            .bind(&consumer)
            .bind(&event_id)
            .execute(db.pool())
            .await?;
        }
        Ok(())
    }

    /// Delivers the dead letter of `consumer` for `event_id` again, to that consumer's
    /// groups only, then removes it unless it was dead-lettered again meanwhile.
    async fn redrive_in(&self, db: &Db, consumer: &str, event_id: &str) -> Result<bool, BusError> {
        let row = sqlx::query(
            "SELECT consumer, deliveries, error, event, dead_at_ms FROM bus_dead_letters \
             WHERE consumer = $1 AND event_id = $2",
        )
        .bind(consumer)
        .bind(event_id)
        .fetch_optional(db.pool())
        .await?;
        let Some(row) = row else { return Ok(false) };
        let stored = stored(&row)?;
        let event = stored.letter.event;
        let groups: Vec<Arc<Group>> = self
            .matching(&event.event_type)
            .into_iter()
            .filter(|g| g.options.consumer == consumer)
            .collect();
        tracing::info!(
            consumer,
            event_id,
            groups = groups.len(),
            "Redriving a dead letter."
        );
        for group in &groups {
            self.deliver_to(group, &event).await?;
        }
        // A delivery that failed again added its deliveries: that row stays.
        sqlx::query(
            "DELETE FROM bus_dead_letters WHERE consumer = $1 AND event_id = $2 AND deliveries = $3",
        )
        .bind(consumer)
        .bind(event_id)
        .bind(i64::from(stored.letter.deliveries))
        .execute(db.pool())
        .await?;
        dead_letters::redriven(consumer);
        Ok(true)
    }

    fn matching(&self, subject: &str) -> Vec<Arc<Group>> {
        self.inner
            .groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|g| subject::matches(&g.options.filter, subject))
            .cloned()
            .collect()
    }

    fn deliver(&self, event: Event) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async move {
            event.validate()?;
            let mut open = self.inner.open.subscribe();
            if !*open.borrow() {
                tracing::debug!("publishing waits for the embedded bus to open");
                tokio::select! {
                    () = self.inner.token.cancelled() => return Err(BusError::Closed),
                    res = open.wait_for(|open| *open) => { res.map_err(|_| BusError::Closed)?; }
                }
            }
            let groups = self.matching(&event.event_type);
            let results = join_all(groups.iter().map(|g| self.deliver_to(g, &event))).await;
            results.into_iter().collect()
        })
    }

    /// Delivers `event` to `group`, redelivering after failures with the group's backoff
    /// ([`SubscribeOptions::max_deliveries`] at most), then dead-letters it.
    async fn deliver_to(&self, group: &Group, event: &Event) -> Result<(), BusError> {
        let options = &group.options;
        let mut attempt = 0_u32;
        let delivering = (move || {
            attempt += 1;
            if attempt > 1 {
                crate::meter::redelivered(&options.consumer, &event.event_type);
            }
            self.deliver_once(group, event, attempt)
        })
        .retry(options.redelivery())
        .when(|failure| matches!(failure, Failure::Handler(_)));
        let outcome = tokio::select! {
            () = self.inner.token.cancelled() => return Err(BusError::Closed),
            outcome = delivering => outcome,
        };
        match outcome {
            Ok(()) => Ok(()),
            Err(Failure::Closed) => Err(BusError::Closed),
            Err(Failure::Handler(error)) => {
                self.dead_letter(DeadLetter {
                    consumer: options.consumer.clone(),
                    deliveries: options.max_deliveries,
                    error,
                    event: event.clone(),
                })
                .await
            }
        }
    }

    /// Delivery `attempt` of `event` to one free member of `group`.
    async fn deliver_once(
        &self,
        group: &Group,
        event: &Event,
        attempt: u32,
    ) -> Result<(), Failure> {
        let (reply, outcome) = oneshot::channel();
        group
            .queue
            .send(Work {
                event: event.clone(),
                reply,
            })
            .map_err(|_| Failure::Closed)?;
        let error = match outcome.await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(err)) => err,
            Err(_) => "the subscriber stopped during the delivery".to_owned(),
        };
        let options = &group.options;
        tracing::warn!(
            consumer = %options.consumer, event_id = %event.id, event_type = %event.event_type,
            attempt, error = %error, "event handler failed"
        );
        Err(Failure::Handler(error))
    }

    async fn dead_letter(&self, letter: DeadLetter) -> Result<(), BusError> {
        crate::meter::dead_lettered(&letter.consumer, &letter.event.event_type);
        tracing::error!(
            consumer = %letter.consumer, event_id = %letter.event.id,
            event_type = %letter.event.event_type, deliveries = letter.deliveries,
            error = %letter.error, "event dead-lettered"
        );
        dead_letters::counted(&letter.consumer);
        if let Some(db) = &self.inner.options.dead_letters {
            sqlx::query(
                "INSERT INTO bus_dead_letters \
                 (consumer, event_id, event_type, deliveries, error, event, dead_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (consumer, event_id) DO UPDATE \
                 SET deliveries = bus_dead_letters.deliveries + excluded.deliveries, \
                 error = excluded.error, event = excluded.event, dead_at_ms = excluded.dead_at_ms",
            )
            .bind(&letter.consumer)
            .bind(&letter.event.id)
            .bind(&letter.event.event_type)
            .bind(i64::from(letter.deliveries))
            .bind(&letter.error)
            .bind(serde_json::to_string(&letter.event)?)
            .bind(now_ms())
            .execute(db.pool())
            .await?;
        }
        if letter
            .event
            .event_type
            .starts_with(&format!("{}.dlq.", subject::ROOT))
        {
            // A dead letter that its own consumer cannot handle is not wrapped again.
            return Ok(());
        }
        self.deliver(letter.to_event()?).await
    }

    fn group(&self, options: SubscribeOptions) -> Arc<Group> {
        let mut groups = self
            .inner
            .groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(group) = groups
            .iter()
            .find(|g| g.options.consumer == options.consumer && g.options.filter == options.filter)
        {
            return group.clone();
        }
        let (queue, inbox) = mpsc::unbounded_channel();
        let group = Arc::new(Group {
            options,
            queue,
            inbox: Arc::new(tokio::sync::Mutex::new(inbox)),
        });
        groups.push(group.clone());
        group
    }
}

async fn member(
    inbox: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Work>>>,
    handler: Arc<dyn Handler>,
    handler_timeout: Duration,
    token: CancellationToken,
) {
    loop {
        let work = tokio::select! {
            () = token.cancelled() => return,
            work = async { inbox.lock().await.recv().await } => work,
        };
        let Some(Work { event, reply }) = work else {
            return;
        };
        let outcome = tokio::select! {
            // Stopping abandons the delivery: the dropped reply counts as a failure and
            // the event is delivered again, to another member if there is one.
            () = token.cancelled() => return,
            outcome = tokio::time::timeout(handler_timeout, handler.handle(event)) => outcome,
        };
        let outcome = match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(err.to_string()),
            Err(_) => Err(format!(
                "the handler ran past its timeout of {handler_timeout:?}"
            )),
        };
        let _ = reply.send(outcome);
    }
}

impl EmbeddedBus {
    /// Appends `event` to the event log when one is kept (a re-publish keeps the first
    /// row), then delivers it.
    fn log_and_deliver(&self, event: Event) -> BoxFuture<'_, Result<(), BusError>> {
        let log = match (
            &self.inner.options.dead_letters,
            self.inner.options.event_log_retention,
        ) {
            (Some(db), Some(_)) => db,
            _ => return self.deliver(event),
        };
        Box::pin(async move {
            event.validate()?;
            sqlx::query(
                "INSERT INTO bus_event_log (event_id, event_type, event, published_at_ms) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (event_id) DO NOTHING",
            )
            .bind(&event.id)
            .bind(&event.event_type)
            .bind(serde_json::to_string(&event)?)
            .bind(now_ms())
            .execute(log.pool())
            .await?;
            self.deliver(event).await
        })
    }
}

impl Publisher for EmbeddedBus {
    fn publish<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<(), BusError>> {
        crate::meter::published("embedded", &event.event_type);
        let span = crate::publish_span("embedded", event);
        if span.is_none() {
            return self.log_and_deliver(event.clone());
        }
        Box::pin(self.log_and_deliver(event.clone()).instrument(span))
    }
}

impl Subscriber for EmbeddedBus {
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
            // In one process a member cannot die alone: only the handler's own time limit
            // applies, and the ack wait has nothing to wait for.
            let handler_timeout = options.handler_timeout;
            let handler = crate::Traced::wrap("embedded", &options.consumer, handler);
            let group = self.group(options);
            let token = self.inner.token.child_token();
            self.inner.tracker.spawn(member(
                group.inbox.clone(),
                handler,
                handler_timeout,
                token.clone(),
            ));
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

impl DeadLetters for EmbeddedBus {
    fn list(&self) -> BoxFuture<'_, Result<Vec<StoredLetter>, BusError>> {
        Box::pin(async move {
            match &self.inner.options.dead_letters {
                Some(db) => stored_letters(db).await,
                None => Ok(Vec::new()),
            }
        })
    }

    fn redrive<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, BusError>> {
        Box::pin(async move {
            let (consumer, event_id) = parse_id(id)?;
            match &self.inner.options.dead_letters {
                Some(db) => self.redrive_in(db, consumer, event_id).await,
                None => Ok(false),
            }
        })
    }
}
