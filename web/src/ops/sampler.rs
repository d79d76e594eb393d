//! The console's background sampler: every [`Sampler::every`] (10 s by default) it reads
//! every service's `/metrics` — the same scrape as the traffic panel, in either shape —
//! and keeps the last 15 minutes of readings for the charts, whether or not anyone has the
//! console open.
//!
//! A reading is one value per series: requests/s, error rate and p99 per service, saga
//! outcomes per minute per saga, outbox pending rows and oldest age per service. Each series
//! lives in a ring of fixed size ([`SPAN`] / interval + 1 slots), all rings in step with one
//! ring of reading times, so memory stays bounded however long the process runs. A series a
//! reading lacks (a process that did not answer, a relay that lost its lease) gets a gap;
//! a series with nothing but gaps left is forgotten; at most [`MAX_SERIES`] are kept.
//!
//! The task is owned: a [`TaskTracker`] and a [`CancellationToken`], cancelled by
//! [`Sampler::shutdown`] or when the console is dropped.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::future::join_all;
use tideway_runtime::client::Transport;
use tokio_util::{
    sync::{CancellationToken, DropGuard},
    task::TaskTracker,
};

use super::metrics::{SagaCounts, Snapshot, Traffic};

/// How far back the charts go.
pub(crate) const SPAN: Duration = Duration::from_secs(15 * 60);
/// How often the sampler reads, unless told otherwise.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(10);
/// The shortest and the longest sampling interval accepted.
pub const EVERY_RANGE: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(60));
/// The most series kept at once; a new one past it is not recorded.
pub(crate) const MAX_SERIES: usize = 96;

/// What a series is drawn in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Chart {
    /// Requests per second, per service.
    Requests,
    /// Share of requests answered 4xx or 5xx, in percent, per service.
    ErrorRate,
    /// 99th percentile latency in milliseconds, per service.
    P99,
    /// Saga outcomes per minute: `<saga> started|completed|compensated`.
    Sagas,
    /// Outbox rows not yet published, per service.
    OutboxPending,
    /// Age of the oldest unpublished outbox row in seconds, per service.
    OutboxAge,
}

/// A series: the chart it belongs to and its name there.
pub(crate) type Key = (Chart, String);

/// At most `capacity` values, oldest first: pushing into a full ring drops the oldest.
#[derive(Debug, Clone)]
pub(crate) struct Ring<T> {
    items: VecDeque<T>,
    capacity: usize,
}

/// The rings of the last readings: when each was taken, and every series's value in each.
///
/// Invariant: every series ring holds exactly as many slots as `times`.
#[derive(Debug)]
pub(crate) struct History {
    capacity: usize,
    times: Ring<Instant>,
    series: BTreeMap<Key, Ring<Option<f64>>>,
}

/// A series as a chart draws it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Series {
    /// Its name in the legend.
    pub(crate) name: String,
    /// Runs of `(seconds before now, value)`, oldest first, split where readings lacked it.
    pub(crate) runs: Vec<Vec<(f64, f64)>>,
}

/// Turns successive snapshots into readings: rates need an earlier read.
#[derive(Debug, Default)]
pub(crate) struct Reader {
    traffic: Traffic,
    /// When the previous snapshot was read.
    previous: Option<Instant>,
    /// The services of the previous snapshot: a service that was not in it has no rate in
    /// this reading (its first read, or the first after one that missed it).
    last: BTreeSet<String>,
    /// Each saga's counters when last seen, so a reading that missed the ordering process
    /// does not count its totals again once it answers.
    sagas: BTreeMap<String, (Instant, SagaCounts)>,
}

/// The background sampler and what it has read.
pub(crate) struct Sampler {
    every: Duration,
    services: Vec<Transport>,
    history: Arc<Mutex<History>>,
    started: AtomicBool,
    tracker: TaskTracker,
    token: CancellationToken,
    /// Cancels the task when the console is dropped without [`Sampler::shutdown`].
    _stop_on_drop: DropGuard,
}

