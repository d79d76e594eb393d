//! The basket service over real HTTP, on each of its stores (SQLite, PostgreSQL, Redis),
//! against a fake catalog that serves the catalog's HTTP contract.
#![expect(
    clippy::unwrap_used,
    reason = "helpers outside #[test] functions fail the test loudly on an unexpected error"
)]

mod auth;
mod catalog;
mod helpers;
mod lines;
mod orders;
mod prices;
mod store;
mod validation;
