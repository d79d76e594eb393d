//! The saga engine on real SQLite and PostgreSQL databases, driven by a small test saga
//! whose side effects land in an in-memory ledger.
#![expect(
    clippy::unwrap_used,
    reason = "helpers outside #[test] functions fail the test loudly too"
)]

mod engine;
mod recovery;
mod support;
