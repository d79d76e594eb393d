//! Bad input on every endpoint: the right status, the field named, and nothing changed.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{Answer, COFFEE, FakeCatalog, MUG, TEA, TestApp, UNKNOWN, spawn_app};

/// Alice holds 60 coffees and 2 mugs (of 3 in stock).
async fn seeded(app: &TestApp) -> String {
    let token = app.token("alice");
    app.add(&token, COFFEE, 60).await.view();
    app.add(&token, MUG, 2).await.view();
    token
}

/// Sends `body` to `path` with `method`, checks the answer, and that the basket is as before.
async fn refused(
    app: &TestApp,
    token: &str,
    method: Method,
    path: &str,
    content_type: Option<&str>,
    body: &str,
    expected: (u16, &str),
) -> Answer {
    let before = app.view(token).await;
    let stored = app.stored("alice").await;
    let answer = app
        .raw(
            method.clone(),
            path,
            Some(token),
            content_type,
            Some(body.to_owned()),
        )
        .await;
    assert_eq!(
        (answer.status, answer.field()),
        expected,
        "{method} {path} {body}: {answer:?}"
    );
    assert_eq!(
        app.view(token).await,
        before,
        "{method} {path} {body} changed the basket"
    );
    assert_eq!(app.stored("alice").await, stored);
    answer
}

const JSON: Option<&str> = Some("application/json");

#[tokio::test]
async fn adding_refuses_bad_input() {
    for store in crate::helpers::stores().await {
        let fake = FakeCatalog::new();
        let app = spawn_app(&store, fake.in_process()).await;
        let token = seeded(&app).await;
        let post =
            |body: String, content_type: Option<&'static str>, expected: (u16, &'static str)| {
                let (app, token) = (&app, &token);
                async move {
                    refused(
                        app,
                        token,
                        Method::POST,
                        "/api/v1/basket/items",
                        content_type,
                        &body,
                        expected,
                    )
                    .await
                }
            };
        let add = |item_id: &str, quantity: serde_json::Value| {
            json!({"item_id": item_id, "quantity": quantity}).to_string()
        };

        // Syntax, types, missing fields, content type.
        post(r#"{"item_id": "#.into(), JSON, (400, "body")).await;
        post(
            format!("{} trailing", add(TEA, json!(1))),
            JSON,
            (400, "body"),
        )
        .await;
        post(add(TEA, json!("two")), JSON, (422, "quantity")).await;
        post(add(TEA, json!(1.5)), JSON, (422, "quantity")).await;
        post(add(TEA, json!(null)), JSON, (422, "quantity")).await;
        post(
            json!({"item_id": 7, "quantity": 1}).to_string(),
            JSON,
            (422, "item_id"),
        )
        .await;
        post(json!({"item_id": TEA}).to_string(), JSON, (422, "quantity")).await;
        post(json!({"quantity": 1}).to_string(), JSON, (422, "item_id")).await;
        post("[]".into(), JSON, (422, "body")).await;
        post(
            add(TEA, json!(1)),
            Some("text/plain"),
            (415, "content-type"),
        )
        .await;
        post(add(TEA, json!(1)), None, (415, "content-type")).await;

        // Quantities.
        for quantity in [
            json!(0),
            json!(-1),
            json!(100),
            json!(i64::MAX),
            json!(i64::MIN),
        ] {
            post(add(TEA, quantity), JSON, (422, "quantity")).await;
        }
        post(
            r#"{"item_id": "x", "quantity": 9223372036854775808}"#.into(),
            JSON,
            (422, "quantity"),
        )
        .await;
        post(
            r#"{"item_id": "x", "quantity": 1e30}"#.into(),
            JSON,
            (422, "quantity"),
        )
        .await;
        // 60 held + 40 would pass 99 on the line.
        post(add(COFFEE, json!(40)), JSON, (422, "quantity")).await;

        // Items.
        post(add(UNKNOWN, json!(1)), JSON, (422, "item_id")).await;
        post(add("", json!(1)), JSON, (422, "item_id")).await;
        post(add("../../etc/passwd", json!(1)), JSON, (422, "item_id")).await;
        post(add(&"a".repeat(1000), json!(1)), JSON, (422, "item_id")).await;

        // Stock: 2 of 3 mugs held.
        let answer = post(add(MUG, json!(2)), JSON, (409, "quantity")).await;
        assert_eq!(answer.body["type"], "/problems/insufficient-stock");
        assert_eq!(answer.body["status"], 409);
        let answer = post(add(TEA, json!(501)), JSON, (422, "quantity")).await;
        assert_eq!(answer.body["type"], "/problems/validation");
        fake.set_stock(TEA, 5);
        let answer = post(add(TEA, json!(6)), JSON, (409, "quantity")).await;
        assert_eq!(answer.body["type"], "/problems/insufficient-stock");
        // Exactly the stock is fine.
        assert_eq!(app.add(&token, TEA, 5).await.status, 200);
    }
}

