//! Admin writes: create, update, reprice, delete — and who may do them.

use reqwest::{StatusCode, header};
use serde_json::json;
use tideway_catalog_api::{Category, Item};

use crate::helpers::{Caller, assert_problem, assert_status_problem, new_item, spawn_app};

#[tokio::test]
async fn only_admins_create_items() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(db.url()).await;
        let before = app.snapshot().await;

        let response = app.create(Caller::Anonymous, &new_item("TEST-001")).await;
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
        assert_problem(response, StatusCode::UNAUTHORIZED, "authorization").await;
        let response = app.create(Caller::Customer, &new_item("TEST-001")).await;
        assert_status_problem(response, StatusCode::FORBIDDEN).await;
        let response = app
            .client
            .post(app.url("/items"))
            .bearer_auth("not.a.token")
            .json(&new_item("TEST-001"))
            .send()
            .await
            .unwrap();
        assert_problem(response, StatusCode::UNAUTHORIZED, "authorization").await;
        let response = app
            .client
            .post(app.url("/items"))
            .bearer_auth(app.tokens.expired("a", &["admin"]))
            .json(&new_item("TEST-001"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            app.snapshot().await,
            before,
            "refused requests change nothing"
        );

        let response = app.create(Caller::Admin, &new_item("TEST-001")).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let location = response.headers()[header::LOCATION]
            .to_str()
            .unwrap()
            .to_owned();
        let created: Item = response.json().await.unwrap();
        assert_eq!(location, format!("/api/v1/catalog/items/{}", created.id));
        assert_eq!(
            (
                created.sku.as_str(),
                created.name.as_str(),
                created.price_minor,
                created.stock
            ),
            ("TEST-001", "Test Pour-Over Stand", 2599, 12)
        );
        assert_eq!((created.version, created.currency.as_str()), (1, "EUR"));
        assert_eq!(created.created_at, created.updated_at);
        assert!(uuid::Uuid::parse_str(&created.id).is_ok());

        let fetched: Item = app
            .client
            .get(app.server.url(&location))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(fetched, created);
        let (items, _, _) = app.snapshot().await;
        assert_eq!(items.len(), before.0.len() + 1);
        let categories: Vec<Category> =
            serde_json::from_value(app.get_json("/categories").await).unwrap();
        let kitchen = categories.iter().find(|c| c.id == "kitchen").unwrap();
        let kitchen_before: Vec<Category> = serde_json::from_value(before.1.clone()).unwrap();
        let kitchen_before = kitchen_before.iter().find(|c| c.id == "kitchen").unwrap();
        assert_eq!(kitchen.item_count, kitchen_before.item_count + 1);
        let brands: Vec<String> = serde_json::from_value(app.get_json("/brands").await).unwrap();
        assert!(brands.contains(&"Test Works".to_owned()));

        // Optional fields take their defaults.
        let response = app
            .create(
                Caller::Admin,
                &json!({"sku": "TEST-002", "name": "Bare", "brand": "B", "category": "tea", "price_minor": 1}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let bare: Item = response.json().await.unwrap();
        assert_eq!(
            (
                bare.description.as_str(),
                bare.currency.as_str(),
                bare.stock
            ),
            ("", "EUR", 0)
        );
    }
}

#[tokio::test]
async fn a_duplicate_sku_is_a_conflict_and_changes_nothing() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(db.url()).await;
        let seeded = app.page("page_size=1").await.items.remove(0);
        let before = app.snapshot().await;
        let response = app.create(Caller::Admin, &new_item(&seeded.sku)).await;
        let problem = assert_status_problem(response, StatusCode::CONFLICT).await;
        assert!(problem["detail"].as_str().unwrap().contains(&seeded.sku));
        assert_eq!(app.snapshot().await, before);

        assert_eq!(
            app.create(Caller::Admin, &new_item("DUP-1")).await.status(),
            StatusCode::CREATED
        );
        let after_first = app.snapshot().await;
        let response = app.create(Caller::Admin, &new_item("DUP-1")).await;
        assert_status_problem(response, StatusCode::CONFLICT).await;
        assert_eq!(app.snapshot().await, after_first);
    }
}

#[tokio::test]
async fn admins_update_items_and_every_change_bumps_the_version() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(db.url()).await;
        let item = app.page("page_size=1").await.items.remove(0);
        let body = json!({"name": "  Renamed Beans  ", "stock": 0, "category": "tea"});

        let response = app.update(Caller::Anonymous, &item.id, &body).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let response = app.update(Caller::Customer, &item.id, &body).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(app.item(&item.id).await, item);

        let response = app.update(Caller::Admin, &item.id, &body).await;
        assert_eq!(response.status(), StatusCode::OK);
        let updated: Item = response.json().await.unwrap();
        assert_eq!(updated.name, "Renamed Beans", "trimmed");
        assert_eq!((updated.stock, updated.category.as_str()), (0, "tea"));
        assert_eq!(updated.version, item.version + 1);
        assert!(updated.updated_at > item.updated_at);
        assert_eq!(updated.created_at, item.created_at);
        assert_eq!(
            (updated.description.as_str(), updated.brand.as_str()),
            (item.description.as_str(), item.brand.as_str())
        );
        assert_eq!(updated.price_minor, item.price_minor);
        assert_eq!(app.item(&item.id).await, updated);

        let response = app
            .update(
                Caller::Admin,
                &item.id,
                &json!({"description": "New words.", "brand": "New Brand"}),
            )
            .await;
        let again: Item = response.json().await.unwrap();
        assert_eq!(again.version, item.version + 2);
        assert!(again.updated_at > updated.updated_at);
        assert_eq!(
            (
                again.description.as_str(),
                again.brand.as_str(),
                again.name.as_str()
            ),
            ("New words.", "New Brand", "Renamed Beans")
        );

        let response = app
            .update(Caller::Admin, "00000000-0000-4000-8000-000000000000", &body)
            .await;
        assert_status_problem(response, StatusCode::NOT_FOUND).await;
    }
}

