//! W3C trace context (`traceparent`) across every hop.
//!
//! The server side (tideway-runtime's HTTP stack) continues the caller's trace or starts
//! one and makes it the *current* trace of the handler's task. [`crate::Transport`] sends
//! the current trace on every outgoing call, and event producers put [`current`] into the
//! event's `traceparent`; a consumer continues the event's trace with [`scope`]. One
//! checkout thus has one trace id in the logs of every service it touches, through HTTP
//! and events alike.
//!
//! When spans are recorded (tideway-runtime's telemetry with an exporter or the in-memory
//! span store), the runtime installs a [`SpanBridge`]: then the current trace is the
//! current `tracing` span's, outgoing calls carry that span's id, and [`continue_from`]
//! opens a span whose parent is the event's. Without a bridge nothing here opens a span or
//! allocates for one: tracing off costs what it did before.

use std::{fmt, future::Future, sync::OnceLock};

use http::HeaderName;
use tracing::{Instrument, Span};

/// The W3C header.
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// The response header naming the request's trace id.
pub static TRACE_ID: HeaderName = HeaderName::from_static("x-trace-id");

tokio::task_local! {
    static CURRENT: TraceContext;
}

/// A trace id, the id of the current span within it, and the sampled flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: u128,
    span_id: u64,
    sampled: bool,
}

/// What connects the W3C context to recorded spans; installed once by the runtime's
/// telemetry when spans are recorded.
pub trait SpanBridge: Send + Sync + 'static {
    /// The context of `span`, if it has a valid one.
    fn context_of(&self, span: &Span) -> Option<TraceContext>;
    /// Makes `parent` (a remote caller's or an event's span) the parent of `span`.
    fn set_parent(&self, span: &Span, parent: TraceContext);
}

static BRIDGE: OnceLock<Box<dyn SpanBridge>> = OnceLock::new();

/// Installs `bridge`; the first call wins. Answers whether this one was installed.
pub fn install_bridge(bridge: Box<dyn SpanBridge>) -> bool {
    BRIDGE.set(bridge).is_ok()
}

/// The installed bridge: `Some` when spans are recorded.
pub fn bridge() -> Option<&'static dyn SpanBridge> {
    BRIDGE.get().map(|b| &**b)
}

/// Whether spans are recorded (a bridge is installed): open hop spans only then.
pub fn spans_recorded() -> bool {
    BRIDGE.get().is_some()
}

impl TraceContext {
    /// A context from its parts (a recorded span's ids); `None` when either id is zero.
    pub fn from_parts(trace_id: u128, span_id: u64, sampled: bool) -> Option<Self> {
        (trace_id != 0 && span_id != 0).then_some(Self {
            trace_id,
            span_id,
            sampled,
        })
    }

    /// The trace id as a number.
    pub fn trace_id_u128(&self) -> u128 {
        self.trace_id
    }

    /// The span id as a number.
    pub fn span_id_u64(&self) -> u64 {
        self.span_id
    }

    /// The span id as 16 lower-case hex digits.
    pub fn span_id(&self) -> String {
        format!("{:016x}", self.span_id)
    }

    /// Whether the trace is sampled (recorded).
    pub fn sampled(&self) -> bool {
        self.sampled
    }

    /// A new trace.
    pub fn new_root() -> Self {
        Self {
            trace_id: nonzero_u128(),
            span_id: nonzero_u64(),
            sampled: true,
        }
    }

