//! The web front through the gateway's socket: an order page's live stream follows the saga
//! to its end, pages refuse strangers and bad input in words, and assets and pictures are
//! cached; forms need their CSRF token and this site's origin, every answer carries the
//! security headers, sign-in never leaves the site, sessions refresh once however many
//! pages ask, and demo accounts exist only where they belong. The browser tests
//! (tests/browser) drive the same pages in chromium.

use std::time::Duration;

use reqwest::{StatusCode, header};
use tideway::App;

use crate::checkout::{Shopper, item_with_stock};

/// One server-sent event: its name and data.
#[derive(Debug)]
struct SseEvent {
    name: String,
    data: String,
}

fn parse_events(text: &str) -> Vec<SseEvent> {
    text.split("\n\n")
        .filter_map(|block| {
            let mut name = None;
            let mut data = Vec::new();
            for line in block.lines() {
                if let Some(value) = line.strip_prefix("event:") {
                    name = Some(value.trim().to_owned());
                } else if let Some(value) = line.strip_prefix("data:") {
                    data.push(value.strip_prefix(' ').unwrap_or(value));
                }
            }
            name.map(|name| SseEvent {
                name,
                data: data.join("\n"),
            })
        })
        .collect()
}

/// A well-formed form token (43 base64url characters).
const FORM_TOKEN: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn with_embedded(latency_ms: u64, test: impl AsyncFnOnce(&str)) {
    let data = tempfile::tempdir().unwrap();
    let mut config = crate::embedded_config(data.path());
    config.payment.service.latency_ms = latency_ms;
    let server = crate::serve_ready(App::embedded(&config).await.unwrap()).await;
    test(server.base_url()).await;
    server.stop(crate::STOP_DEADLINE).await;
}

