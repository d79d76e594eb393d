//! The audit trail: an append-only record of admin actions — who, when, what, the state
//! before and after, and the trace id — in one table on SQLite or PostgreSQL, each record
//! chained to the one before by hash.
//!
//! A record's hash is the SHA-256 of its canonical form: the JSON array
//! `[seq, at, actor, action, target, before, after, trace_id, prev_hash]`, with `before`
//! and `after` as the JSON text stored (or `null`). `prev_hash` is the previous record's
//! hash (64 zeros for the first). [`AuditStore::verify`] walks the records in order and
//! names the first whose number, link or hash does not hold, so a changed or removed
//! record is found.
#![warn(missing_docs)]

mod admin;

use std::sync::Arc;
use tideway_runtime::openapi::BearerAuth;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::Row;
use tideway_store::{DatabaseUrl, Db, StoreError};
use tokio::sync::{Mutex, mpsc};

pub use admin::{AUDIT_PATH, AuditPage, admin_routes};

/// The OpenAPI document of the audit admin endpoints.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(admin::list),
    components(schemas(tideway_runtime::InvalidParam), responses(tideway_runtime::Problem)),
    modifiers(&BearerAuth),
    tags((name = "audit", description = "The hash-chained audit trail of admin actions (role admin)"))
)]
pub struct ApiDoc;

/// The OpenAPI document of the audit admin endpoints.
pub fn openapi() -> utoipa::openapi::OpenApi {
    <ApiDoc as utoipa::OpenApi>::openapi()
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The previous hash of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// How many times an append is tried again when another process took its number.
const APPEND_TRIES: usize = 20;

/// Records read at once while verifying.
const VERIFY_CHUNK: i64 = 1_000;

/// An admin action to record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Who: a user id, or the component that acted (`gateway` for a rollback, `file`).
    pub actor: String,
    /// What kind of action: `catalog.put`, `gateway.switch`, `flags.replace`.
    pub action: String,
    /// On what: a path, a route prefix.
    pub target: String,
    /// The state before (none for a creation).
    pub before: Option<Value>,
    /// The state after (none for a removal).
    pub after: Option<Value>,
    /// The trace of the request that acted.
    pub trace_id: Option<String>,
}

/// A stored record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Record {
    /// Its number: 1, 2, 3 … without gaps.
    pub seq: i64,
    /// When (RFC 3339, UTC).
    pub at: String,
    /// Who.
    pub actor: String,
    /// What kind of action.
    pub action: String,
    /// On what.
    pub target: String,
    /// The state before.
    pub before: Option<Value>,
    /// The state after.
    pub after: Option<Value>,
    /// The trace id.
    pub trace_id: Option<String>,
    /// The previous record's hash.
    pub prev_hash: String,
    /// This record's hash.
    pub hash: String,
}

/// What verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every record holds.
    Intact {
        /// How many records there are.
        count: u64,
    },
    /// A record does not hold: the first one found.
    Broken {
        /// Its number (the missing number for a removed record).
        seq: i64,
        /// What is wrong.
        reason: String,
    },
}

/// Why the audit store failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The database could not be opened.
    #[error("cannot open the audit database")]
    Open(#[source] StoreError),
    /// A query failed.
    #[error("the audit database failed")]
    Database(#[source] sqlx::Error),
    /// Another process kept taking the next number.
    #[error("cannot append to the audit trail: the next number was taken {0} times")]
    Contended(usize),
    /// A value could not be encoded.
    #[error("cannot encode an audit record")]
    Encode(#[source] serde_json::Error),
}

impl From<sqlx::Error> for AuditError {
    fn from(err: sqlx::Error) -> Self {
        Self::Database(err)
    }
}

/// The audit trail in one database.
#[derive(Clone)]
pub struct AuditStore {
    db: Db,
    /// One append at a time in this process; between processes the primary key on `seq`
    /// decides and the loser tries again on the new head.
    appending: Arc<Mutex<()>>,
}

impl std::fmt::Debug for AuditStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditStore").finish_non_exhaustive()
    }
}

/// The stored text of a state: compact JSON.
fn text_of(value: Option<&Value>) -> Result<Option<String>, AuditError> {
    value
        .map(serde_json::to_string)
        .transpose()
        .map_err(AuditError::Encode)
}

