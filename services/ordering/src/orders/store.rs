//! The SQL of orders and their lines.

use std::collections::HashMap;

use tideway_ordering_api::{OrderLine, OrderStatus, OrderView};
use tideway_store::{Any, Db, Row, Transaction, sqlx::any::AnyRow};

use crate::time::now_text;

/// An order about to be inserted.
#[derive(Debug, Clone)]
pub struct NewOrder {
    pub id: String,
    pub user_id: String,
    pub lines: Vec<OrderLine>,
    pub total_minor: i64,
    pub currency: String,
    pub trace_id: String,
    pub idempotency_key: Option<String>,
}

/// What the saga listing shows of an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderSummary {
    pub status: OrderStatus,
    pub reason: Option<String>,
    pub trace_id: String,
}

const COLUMNS: &str =
    "id, user_id, status, reason, total_minor, currency, trace_id, created_at, updated_at";

pub fn status_text(status: OrderStatus) -> &'static str {
    match status {
        OrderStatus::Pending => "pending",
        OrderStatus::Confirmed => "confirmed",
        OrderStatus::Cancelled => "cancelled",
    }
}

fn parse_status(text: &str) -> Result<OrderStatus, sqlx::Error> {
    match text {
        "pending" => Ok(OrderStatus::Pending),
        "confirmed" => Ok(OrderStatus::Confirmed),
        "cancelled" => Ok(OrderStatus::Cancelled),
        other => Err(sqlx::Error::Decode(
            format!("unknown order status {other:?}").into(),
        )),
    }
}

/// Inserts the order, Pending, with its lines.
pub async fn insert(tx: &mut Transaction<'_, Any>, order: &NewOrder) -> Result<(), sqlx::Error> {
    let now = now_text();
    sqlx::query(
        "INSERT INTO orders (id, user_id, status, reason, total_minor, currency, trace_id, \
         idempotency_key, payment_captured, created_at, updated_at) \
         VALUES ($1, $2, $3, NULL, $4, $5, $6, $7, 0, $8, $8)",
    )
    .bind(&order.id)
    .bind(&order.user_id)
    .bind(status_text(OrderStatus::Pending))
    .bind(order.total_minor)
    .bind(&order.currency)
    .bind(&order.trace_id)
    .bind(order.idempotency_key.as_deref())
    .bind(&now)
    .execute(&mut **tx)
    .await?;
    for (line_no, line) in (0_i64..).zip(&order.lines) {
        sqlx::query(
            "INSERT INTO order_lines (order_id, line_no, item_id, name, unit_price_minor, quantity) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&order.id)
        .bind(line_no)
        .bind(&line.item_id)
        .bind(&line.name)
        .bind(line.unit_price_minor)
        .bind(line.quantity)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// The id of `user_id`'s order placed with `key`, if any.
pub async fn find_by_key(db: &Db, user_id: &str, key: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM orders WHERE user_id = $1 AND idempotency_key = $2")
        .bind(user_id)
        .bind(key)
        .fetch_optional(db.pool())
        .await
}

fn decode(row: &AnyRow) -> Result<OrderView, sqlx::Error> {
    let status: String = row.try_get("status")?;
    Ok(OrderView {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        status: parse_status(&status)?,
        reason: row.try_get("reason")?,
        lines: Vec::new(),
        total_minor: row.try_get("total_minor")?,
        currency: row.try_get("currency")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        trace_id: row.try_get("trace_id")?,
        timeline: Vec::new(),
    })
}

/// Fills in the lines of `orders`.
async fn with_lines(db: &Db, mut orders: Vec<OrderView>) -> Result<Vec<OrderView>, sqlx::Error> {
    if orders.is_empty() {
        return Ok(orders);
    }
    let placeholders: Vec<String> = (1..=orders.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        "SELECT order_id, item_id, name, unit_price_minor, quantity FROM order_lines \
         WHERE order_id IN ({}) ORDER BY order_id, line_no",
        placeholders.join(", ")
    );
    let mut query = sqlx::query(&sql);
    for order in &orders {
        query = query.bind(&order.id);
    }
    let mut lines: HashMap<String, Vec<OrderLine>> = HashMap::new();
    for row in query.fetch_all(db.pool()).await? {
        let order_id: String = row.try_get("order_id")?;
        lines.entry(order_id).or_default().push(OrderLine {
            item_id: row.try_get("item_id")?,
            name: row.try_get("name")?,
            unit_price_minor: row.try_get("unit_price_minor")?,
            quantity: row.try_get("quantity")?,
        });
    }
    for order in &mut orders {
        order.lines = lines.remove(&order.id).unwrap_or_default();
    }
    Ok(orders)
}

/// The order `id` with its lines (no timeline).
pub async fn load(db: &Db, id: &str) -> Result<Option<OrderView>, sqlx::Error> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM orders WHERE id = $1"))
        .bind(id)
        .fetch_optional(db.pool())
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    Ok(with_lines(db, vec![decode(&row)?]).await?.pop())
}

/// One page of `user_id`'s orders, newest first, and how many there are.
pub async fn list(
    db: &Db,
    user_id: &str,
    page: u32,
    page_size: u32,
) -> Result<(Vec<OrderView>, u64), sqlx::Error> {
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE user_id = $1")
        .bind(user_id)
        .fetch_one(db.pool())
        .await?;
    let offset = i64::from(page.saturating_sub(1)) * i64::from(page_size);
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM orders WHERE user_id = $1 \
         ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3"
    ))
    .bind(user_id)
    .bind(i64::from(page_size))
    .bind(offset)
    .fetch_all(db.pool())
    .await?;
    let orders = rows.iter().map(decode).collect::<Result<Vec<_>, _>>()?;
    Ok((
        with_lines(db, orders).await?,
        u64::try_from(total).unwrap_or(0),
    ))
}

