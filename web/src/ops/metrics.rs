//! Per-service traffic for the operations console, read from the Prometheus text that every
//! Tideway process serves on `/metrics`.
//!
//! [`parse`] turns one text into a [`Snapshot`]: per `service` label, the request and error
//! counters and the latency histogram merged over routes, methods and statuses. Snapshots of
//! several processes [`merge`](Snapshot::merge) into one. [`Traffic`] keeps the snapshots of
//! the last few seconds and turns them into rates and latency quantiles, so a page that
//! refreshes every couple of seconds shows smooth figures rather than the noise of one
//! interval.
//!
//! A snapshot also keeps each saga's outcome counters (`tideway_saga_*_total`, by `saga`)
//! and each service's outbox gauges (`tideway_outbox_pending_rows`,
//! `tideway_outbox_oldest_age_seconds`, by `service`), which the console's charts sample.

use std::{
    collections::{BTreeMap, VecDeque},
    time::{Duration, Instant},
};

const REQUESTS: &str = "tideway_http_requests_total";
const ERRORS: &str = "tideway_http_request_errors_total";
const DURATION_BUCKET: &str = "tideway_http_request_duration_seconds_bucket";
const DURATION_SUM: &str = "tideway_http_request_duration_seconds_sum";
const DURATION_COUNT: &str = "tideway_http_request_duration_seconds_count";
const SAGA_STARTED: &str = "tideway_saga_started_total";
const SAGA_COMPLETED: &str = "tideway_saga_completed_total";
const SAGA_COMPENSATED: &str = "tideway_saga_compensated_total";
const OUTBOX_PENDING: &str = "tideway_outbox_pending_rows";
const OUTBOX_AGE: &str = "tideway_outbox_oldest_age_seconds";

/// The counters of every service found in one or more `/metrics` texts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    services: BTreeMap<String, ServiceMetrics>,
    sagas: BTreeMap<String, SagaCounts>,
    outboxes: BTreeMap<String, OutboxGauges>,
}

/// One saga's outcome counters, as its process last counted them (since it started).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SagaCounts {
    /// Instances whose first step ran.
    pub started: f64,
    /// Instances that ran every step (the checkout: order confirmed).
    pub completed: f64,
    /// Instances that were compensated (the checkout: order cancelled).
    pub compensated: f64,
}

/// One service's outbox as its relay last measured it (only the relay holding the lease
/// measures; a process that never held it has no figures).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct OutboxGauges {
    /// Rows not published yet.
    pub pending_rows: Option<f64>,
    /// How long the oldest of them has waited, in seconds (0 without pending rows).
    pub oldest_age_s: Option<f64>,
}

/// One service's HTTP counters, summed over its routes, methods and statuses.
#[derive(Debug, Clone, Default, PartialEq)]
struct ServiceMetrics {
    requests: f64,
    errors_4xx: f64,
    errors_5xx: f64,
    latency: Histogram,
}

/// A cumulative latency histogram in seconds, as Prometheus keeps it.
#[derive(Debug, Clone, Default, PartialEq)]
struct Histogram {
    /// `(upper bound, requests at or below it)`, sorted by bound; `+Inf` last when present.
    buckets: Vec<(f64, f64)>,
    sum: f64,
    count: f64,
}

/// One service's traffic over the last window, for display.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceTraffic {
    /// The `service` label (`catalog`, `gateway`, …).
    pub service: String,
    /// Requests per second over the window.
    pub requests_per_s: f64,
    /// Requests answered 4xx or 5xx, per second.
    pub errors_per_s: f64,
    /// Of which 5xx, per second.
    pub server_errors_per_s: f64,
    /// Errors over requests in the window, from 0 to 1 (0 without requests).
    pub error_ratio: f64,
    /// The median latency in the window, in milliseconds; `None` without requests.
    pub p50_ms: Option<f64>,
    /// The 99th percentile latency in the window, in milliseconds; `None` without requests.
    pub p99_ms: Option<f64>,
    /// Requests since the process started (the counter as last read).
    pub requests_total: u64,
}

/// Turns successive snapshots into per-service rates over a sliding window.
///
/// The console keeps one behind a mutex and calls [`observe`](Self::observe) on each scrape.
#[derive(Debug, Clone)]
pub struct Traffic {
    window: Duration,
    ring: VecDeque<(Instant, Snapshot)>,
}

/// Which counter of a service a sample adds to.
enum Field {
    Requests,
    Errors4xx,
    Errors5xx,
    /// A histogram bucket with its upper bound in seconds.
    Bucket(f64),
    Sum,
    Count,
}

/// One parsed sample line: `name{labels} value`.
struct Sample<'a> {
    name: &'a str,
    labels: Vec<(&'a str, String)>,
    value: f64,
}

