//! ETags, Cache-Control and conditional requests.

use reqwest::{StatusCode, header};
use serde_json::json;

use crate::helpers::{Caller, TestApp, spawn_app};

async fn etag_of(app: &TestApp, path: &str) -> String {
    let response = app.get(path).await;
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    assert_eq!(
        response.headers()[header::CACHE_CONTROL],
        "public, max-age=30",
        "{path}"
    );
    let etag = response.headers()[header::ETAG]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2,
        "strong: {etag}"
    );
    etag
}

async fn conditional(app: &TestApp, path: &str, if_none_match: &str) -> reqwest::Response {
    app.client
        .get(app.url(path))
        .header(header::IF_NONE_MATCH, if_none_match)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn every_read_answers_an_etag_and_304_when_it_matches() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(db.url()).await;
        let id = app.page("page_size=1").await.items.remove(0).id;
        for path in [
            "/items".to_owned(),
            "/items?category=tea&sort=price_asc".to_owned(),
            format!("/items/{id}"),
            "/categories".to_owned(),
            "/brands".to_owned(),
        ] {
            let etag = etag_of(&app, &path).await;
            assert_eq!(etag_of(&app, &path).await, etag, "{path}: stable");

            let response = conditional(&app, &path, &etag).await;
            assert_eq!(response.status(), StatusCode::NOT_MODIFIED, "{path}");
            assert_eq!(response.headers()[header::ETAG], etag.as_str());
            assert_eq!(
                response.headers()[header::CACHE_CONTROL],
                "public, max-age=30"
            );
            assert!(
                response.bytes().await.unwrap().is_empty(),
                "{path}: no body"
            );

            let response = conditional(&app, &path, &format!("\"stale\", W/{etag}")).await;
            assert_eq!(
                response.status(),
                StatusCode::NOT_MODIFIED,
                "{path}: lists and weak tags"
            );

            let response = conditional(&app, &path, "\"stale\"").await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert!(!response.bytes().await.unwrap().is_empty());
        }
        // Different representations have different tags.
        assert_ne!(
            etag_of(&app, "/items?page=1").await,
            etag_of(&app, "/items?page=2").await
        );
    }
}

#[tokio::test]
async fn a_price_change_changes_the_etags_of_the_item_and_its_pages() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(db.url()).await;
        let item = app.page("sort=price_asc&page_size=1").await.items.remove(0);
        let path = format!("/items/{}", item.id);
        let item_tag = etag_of(&app, &path).await;
        let list_tag = etag_of(&app, "/items?sort=price_asc").await;
        let categories_tag = etag_of(&app, "/categories").await;

        let response = app
            .change_price(
                Caller::Admin,
                &item.id,
                &json!({"price_minor": item.price_minor + 1}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);

        let new_tag = etag_of(&app, &path).await;
        assert_ne!(new_tag, item_tag);
        let response = conditional(&app, &path, &item_tag).await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "the old tag no longer matches"
        );
        let body: tideway_catalog_api::Item = response.json().await.unwrap();
        assert_eq!(body.price_minor, item.price_minor + 1);
        assert_eq!(
            conditional(&app, &path, &new_tag).await.status(),
            StatusCode::NOT_MODIFIED
        );

        assert_ne!(etag_of(&app, "/items?sort=price_asc").await, list_tag);
        assert_eq!(
            etag_of(&app, "/categories").await,
            categories_tag,
            "counts did not change"
        );
    }
}
