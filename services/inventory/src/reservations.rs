//! The checkout saga's stock commands: reserve, release, commit — and the reservations they
//! keep.
//!
//! Every command is handled in one transaction holding the inbox entry, the change and the
//! reply (through the outbox), so a crash leaves all or none of it. Commands are keyed by the
//! order id: the `reservations` row records each order's outcome, and a repeated command
//! (a new event for the same order, e.g. a saga resumed after a crash) re-sends that
//! outcome without a second effect. A redelivered event (same id) is dropped by the inbox.
//!
//! # Never oversold
//!
//! A reservation takes each line with one conditional statement, `UPDATE stock SET available
//! = available - q, reserved = reserved + q WHERE item_id = $1 AND available >= q`, and
//! checks that it changed one row. The condition and the change are one atomic step on both
//! engines (PostgreSQL re-checks the condition on the locked row; SQLite transactions take
//! the write lock at `BEGIN IMMEDIATE`), so concurrent orders can never take the same unit.
//! Lines are merged per item and taken in item order, so two orders lock rows in the same
//! order and cannot deadlock. The lines run in a savepoint: one short line rolls every line
//! back, and the order is recorded as rejected in the same transaction.
//!
//! # Races between commands of one order
//!
//! Release and commit move a reservation out of `reserved` with a conditional update of its
//! row (`… WHERE status = 'reserved'`) before they touch stock, so concurrent deliveries
//! cannot both return or sell its units. A release for an order with no reservation yet (its
//! reserve step timed out and is compensated before the command arrived) leaves a `released`
//! marker, and the late reserve is then refused instead of holding stock forever.

use std::{collections::BTreeMap, sync::Arc};

use serde::{Deserialize, Serialize};
use sqlx::Connection as _;
use tideway_bus::{BusError, Event, EventType, inbox, outbox, outbox::RelayWaker};
use tideway_inventory_api::{
    CommitStock, ReleaseStock, ReserveStock, SERVICE, StockCommitted, StockLine, StockRejected,
    StockReleased, StockReserved,
};
use tideway_runtime::trace;
use tideway_store::{Any, AnyRow, Db, Row, Transaction};
use tracing::Instrument as _;

use crate::{
    stock::{announce, is_item_id},
    time::now_ms,
};

/// The most units of one item a single order may reserve.
pub const MAX_QUANTITY: i64 = 1_000_000;
/// The most distinct items in one reservation.
pub const MAX_LINES: usize = 200;

/// Where a reservation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReservationStatus {
    /// Its lines hold `reserved` units.
    Reserved,
    /// Nothing was reserved (short of stock, unknown item or invalid lines).
    Rejected,
    /// Its units went back to `available` (or it never held any).
    Released,
    /// Its units are sold (`committed`).
    Committed,
}

impl ReservationStatus {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reserved => "reserved",
            Self::Rejected => "rejected",
            Self::Released => "released",
            Self::Committed => "committed",
        }
    }

    /// Whether its lines hold stock (`reserved` or `committed` units).
    pub fn holds_stock(self) -> bool {
        matches!(self, Self::Reserved | Self::Committed)
    }

    fn parse(value: &str) -> Result<Self, sqlx::Error> {
        Ok(match value {
            "reserved" => Self::Reserved,
            "rejected" => Self::Rejected,
            "released" => Self::Released,
            "committed" => Self::Committed,
            other => {
                return Err(sqlx::Error::Decode(
                    format!("unknown reservation status {other:?}").into(),
                ));
            }
        })
    }
}

/// One order's reservation, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// The order.
    pub order_id: String,
    /// Where it stands.
    pub status: ReservationStatus,
    /// For a rejected order: the item that was short (empty when the lines were invalid).
    pub item_id: Option<String>,
    /// Why it was rejected or released.
    pub reason: Option<String>,
    /// The lines asked for, merged per item (they hold stock only while
    /// [`ReservationStatus::holds_stock`]).
    pub lines: Vec<StockLine>,
    /// When the order first asked (unix millis).
    pub created_at_ms: i64,
    /// The last change (unix millis).
    pub updated_at_ms: i64,
}

