//! The SQL store (the same statements on SQLite and PostgreSQL).
//!
//! A basket's last touch is the newest `updated_at_ms` of its lines (set by adds and
//! changes of quantity). A basket touched longer ago than its lifetime is expired: reads
//! see no lines (and delete them on the way), and [`sweep`] deletes every expired basket
//! now and then, so abandoned ones do not stay forever.

use std::time::Duration;

use sqlx::Row;
use tideway_bus::inbox;
use tideway_catalog_api::Item;
use tideway_ordering_api::OrderLine;
use tideway_store::Db;

use super::{Added, StoreError, StoredLine};

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The newest touch a basket may have had and still be expired now.
fn expired_at_or_before(ttl: Duration) -> i64 {
    now_ms().saturating_sub(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX))
}

/// Deletes the lines of `user` when its basket expired at `cutoff` — one statement, so a
/// line touched meanwhile keeps the basket.
const DELETE_EXPIRED_BASKET: &str = "DELETE FROM basket_lines WHERE user_id = $1 \
     AND (SELECT MAX(updated_at_ms) FROM basket_lines WHERE user_id = $1) <= $2";

/// The lines of `user`, oldest first; none (and deleted) once its basket has expired.
#[tracing::instrument(skip_all, fields(user = %user), err)]
pub async fn lines(db: &Db, ttl: Duration, user: &str) -> Result<Vec<StoredLine>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT item_id, quantity, name, unit_price_minor, updated_at_ms FROM basket_lines \
         WHERE user_id = $1 ORDER BY added_at_ms, item_id",
    )
    .bind(user)
    .fetch_all(db.pool())
    .await?;
    let cutoff = expired_at_or_before(ttl);
    let mut touched = i64::MIN;
    let mut lines = Vec::with_capacity(rows.len());
    for row in &rows {
        touched = touched.max(row.try_get("updated_at_ms")?);
        lines.push(StoredLine {
            item_id: row.try_get("item_id")?,
            quantity: row.try_get("quantity")?,
            name: row.try_get("name")?,
            unit_price_minor: row.try_get("unit_price_minor")?,
        });
    }
    if !lines.is_empty() && touched <= cutoff {
        sqlx::query(DELETE_EXPIRED_BASKET)
            .bind(user)
            .bind(cutoff)
            .execute(db.pool())
            .await?;
        return Ok(Vec::new());
    }
    Ok(lines)
}

/// Deletes every basket untouched for `ttl`; returns how many lines went.
#[tracing::instrument(skip_all, err)]
pub async fn sweep(db: &Db, ttl: Duration) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM basket_lines WHERE user_id IN (SELECT user_id FROM basket_lines \
         GROUP BY user_id HAVING MAX(updated_at_ms) <= $1)",
    )
    .bind(expired_at_or_before(ttl))
    .execute(db.pool())
    .await?;
    Ok(done.rows_affected())
}

/// Adds `quantity` units of `item` to the line of `user`, creating it if needed, as long as
/// the line's quantity stays at most `limit`. One statement, so concurrent adds all count
/// and none can push the line past the limit. The caller checks `quantity <= limit` (an
/// insert is not guarded by the `WHERE`).
#[tracing::instrument(skip_all, fields(user = %user, item = %item.id, quantity = quantity), err)]
pub async fn add(
    db: &Db,
    user: &str,
    item: &Item,
    quantity: i64,
    limit: i64,
) -> Result<Added, sqlx::Error> {
    let now = now_ms();
    let row = sqlx::query(
        "INSERT INTO basket_lines \
             (user_id, item_id, quantity, name, unit_price_minor, added_at_ms, updated_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $6) \
         ON CONFLICT (user_id, item_id) DO UPDATE SET \
             quantity = basket_lines.quantity + excluded.quantity, \
             name = excluded.name, \
             unit_price_minor = excluded.unit_price_minor, \
             updated_at_ms = excluded.updated_at_ms \
         WHERE basket_lines.quantity + excluded.quantity <= $7 \
         RETURNING quantity",
    )
    .bind(user)
    .bind(&item.id)
    .bind(quantity)
    .bind(&item.name)
    .bind(item.price_minor)
    .bind(now)
    .bind(limit)
    .fetch_optional(db.pool())
    .await?;
    if let Some(row) = row {
        return Ok(Added::To(row.try_get("quantity")?));
    }
    let current: Option<i64> =
        sqlx::query_scalar("SELECT quantity FROM basket_lines WHERE user_id = $1 AND item_id = $2")
            .bind(user)
            .bind(&item.id)
            .fetch_optional(db.pool())
            .await?;
    Ok(Added::Refused {
        current: current.unwrap_or(0),
    })
}

/// Sets the quantity of the line of `item` for `user`; `false` when there is no such line.
#[tracing::instrument(skip_all, fields(user = %user, item = %item.id, quantity = quantity), err)]
pub async fn set(db: &Db, user: &str, item: &Item, quantity: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE basket_lines SET quantity = $1, name = $2, unit_price_minor = $3, \
         updated_at_ms = $4 WHERE user_id = $5 AND item_id = $6",
    )
    .bind(quantity)
    .bind(&item.name)
    .bind(item.price_minor)
    .bind(now_ms())
    .bind(user)
    .bind(&item.id)
    .execute(db.pool())
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Removes the line of `item_id` for `user`; `false` when there was none.
#[tracing::instrument(skip_all, fields(user = %user, item_id = %item_id), err)]
pub async fn remove(db: &Db, user: &str, item_id: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM basket_lines WHERE user_id = $1 AND item_id = $2")
        .bind(user)
        .bind(item_id)
        .execute(db.pool())
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Removes every line of `user`.
#[tracing::instrument(skip_all, fields(user = %user), err)]
pub async fn clear(db: &Db, user: &str) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM basket_lines WHERE user_id = $1")
        .bind(user)
        .execute(db.pool())
        .await?;
    Ok(done.rows_affected())
}

/// Takes the units of a confirmed order out of `user`'s basket, recording `event_id` in the
/// inbox of `consumer` in the same transaction; `false` when it was recorded before.
#[tracing::instrument(skip_all, fields(event_id = %event_id), err)]
pub async fn apply_order(
    db: &Db,
    consumer: &str,
    event_id: &str,
    user: &str,
    lines: &[OrderLine],
) -> Result<bool, StoreError> {
    let mut tx = db.begin().await?;
    if !inbox::record(&mut tx, consumer, event_id).await? {
        return Ok(false);
    }
    for line in lines {
        sqlx::query(
            "DELETE FROM basket_lines WHERE user_id = $1 AND item_id = $2 AND quantity <= $3",
        )
        .bind(user)
        .bind(&line.item_id)
        .bind(line.quantity)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE basket_lines SET quantity = quantity - $3 WHERE user_id = $1 AND item_id = $2",
        )
        .bind(user)
        .bind(&line.item_id)
        .bind(line.quantity)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(true)
}
