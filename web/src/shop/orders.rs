//! Checkout and orders: the checkout form, "my orders", and an order's page, whose status
//! and saga timeline follow the checkout live over server-sent events.

use std::{convert::Infallible, time::Duration};

use axum::{
    Form,
    extract::{Path, State},
    http::{StatusCode, header},
    response::{
        IntoResponse, Redirect, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures_util::stream;
use maud::{Markup, html};
use serde::Deserialize;
use tideway_basket_api::BasketView;
use tideway_ordering_api::{OrderStatus, OrderView};

use super::basket::{load_basket, signed_in as require_user};
use crate::{
    AppState,
    error::PageError,
    layout::{Field, FormErrors, Section, badge, csrf_field, form_error, money, page, when},
    session::Visitor,
};

/// How often a live order page looks at its order.
const POLL: Duration = Duration::from_millis(300);
/// How long one live connection lasts (the browser reconnects after).
const STREAM_FOR: Duration = Duration::from_secs(120);
/// The approved test card, filled in for convenience.
const TEST_CARD: &str = "4242 4242 4242 4242";

/// `GET /checkout`.
pub(crate) async fn checkout_form(
    State(state): State<AppState>,
    visitor: Visitor,
) -> Result<Response, PageError> {
    let user = require_user(&visitor, "/checkout")?;
    let basket = load_basket(&state, user, "/checkout").await?;
    if basket.items.is_empty() {
        return Ok(Redirect::to("/basket").into_response());
    }
    let key = uuid::Uuid::new_v4().to_string();
    Ok(checkout_page(&visitor, &basket, TEST_CARD, &key, &FormErrors::default()).into_response())
}

fn checkout_page(
    visitor: &Visitor,
    basket: &BasketView,
    card: &str,
    key: &str,
    errors: &FormErrors,
) -> Markup {
    let body = html! {
        h1 { "Checkout" }
        div.columns {
            section aria-labelledby="summary-heading" {
                h2 #summary-heading { "Your order" }
                (summary(
                    basket.items.iter().map(|l| (l.quantity, l.name.as_str(), l.line_total_minor)),
                    basket.total_minor,
                    &basket.currency,
                ))
            }
            section aria-labelledby="payment-heading" {
                h2 #payment-heading { "Payment" }
                (form_error(errors))
                form.stack method="post" action="/checkout" novalidate {
                    (csrf_field(visitor))
                    input type="hidden" name="key" value=(key);
                    (Field { name: "card", label: "Card number", kind: "text", value: card,
                        autocomplete: "cc-number",
                        hint: Some("Test cards: 4242 4242 4242 4242 is approved, 4000 0000 0000 0002 is declined.") }
                        .render(errors))
                    button type="submit" { "Place order" }
                }
            }
        }
    };
    page("Checkout", visitor, Section::Basket, body)
}

/// The checkout form as posted.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct CheckoutForm {
    #[serde(default)]
    card: String,
    /// The idempotency key of this form: posting it twice places one order.
    #[serde(default)]
    key: String,
}

/// `POST /checkout`: places the order and shows its page.
pub(crate) async fn checkout(
    State(state): State<AppState>,
    visitor: Visitor,
    Form(form): Form<CheckoutForm>,
) -> Result<Response, PageError> {
    let user = require_user(&visitor, "/checkout")?;
    let key = if uuid::Uuid::parse_str(&form.key).is_ok() {
        form.key.clone()
    } else {
        uuid::Uuid::new_v4().to_string()
    };
    match state
        .api
        .checkout(&user.token, form.card.clone(), &key)
        .await
    {
        Ok(accepted) => Ok(Redirect::to(&format!(
            "/orders/{}",
            crate::api::segment(&accepted.order_id)
        ))
        .into_response()),
        Err(err) => match FormErrors::from_client_error(&err) {
            Some(errors) => {
                let basket = load_basket(&state, user, "/checkout").await?;
                Ok((
                    StatusCode::UNPROCESSABLE_ENTITY,
                    checkout_page(&visitor, &basket, &form.card, &key, &errors),
                )
                    .into_response())
            }
            // Something checkout needs is down and nothing was ordered: the same form (and
            // key) again, saying so, for a retry in a moment.
            None => match FormErrors::from_dependency_unavailable(&err) {
                Some(errors) => {
                    let basket = load_basket(&state, user, "/checkout").await?;
                    Ok((
                        StatusCode::SERVICE_UNAVAILABLE,
                        [(header::RETRY_AFTER, "1")],
                        checkout_page(&visitor, &basket, &form.card, &key, &errors),
                    )
                        .into_response())
                }
                None => Err(PageError::from_client(err, "/checkout")),
            },
        },
    }
}

/// `GET /orders`.
pub(crate) async fn list(
    State(state): State<AppState>,
    visitor: Visitor,
) -> Result<Markup, PageError> {
    let user = require_user(&visitor, "/orders")?;
    let orders = state
        .api
        .orders(&user.token, 1)
        .await
        .map_err(|err| PageError::from_client(err, "/orders"))?;
    let body = html! {
        h1 { "Your orders" }
        @if orders.items.is_empty() {
            p.empty { "No orders yet. " a href="/catalog" { "Start shopping" } "." }
        } @else {
            table.orders {
                caption.visually-hidden { "Your orders, newest first" }
                thead { tr {
                    th scope="col" { "Order" }
                    th scope="col" { "Placed" }
                    th scope="col" { "Items" }
                    th scope="col" class="num" { "Total" }
                    th scope="col" { "Status" }
                } }
                tbody {
                    @for order in &orders.items {
                        tr {
                            td data-label="Order" { a href=(format!("/orders/{}", crate::api::segment(&order.id))) { (short(&order.id)) } }
                            td data-label="Placed" { (when(&order.created_at)) }
                            td data-label="Items" { (order.lines.iter().map(|l| l.quantity).sum::<i64>()) }
                            td.num data-label="Total" { (money(order.total_minor, &order.currency)) }
                            td data-label="Status" { (badge(status_name(order.status))) }
                        }
                    }
                }
            }
        }
    };
    Ok(page("Your orders", &visitor, Section::Orders, body))
}

/// The last block of an id, enough to tell orders apart on screen (ids are UUIDv7: their
/// first blocks are a timestamp, alike for orders placed close together).
pub(crate) fn short(id: &str) -> &str {
    id.rsplit('-').next().unwrap_or(id)
}

pub(crate) fn status_name(status: OrderStatus) -> &'static str {
    match status {
        OrderStatus::Pending => "pending",
        OrderStatus::Confirmed => "confirmed",
        OrderStatus::Cancelled => "cancelled",
    }
}

