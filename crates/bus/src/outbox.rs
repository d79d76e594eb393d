//! The transactional outbox and its relay.
//!
//! A service writes its events with [`enqueue`] inside the transaction that changes its
//! state, so both commit or neither does. A [`Relay`] publishes the pending rows in order
//! through a [`Publisher`] and marks them sent after the publisher accepted them. A crash
//! between publishing and marking publishes those rows again on the next pass: delivery is
//! at least once, and consumers deduplicate by event id (the [`inbox`](crate::inbox); on
//! NATS also JetStream's duplicate window, keyed by the same id).
//!
//! # Order
//!
//! Rows are published by `(created_at_ms, id)`: the time of [`enqueue`] in unix millis, then
//! the event id, a UUID v7 that is monotonic within a process. Events enqueued one after the
//! other keep their order; events of concurrent transactions are ordered by when they were
//! enqueued, and a transaction that commits late is still picked up (the relay selects every
//! unsent row, it keeps no cursor). This works unchanged on SQLite and PostgreSQL through
//! `sqlx::Any`, which has no common auto-increment column type.
//!
//! # One relay per service
//!
//! Every replica runs a relay, but only the holder of the `leases` row named
//! [`RelayOptions::lease_name`] publishes. A lease is taken or renewed with one atomic
//! statement, `UPDATE leases SET holder = $me, expires_at_ms = $until WHERE name = $1 AND
//! (holder = $me OR expires_at_ms < $now)`, before every batch and at every poll; a replica
//! that dies stops renewing and another takes over once the lease expires (within
//! [`RelayOptions::lease_ttl`] plus one [`RelayOptions::poll_interval`] of the last renewal —
//! 1.75 s by default — compared on each replica's clock, so keep clocks within a fraction of
//! it). The holder is the replica's stable id, so a replica restarted after a crash renews
//! "its own" lease at once instead of waiting for it to expire. A graceful stop releases the
//! lease at once.
//!
//! # After the bus lost its events
//!
//! Sent rows are kept for [`RelayOptions::retention`] (an hour by default). When the
//! publisher reports a loss ([`Publisher::losses`]: a NATS server back without its stream),
//! the lease holder marks them pending again before its next batch, so the events the lost
//! stream held reach their consumers after all. Events sent before the retention window are
//! not sent again.
//!
//! # Waking
//!
//! The relay polls every [`RelayOptions::poll_interval`] and is woken sooner by
//! [`RelayWaker::wake`], which a service calls after committing a transaction that enqueued
//! events.

use std::{sync::Arc, time::Duration};

use backon::{BackoffBuilder, ExponentialBuilder};
use tideway_store::{Any, Db, Row, Transaction};
use tokio::sync::Notify;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{BusError, Event, Publisher, inbox::now_ms};

/// The outbox and lease tables; idempotent statements run by [`install`].
pub const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS outbox (
        id TEXT PRIMARY KEY,
        event_type TEXT NOT NULL,
        event TEXT NOT NULL,
        created_at_ms BIGINT NOT NULL,
        sent_at_ms BIGINT
    )",
    "CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (created_at_ms, id) WHERE sent_at_ms IS NULL",
    "CREATE TABLE IF NOT EXISTS leases (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        expires_at_ms BIGINT NOT NULL
    )",
];

/// Creates the outbox and lease tables when they are missing. Run by the owning service at
/// start-up, beside its own migrations.
#[tracing::instrument(skip_all, err)]
pub async fn install(db: &Db) -> Result<(), BusError> {
    crate::inbox::install_schema(db, SCHEMA).await
}

