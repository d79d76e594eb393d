//! The card vault: `POST /api/v1/payment/cards` parses a card number with the payment rules
//! ([`CardNumber::parse`]) and keeps it under a random token for one order, until that
//! order's authorization or void takes it, or its time to live passes. Checkout calls it,
//! so a bad number is a 422 at checkout naming `card`; the saga, its commands, the outbox,
//! the stream and the dead letters carry only the token.

use axum::{Router, extract::State, http::StatusCode, routing::post};
use secrecy::ExposeSecret as _;
use tideway_payment_api::{CardToken, VaultCard};
use tideway_runtime::{Problem, auth::AuthUser, extract::Json};
use tideway_store::{Any, Db, Row as _, Transaction};

use crate::{AppState, card::CardNumber, error::ApiError, time::now_ms};

/// The longest order id accepted.
const MAX_ORDER_ID_CHARS: usize = 200;

/// The vault's route, relative to the service's prefix.
pub fn routes() -> Router<AppState> {
    Router::new().route("/cards", post(vault_card))
}

#[utoipa::path(
    post,
    path = "/api/v1/payment/cards",
    tag = "payment",
    request_body = VaultCard,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The card is vaulted for the order under a token", body = CardToken),
        (status = 400, response = Problem),
        (status = 401, response = Problem),
        (status = 403, response = Problem),
        (status = 409, response = Problem),
        (status = 413, response = Problem),
        (status = 415, response = Problem),
        (status = 422, response = Problem),
    )
)]
pub(crate) async fn vault_card(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Json(request): Json<VaultCard>,
) -> Result<(StatusCode, Json<CardToken>), ApiError> {
    let order_id = request.order_id.trim();
    if order_id.is_empty() || order_id.chars().count() > MAX_ORDER_ID_CHARS {
        return Err(ApiError::field(
            "order_id",
            format!("must be 1 to {MAX_ORDER_ID_CHARS} characters"),
        ));
    }
    let card = CardNumber::parse(request.card.expose_secret()).map_err(|_| {
        ApiError::field(
            "card",
            "must be 12 to 19 digits (spaces allowed) with a valid check digit",
        )
    })?;
    let now = now_ms();
    let expires_at_ms = now.saturating_add(state.card_ttl_ms);
    let token = format!("ct_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(
        "INSERT INTO card_vault (token, order_id, user_id, card_number, created_at_ms, \
         expires_at_ms) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&token)
    .bind(order_id)
    .bind(&user.sub)
    .bind(card.digits())
    .bind(now)
    .bind(expires_at_ms)
    .execute(state.db.pool())
    .await?;
    tracing::info!(order_id, "card vaulted");
    Ok((
        StatusCode::CREATED,
        Json(CardToken {
            token,
            last4: card.last4().to_owned(),
            expires_at_ms,
        }),
    ))
}

/// The card under `token` for `order_id`, unless it expired or belongs to another order.
pub async fn take(db: &Db, token: &str, order_id: &str) -> Result<Option<CardNumber>, sqlx::Error> {
    if token.is_empty() {
        return Ok(None);
    }
    let row = sqlx::query(
        "SELECT card_number FROM card_vault WHERE token = $1 AND order_id = $2 \
         AND expires_at_ms > $3",
    )
    .bind(token)
    .bind(order_id)
    .bind(now_ms())
    .fetch_optional(db.pool())
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let digits: String = row.try_get("card_number")?;
    Ok(CardNumber::parse(&digits).ok())
}

/// Forgets every card vaulted for `order_id` (in the transaction that records its
/// authorization or void).
pub async fn forget(tx: &mut Transaction<'_, Any>, order_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM card_vault WHERE order_id = $1")
        .bind(order_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Forgets every card vaulted for `order_id`, outside any transaction (its order was
/// cancelled).
pub async fn forget_order(db: &Db, order_id: &str) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query("DELETE FROM card_vault WHERE order_id = $1")
        .bind(order_id)
        .execute(db.pool())
        .await?
        .rows_affected())
}
