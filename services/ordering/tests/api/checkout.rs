//! Checkout's input: bad requests name their field and create nothing; a repeated key
//! answers the same order.

use reqwest::Method;
use serde_json::json;
use tideway_basket_api::BasketLine;
use tideway_ordering_api::OrderPlaced;

use crate::helpers::{BasketMode, COFFEE, TestApp, config, line, spawn_app, two_lines};

const PATH: &str = "/api/v1/basket/checkout";

/// Sends a checkout, checks the status and named field, and that no order was made.
async fn refused(
    app: &TestApp,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&str>,
    expected: (u16, &str),
) {
    let before = app.order_rows().await;
    let reply = app
        .raw(Method::POST, PATH, token, headers, body.map(str::to_owned))
        .await;
    assert_eq!(
        (reply.status, reply.field()),
        expected,
        "{headers:?} {body:?}: {reply:?}"
    );
    assert_eq!(app.order_rows().await, before, "{body:?} made an order");
}

const JSON: (&str, &str) = ("content-type", "application/json");

#[tokio::test]
async fn bad_checkouts_name_the_field_and_make_no_order() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(config(db.url())).await;
        let token = app.token("alice");
        let t = Some(token.as_str());

        // Token.
        refused(&app, None, &[JSON], Some("{}"), (401, "authorization")).await;
        refused(
            &app,
            Some("not-a-token"),
            &[JSON],
            Some("{}"),
            (401, "authorization"),
        )
        .await;

        // Body: syntax, types, content type.
        refused(&app, t, &[JSON], Some(r#"{"card": "#), (400, "body")).await;
        refused(
            &app,
            t,
            &[JSON],
            Some(r#"{"card": 4242424242424242}"#),
            (422, "card"),
        )
        .await;
        refused(&app, t, &[JSON], Some("[]"), (422, "body")).await;
        refused(
            &app,
            t,
            &[("content-type", "text/plain")],
            Some(r#"{"card": "4242424242424242"}"#),
            (415, "content-type"),
        )
        .await;
        refused(&app, t, &[], Some(r#"{}"#), (415, "content-type")).await;

        // Card numbers.
        for card in [
            "",
            "42424242424",
            "42424242424242424242",
            "4242-4242-4242-4242",
            "4242x42424242424",
            "4242424242424241", // the check digit is wrong
        ] {
            let body = json!({ "card": card }).to_string();
            refused(&app, t, &[JSON], Some(&body), (422, "card")).await;
        }

        // Idempotency keys.
        let long = "k".repeat(101);
        for key in ["", "   ", long.as_str()] {
            refused(
                &app,
                t,
                &[JSON, ("idempotency-key", key)],
                Some("{}"),
                (422, "Idempotency-Key"),
            )
            .await;
        }

        // The basket: empty, a line not available, unreachable.
        app.basket.set(Vec::new());
        refused(&app, t, &[JSON], Some("{}"), (422, "basket")).await;
        let mut lines: Vec<BasketLine> = two_lines();
        lines[1].available = false;
        app.basket.set(lines);
        refused(&app, t, &[JSON], Some("{}"), (409, "items[1]")).await;
        // A sold-out line, and a line whose item left the catalog: 422 naming the line,
        // before any order is placed.
        let mut lines: Vec<BasketLine> = two_lines();
        lines[0].available = false;
        lines[0].sold_out = true;
        app.basket.set(lines);
        refused(&app, t, &[JSON], Some("{}"), (422, "items[0]")).await;
        let mut lines: Vec<BasketLine> = two_lines();
        lines[1].available = false;
        lines[1].deleted = true;
        lines[1].line_total_minor = 0;
        app.basket.set(lines);
        refused(&app, t, &[JSON], Some("{}"), (422, "items[1]")).await;
        app.basket.set(two_lines());
        app.basket.set_mode(BasketMode::Failing);
        refused(&app, t, &[JSON], Some("{}"), (503, "")).await;
        app.basket.set_mode(BasketMode::Normal);

        assert!(app.log.all().iter().all(|e| !e.is::<OrderPlaced>()));

        // And the same request, well formed, is accepted: with `{}`, with no body at all,
        // with a spaced card.
        let id = app.checkout(&token, Some(json!({}))).await.order_id();
        let reply = app.raw(Method::POST, PATH, t, &[], None).await;
        assert_eq!(reply.status, 202, "{reply:?}");
        let reply = app
            .checkout(&token, Some(json!({"card": "4242 4242 4242 4242"})))
            .await;
        assert_eq!(reply.status, 202, "{reply:?}");
        assert_ne!(reply.order_id(), id);
        assert_eq!(app.order_rows().await, 3);
        app.ordering.shutdown().await;
    }
}

#[tokio::test]
async fn a_repeated_idempotency_key_answers_the_same_order() {
    for db in tideway_testkit::backends().await {
        let app = spawn_app(config(db.url())).await;
        let alice = app.token("alice");
        let bob = app.token("bob");
        let key = [JSON, ("idempotency-key", "checkout-1")];
        let first = app
            .raw(Method::POST, PATH, Some(&alice), &key, Some("{}".into()))
            .await;
        let id = first.order_id();
        // The basket changes meanwhile: the repeat still answers the first order.
        app.basket.set(vec![line(COFFEE, "Coffee beans", 1250, 5)]);
        let again = app
            .raw(Method::POST, PATH, Some(&alice), &key, Some("{}".into()))
            .await;
        assert_eq!(again.order_id(), id);
        assert_eq!(again.headers["location"], first.headers["location"]);
        // Another user's key is their own.
        let other = app
            .raw(Method::POST, PATH, Some(&bob), &key, Some("{}".into()))
            .await
            .order_id();
        assert_ne!(other, id);
        // Concurrent repeats of a new key make one order.
        let key2 = [JSON, ("idempotency-key", "checkout-2")];
        let (x, y) = tokio::join!(
            app.raw(Method::POST, PATH, Some(&alice), &key2, Some("{}".into())),
            app.raw(Method::POST, PATH, Some(&alice), &key2, Some("{}".into())),
        );
        assert_eq!(x.order_id(), y.order_id());
        assert_eq!(app.order_rows().await, 3);

        app.log.wait_terminal(&id).await;
        let order = app.finished(&alice, &id).await;
        assert_eq!(order.lines.len(), 2, "the first basket's lines: {order:?}");
        assert_eq!(app.log.of::<OrderPlaced>(&id).len(), 1);
        app.ordering.shutdown().await;
    }
}

/// While inventory cannot take a reservation, checkout is refused up front with a 503
/// problem naming it: no order, no event, the basket not even read. A repeat of a checkout
/// already placed still answers its order; once inventory is back, checkout is accepted.
#[tokio::test]
async fn with_inventory_down_checkout_is_refused_before_anything_is_placed() {
    use std::sync::atomic::Ordering;

    for db in tideway_testkit::backends().await {
        let app = spawn_app(config(db.url())).await;
        let token = app.token("alice");
        let key = [JSON, ("idempotency-key", "placed-before")];
        let placed = app
            .raw(Method::POST, PATH, Some(&token), &key, Some("{}".into()))
            .await
            .order_id();
        let basket_reads = app.basket.tokens().len();

        app.inventory_up.store(false, Ordering::SeqCst);
        let reply = app.checkout(&token, Some(json!({}))).await;
        assert_eq!(reply.status, 503, "{reply:?}");
        assert_eq!(reply.headers["retry-after"], "1");
        assert_eq!(reply.headers["content-type"], "application/problem+json");
        assert_eq!(reply.headers["tideway-dependency-down"], "inventory");
        assert_eq!(reply.body["type"], "/problems/dependency-unavailable");
        assert_eq!(reply.body["title"], "Inventory unavailable");
        assert!(
            reply.body["detail"].as_str().unwrap().contains("inventory"),
            "{reply:?}"
        );
        assert_eq!(app.order_rows().await, 1, "no order was placed");
        assert_eq!(
            app.basket.tokens().len(),
            basket_reads,
            "the basket was not read"
        );
        // Bad input is still named first.
        let reply = app
            .raw(Method::POST, PATH, Some(&token), &[JSON], Some("[]".into()))
            .await;
        assert_eq!((reply.status, reply.field()), (422, "body"), "{reply:?}");
        // The same key answers the order it placed before.
        let again = app
            .raw(Method::POST, PATH, Some(&token), &key, Some("{}".into()))
            .await;
        assert_eq!(again.order_id(), placed);
        app.log.wait_terminal(&placed).await;
        let placed_events = app
            .log
            .all()
            .iter()
            .filter(|e| e.is::<OrderPlaced>())
            .count();
        assert_eq!(placed_events, 1, "only the order placed before");

        app.inventory_up.store(true, Ordering::SeqCst);
        let id = app.checkout(&token, Some(json!({}))).await.order_id();
        assert_ne!(id, placed);
        assert_eq!(app.order_rows().await, 2);
        app.ordering.shutdown().await;
    }
}
