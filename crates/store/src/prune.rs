//! Pruning by age: rows a service keeps only for a while (inbox entries, idempotency
//! records, finished sagas, spent refresh tokens, provider records) are deleted once older
//! than the service's retention, by a background task that runs every few minutes.
//!
//! A service lists its [`PruneRule`]s; [`prune`] runs them once (tests call it directly) and
//! [`spawn`] runs them for as long as the service lives.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::Db;

/// How often a pruner runs by default.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// One `DELETE` statement with one parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PruneRule {
    /// What it deletes, for logs and metrics (`inbox`, `idempotency`…).
    pub what: &'static str,
    /// The statement; `$1` is the cutoff in unix milliseconds.
    pub sql: &'static str,
    /// Whether `$1` is now (rows carrying their own expiry) instead of now minus the
    /// retention.
    pub expiry: bool,
}

impl PruneRule {
    /// Deletes what is older than the retention: `$1` = now − retention.
    pub const fn older_than(what: &'static str, sql: &'static str) -> Self {
        Self {
            what,
            sql,
            expiry: false,
        }
    }

    /// Deletes what has expired: `$1` = now.
    pub const fn expired(what: &'static str, sql: &'static str) -> Self {
        Self {
            what,
            sql,
            expiry: true,
        }
    }
}

/// Now, in unix milliseconds.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Runs every rule once, with `retention` before now as the cutoff; how many rows each
/// deleted, in order. A failing rule stops the run (the next run tries again).
#[tracing::instrument(skip_all, err)]
pub async fn prune(
    db: &Db,
    rules: &[PruneRule],
    retention: Duration,
) -> Result<Vec<(&'static str, u64)>, sqlx::Error> {
    let now = now_ms();
    let cutoff = now.saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX));
    let mut deleted = Vec::with_capacity(rules.len());
    for rule in rules {
        let rows = sqlx::query(rule.sql)
            .bind(if rule.expiry { now } else { cutoff })
            .execute(db.pool())
            .await?
            .rows_affected();
        if rows > 0 {
            tracing::debug!(what = rule.what, rows, "pruned");
            metrics::counter!("tideway_pruned_rows_total", "what" => rule.what).increment(rows);
        }
        deleted.push((rule.what, rows));
    }
    Ok(deleted)
}

/// Runs [`prune`] every `interval` until `token` is cancelled, on `tracker`.
pub fn spawn(
    db: Db,
    rules: Vec<PruneRule>,
    retention: Duration,
    interval: Duration,
    tracker: &TaskTracker,
    token: CancellationToken,
) {
    tracker.spawn(async move {
        loop {
            tokio::select! {
                () = token.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
            if let Err(err) = prune(&db, &rules, retention).await {
                tracing::warn!(error = %err, "pruning old rows failed; trying again later");
            }
        }
    });
}