impl Snapshot {
    /// Adds the services of another process's snapshot.
    ///
    /// A service present in both is kept once, not summed: scraping the all-in-one process
    /// through several addresses returns the same text each time. The copy with more requests
    /// (the later read) wins.
    ///
    /// The same holds for a saga's counters (the copy that counted more wins) and an
    /// outbox's gauges (the larger of two readings).
    pub fn merge(&mut self, other: Snapshot) {
        for (service, metrics) in other.services {
            match self.services.get_mut(&service) {
                Some(kept) if kept.requests >= metrics.requests => {}
                Some(kept) => *kept = metrics,
                None => {
                    self.services.insert(service, metrics);
                }
            }
        }
        for (saga, counts) in other.sagas {
            let kept = self.sagas.entry(saga).or_default();
            if counts.total() > kept.total() {
                *kept = counts;
            }
        }
        for (service, gauges) in other.outboxes {
            let kept = self.outboxes.entry(service).or_default();
            kept.pending_rows = larger(kept.pending_rows, gauges.pending_rows);
            kept.oldest_age_s = larger(kept.oldest_age_s, gauges.oldest_age_s);
        }
    }

    /// Whether the HTTP metrics of `service` are in this snapshot.
    pub fn has_service(&self, service: &str) -> bool {
        self.services.contains_key(service)
    }

    /// Every saga's counters, by saga name.
    pub fn sagas(&self) -> impl Iterator<Item = (&str, SagaCounts)> {
        self.sagas
            .iter()
            .map(|(name, counts)| (name.as_str(), *counts))
    }

    /// Every service's outbox gauges, by service name.
    pub fn outboxes(&self) -> impl Iterator<Item = (&str, OutboxGauges)> {
        self.outboxes
            .iter()
            .map(|(name, gauges)| (name.as_str(), *gauges))
    }

    fn add(&mut self, sample: &Sample<'_>) {
        let value = sample.value;
        if !value.is_finite() || value < 0.0 {
            return;
        }
        match sample.name {
            SAGA_STARTED | SAGA_COMPLETED | SAGA_COMPENSATED => {
                let Some(saga) = sample.label("saga") else {
                    return;
                };
                let counts = self.sagas.entry(saga.to_owned()).or_default();
                match sample.name {
                    SAGA_STARTED => counts.started += value,
                    SAGA_COMPLETED => counts.completed += value,
                    _ => counts.compensated += value,
                }
                return;
            }
            OUTBOX_PENDING | OUTBOX_AGE => {
                let Some(service) = sample.label("service") else {
                    return;
                };
                let gauges = self.outboxes.entry(service.to_owned()).or_default();
                let slot = if sample.name == OUTBOX_PENDING {
                    &mut gauges.pending_rows
                } else {
                    &mut gauges.oldest_age_s
                };
                *slot = larger(*slot, Some(value));
                return;
            }
            _ => {}
        }
        let Some(service) = sample.label("service") else {
            return;
        };
        let Some(field) = Field::of(sample) else {
            return;
        };
        let metrics = self.services.entry(service.to_owned()).or_default();
        match field {
            Field::Requests => metrics.requests += value,
            Field::Errors4xx => metrics.errors_4xx += value,
            Field::Errors5xx => metrics.errors_5xx += value,
            Field::Bucket(le) => metrics.latency.add_bucket(le, value),
            Field::Sum => metrics.latency.sum += value,
            Field::Count => metrics.latency.count += value,
        }
    }
}

impl SagaCounts {
    fn total(&self) -> f64 {
        self.started + self.completed + self.compensated
    }
}

