//! `tideway up --distributed`: one command starts every service and the gateway as
//! supervised processes of the real binary, two replicas each, on PostgreSQL and NATS.
//! The shop works end to end; a killed process is restarted; SIGKILL of one replica of
//! every role during checkouts loses no order; SIGTERM stops everything with exit code 0.

use std::{
    process::{Command, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use futures_util::StreamExt;
use serde_json::{Value, json};
use tideway::{invariants, supervisor::ProcessRow};
use tideway_store::{Db, DbOptions};
use tideway_testkit::{TestNats, eventually, eventually_async, is_ci};

use crate::{
    checkout::{Shopper, item_with_stock},
    processes::Proc,
    scenario,
};

const BIN: &str = env!("CARGO_BIN_EXE_tideway");

/// A running `tideway up --distributed` with databases and a NATS stream of its own.
pub(crate) struct Shop {
    supervisor: Option<Proc>,
    pub(crate) gateway: String,
    prefix: String,
    /// The environment of the supervisor: the shop's whole configuration.
    env: Vec<(String, String)>,
    dir: tempfile::TempDir,
    _nats: TestNats,
}

impl Shop {
    /// Starts the shop with `--replicas replicas`, or `None` (with a notice) outside CI
    /// when PostgreSQL or NATS is not there.
    async fn start(replicas: &str) -> Option<Self> {
        Self::start_with(&["--replicas", replicas]).await
    }

    /// Starts `up --distributed` with `args` after it (`--replicas 1 --versions …`), or
    /// `None` as [`Shop::start`].
    pub(crate) async fn start_with(args: &[&str]) -> Option<Self> {
        let admin = tideway_testkit::postgres_admin_url();
        if let Err(err) = Db::connect(&admin, DbOptions::default()).await {
            assert!(!is_ci(), "PostgreSQL is unreachable and CI=true: {err}");
            eprintln!("note: skipping: PostgreSQL is unreachable ({err}); run scripts/deps.sh");
            return None;
        }
        let nats = tideway_testkit::nats().await?;
        let dir = tempfile::tempdir().unwrap();
        let prefix = format!("tsup_{}_", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let options = nats.options();
        let env = vec![
            (
                "TIDEWAY_DATA_DIR".to_owned(),
                dir.path().display().to_string(),
            ),
            (
                "TIDEWAY_GATEWAY__LISTEN".to_owned(),
                "127.0.0.1:0".to_owned(),
            ),
            ("TIDEWAY_DISTRIBUTED__POSTGRES_URL".to_owned(), admin),
            (
                "TIDEWAY_DISTRIBUTED__DATABASE_PREFIX".to_owned(),
                prefix.clone(),
            ),
            (
                "TIDEWAY_DISTRIBUTED__STOP_GRACE_MS".to_owned(),
                "10000".to_owned(),
            ),
            ("TIDEWAY_BUS__NATS_URL".to_owned(), options.url),
            ("TIDEWAY_BUS__STREAM".to_owned(), options.stream),
            ("TIDEWAY_BUS__ROOT".to_owned(), options.root),
            ("TIDEWAY_LOG__FORMAT".to_owned(), "json".to_owned()),
            (
                "TIDEWAY_DISCOVERY__NATS__BUCKET".to_owned(),
                format!("{prefix}registry"),
            ),
            // Sagas stay in flight long enough for a kill to land among them.
            ("TIDEWAY_PAYMENT__LATENCY_MS".to_owned(), "100".to_owned()),
            // Every shopper registers from this one address: past the shop's per-address
            // limits on sign-up. The limits have tests of their own.
            (
                "TIDEWAY_GATEWAY__RATE_LIMIT__ENABLED".to_owned(),
                "false".to_owned(),
            ),
        ];
        let args: Vec<&str> = ["up", "--distributed"]
            .into_iter()
            .chain(args.iter().copied())
            .collect();
        let mut supervisor = Proc::start("supervisor", &args, &env, dir.path());
        let started = std::time::Instant::now();
        let gateway = match supervisor.listening(Duration::from_secs(120)).await {
            Ok(gateway) => gateway,
            Err(err) => panic!("{err}\n{}", supervisor.log()),
        };
        eprintln!("the distributed shop was ready in {:?}", started.elapsed());
        let shop = Self {
            supervisor: Some(supervisor),
            gateway,
            prefix,
            env,
            dir,
            _nats: nats,
        };
        scenario::wait_ready(&shop.gateway, Duration::from_secs(30)).await;
        Some(shop)
    }

    /// The supervisor's table of processes.
    pub(crate) fn table(&self) -> Vec<ProcessRow> {
        let file = self.dir.path().join("processes.json");
        serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap()
    }

    pub(crate) fn row(&self, name: &str) -> ProcessRow {
        self.table()
            .into_iter()
            .find(|row| row.name == name)
            .unwrap_or_else(|| panic!("no process {name}"))
    }

    /// The checkout's databases.
    async fn stores(&self) -> invariants::Stores {
        let admin = tideway_testkit::postgres_admin_url();
        let open = |service: &str| {
            let url = format!(
                "{}/{}{service}",
                admin.rsplit_once('/').unwrap().0,
                self.prefix
            );
            async move { Db::connect(&url, DbOptions::default()).await.unwrap() }
        };
        invariants::Stores {
            ordering: open("ordering").await,
            inventory: open("inventory").await,
            payment: open("payment").await,
        }
    }

    fn supervisor(&self) -> &Proc {
        self.supervisor.as_ref().unwrap()
    }

    /// Every process's log, for a failing test.
    fn logs(&self) -> String {
        let mut logs = format!("--- supervisor ---\n{}\n", self.supervisor().log());
        for row in self.table() {
            let file = self
                .dir
                .path()
                .join("logs")
                .join(format!("{}.log", row.name));
            let text = std::fs::read_to_string(file).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(30)..].join("\n");
            logs.push_str(&format!("--- {} ---\n{tail}\n", row.name));
        }
        logs
    }
}

impl Drop for Shop {
    fn drop(&mut self) {
        if std::thread::panicking() && self.supervisor.is_some() {
            eprintln!("{}", self.logs());
        }
        // A supervisor still running is killed; its children stop on their own.
        drop(self.supervisor.take());
        let prefix = self.prefix.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(drop_databases(&prefix));
        })
        .join();
    }
}

