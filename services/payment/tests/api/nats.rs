//! The whole course on NATS JetStream: capture, refund, a redelivered command.

use tideway_bus::Event;
use tideway_payment::Config;
use tideway_payment_api::{APPROVED_CARD, DECLINED_CARD, PaymentStatus, PaymentVoided};
use tideway_testkit::backends;

use crate::helpers::{Reply, TestBus, capture, order, spawn_with, void};

#[tokio::test]
async fn a_payment_runs_its_course_over_nats() {
    for db in backends().await {
        let Some(nats) = tideway_testkit::nats().await else {
            return;
        };
        let app = spawn_with(
            Config {
                database_url: db.url().parse().expect("a test database URL"),
                ..Config::default()
            },
            TestBus::Nats(nats),
        )
        .await;
        let order_id = order();
        let command = Event::new(&app.authorize(&order_id, APPROVED_CARD, 3100).await).unwrap();
        app.publish(&command).await;
        let Reply::Authorized(authorized) = app.reply(&order_id, 1).await else {
            panic!("expected an authorization");
        };
        app.send(&capture(&order_id)).await;
        assert!(matches!(app.reply(&order_id, 2).await, Reply::Captured(_)));
        app.send(&void(&order_id)).await;
        assert_eq!(
            app.reply(&order_id, 3).await,
            Reply::Voided(PaymentVoided {
                order_id: order_id.clone(),
                status: Some(PaymentStatus::Refunded),
            })
        );
        // The same command again: the same answer, one charge.
        app.send(&app.authorize(&order_id, APPROVED_CARD, 3100).await)
            .await;
        assert_eq!(app.reply(&order_id, 4).await, Reply::Authorized(authorized));
        assert_eq!(app.ledger(&order_id, "authorize").await, 1);

        let declined = order();
        app.send(&app.authorize(&declined, DECLINED_CARD, 3100).await)
            .await;
        assert_eq!(
            app.reply(&declined, 1).await.declined_reason(),
            "card declined"
        );
        app.stop().await;
    }
}
