//! Layered configuration: defaults → `tideway.toml` → `TIDEWAY_*` environment.
//!
//! Nested keys use `__` in the environment: `TIDEWAY_GATEWAY__LISTEN=0.0.0.0:8080` sets
//! `gateway.listen`. Every error names the key and what was expected, and is returned
//! before anything binds a port.

use std::path::Path;

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use serde::{Serialize, de::DeserializeOwned};

/// The prefix of every environment variable Tideway reads.
pub const ENV_PREFIX: &str = "TIDEWAY_";

/// A configuration that could not be loaded or is not valid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file, the environment or a value could not be read into the typed config.
    #[error("configuration error: {0}")]
    Load(String),
    /// A value parsed but is not acceptable.
    #[error("configuration key `{key}` is invalid: expected {expected}")]
    Invalid {
        /// The dotted key, e.g. `gateway.listen`.
        key: String,
        /// What the key accepts.
        expected: String,
    },
}

impl ConfigError {
    /// A value of `key` that is not acceptable.
    pub fn invalid(key: impl Into<String>, expected: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            expected: expected.into(),
        }
    }
}

/// A configuration that checks its values once loaded.
pub trait Validate {
    /// Returns the first unacceptable value, naming its key.
    fn validate(&self) -> Result<(), ConfigError>;
}

/// The layers for `defaults`: the defaults, then `file` (an explicit file must exist; without
/// one `tideway.toml` in the working directory is read if present), then the environment.
pub fn layered<T: Serialize>(defaults: &T, file: Option<&Path>) -> Result<Figment, ConfigError> {
    let mut figment = Figment::from(Serialized::defaults(defaults));
    match file {
        Some(path) if !path.exists() => {
            return Err(ConfigError::Load(format!(
                "configuration file {} does not exist",
                path.display()
            )));
        }
        Some(path) => figment = figment.merge(Toml::file_exact(path)),
        None => figment = figment.merge(Toml::file("tideway.toml")),
    }
    Ok(figment.merge(Env::prefixed(ENV_PREFIX).split("__")))
}

/// Extracts and validates a typed configuration from a figment.
pub fn extract<T: DeserializeOwned + Validate>(figment: &Figment) -> Result<T, ConfigError> {
    let config: T = figment.extract().map_err(|err| {
        let messages: Vec<String> = err.into_iter().map(|e| describe(&e)).collect();
        ConfigError::Load(messages.join("; "))
    })?;
    config.validate()?;
    Ok(config)
}

fn describe(err: &figment::Error) -> String {
    let key = err.path.join(".");
    let source = err
        .metadata
        .as_ref()
        .map(|m| match &m.source {
            Some(source) => format!(" (from {} {source})", m.name),
            None => format!(" (from {})", m.name),
        })
        .unwrap_or_default();
    let kind = err.kind.to_string();
    if key.is_empty() {
        return format!("{kind}{source}");
    }
    // A value type may name its own field (`` `database_url`: … ``): serde's `flatten`
    // loses the path below a flattened section, so join that name onto the key.
    if let Some(rest) = kind.strip_prefix('`')
        && let Some((field, message)) = rest.split_once("`: ")
        && !field.is_empty()
        && field
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        let key = if key.ends_with(&format!(".{field}")) || key == field {
            key
        } else {
            format!("{key}.{field}")
        };
        return format!("key `{key}`: {message}{source}");
    }
    format!("key `{key}`: {kind}{source}")
}

#[cfg(test)]
#[expect(
    clippy::result_large_err,
    reason = "figment::Jail's closures return figment::Error"
)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Sample {
        port: u16,
        nested: Nested,
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Nested {
        name: String,
    }

    impl Validate for Sample {
        fn validate(&self) -> Result<(), ConfigError> {
            if self.nested.name.is_empty() {
                return Err(ConfigError::invalid("nested.name", "a non-empty name"));
            }
            Ok(())
        }
    }

    fn defaults() -> Sample {
        Sample {
            port: 80,
            nested: Nested { name: "x".into() },
        }
    }

    #[test]
    fn file_overrides_defaults_and_env_overrides_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("tideway.toml", "port = 81\n[nested]\nname = \"file\"\n")?;
            jail.set_env("TIDEWAY_NESTED__NAME", "env");
            let sample: Sample = extract(&layered(&defaults(), None).unwrap()).unwrap();
            assert_eq!(sample.port, 81);
            assert_eq!(sample.nested.name, "env");
            Ok(())
        });
    }

    #[test]
    fn a_wrong_type_names_the_key() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TIDEWAY_PORT", "eighty");
            let err = extract::<Sample>(&layered(&defaults(), None).unwrap()).unwrap_err();
            let message = err.to_string();
            assert!(message.contains("key `port`"), "{message}");
            assert!(message.contains("u16"), "{message}");
            Ok(())
        });
    }

    #[test]
    fn validation_names_the_key() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TIDEWAY_NESTED__NAME", "\"\"");
            let err = extract::<Sample>(&layered(&defaults(), None).unwrap()).unwrap_err();
            assert!(err.to_string().contains("nested.name"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn a_field_named_by_its_value_joins_a_flattened_sections_key() {
        #[derive(Debug, Serialize, Deserialize)]
        struct Outer {
            section: Flattened,
        }
        #[derive(Debug, Serialize, Deserialize)]
        struct Flattened {
            listen: String,
            #[serde(flatten)]
            inner: Inner,
        }
        #[derive(Debug, Serialize, Deserialize)]
        struct Inner {
            url: Url,
        }
        #[derive(Debug, Clone, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        struct Url(String);
        impl TryFrom<String> for Url {
            type Error = String;
            fn try_from(value: String) -> Result<Self, String> {
                if value.starts_with("ok:") {
                    Ok(Self(value))
                } else {
                    Err(format!("`url`: expected ok:…, found {value:?}"))
                }
            }
        }
        impl From<Url> for String {
            fn from(url: Url) -> Self {
                url.0
            }
        }
        impl Validate for Outer {
            fn validate(&self) -> Result<(), ConfigError> {
                Ok(())
            }
        }
        figment::Jail::expect_with(|jail| {
            jail.set_env("TIDEWAY_SECTION__URL", "bad");
            let defaults = Outer {
                section: Flattened {
                    listen: "x".into(),
                    inner: Inner {
                        url: Url("ok:1".into()),
                    },
                },
            };
            let err = extract::<Outer>(&layered(&defaults, None).unwrap()).unwrap_err();
            let message = err.to_string();
            assert!(
                message.contains("key `section.url`: expected ok:"),
                "{message}"
            );
            Ok(())
        });
    }

    #[test]
    fn a_missing_explicit_file_is_an_error() {
        let err = layered(&defaults(), Some(Path::new("/nonexistent/tideway.toml"))).unwrap_err();
        assert!(err.to_string().contains("does not exist"));
    }
}
