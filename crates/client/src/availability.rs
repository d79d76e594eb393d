//! Whether a service can take work now, as its caller last learnt it — read without I/O, so
//! a hot path can refuse up front what would otherwise only fail later (a checkout whose
//! stock cannot be reserved, say).
//!
//! An [`Availability`] reads one of two sources:
//!
//! * a **view** asked at every read: a balancer's replica states, which its own health
//!   checks keep current (`tideway-balance`'s `Balancers::availability`);
//! * a **probe** polled in the background by [`Availability::poller`] on a task its owner
//!   tracks: a check of the service's own readiness in this process
//!   ([`Availability::polled`]), or a `GET /health/ready` at its one address
//!   ([`Availability::probe_url`]). Neither goes through a [`Transport`](crate::Transport),
//!   so a probe makes no trace, span or request metric of its own. It counts as down after
//!   [`FAILURES_TO_DOWN`] failed probes in a row, and as up again after one that passes; it
//!   starts up, like a replica that registered once ready.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::Duration,
};

use http::{Request, Uri};

use crate::ClientError;

/// How many probes in a row must fail before a probed service counts as down: one slow
/// answer under load is not an outage.
pub const FAILURES_TO_DOWN: u32 = 2;

type View = Arc<dyn Fn() -> bool + Send + Sync>;
type Check =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

#[derive(Clone)]
enum Source {
    Always,
    View(View),
    Probe(Arc<Probe>),
}

/// A probed service's check and last known state.
struct Probe {
    service: Arc<str>,
    check: Check,
    every: Duration,
    timeout: Duration,
    up: AtomicBool,
    failures: AtomicU32,
}

impl Probe {
    /// Runs the check once under the timeout.
    async fn check(&self) -> Result<(), String> {
        match tokio::time::timeout(self.timeout, (self.check)()).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }

    /// Records one probe's outcome, logging a change of state.
    fn record(&self, outcome: Result<(), String>) {
        let service = &*self.service;
        match outcome {
            Ok(()) => {
                self.failures.store(0, Ordering::Relaxed);
                if !self.up.swap(true, Ordering::Relaxed) {
                    tracing::info!(service, "A dependency is ready again.");
                }
            }
            Err(error) => {
                let failures = self
                    .failures
                    .fetch_add(1, Ordering::Relaxed)
                    .saturating_add(1);
                if failures >= FAILURES_TO_DOWN && self.up.swap(false, Ordering::Relaxed) {
                    tracing::warn!(service, failures, %error, "A dependency is not ready.");
                }
            }
        }
    }
}

/// Whether one service can take work now; cheap to clone and to read.
#[derive(Clone)]
pub struct Availability {
    service: Arc<str>,
    source: Source,
}

impl std::fmt::Debug for Availability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = match &self.source {
            Source::Always => "always",
            Source::View(_) => "view",
            Source::Probe(_) => "probe",
        };
        f.debug_struct("Availability")
            .field("service", &self.service)
            .field("source", &source)
            .field("available", &self.is_available())
            .finish()
    }
}

impl Availability {
    /// A service taken to be always available (nothing to ask).
    pub fn always(service: &str) -> Self {
        Self {
            service: service.into(),
            source: Source::Always,
        }
    }

    /// Asks `view` at every read: it must answer at once, from state kept elsewhere.
    pub fn from_view(service: &str, view: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        Self {
            service: service.into(),
            source: Source::View(Arc::new(view)),
        }
    }

    /// Runs `check` (`Ok` when the service is ready: its own readiness checks, say) every
    /// `every`, each run under `timeout`, once [`poller`](Self::poller) runs. Available
    /// until probes say otherwise.
    pub fn polled<F, Fut>(service: &str, every: Duration, timeout: Duration, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let check: Check = Arc::new(move || Box::pin(check()));
        Self {
            service: service.into(),
            source: Source::Probe(Arc::new(Probe {
                service: service.into(),
                check,
                every,
                timeout,
                up: AtomicBool::new(true),
                failures: AtomicU32::new(0),
            })),
        }
    }

    /// Probes `GET <base_url>/health/ready` (a 2xx passes) every `every`, each under
    /// `timeout`, on a pooled connection of its own; like [`polled`](Self::polled)
    /// otherwise. An unusable `base_url` is an error.
    pub fn probe_url(
        service: &str,
        base_url: &str,
        every: Duration,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let ready = format!("{}/health/ready", base_url.trim_end_matches('/'));
        let uri: Uri = ready
            .parse()
            .map_err(|err| ClientError::InvalidRequest(format!("base URL {base_url:?}: {err}")))?;
        if uri.scheme() != Some(&http::uri::Scheme::HTTP) || uri.authority().is_none() {
            return Err(ClientError::InvalidRequest(format!(
                "base URL {base_url:?}: only http://host:port is supported inside the system"
            )));
        }
        let pool = crate::pooled::<http_body_util::Empty<bytes::Bytes>>();
        Ok(Self::polled(service, every, timeout, move || {
            let pool = pool.clone();
            let uri = uri.clone();
            async move {
                let request = Request::get(uri)
                    .body(http_body_util::Empty::new())
                    .map_err(|err| err.to_string())?;
                match pool.request(request).await {
                    Ok(response) if response.status().is_success() => Ok(()),
                    Ok(response) => Err(format!("answered {}", response.status())),
                    Err(err) => Err(crate::error_chain(&err)),
                }
            }
        }))
    }

