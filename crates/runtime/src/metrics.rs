//! Prometheus metrics: one recorder per process, a middleware that counts and times every
//! request by service, method, route template and status.

use std::{sync::OnceLock, time::Instant};

use axum::{
    extract::{MatchedPath, Request},
    http::Method,
    middleware::Next,
    response::Response,
};
use metrics::SharedString;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets in seconds: 0.5 ms to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process's Prometheus handle, installing the recorder on first use. Several services
/// in one process share it; their series differ by the `service` label.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed; /metrics will be empty");
        }
        handle
    })
}

/// Renders every metric in the Prometheus text format.
pub fn render() -> String {
    let handle = prometheus();
    handle.run_upkeep();
    handle.render()
}

/// The `method` label: a standard method by its name, anything else `OTHER`, so a client
/// cannot add series by inventing methods. Static, so nothing is allocated for it.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

/// Middleware recording `tideway_http_requests_total`, `tideway_http_request_errors_total`
/// and `tideway_http_request_duration_seconds` for the service named `service`.
pub async fn track(service: &'static str, request: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = method_label(request.method());
    // The service, the method and an unmatched route are borrowed statics; only a matched
    // route template and the status are owned.
    let route: SharedString = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(SharedString::const_str("unmatched"), |p| {
            p.as_str().to_owned().into()
        });
    let response = next.run(request).await;
    let status = response.status();
    let labels: [(&'static str, SharedString); 4] = [
        ("service", SharedString::const_str(service)),
        ("method", SharedString::const_str(method)),
        ("route", route),
        ("status", status.as_u16().to_string().into()),
    ];
    metrics::counter!("tideway_http_requests_total", &labels).increment(1);
    metrics::histogram!("tideway_http_request_duration_seconds", &labels)
        .record(start.elapsed().as_secs_f64());
    if status.is_client_error() || status.is_server_error() {
        let class = if status.is_server_error() {
            "5xx"
        } else {
            "4xx"
        };
        let [service, method, route, status] = labels;
        let labels = [
            service,
            method,
            route,
            status,
            ("class", SharedString::const_str(class)),
        ];
        metrics::counter!("tideway_http_request_errors_total", &labels).increment(1);
    }
    response
}

#[cfg(test)]
mod tests {
    use axum::{Router, body::Body, routing::get};
    use tower::ServiceExt;

    use super::*;
    use crate::http::{HttpOptions, Readiness, service_router};

    #[tokio::test]
    async fn unknown_methods_share_one_label() {
        let router = service_router(
            "method-label-test",
            Router::new().route("/things", get(|| async { "ok" })),
            Readiness::default(),
            HttpOptions::default(),
        );
        for method in ["BREW", "PURGE", "GET"] {
            let request = Request::builder()
                .method(method)
                .uri("/things")
                .body(Body::empty())
                .unwrap();
            router.clone().oneshot(request).await.unwrap();
        }
        let text = render();
        let series = |method: &str, status: u16| {
            format!(
                "tideway_http_requests_total{{service=\"method-label-test\",method=\"{method}\",\
                 route=\"/things\",status=\"{status}\"}}"
            )
        };
        assert!(
            text.contains(&format!("{} 2", series("OTHER", 405))),
            "{text}"
        );
        assert!(
            text.contains(&format!("{} 1", series("GET", 200))),
            "{text}"
        );
        assert!(!text.contains("BREW") && !text.contains("PURGE"), "{text}");
    }

    #[test]
    fn standard_methods_keep_their_names() {
        assert_eq!(method_label(&Method::DELETE), "DELETE");
        assert_eq!(method_label(&Method::from_bytes(b"get").unwrap()), "OTHER");
    }
}
