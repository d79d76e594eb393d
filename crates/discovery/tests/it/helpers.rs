//! A private bucket per test, and waiting on a watch with a deadline.
//!
//! An unreachable server skips a test with a notice, except with `CI=true`, where it fails.

use std::time::{Duration, Instant};

use tideway_discovery::{Instance, NatsOptions, NatsRegistry, Registration, Registry};
use tokio::sync::watch;

/// The default URL of the test NATS server.
const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn nats_url() -> String {
    std::env::var("TIDEWAY_TEST_NATS_URL").unwrap_or_else(|_| DEFAULT_NATS_URL.to_owned())
}

/// A bucket that exists for one test; deleted when it drops.
#[derive(Debug)]
pub struct TestBucket {
    options: NatsOptions,
}

impl TestBucket {
    /// A fresh bucket with `ttl`, or `None` (with a notice) when the server is unreachable
    /// outside CI.
    pub async fn new(ttl: Duration) -> Option<Self> {
        let url = nats_url();
        let options = NatsOptions {
            url: url.clone(),
            bucket: format!("t_{}", uuid::Uuid::new_v4().simple()),
            ttl,
            connect_timeout: Duration::from_secs(3),
        };
        match NatsRegistry::connect(options.clone()).await {
            Ok(_) => Some(Self { options }),
            Err(err) => {
                assert!(
                    !is_ci(),
                    "NATS JetStream at {url} is unusable and CI=true: {err:?} (run scripts/deps.sh)"
                );
                eprintln!("note: skipping: NATS at {url} unusable ({err}); run scripts/deps.sh");
                None
            }
        }
    }

    /// The options naming this bucket.
    pub fn options(&self) -> &NatsOptions {
        &self.options
    }

    /// A new registry on this bucket: call twice for two "processes".
    pub async fn registry(&self) -> NatsRegistry {
        NatsRegistry::connect(self.options.clone())
            .await
            .expect("connect to the test NATS server")
    }
}

impl Drop for TestBucket {
    fn drop(&mut self) {
        let options = self.options.clone();
        // Drop runs inside the test's runtime; clean up on a thread of its own.
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(client) = async_nats::connect(options.url.as_str()).await {
                    let _ = async_nats::jetstream::new(client)
                        .delete_key_value(&options.bucket)
                        .await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// An instance of `service` with id `id`.
pub fn instance(service: &str, id: &str, port: u16) -> Instance {
    Instance::new(service, id, format!("http://127.0.0.1:{port}"))
}

/// Two catalog replicas, `a` and `b`, each registered through its own registry (two
/// "processes"), and a third registry for the caller that lists and watches them.
pub struct TwoReplicas {
    pub first: NatsRegistry,
    pub second: NatsRegistry,
    pub caller: NatsRegistry,
    pub a: Registration,
    pub b: Registration,
}

impl TestBucket {
    /// Registers catalog replicas `a` and `b` from two registries, with a third as caller.
    pub async fn two_replicas(&self) -> TwoReplicas {
        let (first, second, caller) = (
            self.registry().await,
            self.registry().await,
            self.registry().await,
        );
        let a = first
            .register(instance("catalog", "a", 1))
            .await
            .expect("register a");
        let b = second
            .register(instance("catalog", "b", 2))
            .await
            .expect("register b");
        TwoReplicas {
            first,
            second,
            caller,
            a,
            b,
        }
    }
}

/// The ids in `list`.
pub fn ids(list: &[Instance]) -> Vec<&str> {
    list.iter().map(|i| i.id.as_str()).collect()
}

/// Waits until the watched list satisfies `done`, at most `deadline`; returns how long it
/// took.
///
/// # Panics
/// At the deadline, showing the last list.
pub async fn wait_for(
    receiver: &mut watch::Receiver<Vec<Instance>>,
    deadline: Duration,
    what: &str,
    done: impl Fn(&[Instance]) -> bool,
) -> Duration {
    let start = Instant::now();
    let waiting = async {
        loop {
            if done(&receiver.borrow_and_update()) {
                return;
            }
            receiver.changed().await.expect("the watcher is running");
        }
    };
    if tokio::time::timeout(deadline, waiting).await.is_err() {
        panic!(
            "{what}: not within {deadline:?}; last list {:?}",
            ids(&receiver.borrow())
        );
    }
    start.elapsed()
}
