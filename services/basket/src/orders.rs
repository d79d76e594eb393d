//! The basket's side of checkout: when an order is confirmed, the units it bought leave the
//! buyer's basket. Lines added after the checkout, or units beyond those ordered, stay.
//!
//! Effectively once on either store: the event id is recorded in the store's inbox (the
//! `inbox` table, or a Redis key) in the same atomic step as the change, so a redelivered
//! event changes nothing.

use std::sync::Arc;

use tideway_bus::{Bus, BusError, Event, EventType, SubscribeOptions, SubscriptionHandle, inbox};
use tideway_ordering_api::OrderConfirmed;

use crate::{
    SERVICE,
    store::{Store, StoreError},
};

/// Why a delivery was refused (it is redelivered later).
#[derive(Debug, thiserror::Error)]
enum ApplyError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Subscribes the basket to `OrderConfirmed` on `bus` (consumer `basket`).
pub async fn subscribe(store: Store, bus: Arc<dyn Bus>) -> Result<SubscriptionHandle, BusError> {
    if let Store::Sql(sql) = &store {
        inbox::install(&sql.db).await?;
    }
    let handler = move |event: Event| {
        let store = store.clone();
        async move {
            let traceparent = event.traceparent.clone();
            tideway_runtime::trace::continue_from(
                traceparent.as_deref(),
                remove_ordered(&store, &event),
            )
            .await
        }
    };
    bus.subscribe(
        SubscribeOptions::new(SERVICE, OrderConfirmed::SUBJECT),
        Arc::new(handler),
    )
    .await
}

/// Removes the confirmed order's units from the buyer's basket, once per event.
#[tracing::instrument(skip_all, fields(event_id = %event.id), err)]
async fn remove_ordered(store: &Store, event: &Event) -> Result<(), ApplyError> {
    let order: OrderConfirmed = event.decode()?;
    if !store
        .apply_order(SERVICE, &event.id, &order.user_id, &order.lines)
        .await?
    {
        tracing::debug!(order_id = %order.order_id, "order already applied to the basket");
        return Ok(());
    }
    tracing::info!(
        order_id = %order.order_id,
        trace_id = %tideway_runtime::trace::current().map(|t| t.trace_id()).unwrap_or_default(),
        "removed the ordered units from the basket"
    );
    Ok(())
}
