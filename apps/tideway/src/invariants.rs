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
//! The checker reads each service's database through that service's own snapshot
//! ([`tideway_ordering::Snapshot::read`], [`tideway_inventory::Snapshot::read`],
//! [`tideway_payment::Snapshot::read`]), not its HTTP API, so it works in every deployment
//! shape and on the data a crashed process left behind, and no table layout leaks out of
//! the service that owns it. A snapshot that cannot be read is an error: the checker never
//! passes on data it did not see. Chaos tests reuse it.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use anyhow::Context;
use tideway_inventory::ReservationStatus;
use tideway_ordering_api::{OrderStatus, OrderView};
use tideway_payment_api::{PaymentStatus, PaymentView};
use tideway_store::Db;

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
        let orders = read_orders(ordering).await?;
        let pending = orders
            .iter()
            .filter(|order| order.status == OrderStatus::Pending)
            .count();
        let pending = i64::try_from(pending).unwrap_or(i64::MAX);
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

/// Checks every invariant once; an error when a snapshot cannot be read.
pub async fn check(stores: &Stores) -> anyhow::Result<Report> {
    let orders = read_orders(&stores.ordering).await?;
    let inventory = tideway_inventory::Snapshot::read(&stores.inventory)
        .await
        .context("reading the inventory snapshot")?;
    let payments = tideway_payment::Snapshot::read(&stores.payment)
        .await
        .context("reading the payment snapshot")?
        .payments;
    Ok(judge(&orders, &inventory, &payments))
}

async fn read_orders(ordering: &Db) -> anyhow::Result<Vec<OrderView>> {
    Ok(tideway_ordering::Snapshot::read(ordering)
        .await
        .context("reading the ordering snapshot")?
        .orders)
}

/// The invariants over what the snapshots show.
fn judge(
    orders: &[OrderView],
    inventory: &tideway_inventory::Snapshot,
    payments: &[PaymentView],
) -> Report {
    let mut report = Report::default();

    // Orders and their lines.
    let statuses: BTreeMap<&str, OrderStatus> = orders
        .iter()
        .map(|order| (order.id.as_str(), order.status))
        .collect();
    for order in orders {
        *report
            .orders_by_status
            .entry(order_status(order.status).to_owned())
            .or_default() += 1;
        if order.status == OrderStatus::Pending {
            report
                .violations
                .push(format!("order {} is not terminal", order.id));
        }
    }
    let mut expected_units: BTreeMap<&str, i64> = BTreeMap::new();
    for order in orders.iter().filter(|o| o.status != OrderStatus::Cancelled) {
        for line in &order.lines {
            *expected_units.entry(line.item_id.as_str()).or_default() += line.quantity;
        }
    }

    // Stock.
    let mut held_units: BTreeMap<&str, i64> = BTreeMap::new();
    for level in &inventory.stock {
        let (item, available, reserved, committed) = (
            level.item_id.as_str(),
            level.available,
            level.reserved,
            level.committed,
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
    let items: BTreeSet<&str> = expected_units
        .keys()
        .chain(held_units.keys())
        .copied()
        .collect();
    for item in items {
        let expected = expected_units.get(item).copied().unwrap_or(0);
        let held = held_units.get(item).copied().unwrap_or(0);
        if expected != held {
            report.violations.push(format!(
                "item {item}: reserved + committed is {held}, but orders not cancelled hold {expected}"
            ));
        }
    }
    for reservation in inventory
        .reservations
        .iter()
        .filter(|r| r.status == ReservationStatus::Reserved)
    {
        let order = &reservation.order_id;
        match statuses.get(order.as_str()) {
            Some(OrderStatus::Pending) => {}
            Some(status) => report.violations.push(format!(
                "order {order} is {} but still holds a stock reservation",
                order_status(*status)
            )),
            None => report
                .violations
                .push(format!("a reservation exists for unknown order {order}")),
        }
    }

    // Payments.
    for payment in payments {
        let order = &payment.order_id;
        let status = tideway_payment::payments::status_name(payment.status);
        *report
            .payments_by_status
            .entry(status.to_owned())
            .or_default() += 1;
        let order_status = statuses.get(order.as_str()).copied();
        if payment.status == PaymentStatus::Captured && order_status != Some(OrderStatus::Confirmed)
        {
            report.violations.push(format!(
                "payment of order {order} is captured but the order is {}",
                order_status.map_or("unknown", self::order_status)
            ));
        }
        if order_status == Some(OrderStatus::Cancelled)
            && matches!(
                payment.status,
                PaymentStatus::Authorized | PaymentStatus::Captured
            )
        {
            report.violations.push(format!(
                "order {order} is cancelled but its payment is still {status}"
            ));
        }
    }
    report
}

/// An order status as the report names it.
fn order_status(status: OrderStatus) -> &'static str {
    match status {
        OrderStatus::Pending => "pending",
        OrderStatus::Confirmed => "confirmed",
        OrderStatus::Cancelled => "cancelled",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn order(id: &str, status: &str, quantity: i64) -> OrderView {
        serde_json::from_value(json!({
            "id": id, "user_id": "u", "status": status, "total_minor": 100 * quantity,
            "currency": "EUR", "created_at": "t", "updated_at": "t", "trace_id": "",
            "lines": [{"item_id": "a", "name": "A", "unit_price_minor": 100, "quantity": quantity}],
        }))
        .unwrap()
    }

    fn inventory(committed: i64, reservations: &[(&str, &str)]) -> tideway_inventory::Snapshot {
        let reservations: Vec<Value> = reservations
            .iter()
            .map(|(order, status)| {
                json!({"order_id": order, "status": status, "item_id": null, "reason": null,
                       "lines": [], "created_at_ms": 0, "updated_at_ms": 0})
            })
            .collect();
        serde_json::from_value(json!({
            "stock": [{"item_id": "a", "available": 3, "reserved": 0, "committed": committed}],
            "reservations": reservations,
        }))
        .unwrap()
    }

    fn payment(order: &str, status: &str) -> PaymentView {
        serde_json::from_value(json!({
            "payment_id": format!("p-{order}"), "order_id": order, "amount_minor": 100,
            "currency": "EUR", "status": status, "card_last4": "4242",
        }))
        .unwrap()
    }

    #[test]
    fn a_settled_checkout_holds_and_each_broken_rule_is_named() {
        let orders = [order("o1", "confirmed", 2), order("o2", "cancelled", 1)];
        let report = judge(
            &orders,
            &inventory(2, &[("o1", "committed"), ("o2", "released")]),
            &[payment("o1", "captured"), payment("o2", "voided")],
        );
        assert!(report.holds(), "{report:#?}");
        assert_eq!(
            (report.orders("confirmed"), report.orders("cancelled")),
            (1, 1)
        );
        assert_eq!(report.payments_by_status.get("captured"), Some(&1));

        let orders = [
            order("o1", "confirmed", 2),
            order("o2", "cancelled", 1),
            order("o3", "pending", 1),
        ];
        let report = judge(
            &orders,
            &inventory(4, &[("o1", "committed"), ("o2", "reserved")]),
            &[
                payment("o1", "captured"),
                payment("o2", "authorized"),
                payment("o4", "captured"),
            ],
        );
        assert_eq!(
            report.violations,
            [
                "order o3 is not terminal",
                "item a: reserved + committed is 4, but orders not cancelled hold 3",
                "order o2 is cancelled but still holds a stock reservation",
                "order o2 is cancelled but its payment is still authorized",
                "payment of order o4 is captured but the order is unknown",
            ],
            "{report:#?}"
        );
    }
}
