//! The shopper's journey, against any base URL.

use std::time::Duration;

use serde_json::{Value, json};
use tideway_testkit::eventually_async;

/// Polls `/health/ready` until it answers 200 or the deadline passes.
pub async fn wait_ready(base: &str, deadline: Duration) {
    let client = reqwest::Client::new();
    let ready = format!("{base}/health/ready");
    eventually_async(deadline, format!("{base} to be ready"), || async {
        client
            .get(&ready)
            .send()
            .await
            .is_ok_and(|response| response.status().is_success())
    })
    .await;
}

/// `GET url` answered 200, as JSON.
pub async fn get_json(client: &reqwest::Client, url: &str) -> Value {
    let response = client.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200, "GET {url}");
    response.json().await.unwrap()
}

/// `GET base/metrics` as text.
pub async fn metrics(client: &reqwest::Client, base: &str) -> String {
    let response = client.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200, "GET {base}/metrics");
    response.text().await.unwrap()
}

/// Logs in and returns the access token.
pub async fn login(client: &reqwest::Client, base: &str, email: &str, password: &str) -> String {
    let response = client
        .post(format!("{base}/api/v1/identity/login"))
        .json(&json!({ "email": email, "password": password }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "login of {email}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    body["access_token"].as_str().unwrap().to_owned()
}

/// Register → login → browse → add to basket, with the gateway's checks on the way.
pub async fn shop(base: &str) {
    let client = reqwest::Client::new();
    let email = format!("shopper-{}@example.com", uuid::Uuid::new_v4().simple());

    // Register, and a bad registration names its field.
    let response = client
        .post(format!("{base}/api/v1/identity/register"))
        .json(&json!({ "email": email, "password": "correct-horse-9", "name": "Shopper" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let response = client
        .post(format!("{base}/api/v1/identity/register"))
        .json(&json!({ "email": "not-an-email", "password": "correct-horse-9", "name": "X" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["invalid-params"][0]["name"], "email");

    let token = login(&client, base, &email, "correct-horse-9").await;

    // Browse: categories, a filtered page, a search, an item.
    let categories: Value = client
        .get(format!("{base}/api/v1/catalog/categories"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let categories = categories.as_array().unwrap();
    assert!(categories.len() >= 6, "{categories:?}");
    let category = categories[0]["id"].as_str().unwrap();
    let page: Value = client
        .get(format!(
            "{base}/api/v1/catalog/items?category={category}&sort=price_asc&page_size=5"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = page["items"].as_array().unwrap();
    assert!(!items.is_empty());
    assert!(items.iter().all(|i| i["category"] == category));
    let in_stock = client
        .get(format!(
            "{base}/api/v1/catalog/items?page_size=100&sort=price_desc"
        ))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["stock"].as_i64().unwrap() >= 5)
        .cloned()
        .expect("an item with stock");
    let id = in_stock["id"].as_str().unwrap();
    let response = client
        .get(format!("{base}/api/v1/catalog/items/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    let item: Value = response.json().await.unwrap();
    assert_eq!(item["id"], id);
    let response = client
        .get(format!("{base}/api/v1/catalog/items/{id}"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 304, "a cached item is not sent again");

    // The basket needs a token; the gateway says so.
    let response = client
        .post(format!("{base}/api/v1/basket/items"))
        .json(&json!({ "item_id": id, "quantity": 2 }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );

    // Add, add again, read back.
    for quantity in [2, 1] {
        let response = client
            .post(format!("{base}/api/v1/basket/items"))
            .bearer_auth(&token)
            .json(&json!({ "item_id": id, "quantity": quantity }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{:?}", response.text().await);
    }
    let basket: Value = client
        .get(format!("{base}/api/v1/basket"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let price = item["price_minor"].as_i64().unwrap();
    assert_eq!(basket["items"][0]["item_id"], id);
    assert_eq!(basket["items"][0]["quantity"], 3);
    assert_eq!(basket["total_minor"].as_i64().unwrap(), 3 * price);

    // A zero quantity is refused, naming the field, and changes nothing.
    let response = client
        .post(format!("{base}/api/v1/basket/items"))
        .bearer_auth(&token)
        .json(&json!({ "item_id": id, "quantity": 0 }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["invalid-params"][0]["name"], "quantity");
    let again: Value = client
        .get(format!("{base}/api/v1/basket"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again, basket);

    // Catalog writes need the admin role; the admin may change a price.
    let response = client
        .put(format!("{base}/api/v1/catalog/items/{id}/price"))
        .bearer_auth(&token)
        .json(&json!({ "price_minor": price + 100 }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let admin = login(&client, base, "admin@tideway.local", "tideway-admin-1").await;
    let response = client
        .put(format!("{base}/api/v1/catalog/items/{id}/price"))
        .bearer_auth(&admin)
        .json(&json!({ "price_minor": price + 100 }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // The caches in front (the gateway's, the basket's prices) drop the old price when
    // the catalog's PriceChanged reaches them: visible well within the deadline.
    eventually_async(
        Duration::from_secs(30),
        "the catalog's answer to show the new price",
        || async {
            let item: Value = get_json(&client, &format!("{base}/api/v1/catalog/items/{id}")).await;
            item["price_minor"].as_i64() == Some(price + 100)
        },
    )
    .await;
    eventually_async(
        Duration::from_secs(30),
        "the basket to show the catalog's current price",
        || async {
            let basket: Value = client
                .get(format!("{base}/api/v1/basket"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            basket["total_minor"].as_i64() == Some(3 * (price + 100))
        },
    )
    .await;

    // Every answer carried a request id and the gateway counts requests.
    let metrics = metrics(&client, base).await;
    assert!(
        metrics.contains("tideway_http_requests_total{service=\"gateway\""),
        "{metrics}"
    );
}
