//! `spawn_app`: the catalog on a random port over a test database, tokens for each kind of
//! caller, and one helper per endpoint.

use std::sync::Arc;

use reqwest::{Response, StatusCode, header};
use serde_json::Value;
use tideway_bus::{Bus, EmbeddedBus, EmbeddedOptions, Event, Handler, Replica, SubscribeOptions};
use tideway_catalog::{Catalog, Config};
use tideway_catalog_api::{EVENTS, Item, ItemPage, PREFIX};
use tideway_runtime::auth::ADMIN_ROLE;
use tideway_testkit::{TestServer, TestTokens};
use tokio::sync::mpsc;

pub struct TestApp {
    pub server: TestServer,
    pub client: reqwest::Client,
    pub catalog: Catalog,
    pub tokens: TestTokens,
    pub bus: Arc<dyn Bus>,
    events: tokio::sync::Mutex<mpsc::UnboundedReceiver<Event>>,
}

/// The catalog over `db_url`, seeded.
pub async fn spawn_app(db_url: &str) -> TestApp {
    spawn_with(&Config {
        database_url: db_url.parse().expect("a test database URL"),
        seed: true,
        ..Config::default()
    })
    .await
}

pub async fn spawn_with(config: &Config) -> TestApp {
    let tokens = TestTokens::new();
    let bus = EmbeddedBus::new(EmbeddedOptions::default())
        .await
        .expect("an embedded bus");
    let dyn_bus: Arc<dyn Bus> = Arc::new(bus.clone());
    let catalog = Catalog::build(
        config,
        dyn_bus.clone(),
        &Replica::new("catalog-1"),
        tokens.verifier(),
    )
    .await
    .expect("build the catalog");
    // Collect what the catalog publishes, as its consumers would.
    let (tx, rx) = mpsc::unbounded_channel();
    let handler: Arc<dyn Handler> = Arc::new(move |event: Event| {
        let _ = tx.send(event);
        async { Ok::<_, std::io::Error>(()) }
    });
    dyn_bus
        .subscribe(SubscribeOptions::new("observer", EVENTS), handler)
        .await
        .expect("subscribe to the catalog's events");
    bus.open();
    TestApp {
        server: TestServer::start(catalog.router()).await,
        client: reqwest::Client::new(),
        catalog,
        tokens,
        bus: dyn_bus,
        events: tokio::sync::Mutex::new(rx),
    }
}

/// Who calls an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    Anonymous,
    Customer,
    Admin,
}

impl TestApp {
    /// The next event the catalog published, waiting up to the deadline.
    pub async fn next_event(&self) -> Event {
        tokio::time::timeout(tideway_testkit::DEADLINE, self.events.lock().await.recv())
            .await
            .expect("an event from the catalog within the deadline")
            .expect("the event stream is open")
    }

    /// Publishes `event` on the bus, as the inventory's relay would.
    pub async fn publish(&self, event: &Event) {
        self.bus.publish(event).await.expect("publish");
    }

    /// Waits until the catalog's outbox has sent every event; the embedded bus hands an
    /// event to every consumer before the relay marks it sent, so the catalog's own
    /// invalidations of those events have happened by then.
    pub async fn drained(&self) {
        let pool = self.catalog.db().pool().clone();
        tideway_testkit::eventually_async(
            std::time::Duration::from_secs(10),
            "the catalog's outbox to drain",
            || {
                let pool = pool.clone();
                async move {
                    let pending: i64 =
                        sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE sent_at_ms IS NULL")
                            .fetch_one(&pool)
                            .await
                            .unwrap();
                    pending == 0
                }
            },
        )
        .await;
    }

    pub fn url(&self, path: &str) -> String {
        self.server.url(&format!("{PREFIX}{path}"))
    }

    pub fn token(&self, roles: &[&str]) -> String {
        self.tokens.token("user-1", roles)
    }

    pub fn admin_token(&self) -> String {
        self.token(&[ADMIN_ROLE, "customer"])
    }

