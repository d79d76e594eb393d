//! One sqlx code path for SQLite (embedded mode) and PostgreSQL (distributed mode).
//!
//! Services write their SQL once, with `$1` placeholders and `INSERT … ON CONFLICT`, and run
//! it through `sqlx::Any` on either engine. Only basic types cross the `Any` driver, so ids,
//! times and money are TEXT and BIGINT columns. Migrations are embedded per service with
//! `sqlx::migrate!` and run at start-up. Tests get a fresh database on both engines from
//! `tideway-testkit`.
#![warn(missing_docs)]

use std::{str::FromStr, sync::Once, time::Duration};

pub use sqlx::{
    self, Any, AnyPool, Row, Transaction,
    any::{AnyPoolOptions, AnyRow},
    migrate::Migrator,
};
use sqlx::{Connection, any::AnyConnectOptions};

/// The engine behind a [`Db`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite, a file in the data directory.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// A failed database operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL names no supported engine.
    #[error("unsupported database URL {0:?}: expected sqlite://… or postgres://…")]
    UnsupportedUrl(String),
    /// Connecting or querying failed.
    #[error("database error")]
    Sqlx(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A file-system error around a SQLite file.
    #[error("cannot prepare the database file {path}")]
    Io {
        /// The path.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    /// Whether this is a unique-key violation (a duplicate).
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, Self::Sqlx(err) if is_unique_violation(err))
    }
}

/// Whether `err` is a unique-key violation on either engine.
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            db.is_unique_violation()
                // The Any driver may not map the kind; fall back on the engines' codes:
                // PostgreSQL 23505, SQLite 2067 (SQLITE_CONSTRAINT_UNIQUE) and 1555 (PRIMARY KEY).
                || matches!(db.code().as_deref(), Some("23505" | "2067" | "1555"))
        }
        _ => false,
    }
}

/// Whether `err` means the database cannot be reached right now (a 503, worth a retry),
/// as opposed to a failed statement.
pub fn is_unavailable(err: &sqlx::Error) -> bool {
    matches!(
        err,
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_)
    )
}

/// Pool settings.
#[derive(Debug, Clone, Copy)]
pub struct DbOptions {
    /// The largest number of connections.
    pub max_connections: u32,
    /// How long to wait for a connection.
    pub acquire_timeout: Duration,
}

impl Default for DbOptions {
    fn default() -> Self {
        Self {
            max_connections: 8,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// A connection pool on SQLite or PostgreSQL.
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
}

fn install_drivers() {
    static ONCE: Once = Once::new();
    ONCE.call_once(sqlx::any::install_default_drivers);
}

impl Db {
    /// Connects to `url`: `sqlite://path/to/file.db` (the file and its directory are created)
    /// or `postgres://user@host:port/db`.
    pub async fn connect(url: &str, options: DbOptions) -> Result<Self, StoreError> {
        install_drivers();
        let (backend, url) = if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            let file = path.split('?').next().unwrap_or(path);
            if file != ":memory:"
                && let Some(parent) = std::path::Path::new(file).parent()
                && !parent.as_os_str().is_empty()
            {
                std::fs::create_dir_all(parent).map_err(|source| StoreError::Io {
                    path: parent.display().to_string(),
                    source,
                })?;
            }
            let url = if path.contains('?') {
                format!("sqlite://{path}")
            } else {
                format!("sqlite://{path}?mode=rwc")
            };
            (Backend::Sqlite, url)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_owned())
        } else {
            return Err(StoreError::UnsupportedUrl(redact(url)));
        };
        let connect_options = AnyConnectOptions::from_str(&url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers run beside the writer; waiting beats failing
                        // when two writers meet.
                        for pragma in [
                            "PRAGMA journal_mode = WAL",
                            "PRAGMA synchronous = NORMAL",
                            "PRAGMA busy_timeout = 5000",
                            "PRAGMA foreign_keys = ON",
                        ] {
                            sqlx::query(pragma).execute(&mut *conn).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect_with(connect_options)
            .await?;
        Ok(Self { pool, backend })
    }

    /// Runs the migrations of a service (`sqlx::migrate!("./migrations")`).
    ///
    /// PostgreSQL serialises concurrent runs with an advisory lock; sqlx takes no lock on
    /// SQLite, so when two processes start on one fresh file one of them fails on tables the
    /// other has just created. That run is retried a few times: on retry it finds the
    /// migrations applied.
    pub async fn migrate(&self, migrator: &Migrator) -> Result<(), StoreError> {
        let mut attempt: u32 = 1;
        loop {
            match migrator.run(&self.pool).await {
                Ok(()) => return Ok(()),
                Err(err) if self.backend == Backend::Sqlite && attempt < 5 => {
                    tracing::warn!(error = %err, attempt, "migration failed; retrying");
                    tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
                    attempt += 1;
                }
                Err(err) => return Err(err.into()),
            }
        }
    }

    /// The pool.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The engine.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Answers when the database answers a trivial query.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        conn.ping().await?;
        Ok(())
    }

    /// Begins a transaction. On SQLite it takes the write lock at once (`BEGIN IMMEDIATE`):
    /// a deferred transaction that reads and then writes fails at once with "database is
    /// busy" when another writer committed in between, whereas an immediate one waits for
    /// the lock under the busy timeout.
    pub async fn begin(&self) -> Result<Transaction<'static, Any>, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
    }

    /// Closes every connection, waiting for those in use.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// `url` without its password, for logs and errors.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://data/x.db"), "sqlite://data/x.db");
    }

    #[tokio::test]
    async fn rejects_unknown_engines() {
        let err = Db::connect("mysql://x", DbOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::UnsupportedUrl(_)));
    }
}