/// The order page's stream sends the order Pending, then each change, then Confirmed and
/// `done`, and ends.
#[tokio::test]
async fn an_order_page_streams_its_saga_until_it_ends() {
    with_embedded(700, async |base| {
        let shopper = Shopper::register(base).await;
        let (item, _) = item_with_stock(base, 1).await;
        shopper.add(&item, 1).await;
        let order = shopper.checkout(None).await;

        let mut response = no_redirects()
            .get(format!("{base}/orders/{order}/events"))
            .header(header::COOKIE, format!("tw_access={}", shopper.token))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            response.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        let mut text = String::new();
        let read = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(chunk) = response.chunk().await.unwrap() {
                text.push_str(&String::from_utf8_lossy(&chunk));
            }
        })
        .await;
        assert!(read.is_ok(), "the stream did not end: {text}");

        let events = parse_events(&text);
        let names: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
        assert!(names.len() >= 3, "{names:?}");
        assert_eq!(names.last(), Some(&"done"), "{names:?}");
        assert!(
            names[..names.len() - 1].iter().all(|n| *n == "order"),
            "{names:?}"
        );
        let first = &events[0].data;
        let last = &events[events.len() - 2].data;
        assert!(first.contains(r#"data-status="pending""#), "{first}");
        assert!(last.contains(r#"data-status="confirmed""#), "{last}");
        assert!(
            last.contains("capture payment"),
            "the whole timeline: {last}"
        );
        // Each event is a change: no two alike in a row.
        for pair in events.windows(2) {
            assert_ne!(pair[0].data, pair[1].data, "a repeated event");
        }
    })
    .await;
}

/// Without a session the pages send one to sign in; a customer cannot open the console;
/// bad input is answered with the page and the error beside the field; nothing changes.
#[tokio::test]
async fn pages_refuse_strangers_and_bad_input() {
    with_embedded(0, async |base| {
        let http = no_redirects();

        for path in ["/basket", "/orders", "/checkout", "/ops"] {
            let response = http.get(format!("{base}{path}")).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::SEE_OTHER, "{path}");
            let location = response.headers()[header::LOCATION].to_str().unwrap();
            assert!(
                location.starts_with("/login?next=%2F"),
                "{path} → {location}"
            );
        }

        let shopper = Shopper::register(base).await;
        // A form token of the test's choosing: the cookie and the field must only match.
        let cookie = format!("tw_access={}; tw_csrf={FORM_TOKEN}", shopper.token);
        let response = http
            .get(format!("{base}/ops"))
            .header(header::COOKIE, &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert!(response.text().await.unwrap().contains("Not for you"));

        // A quantity that is not a number, then one the basket refuses.
        let (item, _) = item_with_stock(base, 1).await;
        for (quantity, message) in [("abc", "Enter a whole number."), ("0", "between 1 and 99")] {
            let response = http
                .post(format!("{base}/basket/items"))
                .header(header::COOKIE, &cookie)
                .form(&[
                    ("item_id", item.as_str()),
                    ("quantity", quantity),
                    ("csrf", FORM_TOKEN),
                ])
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "{quantity}"
            );
            let page = response.text().await.unwrap();
            assert!(page.contains(r#"id="quantity-error""#), "{page}");
            assert!(page.contains(message), "{quantity}: {page}");
        }
        assert_eq!(shopper.basket().await["item_count"], 0, "nothing was added");

        // A card the checkout refuses is named beside its field.
        shopper.add(&item, 1).await;
        let response = http
            .post(format!("{base}/checkout"))
            .header(header::COOKIE, &cookie)
            .form(&[("card", "12"), ("key", "not-a-uuid"), ("csrf", FORM_TOKEN)])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let page = response.text().await.unwrap();
        assert!(page.contains(r#"id="field-card-error""#), "{page}");

        // Unknown pages are friendly; unknown API paths stay problem documents.
        let response = http
            .get(format!("{base}/no/such/page"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert!(
            response.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        let response = http
            .get(format!("{base}/api/v1/no/such"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
    })
    .await;
}

/// Assets and item pictures carry validators and come back 304 when unchanged.
#[tokio::test]
async fn assets_and_pictures_are_cached() {
    with_embedded(0, async |base| {
        let http = no_redirects();
        let (item, _) = item_with_stock(base, 0).await;
        for path in [
            "/assets/app.css".to_owned(),
            "/assets/vendor/htmx-2.0.11.min.js".to_owned(),
            format!("/images/items/{item}.svg"),
        ] {
            let response = http.get(format!("{base}{path}")).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert!(
                response.headers().contains_key(header::CACHE_CONTROL),
                "{path}"
            );
            let etag = response.headers()[header::ETAG].clone();
            let again = http
                .get(format!("{base}{path}"))
                .header(header::IF_NONE_MATCH, etag)
                .send()
                .await
                .unwrap();
            assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{path}");
        }
        let response = http
            .get(format!("{base}/images/items/no-such-item.svg"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    })
    .await;
}

/// `(points, peak)` of the series `name` of the chart `chart` in a console page.
fn chart_series(page: &str, chart: &str, name: &str) -> Option<(usize, f64)> {
    let start = page.find(&format!(r#"data-chart="{chart}""#))?;
    let figure = &page[start..start + page[start..].find("</figure>")?];
    let at = figure.find(&format!(r#"data-series="{name}" data-points=""#))?;
    let mut fields = figure[at..].split('"');
    let points = fields.nth(3)?.parse().ok()?;
    let peak = fields.nth(1)?.parse().ok()?;
    Some((points, peak))
}

/// The console's charts come from background readings: after a confirmed and a declined
/// checkout its page draws the saga outcomes (started, completed, compensated) and every
/// outbox's lag with real points, beside the gateway's traffic.
#[tokio::test]
async fn the_console_charts_saga_outcomes_and_outbox_lag_from_background_readings() {
    let data = tempfile::tempdir().unwrap();
    let mut config = crate::embedded_config(data.path());
    config.web.console_sample_ms = 250;
    let server = crate::serve_ready(App::embedded(&config).await.unwrap()).await;
    let base = server.base_url();
    let deadline = tideway_testkit::DEADLINE;

    let (item, _) = item_with_stock(base, 2).await;
    let buyer = Shopper::register(base).await;
    buyer.add(&item, 1).await;
    let confirmed = buyer.checkout(None).await;
    let decliner = Shopper::register(base).await;
    decliner.add(&item, 1).await;
    let declined = decliner.checkout(Some("4000 0000 0000 0002")).await;
    assert_eq!(
        buyer.settled(&confirmed, deadline).await["status"],
        "confirmed"
    );
    assert_eq!(
        decliner.settled(&declined, deadline).await["status"],
        "cancelled"
    );

    let http = no_redirects();
    let admin = crate::scenario::login(&http, base, "admin@tideway.local", "tideway-admin-1").await;
    let page = async |path: &str| {
        let response = http
            .get(format!("{base}{path}"))
            .header(header::COOKIE, format!("tw_access={admin}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        response.text().await.unwrap()
    };

    // The console's page draws every chart, from a sampler that runs without it.
    let console = page("/ops").await;
    assert!(console.contains(r#"id="panel-charts""#), "{console}");
    for chart in [
        "requests",
        "error-rate",
        "p99",
        "sagas",
        "outbox-pending",
        "outbox-age",
    ] {
        assert!(
            console.contains(&format!(r#"data-chart="{chart}""#)),
            "{chart}: {console}"
        );
    }
    assert!(!console.contains("its sampler was not started"));

    let outcomes = [
        "checkout started",
        "checkout completed",
        "checkout compensated",
    ];
    let panel = tideway_testkit::eventually_async(
        deadline,
        "the checkouts' outcomes and every outbox charted",
        || async {
            let panel = page("/ops/charts").await;
            let sagas_seen = outcomes.iter().all(|name| {
                chart_series(&panel, "sagas", name).is_some_and(|(_, peak)| peak > 0.0)
            });
            let outboxes_seen =
                ["catalog", "inventory", "ordering", "payment"]
                    .iter()
                    .all(|service| {
                        ["outbox-pending", "outbox-age"].iter().all(|chart| {
                            chart_series(&panel, chart, service).is_some_and(|(n, _)| n >= 2)
                        })
                    });
            let traffic_seen = chart_series(&panel, "requests", "gateway")
                .is_some_and(|(points, peak)| points >= 2 && peak > 0.0);
            (sagas_seen && outboxes_seen && traffic_seen).then_some(panel)
        },
    )
    .await;
    // A line, not a lone point: the readings go on after the checkouts.
    let (started_points, _) = chart_series(&panel, "sagas", "checkout started").unwrap();
    assert!(started_points >= 2, "{started_points}");
    assert!(!panel.contains("<script"), "{panel}");
    // The whole page holds the same charts.
    let console = page("/ops").await;
    for name in outcomes {
        assert!(chart_series(&console, "sagas", name).is_some(), "{name}");
    }
    server.stop(crate::STOP_DEADLINE).await;
}
