//! The demo catalog: realistic, deterministic and seeded once however many builds race.

use std::collections::{HashMap, HashSet};

use tideway_catalog::{Config, seed};
use tideway_catalog_api::Category;

use crate::helpers::{spawn_app, spawn_with};

#[tokio::test]
async fn a_fresh_catalog_is_seeded_with_a_realistic_catalog() {
    let mut ids_by_backend = Vec::new();
    for db in tideway_testkit::backends().await {
        let app = spawn_app(db.url()).await;
        let items = app.all_items().await;
        assert!(items.len() >= 60, "{} items", items.len());
        assert_eq!(items.len(), seed::ITEMS.len());
        assert_eq!(app.page("").await.total, items.len() as u64);

        let categories: Vec<Category> =
            serde_json::from_value(app.get_json("/categories").await).unwrap();
        assert!(categories.len() >= 6);
        assert!(
            categories.iter().all(|c| c.item_count >= 5),
            "{categories:?}"
        );
        let counted: u64 = categories.iter().map(|c| c.item_count).sum();
        assert_eq!(counted, items.len() as u64);
        for category in &categories {
            let in_category = items.iter().filter(|i| i.category == category.id).count();
            assert_eq!(in_category as u64, category.item_count, "{}", category.id);
        }

        let brands: Vec<String> = serde_json::from_value(app.get_json("/brands").await).unwrap();
        let distinct: HashSet<&str> = items.iter().map(|i| i.brand.as_str()).collect();
        assert_eq!(brands.len(), distinct.len());
        assert!(brands.len() >= 10);

        assert!(items.iter().filter(|i| i.stock == 0).count() >= 3);
        assert!(items.iter().filter(|i| (1..=5).contains(&i.stock)).count() >= 3);
        let prices: HashSet<i64> = items.iter().map(|i| i.price_minor).collect();
        assert!(prices.len() >= 40, "prices vary");
        for item in &items {
            assert_eq!(item.currency, "EUR");
            assert_eq!(item.version, 1);
            assert!(!item.description.is_empty() && !item.brand.is_empty());
            assert!(item.price_minor > 0 && (0..=200).contains(&item.stock));
            assert_eq!(item.id, seed::item_id(&item.sku), "ids derive from SKUs");
        }
        let ids: HashMap<String, String> = items.into_iter().map(|i| (i.sku, i.id)).collect();
        ids_by_backend.push(ids);
    }
    assert!(
        ids_by_backend.windows(2).all(|w| w[0] == w[1]),
        "every database gives an item the same id"
    );
}

#[tokio::test]
async fn seeding_is_idempotent_across_concurrent_and_later_builds() {
    for db in tideway_testkit::backends().await {
        let (a, b) = tokio::join!(spawn_app(db.url()), spawn_app(db.url()));
        let first = a.all_items().await;
        assert_eq!(first.len(), seed::ITEMS.len(), "{:?}", db.backend());
        assert_eq!(b.all_items().await, first);
        let categories = a.get_json("/categories").await;
        drop((a, b));

        let again = spawn_app(db.url()).await;
        assert_eq!(again.all_items().await, first);
        assert_eq!(again.get_json("/categories").await, categories);
    }
}

#[tokio::test]
async fn an_emptied_catalog_is_not_reseeded_and_seed_false_seeds_nothing() {
    for db in tideway_testkit::backends().await {
        let unseeded = spawn_with(&Config {
            database_url: db.url().parse().expect("a test database URL"),
            seed: false,
            ..Config::default()
        })
        .await;
        assert_eq!(unseeded.page("").await.total, 0);
        let categories: Vec<Category> =
            serde_json::from_value(unseeded.get_json("/categories").await).unwrap();
        assert_eq!(
            categories.len(),
            seed::CATEGORIES.len(),
            "categories always exist"
        );
        assert!(categories.iter().all(|c| c.item_count == 0));
        drop(unseeded);

        let seeded = spawn_app(db.url()).await;
        let total = seeded.page("").await.total;
        assert_eq!(total, seed::ITEMS.len() as u64);
        let one = seeded.page("page_size=1").await.items.remove(0);
        let response = seeded.delete(crate::helpers::Caller::Admin, &one.id).await;
        assert_eq!(response.status(), 204);
        drop(seeded);

        // A catalog that still has items is left alone: the deleted item stays deleted.
        let later = spawn_app(db.url()).await;
        assert_eq!(later.page("").await.total, total - 1);
        assert_eq!(later.get(&format!("/items/{}", one.id)).await.status(), 404);
    }
}