/// The larger of two readings, either of which may be missing.
fn larger(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

impl Field {
    /// Where a sample of one of our metrics goes; `None` for anything else.
    fn of(sample: &Sample<'_>) -> Option<Self> {
        match sample.name {
            REQUESTS => Some(Self::Requests),
            ERRORS => match sample.label("class")? {
                "4xx" => Some(Self::Errors4xx),
                "5xx" => Some(Self::Errors5xx),
                _ => None,
            },
            DURATION_BUCKET => sample
                .label("le")
                .and_then(parse_value)
                .filter(|le| !le.is_nan())
                .map(Self::Bucket),
            DURATION_SUM => Some(Self::Sum),
            DURATION_COUNT => Some(Self::Count),
            _ => None,
        }
    }
}

impl ServiceMetrics {
    /// Requests answered 4xx or 5xx.
    fn errors(&self) -> f64 {
        self.errors_4xx + self.errors_5xx
    }

    /// Whether any counter went down since `earlier`: the process restarted.
    fn reset_since(&self, earlier: &Self) -> bool {
        self.requests < earlier.requests
            || self.errors_4xx < earlier.errors_4xx
            || self.errors_5xx < earlier.errors_5xx
            || self.latency.reset_since(&earlier.latency)
    }
}

impl Histogram {
    fn add_bucket(&mut self, le: f64, value: f64) {
        match self.buckets.binary_search_by(|(b, _)| b.total_cmp(&le)) {
            Ok(i) => self.buckets[i].1 += value,
            Err(i) => self.buckets.insert(i, (le, value)),
        }
    }

    fn reset_since(&self, earlier: &Self) -> bool {
        self.count < earlier.count
            || earlier
                .buckets
                .iter()
                .any(|(le, n)| self.cumulative_at(*le).is_some_and(|now| now < *n))
    }

    fn cumulative_at(&self, le: f64) -> Option<f64> {
        self.buckets
            .binary_search_by(|(b, _)| b.total_cmp(&le))
            .ok()
            .map(|i| self.buckets[i].1)
    }

    /// Adds what `later` counted beyond `earlier` (all of `later` after a reset).
    fn add_increase(&mut self, earlier: &Self, later: &Self) {
        let reset = later.reset_since(earlier);
        for &(le, n) in &later.buckets {
            let before = if reset {
                0.0
            } else {
                earlier.cumulative_at(le).unwrap_or(0.0)
            };
            self.add_bucket(le, n - before);
        }
        let (sum, count) = if reset {
            (later.sum, later.count)
        } else {
            (later.sum - earlier.sum, later.count - earlier.count)
        };
        self.sum += sum.max(0.0);
        self.count += count;
    }

    /// The `q` quantile (0..=1) in seconds, interpolating linearly inside the bucket that
    /// holds it, as Prometheus's `histogram_quantile` does; `None` without observations.
    fn quantile(&self, q: f64) -> Option<f64> {
        let (&(last_le, _), _) = self.buckets.split_last()?;
        // Counts must not decrease with the bound; a torn read could make them.
        let mut cumulative = Vec::with_capacity(self.buckets.len());
        let mut running: f64 = 0.0;
        for &(le, n) in &self.buckets {
            running = running.max(n);
            cumulative.push((le, running));
        }
        let total = if last_le == f64::INFINITY {
            running
        } else {
            running.max(self.count)
        };
        if total <= 0.0 || !q.is_finite() {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total;
        let i = cumulative
            .iter()
            .position(|&(_, n)| n >= rank)
            .unwrap_or(cumulative.len() - 1);
        let (end, count) = cumulative[i];
        let (start, below) = if i == 0 {
            (0.0_f64.min(end), 0.0)
        } else {
            cumulative[i - 1]
        };
        if end == f64::INFINITY {
            // Above the highest finite bound: that bound is all we know.
            return Some(if i == 0 { 0.0 } else { start });
        }
        if count <= below {
            return Some(end);
        }
        Some(start + (end - start) * (rank - below) / (count - below))
    }
}

impl Default for Traffic {
    /// A 20-second window.
    fn default() -> Self {
        Self::new(Duration::from_secs(20))
    }
}

impl Traffic {
    /// The most snapshots kept, however often [`observe`](Self::observe) is called.
    const MAX_SNAPSHOTS: usize = 64;

    /// Rates over the last `window` (10–30 s suits a page refreshed every 2 s).
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            ring: VecDeque::new(),
        }
    }

    /// Records `snapshot`, read at `now`, and returns every service's traffic over the window,
    /// sorted by service name.
    ///
    /// Rates run from the oldest snapshot kept within the window (or, after a longer pause,
    /// the latest one before it) to this one. A counter that went down means its process
    /// restarted: the increase counts from zero, never negative. A service seen for the first
    /// time has rates of 0 and quantiles from its whole histogram.
    pub fn observe(&mut self, snapshot: Snapshot, now: Instant) -> Vec<ServiceTraffic> {
        let mut dropped = None;
        while let Some((at, _)) = self.ring.front() {
            if now.saturating_duration_since(*at) <= self.window
                && self.ring.len() < Self::MAX_SNAPSHOTS
            {
                break;
            }
            dropped = self.ring.pop_front();
        }
        if self.ring.is_empty() {
            // Nothing within the window: keep the latest older read as the baseline.
            self.ring.extend(dropped);
        }
        self.ring.push_back((now, snapshot));

        let Some((_, latest)) = self.ring.back() else {
            return Vec::new();
        };
        latest
            .services
            .keys()
            .map(|service| self.traffic_of(service))
            .collect()
    }

    fn traffic_of(&self, service: &str) -> ServiceTraffic {
        // The service's reads in time order; a process that was not scraped once is skipped.
        let reads: Vec<(Instant, &ServiceMetrics)> = self
            .ring
            .iter()
            .filter_map(|(at, s)| s.services.get(service).map(|m| (*at, m)))
            .collect();
        let (first_at, last_at, last) = match (reads.first(), reads.last()) {
            (Some(&(first_at, _)), Some(&(last_at, last))) => (first_at, last_at, last),
            _ => return ServiceTraffic::idle(service),
        };
        let seconds = last_at.saturating_duration_since(first_at).as_secs_f64();
        let requests_total = last.requests.round() as u64;
        if reads.len() < 2 || seconds <= 0.0 {
            return ServiceTraffic {
                requests_total,
                p50_ms: last.latency.quantile(0.5).map(to_ms),
                p99_ms: last.latency.quantile(0.99).map(to_ms),
                ..ServiceTraffic::idle(service)
            };
        }

        let mut increase = ServiceMetrics::default();
        for pair in reads.windows(2) {
            let (earlier, later) = (pair[0].1, pair[1].1);
            let base = if later.reset_since(earlier) {
                &ServiceMetrics::default()
            } else {
                earlier
            };
            increase.requests += later.requests - base.requests;
            increase.errors_4xx += later.errors_4xx - base.errors_4xx;
            increase.errors_5xx += later.errors_5xx - base.errors_5xx;
            increase.latency.add_increase(&base.latency, &later.latency);
        }
        let errors = increase.errors();
        ServiceTraffic {
            service: service.to_owned(),
            requests_per_s: increase.requests / seconds,
            errors_per_s: errors / seconds,
            server_errors_per_s: increase.errors_5xx / seconds,
            error_ratio: if increase.requests > 0.0 {
                (errors / increase.requests).clamp(0.0, 1.0)
            } else {
                0.0
            },
            p50_ms: increase.latency.quantile(0.5).map(to_ms),
            p99_ms: increase.latency.quantile(0.99).map(to_ms),
            requests_total,
        }
    }
}

