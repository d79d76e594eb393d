//! The service over a test database and an embedded bus that keeps an event log, and the
//! events it reads.

use std::{sync::Arc, time::Duration};

use tideway_bus::{Bus, EmbeddedBus, EmbeddedOptions, Event, Replica};
use tideway_ordering_api::{OrderCancelled, OrderConfirmed, OrderLine, OrderPlaced};
use tideway_reporting::{Config, Reporting};
use tideway_reporting_api::{Funnel, RevenueReport, SalesReport, TopItems};
use tideway_store::Db;
use tideway_testkit::{TestDb, TestServer, TestTokens};
use time::OffsetDateTime;

pub struct TestApp {
    pub server: TestServer,
    pub client: reqwest::Client,
    pub tokens: TestTokens,
    pub bus: Arc<dyn Bus>,
    pub service: Reporting,
    /// The bus's database, holding its event log.
    pub log: Db,
    _db: TestDb,
    _log: TestDb,
}

/// Everything the service's models hold, as its API shows them.
#[derive(Debug, PartialEq, Eq)]
pub struct Models {
    pub sales: SalesReport,
    pub revenue: RevenueReport,
    pub funnel: Funnel,
    pub top: TopItems,
}

/// The service on `db` (a fresh database of either engine).
pub async fn spawn(db: TestDb) -> TestApp {
    let log = tideway_testkit::sqlite().await;
    let config = Config {
        database_url: db.url().parse().unwrap(),
    };
    let bus = EmbeddedBus::new(EmbeddedOptions {
        dead_letters: Some((*log).clone()),
        event_log_retention: Some(Duration::from_secs(7 * 86_400)),
    })
    .await
    .unwrap();
    let tokens = TestTokens::new();
    let dyn_bus: Arc<dyn Bus> = Arc::new(bus.clone());
    let service = Reporting::build(
        &config,
        dyn_bus.clone(),
        &Replica::new("reporting-1"),
        tokens.verifier(),
    )
    .await
    .expect("build the reporting service");
    bus.open();
    TestApp {
        server: TestServer::start(service.router()).await,
        client: reqwest::Client::new(),
        tokens,
        bus: dyn_bus,
        service,
        log: (*log).clone(),
        _db: db,
        _log: log,
    }
}

/// 2026-03-01 at `hour`:00 UTC.
pub fn at(day: u8, hour: u8) -> OffsetDateTime {
    let date = time::Date::from_calendar_date(2026, time::Month::March, day).unwrap();
    date.with_hms(hour, 0, 0).unwrap().assume_utc()
}

pub fn line(item: &str, price: i64, quantity: i64) -> OrderLine {
    OrderLine {
        item_id: item.to_owned(),
        name: format!("The {item}"),
        unit_price_minor: price,
        quantity,
    }
}

pub fn placed(order: &str, lines: Vec<OrderLine>, time: OffsetDateTime) -> Event {
    let total_minor = lines.iter().map(|l| l.unit_price_minor * l.quantity).sum();
    let mut event = Event::new(&OrderPlaced {
        order_id: order.to_owned(),
        user_id: "ada".to_owned(),
        lines,
        total_minor,
        email: None,
    })
    .unwrap();
    event.time = time;
    event
}

pub fn confirmed(order: &str, lines: Vec<OrderLine>, time: OffsetDateTime) -> Event {
    let total_minor = lines.iter().map(|l| l.unit_price_minor * l.quantity).sum();
    let mut event = Event::new(&OrderConfirmed {
        order_id: order.to_owned(),
        user_id: "ada".to_owned(),
        lines,
        total_minor,
    })
    .unwrap();
    event.time = time;
    event
}

pub fn cancelled(order: &str, reason: &str, time: OffsetDateTime) -> Event {
    let mut event = Event::new(&OrderCancelled {
        order_id: order.to_owned(),
        user_id: "ada".to_owned(),
        reason: reason.to_owned(),
    })
    .unwrap();
    event.time = time;
    event
}

/// Three orders over two days: one confirmed each day, one cancelled; and a fourth
/// cancelled for another reason.
pub fn story() -> Vec<Event> {
    let a = vec![line("kettle", 1299, 2), line("beans", 850, 1)];
    let b = vec![line("beans", 850, 3)];
    let c = vec![line("grinder", 4500, 1)];
    vec![
        placed("o-1", a.clone(), at(1, 9)),
        confirmed("o-1", a, at(1, 9)),
        placed("o-2", b.clone(), at(1, 23)),
        placed("o-3", c, at(2, 8)),
        cancelled("o-3", "payment declined: card declined", at(2, 8)),
        confirmed("o-2", b, at(2, 0)),
        placed("o-4", vec![line("kettle", 1299, 1)], at(2, 10)),
        cancelled("o-4", "stock rejected: sold out", at(2, 10)),
    ]
}

impl TestApp {
    /// Publishes `events` in order (each returns once handled).
    pub async fn publish(&self, events: &[Event]) {
        for event in events {
            self.bus.publish(event).await.unwrap();
        }
    }

    pub async fn get(&self, path: &str, roles: &[&str]) -> reqwest::Response {
        self.client
            .get(self.server.url(path))
            .bearer_auth(self.tokens.token("ops", roles))
            .send()
            .await
            .unwrap()
    }

    async fn json<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        let response = self.get(path, &["admin"]).await;
        assert_eq!(response.status(), 200, "{path}");
        response.json().await.unwrap()
    }

    /// Every model, through the API.
    pub async fn models(&self) -> Models {
        Models {
            sales: self.json("/api/v1/reporting/sales").await,
            revenue: self.json("/api/v1/reporting/revenue").await,
            funnel: self.json("/api/v1/reporting/funnel").await,
            top: self.json("/api/v1/reporting/top-items").await,
        }
    }
}
