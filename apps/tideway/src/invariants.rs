//! The checkout invariants, checked against the services' own databases.
//!
//! After any run — a happy load, a decline storm, a process killed mid-saga — these must
//! hold once every order is terminal:
//!
//! 1. no stock figure is negative;
//! 2. per item, reserved plus committed stock equals the units of the orders that are not
//!    cancelled, and no terminal order still holds a reservation;
//! 3. every captured payment belongs to a confirmed order;
//! 4. no cancelled order keeps an authorized or captured (unrefunded) payment;
//! 5. every order is terminal (confirmed or cancelled) — [`wait_terminal`] waits for that
//!    under a deadline.
//!
//! The checker reads the databases directly (SQLite files or PostgreSQL), not the APIs, so
//! it works in every deployment shape and on the data a crashed process left behind.
//! Chaos tests reuse it.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use anyhow::Context;
use tideway_store::{Db, Row};

/// The databases the checkout touches.
#[derive(Debug, Clone)]
pub struct Stores {
    /// The ordering service's database (orders, order lines).
    pub ordering: Db,
    /// The inventory service's database (stock, reservations).
    pub inventory: Db,
    /// The payment service's database (payments).
    pub payment: Db,
}

/// What the checker saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Orders in each state.
    pub orders_by_status: BTreeMap<String, usize>,
    /// Payments in each state.
    pub payments_by_status: BTreeMap<String, usize>,
    /// Every broken rule, as a sentence naming the order or item.
    pub violations: Vec<String>,
}

impl Report {
    /// Whether every invariant holds.
    pub fn holds(&self) -> bool {
        self.violations.is_empty()
    }

    /// Orders in `status`.
    pub fn orders(&self, status: &str) -> usize {
        self.orders_by_status.get(status).copied().unwrap_or(0)
    }
}

/// Waits until no order is pending, or the deadline passes; returns the pending count.
pub async fn wait_terminal(ordering: &Db, deadline: Duration) -> anyhow::Result<i64> {
    let start = Instant::now();
    loop {
        let pending: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE status = 'pending'")
                .fetch_one(ordering.pool())
                .await
                .context("counting pending orders")?;
        if pending == 0 || start.elapsed() >= deadline {
            return Ok(pending);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Checks until every invariant holds or `deadline` passes, and returns the last report.
///
/// An order is terminal once its saga has decided; the compensations it sent (release the
/// stock, void the payment) travel through outboxes and land a moment later. So the
/// invariants are a property of the system at rest: this waits for it to come to rest.
pub async fn settle(stores: &Stores, deadline: Duration) -> anyhow::Result<Report> {
    let start = Instant::now();
    loop {
        let report = check(stores).await?;
        if report.holds() || start.elapsed() >= deadline {
            return Ok(report);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Checks every invariant once.
pub async fn check(stores: &Stores) -> anyhow::Result<Report> {
    let mut report = Report::default();

    // Orders and their lines.
    let orders: BTreeMap<String, String> = sqlx::query("SELECT id, status FROM orders")
        .fetch_all(stores.ordering.pool())
        .await
        .context("reading orders")?
        .iter()
        .map(|row| Ok((row.try_get("id")?, row.try_get("status")?)))
        .collect::<Result<_, sqlx::Error>>()?;
    for status in orders.values() {
        *report.orders_by_status.entry(status.clone()).or_default() += 1;
    }
    for (id, status) in &orders {
        if status == "pending" {
            report
                .violations
                .push(format!("order {id} is not terminal"));
        }
    }
    let mut expected_units: BTreeMap<String, i64> = BTreeMap::new();
    for row in sqlx::query("SELECT o.status, l.item_id, l.quantity FROM order_lines l JOIN orders o ON o.id = l.order_id")
        .fetch_all(stores.ordering.pool())
        .await
        .context("reading order lines")?
    {
        let status: String = row.try_get("status")?;
        if status != "cancelled" {
            *expected_units.entry(row.try_get("item_id")?).or_default() +=
                row.try_get::<i64, _>("quantity")?;
        }
    }

    // Stock.
    let mut held_units: BTreeMap<String, i64> = BTreeMap::new();
    for row in sqlx::query("SELECT item_id, available, reserved, committed FROM stock")
        .fetch_all(stores.inventory.pool())
        .await
        .context("reading stock")?
    {
        let item: String = row.try_get("item_id")?;
        let (available, reserved, committed): (i64, i64, i64) = (
            row.try_get("available")?,
            row.try_get("reserved")?,
            row.try_get("committed")?,
        );
        if available < 0 || reserved < 0 || committed < 0 {
            report.violations.push(format!(
                "item {item} has negative stock: available {available}, reserved {reserved}, committed {committed}"
            ));
        }
        if reserved + committed != 0 {
            held_units.insert(item, reserved + committed);
        }
    }
    let items: BTreeSet<&String> = expected_units.keys().chain(held_units.keys()).collect();
    for item in items {
        let expected = expected_units.get(item).copied().unwrap_or(0);
        let held = held_units.get(item).copied().unwrap_or(0);
        if expected != held {
            report.violations.push(format!(
                "item {item}: reserved + committed is {held}, but orders not cancelled hold {expected}"
            ));
        }
    }
    for row in sqlx::query("SELECT order_id FROM reservations WHERE status = 'reserved'")
        .fetch_all(stores.inventory.pool())
        .await
        .context("reading reservations")?
    {
        let order: String = row.try_get("order_id")?;
        match orders.get(&order).map(String::as_str) {
            Some("pending") => {}
            Some(status) => report.violations.push(format!(
                "order {order} is {status} but still holds a stock reservation"
            )),
            None => report
                .violations
                .push(format!("a reservation exists for unknown order {order}")),
        }
    }

    // Payments.
    for row in sqlx::query("SELECT order_id, status FROM payments")
        .fetch_all(stores.payment.pool())
        .await
        .context("reading payments")?
    {
        let order: String = row.try_get("order_id")?;
        let status: String = row.try_get("status")?;
        *report.payments_by_status.entry(status.clone()).or_default() += 1;
        let order_status = orders.get(&order).map(String::as_str);
        if status == "captured" && order_status != Some("confirmed") {
            report.violations.push(format!(
                "payment of order {order} is captured but the order is {}",
                order_status.unwrap_or("unknown")
            ));
        }
        if order_status == Some("cancelled") && matches!(status.as_str(), "authorized" | "captured")
        {
            report.violations.push(format!(
                "order {order} is cancelled but its payment is still {status}"
            ));
        }
    }
    Ok(report)
}