/// Drops the databases `<prefix><service>` once no process holds them.
async fn drop_databases(prefix: &str) {
    let Ok(admin) = Db::connect(&tideway_testkit::postgres_admin_url(), DbOptions::default()).await
    else {
        return;
    };
    for service in tideway::ServiceName::NAMES {
        let _ = sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {prefix}{service} WITH (FORCE)"
        ))
        .execute(admin.pool())
        .await;
    }
    admin.close().await;
}

/// Whether a process with `pid` exists (a zombie counts as gone: it no longer runs).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

pub(crate) fn sigkill(pid: u32) {
    let status = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -KILL {pid}");
}

/// Checks out with an idempotency key, again and again while the shop answers errors or
/// not at all, until it is accepted; answers the order id.
async fn checkout_until_accepted(shopper: &Shopper, deadline: Duration) -> String {
    let key = uuid::Uuid::new_v4().to_string();
    eventually_async(deadline, "a checkout to be accepted", || async {
        let response = shopper
            .http
            .post(format!("{}/api/v1/basket/checkout", shopper.base))
            .bearer_auth(&shopper.token)
            .header("idempotency-key", &key)
            .timeout(Duration::from_secs(10))
            .json(&json!({}))
            .send()
            .await
            .ok()?;
        if response.status() != 202 {
            return None;
        }
        let accepted: Value = response.json().await.ok()?;
        accepted["order_id"].as_str().map(str::to_owned)
    })
    .await
}