/// Writes `event` to the outbox in the caller's transaction. It is published once the
/// transaction commits (call [`RelayWaker::wake`] after the commit to publish at once).
#[tracing::instrument(skip_all, fields(event_id = %event.id, event_type = %event.event_type, db.operation.name = "INSERT", db.collection.name = "outbox"), err)]
pub async fn enqueue(tx: &mut Transaction<'_, Any>, event: &Event) -> Result<(), BusError> {
    event.validate()?;
    let json = serde_json::to_string(event)?;
    sqlx::query(
        "INSERT INTO outbox (id, event_type, event, created_at_ms) VALUES ($1, $2, $3, $4)",
    )
    .bind(&event.id)
    .bind(&event.event_type)
    .bind(json)
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// How many outbox rows are not yet sent.
pub async fn pending(db: &Db) -> Result<i64, BusError> {
    Ok(
        sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE sent_at_ms IS NULL")
            .fetch_one(db.pool())
            .await?,
    )
}

/// A named lease in the `leases` table: at most one holder at a time, until it expires.
#[derive(Debug, Clone)]
pub struct Lease {
    db: Db,
    name: String,
    holder: String,
    ttl: Duration,
}

impl Lease {
    /// A lease `name` for `holder` (unique per process), valid `ttl` after each renewal.
    pub fn new(db: Db, name: impl Into<String>, holder: impl Into<String>, ttl: Duration) -> Self {
        Self {
            db,
            name: name.into(),
            holder: holder.into(),
            ttl,
        }
    }

    /// This holder's id.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Takes the lease if it is free or expired, or renews it if held: `true` when this
    /// holder has it for another `ttl`.
    #[tracing::instrument(level = "debug", skip_all, fields(lease = %self.name, holder = %self.holder), err)]
    pub async fn try_acquire(&self) -> Result<bool, BusError> {
        let now = now_ms();
        let until = now.saturating_add(i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX));
        let inserted = sqlx::query(
            "INSERT INTO leases (name, holder, expires_at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(&self.name)
        .bind(&self.holder)
        .bind(until)
        .execute(self.db.pool())
        .await?
        .rows_affected();
        if inserted == 1 {
            return Ok(true);
        }
        let updated = sqlx::query(
            "UPDATE leases SET holder = $2, expires_at_ms = $3 \
             WHERE name = $1 AND (holder = $2 OR expires_at_ms < $4)",
        )
        .bind(&self.name)
        .bind(&self.holder)
        .bind(until)
        .bind(now)
        .execute(self.db.pool())
        .await?
        .rows_affected();
        Ok(updated == 1)
    }

    /// Gives the lease up if this holder has it, so another can take it at once.
    #[tracing::instrument(level = "debug", skip_all, fields(lease = %self.name, holder = %self.holder), err)]
    pub async fn release(&self) -> Result<(), BusError> {
        sqlx::query("UPDATE leases SET expires_at_ms = 0 WHERE name = $1 AND holder = $2")
            .bind(&self.name)
            .bind(&self.holder)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// The current holder and expiry (unix millis), if the row exists.
    pub async fn current(&self) -> Result<Option<(String, i64)>, BusError> {
        let row = sqlx::query("SELECT holder, expires_at_ms FROM leases WHERE name = $1")
            .bind(&self.name)
            .fetch_optional(self.db.pool())
            .await?;
        Ok(match row {
            Some(row) => Some((row.try_get("holder")?, row.try_get("expires_at_ms")?)),
            None => None,
        })
    }
}

/// How long a relay lease lasts without renewal, by default: with [`DEFAULT_POLL_INTERVAL`],
/// another replica takes over within 1.75 s of the holder's last renewal.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_millis(1500);

/// How often a relay looks for pending rows (and renews its lease) without a wake-up, by
/// default.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// How often the relay sets the outbox and pool gauges.
const GAUGE_INTERVAL: Duration = Duration::from_secs(5);

/// Relay settings.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// The lease row's name; one per service database.
    pub lease_name: String,
    /// This relay's id in the lease: the replica's stable id (its instance id), the same
    /// after a restart, so a restarted replica takes its lease back at once instead of
    /// waiting for it to expire. Two live replicas must never share one. A UUID by default.
    pub holder: String,
    /// How long a lease lasts without renewal: how soon another replica takes over after
    /// the holder died. Keep it at least twice [`poll_interval`](Self::poll_interval), so a
    /// live holder renews in time.
    pub lease_ttl: Duration,
    /// How often to look for pending rows (and renew the lease) without a wake-up.
    pub poll_interval: Duration,
    /// The most rows published per batch.
    pub batch_size: u32,
    /// How long to wait after a failed pass before trying again; doubled after each further
    /// failure up to [`max_retry_delay`](Self::max_retry_delay), each delay jittered by up to
    /// as much again.
    pub retry_delay: Duration,
    /// The longest wait between failed passes, before jitter.
    pub max_retry_delay: Duration,
    /// How long sent rows are kept before they are deleted.
    pub retention: Duration,
}

impl RelayOptions {
    /// The delays between failed passes: from `retry_delay`, doubling up to
    /// `max_retry_delay`, each jittered by up to as much again (replicas and services that
    /// lost the database or the bus together do not all retry together); without end.
    fn retry_backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::new()
            .with_min_delay(self.retry_delay)
            .with_max_delay(self.max_retry_delay)
            .with_jitter()
            .without_max_times()
    }
}