    fn authorised(
        &self,
        request: reqwest::RequestBuilder,
        caller: Caller,
    ) -> reqwest::RequestBuilder {
        match caller {
            Caller::Anonymous => request,
            Caller::Customer => request.bearer_auth(self.token(&["customer"])),
            Caller::Admin => request.bearer_auth(self.admin_token()),
        }
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let response = self.get(path).await;
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.json().await.unwrap()
    }

    pub async fn page(&self, query: &str) -> ItemPage {
        let response = self.get(&format!("/items?{query}")).await;
        assert_eq!(response.status(), StatusCode::OK, "GET /items?{query}");
        response.json().await.unwrap()
    }

    /// Every item, in the default order.
    pub async fn all_items(&self) -> Vec<Item> {
        let mut items = Vec::new();
        for page in 1.. {
            let page = self.page(&format!("page={page}&page_size=100")).await;
            if page.items.is_empty() {
                break;
            }
            items.extend(page.items);
        }
        items
    }

    /// Everything a client can read, to show that a refused request changed nothing.
    pub async fn snapshot(&self) -> (Vec<Item>, Value, Value) {
        (
            self.all_items().await,
            self.get_json("/categories").await,
            self.get_json("/brands").await,
        )
    }

    pub async fn item(&self, id: &str) -> Item {
        let response = self.get(&format!("/items/{id}")).await;
        assert_eq!(response.status(), StatusCode::OK, "GET /items/{id}");
        response.json().await.unwrap()
    }

    pub async fn send_json(
        &self,
        method: reqwest::Method,
        path: &str,
        caller: Caller,
        body: &Value,
    ) -> Response {
        let request = self.client.request(method, self.url(path)).json(body);
        self.authorised(request, caller).send().await.unwrap()
    }

    /// Sends `body` as raw bytes with `content_type`, as the admin.
    pub async fn send_raw(
        &self,
        method: reqwest::Method,
        path: &str,
        content_type: &str,
        body: impl Into<String>,
    ) -> Response {
        self.client
            .request(method, self.url(path))
            .bearer_auth(self.admin_token())
            .header(header::CONTENT_TYPE, content_type)
            .body(body.into())
            .send()
            .await
            .unwrap()
    }

    pub async fn create(&self, caller: Caller, body: &Value) -> Response {
        self.send_json(reqwest::Method::POST, "/items", caller, body)
            .await
    }

    pub async fn update(&self, caller: Caller, id: &str, body: &Value) -> Response {
        self.send_json(reqwest::Method::PUT, &format!("/items/{id}"), caller, body)
            .await
    }

    pub async fn change_price(&self, caller: Caller, id: &str, body: &Value) -> Response {
        self.send_json(
            reqwest::Method::PUT,
            &format!("/items/{id}/price"),
            caller,
            body,
        )
        .await
    }

    pub async fn delete(&self, caller: Caller, id: &str) -> Response {
        let request = self.client.delete(self.url(&format!("/items/{id}")));
        self.authorised(request, caller).send().await.unwrap()
    }
}

/// A valid new item.
pub fn new_item(sku: &str) -> Value {
    serde_json::json!({
        "sku": sku,
        "name": "Test Pour-Over Stand",
        "description": "A walnut stand for one dripper.",
        "brand": "Test Works",
        "category": "kitchen",
        "price_minor": 2599,
        "currency": "EUR",
        "stock": 12
    })
}

/// Asserts `response` is a problem with `status` naming `field` in `invalid-params`.
pub async fn assert_problem(response: Response, status: StatusCode, field: &str) -> Value {
    assert_eq!(
        response.status(),
        status,
        "expected {status} naming {field}"
    );
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["status"], status.as_u16(), "{problem}");
    assert_eq!(problem["invalid-params"][0]["name"], field, "{problem}");
    problem
}

/// Asserts `response` is a problem with `status` (no field to name).
pub async fn assert_status_problem(response: Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["status"], status.as_u16(), "{problem}");
    problem
}
