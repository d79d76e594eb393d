//! The HTTP stack every Tideway service and the gateway share.
//!
//! [`service_router`] wraps a service's API router with: request ids (`x-request-id`, kept
//! when the caller sent one, generated otherwise, echoed on the response), a span per request
//! carrying the service name and request id so every log line of the request has them, one
//! access-log line per request, metrics, a body size limit, problem JSON for every error
//! response, and the `/health/live`, `/health/ready` and `/metrics` endpoints; in front of
//! it all, the API's versions ([`crate::versions`]: `/api/v1/…`, unversioned aliases).

use std::{borrow::Cow, future::Future, pin::Pin, sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    extract::Request,
    http::{HeaderName, HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Serialize;
use tower_http::{
    limit::RequestBodyLimitLayer,
    request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer},
    trace::{DefaultOnFailure, TraceLayer},
};
use tracing::{Level, Span};

use crate::{
    problem::Problem,
    versions::{self, Aliases},
};

/// The request id header.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A readiness check: `Ok` when the dependency answers.
pub type ReadyCheck =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// The named checks `/health/ready` runs.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<(Cow<'static, str>, ReadyCheck)>,
}

impl Readiness {
    /// Adds a check named `name`.
    #[must_use]
    pub fn with<F, Fut>(mut self, name: impl Into<Cow<'static, str>>, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.checks.push((
            name.into(),
            Arc::new(move || Box::pin(check()) as Pin<Box<_>>),
        ));
        self
    }

    /// Runs every check, each under a 2 s deadline.
    pub async fn check(&self) -> Vec<(Cow<'static, str>, Result<(), String>)> {
        let mut results = Vec::with_capacity(self.checks.len());
        for (name, check) in &self.checks {
            let result = match tokio::time::timeout(Duration::from_secs(2), check()).await {
                Ok(result) => result,
                Err(_) => Err("no answer within 2 s".to_owned()),
            };
            results.push((name.clone(), result));
        }
        results
    }
}

/// Options of the standard stack.
#[derive(Debug, Clone, Copy)]
pub struct HttpOptions {
    /// The largest accepted request body, in bytes.
    pub body_limit: usize,
    /// Whether unversioned `/api/…` paths are served as deprecated aliases of `/api/v1/…`.
    pub aliases: Aliases,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            body_limit: 64 * 1024,
            aliases: Aliases::Served,
        }
    }
}

#[derive(Serialize)]
struct HealthBody {
    status: &'static str,
    service: &'static str,
    checks: Vec<CheckBody>,
}

#[derive(Serialize)]
struct CheckBody {
    name: Cow<'static, str>,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Wraps `api` with the standard stack for the service `name`, its paths under
/// [`versions::PREFIX`] with their unversioned aliases (see [`versions`]).
pub fn service_router(
    name: &'static str,
    api: Router,
    readiness: Readiness,
    options: HttpOptions,
) -> Router {
    let health = Router::new()
        .route(
            "/health/live",
            get(move || async move {
                axum::Json(HealthBody {
                    status: "live",
                    service: name,
                    checks: Vec::new(),
                })
            }),
        )
        .route(
            "/health/ready",
            get(move || {
                let readiness = readiness.clone();
                async move { ready(name, &readiness).await }
            }),
        )
        .route("/metrics", get(metrics_endpoint));
    let router = api
        .merge(health)
        .fallback(not_found)
        .layer(RequestBodyLimitLayer::new(options.body_limit))
        .layer(middleware::from_fn(problem_for_bare_errors));
    versions::versioned(name, observe(name, router), options.aliases)
}

/// Adds the request-id, tracing (access log) and metrics layers to `router`, naming the
/// service `name`. The gateway uses this around its proxy too.
///
/// The request's span carries the service, request id, trace id and span id, so every log
/// line of the request has them. When spans are recorded it is also the hop's server span
/// (OpenTelemetry HTTP conventions), child of the caller's `traceparent`; otherwise it has
/// only those fields, as before. The access log line is at `debug`.
pub fn observe(name: &'static str, router: Router) -> Router {
    // Install the recorder before the first request records anything.
    crate::metrics::prometheus();
    router
        .layer(middleware::from_fn(move |req, next| {
            crate::metrics::track(name, req, next)
        }))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
        // Inside the span: the trace context is the span's when spans are recorded.
        .layer(middleware::from_fn(crate::trace::middleware))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(move |request: &Request| request_span(name, request))
                .on_request(())
                .on_response(|response: &Response, latency: Duration, span: &Span| {
                    let status = response.status();
                    if crate::trace::spans_recorded() {
                        span.record("http.response.status_code", status.as_u16());
                        if status.is_server_error() {
                            span.record("otel.status_code", "ERROR");
                            span.record("error.type", status.as_str());
                        }
                    }
                    tracing::debug!(
                        status = status.as_u16(),
                        latency_ms = latency.as_secs_f64() * 1000.0,
                        "request finished"
                    );
                })
                .on_failure(DefaultOnFailure::new().level(Level::DEBUG)),
        )
        .layer(SetRequestIdLayer::new(REQUEST_ID.clone(), FastRequestUuid))
}

