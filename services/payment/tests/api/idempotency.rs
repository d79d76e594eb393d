//! Effectively once: redelivered events, repeated commands, a crash between the provider
//! call and the commit.

use std::sync::Arc;

use tideway_bus::{Event, outbox::RelayWaker};
use tideway_payment::{
    card::CardNumber,
    commands::{CommandError, Handlers},
    provider::{Authorization, AuthorizeRequest, Provider},
};
use tideway_payment_api::{APPROVED_CARD, DECLINED_CARD, PaymentStatus};
use tideway_testkit::backends;

use crate::helpers::{Reply, capture, order, spawn_app, void};

#[tokio::test]
async fn every_event_delivered_three_times_has_one_effect() {
    for db in backends().await {
        let app = spawn_app(db.url()).await;
        let order_id = order();
        let event = Event::new(&app.authorize(&order_id, APPROVED_CARD, 1200).await).unwrap();
        for _ in 0..3 {
            app.publish(&event).await;
        }
        let first = app.reply(&order_id, 1).await;
        let capture = Event::new(&capture(&order_id)).unwrap();
        for _ in 0..3 {
            app.publish(&capture).await;
        }
        let void = Event::new(&void(&order_id)).unwrap();
        for _ in 0..3 {
            app.publish(&void).await;
        }
        app.settled().await;
        let replies = app.replies(&order_id, 3).await;
        assert_eq!(replies.len(), 3, "{replies:?}");
        assert_eq!(replies[0], first);
        assert!(matches!(replies[1], Reply::Captured(_)), "{replies:?}");
        assert!(matches!(replies[2], Reply::Voided(_)), "{replies:?}");
        for operation in ["authorize", "capture", "refund"] {
            assert_eq!(app.ledger(&order_id, operation).await, 1, "{operation}");
        }
        assert_eq!(
            app.stored(&order_id).await.unwrap().status,
            PaymentStatus::Refunded
        );
        let outbox = app
            .count(
                "SELECT COUNT(*) FROM outbox WHERE event LIKE $1",
                &format!("%{order_id}%"),
            )
            .await;
        assert_eq!(outbox, 3);
        app.stop().await;
    }
}

#[tokio::test]
async fn the_same_authorize_three_times_charges_once_and_answers_the_same() {
    for db in backends().await {
        let app = spawn_app(db.url()).await;
        for card in [APPROVED_CARD, DECLINED_CARD] {
            let order_id = order();
            let command = app.authorize(&order_id, card, 990).await;
            for _ in 0..3 {
                app.send(&command).await; // a new event each time, the same key
            }
            let replies = app.replies(&order_id, 3).await;
            assert_eq!(replies.len(), 3);
            assert!(replies.iter().all(|r| *r == replies[0]), "{replies:?}");
            assert_eq!(app.ledger(&order_id, "authorize").await, 1);
            let payments = app
                .count(
                    "SELECT COUNT(*) FROM payments WHERE order_id = $1",
                    &order_id,
                )
                .await;
            assert_eq!(payments, 1);

            // A new key for the same order answers from the payment, charging nothing more.
            let mut retry = command.clone();
            retry.idempotency_key.push_str(":2");
            app.send(&retry).await;
            assert_eq!(app.reply(&order_id, 4).await, replies[0]);
            assert_eq!(app.ledger(&order_id, "authorize").await, 1);
        }
        app.stop().await;
    }
}

#[tokio::test]
async fn a_crash_between_the_provider_call_and_the_commit_does_not_charge_twice() {
    for db in backends().await {
        let app = spawn_app(db.url()).await;
        let order_id = order();
        let command = app.authorize(&order_id, APPROVED_CARD, 4200).await;
        // A first run reached the provider, then the process died before committing.
        let card = CardNumber::parse(APPROVED_CARD).unwrap();
        let first = app
            .payment
            .provider()
            .authorize(AuthorizeRequest {
                idempotency_key: &command.idempotency_key,
                order_id: &order_id,
                amount_minor: command.amount_minor,
                currency: &command.currency,
                card: &card,
            })
            .await
            .unwrap();
        let Authorization::Approved { charge_id } = first else {
            panic!("expected an approval");
        };
        assert!(app.stored(&order_id).await.is_none());

        // The command is delivered again after the restart.
        app.send(&command).await;
        assert!(matches!(
            app.reply(&order_id, 1).await,
            Reply::Authorized(_)
        ));
        assert_eq!(app.ledger(&order_id, "authorize").await, 1);
        let stored_charge = app
            .count(
                "SELECT COUNT(*) FROM payments WHERE provider_charge_id = $1",
                &charge_id,
            )
            .await;
        assert_eq!(stored_charge, 1, "the payment holds the first run's charge");
        app.stop().await;
    }
}

#[tokio::test]
async fn concurrent_deliveries_of_one_authorize_charge_once() {
    for db in backends().await {
        let app = spawn_app(db.url()).await;
        let order_id = order();
        let command = app.authorize(&order_id, APPROVED_CARD, 700).await;
        let events: Vec<Event> = (0..6).map(|_| Event::new(&command).unwrap()).collect();
        let sends: Vec<_> = events
            .into_iter()
            .map(|event| {
                let bus = app.bus.clone();
                tokio::spawn(async move { bus.publish(&event).await.unwrap() })
            })
            .collect();
        for send in sends {
            send.await.unwrap();
        }
        let replies = app.replies(&order_id, 6).await;
        assert!(replies.iter().all(|r| *r == replies[0]), "{replies:?}");
        assert!(matches!(replies[0], Reply::Authorized(_)));
        assert_eq!(app.ledger(&order_id, "authorize").await, 1);
        app.stop().await;
    }
}

#[tokio::test]
async fn a_key_reused_for_another_order_or_command_is_refused_not_answered() {
    for db in backends().await {
        let app = spawn_app(db.url()).await;
        let (order_id, _) = app.authorized_order(300).await;
        let key = format!("{order_id}:authorize_payment:action");
        // Handlers called directly: the bus would retry, then dead-letter the command.
        let handlers = Handlers::new(
            app.payment.db().clone(),
            Arc::new(app.payment.provider().clone()),
            RelayWaker::default(),
        );
        let mut other_order = app.authorize(&order(), APPROVED_CARD, 300).await;
        other_order.idempotency_key = key.clone();
        let mut as_capture = capture(&order_id);
        as_capture.idempotency_key = key.clone();
        for event in [
            Event::new(&other_order).unwrap(),
            Event::new(&as_capture).unwrap(),
        ] {
            let err = handlers.handle(event).await.unwrap_err();
            assert!(matches!(err, CommandError::Unusable(_)), "{err:?}");
        }
        // Undecodable data is refused without quoting it (it may hold a card number).
        let mut garbled = Event::new(&app.authorize(&order(), APPROVED_CARD, 1).await).unwrap();
        garbled.data["amount_minor"] = serde_json::json!(APPROVED_CARD);
        let err = handlers.handle(garbled).await.unwrap_err();
        assert!(!format!("{err:?}").contains(APPROVED_CARD), "{err:?}");
        app.settled().await;
        assert_eq!(app.replies(&order_id, 1).await.len(), 1);
        assert_eq!(
            app.stored(&order_id).await.unwrap().status,
            PaymentStatus::Authorized
        );
        app.stop().await;
    }
}
