//! What a run measured: one HdrHistogram per endpoint class, error counts by kind, and
//! per-second buckets for the plot.

use std::{collections::BTreeMap, time::Duration};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::mix::Endpoint;

/// Latencies are recorded in microseconds, from 1 µs to 10 minutes, 3 significant digits.
const HIGHEST_US: u64 = 600_000_000;

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A 1xx, 2xx or 3xx answer (a 304 is a success).
    Ok,
    /// A 4xx answer.
    Status4xx,
    /// A 5xx answer.
    Status5xx,
    /// No answer within `--timeout`.
    Timeout,
    /// The connection could not be made.
    Connect,
    /// Anything else: a reset connection, a body cut short.
    Other,
}

impl Outcome {
    /// The outcome of an answer with `status`.
    pub fn of_status(status: u16) -> Self {
        match status {
            500.. => Self::Status5xx,
            400..500 => Self::Status4xx,
            _ => Self::Ok,
        }
    }

    /// The outcome of a failed request.
    pub fn of_error(err: &reqwest::Error) -> Self {
        if err.is_timeout() {
            Self::Timeout
        } else if err.is_connect() {
            Self::Connect
        } else {
            Self::Other
        }
    }
}

/// Failed requests by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Errors {
    /// 4xx answers.
    pub status_4xx: u64,
    /// 5xx answers.
    pub status_5xx: u64,
    /// Timeouts.
    pub timeout: u64,
    /// Connection failures.
    pub connect: u64,
    /// Other transport errors.
    pub other: u64,
}

impl Errors {
    /// Every failed request.
    pub fn total(&self) -> u64 {
        self.status_4xx + self.status_5xx + self.timeout + self.connect + self.other
    }

    fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Ok => {}
            Outcome::Status4xx => self.status_4xx += 1,
            Outcome::Status5xx => self.status_5xx += 1,
            Outcome::Timeout => self.timeout += 1,
            Outcome::Connect => self.connect += 1,
            Outcome::Other => self.other += 1,
        }
    }

    fn merge(&mut self, other: &Errors) {
        self.status_4xx += other.status_4xx;
        self.status_5xx += other.status_5xx;
        self.timeout += other.timeout;
        self.connect += other.connect;
        self.other += other.other;
    }
}

/// One endpoint class's measurements.
#[derive(Debug, Clone)]
pub struct Series {
    /// Latency from the intended send time to the end of the answer's body, every request
    /// included (failed ones until they failed), in microseconds.
    pub latency: Histogram<u64>,
    /// Requests that ended.
    pub requests: u64,
    /// Failures by kind.
    pub errors: Errors,
}

impl Series {
    fn new() -> Self {
        Self {
            latency: histogram(),
            requests: 0,
            errors: Errors::default(),
        }
    }

    fn record(&mut self, latency: Duration, outcome: Outcome) {
        self.latency.saturating_record(micros(latency));
        self.requests += 1;
        self.errors.add(outcome);
    }
}

/// One second of the run.
#[derive(Debug, Clone)]
pub struct Second {
    /// Requests whose intended send time fell in this second.
    pub scheduled: u64,
    /// Requests that ended in this second.
    pub completed: u64,
    /// Of those, failed ones.
    pub failed: u64,
    /// Latency of the requests scheduled in this second, in microseconds.
    pub latency: Histogram<u64>,
}

/// Everything recorded during a run; behind a mutex shared by the request tasks (held for a
/// few hundred nanoseconds, never across an await).
#[derive(Debug, Clone)]
pub struct Recorder {
    /// Per endpoint class.
    pub series: BTreeMap<Endpoint, Series>,
    /// Per second since the start.
    pub seconds: Vec<Second>,
    /// How late the generator itself dispatched each request after its intended time, in
    /// microseconds: large values mean the generator, not the target, was the limit.
    pub send_lag: Histogram<u64>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            series: BTreeMap::new(),
            seconds: Vec::new(),
            send_lag: histogram(),
        }
    }
}

impl Recorder {
    /// Records a dispatch `lag` behind the schedule.
    pub fn dispatched(&mut self, lag: Duration) {
        self.send_lag.saturating_record(micros(lag));
    }

    /// Records a request of `endpoint` intended at `intended` (since the start) that ended
    /// at `ended` (since the start).
    pub fn record(
        &mut self,
        endpoint: Endpoint,
        intended: Duration,
        ended: Duration,
        outcome: Outcome,
    ) {
        let latency = ended.saturating_sub(intended);
        self.series
            .entry(endpoint)
            .or_insert_with(Series::new)
            .record(latency, outcome);
        let sent_second = self.second(intended);
        sent_second.scheduled += 1;
        sent_second.latency.saturating_record(micros(latency));
        let end_second = self.second(ended);
        end_second.completed += 1;
        if outcome != Outcome::Ok {
            end_second.failed += 1;
        }
    }

    fn second(&mut self, at: Duration) -> &mut Second {
        let index = at.as_secs() as usize;
        while self.seconds.len() <= index {
            self.seconds.push(Second {
                scheduled: 0,
                completed: 0,
                failed: 0,
                latency: histogram(),
            });
        }
        &mut self.seconds[index]
    }

    /// Every endpoint class together.
    pub fn overall(&self) -> Series {
        let mut all = Series::new();
        for series in self.series.values() {
            // Both histograms have the same bounds, so adding cannot fail.
            let _ = all.latency.add(&series.latency);
            all.requests += series.requests;
            all.errors.merge(&series.errors);
        }
        all
    }
}

fn histogram() -> Histogram<u64> {
    // Valid constant bounds: 1 ≤ low, high ≥ 2·low, 3 significant figures.
    Histogram::new_with_bounds(1, HIGHEST_US, 3)
        .unwrap_or_else(|_| unreachable!("constant histogram bounds are valid"))
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_counts_from_the_intended_time_and_buckets_by_second() {
        let mut recorder = Recorder::default();
        let ms = Duration::from_millis;
        recorder.record(Endpoint::Item, ms(100), ms(105), Outcome::Ok);
        recorder.record(Endpoint::Item, ms(900), ms(1_300), Outcome::Status5xx);
        recorder.record(Endpoint::Browse, ms(1_500), ms(1_502), Outcome::Timeout);
        let item = &recorder.series[&Endpoint::Item];
        assert_eq!(item.requests, 2);
        assert_eq!(item.errors.status_5xx, 1);
        assert!(item.latency.max() >= 399_000, "{}", item.latency.max());
        assert_eq!(recorder.seconds.len(), 2);
        assert_eq!(recorder.seconds[0].scheduled, 2);
        assert_eq!(recorder.seconds[0].completed, 1);
        assert_eq!(recorder.seconds[1].completed, 2);
        assert_eq!(recorder.seconds[1].failed, 2);
        let all = recorder.overall();
        assert_eq!(all.requests, 3);
        assert_eq!(all.errors.total(), 2);
    }

    #[test]
    fn outcomes_by_status() {
        assert_eq!(Outcome::of_status(200), Outcome::Ok);
        assert_eq!(Outcome::of_status(304), Outcome::Ok);
        assert_eq!(Outcome::of_status(404), Outcome::Status4xx);
        assert_eq!(Outcome::of_status(503), Outcome::Status5xx);
    }
}
