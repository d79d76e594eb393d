//! Browsing: pages, filters, search, sorting, item detail.

use std::collections::HashSet;

use reqwest::StatusCode;
use tideway_catalog_api::{Category, Item};

use crate::helpers::{assert_status_problem, spawn_app};

fn ids(items: &[Item]) -> Vec<&str> {
    items.iter().map(|i| i.id.as_str()).collect()
}

#[tokio::test]
async fn pages_cover_every_item_exactly_once() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(db.url()).await;
        let first = app.page("").await;
        assert_eq!((first.page, first.page_size), (1, 20), "defaults");
        assert_eq!(first.items.len(), 20);
        let total = first.total;

        for sort in ["name", "price_asc", "price_desc", "newest"] {
            let mut seen = Vec::new();
            let mut page_number = 1;
            loop {
                let page = app
                    .page(&format!("page={page_number}&page_size=7&sort={sort}"))
                    .await;
                assert_eq!(page.total, total);
                assert_eq!((page.page, page.page_size), (page_number, 7));
                if page.items.is_empty() {
                    break;
                }
                assert!(page.items.len() <= 7);
                seen.extend(page.items.into_iter().map(|i| i.id));
                page_number += 1;
            }
            assert_eq!(seen.len() as u64, total, "{sort}");
            let unique: HashSet<_> = seen.iter().collect();
            assert_eq!(unique.len(), seen.len(), "{sort}: no item twice");
            assert_eq!(page_number - 1, total.div_ceil(7) as u32);
        }

        let beyond = app.page("page=1000").await;
        assert!(beyond.items.is_empty());
        assert_eq!(beyond.total, total);
        let whole = app.page("page_size=100").await;
        assert_eq!(whole.items.len() as u64, total);
    }
}

#[tokio::test]
async fn each_filter_selects_exactly_the_matching_items() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(db.url()).await;
        let all = app.all_items().await;
        let expect = |pred: &dyn Fn(&Item) -> bool| -> HashSet<String> {
            all.iter()
                .filter(|i| pred(i))
                .map(|i| i.id.clone())
                .collect()
        };
        let got = |page: tideway_catalog_api::ItemPage| -> HashSet<String> {
            assert_eq!(
                page.items.len() as u64,
                page.total,
                "one page holds all matches"
            );
            page.items.into_iter().map(|i| i.id).collect()
        };

        let categories: Vec<Category> =
            serde_json::from_value(app.get_json("/categories").await).unwrap();
        for category in &categories {
            let page = app
                .page(&format!("category={}&page_size=100", category.id))
                .await;
            assert_eq!(page.total, category.item_count);
            assert_eq!(
                got(page),
                expect(&|i| i.category == category.id),
                "{}",
                category.id
            );
        }
        assert_eq!(app.page("category=nothing-here").await.total, 0);

        let brand = "Tidal Roasters";
        let page = app.page("brand=tidal%20roasters&page_size=100").await;
        let matched = got(page);
        assert!(matched.len() >= 3);
        assert_eq!(
            matched,
            expect(&|i| i.brand == brand),
            "brand, case-insensitively"
        );

        let page = app
            .page("min_price=2000&max_price=5000&page_size=100")
            .await;
        let matched = got(page);
        assert!(!matched.is_empty());
        assert_eq!(matched, expect(&|i| (2000..=5000).contains(&i.price_minor)));
        let page = app.page("min_price=30000&page_size=100").await;
        assert_eq!(got(page), expect(&|i| i.price_minor >= 30000));
        let page = app.page("max_price=1000&page_size=100").await;
        assert_eq!(got(page), expect(&|i| i.price_minor <= 1000));
        let page = app
            .page("min_price=1450&max_price=1450&page_size=100")
            .await;
        assert_eq!(got(page), expect(&|i| i.price_minor == 1450));

        let page = app
            .page("category=coffee&brand=Tidal%20Roasters&max_price=1500&page_size=100")
            .await;
        let matched = got(page);
        assert!(!matched.is_empty());
        assert_eq!(
            matched,
            expect(&|i| i.category == "coffee" && i.brand == brand && i.price_minor <= 1500),
            "filters combine"
        );
    }
}

