//! A dependency that is down degrades its feature only. Every service answers a database
//! it cannot reach the same way — 503 with `Retry-After` and a problem document, never an
//! opaque 500 — and the shop goes on around it: with the catalog down the basket shows the
//! last prices seen and checkout waits; with ordering down checkout is refused and the
//! basket kept; with inventory down checkout is refused before any order is placed, and
//! accepted again once it is back. Each dependency is stopped for real: its pools closed
//! in one process, its process killed among separate ones.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;
use tideway::App;

use crate::{
    STOP_DEADLINE,
    checkout::{Shopper, item_with_stock, wait_stocked},
    embedded_config,
    processes::Distributed,
    scenario, serve_ready,
};

#[tokio::test]
async fn a_database_out_of_reach_is_a_503_with_retry_after_in_every_service() {
    let data = tempfile::tempdir().unwrap();
    let config = embedded_config(data.path());
    let app = App::embedded(&config).await.unwrap();
    let services = app.services().unwrap().clone();
    let server = serve_ready(app).await;
    let base = server.base_url().to_owned();

    let client = reqwest::Client::new();
    let token = scenario::login(&client, &base, "admin@tideway.local", "tideway-admin-1").await;
    let page =
        scenario::get_json(&client, &format!("{base}/api/v1/catalog/items?page_size=1")).await;
    let item = page["items"][0]["id"].as_str().unwrap().to_owned();

    for db in [
        services.identity.db(),
        services.catalog.db(),
        services
            .basket
            .db()
            .expect("the embedded basket is on SQLite"),
        services.inventory.db(),
        services.payment.db(),
        services.ordering.db(),
    ] {
        db.close().await;
    }

    let calls = [
        (Method::POST, "/api/v1/identity/login".to_owned(), false),
        (Method::GET, "/api/v1/catalog/items".to_owned(), false),
        (Method::GET, "/api/v1/basket".to_owned(), true),
        (Method::GET, format!("/api/v1/inventory/stock/{item}"), true),
        (Method::GET, "/api/v1/payment/payments".to_owned(), true),
        (Method::GET, "/api/v1/ordering/orders".to_owned(), true),
    ];
    for (method, path, signed_in) in calls {
        let mut request = client.request(method.clone(), format!("{base}{path}"));
        if signed_in {
            request = request.bearer_auth(&token);
        }
        if method == Method::POST {
            request = request.json(&serde_json::json!({
                "email": "demo@tideway.local",
                "password": "tideway-demo-1"
            }));
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 503, "{method} {path}");
        assert_eq!(
            response.headers()["retry-after"],
            "1",
            "{method} {path} says when to come back"
        );
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{method} {path}"
        );
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["status"], 503, "{method} {path}: {problem}");
        assert_eq!(problem["type"], "/problems/unavailable", "{method} {path}");
    }

    server.stop(STOP_DEADLINE).await;
}

/// The row of `service` in the console's services panel.
fn service_row<'a>(panel: &'a str, service: &str) -> &'a str {
    let start = panel
        .find(&format!("<th scope=\"row\">{service}</th>"))
        .unwrap_or_else(|| panic!("no row for {service}: {panel}"));
    let rest = &panel[start..];
    &rest[..rest.find("</tr>").unwrap_or(rest.len())]
}

