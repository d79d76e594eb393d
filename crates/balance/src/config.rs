//! The `balance` section of the configuration: how calls pick a replica, when a replica is
//! taken out of rotation, and the resilience layers around every call.
//!
//! ```toml
//! [balance]
//! enabled = true                 # false: fixed `urls.*`, no balancer (a benchmark baseline)
//! policy = "p2c"                 # "p2c" (Peak-EWMA, default) | "round_robin"
//! health_interval_ms = 1000      # active checks of /health/ready on every replica
//! health_timeout_ms = 500
//! ewma_decay_ms = 10000          # how fast a replica's latency estimate forgets
//! max_request_body_bytes = 1048576
//!
//! [balance.ejection]             # passive outlier ejection
//! consecutive_failures = 5       # 5xx answers or connection failures in a row
//! base_ms = 1000                 # first ejection; doubled at each ejection after it
//! max_ms = 30000
//! max_share = 0.5                # never more than this share of the replicas ejected
//!
//! [balance.retry]                # per service, under a budget
//! max_retries = 2
//! min_delay_ms = 25
//! max_delay_ms = 1000
//! budget_share = 0.2
//! budget_window_ms = 10000
//! min_retries_per_sec = 1
//!
//! [balance.breaker]              # per replica
//! failure_rate = 0.5
//! minimum_calls = 20
//! window_ms = 10000
//! cool_down_ms = 5000
//! half_open_probes = 3
//!
//! [balance.bulkhead]             # per service
//! max_concurrent = 256
//! max_queued = 256
//! queue_timeout_ms = 100
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tideway_resilience::{BreakerSettings, RetrySettings};

/// How a replica is picked for a call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Power of two choices: two replicas at random, the one with the lower Peak-EWMA cost
    /// (latency estimate × (calls in flight + 1)).
    #[default]
    P2c,
    /// Each replica in turn, whatever its latency (kept as a baseline for benchmarks).
    RoundRobin,
}

/// The `balance` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BalanceConfig {
    /// `balance.enabled`: `false` sends every call between processes to `urls.<service>`
    /// through one pool under a deadline only, without discovery, balancer or resilience
    /// layers — the baseline the benchmarks measure the stack against.
    pub enabled: bool,
    /// `balance.policy`.
    pub policy: Policy,
    /// `balance.health_interval_ms`: how often every replica's `/health/ready` is asked.
    pub health_interval_ms: u64,
    /// `balance.health_timeout_ms`: how long a health check may take.
    pub health_timeout_ms: u64,
    /// `balance.ewma_decay_ms`: the time constant of the Peak-EWMA latency estimate.
    pub ewma_decay_ms: u64,
    /// `balance.max_request_body_bytes`: request bodies are buffered (so a retry can resend
    /// them) up to this size; larger ones are refused before any call.
    pub max_request_body_bytes: usize,
    /// `balance.ejection`.
    pub ejection: EjectionConfig,
    /// `balance.retry`.
    pub retry: RetryConfig,
    /// `balance.breaker`.
    pub breaker: BreakerConfig,
    /// `balance.bulkhead`.
    pub bulkhead: BulkheadConfig,
}

impl Default for BalanceConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            policy: Policy::P2c,
            health_interval_ms: 1_000,
            health_timeout_ms: 500,
            ewma_decay_ms: 10_000,
            max_request_body_bytes: 1024 * 1024,
            ejection: EjectionConfig::default(),
            retry: RetryConfig::default(),
            breaker: BreakerConfig::default(),
            bulkhead: BulkheadConfig::default(),
        }
    }
}

/// The `balance.ejection` section: passive outlier ejection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EjectionConfig {
    /// Failures in a row (5xx answers, connection failures, timeouts) that eject a replica.
    pub consecutive_failures: u32,
    /// How long the first ejection lasts; each further one of the same replica doubles it.
    pub base_ms: u64,
    /// The longest ejection.
    pub max_ms: u64,
    /// The largest share of a service's replicas ejected at once (at least one replica
    /// always stays in rotation).
    pub max_share: f64,
}

impl Default for EjectionConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_ms: 1_000,
            max_ms: 30_000,
            max_share: 0.5,
        }
    }
}

