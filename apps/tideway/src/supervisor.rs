//! `tideway up --distributed`: every service and the gateway as processes of this binary
//! (`tideway serve <service>`, `tideway gateway`), N replicas each, kept running by a
//! supervisor.
//!
//! * Before anything starts, PostgreSQL and NATS must answer (and RabbitMQ when
//!   `bus.kind = "rabbitmq"`, passed on to every child); each service's database
//!   (`<distributed.database_prefix><service>`) is created when missing.
//! * Roles start in [`Role::ALL`] order (each after the services it calls). A role's first
//!   replica starts alone (it migrates and seeds; identity's first replica writes the
//!   signing key the others read), the rest once it is ready. Service replicas bind port 0
//!   on their configured host and say where (`listening on ADDR`); gateway replicas share
//!   `gateway.listen` with `SO_REUSEPORT`. A restarted process binds the address it had.
//! * Children are configured through the environment (`TIDEWAY_INSTANCE_ID`,
//!   `TIDEWAY_<SERVICE>__LISTEN`, `TIDEWAY_<SERVICE>__DATABASE_URL`, `TIDEWAY_BUS__KIND`,
//!   `TIDEWAY_URLS__<SERVICE>` …); the rest of the configuration (file and environment)
//!   they read as the supervisor did. Each one's output goes to
//!   `data_dir/logs/<name>-<n>.log`; the supervisor's own lines go to the console, and
//!   `data_dir/processes.json` holds the table of processes.
//! * A process that exits or is killed is restarted after a jittered exponential backoff
//!   (backon); the fifth exit of one process within a minute is a crash loop, which stops
//!   everything with a message naming the process and its log.
//! * SIGINT or SIGTERM stops the gateways, then the services: SIGTERM, then SIGKILL for any
//!   still running after `distributed.stop_grace_ms`. The supervisor then exits 0.
//! * Each child watches the supervisor (`--exit-with-parent`) and stops itself if the
//!   supervisor disappears, so even a SIGKILLed supervisor leaves no orphans for long.

use std::{
    collections::VecDeque,
    io::{Read, Seek, SeekFrom, Write},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{Config, ServiceName};

/// What a child prints once bound, before its address.
const LISTENING: &str = "listening on ";
/// How long a process may take to listen and become ready after it is started.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// A process that ran this long before exiting starts again from the shortest backoff.
const STABLE_AFTER: Duration = Duration::from_secs(30);
/// This many exits of one process within [`CRASH_WINDOW`] is a crash loop.
const CRASH_LOOP_EXITS: usize = 5;
/// The window of [`CRASH_LOOP_EXITS`].
const CRASH_WINDOW: Duration = Duration::from_secs(60);
/// The most replicas of one role.
pub const MAX_REPLICAS: u32 = 16;

/// A role the supervisor runs: a service or the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `tideway serve <service>`.
    Service(ServiceName),
    /// `tideway gateway`.
    Gateway,
}

impl Role {
    /// Every role, in start order: each service after those it calls, the gateway last.
    pub const ALL: [Self; 9] = [
        Self::Service(ServiceName::Identity),
        Self::Service(ServiceName::Catalog),
        Self::Service(ServiceName::Basket),
        Self::Service(ServiceName::Inventory),
        Self::Service(ServiceName::Payment),
        Self::Service(ServiceName::Ordering),
        Self::Service(ServiceName::Notification),
        Self::Service(ServiceName::Reporting),
        Self::Gateway,
    ];

    /// The role's name (`catalog`, `gateway`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Service(service) => service.as_str(),
            Self::Gateway => "gateway",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|role| role.as_str() == name)
    }
}

/// How many processes of each role: `--replicas N` sets every role, `--replicas
/// catalog=3,gateway=2` (repeatable, later values win) sets some; the default is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replicas {
    counts: [u32; 9],
}

impl Default for Replicas {
    fn default() -> Self {
        Self { counts: [1; 9] }
    }
}

impl Replicas {
    /// Parses the values of `--replicas`, in order; the error names the bad part.
    pub fn parse(values: &[String]) -> Result<Self, String> {
        let mut replicas = Self::default();
        let count = |text: &str| -> Result<u32, String> {
            text.trim()
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=MAX_REPLICAS).contains(n))
                .ok_or_else(|| {
                    format!(
                        "--replicas: expected a number from 1 to {MAX_REPLICAS}, found {text:?}"
                    )
                })
        };
        for value in values {
            if !value.contains('=') {
                replicas.counts = [count(value)?; 9];
                continue;
            }
            for part in value.split(',').filter(|part| !part.trim().is_empty()) {
                let (name, n) = part
                    .split_once('=')
                    .ok_or_else(|| format!("--replicas: expected role=count, found {part:?}"))?;
                let role = Role::parse(name.trim()).ok_or_else(|| {
                    let names: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
                    format!(
                        "--replicas: unknown role {:?}; one of {}",
                        name.trim(),
                        names.join(", ")
                    )
                })?;
                replicas.counts[role.index()] = count(n)?;
            }
        }
        Ok(replicas)
    }

    /// The number of processes of `role`.
    pub fn of(&self, role: Role) -> u32 {
        self.counts[role.index()]
    }

    /// The number of processes in all.
    pub fn total(&self) -> u32 {
        self.counts.iter().sum()
    }
}

