//! Fresh databases for tests, on both engines.
//!
//! SQLite lives in a temporary directory; PostgreSQL gets a new database
//! (`tideway_test_<uuid>`) on the server named by `TIDEWAY_TEST_POSTGRES_URL` (default
//! [`DEFAULT_POSTGRES_URL`]), dropped when the test ends.

use std::ops::Deref;

use sqlx::{AnyConnection, Connection};
use tideway_store::{Backend, Db, DbOptions, redact};

use crate::is_ci;

/// The default administrative URL of the test PostgreSQL server.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database that exists for one test; it derefs to its [`Db`].
#[derive(Debug)]
pub struct TestDb {
    db: Db,
    url: String,
    cleanup: Cleanup,
}

#[derive(Debug)]
enum Cleanup {
    Sqlite(
        #[expect(dead_code, reason = "held so the directory lives as long as the test")]
        tempfile::TempDir,
    ),
    Postgres {
        admin_url: String,
        name: String,
    },
}

impl TestDb {
    /// The URL the database was opened with (for a service under test).
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Deref for TestDb {
    type Target = Db;
    fn deref(&self) -> &Db {
        &self.db
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Cleanup::Postgres { admin_url, name } = &self.cleanup {
            let admin_url = admin_url.clone();
            let name = name.clone();
            crate::clean_up(async move {
                if let Ok(mut conn) = AnyConnection::connect(&admin_url).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                }
            });
        }
    }
}

/// The administrative URL of the test PostgreSQL server.
pub fn postgres_admin_url() -> String {
    std::env::var("TIDEWAY_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned())
}

/// A fresh SQLite database in a temporary directory.
///
/// # Panics
/// When the directory or the database cannot be created.
pub async fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let url = format!("sqlite://{}/test.db", dir.path().display());
    let db = Db::connect(&url, DbOptions::default())
        .await
        .expect("open a SQLite test database");
    TestDb {
        db,
        url,
        cleanup: Cleanup::Sqlite(dir),
    }
}

/// A fresh PostgreSQL database, or `None` (with a notice) when the server is unreachable
/// outside CI.
///
/// # Panics
/// With `CI=true` when the server cannot be reached; whenever the database cannot be
/// created on a server that answered.
pub async fn postgres() -> Option<TestDb> {
    // The admin connection goes through `sqlx::Any`, like every store.
    sqlx::any::install_default_drivers();
    let admin_url = postgres_admin_url();
    let mut admin = match AnyConnection::connect(&admin_url).await {
        Ok(conn) => conn,
        Err(err) => {
            assert!(
                !is_ci(),
                "PostgreSQL at {} is unreachable and CI=true: {err} (run scripts/deps.sh)",
                redact(&admin_url)
            );
            eprintln!(
                "note: skipping PostgreSQL half: {} unreachable ({err}); run scripts/deps.sh",
                redact(&admin_url)
            );
            return None;
        }
    };
    let name = format!("tideway_test_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("create a PostgreSQL test database");
    let _ = admin.close().await;
    let url = database_url(&admin_url, &name);
    let db = Db::connect(
        &url,
        DbOptions {
            max_connections: 5,
            ..DbOptions::default()
        },
    )
    .await
    .expect("connect to the PostgreSQL test database");
    Some(TestDb {
        db,
        url,
        cleanup: Cleanup::Postgres { admin_url, name },
    })
}

/// Every engine available to this test: SQLite always, PostgreSQL when reachable (always
/// under CI).
pub async fn backends() -> Vec<TestDb> {
    let mut dbs = vec![sqlite().await];
    if let Some(pg) = postgres().await {
        dbs.push(pg);
    }
    debug_assert!(dbs.iter().any(|db| db.backend() == Backend::Sqlite));
    dbs
}

/// `admin_url` pointed at the database `name`.
fn database_url(admin_url: &str, name: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (admin_url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn points_the_admin_url_at_the_test_database() {
        assert_eq!(
            super::database_url("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(
            super::database_url("postgres://u@h?sslmode=disable", "t1"),
            "postgres://u@h/t1?sslmode=disable"
        );
    }
}
