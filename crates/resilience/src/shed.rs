//! Load shedding for a server: when the wrapped service is not ready or a cap on requests
//! in flight is reached, answer `503 Service Unavailable` with `Retry-After` at once,
//! before any work starts, instead of queueing without bound.
//!
//! Unlike tower's `load_shed`, which fails with an `Overloaded` error that axum would need a
//! `HandleErrorLayer` to turn into a response, this layer answers the 503 itself and keeps
//! the inner error type, so it wraps an axum `Router` (error `Infallible`) directly.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use http::{HeaderValue, Request, Response, StatusCode, header::RETRY_AFTER};
use pin_project_lite::pin_project;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Layer, Service};

use crate::ConfigError;

/// `Retry-After` in whole seconds, rounded up and at least 1.
pub(crate) fn retry_after_seconds(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

struct Shared {
    name: Arc<str>,
    slots: Arc<Semaphore>,
    retry_after: HeaderValue,
    shed: metrics::Counter,
}

/// Builds [`LoadShed`]s sharing one cap on requests in flight: build one per server.
#[derive(Clone)]
pub struct LoadShedLayer {
    shared: Arc<Shared>,
}

impl fmt::Debug for LoadShedLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadShedLayer")
            .field("name", &self.shared.name)
            .finish()
    }
}

impl LoadShedLayer {
    /// Sheds requests to `name` (the label of `tideway_requests_shed_total`; a service, not a
    /// path) beyond `max_in_flight` (≥ 1) at once, asking clients to come back after
    /// `retry_after` (sent in whole seconds, at least 1).
    pub fn new(
        name: impl Into<Arc<str>>,
        max_in_flight: usize,
        retry_after: Duration,
    ) -> Result<Self, ConfigError> {
        if max_in_flight == 0 || max_in_flight > Semaphore::MAX_PERMITS {
            return Err(ConfigError::new(
                "load shedding",
                "max_in_flight",
                "must be at least 1 and fit a semaphore",
            ));
        }
        let name = name.into();
        let shed = metrics::counter!("tideway_requests_shed_total", "service" => name.to_string());
        Ok(Self {
            shared: Arc::new(Shared {
                name,
                slots: Arc::new(Semaphore::new(max_in_flight)),
                retry_after: HeaderValue::from(retry_after_seconds(retry_after)),
                shed,
            }),
        })
    }
}

impl<S> Layer<S> for LoadShedLayer {
    type Service = LoadShed<S>;
    fn layer(&self, inner: S) -> Self::Service {
        LoadShed {
            inner,
            shared: Arc::clone(&self.shared),
            inner_ready: false,
        }
    }
}

/// Answers 503 when its inner service is saturated. See [`LoadShedLayer`].
///
/// Always ready itself; it polls the inner service in `poll_ready` and sheds the next call
/// if the inner one was not ready.
pub struct LoadShed<S> {
    inner: S,
    shared: Arc<Shared>,
    inner_ready: bool,
}

impl<S: Clone> Clone for LoadShed<S> {
    fn clone(&self) -> Self {
        // A clone has not polled its inner service yet.
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
            inner_ready: false,
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for LoadShed<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadShed")
            .field("inner", &self.inner)
            .field("name", &self.shared.name)
            .finish()
    }
}

impl<S, B, ResBody> Service<Request<B>> for LoadShed<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = LoadShedFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner_ready = match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => true,
            Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
            Poll::Pending => false,
        };
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let permit = match Arc::clone(&self.shared.slots).try_acquire_owned() {
            Ok(permit) if self.inner_ready => permit,
            _ => {
                self.shared.shed.increment(1);
                let mut response = Response::new(ResBody::default());
                *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, self.shared.retry_after.clone());
                return LoadShedFuture {
                    kind: Kind::Shed {
                        response: Some(response),
                    },
                };
            }
        };
        self.inner_ready = false;
        LoadShedFuture {
            kind: Kind::Called {
                inner: self.inner.call(req),
                _slot: permit,
            },
        }
    }
}

pin_project! {
    /// The response future of [`LoadShed`]: the 503 at once, or the inner call holding its
    /// slot until the response head is ready.
    pub struct LoadShedFuture<F, B> {
        #[pin]
        kind: Kind<F, B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B> {
        Shed { response: Option<Response<B>> },
        Called {
            #[pin]
            inner: F,
            _slot: OwnedSemaphorePermit,
        },
    }
}

impl<F, B, E> Future for LoadShedFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Shed { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                None => panic!("LoadShedFuture polled after completion"),
            },
            KindProj::Called { inner, .. } => inner.poll(cx),
        }
    }
}

#[cfg(test)]
mod tests;
