//! Transports for typed clients: a service called in-process (its router, no socket) or
//! over HTTP (pooled connections, a deadline on every call). The gateway forwards through
//! the same transports, so one code path serves both deployment shapes.

use std::{convert::Infallible, sync::Arc, time::Duration};

use http::{HeaderValue, Request, Response, Uri};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tower::{Service, ServiceExt, util::BoxCloneSyncService};
use tracing::Instrument;

pub use axum_core::body::Body;

use crate::error::ClientError;

/// The pooled HTTP/1 client behind [`Transport::http`], shareable between transports.
pub type HttpClient = Client<HttpConnector, Body>;

/// A service's request handler called in this process: its router, type-erased.
type Local = BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;

/// A whole client stack built elsewhere (a balancer over discovered replicas, with its
/// resilience layers), type-erased: it takes requests whose URI is a path and query and
/// answers or fails with a [`ClientError`].
pub type Stack = BoxCloneSyncService<Request<Body>, Response<Body>, ClientError>;

#[derive(Clone)]
#[expect(
    clippy::large_enum_variant,
    reason = "one per transport, cloned rarely; the pooled client grows with hyper-util's features"
)]
enum Kind {
    InProcess(Local),
    Http {
        scheme: http::uri::Scheme,
        authority: http::uri::Authority,
        client: HttpClient,
    },
    Stack {
        stack: Stack,
        address: Arc<str>,
    },
}

/// How to reach one service.
#[derive(Clone)]
pub struct Transport {
    service: Arc<str>,
    kind: Kind,
    timeout: Duration,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("service", &self.service)
            .field("address", &self.address())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A pooled HTTP/1 client for upstream calls.
pub fn http_client() -> HttpClient {
    pooled()
}

/// A pooled HTTP/1 client sending bodies of type `B`: no delay, a 2 s connect timeout,
/// idle connections kept 30 s, at most 64 per host.
pub fn pooled<B>() -> Client<HttpConnector, B>
where
    B: http_body::Body + Send,
    B::Data: Send,
{
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(64)
        .build(connector)
}

impl Transport {
    /// Calls `router` (an axum `Router`, or any service of the same shape) directly, in
    /// this process.
    pub fn in_process<S>(service: &str, router: S, timeout: Duration) -> Self
    where
        S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        Self {
            service: service.into(),
            kind: Kind::InProcess(BoxCloneSyncService::new(router)),
            timeout,
        }
    }

    /// Calls the service at `base_url` (`http://host:port`) with a new connection pool.
    pub fn http(service: &str, base_url: &str, timeout: Duration) -> Result<Self, ClientError> {
        Self::http_with(service, base_url, timeout, http_client())
    }

    /// Calls the service at `base_url` through an existing pool.
    pub fn http_with(
        service: &str,
        base_url: &str,
        timeout: Duration,
        client: HttpClient,
    ) -> Result<Self, ClientError> {
        let uri: Uri = base_url
            .parse()
            .map_err(|err| ClientError::InvalidRequest(format!("base URL {base_url:?}: {err}")))?;
        let (Some(scheme), Some(authority)) = (uri.scheme().cloned(), uri.authority().cloned())
        else {
            return Err(ClientError::InvalidRequest(format!(
                "base URL {base_url:?} needs a scheme and a host"
            )));
        };
        if scheme != http::uri::Scheme::HTTP {
            return Err(ClientError::InvalidRequest(format!(
                "base URL {base_url:?}: only http is supported inside the system"
            )));
        }
        Ok(Self {
            service: service.into(),
            kind: Kind::Http {
                scheme,
                authority,
                client,
            },
            timeout,
        })
    }

    /// Calls the service through `stack` (built by whoever knows how to find and guard its
    /// replicas); `address` says what it reaches, for logs and the console.
    pub fn from_service(
        service: &str,
        address: impl Into<String>,
        stack: Stack,
        timeout: Duration,
    ) -> Self {
        Self {
            service: service.into(),
            kind: Kind::Stack {
                stack,
                address: address.into().into(),
            },
            timeout,
        }
    }

    /// The service this transport reaches.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// `in-process` or the base URL.
    pub fn address(&self) -> String {
        match &self.kind {
            Kind::InProcess(_) => "in-process".to_owned(),
            Kind::Http {
                scheme, authority, ..
            } => format!("{scheme}://{authority}"),
            Kind::Stack { address, .. } => address.to_string(),
        }
    }

