use std::convert::Infallible;

use tokio::time::Instant;
use tower::ServiceExt;
use tower_test::mock;

use super::*;

fn ok_service()
-> impl Service<Request<()>, Response = Response<String>, Error = Infallible, Future = impl Send> + Clone
{
    tower::service_fn(|_: Request<()>| async { Ok::<_, Infallible>(Response::new("ok".into())) })
}

fn injected(
    handle: &FaultHandle,
) -> FaultInjection<
    impl Service<Request<()>, Response = Response<String>, Error = Infallible, Future = impl Send>
    + Clone,
> {
    FaultInjectionLayer::new(handle.clone()).layer(ok_service())
}

#[test]
fn bad_settings_are_refused_and_the_old_setting_stays() {
    let handle = FaultHandle::new();
    let cases = [
        (
            "latency_share",
            Faults {
                latency_share: 1.5,
                ..Faults::default()
            },
        ),
        (
            "error_share",
            Faults {
                error_share: -0.5,
                ..Faults::default()
            },
        ),
        (
            "abort_share",
            Faults {
                abort_share: f64::NAN,
                ..Faults::default()
            },
        ),
        (
            "error_status",
            Faults {
                error_status: StatusCode::OK,
                ..Faults::default()
            },
        ),
    ];
    for (parameter, bad) in cases {
        assert_eq!(handle.set(bad).unwrap_err().parameter, parameter);
    }
    assert_eq!(*handle.current(), Faults::default());
}

#[tokio::test]
async fn nothing_is_injected_unless_configured() {
    let (inner, mut handle) = mock::pair::<Request<()>, Response<String>>();
    let svc = FaultInjectionLayer::new(FaultHandle::new()).layer(inner);
    let call = tokio::spawn(svc.oneshot(Request::new(())));
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_response(Response::new("served".into()));
    assert_eq!(call.await.unwrap().unwrap().into_body(), "served");
}

#[tokio::test]
async fn an_error_status_for_every_request_never_reaches_the_service() {
    let (inner, mut handle) = mock::pair::<Request<()>, Response<String>>();
    let faults = FaultHandle::new();
    faults
        .set(Faults {
            error_share: 1.0,
            error_status: StatusCode::BAD_GATEWAY,
            ..Faults::default()
        })
        .unwrap();
    let svc = FaultInjectionLayer::new(faults).layer(inner);
    let response = svc.oneshot(Request::new(())).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let reached = handle.poll_request();
    assert!(
        !matches!(reached, std::task::Poll::Ready(Some(_))),
        "the service got the request"
    );
}

#[tokio::test]
async fn an_abort_fails_the_call_with_a_connection_style_error() {
    let faults = FaultHandle::new();
    faults
        .set(Faults {
            abort_share: 1.0,
            error_share: 1.0,
            ..Faults::default()
        })
        .unwrap();
    let error = injected(&faults)
        .oneshot(Request::new(()))
        .await
        .unwrap_err();
    assert!(error.downcast_ref::<FaultAborted>().is_some(), "{error}");
}

#[tokio::test(start_paused = true)]
async fn latency_delays_the_response_by_the_configured_time() {
    let faults = FaultHandle::new();
    let delay = Duration::from_millis(750);
    faults
        .set(Faults {
            latency_share: 1.0,
            latency: delay,
            ..Faults::default()
        })
        .unwrap();
    let start = Instant::now();
    let response = injected(&faults).oneshot(Request::new(())).await.unwrap();
    assert_eq!(response.into_body(), "ok");
    assert_eq!(start.elapsed(), delay);
}

#[tokio::test(start_paused = true)]
async fn faults_switch_at_run_time_for_a_service_already_built() {
    let faults = FaultHandle::new();
    let svc = injected(&faults);
    assert_eq!(
        svc.clone()
            .oneshot(Request::new(()))
            .await
            .unwrap()
            .status(),
        200
    );
    faults
        .set(Faults {
            error_share: 1.0,
            ..Faults::default()
        })
        .unwrap();
    assert_eq!(
        svc.clone()
            .oneshot(Request::new(()))
            .await
            .unwrap()
            .status(),
        503
    );
    faults.clear();
    assert_eq!(svc.oneshot(Request::new(())).await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_share_applies_to_about_that_share_of_requests() {
    let faults = FaultHandle::new();
    faults
        .set(Faults {
            error_share: 0.3,
            ..Faults::default()
        })
        .unwrap();
    let svc = injected(&faults);
    let mut failed = 0;
    for _ in 0..2_000 {
        if svc
            .clone()
            .oneshot(Request::new(()))
            .await
            .unwrap()
            .status()
            == 503
        {
            failed += 1;
        }
    }
    // Expected 600, standard deviation about 20: these bounds are 7 deviations wide.
    assert!((460..=740).contains(&failed), "{failed}");
}
