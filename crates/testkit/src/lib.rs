//! What Tideway's tests share, so every test runs in parallel on real engines without
//! writing its own fixtures.
//!
//! - [`backends`], [`sqlite`], [`postgres`]: a fresh database per test on SQLite and, when
//!   the server answers, PostgreSQL ([`TestDb`], dropped afterwards).
//! - [`nats`]: a private JetStream stream and subject root per test ([`TestNats`]).
//! - [`TestServer`]: a router (or a whole app) served on `127.0.0.1` on a free port, with its
//!   base URL and a graceful stop.
//! - [`TestTokens`]: a signing key, the verifier a service under test is built with, and
//!   access tokens for any user and roles, and [`TestTokens::attacks`]: the hostile tokens
//!   (`alg: none`, HS256 with the public key, bad `kid`, `iss`, `aud`, `exp`, `nbf`,
//!   tampering) every JWT check must refuse.
//! - [`eventually`], [`eventually_async`], [`within`]: waiting on a condition under a
//!   deadline, never a bare sleep.
//!
//! PostgreSQL and NATS are optional on a developer's machine: an unreachable server skips
//! that half of a test with a notice. With `CI=true` ([`is_ci`]) it fails the test instead:
//! CI never passes by skipping.
//!
//! This crate is a dev-dependency only. A platform crate it depends on (`tideway-store`,
//! `tideway-bus`) uses it from its integration tests, never from unit tests inside `src/`:
//! there the crate under test and the one this kit links would be two copies with distinct
//! types.
#![warn(missing_docs)]

use std::future::Future;

mod attacks;
mod db;
mod server;
mod stream;
mod tokens;
mod wait;

pub use db::{DEFAULT_POSTGRES_URL, TestDb, backends, postgres, postgres_admin_url, sqlite};
pub use server::{STOP_GRACE, TestServer};
pub use stream::{DEFAULT_NATS_URL, TestNats, nats, nats_url};
pub use tokens::{AUDIENCE, ISSUER, TOKEN_TTL, TestTokens};
pub use wait::{DEADLINE, POLL_INTERVAL, Satisfied, eventually, eventually_async, within};

/// Whether this run is CI (`CI=true` or `CI=1`), where a missing server is a failure.
pub fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Runs `cleanup` to its end on a thread and runtime of its own, and waits for it: a `Drop`
/// runs inside the test's runtime, where it cannot block on a future. A failed cleanup is
/// ignored: it must not turn a passing test into a failure.
fn clean_up(cleanup: impl Future<Output = ()> + Send + 'static) {
    let thread = std::thread::spawn(move || {
        if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            runtime.block_on(cleanup);
        }
    });
    let _ = thread.join();
}
