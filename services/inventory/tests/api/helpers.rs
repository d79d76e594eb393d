//! `spawn_app`: the inventory on a random port over a test database and a test bus, a
//! subscriber collecting its replies, a fake catalog, and helpers per command and endpoint.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use reqwest::{Response, header};
use serde::Deserialize;
use serde_json::Value;
use tideway_bus::{Bus, EmbeddedBus, EmbeddedOptions, Event, EventType, Handler, SubscribeOptions};
use tideway_catalog_api::{CatalogClient, Item, ItemPage};
use tideway_inventory::{Config, Inventory, Reservation};
use tideway_inventory_api::{
    CommitStock, PREFIX, ReleaseStock, ReserveStock, StockLevel, StockLine,
};
use tideway_runtime::{
    auth::ADMIN_ROLE,
    client::Transport,
    extract::{Json, Query},
};
pub use tideway_testkit::DEADLINE;
use tideway_testkit::{TestNats, TestServer, TestTokens, eventually_async, within};
use tokio::sync::{Mutex, mpsc};

/// Which bus the app runs on.
pub enum TestBus {
    Embedded(EmbeddedBus),
    Nats(TestNats),
}

pub struct TestApp {
    pub server: TestServer,
    pub client: reqwest::Client,
    pub inventory: Inventory,
    pub tokens: TestTokens,
    pub bus: Arc<dyn Bus>,
    replies: Mutex<mpsc::UnboundedReceiver<Event>>,
    _nats: Option<TestNats>,
}

/// The inventory on the embedded bus over `db_url`, not seeded.
pub async fn spawn_app(db_url: &str) -> TestApp {
    let bus = EmbeddedBus::new(EmbeddedOptions::default()).await.unwrap();
    spawn_with(
        db_url,
        TestBus::Embedded(bus),
        false,
        FakeCatalog::default().client(),
    )
    .await
}

/// The inventory on `bus` over `db_url`, seeding from `catalog` when `seed`.
pub async fn spawn_with(db_url: &str, bus: TestBus, seed: bool, catalog: CatalogClient) -> TestApp {
    let (dyn_bus, embedded, nats): (Arc<dyn Bus>, Option<EmbeddedBus>, Option<TestNats>) = match bus
    {
        TestBus::Embedded(bus) => (Arc::new(bus.clone()), Some(bus), None),
        TestBus::Nats(nats) => (Arc::new(nats.bus().await), None, Some(nats)),
    };
    let tokens = TestTokens::new();
    let config = Config {
        database_url: db_url.parse().expect("a test database URL"),
        seed_from_catalog: seed,
    };
    let inventory = Inventory::build(
        &config,
        dyn_bus.clone(),
        &tideway_bus::Replica::new("inventory-1"),
        tokens.verifier(),
        catalog,
    )
    .await
    .expect("build the inventory");

    // The saga's side: collect every reply of the inventory.
    let (tx, rx) = mpsc::unbounded_channel();
    let handler: Arc<dyn Handler> = Arc::new(move |event: Event| {
        if event.event_type.starts_with("tideway.inventory.stock-") {
            let _ = tx.send(event);
        }
        async { Ok::<_, std::io::Error>(()) }
    });
    dyn_bus
        .subscribe(
            SubscribeOptions::new("ordering", "tideway.inventory.*"),
            handler,
        )
        .await
        .unwrap();
    if let Some(bus) = embedded {
        bus.open();
    }

    TestApp {
        server: TestServer::start(inventory.router()).await,
        client: reqwest::Client::new(),
        inventory,
        tokens,
        bus: dyn_bus,
        replies: Mutex::new(rx),
        _nats: nats,
    }
}

/// A trace context a checkout request would have started.
pub const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
pub const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

pub fn command<T: EventType>(payload: &T, order_id: &str) -> Event {
    Event::new(payload)
        .unwrap()
        .with_subject(order_id)
        .with_traceparent(TRACEPARENT)
}

pub fn line(item_id: &str, quantity: i64) -> StockLine {
    StockLine {
        item_id: item_id.to_owned(),
        quantity,
    }
}

pub fn reserve(order_id: &str, lines: &[(&str, i64)]) -> Event {
    command(
        &ReserveStock {
            order_id: order_id.to_owned(),
            lines: lines.iter().map(|(i, q)| line(i, *q)).collect(),
        },
        order_id,
    )
}

pub fn release(order_id: &str) -> Event {
    command(
        &ReleaseStock {
            order_id: order_id.to_owned(),
            reason: "payment declined".to_owned(),
        },
        order_id,
    )
}

pub fn commit(order_id: &str) -> Event {
    command(
        &CommitStock {
            order_id: order_id.to_owned(),
        },
        order_id,
    )
}

impl TestApp {
    /// Publishes a command as the ordering service would.
    pub async fn send(&self, event: &Event) {
        self.bus.publish(event).await.unwrap();
    }