    /// Parses a `traceparent` value (`00-<32 hex>-<16 hex>-<2 hex>`); `None` when malformed
    /// or all-zero, as the specification requires.
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.trim().split('-');
        let version = parts.next()?;
        let trace = parts.next()?;
        let span = parts.next()?;
        let flags = parts.next()?;
        if version.len() != 2
            || version == "ff"
            || trace.len() != 32
            || span.len() != 16
            || flags.len() != 2
        {
            return None;
        }
        if version == "00" && parts.next().is_some() {
            return None;
        }
        let is_hex = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if !(is_hex(version) && is_hex(trace) && is_hex(span) && is_hex(flags)) {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok()?;
        let span_id = u64::from_str_radix(span, 16).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        if trace_id == 0 || span_id == 0 {
            return None;
        }
        Some(Self {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    /// The same trace with a new span id: the context of work caused by this one.
    #[must_use]
    pub fn child(&self) -> Self {
        Self {
            span_id: nonzero_u64(),
            ..*self
        }
    }

    /// The trace id as 32 lower-case hex digits.
    pub fn trace_id(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// The `traceparent` header value.
    pub fn header_value(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id,
            self.span_id,
            u8::from(self.sampled)
        )
    }
}

// Ids come from the thread's CSPRNG (seeded from the OS once), not from the OS per id:
// two or three ids per request and hop made `getrandom` a visible cost.
fn nonzero_u128() -> u128 {
    loop {
        let value: u128 = rand::random();
        if value != 0 {
            return value;
        }
    }
}

fn nonzero_u64() -> u64 {
    loop {
        let value: u64 = rand::random();
        if value != 0 {
            return value;
        }
    }
}

/// The trace of the task this runs in, if any: the current span's when spans are recorded.
pub fn current() -> Option<TraceContext> {
    if let Some(bridge) = bridge()
        && let Some(ctx) = bridge.context_of(&Span::current())
    {
        return Some(ctx);
    }
    CURRENT.try_with(|ctx| *ctx).ok()
}

/// The current trace's `traceparent` for an outgoing event or call, if any: the current
/// span's own id when spans are recorded (the callee's span becomes its child), a fresh
/// child id otherwise.
pub fn current_traceparent() -> Option<String> {
    if let Some(bridge) = bridge()
        && let Some(ctx) = bridge.context_of(&Span::current())
    {
        return Some(ctx.header_value());
    }
    CURRENT
        .try_with(|ctx| *ctx)
        .ok()
        .map(|ctx| ctx.child().header_value())
}

/// Runs `future` with `ctx` as the current trace (a consumer continuing an event's trace).
pub async fn scope<F: Future>(ctx: TraceContext, future: F) -> F::Output {
    CURRENT.scope(ctx, future).await
}

/// Continues `traceparent` (from an event) or starts a new trace, for `future`. When spans
/// are recorded, `future` runs in a span `name` whose parent is the event's span.
pub async fn continue_from<F: Future>(traceparent: Option<&str>, future: F) -> F::Output {
    continue_as("continue", traceparent, future).await
}

/// [`continue_from`] with the span's name (`otel.name`), such as `saga confirm`.
pub async fn continue_as<F: Future>(
    name: &'static str,
    traceparent: Option<&str>,
    future: F,
) -> F::Output {
    let parent = traceparent.and_then(TraceContext::parse);
    if let Some(bridge) = bridge() {
        let span = tracing::info_span!("continue", otel.name = name);
        adopt(bridge, &span, parent);
        let ctx = bridge
            .context_of(&span)
            .or_else(|| parent.map(|p| p.child()))
            .unwrap_or_else(TraceContext::new_root);
        return scope(ctx, future.instrument(span)).await;
    }
    let ctx = parent.map_or_else(TraceContext::new_root, |ctx| ctx.child());
    scope(ctx, future).await
}

/// Opens `span` as a child of `parent` (when spans are recorded; `Span::none()` otherwise).
pub fn child_span(span: Span, parent: Option<&str>) -> Span {
    if let Some(bridge) = bridge() {
        adopt(bridge, &span, parent.and_then(TraceContext::parse));
    }
    span
}

/// Makes `parent` the parent of the new `span`, unless the current span is in that trace
/// already (a handler continuing the event its consumer span continues): then `span` nests
/// under the current one.
fn adopt(bridge: &dyn SpanBridge, span: &Span, parent: Option<TraceContext>) {
    let Some(parent) = parent else { return };
    let current = bridge.context_of(&Span::current());
    if current.map(|c| c.trace_id) != Some(parent.trace_id) {
        bridge.set_parent(span, parent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_the_w3c_format() {
        let value = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let ctx = TraceContext::parse(value).unwrap();
        assert_eq!(ctx.to_string(), value);
        assert_eq!(ctx.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let child = ctx.child();
        assert_eq!(child.trace_id(), ctx.trace_id());
        assert_ne!(child.to_string(), value);
    }

    #[test]
    fn refuses_malformed_values() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-xyz92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(TraceContext::parse(bad).is_none(), "{bad}");
        }
    }

    #[tokio::test]
    async fn scopes_carry_the_trace_into_tasks() {
        assert!(current().is_none());
        let ctx = TraceContext::new_root();
        let seen = scope(ctx, async { current() }).await;
        assert_eq!(seen, Some(ctx));
        let from_event = continue_from(Some(&ctx.to_string()), async { current() })
            .await
            .unwrap();
        assert_eq!(from_event.trace_id(), ctx.trace_id());
    }
}
