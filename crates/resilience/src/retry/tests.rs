use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tower::ServiceExt;
use tower_test::mock::{self, Handle};

use super::*;

type Req = Request<Full<Bytes>>;
type Res = Response<()>;

fn settings() -> RetrySettings {
    RetrySettings {
        max_retries: 2,
        min_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(10),
        factor: 2.0,
        budget_share: 0.2,
        budget_window: Duration::from_secs(10),
        min_retries_per_sec: 0,
    }
}

fn request(method: Method) -> Req {
    Request::builder()
        .method(method)
        .uri("/items/7")
        .body(Full::new(Bytes::from("x")))
        .unwrap()
}

fn status(code: u16) -> Result<Res, BoxError> {
    Ok(Response::builder().status(code).body(()).unwrap())
}

/// Answers every attempt with `answer(attempt_number)` (from 1) and counts the attempts.
fn upstream(
    mut handle: Handle<Req, Res>,
    answer: impl Fn(usize) -> Result<Res, BoxError> + Send + 'static,
) -> Arc<AtomicUsize> {
    let seen = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Some((req, reply)) = handle.next_request().await {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, "x", "the body is resent whole");
            match answer(count.fetch_add(1, Ordering::SeqCst) + 1) {
                Ok(response) => reply.send_response(response),
                Err(error) => reply.send_error(error),
            }
        }
    });
    seen
}

fn layer(settings: RetrySettings) -> RetryLayer {
    RetryLayer::new("catalog", settings).unwrap()
}

