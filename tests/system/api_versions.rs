//! The API's versions through the gateway's socket: the web front and the mobile BFF call
//! only `/api/v1/…` (the gateway counts every alias request, and a walk through the shop,
//! its console and the BFF adds none), while an unversioned path still answers the same as
//! its v1 path, marked deprecated with a `Link` to it, and an unknown version is a 404
//! problem.

use reqwest::{StatusCode, header};
use serde_json::{Value, json};
use tideway::App;

use crate::{
    STOP_DEADLINE,
    checkout::{Shopper, item_with_stock},
    embedded_config, scenario, serve_ready,
};

/// What the gateway has counted of `tideway_http_deprecated_requests_total`.
async fn alias_requests(base: &str) -> u64 {
    let text = scenario::metrics(&reqwest::Client::new(), base).await;
    text.lines()
        .filter_map(|line| {
            line.strip_prefix("tideway_http_deprecated_requests_total{service=\"gateway\"}")
        })
        .filter_map(|n| n.trim().parse::<f64>().ok())
        .map(|n| n as u64)
        .sum()
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// `GET path` with `cookie`: the status and the page.
async fn page(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    cookie: &str,
) -> (StatusCode, String) {
    let response = http
        .get(format!("{base}{path}"))
        .header(header::COOKIE, cookie)
        .send()
        .await
        .unwrap();
    (response.status(), response.text().await.unwrap())
}

/// The form token a page carries in its hidden field.
fn form_token(page: &str) -> String {
    let marker = r#"name="csrf" value=""#;
    let start = page.find(marker).expect("a form token in the page") + marker.len();
    page[start..start + 43].to_owned()
}

#[tokio::test]
async fn the_front_uses_v1_and_unversioned_paths_are_deprecated_aliases() {
    let data = tempfile::tempdir().unwrap();
    let config = embedded_config(data.path());
    let server = serve_ready(App::embedded(&config).await.unwrap()).await;
    let base = server.base_url().to_owned();
    let http = no_redirects();

    // The shop's pages, a basket filled and checked out by form, the console and the BFF.
    let before = alias_requests(&base).await;
    let shopper = Shopper::register(&base).await;
    let (item, _) = item_with_stock(&base, 2).await;
    let session = format!("tw_access={}", shopper.token);
    let item_page = format!("/items/{item}");
    for path in ["/", "/catalog", &item_page, "/account", "/basket"] {
        let (status, _) = page(&http, &base, path, &session).await;
        assert_eq!(status, StatusCode::OK, "GET {path}");
    }
    let response = http
        .get(format!("{base}/items/{item}"))
        .header(header::COOKIE, &session)
        .send()
        .await
        .unwrap();
    let csrf = response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("tw_csrf="))
        .map(|v| v.split(';').next().unwrap_or_default().to_owned())
        .expect("a form-token cookie");
    assert_eq!(form_token(&response.text().await.unwrap()), csrf);
    let cookie = format!("{session}; tw_csrf={csrf}");
    let posted = http
        .post(format!("{base}/basket/items"))
        .header(header::COOKIE, &cookie)
        .header(header::ORIGIN, &base)
        .form(&[
            ("item_id", item.as_str()),
            ("quantity", "1"),
            ("csrf", csrf.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), StatusCode::SEE_OTHER, "the basket form");
    let (status, basket) = page(&http, &base, "/checkout", &cookie).await;
    assert_eq!(status, StatusCode::OK, "GET /checkout");
    let key = uuid::Uuid::new_v4().to_string();
    let placed = http
        .post(format!("{base}/checkout"))
        .header(header::COOKIE, &cookie)
        .header(header::ORIGIN, &base)
        .form(&[
            ("card", "4242 4242 4242 4242"),
            ("key", key.as_str()),
            ("csrf", form_token(&basket).as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(placed.status(), StatusCode::SEE_OTHER, "the checkout form");
    let order_page = placed.headers()[header::LOCATION]
        .to_str()
        .unwrap()
        .to_owned();
    let order = order_page.rsplit('/').next().unwrap().to_owned();
    shopper
        .settled(&order, std::time::Duration::from_secs(30))
        .await;
    for path in [order_page.as_str(), "/orders", "/notifications"] {
        let (status, _) = page(&http, &base, path, &session).await;
        assert_eq!(status, StatusCode::OK, "GET {path}");
    }
    let admin = scenario::login(&http, &base, "admin@tideway.local", "tideway-admin-1").await;
    let console = format!("tw_access={admin}");
    let order_console = format!("/ops/orders/{order}");
    for path in [
        "/ops",
        "/ops/services",
        "/ops/traffic",
        "/ops/events",
        "/ops/sagas",
        "/ops/notifications",
        "/ops/dead-letters",
        "/ops/audit",
        "/ops/reporting",
        "/ops/edge",
        &order_console,
    ] {
        let (status, _) = page(&http, &base, path, &console).await;
        assert_eq!(status, StatusCode::OK, "GET {path}");
    }
    let graphql = reqwest::Client::new()
        .post(format!("{base}/bff/mobile/graphql"))
        .bearer_auth(&shopper.token)
        .json(&json!({
            "query": "{ items(pageSize: 3) { items { id name } } basket { itemCount } orders { orders { id } } }"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(graphql.status(), StatusCode::OK);
    let answer: Value = graphql.json().await.unwrap();
    assert!(answer["errors"].is_null(), "{answer}");
    assert_eq!(
        alias_requests(&base).await,
        before,
        "the front and the BFF called an unversioned path"
    );

    // An alias answers as its v1 path, marked deprecated, with a link to the v1 path and
    // its query.
    let query = "page_size=3&sort=price_desc&q=";
    let v1 = reqwest::get(format!("{base}/api/v1/catalog/items?{query}"))
        .await
        .unwrap();
    assert_eq!(v1.status(), StatusCode::OK);
    assert!(v1.headers().get("deprecation").is_none());
    assert!(v1.headers().get(header::LINK).is_none());
    let v1: Value = v1.json().await.unwrap();
    let alias = reqwest::get(format!("{base}/api/catalog/items?{query}"))
        .await
        .unwrap();
    assert_eq!(alias.status(), StatusCode::OK);
    assert_eq!(alias.headers()["deprecation"], "@1796083200");
    assert_eq!(
        alias.headers()[header::LINK],
        format!("</api/v1/catalog/items?{query}>; rel=\"successor-version\"").as_str()
    );
    // The same items (their stock may move between the two calls).
    let ids = |page: &Value| -> Vec<Value> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].clone())
            .collect()
    };
    let alias: Value = alias.json().await.unwrap();
    assert_eq!(ids(&alias), ids(&v1));
    assert_eq!(ids(&v1).len(), 3);
    // A write too: the alias reaches the same handler, refusals included.
    let refused = http
        .post(format!("{base}/api/basket/items"))
        .json(&json!({ "item_id": item, "quantity": "two" }))
        .bearer_auth(&shopper.token)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(refused.headers()["deprecation"], "@1796083200");
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(
        problem["invalid-params"][0]["name"], "quantity",
        "{problem}"
    );
    assert_eq!(alias_requests(&base).await, before + 2);

    // An unknown version is a 404 problem, deprecated nothing.
    let unknown = reqwest::get(format!("{base}/api/v2/catalog/items"))
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        unknown.headers()[header::CONTENT_TYPE],
        "application/problem+json"
    );
    assert!(unknown.headers().get("deprecation").is_none());
    // The API's documents stay where they were, unversioned and not deprecated.
    let document = reqwest::get(format!("{base}/api/openapi.json"))
        .await
        .unwrap();
    assert_eq!(document.status(), StatusCode::OK);
    assert!(document.headers().get("deprecation").is_none());
    let document: Value = document.json().await.unwrap();
    let paths = document["paths"].as_object().unwrap();
    assert!(
        paths.keys().all(|path| path.starts_with("/api/v1/")),
        "{:?}",
        paths.keys()
    );

    server.stop(STOP_DEADLINE).await;
}