/// The SHA-256 (hex) of a record's canonical form.
#[expect(clippy::too_many_arguments, reason = "the fields of one record")]
pub fn hash_of(
    seq: i64,
    at: &str,
    actor: &str,
    action: &str,
    target: &str,
    before: Option<&str>,
    after: Option<&str>,
    trace_id: Option<&str>,
    prev_hash: &str,
) -> String {
    let canonical = serde_json::json!([
        seq, at, actor, action, target, before, after, trace_id, prev_hash
    ])
    .to_string();
    let digest = Sha256::digest(canonical.as_bytes());
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// One row as stored.
struct Stored {
    seq: i64,
    at: String,
    actor: String,
    action: String,
    target: String,
    before: Option<String>,
    after: Option<String>,
    trace_id: Option<String>,
    prev_hash: String,
    hash: String,
}

impl Stored {
    fn of(row: &sqlx::any::AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            seq: row.try_get("seq")?,
            at: row.try_get("at")?,
            actor: row.try_get("actor")?,
            action: row.try_get("action")?,
            target: row.try_get("target")?,
            before: row.try_get("before_json")?,
            after: row.try_get("after_json")?,
            trace_id: row.try_get("trace_id")?,
            prev_hash: row.try_get("prev_hash")?,
            hash: row.try_get("hash")?,
        })
    }

    fn expected_hash(&self) -> String {
        hash_of(
            self.seq,
            &self.at,
            &self.actor,
            &self.action,
            &self.target,
            self.before.as_deref(),
            self.after.as_deref(),
            self.trace_id.as_deref(),
            &self.prev_hash,
        )
    }

    fn into_record(self) -> Record {
        // A state that no longer reads (a tampered row) is shown as its text.
        let value = |text: Option<String>| {
            text.map(|text| serde_json::from_str(&text).unwrap_or(Value::String(text)))
        };
        Record {
            seq: self.seq,
            at: self.at,
            actor: self.actor,
            action: self.action,
            target: self.target,
            before: value(self.before),
            after: value(self.after),
            trace_id: self.trace_id,
            prev_hash: self.prev_hash,
            hash: self.hash,
        }
    }
}

const COLUMNS: &str =
    "seq, at, actor, action, target, before_json, after_json, trace_id, prev_hash, hash";

impl AuditStore {
    /// Opens (and migrates) the audit database at `url`.
    pub async fn open(url: &DatabaseUrl) -> Result<Self, AuditError> {
        let db = Db::open_service("audit", url, &MIGRATOR)
            .await
            .map_err(AuditError::Open)?;
        Ok(Self::of(db))
    }

    /// The audit trail in `db`, migrated.
    pub async fn in_db(db: Db) -> Result<Self, AuditError> {
        db.migrate(&MIGRATOR).await.map_err(AuditError::Open)?;
        Ok(Self::of(db))
    }

