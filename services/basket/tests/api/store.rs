//! The store beneath the basket: abandoned baskets expire on every store, and on Redis an
//! outage or a stall is a 503 (never a 500 or a hang), readiness says so, and the basket
//! recovers once Redis is back.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use tideway_basket::{Config, RedisUrl, StoreKind};
use tideway_testkit::{DEADLINE, TestTokens, eventually_async};

use crate::helpers::{
    COFFEE, FakeCatalog, TEA, TestApp, TestRedis, TestStore, is_ci, spawn_app, spawn_configured,
    stores, test_redis_url,
};

/// Short enough for a test, long enough that a basket outlives the requests that fill it.
const SHORT_TTL: Duration = Duration::from_secs(2);

#[tokio::test]
async fn abandoned_baskets_expire_and_start_afresh() {
    for store in stores().await {
        let fake = FakeCatalog::new();
        let config = store.config();
        let app = spawn_configured(&config, SHORT_TTL, fake.in_process(), TestTokens::new()).await;
        let alice = app.token("alice");
        app.add(&alice, COFFEE, 5).await.view();
        app.add(&alice, TEA, 1).await.view();

        // Nobody reads Alice's basket: the store itself (the sweep, or Redis) deletes it.
        eventually_async(
            DEADLINE,
            format!("alice's abandoned basket is deleted on {}", store.name()),
            || async { app.stored("alice").await.is_empty() },
        )
        .await;
        assert!(app.view(&alice).await.items.is_empty());
        // An add after the expiry starts a new line, not on top of the expired quantity.
        let view = app.add(&alice, COFFEE, 1).await.view();
        assert_eq!(view.items.len(), 1);
        assert_eq!(view.items[0].quantity, 1, "{}", store.name());
    }
}

#[tokio::test]
async fn a_redis_basket_lives_ttl_days_from_its_last_change() {
    let Some(url) = test_redis_url().await else {
        return;
    };
    let redis = TestRedis::on(&url);
    let store = TestStore::Redis(redis);
    let app = spawn_app(&store, FakeCatalog::new().in_process()).await;
    let token = app.token("alice");
    app.add(&token, COFFEE, 1).await.view();
    let TestStore::Redis(redis) = &store else {
        unreachable!()
    };
    let mut connection = redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let pttl: i64 = redis::cmd("PTTL")
        .arg(format!("{}:{{alice}}:lines", redis.prefix))
        .query_async(&mut connection)
        .await
        .unwrap();
    let days = |n: i64| n * 24 * 3600 * 1000;
    assert!(pttl > days(29) && pttl <= days(30), "{pttl} ms");
}

/// A Redis server of this test's own, on a free port, keeping every write on disk (so it
/// can be killed and restarted with its data).
struct OwnRedis {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl OwnRedis {
    /// Starts one; `None` (with a notice, or a failure on CI) without `redis-server`.
    async fn start() -> Option<Self> {
        if Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            assert!(
                !is_ci(),
                "redis-server is missing and CI=true (run scripts/deps.sh)"
            );
            eprintln!("note: skipping: redis-server is not installed (run scripts/deps.sh)");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut redis = Self {
            port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        redis.spawn().await;
        Some(redis)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let client = redis::Client::open(self.url()).unwrap();
        eventually_async(DEADLINE, "the test's redis-server answers", || {
            let client = client.clone();
            async move {
                match client.get_multiplexed_async_connection().await {
                    Ok(mut c) => redis::cmd("PING")
                        .query_async::<String>(&mut c)
                        .await
                        .is_ok(),
                    Err(_) => false,
                }
            }
        })
        .await;
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} {pid}");
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn data_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.signal("CONT");
        }
        self.kill();
    }
}

fn redis_config(url: &str) -> Config {
    Config {
        store: StoreKind::Redis,
        redis_url: RedisUrl::parse(url).unwrap(),
        redis_key_prefix: "tideway:test:outage".to_owned(),
        redis_timeout_ms: 300,
        ..Config::default()
    }
}

