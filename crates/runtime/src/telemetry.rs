//! Logs and spans through `tracing`.
//!
//! Logs: human-readable by default, JSON lines when configured; every line of a request or
//! an event handler carries the trace id and span id of its hop (fields of the enclosing
//! span). Spans: off by default. With `telemetry.otlp_endpoint` set, every span goes to an
//! OTLP collector over HTTP (protobuf) through a batch exporter, sampled parent-based with
//! `telemetry.sample_ratio` for new traces; with `telemetry.recent_spans` above zero, the
//! last spans are also kept in memory ([`recent`]) for the console's trace view. Either
//! installs the [`SpanBridge`] that makes the W3C context follow the recorded spans; with
//! neither, no span of the platform's hops is opened and nothing is allocated for them.

use std::{
    borrow::Cow,
    collections::VecDeque,
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use opentelemetry::{
    Context, KeyValue,
    trace::{
        SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
        TracerProvider as _,
    },
};
use opentelemetry_http::{HttpClient, HttpError, Request as OtelRequest, Response as OtelResponse};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    trace::{BatchSpanProcessor, Sampler, SdkTracerProvider, SpanData, SpanProcessor},
};
use serde::{Deserialize, Serialize};
use tideway_client::trace::{SpanBridge, TraceContext};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{EnvFilter, Layer, fmt, prelude::*};

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

/// Where spans go (`[telemetry]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// The OTLP/HTTP collector's base URL (`http://127.0.0.1:4318`); spans go to
    /// `<url>/v1/traces`. Unset: nothing is exported.
    pub otlp_endpoint: Option<String>,
    /// The share of new traces recorded, 0.0 to 1.0; a trace continued from a caller keeps
    /// the caller's decision (parent-based).
    pub sample_ratio: f64,
    /// How many of the last finished spans this process keeps in memory for the console's
    /// trace view (0: none).
    pub recent_spans: usize,
    /// The `service.name` resource of this process's spans.
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            sample_ratio: 1.0,
            recent_spans: 0,
            service_name: "tideway".to_owned(),
        }
    }
}

/// The largest `telemetry.recent_spans`: memory stays bounded (a span keeps a few hundred
/// bytes).
pub const MAX_RECENT_SPANS: usize = 100_000;

impl TelemetryConfig {
    /// Whether spans are recorded at all.
    pub fn records_spans(&self) -> bool {
        self.otlp_endpoint.is_some() || self.recent_spans > 0
    }

    /// The first invalid key and why, if any.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Some((
                "telemetry.sample_ratio",
                "a share between 0.0 and 1.0".to_owned(),
            ));
        }
        if self.recent_spans > MAX_RECENT_SPANS {
            return Some((
                "telemetry.recent_spans",
                format!("a number of spans up to {MAX_RECENT_SPANS}"),
            ));
        }
        if let Some(url) = &self.otlp_endpoint {
            let ok = url
                .parse::<http::Uri>()
                .ok()
                .is_some_and(|uri| uri.scheme_str().is_some() && uri.authority().is_some());
            if !ok || !(url.starts_with("http://") || url.starts_with("https://")) {
                return Some((
                    "telemetry.otlp_endpoint",
                    "an http:// or https:// URL such as http://127.0.0.1:4318".to_owned(),
                ));
            }
        }
        None
    }
}

/// Why a log filter is refused.
pub fn check_filter(filter: &str) -> Result<(), String> {
    EnvFilter::try_new(filter)
        .map(drop)
        .map_err(|err| format!("a tracing filter such as info,sqlx=warn ({err})"))
}

/// Installs the global subscriber with logs only. `filter` uses `EnvFilter` syntax
/// (`info,sqlx=warn`); `RUST_LOG` overrides it when set. A second call is a no-op, so
/// tests may call it freely.
pub fn init(format: LogFormat, filter: &str) {
    drop(init_with(format, filter, &TelemetryConfig::default()));
}

/// What [`init_with`] installed; [`Telemetry::shutdown`] flushes the exporter.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Sends the spans still queued and stops the exporter (at exit).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(err) = provider.shutdown()
        {
            tracing::warn!(error = %err, "the span exporter did not shut down cleanly");
        }
    }
}

/// Installs the global subscriber: logs, and spans as `config` says. Call it inside a Tokio
/// runtime when spans are exported (the exporter's HTTP calls run on it). A second call is
/// a no-op.
pub fn init_with(format: LogFormat, filter: &str, config: &TelemetryConfig) -> Telemetry {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = match format {
        LogFormat::Pretty => fmt::layer().compact().with_target(false).boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            // Every enclosing span too: the request's (request_id, trace_id, span_id) or
            // the event handler's stays on lines logged in nested spans.
            .with_span_list(true)
            .boxed(),
    };
    let provider = config.records_spans().then(|| provider(config));
    let spans = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("tideway"))
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_level(false)
    });
    // One global filter for logs and spans alike: per-layer filters were seen to drop a
    // request's span now and then, for both layers at once.
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(spans)
        .try_init()
        .is_ok();
    // Already initialised (several apps in one test process): keep the first.
    if !installed {
        return Telemetry::default();
    }
    if provider.is_some() {
        tideway_client::trace::install_bridge(Box::new(OtelBridge));
    }
    Telemetry { provider }
}