impl ServiceTraffic {
    fn idle(service: &str) -> Self {
        Self {
            service: service.to_owned(),
            requests_per_s: 0.0,
            errors_per_s: 0.0,
            server_errors_per_s: 0.0,
            error_ratio: 0.0,
            p50_ms: None,
            p99_ms: None,
            requests_total: 0,
        }
    }
}

impl Sample<'_> {
    fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads the Tideway HTTP, saga and outbox metrics of one `/metrics` text (Prometheus text
/// format 0.0.4).
///
/// Comments, other metrics, series without a `service` label and malformed lines are
/// skipped.
pub fn parse(text: &str) -> Snapshot {
    let mut snapshot = Snapshot::default();
    for line in text.lines() {
        if let Some(sample) = parse_line(line) {
            snapshot.add(&sample);
        }
    }
    snapshot
}

fn parse_line(line: &str) -> Option<Sample<'_>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if !matches!(
        name,
        REQUESTS
            | ERRORS
            | DURATION_BUCKET
            | DURATION_SUM
            | DURATION_COUNT
            | SAGA_STARTED
            | SAGA_COMPLETED
            | SAGA_COMPENSATED
            | OUTBOX_PENDING
            | OUTBOX_AGE
    ) {
        return None;
    }
    let mut rest = line[name_end..].trim_start();
    let mut labels = Vec::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(after_brace)?;
        labels = parsed;
        rest = after;
    }
    // The value, then an optional timestamp, separated by whitespace.
    let mut fields = rest.split_whitespace();
    let value = parse_value(fields.next()?)?;
    match (fields.next(), fields.next()) {
        (None, _) => {}
        (Some(ts), None) if ts.parse::<i64>().is_ok() => {}
        _ => return None,
    }
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// Parses `name="value",…}` (after the opening brace), returning the labels and what
/// follows the closing brace. Values may hold `\\`, `\"` and `\n` escapes, commas and braces.
fn parse_labels(mut rest: &str) -> Option<(Vec<(&str, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, after));
        }
        let name_end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))?;
        let name = &rest[..name_end];
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            return None;
        }
        rest = rest[name_end..].trim_start().strip_prefix('=')?;
        rest = rest.trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()? {
                    (_, 'n') => value.push('\n'),
                    (_, c) => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((name, value));
        rest = rest[end + 1..].trim_start();
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return None;
        }
    }
}

/// A sample value or bucket bound: a float, `+Inf`, `-Inf` or `NaN`.
fn parse_value(text: &str) -> Option<f64> {
    text.parse::<f64>().ok()
}

