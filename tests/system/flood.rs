//! A flood of sign-ins against `tideway up`: memory stays bounded, the excess is refused
//! with 503 and `Retry-After`, and browsing goes on.

use std::time::Duration;

use crate::processes::Proc;

/// The peak resident memory of `pid` so far, in KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn a_login_flood_keeps_memory_bounded_and_browsing_alive() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        (
            "TIDEWAY_GATEWAY__LISTEN".to_owned(),
            "127.0.0.1:0".to_owned(),
        ),
        (
            "TIDEWAY_DATA_DIR".to_owned(),
            dir.path().display().to_string(),
        ),
    ];
    let mut up = Proc::start("up", &["up"], &env, dir.path());
    let base = up.listening(Duration::from_secs(60)).await.unwrap();
    crate::scenario::wait_ready(&base, Duration::from_secs(30)).await;
    let before = peak_rss_kib(up.pid());

    let client = reqwest::Client::new();
    let logins: Vec<_> = (0..500)
        .map(|_| {
            let client = client.clone();
            let url = format!("{base}/api/identity/login");
            tokio::spawn(async move {
                let response = client
                    .post(url)
                    .json(&serde_json::json!({
                        "email": "demo@tideway.local",
                        "password": "tideway-demo-1"
                    }))
                    .send()
                    .await
                    .unwrap();
                let retry_after = response.headers().contains_key("retry-after");
                (response.status().as_u16(), retry_after)
            })
        })
        .collect();
    // Browsing while the flood is on.
    let page =
        crate::scenario::get_json(&client, &format!("{base}/api/catalog/items?page_size=3")).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 3);

    let (mut ok, mut refused) = (0, 0);
    for login in logins {
        match login.await.unwrap() {
            (200, _) => ok += 1,
            (503, retry_after) => {
                assert!(retry_after, "a refused sign-in says when to come back");
                refused += 1;
            }
            (status, _) => panic!("a sign-in answered {status}"),
        }
    }
    let peak = peak_rss_kib(up.pid());
    eprintln!(
        "500 concurrent sign-ins: {ok} signed in, {refused} refused; peak RSS {} MiB (before {} MiB)",
        peak / 1024,
        before / 1024
    );
    assert!(ok > 0, "some sign-ins are served");
    assert!(
        peak < 300 * 1024,
        "peak RSS {} MiB stays under 300 MiB",
        peak / 1024
    );
    // And once the flood is over, a sign-in is served again.
    crate::scenario::login(&client, &base, "demo@tideway.local", "tideway-demo-1").await;
}
