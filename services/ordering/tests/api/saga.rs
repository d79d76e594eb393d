//! The checkout saga's outcomes: confirmed, out of stock, declined, timed out, and replies
//! delivered three times.

use serde_json::json;
use tideway_bus::Event;
use tideway_inventory_api::{
    CommitStock, ReleaseStock, ReserveStock, StockReleased, StockReserved,
};
use tideway_ordering::{AUTHORIZE_PAYMENT, CAPTURE_PAYMENT, CONFIRM_ORDER, RESERVE_STOCK};
use tideway_ordering_api::{OrderCancelled, OrderConfirmed, OrderPlaced, OrderStatus, OrderView};
use tideway_payment_api::{
    APPROVED_CARD, AuthorizePayment, CapturePayment, DECLINED_CARD, PaymentCaptured, VoidPayment,
};
use tideway_runtime::trace::TraceContext;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use crate::helpers::{Answer, Script, config, spawn_app, vaulted_card};

fn trace_of(event: &Event) -> String {
    TraceContext::parse(event.traceparent.as_deref().unwrap())
        .unwrap()
        .trace_id()
}

fn steps(order: &OrderView) -> Vec<(&str, &str, &str)> {
    order
        .timeline
        .iter()
        .map(|e| (e.step.as_str(), e.kind.as_str(), e.status.as_str()))
        .collect()
}

#[tokio::test]
async fn a_paid_order_is_confirmed_and_captured_with_one_trace() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(config(db.url())).await;
        let token = app.token("alice");
        let reply = app.checkout(&token, None).await;
        let id = reply.order_id();
        assert_eq!(reply.body["status"], "pending");
        let href = format!("/api/v1/ordering/orders/{id}");
        assert_eq!(reply.body["href"], href.as_str());
        assert_eq!(reply.headers["location"], href.as_str());
        // The basket was read with the caller's own token.
        assert_eq!(app.basket.tokens(), vec![token.clone()]);

        app.log.wait_terminal(&id).await;
        let order = app.finished(&token, &id).await;
        assert_eq!(order.status, OrderStatus::Confirmed, "{order:?}");
        assert_eq!(order.reason, None);
        assert_eq!(order.user_id, "alice");
        assert_eq!(order.total_minor, 3300);
        assert_eq!(order.currency, "EUR");
        assert_eq!(order.lines.len(), 2);
        assert_eq!(
            (order.lines[0].unit_price_minor, order.lines[0].quantity),
            (1250, 2)
        );
        assert_eq!(
            steps(&order),
            vec![
                (RESERVE_STOCK, "action", "done"),
                (AUTHORIZE_PAYMENT, "action", "done"),
                (CONFIRM_ORDER, "action", "done"),
                (CAPTURE_PAYMENT, "action", "done"),
            ]
        );
        let mut last = String::new();
        for entry in &order.timeline {
            OffsetDateTime::parse(&entry.started_at, &Rfc3339).unwrap();
            let finished = entry.finished_at.clone().unwrap();
            OffsetDateTime::parse(&finished, &Rfc3339).unwrap();
            assert!(entry.started_at >= last && finished >= entry.started_at);
            last = entry.started_at.clone();
        }

        // What went out: one of each, the right payloads, all in the checkout's trace.
        let placed = app.log.of::<OrderPlaced>(&id);
        assert_eq!(placed.len(), 1);
        assert_eq!((placed[0].total_minor, placed[0].lines.len()), (3300, 2));
        let reserve = app.log.of::<ReserveStock>(&id);
        assert_eq!(reserve.len(), 1);
        assert_eq!(reserve[0].lines.len(), 2);
        assert_eq!(reserve[0].lines[0].quantity, 2);
        let authorize = app.log.of::<AuthorizePayment>(&id);
        assert_eq!(authorize.len(), 1);
        assert_eq!(
            vaulted_card(&authorize[0].card_token).as_deref(),
            Some(APPROVED_CARD)
        );
        assert_eq!(authorize[0].amount_minor, 3300);
        assert_eq!(authorize[0].currency, "EUR");
        assert_eq!(
            authorize[0].idempotency_key,
            format!("{id}:{AUTHORIZE_PAYMENT}:action")
        );
        assert_eq!(app.log.of::<OrderConfirmed>(&id).len(), 1);
        assert_eq!(app.log.of::<CommitStock>(&id).len(), 1);
        assert_eq!(app.log.of::<CapturePayment>(&id).len(), 1);
        assert!(app.log.of::<ReleaseStock>(&id).is_empty());
        assert!(app.log.of::<VoidPayment>(&id).is_empty());
        assert!(app.log.of::<OrderCancelled>(&id).is_empty());

        assert_eq!(reply.headers["x-trace-id"], order.trace_id.as_str());
        assert_eq!(order.trace_id.len(), 32);
        for event in app.log.all() {
            if event.source == "tideway/ordering" {
                assert_eq!(trace_of(&event), order.trace_id, "{}", event.event_type);
            }
        }
        // The card went to the vault only: no event carries it, AuthorizePayment included.
        for event in app.log.all() {
            assert!(
                !event.data.to_string().contains(APPROVED_CARD),
                "{}",
                event.event_type
            );
        }

        let snapshot = app.ordering.snapshot().await.unwrap().orders;
        assert_eq!(snapshot.len(), 1);
        assert_eq!(snapshot[0].status, OrderStatus::Confirmed);
        assert!(snapshot[0].timeline.is_empty());
        app.ordering.shutdown().await;
    }
}