#[tokio::test]
async fn distributed_shop_serves_restarts_a_killed_process_and_stops_cleanly() {
    let Some(shop) = Shop::start("2").await else {
        return;
    };
    let table = shop.table();
    assert_eq!(
        table.len(),
        18,
        "two processes of each of nine roles: {table:?}"
    );
    assert!(
        table.iter().all(|row| row.ready && row.pid.is_some()),
        "{table:?}"
    );
    // Prometheus's file-based targets: one per address (the gateways share theirs).
    let targets: serde_json::Value = serde_json::from_slice(
        &std::fs::read(shop.dir.path().join("prometheus/targets.json")).unwrap(),
    )
    .unwrap();
    let targets = targets.as_array().unwrap();
    // Two of each of eight services, and the gateways' one shared address.
    assert_eq!(targets.len(), 17, "{targets:?}");
    assert!(
        targets
            .iter()
            .any(|t| t["labels"]["role"] == "payment" && t["targets"][0].is_string()),
        "{targets:?}"
    );
    let gateways: Vec<&ProcessRow> = table.iter().filter(|r| r.role == "gateway").collect();
    assert_eq!(gateways.len(), 2);
    assert_eq!(
        gateways[0].address, gateways[1].address,
        "gateways share a port"
    );
    let mut services: Vec<&Option<String>> = table
        .iter()
        .filter(|r| r.role != "gateway")
        .map(|r| &r.address)
        .collect();
    services.sort();
    services.dedup();
    assert_eq!(services.len(), 16, "each service replica has its own port");
    for row in &table {
        let log = shop
            .dir
            .path()
            .join("logs")
            .join(format!("{}.log", row.name));
        assert!(
            std::fs::read_to_string(&log)
                .unwrap()
                .contains("listening on "),
            "{} writes its own log",
            row.name
        );
    }

    // register → browse → basket, then a checkout confirmed.
    scenario::shop(&shop.gateway).await;
    let (item, _) = item_with_stock(&shop.gateway, 3).await;
    let shopper = Shopper::register(&shop.gateway).await;
    shopper.add(&item, 1).await;
    let order = shopper.checkout(None).await;
    let settled = shopper.settled(&order, Duration::from_secs(60)).await;
    assert_eq!(settled["status"], "confirmed", "{settled}");

    // SIGKILL of a process: the supervisor starts it again on the same address.
    let before = shop.row("catalog-1");
    sigkill(before.pid.unwrap());
    let after = eventually(Duration::from_secs(60), "catalog-1 to be restarted", || {
        Some(shop.row("catalog-1")).filter(|row| row.ready && row.pid != before.pid)
    })
    .await;
    assert_eq!(after.restarts, 1);
    assert_eq!(after.address, before.address);
    assert!(!alive(before.pid.unwrap()));
    let http = reqwest::Client::new();
    scenario::get_json(
        &http,
        &format!("{}/api/v1/catalog/items?page_size=3", shop.gateway),
    )
    .await;
    assert!(
        shop.supervisor()
            .log()
            .contains("a process exited; restarting it"),
        "the supervisor says so on its console"
    );

    let stores = shop.stores().await;
    let pending = invariants::wait_terminal(&stores.ordering, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(pending, 0);
    let report = invariants::settle(&stores, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(report.holds(), "{report:#?}");

    // SIGTERM: every process stops gracefully, the supervisor exits 0, nothing is left.
    let pids: Vec<u32> = shop.table().iter().filter_map(|row| row.pid).collect();
    assert_eq!(pids.len(), 18);
    let mut shop = shop;
    let supervisor = shop.supervisor.take().unwrap();
    let log_file = shop.dir.path().join("supervisor.log");
    let status = supervisor.terminate().await;
    let log = std::fs::read_to_string(log_file).unwrap();
    assert!(status.success(), "{status}: {log}");
    for pid in pids {
        assert!(!alive(pid), "process {pid} outlived the supervisor");
    }
    assert!(shop.table().iter().all(|row| row.pid.is_none()));
    assert!(log.contains("every process stopped"), "{log}");
    for row in shop.table() {
        let file = shop
            .dir
            .path()
            .join("logs")
            .join(format!("{}.log", row.name));
        let text = std::fs::read_to_string(file).unwrap();
        assert!(
            text.contains("tideway stopped cleanly"),
            "{} stopped gracefully: {text}",
            row.name
        );
    }
}

const ORDERS: usize = 50;

#[tokio::test]
async fn sigkill_of_a_replica_of_every_role_during_checkouts_loses_no_order() {
    let Some(shop) = Shop::start("2").await else {
        return;
    };
    let (item, _) = item_with_stock(&shop.gateway, ORDERS as i64 + 5).await;
    let mut shoppers = Vec::new();
    for _ in 0..ORDERS {
        let shopper = Shopper::register(&shop.gateway).await;
        shopper.add(&item, 1).await;
        shoppers.push(shopper);
    }
    let victims: Vec<ProcessRow> = shop
        .table()
        .into_iter()
        // The first replica of each service (the one the others call) and one gateway.
        .filter(|row| row.name.ends_with("-1") && row.role != "gateway" || row.name == "gateway-2")
        .collect();
    assert_eq!(victims.len(), 9);

    let accepted = AtomicUsize::new(0);
    // Eight at a time, kept in the shoppers' order.
    let checkouts = futures_util::stream::iter(shoppers.iter())
        .map(|shopper| {
            let accepted = &accepted;
            async move {
                let order = checkout_until_accepted(shopper, Duration::from_secs(90)).await;
                accepted.fetch_add(1, Ordering::SeqCst);
                order
            }
        })
        .buffered(8)
        .collect::<Vec<String>>();
    let killer = async {
        eventually(Duration::from_secs(60), "checkouts under way", || {
            (accepted.load(Ordering::SeqCst) >= 10).then_some(())
        })
        .await;
        for victim in &victims {
            sigkill(victim.pid.unwrap());
        }
    };
    let (orders, ()) = tokio::join!(checkouts, killer);
    let mut distinct = orders.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), ORDERS, "one order per shopper");

    // Every killed process is back.
    for victim in &victims {
        eventually(
            Duration::from_secs(60),
            format!("{} back", victim.name),
            || Some(shop.row(&victim.name)).filter(|row| row.ready && row.pid != victim.pid),
        )
        .await;
    }
    let stores = shop.stores().await;
    let pending = invariants::wait_terminal(&stores.ordering, Duration::from_secs(90))
        .await
        .unwrap();
    assert_eq!(pending, 0, "every order is terminal");
    let report = invariants::settle(&stores, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(report.holds(), "{report:#?}");
    assert_eq!(
        report.orders("confirmed") + report.orders("cancelled"),
        ORDERS,
        "{report:#?}"
    );
    for (shopper, id) in shoppers.iter().zip(&orders) {
        let order = shopper.order(id).await;
        assert_ne!(order["status"], "pending", "{order}");
    }
    // Even a supervisor killed with SIGKILL leaves no process behind: each child sees its
    // parent gone and stops by itself.
    let pids: Vec<u32> = shop.table().iter().filter_map(|row| row.pid).collect();
    assert_eq!(pids.len(), 18);
    sigkill(shop.supervisor().pid());
    eventually(
        Duration::from_secs(30),
        "every child to stop by itself",
        || pids.iter().all(|pid| !alive(*pid)).then_some(()),
    )
    .await;
}

/// A process that cannot start stops the whole shape at once, naming it and its log; bad
/// `--replicas` is refused before anything starts.
#[test]
fn a_process_that_cannot_start_stops_the_supervisor_naming_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .args(["up", "--distributed", "--replicas", "catalog=0"])
        .env("TIDEWAY_DATA_DIR", dir.path())
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--replicas") && stderr.contains("\"0\""),
        "{stderr}"
    );

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let admin = tideway_testkit::postgres_admin_url();
    if let Err(err) = runtime.block_on(Db::connect(&admin, DbOptions::default())) {
        assert!(!is_ci(), "PostgreSQL is unreachable and CI=true: {err}");
        eprintln!("note: skipping: PostgreSQL is unreachable ({err}); run scripts/deps.sh");
        return;
    }
    let Some(nats) = runtime.block_on(tideway_testkit::nats()) else {
        return;
    };
    let prefix = format!("tsup_{}_", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let options = nats.options();
    let output = Command::new(BIN)
        .args(["up", "--distributed"])
        .env("TIDEWAY_DATA_DIR", dir.path())
        .env("TIDEWAY_DISTRIBUTED__POSTGRES_URL", &admin)
        .env("TIDEWAY_DISTRIBUTED__DATABASE_PREFIX", &prefix)
        .env("TIDEWAY_BUS__NATS_URL", options.url)
        .env("TIDEWAY_BUS__STREAM", options.stream)
        .env("TIDEWAY_BUS__ROOT", options.root)
        .env("TIDEWAY_IDENTITY__SIGNING_KEY", "not a key")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    runtime.block_on(drop_databases(&prefix));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("identity-1 exited before it was listening"),
        "{stderr}"
    );
    assert!(stderr.contains("identity-1.log"), "{stderr}");
    assert!(
        !stderr.contains("catalog-1"),
        "nothing after it started: {stderr}"
    );
}

