//! The basket service's configuration.

use serde::{Deserialize, Serialize};
use tideway_runtime::config::{ConfigError, Validate};
use tideway_store::DatabaseUrl;

/// The basket service's configuration (`[basket]` in `tideway.toml`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `sqlite://path/to/file.db` or `postgres://user@host:port/db`.
    pub database_url: DatabaseUrl,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: DatabaseUrl::sqlite("data/basket.db"),
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_valid_and_a_wrong_url_is_refused_as_it_is_read() {
        assert!(Config::default().validate().is_ok());
        let err = serde_json::from_str::<Config>(r#"{"database_url": "mysql://x"}"#).unwrap_err();
        assert!(err.to_string().contains("sqlite://"), "{err}");
    }
}
