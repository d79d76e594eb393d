//! Reporting end to end: checkouts through the gateway show in the read models (admins
//! only), and `tideway replay reporting` rebuilds models equal to the live ones — from the
//! embedded bus's event log, and from JetStream.

use std::time::Duration;

use serde_json::Value;
use tideway::{App, Config, config::BusKind, replay::ReplayTarget};
use tideway_testkit::eventually_async;

use crate::{
    checkout::{Shopper, item_with_stock, wait_stocked},
    scenario,
};

const PATHS: [&str; 4] = [
    "/api/v1/reporting/sales",
    "/api/v1/reporting/revenue",
    "/api/v1/reporting/funnel",
    "/api/v1/reporting/top-items",
];

async fn models(http: &reqwest::Client, base: &str, admin: &str) -> Vec<Value> {
    let mut models = Vec::new();
    for path in PATHS {
        let response = http
            .get(format!("{base}{path}"))
            .bearer_auth(admin)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        models.push(response.json().await.unwrap());
    }
    models
}

async fn confirmed_and_cancelled_then_replayed(config: Config) {
    let deadline = Duration::from_secs(30);
    let server = crate::serve_ready(App::embedded(&config).await.unwrap()).await;
    let base = server.base_url().to_owned();
    let (item, price) = item_with_stock(&base, 5).await;
    wait_stocked(&base, &item, deadline).await;
    let buyer = Shopper::register(&base).await;
    buyer.add(&item, 2).await;
    let id = buyer.checkout(None).await;
    assert_eq!(buyer.settled(&id, deadline).await["status"], "confirmed");
    let decliner = Shopper::register(&base).await;
    decliner.add(&item, 1).await;
    let id = decliner.checkout(Some("4000 0000 0000 0002")).await;
    assert_eq!(decliner.settled(&id, deadline).await["status"], "cancelled");

    // The gateway refuses a customer; an admin reads the models.
    let response = buyer
        .http
        .get(format!("{base}/api/v1/reporting/funnel"))
        .bearer_auth(&buyer.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let http = reqwest::Client::new();
    let admin = scenario::login(&http, &base, "admin@tideway.local", "tideway-admin-1").await;
    let live = eventually_async(deadline, "both orders in the funnel", || async {
        let models = models(&http, &base, &admin).await;
        let funnel = &models[2];
        (funnel["placed"] == 2 && funnel["confirmed"] == 1 && funnel["cancelled"] == 1)
            .then_some(models)
    })
    .await;
    let sales = live[0]["rows"].as_array().unwrap();
    assert_eq!(sales.len(), 1, "{sales:?}");
    assert_eq!(sales[0]["item_id"], item.as_str());
    assert_eq!(sales[0]["units"], 2);
    assert_eq!(sales[0]["revenue_minor"].as_i64(), Some(2 * price));
    assert_eq!(
        live[1]["days"][0]["revenue_minor"].as_i64(),
        Some(2 * price)
    );
    let reasons = live[2]["cancelled_by_reason"].to_string();
    assert!(reasons.contains("declined"), "{reasons}");
    assert_eq!(live[3]["items"][0]["item_id"], item.as_str());

    // The console draws the funnel and revenue per day.
    let console = http
        .get(format!("{base}/ops/reporting"))
        .header(reqwest::header::COOKIE, format!("tw_access={admin}"))
        .send()
        .await
        .unwrap();
    assert_eq!(console.status(), 200);
    let page = console.text().await.unwrap();
    assert!(page.contains("id=\"chart-funnel\""), "{page}");
    assert!(page.contains("id=\"chart-revenue\""), "{page}");
    assert!(page.contains("declined"), "{page}");

    // Replay beside the running shop: the same models.
    tideway::replay::run(&config, ReplayTarget::Reporting)
        .await
        .unwrap();
    assert_eq!(models(&http, &base, &admin).await, live);
    server.stop(crate::STOP_DEADLINE).await;
}

#[tokio::test]
async fn reports_follow_checkouts_and_replay_from_the_event_log_equals_them() {
    let dir = tempfile::tempdir().unwrap();
    confirmed_and_cancelled_then_replayed(crate::embedded_config(dir.path())).await;
}

#[tokio::test]
async fn replay_from_jetstream_equals_the_live_models() {
    let Some(nats) = tideway_testkit::nats().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::embedded_config(dir.path());
    let options = nats.options();
    config.bus.kind = BusKind::Nats;
    config.bus.nats_url = options.url;
    config.bus.stream = options.stream;
    config.bus.root = options.root;
    confirmed_and_cancelled_then_replayed(config).await;
}
