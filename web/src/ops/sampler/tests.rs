use std::sync::atomic::AtomicU64;

use axum::{Router, routing::get};

use super::*;
use crate::ops::metrics::parse;

fn key(chart: Chart, name: &str) -> Key {
    (chart, name.to_owned())
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The one series of `chart` named `name`.
fn one(history: &History, chart: Chart, name: &str, now: Instant) -> Option<Series> {
    history
        .series(chart, now)
        .into_iter()
        .find(|s| s.name == name)
}

#[test]
fn a_full_ring_drops_its_oldest() {
    let mut ring = Ring::new(3);
    for i in 1..=10 {
        ring.push(i);
        assert!(ring.len() <= 3);
    }
    assert_eq!(ring.iter().copied().collect::<Vec<_>>(), [8, 9, 10]);
    let mut tiny: Ring<u8> = Ring::new(0);
    tiny.push(1);
    tiny.push(2);
    assert_eq!(
        tiny.iter().copied().collect::<Vec<_>>(),
        [2],
        "at least one slot"
    );
}

#[test]
fn the_history_is_bounded_to_fifteen_minutes_and_points_are_in_order() {
    let start = Instant::now();
    let mut history = History::new(secs(10));
    let capacity = usize::try_from(SPAN.as_secs() / 10).unwrap() + 1;
    // A day of readings.
    for i in 0..8_640_u32 {
        let at = start + secs(10 * u64::from(i));
        let value = f64::from(i);
        history.push(
            at,
            vec![
                (key(Chart::Requests, "catalog"), value),
                (key(Chart::OutboxPending, "ordering"), 1.0),
            ],
        );
        assert!(history.len() <= capacity);
        assert!(
            history
                .series
                .values()
                .all(|ring| ring.len() == history.len())
        );
    }
    assert_eq!(history.len(), capacity);
    let now = start + secs(10 * 8_639);
    let catalog = one(&history, Chart::Requests, "catalog", now).unwrap();
    assert_eq!(catalog.runs.len(), 1);
    let points = &catalog.runs[0];
    assert_eq!(points.len(), capacity);
    // Oldest first: further back first, values rising as they were pushed.
    for pair in points.windows(2) {
        assert!(pair[0].0 > pair[1].0, "{pair:?}");
        assert!(pair[0].1 < pair[1].1, "{pair:?}");
    }
    assert_eq!(points.last(), Some(&(0.0, 8_639.0)));
    assert!(points.iter().all(|(ago, _)| *ago <= SPAN.as_secs_f64()));
    // Only this chart's series.
    assert_eq!(history.series(Chart::Requests, now).len(), 1);
    assert!(history.series(Chart::Sagas, now).is_empty());
}

#[test]
fn a_missing_series_is_a_gap_and_is_forgotten_once_gone_for_fifteen_minutes() {
    let start = Instant::now();
    let mut history = History::new(secs(60));
    let at = |i: u64| start + secs(60 * i);
    for i in 0..8 {
        let mut values = vec![(key(Chart::OutboxAge, "payment"), 1.0)];
        // The ordering relay is missing from readings 3 and 4, and not finite in 5.
        if !(3..=4).contains(&i) {
            values.push((
                key(Chart::OutboxAge, "ordering"),
                if i == 5 { f64::NAN } else { 2.0 },
            ));
        }
        // Inventory's appears at reading 6.
        if i >= 6 {
            values.push((key(Chart::OutboxAge, "inventory"), 3.0));
        }
        history.push(at(i), values);
    }
    let now = at(7);
    let ordering = one(&history, Chart::OutboxAge, "ordering", now).unwrap();
    let lengths: Vec<usize> = ordering.runs.iter().map(Vec::len).collect();
    assert_eq!(lengths, [3, 2], "{ordering:?}");
    let inventory = one(&history, Chart::OutboxAge, "inventory", now).unwrap();
    assert_eq!(inventory.runs, [vec![(60.0, 3.0), (0.0, 3.0)]]);
    assert_eq!(
        one(&history, Chart::OutboxAge, "payment", now)
            .unwrap()
            .runs[0]
            .len(),
        8
    );

    // Ordering's relay stops answering: once its last point has left the rings, it is gone.
    for i in 8..40 {
        history.push(at(i), vec![(key(Chart::OutboxAge, "payment"), 1.0)]);
    }
    assert!(one(&history, Chart::OutboxAge, "ordering", at(39)).is_none());
    assert_eq!(history.series.len(), 1, "{:?}", history.series.keys());

    // A reading from before the last one is ignored; so is one with nothing at all in it
    // for the series, which gets a gap.
    let before = history.len();
    history.push(at(10), vec![(key(Chart::OutboxAge, "payment"), 9.0)]);
    assert_eq!(history.len(), before);
    history.push(at(40), Vec::new());
    let payment = one(&history, Chart::OutboxAge, "payment", at(40)).unwrap();
    assert!(payment.runs.iter().flatten().all(|(_, v)| *v == 1.0));
    assert_eq!(payment.runs.len(), 1, "a gap at the end closes the run");
}

#[test]
fn series_are_capped() {
    let start = Instant::now();
    let mut history = History::new(secs(10));
    let values = (0..MAX_SERIES + 20)
        .map(|i| (key(Chart::Requests, &format!("service-{i:03}")), 1.0))
        .collect();
    history.push(start, values);
    assert_eq!(history.series.len(), MAX_SERIES);
}

/// A `/metrics` text of the whole shop in one process.
fn text(requests: u64, started: u64, completed: u64, compensated: u64, pending: u64) -> String {
    format!(
        "tideway_http_requests_total{{service=\"catalog\",method=\"GET\",route=\"/x\",status=\"200\"}} {requests}\n\
         tideway_http_request_duration_seconds_bucket{{service=\"catalog\",method=\"GET\",route=\"/x\",status=\"200\",le=\"0.01\"}} {requests}\n\
         tideway_http_request_duration_seconds_bucket{{service=\"catalog\",method=\"GET\",route=\"/x\",status=\"200\",le=\"+Inf\"}} {requests}\n\
         tideway_saga_started_total{{saga=\"checkout\"}} {started}\n\
         tideway_saga_completed_total{{saga=\"checkout\"}} {completed}\n\
         tideway_saga_compensated_total{{saga=\"checkout\"}} {compensated}\n\
         tideway_outbox_pending_rows{{service=\"ordering\"}} {pending}\n\
         tideway_outbox_oldest_age_seconds{{service=\"ordering\"}} 0.5\n"
    )
}

fn value(values: &[(Key, f64)], chart: Chart, name: &str) -> Option<f64> {
    values
        .iter()
        .find(|(k, _)| *k == key(chart, name))
        .map(|(_, v)| *v)
}

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-9)
}