/// Every call is a 503 problem with `Retry-After`, answered (no hang), and not ready.
/// With `writes`, the writes are tried too (only where Redis refuses connections: a
/// stalled Redis still runs the commands that timed out once it resumes, so a write's
/// 503 there means its outcome is unknown).
async fn refuses_while_redis_is_out(app: &TestApp, token: &str, why: &str, writes: bool) {
    let mut calls = vec![("get", app.get(token).await)];
    if writes {
        calls.push(("add", app.add(token, TEA, 1).await));
        calls.push(("set", app.set(token, COFFEE, 3).await));
        calls.push(("remove", app.remove(token, COFFEE).await));
        calls.push(("clear", app.clear(token).await));
    }
    for (call, answer) in calls {
        assert_eq!(answer.status, 503, "{why}: {call}: {answer:?}");
        assert_eq!(
            answer.body["type"], "/problems/unavailable",
            "{why}: {call}"
        );
    }
    let response = app
        .http
        .get(app.server.url("/api/v1/basket"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["retry-after"], "1", "{why}");
    let ready = app.ready().await;
    assert_eq!(ready.status, 503, "{why}: {ready:?}");
    assert_eq!(ready.body["checks"][0]["name"], "redis", "{why}: {ready:?}");
    assert_eq!(ready.body["checks"][0]["ok"], false, "{why}: {ready:?}");
}

/// Waits until the basket answers again with `expected` coffees.
async fn recovers(app: &TestApp, token: &str, expected: i64, why: &str) {
    eventually_async(
        DEADLINE,
        format!("the basket answers again after {why}"),
        || async {
            let answer = app.get(token).await;
            answer.status == 200
                && answer.view().items.first().map(|l| l.quantity) == Some(expected)
        },
    )
    .await;
    assert_eq!(app.ready().await.status, 200, "{why}");
}

#[tokio::test]
async fn a_redis_outage_is_a_503_not_a_hang_and_the_basket_recovers() {
    let Some(mut redis) = OwnRedis::start().await else {
        return;
    };
    let fake = FakeCatalog::new();
    let app = spawn_configured(
        &redis_config(&redis.url()),
        Duration::from_secs(3600),
        fake.in_process(),
        TestTokens::new(),
    )
    .await;
    let token = app.token("alice");
    app.add(&token, COFFEE, 2).await.view();
    assert_eq!(app.ready().await.status, 200);

    // Stalled: connections stay open but nothing answers.
    redis.signal("STOP");
    refuses_while_redis_is_out(&app, &token, "a stalled redis", false).await;
    redis.signal("CONT");
    recovers(&app, &token, 2, "a stall").await;

    // Gone: connections refused.
    redis.kill();
    refuses_while_redis_is_out(&app, &token, "a killed redis", true).await;
    redis.spawn().await;
    recovers(&app, &token, 2, "a restart").await;
    assert!(redis.data_dir().exists());
    // Writes work again too.
    assert_eq!(app.add(&token, COFFEE, 1).await.view().items[0].quantity, 3);
}

#[tokio::test]
async fn a_basket_starts_without_redis_not_ready_and_becomes_ready_when_it_comes() {
    let Some(mut redis) = OwnRedis::start().await else {
        return;
    };
    redis.kill();
    let app = spawn_configured(
        &redis_config(&redis.url()),
        Duration::from_secs(3600),
        FakeCatalog::new().in_process(),
        TestTokens::new(),
    )
    .await;
    let token = app.token("alice");
    let ready = app.ready().await;
    assert_eq!(ready.status, 503, "{ready:?}");
    assert_eq!(app.get(&token).await.status, 503);
    redis.spawn().await;
    eventually_async(DEADLINE, "the basket becomes ready", || async {
        app.ready().await.status == 200
    })
    .await;
    assert_eq!(app.add(&token, COFFEE, 2).await.view().items[0].quantity, 2);
}
