//! The checkout saga over RabbitMQ (`bus.kind = "rabbitmq"`, the broker at 127.0.0.1:5672 or
//! `TIDEWAY_TEST_RABBITMQ_URL`, under a name prefix of the test's own): the shop in one
//! process, and as separate processes of the real binary on PostgreSQL. Confirmed,
//! declined, out of stock and sold out, then the invariants; every command and reply of the
//! saga crossed the broker.

use std::time::Duration;

use tideway::{App, Config, config::BusKind, invariants};
use tideway_bus::{SubscribeOptions, Subscriber};

use crate::{checkout::checkout_outcomes, processes::Distributed};

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

#[tokio::test]
async fn checkout_as_separate_processes_on_rabbitmq() {
    let dir = tempfile::tempdir().unwrap();
    let Some(config) = on_rabbitmq(dir.path()).await else {
        return;
    };
    let env = [
        ("TIDEWAY_BUS__KIND", "rabbitmq".to_owned()),
        ("TIDEWAY_BUS__RABBITMQ_URL", config.bus.rabbitmq_url.clone()),
        ("TIDEWAY_BUS__ROOT", config.bus.root.clone()),
        ("TIDEWAY_BUS__RABBITMQ_QUEUE_EXPIRY_MS", "60000".to_owned()),
    ];
    let env: Vec<(String, String)> = env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    let system = Distributed::start_with(&env).await;
    checkout_outcomes(&system.gateway).await;
    if let Some(stores) = system.stores() {
        let pending = invariants::wait_terminal(&stores.ordering, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(pending, 0, "every order is terminal");
        let report = invariants::settle(&stores, Duration::from_secs(30))
            .await
            .unwrap();
        assert!(report.holds(), "{report:#?}");
    }
    let lines = system.stop().await;
    // Every process with a bus connected to the broker (under the prefix in force: the
    // shape's own subject root, which is also unique to this test).
    let prefixes: std::collections::BTreeSet<String> = lines
        .iter()
        .filter(|l| l["message"] == "Connected to RabbitMQ.")
        .filter_map(|l| l["prefix"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(prefixes.len(), 1, "{prefixes:?}");
    let connected = lines
        .iter()
        .filter(|l| l["message"] == "Connected to RabbitMQ.")
        .count();
    assert!(
        connected >= 6,
        "the services and the gateway connected: {connected}"
    );
    let used = prefixes.clone();
    // The probe declared the exchanges under the test's own prefix too.
    let mut prefixes = prefixes;
    prefixes.insert(config.bus.root.clone());
    for prefix in prefixes {
        let mut config = config.clone();
        config.bus.root = prefix.clone();
        let bus = tideway::rabbit_bus_of(&config, false).await.unwrap();
        if used.contains(&prefix) {
            let inventory = SubscribeOptions::new("inventory", "tideway.inventory.reserve-stock");
            assert_eq!(
                bus.backlog(&inventory).await.unwrap(),
                0,
                "inventory drained"
            );
        }
        bus.delete(&[]).await.unwrap();
        bus.shutdown().await;
    }
}
