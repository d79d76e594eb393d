//! The checkout saga: reserve stock → authorize payment → confirm the order → capture
//! payment.
//!
//! Commands go out through the outbox (in a transaction of their own, then the relay is
//! woken); replies come back through [`crate::replies`] as
//! [`SagaEngine::deliver`](tideway_saga::SagaEngine::deliver) calls. Every action and
//! compensation is idempotent: a repeated command carries the same order id and
//! idempotency key, which inventory and payment deduplicate. So a reservation or an
//! authorization without a reply by its deadline is sent again (`ordering.step_resends`
//! times, by the saga engine) before the order is cancelled for a timeout: a reply lost with
//! a crashed process is asked for again instead of costing the order.
//!
//! # Capture never cancels a confirmed order
//!
//! The saga engine compensates every earlier step when any step fails or times out; it has
//! no "pivot" after which failures stop compensating. So `capture_payment` never fails: its
//! action sends `CapturePayment`, then waits for the order's capture to be recorded (by the
//! `PaymentCaptured` handler), sending the command again (same idempotency key) every
//! `capture_timeout_ms`. Its engine timeout is far beyond any real wait, and
//! `confirm_order`, a local transaction retried until it commits, has the same. Once the
//! order is confirmed the saga can only complete.

use std::{fmt, future::Future, sync::Arc, time::Duration};

use backon::{ExponentialBuilder, Retryable};
use serde::{Deserialize, Serialize};
use tideway_bus::{BusError, Event, EventType, outbox, outbox::RelayWaker};
use tideway_inventory_api::{CommitStock, ReleaseStock, ReserveStock, StockLine};
use tideway_ordering_api::{OrderConfirmed, OrderLine, OrderStatus, SERVICE};
use tideway_payment_api::{AuthorizePayment, CapturePayment, VoidPayment};
use tideway_runtime::trace;
use tideway_saga::{DbSagaStore, SagaDefinition, SagaStore, Step, StepContext, StepOutcome};
use tideway_store::Db;
use tokio::sync::watch;

use crate::{config::Config, orders::store};

/// The saga's name, stored with every instance.
pub const SAGA: &str = "checkout";
/// The steps, in order.
pub const RESERVE_STOCK: &str = "reserve_stock";
/// Second step.
pub const AUTHORIZE_PAYMENT: &str = "authorize_payment";
/// Third step.
pub const CONFIRM_ORDER: &str = "confirm_order";
/// Fourth step.
pub const CAPTURE_PAYMENT: &str = "capture_payment";

/// The engine timeout of steps that must not be compensated once begun (a month).
const NEVER: Duration = Duration::from_secs(30 * 24 * 60 * 60);
/// The longest pause between attempts at a failed local write.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What the checkout saga carries from step to step (persisted as JSON).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutState {
    /// The order (also the saga instance's id).
    pub order_id: String,
    /// The buyer.
    pub user_id: String,
    /// The lines, as snapshotted at checkout.
    pub lines: Vec<OrderLine>,
    /// Total in minor units.
    pub total_minor: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// The token of the card vaulted at checkout (the number itself stays in the payment
    /// service's vault; an instance stored before vaulting has none and is declined).
    #[serde(default)]
    pub card_token: String,
    /// The checkout request's trace context, continued by every step.
    pub traceparent: Option<String>,
}

impl fmt::Debug for CheckoutState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckoutState")
            .field("order_id", &self.order_id)
            .field("user_id", &self.user_id)
            .field("lines", &self.lines)
            .field("total_minor", &self.total_minor)
            .field("currency", &self.currency)
            .field("card_token", &"<redacted>")
            .field("traceparent", &self.traceparent)
            .finish()
    }
}

/// What the steps need: the database, the relay to wake, the saga store (to read an
/// instance's reason) and the capture signal.
#[derive(Clone)]
pub struct Deps {
    pub db: Db,
    pub waker: RelayWaker,
    pub sagas: DbSagaStore,
    /// Bumped whenever a capture is recorded, to wake waiting capture steps.
    pub captured: Arc<watch::Sender<u64>>,
    pub capture_retry: Duration,
}

