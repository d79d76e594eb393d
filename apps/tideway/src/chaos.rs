//! `tideway chaos`: a fault scenario against a running `tideway up --distributed`, with
//! checkout traffic of its own, then a report of what the faults cost.
//!
//! It finds the shop through the supervisor's `data_dir/processes.json` (so it runs with
//! the same configuration as the `up --distributed` it tests) and, every `--every`, applies
//! the next fault of `--faults` to the next victim of `--victims`, round robin
//!
//! (the victims shift by one each round of the faults, so every kind meets every role):
//!
//! * `kill` — SIGKILL of one replica of the victim role; the supervisor restarts it;
//! * `latency` — `--latency-ms` added to every answer of one replica for `--hold`
//!   (through its `PUT /admin/faults`, as the demo admin);
//! * `errors` — a `--error-share` of one replica's answers are 503 for `--hold`;
//! * `pause-nats`, `pause-redis` — the NATS or Redis server of the configuration, when it
//!   runs on this machine, is stopped (SIGSTOP) for `--hold` and then continued: a server
//!   that answers nothing, the hardest outage for clients to notice.
//!
//! Meanwhile `tideway load --mix checkout` runs at `--rate` (0: none, for a load of your
//! own). Once the traffic ends, every injected fault is lifted and every process must be
//! back and ready; then it waits (at most `--settle`) for the system to come to rest and
//! runs the invariant checker ([`crate::invariants`]) on the services' databases. The
//! report — the faults, orders placed / confirmed / cancelled by reason, the invariants,
//! the errors the clients saw — is printed and written to `--out/report.json`. The exit
//! status is 0 when every order is terminal and every invariant holds.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::Context;
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use serde::Serialize;
use tideway_store::{Db, DbOptions};

use crate::{Config, ServiceName, faults::FaultsConfig, invariants, load, supervisor::ProcessRow};

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// SIGKILL of one replica.
    Kill,
    /// Added latency on one replica.
    Latency,
    /// 503 answers from one replica.
    Errors,
    /// The NATS server stopped (SIGSTOP) for a while.
    PauseNats,
    /// The Redis server stopped (SIGSTOP) for a while.
    PauseRedis,
}

/// `tideway chaos`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct ChaosArgs {
    /// How long faults are injected and the traffic runs.
    #[arg(long, default_value = "60s", value_parser = load::parse_duration)]
    pub duration: Duration,
    /// One fault this often.
    #[arg(long, default_value = "5s", value_parser = load::parse_duration)]
    pub every: Duration,
    /// The faults, applied in turn.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "kill")]
    pub faults: Vec<FaultKind>,
    /// The roles whose replicas suffer them, in turn.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "inventory,payment,ordering"
    )]
    pub victims: Vec<String>,
    /// How long a latency, error or pause fault lasts.
    #[arg(long, default_value = "3s", value_parser = load::parse_duration)]
    pub hold: Duration,
    /// The latency a `latency` fault adds, in milliseconds.
    #[arg(long, default_value_t = 500)]
    pub latency_ms: u64,
    /// The share of answers an `errors` fault turns into 503.
    #[arg(long, default_value_t = 0.5)]
    pub error_share: f64,
    /// Checkouts per second of the scenario's own traffic (0: none).
    #[arg(long, default_value_t = 4.0)]
    pub rate: f64,
    /// Virtual users of that traffic.
    #[arg(long, default_value_t = 8)]
    pub users: usize,
    /// The longest wait for the system to come to rest after the traffic.
    #[arg(long, default_value = "120s", value_parser = load::parse_duration)]
    pub settle: Duration,
    /// The gateway (default: the address of the supervisor's first gateway).
    #[arg(long)]
    pub target: Option<String>,
    /// Where the report goes (default: target/chaos/<UTC timestamp>).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// One fault as applied.
#[derive(Debug, Clone, Serialize)]
pub struct AppliedFault {
    /// Seconds after the start.
    pub at_secs: f64,
    /// Its kind.
    pub kind: FaultKind,
    /// The process or server it hit.
    pub target: String,
    /// `applied`, or why it could not be.
    pub outcome: String,
}

/// What `tideway chaos` found.
#[derive(Debug, Clone, Serialize)]
pub struct ChaosReport {
    /// The faults, in order.
    pub faults: Vec<AppliedFault>,
    /// Orders by state once at rest.
    pub orders_by_status: BTreeMap<String, usize>,
    /// Cancelled orders by their reason.
    pub cancelled_by_reason: BTreeMap<String, usize>,
    /// Orders still pending after the settle deadline.
    pub pending: i64,
    /// Every broken invariant.
    pub violations: Vec<String>,
    /// The scenario's own traffic (absent with `--rate 0`).
    pub traffic: Option<Traffic>,
    /// Seconds from the last fault lifted until the system was at rest.
    pub settle_secs: f64,
}

