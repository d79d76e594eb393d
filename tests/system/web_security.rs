//! The web front's protections through the gateway's socket: form posts need their CSRF
//! token and this site's origin (and are refused without changing anything), every answer
//! carries the security headers, sign-in never sends anyone off the site, cookies are
//! `Secure` and `__Host-` when the public origin is https, parallel pages with an expired
//! session refresh it once, "sign out everywhere" ends every session, and the demo accounts
//! exist only where they belong.

use reqwest::{StatusCode, header};
use serde_json::{Value, json};
use tideway::{App, Config};

use crate::checkout::{Shopper, item_with_stock};

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn with_config(change: impl FnOnce(&mut Config), test: impl AsyncFnOnce(&str)) {
    let data = tempfile::tempdir().unwrap();
    let mut config = crate::embedded_config(data.path());
    change(&mut config);
    config.resolve().unwrap();
    let server = crate::serve_ready(App::embedded(&config).await.unwrap()).await;
    test(server.base_url()).await;
    server.stop(crate::STOP_DEADLINE).await;
}

/// The value of cookie `name` set by `response`, with its attributes.
fn set_cookie(response: &reqwest::Response, name: &str) -> Option<(String, String)> {
    response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let rest = v.strip_prefix(&format!("{name}="))?;
            let value = rest.split(';').next().unwrap_or_default().to_owned();
            Some((value, v.to_owned()))
        })
}

/// The form token a page carries in its hidden field.
fn form_token(page: &str) -> String {
    let marker = r#"name="csrf" value=""#;
    let start = page.find(marker).expect("a form token in the page") + marker.len();
    page[start..start + 43].to_owned()
}

/// A visitor's form token: its cookie and the field of `page`.
async fn token_from(http: &reqwest::Client, base: &str, path: &str, cookie: &str) -> String {
    let response = http
        .get(format!("{base}{path}"))
        .header(header::COOKIE, cookie)
        .send()
        .await
        .unwrap();
    let (value, _) = set_cookie(&response, "tw_csrf").expect("a form-token cookie");
    let page = response.text().await.unwrap();
    assert_eq!(
        form_token(&page),
        value,
        "the page's forms carry the cookie's token"
    );
    value
}

async fn basket_count(shopper: &Shopper) -> i64 {
    shopper.basket().await["item_count"].as_i64().unwrap()
}

/// Without the token, with another one, or from another site, a form post is refused with
/// 403 and nothing changes; with the token from this site it goes through.
#[tokio::test]
async fn forms_need_their_token_and_this_sites_origin() {
    with_config(
        |_| {},
        async |base| {
            let http = no_redirects();
            let shopper = Shopper::register(base).await;
            let (item, _) = item_with_stock(base, 5).await;
            let session = format!("tw_access={}", shopper.token);
            let token = token_from(&http, base, &format!("/items/{item}"), &session).await;
            let with_token = format!("{session}; tw_csrf={token}");
            let other = "B".repeat(43);
            let own_origin = base.to_owned();
            let cases: [(&str, &str, Option<&str>, Option<&str>); 5] = [
                ("no token at all", &session, None, None),
                ("a cookie but no field", &with_token, None, None),
                (
                    "a field that is not the cookie's",
                    &with_token,
                    Some(&other),
                    None,
                ),
                (
                    "another site",
                    &with_token,
                    Some(&token),
                    Some("http://evil.example"),
                ),
                ("an opaque origin", &with_token, Some(&token), Some("null")),
            ];
            for (case, cookie, field, origin) in cases {
                let mut form = vec![("item_id", item.as_str()), ("quantity", "1")];
                if let Some(field) = field {
                    form.push(("csrf", field));
                }
                let mut request = http
                    .post(format!("{base}/basket/items"))
                    .header(header::COOKIE, cookie)
                    .form(&form);
                if let Some(origin) = origin {
                    request = request.header(header::ORIGIN, origin);
                }
                let response = request.send().await.unwrap();
                assert_eq!(response.status(), StatusCode::FORBIDDEN, "{case}");
                assert!(
                    response
                        .text()
                        .await
                        .unwrap()
                        .contains("cannot be accepted")
                );
                assert_eq!(basket_count(&shopper).await, 0, "{case}: nothing was added");
            }
            // A Referer from elsewhere stands in for a missing Origin.
            let response = http
                .post(format!("{base}/basket/items"))
                .header(header::COOKIE, &with_token)
                .header(header::REFERER, "http://evil.example/page")
                .form(&[
                    ("item_id", item.as_str()),
                    ("quantity", "1"),
                    ("csrf", &token),
                ])
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::FORBIDDEN);
            assert_eq!(basket_count(&shopper).await, 0);

            // Signing in is a form too (no forged sign-ins into an attacker's account).
            let response = http
                .post(format!("{base}/login"))
                .form(&[
                    ("email", "demo@tideway.local"),
                    ("password", "tideway-demo-1"),
                ])
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::FORBIDDEN);
            assert!(set_cookie(&response, "tw_access").is_none());

            let response = http
                .post(format!("{base}/basket/items"))
                .header(header::COOKIE, &with_token)
                .header(header::ORIGIN, &own_origin)
                .form(&[
                    ("item_id", item.as_str()),
                    ("quantity", "2"),
                    ("csrf", &token),
                ])
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::SEE_OTHER);
            assert_eq!(basket_count(&shopper).await, 2);
        },
    )
    .await;
}