#[test]
fn readings_turn_counters_into_rates_and_keep_gauges() {
    let start = Instant::now();
    let mut reader = Reader::default();
    // The first read: gauges only, no rates.
    let first = reader.read(parse(&text(100, 10, 8, 1, 3)), start);
    assert!(close(value(&first, Chart::OutboxPending, "ordering"), 3.0));
    assert!(close(value(&first, Chart::OutboxAge, "ordering"), 0.5));
    assert!(value(&first, Chart::Requests, "catalog").is_none());
    assert!(value(&first, Chart::Sagas, "checkout started").is_none());

    // 30 s later: 60 requests (2/s), 3 checkouts started (6/min), 2 completed, 1 compensated.
    let second = reader.read(parse(&text(160, 13, 10, 2, 0)), start + secs(30));
    assert!(close(value(&second, Chart::Requests, "catalog"), 2.0));
    assert!(close(value(&second, Chart::ErrorRate, "catalog"), 0.0));
    assert!(value(&second, Chart::P99, "catalog").is_some());
    assert!(close(value(&second, Chart::Sagas, "checkout started"), 6.0));
    assert!(close(
        value(&second, Chart::Sagas, "checkout completed"),
        4.0
    ));
    assert!(close(
        value(&second, Chart::Sagas, "checkout compensated"),
        2.0
    ));
    assert!(close(value(&second, Chart::OutboxPending, "ordering"), 0.0));

    // The ordering process misses a reading, then answers: what it counted meanwhile is
    // spread over the whole time since it was last read, never counted twice.
    let missed = reader.read(parse(""), start + secs(60));
    assert!(value(&missed, Chart::Sagas, "checkout started").is_none());
    assert!(value(&missed, Chart::OutboxPending, "ordering").is_none());
    let back = reader.read(parse(&text(220, 19, 10, 2, 0)), start + secs(90));
    assert!(close(value(&back, Chart::Sagas, "checkout started"), 6.0));
    assert!(close(value(&back, Chart::Sagas, "checkout completed"), 0.0));
    // Catalog was missing from the reading before: a gap, not a rate of zero.
    assert!(value(&back, Chart::Requests, "catalog").is_none());

    // Restarted: its counters count from zero, never negative.
    let restarted = reader.read(parse(&text(5, 1, 0, 0, 0)), start + secs(120));
    assert!(close(
        value(&restarted, Chart::Sagas, "checkout started"),
        2.0
    ));
    assert!(
        restarted.iter().all(|(_, v)| *v >= 0.0 && v.is_finite()),
        "{restarted:?}"
    );
    // Catalog's counter went down too: a rate from zero, not a negative one.
    assert!(close(
        value(&restarted, Chart::Requests, "catalog"),
        5.0 / 30.0
    ));
}

