//! The admin endpoints: a bearer token with the admin role, bad parameters answered with a
//! problem naming them, and the day and limit filters.

use serde_json::Value;

use crate::helpers::{spawn, story};

const PATHS: [&str; 4] = [
    "/api/v1/reporting/sales",
    "/api/v1/reporting/revenue",
    "/api/v1/reporting/funnel",
    "/api/v1/reporting/top-items",
];

#[tokio::test]
async fn only_admins_read_the_reports() {
    let app = spawn(tideway_testkit::sqlite().await).await;
    for path in PATHS {
        let anonymous = app.client.get(app.server.url(path)).send().await.unwrap();
        assert_eq!(anonymous.status(), 401, "{path}");
        let customer = app.get(path, &["customer"]).await;
        assert_eq!(customer.status(), 403, "{path}");
        let admin = app.get(path, &["admin"]).await;
        assert_eq!(admin.status(), 200, "{path}");
    }
    let expired = app
        .client
        .get(app.server.url(PATHS[0]))
        .bearer_auth(app.tokens.expired("ops", &["admin"]))
        .send()
        .await
        .unwrap();
    assert_eq!(expired.status(), 401);
}

#[tokio::test]
async fn bad_parameters_are_problems_naming_them() {
    let app = spawn(tideway_testkit::sqlite().await).await;
    for (query, param) in [
        ("/api/v1/reporting/sales?from=yesterday", "from"),
        ("/api/v1/reporting/revenue?to=2026-02-30", "to"),
        (
            "/api/v1/reporting/sales?from=2026-03-02&to=2026-03-01",
            "to",
        ),
        ("/api/v1/reporting/top-items?limit=0", "limit"),
        ("/api/v1/reporting/top-items?limit=101", "limit"),
    ] {
        let response = app.get(query, &["admin"]).await;
        assert_eq!(response.status(), 400, "{query}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{query}"
        );
        let problem: Value = response.json().await.unwrap();
        assert!(problem.to_string().contains(param), "{query}: {problem}");
    }
}

#[tokio::test]
async fn days_and_limits_filter_the_reports() {
    let app = spawn(tideway_testkit::sqlite().await).await;
    app.publish(&story()).await;
    let sales: Value = app
        .get(
            "/api/v1/reporting/sales?from=2026-03-02&to=2026-03-02",
            &["admin"],
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(sales["rows"].as_array().map(Vec::len), Some(1));
    assert_eq!(sales["rows"][0]["item_id"], "beans");
    let revenue: Value = app
        .get("/api/v1/reporting/revenue?to=2026-03-01", &["admin"])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(revenue["days"][0]["revenue_minor"], 3448);
    assert_eq!(revenue["days"].as_array().map(Vec::len), Some(1));
    let top: Value = app
        .get("/api/v1/reporting/top-items?limit=1", &["admin"])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(top["limit"], 1);
    assert_eq!(top["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(top["items"][0]["item_id"], "beans");
    app.service.shutdown().await;
}