    fn of(db: Db) -> Self {
        Self {
            db,
            appending: Arc::new(Mutex::new(())),
        }
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Appends `entry` as the next record, chained to the last one; answers it.
    pub async fn append(&self, entry: &Entry) -> Result<Record, AuditError> {
        let _appending = self.appending.lock().await;
        let before = text_of(entry.before.as_ref())?;
        let after = text_of(entry.after.as_ref())?;
        for _ in 0..APPEND_TRIES {
            let head = sqlx::query("SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1")
                .fetch_optional(self.db.pool())
                .await?;
            let (seq, prev_hash) = match head {
                Some(row) => (
                    row.try_get::<i64, _>("seq")? + 1,
                    row.try_get::<String, _>("hash")?,
                ),
                None => (1, GENESIS.to_owned()),
            };
            let at = now();
            let hash = hash_of(
                seq,
                &at,
                &entry.actor,
                &entry.action,
                &entry.target,
                before.as_deref(),
                after.as_deref(),
                entry.trace_id.as_deref(),
                &prev_hash,
            );
            let inserted = sqlx::query(&format!(
                "INSERT INTO audit_records ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            ))
            .bind(seq)
            .bind(&at)
            .bind(&entry.actor)
            .bind(&entry.action)
            .bind(&entry.target)
            .bind(before.clone())
            .bind(after.clone())
            .bind(entry.trace_id.clone())
            .bind(&prev_hash)
            .bind(&hash)
            .execute(self.db.pool())
            .await;
            match inserted {
                Ok(_) => {
                    return Ok(Record {
                        seq,
                        at,
                        actor: entry.actor.clone(),
                        action: entry.action.clone(),
                        target: entry.target.clone(),
                        before: entry.before.clone(),
                        after: entry.after.clone(),
                        trace_id: entry.trace_id.clone(),
                        prev_hash,
                        hash,
                    });
                }
                // Another process appended this number first: chain to its record.
                Err(err) if tideway_store::is_unique_violation(&err) => {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                Err(err) => return Err(err.into()),
            }
        }
        Err(AuditError::Contended(APPEND_TRIES))
    }

    /// A page of records, newest first (`page` from 1), and how many there are.
    pub async fn page(&self, page: u32, page_size: u32) -> Result<(u64, Vec<Record>), AuditError> {
        let total: i64 = sqlx::query("SELECT COUNT(*) AS n FROM audit_records")
            .fetch_one(self.db.pool())
            .await?
            .try_get("n")?;
        let offset = i64::from(page.max(1) - 1) * i64::from(page_size);
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM audit_records ORDER BY seq DESC LIMIT $1 OFFSET $2"
        ))
        .bind(i64::from(page_size))
        .bind(offset)
        .fetch_all(self.db.pool())
        .await?;
        let records = rows
            .iter()
            .map(|row| Stored::of(row).map(Stored::into_record))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((u64::try_from(total).unwrap_or(0), records))
    }

    /// Walks every record in order: each number one more than the last, each link the
    /// previous hash, each hash its canonical form's.
    pub async fn verify(&self) -> Result<Verdict, AuditError> {
        let (mut expected_seq, mut prev) = (1_i64, GENESIS.to_owned());
        let mut count = 0_u64;
        loop {
            let rows = sqlx::query(&format!(
                "SELECT {COLUMNS} FROM audit_records WHERE seq >= $1 ORDER BY seq LIMIT $2"
            ))
            .bind(expected_seq)
            .bind(VERIFY_CHUNK)
            .fetch_all(self.db.pool())
            .await?;
            if rows.is_empty() {
                return Ok(Verdict::Intact { count });
            }
            for row in &rows {
                let row = Stored::of(row)?;
                let broken = |reason: String| Verdict::Broken {
                    seq: expected_seq,
                    reason,
                };
                if row.seq != expected_seq {
                    return Ok(broken(format!(
                        "record {expected_seq} is missing (the next is {})",
                        row.seq
                    )));
                }
                if row.prev_hash != prev {
                    return Ok(broken(format!(
                        "record {expected_seq} does not follow record {}: its previous hash is not that record's",
                        expected_seq - 1
                    )));
                }
                if row.expected_hash() != row.hash {
                    return Ok(broken(format!(
                        "record {expected_seq} was changed: its hash is not that of its content"
                    )));
                }
                prev = row.hash;
                expected_seq += 1;
                count += 1;
            }
        }
    }
}

/// Appends entries in the order they are recorded, on a task of its own, for callers that
/// cannot wait (a change made under a lock). Cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::UnboundedSender<Entry>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").finish_non_exhaustive()
    }
}

impl Recorder {
    /// Starts appending to `store` (inside a runtime); the task ends when every clone of
    /// the recorder is dropped and the queue is empty.
    pub fn start(store: AuditStore) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Entry>();
        tokio::spawn(async move {
            while let Some(entry) = rx.recv().await {
                if let Err(err) = store.append(&entry).await {
                    tracing::error!(error = %err, action = entry.action, target = entry.target, "an admin action was not recorded in the audit trail");
                }
            }
        });
        Self { tx }
    }

    /// Queues `entry` to be appended.
    pub fn record(&self, entry: Entry) {
        if self.tx.send(entry).is_err() {
            tracing::error!("the audit trail is closed; an admin action was not recorded");
        }
    }
}