    /// The service.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Whether the service can take work, as last learnt: no I/O.
    pub fn is_available(&self) -> bool {
        match &self.source {
            Source::Always => true,
            Source::View(view) => view(),
            Source::Probe(probe) => probe.up.load(Ordering::Relaxed),
        }
    }

    /// For a probe, the loop that keeps it current until `stop` completes — the owner runs
    /// it (once) on a task it tracks; the first probe goes out at once. `None` for the
    /// other sources, which need no task.
    pub fn poller(
        &self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> Option<impl Future<Output = ()> + Send + 'static> {
        let Source::Probe(probe) = &self.source else {
            return None;
        };
        let probe = Arc::clone(probe);
        Some(async move {
            tokio::pin!(stop);
            let mut ticks = tokio::time::interval(probe.every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = &mut stop => break,
                    _ = ticks.tick() => {}
                }
                tokio::select! {
                    () = &mut stop => break,
                    outcome = probe.check() => probe.record(outcome),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU16;

    use axum::{Router, extract::State, http::StatusCode, routing::get};

    use super::*;

    async fn wait_for(what: &str, condition: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(tokio::time::Instant::now() < deadline, "{what} within 10 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A server on loopback whose `/health/ready` answers the status the test sets, and
    /// counts the probes: its base URL.
    async fn server(health: Arc<AtomicU16>, probes: Arc<AtomicU32>) -> String {
        let router = Router::new()
            .route(
                "/health/ready",
                get(
                    |State((health, probes)): State<(Arc<AtomicU16>, Arc<AtomicU32>)>| async move {
                        probes.fetch_add(1, Ordering::SeqCst);
                        StatusCode::from_u16(health.load(Ordering::SeqCst))
                            .unwrap_or(StatusCode::OK)
                    },
                ),
            )
            .with_state((health, probes));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        address
    }

    #[tokio::test]
    async fn a_probe_follows_readiness_and_its_poller_stops() {
        let health = Arc::new(AtomicU16::new(200));
        let probes = Arc::new(AtomicU32::new(0));
        let base = server(Arc::clone(&health), Arc::clone(&probes)).await;
        let availability = Availability::probe_url(
            "inventory",
            &base,
            Duration::from_millis(10),
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(availability.service(), "inventory");
        assert!(availability.is_available(), "up until probed");

        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let poller = availability
            .poller(async move {
                let _ = stop_rx.await;
            })
            .expect("a probe polls");
        let task = tokio::spawn(poller);
        wait_for("a first probe", || probes.load(Ordering::SeqCst) >= 1).await;

        health.store(503, Ordering::SeqCst);
        wait_for("down after failed probes", || !availability.is_available()).await;
        health.store(200, Ordering::SeqCst);
        wait_for("up after a probe passes", || availability.is_available()).await;

        stop_tx.send(()).unwrap();
        task.await.unwrap();
        let seen = probes.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            probes.load(Ordering::SeqCst),
            seen,
            "no probe after the stop"
        );
    }

    #[tokio::test]
    async fn a_dead_address_or_a_slow_check_is_down() {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", socket.local_addr().unwrap());
        drop(socket);
        let dead = Availability::probe_url(
            "inventory",
            &base,
            Duration::from_millis(10),
            Duration::from_secs(1),
        )
        .unwrap();
        let slow = Availability::polled(
            "inventory",
            Duration::from_millis(10),
            Duration::from_millis(20),
            || async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok(())
            },
        );
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        for availability in [&dead, &slow] {
            let mut stop = stop_rx.clone();
            let poller = availability
                .poller(async move {
                    let _ = stop.wait_for(|stop| *stop).await;
                })
                .unwrap();
            tokio::spawn(poller);
        }
        wait_for("a dead address down", || !dead.is_available()).await;
        wait_for("a check past its timeout down", || !slow.is_available()).await;
        stop_tx.send(true).unwrap();

        assert!(
            Availability::probe_url(
                "x",
                "https://a:1",
                Duration::from_secs(1),
                Duration::from_secs(1)
            )
            .is_err()
        );
        assert!(
            Availability::probe_url(
                "x",
                "not a url",
                Duration::from_secs(1),
                Duration::from_secs(1)
            )
            .is_err()
        );
    }

    #[test]
    fn one_failure_is_not_down_and_a_pass_resets_the_count() {
        let availability = Availability::polled(
            "inventory",
            Duration::from_secs(1),
            Duration::from_secs(1),
            || async { Ok(()) },
        );
        let Source::Probe(probe) = &availability.source else {
            panic!("a probe");
        };
        probe.record(Err("slow".into()));
        assert!(availability.is_available());
        probe.record(Ok(()));
        probe.record(Err("slow".into()));
        assert!(availability.is_available(), "the pass reset the count");
        probe.record(Err("slow".into()));
        assert!(!availability.is_available());
        probe.record(Ok(()));
        assert!(availability.is_available());
    }

    #[test]
    fn views_are_asked_at_every_read_and_need_no_poller() {
        let up = Arc::new(AtomicBool::new(true));
        let view = {
            let up = Arc::clone(&up);
            Availability::from_view("inventory", move || up.load(Ordering::SeqCst))
        };
        assert!(view.is_available());
        up.store(false, Ordering::SeqCst);
        assert!(!view.is_available());
        assert!(view.poller(std::future::ready(())).is_none());
        assert!(Availability::always("x").is_available());
        assert!(
            Availability::always("x")
                .poller(std::future::ready(()))
                .is_none()
        );
    }
}