#[test]
fn bad_settings_are_refused_by_name() {
    let cases = [
        (
            "max_retries",
            RetrySettings {
                max_retries: 11,
                ..settings()
            },
        ),
        (
            "min_delay",
            RetrySettings {
                min_delay: Duration::ZERO,
                ..settings()
            },
        ),
        (
            "max_delay",
            RetrySettings {
                max_delay: Duration::from_micros(1),
                ..settings()
            },
        ),
        (
            "factor",
            RetrySettings {
                factor: 0.5,
                ..settings()
            },
        ),
        (
            "budget_share",
            RetrySettings {
                budget_share: 1.5,
                ..settings()
            },
        ),
        (
            "budget_share",
            RetrySettings {
                budget_share: -0.1,
                ..settings()
            },
        ),
        (
            "budget_window",
            RetrySettings {
                budget_window: Duration::from_millis(500),
                ..settings()
            },
        ),
        (
            "budget_window",
            RetrySettings {
                budget_window: Duration::from_secs(61),
                ..settings()
            },
        ),
        (
            "min_retries_per_sec",
            RetrySettings {
                min_retries_per_sec: u32::MAX,
                ..settings()
            },
        ),
    ];
    for (parameter, bad) in cases {
        assert_eq!(RetryLayer::new("x", bad).unwrap_err().parameter, parameter);
    }
    assert!(RetryLayer::new("x", RetrySettings::default()).is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_get_that_fails_once_is_retried_and_succeeds() {
    let (inner, handle) = mock::pair::<Req, Res>();
    let seen = upstream(handle, |n| {
        if n == 1 {
            Err("reset".into())
        } else {
            status(200)
        }
    });
    // Enough earlier traffic for the budget to allow a retry.
    let svc = layer(RetrySettings {
        min_retries_per_sec: 1,
        ..settings()
    })
    .layer(inner);
    let response = svc.oneshot(request(Method::GET)).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(seen.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn retries_stop_after_max_retries_with_the_last_outcome() {
    let (inner, handle) = mock::pair::<Req, Res>();
    let seen = upstream(handle, |_| status(503));
    let svc = layer(RetrySettings {
        min_retries_per_sec: 10,
        ..settings()
    })
    .layer(inner);
    let response = svc.oneshot(request(Method::PUT)).await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(
        seen.load(Ordering::SeqCst),
        3,
        "one attempt and two retries"
    );
}

#[tokio::test(start_paused = true)]
async fn a_post_is_not_retried_unless_it_carries_an_idempotency_key() {
    let (inner, handle) = mock::pair::<Req, Res>();
    let seen = upstream(handle, |_| Err("reset".into()));
    let svc = layer(RetrySettings {
        min_retries_per_sec: 10,
        ..settings()
    })
    .layer(inner);
    let error = svc
        .clone()
        .oneshot(request(Method::POST))
        .await
        .unwrap_err();
    assert_eq!(error.to_string(), "reset");
    assert_eq!(seen.load(Ordering::SeqCst), 1);

    let mut keyed = request(Method::POST);
    keyed
        .headers_mut()
        .insert("idempotency-key", "order-41".parse().unwrap());
    svc.oneshot(keyed).await.unwrap_err();
    assert_eq!(seen.load(Ordering::SeqCst), 1 + 3);
}

#[tokio::test(start_paused = true)]
async fn client_errors_and_successes_are_not_retried() {
    let (inner, handle) = mock::pair::<Req, Res>();
    let seen = upstream(handle, |n| status(if n == 1 { 404 } else { 429 }));
    let svc = layer(RetrySettings {
        min_retries_per_sec: 10,
        ..settings()
    })
    .layer(inner);
    assert_eq!(
        svc.clone()
            .oneshot(request(Method::GET))
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        svc.oneshot(request(Method::GET)).await.unwrap().status(),
        429
    );
    assert_eq!(seen.load(Ordering::SeqCst), 2);
}

/// Every replica would refuse the same for a dependency that is down: no retry.
#[tokio::test(start_paused = true)]
async fn a_refusal_for_a_dependency_that_is_down_is_not_retried() {
    let (inner, handle) = mock::pair::<Req, Res>();
    let seen = upstream(handle, |_| {
        Ok(Response::builder()
            .status(503)
            .header(crate::DEPENDENCY_DOWN, "inventory")
            .body(())
            .unwrap())
    });
    let svc = layer(RetrySettings {
        min_retries_per_sec: 10,
        ..settings()
    })
    .layer(inner);
    let response = svc.oneshot(request(Method::GET)).await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(seen.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn the_budget_caps_extra_traffic_at_its_share_during_a_total_outage() {
    let (inner, handle) = mock::pair::<Req, Res>();
    let seen = upstream(handle, |_| Err("connection refused".into()));
    let svc = layer(RetrySettings {
        max_retries: 3,
        ..settings()
    })
    .layer(inner);
    let requests = 500;
    for _ in 0..requests {
        svc.clone().oneshot(request(Method::GET)).await.unwrap_err();
    }
    let attempts = seen.load(Ordering::SeqCst);
    let retries = attempts - requests;
    // Without the budget every request would make 3 retries (1500 extra calls).
    assert_eq!(retries, requests / 5, "retries are 20% of requests");
}

#[tokio::test(start_paused = true)]
async fn the_reserve_allows_a_quiet_client_a_few_retries_per_second() {
    let (inner, handle) = mock::pair::<Req, Res>();
    let seen = upstream(handle, |_| Err("connection refused".into()));
    let settings = RetrySettings {
        budget_share: 0.0,
        min_retries_per_sec: 1,
        ..settings()
    };
    let svc = layer(settings).layer(inner);
    for _ in 0..20 {
        svc.clone().oneshot(request(Method::GET)).await.unwrap_err();
    }
    // A reserve of 1 per second over a 10 s window: 10 retries, then none.
    assert_eq!(seen.load(Ordering::SeqCst), 20 + 10);
}

#[tokio::test(start_paused = true)]
async fn backoff_waits_between_attempts_within_the_bounds() {
    let (inner, handle) = mock::pair::<Req, Res>();
    let _seen = upstream(handle, |_| status(502));
    let settings = RetrySettings {
        min_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(150),
        min_retries_per_sec: 10,
        ..settings()
    };
    let start = tokio::time::Instant::now();
    layer(settings)
        .layer(inner)
        .oneshot(request(Method::GET))
        .await
        .unwrap();
    let waited = start.elapsed();
    // Two retries: jitter adds up to one delay on top of each, capped by max_delay.
    assert!(waited >= Duration::from_millis(200), "{waited:?}");
    assert!(waited <= Duration::from_millis(2 * 300), "{waited:?}");
}
