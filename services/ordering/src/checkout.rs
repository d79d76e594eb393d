//! `POST /api/v1/basket/checkout`: turns the caller's basket into a Pending order and starts
//! its saga.
//!
//! The basket is read with the caller's own token; its lines and prices are snapshotted
//! into the order. The order and its `OrderPlaced` event commit in one transaction, then the
//! saga starts. With an `Idempotency-Key`, a repeated request of the same user answers the
//! same order (and starts its saga if an earlier attempt could not).
//!
//! While inventory cannot take a reservation (its [`Availability`]: the balancer's view of
//! its replicas, or a probe of its readiness), a checkout is refused with a 503 problem
//! naming it before anything is read or written: no order, no vaulted card, the basket as
//! it was. A repeat of a checkout already placed with the same key still answers its order.

use std::sync::Arc;

use axum::{
    Router,
    body::Bytes,
    extract::State as Shared,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use secrecy::SecretString;
use tideway_basket_api::{BasketClient, BasketView};
use tideway_bus::{outbox, outbox::RelayWaker};
use tideway_ordering_api::{
    CHECKOUT_PATH, CheckoutAccepted, CheckoutRequest, OrderLine, OrderPlaced, OrderStatus,
    OrderView, PREFIX,
};
use tideway_payment_api::{APPROVED_CARD, PaymentClient, VaultCard};
use tideway_runtime::{
    Problem,
    auth::{AuthError, AuthUser, bearer},
    client::{Availability, ClientError},
    extract::{Json, parse_json},
    trace,
};
use tideway_saga::{SagaDefinition, SagaEngine};
use tideway_store::Db;
use uuid::Uuid;

use crate::{
    error::ApiError,
    orders::store::{self, NewOrder},
    saga::{CheckoutState, event, trace_id},
};

/// The header that makes a checkout idempotent.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
/// The longest idempotency key accepted.
pub const MAX_KEY_CHARS: usize = 100;

/// What checkout needs: the orders, the saga to start, the basket to read, the relay to
/// wake.
#[derive(Clone)]
pub struct State {
    pub db: Db,
    pub engine: SagaEngine,
    pub saga: Arc<SagaDefinition<CheckoutState>>,
    pub basket: BasketClient,
    pub payment: PaymentClient,
    pub waker: RelayWaker,
    /// Whether inventory can reserve stock now, read without a call.
    pub inventory: Availability,
}

/// The checkout endpoint (without the standard stack).
pub fn routes(state: State) -> Router {
    Router::new()
        .route(CHECKOUT_PATH, post(checkout))
        .with_state(state)
}

/// `POST /api/v1/basket/checkout`.
#[utoipa::path(
    post,
    path = "/api/v1/basket/checkout",
    tag = "ordering",
    params(("Idempotency-Key" = Option<String>, Header, description = "1 to 100 visible ASCII characters: a retry with the same key answers the same order")),
    request_body = CheckoutRequest,
    security(("bearer" = [])),
    responses(
        (status = 202, description = "The order is placed; its saga runs on", body = CheckoutAccepted),
        (status = 400, response = Problem),
        (status = 401, response = Problem),
        (status = 409, response = Problem),
        (status = 413, response = Problem),
        (status = 415, response = Problem),
        (status = 422, response = Problem),
        (status = 429, response = Problem),
        (status = 503, response = Problem),
    )
)]
pub async fn checkout(
    Shared(state): Shared<State>,
    AuthUser(user): AuthUser,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let request = parse_body(&headers, &body)?;
    let card = request
        .card
        .unwrap_or_else(|| SecretString::from(APPROVED_CARD));
    let token = bearer(&headers)?;
    if let Some(key) = &key
        && let Some(id) = store::find_by_key(&state.db, &user.sub, key).await?
    {
        return replay(&state, &id).await;
    }
    // Refused before the basket is read, a card vaulted or an order placed: with inventory
    // down the saga could only wait on the reservation and then cancel the order.
    if !state.inventory.is_available() {
        return Err(ApiError::InventoryUnavailable);
    }
    let basket = state.basket.get(token).await.map_err(basket_error)?;
    let (lines, total_minor) = snapshot(&basket)?;
    let order = NewOrder {
        id: Uuid::now_v7().to_string(),
        user_id: user.sub.clone(),
        lines,
        total_minor,
        currency: basket.currency.clone(),
        trace_id: trace_id(),
        idempotency_key: key.clone(),
    };
    // The payment service parses the number with its rules and keeps it for this order;
    // from here on only the token travels.
    let card_token = vault_card(&state, token, &order.id, card).await?;
    let placed = OrderPlaced {
        order_id: order.id.clone(),
        user_id: order.user_id.clone(),
        lines: order.lines.clone(),
        total_minor,
        email: Some(user.email.clone()),
    };
    let mut tx = state.db.begin().await?;
    if let Err(err) = store::insert(&mut tx, &order).await {
        drop(tx);
        // Two requests with one key raced: the other one's order is the answer.
        if tideway_store::is_unique_violation(&err)
            && let Some(key) = &key
            && let Some(id) = store::find_by_key(&state.db, &user.sub, key).await?
        {
            return replay(&state, &id).await;
        }
        return Err(err.into());
    }
    outbox::enqueue(&mut tx, &event(&placed, &order.id)?).await?;
    let saga_state = CheckoutState {
        order_id: order.id.clone(),
        user_id: order.user_id.clone(),
        lines: order.lines.clone(),
        total_minor,
        currency: order.currency.clone(),
        card_token,
        traceparent: trace::current_traceparent(),
    };
    // The saga commits with its order: a crash can leave neither without the other.
    let instance = state
        .engine
        .new_instance(&state.saga, &order.id, &saga_state)?;
    tideway_saga::insert_in(&mut tx, &instance).await?;
    tx.commit().await?;
    state.waker.wake();
    tracing::info!(
        order_id = %order.id, trace_id = %order.trace_id, total_minor,
        lines = order.lines.len(), "order placed"
    );
    state.engine.run_inserted(&order.id);
    Ok(accepted(&order.id))
}

