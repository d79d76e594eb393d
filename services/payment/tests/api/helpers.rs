//! `spawn_app`: the payment service on a random port over a test database and a test bus, a
//! subscriber collecting everything published on `tideway.payment.*`, and helpers per
//! command and endpoint.

use std::sync::Arc;

use reqwest::{Response, StatusCode};
use serde_json::Value;
use tideway_bus::{Bus, EmbeddedBus, EmbeddedOptions, Event, EventType, SubscribeOptions, outbox};
use tideway_payment::{Config, Payment, Provider, SimulatedProvider};
use tideway_payment_api::{
    APPROVED_CARD, AuthorizePayment, CapturePayment, CardToken, PREFIX, PaymentAuthorized,
    PaymentCaptured, PaymentDeclined, PaymentView, PaymentVoided, VoidPayment,
};
use tideway_runtime::auth::ADMIN_ROLE;
use tideway_testkit::{DEADLINE, TestNats, TestServer, TestTokens, eventually_async, within};
use tokio::sync::watch;

/// Which bus the app runs on.
pub enum TestBus {
    Embedded,
    Nats(TestNats),
}

pub struct TestApp {
    pub server: TestServer,
    pub client: reqwest::Client,
    pub payment: Payment,
    pub tokens: TestTokens,
    pub bus: Arc<dyn Bus>,
    seen: watch::Sender<Vec<Event>>,
    _nats: Option<TestNats>,
}

/// The payment service on the embedded bus over `db_url`, with default behaviour.
pub async fn spawn_app(db_url: &str) -> TestApp {
    spawn_with(
        Config {
            database_url: db_url.parse().expect("a test database URL"),
            ..Config::default()
        },
        TestBus::Embedded,
    )
    .await
}

/// The payment service with `config` on `bus`.
pub async fn spawn_with(config: Config, bus: TestBus) -> TestApp {
    spawn_with_provider(config, bus, |simulated| Arc::new(simulated.clone())).await
}

/// The payment service over `db_url` whose handlers call the provider `wrap` makes of the
/// simulated one.
pub async fn spawn_hooked(
    db_url: &str,
    wrap: impl FnOnce(&SimulatedProvider) -> Arc<dyn Provider>,
) -> TestApp {
    let config = Config {
        database_url: db_url.parse().expect("a test database URL"),
        ..Config::default()
    };
    spawn_with_provider(config, TestBus::Embedded, wrap).await
}

/// The payment service with `config` on `bus`, its provider made by `wrap`.
pub async fn spawn_with_provider(
    config: Config,
    bus: TestBus,
    wrap: impl FnOnce(&SimulatedProvider) -> Arc<dyn Provider>,
) -> TestApp {
    let (dyn_bus, embedded, nats): (Arc<dyn Bus>, Option<EmbeddedBus>, Option<TestNats>) = match bus
    {
        TestBus::Embedded => {
            let bus = EmbeddedBus::new(EmbeddedOptions::default()).await.unwrap();
            (Arc::new(bus.clone()), Some(bus), None)
        }
        TestBus::Nats(nats) => (Arc::new(nats.bus().await), None, Some(nats)),
    };
    // The saga's side: everything on tideway.payment.* (commands included) is recorded.
    let (seen, _) = watch::channel(Vec::new());
    let recorder = seen.clone();
    dyn_bus
        .subscribe(
            SubscribeOptions::new("test-ordering", "tideway.payment.*"),
            Arc::new(move |event: Event| {
                recorder.send_modify(|events| events.push(event));
                async { Ok::<_, std::io::Error>(()) }
            }),
        )
        .await
        .unwrap();

    let tokens = TestTokens::new();
    let payment = Payment::build_with(
        &config,
        dyn_bus.clone(),
        &tideway_bus::Replica::new("payment-1"),
        tokens.verifier(),
        wrap,
    )
    .await
    .expect("build the payment service");
    if let Some(embedded) = embedded {
        embedded.open();
    }
    TestApp {
        server: TestServer::start(payment.router()).await,
        client: reqwest::Client::new(),
        payment,
        tokens,
        bus: dyn_bus,
        seen,
        _nats: nats,
    }
}

/// A fresh order id.
pub fn order() -> String {
    format!("order-{}", uuid::Uuid::now_v7())
}

pub fn capture(order_id: &str) -> CapturePayment {
    CapturePayment {
        order_id: order_id.to_owned(),
        idempotency_key: format!("{order_id}:capture_payment:action"),
    }
}

pub fn void(order_id: &str) -> VoidPayment {
    VoidPayment {
        order_id: order_id.to_owned(),
        idempotency_key: format!("{order_id}:authorize_payment:compensation"),
        reason: "payment declined".to_owned(),
    }
}

/// A reply as the saga would see it.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Authorized(PaymentAuthorized),
    Declined(PaymentDeclined),
    Captured(PaymentCaptured),
    Voided(PaymentVoided),
}

impl Reply {
    fn of(event: &Event) -> Option<Self> {
        Some(match event.event_type.as_str() {
            PaymentAuthorized::SUBJECT => Self::Authorized(event.decode().unwrap()),
            PaymentDeclined::SUBJECT => Self::Declined(event.decode().unwrap()),
            PaymentCaptured::SUBJECT => Self::Captured(event.decode().unwrap()),
            PaymentVoided::SUBJECT => Self::Voided(event.decode().unwrap()),
            _ => return None,
        })
    }