/// Why a command could not be handled; the event is redelivered.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The database failed.
    #[error("inventory database error")]
    Db(#[from] sqlx::Error),
    /// The inbox or outbox failed.
    #[error("inventory bus error")]
    Bus(#[from] BusError),
    /// The stored stock does not match a reservation (a bug; nothing was changed).
    #[error("stock of item {0} does not match the reservation of order {1}")]
    Inconsistent(String, String),
}

/// Handles the stock commands.
#[derive(Debug, Clone)]
pub struct Commands {
    db: Db,
    waker: RelayWaker,
}

/// The reply an order gets.
enum Reply {
    Reserved,
    Rejected { item_id: String, reason: String },
    Released,
    Committed,
    None,
}

impl Commands {
    /// Commands on `db`, waking the relay through `waker` after each reply.
    pub fn new(db: Db, waker: RelayWaker) -> Arc<Self> {
        Arc::new(Self { db, waker })
    }

    /// Handles one delivery: continues the event's trace, dispatches on its type, acks
    /// events that are not commands or cannot be read (logged: retrying cannot help).
    pub async fn handle(&self, event: Event) -> Result<(), CommandError> {
        let traceparent = event.traceparent.clone();
        trace::continue_from(traceparent.as_deref(), async move {
            let trace_id = trace::current().map(|c| c.trace_id()).unwrap_or_default();
            let span = tracing::info_span!(
                "inventory_command",
                trace_id = %trace_id,
                event_id = %event.id,
                command = %event.event_type,
                order_id = tracing::field::Empty,
            );
            self.dispatch(event).instrument(span).await
        })
        .await
    }

    async fn dispatch(&self, event: Event) -> Result<(), CommandError> {
        let outcome = if event.is::<ReserveStock>() {
            match event.decode::<ReserveStock>() {
                Ok(command) => {
                    tracing::Span::current().record("order_id", command.order_id.as_str());
                    return self.reserve(&event, command).await;
                }
                Err(err) => err,
            }
        } else if event.is::<ReleaseStock>() {
            match event.decode::<ReleaseStock>() {
                Ok(command) => {
                    tracing::Span::current().record("order_id", command.order_id.as_str());
                    return self.release(&event, command).await;
                }
                Err(err) => err,
            }
        } else if event.is::<CommitStock>() {
            match event.decode::<CommitStock>() {
                Ok(command) => {
                    tracing::Span::current().record("order_id", command.order_id.as_str());
                    return self.commit(&event, command).await;
                }
                Err(err) => err,
            }
        } else {
            tracing::debug!("not a stock command; acknowledged");
            return Ok(());
        };
        tracing::error!(error = %outcome, "a stock command cannot be read; acknowledged without effect");
        Ok(())
    }

    /// Opens the command's transaction and records it in the inbox; `None` when the event
    /// was handled before.
    async fn open(&self, event: &Event) -> Result<Option<Transaction<'static, Any>>, CommandError> {
        let mut tx = self.db.begin().await?;
        if inbox::record(&mut tx, SERVICE, &event.id).await? {
            Ok(Some(tx))
        } else {
            tx.rollback().await?;
            tracing::info!("duplicate delivery; acknowledged without effect");
            Ok(None)
        }
    }

    /// Enqueues the reply (if any), commits and wakes the relay.
    async fn finish(
        &self,
        mut tx: Transaction<'static, Any>,
        order_id: &str,
        reply: Reply,
    ) -> Result<(), CommandError> {
        let event = match reply {
            Reply::Reserved => Some(reply_event(&StockReserved {
                order_id: order_id.to_owned(),
            })?),
            Reply::Rejected { item_id, reason } => Some(reply_event(&StockRejected {
                order_id: order_id.to_owned(),
                item_id,
                reason,
            })?),
            Reply::Released => Some(reply_event(&StockReleased {
                order_id: order_id.to_owned(),
            })?),
            Reply::Committed => Some(reply_event(&StockCommitted {
                order_id: order_id.to_owned(),
            })?),
            Reply::None => None,
        };
        if let Some(event) = &event {
            outbox::enqueue(&mut tx, &event.clone().with_subject(order_id)).await?;
        }
        tx.commit().await?;
        if event.is_some() {
            self.waker.wake();
        }
        Ok(())
    }

    /// `ReserveStock`: every line or none; a repeated order answers its stored outcome.
    #[tracing::instrument(skip_all, err)]
    pub async fn reserve(&self, event: &Event, command: ReserveStock) -> Result<(), CommandError> {
        let Some(mut tx) = self.open(event).await? else {
            return Ok(());
        };
        let order_id = command.order_id.as_str();
        let now = now_ms();
        // Claim the order first: a concurrent command for the same order waits on this row
        // (PostgreSQL) or the write lock (SQLite) and then finds it.
        let claimed = sqlx::query(
            "INSERT INTO reservations (order_id, status, created_at_ms, updated_at_ms) \
             VALUES ($1, 'reserved', $2, $2) ON CONFLICT (order_id) DO NOTHING",
        )
        .bind(order_id)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        let reply = if !claimed {
            let existing = load(&mut tx, order_id)
                .await?
                .ok_or_else(|| CommandError::Inconsistent(String::new(), order_id.to_owned()))?;
            tracing::info!(
                status = existing.status.as_str(),
                "repeated reserve; answering the stored outcome"
            );
            stored_outcome(&existing)
        } else {
            match merge_lines(&command.lines) {
                Err((item_id, reason)) => {
                    reject(&mut tx, order_id, &item_id, &reason, now).await?;
                    tracing::info!(reason = %reason, "reservation rejected: invalid lines");
                    Reply::Rejected { item_id, reason }
                }
                Ok(lines) => {
                    insert_lines(&mut tx, order_id, &lines).await?;
                    match take(&mut tx, &lines, now).await? {
                        None => {
                            let ids: Vec<&str> =
                                lines.iter().map(|line| line.item_id.as_str()).collect();
                            announce(&mut tx, &ids).await?;
                            tracing::info!(lines = lines.len(), "stock reserved");
                            Reply::Reserved
                        }
                        Some((item_id, reason)) => {
                            reject(&mut tx, order_id, &item_id, &reason, now).await?;
                            tracing::info!(item_id = %item_id, reason = %reason, "reservation rejected");
                            Reply::Rejected { item_id, reason }
                        }
                    }
                }
            }
        };
        self.finish(tx, order_id, reply).await
    }

    /// `ReleaseStock`: a reservation's units go back to `available`; anything else answers
    /// `StockReleased` without a change (a committed order keeps its stock).
    #[tracing::instrument(skip_all, err)]
    pub async fn release(&self, event: &Event, command: ReleaseStock) -> Result<(), CommandError> {
        let Some(mut tx) = self.open(event).await? else {
            return Ok(());
        };
        let order_id = command.order_id.as_str();
        let now = now_ms();
        // Twice at most: a reservation committed by a concurrent reserve after our first
        // look is released on the second.
        for _ in 0..2 {
            if transition(
                &mut tx,
                order_id,
                ReservationStatus::Released,
                Some(&command.reason),
                now,
            )
            .await?
            {
                let lines = load_lines(&mut tx, order_id).await?;
                for line in &lines {
                    let changed = sqlx::query(
                        "UPDATE stock SET available = available + $2, reserved = reserved - $2, \
                         version = version + 1, updated_at_ms = $3 \
                         WHERE item_id = $1 AND reserved >= $2",
                    )
                    .bind(&line.item_id)
                    .bind(line.quantity)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if changed != 1 {
                        return Err(CommandError::Inconsistent(
                            line.item_id.clone(),
                            order_id.to_owned(),
                        ));
                    }
                }
                let ids: Vec<&str> = lines.iter().map(|line| line.item_id.as_str()).collect();
                announce(&mut tx, &ids).await?;
                tracing::info!(lines = lines.len(), reason = %command.reason, "stock released");
                return self.finish(tx, order_id, Reply::Released).await;
            }
            match status(&mut tx, order_id).await? {
                Some(ReservationStatus::Committed) => {
                    tracing::warn!("release of a committed order refused: its stock stays sold");
                    return self.finish(tx, order_id, Reply::Released).await;
                }
                Some(status) => {
                    tracing::info!(
                        status = status.as_str(),
                        "release of an order holding no stock"
                    );
                    return self.finish(tx, order_id, Reply::Released).await;
                }
                None => {
                    let marked = sqlx::query(
                        "INSERT INTO reservations (order_id, status, reason, created_at_ms, updated_at_ms) \
                         VALUES ($1, 'released', $2, $3, $3) ON CONFLICT (order_id) DO NOTHING",
                    )
                    .bind(order_id)
                    .bind(&command.reason)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                        == 1;
                    if marked {
                        tracing::info!(
                            "release before any reservation: a later reserve will be refused"
                        );
                        return self.finish(tx, order_id, Reply::Released).await;
                    }
                }
            }
        }
        Err(CommandError::Inconsistent(
            String::new(),
            order_id.to_owned(),
        ))
    }

    /// `CommitStock`: a reservation's units become sold. A committed order answers again;
    /// an order with nothing reserved gets no reply (logged), so its saga times out.
    #[tracing::instrument(skip_all, err)]
    pub async fn commit(&self, event: &Event, command: CommitStock) -> Result<(), CommandError> {
        let Some(mut tx) = self.open(event).await? else {
            return Ok(());
        };
        let order_id = command.order_id.as_str();
        let now = now_ms();
        if transition(&mut tx, order_id, ReservationStatus::Committed, None, now).await? {
            let lines = load_lines(&mut tx, order_id).await?;
            for line in &lines {
                let changed = sqlx::query(
                    "UPDATE stock SET reserved = reserved - $2, committed = committed + $2, \
                     version = version + 1, updated_at_ms = $3 \
                     WHERE item_id = $1 AND reserved >= $2",
                )
                .bind(&line.item_id)
                .bind(line.quantity)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if changed != 1 {
                    return Err(CommandError::Inconsistent(
                        line.item_id.clone(),
                        order_id.to_owned(),
                    ));
                }
            }
            tracing::info!(lines = lines.len(), "stock committed");
            return self.finish(tx, order_id, Reply::Committed).await;
        }
        let reply = match status(&mut tx, order_id).await? {
            Some(ReservationStatus::Committed) => Reply::Committed,
            Some(status) => {
                tracing::error!(
                    status = status.as_str(),
                    "commit of an order holding no reserved stock; not answered"
                );
                Reply::None
            }
            None => {
                tracing::error!("commit of an order without a reservation; not answered");
                Reply::None
            }
        };
        self.finish(tx, order_id, reply).await
    }
}

