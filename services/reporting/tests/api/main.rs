//! Integration tests of the reporting service on both engines (SQLite, PostgreSQL) with
//! the embedded bus and its event log.
#![allow(
    clippy::unwrap_used,
    reason = "a failed step fails the test loudly, with its location"
)]

mod helpers;
mod http;
mod projections;
mod replay;