/// `tideway chaos` against the running shape: kills, latency and errors on the checkout's
/// services under its own checkout traffic; its report shows every fault applied, orders
/// confirmed, none cancelled by a step timeout, and the invariants holding.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_kills_and_slows_services_under_checkouts_and_the_invariants_hold() {
    let Some(shop) = Shop::start("1").await else {
        return;
    };
    let out = shop.dir.path().join("chaos");
    let output = tokio::task::spawn_blocking({
        let (env, out) = (shop.env.clone(), out.clone());
        move || {
            Command::new(BIN)
                .args([
                    "chaos",
                    "--duration",
                    "14s",
                    "--every",
                    "3s",
                    "--faults",
                    "kill,latency,errors",
                    "--victims",
                    "inventory,payment,ordering",
                    "--hold",
                    "2s",
                    "--rate",
                    "3",
                    "--users",
                    "4",
                    "--settle",
                    "120s",
                    "--out",
                ])
                .arg(&out)
                .envs(env)
                .stdin(Stdio::null())
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "chaos failed:\n{stdout}\n{stderr}");
    eprintln!("{stdout}");
    let report: Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let faults = report["faults"].as_array().unwrap();
    assert_eq!(faults.len(), 4, "{report:#}");
    let kinds: Vec<&str> = faults.iter().map(|f| f["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["kill", "latency", "errors", "kill"], "{report:#}");
    for fault in faults {
        let outcome = fault["outcome"].as_str().unwrap();
        assert!(
            outcome.starts_with("killed pid") || outcome.starts_with("for "),
            "{fault}"
        );
    }
    // The killed inventory and payment processes were restarted; the fourth fault is a
    // kill of the next role, since the victims shift by one each round.
    assert!(
        faults[3]["target"].as_str().unwrap().starts_with("payment"),
        "{report:#}"
    );
    assert!(shop.row("inventory-1").restarts >= 1, "{:?}", shop.table());
    assert!(shop.row("payment-1").restarts >= 1, "{:?}", shop.table());
    assert!(
        report["orders_by_status"]["confirmed"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{report:#}"
    );
    assert_eq!(report["pending"], 0, "{report:#}");
    assert_eq!(report["violations"], json!([]), "{report:#}");
    let timed_out: u64 = report["cancelled_by_reason"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(reason, _)| reason.contains("timed out"))
        .map(|(_, n)| n.as_u64().unwrap())
        .sum();
    assert_eq!(
        timed_out, 0,
        "no order cancelled by a step timeout: {report:#}"
    );
    assert!(
        report["traffic"]["requests"].as_u64().unwrap() > 0,
        "{report:#}"
    );
    assert!(stdout.contains("invariants  hold"), "{stdout}");
}
