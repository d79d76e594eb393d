//! An ordering service on a random port, a fake basket, responders that play inventory and
//! payment on the bus, a log of every event on the bus, and one helper per endpoint.

use std::{
    fmt,
    sync::{
        Arc, Mutex,
        atomic::{self, AtomicBool},
    },
    time::Duration,
};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
};
use reqwest::Method;
use serde_json::Value;
use tideway_basket_api::{BasketClient, BasketLine, BasketView};
use tideway_bus::{Bus, EmbeddedBus, EmbeddedOptions, Event, EventType, SubscribeOptions};
use tideway_inventory_api::{
    ReleaseStock, ReserveStock, StockRejected, StockReleased, StockReserved,
};
use tideway_ordering::{Config, Ordering};
use tideway_ordering_api::{OrderCancelled, OrderConfirmed, OrderView};
use tideway_payment_api::{
    AuthorizePayment, CARDS_PATH, CapturePayment, CardToken, DECLINED_CARD, PaymentAuthorized,
    PaymentCaptured, PaymentClient, PaymentDeclined, PaymentVoided, VoidPayment,
};
use tideway_runtime::client::{Availability, Transport};
use tideway_testkit::{DEADLINE, TestServer, TestTokens, within};
use tokio::sync::watch;

pub const COFFEE: &str = "0190a1b2-0000-7000-8000-000000000001";
pub const MUG: &str = "0190a1b2-0000-7000-8000-000000000003";

/// The fake basket's answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BasketMode {
    Normal,
    /// 500 to everything.
    Failing,
}

/// A stand-in for the basket service: `GET /api/v1/basket` answers the basket the test set, and
/// records the bearer tokens it was called with.
#[derive(Clone)]
pub struct FakeBasket {
    view: Arc<Mutex<BasketView>>,
    mode: Arc<Mutex<BasketMode>>,
    tokens: Arc<Mutex<Vec<String>>>,
}

pub fn line(item_id: &str, name: &str, unit_price_minor: i64, quantity: i64) -> BasketLine {
    BasketLine {
        item_id: item_id.to_owned(),
        name: name.to_owned(),
        unit_price_minor,
        quantity,
        line_total_minor: unit_price_minor * quantity,
        price_current: true,
        available: true,
        sold_out: false,
        deleted: false,
    }
}

/// Two coffees at 12.50 and a mug at 8.00: 33.00.
pub fn two_lines() -> Vec<BasketLine> {
    vec![
        line(COFFEE, "Coffee beans", 1250, 2),
        line(MUG, "Mug", 800, 1),
    ]
}

impl FakeBasket {
    pub fn new() -> Self {
        let fake = Self {
            view: Arc::new(Mutex::new(view(Vec::new()))),
            mode: Arc::new(Mutex::new(BasketMode::Normal)),
            tokens: Arc::new(Mutex::new(Vec::new())),
        };
        fake.set(two_lines());
        fake
    }

    pub fn set(&self, lines: Vec<BasketLine>) {
        *self.view.lock().unwrap() = view(lines);
    }

    pub fn set_mode(&self, mode: BasketMode) {
        *self.mode.lock().unwrap() = mode;
    }

    pub fn tokens(&self) -> Vec<String> {
        self.tokens.lock().unwrap().clone()
    }

    pub fn client(&self) -> BasketClient {
        let router = Router::new()
            .route("/api/v1/basket", get(fake_basket))
            .with_state(self.clone());
        BasketClient::new(Transport::in_process(
            "basket",
            router,
            Duration::from_secs(5),
        ))
    }
}

fn view(items: Vec<BasketLine>) -> BasketView {
    BasketView {
        total_minor: items.iter().map(|l| l.line_total_minor).sum(),
        item_count: items.iter().map(|l| l.quantity).sum(),
        currency: "EUR".to_owned(),
        items,
    }
}

async fn fake_basket(State(fake): State<FakeBasket>, headers: HeaderMap) -> Response {
    if let Some(token) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        fake.tokens.lock().unwrap().push(token.to_owned());
    }
    if *fake.mode.lock().unwrap() == BasketMode::Failing {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let view = fake.view.lock().unwrap().clone();
    axum::Json(view).into_response()
}

/// How the responders answer a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The success reply.
    Ok,
    /// The failure reply with this reason (reserve: rejected; authorize: declined).
    Refuse(String),
    /// No reply at all.
    Silent,
}

/// What inventory and payment do; the test changes it at will.
#[derive(Debug, Clone)]
pub struct Script {
    pub reserve: Answer,
    /// Declines the contract's declining test card with "card declined", whatever this says.
    pub authorize: Answer,
    pub capture: Answer,
    /// Every reply is published this many times (the same event, same id).
    pub copies: usize,
}