/// Every answer of the front — pages, errors, assets, pictures, refusals — carries the
/// headers; the policy allows no inline script.
#[tokio::test]
async fn every_answer_carries_the_security_headers() {
    with_config(
        |_| {},
        async |base| {
            let http = no_redirects();
            let (item, _) = item_with_stock(base, 0).await;
            for path in [
                "/".to_owned(),
                "/login".to_owned(),
                "/no/such/page".to_owned(),
                "/basket".to_owned(),
                "/assets/app.css".to_owned(),
                format!("/images/items/{item}.svg"),
            ] {
                let response = http.get(format!("{base}{path}")).send().await.unwrap();
                let headers = response.headers();
                let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
                assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
                assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
                assert!(!csp.contains("unsafe-eval"), "{path}: {csp}");
                assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
                assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
                assert_eq!(headers[header::REFERRER_POLICY], "same-origin", "{path}");
                assert!(headers.contains_key("permissions-policy"), "{path}");
                assert!(
                    !headers.contains_key(header::STRICT_TRANSPORT_SECURITY),
                    "{path}: no HSTS over plain HTTP"
                );
            }
            let response = http.post(format!("{base}/logout")).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::FORBIDDEN);
            assert!(
                response
                    .headers()
                    .contains_key(header::CONTENT_SECURITY_POLICY)
            );
            // The pages themselves hold no inline script.
            let page = http.get(format!("{base}/")).send().await.unwrap();
            let page = page.text().await.unwrap();
            assert_eq!(
                page.matches("<script").count(),
                page.matches("<script src=").count(),
                "only scripts from files"
            );
        },
    )
    .await;
}

/// `next` after sign-in is a path of this site, whatever is encoded into it.
#[tokio::test]
async fn signing_in_never_sends_anyone_off_the_site() {
    with_config(
        |_| {},
        async |base| {
            let http = no_redirects();
            for next in [
                "/%09/evil.example",
                "/%0a/evil.example",
                "//evil.example",
                "https://evil.example",
                "/%5cevil.example",
            ] {
                let response = http
                    .get(format!("{base}/login?next={next}"))
                    .send()
                    .await
                    .unwrap();
                let (token, _) = set_cookie(&response, "tw_csrf").unwrap();
                let page = response.text().await.unwrap();
                assert!(
                    page.contains(r#"name="next" value="/""#),
                    "{next}: the form goes home"
                );
                // Posted directly, decoded, it is refused all the same.
                let decoded = next
                    .replace("%09", "\t")
                    .replace("%0a", "\n")
                    .replace("%5c", "\\");
                let response = http
                    .post(format!("{base}/login"))
                    .header(header::COOKIE, format!("tw_csrf={token}"))
                    .form(&[
                        ("email", "demo@tideway.local"),
                        ("password", "tideway-demo-1"),
                        ("next", &decoded),
                        ("csrf", &token),
                    ])
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), StatusCode::SEE_OTHER, "{next}");
                assert_eq!(response.headers()[header::LOCATION], "/", "{next}");
            }
            let response = http
                .get(format!("{base}/login?next=/orders"))
                .send()
                .await
                .unwrap();
            assert!(
                response
                    .text()
                    .await
                    .unwrap()
                    .contains(r#"name="next" value="/orders""#)
            );
        },
    )
    .await;
}

