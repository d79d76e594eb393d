//! The distributed shape: the real binary started as four processes (identity, catalog,
//! basket, gateway) talking HTTP, on PostgreSQL when it is reachable.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tideway_testkit::{TestDb, TestNats, eventually};

use crate::scenario;

const BIN: &str = env!("CARGO_BIN_EXE_tideway");

/// What the binary prints once bound, before the address.
const LISTENING: &str = "listening on ";

/// A child process, stopped with SIGTERM when dropped.
pub struct Proc {
    name: &'static str,
    child: Child,
    log: std::path::PathBuf,
}

impl Proc {
    pub fn start(name: &'static str, args: &[&str], env: &[(String, String)], dir: &Path) -> Self {
        // A restarted process keeps the log of the one before: `name.log`, `name-2.log` …
        let log = (1..)
            .map(|n| match n {
                1 => dir.join(format!("{name}.log")),
                n => dir.join(format!("{name}-{n}.log")),
            })
            .find(|path| !path.exists())
            .unwrap();
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(BIN)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("TIDEWAY_LOG__FORMAT", "json")
            // The access log is at debug: the tests read it.
            .env(
                "TIDEWAY_LOG__FILTER",
                "info,sqlx=warn,tideway_runtime::http=debug",
            )
            .current_dir(dir)
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap();
        Self { name, child, log }
    }

