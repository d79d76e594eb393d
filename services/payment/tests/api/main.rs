//! Integration tests of the payment service: commands over the bus (embedded on SQLite and
//! PostgreSQL, and NATS JetStream), replies caught by a test subscriber, real HTTP for the
//! admin endpoints.
#![expect(
    clippy::unwrap_used,
    reason = "helpers outside #[test] functions fail the test loudly too"
)]

mod authorize;
mod helpers;
mod http;
mod idempotency;
mod latency;
mod nats;
mod race;
mod retention;
mod void;
