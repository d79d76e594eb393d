//! The end-of-run report: a table on the terminal and `report.json`.

use std::{fmt::Write as _, time::Duration};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::{
    cpu::ProcessCpu,
    mix::Mix,
    record::{Errors, Recorder, Series},
};

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// The largest.
    pub max: f64,
    /// The mean.
    pub mean: f64,
}

impl Percentiles {
    /// The percentiles of a histogram in microseconds (all zero when it is empty).
    pub fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| round3(us as f64 / 1_000.0);
        Self {
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
            mean: round3(histogram.mean() / 1_000.0),
        }
    }
}

/// One endpoint class, or all of them.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointReport {
    /// The class (`all` for the total).
    pub endpoint: String,
    /// Requests that ended.
    pub requests: u64,
    /// Of those, successful (1xx–3xx).
    pub ok: u64,
    /// Failures by kind.
    pub errors: Errors,
    /// Latency from the intended send time, in milliseconds.
    pub latency_ms: Percentiles,
}

impl EndpointReport {
    fn of(endpoint: &str, series: &Series) -> Self {
        Self {
            endpoint: endpoint.to_owned(),
            requests: series.requests,
            ok: series.requests - series.errors.total(),
            errors: series.errors,
            latency_ms: Percentiles::of(&series.latency),
        }
    }
}

/// One second of the run, for the plot.
#[derive(Debug, Clone, Serialize)]
pub struct SecondReport {
    /// Seconds since the start.
    pub second: u64,
    /// Requests intended to be sent in this second.
    pub scheduled: u64,
    /// Requests that ended in this second.
    pub completed: u64,
    /// Of those, failed ones.
    pub failed: u64,
    /// Latency of the requests scheduled in this second.
    pub latency_ms: Percentiles,
}

/// The whole report, as written to `report.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The base URL.
    pub target: String,
    /// The mix, or `path` for `--path`.
    pub mix: String,
    /// `--path`, when given.
    pub path: Option<String>,
    /// When the measured phase started (UTC, RFC 3339).
    pub started_at: String,
    /// The intended arrival rate, requests per second.
    pub intended_rate: f64,
    /// The intended duration, in seconds.
    pub duration_secs: f64,
    /// Virtual users.
    pub users: usize,
    /// The per-request timeout, in seconds.
    pub timeout_secs: f64,
    /// The seed of the request sequence.
    pub seed: u64,
    /// Requests sent (all of them end: in an answer, an error or a timeout).
    pub sent: u64,
    /// Requests sent per second, over the sending window.
    pub sent_rate: f64,
    /// Successful answers per second, from the start to the last answer.
    pub achieved_rate: f64,
    /// Seconds from the start to the last answer.
    pub elapsed_secs: f64,
    /// How late the generator dispatched requests after their intended time (its own lag;
    /// a large p99 here means the generator machine, not the target, was the limit).
    pub send_lag_ms: Percentiles,
    /// Every class together.
    pub total: EndpointReport,
    /// Per class.
    pub endpoints: Vec<EndpointReport>,
    /// Per second.
    pub timeline: Vec<SecondReport>,
    /// Caveats, such as a checkout share sent as basket views.
    pub notes: Vec<String>,
    /// CPU of each `--watch-pid` process during the measured phase.
    pub cpu: Vec<ProcessCpu>,
    /// The generator's own CPU seconds during the measured phase (Linux).
    pub generator_cpu_secs: Option<f64>,
}

/// What the run was asked to do, for the report.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// The base URL.
    pub target: String,
    /// The mix.
    pub mix: Mix,
    /// `--path`.
    pub path: Option<String>,
    /// The start, formatted.
    pub started_at: String,
    /// Requests per second.
    pub rate: f64,
    /// The duration.
    pub duration: Duration,
    /// Virtual users.
    pub users: usize,
    /// The per-request timeout.
    pub timeout: Duration,
    /// The seed.
    pub seed: u64,
    /// Caveats.
    pub notes: Vec<String>,
}

impl Report {
    /// The report of a finished run: `sent` requests dispatched over `send_window`, the last
    /// answer at `elapsed` after the start.
    pub fn build(
        info: RunInfo,
        recorder: &Recorder,
        sent: u64,
        send_window: Duration,
        elapsed: Duration,
    ) -> Self {
        let total = EndpointReport::of("all", &recorder.overall());
        let per_sec = |count: u64, over: Duration| {
            if over.is_zero() {
                0.0
            } else {
                round3(count as f64 / over.as_secs_f64())
            }
        };
        Self {
            target: info.target,
            mix: if info.path.is_some() {
                "path".to_owned()
            } else {
                format!("{:?}", info.mix).to_lowercase()
            },
            path: info.path,
            started_at: info.started_at,
            intended_rate: info.rate,
            duration_secs: info.duration.as_secs_f64(),
            users: info.users,
            timeout_secs: info.timeout.as_secs_f64(),
            seed: info.seed,
            sent,
            sent_rate: per_sec(sent, send_window),
            achieved_rate: per_sec(total.ok, elapsed),
            elapsed_secs: round3(elapsed.as_secs_f64()),
            send_lag_ms: Percentiles::of(&recorder.send_lag),
            endpoints: recorder
                .series
                .iter()
                .map(|(endpoint, series)| EndpointReport::of(endpoint.as_str(), series))
                .collect(),
            total,
            timeline: recorder
                .seconds
                .iter()
                .enumerate()
                .map(|(second, s)| SecondReport {
                    second: second as u64,
                    scheduled: s.scheduled,
                    completed: s.completed,
                    failed: s.failed,
                    latency_ms: Percentiles::of(&s.latency),
                })
                .collect(),
            notes: info.notes,
            cpu: Vec::new(),
            generator_cpu_secs: None,
        }
    }

    /// The table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\n{} · mix {} · {} users · started {}",
            self.target, self.mix, self.users, self.started_at
        );
        let _ = writeln!(
            out,
            "rate: intended {:.1}/s, sent {:.1}/s, achieved {:.1} ok/s over {:.2} s · generator lag p99 {:.3} ms",
            self.intended_rate,
            self.sent_rate,
            self.achieved_rate,
            self.elapsed_secs,
            self.send_lag_ms.p99
        );
        let _ = writeln!(
            out,
            "\n{:<24} {:>8} {:>8} {:>6} {:>6} {:>7} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "endpoint",
            "requests",
            "ok",
            "4xx",
            "5xx",
            "timeout",
            "other",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms"
        );
        for row in self.endpoints.iter().chain(std::iter::once(&self.total)) {
            let l = row.latency_ms;
            let _ = writeln!(
                out,
                "{:<24} {:>8} {:>8} {:>6} {:>6} {:>7} {:>7} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
                row.endpoint,
                row.requests,
                row.ok,
                row.errors.status_4xx,
                row.errors.status_5xx,
                row.errors.timeout,
                row.errors.connect + row.errors.other,
                l.p50,
                l.p90,
                l.p99,
                l.p999,
                l.max
            );
        }
        if !self.cpu.is_empty() {
            let secs: f64 = self.cpu.iter().map(|c| c.cpu_secs).sum();
            let _ = writeln!(
                out,
                "watched processes: {secs:.2} CPU-s, {:.0} requests per CPU-second",
                if secs > 0.0 {
                    self.total.requests as f64 / secs
                } else {
                    0.0
                }
            );
        }
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        out
    }
}

fn round3(x: f64) -> f64 {
    (x * 1_000.0).round() / 1_000.0
}
