use std::time::Duration;

use axum::{Router, body::Body, routing::get};
use http::{Request, StatusCode};
use tideway_resilience::{FaultHandle, FaultInjectionLayer, Faults, LoadShedLayer, RateLimitLayer};
use tower::ServiceExt;

fn by_client(req: &Request<Body>) -> Option<String> {
    req.headers()
        .get("x-client")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn get_as(client: &str) -> Request<Body> {
    Request::get("/items")
        .header("x-client", client)
        .body(Body::empty())
        .expect("a valid request")
}

#[tokio::test]
async fn shedding_and_rate_limits_wrap_a_router_without_handle_error() {
    let limit =
        RateLimitLayer::<String, _>::new("api", 2, Duration::from_secs(60), by_client).unwrap();
    let shed = LoadShedLayer::new("api", 64, Duration::from_secs(1)).unwrap();
    // Router::layer only accepts layers whose service stays infallible: this compiling is
    // half the test.
    let app = Router::new()
        .route("/items", get(|| async { "items" }))
        .layer(limit)
        .layer(shed);

    for _ in 0..2 {
        let response = app.clone().oneshot(get_as("a")).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers().contains_key("ratelimit-remaining"));
    }
    let limited = app.clone().oneshot(get_as("a")).await.unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers().contains_key("retry-after"));
    assert_eq!(
        app.oneshot(get_as("b")).await.unwrap().status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn fault_injection_on_a_route_is_switched_while_serving() {
    let faults = FaultHandle::new();
    let route = get(|| async { "items" }).layer(
        tower::ServiceBuilder::new()
            .layer(axum::error_handling::HandleErrorLayer::new(
                |_: tower::BoxError| async { StatusCode::BAD_GATEWAY },
            ))
            .layer(FaultInjectionLayer::new(faults.clone())),
    );
    let app = Router::new().route("/items", route);
    assert_eq!(
        app.clone().oneshot(get_as("a")).await.unwrap().status(),
        StatusCode::OK
    );
    faults
        .set(Faults {
            abort_share: 1.0,
            ..Faults::default()
        })
        .unwrap();
    assert_eq!(
        app.clone().oneshot(get_as("a")).await.unwrap().status(),
        StatusCode::BAD_GATEWAY
    );
    faults.clear();
    assert_eq!(
        app.oneshot(get_as("a")).await.unwrap().status(),
        StatusCode::OK
    );
}