    /// The next reply of the inventory, within the deadline.
    pub async fn reply(&self) -> Event {
        within(DEADLINE, "a reply of the inventory", async {
            self.replies.lock().await.recv().await
        })
        .await
        .expect("the reply channel is open")
    }

    /// Sends `event` and answers the reply (of this order).
    pub async fn ask(&self, event: &Event) -> Event {
        self.send(event).await;
        let reply = self.reply().await;
        assert_eq!(
            reply.subject, event.subject,
            "reply to {}",
            event.event_type
        );
        reply
    }

    pub async fn level(&self, item_id: &str) -> StockLevel {
        self.inventory.stock(item_id).await.unwrap().unwrap()
    }

    /// (available, reserved, committed) of `item_id`.
    pub async fn counts(&self, item_id: &str) -> (i64, i64, i64) {
        let l = self.level(item_id).await;
        (l.available, l.reserved, l.committed)
    }

    pub async fn reservation(&self, order_id: &str) -> Option<Reservation> {
        self.inventory
            .snapshot()
            .await
            .unwrap()
            .reservations
            .into_iter()
            .find(|r| r.order_id == order_id)
    }

    /// Outbox rows of replies about `order_id`.
    pub async fn outbox_rows(&self, order_id: &str) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE event LIKE $1")
            .bind(format!("%\"subject\":\"{order_id}\"%"))
            .fetch_one(self.inventory.db().pool())
            .await
            .unwrap()
    }

    /// Waits until every outbox row is published (so no further reply can come).
    pub async fn drained(&self) {
        eventually_async(DEADLINE, "the outbox to drain", || async {
            let pending = tideway_bus::outbox::pending(self.inventory.db())
                .await
                .unwrap();
            if pending > 0 {
                self.inventory.wake_relay();
            }
            pending == 0
        })
        .await;
    }

    pub async fn stop(self) {
        self.inventory.shutdown().await;
        self.bus.shutdown().await;
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

    pub async fn get(&self, path: &str) -> Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    pub async fn put(&self, path: &str, token: Option<&str>, body: &Value) -> Response {
        let request = self.client.put(self.url(path)).json(body);
        let request = match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        request.send().await.unwrap()
    }

    /// `PUT` with a raw body and content type, as the admin.
    pub async fn put_raw(&self, path: &str, content_type: &str, body: &str) -> Response {
        self.client
            .put(self.url(path))
            .bearer_auth(self.admin_token())
            .header(header::CONTENT_TYPE, content_type)
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
    }
}

/// Asserts `response` is a problem with `status` naming `field` in `invalid-params`.
pub async fn assert_problem(response: Response, status: StatusCode, field: &str) -> Value {
    assert_eq!(
        response.status().as_u16(),
        status.as_u16(),
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

/// Asserts `response` is a problem with `status`.
pub async fn assert_status_problem(response: Response, status: StatusCode) -> Value {
    assert_eq!(response.status().as_u16(), status.as_u16());
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["status"], status.as_u16(), "{problem}");
    problem
}

/// A catalog that answers `GET /api/v1/catalog/items?page=&page_size=` from a list, and 503
/// while it is down.
#[derive(Clone, Default)]
pub struct FakeCatalog {
    pub items: Arc<Vec<Item>>,
    pub up: Arc<AtomicBool>,
}

#[derive(Deserialize)]
struct PageQuery {
    page: u32,
    page_size: u32,
}

async fn items(
    State(catalog): State<FakeCatalog>,
    Query(q): Query<PageQuery>,
) -> axum::response::Response {
    if !catalog.up.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let start = ((q.page.max(1) - 1) * q.page_size) as usize;
    let page: Vec<Item> = catalog
        .items
        .iter()
        .skip(start)
        .take(q.page_size as usize)
        .cloned()
        .collect();
    Json(ItemPage {
        items: page,
        page: q.page,
        page_size: q.page_size,
        total: catalog.items.len() as u64,
    })
    .into_response()
}

impl FakeCatalog {
    /// `n` items with stock `i % 7` each, up unless `up` is false.
    pub fn with_items(n: usize, up: bool) -> Self {
        let items = (0..n)
            .map(|i| Item {
                id: format!("item-{i:04}"),
                sku: format!("SKU-{i}"),
                name: format!("Item {i}"),
                description: String::new(),
                brand: "Test".into(),
                category: "kitchen".into(),
                price_minor: 100,
                currency: "EUR".into(),
                stock: (i % 7) as i64,
                sold_out: i % 7 == 0,
                version: 1,
                created_at: "2025-01-01T00:00:00.000Z".into(),
                updated_at: "2025-01-01T00:00:00.000Z".into(),
            })
            .collect();
        Self {
            items: Arc::new(items),
            up: Arc::new(AtomicBool::new(up)),
        }
    }

    pub fn client(&self) -> CatalogClient {
        let router = Router::new()
            .route("/api/v1/catalog/items", get(items))
            .with_state(self.clone());
        CatalogClient::new(Transport::in_process(
            "catalog",
            router,
            Duration::from_secs(5),
        ))
    }
}
