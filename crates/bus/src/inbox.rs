//! The inbox: effectively-once handling of at-least-once deliveries.
//!
//! A handler opens a transaction, calls [`record`] with its consumer name and the event id,
//! and applies its effect only when `record` answers `true`; then it commits. A redelivered
//! event finds its id recorded, so the handler commits nothing and acknowledges it. Two
//! concurrent deliveries of one event cannot both insert: the primary key makes the second
//! wait for the first transaction and then find the row.
//!
//! ```ignore
//! let mut tx = db.begin().await?;
//! if inbox::record(&mut tx, "inventory", &event.id).await? {
//!     reserve_stock(&mut tx, &event.decode::<OrderPlaced>()?).await?;
//! }
//! tx.commit().await?;
//! ```

use std::time::{SystemTime, UNIX_EPOCH};

use tideway_store::{Any, Db, Transaction};

use crate::BusError;

/// The inbox table; idempotent. Run by the owning service at start-up, beside its migrations.
pub const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS inbox (
    consumer TEXT NOT NULL,
    event_id TEXT NOT NULL,
    received_at_ms BIGINT NOT NULL,
    PRIMARY KEY (consumer, event_id)
)";

/// Creates the inbox table when it is missing.
#[tracing::instrument(skip_all, err)]
pub async fn install(db: &Db) -> Result<(), BusError> {
    install_schema(db, &[SCHEMA]).await
}

/// Runs idempotent `CREATE … IF NOT EXISTS` statements in one transaction. On PostgreSQL
/// the transaction first takes an advisory lock: two processes (or replicas) starting at
/// once would otherwise race to create the same table, and the loser fails with
/// "type … already exists" despite `IF NOT EXISTS`.
pub(crate) async fn install_schema(db: &Db, statements: &[&str]) -> Result<(), BusError> {
    /// The advisory lock key of the bus's tables, the same in every service's database.
    const SCHEMA_LOCK: i64 = 0x7469_6465_7761_7901;
    let mut tx = db.pool().begin().await?;
    if db.backend() == tideway_store::Backend::Postgres {
        sqlx::query(&format!(
            "SELECT COUNT(*) FROM (SELECT pg_advisory_xact_lock({SCHEMA_LOCK})) AS locked"
        ))
        .execute(&mut *tx)
        .await?;
    }
    for statement in statements {
        sqlx::query(statement).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Records that `consumer` handles `event_id` in `tx`. `true`: first time, apply the effect
/// in this transaction; `false`: already handled, do nothing and acknowledge.
#[tracing::instrument(skip_all, fields(consumer = %consumer, event_id = %event_id), err)]
pub async fn record(
    tx: &mut Transaction<'_, Any>,
    consumer: &str,
    event_id: &str,
) -> Result<bool, BusError> {
    let inserted = sqlx::query(
        "INSERT INTO inbox (consumer, event_id, received_at_ms) VALUES ($1, $2, $3) \
         ON CONFLICT (consumer, event_id) DO NOTHING",
    )
    .bind(consumer)
    .bind(event_id)
    .bind(now_ms())
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Deletes entries older than `before_ms` (unix millis); events older than the bus's
/// redelivery horizon can no longer arrive. Returns how many were deleted.
#[tracing::instrument(skip_all, err)]
pub async fn prune(db: &Db, before_ms: i64) -> Result<u64, BusError> {
    Ok(sqlx::query("DELETE FROM inbox WHERE received_at_ms < $1")
        .bind(before_ms)
        .execute(db.pool())
        .await?
        .rows_affected())
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