/// The trace id of the task this runs in, if any.
pub fn current_trace_id() -> Option<String> {
    tideway_runtime::client::trace::current().map(|ctx| ctx.trace_id())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn entry(n: u32) -> Entry {
        Entry {
            actor: "admin-1".into(),
            action: "catalog.put".into(),
            target: format!("/api/v1/catalog/items/{n}"),
            before: Some(json!({ "price_minor": n })),
            after: Some(json!({ "price_minor": n + 1 })),
            trace_id: Some("0af7651916cd43dd8448eb211c80319c".into()),
        }
    }

    #[tokio::test]
    async fn records_chain_and_verify_on_both_engines() {
        for db in tideway_testkit::backends().await {
            let store = AuditStore::in_db(Db::clone(&db)).await.expect("store");
            assert_eq!(
                store.verify().await.expect("verify"),
                Verdict::Intact { count: 0 }
            );
            let mut last = GENESIS.to_owned();
            for n in 1..=5 {
                let record = store.append(&entry(n)).await.expect("append");
                assert_eq!(record.seq, i64::from(n));
                assert_eq!(record.prev_hash, last);
                last = record.hash;
            }
            assert_eq!(
                store.verify().await.expect("verify"),
                Verdict::Intact { count: 5 }
            );
            let (total, page) = store.page(1, 2).await.expect("page");
            assert_eq!(total, 5);
            let seqs: Vec<i64> = page.iter().map(|r| r.seq).collect();
            assert_eq!(seqs, [5, 4], "newest first");
            assert_eq!(page[0].before, Some(json!({ "price_minor": 5 })));
            let (_, second) = store.page(3, 2).await.expect("page");
            assert_eq!(second.iter().map(|r| r.seq).collect::<Vec<_>>(), [1]);
        }
    }

    #[tokio::test]
    async fn a_changed_or_removed_record_is_named() {
        for db in tideway_testkit::backends().await {
            let store = AuditStore::in_db(Db::clone(&db)).await.expect("store");
            for n in 1..=4 {
                store.append(&entry(n)).await.expect("append");
            }
            // The "after" of record 2 rewritten: its hash no longer holds.
            sqlx::query("UPDATE audit_records SET after_json = $1 WHERE seq = 2")
                .bind(r#"{"price_minor":1}"#)
                .execute(db.pool())
                .await
                .expect("tamper");
            match store.verify().await.expect("verify") {
                Verdict::Broken { seq, reason } => {
                    assert_eq!(seq, 2, "{reason}");
                    assert!(reason.contains("changed"), "{reason}");
                }
                intact => panic!("{intact:?}"),
            }
            // Rewritten with a fresh hash too: the next record's link breaks.
            let rows = sqlx::query(&format!(
                "SELECT {COLUMNS} FROM audit_records WHERE seq = 2"
            ))
            .fetch_one(db.pool())
            .await
            .expect("row");
            let rehashed = Stored::of(&rows).expect("row").expected_hash();
            sqlx::query("UPDATE audit_records SET hash = $1 WHERE seq = 2")
                .bind(rehashed)
                .execute(db.pool())
                .await
                .expect("tamper");
            match store.verify().await.expect("verify") {
                Verdict::Broken { seq, .. } => assert_eq!(seq, 3),
                intact => panic!("{intact:?}"),
            }
            // Record 3 removed.
            sqlx::query("DELETE FROM audit_records WHERE seq = 3")
                .execute(db.pool())
                .await
                .expect("remove");
            match store.verify().await.expect("verify") {
                Verdict::Broken { seq, reason } => {
                    assert_eq!(seq, 3, "{reason}");
                    assert!(reason.contains("missing"), "{reason}");
                }
                intact => panic!("{intact:?}"),
            }
        }
    }

    #[tokio::test]
    async fn appends_from_two_stores_on_one_database_keep_one_chain() {
        for db in tideway_testkit::backends().await {
            let a = AuditStore::in_db(Db::clone(&db)).await.expect("a");
            let b = AuditStore::in_db(Db::clone(&db)).await.expect("b");
            let mut tasks = Vec::new();
            for n in 0..20 {
                let store = if n % 2 == 0 { a.clone() } else { b.clone() };
                tasks.push(tokio::spawn(async move { store.append(&entry(n)).await }));
            }
            for task in tasks {
                task.await.expect("task").expect("append");
            }
            assert_eq!(
                a.verify().await.expect("verify"),
                Verdict::Intact { count: 20 }
            );
        }
    }
}