impl Deps {
    /// Enqueues `events` in one transaction and wakes the relay.
    pub async fn emit(&self, events: &[Event]) -> Result<(), BusError> {
        let mut tx = self.db.begin().await?;
        for event in events {
            outbox::enqueue(&mut tx, event).await?;
        }
        tx.commit().await?;
        self.waker.wake();
        Ok(())
    }

    /// Why the instance `id` is compensating, for the commands that undo its steps.
    async fn reason(&self, id: &str) -> String {
        match self.sagas.load(id).await {
            Ok(Some(record)) => record.reason.unwrap_or_else(|| "compensating".to_owned()),
            _ => "compensating".to_owned(),
        }
    }
}

/// An event about `order_id` from ordering (also commands typed under another service's
/// subject), carrying the current trace.
pub fn event<T: EventType>(payload: &T, order_id: &str) -> Result<Event, BusError> {
    let mut event = Event::new(payload)?
        .with_subject(order_id)
        .with_source(format!("tideway/{SERVICE}"));
    event.traceparent = trace::current_traceparent();
    Ok(event)
}

/// Delays between attempts at a failed local write: from 100 ms, doubling up to
/// [`MAX_BACKOFF`], each jittered by up to as much again so that sagas stalled by one
/// outage do not all retry at once.
fn backoff() -> ExponentialBuilder {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(MAX_BACKOFF)
        .with_jitter()
        .without_max_times()
}

/// Retries for at most `limit` of waiting: a step's own timeout, past which the engine has
/// moved the instance on (compensating a timed-out step, calling a timed-out compensation
/// again), so a later success would only act behind its back.
fn within(limit: Duration) -> ExponentialBuilder {
    backoff().with_total_delay(Some(limit))
}

/// Runs `attempt` until it succeeds or `policy` gives up (then answers its last error).
/// Local writes only fail while the database is unreachable.
async fn retrying<T, E, F, Fut>(
    what: &str,
    order_id: &str,
    policy: ExponentialBuilder,
    attempt: F,
) -> Result<T, E>
where
    E: fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let outcome = attempt
        .retry(policy)
        .notify(|err: &E, delay: Duration| {
            tracing::warn!(order_id = %order_id, error = %err, retry_in = ?delay, "{what} failed; retrying");
        })
        .await;
    if let Err(err) = &outcome {
        tracing::warn!(order_id = %order_id, error = %err, "{what} failed; giving up");
    }
    outcome
}

/// Sends `payload` through the outbox, in the state's trace, retrying for at most `limit`
/// (the step's timeout); `false` when it could not.
async fn send<T: EventType>(
    deps: &Deps,
    state: &CheckoutState,
    what: &str,
    payload: &T,
    limit: Duration,
) -> bool {
    let order_id = state.order_id.as_str();
    trace::continue_as("saga step", state.traceparent.as_deref(), async {
        let sent = retrying(what, order_id, within(limit), || async {
            let event = event(payload, order_id)?;
            deps.emit(std::slice::from_ref(&event)).await
        })
        .await;
        if sent.is_ok() {
            tracing::info!(
                order_id = %order_id, trace_id = %trace_id(), command = T::SUBJECT,
                "checkout saga sent {what}"
            );
        }
        sent.is_ok()
    })
    .await
}

/// A compensation's outcome once its command is sent, or not: unsent, it waits, and its
/// deadline has the engine call it again.
fn compensated(sent: bool, state: CheckoutState) -> StepOutcome<CheckoutState> {
    if sent {
        StepOutcome::Done(state)
    } else {
        StepOutcome::Waiting
    }
}

/// The current trace id, for log lines.
pub fn trace_id() -> String {
    trace::current()
        .map(|ctx| ctx.trace_id())
        .unwrap_or_default()
}

