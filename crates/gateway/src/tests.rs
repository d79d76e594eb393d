use std::{collections::HashMap, sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    http::{HeaderMap, Request, StatusCode},
    routing::{any, get},
};
use tideway_runtime::auth::{JwtVerifier, TokenSigner};
use tower::ServiceExt;

use super::*;

/// An upstream that answers with the headers it received.
fn echo(name: &'static str) -> Router {
    let handler = move |headers: HeaderMap| async move {
        let seen: HashMap<String, String> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
            .collect();
        axum::Json(serde_json::json!({ "upstream": name, "headers": seen }))
    };
    Router::new()
        .route("/api/v1/catalog", any(handler))
        .route("/api/v1/catalog/{*rest}", any(handler))
        .route("/api/v1/basket/{*rest}", any(handler))
        .route("/health/ready", get(|| async { "ok" }))
        .route(
            "/api/v1/slow/x",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        )
}

struct Fixture {
    router: Router,
    signer: TokenSigner,
}

fn fixture() -> Fixture {
    let signer = TokenSigner::generate().unwrap();
    let verifier = Arc::new(JwtVerifier::from_keys(signer.jwks(), "tideway", "tideway"));
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let config = GatewayConfig {
        routes: vec![
            RouteConfig::new(
                "/api/v1/catalog",
                "catalog",
                Access::Public,
                Access::Role("admin".into()),
            ),
            RouteConfig::new("/api/v1/basket", "basket", Access::User, Access::User),
            RouteConfig {
                timeout_ms: 50,
                ..RouteConfig::new("/api/v1/slow", "slow", Access::Public, Access::Public)
            },
            RouteConfig {
                timeout_ms: 1000,
                ..RouteConfig::new("/api/v1/dead", "dead", Access::Public, Access::Public)
            },
        ],
        body_limit_bytes: 1024,
        ..GatewayConfig::default()
    };
    let timeout = Duration::from_secs(2);
    let upstreams = HashMap::from([
        (
            "catalog".to_owned(),
            Transport::in_process("catalog", echo("catalog"), timeout),
        ),
        (
            "basket".to_owned(),
            Transport::in_process("basket", echo("basket"), timeout),
        ),
        (
            "slow".to_owned(),
            Transport::in_process("slow", echo("slow"), timeout),
        ),
        (
            "dead".to_owned(),
            Transport::http("dead", &format!("http://{dead_addr}"), timeout).unwrap(),
        ),
    ]);
    let gateway = Gateway::new(&config, upstreams, verifier).unwrap();
    Fixture {
        router: gateway.router(),
        signer,
    }
}

impl Fixture {
    fn token(&self, roles: &[&str]) -> String {
        let claims = TokenSigner::claims(
            "u1",
            "u@x.io",
            roles,
            "tideway",
            "tideway",
            Duration::from_secs(60),
        );
        self.signer.sign(&claims).unwrap()
    }

    async fn send(&self, request: Request<Body>) -> (StatusCode, HeaderMap, serde_json::Value) {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        (status, headers, json)
    }
}

