//! Where saga instances and their step timelines live: the [`SagaStore`] trait and its
//! implementation on a service's [`Db`] (SQLite or PostgreSQL through `sqlx::Any`).

use std::{collections::HashMap, fmt};

use futures_util::{FutureExt, future::BoxFuture};
use serde::Serialize;
use tideway_store::{Any, AnyRow, Backend, Db, Row, Transaction, sqlx::query as sqlx_query};
use tracing::instrument;

use crate::{SagaError, StepKind};

/// The tables, created idempotently by [`install`].
const SCHEMA: [&str; 4] = [
    "CREATE TABLE IF NOT EXISTS saga_instances (
        id TEXT PRIMARY KEY,
        saga TEXT NOT NULL,
        state TEXT NOT NULL,
        status TEXT NOT NULL,
        step BIGINT NOT NULL,
        waiting BIGINT NOT NULL,
        deadline_ms BIGINT,
        reason TEXT,
        created_ms BIGINT NOT NULL,
        updated_ms BIGINT NOT NULL,
        version BIGINT NOT NULL,
        resends BIGINT NOT NULL DEFAULT 0
    )",
    "CREATE INDEX IF NOT EXISTS saga_instances_open ON saga_instances (status, deadline_ms)",
    // The newest first, for an operator's listing (`SagaStore::recent`).
    "CREATE INDEX IF NOT EXISTS saga_instances_recent ON saga_instances (created_ms)",
    "CREATE TABLE IF NOT EXISTS saga_steps (
        instance_id TEXT NOT NULL,
        step_index BIGINT NOT NULL,
        step TEXT NOT NULL,
        kind TEXT NOT NULL,
        status TEXT NOT NULL,
        seq BIGINT NOT NULL,
        attempts BIGINT NOT NULL,
        started_ms BIGINT NOT NULL,
        finished_ms BIGINT,
        detail TEXT,
        PRIMARY KEY (instance_id, step_index, kind)
    )",
];

/// Pruning finished instances (completed, compensated, failed) last updated before the
/// cutoff, their step log first: for [`tideway_store::prune`]. Running and compensating
/// instances are never pruned, however old.
pub const PRUNE_RULES: [tideway_store::prune::PruneRule; 2] = [
    tideway_store::prune::PruneRule::older_than(
        "saga_steps",
        "DELETE FROM saga_steps WHERE instance_id IN (SELECT id FROM saga_instances \
         WHERE status IN ('completed', 'compensated', 'failed') AND updated_ms < $1)",
    ),
    tideway_store::prune::PruneRule::older_than(
        "saga_instances",
        "DELETE FROM saga_instances \
         WHERE status IN ('completed', 'compensated', 'failed') AND updated_ms < $1",
    ),
];

/// Creates the saga tables in `db` if they are absent. Run it at the owning service's
/// start-up, next to its migrations; concurrent runs are safe.
#[instrument(skip_all, err)]
pub async fn install(db: &Db) -> Result<(), SagaError> {
    let mut tx = db.begin().await?;
    if db.backend() == Backend::Postgres {
        // Two processes creating the same table at once collide in PostgreSQL's catalog even
        // with IF NOT EXISTS; a transaction-scoped advisory lock makes them take turns.
        sqlx_query("SELECT pg_advisory_xact_lock(7301126584)")
            .execute(&mut *tx)
            .await?;
    }
    for statement in SCHEMA {
        sqlx_query(statement).execute(&mut *tx).await?;
    }
    // Tables created before steps could be re-sent lack the count of re-sends.
    let has_resends: i64 = match db.backend() {
        Backend::Postgres => {
            sqlx_query(
                "SELECT COUNT(*) AS n FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name = 'saga_instances' AND column_name = 'resends'",
            )
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?
        }
        Backend::Sqlite => {
            sqlx_query(
                "SELECT COUNT(*) AS n FROM pragma_table_info('saga_instances') WHERE name = 'resends'",
            )
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?
        }
    };
    if has_resends == 0 {
        sqlx_query("ALTER TABLE saga_instances ADD COLUMN resends BIGINT NOT NULL DEFAULT 0")
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Where a saga instance stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SagaStatus {
    /// Doing its steps' actions.
    Running,
    /// A step failed or timed out; undoing the steps done, last first.
    Compensating,
    /// Every step done.
    Completed,
    /// Every step done before the failure undone.
    Compensated,
    /// A compensation failed: the instance needs an operator.
    Failed,
}

impl SagaStatus {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Compensating => "compensating",
            Self::Completed => "completed",
            Self::Compensated => "compensated",
            Self::Failed => "failed",
        }
    }

    /// Parses the stored text.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "running" => Self::Running,
            "compensating" => Self::Compensating,
            "completed" => Self::Completed,
            "compensated" => Self::Compensated,
            "failed" => Self::Failed,
            _ => return None,
        })
    }

    /// Whether the engine has nothing more to do for the instance.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Compensated | Self::Failed)
    }
}

