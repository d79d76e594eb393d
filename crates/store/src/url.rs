//! [`DatabaseUrl`]: a database URL parsed once, with the rules in one place.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::{Backend, StoreError, redact};

/// A database URL Tideway can open: `sqlite://path/to/file.db` (or `sqlite:path`,
/// `sqlite::memory:`) or `postgres://user@host:port/db` (or `postgresql://…`).
///
/// It is parsed when the configuration is read, so a bad URL stops start-up with an error
/// naming its key (`catalog.database_url: expected …`). `Debug` and `Display` hide the
/// password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DatabaseUrl {
    url: String,
    backend: Backend,
}

impl DatabaseUrl {
    /// Parses `url`.
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        let url = url.trim();
        let backend = if url.starts_with("sqlite:") {
            let path = url
                .strip_prefix("sqlite://")
                .or_else(|| url.strip_prefix("sqlite:"))
                .unwrap_or_default();
            if path.split('?').next().unwrap_or_default().is_empty() {
                return Err(StoreError::UnsupportedUrl(format!(
                    "{url} (a SQLite URL needs a file path)"
                )));
            }
            Backend::Sqlite
        } else if let Some(rest) = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
        {
            if rest.is_empty() || rest.starts_with('/') {
                return Err(StoreError::UnsupportedUrl(format!(
                    "{} (a PostgreSQL URL needs a host)",
                    redact(url)
                )));
            }
            Backend::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl(redact(url)));
        };
        Ok(Self {
            url: url.to_owned(),
            backend,
        })
    }

    /// A SQLite file at `path` (created with its directory when opened).
    pub fn sqlite(path: &str) -> Self {
        Self {
            url: format!("sqlite://{path}"),
            backend: Backend::Sqlite,
        }
    }

    /// The engine this URL opens.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The URL as configured, password included: for connecting only, never for logs.
    pub fn expose(&self) -> &str {
        &self.url
    }

    /// The URL with `from` replaced by `to` (a `{data_dir}` placeholder, say), parsed again.
    pub fn replace(&self, from: &str, to: &str) -> Result<Self, StoreError> {
        Self::parse(&self.url.replace(from, to))
    }

    /// For SQLite, the file path (without query parameters); `None` for PostgreSQL and
    /// in-memory databases.
    pub fn sqlite_file(&self) -> Option<&str> {
        if self.backend != Backend::Sqlite {
            return None;
        }
        let path = self
            .url
            .strip_prefix("sqlite://")
            .or_else(|| self.url.strip_prefix("sqlite:"))?;
        let file = path.split('?').next().unwrap_or(path);
        (file != ":memory:").then_some(file)
    }
}

impl FromStr for DatabaseUrl {
    type Err = StoreError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        Self::parse(url)
    }
}

/// The error of a database URL read from the configuration.
///
/// It names the conventional field, `database_url`: a service's settings are flattened
/// into its section, and serde's `flatten` loses the path below the section, so the
/// configuration loader joins this name onto the section's key (`basket.database_url`).
#[derive(Debug, thiserror::Error)]
#[error("`database_url`: {0}")]
pub struct InvalidDatabaseUrl(#[source] StoreError);

impl TryFrom<String> for DatabaseUrl {
    type Error = InvalidDatabaseUrl;

    fn try_from(url: String) -> Result<Self, Self::Error> {
        Self::parse(&url).map_err(InvalidDatabaseUrl)
    }
}

impl From<DatabaseUrl> for String {
    fn from(url: DatabaseUrl) -> Self {
        url.url
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.url))
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({})", redact(&self.url))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_two_engines() {
        for (url, backend) in [
            ("sqlite://data/catalog.db", Backend::Sqlite),
            ("sqlite:data/catalog.db", Backend::Sqlite),
            ("sqlite::memory:", Backend::Sqlite),
            (
                "postgres://postgres@127.0.0.1:5432/catalog",
                Backend::Postgres,
            ),
            ("postgresql://u:p@h/db", Backend::Postgres),
        ] {
            let parsed = DatabaseUrl::parse(url).unwrap();
            assert_eq!(parsed.backend(), backend, "{url}");
            assert_eq!(parsed.expose(), url);
        }
        assert_eq!(
            DatabaseUrl::parse("sqlite://data/x.db?mode=ro")
                .unwrap()
                .sqlite_file(),
            Some("data/x.db")
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite::memory:").unwrap().sqlite_file(),
            None
        );
    }

    #[test]
    fn refuses_other_urls_without_echoing_passwords() {
        for bad in [
            "mysql://x",
            "",
            "sqlite://",
            "postgres://",
            "catalog.db",
            "http://h",
        ] {
            assert!(DatabaseUrl::parse(bad).is_err(), "{bad:?}");
        }
        let err = DatabaseUrl::parse("mysql://u:secret@h/db").unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn never_shows_the_password() {
        let url = DatabaseUrl::parse("postgres://u:secret@h:5432/db").unwrap();
        assert_eq!(url.to_string(), "postgres://u:***@h:5432/db");
        assert!(!format!("{url:?}").contains("secret"));
        assert_eq!(url.expose(), "postgres://u:secret@h:5432/db");
    }

    #[test]
    fn deserialises_from_a_string_and_back() {
        let url: DatabaseUrl = serde_json::from_str("\"sqlite://{data_dir}/a.db\"").unwrap();
        let resolved = url.replace("{data_dir}", "/tmp/x").unwrap();
        assert_eq!(resolved.expose(), "sqlite:///tmp/x/a.db");
        assert_eq!(
            serde_json::to_string(&resolved).unwrap(),
            "\"sqlite:///tmp/x/a.db\""
        );
        let err = serde_json::from_str::<DatabaseUrl>("\"mysql://x\"").unwrap_err();
        assert!(err.to_string().contains("sqlite://"), "{err}");
    }
}
