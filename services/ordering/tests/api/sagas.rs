//! The operations console's listing of checkout sagas: admins only, newest first, each with
//! its steps and its order's status.

use serde_json::json;
use tideway_ordering::{AUTHORIZE_PAYMENT, RESERVE_STOCK, SAGA};
use tideway_ordering_api::{OrderStatus, SagaPage};
use tideway_payment_api::DECLINED_CARD;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use crate::helpers::{config, spawn_app};

const PATH: &str = "/api/v1/ordering/sagas";

#[tokio::test]
async fn admins_see_the_newest_sagas_first_with_their_steps_and_orders() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(config(db.url())).await;
        let alice = app.token("alice");
        let bob = app.token("bob");
        let admin = app.token_with("root", &["admin"]);

        let empty: SagaPage = serde_json::from_value(app.get(&admin, PATH).await.body).unwrap();
        assert_eq!((empty.items.len(), empty.limit), (0, 20));

        let mut orders = Vec::new();
        for (token, body) in [
            (&alice, None),
            (&bob, Some(json!({"card": DECLINED_CARD}))),
            (&alice, None),
        ] {
            let id = app.checkout(token, body).await.order_id();
            // The order is confirmed or cancelled, and its saga has ended (capture or
            // compensation comes after the order's own change).
            app.log.wait_terminal(&id).await;
            orders.push(app.finished(token, &id).await);
        }

        let reply = app.get(&admin, PATH).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        let page: SagaPage = serde_json::from_value(reply.body).unwrap();
        assert_eq!(page.limit, 20);
        let ids: Vec<&str> = page.items.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, [&*orders[2].id, &*orders[1].id, &*orders[0].id]);
        for (saga, order) in page.items.iter().zip(orders.iter().rev()) {
            assert_eq!(saga.saga, SAGA);
            assert_eq!(saga.order_status, Some(order.status));
            assert_eq!(saga.trace_id.as_deref(), Some(&*order.trace_id));
            assert_eq!(saga.steps, order.timeline, "the order's own timeline");
            assert_eq!((saga.current_step.as_deref(), saga.waiting), (None, false));
            let created = OffsetDateTime::parse(&saga.created_at, &Rfc3339).unwrap();
            let updated = OffsetDateTime::parse(&saga.updated_at, &Rfc3339).unwrap();
            assert!(created <= updated, "{saga:?}");
        }
        let confirmed = &page.items[0];
        assert_eq!(
            (confirmed.status.as_str(), confirmed.reason.as_deref()),
            ("completed", None)
        );
        assert_eq!(confirmed.order_status, Some(OrderStatus::Confirmed));
        let declined = &page.items[1];
        assert_eq!(declined.status, "compensated");
        assert_eq!(declined.order_status, Some(OrderStatus::Cancelled));
        assert_eq!(
            declined.reason.as_deref(),
            Some("payment declined: card declined")
        );
        let steps: Vec<(&str, &str, &str)> = declined
            .steps
            .iter()
            .map(|e| (e.step.as_str(), e.kind.as_str(), e.status.as_str()))
            .collect();
        assert_eq!(
            steps,
            [
                (RESERVE_STOCK, "action", "done"),
                (AUTHORIZE_PAYMENT, "action", "failed"),
                (RESERVE_STOCK, "compensation", "done"),
            ]
        );

        // A smaller page keeps the newest.
        let page: SagaPage =
            serde_json::from_value(app.get(&admin, &format!("{PATH}?limit=2")).await.body).unwrap();
        assert_eq!(page.limit, 2);
        let ids: Vec<&str> = page.items.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, [&*orders[2].id, &*orders[1].id]);
        app.ordering.shutdown().await;
    }
}

#[tokio::test]
async fn only_admins_may_list_sagas_and_a_bad_limit_is_named() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(config(db.url())).await;
        let alice = app.token("alice");
        let admin = app.token_with("root", &["admin"]);

        let forbidden = app.get(&alice, PATH).await;
        assert_eq!(forbidden.status, 403, "{forbidden:?}");
        assert_eq!(
            forbidden.headers["content-type"],
            "application/problem+json"
        );
        assert_eq!(forbidden.body["status"], 403);
        let unauthorized = app.raw(reqwest::Method::GET, PATH, None, &[], None).await;
        assert_eq!(
            (unauthorized.status, unauthorized.field()),
            (401, "authorization")
        );

        for query in ["limit=0", "limit=-1", "limit=101", "limit=x", "limit=1.5"] {
            let reply = app.get(&admin, &format!("{PATH}?{query}")).await;
            assert_eq!(
                (reply.status, reply.field()),
                (400, "limit"),
                "{query}: {reply:?}"
            );
            assert_eq!(
                reply.headers["content-type"], "application/problem+json",
                "{query}"
            );
        }
        // A customer learns nothing of the query either.
        assert_eq!(
            app.get(&alice, &format!("{PATH}?limit=0")).await.status,
            403
        );
        let reply = app.get(&admin, &format!("{PATH}?limit=100")).await;
        assert_eq!(
            (reply.status, reply.body["limit"].as_u64()),
            (200, Some(100))
        );
        app.ordering.shutdown().await;
    }
}
