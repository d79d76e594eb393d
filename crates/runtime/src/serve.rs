//! Serving a router on a socket with graceful shutdown on SIGINT and SIGTERM, and the
//! limits every server keeps ([`ServeOptions`]): a header-read timeout that is also the
//! idle timeout, a request timeout, and a connection cap.

use std::{sync::Arc, time::Duration};

use axum::{Router, extract::ConnectInfo};
use futures_util::future::Either;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// How long in-flight requests may run once shutdown begins.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// A token cancelled on the first SIGINT (Ctrl-C) or SIGTERM.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "cannot listen for SIGTERM");
                    std::future::pending::<()>().await;
                }
            }
        };
        #[cfg(not(unix))]
        let terminate = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => tracing::info!("SIGINT received; shutting down"),
            () = terminate => tracing::info!("SIGTERM received; shutting down"),
        }
        trigger.cancel();
    });
    token
}

/// Binds `addr` (`127.0.0.1:0` picks a free port), with the address in the error.
pub async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    bind_with(addr, BindOptions::default()).await
}

/// How a listening socket is bound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BindOptions {
    /// `SO_REUSEPORT`: several processes (replicas of one role) listen on one address and
    /// the kernel spreads new connections among them. Off unless asked: without it a second
    /// bind of a taken port fails, which is what a lone server wants to hear.
    pub reuse_port: bool,
}

/// [`bind`] with `options`.
pub async fn bind_with(addr: &str, options: BindOptions) -> std::io::Result<TcpListener> {
    let context =
        |err: std::io::Error| std::io::Error::new(err.kind(), format!("cannot bind {addr}: {err}"));
    if !options.reuse_port {
        return TcpListener::bind(addr).await.map_err(context);
    }
    let mut last = None;
    for resolved in tokio::net::lookup_host(addr).await.map_err(context)? {
        match bind_reusing_port(resolved) {
            Ok(listener) => return Ok(listener),
            Err(err) => last = Some(err),
        }
    }
    Err(context(last.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to bind")
    })))
}

/// A listener on `addr` with `SO_REUSEADDR` and `SO_REUSEPORT` set before the bind.
fn bind_reusing_port(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    #[cfg(unix)]
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// What a server accepts: every limit has a default that holds on a laptop and in a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeOptions {
    /// How long in-flight requests may run once shutdown begins.
    pub grace: Duration,
    /// How long a client may take to send a request's headers. The same clock runs while a
    /// kept-alive connection waits for its next request, so it is the idle timeout too: a
    /// connection that sends nothing (or a byte now and then, a slowloris) is closed after it.
    pub header_read_timeout: Duration,
    /// How long a handler may take to produce its answer's head (408 after it). Streams
    /// (server-sent events) are not cut: the clock stops once the head is sent.
    pub request_timeout: Duration,
    /// The most connections served at once; past it the server stops accepting until one
    /// closes (the kernel's backlog holds the rest), so a flood of sockets cannot exhaust
    /// memory or file descriptors.
    pub max_connections: usize,
    /// The most requests handled at once; past it a request is answered 503 with
    /// `Retry-After` before any work starts (load shedding). `/health/live`,
    /// `/health/ready` and `/metrics` are never shed, so probes and scrapes see the truth.
    pub max_in_flight: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            grace: DEFAULT_GRACE,
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: 4096,
            max_in_flight: 1024,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then stops accepting and
/// lets in-flight requests finish for at most `grace`, with the default limits of
/// [`ServeOptions`]. The metrics recorder's [upkeep](crate::metrics::upkeep) runs meanwhile
/// and stops when serving ends.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    grace: Duration,
) -> std::io::Result<()> {
    let options = ServeOptions {
        grace,
        ..ServeOptions::default()
    };
    serve_with(listener, router, shutdown, options).await
}

/// [`serve`] with the limits of `options`.
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    options: ServeOptions,
) -> std::io::Result<()> {
    serve_tls_with(listener, router, shutdown, options, None).await
}