fn to_ms(seconds: f64) -> f64 {
    seconds * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Part of a real `/metrics` text of `tideway up` (three of its series, verbatim).
    const REAL: &str = r#"# TYPE tideway_http_requests_total counter
tideway_http_requests_total{service="gateway",method="GET",route="/api/v1/basket",status="401"} 1
tideway_http_requests_total{service="catalog",method="GET",route="/api/v1/catalog/items/{id}",status="404"} 1
tideway_http_requests_total{service="catalog",method="GET",route="/api/v1/catalog/items",status="200"} 3

# TYPE tideway_http_request_errors_total counter
tideway_http_request_errors_total{service="gateway",method="GET",route="/api/v1/basket",status="401",class="4xx"} 1
tideway_http_request_errors_total{service="catalog",method="GET",route="/api/v1/catalog/items/{id}",status="404",class="4xx"} 1

# TYPE tideway_http_request_duration_seconds histogram
tideway_http_request_duration_seconds_bucket{service="catalog",method="GET",route="/api/v1/catalog/items",status="200",le="0.0005"} 0
tideway_http_request_duration_seconds_bucket{service="catalog",method="GET",route="/api/v1/catalog/items",status="200",le="0.001"} 0
tideway_http_request_duration_seconds_bucket{service="catalog",method="GET",route="/api/v1/catalog/items",status="200",le="0.0025"} 1
tideway_http_request_duration_seconds_bucket{service="catalog",method="GET",route="/api/v1/catalog/items",status="200",le="0.005"} 2
tideway_http_request_duration_seconds_bucket{service="catalog",method="GET",route="/api/v1/catalog/items",status="200",le="0.01"} 3
tideway_http_request_duration_seconds_bucket{service="catalog",method="GET",route="/api/v1/catalog/items",status="200",le="0.025"} 3
tideway_http_request_duration_seconds_bucket{service="catalog",method="GET",route="/api/v1/catalog/items",status="200",le="0.05"} 3
tideway_http_request_duration_seconds_bucket{service="catalog",method="GET",route="/api/v1/catalog/items",status="200",le="0.1"} 3
tideway_http_request_duration_seconds_bucket{service="catalog",method="GET",route="/api/v1/catalog/items",status="200",le="0.25"} 3
tideway_http_request_duration_seconds_bucket{service="catalog",method="GET",route="/api/v1/catalog/items",status="200",le="0.5"} 3
tideway_http_request_duration_seconds_bucket{service="catalog",method="GET",route="/api/v1/catalog/items",status="200",le="1"} 3
tideway_http_request_duration_seconds_bucket{service="catalog",method="GET",route="/api/v1/catalog/items",status="200",le="2.5"} 3
tideway_http_request_duration_seconds_bucket{service="catalog",method="GET",route="/api/v1/catalog/items",status="200",le="5"} 3
tideway_http_request_duration_seconds_bucket{service="catalog",method="GET",route="/api/v1/catalog/items",status="200",le="10"} 3
tideway_http_request_duration_seconds_bucket{service="catalog",method="GET",route="/api/v1/catalog/items",status="200",le="+Inf"} 3
tideway_http_request_duration_seconds_sum{service="catalog",method="GET",route="/api/v1/catalog/items",status="200"} 0.011275732
tideway_http_request_duration_seconds_count{service="catalog",method="GET",route="/api/v1/catalog/items",status="200"} 3
tideway_http_request_duration_seconds_bucket{service="gateway",method="GET",route="/api/v1/basket",status="401",le="0.0005"} 1
tideway_http_request_duration_seconds_bucket{service="gateway",method="GET",route="/api/v1/basket",status="401",le="0.001"} 1
tideway_http_request_duration_seconds_bucket{service="gateway",method="GET",route="/api/v1/basket",status="401",le="0.0025"} 1
tideway_http_request_duration_seconds_bucket{service="gateway",method="GET",route="/api/v1/basket",status="401",le="0.005"} 1
tideway_http_request_duration_seconds_bucket{service="gateway",method="GET",route="/api/v1/basket",status="401",le="0.01"} 1
tideway_http_request_duration_seconds_bucket{service="gateway",method="GET",route="/api/v1/basket",status="401",le="0.025"} 1
tideway_http_request_duration_seconds_bucket{service="gateway",method="GET",route="/api/v1/basket",status="401",le="0.05"} 1
tideway_http_request_duration_seconds_bucket{service="gateway",method="GET",route="/api/v1/basket",status="401",le="0.1"} 1
tideway_http_request_duration_seconds_bucket{service="gateway",method="GET",route="/api/v1/basket",status="401",le="0.25"} 1
tideway_http_request_duration_seconds_bucket{service="gateway",method="GET",route="/api/v1/basket",status="401",le="0.5"} 1
tideway_http_request_duration_seconds_bucket{service="gateway",method="GET",route="/api/v1/basket",status="401",le="1"} 1
tideway_http_request_duration_seconds_bucket{service="gateway",method="GET",route="/api/v1/basket",status="401",le="2.5"} 1
tideway_http_request_duration_seconds_bucket{service="gateway",method="GET",route="/api/v1/basket",status="401",le="5"} 1
tideway_http_request_duration_seconds_bucket{service="gateway",method="GET",route="/api/v1/basket",status="401",le="10"} 1
tideway_http_request_duration_seconds_bucket{service="gateway",method="GET",route="/api/v1/basket",status="401",le="+Inf"} 1
tideway_http_request_duration_seconds_sum{service="gateway",method="GET",route="/api/v1/basket",status="401"} 0.000201819
tideway_http_request_duration_seconds_count{service="gateway",method="GET",route="/api/v1/basket",status="401"} 1
tideway_http_request_duration_seconds_bucket{service="catalog",method="GET",route="/api/v1/catalog/items/{id}",status="404",le="0.0005"} 1
tideway_http_request_duration_seconds_bucket{service="catalog",method="GET",route="/api/v1/catalog/items/{id}",status="404",le="0.001"} 1
tideway_http_request_duration_seconds_bucket{service="catalog",method="GET",route="/api/v1/catalog/items/{id}",status="404",le="0.0025"} 1
tideway_http_request_duration_seconds_bucket{service="catalog",method="GET",route="/api/v1/catalog/items/{id}",status="404",le="0.005"} 1
tideway_http_request_duration_seconds_bucket{service="catalog",method="GET",route="/api/v1/catalog/items/{id}",status="404",le="0.01"} 1
tideway_http_request_duration_seconds_bucket{service="catalog",method="GET",route="/api/v1/catalog/items/{id}",status="404",le="0.025"} 1
tideway_http_request_duration_seconds_bucket{service="catalog",method="GET",route="/api/v1/catalog/items/{id}",status="404",le="0.05"} 1
tideway_http_request_duration_seconds_bucket{service="catalog",method="GET",route="/api/v1/catalog/items/{id}",status="404",le="0.1"} 1
tideway_http_request_duration_seconds_bucket{service="catalog",method="GET",route="/api/v1/catalog/items/{id}",status="404",le="0.25"} 1
tideway_http_request_duration_seconds_bucket{service="catalog",method="GET",route="/api/v1/catalog/items/{id}",status="404",le="0.5"} 1
tideway_http_request_duration_seconds_bucket{service="catalog",method="GET",route="/api/v1/catalog/items/{id}",status="404",le="1"} 1
tideway_http_request_duration_seconds_bucket{service="catalog",method="GET",route="/api/v1/catalog/items/{id}",status="404",le="2.5"} 1
tideway_http_request_duration_seconds_bucket{service="catalog",method="GET",route="/api/v1/catalog/items/{id}",status="404",le="5"} 1
tideway_http_request_duration_seconds_bucket{service="catalog",method="GET",route="/api/v1/catalog/items/{id}",status="404",le="10"} 1
tideway_http_request_duration_seconds_bucket{service="catalog",method="GET",route="/api/v1/catalog/items/{id}",status="404",le="+Inf"} 1
tideway_http_request_duration_seconds_sum{service="catalog",method="GET",route="/api/v1/catalog/items/{id}",status="404"} 0.000215774
tideway_http_request_duration_seconds_count{service="catalog",method="GET",route="/api/v1/catalog/items/{id}",status="404"} 1"#;

    /// A text of one service in the exporter's shape: `requests` requests on one route, of
    /// which `errors_5xx` failed, with cumulative latency `buckets` (`le` → count).
    fn text(service: &str, requests: u64, errors_5xx: u64, buckets: &[(&str, u64)]) -> String {
        let series = format!(r#"service="{service}",method="GET",route="/api/v1/x",status="200""#);
        let mut out = format!(
            "# TYPE tideway_http_requests_total counter\n\
             tideway_http_requests_total{{{series}}} {requests}\n\n\
             # TYPE tideway_http_request_errors_total counter\n\
             tideway_http_request_errors_total{{{series},class=\"5xx\"}} {errors_5xx}\n\n\
             # TYPE tideway_http_request_duration_seconds histogram\n"
        );
        for (le, n) in buckets {
            out += &format!(
                "tideway_http_request_duration_seconds_bucket{{{series},le=\"{le}\"}} {n}\n"
            );
        }
        let count = buckets.last().map_or(0, |(_, n)| *n);
        out += &format!("tideway_http_request_duration_seconds_count{{{series}}} {count}\n");
        out
    }

    /// `n` requests, all between 1 and 2.5 ms.
    fn fast(service: &str, n: u64) -> Snapshot {
        parse(&text(
            service,
            n,
            0,
            &[
                ("0.0005", 0),
                ("0.001", 0),
                ("0.0025", n),
                ("0.005", n),
                ("+Inf", n),
            ],
        ))
    }

    fn one<'a>(traffic: &'a [ServiceTraffic], service: &str) -> &'a ServiceTraffic {
        traffic
            .iter()
            .find(|t| t.service == service)
            .unwrap_or_else(|| panic!("{service} in {traffic:?}"))
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn parses_a_real_metrics_text() {
        let snapshot = parse(REAL);
        let names: Vec<&str> = snapshot.services.keys().map(String::as_str).collect();
        assert_eq!(names, ["catalog", "gateway"]);

        let catalog = &snapshot.services["catalog"];
        assert_eq!(catalog.requests, 4.0);
        assert_eq!(catalog.errors_4xx, 1.0);
        assert_eq!(catalog.errors_5xx, 0.0);
        assert_eq!(catalog.errors(), 1.0);
        let latency = &catalog.latency;
        assert_eq!(latency.count, 4.0);
        assert!(close(latency.sum, 0.011275732 + 0.000215774));
        // Merged over both routes: every bound once, cumulative, +Inf last.
        assert_eq!(latency.buckets.len(), 15);
        assert_eq!(latency.buckets[0], (0.0005, 1.0));
        assert_eq!(latency.buckets[2], (0.0025, 2.0));
        assert_eq!(latency.buckets[14], (f64::INFINITY, 4.0));
        // Rank 2 of 4 is the top of (1 ms, 2.5 ms]; rank 3.96 is 96% into (5 ms, 10 ms].
        assert!(close(latency.quantile(0.5).unwrap(), 0.0025));
        assert!(close(latency.quantile(0.99).unwrap(), 0.0098));

        let gateway = &snapshot.services["gateway"];
        assert_eq!(
            (gateway.requests, gateway.errors_4xx, gateway.latency.count),
            (1.0, 1.0, 1.0)
        );
        assert!(!snapshot.services.contains_key("payment"));
    }

    #[test]
    fn label_values_may_hold_escaped_quotes_commas_and_braces() {
        let text = concat!(
            r#"tideway_http_requests_total{route="/a,\"b\"}",service="odd \"svc\", too",status="200"} 7"#,
            "\n",
            r#"tideway_http_requests_total{service="back\\slash",} 2 1712345678000"#,
            "\n",
            r#"tideway_http_requests_total { service = "spaced" } 3"#,
        );
        let snapshot = parse(text);
        assert_eq!(snapshot.services[r#"odd "svc", too"#].requests, 7.0);
        assert_eq!(snapshot.services[r"back\slash"].requests, 2.0);
        assert_eq!(snapshot.services["spaced"].requests, 3.0);
    }

    #[test]
    fn garbage_is_skipped_without_a_panic() {
        let garbage = [
            "",
            "   ",
            "# HELP tideway_http_requests_total Requests.",
            "tideway_http_requests_total",
            "tideway_http_requests_total 5",
            "tideway_http_requests_total{service=\"a\"}",
            "tideway_http_requests_total{service=\"a\"} five",
            "tideway_http_requests_total{service=\"a\"} NaN",
            "tideway_http_requests_total{service=\"a\"} -3",
            "tideway_http_requests_total{service=\"a\"} 1 2 3",
            "tideway_http_requests_total{service=\"a} 5",
            "tideway_http_requests_total{service=a} 5",
            "tideway_http_requests_total{=\"a\"} 5",
            "tideway_http_requests_total{service=\"a\" route=\"b\"} 5",
            "tideway_http_requests_total{service=\"a\\",
            "tideway_http_request_duration_seconds_bucket{service=\"a\",le=\"soon\"} 5",
            "tideway_http_requests_totalx{service=\"a\"} 5",
            "process_cpu_seconds_total{service=\"a\"} 5",
            "\u{0}\u{ffff}{{{\"\"}}} é 🦀",
        ];
        let snapshot = parse(&garbage.join("\n"));
        assert!(snapshot.services.is_empty(), "{snapshot:?}");

        // Every truncation of every real line parses to something or nothing, never panics.
        for line in REAL.lines() {
            for (i, _) in line.char_indices() {
                let _ = parse(&line[..i]);
            }
        }
        let mut traffic = Traffic::default();
        assert!(
            traffic
                .observe(parse("\u{1}garbage"), Instant::now())
                .is_empty()
        );
    }

    #[test]
    fn reads_saga_counters_and_outbox_gauges() {
        let text = concat!(
            "# TYPE tideway_saga_started_total counter\n",
            "tideway_saga_started_total{saga=\"checkout\"} 5\n",
            "tideway_saga_completed_total{saga=\"checkout\"} 3\n",
            "tideway_saga_compensated_total{saga=\"checkout\"} 1\n",
            "tideway_saga_started_total 9\n",
            "# TYPE tideway_outbox_pending_rows gauge\n",
            "tideway_outbox_pending_rows{service=\"ordering\"} 2\n",
            "tideway_outbox_oldest_age_seconds{service=\"ordering\"} 0.75\n",
            "tideway_outbox_pending_rows{service=\"payment\"} 0\n",
            "tideway_outbox_oldest_age_seconds{service=\"payment\"} NaN\n",
            "tideway_outbox_pending_rows 4\n",
        );
        let snapshot = parse(text);
        let checkout = SagaCounts {
            started: 5.0,
            completed: 3.0,
            compensated: 1.0,
        };
        assert_eq!(
            snapshot.sagas().collect::<Vec<_>>(),
            [("checkout", checkout)]
        );
        let outboxes: BTreeMap<&str, OutboxGauges> = snapshot.outboxes().collect();
        assert_eq!(outboxes.len(), 2, "{outboxes:?}");
        assert_eq!(
            outboxes["ordering"],
            OutboxGauges {
                pending_rows: Some(2.0),
                oldest_age_s: Some(0.75)
            }
        );
        // NaN is no reading.
        assert_eq!(
            outboxes["payment"],
            OutboxGauges {
                pending_rows: Some(0.0),
                oldest_age_s: None
            }
        );
        assert!(!snapshot.has_service("ordering"), "no HTTP metrics in it");

        // Merged: the saga copy that counted more wins; a gauge keeps the larger reading.
        let mut merged = parse(text);
        merged.merge(parse(concat!(
            "tideway_saga_started_total{saga=\"checkout\"} 6\n",
            "tideway_outbox_pending_rows{service=\"ordering\"} 1\n",
            "tideway_outbox_oldest_age_seconds{service=\"payment\"} 4\n",
        )));
        assert_eq!(merged.sagas().collect::<Vec<_>>(), [("checkout", checkout)]);
        let outboxes: BTreeMap<&str, OutboxGauges> = merged.outboxes().collect();
        assert_eq!(outboxes["ordering"].pending_rows, Some(2.0));
        assert_eq!(outboxes["payment"].oldest_age_s, Some(4.0));
        merged.merge(parse(concat!(
            "tideway_saga_started_total{saga=\"checkout\"} 7\n",
            "tideway_saga_completed_total{saga=\"checkout\"} 5\n",
        )));
        let later = SagaCounts {
            started: 7.0,
            completed: 5.0,
            compensated: 0.0,
        };
        assert_eq!(merged.sagas().collect::<Vec<_>>(), [("checkout", later)]);
    }

    #[test]
    fn merging_keeps_one_copy_of_a_service_scraped_twice() {
        // The all-in-one process scraped through two addresses: the same text twice.
        let mut merged = parse(REAL);
        merged.merge(parse(REAL));
        assert_eq!(merged, parse(REAL));

        // Split processes: each its own services, all kept.
        merged.merge(fast("payment", 5));
        assert_eq!(merged.services["payment"].requests, 5.0);
        assert_eq!(merged.services["catalog"].requests, 4.0);

        // A later read of the same process wins over an earlier one.
        let mut reads = fast("payment", 5);
        reads.merge(fast("payment", 9));
        reads.merge(fast("payment", 7));
        assert_eq!(reads.services["payment"].requests, 9.0);
    }

    #[test]
    fn rates_come_from_two_snapshots_two_seconds_apart() {
        let mut traffic = Traffic::default();
        let start = Instant::now();
        let buckets_before = [("0.001", 10), ("0.01", 80), ("0.1", 100), ("+Inf", 100)];
        let buckets_after = [("0.001", 10), ("0.01", 80), ("0.1", 120), ("+Inf", 120)];
        let first = traffic.observe(parse(&text("catalog", 100, 4, &buckets_before)), start);
        assert_eq!(one(&first, "catalog").requests_per_s, 0.0);

        let later = start + Duration::from_secs(2);
        let mut snapshot = parse(&text("catalog", 120, 6, &buckets_after));
        snapshot.merge(fast("basket", 0));
        let traffic = traffic.observe(snapshot, later);
        let names: Vec<&str> = traffic.iter().map(|t| t.service.as_str()).collect();
        assert_eq!(names, ["basket", "catalog"]);

        let catalog = one(&traffic, "catalog");
        assert!(close(catalog.requests_per_s, 10.0));
        assert!(close(catalog.errors_per_s, 1.0));
        assert!(close(catalog.server_errors_per_s, 1.0));
        assert!(close(catalog.error_ratio, 0.1));
        assert_eq!(catalog.requests_total, 120);
        // All 20 new requests took between 10 and 100 ms.
        assert!(close(catalog.p50_ms.unwrap(), 55.0));
        assert!(close(catalog.p99_ms.unwrap(), 99.1));

        let basket = one(&traffic, "basket");
        assert_eq!((basket.requests_per_s, basket.error_ratio), (0.0, 0.0));
        assert_eq!((basket.p50_ms, basket.p99_ms), (None, None));
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        let mut traffic = Traffic::default();
        let start = Instant::now();
        traffic.observe(fast("catalog", 0), start);
        let traffic = traffic.observe(fast("catalog", 100), start + Duration::from_secs(2));
        let catalog = one(&traffic, "catalog");
        let p50 = catalog.p50_ms.unwrap();
        let p99 = catalog.p99_ms.unwrap();
        assert!(1.0 < p50 && p50 < 2.5, "{p50}");
        assert!(close(p50, 1.75));
        assert!(p50 < p99 && p99 <= 2.5, "{p99}");
        assert!(close(catalog.requests_per_s, 50.0));

        // Beyond the highest finite bound, the quantile is that bound.
        let slow = parse(&text("slow", 4, 0, &[("0.5", 1), ("10", 1), ("+Inf", 4)]));
        let latency = &slow.services["slow"].latency;
        assert_eq!(latency.quantile(0.99), Some(10.0));
        assert_eq!(latency.quantile(0.1), Some(0.2));
        assert_eq!(Histogram::default().quantile(0.5), None);
    }

    #[test]
    fn the_first_observation_has_no_rates_but_quantiles_of_everything() {
        let mut traffic = Traffic::default();
        let traffic = traffic.observe(parse(REAL), Instant::now());
        let catalog = one(&traffic, "catalog");
        assert_eq!(catalog.requests_per_s, 0.0);
        assert_eq!(catalog.errors_per_s, 0.0);
        assert_eq!(catalog.requests_total, 4);
        assert!(close(catalog.p50_ms.unwrap(), 2.5));
        assert!(close(catalog.p99_ms.unwrap(), 9.8));
    }

    #[test]
    fn a_restarted_process_counts_from_zero() {
        let mut traffic = Traffic::default();
        let start = Instant::now();
        traffic.observe(fast("catalog", 1000), start);
        // Restarted, and served 10 requests since.
        let after = traffic.observe(fast("catalog", 10), start + Duration::from_secs(2));
        let catalog = one(&after, "catalog");
        assert!(close(catalog.requests_per_s, 5.0));
        assert!(close(catalog.p50_ms.unwrap(), 1.75));
        assert_eq!(catalog.requests_total, 10);

        // A restart between two reads of the window still counts what came after it.
        let after = traffic.observe(fast("catalog", 30), start + Duration::from_secs(4));
        assert!(close(one(&after, "catalog").requests_per_s, 7.5));
        for t in &after {
            assert!(t.requests_per_s >= 0.0 && t.errors_per_s >= 0.0);
        }
    }

    #[test]
    fn the_window_slides_and_survives_a_pause() {
        let mut traffic = Traffic::new(Duration::from_secs(10));
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        // 10 requests per second until 20 s, then 40 per second.
        for s in (0..=20).step_by(2) {
            traffic.observe(fast("catalog", s * 10), at(s));
        }
        for s in (22..=30).step_by(2) {
            let n = 200 + (s - 20) * 40;
            let rate = one(&traffic.observe(fast("catalog", n), at(s)), "catalog").requests_per_s;
            assert!(rate > 10.0 && rate <= 40.0, "{rate} at {s} s");
        }
        // The window now holds only the faster reads.
        let rate = one(&traffic.observe(fast("catalog", 640), at(31)), "catalog").requests_per_s;
        assert!(close(rate, 40.0), "{rate}");
        assert!(traffic.ring.len() <= 7);

        // After a minute without reads, the latest read before it is the baseline.
        let rate = one(&traffic.observe(fast("catalog", 700), at(91)), "catalog").requests_per_s;
        assert!(close(rate, 1.0), "{rate}");
    }

    #[test]
    fn a_service_missing_from_one_read_is_not_counted_twice() {
        let mut traffic = Traffic::default();
        let start = Instant::now();
        traffic.observe(fast("catalog", 100), start);
        // Its process did not answer this scrape.
        let missing = traffic.observe(fast("basket", 1), start + Duration::from_secs(2));
        assert!(missing.iter().all(|t| t.service != "catalog"));
        let back = traffic.observe(fast("catalog", 140), start + Duration::from_secs(4));
        assert!(close(one(&back, "catalog").requests_per_s, 10.0));
    }
}