impl fmt::Display for SagaStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where one call of a step (its action or its compensation) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Started, not finished (or interrupted by a crash).
    Running,
    /// Sent a command; waiting for its reply.
    Waiting,
    /// Done.
    Done,
    /// Failed.
    Failed,
    /// Passed its deadline.
    TimedOut,
}

impl StepStatus {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Waiting => "waiting",
            Self::Done => "done",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
        }
    }

    /// Parses the stored text.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "running" => Self::Running,
            "waiting" => Self::Waiting,
            "done" => Self::Done,
            "failed" => Self::Failed,
            "timed_out" => Self::TimedOut,
            _ => return None,
        })
    }
}

/// One saga instance as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRecord {
    /// The instance id (chosen by the caller, e.g. an order id).
    pub id: String,
    /// The saga's name.
    pub saga: String,
    /// The state as JSON text.
    pub state: String,
    /// Where it stands.
    pub status: SagaStatus,
    /// Running: the step whose action is next or under way (`== len` when all are done).
    /// Compensating: the step whose compensation is next or under way (`-1` when none is
    /// left).
    pub step: i64,
    /// Whether the current call sent a command and waits for its reply.
    pub waiting: bool,
    /// When the current call times out (unix ms), while one is under way.
    pub deadline_ms: Option<i64>,
    /// Why the saga is compensating or ended as it did.
    pub reason: Option<String>,
    /// Created (unix ms).
    pub created_ms: i64,
    /// Last changed (unix ms).
    pub updated_ms: i64,
    /// Bumped by every change; a change applies only to the version it was computed from.
    pub version: i64,
    /// How many times the current step's action was called again because its deadline
    /// passed without a reply (see [`Step::resends`](crate::Step::resends)); 0 on a new step.
    pub resends: i64,
}

/// One entry of an instance's timeline: a step's action or compensation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepRecord {
    /// The step's position.
    pub index: i64,
    /// The step's name.
    pub step: String,
    /// Action or compensation.
    pub kind: StepKind,
    /// Where it stands.
    pub status: StepStatus,
    /// How many times it was started (more than one after a crash or a retried compensation).
    pub attempts: i64,
    /// First started (unix ms).
    pub started_ms: i64,
    /// Finished (unix ms).
    pub finished_ms: Option<i64>,
    /// Why it failed or timed out, or how it finished.
    pub detail: Option<String>,
}

/// A change to the timeline, written in the same transaction as the instance's change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepLogWrite {
    /// A call started (again, after a crash: `attempts` counts up, the first start is kept).
    Started {
        /// The step's position.
        index: i64,
        /// The step's name.
        step: String,
        /// Action or compensation.
        kind: StepKind,
        /// When (unix ms).
        at_ms: i64,
        /// Orders the timeline: the instance version that first started the call.
        seq: i64,
    },
    /// A call's status changed.
    Status {
        /// The step's position.
        index: i64,
        /// Action or compensation.
        kind: StepKind,
        /// The new status.
        status: StepStatus,
        /// When it finished (unix ms), if it did.
        finished_ms: Option<i64>,
        /// Why, or how.
        detail: Option<String>,
    },
}