fn reply_event<T: EventType>(payload: &T) -> Result<Event, BusError> {
    let mut event = Event::new(payload)?;
    event.traceparent = trace::current_traceparent();
    Ok(event)
}

/// The outcome a repeated `ReserveStock` gets.
fn stored_outcome(existing: &Reservation) -> Reply {
    match existing.status {
        ReservationStatus::Reserved | ReservationStatus::Committed => Reply::Reserved,
        ReservationStatus::Rejected => Reply::Rejected {
            item_id: existing.item_id.clone().unwrap_or_default(),
            reason: existing.reason.clone().unwrap_or_default(),
        },
        ReservationStatus::Released => Reply::Rejected {
            item_id: existing
                .lines
                .first()
                .map(|l| l.item_id.clone())
                .unwrap_or_default(),
            reason: format!(
                "the order's stock was already released ({})",
                existing.reason.as_deref().unwrap_or("no reason given")
            ),
        },
    }
}

/// The lines merged per item, in item order; or the first bad line's item and why.
pub fn merge_lines(lines: &[StockLine]) -> Result<Vec<StockLine>, (String, String)> {
    if lines.is_empty() {
        return Err((String::new(), "the order has no lines".to_owned()));
    }
    let mut merged: BTreeMap<&str, i64> = BTreeMap::new();
    for line in lines {
        if !is_item_id(&line.item_id) {
            return Err((
                line.item_id.clone(),
                format!("{:?} is not an item id", line.item_id),
            ));
        }
        if line.quantity < 1 {
            return Err((
                line.item_id.clone(),
                format!(
                    "quantity {} of item {} is not at least 1",
                    line.quantity, line.item_id
                ),
            ));
        }
        let total = merged.entry(line.item_id.as_str()).or_insert(0);
        *total = total.saturating_add(line.quantity);
        if *total > MAX_QUANTITY {
            return Err((
                line.item_id.clone(),
                format!(
                    "more than {MAX_QUANTITY} units of item {} requested",
                    line.item_id
                ),
            ));
        }
    }
    if merged.len() > MAX_LINES {
        return Err((
            String::new(),
            format!("more than {MAX_LINES} items in one order"),
        ));
    }
    Ok(merged
        .into_iter()
        .map(|(item_id, quantity)| StockLine {
            item_id: item_id.to_owned(),
            quantity,
        })
        .collect())
}

