//! Stock levels: reading them (everyone) and setting what is available (admins), plus the
//! queries behind them.
//!
//! `PUT /stock/{item_id}` sets `available` only: units held by reservations (`reserved`) and
//! sold (`committed`) belong to orders and move only through the saga's commands.

use axum::{
    Router,
    extract::State,
    response::{IntoResponse as _, Response},
    routing::get,
};
use serde::{Deserialize, Serialize};
use tideway_bus::{BusError, Event, outbox};
use tideway_inventory_api::{StockLevel, StockLevelChanged};
use tideway_runtime::trace;
use tideway_runtime::{
    Problem,
    auth::AdminUser,
    extract::{Json, Path, Query, parse_json},
};
use tideway_store::{Any, AnyRow, Db, Row, Transaction};

use crate::{AppState, error::ApiError, time::now_ms};

/// The most units an item may have available.
pub const MAX_AVAILABLE: i64 = 1_000_000;
/// The most ids `GET /stock?ids=…` accepts.
pub const MAX_IDS: usize = 100;

/// The body of `PUT /api/v1/inventory/stock/{item_id}` (admin).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StockUpdate {
    /// Units that can be reserved: 0 to 1,000,000.
    #[schema(minimum = 0, maximum = 1_000_000)]
    pub available: i64,
}

/// The query of `GET /api/v1/inventory/stock`.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct ManyQuery {
    /// Comma-separated item ids.
    ids: Option<String>,
}

/// The stock routes, relative to the inventory's prefix.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/stock", get(get_many))
        .route("/stock/{item_id}", get(get_one).put(put_one))
}

/// Whether `id` can name an item: 1–64 ASCII letters, digits, `-` or `_` (catalog ids are
/// UUIDs).
pub fn is_item_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Checks a new `available` value.
pub fn validate_available(available: i64) -> Result<i64, ApiError> {
    if (0..=MAX_AVAILABLE).contains(&available) {
        Ok(available)
    } else {
        Err(ApiError::field(
            "available",
            format!("must be between 0 and {MAX_AVAILABLE}"),
        ))
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("no stock for item {id}"))
}

#[utoipa::path(
    get,
    path = "/api/v1/inventory/stock/{item_id}",
    tag = "inventory",
    params(("item_id" = String, Path, description = "The catalog item id")),
    responses(
        (status = 200, description = "The item's stock", body = StockLevel),
        (status = 404, response = Problem),
    )
)]
pub(crate) async fn get_one(
    State(state): State<AppState>,
    Path(item_id): Path<String>,
) -> Result<Json<StockLevel>, ApiError> {
    if !is_item_id(&item_id) {
        return Err(not_found(&item_id));
    }
    let level = get_level(&state.db, &item_id)
        .await?
        .ok_or_else(|| not_found(&item_id))?;
    Ok(Json(level))
}

#[utoipa::path(
    get,
    path = "/api/v1/inventory/stock",
    tag = "inventory",
    params(("ids" = String, Query, description = "Comma-separated item ids, at most 100")),
    responses(
        (status = 200, description = "The stock of each item that has any, in no particular order", body = Vec<StockLevel>),
        (status = 400, response = Problem),
    )
)]
pub(crate) async fn get_many(
    State(state): State<AppState>,
    Query(query): Query<ManyQuery>,
) -> Result<Json<Vec<StockLevel>>, ApiError> {
    let ids = parse_ids(query.ids.as_deref())?;
    Ok(Json(get_many_levels(&state.db, &ids).await?))
}