/// What the clients of the scenario's traffic saw.
#[derive(Debug, Clone, Serialize)]
pub struct Traffic {
    /// Requests sent.
    pub requests: u64,
    /// Answered successfully.
    pub ok: u64,
    /// Failures by kind.
    pub errors: load::Errors,
    /// Median latency, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
}

impl ChaosReport {
    /// Whether the system came to rest with every invariant holding.
    pub fn holds(&self) -> bool {
        self.pending == 0 && self.violations.is_empty()
    }

    /// The report as a table for the console.
    pub fn table(&self) -> String {
        let mut out = String::from("faults\n");
        for fault in &self.faults {
            out.push_str(&format!(
                "  {:>6.1}s  {:<12} {:<16} {}\n",
                fault.at_secs,
                format!("{:?}", fault.kind).to_lowercase(),
                fault.target,
                fault.outcome
            ));
        }
        out.push_str("orders\n");
        for (status, n) in &self.orders_by_status {
            out.push_str(&format!("  {status:<12} {n}\n"));
        }
        for (reason, n) in &self.cancelled_by_reason {
            out.push_str(&format!("  cancelled: {reason} — {n}\n"));
        }
        if let Some(traffic) = &self.traffic {
            out.push_str(&format!(
                "traffic\n  {} requests, {} ok, {} 4xx, {} 5xx, {} timeouts, {} connection errors; p50 {:.1} ms, p99 {:.1} ms\n",
                traffic.requests,
                traffic.ok,
                traffic.errors.status_4xx,
                traffic.errors.status_5xx,
                traffic.errors.timeout,
                traffic.errors.connect + traffic.errors.other,
                traffic.p50_ms,
                traffic.p99_ms
            ));
        }
        out.push_str(&format!(
            "at rest after {:.1} s\ninvariants  {}\n",
            self.settle_secs,
            if self.holds() { "hold" } else { "BROKEN" }
        ));
        if self.pending > 0 {
            out.push_str(&format!("  {} orders still pending\n", self.pending));
        }
        for violation in &self.violations {
            out.push_str(&format!("  {violation}\n"));
        }
        out
    }
}

