//! The generator against local test servers: arrivals follow the schedule, latency counts
//! from the intended send time, and the report's counts match what the server saw.
//!
//! No assertion depends on the machine being fast: counts are exact, and time bounds are
//! ones a slow machine can only make easier to meet (a late generator or a slow server
//! only adds latency) or are several times wider than the schedule's own spacing.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    extract::{Query, State},
    http::StatusCode,
    routing::{get, post},
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::*;

struct TestServer {
    base: String,
    shutdown: CancellationToken,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn spawn(router: Router) -> TestServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
            .unwrap();
    });
    TestServer { base, shutdown }
}

fn args(base: &str, rate: f64, duration: Duration) -> LoadArgs {
    let mut args = LoadArgs::new(base, rate, duration);
    args.path = Some("/hit".to_owned());
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arrivals_follow_the_schedule_and_counts_match_the_server() {
    let arrivals = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let seen = arrivals.clone();
    let server = spawn(Router::new().fallback(move || {
        let seen = seen.clone();
        async move {
            seen.lock().unwrap().push(Instant::now());
            "hello"
        }
    }))
    .await;

    let report = run(args(&server.base, 200.0, Duration::from_secs(1)))
        .await
        .unwrap();

    let mut arrivals = arrivals.lock().unwrap().clone();
    arrivals.sort();
    assert_eq!(
        arrivals.len(),
        200,
        "the server saw every scheduled request"
    );
    assert_eq!(report.sent, 200);
    assert_eq!(report.total.requests, 200);
    assert_eq!(report.total.ok, 200);
    assert_eq!(report.endpoints.len(), 1);
    assert_eq!(report.endpoints[0].endpoint, "path");
    assert_eq!(report.endpoints[0].requests, 200);
    assert_eq!(
        report.timeline.iter().map(|s| s.scheduled).sum::<u64>(),
        200
    );

    // Requests are never sent before their time: 200 at 200/s span at least ~1 s (less a
    // little for a first request slowed by its connection).
    let span = *arrivals.last().unwrap() - arrivals[0];
    assert!(
        span >= Duration::from_millis(850),
        "arrivals spanned {span:?}"
    );
    // And they are spread out, not sent in bursts: the median gap is the 5 ms of the
    // schedule, within bounds wide enough for a busy machine.
    let mut gaps: Vec<Duration> = arrivals.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort();
    let median = gaps[gaps.len() / 2];
    assert!(
        median >= Duration::from_millis(1) && median <= Duration::from_millis(15),
        "median inter-arrival gap {median:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_counts_from_the_intended_time_through_a_stall() {
    // Every request takes one global lock; request 50 holds it for 600 ms, so the requests
    // that arrive meanwhile queue behind it. At 100/s about 60 of them do.
    let lock = Arc::new(tokio::sync::Mutex::new(()));
    let count = Arc::new(AtomicU64::new(0));
    let server = spawn(Router::new().fallback(move || {
        let lock = lock.clone();
        let count = count.clone();
        async move {
            let n = count.fetch_add(1, Ordering::SeqCst);
            let _guard = lock.lock().await;
            if n == 50 {
                tokio::time::sleep(Duration::from_millis(600)).await;
            }
            "hello"
        }
    }))
    .await;

    let (report, recorder) = run_recorded(args(&server.base, 100.0, Duration::from_secs(2)))
        .await
        .unwrap();

    assert_eq!(report.total.requests, 200);
    assert!(report.total.latency_ms.max >= 600.0, "{:?}", report.total);
    assert!(report.total.latency_ms.p99 >= 300.0, "{:?}", report.total);
    // Not just the stalled request: those queued behind it show the wait too. Those sent in
    // the first 450 ms of the stall waited at least 150 ms: about 45 of them.
    let histogram = &recorder.series[&Endpoint::Path].latency;
    let slow = histogram.count_between(150_000, histogram.max());
    assert!(slow >= 20, "{slow} requests took ≥ 150 ms");
    assert!(report.total.latency_ms.p90 >= 150.0, "{:?}", report.total);
}

#[derive(Default)]
struct Seen(Mutex<HashMap<&'static str, u64>>);

impl Seen {
    fn add(&self, kind: &'static str) {
        *self.0.lock().unwrap().entry(kind).or_default() += 1;
    }
    fn get(&self, kind: &str) -> u64 {
        self.0.lock().unwrap().get(kind).copied().unwrap_or(0)
    }
}

/// A shop with the endpoints the mixes use and no checkout, counting what it serves.
fn fake_shop(seen: Arc<Seen>) -> Router {
    async fn items(
        State(seen): State<Arc<Seen>>,
        Query(query): Query<HashMap<String, String>>,
    ) -> Json<Value> {
        if query.get("page_size").map(String::as_str) == Some("100") {
            seen.add("discovery");
        } else if query.contains_key("q") {
            seen.add("search");
        } else {
            seen.add("browse");
        }
        let items: Vec<Value> = (0..3)
            .map(
                |i| json!({ "id": format!("item-{i}"), "name": format!("Kettle {i}"), "stock": 5 }),
            )
            .collect();
        Json(json!({ "items": items, "page": 1, "page_size": 100, "total": 3 }))
    }
    async fn basket(State(seen): State<Arc<Seen>>) -> Json<Value> {
        seen.add("basket");
        Json(json!({ "lines": [] }))
    }
    Router::new()
        .route("/api/v1/catalog/items", get(items))
        .route(
            "/api/v1/catalog/items/{id}",
            get(|State(seen): State<Arc<Seen>>| async move {
                seen.add("item");
                Json(json!({ "id": "item-0" }))
            }),
        )
        .route(
            "/api/v1/catalog/categories",
            get(|| async { Json(json!([{ "id": "kitchen" }])) }),
        )
        .route(
            "/api/v1/identity/register",
            post(|| async { (StatusCode::CREATED, Json(json!({}))) }),
        )
        .route(
            "/api/v1/identity/login",
            post(|| async { Json(json!({ "access_token": "t", "token_type": "Bearer" })) }),
        )
        .route("/api/v1/basket", get(basket).delete(basket))
        .route("/api/v1/basket/items", post(basket))
        .fallback(|State(seen): State<Arc<Seen>>| async move {
            seen.add("not_found");
            StatusCode::NOT_FOUND
        })
        .with_state(seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shop_mix_without_checkout_sends_that_share_as_basket_views() {
    let seen = Arc::new(Seen::default());
    let server = spawn(fake_shop(seen.clone())).await;
    let mut args = LoadArgs::new(&server.base, 200.0, Duration::from_secs(1));
    args.users = 3;
    args.checkout_share = 20.0;

    let report = run(args).await.unwrap();

    let count = |name: &str| {
        report
            .endpoints
            .iter()
            .find(|e| e.endpoint == name)
            .map_or(0, |e| e.requests)
    };
    assert_eq!(report.total.requests, 200);
    assert_eq!(report.total.ok, 200, "{:?}", report.total);
    assert_eq!(count("checkout"), 0);
    assert!(count("checkout_as_basket_view") > 0);
    assert_eq!(count("browse"), seen.get("browse"));
    assert_eq!(count("search"), seen.get("search"));
    assert_eq!(count("item"), seen.get("item"));
    assert_eq!(
        count("basket") + count("checkout_as_basket_view"),
        seen.get("basket")
    );
    assert_eq!(seen.get("not_found"), 1, "one checkout probe");
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("no checkout endpoint"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_checkout_each_checkout_adds_an_item_then_checks_out() {
    let seen = Arc::new(Seen::default());
    let counter = seen.clone();
    let router = fake_shop(seen.clone()).route(
        "/api/v1/basket/checkout",
        post(move || {
            let seen = counter.clone();
            async move {
                seen.add("checkout");
                (StatusCode::ACCEPTED, Json(json!({ "status": "pending" })))
            }
        }),
    );
    let server = spawn(router).await;
    let mut args = LoadArgs::new(&server.base, 100.0, Duration::from_secs(1));
    args.users = 2;
    args.mix = Mix::Checkout;

    let report = run(args).await.unwrap();

    assert_eq!(report.total.requests, 100);
    assert_eq!(report.total.ok, 100, "{:?}", report.total);
    assert_eq!(report.endpoints[0].endpoint, "checkout");
    // The probe, then one per request.
    assert_eq!(seen.get("checkout"), 101);
    assert_eq!(seen.get("basket"), 100, "an add before each checkout");
    assert!(report.notes.is_empty(), "{:?}", report.notes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checkout_mix_stops_at_once_without_checkout() {
    let seen = Arc::new(Seen::default());
    let server = spawn(fake_shop(seen.clone())).await;
    let mut args = LoadArgs::new(&server.base, 1_000.0, Duration::from_secs(60));
    args.users = 1;
    args.mix = Mix::Checkout;

    let started = Instant::now();
    let err = run(args).await.unwrap_err();

    assert!(
        format!("{err:#}").contains("has no checkout endpoint"),
        "{err:#}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "it did not run"
    );
    assert_eq!(seen.get("not_found"), 1);
    assert_eq!(
        seen.get("browse") + seen.get("basket") + seen.get("item"),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_counted_by_kind() {
    let server = spawn(Router::new().fallback(|| async { StatusCode::SERVICE_UNAVAILABLE })).await;
    let report = run(args(&server.base, 100.0, Duration::from_millis(200)))
        .await
        .unwrap();
    assert_eq!(report.total.requests, 20);
    assert_eq!(report.total.errors.status_5xx, 20);
    assert_eq!(report.total.ok, 0);

    // Nothing listens on a port just freed.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let report = run(args(
        &format!("http://{closed}"),
        100.0,
        Duration::from_millis(100),
    ))
    .await
    .unwrap();
    assert_eq!(report.total.requests, 10);
    assert_eq!(report.total.errors.connect, 10, "{:?}", report.total.errors);
}

#[tokio::test]
async fn the_report_and_the_plot_are_written() {
    let server = spawn(super::upstream::router()).await;
    let out = tempfile::tempdir().unwrap();
    let mut args = args(&server.base, 50.0, Duration::from_millis(400));
    args.out = Some(out.path().to_path_buf());
    args.watch_pids = vec![std::process::id()];
    run_and_write(args).await.unwrap();
    let report: Value =
        serde_json::from_slice(&std::fs::read(out.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(report["sent"], 20);
    assert_eq!(report["endpoints"][0]["endpoint"], "path");
    assert!(report["total"]["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    if cfg!(target_os = "linux") {
        assert_eq!(report["cpu"][0]["pid"], std::process::id());
        assert!(report["generator_cpu_secs"].as_f64().is_some());
    }
    let png = std::fs::read(out.path().join("plot.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
}

#[test]
fn schedule_and_durations() {
    assert_eq!(intended_offset(0, 200.0), Duration::ZERO);
    assert_eq!(intended_offset(200, 200.0), Duration::from_secs(1));
    assert_eq!(intended_offset(3, 1_000.0), Duration::from_millis(3));
    assert_eq!(request_count(200.0, Duration::from_secs(1)), 200);
    assert_eq!(request_count(33.3, Duration::from_secs(3)), 100);
    assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
    assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1_500)));
    assert!(parse_duration("soon").is_err());
    assert!(parse_duration("-1s").is_err());
}
