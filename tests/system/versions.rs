//! `tideway up --distributed --versions catalog=v1,v2`: two versions of the catalog side
//! by side behind the gateway. A split set through the admin API sends each version its
//! share, told apart by the version header each replica puts on its answers; a blue/green
//! switch moves all traffic to v2 without a failed request, a gateway restarted then
//! serves the switched configuration at once (it reads the shared one at start), and the
//! switch back rolls it back.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use tideway_testkit::{eventually, eventually_async};

use crate::{
    scenario,
    supervisor::{Shop, sigkill},
};

const ITEMS: &str = "/api/v1/catalog/items?page_size=1";
const ROUTE: &str = "/api/v1/catalog";

/// One answer of the load: when its request was sent, and the version that answered it
/// (`Err` with what went wrong for a failed request).
type Answer = (Instant, Result<String, String>);

/// A catalog read through the gateway; the version that answered it.
async fn read(http: &reqwest::Client, gateway: &str) -> Result<String, String> {
    let response = http
        .get(format!("{gateway}{ITEMS}"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|err| err.to_string())?;
    let status = response.status();
    let version = response
        .headers()
        .get(tideway::VERSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.text().await.map_err(|err| err.to_string())?;
    match version {
        Some(version) if status == 200 => Ok(version),
        _ => Err(format!("{status} ({version:?}): {body}")),
    }
}

/// Catalog reads from four clients until stopped, each answer kept.
struct Load {
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<Answer>>>,
    tasks: tokio::task::JoinSet<()>,
}

impl Load {
    fn start(gateway: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let (stop, answers, gateway) = (stop.clone(), answers.clone(), gateway.to_owned());
            tasks.spawn(async move {
                let http = reqwest::Client::new();
                while !stop.load(Ordering::SeqCst) {
                    let sent = Instant::now();
                    let answer = read(&http, &gateway).await;
                    answers.lock().unwrap().push((sent, answer));
                }
            });
        }
        Self {
            stop,
            answers,
            tasks,
        }
    }

    /// How many answers to requests sent after `since`.
    fn answered_since(&self, since: Instant) -> usize {
        let answers = self.answers.lock().unwrap();
        answers.iter().filter(|(sent, _)| *sent > since).count()
    }

    async fn stop(mut self) -> Vec<Answer> {
        self.stop.store(true, Ordering::SeqCst);
        while self.tasks.join_next().await.is_some() {}
        std::mem::take(&mut *self.answers.lock().unwrap())
    }
}

/// `POST /api/v1/admin/traffic/switch` of the catalog route to `to`; answers when the gateway
/// answered, the new configuration in place.
async fn switch(http: &reqwest::Client, shop: &Shop, admin: &str, to: &str) -> Instant {
    let response = http
        .post(format!("{}/api/v1/admin/traffic/switch", shop.gateway))
        .bearer_auth(admin)
        .json(&json!({ "route": ROUTE, "to": to }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "switch to {to}");
    let answer: Value = response.json().await.unwrap();
    let route = answer["config"]["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|route| route["prefix"] == ROUTE)
        .unwrap()
        .clone();
    assert_eq!(route["versions"][to], 100, "{route}");
    Instant::now()
}

/// The versions of the answers to requests sent after `since`, each one's count.
fn versions_since(answers: &[Answer], since: Instant) -> Vec<(String, usize)> {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for (_, answer) in answers.iter().filter(|(sent, _)| *sent > since) {
        let version = answer
            .clone()
            .unwrap_or_else(|err| panic!("a failed read: {err}"));
        match counts.iter_mut().find(|(v, _)| *v == version) {
            Some((_, n)) => *n += 1,
            None => counts.push((version, 1)),
        }
    }
    counts.sort();
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_split_between_two_versions_then_a_switch_and_its_rollback_fail_no_request() {
    let Some(shop) = Shop::start_with(&["--replicas", "1", "--versions", "catalog=v1,v2"]).await
    else {
        return;
    };
    let names: Vec<String> = shop.table().into_iter().map(|row| row.name).collect();
    assert!(
        names.contains(&"catalog-v1-1".to_owned()) && names.contains(&"catalog-v2-1".to_owned()),
        "a catalog replica of each version: {names:?}"
    );
    let http = reqwest::Client::new();
    let admin = scenario::login(
        &http,
        &shop.gateway,
        "admin@tideway.local",
        "tideway-admin-1",
    )
    .await;

    // 80/20 between the versions, through the admin API.
    let config: Value = http
        .get(format!("{}/api/v1/admin/config", shop.gateway))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut config = config["config"].clone();
    let route = config["routes"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|route| route["prefix"] == ROUTE)
        .unwrap();
    route["versions"] = json!({ "catalog@v1": 80, "catalog@v2": 20 });
    let response = http
        .put(format!("{}/api/v1/admin/config", shop.gateway))
        .bearer_auth(&admin)
        .json(&config)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());

    // Each version's balancer finds its replica in discovery: once both have answered,
    // the share over 400 anonymous reads (split at random) is within a tolerance.
    eventually_async(
        Duration::from_secs(30),
        "both versions to answer",
        || async {
            let mut seen = Vec::new();
            for _ in 0..40 {
                seen.push(read(&http, &shop.gateway).await.ok()?);
            }
            (seen.iter().any(|v| v == "v1") && seen.iter().any(|v| v == "v2")).then_some(())
        },
    )
    .await;
    let before = Instant::now();
    let load = Load::start(&shop.gateway);
    eventually(Duration::from_secs(60), "400 reads", || {
        (load.answered_since(before) >= 400).then_some(())
    })
    .await;
    let answers = load.stop().await;
    let counts = versions_since(&answers, before);
    let total: usize = counts.iter().map(|(_, n)| n).sum();
    let v2 = counts
        .iter()
        .find(|(v, _)| v == "v2")
        .map_or(0, |(_, n)| *n);
    assert_eq!(counts.len(), 2, "only v1 and v2 answer: {counts:?}");
    // 20 % of at least 400: 80 expected; the bounds are more than 4 standard deviations.
    let share = v2 as f64 / total as f64;
    assert!(
        (0.12..=0.28).contains(&share),
        "v2 served {v2} of {total}: {counts:?}"
    );

    // Blue/green: all to v2 while four clients read; none fails, and every read sent after
    // the switch answered is v2's.
    let started = Instant::now();
    let load = Load::start(&shop.gateway);
    eventually(Duration::from_secs(30), "reads before the switch", || {
        (load.answered_since(started) >= 50).then_some(())
    })
    .await;
    let switched = switch(&http, &shop, &admin, "catalog@v2").await;
    eventually(Duration::from_secs(30), "reads after the switch", || {
        (load.answered_since(switched) >= 100).then_some(())
    })
    .await;
    let answers = load.stop().await;
    let failed: Vec<&Answer> = answers.iter().filter(|(_, a)| a.is_err()).collect();
    assert!(
        failed.is_empty(),
        "failed reads around the switch: {failed:?}"
    );
    let after = answers.iter().filter(|(sent, _)| *sent > switched).count();
    assert_eq!(
        versions_since(&answers, switched),
        [("v2".to_owned(), after)]
    );

    // A gateway started after the switch runs it from its first request: the file's
    // configuration (no versions) would send to either version.
    let gateway = shop.row("gateway-1");
    sigkill(gateway.pid.unwrap());
    eventually(Duration::from_secs(60), "gateway-1 to be restarted", || {
        Some(shop.row("gateway-1")).filter(|row| row.ready && row.pid != gateway.pid)
    })
    .await;
    for _ in 0..40 {
        assert_eq!(read(&http, &shop.gateway).await.as_deref(), Ok("v2"));
    }

    // The rollback is the same switch, back to v1, under the same load.
    let load = Load::start(&shop.gateway);
    let restarted = Instant::now();
    eventually(Duration::from_secs(30), "reads before the rollback", || {
        (load.answered_since(restarted) >= 50).then_some(())
    })
    .await;
    let rolled_back = switch(&http, &shop, &admin, "catalog@v1").await;
    eventually(Duration::from_secs(30), "reads after the rollback", || {
        (load.answered_since(rolled_back) >= 100).then_some(())
    })
    .await;
    let answers = load.stop().await;
    let failed: Vec<&Answer> = answers.iter().filter(|(_, a)| a.is_err()).collect();
    assert!(
        failed.is_empty(),
        "failed reads around the rollback: {failed:?}"
    );
    let after = answers
        .iter()
        .filter(|(sent, _)| *sent > rolled_back)
        .count();
    assert_eq!(
        versions_since(&answers, rolled_back),
        [("v1".to_owned(), after)]
    );

    // The restarted gateway's report: the shared configuration it started with (version
    // 2 of its own), then the rollback.
    let report: Value = http
        .get(format!("{}/api/v1/admin/traffic", shop.gateway))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kinds: Vec<&str> = report["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["shared", "switch"], "{report:#}");
    assert_eq!(report["version"], 3, "{report:#}");
    assert_eq!(
        report["routes"][0]["versions"],
        json!({ "catalog@v1": 100, "catalog@v2": 0 })
    );
}