/// [`serve_with`], over TLS when `tls` is given: each connection's handshake runs in its own
/// task, within the header-read timeout, so a slow or failed handshake holds up nothing else
/// (a failed one is logged at debug and closed).
pub async fn serve_tls_with(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    options: ServeOptions,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> std::io::Result<()> {
    let tasks = TaskTracker::new();
    // Not `shutdown`: requests finishing in the grace period still record.
    let stop_upkeep = CancellationToken::new();
    tasks.spawn(crate::metrics::upkeep(
        crate::metrics::UPKEEP_INTERVAL,
        stop_upkeep.clone(),
    ));
    tasks.close();
    let result = serve_until(listener, router, shutdown, options, tls).await;
    stop_upkeep.cancel();
    tasks.wait().await;
    result
}

/// `router` behind the request timeout and load shedding (health and metrics exempt).
fn admission(router: Router, options: &ServeOptions) -> std::io::Result<Router> {
    let router = router.layer(tower_http::timeout::TimeoutLayer::with_status_code(
        http::StatusCode::REQUEST_TIMEOUT,
        options.request_timeout,
    ));
    let shed = tideway_resilience::LoadShedLayer::new(
        "server",
        options.max_in_flight,
        Duration::from_secs(1),
    )
    .map_err(|err| std::io::Error::new(std::io::ErrorKind::InvalidInput, err.to_string()))?;
    let shed_router = tower::Layer::layer(
        &tower::util::MapResponseLayer::new(problem_for_shed),
        tower::Layer::layer(&shed, router.clone().into_service::<axum::body::Body>()),
    );
    // One fallback service, not routes: an outer route would set a matched path of its own,
    // which the inner router's metrics would see doubled. Both branches are the same kind
    // of future (no boxing on the hot path).
    let select = tower::service_fn(move |request: axum::extract::Request| {
        let exempt = matches!(
            request.uri().path(),
            "/health/live" | "/health/ready" | "/metrics"
        );
        if exempt {
            Either::Left(tower::ServiceExt::oneshot(router.clone(), request))
        } else {
            Either::Right(tower::ServiceExt::oneshot(shed_router.clone(), request))
        }
    });
    Ok(Router::new().fallback_service(select))
}

/// A shed answer is a bare 503 with `Retry-After`: give it the problem body every error has.
fn problem_for_shed(response: axum::response::Response) -> axum::response::Response {
    if response.status() != http::StatusCode::SERVICE_UNAVAILABLE
        || response.headers().contains_key(http::header::CONTENT_TYPE)
    {
        return response;
    }
    let retry_after = response.headers().get(http::header::RETRY_AFTER).cloned();
    let mut problem = axum::response::IntoResponse::into_response(
        crate::Problem::new(http::StatusCode::SERVICE_UNAVAILABLE)
            .with_type("/problems/overloaded")
            .with_detail("the server is at capacity; try again shortly"),
    );
    if let Some(retry_after) = retry_after {
        problem
            .headers_mut()
            .insert(http::header::RETRY_AFTER, retry_after);
    }
    problem
}

async fn serve_until(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    options: ServeOptions,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> std::io::Result<()> {
    let router = admission(router, &options)?;
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .keep_alive(true);
    let connections = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: wait a moment rather than spin.
                    tracing::warn!(error = %err, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
        let service = router
            .clone()
            .layer(axum::Extension(ConnectInfo(peer)))
            .into_service::<hyper::body::Incoming>();
        let service = TowerToHyperService::new(service);
        let Some(tls) = &tls else {
            let connection = graceful.watch(http1.serve_connection(TokioIo::new(stream), service));
            tokio::spawn(async move {
                if let Err(err) = connection.await {
                    tracing::debug!(error = %err, %peer, "connection ended with an error");
                }
                drop(permit);
            });
            continue;
        };
        let (tls, http1, watcher) = (tls.clone(), http1.clone(), graceful.watcher());
        let handshake_timeout = options.header_read_timeout;
        tokio::spawn(async move {
            match tokio::time::timeout(handshake_timeout, tls.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let connection =
                        watcher.watch(http1.serve_connection(TokioIo::new(stream), service));
                    if let Err(err) = connection.await {
                        tracing::debug!(error = %err, %peer, "connection ended with an error");
                    }
                }
                Ok(Err(err)) => tracing::debug!(error = %err, %peer, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => Ok(()),
        () = tokio::time::sleep(options.grace) => {
            tracing::warn!(grace_secs = options.grace.as_secs(), "in-flight requests outlived the grace period; closing them");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Waits until `count()` is `expected`, failing after a second.
    async fn until(expected: usize, count: impl Fn() -> usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        while count() != expected {
            assert!(
                std::time::Instant::now() < deadline,
                "{} tasks alive, not {expected}",
                count()
            );
            tokio::task::yield_now().await;
        }
    }

    /// The upkeep is the server's own task: none is left once serving ends.
    #[tokio::test]
    async fn no_task_outlives_serving() {
        let metrics = tokio::runtime::Handle::current().metrics();
        let alive = || metrics.num_alive_tasks();
        let before = alive();
        let listener = bind("127.0.0.1:0").await.unwrap();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            Router::new(),
            shutdown.clone(),
            Duration::from_secs(1),
        ));
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        while alive() < before + 2 {
            assert!(std::time::Instant::now() < deadline, "the server started");
            tokio::task::yield_now().await;
        }
        shutdown.cancel();
        server.await.unwrap().unwrap();
        until(before, alive).await;
    }

    /// Two listeners share a port only when both ask for it, and both then accept.
    #[tokio::test]
    async fn reuse_port_lets_two_listeners_share_an_address() {
        let reuse = BindOptions { reuse_port: true };
        let first = bind_with("127.0.0.1:0", reuse).await.unwrap();
        let addr = first.local_addr().unwrap().to_string();
        let refused = bind(&addr).await.unwrap_err();
        assert!(refused.to_string().contains(&addr), "{refused}");
        let second = bind_with(&addr, reuse).await.unwrap();
        assert_eq!(second.local_addr().unwrap(), first.local_addr().unwrap());
        // The kernel hands each new connection to one of them: both end up accepting.
        let (mut seen_first, mut seen_second) = (false, false);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !(seen_first && seen_second) {
            assert!(
                std::time::Instant::now() < deadline,
                "both listeners accepted"
            );
            let _client = tokio::net::TcpStream::connect(&addr).await.unwrap();
            tokio::select! {
                accepted = first.accept() => { accepted.unwrap(); seen_first = true; }
                accepted = second.accept() => { accepted.unwrap(); seen_second = true; }
            }
        }
    }

    #[tokio::test]
    async fn in_flight_requests_finish_after_shutdown_begins() {
        let (entered_tx, entered_rx) = tokio::sync::oneshot::channel::<()>();
        let entered = std::sync::Arc::new(std::sync::Mutex::new(Some(entered_tx)));
        let release = std::sync::Arc::new(tokio::sync::Notify::new());
        let handler_release = release.clone();
        let router = Router::new().route(
            "/slow",
            get(move || {
                let entered = entered.clone();
                let release = handler_release.clone();
                async move {
                    if let Some(tx) = entered.lock().unwrap().take() {
                        let _ = tx.send(());
                    }
                    release.notified().await;
                    "finished"
                }
            }),
        );
        let listener = bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            router,
            shutdown.clone(),
            Duration::from_secs(10),
        ));

        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        entered_rx.await.unwrap();
        // Shutdown begins while the request is in its handler.
        shutdown.cancel();
        tokio::task::yield_now().await;
        assert!(!server.is_finished(), "the server waits for the request");
        release.notify_one();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.ends_with("finished"), "{response}");
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the server stops once the request is done")
            .unwrap()
            .unwrap();
    }

    fn hello() -> Router {
        Router::new().route("/", get(|| async { "hello" })).route(
            "/stuck",
            get(|| async {
                std::future::pending::<()>().await;
                "never"
            }),
        )
    }

    async fn start(options: ServeOptions) -> (std::net::SocketAddr, CancellationToken) {
        let listener = bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        tokio::spawn(serve_with(listener, hello(), shutdown.clone(), options));
        (addr, shutdown)
    }

    async fn get_root(addr: std::net::SocketAddr) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    /// Reads until the server closes the connection: `Ok(bytes read)` or the read error.
    async fn read_until_closed(stream: &mut tokio::net::TcpStream) -> std::io::Result<Vec<u8>> {
        let mut seen = Vec::new();
        let mut buf = [0_u8; 1024];
        loop {
            match stream.read(&mut buf).await? {
                0 => return Ok(seen),
                n => seen.extend_from_slice(&buf[..n]),
            }
        }
    }

    #[tokio::test]
    async fn a_slowloris_is_closed_after_the_header_timeout_and_others_are_served() {
        let options = ServeOptions {
            header_read_timeout: Duration::from_millis(300),
            ..ServeOptions::default()
        };
        let (addr, shutdown) = start(options).await;
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        // Headers a byte at a time, never finished: the writer goes on until the server hangs
        // up (a write fails) while the reader sees the close.
        let (mut reader, mut writer) = slow.split();
        let drip = async {
            for byte in b"GET / HTTP/1.1\r\nhost: x\r\nx-slow: ".iter().cycle() {
                if writer.write_all(&[*byte]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let closed = async {
            let mut buf = [0_u8; 256];
            loop {
                match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        };
        let other = async {
            // Another client is served while the slow one drips.
            let response = get_root(addr).await;
            assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        };
        tokio::time::timeout(Duration::from_secs(10), async {
            tokio::join!(other, async {
                tokio::select! {
                    () = closed => {},
                    () = drip => {},
                }
            })
        })
        .await
        .expect("the slow client is closed after the header timeout");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn an_idle_kept_alive_connection_is_closed() {
        let options = ServeOptions {
            header_read_timeout: Duration::from_millis(200),
            ..ServeOptions::default()
        };
        let (addr, shutdown) = start(options).await;
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let seen = tokio::time::timeout(Duration::from_secs(10), read_until_closed(&mut stream))
            .await
            .expect("the idle connection is closed")
            .unwrap_or_default();
        let seen = String::from_utf8_lossy(&seen);
        assert!(seen.starts_with("HTTP/1.1 200"), "answered first: {seen}");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_handler_that_never_answers_gets_a_408() {
        let options = ServeOptions {
            request_timeout: Duration::from_millis(100),
            ..ServeOptions::default()
        };
        let (addr, shutdown) = start(options).await;
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /stuck HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        tokio::time::timeout(
            Duration::from_secs(10),
            stream.read_to_string(&mut response),
        )
        .await
        .expect("an answer")
        .unwrap();
        assert!(response.starts_with("HTTP/1.1 408"), "{response}");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn past_the_connection_cap_a_client_waits_for_a_free_slot() {
        let options = ServeOptions {
            max_connections: 1,
            ..ServeOptions::default()
        };
        let (addr, shutdown) = start(options).await;
        // One open connection holds the only slot.
        let mut holder = tokio::net::TcpStream::connect(addr).await.unwrap();
        holder
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0_u8; 512];
        let n = holder.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        // A second client is not served while it is held...
        let mut waiting = tokio::spawn(get_root(addr));
        // Uncapped, the answer takes a millisecond; capped, none comes while the slot is held.
        assert!(
            tokio::time::timeout(Duration::from_millis(300), &mut waiting)
                .await
                .is_err(),
            "the second client waits"
        );
        // ...and is once the first lets go.
        drop(holder);
        let response = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("served once a slot is free")
            .unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn past_the_in_flight_cap_requests_are_shed_but_probes_answer() {
        let (entered_tx, entered_rx) = tokio::sync::oneshot::channel::<()>();
        let entered = std::sync::Arc::new(std::sync::Mutex::new(Some(entered_tx)));
        let router = Router::new()
            .route(
                "/held",
                get(move || {
                    let entered = entered.clone();
                    async move {
                        if let Some(tx) = entered.lock().unwrap().take() {
                            let _ = tx.send(());
                        }
                        std::future::pending::<()>().await;
                        "never"
                    }
                }),
            )
            .route("/", get(|| async { "hello" }))
            .route("/health/live", get(|| async { "live" }));
        let listener = bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let options = ServeOptions {
            max_in_flight: 1,
            grace: Duration::from_millis(100),
            ..ServeOptions::default()
        };
        tokio::spawn(serve_with(listener, router, shutdown.clone(), options));
        let mut holder = tokio::net::TcpStream::connect(addr).await.unwrap();
        holder
            .write_all(b"GET /held HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        entered_rx.await.unwrap();
        // The one slot is taken: the next request is refused at once, with a problem.
        let response = get_root(addr).await;
        assert!(response.starts_with("HTTP/1.1 503"), "{response}");
        assert!(
            response.to_lowercase().contains("retry-after: 1"),
            "{response}"
        );
        assert!(response.contains("application/problem+json"), "{response}");
        // Probes are never shed.
        let mut probe = tokio::net::TcpStream::connect(addr).await.unwrap();
        probe
            .write_all(b"GET /health/live HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        probe.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        drop(holder);
        shutdown.cancel();
    }
}
