//! A real Prometheus (Debian's package, installed by scripts/deps.sh) scrapes a running
//! embedded shop with the project's rules loaded: a request rate comes back from its API,
//! the recording rules evaluate, and every query of the Grafana dashboard is valid PromQL
//! that the server accepts.

use std::{path::Path, process::Stdio, time::Duration};

use serde_json::Value;
use tideway::App;
use tideway_testkit::eventually_async;

/// The repository's root (this package is `apps/tideway`).
fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// A Prometheus server scraping `target` every second, with deploy/prometheus/rules.yml;
/// killed when dropped.
struct Prometheus {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(target: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let rules = root().join("deploy/prometheus/rules.yml");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files: [\"{}\"]\n\
             scrape_configs:\n  - job_name: tideway\n    static_configs:\n      - targets: [\"{target}\"]\n",
            rules.display()
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        // A free port: bound and released; Prometheus binds it a moment later.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus is installed (scripts/deps.sh)");
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    /// The result vector of an instant query, or `None` while the server is not up.
    async fn query(&self, http: &reqwest::Client, expr: &str) -> Option<Value> {
        let response = http
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", expr)])
            .send()
            .await
            .ok()?;
        let body: Value = response.json().await.ok()?;
        assert_eq!(body["status"], "success", "{expr}: {body}");
        Some(body["data"]["result"].clone())
    }
}

#[tokio::test]
async fn prometheus_reads_the_shops_request_rate_back() {
    let data = tempfile::tempdir().unwrap();
    let config = crate::embedded_config(data.path());
    let server = crate::serve_ready(App::embedded(&config).await.unwrap()).await;
    let base = server.base_url().to_owned();
    let prometheus = Prometheus::start(base.trim_start_matches("http://"));
    let http = reqwest::Client::new();
    // Browse while Prometheus scrapes, until it answers a rate of catalog requests.
    let rate = eventually_async(
        Duration::from_secs(90),
        "a catalog request rate from Prometheus",
        || async {
            for _ in 0..5 {
                http.get(format!("{base}/api/v1/catalog/items?page_size=2"))
                    .send()
                    .await
                    .unwrap();
            }
            let result = prometheus
                .query(
                    &http,
                    "sum(rate(tideway_http_requests_total{service=\"catalog\"}[10s]))",
                )
                .await?;
            let value: f64 = result[0]["value"][1].as_str()?.parse().ok()?;
            (value > 0.0).then_some(value)
        },
    )
    .await;
    assert!(rate > 0.0);
    // The recording rules run against the same series.
    eventually_async(
        Duration::from_secs(60),
        "the recording rule service:tideway_http_requests:rate1m",
        || async {
            let result = prometheus
                .query(
                    &http,
                    "service:tideway_http_requests:rate1m{service=\"gateway\"}",
                )
                .await?;
            result.as_array().filter(|r| !r.is_empty()).cloned()
        },
    )
    .await;
    // Every dashboard query is one the server accepts (variables filled in).
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("deploy/dashboards/tideway-red.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "tideway-red");
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 3, "RED: rate, errors, duration");
    for panel in panels {
        let expr = panel["targets"][0]["expr"].as_str().unwrap();
        assert!(panel["gridPos"]["w"].as_u64().is_some(), "{panel}");
        let expr = expr.replace("$service", ".*");
        prometheus
            .query(&http, &expr)
            .await
            .unwrap_or_else(|| panic!("Prometheus stopped answering at {expr}"));
    }
    server.stop(crate::STOP_DEADLINE).await;
}