impl<T> Ring<T> {
    /// An empty ring of `capacity` slots (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            items: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    /// Appends `item`, dropping the oldest when full.
    pub(crate) fn push(&mut self, item: T) {
        if self.items.len() == self.capacity {
            self.items.pop_front();
        }
        self.items.push_back(item);
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.items.iter()
    }

    /// The newest item.
    pub(crate) fn last(&self) -> Option<&T> {
        self.items.back()
    }
}

impl History {
    /// Rings long enough for [`SPAN`] of readings taken every `every`.
    pub(crate) fn new(every: Duration) -> Self {
        let every = every.max(EVERY_RANGE.0).as_millis().max(1);
        let slots = SPAN.as_millis().div_ceil(every) + 1;
        let capacity = usize::try_from(slots).unwrap_or(usize::MAX);
        Self {
            capacity,
            times: Ring::new(capacity),
            series: BTreeMap::new(),
        }
    }

    /// Appends the reading taken at `at`. A series it lacks gets a gap, a new one starts
    /// here (gaps before), a series left with gaps only is forgotten. Values that are not
    /// finite count as missing; a reading older than the last one is ignored.
    pub(crate) fn push(&mut self, at: Instant, values: Vec<(Key, f64)>) {
        if self.times.last().is_some_and(|last| at < *last) {
            return;
        }
        self.times.push(at);
        let mut values: BTreeMap<Key, f64> =
            values.into_iter().filter(|(_, v)| v.is_finite()).collect();
        for (key, ring) in &mut self.series {
            ring.push(values.remove(key));
        }
        for (key, value) in values {
            if self.series.len() >= MAX_SERIES {
                tracing::debug!(series = ?key, "the console keeps no more series");
                break;
            }
            let mut ring = Ring::new(self.capacity);
            for _ in 1..self.times.len() {
                ring.push(None);
            }
            ring.push(Some(value));
            self.series.insert(key, ring);
        }
        self.series
            .retain(|_, ring| ring.iter().any(Option::is_some));
    }

    /// How many readings are kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.times.len()
    }

    /// The series of `chart`, by name, with the points of the last [`SPAN`] before `now`.
    pub(crate) fn series(&self, chart: Chart, now: Instant) -> Vec<Series> {
        self.series
            .range((chart, String::new())..)
            .take_while(|((c, _), _)| *c == chart)
            .filter_map(|((_, name), ring)| {
                let mut runs: Vec<Vec<(f64, f64)>> = Vec::new();
                let mut open = false;
                for (at, value) in self.times.iter().zip(ring.iter()) {
                    let ago = now.saturating_duration_since(*at);
                    match value {
                        Some(value) if ago <= SPAN => {
                            let point = (ago.as_secs_f64(), *value);
                            match runs.last_mut() {
                                Some(run) if open => run.push(point),
                                _ => runs.push(vec![point]),
                            }
                            open = true;
                        }
                        _ => open = false,
                    }
                }
                (!runs.is_empty()).then(|| Series {
                    name: name.clone(),
                    runs,
                })
            })
            .collect()
    }
}

