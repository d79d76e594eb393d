//! The admin endpoints: who may read, unknown orders, the list and its limit.

use reqwest::StatusCode;
use serde_json::Value;
use tideway_payment::Snapshot;
use tideway_payment_api::{PaymentStatus, PaymentView};
use tideway_runtime::auth::ADMIN_ROLE;
use tideway_testkit::backends;

use crate::helpers::{order, spawn_app};

#[tokio::test]
async fn only_admins_read_payments() {
    for db in backends().await {
        let app = spawn_app(db.url()).await;
        let (order_id, authorized) = app.authorized_order(1999).await;
        let path = format!("/payments/{order_id}");

        let view: PaymentView = serde_json::from_value(app.admin_json(&path).await).unwrap();
        assert_eq!(view.payment_id, authorized.payment_id);
        assert_eq!(view.status, PaymentStatus::Authorized);
        assert_eq!(view.amount_minor, 1999);
        assert_eq!(view.card_last4, "4242");

        for path in [path.as_str(), "/payments"] {
            let anonymous = app.get_as(path, None).await;
            assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED, "{path}");
            let customer = app.get_as(path, Some(&["customer"])).await;
            assert_eq!(customer.status(), StatusCode::FORBIDDEN, "{path}");
            let problem: Value = customer.json().await.unwrap();
            assert_eq!(problem["status"], 403);
        }

        let unknown = app
            .get_as(&format!("/payments/{}", order()), Some(&[ADMIN_ROLE]))
            .await;
        assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            unknown.headers()["content-type"],
            "application/problem+json"
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn the_list_is_newest_first_and_limited() {
    for db in backends().await {
        let app = spawn_app(db.url()).await;
        let mut orders = Vec::new();
        for amount in 1..=3 {
            orders.push(app.authorized_order(amount).await.0);
        }
        let listed: Vec<PaymentView> =
            serde_json::from_value(app.admin_json("/payments").await).unwrap();
        let ids: Vec<&str> = listed.iter().map(|p| p.order_id.as_str()).collect();
        assert_eq!(ids, [&orders[2], &orders[1], &orders[0]]);

        let two: Vec<PaymentView> =
            serde_json::from_value(app.admin_json("/payments?limit=2").await).unwrap();
        assert_eq!(two.len(), 2);
        assert_eq!(two[0].order_id, orders[2]);
        let hundred: Vec<PaymentView> =
            serde_json::from_value(app.admin_json("/payments?limit=100").await).unwrap();
        assert_eq!(hundred.len(), 3);

        for bad in ["0", "-1", "101", "abc", "1.5", "99999999999999999999"] {
            let response = app
                .get_as(&format!("/payments?limit={bad}"), Some(&[ADMIN_ROLE]))
                .await;
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "limit={bad}");
            let problem: Value = response.json().await.unwrap();
            assert_eq!(problem["invalid-params"][0]["name"], "limit", "limit={bad}");
        }
        // Refused reads changed nothing.
        assert_eq!(app.payment.snapshot().await.unwrap().payments.len(), 3);
        app.stop().await;
    }
}

#[tokio::test]
async fn a_snapshot_of_an_unreadable_database_is_an_error_not_an_empty_list() {
    for db in backends().await {
        let app = spawn_app(db.url()).await;
        let (order_id, _) = app.authorized_order(1999).await;
        let snapshot = app.payment.snapshot().await.unwrap();
        assert_eq!(snapshot.payments.len(), 1);
        assert_eq!(snapshot.payments[0].order_id, order_id);
        assert_eq!(snapshot.payments[0].status, PaymentStatus::Authorized);

        app.payment.db().close().await;
        assert!(app.payment.snapshot().await.is_err());
        assert!(Snapshot::read(app.payment.db()).await.is_err());
        app.stop().await;
    }
}
