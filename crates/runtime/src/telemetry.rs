//! Logs through `tracing`: human-readable by default, JSON lines when configured.

use serde::{Deserialize, Serialize};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Multi-field human-readable lines.
    #[default]
    Pretty,
    /// One JSON object per line, with the span fields (request id, service) on each.
    Json,
}

/// Installs the global subscriber. `filter` uses `EnvFilter` syntax (`info,sqlx=warn`);
/// `RUST_LOG` overrides it when set. A second call is a no-op, so tests may call it freely.
pub fn init(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Pretty => registry
            .with(fmt::layer().compact().with_target(false))
            .try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    // Every enclosing span too: the request's (request_id, trace_id) or the
                    // event handler's (trace_id) stays on lines logged in nested spans.
                    .with_span_list(true),
            )
            .try_init(),
    };
    // Already initialised (several apps in one test process): keep the first.
    drop(result);
}