#[tokio::test]
async fn setting_a_quantity_refuses_bad_input() {
    for store in crate::helpers::stores().await {
        let fake = FakeCatalog::new();
        let app = spawn_app(&store, fake.in_process()).await;
        let token = seeded(&app).await;
        let coffee = format!("/api/v1/basket/items/{COFFEE}");
        let put = |path: String,
                   body: String,
                   content_type: Option<&'static str>,
                   expected: (u16, &'static str)| {
            let (app, token) = (&app, &token);
            async move {
                refused(
                    app,
                    token,
                    Method::PUT,
                    &path,
                    content_type,
                    &body,
                    expected,
                )
                .await
            }
        };

        put(coffee.clone(), "{".into(), JSON, (400, "body")).await;
        put(
            coffee.clone(),
            r#"{"quantity": "3"}"#.into(),
            JSON,
            (422, "quantity"),
        )
        .await;
        put(coffee.clone(), "{}".into(), JSON, (422, "quantity")).await;
        put(
            coffee.clone(),
            r#"{"quantity": 3}"#.into(),
            Some("text/plain"),
            (415, "content-type"),
        )
        .await;
        for quantity in [
            "0",
            "-5",
            "100",
            "9223372036854775807",
            "99999999999999999999",
        ] {
            put(
                coffee.clone(),
                format!(r#"{{"quantity": {quantity}}}"#),
                JSON,
                (422, "quantity"),
            )
            .await;
        }
        // Not in the basket (known to the catalog or not).
        let answer = put(
            format!("/api/v1/basket/items/{TEA}"),
            r#"{"quantity": 1}"#.into(),
            JSON,
            (404, ""),
        )
        .await;
        assert_eq!(answer.body["type"], "/problems/not-found");
        put(
            format!("/api/v1/basket/items/{UNKNOWN}"),
            r#"{"quantity": 1}"#.into(),
            JSON,
            (404, ""),
        )
        .await;
        put(
            "/api/v1/basket/items/a%2Fb".into(),
            r#"{"quantity": 1}"#.into(),
            JSON,
            (404, ""),
        )
        .await;
        // More than the stock.
        let answer = put(
            format!("/api/v1/basket/items/{MUG}"),
            r#"{"quantity": 4}"#.into(),
            JSON,
            (409, "quantity"),
        )
        .await;
        assert_eq!(answer.body["type"], "/problems/insufficient-stock");
        // An item that has left the catalog cannot be set.
        fake.remove(MUG);
        put(
            format!("/api/v1/basket/items/{MUG}"),
            r#"{"quantity": 1}"#.into(),
            JSON,
            (422, "item_id"),
        )
        .await;
    }
}

#[tokio::test]
async fn removing_an_absent_line_is_not_found() {
    for store in crate::helpers::stores().await {
        let fake = FakeCatalog::new();
        let app = spawn_app(&store, fake.in_process()).await;
        let token = seeded(&app).await;
        for path in [
            format!("/api/v1/basket/items/{TEA}"),
            format!("/api/v1/basket/items/{UNKNOWN}"),
            "/api/v1/basket/items/%20".to_owned(),
        ] {
            let answer = refused(&app, &token, Method::DELETE, &path, None, "", (404, "")).await;
            assert_eq!(answer.body["type"], "/problems/not-found", "{path}");
        }
        // A second removal of the same line is a 404 too.
        app.remove(&token, MUG).await.view();
        refused(
            &app,
            &token,
            Method::DELETE,
            &format!("/api/v1/basket/items/{MUG}"),
            None,
            "",
            (404, ""),
        )
        .await;
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    for store in crate::helpers::stores().await {
        let fake = FakeCatalog::new();
        let app = spawn_app(&store, fake.in_process()).await;
        let token = seeded(&app).await;
        refused(
            &app,
            &token,
            Method::GET,
            "/api/v1/basket/items",
            None,
            "",
            (405, ""),
        )
        .await;
        refused(
            &app,
            &token,
            Method::PATCH,
            "/api/v1/basket",
            JSON,
            "{}",
            (405, ""),
        )
        .await;
        refused(
            &app,
            &token,
            Method::GET,
            "/api/v1/basket/nowhere",
            None,
            "",
            (404, ""),
        )
        .await;
    }
}
