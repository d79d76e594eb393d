//! A basket service on a random port, a fake catalog, and one helper per endpoint.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU8, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use reqwest::Method;
use serde_json::{Value, json};
use tideway_basket::{Basket, Config, RedisUrl, StoreKind};
use tideway_basket_api::BasketView;
use tideway_catalog_api::{CatalogClient, Item};
use tideway_runtime::client::Transport;
use tideway_store::Db;
use tideway_testkit::{TestDb, TestServer, TestTokens};

pub const COFFEE: &str = "0190a1b2-0000-7000-8000-000000000001";
pub const TEA: &str = "0190a1b2-0000-7000-8000-000000000002";
/// Only 3 in stock.
pub const MUG: &str = "0190a1b2-0000-7000-8000-000000000003";
/// Not in the catalog.
pub const UNKNOWN: &str = "0190a1b2-0000-7000-8000-0000000000ff";

pub const TIMEOUT: Duration = Duration::from_secs(2);

/// How the fake catalog answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    Normal = 0,
    /// Never within the client's deadline.
    Slow = 1,
    /// 500 to everything.
    Failing = 2,
}

/// A stand-in for the catalog service: `GET /api/v1/catalog/items/{id}` from a map the test
/// can change.
#[derive(Clone)]
pub struct FakeCatalog {
    items: Arc<Mutex<HashMap<String, Item>>>,
    mode: Arc<AtomicU8>,
}

fn item(id: &str, name: &str, price_minor: i64, stock: i64) -> Item {
    Item {
        id: id.to_owned(),
        sku: format!("SKU-{}", &id[id.len() - 3..]),
        name: name.to_owned(),
        description: String::new(),
        brand: "Tideway".to_owned(),
        category: "kitchen".to_owned(),
        price_minor,
        currency: "EUR".to_owned(),
        stock,
        sold_out: stock <= 0,
        version: 1,
        created_at: "2025-01-01T00:00:00.000Z".to_owned(),
        updated_at: "2025-01-01T00:00:00.000Z".to_owned(),
    }
}

impl FakeCatalog {
    pub fn new() -> Self {
        let items = [
            item(COFFEE, "Coffee beans", 1250, 500),
            item(TEA, "Green tea", 399, 500),
            item(MUG, "Mug", 800, 3),
        ];
        Self {
            items: Arc::new(Mutex::new(
                items.into_iter().map(|i| (i.id.clone(), i)).collect(),
            )),
            mode: Arc::new(AtomicU8::new(Mode::Normal as u8)),
        }
    }

    pub fn set_price(&self, id: &str, price_minor: i64) {
        let mut items = self.items.lock().unwrap();
        let item = items.get_mut(id).unwrap();
        item.price_minor = price_minor;
        item.version += 1;
    }

    pub fn set_stock(&self, id: &str, stock: i64) {
        let mut items = self.items.lock().unwrap();
        let item = items.get_mut(id).unwrap();
        item.stock = stock;
        item.sold_out = stock <= 0;
    }

    pub fn remove(&self, id: &str) {
        self.items.lock().unwrap().remove(id);
    }

    pub fn set_mode(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/api/v1/catalog/items/{id}", get(fake_item))
            .with_state(self.clone())
    }

    /// A client calling the fake in this process.
    pub fn in_process(&self) -> CatalogClient {
        self.in_process_with(TIMEOUT)
    }

    /// A client calling the fake in this process with a deadline of `timeout`.
    pub fn in_process_with(&self, timeout: Duration) -> CatalogClient {
        CatalogClient::new(Transport::in_process("catalog", self.router(), timeout))
    }

    /// Serves the fake on a random port; a client calling it over HTTP, and the server
    /// (which stops when dropped).
    pub async fn over_http(&self) -> (CatalogClient, TestServer) {
        let server = TestServer::start(self.router()).await;
        let client =
            CatalogClient::new(Transport::http("catalog", server.base_url(), TIMEOUT).unwrap());
        (client, server)
    }
}

