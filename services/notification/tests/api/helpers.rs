//! A real SMTP server per test (aiosmtpd from `scripts/test-tools.sh`'s venv), the service
//! over a test database and a test bus, and helpers to publish the events it consumes.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use tideway_bus::{Bus, EmbeddedBus, EmbeddedOptions, Event, Replica};
use tideway_notification::{Config, Notification};
use tideway_notification_api::{MINE_PATH, NotificationPage, RECENT_PATH};
use tideway_ordering_api::{OrderCancelled, OrderConfirmed, OrderLine, OrderPlaced};
use tideway_store::Db;
use tideway_testkit::{TestNats, TestServer, TestTokens};

/// The Python of the test tools' venv.
fn python() -> PathBuf {
    let venv = std::env::var_os("TIDEWAY_TEST_VENV").map_or_else(
        || {
            let home = std::env::var_os("HOME").unwrap_or_default();
            Path::new(&home).join(".cache/tideway-test-venv")
        },
        PathBuf::from,
    );
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/deps.sh (it installs aiosmtpd)",
        python.display()
    );
    python
}

/// An SMTP server on 127.0.0.1 that refuses the first `refuse` messages (451) and keeps
/// the others as files. Stopped when dropped (its stdin closes).
pub struct Smtp {
    child: Child,
    stdin: Option<ChildStdin>,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Smtp {
    pub fn start(refuse: u32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api/smtp_server.py");
        let mut child = Command::new(python())
            .arg(script)
            .arg("--maildir")
            .arg(dir.path())
            .arg("--refuse")
            .arg(refuse.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let port = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("the SMTP server said {line:?}"))
            .parse()
            .unwrap();
        let stdin = child.stdin.take();
        Self {
            child,
            stdin,
            port,
            dir,
        }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// The messages accepted so far, in order.
    pub fn messages(&self) -> Vec<String> {
        let mut names: Vec<(u32, PathBuf)> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(|entry| {
                let path = entry.ok()?.path();
                let n = path
                    .file_name()?
                    .to_str()?
                    .strip_suffix(".eml")?
                    .parse()
                    .ok()?;
                Some((n, path))
            })
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|(_, path)| std::fs::read_to_string(path).unwrap())
            .collect()
    }

    /// How many messages it refused.
    pub fn refused(&self) -> u32 {
        std::fs::read_to_string(self.dir.path().join("refused"))
            .map_or(0, |n| n.trim().parse().unwrap_or(0))
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Which bus the service runs on.
pub enum TestBus {
    Embedded,
    Nats(TestNats),
}

pub struct TestApp {
    pub server: TestServer,
    pub client: reqwest::Client,
    pub tokens: TestTokens,
    pub bus: Arc<dyn Bus>,
    /// The embedded bus's dead-letter table.
    pub dead_letters: Option<Db>,
    _db: tideway_testkit::TestDb,
    _letters: Option<tideway_testkit::TestDb>,
    _nats: Option<TestNats>,
}

/// Quick retries: 50 ms doubling to 200 ms.
pub fn quick(config: Config) -> Config {
    Config {
        retry_first_ms: 50,
        retry_max_ms: 200,
        ..config
    }
}

/// The service with `config` (its database replaced by a fresh SQLite one) on `bus`.
pub async fn spawn_with(config: Config, bus: TestBus) -> TestApp {
    let db = tideway_testkit::sqlite().await;
    let config = Config {
        database_url: db.url().parse().unwrap(),
        ..config
    };
    let mut letters_keep = None;
    let (dyn_bus, embedded, dead_letters, nats): (
        Arc<dyn Bus>,
        Option<EmbeddedBus>,
        Option<Db>,
        Option<TestNats>,
    ) = match bus {
        TestBus::Embedded => {
            let letters = tideway_testkit::sqlite().await;
            let letters_db: Db = (*letters).clone();
            letters_keep = Some(letters);
            let bus = EmbeddedBus::new(EmbeddedOptions {
                dead_letters: Some(letters_db.clone()),
                ..EmbeddedOptions::default()
            })
            .await
            .unwrap();
            (Arc::new(bus.clone()), Some(bus), Some(letters_db), None)
        }
        TestBus::Nats(nats) => (Arc::new(nats.bus().await), None, None, Some(nats)),
    };
    let tokens = TestTokens::new();
    let service = Notification::build(
        &config,
        dyn_bus.clone(),
        &Replica::new("notification-1"),
        tokens.verifier(),
    )
    .await
    .expect("build the notification service");
    if let Some(embedded) = &embedded {
        embedded.open();
    }
    TestApp {
        server: TestServer::start(service.router()).await,
        client: reqwest::Client::new(),
        tokens,
        bus: dyn_bus,
        dead_letters,
        _db: db,
        _letters: letters_keep,
        _nats: nats,
    }
}

/// A fresh order id.
pub fn order() -> String {
    format!("order-{}", uuid::Uuid::now_v7())
}

pub fn placed(order_id: &str, user: &str) -> Event {
    Event::new(&OrderPlaced {
        order_id: order_id.to_owned(),
        user_id: user.to_owned(),
        lines: lines(),
        total_minor: 2598,
        email: Some(format!("{user}@example.com")),
    })
    .unwrap()
}

fn lines() -> Vec<OrderLine> {
    vec![OrderLine {
        item_id: "kettle".into(),
        name: "Copper kettle".into(),
        unit_price_minor: 1299,
        quantity: 2,
    }]
}

pub fn confirmed(order_id: &str, user: &str) -> Event {
    Event::new(&OrderConfirmed {
        order_id: order_id.to_owned(),
        user_id: user.to_owned(),
        lines: lines(),
        total_minor: 2598,
    })
    .unwrap()
}

pub fn cancelled(order_id: &str, user: &str) -> Event {
    Event::new(&OrderCancelled {
        order_id: order_id.to_owned(),
        user_id: user.to_owned(),
        reason: "payment declined: card declined".into(),
    })
    .unwrap()
}

pub fn voided(order_id: &str, status: tideway_payment_api::PaymentStatus) -> Event {
    Event::new(&tideway_payment_api::PaymentVoided {
        order_id: order_id.to_owned(),
        status: Some(status),
    })
    .unwrap()
}

impl TestApp {
    /// Publishes `events` in order (on the embedded bus each returns once handled or
    /// dead-lettered).
    pub async fn publish(&self, events: &[Event]) {
        for event in events {
            self.bus.publish(event).await.unwrap();
        }
    }

    pub async fn mine(&self, user: &str, query: &str) -> reqwest::Response {
        self.client
            .get(self.server.url(&format!("{MINE_PATH}{query}")))
            .bearer_auth(self.tokens.token(user, &["customer"]))
            .send()
            .await
            .unwrap()
    }

    pub async fn mine_page(&self, user: &str) -> NotificationPage {
        let response = self.mine(user, "").await;
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    pub async fn recent(&self, roles: &[&str]) -> reqwest::Response {
        self.client
            .get(self.server.url(RECENT_PATH))
            .bearer_auth(self.tokens.token("ops", roles))
            .send()
            .await
            .unwrap()
    }
}

/// Long enough for a loaded machine.
pub const SETTLE: Duration = Duration::from_secs(60);
