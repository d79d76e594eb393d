//! W3C trace context (`traceparent`) across every hop.
//!
//! The server side (tideway-runtime's HTTP stack) continues the caller's trace or starts
//! one and makes it the *current* trace of the handler's task. [`crate::Transport`] sends
//! the current trace on every outgoing call, and event producers put [`current`] into the
//! event's `traceparent`; a consumer continues the event's trace with [`scope`]. One
//! checkout thus has one trace id in the logs of every service it touches, through HTTP
//! and events alike.

use std::{fmt, future::Future};

use http::HeaderName;

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

impl TraceContext {
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

fn nonzero_u128() -> u128 {
    loop {
        let value = uuid::Uuid::new_v4().as_u128();
        if value != 0 {
            return value;
        }
    }
}

fn nonzero_u64() -> u64 {
    loop {
        let value = uuid::Uuid::new_v4().as_u64_pair().0;
        if value != 0 {
            return value;
        }
    }
}

/// The trace of the task this runs in, if any.
pub fn current() -> Option<TraceContext> {
    CURRENT.try_with(|ctx| *ctx).ok()
}

/// The current trace's `traceparent` for an outgoing event or call (a child span), if any.
pub fn current_traceparent() -> Option<String> {
    current().map(|ctx| ctx.child().header_value())
}

/// Runs `future` with `ctx` as the current trace (a consumer continuing an event's trace).
pub async fn scope<F: Future>(ctx: TraceContext, future: F) -> F::Output {
    CURRENT.scope(ctx, future).await
}

/// Continues `traceparent` (from an event) or starts a new trace, for `future`.
pub async fn continue_from<F: Future>(traceparent: Option<&str>, future: F) -> F::Output {
    let ctx = traceparent
        .and_then(TraceContext::parse)
        .map_or_else(TraceContext::new_root, |ctx| ctx.child());
    scope(ctx, future).await
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
