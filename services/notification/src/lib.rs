//! The notification service: tells customers by email when their order is confirmed or
//! cancelled, or their payment refunded.
//!
//! * Events (consumer `notification`): `OrderPlaced` (who the order belongs to and their
//!   address), `OrderConfirmed`, `OrderCancelled` and `PaymentVoided` with the status
//!   `refunded`; each of the last three renders one email (text and HTML) and sends it.
//!   Effectively once through the inbox, retried with the bus's backoff while the mail
//!   server refuses, then dead-lettered and marked `failed` until a redrive: see
//!   [`handlers`].
//! * Mail goes to the SMTP server of `notification.smtp_url` ([`lettre`]); unset (the
//!   embedded default), each message is written to `notification.mailbox_dir` as
//!   `<id>.eml`.
//! * HTTP: `GET /api/v1/notification/notifications` (the caller's own) and
//!   `GET /api/v1/notification/recent` (admins: everyone's latest).
//!
//! The contract is `tideway-notification-api`.

pub mod error;
pub mod handlers;
pub mod http;
pub mod mail;
pub mod store;

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use axum::{Extension, Router};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tideway_bus::{Bus, Event, Replica, SubscriptionHandle, inbox, subject};
use tideway_notification_api::{PREFIX, SERVICE};
use tideway_runtime::{
    auth::JwtVerifier,
    config::{ConfigError, Validate},
    http::{HttpOptions, Readiness, service_router},
    openapi::BearerAuth,
};
use tideway_store::{DatabaseUrl, Db, Migrator};

pub use error::ApiError;
pub use handlers::Handlers;
pub use mail::Mailer;

/// The notification service's OpenAPI document: every endpoint it serves.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        http::mine,
        http::recent,
    ),
    components(schemas(tideway_runtime::InvalidParam), responses(tideway_runtime::Problem)),
    modifiers(&BearerAuth),
    tags((name = "notification", description = "The emails sent to customers"))
)]
pub struct ApiDoc;

/// The notification service's OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    <ApiDoc as utoipa::OpenApi>::openapi()
}

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The notification database's pool size.
pub const DB_CONNECTIONS: u32 = 3;

/// Handlers per subject in this process (they compete for the events).
pub const WORKERS_PER_SUBJECT: usize = 2;

/// The notification service's configuration (`[notification]` in `tideway.toml`).
///
/// `smtp_url` may carry a password; it is never serialised, printed or logged.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `sqlite://path` or `postgres://…`.
    pub database_url: DatabaseUrl,
    /// The SMTP server: `smtp://host:port` (plain), `smtp://host:port?tls=required`
    /// (STARTTLS), `smtps://host:port` (TLS), with `user:password@` when it needs them.
    /// Unset: messages are written to `mailbox_dir`.
    #[serde(skip_serializing)]
    pub smtp_url: Option<SecretString>,
    /// Where messages go without `smtp_url`: one `<id>.eml` file each.
    pub mailbox_dir: PathBuf,
    /// The sender, `Name <address>`.
    pub from: String,
    /// Deliveries of an event (send attempts) before it is dead-lettered (1–100).
    pub max_attempts: u32,
    /// The delay before the second attempt, in milliseconds; doubled each time (with
    /// jitter) up to `retry_max_ms`.
    pub retry_first_ms: u64,
    /// The longest delay between attempts, in milliseconds.
    pub retry_max_ms: u64,
    /// How long one exchange with the mail server may take, in milliseconds.
    pub smtp_timeout_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: DatabaseUrl::sqlite("data/notification.db"),
            smtp_url: None,
            mailbox_dir: PathBuf::from("data/mailbox"),
            from: "Tideway <shop@tideway.local>".to_owned(),
            max_attempts: 8,
            retry_first_ms: 1_000,
            retry_max_ms: 60_000,
            smtp_timeout_ms: 10_000,
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(ConfigError::invalid(
                "notification.from",
                "an address such as `Tideway <shop@example.com>`",
            ));
        }
        if let Some(url) = &self.smtp_url {
            let url = url.expose_secret();
            if !(url.starts_with("smtp://") || url.starts_with("smtps://"))
                || lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::from_url(url).is_err()
            {
                return Err(ConfigError::invalid(
                    "notification.smtp_url",
                    "smtp://host:port, smtp://host:port?tls=required or smtps://host:port",
                ));
            }
        }
        if !(1..=100).contains(&self.max_attempts) {
            return Err(ConfigError::invalid(
                "notification.max_attempts",
                "a number from 1 to 100",
            ));
        }
        if self.retry_first_ms == 0 || self.retry_max_ms < self.retry_first_ms {
            return Err(ConfigError::invalid(
                "notification.retry_first_ms",
                "a positive number of milliseconds, at most notification.retry_max_ms",
            ));
        }
        if !(100..=600_000).contains(&self.smtp_timeout_ms) {
            return Err(ConfigError::invalid(
                "notification.smtp_timeout_ms",
                "from 100 to 600000 milliseconds",
            ));
        }
        Ok(())
    }
}