#[tokio::test]
async fn routes_by_prefix_and_forwards_the_request_id() {
    let f = fixture();
    let (status, headers, body) = f
        .send(
            Request::get("/api/v1/catalog/items?page=2")
                .header("x-request-id", "req-1")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["upstream"], "catalog");
    assert_eq!(body["headers"]["x-request-id"], "req-1");
    assert_eq!(headers["x-request-id"], "req-1");

    // Without one, the gateway makes one and the upstream sees the same.
    let (_, headers, body) = f
        .send(Request::get("/api/v1/catalog").body(Body::empty()).unwrap())
        .await;
    assert_eq!(
        body["headers"]["x-request-id"],
        headers["x-request-id"].to_str().unwrap()
    );

    let (status, headers, body) = f
        .send(Request::get("/api/v1/nowhere").body(Body::empty()).unwrap())
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(body["status"], 404);
    // `/api/v1/catalogue` shares a string prefix but is not under `/api/v1/catalog`.
    let (status, _, _) = f
        .send(
            Request::get("/api/v1/catalogue")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn checks_access_for_reads_and_writes() {
    let f = fixture();
    let write = |token: Option<String>| {
        let mut builder =
            Request::post("/api/v1/catalog/items").header("content-type", "application/json");
        if let Some(token) = token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        builder.body(Body::from("{}")).unwrap()
    };
    let (status, headers, body) = f.send(write(None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers["www-authenticate"], "Bearer");
    assert_eq!(body["type"], "/problems/unauthorized");
    let (status, _, _) = f.send(write(Some("garbage".into()))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, body) = f.send(write(Some(f.token(&["customer"])))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["status"], 403);
    let (status, _, body) = f.send(write(Some(f.token(&["admin"])))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body["headers"]["authorization"]
            .as_str()
            .unwrap()
            .starts_with("Bearer ")
    );

    // An expired token is refused.
    let mut claims = TokenSigner::claims(
        "u1",
        "u@x.io",
        &["admin"],
        "tideway",
        "tideway",
        Duration::from_secs(60),
    );
    claims.exp = claims.iat - 600;
    let (status, _, _) = f.send(write(Some(f.signer.sign(&claims).unwrap()))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The basket needs a user even to read.
    let (status, _, _) = f
        .send(
            Request::get("/api/v1/basket/x")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let request = Request::get("/api/v1/basket/x")
        .header(
            "authorization",
            format!("Bearer {}", f.token(&["customer"])),
        )
        .body(Body::empty())
        .unwrap();
    assert_eq!(f.send(request).await.0, StatusCode::OK);
}

#[tokio::test]
async fn maps_upstream_failures() {
    let f = fixture();
    let (status, _, body) = f
        .send(Request::get("/api/v1/slow/x").body(Body::empty()).unwrap())
        .await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(body["type"], "/problems/upstream-unavailable");
    let (status, _, _) = f
        .send(Request::get("/api/v1/dead/x").body(Body::empty()).unwrap())
        .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn drops_hop_by_hop_headers_and_limits_bodies() {
    let f = fixture();
    let request = Request::get("/api/v1/catalog/items")
        .header("connection", "x-secret")
        .header("x-secret", "1")
        .header("x-kept", "2")
        .body(Body::empty())
        .unwrap();
    let (_, _, body) = f.send(request).await;
    assert!(body["headers"].get("x-secret").is_none(), "{body}");
    assert_eq!(body["headers"]["x-kept"], "2");
    assert_eq!(body["headers"]["x-forwarded-proto"], "http");

    let token = f.token(&["admin"]);
    let request = Request::post("/api/v1/catalog/items")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .header("content-length", "2048")
        .body(Body::from(vec![b' '; 2048]))
        .unwrap();
    let (status, headers, _) = f.send(request).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(headers["content-type"], "application/problem+json");
}

#[test]
fn the_default_has_no_routes() {
    let config = GatewayConfig::default();
    assert!(config.routes.is_empty());
    config.validate().unwrap();
}

fn verifier() -> Arc<JwtVerifier> {
    let signer = TokenSigner::generate().unwrap();
    Arc::new(JwtVerifier::from_keys(signer.jwks(), "tideway", "tideway"))
}

#[test]
fn refuses_bad_configuration() {
    let config = GatewayConfig {
        routes: vec![RouteConfig::new(
            "/api/v1/catalog",
            "catalog",
            Access::Public,
            Access::Public,
        )],
        ..GatewayConfig::default()
    };
    let err = Gateway::new(&config, HashMap::new(), verifier())
        .err()
        .unwrap();
    assert!(matches!(err, GatewayError::UnknownUpstream { .. }));
    assert!(Access::try_from("role:".to_owned()).is_err());
    assert_eq!(
        Access::try_from("role:admin".to_owned()),
        Ok(Access::Role("admin".into()))
    );
}

/// The key a configuration with `routes` is refused for, if any.
fn refused_key(routes: Vec<RouteConfig>) -> Option<String> {
    let config = GatewayConfig {
        routes,
        ..GatewayConfig::default()
    };
    match config.validate() {
        Ok(()) => None,
        Err(ConfigError::Invalid { key, .. }) => Some(key),
        Err(other) => panic!("unexpected {other}"),
    }
}

fn public(prefix: &str) -> RouteConfig {
    RouteConfig::new(prefix, "catalog", Access::Public, Access::Public)
}

#[test]
fn validation_names_the_bad_route() {
    for prefix in [
        "api/catalog",
        "/api/v1/catalog/",
        "/",
        "",
        "/api/v1/{id}",
        "/api/v1/x}",
        "/api/*rest",
        "/api/:id",
    ] {
        assert_eq!(
            refused_key(vec![public("/api/v1/ok"), public(prefix)]).as_deref(),
            Some("gateway.routes[1].prefix"),
            "{prefix:?}"
        );
    }
    // The same prefix twice: the second is named.
    assert_eq!(
        refused_key(vec![public("/a"), public("/b"), public("/a")]).as_deref(),
        Some("gateway.routes[2].prefix")
    );
    assert_eq!(
        refused_key(vec![
            public("/a"),
            RouteConfig {
                timeout_ms: 0,
                ..public("/b")
            }
        ])
        .as_deref(),
        Some("gateway.routes[1].timeout_ms")
    );
    // A longer prefix under another is the way to refine a route, not a duplicate; a colon
    // inside a segment is literal.
    assert_eq!(
        refused_key(vec![
            public("/api/v1/ordering"),
            public("/api/v1/ordering/sagas")
        ]),
        None
    );
    assert_eq!(refused_key(vec![public("/api/v1/x:beta")]), None);
    // Outside the API, any path; inside it, only the current version's: an unversioned
    // prefix is an alias no request keeps, a prefix under another version no request
    // reaches.
    assert_eq!(
        refused_key(vec![public("/hello"), public("/api/docs")]),
        None
    );
    for prefix in ["/api/catalog", "/api/v1:beta", "/api/v2/catalog", "/api/v0"] {
        assert_eq!(
            refused_key(vec![public("/api/v1/ok"), public(prefix)]).as_deref(),
            Some("gateway.routes[1].prefix"),
            "{prefix:?}"
        );
    }
    let err = GatewayConfig {
        routes: vec![public("/api/catalog")],
        ..GatewayConfig::default()
    }
    .validate()
    .unwrap_err();
    assert!(format!("{err:?}").contains("/api/v1/catalog"), "{err:?}");
    let err = GatewayConfig {
        body_limit_bytes: 0,
        ..GatewayConfig::default()
    }
    .validate()
    .unwrap_err();
    assert!(
        err.to_string().contains("gateway.body_limit_bytes"),
        "{err}"
    );
}

#[tokio::test]
async fn a_duplicate_prefix_is_refused_before_the_router_is_built() {
    let config = GatewayConfig {
        routes: vec![public("/api/v1/catalog"), public("/api/v1/catalog")],
        ..GatewayConfig::default()
    };
    let upstreams = HashMap::from([(
        "catalog".to_owned(),
        Transport::in_process("catalog", echo("catalog"), Duration::from_secs(1)),
    )]);
    let err = Gateway::new(&config, upstreams, verifier()).err().unwrap();
    let GatewayError::Invalid(ConfigError::Invalid { key, .. }) = &err else {
        panic!("unexpected {err}");
    };
    assert_eq!(key, "gateway.routes[1].prefix");
}

/// Every hostile token is refused at the edge with 401 and a problem document — never a
/// 5xx — and the upstream never sees the request.
#[tokio::test]
async fn refuses_every_forged_token_before_the_upstream() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let tokens = tideway_testkit::TestTokens::new();
    let reached = Arc::new(AtomicUsize::new(0));
    let counter = reached.clone();
    let upstream = Router::new().fallback(any(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        async { "reached" }
    }));
    let config = GatewayConfig {
        routes: vec![
            RouteConfig::new(
                "/api/v1/catalog",
                "catalog",
                Access::Public,
                Access::Role("admin".into()),
            ),
            RouteConfig::new("/api/v1/basket", "basket", Access::User, Access::User),
        ],
        body_limit_bytes: 1024,
        ..GatewayConfig::default()
    };
    let timeout = Duration::from_secs(2);
    let upstreams = HashMap::from([
        (
            "catalog".to_owned(),
            Transport::in_process("catalog", upstream.clone(), timeout),
        ),
        (
            "basket".to_owned(),
            Transport::in_process("basket", upstream, timeout),
        ),
    ]);
    let router = Gateway::new(&config, upstreams, tokens.verifier())
        .unwrap()
        .router();
    let request = |method: &str, path: &str, token: &str| {
        Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Body::from("{}"))
            .unwrap()
    };
    let targets = [
        ("GET", "/api/v1/basket"),
        ("POST", "/api/v1/basket/items"),
        ("POST", "/api/v1/catalog/items"),
    ];
    for (name, token) in tokens.attacks("u1", &["customer", "admin"]) {
        for (method, path) in targets {
            let response = router
                .clone()
                .oneshot(request(method, path, &token))
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{name}: {method} {path}"
            );
            assert!(
                response.headers().contains_key("www-authenticate"),
                "{name}"
            );
            let body = axum::body::to_bytes(response.into_body(), 1 << 16)
                .await
                .unwrap();
            let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(problem["type"], "/problems/unauthorized", "{name}");
        }
    }
    assert_eq!(
        reached.load(Ordering::SeqCst),
        0,
        "no forged request went through"
    );
    // The same requests with a good token do reach it.
    let good = tokens.token("u1", &["customer", "admin"]);
    for (method, path) in targets {
        let response = router
            .clone()
            .oneshot(request(method, path, &good))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{method} {path}");
    }
    assert_eq!(reached.load(Ordering::SeqCst), targets.len());
}

/// An origin for the HTTP cache: counts its calls, answers `v<version>` with an `ETag`,
/// `304` to a matching `If-None-Match`, and `503` while failing.
#[derive(Clone)]
struct Origin {
    calls: Arc<std::sync::atomic::AtomicUsize>,
    failing: Arc<std::sync::atomic::AtomicBool>,
    version: Arc<std::sync::atomic::AtomicUsize>,
    cache_control: &'static str,
}

impl Origin {
    fn new(cache_control: &'static str) -> Self {
        Self {
            calls: Arc::default(),
            failing: Arc::default(),
            version: Arc::new(std::sync::atomic::AtomicUsize::new(1)),
            cache_control,
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn router(&self) -> Router {
        let origin = self.clone();
        let handler = move |headers: HeaderMap| {
            let origin = origin.clone();
            async move {
                use std::sync::atomic::Ordering::SeqCst;
                origin.calls.fetch_add(1, SeqCst);
                if origin.failing.load(SeqCst) {
                    return StatusCode::SERVICE_UNAVAILABLE.into_response();
                }
                let version = origin.version.load(SeqCst);
                let etag = format!("\"v{version}\"");
                let common = [
                    (header::CACHE_CONTROL, origin.cache_control.to_owned()),
                    (header::ETAG, etag.clone()),
                    (header::VARY, "accept-language".to_owned()),
                ];
                if headers
                    .get(header::IF_NONE_MATCH)
                    .is_some_and(|v| v.to_str().unwrap_or_default() == etag)
                {
                    return (StatusCode::NOT_MODIFIED, common).into_response();
                }
                (StatusCode::OK, common, format!("v{version}")).into_response()
            }
        };
        Router::new().route("/api/v1/catalog/{*rest}", get(handler))
    }
}

fn cached_gateway(origin: &Origin) -> (Router, Purger, TokenSigner) {
    let signer = TokenSigner::generate().unwrap();
    let verifier = Arc::new(JwtVerifier::from_keys(signer.jwks(), "tideway", "tideway"));
    let config = GatewayConfig {
        routes: vec![RouteConfig {
            cache_bytes: 1 << 20,
            ..RouteConfig::new("/api/v1/catalog", "catalog", Access::Public, Access::Public)
        }],
        ..GatewayConfig::default()
    };
    let upstreams = HashMap::from([(
        "catalog".to_owned(),
        Transport::in_process("catalog", origin.router(), Duration::from_secs(2)),
    )]);
    let gateway = Gateway::new(&config, upstreams, verifier).unwrap();
    (gateway.router(), gateway.purger(), signer)
}

async fn fetch(router: &Router, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, String) {
    let mut request = Request::get("/api/v1/catalog/items/1");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

fn x_cache(headers: &HeaderMap) -> &str {
    headers[httpcache::X_CACHE].to_str().unwrap()
}

#[tokio::test]
async fn fresh_answers_come_from_the_cache_with_their_age_and_a_304_when_they_match() {
    let origin = Origin::new("public, max-age=60");
    let (router, purger, _) = cached_gateway(&origin);
    let (status, headers, body) = fetch(&router, &[]).await;
    assert_eq!(
        (status, x_cache(&headers), body.as_str()),
        (StatusCode::OK, "MISS", "v1")
    );
    let (status, headers, body) = fetch(&router, &[]).await;
    assert_eq!(
        (status, x_cache(&headers), body.as_str()),
        (StatusCode::OK, "HIT", "v1")
    );
    assert!(headers.contains_key(header::AGE));
    assert_eq!(origin.calls(), 1);
    let (status, headers, _) = fetch(&router, &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(
        (status, x_cache(&headers)),
        (StatusCode::NOT_MODIFIED, "HIT")
    );
    // A HEAD is answered from the entry, without a body, and never stores an empty one.
    let head = router
        .clone()
        .oneshot(
            Request::head("/api/v1/catalog/items/2")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(x_cache(head.headers()), "MISS");
    let mut request = Request::get("/api/v1/catalog/items/2");
    request = request.header("accept-language", "de");
    let (_, _, body) = {
        let response = router
            .clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            headers.clone(),
            x_cache(&headers).to_owned(),
            String::from_utf8_lossy(&body).into_owned(),
        )
    };
    assert_eq!(body, "v1", "the GET after a HEAD has its body");
    // Vary: another language is another entry.
    let (_, headers, _) = fetch(&router, &[("accept-language", "fr")]).await;
    assert_eq!(x_cache(&headers), "MISS");
    assert_eq!(origin.calls(), 4);

    // Purged by the upstream's change event: the next read goes to the origin.
    origin.version.store(2, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(purger.purge("catalog"), 1);
    let (_, headers, body) = fetch(&router, &[("accept-language", "fr")]).await;
    assert_eq!((x_cache(&headers), body.as_str()), ("MISS", "v2"));
}

#[tokio::test]
async fn answers_to_requests_with_credentials_are_stored_only_when_public() {
    let private = Origin::new("max-age=60");
    let (router, _, signer) = cached_gateway(&private);
    let claims = TokenSigner::claims(
        "u1",
        "u@x.io",
        &[],
        "tideway",
        "tideway",
        Duration::from_secs(60),
    );
    let bearer = format!("Bearer {}", signer.sign(&claims).unwrap());
    for _ in 0..2 {
        let (_, headers, _) = fetch(&router, &[("authorization", &bearer)]).await;
        assert_eq!(x_cache(&headers), "MISS");
    }
    assert_eq!(
        private.calls(),
        2,
        "never stored for a request with credentials"
    );
    // Stored for an anonymous request, but never served to one with credentials.
    fetch(&router, &[]).await;
    let (_, headers, _) = fetch(&router, &[("cookie", "tw_access=x")]).await;
    assert_eq!(x_cache(&headers), "MISS");

    let public = Origin::new("public, max-age=60");
    let (router, _, _) = cached_gateway(&public);
    fetch(&router, &[("authorization", &bearer)]).await;
    let (_, headers, _) = fetch(&router, &[("authorization", &bearer)]).await;
    assert_eq!(x_cache(&headers), "HIT");
    assert_eq!(public.calls(), 1);
}

#[tokio::test]
async fn a_stale_answer_is_revalidated_with_its_etag() {
    let origin = Origin::new("public, max-age=0");
    let (router, _, _) = cached_gateway(&origin);
    fetch(&router, &[]).await;
    let (status, headers, body) = fetch(&router, &[]).await;
    // The origin answered 304 to the gateway's If-None-Match; the client gets the body.
    assert_eq!(
        (status, x_cache(&headers), body.as_str()),
        (StatusCode::OK, "HIT", "v1")
    );
    assert_eq!(origin.calls(), 2);
    origin.version.store(2, std::sync::atomic::Ordering::SeqCst);
    let (_, headers, body) = fetch(&router, &[]).await;
    assert_eq!((x_cache(&headers), body.as_str()), ("MISS", "v2"));
}

#[tokio::test]
async fn stale_while_revalidate_answers_at_once_and_refreshes_behind() {
    let origin = Origin::new("public, max-age=0, stale-while-revalidate=60");
    let (router, _, _) = cached_gateway(&origin);
    fetch(&router, &[]).await;
    origin.version.store(2, std::sync::atomic::Ordering::SeqCst);
    let (_, headers, body) = fetch(&router, &[]).await;
    assert_eq!((x_cache(&headers), body.as_str()), ("STALE", "v1"));
    tideway_testkit::eventually_async(
        tideway_testkit::DEADLINE,
        "the background revalidation",
        || async {
            let (_, _, body) = fetch(&router, &[]).await;
            body == "v2"
        },
    )
    .await;
}

#[tokio::test]
async fn stale_if_error_answers_the_last_good_answer_while_the_origin_fails() {
    let origin = Origin::new("public, max-age=0, stale-if-error=300");
    let (router, _, _) = cached_gateway(&origin);
    fetch(&router, &[]).await;
    origin
        .failing
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let (status, headers, body) = fetch(&router, &[]).await;
    assert_eq!(
        (status, x_cache(&headers), body.as_str()),
        (StatusCode::OK, "STALE", "v1")
    );
    assert!(headers.contains_key(header::AGE));

    // Without stale-if-error the failure is answered as it is.
    let strict = Origin::new("public, max-age=0");
    let (router, _, _) = cached_gateway(&strict);
    fetch(&router, &[]).await;
    strict
        .failing
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let (status, _, _) = fetch(&router, &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn stale_if_error_covers_an_origin_that_is_stopped() {
    let origin = Origin::new("public, max-age=0, stale-if-error=300");
    let server = tideway_testkit::TestServer::start(origin.router()).await;
    let signer = TokenSigner::generate().unwrap();
    let verifier = Arc::new(JwtVerifier::from_keys(signer.jwks(), "tideway", "tideway"));
    let config = GatewayConfig {
        routes: vec![RouteConfig {
            cache_bytes: 1 << 20,
            timeout_ms: 1000,
            ..RouteConfig::new("/api/v1/catalog", "catalog", Access::Public, Access::Public)
        }],
        ..GatewayConfig::default()
    };
    let upstream = Transport::http("catalog", server.base_url(), Duration::from_secs(2)).unwrap();
    let gateway = Gateway::new(
        &config,
        HashMap::from([("catalog".to_owned(), upstream)]),
        verifier,
    )
    .unwrap();
    let router = gateway.router();
    let (_, headers, _) = fetch(&router, &[]).await;
    assert_eq!(x_cache(&headers), "MISS");
    server.stop(Duration::from_secs(10)).await;
    let (status, headers, body) = fetch(&router, &[]).await;
    assert_eq!(
        (status, x_cache(&headers), body.as_str()),
        (StatusCode::OK, "STALE", "v1")
    );
}

#[test]
fn the_operator_document_keeps_the_serde_shapes() {
    let document = serde_json::to_value(openapi([])).unwrap();
    let paths = document["paths"].as_object().unwrap();
    for (path, methods) in [
        (INSTANCES_PATH, &["get"][..]),
        (CONFIG_PATH, &["get", "put"]),
        (TRAFFIC_PATH, &["get"]),
        (SWITCH_PATH, &["post"]),
    ] {
        for method in methods {
            let operation = &paths[path][method];
            assert_eq!(operation["security"][0]["bearer"], serde_json::json!([]));
            for status in ["200", "401", "403", "503"] {
                assert!(
                    operation["responses"][status].is_object(),
                    "{method} {path} {status}"
                );
            }
        }
    }
    let schemas = &document["components"]["schemas"];
    // Read and written as strings by serde (`try_from`/`into` String).
    assert_eq!(schemas["Access"]["type"], "string");
    assert_eq!(schemas["IpNet"]["type"], "string");
    // What serde may leave out is not required.
    assert_eq!(
        schemas["RouteConfig"]["required"],
        serde_json::json!(["prefix", "upstream", "read", "write"])
    );
    assert_eq!(
        schemas["GatewayConfig"]["required"],
        serde_json::json!(["routes", "body_limit_bytes"])
    );
    assert_eq!(schemas["MatchRule"]["required"], serde_json::json!(["to"]));
    assert_eq!(schemas["Switch"]["additionalProperties"], false);
    // Every access value the gateway writes matches the schema's pattern.
    let pattern = schemas["Access"]["pattern"].as_str().unwrap();
    assert_eq!(pattern, "^(public|user|role:.+)$");
    for access in [Access::Public, Access::User, Access::Role("admin".into())] {
        let text = String::from(access.clone());
        assert!(
            text == "public" || text == "user" || text.starts_with("role:"),
            "{text}"
        );
        assert_eq!(Access::try_from(text).unwrap(), access);
    }
}

/// Whether `value` conforms to `schema` (resolving `$ref`s in `document`), as far as the
/// operator document's schemas go: types, nullability, required and unknown properties,
/// items, maps. The path of the first mismatch otherwise.
fn conforms(
    document: &serde_json::Value,
    schema: &serde_json::Value,
    value: &serde_json::Value,
    at: &str,
) -> Result<(), String> {
    use serde_json::Value;
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.trim_start_matches("#/components/schemas/");
        return conforms(
            document,
            &document["components"]["schemas"][name],
            value,
            at,
        );
    }
    if let Some(choices) = schema["oneOf"].as_array() {
        let fits = choices
            .iter()
            .filter(|choice| conforms(document, choice, value, at).is_ok())
            .count();
        return if fits == 1 {
            Ok(())
        } else {
            Err(format!("{at}: {fits} of oneOf fit {value}"))
        };
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(one) => vec![one.as_str()],
        Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
        _ => return Ok(()),
    };
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_u64() || n.is_i64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let fits = types.contains(&kind) || (kind == "integer" && types.contains(&"number"));
    if !fits {
        return Err(format!("{at}: {kind} where the schema says {types:?}"));
    }
    match value {
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                conforms(document, &schema["items"], item, &format!("{at}[{index}]"))?;
            }
        }
        Value::Object(fields) => {
            for required in schema["required"].as_array().into_iter().flatten() {
                let name = required.as_str().unwrap_or_default();
                if !fields.contains_key(name) {
                    return Err(format!("{at}.{name}: required, missing"));
                }
            }
            for (name, field) in fields {
                let path = format!("{at}.{name}");
                match schema["properties"].get(name) {
                    Some(property) => conforms(document, property, field, &path)?,
                    None if schema["additionalProperties"].is_object() => {
                        conforms(document, &schema["additionalProperties"], field, &path)?;
                    }
                    None if schema["properties"].is_object() => {
                        return Err(format!("{path}: not in the schema"));
                    }
                    None => {}
                }
            }
        }
        _ => {}
    }
    Ok(())
}

#[test]
fn the_operator_answers_match_their_documented_schemas() {
    let document = serde_json::to_value(openapi([])).unwrap();
    let schema = |name: &str| serde_json::json!({ "$ref": format!("#/components/schemas/{name}") });
    // A configuration using every optional part, as `GET /api/v1/admin/config` answers it.
    let mut route = RouteConfig::new(
        "/api/v1/catalog",
        "catalog",
        Access::Public,
        Access::Role("admin".into()),
    );
    route.versions = [("catalog@v1".to_owned(), 90), ("catalog@v2".to_owned(), 10)].into();
    route.rules = vec![MatchRule {
        header: Some("x-canary".into()),
        cookie: None,
        user_agent: None,
        claim: None,
        equals: None,
        to: "catalog@v2".into(),
    }];
    route.sticky_cookie = Some("tw_v".into());
    route.mirror = Some(MirrorConfig {
        to: "catalog@v2".into(),
        percent: 10,
        writes: false,
        ignore: vec!["updated_at".into()],
    });
    route.rollback = Some(RollbackConfig {
        error_margin_percent: 5,
        p99_margin_ms: 250,
        window_secs: 30,
        min_requests: 20,
    });
    let mut config = GatewayConfig {
        routes: vec![
            route,
            RouteConfig::new("/api/v1/basket", "basket", Access::User, Access::User),
        ],
        trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
        ..GatewayConfig::default()
    };
    config.rate_limit.rules.push(RateRule::new(
        "login",
        "/api/v1/identity/login",
        &["POST"],
        LimitKey::Ip,
        5,
        60_000,
    ));
    let answer = serde_json::to_value(ConfigVersion { version: 3, config }).unwrap();
    conforms(&document, &schema("ConfigVersion"), &answer, "").unwrap();

    let instances = Instances {
        services: vec![tideway_balance::ServiceStatus {
            service: "catalog".into(),
            instances: vec![tideway_balance::InstanceStatus {
                id: "catalog-1".into(),
                address: "http://127.0.0.1:4001".into(),
                version: None,
                zone: Some("a".into()),
                ready: true,
                ejected: false,
                breaker: "closed".into(),
                requests_per_sec: 2.5,
                ewma_latency_ms: 1.25,
                in_flight: 0,
                requests_total: 10,
                errors_total: 0,
                ejections_total: 0,
            }],
        }],
    };
    let answer = serde_json::to_value(instances).unwrap();
    conforms(&document, &schema("Instances"), &answer, "").unwrap();

    let report = TrafficReport {
        version: 4,
        routes: vec![RouteTraffic {
            prefix: "/api/v1/catalog".into(),
            upstream: "catalog".into(),
            versions: [("catalog@v1".to_owned(), 100)].into(),
            figures: [(
                "catalog@v1".to_owned(),
                Figures {
                    requests: 3,
                    errors: 1,
                    p99_ms: 12.5,
                },
            )]
            .into(),
            mirror: Some("catalog@v2".into()),
            rollback: true,
        }],
        mirror: [("/api/v1/catalog".to_owned(), MirrorCounts::default())].into(),
        differences: vec![MirrorDiff {
            at: 1,
            route: "/api/v1/catalog".into(),
            shadow: "catalog@v2".into(),
            request: "GET /api/v1/catalog/items".into(),
            primary_status: 200,
            shadow_status: 0,
            at_field: "status".into(),
        }],
        events: vec![TrafficEvent {
            at: 1,
            kind: "switch".into(),
            by: "ops".into(),
            route: None,
            detail: "all traffic to catalog@v1".into(),
            version: 4,
        }],
    };
    let report = serde_json::to_value(report).unwrap();
    conforms(&document, &schema("TrafficReport"), &report, "").unwrap();

    // The checker does refuse what does not fit.
    let mut wrong = answer.clone();
    wrong["services"][0]["instances"][0]["ready"] = serde_json::json!("yes");
    assert!(conforms(&document, &schema("Instances"), &wrong, "").is_err());
    wrong = answer;
    wrong["services"][0]["colour"] = serde_json::json!("red");
    assert!(conforms(&document, &schema("Instances"), &wrong, "").is_err());
}
