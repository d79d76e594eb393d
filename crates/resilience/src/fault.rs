//! Fault injection for HTTP services: added latency, an error status, or an aborted call
//! (a connection-style error), each for a share of requests. Off unless configured, and
//! switchable at run time through a [`FaultHandle`] (an `arc-swap` cell read once per
//! request), so a chaos run can turn faults on and off while the service serves.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use arc_swap::ArcSwap;
use http::{Request, Response, StatusCode};
use pin_project_lite::pin_project;
use rand::Rng;
use tokio::time::Sleep;
use tower::{BoxError, Layer, Service};

use crate::{ConfigError, config::check_share};

/// The call was aborted by fault injection, as a reset connection would abort it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("connection aborted by fault injection")]
pub struct FaultAborted;

/// Which faults to inject; the default injects none.
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    /// Share of requests (0 to 1) whose response is delayed by `latency`. Default 0.
    pub latency_share: f64,
    /// The delay added to those requests. Default 0.
    pub latency: Duration,
    /// Share of requests answered with `error_status` instead of being served. Default 0.
    pub error_share: f64,
    /// The status those requests get, 4xx or 5xx. Default 503.
    pub error_status: StatusCode,
    /// Share of requests failed with [`FaultAborted`] instead of being served. Default 0.
    pub abort_share: f64,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            latency_share: 0.0,
            latency: Duration::ZERO,
            error_share: 0.0,
            error_status: StatusCode::SERVICE_UNAVAILABLE,
            abort_share: 0.0,
        }
    }
}

impl Faults {
    fn validate(self) -> Result<Self, ConfigError> {
        check_share("fault injection", "latency_share", self.latency_share)?;
        check_share("fault injection", "error_share", self.error_share)?;
        check_share("fault injection", "abort_share", self.abort_share)?;
        if !(self.error_status.is_client_error() || self.error_status.is_server_error()) {
            return Err(ConfigError::new(
                "fault injection",
                "error_status",
                "must be a 4xx or 5xx status",
            ));
        }
        Ok(self)
    }

    fn is_off(&self) -> bool {
        (self.latency_share == 0.0 || self.latency.is_zero())
            && self.error_share == 0.0
            && self.abort_share == 0.0
    }
}

/// The run-time switch of one or more [`FaultInjection`] services: clone it into whatever
/// changes the setting (an admin endpoint); every request reads the latest one.
#[derive(Debug, Clone, Default)]
pub struct FaultHandle {
    faults: Arc<ArcSwap<Faults>>,
}

impl FaultHandle {
    /// A handle with every fault off.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the faults; requests from now on see the new setting. Refuses (and keeps the
    /// old setting) if a share is outside 0 to 1 or the status is not an error.
    pub fn set(&self, faults: Faults) -> Result<(), ConfigError> {
        self.faults.store(Arc::new(faults.validate()?));
        Ok(())
    }

    /// Turns every fault off.
    pub fn clear(&self) {
        self.faults.store(Arc::new(Faults::default()));
    }

    /// The faults in force now.
    pub fn current(&self) -> Arc<Faults> {
        self.faults.load_full()
    }
}

#[derive(Debug)]
struct Counters {
    latency: metrics::Counter,
    error: metrics::Counter,
    abort: metrics::Counter,
}

/// Builds [`FaultInjection`]s controlled by one [`FaultHandle`].
#[derive(Debug, Clone)]
pub struct FaultInjectionLayer {
    handle: FaultHandle,
    counters: Arc<Counters>,
}

impl FaultInjectionLayer {
    /// A layer injecting what `handle` says (nothing until it is set). Injected faults are
    /// counted in `tideway_faults_injected_total` by `kind` (latency, error, abort).
    pub fn new(handle: FaultHandle) -> Self {
        let counter =
            |kind: &'static str| metrics::counter!("tideway_faults_injected_total", "kind" => kind);
        Self {
            handle,
            counters: Arc::new(Counters {
                latency: counter("latency"),
                error: counter("error"),
                abort: counter("abort"),
            }),
        }
    }

    /// The switch this layer reads.
    pub fn handle(&self) -> &FaultHandle {
        &self.handle
    }
}

impl<S> Layer<S> for FaultInjectionLayer {
    type Service = FaultInjection<S>;
    fn layer(&self, inner: S) -> Self::Service {
        FaultInjection {
            inner,
            handle: self.handle.clone(),
            counters: Arc::clone(&self.counters),
        }
    }
}

/// Injects the faults its [`FaultHandle`] holds. See [`FaultInjectionLayer`].
#[derive(Clone)]
pub struct FaultInjection<S> {
    inner: S,
    handle: FaultHandle,
    counters: Arc<Counters>,
}

impl<S: fmt::Debug> fmt::Debug for FaultInjection<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultInjection")
            .field("inner", &self.inner)
            .field("faults", &self.handle.current())
            .finish()
    }
}

impl<S, B, ResBody> Service<Request<B>> for FaultInjection<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = BoxError;
    type Future = FaultFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let faults = self.handle.faults.load();
        if faults.is_off() {
            return FaultFuture {
                delay: None,
                kind: Kind::Inner {
                    inner: self.inner.call(req),
                },
            };
        }
        let mut rng = rand::thread_rng();
        let mut roll = |share: f64| share > 0.0 && rng.gen_bool(share);
        let delay = (!faults.latency.is_zero() && roll(faults.latency_share)).then(|| {
            self.counters.latency.increment(1);
            tokio::time::sleep(faults.latency)
        });
        let kind = if roll(faults.abort_share) {
            self.counters.abort.increment(1);
            Kind::Abort
        } else if roll(faults.error_share) {
            self.counters.error.increment(1);
            Kind::Status {
                status: faults.error_status,
            }
        } else {
            Kind::Inner {
                inner: self.inner.call(req),
            }
        };
        FaultFuture { delay, kind }
    }
}

pin_project! {
    /// The response future of [`FaultInjection`]: an optional delay, then the inner call, an
    /// injected status or an abort. The inner call is made at once but its future is polled
    /// only after the delay, so for lazy services (async handlers) no work starts before it.
    pub struct FaultFuture<F> {
        #[pin]
        delay: Option<Sleep>,
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Inner { #[pin] inner: F },
        Status { status: StatusCode },
        Abort,
    }
}

impl<F, B, E> Future for FaultFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    B: Default,
{
    type Output = Result<Response<B>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(delay) = this.delay.as_mut().as_pin_mut() {
            std::task::ready!(delay.poll(cx));
            this.delay.set(None);
        }
        match this.kind.project() {
            KindProj::Inner { inner } => inner.poll(cx).map_err(Into::into),
            KindProj::Status { status } => {
                let mut response = Response::new(B::default());
                *response.status_mut() = *status;
                Poll::Ready(Ok(response))
            }
            KindProj::Abort => Poll::Ready(Err(FaultAborted.into())),
        }
    }
}

#[cfg(test)]
mod tests;