/// The answer for an order placed before with the same key: its saga is started if an
/// earlier attempt failed to (it commits with its order, so only an order stored before that
/// lacks one; such a saga has no card token and its payment is declined), and the same 202 is
/// sent.
async fn replay(state: &State, id: &str) -> Result<Response, ApiError> {
    let order: OrderView = store::load(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::Internal(format!("order {id} vanished")))?;
    if order.status == OrderStatus::Pending {
        let saga_state = CheckoutState {
            order_id: order.id.clone(),
            user_id: order.user_id,
            lines: order.lines,
            total_minor: order.total_minor,
            currency: order.currency,
            card_token: String::new(),
            traceparent: trace::current_traceparent(),
        };
        // Idempotent: an existing instance is left as it is.
        state.engine.start(&state.saga, id, saga_state).await?;
    }
    tracing::info!(order_id = %id, "checkout repeated with the same idempotency key");
    Ok(accepted(id))
}

fn accepted(id: &str) -> Response {
    let href = format!("{PREFIX}/orders/{id}");
    let body = CheckoutAccepted {
        order_id: id.to_owned(),
        status: OrderStatus::Pending,
        href: href.clone(),
    };
    (StatusCode::ACCEPTED, [(header::LOCATION, href)], Json(body)).into_response()
}

/// The optional `Idempotency-Key` header: 1 to 100 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let invalid = || {
        ApiError::invalid(
            IDEMPOTENCY_KEY,
            format!("must be 1 to {MAX_KEY_CHARS} visible ASCII characters"),
        )
    };
    let text = value.to_str().map_err(|_| invalid())?.trim();
    if text.is_empty()
        || text.len() > MAX_KEY_CHARS
        || !text.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
    {
        return Err(invalid());
    }
    Ok(Some(text.to_owned()))
}

