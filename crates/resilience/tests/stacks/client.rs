use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tideway_resilience::{
    BoxError, BreakerSettings, BulkheadLayer, CircuitBreakerLayer, HttpDeadlineLayer, RetryLayer,
    RetrySettings, http_5xx_or_error,
};
use tower::{ServiceBuilder, ServiceExt};
use tower_test::mock;

#[tokio::test(start_paused = true)]
async fn deadline_retry_breaker_and_bulkhead_compose_for_one_upstream() {
    let (transport, mut handle) = mock::pair::<Request<Full<Bytes>>, Response<Full<Bytes>>>();
    let attempts = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&attempts);
    tokio::spawn(async move {
        while let Some((_, reply)) = handle.next_request().await {
            // The first attempt of each call fails, the retry succeeds.
            if seen.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
                reply.send_response(
                    Response::builder()
                        .status(503)
                        .body(Full::default())
                        .unwrap(),
                );
            } else {
                reply.send_response(Response::new(Full::new(Bytes::from("item"))));
            }
        }
    });
    let breaker =
        CircuitBreakerLayer::new("catalog-0", BreakerSettings::default(), http_5xx_or_error)
            .unwrap();
    let client = ServiceBuilder::new()
        .layer(HttpDeadlineLayer::new(Duration::from_secs(2)).unwrap())
        .layer(RetryLayer::new("catalog", RetrySettings::default()).unwrap())
        .layer(breaker.clone())
        .layer(BulkheadLayer::new("catalog", 8, 8, Duration::from_millis(10)).unwrap())
        .service(transport);

    let request = Request::get("/items/7")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = client.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e: BoxError| e)
        .unwrap();
    assert_eq!(body.to_bytes(), "item");
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
}
