//! The API's contract, checked from outside: the gateway serves the merged OpenAPI 3.1
//! document and its reference page, and schemathesis (from the test tools' venv, see
//! `scripts/test-tools.sh`) reads that document and sends generated requests, valid and
//! invalid, to every operation, as the demo customer and as the demo admin. Each answer must
//! not be a 5xx, must have a status the document lists for its operation, and must match the
//! schema documented for that status. Embedded shape (`tideway up`), its own data directory.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;
use tideway::App;

/// Test cases per operation and phase: enough to reach every documented refusal, bounded so
/// a run takes seconds. Deterministic generation: the same requests on every run.
const MAX_EXAMPLES: &str = "25";

/// Operations left out of the run: with a valid generated body each would replace the
/// running routes or flags under the rest of it. Their refusals are covered by the gateway's
/// and the flags' own tests (a bad body is a 422 naming the field, and nothing changes).
const NOT_FUZZED: [&str; 3] = [
    "PUT /api/v1/admin/config",
    "POST /api/v1/admin/traffic/switch",
    "PUT /api/v1/admin/flags",
];

/// Operations in the merged document: the services' and the gateway's operator API.
const OPERATIONS: usize = 45;

/// The `st` of the test tools' venv.
fn schemathesis() -> PathBuf {
    let home = std::env::var("HOME").unwrap_or_default();
    let venv = std::env::var("TIDEWAY_TEST_VENV")
        .unwrap_or_else(|_| format!("{home}/.cache/tideway-test-venv"));
    Path::new(&venv).join("bin/st")
}

/// `st run` against the document at `base`, with `token` on every request; its exit status
/// and output (on a blocking thread: the shop under test runs on this test's runtime).
async fn run_schemathesis(st: &Path, base: &str, token: &str, dir: &Path) -> (bool, String) {
    let mut command = Command::new(st);
    command
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .args(["run", &format!("{base}/api/openapi.json")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,response_schema_conformance",
        ])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--max-examples", MAX_EXAMPLES])
        .arg("--generation-deterministic")
        .args(["--phases", "examples,coverage,fuzzing"])
        // One worker: hypothesis is not thread-safe everywhere, and one keeps the order fixed.
        .args(["--workers", "1"])
        .args(["--request-timeout", "10"])
        .args(NOT_FUZZED.iter().flat_map(|name| ["--exclude-name", name]))
        .arg("--no-color");
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap_or_else(|err| panic!("{}: {err}; run scripts/deps.sh", st.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test]
async fn every_operation_keeps_its_documented_contract_under_schemathesis() {
    let st = schemathesis();
    if !st.exists() {
        assert!(
            !tideway_testkit::is_ci(),
            "{} is missing and CI=true: scripts/deps.sh installs it",
            st.display()
        );
        eprintln!(
            "note: skipping: {} is missing; run scripts/test-tools.sh",
            st.display()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::embedded_config(dir.path());
    // The sign-in, registration, refresh and checkout limits would answer most generated
    // requests with a (documented) 429 before they reach the services' own rules.
    config.gateway.gateway.rate_limit.enabled = false;
    let server = crate::serve_ready(App::embedded(&config).await.unwrap()).await;
    let base = server.base_url().to_owned();
    let http = reqwest::Client::new();

    // The merged document: every service's operations, the bearer scheme, the problems.
    let document: Value = http
        .get(format!("{base}/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    let operations: usize = document["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|path| path.as_object().unwrap().len())
        .sum();
    assert_eq!(operations, OPERATIONS, "{document}");
    for name in NOT_FUZZED {
        let (method, path) = name.split_once(' ').unwrap();
        assert!(
            document["paths"][path][method.to_lowercase()].is_object(),
            "{name} is not in the document"
        );
    }
    assert_eq!(
        document["components"]["securitySchemes"]["bearer"]["bearerFormat"],
        "JWT"
    );

    // The reference page loads its scripts from files of this origin, none inline.
    let page = http.get(format!("{base}/api/docs")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(policy.contains("script-src 'self';"), "{policy}");
    assert!(!policy.contains("unsafe"), "{policy}");
    let html = page.text().await.unwrap();
    let scripts: Vec<&str> = html
        .split("<script")
        .skip(1)
        .map(|tag| tag.split("</script>").next().unwrap())
        .collect();
    assert_eq!(scripts.len(), 2, "{html}");
    for script in scripts {
        let src = script
            .split("src=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("an inline script: {script}"));
        assert!(script.ends_with('>'), "a script with a body: {script}");
        let asset = http.get(format!("{base}{src}")).send().await.unwrap();
        assert_eq!(asset.status(), 200, "{src}");
        assert!(
            asset.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/javascript"),
            "{src}"
        );
    }

    let customer =
        crate::scenario::login(&http, &base, "demo@tideway.local", "tideway-demo-1").await;
    let admin =
        crate::scenario::login(&http, &base, "admin@tideway.local", "tideway-admin-1").await;
    for (who, token) in [("customer", customer), ("admin", admin)] {
        let (passed, output) = run_schemathesis(&st, &base, &token, dir.path()).await;
        assert!(passed, "schemathesis as the {who}:\n{output}");
        // Every other operation was tested: none skipped for an unreadable part of the
        // document.
        let tested = format!("Tested: {}", OPERATIONS - NOT_FUZZED.len());
        assert!(output.contains(&tested), "as the {who}:\n{output}");
        assert!(!output.contains("Unresolvable"), "as the {who}:\n{output}");
    }

    server.stop(crate::STOP_DEADLINE).await;
}
