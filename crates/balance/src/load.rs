//! The two pieces of per-replica bookkeeping the balancer decides on: a Peak-EWMA latency
//! estimate and the outlier-ejection state. Both are plain values driven by the caller's
//! clock, so the unit tests decide time.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::EjectionConfig;

/// The estimate a replica starts with: low, so a newcomer is tried at once and its first
/// answers set its real estimate.
const INITIAL_RTT: Duration = Duration::from_millis(1);

/// The Peak-EWMA latency estimate of one replica (Finagle's, and tower's `PeakEwma`): a
/// slower answer than the estimate replaces it at once (the peak); a faster one is blended
/// in with a weight that grows with the time since the last update. Read, the estimate
/// decays towards zero with the same time constant, so a replica that was slow and stopped
/// being picked is tried again after a while instead of never.
#[derive(Debug, Clone)]
pub(crate) struct PeakEwma {
    estimate_ns: f64,
    updated: Instant,
    decay_ns: f64,
}

impl PeakEwma {
    pub(crate) fn new(decay: Duration, now: Instant) -> Self {
        Self {
            estimate_ns: INITIAL_RTT.as_nanos() as f64,
            updated: now,
            decay_ns: (decay.as_nanos() as f64).max(1.0),
        }
    }

    fn decayed(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.updated).as_nanos() as f64;
        self.estimate_ns * (-elapsed / self.decay_ns).exp()
    }

    /// Records one call's latency.
    pub(crate) fn observe(&mut self, rtt: Duration, now: Instant) {
        let rtt = rtt.as_nanos() as f64;
        let current = self.decayed(now);
        self.estimate_ns = if rtt > current {
            rtt
        } else {
            let elapsed = now.saturating_duration_since(self.updated).as_nanos() as f64;
            let weight = (-elapsed / self.decay_ns).exp();
            current * weight + rtt * (1.0 - weight)
        };
        self.updated = now;
    }

    /// The estimate now, in nanoseconds.
    pub(crate) fn estimate_ns(&self, now: Instant) -> f64 {
        self.decayed(now)
    }

    /// The cost of sending one more call: the estimate times the calls in flight plus one.
    pub(crate) fn cost(&self, in_flight: usize, now: Instant) -> f64 {
        // Never zero, so calls in flight still tell two fully decayed replicas apart.
        self.decayed(now).max(1.0) * (in_flight as f64 + 1.0)
    }
}

/// Passive outlier ejection of one replica: `consecutive_failures` failures in a row eject
/// it for `base_ms`, doubled at each further ejection up to `max_ms`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Outlier {
    consecutive: u32,
    ejected_until: Option<Instant>,
    ejections: u32,
}

