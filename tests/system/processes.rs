//! The distributed shape: the real binary started as four processes (identity, catalog,
//! basket, gateway) talking HTTP, on PostgreSQL when it is reachable.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tideway_store::testing::{self, TestDb};

use crate::scenario;

const BIN: &str = env!("CARGO_BIN_EXE_tideway");

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A child process, stopped with SIGTERM when dropped.
struct Proc {
    name: &'static str,
    child: Child,
    log: std::path::PathBuf,
}

impl Proc {
    fn start(name: &'static str, args: &[&str], env: &[(String, String)], dir: &Path) -> Self {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(BIN)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("TIDEWAY_LOG__FORMAT", "json")
            .current_dir(dir)
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap();
        Self { name, child, log }
    }

    /// Sends SIGTERM and waits for a clean exit.
    fn terminate(mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "{} did not stop", self.name);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn shop_as_separate_processes() {
    let dir = tempfile::tempdir().unwrap();
    let [gateway, identity, catalog, basket] = [free_port(), free_port(), free_port(), free_port()];
    let url = |port: u16| format!("http://127.0.0.1:{port}");
    let mut env: Vec<(String, String)> = vec![
        ("TIDEWAY_DATA_DIR".into(), dir.path().display().to_string()),
        (
            "TIDEWAY_GATEWAY__LISTEN".into(),
            format!("127.0.0.1:{gateway}"),
        ),
        (
            "TIDEWAY_IDENTITY__LISTEN".into(),
            format!("127.0.0.1:{identity}"),
        ),
        (
            "TIDEWAY_CATALOG__LISTEN".into(),
            format!("127.0.0.1:{catalog}"),
        ),
        (
            "TIDEWAY_BASKET__LISTEN".into(),
            format!("127.0.0.1:{basket}"),
        ),
        ("TIDEWAY_URLS__IDENTITY".into(), url(identity)),
        ("TIDEWAY_URLS__CATALOG".into(), url(catalog)),
        ("TIDEWAY_URLS__BASKET".into(), url(basket)),
    ];
    // Distributed mode stores on PostgreSQL: a fresh database per service.
    let mut databases: Vec<TestDb> = Vec::new();
    for service in ["IDENTITY", "CATALOG", "BASKET"] {
        if let Some(db) = testing::postgres().await {
            env.push((
                format!("TIDEWAY_{service}__DATABASE_URL"),
                db.url().to_owned(),
            ));
            databases.push(db);
        }
    }

    let procs = vec![
        Proc::start("identity", &["serve", "identity"], &env, dir.path()),
        Proc::start("catalog", &["serve", "catalog"], &env, dir.path()),
        Proc::start("basket", &["serve", "basket"], &env, dir.path()),
        Proc::start("gateway", &["gateway"], &env, dir.path()),
    ];
    let base = url(gateway);
    for port in [identity, catalog, basket, gateway] {
        let ready = tokio::time::timeout(
            Duration::from_secs(30),
            scenario::wait_ready(&url(port), Duration::from_secs(30)),
        )
        .await;
        if ready.is_err() {
            for proc in &procs {
                eprintln!("--- {} ---\n{}", proc.name, proc.log());
            }
            panic!("port {port} not ready");
        }
    }

    scenario::shop(&base).await;

    // Every process stops cleanly on SIGTERM, and its logs are JSON lines with request ids.
    for proc in procs {
        let name = proc.name;
        let log_path = proc.log.clone();
        let status = proc.terminate();
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        assert!(status.success(), "{name} exited with {status}: {log}");
        let access = log
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find(|line| line["message"] == "request finished")
            .unwrap_or_else(|| panic!("{name} wrote no access log line: {log}"));
        assert!(
            access["span"]["request_id"]
                .as_str()
                .is_some_and(|id| !id.is_empty()),
            "{access}"
        );
    }
    drop(databases);
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
}
