//! Feature flags at run time: the item page's "You may also like" panel follows its flag
//! the moment an admin changes it, in one process; and a change made on one gateway reaches
//! another gateway and a service of the distributed shape through NATS KV, and is
//! recorded once in the gateways' shared audit trail.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tideway::App;
use tideway_testkit::{eventually, eventually_async};

use crate::{checkout::Shopper, processes::Proc, scenario};

const PANEL: &str = "You may also like";

/// An item whose category has other items, and those items' ids.
async fn item_with_neighbours(http: &reqwest::Client, base: &str) -> (Value, Vec<String>) {
    let page: Value = http
        .get(format!("{base}/api/v1/catalog/items?page_size=100"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = page["items"].as_array().unwrap();
    for item in items {
        let neighbours: Vec<String> = items
            .iter()
            .filter(|other| other["category"] == item["category"] && other["id"] != item["id"])
            .map(|other| other["id"].as_str().unwrap().to_owned())
            .collect();
        if !neighbours.is_empty() {
            return (item.clone(), neighbours);
        }
    }
    panic!("no category with two items: {page}");
}

/// The item page as `token`'s user (or anonymous) sees it.
async fn item_page(http: &reqwest::Client, base: &str, id: &str, token: Option<&str>) -> String {
    let mut request = http.get(format!("{base}/items/{id}"));
    if let Some(token) = token {
        request = request.header(reqwest::header::COOKIE, format!("tw_access={token}"));
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

async fn put_flags(http: &reqwest::Client, base: &str, token: &str, flags: Value) -> (u16, Value) {
    let response = http
        .put(format!("{base}/api/v1/admin/flags"))
        .bearer_auth(token)
        .json(&flags)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// The panel shows for whom the flag is on — everyone, a share of signed-in users, one
/// user — and goes when it is off, from the first page after each change; a bad
/// definition is refused naming its field and changes nothing.
#[tokio::test]
async fn the_panel_on_the_item_page_follows_its_flag_at_run_time() {
    let data = tempfile::tempdir().unwrap();
    let config = crate::embedded_config(data.path());
    let server = crate::serve_ready(App::embedded(&config).await.unwrap()).await;
    let base = server.base_url();
    let http = reqwest::Client::new();
    let admin = scenario::login(&http, base, "admin@tideway.local", "tideway-admin-1").await;
    let shopper = Shopper::register(base).await;
    let (item, neighbours) = item_with_neighbours(&http, base).await;
    let id = item["id"].as_str().unwrap();

    // Off by default, for everyone.
    let current: Value = http
        .get(format!("{base}/api/v1/admin/flags"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        current["flags"]["you-may-also-like"]["enabled"], false,
        "{current}"
    );
    assert!(
        !item_page(&http, base, id, Some(&shopper.token))
            .await
            .contains(PANEL)
    );

    // On for every signed-in user: the next page has it, with other items of the category.
    let (status, body) = put_flags(
        &http,
        base,
        &admin,
        json!({"flags": {"you-may-also-like": {"percent": 100}}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let page = item_page(&http, base, id, Some(&shopper.token)).await;
    assert!(page.contains(PANEL), "the panel shows at once");
    let panel = &page[page.find("also-like-heading").unwrap()..];
    assert!(
        neighbours
            .iter()
            .any(|other| panel.contains(&format!("/items/{other}"))),
        "the panel lists items of the same category"
    );
    assert!(
        !panel.contains(&format!("href=\"/items/{id}\"")),
        "not the item itself"
    );
    assert!(
        !item_page(&http, base, id, None).await.contains(PANEL),
        "a share of users needs a user"
    );

    // Targeted at another user: not this one.
    let (status, _) = put_flags(
        &http,
        base,
        &admin,
        json!({"flags": {"you-may-also-like": {"users": ["someone-else"], "roles": ["admin"]}}}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        !item_page(&http, base, id, Some(&shopper.token))
            .await
            .contains(PANEL)
    );
    assert!(
        item_page(&http, base, id, Some(&admin))
            .await
            .contains(PANEL),
        "on for the admin role"
    );

    // A bad definition: refused, naming the field; the running set stays.
    let (status, problem) = put_flags(
        &http,
        base,
        &admin,
        json!({"flags": {"you-may-also-like": {"enabled": true, "percent": 400}}}),
    )
    .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(
        problem["invalid-params"][0]["name"],
        "flags.you-may-also-like.percent"
    );
    assert!(
        item_page(&http, base, id, Some(&admin))
            .await
            .contains(PANEL)
    );
    let customer = http
        .put(format!("{base}/api/v1/admin/flags"))
        .bearer_auth(&shopper.token)
        .json(&json!({"flags": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(customer.status(), 403, "admins only");

    // Off: gone for everyone.
    let (status, _) = put_flags(&http, base, &admin, json!({"flags": {}})).await;
    assert_eq!(status, 200);
    assert!(
        !item_page(&http, base, id, Some(&admin))
            .await
            .contains(PANEL)
    );

    server.stop(crate::STOP_DEADLINE).await;
}

/// Two gateways and a catalog service as processes of the real binary, sharing flags over
/// a NATS KV bucket of the test's own: a change made on one gateway shows the panel on
/// the other gateway's pages within 2 s, and the catalog service applies it too.
#[tokio::test]
async fn a_flag_changed_on_one_gateway_reaches_the_other_processes_through_nats() {
    let Some(nats) = tideway_testkit::nats().await else {
        eprintln!("NATS is unreachable: skipped");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let options = nats.options();
    let bucket = format!("flags_{}", uuid::Uuid::new_v4().simple());
    // Both gateways record admin actions in one audit trail, on PostgreSQL when it runs.
    let audit_db = tideway_testkit::postgres().await;
    let mut env: Vec<(String, String)> = [
        ("TIDEWAY_DATA_DIR", dir.path().display().to_string()),
        ("TIDEWAY_GATEWAY__LISTEN", "127.0.0.1:0".into()),
        ("TIDEWAY_CATALOG__LISTEN", "127.0.0.1:0".into()),
        ("TIDEWAY_IDENTITY__LISTEN", "127.0.0.1:0".into()),
        ("TIDEWAY_BUS__NATS_URL", options.url.clone()),
        ("TIDEWAY_BUS__STREAM", options.stream.clone()),
        ("TIDEWAY_BUS__ROOT", options.root.clone()),
        ("TIDEWAY_DISCOVERY__KIND", "nats".into()),
        ("TIDEWAY_DISCOVERY__NATS__URL", options.url.clone()),
        ("TIDEWAY_DISCOVERY__NATS__BUCKET", bucket.clone()),
        ("TIDEWAY_DEMO_USERS", "true".into()),
        ("TIDEWAY_SHARE_FLAGS", "true".into()),
        ("TIDEWAY_GATEWAY__CACHE_ENABLED", "false".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    if let Some(db) = &audit_db {
        env.push(("TIDEWAY_AUDIT__DATABASE_URL".into(), db.url().to_owned()));
    }
    let mut identity = Proc::start("identity", &["serve", "identity"], &env, dir.path());
    let identity_url = identity.listening(Duration::from_secs(120)).await.unwrap();
    scenario::wait_ready(&identity_url, Duration::from_secs(60)).await;
    let mut catalog = Proc::start("catalog", &["serve", "catalog"], &env, dir.path());
    catalog.listening(Duration::from_secs(120)).await.unwrap();
    eventually(Duration::from_secs(60), "the catalog to register", || {
        catalog
            .log()
            .contains("\"message\":\"Registered in discovery.\"")
    })
    .await;
    let http = reqwest::Client::new();
    let mut gateways = Vec::new();
    for name in ["gateway-1", "gateway-2"] {
        let mut proc = Proc::start(name, &["gateway"], &env, dir.path());
        let url = proc.listening(Duration::from_secs(60)).await.unwrap();
        let items = format!("{url}/api/v1/catalog/items?page_size=1");
        eventually_async(Duration::from_secs(30), "a gateway to serve", || async {
            http.get(&items)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
        gateways.push((proc, url));
    }
    let (a, b) = (gateways[0].1.clone(), gateways[1].1.clone());
    let admin = scenario::login(&http, &a, "admin@tideway.local", "tideway-admin-1").await;
    let (item, _) = item_with_neighbours(&http, &b).await;
    let id = item["id"].as_str().unwrap();
    assert!(!item_page(&http, &b, id, Some(&admin)).await.contains(PANEL));

    let (status, body) = put_flags(
        &http,
        &a,
        &admin,
        json!({"flags": {"you-may-also-like": {"roles": ["admin"]}}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let changed = Instant::now();
    eventually_async(
        Duration::from_secs(10),
        "the other gateway to follow",
        || async { item_page(&http, &b, id, Some(&admin)).await.contains(PANEL) },
    )
    .await;
    let took = changed.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "the other gateway took {took:?}"
    );
    let on_b: Value = http
        .get(format!("{b}/api/v1/admin/flags"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        on_b["flags"]["you-may-also-like"]["roles"],
        json!(["admin"]),
        "{on_b}"
    );
    eventually(Duration::from_secs(10), "the catalog to follow", || {
        catalog
            .log()
            .contains("Applied the flags another process applied.")
    })
    .await;
    // The change is recorded once, where it was made, and read on either gateway.
    let trail: Value = eventually_async(Duration::from_secs(10), "the change recorded", || async {
        let trail: Value = http
            .get(format!("{b}/api/v1/admin/audit"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (trail["total"] == 1).then_some(trail)
    })
    .await;
    assert_eq!(trail["records"][0]["action"], "flags.replace", "{trail}");
    assert_eq!(
        trail["records"][0]["after"]["you-may-also-like"]["roles"],
        json!(["admin"])
    );
    drop(gateways);
    drop(catalog);
    drop(identity);
    let mut verify = std::process::Command::new(env!("CARGO_BIN_EXE_tideway"));
    verify
        .args(["audit", "verify"])
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("TIDEWAY_LOG__FILTER", "error");
    let output = verify.output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("intact: 1 record"), "{text}");
}