/// Persistence for saga instances. Every change is conditional on the version it was
/// computed from, so two engines can never both advance one instance.
pub trait SagaStore: Send + Sync + 'static {
    /// Inserts a new instance; `false` (and no change) when the id exists.
    fn insert<'a>(&'a self, record: &'a InstanceRecord) -> BoxFuture<'a, Result<bool, SagaError>>;

    /// The instance `id`.
    fn load<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<InstanceRecord>, SagaError>>;

    /// Replaces the instance `record.id` with `record` and applies `log`, atomically, if its
    /// stored version is still `expected_version`; `false` (and no change) otherwise.
    fn update<'a>(
        &'a self,
        record: &'a InstanceRecord,
        expected_version: i64,
        log: &'a [StepLogWrite],
    ) -> BoxFuture<'a, Result<bool, SagaError>>;

    /// Ids and saga names of every instance that is running or compensating.
    fn unfinished(&self) -> BoxFuture<'_, Result<Vec<(String, String)>, SagaError>>;

    /// Ids of unfinished instances whose current call's deadline is at or before `now_ms`.
    fn due(&self, now_ms: i64) -> BoxFuture<'_, Result<Vec<String>, SagaError>>;

    /// The timeline of the instance `id`, in the order the calls first started.
    fn steps<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Vec<StepRecord>, SagaError>>;

    /// The `limit` most recently created instances, of every saga and status, newest first.
    fn recent(&self, limit: u32) -> BoxFuture<'_, Result<Vec<InstanceRecord>, SagaError>>;

    /// The timelines of the instances `ids` (each in the order its calls first started), by
    /// instance id; an instance without steps (or unknown) has no entry.
    fn steps_of<'a>(
        &'a self,
        ids: &'a [String],
    ) -> BoxFuture<'a, Result<HashMap<String, Vec<StepRecord>>, SagaError>>;
}

/// [`SagaStore`] on a service's database; run [`install`] first.
#[derive(Debug, Clone)]
pub struct DbSagaStore {
    db: Db,
}

const INSTANCE_COLUMNS: &str = "id, saga, state, status, step, waiting, deadline_ms, reason, created_ms, updated_ms, version, resends";

/// The most ids bound in one `IN (...)` list: SQLite caps a statement's parameters.
const IN_CHUNK: usize = 500;

impl DbSagaStore {
    /// A store on `db`.
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    #[instrument(skip_all, fields(saga.instance = %record.id), err)]
    async fn insert_record(&self, record: &InstanceRecord) -> Result<bool, SagaError> {
        let done = insert_query(record).execute(self.db.pool()).await?;
        Ok(done.rows_affected() == 1)
    }

