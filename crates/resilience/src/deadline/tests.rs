use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::time::Instant;
use tower::{Layer, ServiceExt};
use tower_test::mock;

use super::*;

/// A body that sends one frame and then never another: a peer that stalls mid-body.
struct Stalling(Option<Bytes>);

impl Body for Stalling {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.0.take() {
            Some(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
            None => Poll::Pending,
        }
    }
}

fn is_deadline(error: &BoxError) -> bool {
    error.downcast_ref::<DeadlineExceeded>().is_some()
}

#[test]
fn a_zero_deadline_is_refused() {
    let error = DeadlineLayer::new(Duration::ZERO).unwrap_err();
    assert_eq!(error.parameter, "deadline");
    assert!(HttpDeadlineLayer::new(Duration::ZERO).is_err());
}

#[tokio::test(start_paused = true)]
async fn a_call_that_answers_in_time_passes_through() {
    let (inner, mut handle) = mock::pair::<&str, &str>();
    let svc = DeadlineLayer::new(Duration::from_secs(2))
        .unwrap()
        .layer(inner);
    let call = tokio::spawn(svc.oneshot("ping"));
    let (req, reply) = handle.next_request().await.unwrap();
    assert_eq!(req, "ping");
    tokio::time::sleep(Duration::from_millis(1_900)).await;
    reply.send_response("pong");
    assert_eq!(call.await.unwrap().unwrap(), "pong");
}

#[tokio::test(start_paused = true)]
async fn a_silent_call_fails_at_the_deadline() {
    let (inner, mut handle) = mock::pair::<&str, &str>();
    let svc = DeadlineLayer::new(Duration::from_secs(2))
        .unwrap()
        .layer(inner);
    let start = Instant::now();
    let call = tokio::spawn(svc.oneshot("ping"));
    let (_req, _reply) = handle.next_request().await.unwrap();
    let error = call.await.unwrap().unwrap_err();
    assert!(is_deadline(&error), "{error}");
    assert_eq!(start.elapsed(), Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn inner_errors_pass_through_unchanged() {
    let (inner, mut handle) = mock::pair::<&str, &str>();
    let svc = DeadlineLayer::new(Duration::from_secs(2))
        .unwrap()
        .layer(inner);
    let call = tokio::spawn(svc.oneshot("ping"));
    let (_req, reply) = handle.next_request().await.unwrap();
    reply.send_error("refused");
    let error = call.await.unwrap().unwrap_err();
    assert!(!is_deadline(&error));
    assert_eq!(error.to_string(), "refused");
}

#[tokio::test(start_paused = true)]
async fn a_stalled_head_fails_at_the_deadline() {
    let (inner, mut handle) = mock::pair::<http::Request<()>, http::Response<Stalling>>();
    let svc = HttpDeadlineLayer::new(Duration::from_secs(1))
        .unwrap()
        .layer(inner);
    let call = tokio::spawn(async move { svc.oneshot(http::Request::new(())).await.map(|_| ()) });
    let (_req, _reply) = handle.next_request().await.unwrap();
    let error = call.await.unwrap().unwrap_err();
    assert!(is_deadline(&error), "{error}");
}

#[tokio::test(start_paused = true)]
async fn a_stalled_body_fails_at_the_same_deadline() {
    let (inner, mut handle) = mock::pair::<http::Request<()>, http::Response<Stalling>>();
    let svc = HttpDeadlineLayer::new(Duration::from_secs(3))
        .unwrap()
        .layer(inner);
    let start = Instant::now();
    let call = tokio::spawn(svc.oneshot(http::Request::new(())));
    let (_req, reply) = handle.next_request().await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    reply.send_response(http::Response::new(Stalling(Some(Bytes::from_static(
        b"half",
    )))));
    let mut body = call.await.unwrap().unwrap().into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), "half");
    let error = body.frame().await.unwrap().unwrap_err();
    assert!(is_deadline(&error), "{error}");
    // The body's deadline is the call's, not a fresh one from when the head arrived.
    assert_eq!(start.elapsed(), Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn a_body_that_finishes_in_time_is_whole() {
    let (inner, mut handle) =
        mock::pair::<http::Request<()>, http::Response<http_body_util::Full<Bytes>>>();
    let svc = HttpDeadlineLayer::new(Duration::from_secs(3))
        .unwrap()
        .layer(inner);
    let call = tokio::spawn(svc.oneshot(http::Request::new(())));
    let (_req, reply) = handle.next_request().await.unwrap();
    reply.send_response(http::Response::new(http_body_util::Full::new(
        Bytes::from_static(b"all"),
    )));
    let body = call
        .await
        .unwrap()
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap();
    assert_eq!(body.to_bytes(), "all");
}
