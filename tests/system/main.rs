//! Whole-system tests: the shop driven through the gateway over real HTTP, in both shapes —
//! everything in one process (SQLite), and the gateway and each service as separate
//! processes of the real binary (PostgreSQL when reachable, else SQLite).
#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail the test loudly on any unexpected error"
)]

mod api_versions;
mod audit;
mod bff;
mod card_data;
mod checkout;
mod crash;
mod dead_letters;
mod degraded;
mod deploy;
mod flags;
mod flood;
mod openapi;
mod processes;
mod prometheus;
mod rabbitmq;
mod replicas;
mod reporting;
mod scenario;
mod supervisor;
mod tls;
mod traces;
mod versions;
mod web;
mod web_security;

use std::time::Duration;

use tideway::{App, Config};
use tideway_testkit::TestServer;

/// How long an app may take to stop: its grace period for in-flight requests, and more.
const STOP_DEADLINE: Duration = Duration::from_secs(15);

/// The embedded shape's configuration: data in `dir`, the gateway on a random port.
fn embedded_config(dir: &std::path::Path) -> Config {
    let mut config = Config {
        data_dir: dir.to_path_buf(),
        ..Config::default()
    };
    config.gateway.listen = "127.0.0.1:0".to_owned();
    config.resolve().unwrap();
    config
}

/// Serves `app` on the socket it has bound; answers once it is ready.
async fn serve_ready(app: App) -> TestServer {
    let addr = app.local_addr().unwrap();
    let server = TestServer::spawn(addr, |shutdown| app.run_until_stopped(shutdown));
    scenario::wait_ready(server.base_url(), Duration::from_secs(10)).await;
    server
}

/// Runs the embedded shape on a random port in a temporary data directory.
#[tokio::test]
async fn shop_in_one_process() {
    let data = tempfile::tempdir().unwrap();
    let config = embedded_config(data.path());
    let server = serve_ready(App::embedded(&config).await.unwrap()).await;

    scenario::shop(server.base_url()).await;

    server.stop(STOP_DEADLINE).await;
    assert!(
        data.path().join("catalog.db").exists(),
        "SQLite files live in the data directory"
    );
}

/// A second start on the same data directory finds the data of the first and seeds
/// nothing twice.
#[tokio::test]
async fn restart_keeps_data_and_does_not_reseed() {
    let data = tempfile::tempdir().unwrap();
    let config = embedded_config(data.path());
    let mut totals = Vec::new();
    let mut key_ids = Vec::new();
    for _ in 0..2 {
        let server = serve_ready(App::embedded(&config).await.unwrap()).await;
        let base = server.base_url();
        let client = reqwest::Client::new();
        let page: serde_json::Value = client
            .get(format!("{base}/api/v1/catalog/items?page_size=1"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        totals.push(page["total"].as_u64().unwrap());
        let jwks: serde_json::Value = client
            .get(format!("{base}/api/v1/identity/.well-known/jwks.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        key_ids.push(jwks["keys"][0]["kid"].as_str().unwrap().to_owned());
        // The seeded demo account logs in on every start.
        scenario::login(&client, base, "demo@tideway.local", "tideway-demo-1").await;
        server.stop(STOP_DEADLINE).await;
    }
    assert!(totals[0] >= 60, "seeded catalog: {totals:?}");
    assert_eq!(totals[0], totals[1], "no second seeding");
    assert_eq!(key_ids[0], key_ids[1], "the signing key is persisted");
}

/// The checkout sagas of every shopper are for admins at the edge: a customer is refused by
/// the gateway before the request reaches the ordering service, an admin gets the list.
#[tokio::test]
async fn sagas_are_for_admins_at_the_gateway() {
    let data = tempfile::tempdir().unwrap();
    let server = serve_ready(App::embedded(&embedded_config(data.path())).await.unwrap()).await;
    let base = server.base_url().to_owned();

    let http = reqwest::Client::new();
    let customer = scenario::login(&http, &base, "demo@tideway.local", "tideway-demo-1").await;
    let admin = scenario::login(&http, &base, "admin@tideway.local", "tideway-admin-1").await;
    let sagas = |token: String| {
        http.get(format!("{base}/api/v1/ordering/sagas"))
            .bearer_auth(token)
            .send()
    };
    let refused = sagas(customer).await.unwrap();
    assert_eq!(refused.status(), 403);
    let problem: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(problem["type"], "/problems/forbidden", "{problem}");
    let listed = sagas(admin).await.unwrap();
    assert_eq!(listed.status(), 200);
    let page: serde_json::Value = listed.json().await.unwrap();
    assert!(page["items"].is_array(), "{page}");

    // Every service of this process records into one registry: the ordering service
    // answered the admin only.
    let metrics = scenario::metrics(&http, &base).await;
    let series = |service: &str, status: u16| {
        format!(
            "tideway_http_requests_total{{service=\"{service}\",method=\"GET\",\
             route=\"/api/v1/ordering/sagas\",status=\"{status}\"}} 1"
        )
    };
    assert!(metrics.contains(&series("gateway", 403)), "{metrics}");
    assert!(metrics.contains(&series("ordering", 200)), "{metrics}");
    assert!(!metrics.contains(&series("ordering", 403)), "{metrics}");

    server.stop(STOP_DEADLINE).await;
}
