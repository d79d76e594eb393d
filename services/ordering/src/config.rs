//! The ordering service's configuration.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tideway_runtime::config::{ConfigError, Validate};
use tideway_store::DatabaseUrl;

/// The longest step timeout accepted (a day), so a typo cannot park sagas for years.
const MAX_TIMEOUT_MS: u64 = 24 * 60 * 60 * 1000;

/// How many times a step's command is sent again before the order is cancelled, by default.
pub const DEFAULT_STEP_RESENDS: u32 = 3;

/// The most re-sends accepted.
pub const MAX_STEP_RESENDS: u32 = 100;

/// The ordering service's configuration (`[ordering]` in `tideway.toml`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `sqlite://path/to/file.db` or `postgres://user@host:port/db`.
    pub database_url: DatabaseUrl,
    /// How long inventory may take to answer `ReserveStock` before the order is cancelled.
    pub reserve_timeout_ms: u64,
    /// How long payment may take to answer `AuthorizePayment` before the order is cancelled.
    pub payment_timeout_ms: u64,
    /// How long to wait for `PaymentCaptured` before sending `CapturePayment` again. A
    /// confirmed order is never cancelled: capture is retried, not compensated.
    pub capture_timeout_ms: u64,
    /// How many times `ReserveStock` and `AuthorizePayment` are sent again (same order and
    /// idempotency key, which inventory and payment answer without acting twice) when
    /// their step's timeout passes without a reply, before the order is cancelled: an
    /// order is cancelled for a timeout only after `(step_resends + 1) × timeout`.
    pub step_resends: u32,
    /// How long inbox entries and finished sagas (the timelines of ended orders) are kept,
    /// in days (1 to 3650). Orders themselves are kept.
    pub retention_days: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: DatabaseUrl::sqlite("data/ordering.db"),
            reserve_timeout_ms: 10_000,
            payment_timeout_ms: 15_000,
            capture_timeout_ms: 15_000,
            step_resends: DEFAULT_STEP_RESENDS,
            retention_days: 30,
        }
    }
}

impl Config {
    pub(crate) fn reserve_timeout(&self) -> Duration {
        Duration::from_millis(self.reserve_timeout_ms)
    }

    pub(crate) fn payment_timeout(&self) -> Duration {
        Duration::from_millis(self.payment_timeout_ms)
    }

    pub(crate) fn capture_timeout(&self) -> Duration {
        Duration::from_millis(self.capture_timeout_ms)
    }

    /// The saga step deadlines with their keys: reserve, authorize, capture.
    pub fn step_deadlines(&self) -> [(&'static str, Duration); 3] {
        [
            ("ordering.reserve_timeout_ms", self.reserve_timeout()),
            ("ordering.payment_timeout_ms", self.payment_timeout()),
            ("ordering.capture_timeout_ms", self.capture_timeout()),
        ]
    }

    /// How often the saga sweeper looks for timed-out steps: a quarter of the shortest
    /// timeout, between 50 ms and 1 s.
    pub(crate) fn sweep_interval(&self) -> Duration {
        let shortest = self
            .reserve_timeout_ms
            .min(self.payment_timeout_ms)
            .min(self.capture_timeout_ms);
        Duration::from_millis((shortest / 4).clamp(50, 1000))
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("ordering.reserve_timeout_ms", self.reserve_timeout_ms),
            ("ordering.payment_timeout_ms", self.payment_timeout_ms),
            ("ordering.capture_timeout_ms", self.capture_timeout_ms),
        ] {
            if !(1..=MAX_TIMEOUT_MS).contains(&value) {
                return Err(ConfigError::invalid(
                    key,
                    format!("milliseconds between 1 and {MAX_TIMEOUT_MS}"),
                ));
            }
        }
        if !(1..=3650).contains(&self.retention_days) {
            return Err(ConfigError::invalid(
                "ordering.retention_days",
                "1 to 3650 days",
            ));
        }
        if self.step_resends > MAX_STEP_RESENDS {
            return Err(ConfigError::invalid(
                "ordering.step_resends",
                format!("a number of re-sends between 0 and {MAX_STEP_RESENDS}"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_valid_and_wrong_values_name_their_key() {
        assert!(Config::default().validate().is_ok());
        let err = serde_json::from_str::<Config>(r#"{"database_url": "mysql://x"}"#).unwrap_err();
        assert!(err.to_string().contains("sqlite://"), "{err}");
        for (config, key) in [
            (
                Config {
                    reserve_timeout_ms: 0,
                    ..Config::default()
                },
                "ordering.reserve_timeout_ms",
            ),
            (
                Config {
                    payment_timeout_ms: MAX_TIMEOUT_MS + 1,
                    ..Config::default()
                },
                "ordering.payment_timeout_ms",
            ),
            (
                Config {
                    capture_timeout_ms: 0,
                    ..Config::default()
                },
                "ordering.capture_timeout_ms",
            ),
            (
                Config {
                    step_resends: MAX_STEP_RESENDS + 1,
                    ..Config::default()
                },
                "ordering.step_resends",
            ),
        ] {
            let err = config.validate().unwrap_err();
            assert!(err.to_string().contains(key), "{err}");
        }
    }

    #[test]
    fn the_sweeper_runs_often_enough_for_the_shortest_timeout() {
        assert_eq!(Config::default().sweep_interval(), Duration::from_secs(1));
        let fast = Config {
            reserve_timeout_ms: 300,
            ..Config::default()
        };
        assert_eq!(fast.sweep_interval(), Duration::from_millis(75));
    }
}
