//! The basket service's configuration.

use serde::{Deserialize, Serialize};
use tideway_runtime::config::{ConfigError, Validate};

/// The basket service's configuration (`[basket]` in `tideway.toml`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `sqlite://path/to/file.db` or `postgres://user@host:port/db`.
    pub database_url: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: "sqlite://data/basket.db".to_owned(),
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        let url = self.database_url.as_str();
        let known = ["sqlite:", "postgres://", "postgresql://"]
            .iter()
            .any(|scheme| url.starts_with(scheme));
        if !known || url.len() <= "sqlite:".len() {
            return Err(ConfigError::invalid(
                "basket.database_url",
                "a sqlite://… or postgres://… URL",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_valid_and_a_wrong_url_names_the_key() {
        assert!(Config::default().validate().is_ok());
        let config = Config {
            database_url: "mysql://x".to_owned(),
        };
        let err = config.validate().unwrap_err();
        assert!(err.to_string().contains("basket.database_url"), "{err}");
    }
}
