use std::time::Duration;

use axum::{Router, routing::get};
use futures_util::StreamExt as _;
use http::{HeaderMap, StatusCode};

use crate::{Body, ClientError, JsonClient, Transport};

fn router() -> Router {
    Router::new()
        .route(
            "/hello",
            get(|| async { axum::Json(serde_json::json!({"hi": 1})) }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        )
        .route(
            // The head and the first bytes at once, then nothing: a stalled body.
            "/stalled-body",
            get(|| async {
                let first = futures_util::stream::once(async {
                    Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"{\"hi\":"))
                });
                Body::from_stream(first.chain(futures_util::stream::pending()))
            }),
        )
}

async fn served() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router()).await });
    format!("http://{addr}")
}

#[tokio::test]
async fn same_answers_in_process_and_over_http() {
    let base = served().await;
    let transports = [
        Transport::in_process("t", router(), Duration::from_secs(1)),
        Transport::http("t", &base, Duration::from_secs(1)).unwrap(),
    ];
    for transport in transports {
        let client = JsonClient::new(transport.clone());
        let value: serde_json::Value = client.get("/hello", &HeaderMap::new()).await.unwrap();
        assert_eq!(value["hi"], 1, "{transport:?}");
        let err = client
            .get::<serde_json::Value>("/missing", &HeaderMap::new())
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(StatusCode::NOT_FOUND));
    }
}

#[tokio::test]
async fn a_slow_service_times_out() {
    let transport = Transport::in_process("t", router(), Duration::from_millis(50));
    let err = JsonClient::new(transport)
        .get::<String>("/slow", &HeaderMap::new())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Timeout { .. }));
    assert!(err.is_retryable());
}

#[tokio::test]
async fn the_deadline_covers_the_answer_body() {
    let base = served().await;
    let transports = [
        Transport::in_process("t", router(), Duration::from_millis(200)),
        Transport::http("t", &base, Duration::from_millis(200)).unwrap(),
    ];
    for transport in transports {
        let started = tokio::time::Instant::now();
        // A generous outer bound only so that a regression fails instead of hanging.
        let result = tokio::time::timeout(
            Duration::from_secs(10),
            JsonClient::new(transport.clone())
                .get::<serde_json::Value>("/stalled-body", &HeaderMap::new()),
        )
        .await
        .expect("the call ends by its own deadline");
        let err = result.unwrap_err();
        assert!(
            matches!(err, ClientError::Timeout { .. }),
            "{transport:?}: {err:?}"
        );
        assert!(started.elapsed() >= Duration::from_millis(200));
    }
}

#[tokio::test]
async fn an_unreachable_service_is_a_connect_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let transport =
        Transport::http("t", &format!("http://{addr}"), Duration::from_secs(1)).unwrap();
    let err = JsonClient::new(transport)
        .get::<String>("/hello", &HeaderMap::new())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
}

#[test]
fn base_urls_must_be_plain_http_with_a_host() {
    for bad in ["not a url", "/just/a/path", "https://example.com"] {
        let err = Transport::http("t", bad, Duration::from_secs(1)).unwrap_err();
        assert!(
            matches!(err, ClientError::InvalidRequest(_)),
            "{bad}: {err:?}"
        );
    }
}
