//! The identity service's configuration (`[identity]` in `tideway.toml`,
//! `TIDEWAY_IDENTITY__*` in the environment).

use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tideway_runtime::config::{ConfigError, Validate};
use tideway_store::DatabaseUrl;

use crate::users::{validate_email, validate_name, validate_password, validate_role};

/// The configuration of the identity service.
///
/// Secrets (`signing_key`, seed passwords) are never serialised, printed or logged.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `sqlite://…` or `postgres://…`.
    pub database_url: DatabaseUrl,
    /// The `iss` of every access token.
    pub issuer: String,
    /// The `aud` of every access token.
    pub audience: String,
    /// Lifetime of an access token, in seconds.
    pub access_token_ttl_secs: u64,
    /// Lifetime of a refresh token, in seconds: a session unused that long ends.
    pub refresh_token_ttl_secs: u64,
    /// The absolute lifetime of a session, in seconds: however often its refresh token is
    /// rotated, the user signs in again after this long.
    pub session_lifetime_secs: u64,
    /// The Ed25519 signing key as PKCS#8 PEM (`TIDEWAY_IDENTITY__SIGNING_KEY`). Takes
    /// precedence over `signing_key_file`.
    #[serde(skip_serializing)]
    pub signing_key: Option<SecretString>,
    /// A file holding the PKCS#8 PEM signing key; generated (mode 0600) when absent and
    /// `generate_signing_key` is set.
    pub signing_key_file: Option<PathBuf>,
    /// Generate a key when none is configured: persisted to `signing_key_file` when that is
    /// set, otherwise kept in memory only (tokens then die with the process).
    pub generate_signing_key: bool,
    /// Users that must exist (an admin, demo customers). The configuration is
    /// authoritative: every start re-applies their name, roles and password.
    pub seed_users: Vec<SeedUser>,
    /// Emails of accounts to disable at every start, their sessions revoked (retired demo
    /// accounts, say). An email also in `seed_users` is refused.
    pub disabled_users: Vec<String>,
    /// How many password hashes run at once (0: one per core). Each takes about 19 MiB.
    pub max_concurrent_hashes: usize,
    /// How many more requests may wait for a hashing slot; past it, 503 at once.
    pub hash_queue: usize,
    /// How long a request waits for a hashing slot before a 503, in milliseconds.
    pub hash_queue_timeout_ms: u64,
    /// How long expired refresh tokens and ended sessions are kept before they are deleted,
    /// in days (1 to 3650): long enough that a replayed old token is still recognised.
    pub retention_days: u64,
}

/// A user created (or brought up to date) at every start.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeedUser {
    /// The email.
    pub email: String,
    /// The password (never serialised).
    #[serde(skip_serializing)]
    pub password: SecretString,
    /// The display name.
    pub name: String,
    /// Roles besides `customer`, which every user has.
    #[serde(default)]
    pub roles: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: DatabaseUrl::sqlite("data/identity.db"),
            issuer: "tideway".to_owned(),
            audience: "tideway".to_owned(),
            access_token_ttl_secs: 900,
            refresh_token_ttl_secs: 2_592_000,
            session_lifetime_secs: 2_592_000,
            signing_key: None,
            signing_key_file: None,
            generate_signing_key: true,
            seed_users: Vec::new(),
            disabled_users: Vec::new(),
            max_concurrent_hashes: 0,
            hash_queue: 16,
            hash_queue_timeout_ms: 1_000,
            retention_days: 30,
        }
    }
}

