//! Bad input for every endpoint: the status, the named field, and that nothing changed.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Caller, TestApp, assert_problem, assert_status_problem, new_item, spawn_app};

const UNKNOWN_ID: &str = "00000000-0000-4000-8000-000000000000";

fn with(field: &str, value: Value) -> Value {
    let mut body = new_item("BAD-001");
    body[field] = value;
    body
}

fn without(field: &str) -> Value {
    let mut body = new_item("BAD-001");
    body.as_object_mut().unwrap().remove(field);
    body
}

/// Field values each rule refuses, with the status and the field named.
fn bad_new_items() -> Vec<(Value, StatusCode, &'static str)> {
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    vec![
        (with("price_minor", json!(0)), unprocessable, "price_minor"),
        (with("price_minor", json!(-5)), unprocessable, "price_minor"),
        (
            with("price_minor", json!(100_000_001)),
            unprocessable,
            "price_minor",
        ),
        (
            with("price_minor", json!(i64::MAX)),
            unprocessable,
            "price_minor",
        ),
        (
            with("price_minor", json!(1e30)),
            unprocessable,
            "price_minor",
        ),
        (
            with("price_minor", json!(12.5)),
            unprocessable,
            "price_minor",
        ),
        (
            with("price_minor", json!("2599")),
            unprocessable,
            "price_minor",
        ),
        (
            with("price_minor", Value::Null),
            unprocessable,
            "price_minor",
        ),
        (without("price_minor"), unprocessable, "price_minor"),
        (
            with("category", json!("spaceships")),
            unprocessable,
            "category",
        ),
        (with("category", json!("")), unprocessable, "category"),
        (with("category", json!(7)), unprocessable, "category"),
        (without("category"), unprocessable, "category"),
        (with("sku", json!("ab")), unprocessable, "sku"),
        (with("sku", json!("has space")), unprocessable, "sku"),
        (with("sku", json!("X".repeat(33))), unprocessable, "sku"),
        (without("sku"), unprocessable, "sku"),
        (with("name", json!("")), unprocessable, "name"),
        (with("name", json!("   ")), unprocessable, "name"),
        (with("name", json!("n".repeat(121))), unprocessable, "name"),
        (with("name", json!("line\nbreak")), unprocessable, "name"),
        (with("name", json!(["a"])), unprocessable, "name"),
        (without("name"), unprocessable, "name"),
        (with("brand", json!("")), unprocessable, "brand"),
        (with("brand", json!("b".repeat(61))), unprocessable, "brand"),
        (without("brand"), unprocessable, "brand"),
        (
            with("description", json!("d".repeat(2001))),
            unprocessable,
            "description",
        ),
        (
            with("description", json!(false)),
            unprocessable,
            "description",
        ),
        (with("currency", json!("USD")), unprocessable, "currency"),
        (with("currency", json!("eur")), unprocessable, "currency"),
        (with("stock", json!(-1)), unprocessable, "stock"),
        (with("stock", json!(1_000_001)), unprocessable, "stock"),
        (with("stock", json!("many")), unprocessable, "stock"),
        (json!([]), unprocessable, "body"),
        (json!("item"), unprocessable, "body"),
    ]
}

async fn assert_unchanged(
    app: &TestApp,
    before: &(Vec<tideway_catalog_api::Item>, Value, Value),
    what: &str,
) {
    assert!(
        app.snapshot().await == *before,
        "{what} changed the catalog"
    );
}

