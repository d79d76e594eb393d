//! Tower layers that keep calls between Tideway's services bounded when a peer is slow,
//! failing or flooded.
//!
//! Tower ships timeouts, retries, concurrency limits and load shedding as building blocks;
//! this crate puts them into the shapes the shop needs and adds what tower lacks (a circuit
//! breaker, a bulkhead with a queue deadline, keyed and global rate limits, fault injection).
//! Every layer follows one pattern: `Foo<S>` + `FooLayer` + its response future + its error,
//! parameters validated by a constructor that returns [`ConfigError`] instead of panicking.
//!
//! | layer | request | adds to the error | answers itself |
//! |---|---|---|---|
//! | [`DeadlineLayer`] / [`HttpDeadlineLayer`] | any / `http::Request` | [`DeadlineExceeded`] | — |
//! | [`CircuitBreakerLayer`] | any | [`BreakerOpen`] | — |
//! | [`RetryLayer`] | `http::Request<B: Clone>` | — | — |
//! | [`BulkheadLayer`] | any | [`BulkheadFull`] | — |
//! | [`LoadShedLayer`] | `http::Request` | — | 503 + `Retry-After` |
//! | [`RateLimitLayer`] / [`GlobalRateLimitLayer`] | `http::Request` | — | 429 + `Retry-After`, `RateLimit-*` |
//! | [`FaultInjectionLayer`] | `http::Request` | [`FaultAborted`] | the configured status |
//!
//! Layers that add errors return [`BoxError`]; callers classify it by downcasting (the
//! gateway maps [`DeadlineExceeded`] to 504, [`BreakerOpen`] and [`BulkheadFull`] to 503).
//! Layers meant to wrap an axum router (load shedding, rate limits) keep the inner error
//! type and answer the rejection as a response, so an always-ready, infallible router stays
//! infallible and no `HandleErrorLayer` is needed.
//!
//! A typical client stack for one upstream instance, outermost first:
//! deadline → retry → circuit breaker → bulkhead → transport. The deadline bounds the whole
//! call including retries; the breaker sits inside retry so each attempt is counted.
//!
//! Metrics follow `tideway_<name>_<unit>`; handles are resolved when a layer is built.
//! See `docs/resilience.md` for parameters, defaults and how each layer is tested.
#![warn(missing_docs)]

mod breaker;
mod bulkhead;
mod config;
mod deadline;
mod fault;
mod rate_limit;
mod retry;
mod shed;

pub use breaker::{
    BreakerFuture, BreakerOpen, BreakerSettings, BreakerState, CircuitBreaker, CircuitBreakerLayer,
    DEPENDENCY_DOWN, http_5xx_or_error, refused_for_a_dependency,
};
pub use bulkhead::{Bulkhead, BulkheadFull, BulkheadFuture, BulkheadLayer};
pub use config::ConfigError;
pub use deadline::{
    Deadline, DeadlineBody, DeadlineExceeded, DeadlineFuture, DeadlineLayer, HttpDeadline,
    HttpDeadlineFuture, HttpDeadlineLayer,
};
pub use fault::{
    FaultAborted, FaultFuture, FaultHandle, FaultInjection, FaultInjectionLayer, Faults,
};
pub use rate_limit::{
    GlobalRateLimit, GlobalRateLimitFuture, GlobalRateLimitLayer, GlobalRateLimitSettings,
    LocalGcra, RateDecision, RateLimit, RateLimitFuture, RateLimitLayer, RedisGcra,
    RedisUnavailable,
};
pub use retry::{IdempotentRetryPolicy, Retry, RetryLayer, RetrySettings};
pub use shed::{LoadShed, LoadShedFuture, LoadShedLayer};
/// The error every fallible layer here returns; classify it with `downcast_ref`.
pub use tower::BoxError;
