//! Whole-system tests: the shop driven through the gateway over real HTTP, in both shapes —
//! everything in one process (SQLite), and the gateway and each service as separate
//! processes of the real binary (PostgreSQL when reachable, else SQLite).
#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail the test loudly on any unexpected error"
)]

mod checkout;
mod crash;
mod degraded;
mod processes;
mod scenario;
mod web;

use std::time::Duration;

use tideway::{App, Config};
use tokio_util::sync::CancellationToken;

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

/// Runs the embedded shape on a random port in a temporary data directory.
#[tokio::test]
async fn shop_in_one_process() {
    let data = tempfile::tempdir().unwrap();
    let config = embedded_config(data.path());
    let app = App::embedded(&config).await.unwrap();
    let base = format!("http://{}", app.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run_until_stopped(shutdown.clone()));

    scenario::wait_ready(&base, Duration::from_secs(10)).await;
    scenario::shop(&base).await;

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(15), server)
        .await
        .expect("the app stops within the grace period")
        .unwrap()
        .unwrap();
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
        let app = App::embedded(&config).await.unwrap();
        let base = format!("http://{}", app.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        scenario::wait_ready(&base, Duration::from_secs(10)).await;
        let client = reqwest::Client::new();
        let page: serde_json::Value = client
            .get(format!("{base}/api/catalog/items?page_size=1"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        totals.push(page["total"].as_u64().unwrap());
        let jwks: serde_json::Value = client
            .get(format!("{base}/api/identity/.well-known/jwks.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        key_ids.push(jwks["keys"][0]["kid"].as_str().unwrap().to_owned());
        // The seeded demo account logs in on every start.
        scenario::login(&client, &base, "demo@tideway.local", "tideway-demo-1").await;
        shutdown.cancel();
        server.await.unwrap().unwrap();
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
    let app = App::embedded(&embedded_config(data.path())).await.unwrap();
    let base = format!("http://{}", app.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    scenario::wait_ready(&base, Duration::from_secs(10)).await;

    let http = reqwest::Client::new();
    let customer = scenario::login(&http, &base, "demo@tideway.local", "tideway-demo-1").await;
    let admin = scenario::login(&http, &base, "admin@tideway.local", "tideway-admin-1").await;
    let sagas = |token: String| {
        http.get(format!("{base}/api/ordering/sagas"))
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
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series = |service: &str, status: u16| {
        format!(
            "tideway_http_requests_total{{service=\"{service}\",method=\"GET\",\
             route=\"/api/ordering/sagas\",status=\"{status}\"}} 1"
        )
    };
    assert!(metrics.contains(&series("gateway", 403)), "{metrics}");
    assert!(metrics.contains(&series("ordering", 200)), "{metrics}");
    assert!(!metrics.contains(&series("ordering", 403)), "{metrics}");

    shutdown.cancel();
    server.await.unwrap().unwrap();
}
