//! A deadline for the whole call: [`Deadline`] bounds the response future of any service;
//! [`HttpDeadline`] also carries the same deadline into the response body, so a peer that
//! sends its headers and then stalls the body cannot hold the caller past it.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};
use tower::{BoxError, Layer, Service};

use crate::ConfigError;

/// The call (or its response body) did not finish within the deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("deadline of {0:?} exceeded")]
pub struct DeadlineExceeded(pub Duration);

fn check(deadline: Duration) -> Result<Duration, ConfigError> {
    if deadline.is_zero() {
        Err(ConfigError::new(
            "deadline",
            "deadline",
            "must be greater than zero",
        ))
    } else {
        Ok(deadline)
    }
}

/// Builds [`Deadline`]: a plain timeout on the response future, for any request type.
#[derive(Debug, Clone, Copy)]
pub struct DeadlineLayer {
    deadline: Duration,
}

impl DeadlineLayer {
    /// A layer whose calls fail with [`DeadlineExceeded`] after `deadline` (must be > 0).
    pub fn new(deadline: Duration) -> Result<Self, ConfigError> {
        Ok(Self {
            deadline: check(deadline)?,
        })
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Deadline {
            inner,
            deadline: self.deadline,
        }
    }
}

/// Fails a call with [`DeadlineExceeded`] once its deadline has passed. See [`DeadlineLayer`].
#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
    deadline: Duration,
}

impl<S, Req> Service<Req> for Deadline<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = DeadlineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        DeadlineFuture {
            inner: self.inner.call(req),
            sleep: sleep_until(Instant::now() + self.deadline),
            deadline: self.deadline,
        }
    }
}

pin_project! {
    /// The response future of [`Deadline`].
    #[derive(Debug)]
    pub struct DeadlineFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: Sleep,
        deadline: Duration,
    }
}

impl<F, T, E> Future for DeadlineFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(result) = this.inner.poll(cx) {
            return Poll::Ready(result.map_err(Into::into));
        }
        ready!(this.sleep.poll(cx));
        Poll::Ready(Err(DeadlineExceeded(*this.deadline).into()))
    }
}

/// Builds [`HttpDeadline`]: one deadline for the response head and the whole body.
#[derive(Debug, Clone, Copy)]
pub struct HttpDeadlineLayer {
    deadline: Duration,
}

impl HttpDeadlineLayer {
    /// A layer whose calls, bodies included, fail with [`DeadlineExceeded`] after `deadline`
    /// (must be > 0).
    pub fn new(deadline: Duration) -> Result<Self, ConfigError> {
        Ok(Self {
            deadline: check(deadline)?,
        })
    }
}

impl<S> Layer<S> for HttpDeadlineLayer {
    type Service = HttpDeadline<S>;
    fn layer(&self, inner: S) -> Self::Service {
        HttpDeadline {
            inner,
            deadline: self.deadline,
        }
    }
}

/// Bounds an HTTP call and its response body by one deadline. See [`HttpDeadlineLayer`].
#[derive(Debug, Clone)]
pub struct HttpDeadline<S> {
    inner: S,
    deadline: Duration,
}

impl<S, Req, ResBody> Service<Req> for HttpDeadline<S>
where
    S: Service<Req, Response = http::Response<ResBody>>,
    S::Error: Into<BoxError>,
    ResBody: Body,
    ResBody::Error: Into<BoxError>,
{
    type Response = http::Response<DeadlineBody<ResBody>>;
    type Error = BoxError;
    type Future = HttpDeadlineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        HttpDeadlineFuture {
            inner: self.inner.call(req),
            // Boxed so the same timer can move into the body once the head arrives.
            sleep: Some(Box::pin(sleep_until(Instant::now() + self.deadline))),
            deadline: self.deadline,
        }
    }
}

pin_project! {
    /// The response future of [`HttpDeadline`].
    #[derive(Debug)]
    pub struct HttpDeadlineFuture<F> {
        #[pin]
        inner: F,
        sleep: Option<Pin<Box<Sleep>>>,
        deadline: Duration,
    }
}

impl<F, B, E> Future for HttpDeadlineFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<http::Response<DeadlineBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(sleep) = this.sleep.as_mut() else {
            panic!("HttpDeadlineFuture polled after completion");
        };
        if let Poll::Ready(result) = this.inner.poll(cx) {
            let response = result.map_err(Into::into)?;
            let sleep = this.sleep.take();
            let deadline = *this.deadline;
            return Poll::Ready(Ok(response.map(|inner| DeadlineBody {
                inner,
                sleep,
                deadline,
            })));
        }
        ready!(sleep.as_mut().poll(cx));
        this.sleep.take();
        Poll::Ready(Err(DeadlineExceeded(*this.deadline).into()))
    }
}

pin_project! {
    /// A response body that fails with [`DeadlineExceeded`] if it is not finished by the
    /// deadline its call started with.
    #[derive(Debug)]
    pub struct DeadlineBody<B> {
        #[pin]
        inner: B,
        sleep: Option<Pin<Box<Sleep>>>,
        deadline: Duration,
    }
}

impl<B> Body for DeadlineBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        // Data already waiting is delivered even at the deadline; only a stall fails.
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let Some(sleep) = this.sleep.as_mut() else {
            return Poll::Pending;
        };
        ready!(sleep.as_mut().poll(cx));
        this.sleep.take();
        Poll::Ready(Some(Err(DeadlineExceeded(*this.deadline).into())))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests;
