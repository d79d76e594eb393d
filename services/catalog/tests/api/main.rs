//! Integration tests of the catalog service: real HTTP against the service on a random
//! port, every scenario on SQLite and PostgreSQL.
#![expect(
    clippy::unwrap_used,
    reason = "helpers outside #[test] functions fail the test loudly too"
)]

mod admin;
mod bad_input;
mod browse;
mod caching;
mod client;
mod events;
mod helpers;
mod seeding;