/// The optional JSON body: empty means `{}`.
fn parse_body(headers: &HeaderMap, body: &[u8]) -> Result<CheckoutRequest, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(CheckoutRequest::default());
    }
    if !is_json(headers) {
        return Err(ApiError::UnsupportedMediaType);
    }
    let rejected = |problem| ApiError::Rejected(Box::new(problem));
    // The contract type would also accept a JSON array; only an object is a request.
    let value: serde_json::Value = parse_json(body).map_err(rejected)?;
    if !value.is_object() {
        return Err(ApiError::invalid("body", "must be a JSON object"));
    }
    parse_json(body).map_err(rejected)
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mime = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// Vaults `card` for `order_id` at the payment service: its token, or a 422 naming `card`.
async fn vault_card(
    state: &State,
    bearer: &str,
    order_id: &str,
    card: SecretString,
) -> Result<String, ApiError> {
    let request = VaultCard {
        order_id: order_id.to_owned(),
        card,
    };
    match state.payment.vault_card(bearer, &request).await {
        Ok(token) => Ok(token.token),
        Err(err) if err.status() == Some(StatusCode::UNPROCESSABLE_ENTITY) => {
            Err(ApiError::invalid(
                "card",
                "must be 12 to 19 digits (spaces allowed) with a valid check digit",
            ))
        }
        Err(err) if err.status() == Some(StatusCode::UNAUTHORIZED) => Err(ApiError::Unauthorized(
            AuthError::Invalid("the payment service refused the token".into()),
        )),
        Err(err) => Err(ApiError::PaymentUnavailable(err)),
    }
}

/// The basket's lines and total, checked: not empty, every line available.
fn snapshot(basket: &BasketView) -> Result<(Vec<OrderLine>, i64), ApiError> {
    if basket.items.is_empty() {
        return Err(ApiError::invalid("basket", "the basket is empty"));
    }
    let mut total: i64 = 0;
    let mut lines = Vec::with_capacity(basket.items.len());
    if basket.items.iter().any(|line| !line.price_current) {
        return Err(ApiError::PricesNotCurrent);
    }
    for (i, line) in basket.items.iter().enumerate() {
        // Refused before any order exists: a line that cannot be had at all.
        if line.deleted {
            return Err(ApiError::invalid(
                format!("items[{i}]"),
                format!(
                    "{:?} is no longer in the catalog; remove it from the basket",
                    line.name
                ),
            ));
        }
        if line.sold_out {
            return Err(ApiError::invalid(
                format!("items[{i}]"),
                format!("{:?} is sold out; remove it from the basket", line.name),
            ));
        }
        if !line.available {
            return Err(ApiError::Conflict {
                field: format!("items[{i}]"),
                reason: format!(
                    "{:?} is not available in the quantity asked ({})",
                    line.name, line.quantity
                ),
            });
        }
        total = line
            .unit_price_minor
            .checked_mul(line.quantity)
            .and_then(|sum| total.checked_add(sum))
            .ok_or_else(|| ApiError::invalid("basket", "the total is too large"))?;
        lines.push(OrderLine {
            item_id: line.item_id.clone(),
            name: line.name.clone(),
            unit_price_minor: line.unit_price_minor,
            quantity: line.quantity,
        });
    }
    Ok((lines, total))
}

fn basket_error(err: ClientError) -> ApiError {
    match err.status() {
        Some(StatusCode::UNAUTHORIZED) => {
            ApiError::Unauthorized(AuthError::Invalid("the basket refused the token".into()))
        }
        _ => ApiError::BasketUnavailable(err),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn idempotency_keys_are_short_visible_text() {
        let mut headers = HeaderMap::new();
        assert_eq!(idempotency_key(&headers).unwrap(), None);
        headers.insert(IDEMPOTENCY_KEY, HeaderValue::from_static("k-1"));
        assert_eq!(idempotency_key(&headers).unwrap().as_deref(), Some("k-1"));
        headers.insert(IDEMPOTENCY_KEY, HeaderValue::from_static(" "));
        assert!(idempotency_key(&headers).is_err());
        let long = "k".repeat(MAX_KEY_CHARS + 1);
        headers.insert(IDEMPOTENCY_KEY, HeaderValue::from_str(&long).unwrap());
        assert!(idempotency_key(&headers).is_err());
    }
}
