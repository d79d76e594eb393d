//! What a service's contract crate needs to call that service, and nothing more.
//!
//! A typed client (`tideway-catalog-api`'s `CatalogClient`, say) is a [`JsonClient`] over a
//! [`Transport`]: the service's router called in this process (no socket) or its HTTP
//! address (pooled connections). Every call has a deadline that covers the whole call,
//! answer body included. A failed call is a [`ClientError`] that says whether repeating it
//! may succeed; a service's error answer carries its RFC 9457 [`Problem`]. The current
//! W3C trace ([`trace`]) goes with every call. An [`Availability`] says, without a call,
//! whether a service can take work now (a balancer's view of its replicas, or a polled
//! readiness probe).
//!
//! No server stack lives here (no axum router, no configuration, no log subscriber, no JWT
//! signing): contract crates depend on this one, and hosting a service is
//! `tideway-runtime`'s job, which re-exports these items.
#![warn(missing_docs)]

mod availability;
mod error;
mod json;
pub mod problem;
pub mod trace;
mod transport;

pub use availability::{Availability, FAILURES_TO_DOWN};
pub use error::ClientError;
pub use json::JsonClient;
pub use problem::{InvalidParam, PROBLEM_JSON, Problem};
pub use transport::{Body, HttpClient, Stack, Transport, error_chain, http_client, pooled};

#[cfg(test)]
mod tests;
