//! Serving a router on a socket with graceful shutdown on SIGINT and SIGTERM.

use std::{future::IntoFuture, net::SocketAddr, time::Duration};

use axum::Router;
use tokio::net::TcpListener;
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
    TcpListener::bind(addr)
        .await
        .map_err(|err| std::io::Error::new(err.kind(), format!("cannot bind {addr}: {err}")))
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then stops accepting and
/// lets in-flight requests finish for at most `grace`. The metrics recorder's
/// [upkeep](crate::metrics::upkeep) runs meanwhile and stops when serving ends.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    grace: Duration,
) -> std::io::Result<()> {
    let tasks = TaskTracker::new();
    // Not `shutdown`: requests finishing in the grace period still record.
    let stop_upkeep = CancellationToken::new();
    tasks.spawn(crate::metrics::upkeep(
        crate::metrics::UPKEEP_INTERVAL,
        stop_upkeep.clone(),
    ));
    tasks.close();
    let result = serve_until(listener, router, shutdown, grace).await;
    stop_upkeep.cancel();
    tasks.wait().await;
    result
}

async fn serve_until(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    grace: Duration,
) -> std::io::Result<()> {
    let server = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.clone().cancelled_owned())
    .into_future();
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => result,
        () = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(grace_secs = grace.as_secs(), "in-flight requests outlived the grace period; closing them");
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
}