/// The `balance.retry` section (see `tideway_resilience::RetrySettings`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Retries after the first attempt (0 turns retries off).
    pub max_retries: u32,
    /// The first retry's delay before jitter.
    pub min_delay_ms: u64,
    /// The longest delay.
    pub max_delay_ms: u64,
    /// Retries as a share of requests over the window.
    pub budget_share: f32,
    /// The budget's window.
    pub budget_window_ms: u64,
    /// Retries per second allowed on top of the share.
    pub min_retries_per_sec: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        let d = RetrySettings::default();
        Self {
            max_retries: d.max_retries,
            min_delay_ms: millis(d.min_delay),
            max_delay_ms: millis(d.max_delay),
            budget_share: d.budget_share,
            budget_window_ms: millis(d.budget_window),
            min_retries_per_sec: d.min_retries_per_sec,
        }
    }
}

impl RetryConfig {
    /// The layer's settings.
    pub fn settings(&self) -> RetrySettings {
        RetrySettings {
            max_retries: self.max_retries,
            min_delay: Duration::from_millis(self.min_delay_ms),
            max_delay: Duration::from_millis(self.max_delay_ms),
            factor: 2.0,
            budget_share: self.budget_share,
            budget_window: Duration::from_millis(self.budget_window_ms),
            min_retries_per_sec: self.min_retries_per_sec,
        }
    }
}

/// The `balance.breaker` section (see `tideway_resilience::BreakerSettings`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Share of failed calls in the window that opens the breaker.
    pub failure_rate: f64,
    /// Calls the window must hold before it is judged.
    pub minimum_calls: u32,
    /// The rolling window.
    pub window_ms: u64,
    /// How long an open breaker refuses calls before probing.
    pub cool_down_ms: u64,
    /// Probes let through while half-open.
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        let d = BreakerSettings::default();
        Self {
            failure_rate: d.failure_rate,
            minimum_calls: d.minimum_calls,
            window_ms: millis(d.window),
            cool_down_ms: millis(d.cool_down),
            half_open_probes: d.half_open_probes,
        }
    }
}

impl BreakerConfig {
    /// The layer's settings.
    pub fn settings(&self) -> BreakerSettings {
        BreakerSettings {
            failure_rate: self.failure_rate,
            minimum_calls: self.minimum_calls,
            window: Duration::from_millis(self.window_ms),
            cool_down: Duration::from_millis(self.cool_down_ms),
            half_open_probes: self.half_open_probes,
        }
    }
}

/// The `balance.bulkhead` section: calls in flight to one service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BulkheadConfig {
    /// Calls in flight at once.
    pub max_concurrent: usize,
    /// Calls that may wait for a slot.
    pub max_queued: usize,
    /// How long a call may wait.
    pub queue_timeout_ms: u64,
}

impl Default for BulkheadConfig {
    fn default() -> Self {
        Self {
            max_concurrent: 256,
            max_queued: 256,
            queue_timeout_ms: 100,
        }
    }
}

/// A value of the `balance` section that cannot work, with its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration key `{key}` is invalid: expected {expected}")]
pub struct InvalidKey {
    /// The dotted key, e.g. `balance.ejection.max_share`.
    pub key: String,
    /// What it accepts.
    pub expected: String,
}

fn invalid(key: &str, expected: impl Into<String>) -> InvalidKey {
    InvalidKey {
        key: key.to_owned(),
        expected: expected.into(),
    }
}