impl Outlier {
    pub(crate) fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|until| now < until)
    }

    pub(crate) fn ejections(&self) -> u32 {
        self.ejections
    }

    /// A call that did not fail: the run of failures is broken.
    pub(crate) fn succeeded(&mut self) {
        self.consecutive = 0;
    }

    /// A failed call. Ejects the replica (answering how long for) when this failure
    /// completes a run and `may_eject` (the share of ejected replicas allows one more).
    pub(crate) fn failed(
        &mut self,
        config: &EjectionConfig,
        now: Instant,
        may_eject: bool,
    ) -> Option<Duration> {
        self.consecutive = self.consecutive.saturating_add(1);
        if self.is_ejected(now) || self.consecutive < config.consecutive_failures || !may_eject {
            return None;
        }
        let base = Duration::from_millis(config.base_ms);
        let max = Duration::from_millis(config.max_ms);
        let period = base
            .checked_mul(1u32 << self.ejections.min(16))
            .unwrap_or(max)
            .min(max);
        self.ejected_until = Some(now + period);
        self.ejections = self.ejections.saturating_add(1);
        self.consecutive = 0;
        Some(period)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_slow_answer_is_taken_at_once_and_fast_ones_blend_in() {
        let t0 = Instant::now();
        let mut ewma = PeakEwma::new(ms(1_000), t0);
        ewma.observe(ms(100), t0);
        assert!(
            (ewma.estimate_ns(t0) - 100e6).abs() < 1.0,
            "the peak is kept"
        );
        // A fast answer right away barely moves it; one after a long pause mostly replaces it.
        ewma.observe(ms(10), t0 + ms(1));
        let soon = ewma.estimate_ns(t0 + ms(1));
        assert!(soon > 90e6, "{soon}");
        ewma.observe(ms(10), t0 + ms(5_000));
        let later = ewma.estimate_ns(t0 + ms(5_000));
        assert!((10e6 * 0.99..11e6).contains(&later), "{later}");
    }

    #[test]
    fn an_idle_estimate_decays_so_the_replica_is_tried_again() {
        let t0 = Instant::now();
        let mut slow = PeakEwma::new(ms(1_000), t0);
        slow.observe(ms(500), t0);
        let mut fast = PeakEwma::new(ms(1_000), t0);
        fast.observe(ms(5), t0);
        assert!(slow.cost(0, t0) > fast.cost(0, t0));
        // Only the fast one keeps answering; after a few time constants the slow one's cost
        // falls below it.
        let later = t0 + ms(6_000);
        fast.observe(ms(5), later);
        assert!(slow.cost(0, later) < fast.cost(0, later));
    }

    #[test]
    fn calls_in_flight_raise_the_cost() {
        let t0 = Instant::now();
        let mut ewma = PeakEwma::new(ms(1_000), t0);
        ewma.observe(ms(10), t0);
        assert!((ewma.cost(3, t0) / ewma.cost(0, t0) - 4.0).abs() < 1e-9);
    }

    #[test]
    fn a_new_replica_starts_cheap() {
        let t0 = Instant::now();
        let fresh = PeakEwma::new(ms(1_000), t0);
        let mut known = PeakEwma::new(ms(1_000), t0);
        known.observe(ms(5), t0);
        assert!(fresh.cost(0, t0) < known.cost(0, t0));
    }

    fn config() -> EjectionConfig {
        EjectionConfig {
            consecutive_failures: 3,
            base_ms: 1_000,
            max_ms: 3_000,
            max_share: 0.5,
        }
    }

    #[test]
    fn a_run_of_failures_ejects_for_a_growing_period() {
        let config = config();
        let t0 = Instant::now();
        let mut outlier = Outlier::default();
        assert_eq!(outlier.failed(&config, t0, true), None);
        assert_eq!(outlier.failed(&config, t0, true), None);
        assert_eq!(outlier.failed(&config, t0, true), Some(ms(1_000)));
        assert!(outlier.is_ejected(t0 + ms(999)));
        assert!(!outlier.is_ejected(t0 + ms(1_000)));
        // Back, and failing again: twice as long, then capped at the maximum.
        let t1 = t0 + ms(1_000);
        for _ in 0..2 {
            assert_eq!(outlier.failed(&config, t1, true), None);
        }
        assert_eq!(outlier.failed(&config, t1, true), Some(ms(2_000)));
        let t2 = t1 + ms(2_000);
        for _ in 0..2 {
            outlier.failed(&config, t2, true);
        }
        assert_eq!(outlier.failed(&config, t2, true), Some(ms(3_000)));
        assert_eq!(outlier.ejections(), 3);
    }

    #[test]
    fn a_success_breaks_the_run() {
        let config = config();
        let t0 = Instant::now();
        let mut outlier = Outlier::default();
        outlier.failed(&config, t0, true);
        outlier.failed(&config, t0, true);
        outlier.succeeded();
        assert_eq!(outlier.failed(&config, t0, true), None);
        assert_eq!(outlier.failed(&config, t0, true), None);
        assert!(!outlier.is_ejected(t0));
    }

    #[test]
    fn no_ejection_when_the_share_is_used_up() {
        let config = config();
        let t0 = Instant::now();
        let mut outlier = Outlier::default();
        for _ in 0..10 {
            assert_eq!(outlier.failed(&config, t0, false), None);
        }
        assert!(!outlier.is_ejected(t0));
        // The run is remembered: once another replica is back, the next failure ejects.
        assert_eq!(outlier.failed(&config, t0, true), Some(ms(1_000)));
    }
}