/// Takes every line in a savepoint; on the first short line rolls them all back and
/// answers the item and why.
async fn take(
    tx: &mut Transaction<'static, Any>,
    lines: &[StockLine],
    now: i64,
) -> Result<Option<(String, String)>, sqlx::Error> {
    let mut savepoint = tx.begin().await?;
    for line in lines {
        let taken = sqlx::query(
            "UPDATE stock SET available = available - $2, reserved = reserved + $2, \
             version = version + 1, updated_at_ms = $3 \
             WHERE item_id = $1 AND available >= $2",
        )
        .bind(&line.item_id)
        .bind(line.quantity)
        .bind(now)
        .execute(&mut *savepoint)
        .await?
        .rows_affected();
        if taken != 1 {
            let available: Option<i64> =
                sqlx::query_scalar("SELECT available FROM stock WHERE item_id = $1")
                    .bind(&line.item_id)
                    .fetch_optional(&mut *savepoint)
                    .await?;
            savepoint.rollback().await?;
            let reason = match available {
                Some(available) => format!(
                    "only {available} of item {} left, {} requested",
                    line.item_id, line.quantity
                ),
                None => format!("item {} is not stocked", line.item_id),
            };
            return Ok(Some((line.item_id.clone(), reason)));
        }
    }
    savepoint.commit().await?;
    Ok(None)
}