/// Runs `tideway chaos`: 0 when the invariants hold, 1 when they do not, 2 on an error.
pub fn main(config: &Config, args: ChaosArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run_and_write(config, args)) {
        Ok(report) if report.holds() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

async fn run_and_write(config: &Config, args: ChaosArgs) -> anyhow::Result<ChaosReport> {
    let out = args.out.clone().unwrap_or_else(|| {
        let now = time::OffsetDateTime::now_utc();
        PathBuf::from("target/chaos").join(format!(
            "{:04}{:02}{:02}-{:02}{:02}{:02}",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second()
        ))
    });
    let report = run(config, args).await?;
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let file = out.join("report.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("writing {}", file.display()))?;
    println!("{}report     {}", report.table(), file.display());
    Ok(report)
}

/// The supervisor's table of processes.
fn processes(state_file: &Path) -> anyhow::Result<Vec<ProcessRow>> {
    let bytes = std::fs::read(state_file).with_context(|| {
        format!(
            "reading {} (is `tideway up --distributed` running with this configuration?)",
            state_file.display()
        )
    })?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", state_file.display()))
}

/// Runs the scenario and returns its report.
pub async fn run(config: &Config, args: ChaosArgs) -> anyhow::Result<ChaosReport> {
    validate(&args)?;
    let state_file = config.data_dir.join("processes.json");
    let table = processes(&state_file)?;
    let target = match &args.target {
        Some(target) => target.trim_end_matches('/').to_owned(),
        None => table
            .iter()
            .find(|row| row.role == "gateway")
            .and_then(|row| row.address.clone())
            .map(|address| format!("http://{}", loopback(&address)))
            .context("the process table has no gateway with an address")?,
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let needs_admin = args
        .faults
        .iter()
        .any(|kind| matches!(kind, FaultKind::Latency | FaultKind::Errors));
    let admin = if needs_admin {
        Some(admin_token(config, &http, &target).await?)
    } else {
        None
    };

    let started = Instant::now();
    let traffic = (args.rate > 0.0).then(|| {
        let mut load_args = load::LoadArgs::new(target.clone(), args.rate, args.duration);
        load_args.mix = load::Mix::Checkout;
        load_args.users = args.users;
        tokio::spawn(load::run(load_args))
    });

    let mut faults = Vec::new();
    let mut lifts = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + args.every, args.every);
    let mut n = 0usize;
    while started.elapsed() + args.every <= args.duration + Duration::from_millis(1) {
        tick.tick().await;
        let kind = args.faults[n % args.faults.len()];
        // The victims shift by one every round of the faults, so each kind meets each
        // role even when there are as many faults as victims.
        let role = &args.victims[(n + n / args.faults.len()) % args.victims.len()];
        let table = processes(&state_file)?;
        let replicas: Vec<&ProcessRow> = table
            .iter()
            .filter(|row| &row.role == role && row.pid.is_some())
            .collect();
        let victim = replicas.get((n / args.victims.len()) % replicas.len().max(1));
        let at_secs = started.elapsed().as_secs_f64();
        let (target_name, outcome) = match (kind, victim) {
            (FaultKind::PauseNats, _) => {
                pause(&config.bus.nats_url, "nats-server", args.hold, &mut lifts)
            }
            (FaultKind::PauseRedis, _) => pause(
                config.basket.service.redis_url.expose(),
                "redis-server",
                args.hold,
                &mut lifts,
            ),
            (_, None) => (
                role.clone(),
                format!("skipped: no running replica of {role}"),
            ),
            (FaultKind::Kill, Some(row)) => {
                let pid = row.pid.unwrap_or_default();
                let outcome = match i32::try_from(pid) {
                    Ok(raw) => match kill(Pid::from_raw(raw), Signal::SIGKILL) {
                        Ok(()) => format!("killed pid {pid}"),
                        Err(err) => format!("failed: {err}"),
                    },
                    Err(_) => "failed: pid out of range".to_owned(),
                };
                (row.name.clone(), outcome)
            }
            (FaultKind::Latency | FaultKind::Errors, Some(row)) => {
                let wanted = if kind == FaultKind::Latency {
                    FaultsConfig {
                        latency_ms: args.latency_ms,
                        ..FaultsConfig::default()
                    }
                } else {
                    FaultsConfig {
                        error_share: args.error_share,
                        ..FaultsConfig::default()
                    }
                };
                let outcome = match &row.address {
                    Some(address) => {
                        let url = format!("http://{}/admin/faults", loopback(address));
                        let token = admin.clone().unwrap_or_default();
                        match set_faults(&http, &url, &token, &wanted).await {
                            Ok(()) => {
                                let (http, hold) = (http.clone(), args.hold);
                                lifts.spawn(async move {
                                    tokio::time::sleep(hold).await;
                                    // A replica killed meanwhile starts without the fault.
                                    let _ =
                                        set_faults(&http, &url, &token, &FaultsConfig::default())
                                            .await;
                                });
                                format!("for {} ms", args.hold.as_millis())
                            }
                            Err(err) => format!("failed: {err:#}"),
                        }
                    }
                    None => "skipped: no address yet".to_owned(),
                };
                (row.name.clone(), outcome)
            }
        };
        tracing::warn!(?kind, target = %target_name, %outcome, "chaos: fault");
        faults.push(AppliedFault {
            at_secs,
            kind,
            target: target_name,
            outcome,
        });
        n += 1;
    }

    let traffic = match traffic {
        Some(handle) => {
            let report = handle.await.context("the traffic task")??;
            Some(Traffic {
                requests: report.total.requests,
                ok: report.total.ok,
                errors: report.total.errors,
                p50_ms: report.total.latency_ms.p50,
                p99_ms: report.total.latency_ms.p99,
            })
        }
        None => None,
    };
    while lifts.join_next().await.is_some() {}
    let lifted = Instant::now();

    // Every process back and ready.
    let deadline = lifted + args.settle;
    loop {
        let table = processes(&state_file)?;
        if table.iter().all(|row| row.pid.is_some() && row.ready) {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "processes not back within {:?}: {}",
            args.settle,
            table
                .iter()
                .filter(|row| !(row.pid.is_some() && row.ready))
                .map(|row| row.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let stores = stores(config).await?;
    let remaining = deadline.saturating_duration_since(Instant::now());
    let pending = invariants::wait_terminal(&stores.ordering, remaining).await?;
    let remaining = deadline.saturating_duration_since(Instant::now());
    let checked = invariants::settle(&stores, remaining.max(Duration::from_secs(1))).await?;
    let settle_secs = lifted.elapsed().as_secs_f64();
    let orders = tideway_ordering::Snapshot::read(&stores.ordering)
        .await
        .context("reading the ordering snapshot")?
        .orders;
    let mut cancelled_by_reason = BTreeMap::new();
    for order in orders
        .iter()
        .filter(|order| order.status == tideway_ordering_api::OrderStatus::Cancelled)
    {
        let reason = order
            .reason
            .clone()
            .unwrap_or_else(|| "no reason".to_owned());
        *cancelled_by_reason.entry(reason).or_insert(0) += 1;
    }
    Ok(ChaosReport {
        faults,
        orders_by_status: checked.orders_by_status,
        cancelled_by_reason,
        pending,
        violations: checked.violations,
        traffic,
        settle_secs,
    })
}

fn validate(args: &ChaosArgs) -> anyhow::Result<()> {
    anyhow::ensure!(!args.faults.is_empty(), "--faults: name at least one fault");
    anyhow::ensure!(
        !args.victims.is_empty(),
        "--victims: name at least one role"
    );
    for role in &args.victims {
        anyhow::ensure!(
            role == "gateway" || ServiceName::ALL.iter().any(|s| s.as_str() == role),
            "--victims: `{role}` is not a role (gateway or a service)"
        );
    }
    anyhow::ensure!(!args.every.is_zero(), "--every: must be more than 0");
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.error_share),
        "--error-share: a share between 0 and 1"
    );
    anyhow::ensure!(args.rate >= 0.0, "--rate: 0 or more");
    Ok(())
}

/// `0.0.0.0:8080` → `127.0.0.1:8080`: where a process bound to every address is reached.
fn loopback(address: &str) -> String {
    match address.parse::<std::net::SocketAddr>() {
        Ok(addr) if addr.ip().is_unspecified() => format!("127.0.0.1:{}", addr.port()),
        _ => address.to_owned(),
    }
}

async fn admin_token(
    config: &Config,
    http: &reqwest::Client,
    target: &str,
) -> anyhow::Result<String> {
    let admins: Vec<String> = crate::config::demo_users()
        .into_iter()
        .filter(|user| user.roles.iter().any(|role| role == "admin"))
        .map(|user| user.email)
        .collect();
    let login = config
        .demo_logins(true)
        .into_iter()
        .find(|login| admins.contains(&login.email))
        .context("latency and error faults need the demo admin (demo_users on, as under `up --distributed`)")?;
    let answer = http
        .post(format!("{target}/api/v1/identity/login"))
        .json(&serde_json::json!({ "email": login.email, "password": login.password }))
        .send()
        .await
        .context("signing in as the demo admin")?;
    anyhow::ensure!(
        answer.status().is_success(),
        "signing in as the demo admin: {}",
        answer.status()
    );
    let body: serde_json::Value = answer.json().await?;
    body["access_token"]
        .as_str()
        .map(str::to_owned)
        .context("the sign-in answer has no access_token")
}

async fn set_faults(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    faults: &FaultsConfig,
) -> anyhow::Result<()> {
    let answer = http.put(url).bearer_auth(token).json(faults).send().await?;
    anyhow::ensure!(answer.status().is_success(), "{url}: {}", answer.status());
    Ok(())
}

/// Stops the local server `name` that `url` points at for `hold`, then continues it.
fn pause(
    url: &str,
    name: &str,
    hold: Duration,
    lifts: &mut tokio::task::JoinSet<()>,
) -> (String, String) {
    let local = ["127.0.0.1", "localhost", "[::1]"]
        .iter()
        .any(|host| url.contains(host));
    if !local {
        return (name.to_owned(), "skipped: not on this machine".to_owned());
    }
    let pids = pids_named(name);
    if pids.is_empty() {
        return (name.to_owned(), format!("skipped: no {name} process found"));
    }
    let mut stopped = Vec::new();
    for pid in pids {
        if kill(pid, Signal::SIGSTOP).is_ok() {
            stopped.push(pid);
        }
    }
    if stopped.is_empty() {
        return (name.to_owned(), "failed: cannot signal it".to_owned());
    }
    let count = stopped.len();
    lifts.spawn(async move {
        tokio::time::sleep(hold).await;
        for pid in stopped {
            let _ = kill(pid, Signal::SIGCONT);
        }
    });
    (
        name.to_owned(),
        format!("stopped {count} process(es) for {} ms", hold.as_millis()),
    )
}

/// The processes whose command name is `name`.
fn pids_named(name: &str) -> Vec<Pid> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|comm| comm.trim() == name)
                .unwrap_or(false)
        })
        .map(Pid::from_raw)
        .collect()
}

async fn stores(config: &Config) -> anyhow::Result<invariants::Stores> {
    let open = |service: ServiceName| async move {
        let url = config.distributed.database_url(service)?;
        Db::open(&url, DbOptions::default())
            .await
            .with_context(|| format!("opening the {} database", service.as_str()))
    };
    Ok(invariants::Stores {
        ordering: open(ServiceName::Ordering).await?,
        inventory: open(ServiceName::Inventory).await?,
        payment: open(ServiceName::Payment).await?,
    })
}
