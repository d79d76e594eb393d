//! A process killed with SIGKILL in the middle of many checkouts loses nothing: restarted on
//! the same data, every order reaches a terminal state and the invariants hold. Killed
//! again and again while shoppers check out, in both shapes, no order is cancelled for a
//! step that timed out: steps send their commands again, the bus hands a dead consumer's
//! events back after its short ack wait, and a restarted relay takes its lease back at once.

use std::{
    sync::{
        Arc, RwLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tideway::invariants;
use tideway_store::{Db, DbOptions};
use tideway_testkit::eventually;
use tokio_util::sync::CancellationToken;

use crate::{
    checkout::{Shopper, item_with_stock, set_stock, wait_stocked},
    processes::{Distributed, Proc},
    scenario,
};

const ORDERS: usize = 12;

#[tokio::test]
async fn sigkill_mid_checkout_then_restart_settles_every_order() {
    let dir = tempfile::tempdir().unwrap();
    let env = vec![
        (
            "TIDEWAY_DATA_DIR".to_owned(),
            dir.path().display().to_string(),
        ),
        // Each start binds a port of its own and says which.
        (
            "TIDEWAY_GATEWAY__LISTEN".to_owned(),
            "127.0.0.1:0".to_owned(),
        ),
        // A slow provider keeps sagas in flight when the process dies.
        ("TIDEWAY_PAYMENT__LATENCY_MS".to_owned(), "150".to_owned()),
    ];

    let mut first = Proc::start("tideway", &["up"], &env, dir.path());
    let base = first.listening(Duration::from_secs(60)).await.unwrap();
    scenario::wait_ready(&base, Duration::from_secs(60)).await;
    let (item, _) = item_with_stock(&base, ORDERS as i64 + 5).await;
    let mut shoppers = Vec::new();
    for _ in 0..ORDERS {
        let shopper = Shopper::register(&base).await;
        shopper.add(&item, 1).await;
        shoppers.push(shopper);
    }
    let checkouts: Vec<_> = shoppers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            s.checkout(if i % 3 == 0 {
                Some("4000000000000002")
            } else {
                None
            })
        })
        .collect();
    let accepted = futures_util::future::join_all(checkouts).await;
    assert_eq!(accepted.len(), ORDERS);
    // Killed at once: sagas are mid-flight, replies sit in outboxes.
    drop(first);

    let mut second = Proc::start("tideway", &["up"], &env, dir.path());
    let base = second.listening(Duration::from_secs(60)).await.unwrap();
    scenario::wait_ready(&base, Duration::from_secs(60)).await;
    // The buyers come back to the restarted shop.
    for shopper in &mut shoppers {
        shopper.base.clone_from(&base);
    }
    let open = |name: &str| {
        let url = format!("sqlite://{}/{name}.db", dir.path().display());
        async move { Db::connect(&url, DbOptions::default()).await.unwrap() }
    };
    let stores = invariants::Stores {
        ordering: open("ordering").await,
        inventory: open("inventory").await,
        payment: open("payment").await,
    };
    let pending = invariants::wait_terminal(&stores.ordering, Duration::from_secs(60))
        .await
        .unwrap();
    if pending != 0 {
        eprintln!("{}", second.log());
    }
    assert_eq!(pending, 0, "every order is terminal after the restart");
    let report = invariants::settle(&stores, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(report.holds(), "{report:#?}");
    assert_eq!(
        report.orders("confirmed") + report.orders("cancelled"),
        ORDERS,
        "{report:#?}"
    );
    assert!(
        report.orders("cancelled") >= ORDERS / 3,
        "declines cancel: {report:#?}"
    );
    // Every order the buyers were told about exists and settled.
    for (shopper, id) in shoppers.iter().zip(&accepted) {
        let order = shopper.order(id).await;
        assert_ne!(order["status"], "pending", "{order}");
    }
    drop(second);
}

/// Shoppers checking out without pause against a gateway that may be down for a while:
/// each adds an item and checks out, again and again; failed calls (a killed process) are
/// shrugged off and tried again. The orders themselves are counted in the database.
struct Traffic {
    base: Arc<RwLock<String>>,
    accepted: Arc<AtomicUsize>,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    async fn start(base: &str, item: &str, shoppers: usize) -> Self {
        let shared = Arc::new(RwLock::new(base.to_owned()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        for n in 0..shoppers {
            let shopper = Shopper::register(base).await;
            let (shared, accepted, stop) = (shared.clone(), accepted.clone(), stop.clone());
            let item = item.to_owned();
            // Every third shopper pays with the declining card: those orders cancel for it.
            let card = if n % 3 == 0 {
                serde_json::json!({ "card": "4000000000000002" })
            } else {
                serde_json::json!({})
            };
            tasks.push(tokio::spawn(async move {
                let http = reqwest::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .unwrap();
                while !stop.is_cancelled() {
                    let base = shared.read().unwrap().clone();
                    // One unit per order: what an earlier, failed checkout left goes first.
                    let _ = http
                        .delete(format!("{base}/api/v1/basket"))
                        .bearer_auth(&shopper.token)
                        .send()
                        .await;
                    let added = http
                        .post(format!("{base}/api/v1/basket/items"))
                        .bearer_auth(&shopper.token)
                        .json(&serde_json::json!({ "item_id": item, "quantity": 1 }))
                        .send()
                        .await
                        .is_ok_and(|r| r.status() == 200);
                    let placed = added
                        && http
                            .post(format!("{base}/api/v1/basket/checkout"))
                            .bearer_auth(&shopper.token)
                            .json(&card)
                            .send()
                            .await
                            .is_ok_and(|r| r.status() == 202);
                    if placed {
                        accepted.fetch_add(1, Ordering::SeqCst);
                    }
                    // A pace a small machine keeps up with, and a pause after a failure.
                    let pause = if placed { 100 } else { 300 };
                    tokio::select! {
                        () = stop.cancelled() => {}
                        () = tokio::time::sleep(Duration::from_millis(pause)) => {}
                    }
                }
            }));
        }
        Self {
            base: shared,
            accepted,
            stop,
            tasks,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Waits until `more` checkouts beyond those accepted so far are accepted.
    async fn more(&self, more: usize) {
        let target = self.accepted() + more;
        eventually(
            Duration::from_secs(120),
            format!("{target} checkouts accepted"),
            || self.accepted() >= target,
        )
        .await;
    }

    fn point_at(&self, base: &str) {
        base.clone_into(&mut self.base.write().unwrap());
    }

    async fn stop(self) {
        self.stop.cancel();
        for task in self.tasks {
            task.await.unwrap();
        }
    }
}

/// Asserts that after crashes every order settled, none was cancelled for a step that timed
/// out (only declined cards cancel), and the invariants hold; answers the orders' count.
async fn no_order_lost_to_a_crash(stores: &invariants::Stores, log: impl Fn() -> String) -> usize {
    // Designed to settle within 30 s of the last restart; the margin is for a loaded machine.
    let pending = invariants::wait_terminal(&stores.ordering, Duration::from_secs(60))
        .await
        .unwrap();
    if pending != 0 {
        eprintln!("{}", log());
    }
    assert_eq!(pending, 0, "every order is terminal after the restarts");
    let orders = tideway_ordering::Snapshot::read(&stores.ordering)
        .await
        .unwrap()
        .orders;
    let timed_out: Vec<_> = orders
        .iter()
        .filter(|o| o.reason.as_deref().is_some_and(|r| r.contains("timed out")))
        .map(|o| (o.id.clone(), o.reason.clone()))
        .collect();
    if !timed_out.is_empty() {
        eprintln!("{}", log());
    }
    assert!(
        timed_out.is_empty(),
        "cancelled by a step timeout: {timed_out:?}"
    );
    for order in &orders {
        if let Some(reason) = &order.reason {
            assert!(reason.starts_with("payment declined"), "{reason}");
        }
    }
    let report = invariants::settle(stores, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(report.holds(), "{report:#?}");
    assert!(report.orders("confirmed") > 0, "{report:#?}");
    orders.len()
}

/// `tideway up` killed with SIGKILL three times while shoppers check out — inventory,
/// payment and ordering die together in one process — and restarted on the same data each
/// time: no order is cancelled for a timeout, every one settles, the invariants hold.
#[tokio::test]
async fn embedded_shop_killed_again_and_again_mid_checkout_loses_no_order() {
    let dir = tempfile::tempdir().unwrap();
    let env = vec![
        (
            "TIDEWAY_DATA_DIR".to_owned(),
            dir.path().display().to_string(),
        ),
        (
            "TIDEWAY_GATEWAY__LISTEN".to_owned(),
            "127.0.0.1:0".to_owned(),
        ),
        ("TIDEWAY_PAYMENT__LATENCY_MS".to_owned(), "50".to_owned()),
    ];
    let mut shop = Proc::start("tideway", &["up"], &env, dir.path());
    let base = shop.listening(Duration::from_secs(60)).await.unwrap();
    scenario::wait_ready(&base, Duration::from_secs(60)).await;
    let (item, _) = item_with_stock(&base, 1).await;
    set_stock(&base, &item, 100_000).await;
    let traffic = Traffic::start(&base, &item, 6).await;
    for _ in ["inventory", "payment", "ordering"] {
        traffic.more(4).await;
        shop.kill();
        drop(shop);
        shop = Proc::start("tideway", &["up"], &env, dir.path());
        let base = shop.listening(Duration::from_secs(60)).await.unwrap();
        scenario::wait_ready(&base, Duration::from_secs(60)).await;
        traffic.point_at(&base);
    }
    traffic.more(4).await;
    traffic.stop().await;

    let open = |name: &str| {
        let url = format!("sqlite://{}/{name}.db", dir.path().display());
        async move { Db::connect(&url, DbOptions::default()).await.unwrap() }
    };
    let stores = invariants::Stores {
        ordering: open("ordering").await,
        inventory: open("inventory").await,
        payment: open("payment").await,
    };
    let orders = no_order_lost_to_a_crash(&stores, || shop.log()).await;
    assert!(orders >= 16, "{orders} orders");
}

/// The seven processes on PostgreSQL and NATS; inventory, payment and ordering are each
/// killed with SIGKILL in turn while shoppers check out, and restarted a second later: no
/// order is cancelled for a timeout, every one settles, the invariants hold.
#[tokio::test]
async fn separate_processes_killed_in_turn_mid_checkout_lose_no_order() {
    let mut system = Distributed::start().await;
    let Some(stores) = system.stores() else {
        eprintln!("PostgreSQL is not reachable: skipping");
        return;
    };
    let base = system.gateway.clone();
    let (item, _) = item_with_stock(&base, 1).await;
    wait_stocked(&base, &item, Duration::from_secs(30)).await;
    set_stock(&base, &item, 100_000).await;
    let traffic = Traffic::start(&base, &item, 6).await;
    for service in ["inventory", "payment", "ordering"] {
        traffic.more(4).await;
        system
            .kill_and_restart(service, Duration::from_secs(1))
            .await;
    }
    traffic.more(4).await;
    traffic.stop().await;
    let orders = no_order_lost_to_a_crash(&stores, || {
        system.dump_logs();
        String::new()
    })
    .await;
    assert!(orders >= 16, "{orders} orders");
}