    /// The deadline of every call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends `request`, whose URI is a path and query, under the transport's deadline.
    pub async fn send(&self, request: Request<Body>) -> Result<Response<Body>, ClientError> {
        self.send_with_timeout(request, self.timeout).await
    }

    /// Sends `request` under `timeout` (for the answer's head: the body streams on).
    pub async fn send_with_timeout(
        &self,
        request: Request<Body>,
        timeout: Duration,
    ) -> Result<Response<Body>, ClientError> {
        match tokio::time::timeout(timeout, self.send_unbounded(request)).await {
            Ok(result) => result,
            Err(_) => Err(self.timed_out(timeout)),
        }
    }

    /// The error of a call that passed its deadline `timeout`.
    pub(crate) fn timed_out(&self, timeout: Duration) -> ClientError {
        ClientError::Timeout {
            service: self.service.to_string(),
            timeout,
        }
    }

    /// Sends `request` with no deadline of its own: the caller bounds it. When spans are
    /// recorded the call is a client span (OpenTelemetry HTTP conventions) and the callee
    /// continues it; otherwise no span is opened.
    pub(crate) async fn send_unbounded(
        &self,
        request: Request<Body>,
    ) -> Result<Response<Body>, ClientError> {
        if !crate::trace::spans_recorded() {
            return self.dispatch(request).await;
        }
        let span = tracing::info_span!(
            "http client",
            otel.name = request.method().as_str(),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            http.request.method = request.method().as_str(),
            server.address = &*self.service,
            url.path = request.uri().path(),
            http.response.status_code = tracing::field::Empty,
            error.type = tracing::field::Empty,
        );
        let result = self.dispatch(request).instrument(span.clone()).await;
        match &result {
            Ok(response) => {
                span.record("http.response.status_code", response.status().as_u16());
                if response.status().is_server_error() {
                    span.record("otel.status_code", "ERROR");
                    span.record("error.type", response.status().as_str());
                }
            }
            Err(err) => {
                span.record("otel.status_code", "ERROR");
                span.record("error.type", err.to_string());
            }
        }
        result
    }

    async fn dispatch(&self, mut request: Request<Body>) -> Result<Response<Body>, ClientError> {
        // Carry the caller's trace to the callee.
        if !request.headers().contains_key(&crate::trace::TRACEPARENT)
            && let Some(traceparent) = crate::trace::current_traceparent()
            && let Ok(value) = HeaderValue::from_str(&traceparent)
        {
            request
                .headers_mut()
                .insert(crate::trace::TRACEPARENT.clone(), value);
        }
        match &self.kind {
            Kind::InProcess(router) => match router.clone().oneshot(as_if_sent(request)).await {
                Ok(response) => Ok(response),
                Err(never) => match never {},
            },
            Kind::Stack { stack, .. } => stack.clone().oneshot(request).await,
            Kind::Http {
                scheme,
                authority,
                client,
            } => {
                let path_and_query = request
                    .uri()
                    .path_and_query()
                    .cloned()
                    .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
                *request.uri_mut() = Uri::builder()
                    .scheme(scheme.clone())
                    .authority(authority.clone())
                    .path_and_query(path_and_query)
                    .build()
                    .map_err(|err| ClientError::InvalidRequest(err.to_string()))?;
                client
                    .request(request)
                    .await
                    .map(|response| response.map(Body::new))
                    .map_err(|err| ClientError::Connect {
                        service: self.service.to_string(),
                        message: error_chain(&err),
                    })
            }
        }
    }
}

/// The request as the service would receive it over a socket: method, URI, headers and
/// body, but none of the caller's extensions (a router's path parameters, for one, would
/// otherwise leak into the service's router).
fn as_if_sent(request: Request<Body>) -> Request<Body> {
    let (parts, body) = request.into_parts();
    let mut fresh = Request::new(body);
    *fresh.method_mut() = parts.method;
    *fresh.uri_mut() = parts.uri;
    *fresh.version_mut() = parts.version;
    *fresh.headers_mut() = parts.headers;
    fresh
}

/// An error and its sources, joined with `: `.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