#[tokio::test]
async fn an_order_out_of_stock_is_cancelled_without_asking_for_payment() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(config(db.url())).await;
        app.responders.set(Script {
            reserve: Answer::Refuse("only 2 of \"Mug\" left, 3 requested".into()),
            ..Script::default()
        });
        let token = app.token("alice");
        let order = app.checkout_to_end(&token, None).await;
        assert_eq!(order.status, OrderStatus::Cancelled);
        assert_eq!(
            order.reason.as_deref(),
            Some("out of stock: only 2 of \"Mug\" left, 3 requested")
        );
        let order = app.finished(&token, &order.id).await;
        assert_eq!(
            steps(&order),
            vec![(RESERVE_STOCK, "action", "failed")],
            "nothing to undo"
        );
        let cancelled = app.log.of::<OrderCancelled>(&order.id);
        assert_eq!(cancelled.len(), 1);
        assert_eq!(cancelled[0].reason, order.reason.clone().unwrap());
        assert_eq!(cancelled[0].user_id, "alice");
        assert!(app.log.of::<AuthorizePayment>(&order.id).is_empty());
        assert!(app.log.of::<OrderConfirmed>(&order.id).is_empty());
        assert!(app.log.of::<CommitStock>(&order.id).is_empty());
        app.ordering.shutdown().await;
    }
}

#[tokio::test]
async fn a_declined_card_releases_the_stock_and_cancels_the_order() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(config(db.url())).await;
        let token = app.token("alice");
        let order = app
            .checkout_to_end(&token, Some(json!({"card": DECLINED_CARD})))
            .await;
        assert_eq!(order.status, OrderStatus::Cancelled);
        assert_eq!(
            order.reason.as_deref(),
            Some("payment declined: card declined")
        );
        let order = app.finished(&token, &order.id).await;
        assert_eq!(
            steps(&order),
            vec![
                (RESERVE_STOCK, "action", "done"),
                (AUTHORIZE_PAYMENT, "action", "failed"),
                (RESERVE_STOCK, "compensation", "done"),
            ]
        );
        let release = app.log.of::<ReleaseStock>(&order.id);
        assert_eq!(release.len(), 1);
        assert_eq!(release[0].reason, "payment declined: card declined");
        assert_eq!(
            vaulted_card(&app.log.of::<AuthorizePayment>(&order.id)[0].card_token).as_deref(),
            Some(DECLINED_CARD)
        );
        assert!(app.log.of::<VoidPayment>(&order.id).is_empty());
        assert!(app.log.of::<OrderConfirmed>(&order.id).is_empty());
        assert!(app.log.of::<CommitStock>(&order.id).is_empty());
        assert_eq!(app.log.of::<OrderCancelled>(&order.id).len(), 1);
        app.ordering.shutdown().await;
    }
}