async fn reject(
    tx: &mut Transaction<'static, Any>,
    order_id: &str,
    item_id: &str,
    reason: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE reservations SET status = 'rejected', item_id = $2, reason = $3, updated_at_ms = $4 \
         WHERE order_id = $1",
    )
    .bind(order_id)
    .bind(item_id)
    .bind(reason)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn insert_lines(
    tx: &mut Transaction<'static, Any>,
    order_id: &str,
    lines: &[StockLine],
) -> Result<(), sqlx::Error> {
    for line in lines {
        sqlx::query(
            "INSERT INTO reservation_lines (order_id, item_id, quantity) VALUES ($1, $2, $3) \
             ON CONFLICT (order_id, item_id) DO NOTHING",
        )
        .bind(order_id)
        .bind(&line.item_id)
        .bind(line.quantity)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Moves the reservation of `order_id` from `reserved` to `to`; `true` when this
/// transaction made the move (and so owns the stock change that goes with it).
async fn transition(
    tx: &mut Transaction<'static, Any>,
    order_id: &str,
    to: ReservationStatus,
    reason: Option<&str>,
    now: i64,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE reservations SET status = $2, reason = COALESCE($3, reason), updated_at_ms = $4 \
         WHERE order_id = $1 AND status = 'reserved'",
    )
    .bind(order_id)
    .bind(to.as_str())
    .bind(reason)
    .bind(now)
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1)
}

