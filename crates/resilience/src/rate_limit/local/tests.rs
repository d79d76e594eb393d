use std::{convert::Infallible, time::Duration};

use governor::clock::FakeRelativeClock;
use http::{Request, Response, StatusCode};
use tower::{Layer, ServiceExt};
use tower_test::mock;

use super::*;

type ByClient = fn(&Request<()>) -> Option<String>;

fn by_client(req: &Request<()>) -> Option<String> {
    req.headers()
        .get("x-client")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn request(client: Option<&str>) -> Request<()> {
    let mut req = Request::new(());
    if let Some(client) = client {
        req.headers_mut()
            .insert("x-client", client.parse().unwrap());
    }
    req
}

fn header(response: &Response<String>, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

/// Three requests per 3 s for each client, on a clock the test moves.
fn layer(clock: &FakeRelativeClock) -> RateLimitLayer<String, ByClient, FakeRelativeClock> {
    let key: ByClient = by_client;
    RateLimitLayer::with_clock("api", 3, Duration::from_secs(3), key, clock.clone()).unwrap()
}

/// A router stand-in that answers every request with 200 "ok".
fn ok_service()
-> impl tower::Service<Request<()>, Response = Response<String>, Error = Infallible, Future = impl Send>
+ Clone {
    tower::service_fn(|_: Request<()>| async { Ok::<_, Infallible>(Response::new("ok".into())) })
}

#[test]
fn bad_quotas_are_refused_by_name() {
    let key: ByClient = by_client;
    let error =
        RateLimitLayer::<String, _>::new("api", 0, Duration::from_secs(1), key).unwrap_err();
    assert_eq!(error.parameter, "burst");
    let error =
        RateLimitLayer::<String, _>::new("api", 10, Duration::from_millis(5), key).unwrap_err();
    assert_eq!(error.parameter, "per");
    assert!(RateLimitLayer::<String, _>::new("api", 10, Duration::from_secs(1), key).is_ok());
}

#[tokio::test]
async fn a_burst_passes_with_headers_and_the_next_request_gets_429() {
    let clock = FakeRelativeClock::default();
    let svc = layer(&clock).layer(ok_service());
    for remaining in ["2", "1", "0"] {
        let response = svc.clone().oneshot(request(Some("a"))).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header(&response, "ratelimit-limit").as_deref(), Some("3"));
        assert_eq!(
            header(&response, "ratelimit-remaining").as_deref(),
            Some(remaining)
        );
    }
    let response = svc.clone().oneshot(request(Some("a"))).await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.body(), "", "the upstream never answered it");
    assert_eq!(header(&response, "retry-after").as_deref(), Some("1"));
    assert_eq!(
        header(&response, "ratelimit-remaining").as_deref(),
        Some("0")
    );
    assert_eq!(header(&response, "ratelimit-reset").as_deref(), Some("3"));
}

#[tokio::test]
async fn keys_have_their_own_buckets_and_a_request_without_key_is_not_limited() {
    let clock = FakeRelativeClock::default();
    let svc = layer(&clock).layer(ok_service());
    for _ in 0..3 {
        svc.clone().oneshot(request(Some("a"))).await.unwrap();
    }
    let other = svc.clone().oneshot(request(Some("b"))).await.unwrap();
    assert_eq!(other.status(), StatusCode::OK);
    for _ in 0..10 {
        let anonymous = svc.clone().oneshot(request(None)).await.unwrap();
        assert_eq!(anonymous.status(), StatusCode::OK);
        assert_eq!(header(&anonymous, "ratelimit-limit"), None);
    }
}

#[tokio::test]
async fn the_bucket_refills_one_request_per_interval() {
    let clock = FakeRelativeClock::default();
    let svc = layer(&clock).layer(ok_service());
    for _ in 0..3 {
        svc.clone().oneshot(request(Some("a"))).await.unwrap();
    }
    clock.advance(Duration::from_millis(999));
    let early = svc.clone().oneshot(request(Some("a"))).await.unwrap();
    assert_eq!(early.status(), StatusCode::TOO_MANY_REQUESTS);
    clock.advance(Duration::from_millis(1));
    let refilled = svc.clone().oneshot(request(Some("a"))).await.unwrap();
    assert_eq!(refilled.status(), StatusCode::OK);
    assert_eq!(
        header(&refilled, "ratelimit-remaining").as_deref(),
        Some("0")
    );
    assert_eq!(header(&refilled, "ratelimit-reset").as_deref(), Some("3"));
}

#[tokio::test]
async fn a_limited_request_never_reaches_the_mock() {
    let clock = FakeRelativeClock::default();
    let (inner, mut handle) = mock::pair::<Request<()>, Response<String>>();
    let svc = layer(&clock).layer(inner);
    for _ in 0..3 {
        let call = tokio::spawn(svc.clone().oneshot(request(Some("a"))));
        let (_, reply) = handle.next_request().await.unwrap();
        reply.send_response(Response::new("ok".into()));
        call.await.unwrap().unwrap();
    }
    let response = svc.clone().oneshot(request(Some("a"))).await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(handle.poll_request().is_pending());
}
