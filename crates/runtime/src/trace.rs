//! W3C trace context (`traceparent`) across every hop.
//!
//! The context itself (parsing, the task's current trace, scopes) is
//! [`tideway_client::trace`], re-exported here; this module adds the server side: the
//! [`middleware`] that continues the caller's trace or starts one, records it on the
//! request (header and extension), makes it the current trace of the handler's task and
//! answers the trace id in `x-trace-id`. It runs inside the request's span
//! ([`crate::http::observe`]) and records the `trace_id` and `span_id` on it, so every log
//! line of the request carries them. When spans are recorded the context is that span's.

use axum::{extract::Request, http::HeaderValue, middleware::Next, response::Response};
pub use tideway_client::trace::*;
use tracing::Span;

/// Middleware: continues the request's trace or starts one, puts it on the request (header
/// and extension) and in the task's scope, and answers the trace id in `x-trace-id`.
pub async fn middleware(mut request: Request, next: Next) -> Response {
    let span = Span::current();
    let recorded = bridge().and_then(|bridge| bridge.context_of(&span));
    let ctx = recorded.unwrap_or_else(|| {
        request
            .headers()
            .get(&TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(TraceContext::parse)
            .map_or_else(TraceContext::new_root, |ctx| ctx.child())
    });
    span.record(
        "trace_id",
        tracing::field::display(format_args!("{:032x}", ctx.trace_id_u128())),
    );
    span.record(
        "span_id",
        tracing::field::display(format_args!("{:016x}", ctx.span_id_u64())),
    );
    if let Ok(value) = HeaderValue::from_str(&ctx.header_value()) {
        request.headers_mut().insert(TRACEPARENT.clone(), value);
    }
    request.extensions_mut().insert(ctx);
    let mut response = scope(ctx, next.run(request)).await;
    if let Ok(value) = HeaderValue::from_str(&ctx.trace_id()) {
        response.headers_mut().insert(TRACE_ID.clone(), value);
    }
    response
}
