//! Rebuilding the read models from the start of the event stream (`tideway replay
//! reporting`).
//!
//! In one transaction: the models and this consumer's inbox rows are emptied, then every
//! event of the source is applied through the inbox, as a live delivery would be (so an
//! event the log holds twice counts once). A live delivery meanwhile waits for the
//! transaction (its inbox row or the rows it adds to are locked, or on SQLite the database
//! is) and then finds its event recorded — or, if the source did not hold it yet, applies
//! it on top. Either way each event counts once.
//!
//! Sources: the embedded bus's event log ([`from_event_log`]), which keeps
//! `bus.event_log_days`; NATS JetStream from its first sequence ([`from_stream`], an
//! ephemeral consumer with `DeliverPolicy::All` over `tideway.ordering.>`), which keeps
//! what the stream's `max_age` keeps.

use std::{
    future::Future,
    sync::{Arc, Mutex, PoisonError},
};

use tideway_bus::{
    BusError, Event,
    embedded::{self, LogCursor},
    inbox,
};
use tideway_reporting_api::SERVICE;
use tideway_store::Db;

use crate::projection;

/// How many events are read from a source at once.
pub const BATCH: u32 = 500;

/// What a replay did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Replayed {
    /// Events read from the source.
    pub read: u64,
    /// Events applied (the others were of other subjects or repeats).
    pub applied: u64,
}

/// Rebuilds the models in `db` from the batches `next` yields until it yields an empty one.
pub async fn from_batches<F, Fut>(db: &Db, mut next: F) -> anyhow::Result<Replayed>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Vec<Event>, BusError>>,
{
    let mut tx = db.begin().await?;
    for table in ["sales_daily", "revenue_daily", "funnel", "projection_state"] {
        sqlx::query(&format!("DELETE FROM {table}"))
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query("DELETE FROM inbox WHERE consumer = $1")
        .bind(SERVICE)
        .execute(&mut *tx)
        .await?;
    let mut replayed = Replayed::default();
    loop {
        let batch = next().await?;
        if batch.is_empty() {
            break;
        }
        for event in &batch {
            replayed.read += 1;
            if !projection::SUBJECTS.contains(&event.event_type.as_str()) {
                continue;
            }
            if inbox::record(&mut tx, SERVICE, &event.id).await? {
                projection::apply(&mut tx, event)
                    .await
                    .map_err(|err| anyhow::anyhow!("applying event {}: {err}", event.id))?;
                replayed.applied += 1;
            }
        }
    }
    tx.commit().await?;
    tracing::info!(
        read = replayed.read,
        applied = replayed.applied,
        "Rebuilt the read models."
    );
    Ok(replayed)
}

/// Rebuilds the models in `db` from the embedded bus's event log in `log`.
pub async fn from_event_log(db: &Db, log: &Db) -> anyhow::Result<Replayed> {
    let cursor: Arc<Mutex<Option<LogCursor>>> = Arc::default();
    from_batches(db, || {
        let (cursor, log) = (cursor.clone(), log.clone());
        async move {
            let after = cursor
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            let page = embedded::logged_events(&log, after.as_ref(), BATCH).await?;
            if let Some((last, _)) = page.last() {
                *cursor.lock().unwrap_or_else(PoisonError::into_inner) = Some(last.clone());
            }
            Ok(page.into_iter().map(|(_, event)| event).collect())
        }
    })
    .await
}

/// The subjects a replay from a stream reads (every event the models use is ordering's).
pub const STREAM_FILTER: &str = "tideway.ordering.>";

/// Rebuilds the models in `db` from NATS JetStream, from the stream's first sequence.
pub async fn from_stream(db: &Db, bus: &tideway_bus::NatsBus) -> anyhow::Result<Replayed> {
    let reader = Arc::new(tokio::sync::Mutex::new(
        bus.read_from_start(STREAM_FILTER).await?,
    ));
    from_batches(db, || {
        let reader = reader.clone();
        async move { reader.lock().await.next_batch(BATCH as usize).await }
    })
    .await
}
