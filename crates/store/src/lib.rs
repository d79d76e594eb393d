//! One sqlx code path for SQLite (embedded mode) and PostgreSQL (distributed mode).
//!
//! Services write their SQL once, with `$1` placeholders and `INSERT … ON CONFLICT`, and run
//! it through `sqlx::Any` on either engine. Only basic types cross the `Any` driver, so ids,
//! times and money are TEXT and BIGINT columns. Migrations are embedded per service with
//! `sqlx::migrate!` and run at start-up. Tests get a fresh database on both engines from
//! `tideway-testkit`.
//!
//! A service opens its database one way: its [`DatabaseUrl`] (parsed with the
//! configuration) goes to [`Db::open_service`], which connects, migrates and logs that the
//! database is ready; [`Db::readiness`] is its `/health/ready` check; and every failed
//! statement is classified once ([`DbError`]: 503 with `Retry-After`, 409, or an opaque 500).
#![warn(missing_docs)]

mod error;
pub mod prune;
mod url;

use std::{future::Future, str::FromStr, sync::Once, time::Duration};

use backon::{ExponentialBuilder, Retryable};
pub use error::{
    DbError, DbErrorClass, RETRY_AFTER_SECONDS, classify, is_unavailable, is_unique_violation,
};
pub use url::{DatabaseUrl, InvalidDatabaseUrl};

pub use sqlx::{
    self, Any, AnyPool, Row, Transaction,
    any::{AnyPoolOptions, AnyRow},
    migrate::Migrator,
};
use sqlx::{Connection, any::AnyConnectOptions};

/// The engine behind a [`Db`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
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
    /// Opening a service's database failed.
    #[error("cannot open the {service} database {url}")]
    Open {
        /// The service.
        service: &'static str,
        /// Its database, password hidden.
        url: String,
        /// The cause.
        #[source]
        source: Box<StoreError>,
    },
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
    /// Opens the database of `service`: connects to `url`, runs `migrator`'s migrations and
    /// logs that it is ready, with how long that took. Every service starts this way.
    pub async fn open_service(
        service: &'static str,
        url: &DatabaseUrl,
        migrator: &Migrator,
    ) -> Result<Self, StoreError> {
        let started = std::time::Instant::now();
        let opened = async {
            let db = Self::open(url, DbOptions::default()).await?;
            db.migrate(migrator).await?;
            Ok::<_, StoreError>(db)
        }
        .await
        .map_err(|source| StoreError::Open {
            service,
            url: url.to_string(),
            source: Box::new(source),
        })?;
        tracing::info!(
            service,
            backend = ?opened.backend,
            database = %url,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "database ready"
        );
        Ok(opened)
    }

    /// Connects to `url` (a string parsed as a [`DatabaseUrl`]).
    pub async fn connect(url: &str, options: DbOptions) -> Result<Self, StoreError> {
        Self::open(&DatabaseUrl::parse(url)?, options).await
    }

    /// Connects to `url`: a SQLite file (created with its directory) or PostgreSQL.
    pub async fn open(url: &DatabaseUrl, options: DbOptions) -> Result<Self, StoreError> {
        install_drivers();
        let backend = url.backend();
        if let Some(file) = url.sqlite_file()
            && let Some(parent) = std::path::Path::new(file).parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|source| StoreError::Io {
                path: parent.display().to_string(),
                source,
            })?;
        }
        let url = match backend {
            Backend::Sqlite => {
                let path = url
                    .expose()
                    .strip_prefix("sqlite://")
                    .or_else(|| url.expose().strip_prefix("sqlite:"))
                    .unwrap_or_default();
                if path.contains('?') {
                    format!("sqlite://{path}")
                } else {
                    format!("sqlite://{path}?mode=rwc")
                }
            }
            Backend::Postgres => url.expose().to_owned(),
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
        let sqlite = self.backend == Backend::Sqlite;
        // Four retries, 50 ms doubling with jitter: well past the other process's run.
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(50))
            .with_max_times(4)
            .with_jitter();
        (|| migrator.run(&self.pool))
            .retry(backoff)
            .when(|_| sqlite)
            .notify(|err, delay| {
                tracing::warn!(error = %err, ?delay, "migration failed; retrying");
            })
            .await?;
        Ok(())
    }

    /// The pool.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The engine.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The `/health/ready` check of this database: ready while it answers a trivial query.
    pub fn readiness(
        &self,
    ) -> impl Fn() -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>>
    + Clone
    + Send
    + Sync
    + 'static {
        let db = self.clone();
        move || {
            let db = db.clone();
            Box::pin(async move { db.ping().await.map_err(|err| err.to_string()) })
        }
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
    async fn open_service_connects_migrates_and_is_ready_twice_over() {
        let dir = tempfile::tempdir().unwrap();
        let url = DatabaseUrl::sqlite(&dir.path().join("nested/probe.db").display().to_string());
        let migrator = sqlx::migrate!("./tests/migrations");
        for _ in 0..2 {
            let db = Db::open_service("probe", &url, &migrator).await.unwrap();
            sqlx::query("INSERT INTO probe (id, note) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING")
                .bind(1_i64)
                .bind("x")
                .execute(db.pool())
                .await
                .unwrap();
            assert_eq!((db.readiness())().await, Ok(()));
            db.close().await;
            assert!(
                (db.readiness())().await.is_err(),
                "a closed pool is not ready"
            );
        }
    }

    #[tokio::test]
    async fn rejects_unknown_engines() {
        let err = Db::connect("mysql://x", DbOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::UnsupportedUrl(_)));
        let err = Db::open_service(
            "catalog",
            &DatabaseUrl::parse("postgres://nobody@127.0.0.1:1/none").unwrap(),
            &sqlx::migrate!("./tests/migrations"),
        )
        .await
        .unwrap_err();
        assert!(
            err.to_string().contains("cannot open the catalog database"),
            "{err}"
        );
    }
}
