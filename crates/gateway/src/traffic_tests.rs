//! Versions, splits, stickiness, blue/green switches, mirroring, rollback and the running
//! configuration, through the gateway's router in this process.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Body,
    error_handling::HandleErrorLayer,
    http::{HeaderMap, Request, StatusCode},
    response::IntoResponse,
    routing::{any, get},
};
use tideway_resilience::{BoxError, FaultHandle, FaultInjectionLayer, Faults};
use tideway_runtime::auth::{JwtVerifier, TokenSigner};
use tokio::sync::Notify;
use tower::ServiceExt;

use super::*;

/// An upstream answering which version it is, and a stamp that differs per version when
/// `volatile` is set.
fn version(name: &'static str, seen: Arc<AtomicUsize>) -> Router {
    let handler = move |headers: HeaderMap| {
        let seen = Arc::clone(&seen);
        async move {
            seen.fetch_add(1, Ordering::SeqCst);
            let shadow = headers.contains_key("x-tideway-shadow");
            axum::Json(serde_json::json!({
                "version": name,
                "items": [{"id": 1, "price": 100}],
                "served_at": name,
                "shadow": shadow,
            }))
        }
    };
    Router::new()
        .route("/api/v1/catalog", any(handler.clone()))
        .route("/api/v1/catalog/{*rest}", any(handler))
        .route("/health/ready", get(|| async { "ok" }))
}

struct Shop {
    router: Router,
    signer: TokenSigner,
    control: GatewayControl,
    /// Requests each version served, shadows included.
    seen: HashMap<&'static str, Arc<AtomicUsize>>,
}

fn catalog_route() -> RouteConfig {
    RouteConfig::new(
        "/api/v1/catalog",
        "catalog",
        Access::Public,
        Access::Role("admin".into()),
    )
}

/// A gateway over `catalog@v1`, `catalog@v2` (and `catalog` = v1) with `route`; `v2`
/// replaces v2's router when given.
fn shop_with(route: RouteConfig, v2: Option<Router>) -> Shop {
    shop_audited(route, v2, None)
}

/// [`shop_with`], recording admin actions in `audit` when given.
fn shop_audited(
    route: RouteConfig,
    v2: Option<Router>,
    audit: Option<tideway_audit::AuditStore>,
) -> Shop {
    let signer = TokenSigner::generate().unwrap();
    let verifier = Arc::new(JwtVerifier::from_keys(signer.jwks(), "tideway", "tideway"));
    let seen: HashMap<&'static str, Arc<AtomicUsize>> = ["v1", "v2"]
        .into_iter()
        .map(|v| (v, Arc::new(AtomicUsize::new(0))))
        .collect();
    let timeout = Duration::from_secs(10);
    let v1 = version("v1", Arc::clone(&seen["v1"]));
    let v2 = v2.unwrap_or_else(|| version("v2", Arc::clone(&seen["v2"])));
    let upstreams = HashMap::from([
        (
            "catalog".to_owned(),
            Transport::in_process("catalog", v1.clone(), timeout),
        ),
        (
            "catalog@v1".to_owned(),
            Transport::in_process("catalog", v1, timeout),
        ),
        (
            "catalog@v2".to_owned(),
            Transport::in_process("catalog", v2, timeout),
        ),
    ]);
    let config = GatewayConfig {
        routes: vec![route],
        ..GatewayConfig::default()
    };
    let mut gateway = Gateway::new(&config, upstreams, verifier).unwrap();
    if let Some(audit) = audit {
        gateway = gateway.with_audit(audit);
    }
    Shop {
        router: gateway.router(),
        control: gateway.control(),
        signer,
        seen,
    }
}

fn split(v1: u32, v2: u32) -> RouteConfig {
    RouteConfig {
        versions: [("catalog@v1".to_owned(), v1), ("catalog@v2".to_owned(), v2)].into(),
        ..catalog_route()
    }
}

