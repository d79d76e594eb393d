//! A service shut down in the middle of sagas; a new one on the same database resumes them
//! and every order ends.

use tideway_inventory_api::ReserveStock;
use tideway_ordering::{AUTHORIZE_PAYMENT, Config, RESERVE_STOCK};
use tideway_ordering_api::{OrderCancelled, OrderConfirmed, OrderStatus};
use tideway_payment_api::{AuthorizePayment, PaymentAuthorized};
use tideway_saga::SagaStatus;

use crate::helpers::{Answer, Script, config, spawn_app};

#[tokio::test]
async fn a_restarted_service_resumes_its_sagas_to_an_end() {
    for db in tideway_testkit::backends().await {
        let mut app = spawn_app(Config {
            reserve_timeout_ms: 2_000,
            ..config(db.url())
        })
        .await;
        let token = app.token("alice");

        // Order A waits for payment's answer; order B waits for inventory's, which never
        // comes: it will time out while the service is down.
        app.responders.set(Script {
            authorize: Answer::Silent,
            ..Script::default()
        });
        let a = app.checkout(&token, None).await.order_id();
        app.log
            .wait_for("A's authorization request", |log| {
                !log.of::<AuthorizePayment>(&a).is_empty()
            })
            .await;
        app.responders.set(Script {
            reserve: Answer::Silent,
            authorize: Answer::Silent,
            ..Script::default()
        });
        let b = app.checkout(&token, None).await.order_id();
        app.log
            .wait_for("B's reservation request", |log| {
                !log.of::<ReserveStock>(&b).is_empty()
            })
            .await;

        let engine = app.ordering.saga_engine().clone();
        app.restart().await;
        let stopped = engine.instance(&a).await.unwrap().unwrap();
        assert_eq!(stopped.status, SagaStatus::Running);
        assert_eq!(stopped.current_step.as_deref(), Some(AUTHORIZE_PAYMENT));
        let stopped = engine.instance(&b).await.unwrap().unwrap();
        // B most likely times out after the restart, but a slow restart may see it earlier.
        if !stopped.status.is_terminal() {
            assert_eq!(stopped.current_step.as_deref(), Some(RESERVE_STOCK));
        }

        // Payment answers A now, to the new service; inventory still never answers B. (A
        // command whose `Waiting` was not yet stored at the shutdown is sent again on resume,
        // with the same idempotency key.)
        app.responders.set(Script {
            reserve: Answer::Silent,
            ..Script::default()
        });
        app.responders
            .reply(
                &PaymentAuthorized {
                    order_id: a.clone(),
                    payment_id: "pay-a".into(),
                },
                &a,
                None,
            )
            .await;
        app.log.wait_terminal(&a).await;
        app.log.wait_terminal(&b).await;

        let a_view = app.finished(&token, &a).await;
        assert_eq!(a_view.status, OrderStatus::Confirmed, "{a_view:?}");
        assert_eq!(a_view.timeline.len(), 4);
        assert_eq!(app.log.of::<OrderConfirmed>(&a).len(), 1);
        let authorize = app.log.of::<AuthorizePayment>(&a);
        assert!(!authorize.is_empty());
        assert!(
            authorize
                .iter()
                .all(|c| c.idempotency_key == authorize[0].idempotency_key)
        );

        let b_view = app.finished(&token, &b).await;
        assert_eq!(b_view.status, OrderStatus::Cancelled, "{b_view:?}");
        assert!(
            b_view
                .reason
                .as_deref()
                .unwrap()
                .contains("reserve_stock timed out"),
            "{b_view:?}"
        );
        assert_eq!(app.log.of::<OrderCancelled>(&b).len(), 1);
        let saga = app
            .ordering
            .saga_engine()
            .instance(&b)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(saga.status, SagaStatus::Compensated);
        app.ordering.shutdown().await;
    }
}

#[tokio::test]
async fn an_old_pending_order_whose_saga_never_started_is_cancelled_at_start_up() {
    for db in tideway_testkit::backends().await {
        let mut app = spawn_app(config(db.url())).await;
        // What a crash between committing an order and starting its saga leaves behind.
        let id = "0190a1b2-0000-7000-8000-00000000dead";
        sqlx::query(
            "INSERT INTO orders (id, user_id, status, reason, total_minor, currency, trace_id, \
             idempotency_key, payment_captured, created_at, updated_at) \
             VALUES ($1, 'alice', 'pending', NULL, 100, 'EUR', $2, NULL, 0, $3, $3)",
        )
        .bind(id)
        .bind("4bf92f3577b34da6a3ce929d0e0e4736")
        .bind("2020-01-01T00:00:00.000Z")
        .execute(app.ordering.db().pool())
        .await
        .unwrap();
        app.restart().await;
        app.log.wait_terminal(id).await;
        let token = app.token("alice");
        let order = app.order(&token, id).await;
        assert_eq!(order.status, OrderStatus::Cancelled);
        assert_eq!(
            order.reason.as_deref(),
            Some(tideway_ordering::ORPHAN_REASON)
        );
        let cancelled = app.log.envelopes::<OrderCancelled>(id);
        assert_eq!(cancelled.len(), 1);
        assert!(
            cancelled[0]
                .traceparent
                .as_deref()
                .unwrap()
                .contains("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        app.ordering.shutdown().await;
    }
}
