//! Card numbers rest nowhere: after checkouts that are confirmed, declined, out of stock and
//! refused for a bad check digit, no column of any service's database, no outbox row, no dead
//! letter and no event on the stream holds a card number — on SQLite with the embedded bus,
//! and on PostgreSQL with NATS JetStream. The payment vault held each card only until its
//! order's authorization, void or cancellation took it.

use std::time::Duration;

use serde_json::{Value, json};
use tideway::{App, Config, config::BusKind, invariants};
use tideway_store::{Backend, Db, DbOptions};
use tideway_testkit::{TestDb, eventually_async};

use crate::checkout::{Shopper, item_with_stock, set_stock, wait_stocked};

/// Approved (a Mastercard test number, not one of the simulated provider's own).
const APPROVED: &str = "5555 5555 5555 4444";
/// Declined by the simulated provider.
const DECLINED: &str = "4000 0000 0000 0002";
/// An American Express test number, for two buyers of the last unit.
const OUT_OF_STOCK: &str = "3782 822463 10005";
/// A wrong check digit: refused at checkout.
const BAD_CHECK_DIGIT: &str = "5555 5555 5555 4445";

/// What to look for: each number as digits and as typed.
fn needles() -> Vec<String> {
    [APPROVED, DECLINED, OUT_OF_STOCK, BAD_CHECK_DIGIT]
        .iter()
        .flat_map(|card| [card.replace(' ', ""), (*card).to_owned()])
        .collect()
}

fn config(dir: &std::path::Path) -> Config {
    let mut config = Config {
        data_dir: dir.to_path_buf(),
        ..Config::default()
    };
    config.gateway.listen = "127.0.0.1:0".to_owned();
    config
}

#[tokio::test]
async fn card_numbers_rest_nowhere_on_sqlite_and_the_embedded_bus() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.resolve().unwrap();
    checkouts_leave_no_card(config).await;
    // Every SQLite database the shop wrote, whatever its service.
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "db") {
            let db = Db::connect(
                &format!("sqlite://{}", path.display()),
                DbOptions::default(),
            )
            .await
            .unwrap();
            found.extend(grep(&db, &path.display().to_string()).await);
        }
    }
    assert!(found.is_empty(), "card numbers at rest: {found:?}");
}

#[tokio::test]
async fn card_numbers_rest_nowhere_on_postgresql_and_nats() {
    let Some(nats) = tideway_testkit::nats().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    let mut databases: Vec<(&str, TestDb)> = Vec::new();
    for service in [
        "identity",
        "catalog",
        "basket",
        "inventory",
        "payment",
        "ordering",
    ] {
        let Some(db) = tideway_testkit::postgres().await else {
            return;
        };
        let url = db.url().parse().unwrap();
        match service {
            "identity" => config.identity.service.database_url = url,
            "catalog" => config.catalog.service.database_url = url,
            "basket" => config.basket.service.database_url = url,
            "inventory" => config.inventory.service.database_url = url,
            "payment" => config.payment.service.database_url = url,
            _ => config.ordering.service.database_url = url,
        }
        databases.push((service, db));
    }
    let options = nats.options();
    config.bus.kind = BusKind::Nats;
    config.bus.nats_url = options.url.clone();
    config.bus.stream = options.stream.clone();
    config.bus.root = options.root.clone();
    config.resolve().unwrap();
    checkouts_leave_no_card(config).await;

    let mut found = Vec::new();
    for (service, db) in &databases {
        found.extend(grep(db, service).await);
    }
    // Every message the stream still holds: events, commands, replies, dead letters.
    let client = async_nats::connect(options.url.as_str()).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    let mut stream = jetstream.get_stream(&options.stream).await.unwrap();
    let info = stream.info().await.unwrap().clone();
    assert!(
        info.state.messages > 10,
        "the stream carried the checkouts: {info:?}"
    );
    for sequence in info.state.first_sequence..=info.state.last_sequence {
        let Ok(message) = stream.get_raw_message(sequence).await else {
            continue;
        };
        let payload = String::from_utf8_lossy(&message.payload);
        for needle in needles() {
            if payload.contains(&needle) {
                found.push(format!("stream message {sequence} ({})", message.subject));
            }
        }
    }
    assert!(found.is_empty(), "card numbers at rest: {found:?}");
}