/// Behind a TLS proxy (public origin https): `__Host-` cookies marked `Secure`, HSTS, and
/// forms accepted only from that origin.
#[tokio::test]
async fn an_https_origin_makes_cookies_secure_and_host_only() {
    let origin = "https://shop.example";
    with_config(
        |config| config.web.public_origin = Some(origin.to_owned()),
        async |base| {
            let http = no_redirects();
            let response = http.get(format!("{base}/login")).send().await.unwrap();
            assert_eq!(
                response.headers()[header::STRICT_TRANSPORT_SECURITY],
                "max-age=31536000"
            );
            let (token, attributes) = set_cookie(&response, "__Host-tw_csrf").unwrap();
            assert!(attributes.contains("Secure"), "{attributes}");
            assert!(attributes.contains("Path=/"), "{attributes}");
            assert!(!attributes.contains("Domain"), "{attributes}");
            let sign_in = |from: &'static str| {
                http.post(format!("{base}/login"))
                    .header(header::COOKIE, format!("__Host-tw_csrf={token}"))
                    .header(header::ORIGIN, from)
                    .form(&[
                        ("email", "demo@tideway.local"),
                        ("password", "tideway-demo-1"),
                        ("csrf", token.as_str()),
                    ])
                    .send()
            };
            // The plain-HTTP address behind the proxy is not the site.
            let response = sign_in("http://127.0.0.1").await.unwrap();
            assert_eq!(response.status(), StatusCode::FORBIDDEN);
            let response = sign_in(origin).await.unwrap();
            assert_eq!(response.status(), StatusCode::SEE_OTHER);
            for name in ["__Host-tw_access", "__Host-tw_refresh"] {
                let (_, attributes) = set_cookie(&response, name).expect(name);
                assert!(attributes.contains("Secure"), "{attributes}");
                assert!(attributes.contains("HttpOnly"), "{attributes}");
                assert!(attributes.contains("SameSite=Lax"), "{attributes}");
            }
        },
    )
    .await;
}

async fn api_login(base: &str, email: &str, password: &str) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{base}/api/v1/identity/login"))
        .json(&json!({ "email": email, "password": password }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

/// Eight pages at once with an expired access token make one refresh: each is served signed
/// in with the same new tokens, and the session lives on (a second refresh of the consumed
/// token would have revoked it). Then "sign out everywhere" ends the user's other sessions.
#[tokio::test]
async fn parallel_pages_refresh_a_session_once_and_sign_out_everywhere_ends_all() {
    with_config(
        |_| {},
        async |base| {
            let http = no_redirects();
            let web = api_login(base, "demo@tideway.local", "tideway-demo-1").await;
            let other = api_login(base, "demo@tideway.local", "tideway-demo-1").await;
            let refresh = web["refresh_token"].as_str().unwrap().to_owned();
            let cookie = format!("tw_access=expired; tw_refresh={refresh}");
            let pages = (0..8).map(|_| {
                http.get(format!("{base}/basket"))
                    .header(header::COOKIE, &cookie)
                    .send()
            });
            let responses = futures_util::future::join_all(pages).await;
            let mut renewed = Vec::new();
            for response in responses {
                let response = response.unwrap();
                assert_eq!(response.status(), StatusCode::OK, "served signed in");
                renewed.push(set_cookie(&response, "tw_refresh").unwrap().0);
            }
            assert!(renewed.windows(2).all(|w| w[0] == w[1]), "one refresh");
            assert_ne!(renewed[0], refresh);
            let next = format!("tw_access=expired; tw_refresh={}", renewed[0]);
            let response = http
                .get(format!("{base}/account"))
                .header(header::COOKIE, &next)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK, "the session lives on");
            let access = set_cookie(&response, "tw_access").unwrap().0;
            let token = set_cookie(&response, "tw_csrf").unwrap().0;

            let response = http
                .post(format!("{base}/logout/everywhere"))
                .header(
                    header::COOKIE,
                    format!("tw_access={access}; tw_csrf={token}"),
                )
                .form(&[("csrf", token.as_str())])
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::SEE_OTHER);
            let response = reqwest::Client::new()
                .post(format!("{base}/api/v1/identity/refresh"))
                .json(&json!({ "refresh_token": other["refresh_token"] }))
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "the other session ended"
            );
        },
    )
    .await;
}

