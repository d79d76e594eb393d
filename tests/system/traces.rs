//! Spans over OTLP: an OTLP/HTTP receiver in the test (protobuf decoded with
//! opentelemetry-proto) collects what the shop exports, and one checkout must be one trace
//! across the gateway, ordering, inventory and payment, every span's parent in it, in the
//! embedded shape and with every service in its own process.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, body::Bytes, extract::State, routing::post};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{AnyValue, KeyValue, any_value},
};
use prost::Message;
use serde_json::json;
use tideway::App;
use tideway_runtime::telemetry::{self, TelemetryConfig};

use crate::{checkout::Shopper, scenario};

/// One received span, flattened.
#[derive(Debug, Clone)]
struct Received {
    trace_id: String,
    span_id: String,
    parent: String,
    name: String,
    kind: i32,
    service: String,
}

type Spans = Arc<Mutex<Vec<Received>>>;

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        _ => String::new(),
    }
}

fn attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| text(kv.value.as_ref()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn receive(State(spans): State<Spans>, body: Bytes) -> &'static str {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return "";
    };
    let mut received = spans.lock().unwrap();
    for resource in request.resource_spans {
        let process = resource
            .resource
            .as_ref()
            .and_then(|r| attribute(&r.attributes, "service.name"))
            .unwrap_or_default();
        for scope in resource.scope_spans {
            for span in scope.spans {
                received.push(Received {
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent: hex(&span.parent_span_id),
                    service: attribute(&span.attributes, "service")
                        .unwrap_or_else(|| process.clone()),
                    name: span.name,
                    kind: span.kind,
                });
            }
        }
    }
    ""
}

/// An OTLP/HTTP receiver on a random port: its base URL and what it received.
async fn receiver() -> (String, Spans) {
    let spans: Spans = Arc::default();
    let app = Router::new()
        .route("/v1/traces", post(receive))
        .layer(axum::extract::DefaultBodyLimit::max(64 << 20))
        .with_state(spans.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), spans)
}