async fn fake_item(State(fake): State<FakeCatalog>, Path(id): Path<String>) -> Response {
    match fake.mode.load(Ordering::SeqCst) {
        1 => {
            // Longer than any client deadline in these tests; the client gives up first.
            tokio::time::sleep(Duration::from_secs(30)).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        2 => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        _ => match fake.items.lock().unwrap().get(&id).cloned() {
            Some(item) => axum::Json(item).into_response(),
            None => (
                StatusCode::NOT_FOUND,
                axum::Json(
                    json!({"type": "/problems/not-found", "title": "Not Found", "status": 404}),
                ),
            )
                .into_response(),
        },
    }
}

/// A catalog client whose every call fails to connect.
pub fn unreachable_catalog() -> CatalogClient {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    CatalogClient::new(Transport::http("catalog", &url, TIMEOUT).unwrap())
}

/// The default Redis of the tests; `TIDEWAY_TEST_REDIS_URL` names another.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// A store a basket under test runs on: a fresh SQL database, or a key prefix of its own
/// on the test Redis (its keys deleted afterwards).
pub enum TestStore {
    Sql(TestDb),
    Redis(TestRedis),
}

/// A key prefix no other test uses, on a Redis server.
pub struct TestRedis {
    pub url: String,
    pub prefix: String,
}

impl TestRedis {
    /// A fresh prefix on the server at `url`.
    pub fn on(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            prefix: format!("tideway:test:basket:{}", uuid::Uuid::new_v4().simple()),
        }
    }

    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url.as_str()).unwrap()
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        // A failed cleanup must not fail a passing test (the server may be stopped).
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut connection) = client.get_connection_with_timeout(Duration::from_secs(1)) else {
            return;
        };
        let keys: Vec<String> = match redis::cmd("KEYS")
            .arg(format!("{}:*", self.prefix))
            .query(&mut connection)
        {
            Ok(keys) => keys,
            Err(_) => return,
        };
        if !keys.is_empty() {
            let _ = redis::cmd("DEL").arg(keys).query::<()>(&mut connection);
        }
    }
}

impl TestStore {
    /// The engine, for messages.
    pub fn name(&self) -> String {
        match self {
            Self::Sql(db) => format!("{:?}", db.backend()),
            Self::Redis(_) => "Redis".to_owned(),
        }
    }

    /// The basket's configuration on this store.
    pub fn config(&self) -> Config {
        match self {
            Self::Sql(db) => Config {
                store: StoreKind::Sql,
                database_url: db.url().parse().expect("a test database URL"),
                cache: uncached(),
                ..Config::default()
            },
            Self::Redis(redis) => Config {
                store: StoreKind::Redis,
                redis_url: RedisUrl::parse(&redis.url).unwrap(),
                redis_key_prefix: redis.prefix.clone(),
                cache: uncached(),
                ..Config::default()
            },
        }
    }
}

/// The fake catalog changes without announcing it: most tests read it uncached.
pub fn uncached() -> tideway_basket::PriceCacheConfig {
    let mut cache = tideway_basket::PriceCacheConfig::default();
    cache.shared.enabled = false;
    cache
}

/// Whether this run is CI, where a missing server fails the test.
pub fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The test Redis's URL when it answers; `None` with a notice outside CI.
pub async fn test_redis_url() -> Option<String> {
    let url =
        std::env::var("TIDEWAY_TEST_REDIS_URL").unwrap_or_else(|_| DEFAULT_REDIS_URL.to_owned());
    let client = redis::Client::open(url.as_str()).expect("a valid Redis URL");
    let ping = async {
        let mut connection = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
    };
    let reason = match tokio::time::timeout(Duration::from_secs(2), ping).await {
        Ok(Ok(_)) => return Some(url),
        Ok(Err(err)) => err.to_string(),
        Err(_) => "no answer within 2 s".to_owned(),
    };
    assert!(
        !is_ci(),
        "Redis at {url} is unreachable and CI=true: {reason} (run scripts/deps.sh)"
    );
    eprintln!("note: skipping the Redis store: {url} unreachable ({reason})");
    None
}

/// Every store a test runs on: SQLite, PostgreSQL and Redis (the last two when their
/// servers answer, or always with `CI=true`).
pub async fn stores() -> Vec<TestStore> {
    let mut stores: Vec<TestStore> = tideway_testkit::backends()
        .await
        .into_iter()
        .map(TestStore::Sql)
        .collect();
    if let Some(url) = test_redis_url().await {
        stores.push(TestStore::Redis(TestRedis::on(&url)));
    }
    stores
}

/// Where a test reads what a basket stored, bypassing the service.
#[derive(Clone)]
pub enum Stored {
    Sql(Db),
    Redis {
        client: redis::Client,
        prefix: String,
    },
}

/// A basket service on a random port.
pub struct TestApp {
    pub server: TestServer,
    pub basket: Basket,
    pub tokens: TestTokens,
    pub http: reqwest::Client,
    pub stored: Stored,
}

