//! The catalog as a dependency: the same answers in-process and over HTTP, and a 503 with
//! nothing written when it is down, failing or slow.

use std::time::Duration;

use tideway_basket_api::{BasketClient, BasketView};
use tideway_catalog_api::CatalogClient;
use tideway_runtime::client::Transport;
use tideway_testkit::TestTokens;

use crate::helpers::{
    COFFEE, FakeCatalog, MUG, Mode, TEA, TIMEOUT, TestApp, spawn_app, spawn_app_with,
    unreachable_catalog,
};

/// One scenario through the typed client; the view after every step.
async fn scenario(client: &BasketClient, token: &str, fake: &FakeCatalog) -> Vec<BasketView> {
    fake.set_price(TEA, 399);
    let mut views = vec![client.get(token).await.unwrap()];
    views.push(client.add(token, COFFEE, 2).await.unwrap());
    views.push(client.add(token, TEA, 3).await.unwrap());
    views.push(client.add(token, COFFEE, 1).await.unwrap());
    views.push(client.add(token, MUG, 3).await.unwrap());
    // The catalog changes a price mid-scenario: the next answers show it.
    fake.set_price(TEA, 450);
    views.push(client.set_quantity(token, TEA, 5).await.unwrap());
    views.push(client.remove(token, MUG).await.unwrap());
    let refused = client.add(token, MUG, 4).await.unwrap_err();
    assert_eq!(refused.status().map(|s| s.as_u16()), Some(409));
    views.push(client.get(token).await.unwrap());
    views
}

#[tokio::test]
async fn the_same_scenario_gives_the_same_baskets_in_process_and_over_http() {
    for store in crate::helpers::stores().await {
        let fake = FakeCatalog::new();
        let tokens = TestTokens::new();
        let in_process = spawn_app_with(&store, fake.in_process(), tokens.clone()).await;
        let (http_catalog, _fake_server) = fake.over_http().await;
        let over_http = spawn_app_with(&store, http_catalog, tokens).await;

        let client = |app: &TestApp| {
            BasketClient::new(Transport::http("basket", app.server.base_url(), TIMEOUT).unwrap())
        };
        let a = scenario(
            &client(&in_process),
            &in_process.token("via-in-process"),
            &fake,
        )
        .await;
        let b = scenario(&client(&over_http), &over_http.token("via-http"), &fake).await;
        assert_eq!(a, b);
        let last = a.last().unwrap();
        assert_eq!(last.total_minor, 3 * 1250 + 5 * 450);
        assert_eq!(last.item_count, 8);

        // A price change reaches both the same way.
        fake.set_price(TEA, 500);
        let a = client(&in_process)
            .get(&in_process.token("via-in-process"))
            .await
            .unwrap();
        let b = client(&over_http)
            .get(&over_http.token("via-http"))
            .await
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.total_minor, 3 * 1250 + 5 * 500);

        // The basket's own client gives the same answers in-process and over HTTP too.
        let own = BasketClient::new(Transport::in_process(
            "basket",
            in_process.basket.router(),
            TIMEOUT,
        ));
        assert_eq!(
            own.get(&in_process.token("via-in-process")).await.unwrap(),
            a
        );
        own.clear(&in_process.token("via-in-process"))
            .await
            .unwrap();
        assert!(in_process.stored("via-in-process").await.is_empty());
        assert!(
            !in_process.stored("via-http").await.is_empty(),
            "clearing is per user"
        );
    }
}

/// Reading the basket still works, at the prices last seen and marked as not current;
/// every write that needs the catalog answers 503 and changes nothing. (Alice holds coffee
/// and tea, so removing one line still needs the other's price.)
async fn refuses_everything_while_down(app: &TestApp, token: &str) {
    let stored = app.stored("alice").await;
    assert_eq!(stored.len(), 2);
    let read = app.get(token).await;
    assert_eq!(read.status, 200, "get: {read:?}");
    let lines = read.body["items"].as_array().unwrap();
    assert_eq!(lines.len(), 2, "{read:?}");
    for line in lines {
        assert_eq!(line["price_current"], false, "{read:?}");
        assert_eq!(line["available"], false, "{read:?}");
    }
    assert_eq!(
        lines[0]["unit_price_minor"], 1250,
        "the last price seen: {read:?}"
    );
    let calls = [
        ("add new", app.add(token, MUG, 1).await),
        ("add more", app.add(token, COFFEE, 1).await),
        ("set", app.set(token, COFFEE, 5).await),
        ("remove", app.remove(token, COFFEE).await),
    ];
    for (call, answer) in calls {
        assert_eq!(answer.status, 503, "{call}: {answer:?}");
        assert_eq!(answer.body["type"], "/problems/dependency-unavailable");
        assert_eq!(app.stored("alice").await, stored, "{call}: {answer:?}");
    }
}

#[tokio::test]
async fn an_unreachable_catalog_is_a_503_and_nothing_is_written() {
    for store in crate::helpers::stores().await {
        let fake = FakeCatalog::new();
        let up = spawn_app(&store, fake.in_process()).await;
        let token = up.token("alice");
        up.add(&token, COFFEE, 2).await.view();
        let before = up.add(&token, TEA, 1).await.view();

        let down = spawn_app_with(&store, unreachable_catalog(), up.tokens.clone()).await;
        refuses_everything_while_down(&down, &token).await;
        assert_eq!(up.view(&token).await, before);
        // The database is fine, so the service stays ready.
        let ready = down
            .http
            .get(down.server.url("/health/ready"))
            .send()
            .await
            .unwrap();
        assert_eq!(ready.status(), 200);
        // Emptying a basket needs no prices, so it works without the catalog.
        assert_eq!(down.clear(&token).await.status, 204);
        assert!(down.stored("alice").await.is_empty());
    }
}

#[tokio::test]
async fn a_failing_or_slow_catalog_is_a_503_and_nothing_is_written() {
    for store in crate::helpers::stores().await {
        let fake = FakeCatalog::new();
        let client: CatalogClient = fake.in_process_with(Duration::from_millis(300));
        let app = spawn_app(&store, client).await;
        let token = app.token("alice");
        app.add(&token, COFFEE, 2).await.view();
        let before = app.add(&token, TEA, 1).await.view();
        for mode in [Mode::Failing, Mode::Slow] {
            fake.set_mode(mode);
            refuses_everything_while_down(&app, &token).await;
        }
        fake.set_mode(Mode::Normal);
        assert_eq!(app.view(&token).await, before);
        assert_eq!(app.clear(&token).await.status, 204);
    }
}
