//! Transports for typed clients: a service called in-process (its router, no socket) or
//! over HTTP (pooled connections, a deadline on every call). The gateway forwards through
//! the same transports, so one code path serves both deployment shapes.

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, header},
};
use http_body_util::BodyExt;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde::{Serialize, de::DeserializeOwned};
use tower::ServiceExt;

use crate::problem::Problem;

/// The largest response body a typed client reads.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No answer within the deadline.
    #[error("{service} did not answer within {timeout:?}")]
    Timeout {
        /// The service called.
        service: String,
        /// The deadline.
        timeout: Duration,
    },
    /// The connection could not be made or broke.
    #[error("cannot reach {service}: {message}")]
    Connect {
        /// The service called.
        service: String,
        /// The transport's error.
        message: String,
    },
    /// The service answered with an error status.
    #[error("{service} answered {status}")]
    Status {
        /// The service called.
        service: String,
        /// Its status.
        status: StatusCode,
        /// Its problem document, when it sent one.
        problem: Option<Box<Problem>>,
    },
    /// The answer could not be read or decoded.
    #[error("cannot decode the answer of {service}: {message}")]
    Decode {
        /// The service called.
        service: String,
        /// What went wrong.
        message: String,
    },
    /// The request could not be built (a bad base URL or path).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

impl ClientError {
    /// Whether repeating an idempotent call may succeed: timeouts, connection errors and 502,
    /// 503 and 504 answers.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Timeout { .. } | Self::Connect { .. } => true,
            Self::Status { status, .. } => matches!(
                *status,
                StatusCode::BAD_GATEWAY
                    | StatusCode::SERVICE_UNAVAILABLE
                    | StatusCode::GATEWAY_TIMEOUT
            ),
            Self::Decode { .. } | Self::InvalidRequest(_) => false,
        }
    }

    /// The status the service answered, if it answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

#[derive(Clone)]
enum Kind {
    InProcess(Router),
    Http {
        scheme: http::uri::Scheme,
        authority: http::uri::Authority,
        client: Client<HttpConnector, Body>,
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
pub fn http_client() -> Client<HttpConnector, Body> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(64)
        .build(connector)
}

impl Transport {
    /// Calls `router` directly, in this process.
    pub fn in_process(service: &str, router: Router, timeout: Duration) -> Self {
        Self {
            service: service.into(),
            kind: Kind::InProcess(router),
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
        client: Client<HttpConnector, Body>,
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

    /// Sends `request` under `timeout`.
    pub async fn send_with_timeout(
        &self,
        mut request: Request<Body>,
        timeout: Duration,
    ) -> Result<Response<Body>, ClientError> {
        // Carry the caller's trace to the callee.
        if !request.headers().contains_key(&crate::trace::TRACEPARENT)
            && let Some(traceparent) = crate::trace::current_traceparent()
            && let Ok(value) = HeaderValue::from_str(&traceparent)
        {
            request
                .headers_mut()
                .insert(crate::trace::TRACEPARENT.clone(), value);
        }
        let call = async {
            match &self.kind {
                Kind::InProcess(router) => {
                    match router.clone().oneshot(as_if_sent(request)).await {
                        Ok(response) => Ok(response),
                        Err(never) => match never {},
                    }
                }
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
        };
        match tokio::time::timeout(timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Timeout {
                service: self.service.to_string(),
                timeout,
            }),
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

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// A JSON client over a [`Transport`]: the base of every service's typed client.
#[derive(Clone, Debug)]
pub struct JsonClient {
    transport: Transport,
}

impl JsonClient {
    /// A client over `transport`.
    pub fn new(transport: Transport) -> Self {
        Self { transport }
    }

    /// The transport.
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// `GET path`, decoding a JSON answer.
    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        headers: &HeaderMap,
    ) -> Result<T, ClientError> {
        self.call::<(), T>(Method::GET, path, None, headers).await
    }

    /// Sends `body` as JSON with `method` to `path`, decoding a JSON answer (`()` accepts an
    /// empty one).
    pub async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        headers: &HeaderMap,
    ) -> Result<T, ClientError> {
        let mut builder = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            builder = builder.header(name, value);
        }
        builder = builder.header(header::ACCEPT, HeaderValue::from_static("application/json"));
        let body = match body {
            Some(body) => {
                builder = builder.header(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                Body::from(
                    serde_json::to_vec(body)
                        .map_err(|err| ClientError::InvalidRequest(err.to_string()))?,
                )
            }
            None => Body::empty(),
        };
        let request = builder
            .body(body)
            .map_err(|err| ClientError::InvalidRequest(err.to_string()))?;
        let response = self.transport.send(request).await?;
        let status = response.status();
        let bytes = http_body_util::Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|err| ClientError::Decode {
                service: self.transport.service().to_owned(),
                message: err.to_string(),
            })?
            .to_bytes();
        if !status.is_success() {
            return Err(ClientError::Status {
                service: self.transport.service().to_owned(),
                status,
                problem: serde_json::from_slice(&bytes).ok().map(Box::new),
            });
        }
        let bytes = if bytes.is_empty() {
            &b"null"[..]
        } else {
            &bytes[..]
        };
        serde_json::from_slice(bytes).map_err(|err| ClientError::Decode {
            service: self.transport.service().to_owned(),
            message: err.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;

    fn router() -> Router {
        Router::new()
            .route(
                "/hello",
                get(|| async { axum::Json(serde_json::json!({"hi": 1})) }),
            )
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            )
    }

    #[tokio::test]
    async fn same_answers_in_process_and_over_http() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router()).await });
        let transports = [
            Transport::in_process("t", router(), Duration::from_secs(1)),
            Transport::http("t", &format!("http://{addr}"), Duration::from_secs(1)).unwrap(),
        ];
        for transport in transports {
            let client = JsonClient::new(transport.clone());
            let value: serde_json::Value = client.get("/hello", &HeaderMap::new()).await.unwrap();
            assert_eq!(value["hi"], 1, "{transport:?}");
            let err = client
                .get::<serde_json::Value>("/missing", &HeaderMap::new())
                .await
                .unwrap_err();
            assert_eq!(err.status(), Some(StatusCode::NOT_FOUND));
        }
    }

    #[tokio::test]
    async fn a_slow_service_times_out() {
        let transport = Transport::in_process("t", router(), Duration::from_millis(50));
        let err = JsonClient::new(transport)
            .get::<String>("/slow", &HeaderMap::new())
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Timeout { .. }));
        assert!(err.is_retryable());
    }

    #[tokio::test]
    async fn an_unreachable_service_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let transport =
            Transport::http("t", &format!("http://{addr}"), Duration::from_secs(1)).unwrap();
        let err = JsonClient::new(transport)
            .get::<String>("/hello", &HeaderMap::new())
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
    }
}