impl Default for Script {
    fn default() -> Self {
        Self {
            reserve: Answer::Ok,
            authorize: Answer::Ok,
            capture: Answer::Ok,
            copies: 1,
        }
    }
}

/// Every event seen on the bus, in order of arrival, with a signal on each.
#[derive(Clone)]
pub struct EventLog {
    events: Arc<Mutex<Vec<Event>>>,
    changed: Arc<watch::Sender<u64>>,
}

impl EventLog {
    fn new() -> Self {
        Self {
            events: Arc::new(Mutex::new(Vec::new())),
            changed: Arc::new(watch::channel(0).0),
        }
    }

    fn push(&self, event: Event) {
        self.events.lock().unwrap().push(event);
        self.changed.send_modify(|n| *n += 1);
    }

    pub fn all(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    /// The events of type `T` about `order_id`, decoded.
    pub fn of<T: EventType>(&self, order_id: &str) -> Vec<T> {
        self.all()
            .iter()
            .filter(|e| e.is::<T>() && e.subject.as_deref() == Some(order_id))
            .map(|e| e.decode::<T>().unwrap())
            .collect()
    }

    /// The envelopes of type `T` about `order_id`.
    pub fn envelopes<T: EventType>(&self, order_id: &str) -> Vec<Event> {
        self.all()
            .into_iter()
            .filter(|e| e.is::<T>() && e.subject.as_deref() == Some(order_id))
            .collect()
    }

    /// Waits until `condition` holds over the log, checking it on every new event.
    pub async fn wait_for(&self, what: &str, condition: impl Fn(&EventLog) -> bool) {
        let mut changes = self.changed.subscribe();
        let waiting = Waiting { what, log: self };
        within(DEADLINE, waiting, changes.wait_for(|_| condition(self)))
            .await
            .expect("the log outlives its waits");
    }

    /// Waits until the order has been confirmed or cancelled.
    pub async fn wait_terminal(&self, order_id: &str) {
        self.wait_for(&format!("order {order_id} to end"), |log| {
            !log.of::<OrderConfirmed>(order_id).is_empty()
                || !log.of::<OrderCancelled>(order_id).is_empty()
        })
        .await;
    }
}

/// What a wait on the log is for; on failure it shows the events seen by then.
struct Waiting<'a> {
    what: &'a str,
    log: &'a EventLog,
}

impl fmt::Display for Waiting<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let events: Vec<_> = self
            .log
            .all()
            .into_iter()
            .map(|e| (e.event_type, e.subject))
            .collect();
        write!(f, "{}; events: {events:#?}", self.what)
    }
}

/// Inventory and payment as the saga sees them: they answer commands per the script.
#[derive(Clone)]
pub struct Responders {
    pub script: Arc<Mutex<Script>>,
    bus: Arc<dyn Bus>,
}

impl Responders {
    pub fn set(&self, script: Script) {
        *self.script.lock().unwrap() = script;
    }

    fn script(&self) -> Script {
        self.script.lock().unwrap().clone()
    }

    /// Publishes a reply (as many times as the script says).
    pub async fn reply<T: EventType>(
        &self,
        payload: &T,
        order_id: &str,
        traceparent: Option<String>,
    ) {
        let mut event = Event::new(payload).unwrap().with_subject(order_id);
        event.traceparent = traceparent;
        for _ in 0..self.script().copies {
            self.bus.publish(&event).await.unwrap();
        }
    }

    async fn answer(&self, event: Event) {
        let script = self.script();
        let order_id = event.subject.clone().unwrap_or_default();
        let trace = event.traceparent.clone();
        if let Ok(command) = event.decode::<ReserveStock>() {
            match script.reserve {
                Answer::Ok => {
                    self.reply(
                        &StockReserved {
                            order_id: command.order_id,
                        },
                        &order_id,
                        trace,
                    )
                    .await;
                }
                Answer::Refuse(reason) => {
                    let rejected = StockRejected {
                        order_id: command.order_id,
                        item_id: command.lines[0].item_id.clone(),
                        reason,
                    };
                    self.reply(&rejected, &order_id, trace).await;
                }
                Answer::Silent => {}
            }
        } else if let Ok(command) = event.decode::<AuthorizePayment>() {
            let answer = if vaulted_card(&command.card_token).as_deref() == Some(DECLINED_CARD) {
                Answer::Refuse("card declined".to_owned())
            } else {
                script.authorize
            };
            match answer {
                Answer::Ok => {
                    let authorized = PaymentAuthorized {
                        order_id: command.order_id,
                        payment_id: format!("pay-{}", command.idempotency_key),
                    };
                    self.reply(&authorized, &order_id, trace).await;
                }
                Answer::Refuse(reason) => {
                    let declined = PaymentDeclined {
                        order_id: command.order_id,
                        reason,
                    };
                    self.reply(&declined, &order_id, trace).await;
                }
                Answer::Silent => {}
            }
        } else if let Ok(command) = event.decode::<CapturePayment>() {
            if script.capture == Answer::Ok {
                let captured = PaymentCaptured {
                    order_id: command.order_id,
                    payment_id: "pay".to_owned(),
                };
                self.reply(&captured, &order_id, trace).await;
            }
        } else if let Ok(command) = event.decode::<ReleaseStock>() {
            self.reply(
                &StockReleased {
                    order_id: command.order_id,
                },
                &order_id,
                trace,
            )
            .await;
        } else if let Ok(command) = event.decode::<VoidPayment>() {
            let voided = PaymentVoided {
                order_id: command.order_id,
                status: None,
            };
            self.reply(&voided, &order_id, trace).await;
        }
    }
}

