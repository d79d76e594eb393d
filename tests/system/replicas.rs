//! Replicas behind the gateway, as processes of the real binary: three catalog replicas
//! registered in NATS discovery (a bucket per test) on one PostgreSQL database (SQLite
//! when PostgreSQL is unreachable outside CI), the gateway balancing over them. Replicas stop
//! cleanly, are killed, are slowed and join while a load runs; a dead dependency opens its
//! breaker and recovers; retries stay within their budget.

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use tideway_discovery::{NatsOptions, NatsRegistry, Registry};
use tideway_testkit::{TestDb, TestNats, eventually, eventually_async, within};
use tokio::sync::watch;

use crate::processes::Proc;

/// The discovery TTL of these tests: short, so a killed replica is gone soon.
const TTL: Duration = Duration::from_millis(1_500);
const ITEMS: &str = "/api/v1/catalog/items?page_size=1";

/// The processes of one test and what they share.
struct Replicas {
    env: Vec<(String, String)>,
    dir: tempfile::TempDir,
    catalogs: Vec<(String, Proc, String)>,
    gateway: Option<(Proc, String)>,
    _db: Option<TestDb>,
    _nats: TestNats,
}

impl Drop for Replicas {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (id, proc, _) in &self.catalogs {
                eprintln!("--- {id} ---\n{}", proc.log());
            }
            if let Some((proc, _)) = &self.gateway {
                eprintln!("--- gateway ---\n{}", proc.log());
            }
        }
    }
}