#[test]
fn a_saga_that_appears_after_the_first_read_counts_from_zero() {
    let start = Instant::now();
    let mut reader = Reader::default();
    // No checkout yet: the counters do not exist.
    reader.read(
        parse("tideway_outbox_pending_rows{service=\"ordering\"} 0\n"),
        start,
    );
    let first = reader.read(parse(&text(0, 2, 1, 0, 1)), start + secs(60));
    assert!(close(value(&first, Chart::Sagas, "checkout started"), 2.0));
    assert!(close(
        value(&first, Chart::Sagas, "checkout completed"),
        1.0
    ));
    assert!(close(
        value(&first, Chart::Sagas, "checkout compensated"),
        0.0
    ));
    // Catalog's first read has no rate yet.
    assert!(value(&first, Chart::Requests, "catalog").is_none());
}

#[tokio::test]
async fn the_sampler_reads_in_the_background_until_it_is_shut_down() {
    let started = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&started);
    let router = Router::new().route(
        "/metrics",
        get(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            async move { text(0, n, n, 0, 0) }
        }),
    );
    // A process that answers, and one that never does: its part of a reading is missing.
    let ordering = Transport::in_process("ordering", router, secs(1));
    let silent = Transport::http("payment", "http://127.0.0.1:9", secs(1)).unwrap();
    let sampler = Sampler::new(vec![ordering, silent], Duration::from_millis(1));
    assert_eq!(sampler.every(), EVERY_RANGE.0, "clamped");
    assert!(!sampler.is_started());
    sampler.start();
    sampler.start();
    assert!(sampler.is_started());

    let deadline = Instant::now() + secs(20);
    loop {
        let points = sampler.with_history(|history| {
            one(history, Chart::Sagas, "checkout started", Instant::now())
                .map_or(0, |s| s.runs.iter().map(Vec::len).sum::<usize>())
        });
        if points >= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no background readings: {points} points"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sampler.with_history(|history| {
        let sagas = one(history, Chart::Sagas, "checkout started", Instant::now()).unwrap();
        assert!(
            sagas.runs.iter().flatten().all(|(_, v)| *v > 0.0),
            "{sagas:?}"
        );
        assert!(one(history, Chart::OutboxPending, "ordering", Instant::now()).is_some());
    });

    tokio::time::timeout(secs(5), sampler.shutdown())
        .await
        .expect("the sampler stops at once");
    assert!(sampler.tracker.is_empty(), "its task has ended");
    let reads = started.load(Ordering::SeqCst);
    let kept = sampler.with_history(History::len);
    // Nothing reads after shutdown, and it does not start again.
    sampler.start();
    assert!(sampler.tracker.is_empty());
    assert_eq!(sampler.with_history(History::len), kept);
    assert_eq!(started.load(Ordering::SeqCst), reads);
}

#[tokio::test]
async fn a_dropped_sampler_stops_its_task() {
    let sampler = Sampler::new(Vec::new(), EVERY_RANGE.0);
    sampler.start();
    let tracker = sampler.tracker.clone();
    assert!(!tracker.is_empty());
    drop(sampler);
    tokio::time::timeout(secs(5), tracker.wait())
        .await
        .expect("the task ends with its sampler");
}