impl BalanceConfig {
    /// Returns the first unacceptable value, naming its key (`balance.…`).
    pub fn check(&self) -> Result<(), InvalidKey> {
        let ms = "a positive number of milliseconds";
        if self.health_interval_ms < 10 {
            return Err(invalid(
                "balance.health_interval_ms",
                "at least 10 milliseconds",
            ));
        }
        if self.health_timeout_ms == 0 {
            return Err(invalid("balance.health_timeout_ms", ms));
        }
        if self.ewma_decay_ms == 0 {
            return Err(invalid("balance.ewma_decay_ms", ms));
        }
        if self.max_request_body_bytes == 0 {
            return Err(invalid(
                "balance.max_request_body_bytes",
                "a positive number of bytes",
            ));
        }
        let e = &self.ejection;
        if e.consecutive_failures == 0 {
            return Err(invalid(
                "balance.ejection.consecutive_failures",
                "at least 1",
            ));
        }
        if e.base_ms == 0 {
            return Err(invalid("balance.ejection.base_ms", ms));
        }
        if e.max_ms < e.base_ms {
            return Err(invalid(
                "balance.ejection.max_ms",
                "at least balance.ejection.base_ms",
            ));
        }
        if !(0.0..=1.0).contains(&e.max_share) {
            return Err(invalid(
                "balance.ejection.max_share",
                "a share between 0 and 1",
            ));
        }
        tideway_resilience::RetryLayer::new("check", self.retry.settings()).map_err(|err| {
            invalid(
                &format!("balance.retry.{}", retry_key(err.parameter)),
                err.reason,
            )
        })?;
        tideway_resilience::CircuitBreakerLayer::new(
            "check",
            self.breaker.settings(),
            tideway_resilience::http_5xx_or_error::<()>,
        )
        .map_err(|err| {
            invalid(
                &format!("balance.breaker.{}", breaker_key(err.parameter)),
                err.reason,
            )
        })?;
        if self.bulkhead.max_concurrent == 0 || self.bulkhead.max_concurrent > 1_000_000 {
            return Err(invalid(
                "balance.bulkhead.max_concurrent",
                "a number of calls between 1 and 1000000",
            ));
        }
        if self.bulkhead.max_queued > 1_000_000 {
            return Err(invalid(
                "balance.bulkhead.max_queued",
                "a number of calls up to 1000000",
            ));
        }
        Ok(())
    }

    /// `health_interval_ms` as a duration.
    pub fn health_interval(&self) -> Duration {
        Duration::from_millis(self.health_interval_ms)
    }

    /// `health_timeout_ms` as a duration.
    pub fn health_timeout(&self) -> Duration {
        Duration::from_millis(self.health_timeout_ms)
    }
}

fn retry_key(parameter: &str) -> &str {
    match parameter {
        "min_delay" => "min_delay_ms",
        "max_delay" => "max_delay_ms",
        "budget_window" => "budget_window_ms",
        other => other,
    }
}

fn breaker_key(parameter: &str) -> &str {
    match parameter {
        "window" => "window_ms",
        "cool_down" => "cool_down_ms",
        other => other,
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(change: impl FnOnce(&mut BalanceConfig)) -> String {
        let mut config = BalanceConfig::default();
        change(&mut config);
        config.check().expect_err("refused").key
    }

    #[test]
    fn defaults_are_valid_and_match_the_layers() {
        let config = BalanceConfig::default();
        config.check().expect("valid");
        assert_eq!(config.retry.settings(), RetrySettings::default());
        assert_eq!(config.breaker.settings(), BreakerSettings::default());
    }

    #[test]
    fn bad_values_name_their_key() {
        assert_eq!(
            key(|c| c.health_interval_ms = 1),
            "balance.health_interval_ms"
        );
        assert_eq!(
            key(|c| c.ejection.max_share = 1.5),
            "balance.ejection.max_share"
        );
        assert_eq!(key(|c| c.ejection.max_ms = 1), "balance.ejection.max_ms");
        assert_eq!(
            key(|c| c.retry.budget_share = 2.0),
            "balance.retry.budget_share"
        );
        assert_eq!(
            key(|c| c.retry.min_delay_ms = 0),
            "balance.retry.min_delay_ms"
        );
        assert_eq!(
            key(|c| c.breaker.cool_down_ms = 0),
            "balance.breaker.cool_down_ms"
        );
        assert_eq!(
            key(|c| c.bulkhead.max_concurrent = 0),
            "balance.bulkhead.max_concurrent"
        );
    }

    #[test]
    fn reads_from_json_and_refuses_unknown_keys() {
        let config: BalanceConfig =
            serde_json::from_str(r#"{"policy":"round_robin","ejection":{"max_share":0.3}}"#)
                .expect("parse");
        assert_eq!(config.policy, Policy::RoundRobin);
        assert!((config.ejection.max_share - 0.3).abs() < f64::EPSILON);
        assert_eq!(config.ejection.consecutive_failures, 5);
        assert!(serde_json::from_str::<BalanceConfig>(r#"{"polcy":"p2c"}"#).is_err());
    }
}