/// The catalog down degrades browsing only: the storefront says so, the basket still shows
/// each line at its last known price marked as not current, checkout is refused with a 503
/// problem instead of pricing from stale data, orders still list, and the console names
/// the dependency that is down.
#[tokio::test]
async fn with_the_catalog_down_browsing_degrades_and_the_rest_of_the_shop_works() {
    let data = tempfile::tempdir().unwrap();
    // Without the caches of catalog answers: with them, a catalog whose database is gone
    // still answers what it has cached, and this is about a catalog that cannot answer.
    let mut config = embedded_config(data.path());
    config.catalog.service.cache.shared.enabled = false;
    config.basket.service.cache.shared.enabled = false;
    let app = App::embedded(&config).await.unwrap();
    let services = app.services().unwrap().clone();
    let server = serve_ready(app).await;
    let base = server.base_url().to_owned();

    let shopper = Shopper::register(&base).await;
    let (item, _) = item_with_stock(&base, 2).await;
    shopper.add(&item, 2).await;
    let before = shopper.basket().await;
    let price = before["items"][0]["unit_price_minor"].as_i64().unwrap();
    assert_eq!(before["items"][0]["price_current"], true, "{before}");
    let http = reqwest::Client::new();
    let admin = scenario::login(&http, &base, "admin@tideway.local", "tideway-admin-1").await;

    services.catalog.db().close().await;

    // The basket answers, with the last prices seen, marked.
    let response = shopper
        .http
        .get(format!("{base}/api/v1/basket"))
        .bearer_auth(&shopper.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let basket: Value = response.json().await.unwrap();
    let line = &basket["items"][0];
    assert_eq!(line["unit_price_minor"], price, "{basket}");
    assert_eq!(line["quantity"], 2, "{basket}");
    assert_eq!(line["price_current"], false, "{basket}");
    assert_eq!(line["available"], false, "{basket}");

    // Checkout is refused clearly rather than priced from stale data.
    let response = shopper
        .http
        .post(format!("{base}/api/v1/basket/checkout"))
        .bearer_auth(&shopper.token)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let problem: Value = response.json().await.unwrap();
    assert_eq!(
        problem["type"], "/problems/dependency-unavailable",
        "{problem}"
    );
    assert!(
        problem["detail"].as_str().unwrap().contains("catalog"),
        "{problem}"
    );

    // Orders still list.
    let response = shopper
        .http
        .get(format!("{base}/api/v1/ordering/orders"))
        .bearer_auth(&shopper.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // The pages: the storefront says it is unavailable; the basket page shows the marked
    // prices and holds checkout back; the orders page works.
    let page = |path: &str, token: &str| {
        http.get(format!("{base}{path}"))
            .header("cookie", format!("tw_access={token}"))
            .send()
    };
    let home = page("/", &shopper.token).await.unwrap();
    assert_eq!(home.status(), 503);
    assert!(home.text().await.unwrap().contains("Back in a moment"));
    let basket_page = page("/basket", &shopper.token).await.unwrap();
    assert_eq!(basket_page.status(), 200);
    let html = basket_page.text().await.unwrap();
    assert!(html.contains("last known"), "{html}");
    assert!(html.contains("waiting for the catalog"), "{html}");
    assert!(!html.contains("href=\"/checkout\""), "{html}");
    assert_eq!(page("/orders", &shopper.token).await.unwrap().status(), 200);

    // The console shows which dependency is down.
    let panel = page("/ops/services", &admin).await.unwrap();
    assert_eq!(panel.status(), 200);
    let panel = panel.text().await.unwrap();
    assert!(
        service_row(&panel, "catalog").contains("data-status=\"not_ready\""),
        "{panel}"
    );
    assert!(
        service_row(&panel, "basket").contains("data-status=\"ready\""),
        "{panel}"
    );
    assert!(
        service_row(&panel, "ordering").contains("data-status=\"ready\""),
        "{panel}"
    );

    server.stop(STOP_DEADLINE).await;
}

/// With the ordering service's database out of reach, checkout is refused with a 503
/// problem and `Retry-After`, and the basket is kept.
#[tokio::test]
async fn with_ordering_down_checkout_is_refused_with_a_503_and_the_basket_kept() {
    let data = tempfile::tempdir().unwrap();
    let app = App::embedded(&embedded_config(data.path())).await.unwrap();
    let services = app.services().unwrap().clone();
    let server = serve_ready(app).await;
    let base = server.base_url().to_owned();
    let shopper = Shopper::register(&base).await;
    let (item, _) = item_with_stock(&base, 1).await;
    shopper.add(&item, 1).await;

    services.ordering.db().close().await;
    let response = shopper
        .http
        .post(format!("{base}/api/v1/basket/checkout"))
        .bearer_auth(&shopper.token)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let basket = shopper.basket().await;
    assert_eq!(basket["items"][0]["quantity"], 1, "{basket}");
    assert_eq!(basket["items"][0]["price_current"], true, "{basket}");

    server.stop(STOP_DEADLINE).await;
}

/// The gateway's HTTP cache keeps the last good catalog answers while the catalog fails:
/// an answer read before is served with `X-Cache: STALE` and its `Age` (stale-if-error),
/// one never read gets the failure.
#[tokio::test]
async fn with_the_catalog_down_the_gateway_answers_its_last_good_answers() {
    let data = tempfile::tempdir().unwrap();
    let mut config = embedded_config(data.path());
    // The catalog's own cache would keep answering: this is about the gateway's.
    config.catalog.service.cache.shared.enabled = false;
    let app = App::embedded(&config).await.unwrap();
    let services = app.services().unwrap().clone();
    let server = serve_ready(app).await;
    let base = server.base_url().to_owned();
    let http = reqwest::Client::new();
    let item = |id: String| http.get(format!("{base}/api/v1/catalog/items/{id}")).send();

    let page: Value =
        scenario::get_json(&http, &format!("{base}/api/v1/catalog/items?page_size=2")).await;
    let id = page["items"][0]["id"].as_str().unwrap().to_owned();
    let other = page["items"][1]["id"].as_str().unwrap().to_owned();
    let first = item(id.clone()).await.unwrap();
    assert_eq!(first.headers()["x-cache"], "MISS");
    // The start-up's own events (the seeded items' stock levels, and the catalog's events
    // that follow them) purge the route's cache as they arrive: wait until both outboxes
    // have published them, then read until an answer is served from the cache.
    for (name, db) in [
        ("inventory", services.inventory.db()),
        ("catalog", services.catalog.db()),
    ] {
        tideway_testkit::eventually_async(
            tideway_testkit::DEADLINE,
            format!("{name}'s outbox published"),
            || async { (tideway_bus::outbox::pending(db).await.unwrap() == 0).then_some(()) },
        )
        .await;
    }
    let body: Value = tideway_testkit::eventually_async(
        tideway_testkit::DEADLINE,
        "an answer from the gateway's cache",
        || async {
            let again = item(id.clone()).await.unwrap();
            let hit = again.headers()["x-cache"] == "HIT" && again.headers().contains_key("age");
            let body: Value = again.json().await.unwrap();
            hit.then_some(body)
        },
    )
    .await;

    services.catalog.db().close().await;

    // Asked to revalidate, the gateway finds the catalog failing and answers the last
    // good answer, stale (within the catalog's stale-if-error).
    let stale = http
        .get(format!("{base}/api/v1/catalog/items/{id}"))
        .header("cache-control", "no-cache")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 200);
    assert_eq!(stale.headers()["x-cache"], "STALE");
    assert!(stale.headers().contains_key("age"));
    let stale: Value = stale.json().await.unwrap();
    assert_eq!(stale, body, "the last good answer");

    // Never read before: nothing to fall back on.
    let never = item(other).await.unwrap();
    assert_eq!(never.status(), 503, "{:?}", never.headers());
    server.stop(STOP_DEADLINE).await;
}

/// Checks out as `shopper`: the status, the headers and the JSON answer.
async fn checkout(shopper: &Shopper) -> (u16, reqwest::header::HeaderMap, Value) {
    let response = shopper
        .http
        .post(format!("{}/api/v1/basket/checkout", shopper.base))
        .bearer_auth(&shopper.token)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (
        status,
        headers,
        response.json().await.unwrap_or(Value::Null),
    )
}

/// Checks out as `shopper` until `answered` takes the answer, at most `deadline`; at a
/// pace the gateway's checkout limit (10 a minute per user) allows.
async fn checkout_until<T>(
    shopper: &Shopper,
    deadline: Duration,
    what: &str,
    mut answered: impl FnMut((u16, reqwest::header::HeaderMap, Value)) -> Option<T>,
) -> T {
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(done) = answered(checkout(shopper).await) {
            return done;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits until ordering sees inventory down, asking as a shopper whose basket is empty: a
/// checkout of it is refused 422 while inventory is up and 503 once ordering sees it down,
/// and can never place an order.
async fn wait_until_checkout_sees_inventory_down(base: &str, deadline: Duration) {
    let prober = Shopper::register(base).await;
    checkout_until(
        &prober,
        deadline,
        "checkout to see inventory down",
        |answer| match answer {
            (503, _, _) => Some(()),
            (422, _, _) => None,
            other => panic!("an empty basket's checkout answered {other:?}"),
        },
    )
    .await;
}

/// The refusal while inventory is down: 503, `Retry-After`, a problem naming inventory.
fn assert_refused_naming_inventory(answer: &(u16, reqwest::header::HeaderMap, Value)) {
    let (status, headers, problem) = answer;
    assert_eq!(*status, 503, "{problem}");
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(headers["content-type"], "application/problem+json");
    // Named for the callers' breakers too: no failure of the ordering replica.
    assert_eq!(headers["tideway-dependency-down"], "inventory");
    assert_eq!(
        problem["type"], "/problems/dependency-unavailable",
        "{problem}"
    );
    assert_eq!(problem["title"], "Inventory unavailable", "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("inventory"),
        "{problem}"
    );
}

/// The shopper's orders, through the gateway.
async fn orders_of(shopper: &Shopper) -> Vec<Value> {
    let response = shopper
        .http
        .get(format!("{}/api/v1/ordering/orders", shopper.base))
        .bearer_auth(&shopper.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let page: Value = response.json().await.unwrap();
    page["items"].as_array().unwrap().clone()
}

/// The console's services panel as `admin` sees it.
async fn services_panel(base: &str, admin: &str) -> String {
    let panel = reqwest::Client::new()
        .get(format!("{base}/ops/services"))
        .header("cookie", format!("tw_access={admin}"))
        .send()
        .await
        .unwrap();
    assert_eq!(panel.status(), 200);
    panel.text().await.unwrap()
}

/// In one process inventory cannot die alone; it is down when its database is out of
/// reach, which ordering learns from its readiness probe. Checkout is then refused up front
/// with a 503 problem naming inventory, no order is placed, the basket stays as it was, and
/// the console shows inventory not ready while ordering and the basket are.
#[tokio::test]
async fn with_inventory_down_checkout_is_refused_before_any_order_is_placed() {
    let data = tempfile::tempdir().unwrap();
    let app = App::embedded(&embedded_config(data.path())).await.unwrap();
    let services = app.services().unwrap().clone();
    let server = serve_ready(app).await;
    let base = server.base_url().to_owned();
    let shopper = Shopper::register(&base).await;
    let (item, _) = item_with_stock(&base, 2).await;
    shopper.add(&item, 2).await;
    let before = shopper.basket().await;
    let http = reqwest::Client::new();
    let admin = scenario::login(&http, &base, "admin@tideway.local", "tideway-admin-1").await;

    services.inventory.db().close().await;
    wait_until_checkout_sees_inventory_down(&base, Duration::from_secs(15)).await;

    assert_refused_naming_inventory(&checkout(&shopper).await);
    assert_eq!(
        shopper.basket().await,
        before,
        "the basket is kept as it was"
    );
    assert!(orders_of(&shopper).await.is_empty(), "no order was placed");
    // The checkout page says so and keeps the form, for a retry in a moment.
    let form_token = "B".repeat(43);
    let response = http
        .post(format!("{base}/checkout"))
        .header(
            "cookie",
            format!("tw_access={}; tw_csrf={form_token}", shopper.token),
        )
        .form(&[
            ("card", "4242 4242 4242 4242"),
            ("key", &uuid::Uuid::new_v4().to_string()),
            ("csrf", &form_token),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let page = response.text().await.unwrap();
    assert!(page.contains("The inventory is unavailable"), "{page}");
    assert!(page.contains(r#"action="/checkout""#), "{page}");
    let orders = services.ordering.snapshot().await.unwrap().orders;
    assert!(orders.is_empty(), "no order at all: {orders:?}");

    let panel = services_panel(&base, &admin).await;
    for (service, status) in [
        ("inventory", "not_ready"),
        ("ordering", "ready"),
        ("basket", "ready"),
    ] {
        assert!(
            service_row(&panel, service).contains(&format!("data-status=\"{status}\"")),
            "{service} {status}: {panel}"
        );
    }
    assert!(
        service_row(&panel, "inventory").contains("Down: checkout is refused"),
        "{panel}"
    );

    server.stop(STOP_DEADLINE).await;
}

/// Among separate processes, the inventory's process killed: ordering's balancer finds no
/// ready replica, so checkout is refused up front with a 503 problem naming inventory, no
/// order is placed, the basket is kept and the console shows inventory not ready. Started
/// again, a checkout is accepted and confirmed within a deadline.
#[tokio::test]
async fn with_the_inventory_process_dead_checkout_is_refused_until_it_is_back() {
    let mut system = Distributed::start().await;
    let base = system.gateway.clone();
    let shopper = Shopper::register(&base).await;
    let (item, _) = item_with_stock(&base, 2).await;
    wait_stocked(&base, &item, Duration::from_secs(30)).await;
    shopper.add(&item, 1).await;
    let before = shopper.basket().await;
    let http = reqwest::Client::new();
    let admin = scenario::login(&http, &base, "admin@tideway.local", "tideway-admin-1").await;

    system.kill("inventory");
    wait_until_checkout_sees_inventory_down(&base, Duration::from_secs(15)).await;

    assert_refused_naming_inventory(&checkout(&shopper).await);
    assert_eq!(
        shopper.basket().await,
        before,
        "the basket is kept as it was"
    );
    assert!(orders_of(&shopper).await.is_empty(), "no order was placed");
    let panel = services_panel(&base, &admin).await;
    let inventory = service_row(&panel, "inventory");
    assert!(inventory.contains("data-status=\"not_ready\""), "{panel}");
    assert!(inventory.contains("Down: checkout is refused"), "{panel}");
    // Refused checkouts are no failures of ordering's replica: its breaker at the gateway
    // stays closed and it answers.
    assert!(
        service_row(&panel, "ordering").contains("data-status=\"ready\""),
        "{panel}"
    );

    system.restart("inventory").await;
    // Refusals place nothing, so asking again until one is accepted is safe.
    let id = checkout_until(
        &shopper,
        Duration::from_secs(4),
        "a checkout accepted with inventory back",
        |answer| match answer {
            (202, _, accepted) => Some(accepted["order_id"].as_str().unwrap().to_owned()),
            (503, _, _) => None,
            other => panic!("checkout answered {other:?}"),
        },
    )
    .await;
    let order = shopper.settled(&id, Duration::from_secs(30)).await;
    assert_eq!(order["status"], "confirmed", "{order}");
    assert_eq!(
        orders_of(&shopper).await.len(),
        1,
        "one order, the accepted one"
    );

    system.stop().await;
}