    /// The base URL of the process, once it says where it listens: children bind port 0,
    /// so no port is picked before it is bound. Fails if the process exits first or says
    /// nothing within `deadline`.
    pub async fn listening(&mut self, deadline: Duration) -> Result<String, String> {
        let start = Instant::now();
        loop {
            if let Some(addr) = self.log().lines().find_map(|l| l.strip_prefix(LISTENING)) {
                return Ok(format!("http://{}", addr.trim()));
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(format!(
                    "{} exited with {status} before listening",
                    self.name
                ));
            }
            if start.elapsed() > deadline {
                return Err(format!("{} not listening within {deadline:?}", self.name));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGTERM and waits for the process to exit; answers how it exited.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let what = format!("{} to stop", self.name);
        eventually(Duration::from_secs(20), what, || {
            self.child.try_wait().unwrap()
        })
        .await
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every service, in start order.
const SERVICES: [&str; 8] = tideway::ServiceName::NAMES;

/// The nine processes of the distributed shape on PostgreSQL (when reachable) and NATS;
/// their logs are printed when the test fails.
pub struct Distributed {
    pub gateway: String,
    procs: Vec<Proc>,
    /// Every process's base URL, in `procs` order.
    urls: Vec<String>,
    env: Vec<(String, String)>,
    _databases: Vec<TestDb>,
    _nats: Option<TestNats>,
    _dir: tempfile::TempDir,
}

impl Drop for Distributed {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
    }
}

impl Distributed {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// [`Self::start`] with `extra` in every process's environment.
    pub async fn start_with(extra: &[(String, String)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // Every process binds port 0 and prints where it listens.
        let mut env: Vec<(String, String)> = extra.to_vec();
        env.extend([
            ("TIDEWAY_DATA_DIR".into(), dir.path().display().to_string()),
            ("TIDEWAY_GATEWAY__LISTEN".into(), "127.0.0.1:0".into()),
            // Separate processes seed no demo accounts unless told to; the tests sign in
            // as the demo admin.
            ("TIDEWAY_DEMO_USERS".into(), "true".into()),
        ]);
        for service in SERVICES {
            env.push((
                format!("TIDEWAY_{}__LISTEN", service.to_uppercase()),
                "127.0.0.1:0".into(),
            ));
        }
        // Distributed mode stores on PostgreSQL: a fresh database per service.
        let mut databases: Vec<TestDb> = Vec::new();
        for service in SERVICES {
            if let Some(db) = tideway_testkit::postgres().await {
                env.push((
                    format!("TIDEWAY_{}__DATABASE_URL", service.to_uppercase()),
                    db.url().to_owned(),
                ));
                databases.push(db);
            }
        }
        // And carries events on NATS JetStream: a stream and subject root of its own.
        let nats = tideway_testkit::nats().await;
        if let Some(nats) = &nats {
            let options = nats.options();
            env.push(("TIDEWAY_BUS__NATS_URL".into(), options.url));
            env.push(("TIDEWAY_BUS__STREAM".into(), options.stream));
            env.push(("TIDEWAY_BUS__ROOT".into(), options.root));
        }
        // One at a time, in SERVICES order: a service calls only those before it, so each
        // starts knowing their URLs; the gateway starts last, knowing every one.
        let mut procs: Vec<Proc> = Vec::new();
        let mut urls = Vec::new();
        for service in SERVICES.into_iter().map(Some).chain([None]) {
            let mut proc = match service {
                Some(service) => Proc::start(service, &["serve", service], &env, dir.path()),
                None => Proc::start("gateway", &["gateway"], &env, dir.path()),
            };
            let url = proc.listening(Duration::from_secs(60)).await;
            procs.push(proc);
            let url = url.unwrap_or_else(|err| {
                dump_logs(&procs);
                panic!("{err}");
            });
            if let Some(service) = service {
                env.push((
                    format!("TIDEWAY_URLS__{}", service.to_uppercase()),
                    url.clone(),
                ));
            }
            urls.push(url);
        }
        let this = Self {
            gateway: urls.last().unwrap().clone(),
            procs,
            urls: urls.clone(),
            env,
            _databases: databases,
            _nats: nats,
            _dir: dir,
        };
        for url in &urls {
            let ready = tokio::time::timeout(
                Duration::from_secs(60),
                scenario::wait_ready(url, Duration::from_secs(60)),
            )
            .await;
            if ready.is_err() {
                this.dump_logs();
                panic!("{url} not ready");
            }
        }
        this
    }

    /// The checkout's databases, when the services run on PostgreSQL.
    pub fn stores(&self) -> Option<tideway::invariants::Stores> {
        let db = |service: &str| {
            let index = SERVICES.iter().position(|s| *s == service)?;
            self._databases.get(index).map(|db| (**db).clone())
        };
        Some(tideway::invariants::Stores {
            ordering: db("ordering")?,
            inventory: db("inventory")?,
            payment: db("payment")?,
        })
    }

    pub fn dump_logs(&self) {
        dump_logs(&self.procs);
    }

    /// Kills `service`'s process with SIGKILL, leaves it dead for `down`, and starts it
    /// again on the same address and data; answers once it is ready.
    pub async fn kill_and_restart(&mut self, service: &'static str, down: Duration) {
        self.kill(service);
        tokio::time::sleep(down).await;
        self.restart(service).await;
    }

    /// Kills `service`'s process with SIGKILL; it stays dead until [`Self::restart`].
    pub fn kill(&mut self, service: &'static str) {
        let index = SERVICES.iter().position(|s| *s == service).unwrap();
        self.procs[index].kill();
    }

    /// Starts `service` again on the address and data of the one killed; answers once it
    /// is ready.
    pub async fn restart(&mut self, service: &'static str) {
        let index = SERVICES.iter().position(|s| *s == service).unwrap();
        let url = self.urls[index].clone();
        let mut env = self.env.clone();
        env.push((
            format!("TIDEWAY_{}__LISTEN", service.to_uppercase()),
            url.trim_start_matches("http://").to_owned(),
        ));
        let mut proc = Proc::start(service, &["serve", service], &env, self._dir.path());
        let listening = proc.listening(Duration::from_secs(60)).await;
        self.procs[index] = proc;
        if let Err(err) = listening {
            self.dump_logs();
            panic!("{err}");
        }
        let ready = tokio::time::timeout(
            Duration::from_secs(60),
            scenario::wait_ready(&url, Duration::from_secs(60)),
        )
        .await;
        if ready.is_err() {
            self.dump_logs();
            panic!("{service} not ready again");
        }
    }

    /// Stops every process with SIGTERM; each must exit cleanly having logged JSON access
    /// lines with request and trace ids. Returns every log line, parsed.
    pub async fn stop(mut self) -> Vec<serde_json::Value> {
        let mut lines = Vec::new();
        for proc in std::mem::take(&mut self.procs) {
            let name = proc.name;
            let log_path = proc.log.clone();
            let status = proc.terminate().await;
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            assert!(status.success(), "{name} exited with {status}: {log}");
            let parsed: Vec<serde_json::Value> = log
                .lines()
                .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
                .collect();
            let access = parsed
                .iter()
                .find(|line| line["message"] == "request finished")
                .unwrap_or_else(|| panic!("{name} wrote no access log line: {log}"));
            assert!(
                access["span"]["request_id"]
                    .as_str()
                    .is_some_and(|id| !id.is_empty()),
                "{access}"
            );
            assert!(
                access["span"]["trace_id"]
                    .as_str()
                    .is_some_and(|id| id.len() == 32),
                "{access}"
            );
            assert!(
                access["span"]["span_id"]
                    .as_str()
                    .is_some_and(|id| id.len() == 16),
                "{access}"
            );
            lines.extend(parsed);
        }
        lines
    }
}

fn dump_logs(procs: &[Proc]) {
    for proc in procs {
        eprintln!("--- {} ---\n{}", proc.name, proc.log());
    }
}

#[tokio::test]
async fn shop_as_separate_processes() {
    let system = Distributed::start().await;
    scenario::shop(&system.gateway).await;
    crate::checkout::checkout_outcomes(&system.gateway).await;
    console_sees_every_process(&system.gateway).await;
    documents_of_separate_processes(&system).await;
    a_service_process_answers_both_forms(&system).await;
    if let Some(stores) = system.stores() {
        let pending = tideway::invariants::wait_terminal(&stores.ordering, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(pending, 0);
        let report = tideway::invariants::settle(&stores, Duration::from_secs(30))
            .await
            .unwrap();
        assert!(report.holds(), "{report:#?}");
    }
    let lines = system.stop().await;
    // One checkout, one trace: the ordering, inventory and payment logs share its trace id.
    let traced_services = |trace: &str| {
        let mut services: Vec<String> = lines
            .iter()
            .filter(|l| l.to_string().contains(trace))
            .filter_map(|l| {
                l["target"]
                    .as_str()
                    .map(|t| t.split("::").next().unwrap_or(t).to_owned())
            })
            .collect();
        services.sort();
        services.dedup();
        services
    };
    let checkout_trace = lines
        .iter()
        .find(|l| {
            l["message"] == "request finished" && l["span"]["path"] == "/api/v1/basket/checkout"
        })
        .and_then(|l| l["span"]["trace_id"].as_str())
        .expect("the checkout request was logged")
        .to_owned();
    let services = traced_services(&checkout_trace);
    for service in ["tideway_ordering", "tideway_inventory", "tideway_payment"] {
        assert!(
            services.iter().any(|s| s == service),
            "{service} logged nothing with trace {checkout_trace}: {services:?}\n{}",
            lines
                .iter()
                .filter(|l| l.to_string().contains("stock reserved"))
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

#[test]
fn bad_configuration_stops_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .arg("up")
        .env("TIDEWAY_GATEWAY__LISTEN", "not-an-address")
        .env("TIDEWAY_DATA_DIR", dir.path())
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("gateway.listen"), "{stderr}");
    assert!(
        !dir.path().join("catalog.db").exists(),
        "nothing was created"
    );

    let output = Command::new(BIN)
        .arg("up")
        .env("TIDEWAY_CLIENT_TIMEOUT_MS", "soon")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("client_timeout_ms"), "{stderr}");

    // A database URL is parsed as the configuration is read, and its key is named.
    let output = Command::new(BIN)
        .args(["serve", "basket"])
        .env("TIDEWAY_BASKET__DATABASE_URL", "mysql://u:secret@h/basket")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("basket.database_url"), "{stderr}");
    assert!(
        !stderr.contains("secret"),
        "no password in errors: {stderr}"
    );
}

/// A bad route table stops start-up with exit code 2 naming the route's key, whether it
/// comes from a file or the environment, before any service is built or port bound.
#[test]
fn bad_routes_stop_start_up_naming_the_route() {
    let dir = tempfile::tempdir().unwrap();
    let route = |prefix: &str, timeout_ms: u64| {
        format!(
            "[[gateway.routes]]\nprefix = \"{prefix}\"\nupstream = \"catalog\"\n\
             read = \"public\"\nwrite = \"public\"\ntimeout_ms = {timeout_ms}\n"
        )
    };
    let cases = [
        (
            format!(
                "{}{}",
                route("/api/v1/catalog", 1000),
                route("/api/v1/catalog", 1000)
            ),
            "gateway.routes[1].prefix",
        ),
        (route("/api/v1/{id}", 1000), "gateway.routes[0].prefix"),
        (route("/api/v1/catalog/", 1000), "gateway.routes[0].prefix"),
        (
            format!("{}{}", route("/a", 1000), route("/b", 0)),
            "gateway.routes[1].timeout_ms",
        ),
    ];
    for (table, key) in cases {
        let file = dir.path().join("routes.toml");
        std::fs::write(&file, table).unwrap();
        for command in ["up", "gateway"] {
            let output = Command::new(BIN)
                .arg("--config")
                .arg(&file)
                .arg(command)
                .env("TIDEWAY_DATA_DIR", dir.path())
                .current_dir(dir.path())
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(2), "{command}, {key}: {stderr}");
            assert!(stderr.contains(key), "{command}, {key}: {stderr}");
        }
    }
    assert!(
        !dir.path().join("catalog.db").exists(),
        "nothing was created"
    );

    // The environment can carry a table too.
    let output = Command::new(BIN)
        .arg("gateway")
        .env(
            "TIDEWAY_GATEWAY__ROUTES",
            r#"[{prefix="/x",upstream="catalog",read="public",write="public"},{prefix="/x",upstream="basket",read="public",write="public"}]"#,
        )
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("gateway.routes[1].prefix"), "{stderr}");
}

/// Bad rate limits and trusted proxies stop start-up (exit code 2) naming their key.
#[test]
fn bad_rate_limits_stop_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let rule = |burst: u32| {
        format!(
            "[[gateway.rate_limit.rules]]\nname = \"login\"\npath = \"/api/v1/identity/login\"\n\
             key = \"ip\"\nburst = {burst}\nperiod_ms = 60000\n"
        )
    };
    let cases = [
        (
            "[gateway]\ntrusted_proxies = [\"10.0.0.0/40\"]\n".to_owned(),
            "gateway.trusted_proxies",
        ),
        (rule(0), "gateway.rate_limit.rules[0].burst"),
        (
            format!(
                "[gateway.rate_limit]\nstore = \"global\"\nredis_url = \"http://x\"\n{}",
                rule(5)
            ),
            "gateway.rate_limit.redis_url",
        ),
    ];
    for (table, key) in cases {
        let file = dir.path().join("limits.toml");
        std::fs::write(&file, table).unwrap();
        let output = Command::new(BIN)
            .arg("--config")
            .arg(&file)
            .arg("gateway")
            .env("TIDEWAY_DATA_DIR", dir.path())
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{key}: {stderr}");
        assert!(stderr.contains(key), "{key}: {stderr}");
    }
}

/// The gateway process serves the shop and the console; the console reaches every service
/// process over HTTP and finds it ready, and lists the checkouts just made.
/// The gateway process serves the merged OpenAPI document, and each service process its
/// own at `/openapi.json`, every operation of which the merged one holds.
async fn documents_of_separate_processes(system: &Distributed) {
    let http = reqwest::Client::new();
    let get = |url: String| {
        let http = http.clone();
        async move {
            let response = http.get(&url).send().await.unwrap();
            assert_eq!(response.status(), 200, "{url}");
            response.json::<serde_json::Value>().await.unwrap()
        }
    };
    let merged = get(format!("{}/api/openapi.json", system.gateway)).await;
    let merged = merged["paths"].as_object().unwrap();
    let mut seen = 0;
    for url in system.urls.iter().filter(|url| **url != system.gateway) {
        let own = get(format!("{url}/openapi.json")).await;
        for (path, operations) in own["paths"].as_object().unwrap() {
            for method in operations.as_object().unwrap().keys() {
                assert!(merged[path][method].is_object(), "{method} {path} of {url}");
                seen += 1;
            }
        }
    }
    assert_eq!(seen, 37, "the services' operations, each once");
    // Beside them, the gateway's operator API (instances, config, traffic, switch, flags,
    // audit), which the gateway process serves itself.
    let all: usize = merged.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(all, seen + 8, "the operator API's operations");
    assert!(merged["/api/v1/admin/instances"]["get"].is_object());
}

/// A service process, called directly, serves its v1 paths and their unversioned aliases
/// too (marked deprecated), so a typed client may move to v1 whatever it calls.
async fn a_service_process_answers_both_forms(system: &Distributed) {
    let index = SERVICES.iter().position(|s| *s == "catalog").unwrap();
    let catalog = &system.urls[index];
    let v1 = reqwest::get(format!("{catalog}/api/v1/catalog/items?page_size=2"))
        .await
        .unwrap();
    assert_eq!(v1.status(), 200);
    assert!(v1.headers().get("deprecation").is_none());
    let v1: serde_json::Value = v1.json().await.unwrap();
    let alias = reqwest::get(format!("{catalog}/api/catalog/items?page_size=2"))
        .await
        .unwrap();
    assert_eq!(alias.status(), 200);
    assert_eq!(alias.headers()["deprecation"], "@1796083200");
    assert_eq!(
        alias.headers()["link"],
        "</api/v1/catalog/items?page_size=2>; rel=\"successor-version\""
    );
    // The same items (their stock may move between the two calls).
    let ids = |page: &serde_json::Value| -> Vec<serde_json::Value> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].clone())
            .collect()
    };
    let alias: serde_json::Value = alias.json().await.unwrap();
    assert_eq!(ids(&alias), ids(&v1));
    assert_eq!(ids(&v1).len(), 2);
}

