//! One classification of database errors for every service, and how each class is answered.
//!
//! A service's `ApiError` wraps a [`DbError`] and answers it with [`DbError::into_response`]:
//! the database out of reach (a pool timeout, a closed pool, a broken connection, SQLite
//! busy or locked, PostgreSQL refusing connections) is a 503 problem with `Retry-After` —
//! worth repeating; a unique-key violation the handler did not expect is a 409; anything
//! else is an opaque 500, whose cause is logged here, once.

use axum_core::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use tideway_client::Problem;

/// What kind of failure a database error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbErrorClass {
    /// The database cannot be reached or is busy right now: repeat later (503).
    Unavailable,
    /// A unique key already holds the value (409).
    Conflict,
    /// A failed statement or an unexpected answer (500).
    Internal,
}

/// The seconds a client is asked to wait before repeating a request refused as unavailable.
pub const RETRY_AFTER_SECONDS: u32 = 1;

/// Classifies `err`.
pub fn classify(err: &sqlx::Error) -> DbErrorClass {
    if is_unavailable(err) {
        DbErrorClass::Unavailable
    } else if is_unique_violation(err) {
        DbErrorClass::Conflict
    } else {
        DbErrorClass::Internal
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

/// Whether `err` means the database cannot serve the request right now (a 503, worth a
/// retry), as opposed to a failed statement.
pub fn is_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db) => matches!(
            db.code().as_deref(),
            // SQLite: BUSY and LOCKED with their extended codes (BUSY_RECOVERY,
            // BUSY_SNAPSHOT, BUSY_TIMEOUT, LOCKED_SHAREDCACHE, LOCKED_VTAB).
            Some("5" | "261" | "517" | "773" | "6" | "262" | "518")
            // PostgreSQL: too many connections, shutting down, cannot connect now, and
            // the connection exception class.
                | Some("53300" | "57P01" | "57P02" | "57P03")
                | Some("08000" | "08001" | "08003" | "08004" | "08006")
        ),
        _ => false,
    }
}

/// A failed database operation inside a service's request, classified.
#[derive(Debug, thiserror::Error)]
#[error("the {service} database failed ({class:?})")]
pub struct DbError {
    service: &'static str,
    class: DbErrorClass,
    #[source]
    source: sqlx::Error,
}

impl DbError {
    /// Classifies `source`, an error of `service`'s database.
    pub fn new(service: &'static str, source: sqlx::Error) -> Self {
        Self {
            service,
            class: classify(&source),
            source,
        }
    }

    /// Its class.
    pub fn class(&self) -> DbErrorClass {
        self.class
    }

    /// The underlying error.
    pub fn source_error(&self) -> &sqlx::Error {
        &self.source
    }

    /// The problem document answered for it (no cause in it: 5xx bodies are opaque).
    pub fn problem(&self) -> Problem {
        match self.class {
            DbErrorClass::Unavailable => Problem::new(StatusCode::SERVICE_UNAVAILABLE)
                .with_type("/problems/unavailable")
                .with_detail(format!(
                    "the {} service cannot reach its database right now; try again shortly",
                    self.service
                )),
            DbErrorClass::Conflict => {
                Problem::conflict("the request conflicts with a record that already exists")
            }
            DbErrorClass::Internal => Problem::internal(),
        }
    }
}

impl IntoResponse for DbError {
    fn into_response(self) -> Response {
        self.respond()
    }
}

impl DbError {
    /// Logs the cause once (a warning when unavailable, an error otherwise) and answers the
    /// problem; a 503 carries `Retry-After`.
    pub fn respond(&self) -> Response {
        match self.class {
            DbErrorClass::Unavailable => tracing::warn!(
                service = self.service,
                error = %self.source,
                "the database is unavailable; refusing the request"
            ),
            DbErrorClass::Conflict => tracing::info!(
                service = self.service,
                error = %self.source,
                "a write met an existing unique key"
            ),
            DbErrorClass::Internal => tracing::error!(
                service = self.service,
                error = ?self.source,
                "a database operation failed"
            ),
        }
        let mut response = self.problem().into_response();
        if self.class == DbErrorClass::Unavailable {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_and_connection_failures_are_unavailable() {
        for err in [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
        ] {
            assert_eq!(classify(&err), DbErrorClass::Unavailable, "{err:?}");
        }
        assert_eq!(classify(&sqlx::Error::RowNotFound), DbErrorClass::Internal);
    }

    #[test]
    fn unavailable_answers_503_with_retry_after_and_internal_is_opaque() {
        let response = DbError::new("basket", sqlx::Error::PoolTimedOut).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let response = DbError::new("basket", sqlx::Error::RowNotFound).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(response.headers().get(header::RETRY_AFTER).is_none());
    }

    #[tokio::test]
    async fn sqlite_busy_is_unavailable() {
        use sqlx::{ConnectOptions, Connection, sqlite::SqliteConnectOptions};

        let dir = tempfile::tempdir().unwrap();
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("busy.db"))
            .create_if_missing(true)
            .busy_timeout(std::time::Duration::ZERO);
        let mut holder = options.connect().await.unwrap();
        sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY)")
            .execute(&mut holder)
            .await
            .unwrap();
        sqlx::query("BEGIN EXCLUSIVE")
            .execute(&mut holder)
            .await
            .unwrap();
        let mut other = options.connect().await.unwrap();
        let err = sqlx::query("INSERT INTO t (id) VALUES (1)")
            .execute(&mut other)
            .await
            .unwrap_err();
        assert_eq!(classify(&err), DbErrorClass::Unavailable, "{err:?}");
        other.close().await.unwrap();
        holder.close().await.unwrap();
    }
}