impl Reader {
    /// The values of the reading of `snapshot`, read at `at`.
    ///
    /// Rates (requests, errors, p99, saga outcomes) need an earlier read: the first read of
    /// all gives none, nor does a service's first read after one that lacked it. A saga
    /// counter seen for the first time after that counts from zero (counters appear when
    /// first incremented); one that went down (its process restarted) counts from zero too.
    /// Outbox gauges are taken as read.
    pub(crate) fn read(&mut self, snapshot: Snapshot, at: Instant) -> Vec<(Key, f64)> {
        let mut values = Vec::new();
        let sagas: Vec<(String, SagaCounts)> = snapshot
            .sagas()
            .map(|(saga, counts)| (saga.to_owned(), counts))
            .collect();
        for (service, gauges) in snapshot.outboxes() {
            if let Some(rows) = gauges.pending_rows {
                values.push(((Chart::OutboxPending, service.to_owned()), rows));
            }
            if let Some(age) = gauges.oldest_age_s {
                values.push(((Chart::OutboxAge, service.to_owned()), age));
            }
        }
        let rows = self.traffic.observe(snapshot, at);
        if let Some(before_at) = self.previous {
            for row in rows.iter().filter(|row| self.last.contains(&row.service)) {
                values.push(((Chart::Requests, row.service.clone()), row.requests_per_s));
                values.push((
                    (Chart::ErrorRate, row.service.clone()),
                    row.error_ratio * 100.0,
                ));
                if let Some(p99) = row.p99_ms {
                    values.push(((Chart::P99, row.service.clone()), p99));
                }
            }
            for (saga, counts) in &sagas {
                let (since, earlier) = match self.sagas.get(saga) {
                    Some((seen_at, seen)) => (*seen_at, *seen),
                    None => (before_at, SagaCounts::default()),
                };
                let minutes = at.saturating_duration_since(since).as_secs_f64() / 60.0;
                if minutes <= 0.0 {
                    continue;
                }
                for (outcome, now, then) in [
                    ("started", counts.started, earlier.started),
                    ("completed", counts.completed, earlier.completed),
                    ("compensated", counts.compensated, earlier.compensated),
                ] {
                    let increase = if now < then { now } else { now - then };
                    values.push((
                        (Chart::Sagas, format!("{saga} {outcome}")),
                        increase / minutes,
                    ));
                }
            }
        }
        self.last = rows.into_iter().map(|row| row.service).collect();
        for (saga, counts) in sagas {
            if self.sagas.len() < MAX_SERIES || self.sagas.contains_key(&saga) {
                self.sagas.insert(saga, (at, counts));
            }
        }
        self.previous = Some(at);
        values
    }
}

impl Sampler {
    /// A sampler of `services` every `every` (clamped to [`EVERY_RANGE`]), not started.
    pub(crate) fn new(services: Vec<Transport>, every: Duration) -> Self {
        let every = every.clamp(EVERY_RANGE.0, EVERY_RANGE.1);
        let token = CancellationToken::new();
        Self {
            every,
            services,
            history: Arc::new(Mutex::new(History::new(every))),
            started: AtomicBool::new(false),
            tracker: TaskTracker::new(),
            _stop_on_drop: token.clone().drop_guard(),
            token,
        }
    }

    /// How often it reads.
    pub(crate) fn every(&self) -> Duration {
        self.every
    }

    /// Whether [`start`](Self::start) was called.
    pub(crate) fn is_started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    /// Starts the task: one reading at once, then one every interval, until shut down.
    /// Later calls do nothing. Must run inside a Tokio runtime.
    pub(crate) fn start(&self) {
        if self.started.swap(true, Ordering::AcqRel) || self.token.is_cancelled() {
            return;
        }
        let services = self.services.clone();
        let history = Arc::clone(&self.history);
        let token = self.token.clone();
        let every = self.every;
        self.tracker.spawn(async move {
            let mut reader = Reader::default();
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = token.cancelled() => return,
                    _ = tick.tick() => {}
                }
                // No process holds a reading up for longer than one interval: what has not
                // answered by then is missing from it.
                let scrapes = services
                    .iter()
                    .map(|service| tokio::time::timeout(every, super::scrape(service)));
                let texts = tokio::select! {
                    () = token.cancelled() => return,
                    texts = join_all(scrapes) => texts,
                };
                let mut snapshot = Snapshot::default();
                for text in texts.into_iter().filter_map(|text| text.ok().flatten()) {
                    snapshot.merge(super::metrics::parse(&text));
                }
                let at = Instant::now();
                let values = reader.read(snapshot, at);
                history
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(at, values);
            }
        });
        self.tracker.close();
    }

    /// Stops the task and waits for it to end.
    pub(crate) async fn shutdown(&self) {
        self.token.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// Calls `f` with what has been read so far.
    pub(crate) fn with_history<R>(&self, f: impl FnOnce(&History) -> R) -> R {
        f(&self.history.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

#[cfg(test)]
mod tests;