/// Subscribes the responders (consumers `inventory` and `payment`) and a log of every
/// event (consumer `observer`) on `bus`.
pub async fn attach(bus: &Arc<dyn Bus>) -> (Responders, EventLog) {
    let responders = Responders {
        script: Arc::new(Mutex::new(Script::default())),
        bus: bus.clone(),
    };
    let log = EventLog::new();
    let observer = log.clone();
    bus.subscribe(
        SubscribeOptions::new("observer", "tideway.>"),
        Arc::new(move |event: Event| {
            observer.push(event);
            async { Ok::<_, std::io::Error>(()) }
        }),
    )
    .await
    .unwrap();
    for (consumer, subject) in [
        ("inventory", ReserveStock::SUBJECT),
        ("inventory", ReleaseStock::SUBJECT),
        ("payment", AuthorizePayment::SUBJECT),
        ("payment", CapturePayment::SUBJECT),
        ("payment", VoidPayment::SUBJECT),
    ] {
        let responders = responders.clone();
        bus.subscribe(
            SubscribeOptions::new(consumer, subject),
            Arc::new(move |event: Event| {
                let responders = responders.clone();
                async move {
                    responders.answer(event).await;
                    Ok::<_, std::io::Error>(())
                }
            }),
        )
        .await
        .unwrap();
    }
    (responders, log)
}

/// An ordering service on a random port, with its world.
pub struct TestApp {
    pub server: TestServer,
    pub ordering: Ordering,
    pub config: Config,
    pub bus: Arc<dyn Bus>,
    pub basket: FakeBasket,
    pub responders: Responders,
    pub log: EventLog,
    pub tokens: TestTokens,
    pub http: reqwest::Client,
    /// Whether inventory can take work, as checkout sees it; the test switches it.
    pub inventory_up: Arc<AtomicBool>,
}

/// An HTTP answer: status, headers and JSON body (`Null` when empty).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    /// The first named field of a problem document.
    pub fn field(&self) -> &str {
        self.body["invalid-params"][0]["name"]
            .as_str()
            .unwrap_or("")
    }

    /// The order id of a 202.
    pub fn order_id(&self) -> String {
        assert_eq!(self.status, 202, "{self:?}");
        self.body["order_id"].as_str().unwrap().to_owned()
    }
}

/// A config on `db_url` with the default timeouts.
pub fn config(db_url: &str) -> Config {
    Config {
        database_url: db_url.parse().expect("a test database URL"),
        ..Config::default()
    }
}

/// An ordering service on the embedded bus.
pub async fn spawn_app(config: Config) -> TestApp {
    let embedded = EmbeddedBus::new(EmbeddedOptions::default()).await.unwrap();
    let app = spawn_on(config, Arc::new(embedded.clone())).await;
    // Every consumer group exists now: let the relays deliver.
    embedded.open();
    app
}

/// An ordering service on `bus` (already carrying nothing of ordering's).
pub async fn spawn_on(config: Config, bus: Arc<dyn Bus>) -> TestApp {
    if let Ok(filter) = std::env::var("TEST_LOG") {
        tideway_runtime::telemetry::init(tideway_runtime::telemetry::LogFormat::Pretty, &filter);
    }
    let (responders, log) = attach(&bus).await;
    let basket = FakeBasket::new();
    let tokens = TestTokens::new();
    let inventory_up = Arc::new(AtomicBool::new(true));
    let ordering = build(&config, &bus, &tokens, &basket, &inventory_up).await;
    TestApp {
        server: TestServer::start(ordering.router()).await,
        ordering,
        config,
        bus,
        basket,
        responders,
        log,
        tokens,
        http: reqwest::Client::new(),
        inventory_up,
    }
}

