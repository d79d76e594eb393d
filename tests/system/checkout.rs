//! Checkout end to end through the gateway: happy path, decline, out of stock and a step
//! timeout, on the embedded bus and on NATS JetStream, with the invariants checked after.

use std::time::Duration;

use serde_json::{Value, json};
use tideway::{App, Config, config::BusKind, invariants};
use tideway_store::{Db, DbOptions};
use tideway_testkit::{TestNats, eventually_async};

use crate::scenario;

/// A shopper with a token, against one gateway.
pub struct Shopper {
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
}

impl Shopper {
    pub async fn register(base: &str) -> Self {
        let http = reqwest::Client::new();
        let email = format!("buyer-{}@example.com", uuid::Uuid::new_v4().simple());
        let response = http
            .post(format!("{base}/api/v1/identity/register"))
            .json(&json!({ "email": email, "password": "correct-horse-9", "name": "Buyer" }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let token = scenario::login(&http, base, &email, "correct-horse-9").await;
        Self {
            base: base.to_owned(),
            token,
            http,
        }
    }

    pub async fn add(&self, item_id: &str, quantity: i64) {
        let response = self
            .http
            .post(format!("{}/api/v1/basket/items", self.base))
            .bearer_auth(&self.token)
            .json(&json!({ "item_id": item_id, "quantity": quantity }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{:?}", response.text().await);
    }

    /// Checks out; returns the order id.
    pub async fn checkout(&self, card: Option<&str>) -> String {
        match self.try_checkout(card).await {
            Ok(id) => id,
            Err((status, problem)) => panic!("checkout refused with {status}: {problem}"),
        }
    }

    /// Checks out: the order id, or the refusal's status and problem document.
    pub async fn try_checkout(&self, card: Option<&str>) -> Result<String, (u16, Value)> {
        let body = match card {
            Some(card) => json!({ "card": card }),
            None => json!({}),
        };
        let response = self
            .http
            .post(format!("{}/api/v1/basket/checkout", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap();
        if status != 202 {
            return Err((status, answer));
        }
        assert_eq!(answer["status"], "pending");
        Ok(answer["order_id"].as_str().unwrap().to_owned())
    }

    /// Adds to the basket: the status and the answer (a basket or a problem).
    pub async fn try_add(&self, item_id: &str, quantity: i64) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}/api/v1/basket/items", self.base))
            .bearer_auth(&self.token)
            .json(&json!({ "item_id": item_id, "quantity": quantity }))
            .send()
            .await
            .unwrap();
        (
            response.status().as_u16(),
            response.json().await.unwrap_or(Value::Null),
        )
    }

    pub async fn order(&self, id: &str) -> Value {
        let response = self
            .http
            .get(format!("{}/api/v1/ordering/orders/{id}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// Waits until the order is confirmed or cancelled.
    pub async fn settled(&self, id: &str, deadline: Duration) -> Value {
        eventually_async(deadline, format!("order {id} to leave pending"), || async {
            Some(self.order(id).await).filter(|order| order["status"] != "pending")
        })
        .await
    }

    /// Waits until the shopper's notifications show a sent one of `kind` about order `id`,
    /// read through the gateway; returns it.
    pub async fn notified(&self, id: &str, kind: &str, deadline: Duration) -> Value {
        eventually_async(deadline, format!("a sent {kind} notification"), || async {
            let page: Value = self
                .http
                .get(format!("{}/api/v1/notification/notifications", self.base))
                .bearer_auth(&self.token)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            page["items"]
                .as_array()?
                .iter()
                .find(|n| n["order_id"] == id && n["kind"] == kind && n["status"] == "sent")
                .cloned()
        })
        .await
    }

    pub async fn basket(&self) -> Value {
        self.http
            .get(format!("{}/api/v1/basket", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// An item with at least `stock` units in the catalog.
pub async fn item_with_stock(base: &str, stock: i64) -> (String, i64) {
    let page: Value = reqwest::get(format!(
        "{base}/api/v1/catalog/items?page_size=100&sort=price_asc"
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let item = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["stock"].as_i64().unwrap() >= stock)
        .unwrap();
    (
        item["id"].as_str().unwrap().to_owned(),
        item["price_minor"].as_i64().unwrap(),
    )
}

/// Waits until the inventory knows `item_id` (it seeds from the catalog in the background
/// when the services are separate processes).
pub async fn wait_stocked(base: &str, item_id: &str, deadline: Duration) {
    let stock = format!("{base}/api/v1/inventory/stock/{item_id}");
    eventually_async(
        deadline,
        format!("inventory to stock {item_id}"),
        || async { reqwest::get(&stock).await.unwrap().status() == 200 },
    )
    .await;
}

/// Sets an item's stock as the admin.
pub async fn set_stock(base: &str, item_id: &str, available: i64) {
    let http = reqwest::Client::new();
    let admin = scenario::login(&http, base, "admin@tideway.local", "tideway-admin-1").await;
    let response = http
        .put(format!("{base}/api/v1/inventory/stock/{item_id}"))
        .bearer_auth(&admin)
        .json(&json!({ "available": available }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
}

/// Happy path, decline and out of stock against one running system.
pub async fn checkout_outcomes(base: &str) {
    let deadline = Duration::from_secs(30);
    let (item, price) = item_with_stock(base, 5).await;
    wait_stocked(base, &item, deadline).await;

    // Happy path: confirmed, the timeline has every step, the basket is emptied.
    let buyer = Shopper::register(base).await;
    buyer.add(&item, 2).await;
    let id = buyer.checkout(None).await;
    let order = buyer.settled(&id, deadline).await;
    assert_eq!(order["status"], "confirmed", "{order}");
    assert_eq!(order["total_minor"].as_i64().unwrap(), 2 * price);
    assert_eq!(order["trace_id"].as_str().unwrap().len(), 32);
    let steps: Vec<&str> = order["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "action")
        .map(|e| e["step"].as_str().unwrap())
        .collect();
    for step in ["reserve_stock", "authorize_payment", "confirm_order"] {
        assert!(steps.contains(&step), "{step} missing from {order}");
    }
    eventually_async(deadline, "the basket to be cleared", || async {
        buyer.basket().await["items"]
            .as_array()
            .is_none_or(|items| items.is_empty())
    })
    .await;
    let listed: Value = buyer
        .http
        .get(format!("{base}/api/v1/ordering/orders"))
        .bearer_auth(&buyer.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(listed.to_string().contains(&id), "{listed}");
    // The notification service mailed the buyer (the embedded default: its mailbox).
    let note = buyer.notified(&id, "order_confirmed", deadline).await;
    assert!(
        note["text"].as_str().unwrap().contains("is confirmed"),
        "{note}"
    );

    // The declining test card: cancelled with the reason, stock released.
    let decliner = Shopper::register(base).await;
    decliner.add(&item, 1).await;
    let id = decliner.checkout(Some("4000 0000 0000 0002")).await;
    let order = decliner.settled(&id, deadline).await;
    assert_eq!(order["status"], "cancelled", "{order}");
    assert!(
        order["reason"].as_str().unwrap().contains("declined"),
        "{order}"
    );
    let note = decliner.notified(&id, "order_cancelled", deadline).await;
    assert!(
        note["text"].as_str().unwrap().contains("declined"),
        "{note}"
    );

    // Out of stock: one unit left, two buyers; exactly one order is confirmed.
    let (scarce, _) = item_with_stock(base, 1).await;
    set_stock(base, &scarce, 1).await;
    let first = Shopper::register(base).await;
    let second = Shopper::register(base).await;
    wait_catalog_stock(base, &scarce, deadline, |item| item["stock"] == 1).await;
    first.add(&scarce, 1).await;
    second.add(&scarce, 1).await;
    let a = first.checkout(None).await;
    let a = first.settled(&a, deadline).await;
    assert_eq!(a["status"], "confirmed", "{a}");
    // The second checkout either finds the line sold out already (422 naming it, no
    // order) or races the reservation's announcement and is cancelled by the inventory.
    match second.try_checkout(None).await {
        Ok(b) => {
            let b = second.settled(&b, deadline).await;
            assert_eq!(b["status"], "cancelled", "{b}");
            assert!(
                b["reason"].as_str().unwrap().contains("out of stock"),
                "{b}"
            );
        }
        Err((status, problem)) => {
            assert_eq!(status, 422, "{problem}");
            assert_eq!(
                problem["invalid-params"][0]["name"], "items[0]",
                "{problem}"
            );
        }
    }

    sold_out_is_shown_and_refused(base, deadline).await;
}

/// Waits until the catalog's answer for `item_id` satisfies `ready`.
pub async fn wait_catalog_stock(
    base: &str,
    item_id: &str,
    deadline: Duration,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    let url = format!("{base}/api/v1/catalog/items/{item_id}");
    eventually_async(
        deadline,
        format!("the catalog's copy of the stock of {item_id}"),
        || async {
            let item: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
            Some(item).filter(|item| ready(item))
        },
    )
    .await
}

/// The last unit reserved: the catalog says sold out (its copy follows the inventory's
/// events), another add is refused with 409, a basket holding the item marks its line, and
/// checking that basket out is refused with 422 naming the line before any order exists.
pub async fn sold_out_is_shown_and_refused(base: &str, deadline: Duration) {
    let (item, _) = item_with_stock(base, 2).await;
    wait_stocked(base, &item, deadline).await;
    set_stock(base, &item, 1).await;
    wait_catalog_stock(base, &item, deadline, |item| {
        item["stock"] == 1 && item["sold_out"] == false
    })
    .await;
    let buyer = Shopper::register(base).await;
    let late = Shopper::register(base).await;
    late.add(&item, 1).await;
    buyer.add(&item, 1).await;
    let id = buyer.checkout(None).await;
    assert_eq!(buyer.settled(&id, deadline).await["status"], "confirmed");

    let shown = wait_catalog_stock(base, &item, deadline, |item| item["sold_out"] == true).await;
    assert_eq!(shown["stock"], 0, "{shown}");
    let listed: Value = reqwest::get(format!("{base}/api/v1/catalog/items?page_size=100"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    if let Some(listed) = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == item.as_str())
    {
        assert_eq!(listed["sold_out"], true, "{listed}");
    }

    // The basket prices from its cache, which the catalog's announcement clears.
    let problem = eventually_async(deadline, "the basket to refuse a sold-out item", || async {
        let (status, answer) = late.try_add(&item, 1).await;
        Some(answer).filter(|_| status == 409)
    })
    .await;
    assert_eq!(problem["type"], "/problems/sold-out", "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("sold out"),
        "{problem}"
    );
    let basket = late.basket().await;
    assert_eq!(basket["items"][0]["sold_out"], true, "{basket}");
    assert_eq!(basket["items"][0]["available"], false, "{basket}");
    let (status, problem) = late.try_checkout(None).await.unwrap_err();
    assert_eq!(status, 422, "{problem}");
    assert_eq!(
        problem["invalid-params"][0]["name"], "items[0]",
        "{problem}"
    );
    assert!(
        problem["detail"].as_str().unwrap().contains("sold out"),
        "{problem}"
    );
    let orders: Value = late
        .http
        .get(format!("{base}/api/v1/ordering/orders"))
        .bearer_auth(&late.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        orders["items"].as_array().map(Vec::len),
        Some(0),
        "no order was placed: {orders}"
    );
}

fn config(dir: &std::path::Path) -> Config {
    let mut config = Config {
        data_dir: dir.to_path_buf(),
        ..Config::default()
    };
    config.gateway.listen = "127.0.0.1:0".to_owned();
    config
}

async fn run_embedded(
    config: Config,
    test: impl AsyncFnOnce(&str, &invariants::Stores),
) -> invariants::Report {
    let app = App::embedded(&config).await.unwrap();
    let stores = app.services().unwrap().stores();
    let server = crate::serve_ready(app).await;
    test(server.base_url(), &stores).await;
    let pending = invariants::wait_terminal(&stores.ordering, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(pending, 0, "every order is terminal");
    let report = invariants::settle(&stores, Duration::from_secs(30))
        .await
        .unwrap();
    server.stop(crate::STOP_DEADLINE).await;
    report
}

/// `config` carrying events on the private stream of `nats`.
fn on_nats(mut config: Config, nats: &TestNats) -> Config {
    let options = nats.options();
    config.bus.kind = BusKind::Nats;
    config.bus.nats_url = options.url;
    config.bus.stream = options.stream;
    config.bus.root = options.root;
    config
}

#[tokio::test]
async fn checkout_on_the_embedded_bus() {
    let dir = tempfile::tempdir().unwrap();
    outcomes_hold(config(dir.path())).await;
}

#[tokio::test]
async fn checkout_on_nats_jetstream() {
    let Some(nats) = tideway_testkit::nats().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    outcomes_hold(on_nats(config(dir.path()), &nats)).await;
}

/// The distributed shape's stores in one process: events on NATS, baskets on Redis (a key
/// prefix of the test's own, deleted afterwards). Checkout reads the basket and the
/// confirmed order empties it exactly as on SQL.
#[tokio::test]
async fn checkout_on_nats_with_the_basket_on_redis() {
    let Some(nats) = tideway_testkit::nats().await else {
        return;
    };
    let url = std::env::var("TIDEWAY_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let client = redis::Client::open(url.as_str()).unwrap();
    let Ok(mut connection) = client.get_multiplexed_async_connection().await else {
        assert!(
            !tideway_testkit::is_ci(),
            "Redis at {url} is unreachable and CI=true"
        );
        eprintln!("note: skipping: Redis at {url} is unreachable");
        return;
    };
    let prefix = format!("tideway:test:system:{}", uuid::Uuid::new_v4().simple());
    let dir = tempfile::tempdir().unwrap();
    let mut config = on_nats(config(dir.path()), &nats);
    config.basket.service.store = tideway_basket::StoreKind::Redis;
    config.basket.service.redis_url = tideway_basket::RedisUrl::parse(&url).unwrap();
    config.basket.service.redis_key_prefix = prefix.clone();
    outcomes_hold(config).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!(
        keys.iter().any(|key| key.contains(":inbox:basket:")),
        "confirmed orders were recorded in the Redis inbox: {keys:?}"
    );
    let _: () = redis::cmd("DEL")
        .arg(keys)
        .query_async(&mut connection)
        .await
        .unwrap();
}

/// [`checkout_outcomes`] on the embedded shape with `config`; the invariants hold after.
async fn outcomes_hold(mut config: Config) {
    config.resolve().unwrap();
    let report = run_embedded(config, async |base, _| checkout_outcomes(base).await).await;
    assert!(report.holds(), "{report:#?}");
    // Cancelled: the declined card, and the second scarce order when it raced the stock
    // announcement (otherwise it was refused before it existed).
    assert!(
        report.orders("confirmed") >= 3 && report.orders("cancelled") >= 1,
        "{report:#?}"
    );
}

/// The payment provider answers after the saga's deadline: the order is cancelled as
/// timed out, compensations run, and the late answer changes nothing.
/// The checker reads every service's snapshot, and one it cannot read fails the check: it
/// never passes on data it did not see.
#[tokio::test]
async fn the_checker_fails_on_a_database_it_cannot_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.resolve().unwrap();
    let urls = [
        config.ordering.service.database_url.clone(),
        config.inventory.service.database_url.clone(),
        config.payment.service.database_url.clone(),
    ];
    let report = run_embedded(config, async |base, _| {
        let (item, _) = item_with_stock(base, 1).await;
        let buyer = Shopper::register(base).await;
        buyer.add(&item, 1).await;
        let id = buyer.checkout(None).await;
        buyer.settled(&id, Duration::from_secs(30)).await;
    })
    .await;
    assert!(report.holds(), "{report:#?}");
    assert_eq!(report.orders("confirmed"), 1, "{report:#?}");

    // The services are stopped; their files stay. Each database in turn is unreadable.
    for (closed, service) in ["ordering", "inventory", "payment"].iter().enumerate() {
        let mut dbs = Vec::new();
        for url in &urls {
            dbs.push(Db::open(url, DbOptions::default()).await.unwrap());
        }
        let stores = invariants::Stores {
            ordering: dbs[0].clone(),
            inventory: dbs[1].clone(),
            payment: dbs[2].clone(),
        };
        assert!(invariants::check(&stores).await.unwrap().holds());
        dbs[closed].close().await;
        let err = invariants::check(&stores).await.unwrap_err();
        assert!(format!("{err:#}").contains(service), "{err:#}");
        assert!(
            invariants::settle(&stores, Duration::from_millis(200))
                .await
                .is_err()
        );
        if *service == "ordering" {
            assert!(
                invariants::wait_terminal(&stores.ordering, Duration::from_millis(200))
                    .await
                    .is_err()
            );
        }
    }
}

#[tokio::test]
async fn a_step_timeout_cancels_and_compensates() {
    let dir = tempfile::tempdir().unwrap();
    step_timeout(config(dir.path())).await;
}

#[tokio::test]
async fn a_step_timeout_cancels_and_compensates_on_nats() {
    let Some(nats) = tideway_testkit::nats().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    step_timeout(on_nats(config(dir.path()), &nats)).await;
}

async fn step_timeout(mut config: Config) {
    config.payment.service.latency_ms = 1_500;
    config.ordering.service.payment_timeout_ms = 300;
    // No second chance, and a bus timed for such a short step.
    config.ordering.service.step_resends = 0;
    config.bus.ack_wait_ms = 100;
    config.bus.relay_lease_ttl_ms = 120;
    config.bus.relay_poll_ms = 50;
    config.resolve().unwrap();
    let report = run_embedded(config, async |base, stores| {
        let (item, _) = item_with_stock(base, 3).await;
        let buyer = Shopper::register(base).await;
        buyer.add(&item, 1).await;
        let id = buyer.checkout(None).await;
        let order = buyer.settled(&id, Duration::from_secs(30)).await;
        assert_eq!(order["status"], "cancelled", "{order}");
        assert!(
            order["reason"].as_str().unwrap().contains("timed out"),
            "{order}"
        );
        // The slow provider answers late. Once payment has handled both the authorize and
        // the void (in either order), nothing may be held for the cancelled order.
        let handled = "payment to handle the authorize and the void";
        eventually_async(Duration::from_secs(20), handled, || async {
            let handled: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM inbox WHERE consumer = 'payment'")
                    .fetch_one(stores.payment.pool())
                    .await
                    .unwrap();
            handled >= 2
        })
        .await;
        let held: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM payments WHERE status IN ('authorized', 'captured')",
        )
        .fetch_one(stores.payment.pool())
        .await
        .unwrap();
        assert_eq!(held, 0, "the late authorization holds nothing");
    })
    .await;
    assert!(report.holds(), "{report:#?}");
    assert_eq!(report.orders("cancelled"), 1, "{report:#?}");
}
