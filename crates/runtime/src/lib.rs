//! Hosting for Tideway services.
//!
//! Everything a service needs around its business logic lives here, so every service and
//! the gateway behave alike: layered configuration ([`config`]), logs ([`telemetry`]),
//! RFC 9457 problem responses ([`problem`]) and extractors that produce them
//! ([`extract`]), the standard HTTP stack with request ids, access logs, metrics and health
//! endpoints ([`http`], [`metrics`]), serving with graceful shutdown ([`serve`]), transports
//! for typed clients that call a service in-process or over HTTP ([`client`], re-exported
//! from `tideway-client`, which contract crates use without this server stack) and JWT
//! verification against a JWKS ([`auth`]), W3C trace context across HTTP and events
//! ([`trace`]), and the API's versions with their deprecated unversioned aliases
//! ([`versions`]).
#![warn(missing_docs)]

pub mod auth;
pub mod config;
pub mod extract;
pub mod http;
pub mod metrics;
pub mod openapi;
pub mod serve;
pub mod telemetry;
pub mod tls;
pub mod trace;
pub mod versions;

/// Transports and the JSON client, from [`tideway_client`] (what contract crates use).
pub use tideway_client as client;
pub use tideway_client::problem;
pub use tideway_client::{InvalidParam, Problem};
/// The header of a 503 that refuses a request because a dependency is down, naming it: no
/// failure of the replica for breakers, ejection and retries (from `tideway-resilience`).
pub use tideway_resilience::DEPENDENCY_DOWN;
