//! The ordering service over real HTTP and a real bus, on SQLite and PostgreSQL. Inventory
//! and payment are played by small responders on the bus that keep their contracts; the
//! basket is a fake HTTP router behind the basket's typed client.
#![expect(
    clippy::unwrap_used,
    reason = "helpers outside #[test] functions fail the test loudly on an unexpected error"
)]

mod checkout;
mod helpers;
mod nats;
mod orders;
mod recovery;
mod retention;
mod saga;
mod sagas;