async fn build(
    config: &Config,
    bus: &Arc<dyn Bus>,
    tokens: &TestTokens,
    basket: &FakeBasket,
    inventory_up: &Arc<AtomicBool>,
) -> Ordering {
    let inventory_up = Arc::clone(inventory_up);
    Ordering::build(
        config,
        bus.clone(),
        &tideway_bus::Replica::new("ordering-1"),
        tokens.verifier(),
        basket.client(),
        fake_vault(),
        Availability::from_view("inventory", move || {
            inventory_up.load(atomic::Ordering::SeqCst)
        }),
    )
    .await
    .unwrap()
}

/// The cards the fake vault holds, by token (every test's, in this process).
static VAULT: std::sync::LazyLock<Mutex<std::collections::HashMap<String, String>>> =
    std::sync::LazyLock::new(Mutex::default);

/// The card the fake vault keeps under `token`.
pub fn vaulted_card(token: &str) -> Option<String> {
    VAULT.lock().unwrap().get(token).cloned()
}

/// The payment service's vault as checkout sees it: the payment rules parse the number, a
/// bad one is a 422 naming `card`.
fn fake_vault() -> PaymentClient {
    async fn vault(axum::Json(body): axum::Json<Value>) -> Response {
        let card = body["card"].as_str().unwrap_or_default();
        match tideway_payment::card::CardNumber::parse(card) {
            Ok(card) => {
                let token = format!("ct_{}", uuid::Uuid::new_v4().simple());
                VAULT
                    .lock()
                    .unwrap()
                    .insert(token.clone(), card.digits().to_owned());
                let body = CardToken {
                    token,
                    last4: card.last4().to_owned(),
                    expires_at_ms: i64::MAX,
                };
                (StatusCode::CREATED, axum::Json(body)).into_response()
            }
            Err(_) => tideway_runtime::Problem::invalid_field("card", "invalid").into_response(),
        }
    }
    let router = Router::new().route(CARDS_PATH, axum::routing::post(vault));
    PaymentClient::new(Transport::in_process(
        "payment",
        router,
        Duration::from_secs(5),
    ))
}

impl TestApp {
    /// Shuts the service down and builds a new one on the same database and bus.
    pub async fn restart(&mut self) {
        self.ordering.shutdown().await;
        self.server.shutdown();
        self.ordering = build(
            &self.config,
            &self.bus,
            &self.tokens,
            &self.basket,
            &self.inventory_up,
        )
        .await;
        self.server = TestServer::start(self.ordering.router()).await;
    }

    /// A valid token of `user` (with `roles`).
    pub fn token_with(&self, user: &str, roles: &[&str]) -> String {
        self.tokens.token(user, roles)
    }

    /// A valid customer token of `user`.
    pub fn token(&self, user: &str) -> String {
        self.token_with(user, &["customer"])
    }

    /// Sends a raw request.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> Reply {
        let mut request = self.http.request(method, self.server.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    /// `POST /api/v1/basket/checkout` with a JSON body (or none).
    pub async fn checkout(&self, token: &str, body: Option<Value>) -> Reply {
        let headers: &[(&str, &str)] = if body.is_some() {
            &[("content-type", "application/json")]
        } else {
            &[]
        };
        self.raw(
            Method::POST,
            "/api/v1/basket/checkout",
            Some(token),
            headers,
            body.map(|b| b.to_string()),
        )
        .await
    }

    /// Checks out and waits for the order to be confirmed or cancelled.
    pub async fn checkout_to_end(&self, token: &str, body: Option<Value>) -> OrderView {
        let id = self.checkout(token, body).await.order_id();
        self.log.wait_terminal(&id).await;
        self.order(token, &id).await
    }

    /// `GET /api/v1/ordering/orders/{id}` as the token's user, expecting 200.
    pub async fn order(&self, token: &str, id: &str) -> OrderView {
        let reply = self
            .get(token, &format!("/api/v1/ordering/orders/{id}"))
            .await;
        assert_eq!(reply.status, 200, "{reply:?}");
        serde_json::from_value(reply.body).unwrap()
    }

    pub async fn get(&self, token: &str, path: &str) -> Reply {
        self.raw(Method::GET, path, Some(token), &[], None).await
    }

    /// Waits for the order's saga to end and answers the order with its timeline.
    pub async fn finished(&self, token: &str, id: &str) -> OrderView {
        self.ordering
            .saga_engine()
            .wait_finished(id, DEADLINE)
            .await
            .unwrap();
        self.order(token, id).await
    }

    /// How many order rows exist.
    pub async fn order_rows(&self) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM orders")
            .fetch_one(self.ordering.db().pool())
            .await
            .unwrap()
    }
}