/// Checks out one order as a new shopper; answers the checkout's trace id.
async fn one_checkout(base: &str) -> String {
    let (item, _) = crate::checkout::item_with_stock(base, 1).await;
    let shopper = Shopper::register(base).await;
    shopper.add(&item, 1).await;
    let response = shopper
        .http
        .post(format!("{base}/api/v1/basket/checkout"))
        .bearer_auth(&shopper.token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let trace_id = response
        .headers()
        .get("x-trace-id")
        .and_then(|v| v.to_str().ok())
        .unwrap()
        .to_owned();
    let accepted: serde_json::Value = response.json().await.unwrap();
    let order = shopper
        .settled(
            accepted["order_id"].as_str().unwrap(),
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(order["status"], "confirmed", "{order}");
    trace_id
}

/// The spans of trace `trace_id` received so far.
fn whole_trace(spans: &Spans, trace_id: &str) -> Vec<Received> {
    spans
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.trace_id == trace_id)
        .cloned()
        .collect()
}

/// What the trace still lacks, if anything.
fn problem(trace: &[Received]) -> Option<String> {
    let services: HashSet<&str> = trace.iter().map(|s| s.service.as_str()).collect();
    for wanted in ["gateway", "basket", "ordering", "inventory", "payment"] {
        if !services.contains(wanted) {
            return Some(format!("no span of {wanted} yet (have {services:?})"));
        }
    }
    // The consumers' spans come last (the payment service answers the checkout's card
    // call before its saga step arrives over the bus).
    for consumer in ["inventory", "payment"] {
        if !trace
            .iter()
            .any(|s| s.service == consumer && s.kind == 5 && s.name.starts_with("process "))
        {
            return Some(format!("no consumer span of {consumer} yet"));
        }
    }
    let ids: HashSet<&str> = trace.iter().map(|s| s.span_id.as_str()).collect();
    let roots: Vec<&Received> = trace.iter().filter(|s| s.parent.is_empty()).collect();
    if roots.len() != 1 {
        return Some(format!("{} roots: {roots:?}", roots.len()));
    }
    if let Some(orphan) = trace
        .iter()
        .find(|s| !s.parent.is_empty() && !ids.contains(s.parent.as_str()))
    {
        return Some(format!("parent of {orphan:?} not received"));
    }
    None
}

/// Waits until the trace `trace_id` has spans of every checkout service and one root, with
/// every other span's parent among them; answers its spans.
async fn assert_one_trace_async(spans: &Spans, trace_id: &str) -> Vec<Received> {
    let deadline = Duration::from_secs(60);
    let until = tokio::time::Instant::now() + deadline;
    loop {
        let trace = whole_trace(spans, trace_id);
        match problem(&trace) {
            None => return trace,
            Some(problem) if tokio::time::Instant::now() >= until => {
                panic!("no whole trace {trace_id} within {deadline:?}: {problem}\n{trace:#?}")
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The gateway's server span is the root; the root's children include the basket's span
/// (the gateway's hop), and the consumer spans of inventory and payment are in the trace.
fn assert_shape(trace: &[Received]) {
    let by_id: HashMap<&str, &Received> = trace.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let root = trace.iter().find(|s| s.parent.is_empty()).unwrap();
    assert_eq!(root.service, "gateway", "{root:?}");
    assert_eq!(root.kind, 2, "the root is a server span: {root:?}");
    let consumer = |service: &str| {
        trace
            .iter()
            .any(|s| s.service == service && s.kind == 5 && s.name.starts_with("process "))
    };
    assert!(consumer("inventory"), "{trace:#?}");
    assert!(consumer("payment"), "{trace:#?}");
    // The basket's server span hangs under the gateway's, through any client span.
    let basket = trace
        .iter()
        .find(|s| s.service == "basket" && s.kind == 2)
        .unwrap();
    let mut up = by_id.get(basket.parent.as_str()).copied();
    while let Some(span) = up
        && span.service != "gateway"
    {
        up = by_id.get(span.parent.as_str()).copied();
    }
    assert!(
        up.is_some(),
        "the basket's span descends from the gateway's"
    );
}

#[tokio::test]
async fn a_checkout_is_one_trace_in_one_process() {
    let (endpoint, spans) = receiver().await;
    let telemetry = telemetry::init_with(
        telemetry::LogFormat::Pretty,
        // Spans follow the log filter: the hops' spans are at info.
        "info,sqlx=warn",
        &TelemetryConfig {
            otlp_endpoint: Some(endpoint),
            sample_ratio: 1.0,
            recent_spans: 10_000,
            ..TelemetryConfig::default()
        },
    );
    let data = tempfile::tempdir().unwrap();
    let config = crate::embedded_config(data.path());
    let server = crate::serve_ready(App::embedded(&config).await.unwrap()).await;
    let trace_id = one_checkout(server.base_url()).await;
    let trace = assert_one_trace_async(&spans, &trace_id).await;
    assert_shape(&trace);
    // The same trace is in the process's own store, with the services filled in.
    let kept = telemetry::recent().unwrap().trace(&trace_id);
    assert!(kept.len() >= trace.len() / 2, "{} kept", kept.len());
    assert!(kept.iter().any(|s| s.service == "payment"), "{kept:#?}");
    // The platform's metrics saw the same checkout (the saga completes after the order is
    // confirmed: its capture step comes last).
    let metrics = tideway_testkit::eventually(
        Duration::from_secs(60),
        "the checkout saga counted as completed",
        || {
            let text = tideway_runtime::metrics::render();
            text.contains("tideway_saga_completed_total{saga=\"checkout\"}")
                .then_some(text)
        },
    )
    .await;
    for series in [
        "tideway_bus_published_total{system=\"embedded\",event_type=\"tideway.inventory.reserve-stock\"}",
        "tideway_bus_consumed_total{consumer=\"inventory\",event_type=\"tideway.inventory.reserve-stock\",outcome=\"ok\"}",
        "tideway_saga_started_total{saga=\"checkout\"}",
        "tideway_saga_completed_total{saga=\"checkout\"}",
        "tideway_saga_step_duration_seconds_count{saga=\"checkout\"",
        "tideway_outbox_pending_rows{service=\"ordering\"}",
        "tideway_db_pool_connections{service=\"ordering\",state=\"idle\"}",
    ] {
        assert!(metrics.contains(series), "no {series} in:\n{metrics}");
    }
    server.stop(crate::STOP_DEADLINE).await;
    telemetry.shutdown();
}

#[tokio::test]
async fn a_checkout_is_one_trace_across_processes() {
    let (endpoint, spans) = receiver().await;
    let shop = crate::processes::Distributed::start_with(&[(
        "TIDEWAY_TELEMETRY__OTLP_ENDPOINT".to_owned(),
        endpoint,
    )])
    .await;
    scenario::wait_ready(&shop.gateway, Duration::from_secs(60)).await;
    let trace_id = one_checkout(&shop.gateway).await;
    let trace = assert_one_trace_async(&spans, &trace_id).await;
    assert_shape(&trace);
    shop.stop().await;
}
