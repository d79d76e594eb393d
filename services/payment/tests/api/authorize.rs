//! Authorize and capture: the test cards, card validation, the decline rate, bad commands.

use reqwest::StatusCode;
use tideway_bus::Event;
use tideway_payment::Config;
use tideway_payment_api::{APPROVED_CARD, DECLINED_CARD, INSUFFICIENT_FUNDS_CARD, PaymentStatus};
use tideway_runtime::trace::TraceContext;
use tideway_testkit::backends;

use crate::helpers::{Reply, TestBus, capture, order, spawn_app, spawn_with};

#[tokio::test]
async fn an_approved_card_is_authorized_then_captured() {
    for db in backends().await {
        let app = spawn_app(db.url()).await;
        let order_id = order();
        let trace = TraceContext::new_root();
        let command = Event::new(&app.authorize(&order_id, "4242 4242 4242 4242", 2599).await)
            .unwrap()
            .with_traceparent(trace.to_string());
        app.publish(&command).await;
        let events = app.reply_events(&order_id, 1).await;
        let Reply::Authorized(authorized) = app.reply(&order_id, 1).await else {
            panic!("expected an authorization: {events:?}");
        };
        assert_eq!(authorized.order_id, order_id);
        // The reply continues the command's trace, about the order.
        let reply_trace = TraceContext::parse(events[0].traceparent.as_deref().unwrap()).unwrap();
        assert_eq!(reply_trace.trace_id(), trace.trace_id());
        assert_eq!(events[0].subject.as_deref(), Some(order_id.as_str()));

        let stored = app.stored(&order_id).await.unwrap();
        assert_eq!(stored.status, PaymentStatus::Authorized);
        assert_eq!(stored.payment_id, authorized.payment_id);
        assert_eq!(stored.amount_minor, 2599);
        assert_eq!(stored.currency, "EUR");
        assert_eq!(stored.card_last4, "4242");
        assert_eq!(stored.decline_reason, None);
        assert_eq!(app.ledger(&order_id, "authorize").await, 1);
        // The card number itself is nowhere in the database.
        for (table, column) in [
            ("payments", "card_last4"),
            ("provider_charges", "card_last4"),
            ("idempotency", "reply"),
            ("outbox", "event"),
            ("card_vault", "card_number"),
        ] {
            let sql = format!("SELECT COUNT(*) FROM {table} WHERE {column} LIKE $1");
            assert_eq!(
                app.count(&sql, &format!("%{APPROVED_CARD}%")).await,
                0,
                "{table}"
            );
        }

        app.send(&capture(&order_id)).await;
        let Reply::Captured(captured) = app.reply(&order_id, 2).await else {
            panic!("expected a capture");
        };
        assert_eq!(captured.payment_id, authorized.payment_id);
        assert_eq!(
            app.stored(&order_id).await.unwrap().status,
            PaymentStatus::Captured
        );
        assert_eq!(app.ledger(&order_id, "capture").await, 1);

        // Capturing again answers the same, with no second capture at the provider.
        app.send(&capture(&order_id)).await;
        assert_eq!(
            app.reply(&order_id, 3).await,
            Reply::Captured(captured.clone())
        );
        let mut again = capture(&order_id);
        again.idempotency_key.push_str("-retry");
        app.send(&again).await;
        assert_eq!(app.reply(&order_id, 4).await, Reply::Captured(captured));
        assert_eq!(app.ledger(&order_id, "capture").await, 1);
        app.stop().await;
    }
}

#[tokio::test]
async fn declining_test_cards_are_declined_and_nothing_is_held() {
    for db in backends().await {
        let app = spawn_app(db.url()).await;
        for (card, reason) in [
            (DECLINED_CARD, "card declined"),
            (INSUFFICIENT_FUNDS_CARD, "insufficient funds"),
        ] {
            let order_id = order();
            app.send(&app.authorize(&order_id, card, 1000).await).await;
            assert_eq!(app.reply(&order_id, 1).await.declined_reason(), reason);
            let stored = app.stored(&order_id).await.unwrap();
            assert_eq!(stored.status, PaymentStatus::Declined);
            assert_eq!(stored.decline_reason.as_deref(), Some(reason));
            assert_eq!(stored.card_last4, &card[card.len() - 4..]);
            // A capture of a declined payment is acknowledged, answers nothing, changes nothing.
            app.send(&capture(&order_id)).await;
            app.settled().await;
            assert_eq!(app.replies(&order_id, 1).await.len(), 1);
            assert_eq!(
                app.stored(&order_id).await.unwrap().status,
                PaymentStatus::Declined
            );
            assert_eq!(app.ledger(&order_id, "capture").await, 0);
        }
        let authorized = app
            .count(
                "SELECT COUNT(*) FROM payments WHERE status = $1",
                "authorized",
            )
            .await;
        assert_eq!(authorized, 0);
        app.stop().await;
    }
}