#[tokio::test]
async fn admins_change_prices() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(db.url()).await;
        let item = app.page("page_size=1").await.items.remove(0);
        let body = json!({"price_minor": 4321});

        assert_eq!(
            app.change_price(Caller::Anonymous, &item.id, &body)
                .await
                .status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            app.change_price(Caller::Customer, &item.id, &body)
                .await
                .status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(app.item(&item.id).await, item);

        let response = app.change_price(Caller::Admin, &item.id, &body).await;
        assert_eq!(response.status(), StatusCode::OK);
        let changed: Item = response.json().await.unwrap();
        assert_eq!(changed.price_minor, 4321);
        assert_eq!(changed.version, item.version + 1);
        assert!(changed.updated_at > item.updated_at);
        assert_eq!(
            Item {
                price_minor: item.price_minor,
                version: item.version,
                updated_at: item.updated_at.clone(),
                ..changed.clone()
            },
            item
        );
        assert_eq!(app.item(&item.id).await, changed);

        // Setting the same price is still a change of record.
        let response = app.change_price(Caller::Admin, &item.id, &body).await;
        let same: Item = response.json().await.unwrap();
        assert_eq!(same.version, item.version + 2);

        for price in [1, 100_000_000] {
            let response = app
                .change_price(Caller::Admin, &item.id, &json!({"price_minor": price}))
                .await;
            assert_eq!(
                response.status(),
                StatusCode::OK,
                "{price} is within bounds"
            );
        }
        let response = app
            .change_price(Caller::Admin, "00000000-0000-4000-8000-000000000000", &body)
            .await;
        assert_status_problem(response, StatusCode::NOT_FOUND).await;
    }
}

#[tokio::test]
async fn admins_delete_items() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(db.url()).await;
        let item = app.page("page_size=1").await.items.remove(0);
        let total = app.page("").await.total;

        assert_eq!(
            app.delete(Caller::Anonymous, &item.id).await.status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            app.delete(Caller::Customer, &item.id).await.status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(app.page("").await.total, total);

        let response = app.delete(Caller::Admin, &item.id).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert!(response.bytes().await.unwrap().is_empty());
        assert_eq!(
            app.get(&format!("/items/{}", item.id)).await.status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(app.page("").await.total, total - 1);

        let response = app.delete(Caller::Admin, &item.id).await;
        assert_status_problem(response, StatusCode::NOT_FOUND).await;
        let response = app.delete(Caller::Admin, "not-an-id").await;
        assert_status_problem(response, StatusCode::NOT_FOUND).await;
        assert_eq!(app.page("").await.total, total - 1);

        // The SKU is free again.
        let response = app.create(Caller::Admin, &new_item(&item.sku)).await;
        assert_eq!(response.status(), StatusCode::CREATED);
    }
}

#[tokio::test]
async fn concurrent_changes_all_succeed_and_each_bumps_the_version_once() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(db.url()).await;
        let item = app.page("page_size=1").await.items.remove(0);
        let backend = db.backend();
        let token = app.admin_token();
        let mut changes = tokio::task::JoinSet::new();
        for n in 0..12_i64 {
            let request = if n % 2 == 0 {
                app.client
                    .put(app.url(&format!("/items/{}/price", item.id)))
                    .json(&json!({"price_minor": 1000 + n}))
            } else {
                app.client
                    .put(app.url(&format!("/items/{}", item.id)))
                    .json(&json!({"stock": n}))
            };
            let request = request.bearer_auth(&token);
            changes.spawn(async move {
                let response = request.send().await.unwrap();
                assert_eq!(
                    response.status(),
                    StatusCode::OK,
                    "change {n} on {backend:?}"
                );
                response.json::<Item>().await.unwrap().version
            });
        }
        let mut creates = tokio::task::JoinSet::new();
        for n in 0..6 {
            let request = app
                .client
                .post(app.url("/items"))
                .bearer_auth(&token)
                .json(&new_item(&format!("RACE-{n}")));
            creates.spawn(async move { request.send().await.unwrap().status() });
        }
        let mut versions = changes.join_all().await;
        assert!(
            creates
                .join_all()
                .await
                .iter()
                .all(|s| *s == StatusCode::CREATED),
            "every concurrent create succeeds on {backend:?}"
        );
        versions.sort_unstable();
        let expected: Vec<i64> = (item.version + 1..=item.version + 12).collect();
        assert_eq!(versions, expected, "each change saw a distinct version");
        let last = app.item(&item.id).await;
        assert_eq!(last.version, item.version + 12);
        assert_eq!(app.page("q=Test%20Pour-Over&page_size=100").await.total, 6);
    }
}