impl Default for RelayOptions {
    fn default() -> Self {
        Self {
            lease_name: "outbox-relay".to_owned(),
            holder: uuid::Uuid::new_v4().to_string(),
            lease_ttl: DEFAULT_LEASE_TTL,
            poll_interval: DEFAULT_POLL_INTERVAL,
            batch_size: 100,
            retry_delay: Duration::from_secs(1),
            max_retry_delay: Duration::from_secs(10),
            retention: Duration::from_secs(3600),
        }
    }
}

/// Wakes a [`Relay`] so it publishes without waiting for its next poll.
#[derive(Debug, Clone, Default)]
pub struct RelayWaker(Arc<Notify>);

impl RelayWaker {
    /// Asks the relay to look for pending rows now (call after committing a transaction
    /// that enqueued events). Wake-ups while the relay is busy coalesce into one pass.
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

/// Publishes a service's outbox: one background task per replica, one active by lease.
pub struct Relay {
    db: Db,
    publisher: Arc<dyn Publisher>,
    options: RelayOptions,
    lease: Lease,
    waker: RelayWaker,
    /// The publisher's [`Publisher::losses`] when this relay last looked.
    losses_seen: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// A relay of `db`'s outbox to `publisher`. The tables must exist ([`install`]).
    pub fn new(db: Db, publisher: Arc<dyn Publisher>, options: RelayOptions) -> Self {
        let lease = Lease::new(
            db.clone(),
            options.lease_name.clone(),
            options.holder.clone(),
            options.lease_ttl,
        );
        let losses_seen = std::sync::atomic::AtomicU64::new(publisher.losses());
        Self {
            db,
            publisher,
            options,
            lease,
            waker: RelayWaker::default(),
            losses_seen,
        }
    }

    /// The waker to call after committing events.
    pub fn waker(&self) -> RelayWaker {
        self.waker.clone()
    }

    /// Runs the relay on `tracker` until `token` is cancelled; returns its waker.
    pub fn spawn(self, tracker: &TaskTracker, token: CancellationToken) -> RelayWaker {
        let waker = self.waker();
        tracker.spawn(self.run(token));
        waker
    }