#[tokio::test]
async fn an_unanswered_command_is_sent_again_and_a_reply_then_confirms_the_order() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(tideway_ordering::Config {
            reserve_timeout_ms: 300,
            payment_timeout_ms: 300,
            step_resends: 5,
            ..config(db.url())
        })
        .await;
        // Inventory and payment lose the first commands (a crash, say); the steps ask again.
        app.responders.set(Script {
            reserve: Answer::Silent,
            authorize: Answer::Silent,
            ..Script::default()
        });
        let token = app.token("alice");
        let id = app.checkout(&token, None).await.order_id();
        app.log
            .wait_for("ReserveStock sent again", |log| {
                log.of::<ReserveStock>(&id).len() >= 2
            })
            .await;
        app.responders.set(Script {
            authorize: Answer::Silent,
            ..Script::default()
        });
        app.log
            .wait_for("AuthorizePayment sent again", |log| {
                log.of::<AuthorizePayment>(&id).len() >= 2
            })
            .await;
        app.responders.set(Script::default());
        let order = app.finished(&token, &id).await;
        assert_eq!(order.status, OrderStatus::Confirmed, "{order:?}");
        // The same command each time: one order, one idempotency key.
        let authorize = app.log.of::<AuthorizePayment>(&id);
        assert!(
            authorize
                .iter()
                .all(|c| c.idempotency_key == format!("{id}:{AUTHORIZE_PAYMENT}:action")),
            "{authorize:?}"
        );
        assert!(app.log.of::<ReleaseStock>(&id).is_empty());
        assert!(app.log.of::<VoidPayment>(&id).is_empty());
        assert!(app.log.of::<OrderCancelled>(&id).is_empty());
        assert_eq!(
            steps(&order)[..2],
            [
                (RESERVE_STOCK, "action", "done"),
                (AUTHORIZE_PAYMENT, "action", "done")
            ]
        );
        app.ordering.shutdown().await;
    }
}

#[tokio::test]
async fn a_step_that_times_out_cancels_the_order_and_a_late_reply_changes_nothing() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(tideway_ordering::Config {
            reserve_timeout_ms: 300,
            ..config(db.url())
        })
        .await;
        app.responders.set(Script {
            reserve: Answer::Silent,
            ..Script::default()
        });
        let token = app.token("alice");
        let order = app.checkout_to_end(&token, None).await;
        assert_eq!(order.status, OrderStatus::Cancelled);
        let reason = order.reason.clone().unwrap();
        assert!(
            reason.starts_with("step reserve_stock timed out"),
            "{reason}"
        );
        let order = app.finished(&token, &order.id).await;
        assert_eq!(
            steps(&order),
            vec![
                (RESERVE_STOCK, "action", "timed_out"),
                (RESERVE_STOCK, "compensation", "done"),
            ]
        );
        // The reservation's fate is unknown, so it is released.
        assert_eq!(app.log.of::<ReleaseStock>(&order.id).len(), 1);

        // Inventory answers at last: ignored.
        app.responders
            .reply(
                &StockReserved {
                    order_id: order.id.clone(),
                },
                &order.id,
                None,
            )
            .await;
        app.log
            .wait_for("the late reply", |log| {
                !log.of::<StockReserved>(&order.id).is_empty()
            })
            .await;
        let after = app.order(&token, &order.id).await;
        assert_eq!(after.status, OrderStatus::Cancelled);
        assert_eq!(after.reason, order.reason);
        assert_eq!(steps(&after), steps(&order));
        assert!(app.log.of::<AuthorizePayment>(&order.id).is_empty());
        assert_eq!(app.log.of::<OrderCancelled>(&order.id).len(), 1);
        app.ordering.shutdown().await;
    }
}

