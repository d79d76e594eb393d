//! The replies of inventory and payment, turned into saga deliveries.
//!
//! Each handler first looks the event up in the inbox (a repeat is acknowledged at once),
//! then delivers the reply to the order's saga instance, then records the event in the
//! inbox (with its local effect, for `PaymentCaptured`). Delivering is itself idempotent —
//! the engine ignores a reply for a step the instance is no longer on — so a crash between
//! delivering and recording only repeats a no-op. The inbox transaction is never held while
//! delivering: on SQLite a write transaction locks the database the engine writes to.

use std::sync::Arc;

use tideway_bus::{
    Bus, BusError, Event, EventType, HandlerError, Replica, SubscriptionHandle, inbox,
};
use tideway_inventory_api::{StockCommitted, StockRejected, StockReleased, StockReserved};
use tideway_ordering_api::SERVICE;
use tideway_payment_api::{PaymentAuthorized, PaymentCaptured, PaymentDeclined, PaymentVoided};
use tideway_runtime::trace;
use tideway_saga::{Reply, SagaEngine, SagaError};
use tideway_store::Db;

use crate::{
    orders::store,
    saga::{AUTHORIZE_PAYMENT, CAPTURE_PAYMENT, CheckoutState, Deps, RESERVE_STOCK, trace_id},
};

/// The reply subjects ordering consumes.
pub const SUBJECTS: [&str; 8] = [
    StockReserved::SUBJECT,
    StockRejected::SUBJECT,
    StockReleased::SUBJECT,
    StockCommitted::SUBJECT,
    PaymentAuthorized::SUBJECT,
    PaymentDeclined::SUBJECT,
    PaymentCaptured::SUBJECT,
    PaymentVoided::SUBJECT,
];

/// What the reply handlers share.
#[derive(Clone)]
pub struct Replies {
    pub engine: SagaEngine,
    pub deps: Deps,
}

/// Subscribes to every reply subject as consumer `ordering`, with `replica`'s ack wait.
pub async fn subscribe(
    replies: Replies,
    bus: &Arc<dyn Bus>,
    replica: &Replica,
) -> Result<Vec<SubscriptionHandle>, BusError> {
    let mut handles = Vec::with_capacity(SUBJECTS.len());
    for subject in SUBJECTS {
        let replies = replies.clone();
        let handler = move |event: Event| {
            let replies = replies.clone();
            async move {
                let traceparent = event.traceparent.clone();
                trace::continue_from(traceparent.as_deref(), replies.handle(event)).await
            }
        };
        handles.push(
            bus.subscribe(replica.subscribe(SERVICE, subject), Arc::new(handler))
                .await?,
        );
    }
    Ok(handles)
}

/// What a reply means for the saga.
enum Meaning {
    /// Deliver to the action of `step`.
    Deliver {
        step: &'static str,
        reply: Reply<CheckoutState>,
    },
    /// The payment is captured: record it, then deliver.
    Captured,
    /// Nothing to do but note it (replies to fire-and-forget commands).
    Note(&'static str),
}

impl Replies {
    async fn handle(self, event: Event) -> Result<(), HandlerError> {
        let db = &self.deps.db;
        if seen(db, &event.id).await? {
            tracing::debug!(event_id = %event.id, "reply already handled");
            return Ok(());
        }
        let (order_id, meaning) = match meaning(&event) {
            Ok(Some(found)) => found,
            Ok(None) => {
                tracing::warn!(event_type = %event.event_type, "unexpected event type; ignored");
                return Ok(());
            }
            Err(err) => {
                // Malformed payloads never get better: acknowledge rather than retry.
                tracing::error!(event_id = %event.id, error = %err, "undecodable reply; ignored");
                return Ok(());
            }
        };
        tracing::info!(
            order_id = %order_id, trace_id = %trace_id(), reply = %event.event_type,
            "checkout reply received"
        );
        match meaning {
            Meaning::Note(what) => {
                record(db, &event.id).await?;
                tracing::info!(order_id = %order_id, trace_id = %trace_id(), "{what}");
            }
            Meaning::Captured => {
                let mut tx = db.begin().await?;
                if !inbox::record(&mut tx, SERVICE, &event.id).await? {
                    return Ok(());
                }
                let known = store::mark_captured(&mut tx, &order_id).await?;
                tx.commit().await?;
                if known {
                    self.deps.captured.send_modify(|n| *n = n.wrapping_add(1));
                }
                // The capture step also sees the recorded capture, should this be lost.
                self.deliver(&order_id, CAPTURE_PAYMENT, Reply::done())
                    .await?;
            }
            Meaning::Deliver { step, reply } => {
                self.deliver(&order_id, step, reply).await?;
                record(db, &event.id).await?;
            }
        }
        Ok(())
    }