fn provider(config: &TelemetryConfig) -> SdkTracerProvider {
    let mut builder = SdkTracerProvider::builder()
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            config.sample_ratio,
        ))))
        .with_resource(
            Resource::builder_empty()
                .with_attribute(KeyValue::new("service.name", config.service_name.clone()))
                .build(),
        );
    if config.recent_spans > 0 {
        let store = RECENT.get_or_init(|| RecentSpans::new(config.recent_spans));
        builder = builder.with_span_processor(KeepRecent(store));
    }
    if let Some(endpoint) = &config.otlp_endpoint {
        match exporter(endpoint) {
            Ok(exporter) => {
                builder =
                    builder.with_span_processor(BatchSpanProcessor::builder(exporter).build());
            }
            Err(err) => tracing::error!(error = %err, "the OTLP exporter cannot start"),
        }
    }
    builder.build()
}

fn exporter(endpoint: &str) -> Result<opentelemetry_otlp::SpanExporter, String> {
    let handle = tokio::runtime::Handle::try_current()
        .map_err(|_| "spans are exported from inside the Tokio runtime".to_owned())?;
    let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(url)
        .with_timeout(Duration::from_secs(10))
        .with_http_client(OnRuntime {
            client: opentelemetry_http::hyper::HyperClient::with_default_connector(
                Duration::from_secs(10),
                None,
            ),
            handle,
        })
        .build()
        .map_err(|err| err.to_string())
}

/// The library's hyper client, run on the service's runtime: the batch processor exports
/// from a thread of its own, outside any runtime.
#[derive(Debug)]
struct OnRuntime {
    client: opentelemetry_http::hyper::HyperClient,
    handle: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for OnRuntime {
    async fn send_bytes(
        &self,
        request: OtelRequest<Bytes>,
    ) -> Result<OtelResponse<Bytes>, HttpError> {
        let client = self.client.clone();
        self.handle
            .spawn(async move { client.send_bytes(request).await })
            .await
            .map_err(|err| -> HttpError { Box::new(err) })?
    }
}

/// Connects the W3C context of `tideway-client` to the OpenTelemetry spans.
struct OtelBridge;

impl SpanBridge for OtelBridge {
    fn context_of(&self, span: &Span) -> Option<TraceContext> {
        if span.is_none() {
            return None;
        }
        let cx = span.context();
        let sc = cx.span().span_context().clone();
        if !sc.is_valid() {
            return None;
        }
        TraceContext::from_parts(
            u128::from_be_bytes(sc.trace_id().to_bytes()),
            u64::from_be_bytes(sc.span_id().to_bytes()),
            sc.is_sampled(),
        )
    }

    fn set_parent(&self, span: &Span, parent: TraceContext) {
        let flags = if parent.sampled() {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        let sc = SpanContext::new(
            TraceId::from(parent.trace_id_u128()),
            SpanId::from(parent.span_id_u64()),
            flags,
            true,
            TraceState::default(),
        );
        // A span already started keeps its parent; nothing to do then.
        drop(span.set_parent(Context::new().with_remote_span_context(sc)));
    }
}

/// One finished span as the trace view shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SpanRecord {
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// 16 hex digits, empty for a root.
    pub parent_span_id: String,
    /// The span's name.
    pub name: String,
    /// The service that recorded it (its `service` attribute, else the nearest
    /// ancestor's, filled in by [`RecentSpans::trace`]).
    pub service: String,
    /// `server`, `client`, `producer`, `consumer` or `internal`.
    pub kind: &'static str,
    /// Start, microseconds since the Unix epoch.
    pub start_us: u64,
    /// Duration in microseconds.
    pub duration_us: u64,
    /// Whether the span ended in error, and the message if any.
    pub error: Option<String>,
    /// The span's attributes, as text.
    pub attributes: Vec<(String, String)>,
}

/// The last finished spans of this process, bounded.
#[derive(Debug)]
pub struct RecentSpans {
    capacity: usize,
    spans: Mutex<VecDeque<Arc<SpanRecord>>>,
}

static RECENT: OnceLock<RecentSpans> = OnceLock::new();

/// The in-memory span store, when `telemetry.recent_spans` is above zero.
pub fn recent() -> Option<&'static RecentSpans> {
    RECENT.get()
}

