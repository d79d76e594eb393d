use std::time::Duration;

use tower::{Layer, ServiceExt};
use tower_test::mock::{self, Handle, Mock};

use super::*;

type Classify = fn(Result<&&'static str, &BoxError>) -> bool;
type Svc = CircuitBreaker<Mock<&'static str, &'static str>, Classify>;

fn settings() -> BreakerSettings {
    BreakerSettings {
        failure_rate: 0.5,
        minimum_calls: 4,
        window: Duration::from_secs(10),
        cool_down: Duration::from_secs(5),
        half_open_probes: 2,
    }
}

fn breaker(settings: BreakerSettings) -> (Svc, Handle<&'static str, &'static str>) {
    let (inner, handle) = mock::pair();
    let classify: Classify = |result| result.is_err();
    let layer = CircuitBreakerLayer::new("catalog-0", settings, classify).unwrap();
    (layer.layer(inner), handle)
}

/// One call that reaches the upstream, answered with success or failure.
async fn call(svc: &Svc, handle: &mut Handle<&'static str, &'static str>, ok: bool) {
    let pending = tokio::spawn(svc.clone().oneshot("req"));
    let (_req, reply) = handle
        .next_request()
        .await
        .expect("the call reaches the upstream");
    if ok {
        reply.send_response("ok");
    } else {
        reply.send_error("boom");
    }
    let result = pending.await.unwrap();
    assert_eq!(result.is_ok(), ok);
}

/// A call that must be refused at once, without the upstream answering.
async fn refused(svc: &Svc) {
    let result = tokio::time::timeout(Duration::from_millis(1), svc.clone().oneshot("req"))
        .await
        .expect("a refusal is immediate");
    let error = result.unwrap_err();
    let open = error
        .downcast_ref::<BreakerOpen>()
        .expect("refused by the breaker");
    assert_eq!(&*open.upstream, "catalog-0");
}

#[test]
fn bad_settings_are_refused_by_name() {
    let classify: Classify = |result| result.is_err();
    let cases = [
        (
            "failure_rate",
            BreakerSettings {
                failure_rate: 0.0,
                ..settings()
            },
        ),
        (
            "failure_rate",
            BreakerSettings {
                failure_rate: 1.5,
                ..settings()
            },
        ),
        (
            "failure_rate",
            BreakerSettings {
                failure_rate: f64::NAN,
                ..settings()
            },
        ),
        (
            "minimum_calls",
            BreakerSettings {
                minimum_calls: 0,
                ..settings()
            },
        ),
        (
            "window",
            BreakerSettings {
                window: Duration::from_millis(1),
                ..settings()
            },
        ),
        (
            "cool_down",
            BreakerSettings {
                cool_down: Duration::ZERO,
                ..settings()
            },
        ),
        (
            "half_open_probes",
            BreakerSettings {
                half_open_probes: 0,
                ..settings()
            },
        ),
    ];
    for (parameter, bad) in cases {
        let error = CircuitBreakerLayer::new("x", bad, classify).unwrap_err();
        assert_eq!(error.parameter, parameter);
    }
    assert!(CircuitBreakerLayer::new("x", BreakerSettings::default(), classify).is_ok());
}

#[tokio::test(start_paused = true)]
async fn failures_below_the_minimum_calls_keep_it_closed() {
    let (svc, mut handle) = breaker(settings());
    for _ in 0..3 {
        call(&svc, &mut handle, false).await;
    }
    assert_eq!(svc.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_failure_rate_at_the_threshold_opens_it_and_calls_fail_fast() {
    let (svc, mut handle) = breaker(settings());
    call(&svc, &mut handle, true).await;
    call(&svc, &mut handle, false).await;
    call(&svc, &mut handle, true).await;
    assert_eq!(
        svc.state(),
        BreakerState::Closed,
        "3 calls: below the minimum"
    );
    call(&svc, &mut handle, false).await;
    assert_eq!(svc.state(), BreakerState::Open, "2 of 4 failed");
    refused(&svc).await;
    refused(&svc).await;
}

#[tokio::test(start_paused = true)]
async fn failures_that_left_the_window_no_longer_count() {
    let (svc, mut handle) = breaker(settings());
    for _ in 0..3 {
        call(&svc, &mut handle, false).await;
    }
    tokio::time::advance(Duration::from_secs(11)).await;
    call(&svc, &mut handle, false).await;
    assert_eq!(
        svc.state(),
        BreakerState::Closed,
        "only one failure is recent"
    );
}

#[tokio::test(start_paused = true)]
async fn after_the_cool_down_probes_that_succeed_close_it() {
    let (svc, mut handle) = breaker(settings());
    for _ in 0..4 {
        call(&svc, &mut handle, false).await;
    }
    assert_eq!(svc.state(), BreakerState::Open);
    tokio::time::advance(Duration::from_millis(4_900)).await;
    refused(&svc).await;
    tokio::time::advance(Duration::from_millis(100)).await;

    // Two probes may be in flight; a third is refused while they are.
    let first = tokio::spawn(svc.clone().oneshot("probe"));
    let (_, first_reply) = handle.next_request().await.unwrap();
    assert_eq!(svc.state(), BreakerState::HalfOpen);
    let second = tokio::spawn(svc.clone().oneshot("probe"));
    let (_, second_reply) = handle.next_request().await.unwrap();
    refused(&svc).await;
    first_reply.send_response("ok");
    first.await.unwrap().unwrap();
    assert_eq!(svc.state(), BreakerState::HalfOpen);
    second_reply.send_response("ok");
    second.await.unwrap().unwrap();
    assert_eq!(svc.state(), BreakerState::Closed);
    call(&svc, &mut handle, true).await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_opens_it_for_another_cool_down() {
    let (svc, mut handle) = breaker(settings());
    for _ in 0..4 {
        call(&svc, &mut handle, false).await;
    }
    tokio::time::advance(Duration::from_secs(5)).await;
    call(&svc, &mut handle, false).await;
    assert_eq!(svc.state(), BreakerState::Open);
    refused(&svc).await;
    tokio::time::advance(Duration::from_secs(5)).await;
    call(&svc, &mut handle, true).await;
    call(&svc, &mut handle, true).await;
    assert_eq!(svc.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_probe_frees_its_slot() {
    let (svc, mut handle) = breaker(BreakerSettings {
        half_open_probes: 1,
        ..settings()
    });
    for _ in 0..4 {
        call(&svc, &mut handle, false).await;
    }
    tokio::time::advance(Duration::from_secs(5)).await;
    let probe = tokio::spawn(svc.clone().oneshot("probe"));
    let (_, _reply) = handle.next_request().await.unwrap();
    refused(&svc).await;
    probe.abort();
    let _ = probe.await;
    call(&svc, &mut handle, true).await;
    assert_eq!(svc.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn the_http_classifier_counts_5xx_and_errors_but_not_4xx() {
    let ok = http::Response::new(());
    let bad_request = http::Response::builder().status(400).body(()).unwrap();
    let unavailable = http::Response::builder().status(503).body(()).unwrap();
    let error: BoxError = "reset".into();
    assert!(!http_5xx_or_error(Ok(&ok)));
    assert!(!http_5xx_or_error(Ok(&bad_request)));
    assert!(http_5xx_or_error(Ok(&unavailable)));
    assert!(http_5xx_or_error::<()>(Err(&error)));
    // A refusal for a dependency that is down is no failure of the replica; the header on
    // another status changes nothing.
    let refused = http::Response::builder()
        .status(503)
        .header(DEPENDENCY_DOWN, "inventory")
        .body(())
        .unwrap();
    assert!(refused_for_a_dependency(&refused));
    assert!(!http_5xx_or_error(Ok(&refused)));
    let broken = http::Response::builder()
        .status(500)
        .header(DEPENDENCY_DOWN, "inventory")
        .body(())
        .unwrap();
    assert!(http_5xx_or_error(Ok(&broken)));
}

#[tokio::test(start_paused = true)]
async fn the_state_gauge_follows_the_breaker() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // Handles are resolved when the layer is built, so only construction needs the recorder.
    let (svc, mut handle) = metrics::with_local_recorder(&recorder, || breaker(settings()));
    let gauge = || {
        snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .find(|(key, ..)| key.key().name() == "tideway_breaker_state")
            .map(|(key, _, _, value)| {
                let labels: Vec<_> = key
                    .key()
                    .labels()
                    .map(|l| (l.key().to_owned(), l.value().to_owned()))
                    .collect();
                assert_eq!(labels, [("upstream".to_owned(), "catalog-0".to_owned())]);
                match value {
                    DebugValue::Gauge(value) => value.into_inner(),
                    other => panic!("not a gauge: {other:?}"),
                }
            })
            .expect("the gauge is registered")
    };
    assert_eq!(gauge(), 0.0);
    for _ in 0..4 {
        call(&svc, &mut handle, false).await;
    }
    assert_eq!(gauge(), 2.0);
    tokio::time::advance(Duration::from_secs(5)).await;
    let probe = tokio::spawn(svc.clone().oneshot("probe"));
    let (_, reply) = handle.next_request().await.unwrap();
    assert_eq!(gauge(), 1.0);
    reply.send_response("ok");
    probe.await.unwrap().unwrap();
}