    /// Delivers `reply` to `step` of the order's saga; unknown orders and replies that do
    /// not fit are logged and dropped, store failures are returned (the event comes again).
    async fn deliver(
        &self,
        order_id: &str,
        step: &'static str,
        reply: Reply<CheckoutState>,
    ) -> Result<(), SagaError> {
        match self.engine.deliver(order_id, step, reply).await {
            Ok(outcome) => {
                tracing::debug!(order_id = %order_id, step, ?outcome, "reply delivered");
                Ok(())
            }
            Err(SagaError::NotFound(_)) => {
                tracing::warn!(order_id = %order_id, "reply for an unknown order; ignored");
                Ok(())
            }
            Err(
                err @ (SagaError::UnknownStep { .. }
                | SagaError::StateType(_)
                | SagaError::UnknownSaga(_)
                | SagaError::WrongSaga { .. }),
            ) => {
                tracing::error!(order_id = %order_id, error = %err, "reply does not fit the saga; ignored");
                Ok(())
            }
            Err(err) => Err(err),
        }
    }
}

/// Records `event_id` in the inbox (a repeat is harmless).
async fn record(db: &Db, event_id: &str) -> Result<(), BusError> {
    let mut tx = db.begin().await?;
    inbox::record(&mut tx, SERVICE, event_id).await?;
    tx.commit().await?;
    Ok(())
}

/// Whether the inbox already holds `event_id` for ordering.
async fn seen(db: &Db, event_id: &str) -> Result<bool, sqlx::Error> {
    let found: Option<i64> =
        sqlx::query_scalar("SELECT 1 FROM inbox WHERE consumer = $1 AND event_id = $2")
            .bind(SERVICE)
            .bind(event_id)
            .fetch_optional(db.pool())
            .await?;
    Ok(found.is_some())
}

/// The order a reply is about and what it means; `None` for a type not consumed here.
fn meaning(event: &Event) -> Result<Option<(String, Meaning)>, BusError> {
    let deliver = |step, reply| Meaning::Deliver { step, reply };
    Ok(Some(match event.event_type.as_str() {
        StockReserved::SUBJECT => {
            let reply: StockReserved = event.decode()?;
            (reply.order_id, deliver(RESERVE_STOCK, Reply::done()))
        }
        StockRejected::SUBJECT => {
            let reply: StockRejected = event.decode()?;
            let reason = format!("out of stock: {}", reply.reason);
            (
                reply.order_id,
                deliver(RESERVE_STOCK, Reply::failed(reason)),
            )
        }
        PaymentAuthorized::SUBJECT => {
            let reply: PaymentAuthorized = event.decode()?;
            (reply.order_id, deliver(AUTHORIZE_PAYMENT, Reply::done()))
        }
        PaymentDeclined::SUBJECT => {
            let reply: PaymentDeclined = event.decode()?;
            let reason = format!("payment declined: {}", reply.reason);
            (
                reply.order_id,
                deliver(AUTHORIZE_PAYMENT, Reply::failed(reason)),
            )
        }
        PaymentCaptured::SUBJECT => {
            let reply: PaymentCaptured = event.decode()?;
            (reply.order_id, Meaning::Captured)
        }
        StockReleased::SUBJECT => {
            let reply: StockReleased = event.decode()?;
            (reply.order_id, Meaning::Note("stock released"))
        }
        StockCommitted::SUBJECT => {
            let reply: StockCommitted = event.decode()?;
            (reply.order_id, Meaning::Note("stock committed"))
        }
        PaymentVoided::SUBJECT => {
            let reply: PaymentVoided = event.decode()?;
            (reply.order_id, Meaning::Note("payment voided"))
        }
        _ => return Ok(None),
    }))
}