impl Replicas {
    /// The shared settings: NATS discovery in `bucket` (or static `urls.*` when `bucket` is
    /// `None`), quick health checks, `extra` on top.
    async fn new(bucket: Option<&str>, extra: &[(&str, &str)]) -> Option<Self> {
        let nats = tideway_testkit::nats().await?;
        let dir = tempfile::tempdir().unwrap();
        let options = nats.options();
        let mut env: Vec<(String, String)> = vec![
            ("TIDEWAY_DATA_DIR".into(), dir.path().display().to_string()),
            ("TIDEWAY_GATEWAY__LISTEN".into(), "127.0.0.1:0".into()),
            ("TIDEWAY_CATALOG__LISTEN".into(), "127.0.0.1:0".into()),
            ("TIDEWAY_BUS__NATS_URL".into(), options.url.clone()),
            ("TIDEWAY_BUS__STREAM".into(), options.stream),
            ("TIDEWAY_BUS__ROOT".into(), options.root),
            ("TIDEWAY_BALANCE__HEALTH_INTERVAL_MS".into(), "200".into()),
            // The test signs in as the demo admin, which `tideway serve` seeds only when asked.
            ("TIDEWAY_DEMO_USERS".into(), "true".into()),
            // These tests count the calls that reach each replica: the gateway's HTTP cache
            // would answer them itself.
            ("TIDEWAY_GATEWAY__CACHE_ENABLED".into(), "false".into()),
        ];
        if let Some(bucket) = bucket {
            env.push(("TIDEWAY_DISCOVERY__KIND".into(), "nats".into()));
            env.push(("TIDEWAY_DISCOVERY__NATS__URL".into(), options.url));
            env.push(("TIDEWAY_DISCOVERY__NATS__BUCKET".into(), bucket.into()));
            env.push((
                "TIDEWAY_DISCOVERY__NATS__TTL_MS".into(),
                TTL.as_millis().to_string(),
            ));
        }
        let db = tideway_testkit::postgres().await;
        if let Some(db) = &db {
            env.push(("TIDEWAY_CATALOG__DATABASE_URL".into(), db.url().to_owned()));
        }
        for (key, value) in extra {
            env.push(((*key).to_owned(), (*value).to_owned()));
        }
        Some(Self {
            env,
            dir,
            catalogs: Vec::new(),
            gateway: None,
            _db: db,
            _nats: nats,
        })
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts catalog replica `id` with `extra` settings; answers once it has registered
    /// (which it does once it serves).
    async fn start_catalog(&mut self, id: &str, extra: &[(&str, &str)]) -> String {
        let mut env = self.env.clone();
        env.push(("TIDEWAY_INSTANCE_ID".into(), id.into()));
        for (key, value) in extra {
            env.push(((*key).to_owned(), (*value).to_owned()));
        }
        let name: &'static str = Box::leak(id.to_owned().into_boxed_str());
        let mut proc = Proc::start(name, &["serve", "catalog"], &env, self.dir());
        let url = proc.listening(Duration::from_secs(120)).await;
        let url = match url {
            Ok(url) => url,
            Err(err) => panic!("{err}\n{}", proc.log()),
        };
        eventually(Duration::from_secs(60), format!("{id} to register"), || {
            proc.log()
                .contains("\"message\":\"Registered in discovery.\"")
        })
        .await;
        self.catalogs.push((id.to_owned(), proc, url.clone()));
        url
    }

    /// Starts the gateway with `extra` settings; answers its URL once it serves a catalog
    /// page.
    async fn start_gateway(&mut self, extra: &[(&str, &str)]) -> String {
        let mut env = self.env.clone();
        for (key, value) in extra {
            env.push(((*key).to_owned(), (*value).to_owned()));
        }
        let mut proc = Proc::start("gateway", &["gateway"], &env, self.dir());
        let url = match proc.listening(Duration::from_secs(60)).await {
            Ok(url) => url,
            Err(err) => panic!("{err}\n{}", proc.log()),
        };
        self.gateway = Some((proc, url.clone()));
        let http = reqwest::Client::new();
        let items = format!("{url}{ITEMS}");
        eventually_async(
            Duration::from_secs(30),
            "the gateway to serve the catalog",
            || async {
                http.get(&items)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            },
        )
        .await;
        url
    }

    fn catalog(&mut self, id: &str) -> (Proc, String) {
        let index = self
            .catalogs
            .iter()
            .position(|(other, _, _)| other == id)
            .unwrap();
        let (_, proc, url) = self.catalogs.remove(index);
        (proc, url)
    }

    fn gateway_log(&self) -> String {
        self.gateway
            .as_ref()
            .map(|(p, _)| p.log())
            .unwrap_or_default()
    }
}

/// A registry watching the test's bucket, as another process would.
async fn watch_catalogs(
    bucket: &str,
) -> (
    NatsRegistry,
    watch::Receiver<Vec<tideway_discovery::Instance>>,
) {
    let registry = NatsRegistry::connect(NatsOptions {
        url: tideway_testkit::nats_url(),
        bucket: bucket.to_owned(),
        ttl: TTL,
        connect_timeout: Duration::from_secs(3),
    })
    .await
    .unwrap();
    let watched = registry.watch("catalog").await.unwrap();
    (registry, watched)
}

fn ids(watched: &watch::Receiver<Vec<tideway_discovery::Instance>>) -> Vec<String> {
    watched.borrow().iter().map(|i| i.id.clone()).collect()
}

/// Catalog list requests a replica has answered 200, from its own metrics.
async fn served(http: &reqwest::Client, replica: &str) -> u64 {
    let text = crate::scenario::metrics(http, replica).await;
    text.lines()
        .find(|line| {
            line.starts_with("tideway_http_requests_total{")
                && line.contains("service=\"catalog\"")
                && line.contains("route=\"/api/v1/catalog/items\"")
                && line.contains("status=\"200\"")
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse::<f64>().ok())
        .map_or(0, |value| value as u64)
}

/// A metric's value in a Prometheus text, the first line starting with `prefix`.
fn value_of(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|line| line.starts_with(prefix))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

/// Anonymous catalog reads through the gateway from a few tasks until stopped.
struct Load {
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    tasks: tokio::task::JoinSet<()>,
}

impl Load {
    fn start(gateway: &str, tasks: usize) -> Self {
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..tasks {
            let (ok, failed, failures, stop) =
                (ok.clone(), failed.clone(), failures.clone(), stop.clone());
            let url = format!("{gateway}{ITEMS}");
            set.spawn(async move {
                let http = reqwest::Client::new();
                while !stop.load(Ordering::SeqCst) {
                    match http.get(&url).send().await {
                        Ok(response) if response.status().is_success() => {
                            ok.fetch_add(1, Ordering::SeqCst);
                        }
                        other => {
                            failed.fetch_add(1, Ordering::SeqCst);
                            let what = match other {
                                Ok(response) => {
                                    let status = response.status();
                                    format!(
                                        "{status}: {}",
                                        response.text().await.unwrap_or_default()
                                    )
                                }
                                Err(err) => err.to_string(),
                            };
                            failures.lock().unwrap().push(what);
                        }
                    }
                }
            });
        }
        Self {
            ok,
            failed,
            failures,
            stop,
            tasks: set,
        }
    }

    fn ok(&self) -> u64 {
        self.ok.load(Ordering::SeqCst)
    }

    fn failed(&self) -> u64 {
        self.failed.load(Ordering::SeqCst)
    }

    /// Waits until `n` more requests have succeeded.
    async fn more(&self, n: u64, what: &str) {
        let target = self.ok() + n;
        eventually(Duration::from_secs(180), what, || self.ok() >= target).await;
    }

    async fn stop(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        while self.tasks.join_next().await.is_some() {}
        self.failures.lock().unwrap().clone()
    }
}

fn bucket() -> String {
    format!("test_registry_{}", uuid::Uuid::new_v4().simple())
}

/// One replica stopped cleanly: no failed request. One killed: gone from discovery within
/// the TTL, and no failure once it is out. A new one: serving within 2 s of registering.
#[tokio::test]
async fn replicas_leave_die_and_join_under_load() {
    let bucket = bucket();
    let Some(mut system) = Replicas::new(Some(&bucket), &[]).await else {
        return;
    };
    let (_registry, mut watched) = watch_catalogs(&bucket).await;
    let mut urls = Vec::new();
    for id in ["catalog-1", "catalog-2", "catalog-3"] {
        urls.push(system.start_catalog(id, &[]).await);
    }
    within(
        Duration::from_secs(10),
        "three replicas registered",
        async {
            while watched.borrow_and_update().len() < 3 {
                watched.changed().await.unwrap();
            }
        },
    )
    .await;
    let gateway = system.start_gateway(&[]).await;
    let http = reqwest::Client::new();

    let load = Load::start(&gateway, 4);
    // Every replica takes part before anything happens to one.
    for url in &urls {
        eventually_async(
            Duration::from_secs(30),
            format!("{url} to serve"),
            || async { served(&http, url).await > 0 },
        )
        .await;
    }

    // A clean stop: deregistered before draining, so no request fails.
    let (proc, _) = system.catalog("catalog-1");
    let status = proc.terminate().await;
    assert!(status.success(), "catalog-1 exited with {status}");
    load.more(200, "requests after the clean stop").await;
    assert_eq!(
        load.failed(),
        0,
        "a clean stop failed requests: {:?}",
        load.failures.lock().unwrap()
    );
    assert!(!ids(&watched).contains(&"catalog-1".to_owned()));

    // A kill: the record expires within the TTL (plus the watcher's check interval and a
    // margin for a loaded machine).
    let (mut proc, _) = system.catalog("catalog-2");
    proc.kill();
    within(
        TTL + Duration::from_secs(2),
        "catalog-2 gone from discovery",
        async {
            while ids(&watched).contains(&"catalog-2".to_owned()) {
                watched.changed().await.unwrap();
            }
        },
    )
    .await;
    // Once the gateway has it out of rotation (ejected or dropped with its record), no
    // request fails.
    eventually(
        Duration::from_secs(10),
        "the gateway to drop catalog-2",
        || {
            system
                .gateway_log()
                .matches("A replica left the balancer.")
                .count()
                >= 2
        },
    )
    .await;
    // Calls already in flight to it when it died may fail; those sent after may not.
    load.more(20, "in-flight requests to settle").await;
    let failed_before = load.failed();
    load.more(300, "requests after the kill").await;
    assert_eq!(
        load.failed(),
        failed_before,
        "requests failed after the killed replica was out: {:?}",
        load.failures.lock().unwrap()
    );

    // A newcomer takes traffic within 2 s of being ready (registered).
    let mut env_id = system.env.clone();
    env_id.push(("TIDEWAY_INSTANCE_ID".into(), "catalog-4".into()));
    let mut proc = Proc::start("catalog-4", &["serve", "catalog"], &env_id, system.dir());
    let url = proc.listening(Duration::from_secs(60)).await.unwrap();
    within(Duration::from_secs(60), "catalog-4 registered", async {
        while !ids(&watched).contains(&"catalog-4".to_owned()) {
            watched.changed().await.unwrap();
        }
    })
    .await;
    eventually_async(
        Duration::from_secs(2),
        "catalog-4 to take traffic within 2 s of registering",
        || async { served(&http, &url).await > 0 },
    )
    .await;
    system.catalogs.push(("catalog-4".into(), proc, url));

    let failures = load.stop().await;
    assert_eq!(
        failures.len() as u64,
        failed_before,
        "only the kill may have failed requests: {failures:?}"
    );
}

/// A replica made 10× slower than its peers at run time (`PUT /admin/faults`, by an admin)
/// gets under 10% of the requests.
#[tokio::test]
async fn a_slow_replica_gets_little_traffic() {
    let bucket = bucket();
    let Some(mut system) = Replicas::new(Some(&bucket), &[]).await else {
        return;
    };
    // The identity service signs the admin's token; every replica checks it.
    let identity_db = tideway_testkit::postgres().await;
    let mut identity_env = system.env.clone();
    identity_env.push(("TIDEWAY_IDENTITY__LISTEN".into(), "127.0.0.1:0".into()));
    if let Some(db) = &identity_db {
        identity_env.push(("TIDEWAY_IDENTITY__DATABASE_URL".into(), db.url().to_owned()));
    }
    let mut identity = Proc::start(
        "identity",
        &["serve", "identity"],
        &identity_env,
        system.dir(),
    );
    let identity_url = identity.listening(Duration::from_secs(120)).await.unwrap();
    crate::scenario::wait_ready(&identity_url, Duration::from_secs(60)).await;
    let fast_a = system.start_catalog("catalog-1", &[]).await;
    let fast_b = system.start_catalog("catalog-2", &[]).await;
    let slow = system.start_catalog("catalog-3", &[]).await;
    let (_registry, mut watched) = watch_catalogs(&bucket).await;
    within(
        Duration::from_secs(10),
        "three replicas registered",
        async {
            while watched.borrow_and_update().len() < 3 {
                watched.changed().await.unwrap();
            }
        },
    )
    .await;
    let gateway = system.start_gateway(&[]).await;
    let http = reqwest::Client::new();
    let admin =
        crate::scenario::login(&http, &gateway, "admin@tideway.local", "tideway-admin-1").await;

    // A healthy read's median latency on this machine now, straight at the replica.
    let mut times = Vec::new();
    for _ in 0..21 {
        let started = std::time::Instant::now();
        let response = http.get(format!("{slow}{ITEMS}")).send().await.unwrap();
        assert!(response.status().is_success());
        times.push(started.elapsed());
    }
    times.sort();
    let median = times[times.len() / 2];
    // Nine medians more (ten times as slow), and at least 20 ms: a read served from the
    // catalog's cache takes well under a millisecond, and a few milliseconds more would be
    // lost in the scheduling noise of a loaded machine.
    let added = (median * 9).as_millis().max(20) as u64;
    let faults = format!("{slow}/admin/faults");
    let refused = http
        .put(&faults)
        .json(&serde_json::json!({"latency_ms": added}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401, "only admins switch faults");
    let invalid = http
        .put(&faults)
        .bearer_auth(&admin)
        .json(&serde_json::json!({"latency_share": 2.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(invalid.status(), 422);
    let problem: serde_json::Value = invalid.json().await.unwrap();
    assert_eq!(
        problem["invalid-params"][0]["name"], "latency_share",
        "{problem}"
    );
    let set = http
        .put(&faults)
        .bearer_auth(&admin)
        .json(&serde_json::json!({"latency_ms": added}))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 200);
    let current: serde_json::Value = http
        .get(&faults)
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(current["latency_ms"], added, "{current}");

    let before = [
        served(&http, &fast_a).await,
        served(&http, &fast_b).await,
        served(&http, &slow).await,
    ];
    let load = Load::start(&gateway, 4);
    load.more(300, "300 requests").await;
    let failures = load.stop().await;
    assert!(failures.is_empty(), "{failures:?}");
    let after = [
        served(&http, &fast_a).await,
        served(&http, &fast_b).await,
        served(&http, &slow).await,
    ];
    let counts: Vec<u64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    let total: u64 = counts.iter().sum();
    assert!(total >= 300, "{counts:?}");
    assert!(
        (counts[2] as f64) < 0.10 * total as f64,
        "the slow replica (+{added} ms on a {median:?} median) got {} of {total}: {counts:?}",
        counts[2]
    );

    // The gateway's view for admins lists every replica with its numbers.
    let view: serde_json::Value = http
        .get(format!("{gateway}/api/v1/admin/instances"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let catalog = view["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "catalog")
        .unwrap_or_else(|| panic!("{view}"));
    let listed: Vec<&str> = catalog["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["catalog-1", "catalog-2", "catalog-3"], "{view}");
    let slow_view = &catalog["instances"][2];
    assert_eq!(slow_view["address"], slow.as_str());
    // Its health checks are slowed too, past their timeout: it may show as not ready.
    assert!(slow_view["ready"].is_boolean(), "{slow_view}");
    assert!(slow_view["ewma_latency_ms"].as_f64().unwrap() >= 0.0);
    assert!(slow_view["version"].is_string());
    let customer = http
        .get(format!("{gateway}/api/v1/admin/instances"))
        .send()
        .await
        .unwrap();
    assert_eq!(customer.status(), 401);
    drop(identity);
}

/// A dead dependency opens its breaker within the breaker's minimum of calls, answers fast
/// while open, and closes again through half-open once the dependency is back.
#[tokio::test]
async fn a_dead_dependency_opens_the_breaker_and_recovers_through_half_open() {
    let Some(mut system) = Replicas::new(None, &[]).await else {
        return;
    };
    let catalog = system.start_catalog("catalog-0", &[]).await;
    let breaker = [
        ("TIDEWAY_URLS__CATALOG", catalog.as_str()),
        ("TIDEWAY_BALANCE__BREAKER__MINIMUM_CALLS", "10"),
        ("TIDEWAY_BALANCE__BREAKER__COOL_DOWN_MS", "1000"),
        ("TIDEWAY_BALANCE__BREAKER__HALF_OPEN_PROBES", "1"),
    ];
    let gateway = system.start_gateway(&breaker).await;
    let http = reqwest::Client::new();
    let items = format!("{gateway}{ITEMS}");
    let state = || async {
        let text = crate::scenario::metrics(&http, &gateway).await;
        value_of(
            &text,
            "tideway_breaker_state{upstream=\"catalog/catalog-0\"}",
        )
    };
    assert_eq!(state().await, Some(0.0), "closed while the catalog answers");

    let (mut proc, _) = system.catalog("catalog-0");
    proc.kill();
    // Each failed request counts one attempt or more (retries within the budget): the
    // breaker opens after at most its minimum of ten requests.
    let mut opened_after = None;
    for n in 1..=10 {
        let response = http.get(&items).send().await.unwrap();
        assert!(response.status().is_server_error());
        if state().await == Some(2.0) {
            opened_after = Some(n);
            break;
        }
    }
    assert!(
        opened_after.is_some(),
        "the breaker did not open within 10 requests"
    );
    // Open: refused at once, 503 with a problem, nothing sent.
    let response = http.get(&items).send().await.unwrap();
    assert_eq!(response.status(), 503);
    let problem: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        problem["type"], "/problems/upstream-unavailable",
        "{problem}"
    );

    // Back on the same address: after the cool-down a probe passes and the breaker closes.
    let port = catalog.rsplit(':').next().unwrap().to_owned();
    let listen = format!("127.0.0.1:{port}");
    let url = system
        .start_catalog("catalog-0", &[("TIDEWAY_CATALOG__LISTEN", listen.as_str())])
        .await;
    assert_eq!(url, catalog);
    eventually_async(
        Duration::from_secs(20),
        "the shop to read the catalog again",
        || async {
            http.get(&items)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        },
    )
    .await;
    assert_eq!(state().await, Some(0.0), "closed again");
    let log = system.gateway_log();
    let transitions: Vec<String> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["message"] == "Circuit breaker changed state.")
        .filter(|line| line["upstream"] == "catalog/catalog-0")
        .map(|line| line["state"].as_str().unwrap_or_default().to_owned())
        .collect();
    let recovered = transitions
        .windows(3)
        .any(|w| w[0] == "Open" && w[1] == "HalfOpen" && w[2] == "Closed");
    assert!(recovered, "open → half-open → closed: {transitions:?}");
}

/// Every attempt failing with 503: retries add at most the budget's 20% (plus its small
/// per-second reserve), not the two retries each request would take without it.
#[tokio::test]
async fn the_retry_budget_caps_extra_traffic_at_a_fifth() {
    let Some(mut system) = Replicas::new(None, &[]).await else {
        return;
    };
    let catalog = system
        .start_catalog(
            "catalog-0",
            &[
                ("TIDEWAY_FAULTS__ERROR_SHARE", "1.0"),
                ("TIDEWAY_FAULTS__ERROR_STATUS", "503"),
            ],
        )
        .await;
    let gateway = system
        .start_gateway_failing(&[
            ("TIDEWAY_URLS__CATALOG", catalog.as_str()),
            // Keep the breaker out of it: this test is about the budget.
            ("TIDEWAY_BALANCE__BREAKER__MINIMUM_CALLS", "1000000"),
        ])
        .await;
    let http = reqwest::Client::new();
    let items = format!("{gateway}{ITEMS}");
    let started = std::time::Instant::now();
    let requests = 300u64;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (http, items) = (http.clone(), items.clone());
        tasks.spawn(async move {
            for _ in 0..requests / 4 {
                let response = http.get(&items).send().await.unwrap();
                assert_eq!(response.status(), 503);
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let text = crate::scenario::metrics(&http, &gateway).await;
    let attempts = value_of(
        &text,
        "tideway_upstream_requests_total{service=\"catalog\",instance=\"catalog-0\"}",
    )
    .unwrap_or_else(|| panic!("no attempts counted: {text}")) as u64;
    let extra = attempts - requests;
    // The reserve: one retry a second over the 10 s window, and one second of rounding.
    let reserve = 10.0 + elapsed.ceil();
    assert!(
        (extra as f64) <= 0.2 * requests as f64 + reserve,
        "{extra} retries for {requests} requests in {elapsed:.1} s"
    );
    assert!(extra >= requests / 10, "retries happened: {extra}");
}

impl Replicas {
    /// Starts the gateway in front of an upstream that answers nothing but errors: answers
    /// its URL once it is listening.
    async fn start_gateway_failing(&mut self, extra: &[(&str, &str)]) -> String {
        let mut env = self.env.clone();
        for (key, value) in extra {
            env.push(((*key).to_owned(), (*value).to_owned()));
        }
        let mut proc = Proc::start("gateway", &["gateway"], &env, self.dir());
        let url = match proc.listening(Duration::from_secs(60)).await {
            Ok(url) => url,
            Err(err) => panic!("{err}\n{}", proc.log()),
        };
        self.gateway = Some((proc, url.clone()));
        url
    }
}

/// A replica that is stopped deregisters first and serves on for `discovery.drain_delay_ms`:
/// once a watcher has seen it leave, it still answers, and then it exits cleanly.
#[tokio::test]
async fn a_stopping_replica_serves_on_until_its_callers_have_seen_it_leave() {
    let bucket = bucket();
    let Some(mut system) = Replicas::new(Some(&bucket), &[]).await else {
        return;
    };
    let (_registry, mut watched) = watch_catalogs(&bucket).await;
    let url = system
        .start_catalog(
            "catalog-1",
            &[("TIDEWAY_DISCOVERY__DRAIN_DELAY_MS", "8000")],
        )
        .await;
    within(Duration::from_secs(10), "the replica registered", async {
        while !ids(&watched).contains(&"catalog-1".to_owned()) {
            watched.changed().await.unwrap();
        }
    })
    .await;
    let (proc, _) = system.catalog("catalog-1");
    let pid = i32::try_from(proc.pid()).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    within(Duration::from_secs(5), "the replica deregistered", async {
        while ids(&watched).contains(&"catalog-1".to_owned()) {
            watched.changed().await.unwrap();
        }
    })
    .await;
    let answer = reqwest::get(format!("{url}/health/live")).await;
    assert!(
        answer.is_ok_and(|a| a.status() == 200),
        "a replica that has deregistered still serves during its drain delay"
    );
    // The line may reach the log just after the registry shows the replica gone.
    tideway_testkit::eventually(tideway_testkit::DEADLINE, "the pause is logged", || {
        proc.log().contains("serving on until callers have seen it")
    })
    .await;
    // A second SIGTERM changes nothing: it still drains and exits cleanly.
    let status = proc.terminate().await;
    assert!(status.success(), "catalog-1 exited with {status}");
}
