//! Listing and showing orders: only the buyer's (or an admin's), newest first, paged.

use serde_json::json;
use tideway_ordering::Snapshot;
use tideway_ordering_api::{OrderPage, OrderStatus};
use tideway_payment_api::DECLINED_CARD;

use crate::helpers::{config, spawn_app};

#[tokio::test]
async fn buyers_see_their_orders_newest_first_and_no_one_elses() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(config(db.url())).await;
        let alice = app.token("alice");
        let bob = app.token("bob");
        let admin = app.token_with("root", &["admin"]);

        let first = app.checkout_to_end(&alice, None).await;
        let second = app
            .checkout_to_end(&alice, Some(json!({"card": DECLINED_CARD})))
            .await;
        let third = app.checkout_to_end(&alice, None).await;
        let bobs = app.checkout_to_end(&bob, None).await;

        let page: OrderPage =
            serde_json::from_value(app.get(&alice, "/api/v1/ordering/orders").await.body).unwrap();
        assert_eq!((page.page, page.page_size, page.total), (1, 20, 3));
        let ids: Vec<&str> = page.items.iter().map(|o| o.id.as_str()).collect();
        assert_eq!(
            ids,
            [third.id.as_str(), second.id.as_str(), first.id.as_str()]
        );
        assert!(
            page.items
                .iter()
                .all(|o| o.timeline.is_empty() && o.lines.len() == 2)
        );
        assert_eq!(page.items[1].status, OrderStatus::Cancelled);

        let reply = app
            .get(&alice, "/api/v1/ordering/orders?page=2&page_size=2")
            .await;
        let page: OrderPage = serde_json::from_value(reply.body).unwrap();
        assert_eq!((page.page, page.page_size, page.total), (2, 2, 3));
        assert_eq!(page.items.len(), 1);
        assert_eq!(page.items[0].id, first.id);
        let page: OrderPage =
            serde_json::from_value(app.get(&bob, "/api/v1/ordering/orders").await.body).unwrap();
        assert_eq!(page.total, 1);
        assert_eq!(page.items[0].id, bobs.id);

        // Bad paging.
        for (query, field) in [
            ("page=0", "page"),
            ("page=-1", "page"),
            ("page=x", "page"),
            ("page=1000001", "page"),
            ("page_size=0", "page_size"),
            ("page_size=101", "page_size"),
            ("page_size=1.5", "page_size"),
        ] {
            let reply = app
                .get(&alice, &format!("/api/v1/ordering/orders?{query}"))
                .await;
            assert_eq!(
                (reply.status, reply.field()),
                (400, field),
                "{query}: {reply:?}"
            );
        }

        // One order: its buyer and admins; others and unknown ids get 404.
        let path = format!("/api/v1/ordering/orders/{}", first.id);
        assert_eq!(app.get(&bob, &path).await.status, 404);
        assert_eq!(app.get(&admin, &path).await.status, 200);
        assert_eq!(
            app.get(&alice, "/api/v1/ordering/orders/no-such-order")
                .await
                .status,
            404
        );
        let unauthorized = app.raw(reqwest::Method::GET, &path, None, &[], None).await;
        assert_eq!(
            (unauthorized.status, unauthorized.field()),
            (401, "authorization")
        );
        let unauthorized = app
            .raw(
                reqwest::Method::GET,
                "/api/v1/ordering/orders",
                None,
                &[],
                None,
            )
            .await;
        assert_eq!(unauthorized.status, 401);
        app.ordering.shutdown().await;
    }
}

#[tokio::test]
async fn a_snapshot_of_an_unreadable_database_is_an_error_not_an_empty_list() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(config(db.url())).await;
        let order = app.checkout_to_end(&app.token("alice"), None).await;
        let snapshot = app.ordering.snapshot().await.unwrap();
        assert_eq!(snapshot.orders.len(), 1);
        assert_eq!(snapshot.orders[0].id, order.id);
        assert_eq!(snapshot.orders[0].lines.len(), 2);

        app.ordering.db().close().await;
        assert!(app.ordering.snapshot().await.is_err());
        assert!(Snapshot::read(app.ordering.db()).await.is_err());
        app.ordering.shutdown().await;
    }
}