/// The longest lifetime accepted for any token: ten years, far below any overflow.
const MAX_TTL_SECS: u64 = 10 * 365 * 24 * 3600;

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=3650).contains(&self.retention_days) {
            return Err(ConfigError::invalid(
                "identity.retention_days",
                "1 to 3650 days",
            ));
        }
        if self.max_concurrent_hashes > 1024 {
            return Err(ConfigError::invalid(
                "identity.max_concurrent_hashes",
                "0 (one per core) to 1024",
            ));
        }
        if self.hash_queue > 100_000 {
            return Err(ConfigError::invalid("identity.hash_queue", "0 to 100000"));
        }
        if !(1..=60_000).contains(&self.hash_queue_timeout_ms) {
            return Err(ConfigError::invalid(
                "identity.hash_queue_timeout_ms",
                "milliseconds between 1 and 60000",
            ));
        }
        if self.issuer.trim().is_empty() {
            return Err(ConfigError::invalid(
                "identity.issuer",
                "a non-empty issuer",
            ));
        }
        if self.audience.trim().is_empty() {
            return Err(ConfigError::invalid(
                "identity.audience",
                "a non-empty audience",
            ));
        }
        for (key, ttl) in [
            ("identity.access_token_ttl_secs", self.access_token_ttl_secs),
            (
                "identity.refresh_token_ttl_secs",
                self.refresh_token_ttl_secs,
            ),
            ("identity.session_lifetime_secs", self.session_lifetime_secs),
        ] {
            if ttl == 0 || ttl > MAX_TTL_SECS {
                return Err(ConfigError::invalid(
                    key,
                    format!("a number of seconds from 1 to {MAX_TTL_SECS}"),
                ));
            }
        }
        if let Some(key) = &self.signing_key
            && key.expose_secret().trim().is_empty()
        {
            return Err(ConfigError::invalid(
                "identity.signing_key",
                "a PKCS#8 PEM Ed25519 private key",
            ));
        }
        if self.signing_key.is_none()
            && self.signing_key_file.is_none()
            && !self.generate_signing_key
        {
            return Err(ConfigError::invalid(
                "identity.signing_key",
                "a PKCS#8 PEM Ed25519 private key, or `identity.signing_key_file`, \
                 or `identity.generate_signing_key = true`",
            ));
        }
        for (i, seed) in self.seed_users.iter().enumerate() {
            let key = |field: &str| format!("identity.seed_users[{i}].{field}");
            let email = validate_email(&seed.email)
                .map_err(|reason| ConfigError::invalid(key("email"), reason))?;
            if self.seed_users[..i]
                .iter()
                .any(|other| validate_email(&other.email).is_ok_and(|e| e == email))
            {
                return Err(ConfigError::invalid(
                    key("email"),
                    "an email not seeded twice",
                ));
            }
            validate_password(seed.password.expose_secret(), &email)
                .map_err(|reason| ConfigError::invalid(key("password"), reason))?;
            validate_name(&seed.name)
                .map_err(|reason| ConfigError::invalid(key("name"), reason))?;
            for (j, role) in seed.roles.iter().enumerate() {
                validate_role(role)
                    .map_err(|reason| ConfigError::invalid(key(&format!("roles[{j}]")), reason))?;
            }
        }
        for (i, email) in self.disabled_users.iter().enumerate() {
            let key = format!("identity.disabled_users[{i}]");
            let email =
                validate_email(email).map_err(|reason| ConfigError::invalid(&key, reason))?;
            if self
                .seed_users
                .iter()
                .any(|seed| validate_email(&seed.email).is_ok_and(|e| e == email))
            {
                return Err(ConfigError::invalid(
                    key,
                    "an email not also in identity.seed_users",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(config: &Config) -> String {
        match config.validate().unwrap_err() {
            ConfigError::Invalid { key, .. } => key,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn each_bad_value_names_its_key() {
        let mut c = Config {
            access_token_ttl_secs: 0,
            ..Config::default()
        };
        assert_eq!(key_of(&c), "identity.access_token_ttl_secs");
        c = Config {
            refresh_token_ttl_secs: 0,
            ..Config::default()
        };
        assert_eq!(key_of(&c), "identity.refresh_token_ttl_secs");
        c = Config {
            issuer: " ".into(),
            ..Config::default()
        };
        assert_eq!(key_of(&c), "identity.issuer");
        c = Config {
            audience: String::new(),
            ..Config::default()
        };
        assert_eq!(key_of(&c), "identity.audience");
        c = Config {
            generate_signing_key: false,
            ..Config::default()
        };
        assert_eq!(key_of(&c), "identity.signing_key");
        c = Config {
            seed_users: vec![SeedUser {
                email: "admin@tideway.test".into(),
                password: "short1".into(),
                name: "Admin".into(),
                roles: vec!["admin".into()],
            }],
            ..Config::default()
        };
        assert_eq!(key_of(&c), "identity.seed_users[0].password");
        c = Config {
            session_lifetime_secs: 0,
            ..Config::default()
        };
        assert_eq!(key_of(&c), "identity.session_lifetime_secs");
        c = Config {
            disabled_users: vec!["not an email".into()],
            ..Config::default()
        };
        assert_eq!(key_of(&c), "identity.disabled_users[0]");
        c = Config {
            seed_users: vec![SeedUser {
                email: "admin@tideway.test".into(),
                password: "admin-password-1".into(),
                name: "Admin".into(),
                roles: vec![],
            }],
            disabled_users: vec!["Admin@tideway.test".into()],
            ..Config::default()
        };
        assert_eq!(key_of(&c), "identity.disabled_users[0]");
    }

    #[test]
    fn secrets_are_neither_serialised_nor_printed() {
        let config = Config {
            signing_key: Some("-----BEGIN PRIVATE KEY-----sekrit".into()),
            seed_users: vec![SeedUser {
                email: "admin@tideway.test".into(),
                password: "hunter2-hunter2".into(),
                name: "Admin".into(),
                roles: vec![],
            }],
            ..Config::default()
        };
        let json = serde_json::to_string(&config).unwrap();
        let debug = format!("{config:?}");
        for text in [json, debug] {
            assert!(!text.contains("sekrit"), "{text}");
            assert!(!text.contains("hunter2"), "{text}");
        }
    }

    #[test]
    fn the_signing_key_is_read_from_configuration() {
        let config: Config = serde_json::from_value(serde_json::json!({
            "signing_key": "pem",
            "seed_users": [{"email": "a@b.cd", "password": "p", "name": "A"}],
        }))
        .unwrap();
        assert_eq!(
            config
                .signing_key
                .as_ref()
                .map(|k| k.expose_secret().to_owned()),
            Some("pem".to_owned())
        );
        assert_eq!(config.access_token_ttl_secs, 900);
    }
}