/// Request ids as UUID v4 text drawn from the thread's CSPRNG (seeded from the OS once),
/// not from the OS per request as `MakeRequestUuid` does.
#[derive(Debug, Clone, Copy, Default)]
struct FastRequestUuid;

impl MakeRequestId for FastRequestUuid {
    fn make_request_id<B>(&mut self, _request: &http::Request<B>) -> Option<RequestId> {
        let id = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
        let mut buffer = uuid::Uuid::encode_buffer();
        HeaderValue::from_str(id.hyphenated().encode_lower(&mut buffer))
            .ok()
            .map(RequestId::new)
    }
}

/// The request's span; [`crate::trace::middleware`] fills in its trace and span ids.
fn request_span(name: &'static str, request: &Request) -> Span {
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
        .unwrap_or_default();
    let Some(bridge) = crate::trace::bridge() else {
        return tracing::info_span!(
            "request",
            service = name,
            request_id = %request_id,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
            method = %request.method(),
            path = %request.uri().path(),
        );
    };
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(axum::extract::MatchedPath::as_str);
    let method = request.method().as_str();
    let span = tracing::info_span!(
        "request",
        otel.name = %format_args!("{method} {}", route.unwrap_or("unmatched")),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        service = name,
        request_id = %request_id,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
        method = %method,
        path = %request.uri().path(),
        http.request.method = method,
        http.route = route,
        url.path = request.uri().path(),
        http.response.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
    );
    if let Some(parent) = request
        .headers()
        .get(&crate::trace::TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::trace::TraceContext::parse)
    {
        bridge.set_parent(&span, parent);
    }
    span
}

async fn ready(name: &'static str, readiness: &Readiness) -> Response {
    let results = readiness.check().await;
    let all_ok = results.iter().all(|(_, r)| r.is_ok());
    let body = HealthBody {
        status: if all_ok { "ready" } else { "not ready" },
        service: name,
        checks: results
            .into_iter()
            .map(|(name, result)| CheckBody {
                name,
                ok: result.is_ok(),
                error: result.err(),
            })
            .collect(),
    };
    let status = if all_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

async fn metrics_endpoint() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        crate::metrics::render(),
    )
        .into_response()
}

/// The fallback for unknown paths.
pub async fn not_found(request: Request) -> Problem {
    Problem::not_found(format!("no endpoint at {}", request.uri().path()))
}