/// The versions each service runs as: `--versions catalog=v1,v2` (repeatable) runs the
/// service's replicas once per version, each registering its version label; a service not
/// named runs unlabelled versions (the binary's version).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Versions {
    of: Vec<(ServiceName, Vec<String>)>,
}

impl Versions {
    /// Parses the values of `--versions`; the error names the bad part.
    pub fn parse(values: &[String]) -> Result<Self, String> {
        let mut of: Vec<(ServiceName, Vec<String>)> = Vec::new();
        for value in values {
            let (name, labels) = value
                .split_once('=')
                .ok_or_else(|| format!("--versions: expected service=v1,v2, found {value:?}"))?;
            let service = ServiceName::ALL
                .into_iter()
                .find(|s| s.as_str() == name.trim())
                .ok_or_else(|| format!("--versions: unknown service {:?}", name.trim()))?;
            let labels: Vec<String> = labels
                .split(',')
                .map(|label| label.trim().to_owned())
                .filter(|label| !label.is_empty())
                .collect();
            let valid = |label: &String| {
                label.len() <= 32
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
            };
            if labels.is_empty() || !labels.iter().all(valid) {
                return Err(format!(
                    "--versions: expected labels such as v1,v2 for {}, found {labels:?}",
                    service.as_str()
                ));
            }
            of.retain(|(s, _)| *s != service);
            of.push((service, labels));
        }
        Ok(Self { of })
    }

    /// The labels `service` runs as, or one unlabelled version.
    fn of(&self, service: ServiceName) -> Vec<Option<String>> {
        self.of
            .iter()
            .find(|(s, _)| *s == service)
            .map(|(_, labels)| labels.iter().cloned().map(Some).collect())
            .unwrap_or_else(|| vec![None])
    }

    /// Every `service@label`, for the gateways (`gateway.known_versions`).
    fn names(&self) -> String {
        self.of
            .iter()
            .flat_map(|(service, labels)| {
                labels
                    .iter()
                    .map(move |label| format!("{}@{label}", service.as_str()))
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// How the supervisor is started.
#[derive(Debug, Clone)]
pub struct Options {
    /// The replicas of each role (of each version).
    pub replicas: Replicas,
    /// The versions services run as.
    pub versions: Versions,
    /// The configuration file the supervisor read, passed on to its children.
    pub config_file: Option<PathBuf>,
    /// The binary the children run (this one).
    pub binary: PathBuf,
}

/// Decides when restarts have become a crash loop: `max` exits within `window`.
#[derive(Debug, Clone)]
struct CrashLoop {
    exits: VecDeque<Instant>,
    max: usize,
    window: Duration,
}

impl CrashLoop {
    fn new(max: usize, window: Duration) -> Self {
        Self {
            exits: VecDeque::new(),
            max,
            window,
        }
    }

    /// Records an exit at `now`; whether that makes a crash loop.
    fn record(&mut self, now: Instant) -> bool {
        while self
            .exits
            .front()
            .is_some_and(|first| now.duration_since(*first) > self.window)
        {
            self.exits.pop_front();
        }
        self.exits.push_back(now);
        self.exits.len() >= self.max
    }
}

/// The jittered backoff between restarts of one process.
fn restart_backoff() -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_jitter()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .without_max_times()
        .build()
}

/// One process the supervisor keeps running.
struct Slot {
    /// `catalog-1` (`catalog-v2-1` for a version): its instance id and log file name.
    name: String,
    role: Role,
    /// The version label it registers with, under `--versions`.
    version: Option<String>,
    /// What it binds: port 0 until its first start has bound, then that address.
    listen: String,
    pid: Option<u32>,
    address: Option<SocketAddr>,
    ready: bool,
    started_at: Instant,
    restarts: u32,
    crash_loop: CrashLoop,
    backoff: ExponentialBackoff,
    log: PathBuf,
}

/// What the supervisor reacts to.
enum Event {
    /// A child exited (the waiter thread reaped it).
    Exited {
        slot: usize,
        pid: u32,
        status: std::io::Result<ExitStatus>,
    },
    /// A slot's backoff has passed: start it again.
    Restart { slot: usize },
    /// A restarted child is listening and ready.
    Up {
        slot: usize,
        pid: u32,
        address: SocketAddr,
    },
}

/// A started child.
struct Spawned {
    pid: u32,
    /// Where its output begins in its log file.
    offset: u64,
    /// Set once it has exited.
    exited: Arc<AtomicBool>,
}

/// Starts children: the binary, the configuration file and the environment they share.
#[derive(Clone)]
struct Launcher {
    binary: PathBuf,
    config_file: Option<PathBuf>,
    shared_env: Vec<(String, String)>,
    database_urls: Vec<(ServiceName, String)>,
    /// `distributed.version_env`: each version's own settings.
    version_env: std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>,
    events: mpsc::UnboundedSender<Event>,
}

impl Launcher {
    /// Starts `slot` binding `slot.listen`; a thread waits for its exit.
    fn spawn(&self, index: usize, slot: &Slot) -> anyhow::Result<Spawned> {
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&slot.log)
            .with_context(|| format!("opening {}", slot.log.display()))?;
        writeln!(
            log,
            "--- tideway supervisor: starting {} on {} ---",
            slot.name, slot.listen
        )
        .with_context(|| format!("writing {}", slot.log.display()))?;
        let offset = log.metadata().map(|m| m.len()).unwrap_or(0);
        let mut command = Command::new(&self.binary);
        if let Some(file) = &self.config_file {
            command.arg("--config").arg(file);
        }
        command.arg("--exit-with-parent");
        let mut env = self.shared_env.clone();
        env.push(("TIDEWAY_INSTANCE_ID".into(), slot.name.clone()));
        match slot.role {
            Role::Service(service) => {
                command.args(["serve", service.as_str()]);
                let key = service.as_str().to_uppercase();
                env.push((format!("TIDEWAY_{key}__LISTEN"), slot.listen.clone()));
                if let Some((_, url)) = self.database_urls.iter().find(|(s, _)| *s == service) {
                    env.push((format!("TIDEWAY_{key}__DATABASE_URL"), url.clone()));
                }
                if let Some(version) = &slot.version {
                    env.push(("TIDEWAY_VERSION".into(), version.clone()));
                    let own = self
                        .version_env
                        .get(&format!("{}@{version}", service.as_str()));
                    env.extend(
                        own.into_iter()
                            .flatten()
                            .map(|(k, v)| (k.clone(), v.clone())),
                    );
                }
            }
            Role::Gateway => {
                command.arg("gateway");
                env.push(("TIDEWAY_GATEWAY__LISTEN".into(), slot.listen.clone()));
                env.push(("TIDEWAY_GATEWAY__REUSE_PORT".into(), "true".into()));
                env.push(("TIDEWAY_GATEWAY__SHARE_CONFIG".into(), "true".into()));
            }
        }
        let stderr = log
            .try_clone()
            .with_context(|| format!("opening {}", slot.log.display()))?;
        // A group of its own: a Ctrl-C in the terminal reaches the supervisor only, which
        // stops the children in order (gateways first).
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr))
            .spawn()
            .with_context(|| format!("starting {} ({})", slot.name, self.binary.display()))?;
        let pid = child.id();
        let exited = Arc::new(AtomicBool::new(false));
        let (flag, events) = (exited.clone(), self.events.clone());
        std::thread::Builder::new()
            .name(format!("wait-{}", slot.name))
            .spawn(move || {
                let status = child.wait();
                flag.store(true, Ordering::SeqCst);
                let _ = events.send(Event::Exited {
                    slot: index,
                    pid,
                    status,
                });
            })
            .context("starting a thread to wait for a child")?;
        Ok(Spawned {
            pid,
            offset,
            exited,
        })
    }
}

