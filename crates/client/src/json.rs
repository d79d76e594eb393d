//! A JSON client over a [`Transport`]: the base of every service's typed client.

use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method, Request, header};
use http_body_util::BodyExt;
use serde::{Serialize, de::DeserializeOwned};

use crate::{
    error::ClientError,
    transport::{Body, Transport},
};

/// The largest response body a typed client reads.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

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
        // One deadline for the whole call: a service that sends its head and then stalls
        // in the body must not hang the caller.
        let timeout = self.transport.timeout();
        let (status, bytes) = tokio::time::timeout(timeout, self.exchange(request))
            .await
            .map_err(|_| self.transport.timed_out(timeout))??;
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

    /// Sends `request` and reads the whole answer.
    async fn exchange(
        &self,
        request: Request<Body>,
    ) -> Result<(http::StatusCode, bytes::Bytes), ClientError> {
        let response = self.transport.send_unbounded(request).await?;
        let status = response.status();
        let bytes = http_body_util::Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|err| ClientError::Decode {
                service: self.transport.service().to_owned(),
                message: err.to_string(),
            })?
            .to_bytes();
        Ok((status, bytes))
    }

    /// The deadline of every call.
    pub fn timeout(&self) -> Duration {
        self.transport.timeout()
    }
}
