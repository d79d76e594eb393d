//! The balancer against real HTTP servers on loopback (axum on port 0), each replica's
//! behaviour set by the test.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Router, extract::State, http::StatusCode, routing::get};
use http::Request;
use tideway_client::{Body, ClientError, Transport};
use tideway_discovery::Instance;

use super::*;
use crate::config::EjectionConfig;

/// A replica whose answers the test controls.
#[derive(Clone)]
struct Replica {
    id: String,
    address: String,
    /// Status of `GET /work` (200 by default).
    status: Arc<AtomicU16>,
    /// Status of `GET /health/ready`.
    health: Arc<AtomicU16>,
    /// Added latency of `/work`, in milliseconds.
    delay_ms: Arc<AtomicU64>,
    /// Calls of `/work` received.
    calls: Arc<AtomicUsize>,
}

async fn replica(id: &str) -> Replica {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = format!("http://{}", listener.local_addr().expect("addr"));
    let replica = Replica {
        id: id.to_owned(),
        address,
        status: Arc::new(AtomicU16::new(200)),
        health: Arc::new(AtomicU16::new(200)),
        delay_ms: Arc::new(AtomicU64::new(0)),
        calls: Arc::new(AtomicUsize::new(0)),
    };
    let app = Router::new()
        .route(
            "/work",
            get(|State(r): State<Replica>| async move {
                r.calls.fetch_add(1, Ordering::SeqCst);
                let delay = r.delay_ms.load(Ordering::SeqCst);
                if delay > 0 {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                }
                StatusCode::from_u16(r.status.load(Ordering::SeqCst)).unwrap_or(StatusCode::OK)
            }),
        )
        .route(
            "/health/ready",
            get(|State(r): State<Replica>| async move {
                StatusCode::from_u16(r.health.load(Ordering::SeqCst)).unwrap_or(StatusCode::OK)
            }),
        )
        .with_state(replica.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    replica
}

fn instance(replica: &Replica) -> Instance {
    Instance::new("svc", replica.id.clone(), replica.address.clone())
}

fn quiet_config() -> BalanceConfig {
    BalanceConfig {
        health_interval_ms: 50,
        retry: crate::config::RetryConfig {
            max_retries: 0,
            ..Default::default()
        },
        ..BalanceConfig::default()
    }
}

async fn get_work(transport: &Transport) -> Result<StatusCode, ClientError> {
    let request = Request::get("/work").body(Body::empty()).expect("request");
    transport.send(request).await.map(|r| r.status())
}

fn transport_of(balancer: &Balancer, config: &BalanceConfig) -> Transport {
    crate::transport(balancer, config, Duration::from_secs(5)).expect("transport")
}

#[tokio::test]
async fn p2c_sends_little_to_a_slow_replica() {
    let fast = replica("fast").await;
    let other = replica("other").await;
    let slow = replica("slow").await;
    slow.delay_ms.store(60, Ordering::SeqCst);
    let config = quiet_config();
    let balancer = Balancer::fixed(
        "svc",
        vec![instance(&fast), instance(&other), instance(&slow)],
        config.clone(),
    );
    let transport = transport_of(&balancer, &config);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let transport = transport.clone();
        tasks.spawn(async move {
            for _ in 0..75 {
                assert_eq!(get_work(&transport).await.expect("call"), StatusCode::OK);
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("task");
    }
    let slow_calls = slow.calls.load(Ordering::SeqCst);
    assert!(slow_calls < 30, "the slow replica got {slow_calls} of 300");
    let status = balancer.status();
    assert_eq!(status.instances.len(), 3);
    let total: u64 = status.instances.iter().map(|i| i.requests_total).sum();
    assert_eq!(total, 300);
    balancer.shutdown().await;
}

#[tokio::test]
async fn round_robin_spreads_evenly_whatever_the_latency() {
    let replicas = [replica("a").await, replica("b").await, replica("c").await];
    replicas[2].delay_ms.store(20, Ordering::SeqCst);
    let config = BalanceConfig {
        policy: Policy::RoundRobin,
        ..quiet_config()
    };
    let balancer = Balancer::fixed(
        "svc",
        replicas.iter().map(instance).collect(),
        config.clone(),
    );
    let transport = transport_of(&balancer, &config);
    for _ in 0..30 {
        get_work(&transport).await.expect("call");
    }
    for replica in &replicas {
        assert_eq!(replica.calls.load(Ordering::SeqCst), 10, "{}", replica.id);
    }
    balancer.shutdown().await;
}

#[tokio::test]
async fn a_failing_replica_is_ejected_but_never_more_than_half() {
    let good = replica("good").await;
    let bad = replica("bad").await;
    bad.status.store(500, Ordering::SeqCst);
    let config = BalanceConfig {
        policy: Policy::RoundRobin,
        ejection: EjectionConfig {
            consecutive_failures: 3,
            base_ms: 60_000,
            max_ms: 60_000,
            max_share: 0.5,
        },
        ..quiet_config()
    };
    let balancer = Balancer::fixed("svc", vec![instance(&good), instance(&bad)], config.clone());
    let transport = transport_of(&balancer, &config);
    // Round robin alternates: the third failure of `bad` ejects it.
    let mut failures = 0;
    for _ in 0..6 {
        if get_work(&transport).await.expect("answered") != StatusCode::OK {
            failures += 1;
        }
    }
    assert_eq!(failures, 3);
    let status = balancer.status();
    let of = |id: &str| {
        status
            .instances
            .iter()
            .find(|i| i.id == id)
            .cloned()
            .expect("listed")
    };
    assert!(of("bad").ejected);
    assert_eq!(of("bad").ejections_total, 1);
    assert_eq!(of("bad").errors_total, 3);
    // From now on every call goes to the good one.
    for _ in 0..20 {
        assert_eq!(get_work(&transport).await.expect("call"), StatusCode::OK);
    }
    assert_eq!(bad.calls.load(Ordering::SeqCst), 3);

    // Now the good one fails too: with one of two already ejected, it stays in rotation.
    good.status.store(500, Ordering::SeqCst);
    for _ in 0..10 {
        assert_eq!(
            get_work(&transport).await.expect("answered"),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
    let status = balancer.status();
    assert_eq!(status.instances.iter().filter(|i| i.ejected).count(), 1);
    balancer.shutdown().await;
}

#[tokio::test]
async fn a_replica_failing_its_health_check_gets_no_calls_until_it_passes() {
    let a = replica("a").await;
    let b = replica("b").await;
    b.health.store(503, Ordering::SeqCst);
    let config = quiet_config();
    let balancer = Balancer::fixed("svc", vec![instance(&a), instance(&b)], config.clone());
    let transport = transport_of(&balancer, &config);
    wait_for(|| {
        balancer
            .status()
            .instances
            .iter()
            .any(|i| i.id == "b" && !i.ready)
    })
    .await;
    let before = b.calls.load(Ordering::SeqCst);
    for _ in 0..20 {
        get_work(&transport).await.expect("call");
    }
    assert_eq!(b.calls.load(Ordering::SeqCst), before);
    b.health.store(200, Ordering::SeqCst);
    wait_for(|| balancer.status().instances.iter().all(|i| i.ready)).await;
    balancer.shutdown().await;
}

/// A service is available while any replica is ready: one restarting (its health check
/// failing, then its port dead) leaves it available; all of them down, or none registered,
/// does not.
#[tokio::test]
async fn available_while_any_replica_is_ready() {
    let a = replica("a").await;
    let b = replica("b").await;
    let config = quiet_config();
    let balancer = Balancer::fixed("svc", vec![instance(&a), instance(&b)], config);
    assert!(balancer.available(), "registered once ready");
    b.health.store(503, Ordering::SeqCst);
    wait_for(|| {
        balancer
            .status()
            .instances
            .iter()
            .any(|i| i.id == "b" && !i.ready)
    })
    .await;
    assert!(balancer.available(), "a is still ready");
    a.health.store(503, Ordering::SeqCst);
    wait_for(|| !balancer.available()).await;
    b.health.store(200, Ordering::SeqCst);
    wait_for(|| balancer.available()).await;
    balancer.shutdown().await;

    let empty = Balancer::fixed("svc", Vec::new(), quiet_config());
    assert!(!empty.available(), "no replica registered");
    empty.shutdown().await;
}

#[tokio::test]
async fn a_retry_lands_on_another_replica() {
    let a = replica("a").await;
    let b = replica("b").await;
    b.status.store(503, Ordering::SeqCst);
    let config = BalanceConfig {
        policy: Policy::RoundRobin,
        retry: crate::config::RetryConfig {
            max_retries: 1,
            min_delay_ms: 1,
            min_retries_per_sec: 100,
            ..Default::default()
        },
        ..quiet_config()
    };
    let balancer = Balancer::fixed("svc", vec![instance(&a), instance(&b)], config.clone());
    let transport = transport_of(&balancer, &config);
    for _ in 0..4 {
        assert_eq!(get_work(&transport).await.expect("call"), StatusCode::OK);
    }
    assert!(b.calls.load(Ordering::SeqCst) >= 1, "b was tried");
    balancer.shutdown().await;
}

#[tokio::test]
async fn no_replica_is_unavailable_and_a_dead_one_a_connect_error() {
    let config = quiet_config();
    let empty = Balancer::fixed("svc", Vec::new(), config.clone());
    let err = get_work(&transport_of(&empty, &config))
        .await
        .expect_err("nothing to call");
    assert!(matches!(err, ClientError::Unavailable { .. }), "{err:?}");
    assert!(err.is_retryable());

    // A port nothing listens on.
    let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = format!("http://{}", socket.local_addr().expect("addr"));
    drop(socket);
    let dead = Balancer::fixed(
        "svc",
        vec![Instance::new("svc", "dead", address)],
        config.clone(),
    );
    let err = get_work(&transport_of(&dead, &config))
        .await
        .expect_err("refused");
    assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
    empty.shutdown().await;
    dead.shutdown().await;
}

#[tokio::test]
async fn the_deadline_covers_the_call() {
    let slow = replica("slow").await;
    slow.delay_ms.store(2_000, Ordering::SeqCst);
    let config = quiet_config();
    let balancer = Balancer::fixed("svc", vec![instance(&slow)], config.clone());
    let transport =
        crate::transport(&balancer, &config, Duration::from_millis(100)).expect("transport");
    let err = get_work(&transport).await.expect_err("too slow");
    assert!(matches!(err, ClientError::Timeout { .. }), "{err:?}");
    balancer.shutdown().await;
}

async fn wait_for(mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_version_balancer_sends_only_to_replicas_of_its_version() {
    let (v1a, v1b, v2) = (
        replica("v1-a").await,
        replica("v1-b").await,
        replica("v2-a").await,
    );
    let registry = tideway_discovery::StaticRegistry::new([
        instance(&v1a).with_version("v1"),
        instance(&v1b).with_version("v1"),
        instance(&v2).with_version("v2"),
    ])
    .expect("registry");
    let balancers = crate::Balancers::new(Arc::new(registry), quiet_config()).expect("balancers");
    let to_v2 = balancers
        .transport_version("svc", "v2", Duration::from_secs(5))
        .await
        .expect("v2 transport");
    let to_v1 = balancers
        .transport_version("svc", "v1", Duration::from_secs(5))
        .await
        .expect("v1 transport");
    for _ in 0..20 {
        assert_eq!(get_work(&to_v2).await.expect("call"), StatusCode::OK);
        assert_eq!(get_work(&to_v1).await.expect("call"), StatusCode::OK);
    }
    assert_eq!(v2.calls.load(Ordering::SeqCst), 20);
    assert_eq!(
        v1a.calls.load(Ordering::SeqCst) + v1b.calls.load(Ordering::SeqCst),
        20
    );
    let names: Vec<String> = balancers
        .status()
        .await
        .into_iter()
        .map(|s| s.service)
        .collect();
    assert_eq!(names, ["svc@v1", "svc@v2"]);
    balancers.shutdown().await;
}