#[tokio::test]
async fn invalid_card_numbers_are_refused_by_the_vault_and_unknown_tokens_declined() {
    for db in backends().await {
        let app = spawn_app(db.url()).await;
        for card in [
            "",
            "4242424242424241",
            "42424242424",
            "42424242424242424242",
            "4242-4242-4242-4242",
            "card",
        ] {
            let response = app.vault_response(&order(), card).await;
            assert_eq!(
                response.status(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "{card:?}"
            );
            let problem: serde_json::Value = response.json().await.unwrap();
            assert_eq!(problem["invalid-params"][0]["name"], "card", "{problem}");
        }
        let vaulted = app
            .count("SELECT COUNT(*) FROM card_vault WHERE order_id <> $1", "")
            .await;
        assert_eq!(vaulted, 0, "nothing was vaulted");
        // A signed-out caller vaults nothing.
        let response = app
            .client
            .post(app.url("/cards"))
            .json(&serde_json::json!({ "order_id": order(), "card": APPROVED_CARD }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

        // A token that is unknown, or vaulted for another order, is declined without a
        // provider call.
        let other = order();
        let foreign = app.vault(&other, APPROVED_CARD).await;
        for token in ["", "ct_unknown", foreign.as_str()] {
            let order_id = order();
            let mut command = app.authorize(&order_id, APPROVED_CARD, 1000).await;
            command.card_token = token.to_owned();
            app.send(&command).await;
            assert_eq!(
                app.reply(&order_id, 1).await.declined_reason(),
                "the card token is unknown or has expired",
                "{token:?}"
            );
            assert_eq!(
                app.stored(&order_id).await.unwrap().status,
                PaymentStatus::Declined
            );
            assert_eq!(app.ledger(&order_id, "authorize").await, 0);
            // Its own vaulted card is forgotten with the decline.
            assert_eq!(
                app.count(
                    "SELECT COUNT(*) FROM card_vault WHERE order_id = $1",
                    &order_id
                )
                .await,
                0
            );
        }
        app.stop().await;
    }
}

#[tokio::test]
async fn bad_amounts_and_currencies_are_declined_and_store_no_payment() {
    for db in backends().await {
        let app = spawn_app(db.url()).await;
        for (amount, currency, reason) in [
            (0, "EUR", "invalid amount"),
            (-5, "EUR", "invalid amount"),
            (100, "eur", "invalid currency"),
            (100, "EURO", "invalid currency"),
            (100, "", "invalid currency"),
        ] {
            let order_id = order();
            let mut command = app.authorize(&order_id, APPROVED_CARD, amount).await;
            command.currency = currency.to_owned();
            app.send(&command).await;
            assert_eq!(app.reply(&order_id, 1).await.declined_reason(), reason);
            assert!(app.stored(&order_id).await.is_none());
            assert_eq!(app.ledger(&order_id, "authorize").await, 0);
        }
        app.stop().await;
    }
}

#[tokio::test]
async fn the_decline_rate_declines_all_or_none() {
    for db in backends().await {
        for (rate, declined) in [(1.0, true), (0.0, false)] {
            let app = spawn_with(
                Config {
                    database_url: db.url().parse().expect("a test database URL"),
                    decline_rate: rate,
                    ..Config::default()
                },
                TestBus::Embedded,
            )
            .await;
            for _ in 0..10 {
                let order_id = order();
                app.send(&app.authorize(&order_id, APPROVED_CARD, 500).await)
                    .await;
                match app.reply(&order_id, 1).await {
                    Reply::Declined(d) if declined => assert_eq!(d.reason, "card declined"),
                    Reply::Authorized(_) if !declined => {}
                    other => panic!("decline rate {rate}: unexpected {other:?}"),
                }
            }
            app.stop().await;
        }
    }
}