impl Config {
    /// The mailer this configuration names.
    pub fn mailer(&self) -> anyhow::Result<Mailer> {
        let from = self
            .from
            .parse()
            .context("configuration key `notification.from` is invalid")?;
        Ok(match &self.smtp_url {
            Some(url) => Mailer::smtp(
                url.expose_secret(),
                from,
                Duration::from_millis(self.smtp_timeout_ms),
            )
            .map_err(|err| {
                anyhow::anyhow!("configuration key `notification.smtp_url` is invalid: {err}")
            })?,
            None => Mailer::mailbox(self.mailbox_dir.clone(), from),
        })
    }
}

/// What every HTTP handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The notification database.
    pub db: Db,
}

/// The notification service: a cheap-to-clone handle.
#[derive(Debug, Clone)]
pub struct Notification {
    db: Db,
    verifier: Arc<JwtVerifier>,
    subscriptions: Arc<Vec<SubscriptionHandle>>,
}

impl Notification {
    /// Connects, migrates, installs the inbox and subscribes the handlers (consumer
    /// `notification`) with `config`'s attempts and backoff.
    pub async fn build(
        config: &Config,
        bus: Arc<dyn Bus>,
        replica: &Replica,
        verifier: Arc<JwtVerifier>,
    ) -> anyhow::Result<Self> {
        config
            .validate()
            .context("invalid notification configuration")?;
        // A handful of connections: its writes are a few rows per order, and in the
        // distributed shape every process's pool counts against PostgreSQL's limit.
        let db = Db::open(
            &config.database_url,
            tideway_store::DbOptions {
                max_connections: DB_CONNECTIONS,
                ..tideway_store::DbOptions::default()
            },
        )
        .await
        .with_context(|| {
            format!(
                "cannot open the notification database {}",
                config.database_url
            )
        })?;
        db.migrate(&MIGRATOR)
            .await
            .context("cannot migrate the notification database")?;
        inbox::install(&db)
            .await
            .context("cannot create the notification inbox")?;
        let mailer = Arc::new(config.mailer()?);
        let smtp_timeout = Duration::from_millis(config.smtp_timeout_ms);
        // Connecting, greeting and sending are each bounded by the SMTP timeout.
        let handler_timeout = tideway_bus::DEFAULT_HANDLER_TIMEOUT + smtp_timeout * 3;
        let claim_ms = i64::try_from(handler_timeout.as_millis()).unwrap_or(i64::MAX);
        let handlers = Arc::new(Handlers::new(db.clone(), mailer.clone(), claim_ms));
        let dead_letters = subject::dead_letter(SERVICE);
        let mut subscriptions = Vec::new();
        for filter in handlers::SUBJECTS
            .into_iter()
            .chain([dead_letters.as_str()])
        {
            for _ in 0..WORKERS_PER_SUBJECT {
                let handlers = handlers.clone();
                let handler = move |event: Event| {
                    let handlers = handlers.clone();
                    async move { handlers.handle(event).await }
                };
                let options = replica
                    .subscribe(SERVICE, filter)
                    .max_deliveries(config.max_attempts)
                    .retry_delay(
                        Duration::from_millis(config.retry_first_ms),
                        Duration::from_millis(config.retry_max_ms),
                    )
                    .handler_timeout(handler_timeout);
                let subscription = bus
                    .subscribe(options, Arc::new(handler))
                    .await
                    .with_context(|| format!("cannot subscribe to {filter}"))?;
                subscriptions.push(subscription);
            }
        }
        tracing::info!(mailer = ?mailer, max_attempts = config.max_attempts, "notification service started");
        Ok(Self {
            db,
            verifier,
            subscriptions: Arc::new(subscriptions),
        })
    }

    /// The service's router: the API under `/api/v1/notification` wrapped in the standard
    /// stack.
    pub fn router(&self) -> Router {
        let api = Router::new()
            .nest(PREFIX, http::routes())
            .with_state(AppState {
                db: self.db.clone(),
            })
            .layer(Extension(self.verifier.clone()))
            .merge(tideway_runtime::openapi::route(&openapi()));
        let readiness = Readiness::default().with("database", self.db.readiness());
        service_router(SERVICE, api, readiness, HttpOptions::default())
    }

    /// The notification database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Stops the subscriptions (a delivery in progress is redelivered later).
    pub async fn shutdown(&self) {
        for subscription in self.subscriptions.iter() {
            subscription.stop();
        }
    }
}

/// Now, in unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_validation() {
        assert!(Config::default().validate().is_ok());
        let bad = |f: fn(&mut Config)| {
            let mut config = Config::default();
            f(&mut config);
            config
                .validate()
                .map_err(|e| e.to_string())
                .err()
                .unwrap_or_default()
        };
        assert!(bad(|c| c.from = "nobody".into()).contains("notification.from"));
        assert!(bad(|c| c.smtp_url = Some("http://x".into())).contains("notification.smtp_url"));
        assert!(bad(|c| c.max_attempts = 0).contains("notification.max_attempts"));
        assert!(bad(|c| c.retry_first_ms = 0).contains("notification.retry_first_ms"));
        assert!(bad(|c| c.smtp_timeout_ms = 1).contains("notification.smtp_timeout_ms"));
        let ok = Config {
            smtp_url: Some("smtp://127.0.0.1:2525".into()),
            ..Config::default()
        };
        assert!(ok.validate().is_ok());
    }
}