    #[instrument(skip_all, fields(saga.instance = %id), err)]
    async fn load_record(&self, id: &str) -> Result<Option<InstanceRecord>, SagaError> {
        let row = sqlx_query(&format!(
            "SELECT {INSTANCE_COLUMNS} FROM saga_instances WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.db.pool())
        .await?;
        row.map(|row| decode_instance(&row)).transpose()
    }

    #[instrument(skip_all, fields(saga.instance = %record.id, version = expected_version), err)]
    async fn update_record(
        &self,
        record: &InstanceRecord,
        expected_version: i64,
        log: &[StepLogWrite],
    ) -> Result<bool, SagaError> {
        let mut tx = self.db.begin().await?;
        let done = sqlx_query(
            "UPDATE saga_instances SET state = $1, status = $2, step = $3, waiting = $4, deadline_ms = $5, reason = $6, updated_ms = $7, version = $8, resends = $9 WHERE id = $10 AND version = $11",
        )
        .bind(&record.state)
        .bind(record.status.as_str())
        .bind(record.step)
        .bind(i64::from(record.waiting))
        .bind(record.deadline_ms)
        .bind(record.reason.as_deref())
        .bind(record.updated_ms)
        .bind(record.version)
        .bind(record.resends)
        .bind(&record.id)
        .bind(expected_version)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            // Another engine (or task) moved the instance on first; leave it to them.
            tx.rollback().await?;
            return Ok(false);
        }
        for write in log {
            match write {
                StepLogWrite::Started {
                    index,
                    step,
                    kind,
                    at_ms,
                    seq,
                } => {
                    sqlx_query(
                        "INSERT INTO saga_steps (instance_id, step_index, step, kind, status, seq, attempts, started_ms, finished_ms, detail)
                         VALUES ($1, $2, $3, $4, 'running', $5, 1, $6, NULL, NULL)
                         ON CONFLICT (instance_id, step_index, kind) DO UPDATE
                         SET status = 'running', attempts = saga_steps.attempts + 1, finished_ms = NULL",
                    )
                    .bind(&record.id)
                    .bind(*index)
                    .bind(step)
                    .bind(kind.as_str())
                    .bind(*seq)
                    .bind(*at_ms)
                    .execute(&mut *tx)
                    .await?;
                }
                StepLogWrite::Status {
                    index,
                    kind,
                    status,
                    finished_ms,
                    detail,
                } => {
                    sqlx_query(
                        "UPDATE saga_steps SET status = $1, finished_ms = $2, detail = $3
                         WHERE instance_id = $4 AND step_index = $5 AND kind = $6",
                    )
                    .bind(status.as_str())
                    .bind(*finished_ms)
                    .bind(detail.as_deref())
                    .bind(&record.id)
                    .bind(*index)
                    .bind(kind.as_str())
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(true)
    }

    #[instrument(skip_all, err)]
    async fn unfinished_records(&self) -> Result<Vec<(String, String)>, SagaError> {
        let rows = sqlx_query(
            "SELECT id, saga FROM saga_instances WHERE status IN ('running', 'compensating') ORDER BY created_ms, id",
        )
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("id")?, row.try_get("saga")?)))
            .collect()
    }

    #[instrument(skip_all, err)]
    async fn due_records(&self, now_ms: i64) -> Result<Vec<String>, SagaError> {
        let rows = sqlx_query(
            "SELECT id FROM saga_instances
             WHERE status IN ('running', 'compensating') AND deadline_ms IS NOT NULL AND deadline_ms <= $1
             ORDER BY deadline_ms LIMIT 1000",
        )
        .bind(now_ms)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(|row| Ok(row.try_get("id")?)).collect()
    }

    #[instrument(skip_all, fields(saga.instance = %id), err)]
    async fn step_records(&self, id: &str) -> Result<Vec<StepRecord>, SagaError> {
        let rows = sqlx_query(
            "SELECT step_index, step, kind, status, attempts, started_ms, finished_ms, detail
             FROM saga_steps WHERE instance_id = $1 ORDER BY seq, step_index",
        )
        .bind(id)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(decode_step).collect()
    }

    #[instrument(skip_all, fields(limit = limit), err)]
    async fn recent_records(&self, limit: u32) -> Result<Vec<InstanceRecord>, SagaError> {
        let rows = sqlx_query(&format!(
            "SELECT {INSTANCE_COLUMNS} FROM saga_instances ORDER BY created_ms DESC, id DESC LIMIT $1"
        ))
        .bind(i64::from(limit))
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(decode_instance).collect()
    }

    #[instrument(skip_all, fields(instances = ids.len()), err)]
    async fn steps_of_records(
        &self,
        ids: &[String],
    ) -> Result<HashMap<String, Vec<StepRecord>>, SagaError> {
        let mut timelines: HashMap<String, Vec<StepRecord>> = HashMap::new();
        // One query per chunk of ids (one in all for a console page), not one per instance.
        for chunk in ids.chunks(IN_CHUNK) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT instance_id, step_index, step, kind, status, attempts, started_ms, finished_ms, detail
                 FROM saga_steps WHERE instance_id IN ({}) ORDER BY instance_id, seq, step_index",
                placeholders.join(", ")
            );
            let mut query = sqlx_query(&sql);
            for id in chunk {
                query = query.bind(id);
            }
            for row in query.fetch_all(self.db.pool()).await? {
                let id: String = row.try_get("instance_id")?;
                timelines.entry(id).or_default().push(decode_step(&row)?);
            }
        }
        Ok(timelines)
    }
}

fn insert_query(
    record: &InstanceRecord,
) -> tideway_store::sqlx::query::Query<'_, Any, tideway_store::sqlx::any::AnyArguments<'_>> {
    sqlx_query(INSERT_INSTANCE)
        .bind(&record.id)
        .bind(&record.saga)
        .bind(&record.state)
        .bind(record.status.as_str())
        .bind(record.step)
        .bind(i64::from(record.waiting))
        .bind(record.deadline_ms)
        .bind(record.reason.as_deref())
        .bind(record.created_ms)
        .bind(record.updated_ms)
        .bind(record.version)
        .bind(record.resends)
}