    /// The relay loop: take or renew the lease, publish every pending batch, wait for a
    /// wake-up or the poll interval; on cancellation release the lease and return.
    pub async fn run(self, token: CancellationToken) {
        let mut last_prune = tokio::time::Instant::now();
        let mut last_gauges = tokio::time::Instant::now() - GAUGE_INTERVAL;
        let mut held = false;
        // Failed passes are retried for as long as the relay runs: it is the only way this
        // service's events leave, so giving up would strand every later one. The delays
        // back off (a wake-up still starts a pass at once) and start over after a good pass.
        let mut failures = self.options.retry_backoff().build();
        loop {
            if token.is_cancelled() {
                break;
            }
            let mut delay = self.options.poll_interval;
            // A pass may wait on a publish (the embedded bus waits for every consumer group,
            // and a stopped group never answers): cancellation must not wait for it. Rows
            // whose publish is abandoned stay pending and go out on the next start.
            let pass = tokio::select! {
                () = token.cancelled() => {
                    held = true;
                    break;
                }
                pass = self.pass() => pass,
            };
            if pass.is_ok() {
                failures = self.options.retry_backoff().build();
            }
            match pass {
                Ok(Some(_)) => held = true,
                Ok(None) => held = false,
                Err(err) => {
                    delay = failures.next().unwrap_or(self.options.max_retry_delay);
                    tracing::warn!(error = %err, retry_in = ?delay, "outbox relay pass failed; retrying");
                }
            }
            if last_gauges.elapsed() >= GAUGE_INTERVAL {
                last_gauges = tokio::time::Instant::now();
                self.gauges(held).await;
            }
            if held && last_prune.elapsed() >= Duration::from_secs(60) {
                last_prune = tokio::time::Instant::now();
                if let Err(err) = self.prune().await {
                    tracing::warn!(error = %err, "pruning the outbox failed");
                }
            }
            tokio::select! {
                () = token.cancelled() => break,
                () = self.waker.0.notified() => {}
                () = tokio::time::sleep(delay) => {}
            }
        }
        if held && let Err(err) = self.lease.release().await {
            tracing::warn!(error = %err, "releasing the relay lease failed");
        }
    }

    /// One pass: when this relay holds (or takes) the lease, publishes pending rows batch by
    /// batch until none is left and returns how many it published; `None` when another
    /// replica holds the lease.
    #[tracing::instrument(level = "debug", skip_all, fields(holder = %self.options.holder), err)]
    pub async fn pass(&self) -> Result<Option<usize>, BusError> {
        let mut published = 0;
        loop {
            // Renew before every batch: a relay that lost its lease stops at once.
            if !self.lease.try_acquire().await? {
                return Ok(if published == 0 {
                    None
                } else {
                    Some(published)
                });
            }
            self.after_losses().await?;
            let batch = self.publish_batch().await?;
            published += batch;
            if batch < self.options.batch_size as usize {
                return Ok(Some(published));
            }
        }
    }

    /// When the bus lost the events it had accepted since this relay last looked, marks the
    /// retained sent rows pending again: they are published anew (in their order), and the
    /// consumers' inboxes drop those they had already handled.
    async fn after_losses(&self) -> Result<(), BusError> {
        use std::sync::atomic::Ordering;
        let losses = self.publisher.losses();
        if losses == self.losses_seen.load(Ordering::SeqCst) {
            return Ok(());
        }
        let again = sqlx::query("UPDATE outbox SET sent_at_ms = NULL WHERE sent_at_ms > 0")
            .execute(self.db.pool())
            .await?
            .rows_affected();
        self.losses_seen.store(losses, Ordering::SeqCst);
        tracing::warn!(
            rows = again,
            "the bus lost the events it had stored; publishing the retained sent rows again"
        );
        Ok(())
    }

    async fn publish_batch(&self) -> Result<usize, BusError> {
        let rows = sqlx::query(
            "SELECT id, event FROM outbox WHERE sent_at_ms IS NULL \
             ORDER BY created_at_ms, id LIMIT $1",
        )
        .bind(i64::from(self.options.batch_size))
        .fetch_all(self.db.pool())
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut ids = Vec::with_capacity(rows.len());
        let mut events = Vec::with_capacity(rows.len());
        let mut broken = Vec::new();
        for row in &rows {
            let id: String = row.try_get("id")?;
            let json: String = row.try_get("event")?;
            match serde_json::from_str::<Event>(&json) {
                Ok(event) => {
                    ids.push(id);
                    events.push(event);
                }
                Err(err) => {
                    // Written by `enqueue`, so this means the row was edited by hand: do not
                    // let it block every later event.
                    tracing::error!(event_id = %id, error = %err, "outbox row is not an event; skipping it");
                    broken.push(id);
                }
            }
        }
        if !events.is_empty() {
            self.publisher.publish_batch(&events).await?;
        }
        self.mark(&ids, now_ms()).await?;
        self.mark(&broken, 0).await?;
        tracing::debug!(count = events.len(), "outbox batch published");
        Ok(rows.len())
    }