    pub fn declined_reason(&self) -> &str {
        match self {
            Self::Declined(declined) => &declined.reason,
            other => panic!("expected a decline, got {other:?}"),
        }
    }
}

fn order_of(event: &Event) -> Option<String> {
    event
        .data
        .get("order_id")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

impl TestApp {
    /// `POST /cards`: vaults `card` for `order_id` as a customer.
    pub async fn vault_response(&self, order_id: &str, card: &str) -> Response {
        self.client
            .post(self.url("/cards"))
            .bearer_auth(self.token(&["customer"]))
            .json(&serde_json::json!({ "order_id": order_id, "card": card }))
            .send()
            .await
            .unwrap()
    }

    /// Vaults `card` for `order_id`; its token.
    pub async fn vault(&self, order_id: &str, card: &str) -> String {
        let response = self.vault_response(order_id, card).await;
        assert_eq!(response.status(), StatusCode::CREATED, "vault {card:?}");
        let token: CardToken = response.json().await.unwrap();
        token.token
    }

    /// The saga's authorize command for `order_id` (its step key), with `card` vaulted.
    pub async fn authorize(
        &self,
        order_id: &str,
        card: &str,
        amount_minor: i64,
    ) -> AuthorizePayment {
        AuthorizePayment {
            order_id: order_id.to_owned(),
            idempotency_key: format!("{order_id}:authorize_payment:action"),
            amount_minor,
            currency: "EUR".to_owned(),
            card_token: self.vault(order_id, card).await,
        }
    }

    /// Publishes `command` as a new event and returns the event.
    pub async fn send<T: EventType>(&self, command: &T) -> Event {
        let event = Event::new(command).unwrap();
        self.publish(&event).await;
        event
    }

    /// Publishes `event` (again, when it was already).
    pub async fn publish(&self, event: &Event) {
        self.bus.publish(event).await.unwrap();
    }

    /// Waits until `order_id` has at least `n` reply events; returns them all.
    pub async fn reply_events(&self, order_id: &str, n: usize) -> Vec<Event> {
        let replies = |events: &Vec<Event>| -> Vec<Event> {
            events
                .iter()
                .filter(|e| Reply::of(e).is_some() && order_of(e).as_deref() == Some(order_id))
                .cloned()
                .collect()
        };
        let mut rx = self.seen.subscribe();
        let found = within(
            DEADLINE,
            format!("{n} replies for {order_id}"),
            rx.wait_for(|events| replies(events).len() >= n),
        )
        .await
        .unwrap();
        replies(&found)
    }

    /// Waits until `order_id` has at least `n` replies; returns them all.
    pub async fn replies(&self, order_id: &str, n: usize) -> Vec<Reply> {
        self.reply_events(order_id, n)
            .await
            .iter()
            .filter_map(Reply::of)
            .collect()
    }

    /// Waits for the `n`th reply of `order_id` (1-based).
    pub async fn reply(&self, order_id: &str, n: usize) -> Reply {
        self.replies(order_id, n).await.swap_remove(n - 1)
    }

    /// Waits until the outbox has nothing pending: on the embedded bus every reply has then
    /// reached the test subscriber.
    pub async fn settled(&self) {
        eventually_async(DEADLINE, "the outbox to have nothing pending", || async {
            outbox::pending(self.payment.db()).await.unwrap() == 0
        })
        .await;
    }

    /// The payment of `order_id` in the database.
    pub async fn stored(&self, order_id: &str) -> Option<PaymentView> {
        self.payment
            .snapshot()
            .await
            .unwrap()
            .payments
            .into_iter()
            .find(|p| p.order_id == order_id)
    }

    /// Provider ledger entries of `operation` for `order_id`.
    pub async fn ledger(&self, order_id: &str, operation: &str) -> i64 {
        self.payment
            .provider()
            .ledger_entries(order_id, operation)
            .await
            .unwrap()
    }

    /// A single number from `sql` with one text parameter.
    pub async fn count(&self, sql: &str, param: &str) -> i64 {
        sqlx::query_scalar(sql)
            .bind(param)
            .fetch_one(self.payment.db().pool())
            .await
            .unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        self.server.url(&format!("{PREFIX}{path}"))
    }

    pub fn token(&self, roles: &[&str]) -> String {
        self.tokens.token("user-1", roles)
    }

    pub async fn get_as(&self, path: &str, roles: Option<&[&str]>) -> Response {
        let mut request = self.client.get(self.url(path));
        if let Some(roles) = roles {
            request = request.bearer_auth(self.token(roles));
        }
        request.send().await.unwrap()
    }

    /// `GET` as an admin, expecting 200.
    pub async fn admin_json(&self, path: &str) -> Value {
        let response = self.get_as(path, Some(&[ADMIN_ROLE])).await;
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.json().await.unwrap()
    }

    /// Authorizes a fresh order with the approved card and waits for the reply.
    pub async fn authorized_order(&self, amount_minor: i64) -> (String, PaymentAuthorized) {
        let order_id = order();
        self.send(&self.authorize(&order_id, APPROVED_CARD, amount_minor).await)
            .await;
        match self.reply(&order_id, 1).await {
            Reply::Authorized(authorized) => (order_id, authorized),
            other => panic!("expected an authorization, got {other:?}"),
        }
    }

    pub async fn stop(&self) {
        self.payment.shutdown().await;
        self.bus.shutdown().await;
        self.server.shutdown();
    }
}