/// `tideway up` seeds the demo accounts and the sign-in page names them; with
/// `demo_users = false` on the same data, the page names none and they cannot sign in.
#[tokio::test]
async fn demo_accounts_exist_only_where_they_belong() {
    let data = tempfile::tempdir().unwrap();
    let mut config = crate::embedded_config(data.path());
    let server = crate::serve_ready(App::embedded(&config).await.unwrap()).await;
    let base = server.base_url().to_owned();
    let page = reqwest::get(format!("{base}/login")).await.unwrap();
    assert!(
        page.text()
            .await
            .unwrap()
            .contains("demo@tideway.local / tideway-demo-1")
    );
    api_login(&base, "demo@tideway.local", "tideway-demo-1").await;
    server.stop(crate::STOP_DEADLINE).await;

    config.demo_users = Some(false);
    config.resolve().unwrap();
    let server = crate::serve_ready(App::embedded(&config).await.unwrap()).await;
    let base = server.base_url().to_owned();
    let page = reqwest::get(format!("{base}/login")).await.unwrap();
    let page = page.text().await.unwrap();
    assert!(!page.contains("Demo accounts"), "{page}");
    assert!(!page.contains("tideway-demo-1"));
    for (email, password) in [
        ("demo@tideway.local", "tideway-demo-1"),
        ("admin@tideway.local", "tideway-admin-1"),
    ] {
        let response = reqwest::Client::new()
            .post(format!("{base}/api/v1/identity/login"))
            .json(&json!({ "email": email, "password": password }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{email}");
    }
    server.stop(crate::STOP_DEADLINE).await;

    // Outside `tideway up` they are off unless asked for.
    let config = Config::default();
    assert!(config.identity_for(true).seed_users.len() == 2);
    assert!(config.identity_for(false).seed_users.is_empty());
    assert_eq!(config.identity_for(false).disabled_users.len(), 2);
    assert!(config.demo_logins(false).is_empty());
}

/// Live streams are capped per user and in all (429 with `Retry-After` past either), and a
/// closed stream frees its place.
#[tokio::test]
async fn live_streams_are_capped_per_user_and_in_all() {
    with_config(
        |config| {
            // Orders stay pending while the test holds their streams open.
            config.payment.service.latency_ms = 20_000;
            config.ordering.service.payment_timeout_ms = 60_000;
            config.web.max_streams_per_user = 2;
            config.web.max_streams = 3;
        },
        async |base| {
            let http = no_redirects();
            let (item, _) = item_with_stock(base, 10).await;
            let open = async |shopper: &Shopper, order: &str| {
                http.get(format!("{base}/orders/{order}/events"))
                    .header(header::COOKIE, format!("tw_access={}", shopper.token))
                    .send()
                    .await
                    .unwrap()
            };
            let ada = Shopper::register(base).await;
            ada.add(&item, 1).await;
            let ada_order = ada.checkout(None).await;
            let bob = Shopper::register(base).await;
            bob.add(&item, 1).await;
            let bob_order = bob.checkout(None).await;

            let first = open(&ada, &ada_order).await;
            let second = open(&ada, &ada_order).await;
            assert_eq!(first.status(), StatusCode::OK);
            assert_eq!(second.status(), StatusCode::OK);
            let refused = open(&ada, &ada_order).await;
            assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS, "per user");
            assert_eq!(refused.headers()[header::RETRY_AFTER], "5");

            let bobs = open(&bob, &bob_order).await;
            assert_eq!(bobs.status(), StatusCode::OK, "another user has room");
            let refused = open(&bob, &bob_order).await;
            assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS, "in all");

            // Ada leaves a page: Bob gets its place.
            drop(first);
            let again = tideway_testkit::eventually_async(
                tideway_testkit::DEADLINE,
                "a closed stream to free its place",
                || async {
                    let response = open(&bob, &bob_order).await;
                    (response.status() == StatusCode::OK).then_some(response)
                },
            )
            .await;
            drop((second, bobs, again));
        },
    )
    .await;
}
