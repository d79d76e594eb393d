//! The SQL of basket lines (the same statements on SQLite and PostgreSQL).

use sqlx::Row;
use tideway_catalog_api::Item;
use tideway_store::Db;

/// A line as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLine {
    pub item_id: String,
    pub quantity: i64,
    /// The name last seen in the catalog.
    pub name: String,
    /// The unit price last seen in the catalog.
    pub unit_price_minor: i64,
}

/// What an add did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// The line now holds this many units.
    To(i64),
    /// The line would have passed the limit; it holds `current` units, unchanged.
    Refused { current: i64 },
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The lines of `user`, oldest first.
#[tracing::instrument(skip_all, fields(user = %user), err)]
pub async fn lines(db: &Db, user: &str) -> Result<Vec<StoredLine>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT item_id, quantity, name, unit_price_minor FROM basket_lines \
         WHERE user_id = $1 ORDER BY added_at_ms, item_id",
    )
    .bind(user)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|row| {
            Ok(StoredLine {
                item_id: row.try_get("item_id")?,
                quantity: row.try_get("quantity")?,
                name: row.try_get("name")?,
                unit_price_minor: row.try_get("unit_price_minor")?,
            })
        })
        .collect()
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
