//! Integration tests of the inventory service: commands and replies over the embedded bus
//! and NATS JetStream, HTTP over a real socket, every scenario on SQLite and PostgreSQL.
#![expect(
    clippy::unwrap_used,
    reason = "helpers outside #[test] functions fail the test loudly too"
)]

mod commands;
mod concurrency;
mod duplicates;
mod helpers;
mod http;
mod levels;
mod nats;
mod seeding;
