//! The checkout saga over RabbitMQ: the shop in one process with `bus.kind = "rabbitmq"`
//! on the broker at 127.0.0.1:5672 (`TIDEWAY_TEST_RABBITMQ_URL`), under a name prefix of
//! the test's own. Confirmed, declined, out of stock and sold out, then the invariants; the
//! consumer groups' queues, the dead-letter queue and the exchanges are the broker's, and
//! every command and reply of the saga crossed them.

use std::time::Duration;

use tideway::{App, Config, config::BusKind, invariants};
use tideway_bus::{SubscribeOptions, Subscriber};

use crate::checkout::checkout_outcomes;

/// `config` carrying events on RabbitMQ under a fresh prefix (its queues expire once
/// unused), or `None` with a notice when the broker is unreachable outside CI.
async fn on_rabbitmq(dir: &std::path::Path) -> Option<Config> {
    let mut config = Config {
        data_dir: dir.to_path_buf(),
        ..Config::default()
    };
    config.gateway.listen = "127.0.0.1:0".to_owned();
    config.bus.kind = BusKind::Rabbitmq;
    if let Ok(url) = std::env::var("TIDEWAY_TEST_RABBITMQ_URL") {
        config.bus.rabbitmq_url = url;
    }
    config.bus.root = format!("t{}", uuid::Uuid::new_v4().simple());
    config.bus.rabbitmq_queue_expiry_ms = 60_000;
    match tideway::rabbit_bus_of(&config, false).await {
        Ok(probe) => {
            probe.shutdown().await;
            Some(config)
        }
        Err(err) => {
            assert!(
                !tideway_testkit::is_ci(),
                "RabbitMQ is unreachable and CI=true: {err:#} (run scripts/deps.sh)"
            );
            eprintln!("note: skipping: RabbitMQ is unreachable ({err:#}); run scripts/deps.sh");
            None
        }
    }
}

#[tokio::test]
async fn checkout_on_rabbitmq() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut config) = on_rabbitmq(dir.path()).await else {
        return;
    };
    config.resolve().unwrap();
    let app = App::embedded(&config).await.unwrap();
    let stores = app.services().unwrap().stores();
    let server = crate::serve_ready(app).await;
    checkout_outcomes(server.base_url()).await;
    let pending = invariants::wait_terminal(&stores.ordering, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(pending, 0, "every order is terminal");
    let report = invariants::settle(&stores, Duration::from_secs(30))
        .await
        .unwrap();
    server.stop(crate::STOP_DEADLINE).await;
    assert!(report.holds(), "{report:#?}");
    assert!(
        report.orders("confirmed") >= 3 && report.orders("cancelled") >= 1,
        "{report:#?}"
    );

    // The saga's commands and replies went through the broker: the inventory's and the
    // ordering service's group queues are there, drained. Then the test's exchanges and
    // dead-letter queue go (its group queues expire once unused).
    let bus = tideway::rabbit_bus_of(&config, false).await.unwrap();
    for (consumer, subject) in [
        ("inventory", "tideway.inventory.reserve-stock"),
        ("ordering", "tideway.inventory.stock-reserved"),
    ] {
        let group = SubscribeOptions::new(consumer, subject);
        assert!(
            bus.queue_of(&group)
                .starts_with(&format!("{}.{consumer}-", config.bus.root))
        );
        assert_eq!(bus.backlog(&group).await.unwrap(), 0, "{consumer} drained");
    }
    bus.delete(&[]).await.unwrap();
    bus.shutdown().await;
}