/// Turns error responses without a JSON body (a 405 from the router, a 413 from the body
/// limit, a bare status from a layer) into problem documents, so clients see one shape.
pub async fn problem_for_bare_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    // A JSON problem is already one; an HTML page (the web front's error pages and forms
    // with errors) is meant for a person.
    let has_document = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("json") || ct.starts_with("text/html"));
    if has_document {
        return response;
    }
    let (parts, _body) = response.into_parts();
    let mut problem = Problem::new(status);
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        problem = problem
            .with_type("/problems/body-too-large")
            .with_detail("the request body is larger than this endpoint accepts")
            .with_param("body", "too large");
    } else if status == StatusCode::METHOD_NOT_ALLOWED {
        problem = problem.with_detail("this endpoint does not accept that method");
    }
    let mut rebuilt = problem.into_response();
    // Keep headers such as `Allow` or `WWW-Authenticate`, but not the old body's framing.
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rebuilt.headers_mut().insert(name.clone(), value.clone());
        }
    }
    rebuilt
}

/// The request id of a request, when the stack set one.
pub fn request_id(request: &Request<Body>) -> Option<HeaderValue> {
    request.headers().get(&REQUEST_ID).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::problem::PROBLEM_JSON;
    use axum::routing::post;
    use tower::ServiceExt;

    fn app() -> Router {
        let api = Router::new().route("/things", post(|| async { "ok" }));
        service_router(
            "test",
            api,
            Readiness::default().with("db", || async { Err("down".to_owned()) }),
            HttpOptions {
                body_limit: 16,
                ..HttpOptions::default()
            },
        )
    }

    #[tokio::test]
    async fn errors_become_problems_and_request_ids_are_echoed() {
        let response = app()
            .oneshot(
                Request::get("/nowhere")
                    .header("x-request-id", "abc")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()["x-request-id"], "abc");
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);

        let response = app()
            .oneshot(Request::get("/things").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        assert!(response.headers().contains_key("x-request-id"));
    }

    #[tokio::test]
    async fn oversized_bodies_are_refused() {
        let response = app()
            .oneshot(
                Request::post("/things")
                    .header(header::CONTENT_LENGTH, "100")
                    .body(Body::from(vec![b'x'; 100]))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
    }

    #[tokio::test]
    async fn readiness_reports_failing_checks() {
        let response = app()
            .oneshot(Request::get("/health/ready").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let response = app()
            .oneshot(Request::get("/health/live").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn the_trace_continues_across_an_in_process_hop() {
        use crate::client::{JsonClient, Transport};
        // A service that answers the traceparent it was called with.
        let inner = service_router(
            "inner",
            Router::new().route(
                "/seen",
                axum::routing::get(|headers: http::HeaderMap| async move {
                    axum::Json(
                        headers
                            .get("traceparent")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned(),
                    )
                }),
            ),
            Readiness::default(),
            HttpOptions::default(),
        );
        let client = JsonClient::new(Transport::in_process(
            "inner",
            inner,
            Duration::from_secs(1),
        ));
        // An outer service that calls it.
        let outer = service_router(
            "outer",
            Router::new().route(
                "/call",
                axum::routing::get(move || {
                    let client = client.clone();
                    async move {
                        let seen: String =
                            client.get("/seen", &http::HeaderMap::new()).await.unwrap();
                        axum::Json(seen)
                    }
                }),
            ),
            Readiness::default(),
            HttpOptions::default(),
        );
        let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let response = outer
            .oneshot(
                Request::get("/call")
                    .header("traceparent", caller)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(
            response.headers()["x-trace-id"],
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let seen: String = serde_json::from_slice(&body).unwrap();
        let seen = crate::trace::TraceContext::parse(&seen).unwrap();
        assert_eq!(seen.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(seen.to_string(), caller, "each hop is a child span");
    }

    #[tokio::test]
    async fn metrics_count_requests_by_route() {
        let _ = app()
            .oneshot(Request::get("/health/live").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let text = crate::metrics::render();
        assert!(
            text.contains("tideway_http_requests_total{service=\"test\",method=\"GET\",route=\"/health/live\",status=\"200\"}"),
            "{text}"
        );
    }
}