/// `GET /orders/{id}`.
pub(crate) async fn show(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(id): Path<String>,
) -> Result<Markup, PageError> {
    let here = format!("/orders/{}", crate::api::segment(&id));
    let user = require_user(&visitor, &here)?;
    let order = state
        .api
        .order(&user.token, &id)
        .await
        .map_err(|err| PageError::from_client(err, &here))?;
    let live = order.status == OrderStatus::Pending;
    let body = html! {
        h1 { "Order " (short(&order.id)) }
        p.meta { "Placed " (when(&order.created_at)) " · " (money(order.total_minor, &order.currency)) }
        @if live {
            section #order-live aria-live="polite"
                sse-connect=(format!("{here}/events")) sse-swap="order" sse-close="done" {
                (progress(&order))
            }
        } @else {
            section #order-live aria-live="polite" { (progress(&order)) }
        }
        section aria-labelledby="lines-heading" {
            h2 #lines-heading { "Items" }
            (summary(
                order.lines.iter().map(|l| (l.quantity, l.name.as_str(), l.unit_price_minor * l.quantity)),
                order.total_minor,
                &order.currency,
            ))
        }
        p.hint {
            "Trace id " code { (order.trace_id) }
            @if visitor.user.as_ref().is_some_and(|u| u.is_admin()) {
                " · " a href=(format!("/ops/orders/{}", crate::api::segment(&order.id))) { "See it in the console" }
            }
        }
    };
    Ok(page(
        &format!("Order {}", short(&order.id)),
        &visitor,
        Section::Orders,
        body,
    ))
}

