//! The catalog's events: its read copy of stock follows the inventory's levels (newer
//! versions only, once per event), and every admin write is announced.

use reqwest::StatusCode;
use serde_json::json;
use tideway_bus::{Event, EventType as _};
use tideway_catalog_api::{ItemChanged, ItemCreated, ItemDeleted, PriceChanged};
use tideway_inventory_api::StockLevelChanged;

use crate::helpers::{Caller, TestApp, spawn_app};

fn level(item_id: &str, available: i64, version: i64) -> Event {
    Event::new(&StockLevelChanged {
        item_id: item_id.to_owned(),
        available,
        version,
    })
    .unwrap()
    .with_subject(item_id)
}

/// The next event of type `T`, skipping others.
async fn next_of<T: tideway_bus::EventType>(app: &TestApp) -> T {
    loop {
        let event = app.next_event().await;
        if event.is::<T>() {
            return event.decode().unwrap();
        }
    }
}

#[tokio::test]
async fn the_stock_copy_applies_only_newer_levels_once_and_says_sold_out() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(db.url()).await;
        let id = app.page("page_size=1").await.items.remove(0).id;

        // The bus delivers before publish returns (embedded): the copy is updated now.
        app.publish(&level(&id, 7, 5)).await;
        let item = app.item(&id).await;
        assert_eq!((item.stock, item.sold_out), (7, false));
        let changed: ItemChanged = next_of(&app).await;
        assert_eq!((changed.item_id.as_str(), changed.stock), (id.as_str(), 7));

        // Older or equal versions never move the copy back.
        app.publish(&level(&id, 100, 4)).await;
        app.publish(&level(&id, 100, 5)).await;
        assert_eq!(app.item(&id).await.stock, 7);

        // The same event twice has one effect (the inbox): the second is not applied even
        // though its version would be newer than the copy after a reset below.
        let last = level(&id, 0, 6);
        app.publish(&last).await;
        let item = app.item(&id).await;
        assert_eq!((item.stock, item.sold_out), (0, true));
        let _: ItemChanged = next_of(&app).await;
        sqlx::query("UPDATE items SET stock = 3, stock_version = 0 WHERE id = $1")
            .bind(&id)
            .execute(app.catalog.db().pool())
            .await
            .unwrap();
        app.publish(&last).await;
        let stock: i64 = sqlx::query_scalar("SELECT stock FROM items WHERE id = $1")
            .bind(&id)
            .fetch_one(app.catalog.db().pool())
            .await
            .unwrap();
        assert_eq!(stock, 3, "a redelivery is a no-op");

        // Lists show the same copy.
        app.publish(&level(&id, 0, 9)).await;
        let listed = app
            .all_items()
            .await
            .into_iter()
            .find(|i| i.id == id)
            .unwrap();
        assert!(listed.sold_out);

        // A level of an item the catalog does not have changes nothing and is acknowledged.
        app.publish(&level("no-such-item", 5, 1)).await;
    }
}

#[tokio::test]
async fn every_admin_write_is_announced() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(db.url()).await;
        let response = app
            .create(
                Caller::Admin,
                &json!({"sku": "EVT-1", "name": "Kettle", "brand": "Acme",
                        "category": "kitchen", "price_minor": 1999, "stock": 4}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let created: tideway_catalog_api::Item = response.json().await.unwrap();
        let event: ItemCreated = next_of(&app).await;
        assert_eq!(event.item, created);

        let response = app
            .update(Caller::Admin, &created.id, &json!({"name": "Kettle 2"}))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        let event: ItemChanged = next_of(&app).await;
        assert_eq!(
            (event.item_id.as_str(), event.version),
            (created.id.as_str(), 2)
        );

        let response = app
            .change_price(Caller::Admin, &created.id, &json!({"price_minor": 2500}))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        let event: PriceChanged = next_of(&app).await;
        assert_eq!((event.price_minor, event.version), (2500, 3));

        let response = app
            .send_json(
                reqwest::Method::DELETE,
                &format!("/items/{}", created.id),
                Caller::Admin,
                &json!({}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        let event: ItemDeleted = next_of(&app).await;
        assert_eq!(event.item_id, created.id);
        assert_eq!(
            tideway_catalog_api::changed_item(
                &Event::new(&event).unwrap().with_subject(&created.id)
            ),
            Some(created.id.clone())
        );

        // A refused write announces nothing: the next event is the next accepted write's.
        let response = app
            .change_price(Caller::Admin, "no-such-item", &json!({"price_minor": 1}))
            .await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert!(ItemCreated::SUBJECT.starts_with("tideway.catalog."));
    }
}
