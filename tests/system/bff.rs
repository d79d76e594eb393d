//! The mobile BFF (`POST /bff/mobile/graphql`) against the embedded shop: browsing without a
//! token, the basket, checkout and orders with one, the same JWT checks as the API, query
//! limits, and the items of a basket's lines loaded in one catalog call.

use serde_json::{Value, json};
use tideway::App;

use crate::{
    STOP_DEADLINE,
    checkout::{Shopper, item_with_stock},
    embedded_config, scenario, serve_ready,
};

async fn graphql(base: &str, token: Option<&str>, query: &str, variables: Value) -> Value {
    let mut request = reqwest::Client::new()
        .post(format!("{base}/bff/mobile/graphql"))
        .json(&json!({ "query": query, "variables": variables }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200, "POST /bff/mobile/graphql");
    response.json().await.unwrap()
}

/// Catalog requests served so far: (listings, single items).
async fn catalog_calls(base: &str) -> (u64, u64) {
    let text = scenario::metrics(&reqwest::Client::new(), base).await;
    let mut calls = (0, 0);
    for line in text.lines().filter(|line| {
        line.starts_with("tideway_http_requests_total{") && line.contains("service=\"catalog\"")
    }) {
        let count: u64 = line
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse::<f64>().ok())
            .unwrap_or(0.0) as u64;
        if line.contains("route=\"/api/v1/catalog/items\"") {
            calls.0 += count;
        } else if line.contains("route=\"/api/v1/catalog/items/") {
            calls.1 += count;
        }
    }
    calls
}

