//! The audit trail of admin actions in one process: a price change, a stock change, a flag
//! change and a configuration change each leave a record with who, what, before, after
//! and the trace id; admins alone read them; `tideway audit verify` passes on the trail
//! and names the record an edit of its table changed.

use std::process::Command;

use serde_json::{Value, json};
use tideway::App;

use crate::{checkout::Shopper, scenario};

const BIN: &str = env!("CARGO_BIN_EXE_tideway");

async fn audit_page(http: &reqwest::Client, base: &str, token: &str, query: &str) -> Value {
    let response = http
        .get(format!("{base}/api/v1/admin/audit{query}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// The subject (user id) of a JWT, read from its payload.
fn subject(token: &str) -> String {
    let payload = token.split('.').nth(1).unwrap();
    let mut bits = 0_u32;
    let mut count = 0;
    let mut bytes = Vec::new();
    for c in payload.bytes() {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => continue,
        };
        bits = (bits << 6) | u32::from(value);
        count += 6;
        if count >= 8 {
            count -= 8;
            bytes.push((bits >> count) as u8);
        }
    }
    let claims: Value = serde_json::from_slice(&bytes).unwrap();
    claims["sub"].as_str().unwrap().to_owned()
}

/// `tideway audit verify` on the data directory `dir`: its exit code and what it printed.
fn verify(dir: &std::path::Path) -> (i32, String) {
    let output = Command::new(BIN)
        .args(["audit", "verify"])
        .env("TIDEWAY_DATA_DIR", dir)
        .env("TIDEWAY_LOG__FILTER", "error")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

#[tokio::test]
async fn admin_actions_are_recorded_with_before_and_after_and_tampering_is_named() {
    let data = tempfile::tempdir().unwrap();
    let config = crate::embedded_config(data.path());
    let server = crate::serve_ready(App::embedded(&config).await.unwrap()).await;
    let base = server.base_url();
    let http = reqwest::Client::new();
    let admin = scenario::login(&http, base, "admin@tideway.local", "tideway-admin-1").await;
    let admin_id = subject(&admin);
    let page: Value = http
        .get(format!("{base}/api/v1/catalog/items?page_size=1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let item = &page["items"][0];
    let id = item["id"].as_str().unwrap();
    let old_price = item["price_minor"].as_i64().unwrap();
    let new_price = old_price + 111;

    // A catalog write.
    let response = http
        .put(format!("{base}/api/v1/catalog/items/{id}/price"))
        .bearer_auth(&admin)
        .json(&json!({ "price_minor": new_price }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let trace = response.headers()["x-trace-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let trail = audit_page(&http, base, &admin, "?page_size=1").await;
    let record = &trail["records"][0];
    assert_eq!(record["action"], "catalog.put", "{record}");
    assert_eq!(
        record["target"],
        format!("/api/v1/catalog/items/{id}/price"),
        "{record}"
    );
    assert_eq!(record["before"]["price_minor"], old_price, "{record}");
    assert_eq!(record["after"]["price_minor"], new_price, "{record}");
    assert_eq!(record["trace_id"], trace.as_str(), "{record}");
    assert_eq!(record["actor"], admin_id.as_str(), "{record}");

    // A stock change, a flag change and a configuration change.
    let response = http
        .put(format!("{base}/api/v1/inventory/stock/{id}"))
        .bearer_auth(&admin)
        .json(&json!({ "available": 42 }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = http
        .put(format!("{base}/api/v1/admin/flags"))
        .bearer_auth(&admin)
        .json(&json!({"flags": {"you-may-also-like": {"percent": 30}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut gateway: Value = http
        .get(format!("{base}/api/v1/admin/config"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    gateway["config"]["body_limit_bytes"] = json!(300_000);
    let response = http
        .put(format!("{base}/api/v1/admin/config"))
        .bearer_auth(&admin)
        .json(&gateway["config"])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // Flag and configuration changes are appended in order, off the request.
    let trail = tideway_testkit::eventually_async(
        std::time::Duration::from_secs(10),
        "four records",
        || async {
            let trail = audit_page(&http, base, &admin, "").await;
            (trail["total"] == 4).then_some(trail)
        },
    )
    .await;
    let actions: Vec<&str> = trail["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "gateway.config",
            "flags.replace",
            "inventory.put",
            "catalog.put"
        ],
        "newest first"
    );
    let stock = &trail["records"][2];
    assert_eq!(stock["after"]["available"], 42, "{stock}");
    let flag = &trail["records"][1];
    assert_eq!(
        flag["before"]["you-may-also-like"]["enabled"], false,
        "{flag}"
    );
    assert_eq!(flag["after"]["you-may-also-like"]["percent"], 30, "{flag}");
    let config = &trail["records"][0];
    assert_eq!(config["after"]["body_limit_bytes"], 300_000, "{config}");
    assert_ne!(config["before"]["body_limit_bytes"], 300_000, "{config}");

    // Paged; admins only; a bad page size names its parameter.
    let second = audit_page(&http, base, &admin, "?page=2&page_size=3").await;
    assert_eq!(second["records"].as_array().unwrap().len(), 1);
    assert_eq!(second["records"][0]["seq"], 1);
    let shopper = Shopper::register(base).await;
    let refused = http
        .get(format!("{base}/api/v1/admin/audit"))
        .bearer_auth(&shopper.token)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let refused = http
        .get(format!("{base}/api/v1/admin/audit?page_size=0"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["invalid-params"][0]["name"], "page_size");
    // The console's page shows the same records; a customer is refused it.
    let console = http
        .get(format!("{base}/ops/audit"))
        .header(reqwest::header::COOKIE, format!("tw_access={admin}"))
        .send()
        .await
        .unwrap();
    assert_eq!(console.status(), 200);
    let console = console.text().await.unwrap();
    assert!(console.contains("4 records"), "{console}");
    assert!(console.contains("data-audit=\"4\""), "{console}");
    assert!(console.contains("catalog.put") && console.contains("flags.replace"));
    assert!(
        console.contains(&format!("/ops/traces/{trace}")),
        "the trace is linked"
    );
    let refused = http
        .get(format!("{base}/ops/audit"))
        .header(
            reqwest::header::COOKIE,
            format!("tw_access={}", shopper.token),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    server.stop(crate::STOP_DEADLINE).await;

    // Intact: exit 0 and the count.
    let (code, text) = verify(data.path());
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("intact: 4 records"), "{text}");

    // The stock record's "after" edited in the table: verify fails naming it.
    let db = tideway_store::Db::connect(
        &format!("sqlite://{}/audit.db", data.path().display()),
        tideway_store::DbOptions::default(),
    )
    .await
    .unwrap();
    sqlx::query("UPDATE audit_records SET after_json = $1 WHERE seq = 2")
        .bind(r#"{"available":4200}"#)
        .execute(db.pool())
        .await
        .unwrap();
    db.close().await;
    let (code, text) = verify(data.path());
    assert_ne!(code, 0, "{text}");
    assert!(text.contains("record 2"), "{text}");
}