#[tokio::test]
async fn search_is_case_insensitive_on_name_and_description() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(db.url()).await;
        let all = app.all_items().await;
        let contains = |i: &Item, needle: &str| {
            i.name.to_lowercase().contains(needle) || i.description.to_lowercase().contains(needle)
        };
        for q in ["ESPRESSO", "espresso", "Tea", "walnut", "sleep"] {
            let page = app.page(&format!("q={q}&page_size=100")).await;
            let needle = q.to_lowercase();
            let expected: HashSet<_> = all
                .iter()
                .filter(|i| contains(i, &needle))
                .map(|i| &i.id)
                .collect();
            let got: HashSet<_> = page.items.iter().map(|i| &i.id).collect();
            assert!(!expected.is_empty(), "{q}");
            assert_eq!(got, expected, "{q}");
            assert_eq!(page.total as usize, expected.len());
        }
        // A word only in descriptions, and one only in a name.
        let page = app.page("q=bergamot&page_size=100").await;
        assert!(
            page.items
                .iter()
                .any(|i| !i.name.to_lowercase().contains("bergamot"))
        );
        // Wildcards are literal.
        assert_eq!(
            app.page("q=%25").await.total,
            0,
            "% matches only a literal %"
        );
        assert_eq!(app.page("q=_").await.total, 0, "_ matches only a literal _");
        assert_eq!(app.page("q=zzzz-nothing").await.total, 0);
        // Combined with a filter.
        let page = app.page("q=coffee&category=books&page_size=100").await;
        assert!(page.total >= 1);
        assert!(
            page.items
                .iter()
                .all(|i| i.category == "books" && contains(i, "coffee"))
        );
    }
}

#[tokio::test]
async fn every_sort_order_is_actually_sorted() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(db.url()).await;
        let by = |sort: &str| {
            let app = &app;
            let sort = sort.to_owned();
            async move { app.page(&format!("sort={sort}&page_size=100")).await.items }
        };
        let default = app.page("page_size=100").await.items;
        let name = by("name").await;
        assert_eq!(ids(&default), ids(&name), "name is the default");
        assert!(
            name.windows(2)
                .all(|w| (w[0].name.to_lowercase(), &w[0].id)
                    <= (w[1].name.to_lowercase(), &w[1].id))
        );

        let asc = by("price_asc").await;
        assert!(
            asc.windows(2)
                .all(|w| (w[0].price_minor, &w[0].id) <= (w[1].price_minor, &w[1].id))
        );
        let desc = by("price_desc").await;
        assert!(desc.windows(2).all(|w| w[0].price_minor > w[1].price_minor
            || (w[0].price_minor == w[1].price_minor && w[0].id < w[1].id)));
        assert!(asc[0].price_minor < desc[0].price_minor);

        let newest = by("newest").await;
        assert!(newest.windows(2).all(|w| w[0].created_at > w[1].created_at
            || (w[0].created_at == w[1].created_at && w[0].id < w[1].id)));
        assert_ne!(ids(&newest), ids(&name));
        assert_eq!(newest.len(), name.len());
    }
}

#[tokio::test]
async fn an_item_is_found_by_id_and_unknown_or_malformed_ids_are_404() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(db.url()).await;
        let listed = app
            .page("sort=price_desc&page_size=1")
            .await
            .items
            .remove(0);
        assert_eq!(app.item(&listed.id).await, listed);

        for id in [
            "00000000-0000-4000-8000-000000000000",
            "not-a-uuid",
            "%20",
            "1",
        ] {
            let problem = assert_status_problem(
                app.get(&format!("/items/{id}")).await,
                StatusCode::NOT_FOUND,
            )
            .await;
            assert_eq!(problem["type"], "/problems/not-found");
        }
        let response = app.get("/items/").await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }
}
