//! Ending orders whose saga ended: a compensated (or failed) saga cancels its order.
//!
//! The saga engine has no completion callback, so [`NotifyingStore`] wraps the saga store
//! and reports every instance it writes into a terminal status — whoever wrote it: a reply,
//! the timeout sweeper, a resumed instance. The [`Finisher`] task then marks the order
//! Cancelled with the saga's reason and enqueues `OrderCancelled`, in one transaction, only
//! while the order is still Pending (so it happens once). A crash between the two writes is
//! repaired by [`Finisher::reconcile`], run at start-up and then periodically: it finishes
//! every Pending order whose saga has ended, and cancels Pending orders whose saga was never
//! started (the process died between committing the order and starting its saga).

use std::{collections::HashMap, future::Future, pin::Pin, time::Duration};

use tideway_bus::BusError;
use tideway_ordering_api::{OrderCancelled, OrderStatus};
use tideway_runtime::trace;
use tideway_saga::{
    DbSagaStore, InstanceRecord, SagaError, SagaStatus, SagaStore, StepLogWrite, StepRecord,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{
    orders::store,
    saga::{CheckoutState, Deps, event, trace_id},
};

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How often every Pending order is checked against its saga.
const RECONCILE_EVERY: Duration = Duration::from_secs(15);
/// How old a Pending order without a saga must be before it is cancelled (its checkout
/// request may still be starting the saga).
const ORPHAN_AFTER: time::Duration = time::Duration::seconds(60);
/// The reason given to an order whose saga never started.
pub const ORPHAN_REASON: &str = "the checkout was interrupted before its saga started";

/// A [`DbSagaStore`] that reports instances written into a terminal status.
pub struct NotifyingStore {
    inner: DbSagaStore,
    finished: mpsc::UnboundedSender<String>,
}

impl NotifyingStore {
    pub fn new(inner: DbSagaStore, finished: mpsc::UnboundedSender<String>) -> Self {
        Self { inner, finished }
    }
}

impl SagaStore for NotifyingStore {
    fn insert<'a>(&'a self, record: &'a InstanceRecord) -> BoxFuture<'a, Result<bool, SagaError>> {
        self.inner.insert(record)
    }

    fn load<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<InstanceRecord>, SagaError>> {
        self.inner.load(id)
    }

    fn update<'a>(
        &'a self,
        record: &'a InstanceRecord,
        expected_version: i64,
        log: &'a [StepLogWrite],
    ) -> BoxFuture<'a, Result<bool, SagaError>> {
        Box::pin(async move {
            let written = self.inner.update(record, expected_version, log).await?;
            if written && record.status.is_terminal() {
                // The receiver is gone only while shutting down; reconcile catches up.
                let _ = self.finished.send(record.id.clone());
            }
            Ok(written)
        })
    }

    fn unfinished(&self) -> BoxFuture<'_, Result<Vec<(String, String)>, SagaError>> {
        self.inner.unfinished()
    }

    fn due(&self, now_ms: i64) -> BoxFuture<'_, Result<Vec<String>, SagaError>> {
        self.inner.due(now_ms)
    }

    fn steps<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Vec<StepRecord>, SagaError>> {
        self.inner.steps(id)
    }

    fn recent(&self, limit: u32) -> BoxFuture<'_, Result<Vec<InstanceRecord>, SagaError>> {
        self.inner.recent(limit)
    }

    fn steps_of<'a>(
        &'a self,
        ids: &'a [String],
    ) -> BoxFuture<'a, Result<HashMap<String, Vec<StepRecord>>, SagaError>> {
        self.inner.steps_of(ids)
    }
}

/// Cancels the orders of compensated sagas.
pub struct Finisher {
    pub deps: Deps,
    pub finished: mpsc::UnboundedReceiver<String>,
}

#[derive(Debug, thiserror::Error)]
enum FinishError {
    #[error(transparent)]
    Saga(#[from] SagaError),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("database error")]
    Db(#[from] sqlx::Error),
}

impl Finisher {
    /// Reconciles, then finishes orders as their sagas end, until `token` is cancelled.
    pub async fn run(mut self, token: CancellationToken) {
        let mut ticks = tokio::time::interval(RECONCILE_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = token.cancelled() => break,
                id = self.finished.recv() => {
                    let Some(id) = id else { break };
                    if let Err(err) = self.finish(&id).await {
                        tracing::warn!(order_id = %id, error = %err, "finishing the order failed; reconciliation retries");
                    }
                }
                _ = ticks.tick() => {
                    if let Err(err) = self.reconcile().await {
                        tracing::warn!(error = %err, "reconciling pending orders failed");
                    }
                }
            }
        }
    }

    /// Finishes every Pending order whose saga ended or never started.
    async fn reconcile(&self) -> Result<(), FinishError> {
        let orphan_before = crate::time::format(time::OffsetDateTime::now_utc() - ORPHAN_AFTER);
        for (id, created_at, trace_id) in store::pending(&self.deps.db).await? {
            match self.deps.sagas.load(&id).await? {
                Some(_) => self.finish(&id).await?,
                None if created_at < orphan_before => {
                    // Continue the checkout's trace (a span id of our own making).
                    let traceparent = format!("00-{trace_id}-0000000000000001-01");
                    self.cancel(&id, ORPHAN_REASON, Some(traceparent)).await?;
                }
                None => {}
            }
        }
        Ok(())
    }

    /// Cancels the order `id` if its saga ended compensated or failed.
    async fn finish(&self, id: &str) -> Result<(), FinishError> {
        let Some(record) = self.deps.sagas.load(id).await? else {
            return Ok(());
        };
        if !matches!(record.status, SagaStatus::Compensated | SagaStatus::Failed) {
            return Ok(());
        }
        let reason = record
            .reason
            .clone()
            .unwrap_or_else(|| "the checkout failed".to_owned());
        let traceparent = serde_json::from_str::<CheckoutState>(&record.state)
            .ok()
            .and_then(|state| state.traceparent);
        self.cancel(id, &reason, traceparent).await
    }

    /// Marks the order Cancelled and enqueues `OrderCancelled`, once.
    async fn cancel(
        &self,
        id: &str,
        reason: &str,
        traceparent: Option<String>,
    ) -> Result<(), FinishError> {
        trace::continue_from(traceparent.as_deref(), async {
            let mut tx = self.deps.db.begin().await?;
            if !store::finish(&mut tx, id, OrderStatus::Cancelled, Some(reason)).await? {
                return Ok(());
            }
            let user_id: String = sqlx::query_scalar("SELECT user_id FROM orders WHERE id = $1")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
            let cancelled = OrderCancelled {
                order_id: id.to_owned(),
                user_id,
                reason: reason.to_owned(),
            };
            tideway_bus::outbox::enqueue(&mut tx, &event(&cancelled, id)?).await?;
            tx.commit().await?;
            self.deps.waker.wake();
            tracing::info!(
                order_id = %id, trace_id = %trace_id(), reason = %reason,
                "order cancelled"
            );
            Ok(())
        })
        .await
    }
}
