//! A server on `127.0.0.1` on a free port, stopped when its handle drops.

use std::{error::Error, future::Future, net::SocketAddr, time::Duration};

use axum::Router;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::within;

/// How long in-flight requests may run once a [`TestServer::start`]ed router stops.
pub const STOP_GRACE: Duration = Duration::from_secs(1);

type BoxError = Box<dyn Error + Send + Sync>;

/// A running server: its address, base URL and shutdown.
///
/// Dropping the handle begins a graceful shutdown without waiting for it; [`stop`] waits
/// and fails the test if the server failed or did not stop in time.
///
/// [`stop`]: TestServer::stop
#[derive(Debug)]
pub struct TestServer {
    addr: SocketAddr,
    base_url: String,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), BoxError>>>,
}

impl TestServer {
    /// Serves `router` the way a service is served (`tideway_runtime::serve`), on a free
    /// port of `127.0.0.1`.
    ///
    /// # Panics
    /// When no port can be bound.
    pub async fn start(router: Router) -> Self {
        let listener = tideway_runtime::serve::bind("127.0.0.1:0")
            .await
            .expect("bind a free port on 127.0.0.1");
        let addr = listener
            .local_addr()
            .expect("the address of a bound listener");
        Self::spawn(addr, move |shutdown| {
            tideway_runtime::serve::serve(listener, router, shutdown, STOP_GRACE)
        })
    }

    /// Runs a server already bound at `addr` (a whole app, say): `run` gets the token that
    /// stops it.
    pub fn spawn<F, E>(addr: SocketAddr, run: impl FnOnce(CancellationToken) -> F) -> Self
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError>,
    {
        let shutdown = CancellationToken::new();
        let server = run(shutdown.clone());
        let task = tokio::spawn(async move { server.await.map_err(Into::into) });
        Self {
            addr,
            base_url: format!("http://{addr}"),
            shutdown,
            task: Some(task),
        }
    }

    /// The socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The base URL followed by `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Begins a graceful shutdown without waiting for it.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Shuts down and waits until the server has stopped.
    ///
    /// # Panics
    /// When the server failed or panicked, or did not stop within `deadline`.
    pub async fn stop(mut self, deadline: Duration) {
        self.shutdown();
        let Some(task) = self.task.take() else {
            return;
        };
        let what = format!("the server on {} to stop", self.addr);
        match within(deadline, what, task).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => panic!("the server on {} failed: {err:?}", self.addr),
            Err(err) => panic!("the server on {} panicked: {err}", self.addr),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[cfg(test)]
mod tests {
    use axum::routing::get;

    use super::*;

    async fn get_text(url: &str) -> std::io::Result<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let url = url.strip_prefix("http://").unwrap_or(url);
        let (host, path) = url.split_once('/').unwrap_or((url, ""));
        let mut stream = tokio::net::TcpStream::connect(host).await?;
        let request = format!("GET /{path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        Ok(response)
    }

    #[tokio::test]
    async fn serves_on_a_free_port_until_stopped() {
        let server = TestServer::start(Router::new().route("/hi", get(|| async { "hello" }))).await;
        assert!(server.base_url().starts_with("http://127.0.0.1:"));
        assert_ne!(server.addr().port(), 0);
        let response = get_text(&server.url("/hi")).await.expect("a response");
        assert!(response.ends_with("hello"), "{response}");
        let addr = server.addr();
        server.stop(Duration::from_secs(10)).await;
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test]
    #[should_panic(expected = "failed")]
    async fn a_failed_server_fails_the_stop() {
        let addr: SocketAddr = "127.0.0.1:9".parse().expect("an address");
        let server = TestServer::spawn(addr, |_| async { Err(std::io::Error::other("broken")) });
        server.stop(Duration::from_secs(10)).await;
    }
}
