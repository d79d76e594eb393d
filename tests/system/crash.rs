//! A process killed with SIGKILL in the middle of many checkouts loses nothing: restarted on
//! the same data, every order reaches a terminal state and the invariants hold.

use std::time::Duration;

use tideway::invariants;
use tideway_store::{Db, DbOptions};

use crate::{
    checkout::{Shopper, item_with_stock},
    processes::Proc,
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
