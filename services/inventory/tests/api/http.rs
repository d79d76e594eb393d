//! The HTTP API: stock levels for everyone, setting stock for admins, and every kind of bad
//! input answered with a problem naming the field and changing nothing.

use axum::http::StatusCode;
use serde_json::{Value, json};
use tideway_inventory_api::StockLevel;

use crate::helpers::{assert_problem, assert_status_problem, reserve, spawn_app};

#[tokio::test]
async fn stock_levels_are_public_and_admins_set_what_is_available() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(db.url()).await;
        app.inventory.set_stock("a", 5).await.unwrap();
        app.inventory.set_stock("b", 2).await.unwrap();
        assert!(
            app.ask(&reserve("o1", &[("a", 2)]))
                .await
                .is::<tideway_inventory_api::StockReserved>()
        );

        let response = app.get("/stock/a").await;
        assert_eq!(response.status(), 200);
        let level: StockLevel = response.json().await.unwrap();
        assert_eq!(
            level,
            StockLevel {
                item_id: "a".into(),
                available: 3,
                reserved: 2,
                committed: 0
            }
        );

        let response = app.get("/stock?ids=b,a,ghost,a").await;
        assert_eq!(response.status(), 200);
        let levels: Vec<StockLevel> = response.json().await.unwrap();
        let ids: Vec<_> = levels.iter().map(|l| l.item_id.as_str()).collect();
        assert_eq!(ids, ["b", "a"], "known ids in the order asked, once each");

        // An admin sets what is available; reserved units stay with their order.
        let response = app
            .put(
                "/stock/a",
                Some(&app.admin_token()),
                &json!({"available": 40}),
            )
            .await;
        assert_eq!(response.status(), 200);
        let level: StockLevel = response.json().await.unwrap();
        assert_eq!((level.available, level.reserved), (40, 2));
        // A new item gets a row.
        let response = app
            .put(
                "/stock/new-item",
                Some(&app.admin_token()),
                &json!({"available": 0}),
            )
            .await;
        assert_eq!(response.status(), 200);
        assert_eq!(app.counts("new-item").await, (0, 0, 0));
        let response = app
            .put(
                "/stock/b",
                Some(&app.admin_token()),
                &json!({"available": 1_000_000}),
            )
            .await;
        assert_eq!(response.status(), 200);
        app.stop().await;
    }
}

#[tokio::test]
async fn bad_input_is_refused_by_name_and_changes_nothing() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(db.url()).await;
        app.inventory.set_stock("a", 5).await.unwrap();
        let before = app.inventory.snapshot().await.unwrap();
        let admin = app.admin_token();

        // Reads.
        assert_status_problem(app.get("/stock/ghost").await, StatusCode::NOT_FOUND).await;
        assert_status_problem(app.get("/stock/bad%20id").await, StatusCode::NOT_FOUND).await;
        let long = "x".repeat(65);
        assert_status_problem(
            app.get(&format!("/stock/{long}")).await,
            StatusCode::NOT_FOUND,
        )
        .await;
        for query in ["", "?ids=", "?ids=a,,b", "?ids=a%2Fb"] {
            let response = app.get(&format!("/stock{query}")).await;
            assert_problem(response, StatusCode::BAD_REQUEST, "ids").await;
        }
        let many: Vec<String> = (0..101).map(|i| format!("i{i}")).collect();
        let response = app.get(&format!("/stock?ids={}", many.join(","))).await;
        assert_problem(response, StatusCode::BAD_REQUEST, "ids").await;
        let response = app
            .get(&format!("/stock?ids={}", many[..100].join(",")))
            .await;
        assert_eq!(response.status(), 200);

        // Writes: who.
        let body = json!({"available": 7});
        assert_status_problem(
            app.put("/stock/a", None, &body).await,
            StatusCode::UNAUTHORIZED,
        )
        .await;
        let customer = app.token(&["customer"]);
        assert_status_problem(
            app.put("/stock/a", Some(&customer), &body).await,
            StatusCode::FORBIDDEN,
        )
        .await;
        assert_status_problem(
            app.put("/stock/a", Some("not-a-token"), &body).await,
            StatusCode::UNAUTHORIZED,
        )
        .await;

        // Writes: what.
        for bad in [
            json!({"available": -1}),
            json!({"available": 1_000_001}),
            json!({"available": i64::MAX}),
            json!({"available": "7"}),
            json!({"available": 1.5}),
            json!({"available": null}),
            json!({}),
            json!({"available": 9_223_372_036_854_775_808_u64}),
        ] {
            let response = app.put("/stock/a", Some(&admin), &bad).await;
            assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, "available").await;
        }
        let response = app
            .put_raw("/stock/a", "application/json", "{\"available\": ")
            .await;
        assert_problem(response, StatusCode::BAD_REQUEST, "body").await;
        for not_an_object in ["[7]", "7", "\"7\"", "null"] {
            let response = app
                .put_raw("/stock/a", "application/json", not_an_object)
                .await;
            assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, "body").await;
        }
        let response = app
            .put_raw("/stock/a", "text/plain", "{\"available\": 7}")
            .await;
        assert_problem(response, StatusCode::UNSUPPORTED_MEDIA_TYPE, "content-type").await;
        let response = app.put("/stock/bad%20id", Some(&admin), &body).await;
        assert_status_problem(response, StatusCode::NOT_FOUND).await;
        let response = app
            .put(&format!("/stock/{long}"), Some(&admin), &body)
            .await;
        assert_status_problem(response, StatusCode::NOT_FOUND).await;
        let response = app
            .put_raw("/stock/a", "application/json", &"7".repeat(70_000))
            .await;
        assert_eq!(response.status(), 413);

        // set_stock refuses the same values.
        assert!(app.inventory.set_stock("a", -1).await.is_err());
        assert!(app.inventory.set_stock("a b", 1).await.is_err());

        let after = app.inventory.snapshot().await.unwrap();
        assert_eq!(before, after, "refused requests changed nothing");
        let problem: Value = app.get("/stock/ghost").await.json().await.unwrap();
        assert_eq!(problem["status"], 404);
        app.stop().await;
    }
}
