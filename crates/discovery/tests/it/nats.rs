//! The NATS KV registry: registration, clean stops, vanished replicas, newcomers.

use std::time::Duration;

use tideway_discovery::{DiscoveryConfig, DiscoveryKind, NatsConfig, Registry};

use crate::helpers::{TestBucket, TwoReplicas, ids, instance, wait_for};

/// What the watch latency of a clean stop must stay under.
const CLEAN_STOP: Duration = Duration::from_secs(2);

#[tokio::test]
async fn two_registered_instances_are_listed_and_watched() {
    let Some(bucket) = TestBucket::new(Duration::from_secs(5)).await else {
        return;
    };
    let TwoReplicas {
        first: one,
        second: _two,
        caller,
        a,
        b,
    } = bucket.two_replicas().await;
    let other = one
        .register(instance("basket", "x", 3))
        .await
        .expect("register x");

    let listed = caller.instances("catalog").await.expect("list");
    assert_eq!(ids(&listed), ["a", "b"]);
    assert_eq!(listed[0].address, "http://127.0.0.1:1");
    let watched = caller.watch("catalog").await.expect("watch");
    assert_eq!(
        ids(&watched.borrow()),
        ["a", "b"],
        "the receiver starts with the list"
    );
    assert_eq!(
        ids(&caller.instances("payment").await.expect("list")),
        Vec::<&str>::new()
    );

    for registration in [a, b, other] {
        registration.deregister().await.expect("deregister");
    }
    caller.shutdown().await;
}

#[tokio::test]
async fn a_clean_stop_reaches_watchers_within_two_seconds() {
    let Some(bucket) = TestBucket::new(Duration::from_secs(5)).await else {
        return;
    };
    let (server, caller) = (bucket.registry().await, bucket.registry().await);
    let a = server
        .register(instance("catalog", "a", 1))
        .await
        .expect("register a");
    let b = server
        .register(instance("catalog", "b", 2))
        .await
        .expect("register b");
    let mut watched = caller.watch("catalog").await.expect("watch");
    wait_for(&mut watched, CLEAN_STOP, "both listed", |l| {
        ids(l) == ["a", "b"]
    })
    .await;

    let start = std::time::Instant::now();
    a.deregister().await.expect("deregister a");
    wait_for(&mut watched, CLEAN_STOP, "a gone", |l| ids(l) == ["b"]).await;
    eprintln!("clean stop seen by the watcher after {:?}", start.elapsed());
    assert_eq!(
        ids(&caller.instances("catalog").await.expect("list")),
        ["b"]
    );

    b.deregister().await.expect("deregister b");
    caller.shutdown().await;
}

#[tokio::test]
async fn a_replica_that_stops_heartbeating_vanishes_within_the_ttl() {
    let ttl = Duration::from_millis(1_500);
    let Some(bucket) = TestBucket::new(ttl).await else {
        return;
    };
    let TwoReplicas {
        first: _killed,
        second: _alive,
        caller,
        a,
        b,
    } = bucket.two_replicas().await;
    let mut watched = caller.watch("catalog").await.expect("watch");
    wait_for(&mut watched, CLEAN_STOP, "both listed", |l| {
        ids(l) == ["a", "b"]
    })
    .await;

    // kill -9: the heartbeat stops, nothing deletes the key.
    a.abandon().await;
    let gone = wait_for(
        &mut watched,
        ttl + Duration::from_secs(1),
        "a expired",
        |l| ids(l) == ["b"],
    )
    .await;
    eprintln!("vanished heartbeat seen by the watcher after {gone:?} (ttl {ttl:?})");

    // The survivor's heartbeats keep it listed well past a TTL.
    tokio::time::sleep(ttl).await;
    assert_eq!(ids(&watched.borrow()), ["b"]);
    assert_eq!(
        ids(&caller.instances("catalog").await.expect("list")),
        ["b"]
    );
    // A watcher started now does not see the expired replica either.
    let late = caller.watch("catalog").await.expect("watch");
    assert_eq!(ids(&late.borrow()), ["b"]);

    b.deregister().await.expect("deregister b");
    caller.shutdown().await;
}

#[tokio::test]
async fn a_new_instance_appears_to_an_existing_watcher_promptly() {
    let Some(bucket) = TestBucket::new(Duration::from_secs(5)).await else {
        return;
    };
    let (server, caller) = (bucket.registry().await, bucket.registry().await);
    let mut watched = caller.watch("catalog").await.expect("watch");
    assert!(watched.borrow().is_empty());

    let start = std::time::Instant::now();
    let a = server
        .register(instance("catalog", "a", 1))
        .await
        .expect("register a");
    wait_for(&mut watched, CLEAN_STOP, "a listed", |l| ids(l) == ["a"]).await;
    eprintln!(
        "new instance seen by the watcher after {:?}",
        start.elapsed()
    );
    let b = server
        .register(instance("catalog", "b", 2).with_version("2.0.0"))
        .await
        .expect("register b");
    wait_for(&mut watched, CLEAN_STOP, "b listed", |l| {
        ids(l) == ["a", "b"]
    })
    .await;
    assert_eq!(watched.borrow()[1].version.as_deref(), Some("2.0.0"));

    a.deregister().await.expect("deregister a");
    b.deregister().await.expect("deregister b");
    caller.shutdown().await;
    assert!(watched.has_changed().is_err(), "shutdown stops the watcher");
}

#[tokio::test]
async fn connect_selects_the_configured_registry() {
    let Some(bucket) = TestBucket::new(Duration::from_secs(5)).await else {
        return;
    };
    let options = bucket.options();
    let nats = DiscoveryConfig {
        kind: DiscoveryKind::Nats,
        nats: NatsConfig {
            url: options.url.clone(),
            bucket: options.bucket.clone(),
            ..NatsConfig::default()
        },
        ..DiscoveryConfig::default()
    };
    let registry = tideway_discovery::connect(&nats).await.expect("nats");
    let a = registry
        .register(instance("catalog", "a", 1))
        .await
        .expect("register");
    let other = bucket.registry().await;
    assert_eq!(ids(&other.instances("catalog").await.expect("list")), ["a"]);
    a.deregister().await.expect("deregister");

    let fixed: DiscoveryConfig =
        serde_json::from_str(r#"{"kind":"static","urls":{"catalog":"http://127.0.0.1:8082"}}"#)
            .expect("parse");
    let registry = tideway_discovery::connect(&fixed).await.expect("static");
    assert_eq!(
        ids(&registry.instances("catalog").await.expect("list")),
        ["catalog-0"]
    );

    let mut bad = nats.clone();
    bad.nats.ttl_ms = 1;
    let err = tideway_discovery::connect(&bad)
        .await
        .expect_err("too short a ttl");
    assert!(err.to_string().contains("discovery.nats.ttl_ms"), "{err}");
}