#[tokio::test]
async fn every_reply_delivered_three_times_has_one_effect() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(config(db.url())).await;
        app.responders.set(Script {
            copies: 3,
            ..Script::default()
        });
        let token = app.token("alice");
        let confirmed = app.checkout_to_end(&token, None).await;
        let confirmed = app.finished(&token, &confirmed.id).await;
        assert_eq!(confirmed.status, OrderStatus::Confirmed);
        assert_eq!(confirmed.timeline.len(), 4);
        assert!(confirmed.timeline.iter().all(|e| e.status == "done"));
        let declined = app
            .checkout_to_end(&token, Some(json!({"card": DECLINED_CARD})))
            .await;
        let declined = app.finished(&token, &declined.id).await;
        assert_eq!(declined.status, OrderStatus::Cancelled);

        app.log
            .wait_for("the last replies' copies", |log| {
                log.envelopes::<PaymentCaptured>(&confirmed.id).len() == 3
                    && log.envelopes::<StockReleased>(&declined.id).len() == 3
            })
            .await;
        for id in [&confirmed.id, &declined.id] {
            // Each reply really came three times.
            let replies: Vec<Event> = app
                .log
                .all()
                .into_iter()
                .filter(|e| {
                    e.subject.as_deref() == Some(id.as_str()) && e.source != "tideway/ordering"
                })
                .collect();
            assert!(!replies.is_empty());
            for reply in &replies {
                let copies = replies.iter().filter(|r| r.id == reply.id).count();
                assert_eq!(copies, 3, "{}", reply.event_type);
            }
        }
        for (id, confirmed_count, cancelled_count) in [(&confirmed.id, 1, 0), (&declined.id, 0, 1)]
        {
            assert_eq!(app.log.of::<ReserveStock>(id).len(), 1);
            assert_eq!(app.log.of::<AuthorizePayment>(id).len(), 1);
            assert_eq!(app.log.of::<OrderConfirmed>(id).len(), confirmed_count);
            assert_eq!(app.log.of::<CommitStock>(id).len(), confirmed_count);
            assert_eq!(app.log.of::<CapturePayment>(id).len(), confirmed_count);
            assert_eq!(app.log.of::<OrderCancelled>(id).len(), cancelled_count);
            assert_eq!(app.log.of::<ReleaseStock>(id).len(), cancelled_count);
        }
        // The inbox holds each reply once.
        let (rows, distinct): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), COUNT(DISTINCT event_id) FROM inbox WHERE consumer = 'ordering'",
        )
        .fetch_one(app.ordering.db().pool())
        .await
        .unwrap();
        assert_eq!(rows, distinct);
        app.ordering.shutdown().await;
    }
}

#[tokio::test]
async fn an_unanswered_capture_is_sent_again_and_never_cancels_the_confirmed_order() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(tideway_ordering::Config {
            capture_timeout_ms: 200,
            ..config(db.url())
        })
        .await;
        app.responders.set(Script {
            capture: Answer::Silent,
            ..Script::default()
        });
        let token = app.token("alice");
        let order = app.checkout_to_end(&token, None).await;
        assert_eq!(order.status, OrderStatus::Confirmed);
        // Payment stays silent: the capture is sent again, with the same key, and nothing
        // is undone.
        app.log
            .wait_for("three capture attempts", |log| {
                log.of::<CapturePayment>(&order.id).len() >= 3
            })
            .await;
        let captures = app.log.of::<CapturePayment>(&order.id);
        assert!(
            captures
                .iter()
                .all(|c| c.idempotency_key == format!("{}:{CAPTURE_PAYMENT}:action", order.id))
        );
        let now = app.order(&token, &order.id).await;
        assert_eq!(now.status, OrderStatus::Confirmed);
        assert!(app.log.of::<VoidPayment>(&order.id).is_empty());
        assert!(app.log.of::<ReleaseStock>(&order.id).is_empty());
        assert!(app.log.of::<OrderCancelled>(&order.id).is_empty());

        // Payment recovers: the next attempt is answered and the saga completes.
        app.responders.set(Script::default());
        let done = app.finished(&token, &order.id).await;
        assert_eq!(done.status, OrderStatus::Confirmed);
        assert_eq!(
            steps(&done).last().copied(),
            Some((CAPTURE_PAYMENT, "action", "done"))
        );
        app.ordering.shutdown().await;
    }
}
