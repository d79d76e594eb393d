//! A bulkhead per dependency: a cap on calls in flight to it, with a short, bounded wait
//! for a free slot, so one slow dependency cannot take every task and connection of the
//! caller with it.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{BoxError, Layer, Service, ServiceExt};

use crate::ConfigError;

/// The call was refused because the dependency's slots stayed taken for the whole queue
/// wait (or the queue itself was full).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bulkhead for dependency {dependency} is full")]
pub struct BulkheadFull {
    /// The dependency the bulkhead guards, as named when it was built.
    pub dependency: Arc<str>,
}

struct Shared {
    dependency: Arc<str>,
    semaphore: Arc<Semaphore>,
    queue_timeout: Duration,
    max_queued: usize,
    queued: AtomicUsize,
    rejected: metrics::Counter,
    in_flight: metrics::Gauge,
}

impl Shared {
    fn full(&self) -> BoxError {
        self.rejected.increment(1);
        BulkheadFull {
            dependency: Arc::clone(&self.dependency),
        }
        .into()
    }

    async fn acquire(self: &Arc<Self>) -> Result<InFlight, BoxError> {
        let permit = match Arc::clone(&self.semaphore).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let Some(_place) = Queued::join(self) else {
                    return Err(self.full());
                };
                let wait = Arc::clone(&self.semaphore).acquire_owned();
                match tokio::time::timeout(self.queue_timeout, wait).await {
                    Ok(Ok(permit)) => permit,
                    // Timed out, or the semaphore was closed (it never is).
                    _ => return Err(self.full()),
                }
            }
        };
        self.in_flight.increment(1.0);
        Ok(InFlight {
            _permit: permit,
            gauge: self.in_flight.clone(),
        })
    }
}

/// A place in the queue, given up however the wait ends (including cancellation).
struct Queued<'a>(&'a Shared);

impl<'a> Queued<'a> {
    fn join(shared: &'a Shared) -> Option<Self> {
        let before = shared.queued.fetch_add(1, Ordering::AcqRel);
        let place = Self(shared);
        (before < shared.max_queued).then_some(place)
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A slot held for the whole call.
struct InFlight {
    _permit: OwnedSemaphorePermit,
    gauge: metrics::Gauge,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.gauge.decrement(1.0);
    }
}

/// Builds [`Bulkhead`]s sharing one set of slots: build one layer per dependency.
#[derive(Clone)]
pub struct BulkheadLayer {
    shared: Arc<Shared>,
}

impl fmt::Debug for BulkheadLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BulkheadLayer")
            .field("dependency", &self.shared.dependency)
            .finish()
    }
}

impl BulkheadLayer {
    /// At most `max_concurrent` (≥ 1) calls to `dependency` in flight; at most `max_queued`
    /// more wait, each no longer than `queue_timeout` (zero: refuse at once), before failing
    /// with [`BulkheadFull`]. `dependency` labels `tideway_bulkhead_rejected_total` and the
    /// `tideway_bulkhead_in_flight_requests` gauge.
    pub fn new(
        dependency: impl Into<Arc<str>>,
        max_concurrent: usize,
        max_queued: usize,
        queue_timeout: Duration,
    ) -> Result<Self, ConfigError> {
        if max_concurrent == 0 {
            return Err(ConfigError::new(
                "bulkhead",
                "max_concurrent",
                "must be at least 1",
            ));
        }
        if max_concurrent > Semaphore::MAX_PERMITS {
            return Err(ConfigError::new(
                "bulkhead",
                "max_concurrent",
                "is too large",
            ));
        }
        let dependency = dependency.into();
        let labels = [("dependency", dependency.to_string())];
        Ok(Self {
            shared: Arc::new(Shared {
                semaphore: Arc::new(Semaphore::new(max_concurrent)),
                queue_timeout,
                max_queued,
                queued: AtomicUsize::new(0),
                rejected: metrics::counter!("tideway_bulkhead_rejected_total", &labels),
                in_flight: metrics::gauge!("tideway_bulkhead_in_flight_requests", &labels),
                dependency,
            }),
        })
    }
}

impl<S> Layer<S> for BulkheadLayer {
    type Service = Bulkhead<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Bulkhead {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// Caps calls in flight to one dependency. See [`BulkheadLayer`].
///
/// Always ready: the wait for a slot and for the inner service happens in the response
/// future, so a full bulkhead fails the calls that wait too long rather than stalling (or,
/// through an error from `poll_ready`, poisoning) a buffer or router in front of it.
#[derive(Clone)]
pub struct Bulkhead<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: fmt::Debug> fmt::Debug for Bulkhead<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bulkhead")
            .field("inner", &self.inner)
            .field("dependency", &self.shared.dependency)
            .finish()
    }
}

/// The response future of [`Bulkhead`]. Boxed because it awaits three things in turn (a
/// slot under a timeout, the inner service's readiness, its response) while holding the
/// slot; a hand-written state machine for that would be long and add nothing.
pub type BulkheadFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

impl<S, Req> Service<Req> for Bulkhead<S>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    Req: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BulkheadFuture<S::Response>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let shared = Arc::clone(&self.shared);
        let inner = self.inner.clone();
        Box::pin(async move {
            let _slot = shared.acquire().await?;
            inner.oneshot(req).await.map_err(Into::into)
        })
    }
}

#[cfg(test)]
mod tests;
