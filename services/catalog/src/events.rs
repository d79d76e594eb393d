//! The catalog's events, both ways.
//!
//! * Out: every admin write enqueues its event ([`ItemCreated`], [`ItemChanged`],
//!   [`PriceChanged`], [`ItemDeleted`]) through the outbox in the write's transaction, so a
//!   change and its announcement commit together; the relay (lease `catalog`) publishes
//!   them. Caches of catalog answers (the catalog's own, the basket's prices, the gateway's
//!   HTTP cache) invalidate on them.
//! * In: [`StockLevelChanged`] from the inventory keeps the catalog's read copy of stock
//!   (`items.stock`). Each event is applied in one transaction with its inbox entry
//!   (effectively once) and only when its version is newer than the copy's
//!   (`items.stock_version`), so a late or reordered event never moves the copy back. An
//!   applied change is announced as [`ItemChanged`] in the same transaction.

use std::sync::Arc;

use tideway_bus::{BusError, Event, EventType, inbox, outbox, outbox::RelayWaker};
use tideway_catalog_api::{ItemChanged, ItemCreated, ItemDeleted, PriceChanged, SERVICE};
use tideway_inventory_api::StockLevelChanged;
use tideway_runtime::trace;
use tideway_store::{Any, Db, Transaction};
use tracing::Instrument as _;

use crate::cache::Caches;

/// The consumer name under which replica `instance_id` hears the catalog's events to
/// invalidate its caches: its own, so every replica gets every event.
pub fn cache_consumer(instance_id: &str) -> String {
    let clean: String = format!("{SERVICE}-cache-{instance_id}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    clean
}

/// Invalidates what `event` (a catalog event) makes stale; other events change nothing.
pub async fn invalidate(caches: &Caches, event: &Event) {
    if event.is::<ItemChanged>() {
        // A stock change that did not flip sold out touches only the item's own answer;
        // which it was is not in the event, so lists go too (rare next to reads).
        if let Ok(changed) = event.decode::<ItemChanged>() {
            caches.item_changed(&changed.item_id).await;
        }
    } else if let Ok(created) = event.decode::<ItemCreated>() {
        caches.item_changed(&created.item.id).await;
    } else if let Ok(changed) = event.decode::<PriceChanged>() {
        caches.item_changed(&changed.item_id).await;
    } else if let Ok(deleted) = event.decode::<ItemDeleted>() {
        caches.item_changed(&deleted.item_id).await;
    }
}

/// Enqueues `payload` about `item_id` in `tx` (the write's transaction).
pub async fn enqueue<T: EventType>(
    tx: &mut Transaction<'static, Any>,
    item_id: &str,
    payload: &T,
) -> Result<(), BusError> {
    let mut event = Event::new(payload)?.with_subject(item_id);
    event.traceparent = trace::current_traceparent();
    outbox::enqueue(tx, &event).await
}

/// Applies the inventory's stock levels to the read copy.
#[derive(Debug, Clone)]
pub struct StockCopy {
    db: Db,
    waker: RelayWaker,
    caches: Caches,
}

impl StockCopy {
    /// The consumer of stock levels on `db`, waking the relay through `waker` and
    /// invalidating `caches` after each applied change.
    pub fn new(db: Db, waker: RelayWaker, caches: Caches) -> Arc<Self> {
        Arc::new(Self { db, waker, caches })
    }

    /// Handles one delivery: other event types and unreadable events are acknowledged
    /// without effect (logged: retrying cannot help).
    pub async fn handle(&self, event: Event) -> Result<(), BusError> {
        if !event.is::<StockLevelChanged>() {
            return Ok(());
        }
        let level = match event.decode::<StockLevelChanged>() {
            Ok(level) => level,
            Err(err) => {
                tracing::error!(error = %err, event_id = %event.id, "a stock level cannot be read; acknowledged without effect");
                return Ok(());
            }
        };
        let span = tracing::info_span!(
            "catalog_stock_level",
            event_id = %event.id,
            item_id = %level.item_id,
            version = level.version
        );
        let traceparent = event.traceparent.clone();
        trace::continue_from(
            traceparent.as_deref(),
            async move { self.apply(&event.id, &level).await.map(|_| ()) }.instrument(span),
        )
        .await
    }

    /// Applies `level` (event `event_id`) unless it was handled before or is not newer than
    /// the copy; `true` when the copy changed.
    pub async fn apply(&self, event_id: &str, level: &StockLevelChanged) -> Result<bool, BusError> {
        let mut tx = self.db.begin().await?;
        // The inbox entry first: it writes, so on SQLite the transaction holds the write
        // lock from here, and a repeat finds the entry and changes nothing.
        if !inbox::record(&mut tx, SERVICE, event_id).await? {
            tx.rollback().await?;
            tracing::debug!("duplicate stock level; acknowledged without effect");
            return Ok(false);
        }
        let stock = level.available.max(0);
        let before: Option<i64> = sqlx::query_scalar("SELECT stock FROM items WHERE id = $1")
            .bind(&level.item_id)
            .fetch_optional(&mut *tx)
            .await?;
        let changed = sqlx::query(
            "UPDATE items SET stock = $2, stock_version = $3 \
             WHERE id = $1 AND stock_version < $3 RETURNING version",
        )
        .bind(&level.item_id)
        .bind(stock)
        .bind(level.version)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = changed else {
            // Older than the copy, or an item the catalog does not have (deleted): the
            // inbox entry stays, so a redelivery is a no-op too.
            tx.commit().await?;
            tracing::debug!("stock level not newer than the copy (or no such item); ignored");
            return Ok(false);
        };
        let version: i64 = tideway_store::Row::try_get(&row, "version")?;
        enqueue(
            &mut tx,
            &level.item_id,
            &ItemChanged {
                item_id: level.item_id.clone(),
                version,
                stock,
            },
        )
        .await?;
        tx.commit().await?;
        if before.is_some_and(|before| (before <= 0) != (stock <= 0)) {
            // Sold out, or back: lists show it.
            self.caches.item_changed(&level.item_id).await;
        } else {
            self.caches.stock_changed(&level.item_id).await;
        }
        self.waker.wake();
        tracing::debug!(stock, "stock copy updated");
        Ok(true)
    }
}