/// An HTTP answer: status and JSON body (`Null` when empty).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    /// The first named field of a problem document.
    pub fn field(&self) -> &str {
        self.body["invalid-params"][0]["name"]
            .as_str()
            .unwrap_or("")
    }

    pub fn view(&self) -> BasketView {
        assert_eq!(self.status, 200, "{self:?}");
        serde_json::from_value(self.body.clone()).unwrap()
    }
}

pub async fn spawn_app(store: &TestStore, catalog: CatalogClient) -> TestApp {
    spawn_app_with(store, catalog, TestTokens::new()).await
}

/// A basket service that accepts the tokens of `tokens`.
pub async fn spawn_app_with(
    store: &TestStore,
    catalog: CatalogClient,
    tokens: TestTokens,
) -> TestApp {
    let config = store.config();
    spawn_configured(&config, config.ttl(), catalog, tokens).await
}

/// A basket service on `config` whose baskets expire after `ttl`.
pub async fn spawn_configured(
    config: &Config,
    ttl: Duration,
    catalog: CatalogClient,
    tokens: TestTokens,
) -> TestApp {
    let basket = Basket::build_with_ttl(config, ttl, catalog, tokens.verifier())
        .await
        .unwrap();
    let stored = match basket.db() {
        Some(db) => Stored::Sql(db.clone()),
        None => Stored::Redis {
            client: redis::Client::open(config.redis_url.expose()).unwrap(),
            prefix: config.redis_key_prefix.clone(),
        },
    };
    TestApp {
        server: TestServer::start(basket.router()).await,
        basket,
        tokens,
        http: reqwest::Client::builder()
            // A request that hangs fails the test instead of stalling it.
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap(),
        stored,
    }
}

impl TestApp {
    /// A valid token of `user`.
    pub fn token(&self, user: &str) -> String {
        self.tokens.token(user, &["customer"])
    }

    /// Sends `body` as raw bytes with `content_type`, and `token` if any.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Option<String>,
    ) -> Answer {
        let mut request = self.http.request(method, self.server.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        Answer { status, body }
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Answer {
        let (content_type, body) = match body {
            Some(body) => (Some("application/json"), Some(body.to_string())),
            None => (None, None),
        };
        self.raw(method, path, Some(token), content_type, body)
            .await
    }

    pub async fn get(&self, token: &str) -> Answer {
        self.send(Method::GET, "/api/v1/basket", token, None).await
    }

    pub async fn view(&self, token: &str) -> BasketView {
        self.get(token).await.view()
    }

    pub async fn add(&self, token: &str, item_id: &str, quantity: i64) -> Answer {
        self.send(
            Method::POST,
            "/api/v1/basket/items",
            token,
            Some(json!({"item_id": item_id, "quantity": quantity})),
        )
        .await
    }

    pub async fn set(&self, token: &str, item_id: &str, quantity: i64) -> Answer {
        self.send(
            Method::PUT,
            &format!("/api/v1/basket/items/{item_id}"),
            token,
            Some(json!({"quantity": quantity})),
        )
        .await
    }

    pub async fn remove(&self, token: &str, item_id: &str) -> Answer {
        self.send(
            Method::DELETE,
            &format!("/api/v1/basket/items/{item_id}"),
            token,
            None,
        )
        .await
    }

    pub async fn clear(&self, token: &str) -> Answer {
        self.send(Method::DELETE, "/api/v1/basket", token, None)
            .await
    }

    /// The stored lines of `user` as (item id, quantity), straight from the store.
    pub async fn stored(&self, user: &str) -> Vec<(String, i64)> {
        match &self.stored {
            Stored::Sql(db) => sqlx::query_as(
                "SELECT item_id, quantity FROM basket_lines WHERE user_id = $1 ORDER BY item_id",
            )
            .bind(user)
            .fetch_all(db.pool())
            .await
            .unwrap(),
            Stored::Redis { client, prefix } => {
                let mut connection = client.get_multiplexed_async_connection().await.unwrap();
                let fields: Vec<(String, String)> = redis::cmd("HGETALL")
                    .arg(format!("{prefix}:{{{user}}}:lines"))
                    .query_async(&mut connection)
                    .await
                    .unwrap();
                let mut lines: Vec<(String, i64)> = fields
                    .into_iter()
                    .map(|(item, value)| {
                        let quantity = value.split('|').next().unwrap().parse().unwrap();
                        (item, quantity)
                    })
                    .collect();
                lines.sort();
                lines
            }
        }
    }

    /// `GET /health/ready`: its status and body.
    pub async fn ready(&self) -> Answer {
        let response = self
            .http
            .get(self.server.url("/health/ready"))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        Answer {
            status,
            body: response.json().await.unwrap(),
        }
    }
}
