//! The basket: add from an item's page, change quantities in place, remove, go to checkout.

use axum::{
    Form,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
};
use maud::{Markup, html};
use serde::Deserialize;
use tideway_basket_api::BasketView;

use super::catalog::{item_page, load_item};
use crate::{
    AppState,
    error::{PageError, login_url},
    layout::{FormErrors, Section, csrf_field, form_error, money, page},
    session::{User, Visitor},
};

pub(crate) fn signed_in<'a>(visitor: &'a Visitor, next: &str) -> Result<&'a User, PageError> {
    visitor.user.as_ref().ok_or_else(|| PageError::SignIn {
        next: next.to_owned(),
    })
}

/// The user's basket, or the page's error (`next` is where to come back after signing in).
pub(crate) async fn load_basket(
    state: &AppState,
    user: &User,
    next: &str,
) -> Result<BasketView, PageError> {
    state
        .api
        .basket
        .get(&user.token)
        .await
        .map_err(|err| PageError::from_client(err, next))
}

/// A change of quantity the basket refused: shown beside that line's input, with what was
/// typed kept.
struct Refusal<'a> {
    item_id: &'a str,
    errors: &'a FormErrors,
    quantity: &'a str,
}

/// `GET /basket`.
pub(crate) async fn show(
    State(state): State<AppState>,
    visitor: Visitor,
) -> Result<Markup, PageError> {
    let user = signed_in(&visitor, "/basket")?;
    let basket = load_basket(&state, user, "/basket").await?;
    Ok(basket_page(&visitor, &basket, None))
}

fn basket_page(visitor: &Visitor, basket: &BasketView, refused: Option<&Refusal<'_>>) -> Markup {
    let body = html! {
        h1 { "Your basket" }
        div #basket {
            @if let Some(refusal) = refused {
                (form_error(refusal.errors))
            }
            @if basket.items.is_empty() {
                p.empty { "Your basket is empty. " a href="/catalog" { "Find something you like" } "." }
            } @else {
                @let stale = basket.items.iter().any(|line| !line.price_current);
                @if stale {
                    p.notice.warn role="status" {
                        "The catalog is not answering right now: prices marked “last known” are "
                        "the ones you last saw and may have changed. You can still change "
                        "quantities or remove lines; checkout waits until the catalog is back."
                    }
                }
                table.basket {
                    caption.visually-hidden { "Items in your basket" }
                    thead { tr {
                        th scope="col" { "Item" }
                        th scope="col" { "Price" }
                        th scope="col" { "Quantity" }
                        th scope="col" class="num" { "Subtotal" }
                        th scope="col" { span.visually-hidden { "Actions" } }
                    } }
                    tbody {
                        @for line in &basket.items {
                            @let id = crate::api::segment(&line.item_id);
                            @let refusal = refused.filter(|r| r.item_id == line.item_id);
                            @let error = refusal.and_then(|r| r.errors.field("quantity"));
                            @let quantity = refusal.map_or_else(|| line.quantity.to_string(), |r| r.quantity.to_owned());
                            @let input_id = format!("qty-{id}");
                            tr {
                                td data-label="Item" {
                                    a href=(format!("/items/{id}")) { (line.name) }
                                    @if line.deleted {
                                        " " span.badge.line-state data-status="cancelled" { "No longer sold" }
                                    } @else if line.sold_out {
                                        " " span.badge.line-state data-status="cancelled" { "Sold out" }
                                    } @else if !line.available && line.price_current {
                                        " " span.badge.line-state data-status="cancelled" { "Unavailable" }
                                    }
                                }
                                td data-label="Price" {
                                    (money(line.unit_price_minor, &basket.currency))
                                    @if !line.price_current { " " span.badge data-status="pending" title="The catalog is not answering; this is the price last seen." { "last known" } }
                                }
                                td data-label="Quantity" {
                                    form.qty method="post" action=(format!("/basket/items/{id}")) novalidate
                                        hx-post=(format!("/basket/items/{id}")) hx-target="#basket"
                                        hx-select="#basket" hx-swap="outerHTML" {
                                        (csrf_field(visitor))
                                        label.visually-hidden for=(input_id) { "Quantity of " (line.name) }
                                        input id=(input_id) type="number" name="quantity" value=(quantity)
                                            min="0" max="99" required
                                            aria-invalid=[error.map(|_| "true")]
                                            aria-describedby=[error.map(|_| format!("{input_id}-error"))];
                                        button.small type="submit" { "Update" }
                                        @if let Some(error) = error {
                                            small.error id=(format!("{input_id}-error")) { (error) }
                                        }
                                    }
                                }
                                td.num data-label="Subtotal" { (money(line.line_total_minor, &basket.currency)) }
                                td {
                                    form method="post" action=(format!("/basket/items/{id}/remove"))
                                        hx-post=(format!("/basket/items/{id}/remove")) hx-target="#basket"
                                        hx-select="#basket" hx-swap="outerHTML" {
                                        (csrf_field(visitor))
                                        button.link type="submit" aria-label=(format!("Remove {}", line.name)) { "Remove" }
                                    }
                                }
                            }
                        }
                    }
                    tfoot { tr {
                        th scope="row" colspan="3" { "Total (" (basket.item_count) " items)" }
                        td.num #basket-total { strong { (money(basket.total_minor, &basket.currency)) } }
                        td {}
                    } }
                }
                p.actions {
                    a href="/catalog" { "Continue shopping" }
                    @if stale {
                        span.button aria-disabled="true" { "Checkout (waiting for the catalog)" }
                    } @else {
                        a.button href="/checkout" { "Checkout" }
                    }
                }
            }
        }
    };
    page("Basket", visitor, Section::Basket, body)
}