/// Every order with its lines, oldest first.
pub async fn all(db: &Db) -> Result<Vec<OrderView>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM orders ORDER BY created_at, id"
    ))
    .fetch_all(db.pool())
    .await?;
    let orders = rows.iter().map(decode).collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::with_capacity(orders.len());
    // Bounded IN lists: SQLite allows a limited number of parameters.
    let mut rest = orders.into_iter().peekable();
    while rest.peek().is_some() {
        let chunk: Vec<OrderView> = rest.by_ref().take(500).collect();
        out.extend(with_lines(db, chunk).await?);
    }
    Ok(out)
}

/// Ids, creation times and trace ids of every pending order.
pub async fn pending(db: &Db) -> Result<Vec<(String, String, String)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, created_at, trace_id FROM orders WHERE status = $1 ORDER BY created_at",
    )
    .bind(status_text(OrderStatus::Pending))
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get("id")?,
                row.try_get("created_at")?,
                row.try_get("trace_id")?,
            ))
        })
        .collect()
}

/// Moves a pending order to `status` (with `reason`); `false` when it was not pending.
pub async fn finish(
    tx: &mut Transaction<'_, Any>,
    id: &str,
    status: OrderStatus,
    reason: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE orders SET status = $1, reason = $2, updated_at = $3 WHERE id = $4 AND status = $5",
    )
    .bind(status_text(status))
    .bind(reason)
    .bind(now_text())
    .bind(id)
    .bind(status_text(OrderStatus::Pending))
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The status of the order `id`, if it exists.
pub async fn status_of(
    tx: &mut Transaction<'_, Any>,
    id: &str,
) -> Result<Option<OrderStatus>, sqlx::Error> {
    let status: Option<String> = sqlx::query_scalar("SELECT status FROM orders WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
    status.map(|s| parse_status(&s)).transpose()
}

/// Records that the order's payment is captured; `false` when the order is unknown.
pub async fn mark_captured(tx: &mut Transaction<'_, Any>, id: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("UPDATE orders SET payment_captured = 1 WHERE id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Whether the order's payment is known to be captured.
pub async fn is_captured(db: &Db, id: &str) -> Result<bool, sqlx::Error> {
    let captured: Option<i64> =
        sqlx::query_scalar("SELECT payment_captured FROM orders WHERE id = $1")
            .bind(id)
            .fetch_optional(db.pool())
            .await?;
    Ok(captured == Some(1))
}

/// The status, reason and trace id of the orders `ids` that exist, by id.
pub async fn summaries(
    db: &Db,
    ids: &[String],
) -> Result<HashMap<String, OrderSummary>, sqlx::Error> {
    let mut out = HashMap::with_capacity(ids.len());
    // Bounded IN lists: SQLite allows a limited number of parameters.
    for chunk in ids.chunks(500) {
        let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT id, status, reason, trace_id FROM orders WHERE id IN ({})",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(&sql);
        for id in chunk {
            query = query.bind(id);
        }
        for row in query.fetch_all(db.pool()).await? {
            let status: String = row.try_get("status")?;
            out.insert(
                row.try_get("id")?,
                OrderSummary {
                    status: parse_status(&status)?,
                    reason: row.try_get("reason")?,
                    trace_id: row.try_get("trace_id")?,
                },
            );
        }
    }
    Ok(out)
}
