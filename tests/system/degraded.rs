//! Every service answers a database it cannot reach the same way: 503 with `Retry-After`
//! and a problem document, never an opaque 500.

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
    let page = scenario::get_json(&client, &format!("{base}/api/catalog/items?page_size=1")).await;
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
        (Method::POST, "/api/identity/login".to_owned(), false),
        (Method::GET, "/api/catalog/items".to_owned(), false),
        (Method::GET, "/api/basket".to_owned(), true),
        (Method::GET, format!("/api/inventory/stock/{item}"), true),
        (Method::GET, "/api/payment/payments".to_owned(), true),
        (Method::GET, "/api/ordering/orders".to_owned(), true),
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