/// An item and a quantity as posted.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct AddForm {
    #[serde(default)]
    item_id: String,
    #[serde(default)]
    quantity: String,
}

fn parse_quantity(text: &str) -> Result<i64, FormErrors> {
    text.trim().parse::<i64>().map_err(|_| {
        let mut errors = FormErrors::default();
        errors
            .fields
            .insert("quantity".to_owned(), "Enter a whole number.".to_owned());
        errors
    })
}

/// `POST /basket/items`: adds an item, then shows the basket.
pub(crate) async fn add(
    State(state): State<AppState>,
    visitor: Visitor,
    Form(form): Form<AddForm>,
) -> Result<Response, PageError> {
    let back = format!("/items/{}", crate::api::segment(&form.item_id));
    let Some(user) = &visitor.user else {
        return Ok(Redirect::to(&login_url(&back)).into_response());
    };
    let refused = match parse_quantity(&form.quantity) {
        Ok(quantity) => match state
            .api
            .basket
            .add(&user.token, &form.item_id, quantity)
            .await
        {
            Ok(_) => return Ok(Redirect::to("/basket").into_response()),
            Err(err) => match FormErrors::from_client_error(&err) {
                Some(errors) => errors,
                None => return Err(PageError::from_client(err, &back)),
            },
        },
        Err(errors) => errors,
    };
    let item = load_item(&state, &form.item_id).await?;
    Ok((
        StatusCode::UNPROCESSABLE_ENTITY,
        item_page(&visitor, &item, &refused, &form.quantity, &[]),
    )
        .into_response())
}

/// A new quantity as posted.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct QuantityForm {
    #[serde(default)]
    quantity: String,
}

/// `POST /basket/items/{id}`: sets a line's quantity (0 removes it).
pub(crate) async fn update(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(id): Path<String>,
    Form(form): Form<QuantityForm>,
) -> Result<Response, PageError> {
    let user = signed_in(&visitor, "/basket")?;
    let result = match parse_quantity(&form.quantity) {
        Ok(0) => state.api.basket.remove(&user.token, &id).await,
        Ok(quantity) => {
            state
                .api
                .basket
                .set_quantity(&user.token, &id, quantity)
                .await
        }
        Err(errors) => return refused(&state, &visitor, user, &id, &form.quantity, &errors).await,
    };
    match result {
        Ok(_) => Ok(Redirect::to("/basket").into_response()),
        Err(err) => match FormErrors::from_client_error(&err) {
            Some(errors) => refused(&state, &visitor, user, &id, &form.quantity, &errors).await,
            None => Err(PageError::from_client(err, "/basket")),
        },
    }
}

async fn refused(
    state: &AppState,
    visitor: &Visitor,
    user: &User,
    id: &str,
    quantity: &str,
    errors: &FormErrors,
) -> Result<Response, PageError> {
    let basket = load_basket(state, user, "/basket").await?;
    // A refusal about the quantity shows beside its input; anything else above the table.
    let mut errors = errors.clone();
    if errors.field("quantity").is_none() && errors.form.is_none() {
        errors.form = errors.fields.values().next().cloned();
    }
    Ok((
        StatusCode::UNPROCESSABLE_ENTITY,
        basket_page(
            visitor,
            &basket,
            Some(&Refusal {
                item_id: id,
                errors: &errors,
                quantity,
            }),
        ),
    )
        .into_response())
}

/// `POST /basket/items/{id}/remove`.
pub(crate) async fn remove(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let user = signed_in(&visitor, "/basket")?;
    match state.api.basket.remove(&user.token, &id).await {
        Ok(_) => Ok(Redirect::to("/basket").into_response()),
        Err(err) if err.status() == Some(StatusCode::NOT_FOUND) => {
            Ok(Redirect::to("/basket").into_response())
        }
        Err(err) => Err(PageError::from_client(err, "/basket")),
    }
}