/// The checkout saga over `deps`, with the step timeouts of `config`.
pub fn definition(deps: &Deps, config: &Config) -> SagaDefinition<CheckoutState> {
    let (reserve, payment) = (config.reserve_timeout(), config.payment_timeout());
    SagaDefinition::new(SAGA)
        .step(
            Step::new(RESERVE_STOCK, {
                let deps = deps.clone();
                move |_ctx: StepContext, state: CheckoutState| {
                    let deps = deps.clone();
                    async move {
                        let command = ReserveStock {
                            order_id: state.order_id.clone(),
                            lines: state
                                .lines
                                .iter()
                                .map(|line| StockLine {
                                    item_id: line.item_id.clone(),
                                    quantity: line.quantity,
                                })
                                .collect(),
                        };
                        // Sent or not, the step waits: unsent, its deadline compensates it.
                        send(&deps, &state, "ReserveStock", &command, reserve).await;
                        StepOutcome::Waiting
                    }
                }
            })
            .compensate({
                let deps = deps.clone();
                move |ctx: StepContext, state: CheckoutState| {
                    let deps = deps.clone();
                    async move {
                        let command = ReleaseStock {
                            order_id: state.order_id.clone(),
                            reason: deps.reason(ctx.instance_id()).await,
                        };
                        let sent = send(&deps, &state, "ReleaseStock", &command, reserve).await;
                        compensated(sent, state)
                    }
                }
            })
            .timeout(reserve)
            .resends(config.step_resends),
        )
        .step(
            Step::new(AUTHORIZE_PAYMENT, {
                let deps = deps.clone();
                move |ctx: StepContext, state: CheckoutState| {
                    let deps = deps.clone();
                    async move {
                        let command = AuthorizePayment {
                            order_id: state.order_id.clone(),
                            idempotency_key: ctx.idempotency_key(),
                            amount_minor: state.total_minor,
                            currency: state.currency.clone(),
                            card_token: state.card_token.clone(),
                        };
                        send(&deps, &state, "AuthorizePayment", &command, payment).await;
                        StepOutcome::Waiting
                    }
                }
            })
            .compensate({
                let deps = deps.clone();
                move |ctx: StepContext, state: CheckoutState| {
                    let deps = deps.clone();
                    async move {
                        let command = VoidPayment {
                            order_id: state.order_id.clone(),
                            idempotency_key: ctx.idempotency_key(),
                            reason: deps.reason(ctx.instance_id()).await,
                        };
                        let sent = send(&deps, &state, "VoidPayment", &command, payment).await;
                        compensated(sent, state)
                    }
                }
            })
            .timeout(payment)
            .resends(config.step_resends),
        )
        .step(
            Step::new(CONFIRM_ORDER, {
                let deps = deps.clone();
                move |_ctx: StepContext, state: CheckoutState| {
                    let deps = deps.clone();
                    async move {
                        let traceparent = state.traceparent.clone();
                        trace::continue_as(
                            "saga confirm",
                            traceparent.as_deref(),
                            confirm(deps, state),
                        )
                        .await
                    }
                }
            })
            .timeout(NEVER),
        )
        .step(
            Step::new(CAPTURE_PAYMENT, {
                let deps = deps.clone();
                move |ctx: StepContext, state: CheckoutState| {
                    let deps = deps.clone();
                    async move { capture(deps, ctx, state).await }
                }
            })
            .timeout(NEVER),
        )
}

/// Confirms the pending order and emits `OrderConfirmed` and `CommitStock` with it, once.
async fn confirm(deps: Deps, state: CheckoutState) -> StepOutcome<CheckoutState> {
    let order_id = state.order_id.as_str();
    // Without a bound: once begun, this step must not fail (a failure compensates, voiding
    // the payment of an order whose commit may have gone through) nor time out (hence its
    // engine timeout of a month), so it outlasts any database outage. A shutdown drops it
    // and the step is resumed at the next start.
    let outcome = retrying("confirming the order", order_id, backoff(), || async {
        let mut tx = deps.db.begin().await?;
        match store::status_of(&mut tx, order_id).await? {
            Some(OrderStatus::Pending) => {}
            // Confirmed by an earlier run of this step (its events went with it).
            Some(OrderStatus::Confirmed) => return Ok::<_, BusError>(None),
            Some(OrderStatus::Cancelled) => return Ok(Some("the order is already cancelled")),
            None => return Ok(Some("the order does not exist")),
        }
        store::finish(&mut tx, order_id, OrderStatus::Confirmed, None).await?;
        let confirmed = OrderConfirmed {
            order_id: state.order_id.clone(),
            user_id: state.user_id.clone(),
            lines: state.lines.clone(),
            total_minor: state.total_minor,
        };
        let commit = CommitStock {
            order_id: state.order_id.clone(),
        };
        outbox::enqueue(&mut tx, &event(&confirmed, order_id)?).await?;
        outbox::enqueue(&mut tx, &event(&commit, order_id)?).await?;
        tx.commit().await?;
        deps.waker.wake();
        tracing::info!(order_id = %order_id, trace_id = %trace_id(), "order confirmed");
        Ok(None)
    })
    .await;
    match outcome {
        Ok(None) => StepOutcome::Done(state),
        Ok(Some(problem)) => StepOutcome::Failed(problem.to_owned()),
        // Not reached: the policy above never gives up. Waiting leaves the order pending
        // rather than compensating it.
        Err(_) => StepOutcome::Waiting,
    }
}