    async fn mark(&self, ids: &[String], sent_at_ms: i64) -> Result<(), BusError> {
        if ids.is_empty() {
            return Ok(());
        }
        let placeholders: Vec<String> = (2..ids.len() + 2).map(|i| format!("${i}")).collect();
        let sql = format!(
            "UPDATE outbox SET sent_at_ms = $1 WHERE id IN ({})",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(&sql).bind(sent_at_ms);
        for id in ids {
            query = query.bind(id);
        }
        query.execute(self.db.pool()).await?;
        Ok(())
    }

    /// Sets the outbox and pool gauges of this service: pending rows and the age of the
    /// oldest (by the lease holder only, the one that drains them), connections in use and
    /// idle.
    async fn gauges(&self, held: bool) {
        let service = self.options.lease_name.clone();
        let pool = self.db.pool();
        let (size, idle) = (
            pool.size(),
            u32::try_from(pool.num_idle()).unwrap_or(u32::MAX),
        );
        metrics::gauge!("tideway_db_pool_connections", "service" => service.clone(), "state" => "in_use")
            .set(f64::from(size.saturating_sub(idle)));
        metrics::gauge!("tideway_db_pool_connections", "service" => service.clone(), "state" => "idle")
            .set(f64::from(idle));
        if !held {
            return;
        }
        let row = sqlx::query(
            "SELECT COUNT(*) AS pending, MIN(created_at_ms) AS oldest FROM outbox \
             WHERE sent_at_ms IS NULL",
        )
        .fetch_one(pool)
        .await;
        let Ok(row) = row else { return };
        let pending: i64 = row.try_get("pending").unwrap_or(0);
        let oldest: Option<i64> = row.try_get("oldest").ok().flatten();
        let age_ms = oldest.map_or(0, |oldest| now_ms().saturating_sub(oldest).max(0));
        #[expect(clippy::cast_precision_loss, reason = "gauges; exact below 2^53")]
        {
            metrics::gauge!("tideway_outbox_pending_rows", "service" => service.clone())
                .set(pending as f64);
            metrics::gauge!("tideway_outbox_oldest_age_seconds", "service" => service)
                .set(age_ms as f64 / 1000.0);
        }
    }

    async fn prune(&self) -> Result<(), BusError> {
        let before = now_ms()
            .saturating_sub(i64::try_from(self.options.retention.as_millis()).unwrap_or(i64::MAX));
        let deleted =
            sqlx::query("DELETE FROM outbox WHERE sent_at_ms IS NOT NULL AND sent_at_ms < $1")
                .bind(before)
                .execute(self.db.pool())
                .await?
                .rows_affected();
        if deleted > 0 {
            tracing::debug!(deleted, "sent outbox rows pruned");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_passes_are_retried_for_ever_at_most_twice_the_longest_delay_apart() {
        let options = RelayOptions {
            retry_delay: Duration::from_millis(100),
            max_retry_delay: Duration::from_secs(2),
            ..RelayOptions::default()
        };
        let delays: Vec<Duration> = options.retry_backoff().build().take(1000).collect();
        assert_eq!(delays.len(), 1000);
        assert!(delays[0] >= options.retry_delay && delays[0] <= options.retry_delay * 2);
        assert!(
            delays.iter().all(|d| *d <= options.max_retry_delay * 2),
            "{delays:?}"
        );
    }
}