/// Lines as "quantity × name … amount" with the total under them (checkout and order).
fn summary<'a>(
    lines: impl Iterator<Item = (i64, &'a str, i64)>,
    total_minor: i64,
    currency: &str,
) -> Markup {
    html! {
        ul.summary {
            @for (quantity, name, amount) in lines {
                li {
                    span { (quantity) " × " (name) }
                    span { (money(amount, currency)) }
                }
            }
            li.total { span { "Total" } strong { (money(total_minor, currency)) } }
        }
    }
}

/// The order's status and its saga's timeline (what the live stream sends).
fn progress(order: &OrderView) -> Markup {
    html! {
        div.status {
            span { "Status: " }
            span #order-status { (badge(status_name(order.status))) }
            @if let Some(reason) = &order.reason {
                p #order-reason { "Reason: " (reason) }
            }
            @if order.status == OrderStatus::Pending {
                p.hint { "Your order is on its way through stock and payment. This page updates by itself." }
            }
        }
        (timeline(&order.timeline))
    }
}

/// A saga's steps as an ordered list.
pub(crate) fn timeline(entries: &[tideway_ordering_api::TimelineEntry]) -> Markup {
    html! {
        ol.timeline aria-label="Checkout steps" {
            @for entry in entries {
                li data-status=(entry.status) {
                    span.step { (entry.step.replace('_', " ")) @if entry.kind != "action" { " (" (entry.kind) ")" } }
                    " " (badge(&entry.status))
                    span.time { (when(&entry.started_at)) }
                    @if let Some(detail) = &entry.detail { span.detail { (detail) } }
                }
            }
        }
    }
}

/// `GET /orders/{id}/events`: the order's progress as server-sent events. An `order` event
/// carries the rendered status and timeline each time they change; `done` follows once the
/// order is confirmed or cancelled, and the stream ends.
pub(crate) async fn events(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let here = format!("/orders/{}", crate::api::segment(&id));
    let user = require_user(&visitor, &here)?;
    let token = user.token.clone();
    let permit = match state.streams.open(&user.claims.sub) {
        Ok(permit) => permit,
        Err(full) => {
            tracing::info!(?full, "a live stream was refused: too many open");
            return Ok((
                StatusCode::TOO_MANY_REQUESTS,
                [(http::header::RETRY_AFTER, "5")],
                "Too many live pages are open; reload this one later.",
            )
                .into_response());
        }
    };
    // Refuse at once (404, 401) rather than stream nothing.
    state
        .api
        .order(&token, &id)
        .await
        .map_err(|err| PageError::from_client(err, &here))?;
    let deadline = tokio::time::Instant::now() + STREAM_FOR;
    let watch = Watch {
        state,
        token,
        id,
        last: None,
        done_next: false,
        finished: false,
        deadline,
        _permit: permit,
    };
    let events = stream::unfold(watch, |mut watch| async move {
        let event = watch.next().await?;
        Some((Ok::<_, Infallible>(event), watch))
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

struct Watch {
    state: AppState,
    token: String,
    id: String,
    last: Option<String>,
    done_next: bool,
    finished: bool,
    deadline: tokio::time::Instant,
    /// Its place among the open streams, freed when the stream ends or its client leaves.
    _permit: crate::streams::Permit,
}

impl Watch {
    /// The next event, or `None` when the stream is over.
    async fn next(&mut self) -> Option<Event> {
        if self.finished {
            return None;
        }
        if self.done_next {
            self.finished = true;
            return Some(Event::default().event("done").data("done"));
        }
        loop {
            if tokio::time::Instant::now() >= self.deadline {
                return None;
            }
            match self.state.api.order(&self.token, &self.id).await {
                Ok(order) => {
                    let html = progress(&order).into_string();
                    let terminal = order.status != OrderStatus::Pending;
                    if self.last.as_deref() != Some(html.as_str()) {
                        self.last = Some(html.clone());
                        // The last state first; `done` on the next call.
                        self.done_next = terminal;
                        return Some(Event::default().event("order").data(html));
                    }
                    if terminal {
                        self.finished = true;
                        return Some(Event::default().event("done").data("done"));
                    }
                }
                Err(err) => {
                    tracing::debug!(error = %err, "a live order page could not read its order")
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }
}