const INSERT_INSTANCE: &str = "INSERT INTO saga_instances (id, saga, state, status, step, waiting, deadline_ms, reason, created_ms, updated_ms, version, resends) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT (id) DO NOTHING";

/// Inserts the new instance `record` in the caller's transaction (of the database the saga
/// tables live in), so that it commits with the change that begins it — an order and its
/// checkout saga, say — or not at all; `false` when the id exists. Once committed,
/// [`SagaEngine::run_inserted`](crate::SagaEngine::run_inserted) starts it (or, after a
/// crash, [`SagaEngine::resume_all`](crate::SagaEngine::resume_all) does).
pub async fn insert_in(
    tx: &mut Transaction<'_, Any>,
    record: &InstanceRecord,
) -> Result<bool, SagaError> {
    let done = insert_query(record).execute(&mut **tx).await?;
    Ok(done.rows_affected() == 1)
}

fn decode_instance(row: &AnyRow) -> Result<InstanceRecord, SagaError> {
    let status: String = row.try_get("status")?;
    Ok(InstanceRecord {
        id: row.try_get("id")?,
        saga: row.try_get("saga")?,
        state: row.try_get("state")?,
        status: SagaStatus::parse(&status).ok_or_else(|| SagaError::corrupt("status", &status))?,
        step: row.try_get("step")?,
        waiting: row.try_get::<i64, _>("waiting")? != 0,
        deadline_ms: row.try_get("deadline_ms")?,
        reason: row.try_get("reason")?,
        created_ms: row.try_get("created_ms")?,
        updated_ms: row.try_get("updated_ms")?,
        version: row.try_get("version")?,
        resends: row.try_get("resends")?,
    })
}

fn decode_step(row: &AnyRow) -> Result<StepRecord, SagaError> {
    let kind: String = row.try_get("kind")?;
    let status: String = row.try_get("status")?;
    Ok(StepRecord {
        index: row.try_get("step_index")?,
        step: row.try_get("step")?,
        kind: StepKind::parse(&kind).ok_or_else(|| SagaError::corrupt("kind", &kind))?,
        status: StepStatus::parse(&status).ok_or_else(|| SagaError::corrupt("status", &status))?,
        attempts: row.try_get("attempts")?,
        started_ms: row.try_get("started_ms")?,
        finished_ms: row.try_get("finished_ms")?,
        detail: row.try_get("detail")?,
    })
}

impl SagaStore for DbSagaStore {
    fn insert<'a>(&'a self, record: &'a InstanceRecord) -> BoxFuture<'a, Result<bool, SagaError>> {
        self.insert_record(record).boxed()
    }

    fn load<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<InstanceRecord>, SagaError>> {
        self.load_record(id).boxed()
    }

    fn update<'a>(
        &'a self,
        record: &'a InstanceRecord,
        expected_version: i64,
        log: &'a [StepLogWrite],
    ) -> BoxFuture<'a, Result<bool, SagaError>> {
        self.update_record(record, expected_version, log).boxed()
    }

    fn unfinished(&self) -> BoxFuture<'_, Result<Vec<(String, String)>, SagaError>> {
        self.unfinished_records().boxed()
    }

    fn due(&self, now_ms: i64) -> BoxFuture<'_, Result<Vec<String>, SagaError>> {
        self.due_records(now_ms).boxed()
    }

    fn steps<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Vec<StepRecord>, SagaError>> {
        self.step_records(id).boxed()
    }

    fn recent(&self, limit: u32) -> BoxFuture<'_, Result<Vec<InstanceRecord>, SagaError>> {
        self.recent_records(limit).boxed()
    }

    fn steps_of<'a>(
        &'a self,
        ids: &'a [String],
    ) -> BoxFuture<'a, Result<HashMap<String, Vec<StepRecord>>, SagaError>> {
        self.steps_of_records(ids).boxed()
    }
}

#[cfg(test)]
mod tests;