#[utoipa::path(
    put,
    path = "/api/v1/inventory/stock/{item_id}",
    tag = "inventory",
    params(("item_id" = String, Path, description = "The catalog item id")),
    request_body = StockUpdate,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The item's stock after the change", body = StockLevel),
        (status = 400, response = Problem),
        (status = 401, response = Problem),
        (status = 403, response = Problem),
        (status = 404, response = Problem),
        (status = 413, response = Problem),
        (status = 415, response = Problem),
        (status = 422, response = Problem),
    )
)]
pub(crate) async fn put_one(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(item_id): Path<String>,
    Json(body): Json<serde_json::Value>,
) -> Result<Response, ApiError> {
    if !is_item_id(&item_id) {
        return Err(not_found(&item_id));
    }
    // serde reads a struct from an array too (`[7]`); only an object is a stock update.
    if !body.is_object() {
        return Err(ApiError::field("body", "must be a JSON object"));
    }
    let update: StockUpdate = match serde_json::to_vec(&body)
        .map_err(|_| ApiError::field("body", "must be a JSON object"))
        .map(|bytes| parse_json(&bytes))?
    {
        Ok(update) => update,
        Err(problem) => return Ok(problem.into_response()),
    };
    let available = validate_available(update.available)?;
    let level = set_available(&state.db, &item_id, available).await?;
    state.waker.wake();
    tracing::info!(item_id = %item_id, available, admin = %admin.sub, "stock set");
    Ok(Json(level).into_response())
}

/// The ids of `ids=a,b`: at most [`MAX_IDS`] entries (counted before anything else, so a
/// long list costs nothing more), each valid, duplicates dropped in one pass with a set.
fn parse_ids(ids: Option<&str>) -> Result<Vec<String>, ApiError> {
    let Some(ids) = ids else {
        return Err(ApiError::query("ids", "required: comma-separated item ids"));
    };
    if ids.split(',').nth(MAX_IDS).is_some() {
        return Err(ApiError::query(
            "ids",
            format!("at most {MAX_IDS} ids per request"),
        ));
    }
    let mut seen = std::collections::HashSet::with_capacity(MAX_IDS);
    let mut parsed: Vec<String> = Vec::new();
    for id in ids.split(',').map(str::trim) {
        if !is_item_id(id) {
            return Err(ApiError::query(
                "ids",
                format!("{id:?} is not an item id (1–64 letters, digits, '-' or '_')"),
            ));
        }
        if seen.insert(id) {
            parsed.push(id.to_owned());
        }
    }
    Ok(parsed)
}

fn level(row: &AnyRow) -> Result<StockLevel, sqlx::Error> {
    Ok(StockLevel {
        item_id: row.try_get("item_id")?,
        available: row.try_get("available")?,
        reserved: row.try_get("reserved")?,
        committed: row.try_get("committed")?,
    })
}

/// The stock of `item_id`, if it has a row.
#[tracing::instrument(skip_all, fields(item_id = %item_id), err)]
pub async fn get_level(db: &Db, item_id: &str) -> Result<Option<StockLevel>, sqlx::Error> {
    sqlx::query("SELECT item_id, available, reserved, committed FROM stock WHERE item_id = $1")
        .bind(item_id)
        .fetch_optional(db.pool())
        .await?
        .as_ref()
        .map(level)
        .transpose()
}

/// The stock of those of `ids` that have a row, in the order asked.
#[tracing::instrument(skip_all, fields(count = ids.len()), err)]
pub async fn get_many_levels(db: &Db, ids: &[String]) -> Result<Vec<StockLevel>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let placeholders: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        "SELECT item_id, available, reserved, committed FROM stock WHERE item_id IN ({})",
        placeholders.join(", ")
    );
    let mut query = sqlx::query(&sql);
    for id in ids {
        query = query.bind(id);
    }
    let rows = query.fetch_all(db.pool()).await?;
    let mut levels = rows.iter().map(level).collect::<Result<Vec<_>, _>>()?;
    levels.sort_by_key(|l| ids.iter().position(|id| *id == l.item_id));
    Ok(levels)
}

