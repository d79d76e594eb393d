//! ETags, Cache-Control and conditional requests.

use reqwest::{StatusCode, header};
use serde_json::json;

use crate::helpers::{Caller, TestApp, spawn_app};

async fn etag_of(app: &TestApp, path: &str) -> String {
    let response = app.get(path).await;
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    assert_eq!(
        response.headers()[header::CACHE_CONTROL],
        "public, max-age=30, stale-while-revalidate=30, stale-if-error=300",
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
                "public, max-age=30, stale-while-revalidate=30, stale-if-error=300"
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

/// The value of the counter `name{cache="…"}` on the service's `/metrics`.
async fn counter(app: &TestApp, name: &str, cache: &str) -> u64 {
    let text = app
        .client
        .get(app.server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series = format!("{name}{{cache=\"{cache}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&series))
        .map_or(0, |value| value.trim().parse().unwrap())
}

#[tokio::test]
async fn a_hundred_concurrent_reads_of_a_cold_item_load_it_once() {
    for db in tideway_testkit::backends().await {
        let app = std::sync::Arc::new(spawn_app(db.url()).await);
        let id = app.page("page_size=1").await.items.remove(0).id;
        let misses = counter(&app, "tideway_cache_misses_total", "catalog_item").await;
        let hits = counter(&app, "tideway_cache_hits_total", "catalog_item").await;
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(100));
        let mut reads = tokio::task::JoinSet::new();
        for _ in 0..100 {
            let (app, id, barrier) = (app.clone(), id.clone(), barrier.clone());
            reads.spawn(async move {
                barrier.wait().await;
                app.get(&format!("/items/{id}")).await.status()
            });
        }
        while let Some(status) = reads.join_next().await {
            assert_eq!(status.unwrap(), StatusCode::OK);
        }
        let loads = counter(&app, "tideway_cache_misses_total", "catalog_item").await - misses;
        let served = counter(&app, "tideway_cache_hits_total", "catalog_item").await - hits;
        assert_eq!(loads, 1, "one database load for 100 concurrent misses");
        assert_eq!(served, 99);
    }
}

#[tokio::test]
async fn writes_and_the_catalogs_events_invalidate_cached_reads() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(db.url()).await;
        let id = app.page("page_size=1").await.items.remove(0).id;
        let before = app.item(&id).await;
        let list = app.page("page_size=100").await;
        assert!(list.items.iter().any(|i| i.id == id));

        // This replica's own write: visible at once.
        let response = app
            .change_price(Caller::Admin, &id, &json!({"price_minor": 4242}))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(app.item(&id).await.price_minor, 4242);
        let listed = app.page("page_size=100").await;
        assert_eq!(
            listed
                .items
                .iter()
                .find(|i| i.id == id)
                .unwrap()
                .price_minor,
            4242
        );

        // Another replica's write reaches this one as an event: the cached answer goes.
        // (This replica's own events have been handled first, and the item read again.)
        app.drained().await;
        assert_eq!(app.item(&id).await.price_minor, 4242);
        sqlx::query("UPDATE items SET name = 'Renamed elsewhere' WHERE id = $1")
            .bind(&id)
            .execute(app.catalog.db().pool())
            .await
            .unwrap();
        assert_eq!(app.item(&id).await.name, before.name, "still cached");
        let event = tideway_bus::Event::new(&tideway_catalog_api::ItemChanged {
            item_id: id.clone(),
            version: before.version + 2,
            stock: before.stock,
        })
        .unwrap()
        .with_subject(&id);
        app.publish(&event).await;
        assert_eq!(app.item(&id).await.name, "Renamed elsewhere");

        // A deleted item's 404 is cached too, and a created one is found at once.
        let missing = "0190a0a0-0000-7000-8000-000000000000";
        assert_eq!(app.get(&format!("/items/{missing}")).await.status(), 404);
        assert_eq!(app.get(&format!("/items/{missing}")).await.status(), 404);
    }
}
