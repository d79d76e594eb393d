//! Void: an authorization is voided, a capture refunded, nothing is "voided" as nothing and
//! blocks a late authorization.

use tideway_payment_api::{APPROVED_CARD, PaymentStatus, PaymentVoided};
use tideway_testkit::backends;

use crate::helpers::{Reply, capture, order, spawn_app, void};

#[tokio::test]
async fn void_after_authorize_voids_the_hold() {
    for db in backends().await {
        let app = spawn_app(db.url()).await;
        let (order_id, _) = app.authorized_order(1500).await;
        app.send(&void(&order_id)).await;
        assert_eq!(
            app.reply(&order_id, 2).await,
            Reply::Voided(PaymentVoided {
                order_id: order_id.clone(),
                status: Some(PaymentStatus::Voided),
            })
        );
        assert_eq!(
            app.stored(&order_id).await.unwrap().status,
            PaymentStatus::Voided
        );
        assert_eq!(app.ledger(&order_id, "void").await, 1);
        assert_eq!(app.ledger(&order_id, "refund").await, 0);
        // A voided payment is never captured.
        app.send(&capture(&order_id)).await;
        app.settled().await;
        assert_eq!(app.replies(&order_id, 2).await.len(), 2);
        assert_eq!(app.ledger(&order_id, "capture").await, 0);
        app.stop().await;
    }
}

#[tokio::test]
async fn void_after_capture_refunds() {
    for db in backends().await {
        let app = spawn_app(db.url()).await;
        let (order_id, _) = app.authorized_order(1500).await;
        app.send(&capture(&order_id)).await;
        assert!(matches!(app.reply(&order_id, 2).await, Reply::Captured(_)));
        app.send(&void(&order_id)).await;
        let refunded = Reply::Voided(PaymentVoided {
            order_id: order_id.clone(),
            status: Some(PaymentStatus::Refunded),
        });
        assert_eq!(app.reply(&order_id, 3).await, refunded);
        assert_eq!(
            app.stored(&order_id).await.unwrap().status,
            PaymentStatus::Refunded
        );
        assert_eq!(app.ledger(&order_id, "refund").await, 1);
        // Voiding again (a new key) answers the final state; nothing more is refunded.
        let mut again = void(&order_id);
        again.idempotency_key.push_str(":again");
        app.send(&again).await;
        assert_eq!(app.reply(&order_id, 4).await, refunded);
        assert_eq!(app.ledger(&order_id, "refund").await, 1);
        app.stop().await;
    }
}

#[tokio::test]
async fn void_without_a_payment_answers_none_and_declines_a_late_authorization() {
    for db in backends().await {
        let app = spawn_app(db.url()).await;
        let order_id = order();
        app.send(&void(&order_id)).await;
        assert_eq!(
            app.reply(&order_id, 1).await,
            Reply::Voided(PaymentVoided {
                order_id: order_id.clone(),
                status: None,
            })
        );
        assert!(app.stored(&order_id).await.is_none());
        // The authorization it compensated arrives late: it must not hold funds.
        app.send(&app.authorize(&order_id, APPROVED_CARD, 800).await)
            .await;
        assert_eq!(
            app.reply(&order_id, 2).await.declined_reason(),
            "the payment was voided before authorization"
        );
        assert_eq!(app.ledger(&order_id, "authorize").await, 0);
        assert!(app.stored(&order_id).await.is_none());
        app.stop().await;
    }
}
