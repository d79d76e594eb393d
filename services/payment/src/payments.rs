//! Payments: the `payments` table, and the admin endpoints that read it
//! (`GET /payments/{order_id}`, `GET /payments?limit=`).

use axum::{Router, extract::State, routing::get};
use serde::Deserialize;
use tideway_payment_api::{PaymentStatus, PaymentView};
use tideway_runtime::{
    Problem,
    auth::AdminUser,
    extract::{Json, Path, Query},
};
use tideway_store::{Any, AnyRow, Db, Row, Transaction};

use crate::{AppState, error::ApiError};

/// The default number of payments listed.
pub const DEFAULT_LIMIT: i64 = 20;
/// The most payments listed at once.
pub const MAX_LIMIT: i64 = 100;

const COLUMNS: &str = "payment_id, order_id, amount_minor, currency, status, card_last4, \
                       decline_reason, provider_charge_id";

/// A payment as stored: its view and the provider's reference of its hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRecord {
    /// What the API shows.
    pub view: PaymentView,
    /// The provider's charge id (approved authorizations only).
    pub charge_id: Option<String>,
}

/// The stored name of a status.
pub fn status_name(status: PaymentStatus) -> &'static str {
    match status {
        PaymentStatus::Authorized => "authorized",
        PaymentStatus::Declined => "declined",
        PaymentStatus::Captured => "captured",
        PaymentStatus::Voided => "voided",
        PaymentStatus::Refunded => "refunded",
    }
}

fn parse_status(name: &str) -> Result<PaymentStatus, sqlx::Error> {
    Ok(match name {
        "authorized" => PaymentStatus::Authorized,
        "declined" => PaymentStatus::Declined,
        "captured" => PaymentStatus::Captured,
        "voided" => PaymentStatus::Voided,
        "refunded" => PaymentStatus::Refunded,
        other => {
            return Err(sqlx::Error::Decode(
                format!("unknown payment status {other:?}").into(),
            ));
        }
    })
}

fn record(row: &AnyRow) -> Result<PaymentRecord, sqlx::Error> {
    Ok(PaymentRecord {
        view: PaymentView {
            payment_id: row.try_get("payment_id")?,
            order_id: row.try_get("order_id")?,
            amount_minor: row.try_get("amount_minor")?,
            currency: row.try_get("currency")?,
            status: parse_status(&row.try_get::<String, _>("status")?)?,
            card_last4: row.try_get("card_last4")?,
            decline_reason: row.try_get("decline_reason")?,
        },
        charge_id: row.try_get("provider_charge_id")?,
    })
}

/// The payment of `order_id`, if any.
#[tracing::instrument(skip_all, fields(order_id), err)]
pub async fn find(db: &Db, order_id: &str) -> Result<Option<PaymentRecord>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM payments WHERE order_id = $1"
    ))
    .bind(order_id)
    .fetch_optional(db.pool())
    .await?
    .as_ref()
    .map(record)
    .transpose()
}

/// The payment of `order_id` as seen by `tx`, if any.
pub async fn find_in(
    tx: &mut Transaction<'_, Any>,
    order_id: &str,
) -> Result<Option<PaymentRecord>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM payments WHERE order_id = $1"
    ))
    .bind(order_id)
    .fetch_optional(&mut **tx)
    .await?
    .as_ref()
    .map(record)
    .transpose()
}

/// Up to `limit` payments, newest first; `None`: every payment, oldest first.
#[tracing::instrument(skip_all, err)]
pub async fn list(db: &Db, limit: Option<i64>) -> Result<Vec<PaymentView>, sqlx::Error> {
    let rows = match limit {
        Some(limit) => {
            sqlx::query(&format!(
                "SELECT {COLUMNS} FROM payments \
                 ORDER BY created_at_ms DESC, payment_id DESC LIMIT $1"
            ))
            .bind(limit)
            .fetch_all(db.pool())
            .await?
        }
        None => {
            sqlx::query(&format!(
                "SELECT {COLUMNS} FROM payments ORDER BY created_at_ms, payment_id"
            ))
            .fetch_all(db.pool())
            .await?
        }
    };
    rows.iter().map(|row| record(row).map(|r| r.view)).collect()
}

/// Inserts `view` unless the order already has a payment; `true` when inserted.
pub async fn insert(
    tx: &mut Transaction<'_, Any>,
    view: &PaymentView,
    charge_id: Option<&str>,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO payments (payment_id, order_id, amount_minor, currency, status, card_last4, \
         decline_reason, provider_charge_id, created_at_ms, updated_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(&view.payment_id)
    .bind(&view.order_id)
    .bind(view.amount_minor)
    .bind(&view.currency)
    .bind(status_name(view.status))
    .bind(&view.card_last4)
    .bind(view.decline_reason.as_deref())
    .bind(charge_id)
    .bind(now_ms)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Moves the payment of `order_id` from `from` to `to`; `true` when it was in `from`.
pub async fn transition(
    tx: &mut Transaction<'_, Any>,
    order_id: &str,
    from: PaymentStatus,
    to: PaymentStatus,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE payments SET status = $3, updated_at_ms = $4 WHERE order_id = $1 AND status = $2",
    )
    .bind(order_id)
    .bind(status_name(from))
    .bind(status_name(to))
    .bind(now_ms)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(updated == 1)
}

/// The payment routes, relative to the service's prefix.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/payments", get(list_payments))
        .route("/payments/{order_id}", get(get_payment))
}

/// The query string of `GET /payments`.
#[derive(Debug, Default, Deserialize)]
pub struct ListParams {
    limit: Option<i64>,
}

#[utoipa::path(
    get,
    path = "/api/v1/payment/payments/{order_id}",
    tag = "payment",
    params(("order_id" = String, Path, description = "The order id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The payment of the order", body = PaymentView),
        (status = 401, response = Problem),
        (status = 403, response = Problem),
        (status = 404, response = Problem),
    )
)]
pub(crate) async fn get_payment(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    Path(order_id): Path<String>,
) -> Result<Json<PaymentView>, ApiError> {
    find(&state.db, &order_id)
        .await?
        .map(|record| Json(record.view))
        .ok_or_else(|| ApiError::NotFound(format!("no payment for order {order_id}")))
}

#[utoipa::path(
    get,
    path = "/api/v1/payment/payments",
    tag = "payment",
    params(("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "How many, 1 to 100 (default 20)")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The most recent payments, newest first", body = Vec<PaymentView>),
        (status = 400, response = Problem),
        (status = 401, response = Problem),
        (status = 403, response = Problem),
    )
)]
pub(crate) async fn list_payments(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    Query(params): Query<ListParams>,
) -> Result<Json<Vec<PaymentView>>, ApiError> {
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::query(
            "limit",
            format!("must be between 1 and {MAX_LIMIT}"),
        ));
    }
    Ok(Json(list(&state.db, Some(limit)).await?))
}