async fn status(
    tx: &mut Transaction<'static, Any>,
    order_id: &str,
) -> Result<Option<ReservationStatus>, sqlx::Error> {
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM reservations WHERE order_id = $1")
            .bind(order_id)
            .fetch_optional(&mut **tx)
            .await?;
    status.as_deref().map(ReservationStatus::parse).transpose()
}

async fn load_lines(
    tx: &mut Transaction<'static, Any>,
    order_id: &str,
) -> Result<Vec<StockLine>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT item_id, quantity FROM reservation_lines WHERE order_id = $1 ORDER BY item_id",
    )
    .bind(order_id)
    .fetch_all(&mut **tx)
    .await?;
    rows.iter().map(line).collect()
}

fn line(row: &AnyRow) -> Result<StockLine, sqlx::Error> {
    Ok(StockLine {
        item_id: row.try_get("item_id")?,
        quantity: row.try_get("quantity")?,
    })
}

fn reservation(row: &AnyRow, lines: Vec<StockLine>) -> Result<Reservation, sqlx::Error> {
    Ok(Reservation {
        order_id: row.try_get("order_id")?,
        status: ReservationStatus::parse(&row.try_get::<String, _>("status")?)?,
        item_id: row.try_get("item_id")?,
        reason: row.try_get("reason")?,
        lines,
        created_at_ms: row.try_get("created_at_ms")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
    })
}

const RESERVATION_COLUMNS: &str = "order_id, status, item_id, reason, created_at_ms, updated_at_ms";

async fn load(
    tx: &mut Transaction<'static, Any>,
    order_id: &str,
) -> Result<Option<Reservation>, sqlx::Error> {
    let row = sqlx::query(&format!(
        "SELECT {RESERVATION_COLUMNS} FROM reservations WHERE order_id = $1"
    ))
    .bind(order_id)
    .fetch_optional(&mut **tx)
    .await?;
    match row {
        Some(row) => {
            let lines = load_lines(tx, order_id).await?;
            Ok(Some(reservation(&row, lines)?))
        }
        None => Ok(None),
    }
}

/// Every reservation with its lines, by order id.
#[tracing::instrument(skip_all, err)]
pub async fn all(db: &Db) -> Result<Vec<Reservation>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT {RESERVATION_COLUMNS} FROM reservations ORDER BY order_id"
    ))
    .fetch_all(db.pool())
    .await?;
    let line_rows = sqlx::query(
        "SELECT order_id, item_id, quantity FROM reservation_lines ORDER BY order_id, item_id",
    )
    .fetch_all(db.pool())
    .await?;
    let mut lines: BTreeMap<String, Vec<StockLine>> = BTreeMap::new();
    for row in &line_rows {
        lines
            .entry(row.try_get("order_id")?)
            .or_default()
            .push(line(row)?);
    }
    rows.iter()
        .map(|row| {
            let order_id: String = row.try_get("order_id")?;
            reservation(row, lines.remove(&order_id).unwrap_or_default())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(item_id: &str, quantity: i64) -> StockLine {
        StockLine {
            item_id: item_id.to_owned(),
            quantity,
        }
    }

    #[test]
    fn lines_merge_per_item_in_item_order() {
        let merged = merge_lines(&[l("b", 1), l("a", 2), l("b", 3)]).unwrap();
        assert_eq!(merged, [l("a", 2), l("b", 4)]);
    }

    #[test]
    fn bad_lines_are_named() {
        assert_eq!(merge_lines(&[]).unwrap_err().0, "");
        assert_eq!(merge_lines(&[l("a", 1), l("b", 0)]).unwrap_err().0, "b");
        assert_eq!(merge_lines(&[l("c", -3)]).unwrap_err().0, "c");
        assert_eq!(merge_lines(&[l("", 1)]).unwrap_err().0, "");
        assert_eq!(
            merge_lines(&[l("d", MAX_QUANTITY), l("d", 1)])
                .unwrap_err()
                .0,
            "d"
        );
        assert_eq!(
            merge_lines(&[l("e", i64::MAX), l("e", i64::MAX)])
                .unwrap_err()
                .0,
            "e"
        );
    }
}
