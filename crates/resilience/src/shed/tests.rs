use std::{convert::Infallible, task::Poll, time::Duration};

use tower::{Layer, ServiceExt};
use tower_test::mock;

use super::*;

fn layer(max_in_flight: usize) -> LoadShedLayer {
    LoadShedLayer::new("catalog", max_in_flight, Duration::from_millis(1_500)).unwrap()
}

fn is_shed(response: &Response<String>) -> bool {
    response.status() == StatusCode::SERVICE_UNAVAILABLE && response.headers()[RETRY_AFTER] == "2"
}

#[test]
fn a_zero_cap_is_refused() {
    let error = LoadShedLayer::new("catalog", 0, Duration::from_secs(1)).unwrap_err();
    assert_eq!(error.parameter, "max_in_flight");
}

#[test]
fn retry_after_is_whole_seconds_rounded_up() {
    assert_eq!(retry_after_seconds(Duration::ZERO), 1);
    assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
    assert_eq!(retry_after_seconds(Duration::from_secs(2)), 2);
    assert_eq!(retry_after_seconds(Duration::from_millis(2_001)), 3);
}

#[tokio::test]
async fn a_request_over_the_cap_gets_503_at_once_and_never_reaches_the_service() {
    let (mut svc, mut handle) = mock::spawn_layer::<Request<()>, Response<String>, _>(layer(1));
    assert!(svc.poll_ready().is_ready());
    let first = svc.call(Request::new(()));
    let (_, reply) = handle.next_request().await.unwrap();

    assert!(svc.poll_ready().is_ready(), "the shedder is always ready");
    let response = svc.call(Request::new(())).await.unwrap();
    assert!(is_shed(&response), "{response:?}");
    assert!(
        matches!(handle.poll_request(), Poll::Pending),
        "no work started"
    );

    reply.send_response(Response::new("ok".to_owned()));
    assert_eq!(first.await.unwrap().into_body(), "ok");
    assert!(svc.poll_ready().is_ready());
    let next = svc.call(Request::new(()));
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_response(Response::new("again".into()));
    assert_eq!(next.await.unwrap().into_body(), "again");
}

#[tokio::test]
async fn a_service_that_is_not_ready_sheds_the_call() {
    let (mut svc, mut handle) = mock::spawn_layer::<Request<()>, Response<String>, _>(layer(8));
    handle.allow(0);
    assert!(
        svc.poll_ready().is_ready(),
        "ready even though the inner service is not"
    );
    let response = svc.call(Request::new(())).await.unwrap();
    assert!(is_shed(&response), "{response:?}");

    handle.allow(1);
    assert!(svc.poll_ready().is_ready());
    let call = svc.call(Request::new(()));
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_response(Response::new("served".into()));
    assert_eq!(call.await.unwrap().into_body(), "served");
}

#[tokio::test]
async fn an_infallible_router_stays_infallible() {
    let router = tower::service_fn(|_: Request<()>| async {
        Ok::<_, Infallible>(Response::new(String::from("page")))
    });
    let svc = layer(4).layer(router);
    let response: Result<Response<String>, Infallible> = svc.oneshot(Request::new(())).await;
    assert_eq!(response.unwrap().into_body(), "page");
}
