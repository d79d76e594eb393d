//! The basket's side of checkout: when an order is confirmed, the units it bought leave the
//! buyer's basket. Lines added after the checkout, or units beyond those ordered, stay.

use std::sync::Arc;

use tideway_bus::{Bus, BusError, Event, EventType, SubscribeOptions, SubscriptionHandle, inbox};
use tideway_ordering_api::OrderConfirmed;
use tideway_store::Db;

use crate::SERVICE;

/// Subscribes the basket to `OrderConfirmed` on `bus` (consumer `basket`).
pub async fn subscribe(db: Db, bus: Arc<dyn Bus>) -> Result<SubscriptionHandle, BusError> {
    inbox::install(&db).await?;
    let handler = move |event: Event| {
        let db = db.clone();
        async move {
            let traceparent = event.traceparent.clone();
            tideway_runtime::trace::continue_from(
                traceparent.as_deref(),
                remove_ordered(&db, &event),
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
async fn remove_ordered(db: &Db, event: &Event) -> Result<(), BusError> {
    let order: OrderConfirmed = event.decode()?;
    let mut tx = db.begin().await?;
    if !inbox::record(&mut tx, SERVICE, &event.id).await? {
        tracing::debug!(order_id = %order.order_id, "order already applied to the basket");
        return Ok(());
    }
    for line in &order.lines {
        sqlx::query(
            "DELETE FROM basket_lines WHERE user_id = $1 AND item_id = $2 AND quantity <= $3",
        )
        .bind(&order.user_id)
        .bind(&line.item_id)
        .bind(line.quantity)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE basket_lines SET quantity = quantity - $3 WHERE user_id = $1 AND item_id = $2",
        )
        .bind(&order.user_id)
        .bind(&line.item_id)
        .bind(line.quantity)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    tracing::info!(
        order_id = %order.order_id,
        trace_id = %tideway_runtime::trace::current().map(|t| t.trace_id()).unwrap_or_default(),
        "removed the ordered units from the basket"
    );
    Ok(())
}
