//! The projections (consumer `reporting`): each event the service reads updates its read
//! models, effectively once.
//!
//! * `OrderPlaced` counts a placed order in the funnel.
//! * `OrderConfirmed` counts a confirmed order, adds each line's units and revenue (unit
//!   price × quantity) to its item's day in `sales_daily`, and the order's total to its day
//!   in `revenue_daily`.
//! * `OrderCancelled` counts a cancelled order under its reason.
//!
//! The day is the UTC day of the event's time (when ordering decided), so a redelivery or
//! a replay days later lands on the same day. Every update is an addition, so the models
//! do not depend on the order events arrive in (placed and confirmed come on different
//! subjects, and on NATS to competing consumers).
//!
//! # Effectively once
//!
//! The inbox records the event id in the transaction of the update ([`Projector::handle`]):
//! a redelivered event finds its id and changes nothing. A replay ([`crate::replay`])
//! empties the models and this consumer's inbox rows in one transaction, then applies the
//! log through the same inbox, so an event logged twice counts once there too.

use std::sync::{
    Arc,
    atomic::{AtomicI64, Ordering},
};

use tideway_bus::{Event, EventType, HandlerError, inbox};
use tideway_ordering_api::{OrderCancelled, OrderConfirmed, OrderPlaced};
use tideway_reporting_api::SERVICE;
use tideway_store::{Any, Db, Transaction};
use time::{OffsetDateTime, UtcOffset};

/// The subjects the service consumes.
pub const SUBJECTS: [&str; 3] = [
    OrderPlaced::SUBJECT,
    OrderConfirmed::SUBJECT,
    OrderCancelled::SUBJECT,
];

/// The projection handler: the database and the time of the latest event applied.
#[derive(Debug, Clone)]
pub struct Projector {
    db: Db,
    last_event_ms: Arc<AtomicI64>,
}

impl Projector {
    /// A projector writing to `db`, recording the latest event time in `last_event_ms`.
    pub fn new(db: Db, last_event_ms: Arc<AtomicI64>) -> Self {
        Self { db, last_event_ms }
    }

    /// Handles one delivery of `event`: the inbox and the update in one transaction.
    #[tracing::instrument(skip_all, fields(event_id = %event.id, event_type = %event.event_type))]
    pub async fn handle(&self, event: Event) -> Result<(), HandlerError> {
        if !SUBJECTS.contains(&event.event_type.as_str()) {
            return Ok(());
        }
        let mut tx = self.db.begin().await?;
        if inbox::record(&mut tx, SERVICE, &event.id).await? {
            apply(&mut tx, &event).await?;
        }
        tx.commit().await?;
        let at = event_ms(&event);
        self.last_event_ms.fetch_max(at, Ordering::Relaxed);
        crate::record_lag(self.last_event_ms.load(Ordering::Relaxed));
        Ok(())
    }
}

/// The UTC day of `time`, `YYYY-MM-DD`.
pub fn day_of(time: OffsetDateTime) -> String {
    let date = time.to_offset(UtcOffset::UTC).date();
    format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

/// The event's time in unix milliseconds.
pub fn event_ms(event: &Event) -> i64 {
    i64::try_from(event.time.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// Applies `event` to the read models in `tx` (the caller has recorded it in the inbox).
/// Events of other subjects change nothing.
pub async fn apply(tx: &mut Transaction<'static, Any>, event: &Event) -> Result<(), HandlerError> {
    match event.event_type.as_str() {
        OrderPlaced::SUBJECT => {
            let _placed: OrderPlaced = event.decode()?;
            count(tx, "placed", "").await?;
        }
        OrderConfirmed::SUBJECT => {
            let confirmed: OrderConfirmed = event.decode()?;
            let day = day_of(event.time);
            count(tx, "confirmed", "").await?;
            for line in &confirmed.lines {
                let revenue = line.unit_price_minor.saturating_mul(line.quantity);
                sqlx::query(
                    "INSERT INTO sales_daily (day, item_id, name, units, revenue_minor) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (day, item_id) DO UPDATE SET \
                     name = excluded.name, units = sales_daily.units + excluded.units, \
                     revenue_minor = sales_daily.revenue_minor + excluded.revenue_minor",
                )
                .bind(&day)
                .bind(&line.item_id)
                .bind(&line.name)
                .bind(line.quantity)
                .bind(revenue)
                .execute(&mut **tx)
                .await?;
            }
            sqlx::query(
                "INSERT INTO revenue_daily (day, orders, revenue_minor) VALUES ($1, 1, $2) \
                 ON CONFLICT (day) DO UPDATE SET orders = revenue_daily.orders + 1, \
                 revenue_minor = revenue_daily.revenue_minor + excluded.revenue_minor",
            )
            .bind(&day)
            .bind(confirmed.total_minor)
            .execute(&mut **tx)
            .await?;
        }
        OrderCancelled::SUBJECT => {
            let cancelled: OrderCancelled = event.decode()?;
            count(tx, "cancelled", &cancelled.reason).await?;
        }
        _ => return Ok(()),
    }
    sqlx::query(
        "INSERT INTO projection_state (name, last_event_ms, events) VALUES ('models', $1, 1) \
         ON CONFLICT (name) DO UPDATE SET events = projection_state.events + 1, \
         last_event_ms = CASE WHEN excluded.last_event_ms > projection_state.last_event_ms \
         THEN excluded.last_event_ms ELSE projection_state.last_event_ms END",
    )
    .bind(event_ms(event))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn count(
    tx: &mut Transaction<'static, Any>,
    stage: &str,
    reason: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO funnel (stage, reason, orders) VALUES ($1, $2, 1) \
         ON CONFLICT (stage, reason) DO UPDATE SET orders = funnel.orders + 1",
    )
    .bind(stage)
    .bind(reason)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_utc_calendar_days() {
        let late = OffsetDateTime::from_unix_timestamp(1_767_225_599)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        assert_eq!(day_of(late), "2025-12-31");
        let offset = UtcOffset::from_hms(2, 0, 0).unwrap_or(UtcOffset::UTC);
        assert_eq!(day_of(late.to_offset(offset)), "2025-12-31");
        assert_eq!(day_of(OffsetDateTime::UNIX_EPOCH), "1970-01-01");
    }
}
