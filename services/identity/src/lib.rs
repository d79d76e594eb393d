//! The identity service: users register and log in, and receive short-lived access tokens
//! (EdDSA JWTs) with rotating refresh tokens. Every other service verifies access tokens
//! against the JWKS this service publishes at
//! [`JWKS_PATH`](tideway_identity_api::JWKS_PATH), in-process or over HTTP.
//!
//! Passwords are hashed with Argon2id; refresh tokens are stored only as SHA-256 hashes, and
//! rotate within families (a session) so that a replayed one revokes its session; the
//! Ed25519 signing key comes from the configuration, from a file, or is generated and
//! persisted (mode 0600). Its contract (DTOs, typed client) is `tideway-identity-api`.

mod config;
mod error;
mod keys;
mod password;
mod seed;
mod tokens;
mod users;

use std::{sync::Arc, time::Duration};
use tideway_store::prune::PruneRule;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use anyhow::Context;
use axum::{
    Extension, Router,
    routing::{get, post},
};
pub use jsonwebtoken::jwk::JwkSet;
use tideway_identity_api::{PREFIX, SERVICE};
use tideway_runtime::{
    auth::{JwtVerifier, TokenSigner},
    config::Validate,
    http::{HttpOptions, Readiness, service_router},
    openapi::BearerAuth,
};
use tideway_store::{Db, Migrator};

use crate::tokens::Settings;
pub use crate::{
    config::{Config, SeedUser},
    error::ApiError,
    users::{validate_email, validate_name, validate_password},
};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The largest request body: every identity request is a few short strings.
const BODY_LIMIT: usize = 16 * 1024;

/// The identity service's OpenAPI document: every endpoint under `/api/v1/identity`.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        users::register,
        tokens::login,
        tokens::refresh,
        tokens::logout,
        tokens::logout_all,
        users::me,
        users::user,
        tokens::jwks,
    ),
    components(schemas(tideway_runtime::InvalidParam), responses(tideway_runtime::Problem)),
    modifiers(&BearerAuth),
    tags((name = "identity", description = "Accounts, sign-in, sessions and the token keys"))
)]
pub struct ApiDoc;

/// The identity service's OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    <ApiDoc as utoipa::OpenApi>::openapi()
}

/// A running identity service: cheap to clone.
#[derive(Clone)]
pub struct Identity {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    signer: TokenSigner,
    verifier: Arc<JwtVerifier>,
    settings: Settings,
    /// A hash of a random password, verified against for unknown emails.
    dummy_hash: String,
    /// Password hashing for requests, bounded in concurrency and queue.
    hasher: password::Hasher,
    /// The pruner of spent tokens and ended sessions.
    tracker: TaskTracker,
    token: CancellationToken,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("signer", &self.inner.signer)
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

/// What the pruner deletes once older than `identity.retention_days`: refresh tokens past
/// their expiry, then sessions past their end that have no token left.
pub const PRUNE_RULES: [PruneRule; 2] = [
    PruneRule::older_than(
        "refresh_tokens",
        "DELETE FROM refresh_tokens WHERE expires_at < $1",
    ),
    PruneRule::older_than(
        "refresh_families",
        "DELETE FROM refresh_families WHERE expires_at < $1 AND NOT EXISTS \
         (SELECT 1 FROM refresh_tokens t WHERE t.family_id = refresh_families.id)",
    ),
];

impl Identity {
    /// Validates `config`, connects, migrates, loads (or generates) the signing key and
    /// ensures the seed users exist.
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        config
            .validate()
            .context("invalid identity configuration")?;
        let db = Db::open_service(SERVICE, &config.database_url, &MIGRATOR).await?;
        let signer = keys::load_signer(config)?;
        let hasher = password::Hasher::new(
            match config.max_concurrent_hashes {
                0 => std::thread::available_parallelism().map_or(1, usize::from),
                n => n,
            },
            config.hash_queue,
            Duration::from_millis(config.hash_queue_timeout_ms),
        );
        seed::ensure(&db, &hasher, &config.seed_users).await?;
        seed::disable(&db, &config.disabled_users).await?;
        let dummy = uuid::Uuid::new_v4().to_string();
        let dummy_hash = hasher.hash(dummy).await?;
        let verifier = Arc::new(JwtVerifier::from_keys(
            signer.jwks(),
            &config.issuer,
            &config.audience,
        ));
        let tracker = TaskTracker::new();
        let token = CancellationToken::new();
        tideway_store::prune::spawn(
            db.clone(),
            PRUNE_RULES.to_vec(),
            Duration::from_secs(config.retention_days.saturating_mul(86_400)),
            tideway_store::prune::DEFAULT_INTERVAL,
            &tracker,
            token.clone(),
        );
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                signer,
                verifier,
                settings: Settings {
                    issuer: config.issuer.clone(),
                    audience: config.audience.clone(),
                    access_ttl: Duration::from_secs(config.access_token_ttl_secs),
                    refresh_ttl: Duration::from_secs(config.refresh_token_ttl_secs),
                    session_lifetime: Duration::from_secs(config.session_lifetime_secs),
                },
                dummy_hash,
                hasher,
                tracker,
                token,
            }),
        })
    }

    /// Stops the pruner and waits for it.
    pub async fn shutdown(&self) {
        self.inner.token.cancel();
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
    }

    /// The API with the standard stack (request ids, access log, metrics, health).
    pub fn router(&self) -> Router {
        let api = Router::new()
            .route(&format!("{PREFIX}/register"), post(users::register))
            .route(&format!("{PREFIX}/login"), post(tokens::login))
            .route(&format!("{PREFIX}/refresh"), post(tokens::refresh))
            .route(&format!("{PREFIX}/logout"), post(tokens::logout))
            .route(
                tideway_identity_api::LOGOUT_ALL_PATH,
                post(tokens::logout_all),
            )
            .route(&format!("{PREFIX}/me"), get(users::me))
            .route(&format!("{PREFIX}/users/{{id}}"), get(users::user))
            .route(tideway_identity_api::JWKS_PATH, get(tokens::jwks))
            .layer(Extension(self.verifier()))
            .with_state(self.clone())
            .merge(tideway_runtime::openapi::route(&openapi()));
        let readiness = Readiness::default().with("database", self.inner.db.readiness());
        service_router(
            SERVICE,
            api,
            readiness,
            HttpOptions {
                body_limit: BODY_LIMIT,
                ..HttpOptions::default()
            },
        )
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    /// The public signing keys.
    pub fn jwks(&self) -> JwkSet {
        self.inner.signer.jwks()
    }

    /// A verifier of this service's tokens, for services in the same process.
    pub fn verifier(&self) -> Arc<JwtVerifier> {
        self.inner.verifier.clone()
    }
}

/// Now as RFC 3339 UTC with milliseconds (`2025-01-31T12:00:00.000Z`), which sorts as text.
pub(crate) fn now_text() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.millisecond()
    )
}

/// Now in Unix milliseconds.
pub(crate) fn now_millis() -> i64 {
    let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    i64::try_from(nanos).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_are_rfc3339_with_milliseconds() {
        let text = super::now_text();
        assert_eq!(text.len(), 24, "{text}");
        assert!(text.ends_with('Z'));
        time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339).unwrap();
        assert!(super::now_millis() > 1_700_000_000_000);
    }
}
