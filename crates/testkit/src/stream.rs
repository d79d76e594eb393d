//! A private JetStream stream for each test, on the server of `TIDEWAY_TEST_NATS_URL`
//! (default [`DEFAULT_NATS_URL`]).
//!
//! Every [`TestNats`] has its own stream name and subject root, so tests run in parallel on
//! one server; the stream is deleted when it drops.

use std::time::Duration;

use tideway_bus::{NatsBus, NatsOptions};

use crate::is_ci;

/// The default URL of the test NATS server.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

/// The URL of the test NATS server.
pub fn nats_url() -> String {
    std::env::var("TIDEWAY_TEST_NATS_URL").unwrap_or_else(|_| DEFAULT_NATS_URL.to_owned())
}

/// A stream and subject root that exist for one test.
#[derive(Debug)]
pub struct TestNats {
    options: NatsOptions,
}

impl TestNats {
    /// Options naming this test's stream and root (with short timeouts for tests).
    pub fn options(&self) -> NatsOptions {
        self.options.clone()
    }

    /// A new connection to this test's stream: call twice for two "processes".
    ///
    /// # Panics
    /// When connecting fails (the server answered a moment ago).
    pub async fn bus(&self) -> NatsBus {
        NatsBus::connect(self.options())
            .await
            .expect("connect to the test NATS server")
    }
}

impl Drop for TestNats {
    fn drop(&mut self) {
        let options = self.options.clone();
        crate::clean_up(async move {
            if let Ok(client) = async_nats::connect(options.url.as_str()).await {
                let _ = async_nats::jetstream::new(client)
                    .delete_stream(&options.stream)
                    .await;
            }
        });
    }
}

/// A fresh stream and root on the test server, or `None` (with a notice) when it is
/// unreachable outside CI.
///
/// # Panics
/// With `CI=true` when the server cannot be reached or has no JetStream.
pub async fn nats() -> Option<TestNats> {
    let url = nats_url();
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let options = NatsOptions {
        url: url.clone(),
        stream: format!("T{unique}"),
        root: format!("t{unique}"),
        duplicate_window: Duration::from_secs(60),
        connect_timeout: Duration::from_secs(3),
        ..NatsOptions::default()
    };
    match NatsBus::connect(options.clone()).await {
        Ok(_) => Some(TestNats { options }),
        Err(err) => {
            assert!(
                !is_ci(),
                "NATS JetStream at {url} is unusable and CI=true: {err:?} (run scripts/deps.sh)"
            );
            eprintln!("note: skipping NATS half: {url} unusable ({err}); run scripts/deps.sh");
            None
        }
    }
}
