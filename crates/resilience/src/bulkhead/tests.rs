use std::time::Duration;

use tokio::time::Instant;
use tower::{Layer, ServiceExt};
use tower_test::mock;

use super::*;

fn is_full(error: &BoxError) -> bool {
    error
        .downcast_ref::<BulkheadFull>()
        .is_some_and(|full| &*full.dependency == "payment")
}

#[test]
fn zero_slots_are_refused() {
    let error = BulkheadLayer::new("payment", 0, 1, Duration::ZERO).unwrap_err();
    assert_eq!(error.parameter, "max_concurrent");
    assert!(BulkheadLayer::new("payment", usize::MAX, 1, Duration::ZERO).is_err());
}

#[tokio::test(start_paused = true)]
async fn calls_up_to_the_cap_run_at_once_and_the_next_fails_after_the_queue_wait() {
    let (inner, mut handle) = mock::pair::<&str, &str>();
    let layer = BulkheadLayer::new("payment", 2, 4, Duration::from_millis(50)).unwrap();
    let svc = layer.layer(inner);
    let first = tokio::spawn(svc.clone().oneshot("1"));
    let second = tokio::spawn(svc.clone().oneshot("2"));
    let (_, reply_1) = handle.next_request().await.unwrap();
    let (_, reply_2) = handle.next_request().await.unwrap();

    let start = Instant::now();
    let error = svc.clone().oneshot("3").await.unwrap_err();
    assert!(is_full(&error), "{error}");
    assert_eq!(start.elapsed(), Duration::from_millis(50));

    reply_1.send_response("ok");
    reply_2.send_response("ok");
    first.await.unwrap().unwrap();
    second.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_waiting_call_proceeds_when_a_slot_frees_in_time() {
    let (inner, mut handle) = mock::pair::<&str, &str>();
    let svc = BulkheadLayer::new("payment", 1, 1, Duration::from_millis(50))
        .unwrap()
        .layer(inner);
    let first = tokio::spawn(svc.clone().oneshot("1"));
    let (_, reply_1) = handle.next_request().await.unwrap();
    let second = tokio::spawn(svc.clone().oneshot("2"));
    tokio::time::sleep(Duration::from_millis(30)).await;
    reply_1.send_response("first");
    assert_eq!(first.await.unwrap().unwrap(), "first");
    let (req, reply_2) = handle.next_request().await.unwrap();
    assert_eq!(req, "2");
    reply_2.send_response("second");
    assert_eq!(second.await.unwrap().unwrap(), "second");
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_refuses_at_once() {
    let (inner, mut handle) = mock::pair::<&str, &str>();
    let svc = BulkheadLayer::new("payment", 1, 1, Duration::from_secs(5))
        .unwrap()
        .layer(inner);
    let _running = tokio::spawn(svc.clone().oneshot("1"));
    let (_, _reply) = handle.next_request().await.unwrap();
    let _waiting = tokio::spawn(svc.clone().oneshot("2"));
    tokio::task::yield_now().await;

    let start = Instant::now();
    let error = svc.clone().oneshot("3").await.unwrap_err();
    assert!(is_full(&error), "{error}");
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_zero_queue_timeout_refuses_at_once_and_the_slot_returns_after_a_call() {
    let (inner, mut handle) = mock::pair::<&str, &str>();
    let svc = BulkheadLayer::new("payment", 1, 8, Duration::ZERO)
        .unwrap()
        .layer(inner);
    let running = tokio::spawn(svc.clone().oneshot("1"));
    let (_, reply) = handle.next_request().await.unwrap();
    assert!(is_full(&svc.clone().oneshot("2").await.unwrap_err()));
    reply.send_error("declined");
    running.await.unwrap().unwrap_err();

    let again = tokio::spawn(svc.clone().oneshot("3"));
    let (req, reply) = handle.next_request().await.unwrap();
    assert_eq!(req, "3");
    reply.send_response("ok");
    again.await.unwrap().unwrap();
}