async fn console_sees_every_process(gateway: &str) {
    let http = reqwest::Client::new();
    let home = http.get(format!("{gateway}/")).send().await.unwrap();
    assert_eq!(home.status(), 200);
    assert!(home.text().await.unwrap().contains("Categories"));
    let admin = scenario::login(&http, gateway, "admin@tideway.local", "tideway-admin-1").await;
    let console = http
        .get(format!("{gateway}/ops"))
        .header(reqwest::header::COOKIE, format!("tw_access={admin}"))
        .send()
        .await
        .unwrap();
    assert_eq!(console.status(), 200);
    let page = console.text().await.unwrap();
    for service in SERVICES {
        assert!(
            page.contains(&format!("<th scope=\"row\">{service}</th>")),
            "{service}"
        );
    }
    assert_eq!(
        page.matches(r#"data-status="ready""#).count(),
        9,
        "the gateway and eight services are ready: {page}"
    );
    assert!(page.contains("http://127.0.0.1:"), "addresses are shown");
    // Every replica the gateway balances over, one row each, with its address.
    assert_eq!(
        page.matches("<tr data-replica=").count(),
        8,
        "one replica of each service: {page}"
    );
    assert!(
        page.matches("<tr data-order=").count() >= 3,
        "the checkouts' sagas"
    );
}
