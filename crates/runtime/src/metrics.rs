//! Prometheus metrics: one recorder per process, a middleware that counts and times every
//! request by service, method, route template and status, and the recorder's upkeep.
//!
//! Histogram samples pile up in the recorder until its upkeep moves them into their
//! buckets; [`upkeep`] does that on a timer, so memory stays bounded however long the
//! process goes unscraped. [`crate::serve::serve`] runs it for as long as it serves.

use std::{sync::OnceLock, time::Duration, time::Instant};

use axum::{
    extract::{MatchedPath, Request},
    http::Method,
    middleware::Next,
    response::Response,
};
use metrics::SharedString;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

/// How often [`upkeep`] drains histogram samples into their buckets when run by the server.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

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

/// Runs the recorder's upkeep every `interval` until `shutdown` is cancelled.
pub async fn upkeep(interval: Duration, shutdown: CancellationToken) {
    let handle = prometheus();
    every(interval, &shutdown, || handle.run_upkeep()).await;
}

/// Calls `tick` every `interval` (the first after one interval) until `shutdown`.
async fn every(interval: Duration, shutdown: &CancellationToken, mut tick: impl FnMut()) {
    let mut timer = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    // A late tick is not made up for: one upkeep drains everything pending.
    timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = timer.tick() => tick(),
        }
    }
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
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use axum::{Router, body::Body, routing::get};
    use tower::ServiceExt;

    use super::*;
    use crate::http::{HttpOptions, Readiness, service_router};

    #[tokio::test]
    async fn upkeep_runs_on_its_timer_until_cancelled() {
        let ticks = Arc::new(AtomicUsize::new(0));
        let shutdown = CancellationToken::new();
        let counted = ticks.clone();
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            every(Duration::from_millis(10), &stop, || {
                counted.fetch_add(1, Ordering::Relaxed);
            })
            .await;
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        while ticks.load(Ordering::Relaxed) < 3 {
            assert!(Instant::now() < deadline, "the timer never ticked thrice");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("the upkeep stops once cancelled")
            .unwrap();
        let stopped_at = ticks.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(ticks.load(Ordering::Relaxed), stopped_at);
    }

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