/// Sends `CapturePayment` and waits until the capture is recorded, sending it again (same
/// idempotency key) every `capture_retry`. Never fails: the order is confirmed.
async fn capture(deps: Deps, ctx: StepContext, state: CheckoutState) -> StepOutcome<CheckoutState> {
    let mut signal = deps.captured.subscribe();
    let command = CapturePayment {
        order_id: state.order_id.clone(),
        idempotency_key: ctx.idempotency_key(),
    };
    let mut sends = 0_u32;
    let mut next_send = tokio::time::Instant::now();
    // The loop itself never ends but with the capture: the order is confirmed, so only a
    // recorded capture finishes the step. Each read and send is bounded by the re-send
    // interval; one that gives up is tried again on the next turn.
    loop {
        let captured = retrying(
            "reading the capture",
            &state.order_id,
            within(deps.capture_retry),
            || store::is_captured(&deps.db, &state.order_id),
        )
        .await
        .unwrap_or(false);
        if captured {
            return StepOutcome::Done(state);
        }
        if tokio::time::Instant::now() >= next_send {
            if sends > 0 {
                tracing::warn!(
                    order_id = %state.order_id, attempt = sends + 1,
                    "no capture reply in time; sending CapturePayment again"
                );
            }
            send(
                &deps,
                &state,
                "CapturePayment",
                &command,
                deps.capture_retry,
            )
            .await;
            sends += 1;
            next_send = tokio::time::Instant::now() + deps.capture_retry;
        }
        tokio::select! {
            changed = signal.changed() => {
                if changed.is_err() {
                    // The service is shutting down; the step is resumed at the next start.
                    std::future::pending::<()>().await;
                }
            }
            () = tokio::time::sleep_until(next_send) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use backon::BackoffBuilder;

    use super::*;

    #[test]
    fn a_bounded_policy_waits_at_most_its_limit_and_the_unbounded_one_stays_capped() {
        let limit = Duration::from_millis(700);
        for _ in 0..100 {
            let delays: Vec<Duration> = within(limit).build().collect();
            assert!(!delays.is_empty());
            assert!(delays.iter().sum::<Duration>() <= limit, "{delays:?}");
        }
        // Jitter adds at most as much again to the capped delay.
        let delays: Vec<Duration> = backoff().build().take(1000).collect();
        assert_eq!(delays.len(), 1000, "never gives up");
        assert!(delays.iter().all(|d| *d <= MAX_BACKOFF * 2), "{delays:?}");
        assert!(delays[0] >= Duration::from_millis(100));
    }

    #[tokio::test]
    async fn a_bounded_retry_gives_up_with_the_last_error() {
        let attempts = AtomicU32::new(0);
        let limit = Duration::from_millis(400);
        let start = tokio::time::Instant::now();
        let outcome: Result<(), String> = retrying("writing", "o-1", within(limit), || async {
            let n = attempts.fetch_add(1, Ordering::SeqCst) + 1;
            Err(format!("failure {n}"))
        })
        .await;
        let n = attempts.load(Ordering::SeqCst);
        assert!(n >= 2, "retried before giving up: {n} attempts");
        assert_eq!(outcome, Err(format!("failure {n}")));
        assert!(
            start.elapsed() < limit + Duration::from_secs(1),
            "gave up in time"
        );
    }

    #[tokio::test]
    async fn a_retry_answers_the_first_success() {
        let attempts = AtomicU32::new(0);
        let outcome = retrying("writing", "o-1", backoff(), || async {
            match attempts.fetch_add(1, Ordering::SeqCst) {
                0 | 1 => Err("not yet"),
                n => Ok(n),
            }
        })
        .await;
        assert_eq!(outcome, Ok(2));
    }
}
