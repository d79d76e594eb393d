//! Reading the read models.

use tideway_reporting_api::{
    CancelReason, Funnel, RevenueDay, RevenueReport, SalesReport, SalesRow, TopItem, TopItems,
};
use tideway_store::{Db, Row};

/// An inclusive range of UTC days (`YYYY-MM-DD`, compared as text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Days {
    /// The first day.
    pub from: String,
    /// The last day.
    pub to: String,
}

impl Default for Days {
    fn default() -> Self {
        Self {
            from: "0000-01-01".to_owned(),
            to: "9999-12-31".to_owned(),
        }
    }
}

/// Sales per item per day in `days`, oldest day first, then by item.
pub async fn sales(db: &Db, days: &Days) -> Result<SalesReport, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT day, item_id, name, units, revenue_minor FROM sales_daily \
         WHERE day >= $1 AND day <= $2 ORDER BY day, item_id",
    )
    .bind(&days.from)
    .bind(&days.to)
    .fetch_all(db.pool())
    .await?;
    let rows = rows
        .iter()
        .map(|row| {
            Ok(SalesRow {
                day: row.try_get("day")?,
                item_id: row.try_get("item_id")?,
                name: row.try_get("name")?,
                units: row.try_get("units")?,
                revenue_minor: row.try_get("revenue_minor")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
    Ok(SalesReport { rows })
}

/// Revenue per day in `days`, oldest first.
pub async fn revenue(db: &Db, days: &Days) -> Result<RevenueReport, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT day, orders, revenue_minor FROM revenue_daily \
         WHERE day >= $1 AND day <= $2 ORDER BY day",
    )
    .bind(&days.from)
    .bind(&days.to)
    .fetch_all(db.pool())
    .await?;
    let days = rows
        .iter()
        .map(|row| {
            Ok(RevenueDay {
                day: row.try_get("day")?,
                orders: row.try_get("orders")?,
                revenue_minor: row.try_get("revenue_minor")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
    Ok(RevenueReport { days })
}

/// The funnel, cancellations by reason most frequent first.
pub async fn funnel(db: &Db) -> Result<Funnel, sqlx::Error> {
    let rows = sqlx::query("SELECT stage, reason, orders FROM funnel ORDER BY orders DESC, reason")
        .fetch_all(db.pool())
        .await?;
    let mut funnel = Funnel {
        placed: 0,
        confirmed: 0,
        cancelled: 0,
        cancelled_by_reason: Vec::new(),
    };
    for row in &rows {
        let stage: String = row.try_get("stage")?;
        let orders: i64 = row.try_get("orders")?;
        match stage.as_str() {
            "placed" => funnel.placed += orders,
            "confirmed" => funnel.confirmed += orders,
            "cancelled" => {
                funnel.cancelled += orders;
                funnel.cancelled_by_reason.push(CancelReason {
                    reason: row.try_get("reason")?,
                    orders,
                });
            }
            _ => {}
        }
    }
    Ok(funnel)
}

/// The `limit` items with the most units sold in `days` (ties by id).
pub async fn top_items(db: &Db, days: &Days, limit: u32) -> Result<TopItems, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT item_id, MAX(name) AS name, CAST(SUM(units) AS BIGINT) AS units, \
         CAST(SUM(revenue_minor) AS BIGINT) AS revenue \
         FROM sales_daily WHERE day >= $1 AND day <= $2 GROUP BY item_id \
         ORDER BY SUM(units) DESC, item_id LIMIT $3",
    )
    .bind(&days.from)
    .bind(&days.to)
    .bind(i64::from(limit))
    .fetch_all(db.pool())
    .await?;
    let items = rows
        .iter()
        .map(|row| {
            Ok(TopItem {
                item_id: row.try_get("item_id")?,
                name: row.try_get("name")?,
                units: row.try_get("units")?,
                revenue_minor: row.try_get("revenue")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
    Ok(TopItems { items, limit })
}

/// The time of the latest event applied (unix milliseconds), if any.
pub async fn last_event_ms(db: &Db) -> Result<Option<i64>, sqlx::Error> {
    let row = sqlx::query("SELECT last_event_ms FROM projection_state WHERE name = 'models'")
        .fetch_optional(db.pool())
        .await?;
    row.map(|row| row.try_get("last_event_ms")).transpose()
}