impl RecentSpans {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            spans: Mutex::new(VecDeque::with_capacity(capacity.min(4096))),
        }
    }

    fn push(&self, span: SpanRecord) {
        let mut spans = self.spans.lock().unwrap_or_else(|e| e.into_inner());
        if spans.len() >= self.capacity {
            spans.pop_front();
        }
        spans.push_back(Arc::new(span));
    }

    /// The spans of trace `trace_id` (32 hex digits), by start time, each with its
    /// service (inherited from the nearest ancestor that names one).
    pub fn trace(&self, trace_id: &str) -> Vec<SpanRecord> {
        let mut found: Vec<SpanRecord> = {
            let spans = self.spans.lock().unwrap_or_else(|e| e.into_inner());
            spans
                .iter()
                .filter(|s| s.trace_id == trace_id)
                .map(|s| (**s).clone())
                .collect()
        };
        found.sort_by_key(|s| s.start_us);
        // Spans start after their parents, so one pass in start order inherits.
        for i in 0..found.len() {
            if found[i].service.is_empty() {
                let parent = found[i].parent_span_id.clone();
                if let Some(service) = found[..i]
                    .iter()
                    .find(|s| s.span_id == parent)
                    .map(|s| s.service.clone())
                {
                    found[i].service = service;
                }
            }
        }
        found
    }

    /// The most recent trace ids, newest first, at most `limit`.
    pub fn trace_ids(&self, limit: usize) -> Vec<String> {
        let spans = self.spans.lock().unwrap_or_else(|e| e.into_inner());
        let mut ids: Vec<String> = Vec::new();
        for span in spans.iter().rev() {
            if !ids.contains(&span.trace_id) {
                ids.push(span.trace_id.clone());
                if ids.len() >= limit {
                    break;
                }
            }
        }
        ids
    }
}

/// The span processor feeding [`RecentSpans`].
#[derive(Debug)]
struct KeepRecent(&'static RecentSpans);

impl SpanProcessor for KeepRecent {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        self.0.push(record(&span));
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

fn micros(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

fn record(span: &SpanData) -> SpanRecord {
    let mut service = String::new();
    let mut attributes = Vec::with_capacity(span.attributes.len());
    let mut error_type = None;
    for kv in &span.attributes {
        let key = kv.key.as_str();
        let value = kv.value.as_str();
        match key {
            "service" => service = value.to_string(),
            "error.type" => error_type = Some(value.to_string()),
            _ => {}
        }
        attributes.push((key.to_owned(), value.into_owned()));
    }
    let error = match &span.status {
        Status::Error { description } => Some(if description.is_empty() {
            error_type.unwrap_or_else(|| "error".to_owned())
        } else {
            description.to_string()
        }),
        _ => None,
    };
    let parent = span.parent_span_id;
    SpanRecord {
        trace_id: span.span_context.trace_id().to_string(),
        span_id: span.span_context.span_id().to_string(),
        parent_span_id: if parent == SpanId::INVALID {
            String::new()
        } else {
            parent.to_string()
        },
        name: Cow::clone(&span.name).into_owned(),
        service,
        kind: match span.span_kind {
            SpanKind::Server => "server",
            SpanKind::Client => "client",
            SpanKind::Producer => "producer",
            SpanKind::Consumer => "consumer",
            SpanKind::Internal => "internal",
        },
        start_us: micros(span.start_time),
        duration_us: span
            .end_time
            .duration_since(span.start_time)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
        error,
        attributes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_filters_and_settings_are_named() {
        assert!(check_filter("info,sqlx=warn").is_ok());
        assert!(check_filter("info,[[[").is_err());
        let bad_ratio = TelemetryConfig {
            sample_ratio: 1.5,
            ..TelemetryConfig::default()
        };
        assert_eq!(
            bad_ratio.problem().map(|p| p.0),
            Some("telemetry.sample_ratio")
        );
        let bad_url = TelemetryConfig {
            otlp_endpoint: Some("127.0.0.1:4318".to_owned()),
            ..TelemetryConfig::default()
        };
        assert_eq!(
            bad_url.problem().map(|p| p.0),
            Some("telemetry.otlp_endpoint")
        );
        let good = TelemetryConfig {
            otlp_endpoint: Some("http://127.0.0.1:4318".to_owned()),
            sample_ratio: 0.1,
            ..TelemetryConfig::default()
        };
        assert_eq!(good.problem(), None);
        assert!(!TelemetryConfig::default().records_spans());
    }

    #[test]
    fn the_store_keeps_the_last_spans_and_inherits_services() {
        let store = RecentSpans::new(3);
        let span = |id: &str, parent: &str, service: &str, start: u64| SpanRecord {
            trace_id: "t".repeat(32),
            span_id: id.to_owned(),
            parent_span_id: parent.to_owned(),
            name: "n".to_owned(),
            service: service.to_owned(),
            kind: "internal",
            start_us: start,
            duration_us: 1,
            error: None,
            attributes: Vec::new(),
        };
        store.push(span("0", "", "old", 0));
        store.push(span("a", "", "gateway", 1));
        store.push(span("c", "b", "", 3));
        store.push(span("b", "a", "", 2));
        let trace = store.trace(&"t".repeat(32));
        let ids: Vec<_> = trace.iter().map(|s| s.span_id.as_str()).collect();
        assert_eq!(
            ids,
            ["a", "b", "c"],
            "the oldest is gone, the rest by start"
        );
        assert!(trace.iter().all(|s| s.service == "gateway"), "{trace:?}");
    }
}