/// Runs the four checkouts against the embedded shape with `config`, waits for every order
/// to end and for the vault to be empty.
async fn checkouts_leave_no_card(config: Config) {
    let app = App::embedded(&config).await.unwrap();
    let stores = app.services().unwrap().stores();
    let server = crate::serve_ready(app).await;
    let base = server.base_url();
    let deadline = Duration::from_secs(30);
    let (item, _) = item_with_stock(base, 5).await;
    wait_stocked(base, &item, deadline).await;

    // A bad check digit is refused at checkout, naming the field; the basket stays.
    let careless = Shopper::register(base).await;
    careless.add(&item, 1).await;
    let response = careless
        .http
        .post(format!("{base}/api/v1/basket/checkout"))
        .bearer_auth(&careless.token)
        .json(&json!({ "card": BAD_CHECK_DIGIT }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["invalid-params"][0]["name"], "card", "{problem}");
    assert_eq!(
        careless.basket().await["items"].as_array().map(Vec::len),
        Some(1)
    );

    let buyer = Shopper::register(base).await;
    buyer.add(&item, 1).await;
    let confirmed = buyer.checkout(Some(APPROVED)).await;
    let decliner = Shopper::register(base).await;
    decliner.add(&item, 1).await;
    let declined = decliner.checkout(Some(DECLINED)).await;
    // One unit, two buyers: one order is confirmed, the other cancelled out of stock
    // before any authorization (so only the cancellation can take its card from the vault).
    let scarce = another_item(base, &item).await;
    wait_stocked(base, &scarce, deadline).await;
    set_stock(base, &scarce, 1).await;
    let first = Shopper::register(base).await;
    let second = Shopper::register(base).await;
    first.add(&scarce, 1).await;
    second.add(&scarce, 1).await;
    let a = first.checkout(Some(OUT_OF_STOCK)).await;
    let b = second.checkout(Some(OUT_OF_STOCK)).await;

    assert_eq!(
        buyer.settled(&confirmed, deadline).await["status"],
        "confirmed"
    );
    assert_eq!(
        decliner.settled(&declined, deadline).await["status"],
        "cancelled"
    );
    let a = first.settled(&a, deadline).await;
    let b = second.settled(&b, deadline).await;
    let mut statuses = [a["status"].clone(), b["status"].clone()];
    statuses.sort_by_key(Value::to_string);
    assert_eq!(
        statuses,
        [json!("cancelled"), json!("confirmed")],
        "{a} {b}"
    );
    let pending = invariants::wait_terminal(&stores.ordering, deadline)
        .await
        .unwrap();
    assert_eq!(pending, 0);
    let report = invariants::settle(&stores, deadline).await.unwrap();
    assert!(report.holds(), "{report:#?}");
    eventually_async(deadline, "the card vault to be empty", || async {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM card_vault")
            .fetch_one(stores.payment.pool())
            .await
            .unwrap()
            == 0
    })
    .await;
    server.stop(crate::STOP_DEADLINE).await;
}

/// An item of the catalog other than `item`.
async fn another_item(base: &str, item: &str) -> String {
    let page: Value = reqwest::get(format!("{base}/api/v1/catalog/items?page_size=100"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["id"].as_str())
        .find(|id| *id != item)
        .unwrap()
        .to_owned()
}

/// Every column of every table of `db` holding a card number, as `what.table.column`.
async fn grep(db: &Db, what: &str) -> Vec<String> {
    let columns: Vec<(String, String)> = match db.backend() {
        Backend::Sqlite => {
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
            )
            .fetch_all(db.pool())
            .await
            .unwrap();
            let mut columns = Vec::new();
            for table in tables {
                let names: Vec<String> =
                    sqlx::query_scalar("SELECT name FROM pragma_table_info($1)")
                        .bind(&table)
                        .fetch_all(db.pool())
                        .await
                        .unwrap();
                columns.extend(names.into_iter().map(|c| (table.clone(), c)));
            }
            columns
        }
        Backend::Postgres => {
            let rows: Vec<(String, String)> = sqlx::query_as(
                "SELECT CAST(table_name AS TEXT), CAST(column_name AS TEXT) \
                 FROM information_schema.columns WHERE table_schema = current_schema()",
            )
            .fetch_all(db.pool())
            .await
            .unwrap();
            rows
        }
    };
    assert!(!columns.is_empty(), "{what} has tables");
    let mut found = Vec::new();
    for (table, column) in columns {
        for needle in needles() {
            let sql = format!(
                "SELECT COUNT(*) FROM \"{table}\" WHERE CAST(\"{column}\" AS TEXT) LIKE $1"
            );
            let n: i64 = sqlx::query_scalar(&sql)
                .bind(format!("%{needle}%"))
                .fetch_one(db.pool())
                .await
                .unwrap();
            if n > 0 {
                found.push(format!("{what}.{table}.{column}"));
            }
        }
    }
    found
}
