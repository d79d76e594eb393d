//! The storefront: browsing, the account pages, the basket, checkout and orders.

mod account;
mod basket;
mod catalog;
mod notifications;
mod orders;

pub(crate) use orders::{short, status_name, timeline};

use axum::{
    Router,
    routing::{get, post},
};

use crate::AppState;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(catalog::home))
        .route("/catalog", get(catalog::list))
        .route("/items/{id}", get(catalog::item))
        .route(
            "/register",
            get(account::register_form).post(account::register),
        )
        .route("/login", get(account::login_form).post(account::login))
        .route("/logout", post(account::logout))
        .route("/logout/everywhere", post(account::logout_everywhere))
        .route("/account", get(account::account))
        .route("/basket", get(basket::show))
        .route("/basket/items", post(basket::add))
        .route("/basket/items/{id}", post(basket::update))
        .route("/basket/items/{id}/remove", post(basket::remove))
        .route(
            "/checkout",
            get(orders::checkout_form).post(orders::checkout),
        )
        .route("/orders", get(orders::list))
        .route("/notifications", get(notifications::list))
        .route("/orders/{id}", get(orders::show))
        .route("/orders/{id}/events", get(orders::events))
        // Every other path: a friendly 404 (a problem document under /api/).
        .route("/{*path}", get(crate::error::not_found))
}

/// Whether the request came from htmx (it wants a fragment, not a page).
pub(crate) fn is_htmx(headers: &http::HeaderMap) -> bool {
    headers.contains_key("hx-request") && !headers.contains_key("hx-boosted")
}