/// Waits until the child writes `listening on ADDR` to its log after `offset`.
async fn wait_listening(
    name: &str,
    log: &Path,
    spawned: &Spawned,
    deadline: Duration,
) -> anyhow::Result<SocketAddr> {
    let start = Instant::now();
    loop {
        if let Some(address) = read_from(log, spawned.offset)
            .lines()
            .find_map(|line| line.strip_prefix(LISTENING))
        {
            let address = address.trim();
            return address
                .parse()
                .with_context(|| format!("{name} said it listens on {address:?}"));
        }
        if spawned.exited.load(Ordering::SeqCst) {
            anyhow::bail!(
                "{name} exited before it was listening; its log ({}) ends with:\n{}",
                log.display(),
                tail(log, 15)
            );
        }
        if start.elapsed() > deadline {
            anyhow::bail!(
                "{name} was not listening within {} s; see {}",
                deadline.as_secs(),
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits until `GET http://address/health/ready` answers 200. For gateway replicas, which
/// share one address, any of them may answer: each is fully built before it binds, so a
/// gateway that listens serves, and their readiness (their upstreams) is the same.
async fn wait_ready(
    http: &reqwest::Client,
    name: &str,
    address: SocketAddr,
    spawned: &Spawned,
    deadline: Duration,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let url = format!("http://{address}/health/ready");
    loop {
        let ready = http
            .get(&url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|response| response.status().is_success());
        if ready {
            return Ok(());
        }
        if spawned.exited.load(Ordering::SeqCst) {
            anyhow::bail!("{name} exited before it was ready");
        }
        if start.elapsed() > deadline {
            anyhow::bail!("{name} was not ready within {} s", deadline.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The text of `path` from `offset` on (empty when unreadable).
fn read_from(path: &Path, offset: u64) -> String {
    let mut text = String::new();
    if let Ok(mut file) = std::fs::File::open(path)
        && file.seek(SeekFrom::Start(offset)).is_ok()
    {
        let mut bytes = Vec::new();
        if file.read_to_end(&mut bytes).is_ok() {
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
    }
    text
}

/// The last `lines` lines of `path`.
fn tail(path: &Path, lines: usize) -> String {
    let text = read_from(path, 0);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `host:port` of the first server of a `nats://` URL, without credentials.
fn nats_address(url: &str) -> String {
    let rest = url.strip_prefix("nats://").unwrap_or(url);
    let first = rest.split(',').next().unwrap_or(rest);
    let host = first.rsplit_once('@').map_or(first, |(_, host)| host);
    let host = host.split('/').next().unwrap_or(host);
    if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:4222")
    }
}

/// Fails unless NATS accepts a connection.
async fn check_nats(config: &Config) -> anyhow::Result<()> {
    let address = nats_address(&config.bus.nats_url);
    match tokio::time::timeout(
        Duration::from_secs(3),
        tokio::net::TcpStream::connect(&address),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => anyhow::bail!(
            "NATS is not reachable at {address} (bus.nats_url): {err}; scripts/deps.sh starts one"
        ),
        Err(_) => anyhow::bail!(
            "NATS did not answer at {address} (bus.nats_url) within 3 s; scripts/deps.sh starts one"
        ),
    }
}

/// `host:port` of an `amqp://` URL, without credentials or vhost.
fn amqp_address(url: &str) -> String {
    let rest = url.strip_prefix("amqp://").unwrap_or(url);
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let host = host.split(['/', '?']).next().unwrap_or(host);
    if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:5672")
    }
}

/// Fails unless RabbitMQ accepts a connection (when it carries the events).
async fn check_rabbitmq(config: &Config) -> anyhow::Result<()> {
    let address = amqp_address(&config.bus.rabbitmq_url);
    match tokio::time::timeout(
        Duration::from_secs(3),
        tokio::net::TcpStream::connect(&address),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => anyhow::bail!(
            "RabbitMQ is not reachable at {address} (bus.rabbitmq_url): {err}; scripts/deps.sh starts one"
        ),
        Err(_) => anyhow::bail!(
            "RabbitMQ did not answer at {address} (bus.rabbitmq_url) within 3 s; scripts/deps.sh starts one"
        ),
    }
}

/// Creates every service's database on `distributed.postgres_url` when missing; answers
/// each service's URL.
async fn ensure_databases(config: &Config) -> anyhow::Result<Vec<(ServiceName, String)>> {
    let distributed = &config.distributed;
    let admin = tideway_store::Db::open(
        &distributed.postgres_url,
        tideway_store::DbOptions {
            max_connections: 1,
            ..tideway_store::DbOptions::default()
        },
    )
    .await
    .with_context(|| {
        format!(
            "PostgreSQL is not reachable at {} (distributed.postgres_url); scripts/deps.sh starts one",
            distributed.postgres_url
        )
    })?;
    let mut urls = Vec::new();
    for service in ServiceName::ALL {
        ensure_database(&admin, distributed.database_name(service)).await?;
        let url = distributed.database_url(service)?;
        urls.push((service, url.expose().to_owned()));
    }
    // The audit trail the gateways record in.
    ensure_database(&admin, distributed.audit_database_name()).await?;
    admin.close().await;
    Ok(urls)
}

/// Creates the database `name` unless it exists (another supervisor may create it at the
/// same moment).
async fn ensure_database(admin: &tideway_store::Db, name: String) -> anyhow::Result<()> {
    let exists = |admin: &tideway_store::Db, name: String| {
        let pool = admin.pool().clone();
        async move {
            sqlx::query("SELECT 1 FROM pg_database WHERE datname = $1")
                .bind(name)
                .fetch_optional(&pool)
                .await
                .map(|row| row.is_some())
        }
    };
    if !exists(admin, name.clone()).await? {
        // The name is checked (a-z, 0-9, '_'), so it is safe to splice in.
        let created = sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(admin.pool())
            .await;
        if let Err(err) = created
            && !exists(admin, name.clone()).await?
        {
            return Err(err).with_context(|| format!("creating the database {name}"));
        }
        tracing::info!(database = name, "created a database");
    }
    Ok(())
}

/// The address a service's replicas bind at first: its configured host, port 0.
fn service_listen(config: &Config, service: ServiceName) -> String {
    let configured = config.listen_of(service);
    match configured.parse::<SocketAddr>() {
        Ok(addr) => SocketAddr::new(addr.ip(), 0).to_string(),
        Err(_) => "127.0.0.1:0".to_owned(),
    }
}

/// The row of a process in `processes.json`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ProcessRow {
    /// `catalog-1`.
    pub name: String,
    /// `catalog`, `gateway`.
    pub role: String,
    /// Its process id while it runs.
    pub pid: Option<u32>,
    /// Where it listens, once bound.
    pub address: Option<String>,
    /// Whether it answered `/health/ready` since it last started.
    pub ready: bool,
    /// How often it was restarted.
    pub restarts: u32,
}

/// The supervisor's state: its children and where it writes their table.
struct Supervisor {
    slots: Vec<Slot>,
    launcher: Launcher,
    events: mpsc::UnboundedReceiver<Event>,
    state_file: PathBuf,
    http: reqwest::Client,
    grace: Duration,
}

impl Supervisor {
    fn rows(&self) -> Vec<ProcessRow> {
        self.slots
            .iter()
            .map(|slot| ProcessRow {
                name: slot.name.clone(),
                role: slot.role.as_str().to_owned(),
                pid: slot.pid,
                address: slot.address.map(|a| a.to_string()),
                ready: slot.ready,
                restarts: slot.restarts,
            })
            .collect()
    }

    /// Writes `processes.json` (whole, through a rename, so readers never see half).
    fn write_state(&self) {
        let write = || -> std::io::Result<()> {
            let temp = self.state_file.with_extension("json.tmp");
            let json = serde_json::to_vec_pretty(&self.rows()).map_err(std::io::Error::other)?;
            std::fs::write(&temp, json)?;
            std::fs::rename(&temp, &self.state_file)
        };
        if let Err(err) = write() {
            tracing::warn!(error = %err, file = %self.state_file.display(), "cannot write the process table");
        }
        self.write_scrape_targets();
    }

    /// Prometheus's file-based targets (`<data_dir>/prometheus/targets.json`): every
    /// process that listens, labelled with its role and name; the gateways share one
    /// address, so it is listed once (each scrape reaches one of them).
    fn write_scrape_targets(&self) {
        let file = self
            .state_file
            .with_file_name("prometheus")
            .join("targets.json");
        let mut seen = std::collections::HashSet::new();
        let groups: Vec<serde_json::Value> = self
            .slots
            .iter()
            .filter_map(|slot| slot.address.map(|address| (slot, address)))
            .filter(|(_, address)| seen.insert(*address))
            .map(|(slot, address)| {
                serde_json::json!({
                    "targets": [address.to_string()],
                    "labels": { "role": slot.role.as_str(), "process": slot.name, "shape": "distributed" },
                })
            })
            .collect();
        let write = || -> std::io::Result<()> {
            if let Some(dir) = file.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let temp = file.with_extension("json.tmp");
            std::fs::write(
                &temp,
                serde_json::to_vec_pretty(&groups).map_err(std::io::Error::other)?,
            )?;
            std::fs::rename(&temp, &file)
        };
        if let Err(err) = write() {
            tracing::warn!(error = %err, file = %file.display(), "cannot write the Prometheus targets");
        }
    }

    /// Starts slot `index` and waits until it listens and is ready.
    async fn start_slot(&mut self, index: usize) -> anyhow::Result<()> {
        let spawned = self.launcher.spawn(index, &self.slots[index])?;
        let slot = &mut self.slots[index];
        slot.pid = Some(spawned.pid);
        slot.started_at = Instant::now();
        let address = wait_listening(&slot.name, &slot.log, &spawned, START_DEADLINE).await?;
        slot.address = Some(address);
        slot.listen = address.to_string();
        wait_ready(&self.http, &slot.name, address, &spawned, START_DEADLINE)
            .await
            .with_context(|| format!("see {}", slot.log.display()))?;
        slot.ready = true;
        tracing::info!(process = slot.name, pid = spawned.pid, %address, "process ready");
        Ok(())
    }

    /// Starts every role in order; a role's first replica alone, then the rest together.
    async fn start_all(
        &mut self,
        config: &Config,
        replicas: Replicas,
        versions: &Versions,
    ) -> anyhow::Result<()> {
        for role in Role::ALL {
            let first = self.slots.len();
            let listen = match role {
                Role::Service(service) => service_listen(config, service),
                Role::Gateway => config.gateway.listen.clone(),
            };
            let labels = match role {
                Role::Service(service) => versions.of(service),
                Role::Gateway => vec![None],
            };
            for (version, n) in labels
                .iter()
                .flat_map(|v| (1..=replicas.of(role)).map(move |n| (v.clone(), n)))
            {
                let name = match &version {
                    Some(version) => format!("{}-{version}-{n}", role.as_str()),
                    None => format!("{}-{n}", role.as_str()),
                };
                let log = self
                    .state_file
                    .with_file_name("logs")
                    .join(format!("{name}.log"));
                self.slots.push(Slot {
                    name,
                    role,
                    version,
                    listen: listen.clone(),
                    pid: None,
                    address: None,
                    ready: false,
                    started_at: Instant::now(),
                    restarts: 0,
                    crash_loop: CrashLoop::new(CRASH_LOOP_EXITS, CRASH_WINDOW),
                    backoff: restart_backoff(),
                    log,
                });
            }
            self.start_slot(first).await?;
            let first_address = self.slots[first].address;
            if role == Role::Gateway
                && let Some(address) = first_address
            {
                // The other gateways join the first one's port.
                for slot in &mut self.slots[first + 1..] {
                    slot.listen = address.to_string();
                }
            }
            let rest: Vec<usize> = (first + 1..self.slots.len()).collect();
            let mut started = Vec::new();
            for index in &rest {
                started.push((*index, self.launcher.spawn(*index, &self.slots[*index])?));
            }
            for (index, spawned) in &started {
                self.slots[*index].pid = Some(spawned.pid);
            }
            let waits = started.iter().map(|(index, spawned)| {
                let slot = &self.slots[*index];
                let (name, log, http) = (slot.name.clone(), slot.log.clone(), self.http.clone());
                async move {
                    let address = wait_listening(&name, &log, spawned, START_DEADLINE).await?;
                    wait_ready(&http, &name, address, spawned, START_DEADLINE)
                        .await
                        .with_context(|| format!("see {}", log.display()))?;
                    anyhow::Ok((*index, address))
                }
            });
            for result in futures_util::future::join_all(waits).await {
                let (index, address) = result?;
                let slot = &mut self.slots[index];
                slot.address = Some(address);
                slot.listen = address.to_string();
                slot.ready = true;
                tracing::info!(process = slot.name, pid = slot.pid, %address, "process ready");
            }
            if let (Role::Service(service), Some(address)) = (role, first_address) {
                // Later roles reach this service at its first replica.
                self.launcher.shared_env.push((
                    format!("TIDEWAY_URLS__{}", service.as_str().to_uppercase()),
                    format!("http://{address}"),
                ));
            }
            self.write_state();
        }
        Ok(())
    }

    /// Reacts to events until `shutdown` is cancelled; an error on a crash loop.
    async fn supervise(&mut self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        loop {
            let event = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                event = self.events.recv() => match event {
                    Some(event) => event,
                    None => return Ok(()),
                },
            };
            match event {
                Event::Exited { slot, pid, status } => {
                    let index = slot;
                    let slot = &mut self.slots[index];
                    if slot.pid != Some(pid) {
                        continue;
                    }
                    slot.pid = None;
                    slot.ready = false;
                    let status = status.map_or_else(|err| err.to_string(), |s| s.to_string());
                    let now = Instant::now();
                    if now.duration_since(slot.started_at) >= STABLE_AFTER {
                        slot.backoff = restart_backoff();
                    }
                    if slot.crash_loop.record(now) {
                        self.write_state();
                        let slot = &self.slots[index];
                        anyhow::bail!(
                            "{} exited {CRASH_LOOP_EXITS} times within {} s (last: {status}): a crash loop, so the shop is stopped. Its log ({}) ends with:\n{}",
                            slot.name,
                            CRASH_WINDOW.as_secs(),
                            slot.log.display(),
                            tail(&slot.log, 15)
                        );
                    }
                    let delay = slot.backoff.next().unwrap_or(Duration::from_secs(5));
                    tracing::warn!(
                        process = slot.name,
                        pid,
                        status,
                        restart_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        "a process exited; restarting it"
                    );
                    self.write_state();
                    let events = self.launcher.events.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let _ = events.send(Event::Restart { slot: index });
                    });
                }
                Event::Restart { slot } => {
                    let index = slot;
                    let spawned = self.launcher.spawn(index, &self.slots[index])?;
                    let slot = &mut self.slots[index];
                    slot.pid = Some(spawned.pid);
                    slot.started_at = Instant::now();
                    slot.restarts += 1;
                    tracing::info!(
                        process = slot.name,
                        pid = spawned.pid,
                        listen = slot.listen,
                        "process restarted"
                    );
                    let (name, log, http) =
                        (slot.name.clone(), slot.log.clone(), self.http.clone());
                    self.write_state();
                    let events = self.launcher.events.clone();
                    tokio::spawn(async move {
                        let up = async {
                            let address =
                                wait_listening(&name, &log, &spawned, START_DEADLINE).await?;
                            wait_ready(&http, &name, address, &spawned, START_DEADLINE).await?;
                            anyhow::Ok(address)
                        };
                        match up.await {
                            Ok(address) => {
                                let _ = events.send(Event::Up {
                                    slot: index,
                                    pid: spawned.pid,
                                    address,
                                });
                            }
                            // An exit is reported by its waiter; a hang stays not ready.
                            Err(err) => {
                                tracing::warn!(error = %format!("{err:#}"), "a restarted process is not ready")
                            }
                        }
                    });
                }
                Event::Up { slot, pid, address } => {
                    let slot = &mut self.slots[slot];
                    if slot.pid == Some(pid) {
                        slot.ready = true;
                        slot.address = Some(address);
                        tracing::info!(process = slot.name, pid, %address, "process ready again");
                        self.write_state();
                    }
                }
            }
        }
    }

    /// Stops the gateways, then the services: SIGTERM, then SIGKILL after the grace.
    async fn stop_all(&mut self) {
        for gateways in [true, false] {
            let group: Vec<usize> = (0..self.slots.len())
                .filter(|i| (self.slots[*i].role == Role::Gateway) == gateways)
                .filter(|i| self.slots[*i].pid.is_some())
                .collect();
            for index in &group {
                if let Some(pid) = self.slots[*index].pid {
                    signal(pid, Signal::SIGTERM);
                }
            }
            if !self.wait_exits(&group, self.grace).await {
                for index in &group {
                    if let Some(pid) = self.slots[*index].pid {
                        tracing::warn!(
                            process = self.slots[*index].name,
                            pid,
                            "still running after the grace period; killing it"
                        );
                        signal(pid, Signal::SIGKILL);
                    }
                }
                self.wait_exits(&group, Duration::from_secs(5)).await;
            }
        }
        self.write_state();
    }

    /// Waits until every slot of `group` has exited, at most `deadline`; whether they did.
    async fn wait_exits(&mut self, group: &[usize], deadline: Duration) -> bool {
        let until = tokio::time::Instant::now() + deadline;
        while group.iter().any(|i| self.slots[*i].pid.is_some()) {
            let event = match tokio::time::timeout_at(until, self.events.recv()).await {
                Ok(Some(event)) => event,
                Ok(None) | Err(_) => return false,
            };
            if let Event::Exited { slot, pid, status } = event {
                let slot = &mut self.slots[slot];
                if slot.pid == Some(pid) {
                    slot.pid = None;
                    slot.ready = false;
                    let status = status.map_or_else(|err| err.to_string(), |s| s.to_string());
                    tracing::info!(process = slot.name, pid, status, "process stopped");
                }
            }
        }
        true
    }

    /// Prints the table of processes and the shop's URLs.
    fn print_table(&self, config: &Config, ready_in: Duration) {
        let gateway = self
            .slots
            .iter()
            .find(|slot| slot.role == Role::Gateway)
            .and_then(|slot| slot.address);
        if let Some(address) = gateway {
            // For whoever started this on port 0: where the shop is, once it is ready.
            println!("{LISTENING}{address}");
        }
        println!(
            "\nTideway: every service as its own processes ({} processes), ready in {:.1} s",
            self.slots.len(),
            ready_in.as_secs_f64()
        );
        println!("  {:<14} {:>8}  {:<22} ready", "process", "pid", "address");
        for slot in &self.slots {
            println!(
                "  {:<14} {:>8}  {:<22} {}",
                slot.name,
                slot.pid
                    .map_or_else(|| "-".to_owned(), |pid| pid.to_string()),
                slot.address
                    .map_or_else(|| "-".to_owned(), |a| a.to_string()),
                if slot.ready { "yes" } else { "no" }
            );
        }
        if let Some(address) = gateway {
            println!("  shop        http://{address}/");
            println!("  console     http://{address}/ops  (admins)");
            println!("  catalog     http://{address}/api/v1/catalog/items");
            println!("  api docs    http://{address}/api/docs");
            println!("  health      http://{address}/health/ready");
        }
        println!(
            "  logs        {}",
            self.state_file.with_file_name("logs").display()
        );
        println!("  processes   {}", self.state_file.display());
        for service in ServiceName::ALL {
            println!(
                "  database    {}",
                config
                    .distributed
                    .database_url(service)
                    .map_or_else(|_| "-".to_owned(), |url| url.to_string())
            );
        }
        println!("Press Ctrl-C to stop.\n");
    }
}

/// Sends `signal` to `pid`; a process already gone is not an error.
fn signal(pid: u32, signal: Signal) {
    let Ok(raw) = i32::try_from(pid) else { return };
    if let Err(err) = kill(Pid::from_raw(raw), signal)
        && err != nix::errno::Errno::ESRCH
    {
        tracing::warn!(pid, error = %err, "cannot signal a child");
    }
}

/// Runs the distributed shape until `shutdown` is cancelled, then stops every process.
/// An error when a server the shape needs does not answer, a process does not start, or
/// one is in a crash loop (everything is stopped first).
pub async fn run(
    config: &Config,
    options: Options,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let started = Instant::now();
    // NATS always: discovery's registry lives there, and the events unless RabbitMQ
    // carries them.
    check_nats(config).await?;
    let rabbitmq = config.bus.kind == crate::config::BusKind::Rabbitmq;
    if rabbitmq {
        check_rabbitmq(config).await?;
    }
    let database_urls = ensure_databases(config).await?;
    let logs = config.data_dir.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let (events_tx, events) = mpsc::unbounded_channel();
    // Replicas find one another in the NATS KV registry (discovery.nats.* as configured).
    let shared_env = vec![
        (
            "TIDEWAY_GATEWAY__KNOWN_VERSIONS".to_owned(),
            options.versions.names(),
        ),
        (
            "TIDEWAY_BUS__KIND".to_owned(),
            if rabbitmq { "rabbitmq" } else { "nats" }.to_owned(),
        ),
        ("TIDEWAY_DISCOVERY__KIND".to_owned(), "nats".to_owned()),
        // Every process follows the flags changed on any gateway.
        ("TIDEWAY_SHARE_FLAGS".to_owned(), "true".to_owned()),
        // Every gateway records admin actions in one audit trail.
        (
            "TIDEWAY_AUDIT__DATABASE_URL".to_owned(),
            config
                .distributed
                .named_database_url(&config.distributed.audit_database_name())?
                .expose()
                .to_owned(),
        ),
        // Baskets live outside the services, so any basket replica serves any user.
        ("TIDEWAY_BASKET__STORE".to_owned(), "redis".to_owned()),
        // A shape `tideway up` starts: its demo accounts belong, as in one process.
        (
            "TIDEWAY_DEMO_USERS".to_owned(),
            config.demo_users.unwrap_or(true).to_string(),
        ),
    ];
    let mut supervisor = Supervisor {
        slots: Vec::new(),
        launcher: Launcher {
            binary: options.binary,
            config_file: options.config_file,
            shared_env,
            database_urls,
            version_env: config.distributed.version_env.clone(),
            events: events_tx,
        },
        events,
        state_file: config.data_dir.join("processes.json"),
        http: reqwest::Client::new(),
        grace: config.distributed.stop_grace(),
    };
    tracing::info!(
        processes = options.replicas.total(),
        "starting every service as its own processes"
    );
    let result = tokio::select! {
        result = supervisor.start_all(config, options.replicas, &options.versions) => result,
        () = shutdown.cancelled() => Ok(()),
    };
    let result = match result {
        Ok(()) if !shutdown.is_cancelled() => {
            supervisor.print_table(config, started.elapsed());
            supervisor.supervise(&shutdown).await
        }
        other => other,
    };
    tracing::info!("stopping every process");
    supervisor.stop_all().await;
    match &result {
        Ok(()) => tracing::info!("every process stopped"),
        Err(_) => tracing::error!("every process stopped after an error"),
    }
    result
}

/// For a child of the supervisor: cancels `shutdown` (a graceful stop) once the process
/// that started this one is gone, so a killed supervisor leaves no processes behind.
pub fn exit_with_parent(shutdown: CancellationToken) {
    let parent = nix::unistd::getppid();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            if nix::unistd::getppid() != parent {
                tracing::warn!("the supervisor is gone; shutting down");
                shutdown.cancel();
                return;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(values: &[&str]) -> Result<Replicas, String> {
        Replicas::parse(&values.iter().map(|v| (*v).to_owned()).collect::<Vec<_>>())
    }

    #[test]
    fn versions_name_a_service_and_its_labels() {
        let versions = |values: &[&str]| {
            Versions::parse(&values.iter().map(|v| (*v).to_owned()).collect::<Vec<_>>())
        };
        let parsed = versions(&["catalog=v1,v2"]).unwrap();
        assert_eq!(
            parsed.of(ServiceName::Catalog),
            [Some("v1".to_owned()), Some("v2".to_owned())]
        );
        assert_eq!(parsed.of(ServiceName::Basket), [None]);
        assert_eq!(parsed.names(), "catalog@v1,catalog@v2");
        assert!(
            versions(&["shop=v1"])
                .unwrap_err()
                .contains("unknown service")
        );
        assert!(
            versions(&["catalog"])
                .unwrap_err()
                .contains("service=v1,v2")
        );
        assert!(versions(&["catalog=v 1"]).is_err());
        assert!(versions(&["catalog="]).is_err());
    }

    #[test]
    fn replicas_are_a_number_or_per_role_counts() {
        let one = parse(&[]).unwrap();
        assert_eq!(one.total(), 9);
        let two = parse(&["2"]).unwrap();
        assert!(Role::ALL.iter().all(|r| two.of(*r) == 2));
        let mixed = parse(&["2", "catalog=3,gateway=1", "basket=4"]).unwrap();
        assert_eq!(mixed.of(Role::Service(ServiceName::Catalog)), 3);
        assert_eq!(mixed.of(Role::Gateway), 1);
        assert_eq!(mixed.of(Role::Service(ServiceName::Basket)), 4);
        assert_eq!(mixed.of(Role::Service(ServiceName::Identity)), 2);
        assert_eq!(mixed.total(), 2 + 3 + 4 + 2 + 2 + 2 + 2 + 2 + 1);
    }

    #[test]
    fn bad_replicas_name_what_is_wrong() {
        for (values, needle) in [
            (&["0"][..], "\"0\""),
            (&["17"][..], "\"17\""),
            (&["x"][..], "\"x\""),
            (&["shipping=2"][..], "\"shipping\""),
            (&["catalog=two"][..], "\"two\""),
            (&["catalog=2,basket"][..], "\"basket\""),
        ] {
            let err = parse(values).unwrap_err();
            assert!(err.contains(needle), "{values:?}: {err}");
            assert!(err.starts_with("--replicas"), "{err}");
        }
    }

    #[test]
    fn the_fifth_exit_within_the_window_is_a_crash_loop() {
        let mut crash = CrashLoop::new(5, Duration::from_secs(60));
        let start = Instant::now();
        for i in 0..4 {
            assert!(!crash.record(start + Duration::from_secs(i)));
        }
        assert!(crash.record(start + Duration::from_secs(10)));
        // Spread out, exits are no loop: only those within the window count.
        let mut spread = CrashLoop::new(5, Duration::from_secs(60));
        for i in 0..20 {
            assert!(
                !spread.record(start + Duration::from_secs(i * 20)),
                "exit {i}"
            );
        }
    }

    #[test]
    fn restart_delays_grow_with_jitter_and_stay_bounded() {
        let delays: Vec<Duration> = restart_backoff().take(12).collect();
        assert_eq!(delays.len(), 12, "restarts never run out");
        assert!(
            delays.iter().all(|d| *d <= Duration::from_secs(10)),
            "{delays:?}"
        );
        assert!(delays[0] >= Duration::from_millis(200), "{delays:?}");
        assert!(delays[8] >= Duration::from_secs(5), "{delays:?}");
    }

    #[test]
    fn the_amqp_address_drops_credentials_and_vhost() {
        assert_eq!(
            amqp_address("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "127.0.0.1:5672"
        );
        assert_eq!(amqp_address("amqp://mq.local"), "mq.local:5672");
        assert_eq!(
            amqp_address("amqp://u:p@mq:5673/shop?heartbeat=5"),
            "mq:5673"
        );
    }

    #[test]
    fn the_nats_address_drops_credentials() {
        assert_eq!(nats_address("nats://127.0.0.1:4222"), "127.0.0.1:4222");
        assert_eq!(
            nats_address("nats://u:p@nats.local:4333"),
            "nats.local:4333"
        );
        assert_eq!(nats_address("nats://a:1,nats://b:2"), "a:1");
        assert_eq!(nats_address("nats://host"), "host:4222");
    }
}
