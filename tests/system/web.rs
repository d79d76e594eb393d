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