impl Shop {
    fn token(&self, user: &str, roles: &[&str]) -> String {
        let claims = TokenSigner::claims(
            user,
            "u@x.io",
            roles,
            "tideway",
            "tideway",
            Duration::from_secs(600),
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

    /// The version that answered a GET with `headers`.
    async fn version_for(&self, headers: &[(&str, String)]) -> String {
        let mut request = Request::get("/api/v1/catalog/items");
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let (status, _, body) = self.send(request.body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["version"].as_str().unwrap().to_owned()
    }

    fn admin(&self) -> String {
        format!("Bearer {}", self.token("ops", &["admin"]))
    }

    async fn admin_get(&self, path: &str) -> serde_json::Value {
        let (status, _, body) = self
            .send(
                Request::get(path)
                    .header("authorization", self.admin())
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    async fn admin_send(
        &self,
        method: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> (StatusCode, serde_json::Value) {
        let (status, _, body) = self
            .send(
                Request::builder()
                    .method(method)
                    .uri(path)
                    .header("authorization", self.admin())
                    .header("content-type", "application/json")
                    .body(Body::from(body.to_string()))
                    .unwrap(),
            )
            .await;
        (status, body)
    }
}

/// Waits for `condition` with a generous deadline (the machine is shared).
async fn eventually(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn weights_hold_within_a_tolerance_over_ten_thousand_requests() {
    let shop = shop_with(split(95, 5), None);
    // Anonymous requests without a key are split at random.
    let mut v2 = 0;
    for _ in 0..10_000 {
        if shop.version_for(&[]).await == "v2" {
            v2 += 1;
        }
    }
    // 5% of 10,000 is 500, with a standard deviation of about 22: ±100 is > 4.5 sd.
    assert!((400..=600).contains(&v2), "v2 served {v2} of 10000");

    // Keyed requests (10,000 different users' cookies) are split by the hash as well.
    let shop = shop_with(
        RouteConfig {
            sticky_cookie: Some("tw_v".into()),
            ..split(95, 5)
        },
        None,
    );
    let mut v2 = 0;
    for user in 0..10_000 {
        let cookie = format!("tw_v=client-{user}");
        if shop.version_for(&[("cookie", cookie)]).await == "v2" {
            v2 += 1;
        }
    }
    assert!((400..=600).contains(&v2), "v2 served {v2} of 10000 keys");
}

#[tokio::test]
async fn a_client_stays_on_the_version_first_chosen() {
    let shop = shop_with(
        RouteConfig {
            sticky_cookie: Some("tw_v".into()),
            ..split(50, 50)
        },
        None,
    );
    // A client without the cookie is given one; with it, it keeps its version.
    let mut chosen = HashMap::new();
    for _ in 0..40 {
        let (status, headers, body) = shop
            .send(Request::get("/api/v1/catalog").body(Body::empty()).unwrap())
            .await;
        assert_eq!(status, StatusCode::OK);
        let cookie = headers["set-cookie"].to_str().unwrap().to_owned();
        assert!(cookie.starts_with("tw_v=") && cookie.contains("HttpOnly"));
        let pair = cookie.split(';').next().unwrap().to_owned();
        let first = body["version"].as_str().unwrap().to_owned();
        for _ in 0..10 {
            assert_eq!(shop.version_for(&[("cookie", pair.clone())]).await, first);
        }
        *chosen.entry(first).or_insert(0) += 1;
    }
    // Both versions got clients: stickiness is per client, not one version for all.
    assert_eq!(chosen.len(), 2, "{chosen:?}");

    // A signed-in user is kept by their id, whatever cookie they carry.
    for user in ["alice", "bob", "carol", "dave"] {
        let bearer = format!("Bearer {}", shop.token(user, &["customer"]));
        let first = shop.version_for(&[("authorization", bearer.clone())]).await;
        for n in 0..10 {
            let cookie = format!("tw_v=other-{n}");
            let again = shop
                .version_for(&[("authorization", bearer.clone()), ("cookie", cookie)])
                .await;
            assert_eq!(again, first, "{user} moved");
        }
    }

    // Raising the canary's weight keeps its users on it (the bands only grow).
    let keys: Vec<String> = (0..300).map(|n| format!("tw_v=k{n}")).collect();
    let (_, mut config) = shop.control.current();
    config.routes[0].versions =
        [("catalog@v1".to_owned(), 90), ("catalog@v2".to_owned(), 10)].into();
    shop.control.apply(&config, "test").unwrap();
    let mut on_v2 = Vec::new();
    for key in &keys {
        if shop.version_for(&[("cookie", key.clone())]).await == "v2" {
            on_v2.push(key.clone());
        }
    }
    assert!(!on_v2.is_empty());
    config.routes[0].versions =
        [("catalog@v1".to_owned(), 70), ("catalog@v2".to_owned(), 30)].into();
    shop.control.apply(&config, "test").unwrap();
    for key in &on_v2 {
        assert_eq!(shop.version_for(&[("cookie", key.clone())]).await, "v2");
    }
}

#[tokio::test]
async fn match_rules_pick_the_version_before_the_weights() {
    let rule = |f: fn(&mut MatchRule)| {
        let mut rule = MatchRule {
            header: None,
            cookie: None,
            user_agent: None,
            claim: None,
            equals: None,
            to: "catalog@v2".into(),
        };
        f(&mut rule);
        rule
    };
    let shop = shop_with(
        RouteConfig {
            rules: vec![
                rule(|r| {
                    r.header = Some("x-canary".into());
                    r.equals = Some("1".into());
                }),
                rule(|r| r.cookie = Some("beta".into())),
                rule(|r| r.user_agent = Some("TidewayMobile".into())),
                rule(|r| {
                    r.claim = Some("role".into());
                    r.equals = Some("staff".into());
                }),
                rule(|r| {
                    r.claim = Some("sub".into());
                    r.equals = Some("u-42".into());
                }),
            ],
            // The canary takes no weighted traffic: only the rules reach it.
            ..split(100, 0)
        },
        None,
    );
    assert_eq!(shop.version_for(&[]).await, "v1");
    assert_eq!(shop.version_for(&[("x-canary", "1".into())]).await, "v2");
    assert_eq!(shop.version_for(&[("x-canary", "0".into())]).await, "v1");
    assert_eq!(
        shop.version_for(&[("cookie", "a=b; beta=yes".into())])
            .await,
        "v2"
    );
    assert_eq!(
        shop.version_for(&[("user-agent", "Mozilla/5.0 tidewaymobile/3.1".into())])
            .await,
        "v2"
    );
    let staff = format!("Bearer {}", shop.token("u-1", &["staff"]));
    let customer = format!("Bearer {}", shop.token("u-1", &["customer"]));
    let chosen = format!("Bearer {}", shop.token("u-42", &["customer"]));
    assert_eq!(shop.version_for(&[("authorization", staff)]).await, "v2");
    assert_eq!(shop.version_for(&[("authorization", customer)]).await, "v1");
    assert_eq!(shop.version_for(&[("authorization", chosen)]).await, "v2");
}

#[tokio::test]
async fn a_blue_green_switch_is_atomic_and_fails_no_request() {
    let shop = shop_with(split(100, 0), None);
    // Many clients read while the route is switched back and forth.
    let failures = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let router = shop.router.clone();
        let failures = Arc::clone(&failures);
        clients.push(tokio::spawn(async move {
            for _ in 0..300 {
                let response = router
                    .clone()
                    .oneshot(Request::get("/api/v1/catalog").body(Body::empty()).unwrap())
                    .await
                    .unwrap();
                if response.status() != StatusCode::OK {
                    failures.fetch_add(1, Ordering::SeqCst);
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    let mut last = 0;
    for n in 0..20 {
        let to = if n % 2 == 0 {
            "catalog@v2"
        } else {
            "catalog@v1"
        };
        let (status, body) = shop
            .admin_send(
                "POST",
                SWITCH_PATH,
                &serde_json::json!({"route": "/api/v1/catalog", "to": to}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let version = body["version"].as_u64().unwrap();
        assert!(version > last, "versions are numbered upwards");
        last = version;
        tokio::task::yield_now().await;
    }
    for client in clients {
        client.await.unwrap();
    }
    assert_eq!(failures.load(Ordering::SeqCst), 0);
    // The last switch went to v1: every request now lands there, none on v2.
    let before = shop.seen["v2"].load(Ordering::SeqCst);
    for _ in 0..50 {
        assert_eq!(shop.version_for(&[]).await, "v1");
    }
    assert_eq!(shop.seen["v2"].load(Ordering::SeqCst), before);
    // Rolling back is the same action.
    let (status, body) = shop
        .admin_send(
            "POST",
            SWITCH_PATH,
            &serde_json::json!({"route": "/api/v1/catalog", "to": "catalog@v2"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["config"]["routes"][0]["versions"]["catalog@v2"], 100);
    assert_eq!(body["config"]["routes"][0]["versions"]["catalog@v1"], 0);
    assert_eq!(shop.version_for(&[]).await, "v2");
    // A bad switch is refused as a whole, naming the field, and changes nothing.
    let before = shop.admin_get(CONFIG_PATH).await;
    for (bad, field) in [
        (
            serde_json::json!({"route": "/api/v1/catalog", "to": "catalog@v9"}),
            "to",
        ),
        (
            serde_json::json!({"route": "/api/v1/nowhere", "to": "catalog@v1"}),
            "route",
        ),
        (serde_json::json!({"route": 7, "to": "catalog@v1"}), "route"),
        (serde_json::json!({"route": "/api/v1/catalog"}), "body"),
        (
            serde_json::json!({"route": "/api/v1/catalog", "to": "catalog@v1", "weight": 5}),
            "weight",
        ),
    ] {
        let (status, body) = shop.admin_send("POST", SWITCH_PATH, &bad).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
        assert_eq!(body["invalid-params"][0]["name"], field, "{bad}: {body}");
    }
    assert_eq!(shop.admin_get(CONFIG_PATH).await, before);
    assert_eq!(shop.version_for(&[]).await, "v2");
    let report = shop.admin_get(TRAFFIC_PATH).await;
    assert_eq!(report["events"].as_array().unwrap().len(), 21);
    assert_eq!(report["events"][0]["kind"], "switch");
    assert_eq!(report["events"][0]["by"], "ops");
}

#[tokio::test]
async fn in_flight_requests_finish_on_the_version_they_started_on() {
    let hold = Arc::new(Notify::new());
    let entered = Arc::new(AtomicUsize::new(0));
    let v2 = {
        let (hold, entered) = (Arc::clone(&hold), Arc::clone(&entered));
        Router::new().route(
            "/api/v1/catalog/{*rest}",
            get(move || {
                let (hold, entered) = (Arc::clone(&hold), Arc::clone(&entered));
                async move {
                    entered.fetch_add(1, Ordering::SeqCst);
                    hold.notified().await;
                    axum::Json(serde_json::json!({"version": "v2"}))
                }
            }),
        )
    };
    let shop = shop_with(split(0, 100), Some(v2));
    let router = shop.router.clone();
    let in_flight = tokio::spawn(async move {
        let response = router
            .oneshot(
                Request::get("/api/v1/catalog/a")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, body)
    });
    eventually("the request to reach v2", async || {
        entered.load(Ordering::SeqCst) == 1
    })
    .await;
    let (status, _) = shop
        .admin_send(
            "POST",
            SWITCH_PATH,
            &serde_json::json!({"route": "/api/v1/catalog", "to": "catalog@v1"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shop.version_for(&[]).await, "v1");
    hold.notify_one();
    let (status, body) = in_flight.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&body).contains("v2"));
}

#[tokio::test]
async fn a_mirror_never_changes_the_users_answer_and_counts_differences() {
    // The shadow answers differently: another price, another stamp, and slowly.
    let shadow_seen = Arc::new(AtomicUsize::new(0));
    let shadow = {
        let seen = Arc::clone(&shadow_seen);
        let handler = move || {
            let seen = Arc::clone(&seen);
            async move {
                seen.fetch_add(1, Ordering::SeqCst);
                axum::Json(serde_json::json!({
                    "version": "v1",
                    "items": [{"id": 1, "price": 90}],
                    "served_at": "elsewhere",
                    "shadow": false,
                }))
            }
        };
        Router::new()
            .route("/api/v1/catalog/{*rest}", any(handler.clone()))
            .route("/api/v1/catalog", any(handler))
    };
    let shop = shop_with(
        RouteConfig {
            mirror: Some(MirrorConfig {
                to: "catalog@v2".into(),
                percent: 100,
                writes: false,
                ignore: vec!["served_at".into(), "shadow".into()],
            }),
            write: Access::Public,
            ..catalog_route()
        },
        Some(shadow),
    );
    for _ in 0..20 {
        let (status, _, body) = shop
            .send(
                Request::get("/api/v1/catalog/items")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        // The user gets the primary's answer, never the shadow's.
        assert_eq!(body["version"], "v1");
        assert_eq!(body["items"][0]["price"], 100);
        assert_eq!(body["shadow"], false);
    }
    // A write is not mirrored unless the route says so.
    let (status, _, _) = shop
        .send(
            Request::post("/api/v1/catalog/items")
                .body(Body::from("{}"))
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    eventually("the shadow calls to be compared", async || {
        let report = shop.admin_get(TRAFFIC_PATH).await;
        report["mirror"]["/api/v1/catalog"]["different"] == 20
    })
    .await;
    assert_eq!(shadow_seen.load(Ordering::SeqCst), 20);
    let report = shop.admin_get(TRAFFIC_PATH).await;
    let diff = &report["differences"][0];
    assert_eq!(diff["at_field"], "/items/0/price", "{report}");
    assert_eq!(diff["request"], "GET /api/v1/catalog/items");
    assert_eq!(report["mirror"]["/api/v1/catalog"]["mirrored"], 20);
}

#[tokio::test]
async fn a_stuck_shadow_is_dropped_not_waited_for() {
    // The shadow never answers: the queue fills, copies are dropped, users are served.
    let shadow = Router::new().route(
        "/api/v1/catalog/{*rest}",
        any(std::future::pending::<axum::response::Response>),
    );
    let signer = TokenSigner::generate().unwrap();
    let verifier = Arc::new(JwtVerifier::from_keys(signer.jwks(), "tideway", "tideway"));
    let seen = Arc::new(AtomicUsize::new(0));
    let timeout = Duration::from_secs(600);
    let upstreams = HashMap::from([
        (
            "catalog".to_owned(),
            Transport::in_process("catalog", version("v1", Arc::clone(&seen)), timeout),
        ),
        (
            "catalog@v2".to_owned(),
            Transport::in_process("catalog", shadow, timeout),
        ),
    ]);
    let config = GatewayConfig {
        routes: vec![RouteConfig {
            mirror: Some(MirrorConfig {
                to: "catalog@v2".into(),
                percent: 100,
                writes: false,
                ignore: Vec::new(),
            }),
            timeout_ms: 600_000,
            ..catalog_route()
        }],
        mirror_queue: 4,
        ..GatewayConfig::default()
    };
    let gateway = Gateway::new(&config, upstreams, verifier).unwrap();
    let router = gateway.router();
    for _ in 0..100 {
        let response = router
            .clone()
            .oneshot(
                Request::get("/api/v1/catalog/x")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_eq!(seen.load(Ordering::SeqCst), 100);
    let counts = gateway.live.ledger.mirror.lock().unwrap()["/api/v1/catalog"].clone();
    // At most the queue and the calls in flight hold copies; the rest were dropped.
    assert!(counts.mirrored <= 4 + 8 + 1, "{counts:?}");
    assert_eq!(counts.mirrored + counts.dropped, 100, "{counts:?}");
}

#[tokio::test]
async fn a_canary_erring_beyond_the_margin_is_set_to_zero() {
    // The canary's errors are injected by the faults layer the serve processes use.
    let faults = FaultHandle::new();
    let v2 = tower::Layer::layer(
        &(
            HandleErrorLayer::new(|err: BoxError| async move {
                (StatusCode::BAD_GATEWAY, err.to_string()).into_response()
            }),
            FaultInjectionLayer::new(faults.clone()),
        ),
        version("v2", Arc::new(AtomicUsize::new(0))),
    );
    let v2 = Router::new().fallback_service(v2);
    let shop = shop_with(
        RouteConfig {
            rollback: Some(RollbackConfig {
                error_margin_percent: 10,
                p99_margin_ms: 60_000,
                window_secs: 600,
                min_requests: 20,
            }),
            ..split(50, 50)
        },
        Some(v2),
    );
    // Healthy, the canary keeps its share.
    for _ in 0..100 {
        shop.version_for(&[]).await;
    }
    // A check now (the gateway also runs one every half second) leaves it alone.
    shop.control.live.check_rollbacks();
    let report = shop.admin_get(TRAFFIC_PATH).await;
    assert_eq!(
        report["routes"][0]["versions"]["catalog@v2"], 50,
        "{report}"
    );

    faults
        .set(Faults {
            error_share: 1.0,
            error_status: StatusCode::SERVICE_UNAVAILABLE,
            ..Faults::default()
        })
        .unwrap();
    let mut errors = 0;
    while errors < 40 {
        let (status, _, _) = shop
            .send(
                Request::get("/api/v1/catalog/x")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            errors += 1;
        }
    }
    eventually("the canary to be rolled back", async || {
        let report = shop.admin_get(TRAFFIC_PATH).await;
        report["routes"][0]["versions"]["catalog@v2"] == 0
    })
    .await;
    let report = shop.admin_get(TRAFFIC_PATH).await;
    assert_eq!(report["routes"][0]["versions"]["catalog@v1"], 100);
    let event = report["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(event["kind"], "rollback");
    assert_eq!(event["by"], "gateway");
    assert!(event["detail"].as_str().unwrap().contains("catalog@v2"));
    // From now on every request is served by v1.
    for _ in 0..50 {
        assert_eq!(shop.version_for(&[]).await, "v1");
    }
}

#[tokio::test]
async fn a_new_configuration_is_validated_in_full_before_it_is_swapped_in() {
    let shop = shop_with(split(95, 5), None);
    let current = shop.admin_get(CONFIG_PATH).await;
    assert_eq!(current["version"], 1);
    let mut config = current["config"].clone();

    // A rule sending to a version the route does not have: refused, naming the key.
    config["routes"][0]["rules"] = serde_json::json!([{"header": "x-canary", "to": "catalog@v3"}]);
    let (status, body) = shop.admin_send("PUT", CONFIG_PATH, &config).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body.to_string().contains("gateway.routes[0].rules[0].to"),
        "{body}"
    );
    // An upstream nobody gave the gateway: refused too.
    config["routes"][0]["rules"] = serde_json::json!([]);
    config["routes"][0]["versions"] = serde_json::json!({"catalog@v1": 50, "catalog@v7": 50});
    let (status, body) = shop.admin_send("PUT", CONFIG_PATH, &config).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.to_string().contains("catalog@v7"), "{body}");
    // A mistyped value names its path.
    config["routes"][0]["versions"] = serde_json::json!({"catalog@v1": "lots"});
    let (status, body) = shop.admin_send("PUT", CONFIG_PATH, &config).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body.to_string().contains("gateway.routes[0].versions"),
        "{body}"
    );
    // Nothing changed.
    let unchanged = shop.admin_get(CONFIG_PATH).await;
    assert_eq!(unchanged, current);

    // A good one is swapped in as version 2 and applies to the next request.
    config["routes"][0]["versions"] = serde_json::json!({"catalog@v1": 0, "catalog@v2": 100});
    let (status, body) = shop.admin_send("PUT", CONFIG_PATH, &config).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["version"], 2);
    for _ in 0..20 {
        assert_eq!(shop.version_for(&[]).await, "v2");
    }
    // New routes come with it, without a new router.
    let mut more = body["config"].clone();
    more["routes"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "prefix": "/api/v1/catalog/beta", "upstream": "catalog@v1",
            "read": "public", "write": "public"
        }));
    let (status, body) = shop.admin_send("PUT", CONFIG_PATH, &more).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["version"], 3);
    let (_, _, body) = shop
        .send(
            Request::get("/api/v1/catalog/beta/x")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(body["version"], "v1");

    // Only admins read or change it.
    let customer = format!("Bearer {}", shop.token("u1", &["customer"]));
    let (status, _, _) = shop
        .send(
            Request::put(CONFIG_PATH)
                .header("authorization", customer)
                .body(Body::from(more.to_string()))
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = shop
        .send(Request::get(CONFIG_PATH).body(Body::empty()).unwrap())
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn rate_limits_change_without_a_restart() {
    let shop = shop_with(catalog_route(), None);
    for _ in 0..20 {
        assert_eq!(shop.version_for(&[]).await, "v1");
    }
    let mut config = shop.admin_get(CONFIG_PATH).await["config"].clone();
    config["rate_limit"]["rules"] = serde_json::json!([{
        "name": "catalog", "path": "/api/v1/catalog", "key": "route", "burst": 3, "period_ms": 600000
    }]);
    let (status, body) = shop.admin_send("PUT", CONFIG_PATH, &config).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut refused = 0;
    for _ in 0..10 {
        let (status, _, _) = shop
            .send(
                Request::get("/api/v1/catalog/x")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            refused += 1;
        }
    }
    assert_eq!(refused, 7, "a burst of 3 of 10, then refused");
    // A bad rule is refused naming it; the limit in force stays.
    config["rate_limit"]["rules"][0]["burst"] = serde_json::json!(0);
    let (status, body) = shop.admin_send("PUT", CONFIG_PATH, &config).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.to_string().contains("rate_limit.rules[0]"), "{body}");
    let (status, _, _) = shop
        .send(
            Request::get("/api/v1/catalog/x")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn switches_rollbacks_and_admin_writes_are_recorded_in_the_audit_trail() {
    let db = tideway_testkit::sqlite().await;
    let audit = tideway_audit::AuditStore::in_db(tideway_store_db(&db))
        .await
        .unwrap();
    let faults = FaultHandle::new();
    let v2 = tower::Layer::layer(
        &(
            HandleErrorLayer::new(|err: BoxError| async move {
                (StatusCode::BAD_GATEWAY, err.to_string()).into_response()
            }),
            FaultInjectionLayer::new(faults.clone()),
        ),
        version("v2", Arc::new(AtomicUsize::new(0))),
    );
    let shop = shop_audited(
        RouteConfig {
            rollback: Some(RollbackConfig {
                error_margin_percent: 10,
                p99_margin_ms: 60_000,
                window_secs: 600,
                min_requests: 20,
            }),
            ..split(50, 50)
        },
        Some(Router::new().fallback_service(v2)),
        Some(audit.clone()),
    );
    // An admin's write through a role-only route: recorded before the answer leaves.
    let (status, _) = shop
        .admin_send(
            "PUT",
            "/api/v1/catalog/items/1",
            &serde_json::json!({"price": 5}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, records) = audit.page(1, 10).await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].action, "catalog.put");
    assert_eq!(records[0].actor, "ops");
    assert_eq!(records[0].target, "/api/v1/catalog/items/1");
    assert!(records[0].before.is_some() && records[0].after.is_some());
    // A refused write changed nothing and is not recorded; nor is a read.
    let (status, _, _) = shop
        .send(
            Request::put("/api/v1/catalog/items/1")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    shop.version_for(&[]).await;
    assert_eq!(audit.page(1, 10).await.unwrap().0, 1);

    // A switch back and forth, then a rollback of the failing canary.
    for to in ["catalog@v2", "catalog@v1"] {
        let (status, body) = shop
            .admin_send(
                "POST",
                SWITCH_PATH,
                &serde_json::json!({"route": "/api/v1/catalog", "to": to}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, _) = shop
        .admin_send(
            "POST",
            SWITCH_PATH,
            &serde_json::json!({"route": "/api/v1/catalog", "to": "catalog@v1"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut config = shop.control.current().1;
    config.routes[0].versions =
        [("catalog@v1".to_owned(), 50), ("catalog@v2".to_owned(), 50)].into();
    shop.control.apply(&config, "ops").unwrap();
    faults
        .set(Faults {
            error_share: 1.0,
            error_status: StatusCode::SERVICE_UNAVAILABLE,
            ..Faults::default()
        })
        .unwrap();
    let mut errors = 0;
    while errors < 40 {
        let (status, _, _) = shop
            .send(
                Request::get("/api/v1/catalog/x")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            errors += 1;
        }
    }
    eventually("the rollback to be recorded", async || {
        let (_, records) = audit.page(1, 10).await.unwrap();
        records
            .first()
            .is_some_and(|r| r.action == "gateway.rollback")
    })
    .await;
    let (total, records) = audit.page(1, 10).await.unwrap();
    let actions: Vec<&str> = records.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "gateway.rollback",
            "gateway.config",
            "gateway.switch",
            "gateway.switch",
            "gateway.switch",
            "catalog.put"
        ]
    );
    assert_eq!(total, 6);
    let rollback = &records[0];
    assert_eq!(rollback.actor, "gateway");
    assert_eq!(rollback.target, "/api/v1/catalog");
    assert_eq!(
        rollback.before.as_ref().unwrap()["routes"][0]["versions"]["catalog@v2"],
        50
    );
    assert_eq!(
        rollback.after.as_ref().unwrap()["routes"][0]["versions"]["catalog@v2"],
        0
    );
    assert_eq!(
        audit.verify().await.unwrap(),
        tideway_audit::Verdict::Intact { count: 6 }
    );
}

fn tideway_store_db(db: &tideway_testkit::TestDb) -> tideway_store::Db {
    std::ops::Deref::deref(db).clone()
}
