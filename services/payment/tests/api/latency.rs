//! The simulated provider's latency delays the answer.

use std::time::{Duration, Instant};

use tideway_payment::Config;
use tideway_payment_api::APPROVED_CARD;
use tideway_testkit::backends;

use crate::helpers::{Reply, TestBus, capture, order, spawn_with};

#[tokio::test]
async fn replies_do_not_arrive_before_the_provider_latency() {
    let latency = Duration::from_millis(400);
    for db in backends().await {
        let app = spawn_with(
            Config {
                database_url: db.url().parse().expect("a test database URL"),
                latency_ms: 400,
                ..Config::default()
            },
            TestBus::Embedded,
        )
        .await;
        let order_id = order();
        let started = Instant::now();
        app.send(&app.authorize(&order_id, APPROVED_CARD, 100).await)
            .await;
        assert!(matches!(
            app.reply(&order_id, 1).await,
            Reply::Authorized(_)
        ));
        assert!(started.elapsed() >= latency, "{:?}", started.elapsed());

        let started = Instant::now();
        app.send(&capture(&order_id)).await;
        assert!(matches!(app.reply(&order_id, 2).await, Reply::Captured(_)));
        assert!(started.elapsed() >= latency, "{:?}", started.elapsed());
        app.stop().await;
    }
}