#[tokio::test]
async fn the_mobile_bff_browses_fills_a_basket_checks_out_and_batches_item_loads() {
    let data = tempfile::tempdir().unwrap();
    let mut config = embedded_config(data.path());
    // The basket prices its lines from the catalog on every read without its cache, so its
    // own catalog calls are the same for each read and the BFF's stand out.
    config.basket.service.cache.shared.enabled = false;
    let server = serve_ready(App::embedded(&config).await.unwrap()).await;
    let base = server.base_url().to_owned();

    // Browsing needs no token.
    let page = graphql(
        &base,
        None,
        "query($q: String) { items(search: $q, pageSize: 5) { total items { id name priceMinor inStock } } categories { id itemCount } }",
        json!({ "q": "coffee" }),
    )
    .await;
    assert!(page["errors"].is_null(), "{page}");
    let items = page["data"]["items"]["items"].as_array().unwrap();
    assert!(!items.is_empty(), "{page}");
    assert!(
        page["data"]["items"]["total"].as_u64().unwrap() >= items.len() as u64,
        "{page}"
    );
    assert!(!page["data"]["categories"].as_array().unwrap().is_empty());

    // The basket needs one, and a forged one is refused like at the API.
    let anonymous = graphql(&base, None, "{ basket { itemCount } }", json!({})).await;
    assert_eq!(
        anonymous["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{anonymous}"
    );
    let forged = reqwest::Client::new()
        .post(format!("{base}/bff/mobile/graphql"))
        .bearer_auth("not.a.token")
        .json(&json!({ "query": "{ basket { itemCount } }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    let problem: Value = forged.json().await.unwrap();
    assert_eq!(problem["status"], 401, "{problem}");

    let shopper = Shopper::register(&base).await;
    let token = Some(shopper.token.as_str());
    let (item, _) = item_with_stock(&base, 5).await;
    let listing = scenario::get_json(
        &reqwest::Client::new(),
        &format!("{base}/api/v1/catalog/items?page_size=3&sort=price_desc"),
    )
    .await;
    let mut ids: Vec<String> = listing["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect();
    ids.retain(|id| *id != item);
    ids.truncate(2);
    ids.push(item.clone());
    for id in &ids {
        let added = graphql(
            &base,
            token,
            "mutation($id: ID!) { addToBasket(itemId: $id, quantity: 1) { itemCount } }",
            json!({ "id": id }),
        )
        .await;
        assert!(added["errors"].is_null(), "{added}");
    }
    let refused = graphql(
        &base,
        token,
        "mutation($id: ID!) { setQuantity(itemId: $id, quantity: 0) { itemCount } }",
        json!({ "id": item }),
    )
    .await;
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "BAD_REQUEST",
        "{refused}"
    );

    // The lines' items: one listing call for the three of them, no call per item.
    let before = catalog_calls(&base).await;
    let plain = graphql(
        &base,
        token,
        "{ basket { lines { itemId name } } }",
        json!({}),
    )
    .await;
    assert_eq!(
        plain["data"]["basket"]["lines"].as_array().unwrap().len(),
        3,
        "{plain}"
    );
    let middle = catalog_calls(&base).await;
    let joined = graphql(
        &base,
        token,
        "{ basket { itemCount lines { itemId item { id name stock brand } } } }",
        json!({}),
    )
    .await;
    let after = catalog_calls(&base).await;
    assert!(joined["errors"].is_null(), "{joined}");
    let lines = joined["data"]["basket"]["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 3, "{joined}");
    for line in lines {
        assert_eq!(line["item"]["id"], line["itemId"], "{joined}");
    }
    let cost = |from: (u64, u64), to: (u64, u64)| {
        (
            i64::try_from(to.0 - from.0).unwrap(),
            i64::try_from(to.1 - from.1).unwrap(),
        )
    };
    let (plain_cost, joined_cost) = (cost(before, middle), cost(middle, after));
    assert_eq!(
        (joined_cost.0 - plain_cost.0, joined_cost.1 - plain_cost.1),
        (1, 0),
        "the items of three lines cost one catalog listing: {plain_cost:?} → {joined_cost:?}"
    );

    // Checkout, retried with its key, is one order; the order reads back with its items.
    let checkout = "mutation($key: String!) { checkout(card: \"4242 4242 4242 4242\", idempotencyKey: $key) { orderId status } }";
    let first = graphql(&base, token, checkout, json!({ "key": "mobile-1" })).await;
    assert!(first["errors"].is_null(), "{first}");
    let order_id = first["data"]["checkout"]["orderId"]
        .as_str()
        .unwrap()
        .to_owned();
    let again = graphql(&base, token, checkout, json!({ "key": "mobile-1" })).await;
    assert_eq!(
        again["data"]["checkout"]["orderId"],
        order_id.as_str(),
        "{again}"
    );
    shopper
        .settled(&order_id, std::time::Duration::from_secs(30))
        .await;
    let order = graphql(
        &base,
        token,
        "query($id: ID!) { order(id: $id) { status totalMinor lines { quantity item { name } } timeline { step status } } orders { total orders { id } } }",
        json!({ "id": order_id }),
    )
    .await;
    assert!(order["errors"].is_null(), "{order}");
    assert_eq!(order["data"]["order"]["status"], "CONFIRMED", "{order}");
    assert_eq!(order["data"]["order"]["lines"].as_array().unwrap().len(), 3);
    assert!(
        !order["data"]["order"]["timeline"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(order["data"]["orders"]["total"], 1, "{order}");
    let missing = graphql(
        &base,
        token,
        "{ order(id: \"00000000-0000-0000-0000-000000000000\") { id } }",
        json!({}),
    )
    .await;
    assert!(missing["data"]["order"].is_null(), "{missing}");
    // An id the catalog cannot hold is not found, and spoils none of the other items.
    let odd = graphql(
        &base,
        token,
        "{ item(id: \"x'; drop\") { id } basket { lines { item { id } } } }",
        json!({}),
    )
    .await;
    assert!(odd["errors"].is_null(), "{odd}");
    assert!(odd["data"]["item"].is_null(), "{odd}");
    assert!(
        odd["data"]["basket"]["lines"]
            .as_array()
            .unwrap()
            .iter()
            .all(|line| line["item"]["id"].is_string()),
        "{odd}"
    );

    // Limits.
    let deep = graphql(
        &base,
        None,
        "{ __schema { types { fields { type { ofType { ofType { ofType { ofType { name } } } } } } } } }",
        json!({}),
    )
    .await;
    assert!(
        deep["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("nested too deep"),
        "{deep}"
    );
    let bad = reqwest::Client::new()
        .post(format!("{base}/bff/mobile/graphql"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);

    server.stop(STOP_DEADLINE).await;
}
