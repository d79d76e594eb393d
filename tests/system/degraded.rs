//! A dependency that is down degrades its feature only. Every service answers a database
//! it cannot reach the same way — 503 with `Retry-After` and a problem document, never an
//! opaque 500 — and the shop goes on around it: with the catalog down the basket shows the
//! last prices seen and checkout waits; with ordering down checkout is refused and the
//! basket kept. Each dependency is stopped for real by closing its pools.

use reqwest::Method;
use serde_json::Value;
use tideway::App;

use crate::{STOP_DEADLINE, embedded_config, scenario, serve_ready};

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
    use crate::checkout::{Shopper, item_with_stock};

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
    use crate::checkout::{Shopper, item_with_stock};

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
    // The start-up's own events (stock levels of the seeded items) purge the route's cache
    // as they arrive: read until an answer is served from it.
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