#[tokio::test]
async fn listing_refuses_bad_parameters_naming_each() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(db.url()).await;
        let cases = [
            ("page=0", "page"),
            ("page=-1", "page"),
            ("page=abc", "page"),
            ("page=1.5", "page"),
            ("page=", "page"),
            ("page=99999999999999999999", "page"),
            ("page=1000001", "page"),
            ("page_size=0", "page_size"),
            ("page_size=101", "page_size"),
            ("page_size=-3", "page_size"),
            ("page_size=ten", "page_size"),
            ("min_price=-1", "min_price"),
            ("max_price=-1", "max_price"),
            ("min_price=cheap", "min_price"),
            ("max_price=1e3", "max_price"),
            ("min_price=500&max_price=499", "min_price"),
            ("sort=popular", "sort"),
            ("sort=NAME", "sort"),
        ];
        for (query, field) in cases {
            let response = app.get(&format!("/items?{query}")).await;
            let problem = assert_problem(response, StatusCode::BAD_REQUEST, field).await;
            assert!(
                problem["detail"].as_str().unwrap().contains(field),
                "{query}: {problem}"
            );
        }
        // A repeated parameter: the platform's query extractor names the whole query.
        let response = app.get("/items?sort=price_asc&sort=name").await;
        assert_problem(response, StatusCode::BAD_REQUEST, "query").await;
        let long = "q".repeat(101);
        assert_problem(
            app.get(&format!("/items?q={long}")).await,
            StatusCode::BAD_REQUEST,
            "q",
        )
        .await;
        assert_eq!(
            app.get(&format!("/items?q={}", "q".repeat(100)))
                .await
                .status(),
            StatusCode::OK
        );
        // Unknown parameters are ignored; empty filters are no filters.
        let total = app.page("").await.total;
        assert_eq!(
            app.page("colour=red&category=&brand=&q=%20&sort=")
                .await
                .total,
            total
        );
    }
}

#[tokio::test]
async fn creating_refuses_bad_bodies_naming_the_field_and_changes_nothing() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(db.url()).await;
        let before = app.snapshot().await;

        for (body, status, field) in bad_new_items() {
            let response = app.create(Caller::Admin, &body).await;
            assert_problem(response, status, field).await;
        }
        let raw_cases = [
            (
                "application/json",
                "{\"sku\": \"BAD-001\",",
                StatusCode::BAD_REQUEST,
                "body",
            ),
            (
                "application/json",
                "not json at all",
                StatusCode::BAD_REQUEST,
                "body",
            ),
            ("application/json", "", StatusCode::BAD_REQUEST, "body"),
            (
                "text/plain",
                "{\"sku\":\"BAD-001\"}",
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "content-type",
            ),
            (
                "application/x-www-form-urlencoded",
                "sku=BAD-001",
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "content-type",
            ),
        ];
        for (content_type, body, status, field) in raw_cases {
            let response = app
                .send_raw(Method::POST, "/items", content_type, body)
                .await;
            assert_problem(response, status, field).await;
        }
        // A valid document followed by more text.
        let trailing = format!("{} {{}}", new_item("BAD-001"));
        let response = app
            .send_raw(Method::POST, "/items", "application/json", trailing)
            .await;
        assert_problem(response, StatusCode::BAD_REQUEST, "body").await;
        // Without a content type at all.
        let response = app
            .client
            .post(app.url("/items"))
            .bearer_auth(app.admin_token())
            .body(new_item("BAD-001").to_string())
            .send()
            .await
            .unwrap();
        assert_problem(response, StatusCode::UNSUPPORTED_MEDIA_TYPE, "content-type").await;
        // Too large a body.
        let huge = json!({"sku": "BAD-001", "description": "x".repeat(100 * 1024)});
        let response = app.create(Caller::Admin, &huge).await;
        assert_status_problem(response, StatusCode::PAYLOAD_TOO_LARGE).await;
        // Authentication comes before validation.
        let response = app
            .create(Caller::Customer, &with("price_minor", json!(0)))
            .await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);

        assert_unchanged(&app, &before, "a refused create").await;
        let response = app.get("/items?q=BAD-001").await;
        assert_eq!(response.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn updating_refuses_bad_bodies_and_ids_and_changes_nothing() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(db.url()).await;
        let id = app.page("page_size=1").await.items.remove(0).id;
        let before = app.snapshot().await;
        let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
        let cases = [
            (json!({}), unprocessable, "body"),
            (json!({"price_minor": 100}), unprocessable, "body"),
            (json!({"name": null}), unprocessable, "body"),
            (json!({"name": ""}), unprocessable, "name"),
            (json!({"name": "n".repeat(121)}), unprocessable, "name"),
            (json!({"name": 5}), unprocessable, "name"),
            (json!({"brand": " "}), unprocessable, "brand"),
            (
                json!({"description": "d".repeat(2001)}),
                unprocessable,
                "description",
            ),
            (json!({"category": "spaceships"}), unprocessable, "category"),
            (json!({"stock": -1}), unprocessable, "stock"),
            (json!({"stock": 1_000_001}), unprocessable, "stock"),
            (json!({"stock": "3"}), unprocessable, "stock"),
            (json!({"stock": 1e20}), unprocessable, "stock"),
            (
                json!({"name": "Valid", "stock": -1}),
                unprocessable,
                "stock",
            ),
            (
                json!({"name": "Valid", "category": "nope"}),
                unprocessable,
                "category",
            ),
            (json!("rename"), unprocessable, "body"),
            (json!(true), unprocessable, "body"),
        ];
        for (body, status, field) in cases {
            let response = app.update(Caller::Admin, &id, &body).await;
            assert_problem(response, status, field).await;
        }
        let path = format!("/items/{id}");
        let response = app
            .send_raw(Method::PUT, &path, "application/json", "{\"name\":")
            .await;
        assert_problem(response, StatusCode::BAD_REQUEST, "body").await;
        let response = app
            .send_raw(Method::PUT, &path, "text/plain", "{\"name\":\"x\"}")
            .await;
        assert_problem(response, StatusCode::UNSUPPORTED_MEDIA_TYPE, "content-type").await;
        for bad_id in [UNKNOWN_ID, "not-a-uuid"] {
            let response = app
                .update(Caller::Admin, bad_id, &json!({"name": "Ghost"}))
                .await;
            assert_status_problem(response, StatusCode::NOT_FOUND).await;
        }
        assert_unchanged(&app, &before, "a refused update").await;
    }
}