/// Every stock row, by item id.
#[tracing::instrument(skip_all, err)]
pub async fn all(db: &Db) -> Result<Vec<StockLevel>, sqlx::Error> {
    let rows =
        sqlx::query("SELECT item_id, available, reserved, committed FROM stock ORDER BY item_id")
            .fetch_all(db.pool())
            .await?;
    rows.iter().map(level).collect()
}

/// Sets the available units of `item_id`, creating its row when missing, and announces the
/// new level ([`StockLevelChanged`]) through the outbox in the same transaction.
#[tracing::instrument(skip_all, fields(item_id = %item_id, available), err)]
pub async fn set_available(db: &Db, item_id: &str, available: i64) -> Result<StockLevel, BusError> {
    let mut tx = db.begin().await?;
    let row = sqlx::query(
        "INSERT INTO stock (item_id, available, reserved, committed, version, updated_at_ms) \
         VALUES ($1, $2, 0, 0, 1, $3) \
         ON CONFLICT (item_id) DO UPDATE SET available = excluded.available, \
         version = stock.version + 1, updated_at_ms = excluded.updated_at_ms \
         RETURNING item_id, available, reserved, committed",
    )
    .bind(item_id)
    .bind(available)
    .bind(now_ms())
    .fetch_one(&mut *tx)
    .await?;
    let level = level(&row)?;
    announce(&mut tx, &[item_id]).await?;
    tx.commit().await?;
    Ok(level)
}

/// Enqueues a [`StockLevelChanged`] for each of `item_ids` that has a row, with its level
/// and version as `tx` sees them: call it after the change, in the change's transaction, so
/// the event and the change commit together and carry the version the change wrote.
pub async fn announce(
    tx: &mut Transaction<'static, Any>,
    item_ids: &[&str],
) -> Result<usize, BusError> {
    let mut announced = 0;
    for item_id in item_ids {
        let row = sqlx::query("SELECT available, version FROM stock WHERE item_id = $1")
            .bind(*item_id)
            .fetch_optional(&mut **tx)
            .await?;
        let Some(row) = row else { continue };
        let change = StockLevelChanged {
            item_id: (*item_id).to_owned(),
            available: row.try_get("available")?,
            version: row.try_get("version")?,
        };
        let mut event = Event::new(&change)?.with_subject(*item_id);
        event.traceparent = trace::current_traceparent();
        outbox::enqueue(tx, &event).await?;
        announced += 1;
    }
    Ok(announced)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_deduplicated_and_bounded() {
        assert_eq!(parse_ids(Some("a, b,a")).unwrap(), ["a", "b"]);
        assert!(parse_ids(None).is_err());
        assert!(parse_ids(Some("")).is_err());
        assert!(parse_ids(Some("a,,b")).is_err());
        assert!(parse_ids(Some("a/b")).is_err());
        let many: Vec<String> = (0..=MAX_IDS).map(|i| format!("i{i}")).collect();
        assert!(parse_ids(Some(&many.join(","))).is_err());
        assert_eq!(
            parse_ids(Some(&many[..MAX_IDS].join(","))).unwrap().len(),
            MAX_IDS
        );
        // The count is of entries, duplicates included, and checked first: a huge list is
        // refused for its length before any id is looked at.
        let repeated = vec!["a"; MAX_IDS].join(",");
        assert_eq!(parse_ids(Some(&repeated)).unwrap(), ["a"]);
        let flood = format!("{repeated},a");
        let err = parse_ids(Some(&flood)).unwrap_err();
        assert!(err.to_string().contains("at most"), "{err}");
        let huge = format!("{},a/b", "x,".repeat(1_000_000));
        assert!(
            parse_ids(Some(&huge))
                .unwrap_err()
                .to_string()
                .contains("at most")
        );
    }

    #[test]
    fn available_is_bounded() {
        assert!(validate_available(0).is_ok());
        assert!(validate_available(MAX_AVAILABLE).is_ok());
        assert!(validate_available(-1).is_err());
        assert!(validate_available(MAX_AVAILABLE + 1).is_err());
    }
}