#[tokio::test]
async fn repricing_refuses_bad_prices_and_ids_and_changes_nothing() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(db.url()).await;
        let id = app.page("page_size=1").await.items.remove(0).id;
        let before = app.snapshot().await;
        let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
        let cases = [
            json!({"price_minor": 0}),
            json!({"price_minor": -1}),
            json!({"price_minor": 100_000_001}),
            json!({"price_minor": i64::MIN}),
            json!({"price_minor": 1e19}),
            json!({"price_minor": 9.99}),
            json!({"price_minor": "999"}),
            json!({"price_minor": null}),
            json!({}),
            json!({"price": 999}),
        ];
        for body in cases {
            let response = app.change_price(Caller::Admin, &id, &body).await;
            assert_problem(response, unprocessable, "price_minor").await;
        }
        let path = format!("/items/{id}/price");
        let response = app
            .send_raw(
                Method::PUT,
                &path,
                "application/json",
                "{\"price_minor\": 5",
            )
            .await;
        assert_problem(response, StatusCode::BAD_REQUEST, "body").await;
        let response = app
            .send_raw(Method::PUT, &path, "text/plain", "{\"price_minor\": 5}")
            .await;
        assert_problem(response, StatusCode::UNSUPPORTED_MEDIA_TYPE, "content-type").await;
        for bad_id in [UNKNOWN_ID, "not-a-uuid"] {
            let response = app
                .change_price(Caller::Admin, bad_id, &json!({"price_minor": 5}))
                .await;
            assert_status_problem(response, StatusCode::NOT_FOUND).await;
        }
        assert_unchanged(&app, &before, "a refused price change").await;
    }
}

#[tokio::test]
async fn deleting_unknown_ids_and_wrong_methods_change_nothing() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(db.url()).await;
        let before = app.snapshot().await;
        for bad_id in [UNKNOWN_ID, "not-a-uuid", "%27%3B--"] {
            let response = app.delete(Caller::Admin, bad_id).await;
            assert_status_problem(response, StatusCode::NOT_FOUND).await;
        }
        let response = app
            .send_json(Method::DELETE, "/items", Caller::Admin, &json!({}))
            .await;
        assert_status_problem(response, StatusCode::METHOD_NOT_ALLOWED).await;
        let response = app
            .send_json(Method::POST, "/categories", Caller::Admin, &json!({}))
            .await;
        assert_status_problem(response, StatusCode::METHOD_NOT_ALLOWED).await;
        let response = app
            .send_json(Method::POST, "/brands", Caller::Admin, &json!({}))
            .await;
        assert_status_problem(response, StatusCode::METHOD_NOT_ALLOWED).await;
        assert_unchanged(&app, &before, "a refused delete").await;
    }
}
