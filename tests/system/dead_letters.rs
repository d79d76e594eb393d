//! A dead letter an operator can act on: a mail server that refuses dead-letters a
//! confirmation's email; `tideway dlq list` shows it, `tideway dlq redrive` sends it once
//! the server accepts, and it leaves the store. Embedded shape, a real SMTP server.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use tideway::App;
use tideway_testkit::eventually_async;

use crate::checkout::{Shopper, item_with_stock, wait_stocked};

const BIN: &str = env!("CARGO_BIN_EXE_tideway");

/// `tideway dlq ARGS` run as an operator would, on the data in `dir` (on a blocking
/// thread: the shop under test runs on this test's runtime).
async fn dlq(dir: &Path, args: &[&str]) -> String {
    let (dir, args): (std::path::PathBuf, Vec<String>) = (
        dir.to_owned(),
        args.iter().map(|a| (*a).to_owned()).collect(),
    );
    tokio::task::spawn_blocking(move || dlq_blocking(&dir, &args))
        .await
        .unwrap()
}

fn dlq_blocking(dir: &Path, args: &[String]) -> String {
    let output = Command::new(BIN)
        .current_dir(dir)
        .env("TIDEWAY_DATA_DIR", dir)
        .env("TIDEWAY_LOG__FILTER", "warn")
        .arg("dlq")
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "dlq {args:?}: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test]
async fn a_refused_confirmation_mail_is_dead_lettered_then_redriven_from_the_command_line() {
    // aiosmtpd from the test tools' venv, refusing the first message only.
    let home = std::env::var("HOME").unwrap();
    let python = std::env::var("TIDEWAY_TEST_VENV")
        .unwrap_or_else(|_| format!("{home}/.cache/tideway-test-venv"))
        + "/bin/python";
    let maildir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../services/notification/tests/api/smtp_server.py");
    let mut smtp = Command::new(&python)
        .arg(script)
        .arg("--maildir")
        .arg(maildir.path())
        .args(["--refuse", "1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("{python}: {err}; run scripts/deps.sh"));
    let mut line = String::new();
    BufReader::new(smtp.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned();

    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::embedded_config(dir.path());
    config.notification.service.smtp_url = Some(format!("smtp://127.0.0.1:{port}").into());
    // One attempt: the first refusal dead-letters it.
    config.notification.service.max_attempts = 1;
    let app = App::embedded(&config).await.unwrap();
    let server = crate::serve_ready(app).await;
    let base = server.base_url().to_owned();
    let deadline = Duration::from_secs(30);
    let (item, _) = item_with_stock(&base, 5).await;
    wait_stocked(&base, &item, deadline).await;
    let buyer = Shopper::register(&base).await;
    buyer.add(&item, 1).await;
    let order = buyer.checkout(None).await;
    assert_eq!(buyer.settled(&order, deadline).await["status"], "confirmed");

    let listed = eventually_async(deadline, "the dead letter to be listed", || async {
        let listed = dlq(dir.path(), &["list"]).await;
        listed.contains("notification").then_some(listed)
    })
    .await;
    assert!(
        listed.contains("tideway.ordering.order-confirmed"),
        "{listed}"
    );
    assert!(listed.contains("451"), "the server's refusal: {listed}");
    let id = listed
        .lines()
        .find(|l| l.contains("notification"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_owned();
    let shown: Value = serde_json::from_str(&dlq(dir.path(), &["show", &id]).await).unwrap();
    assert_eq!(shown["consumer"], "notification");
    assert_eq!(shown["event"]["subject"], order.as_str());

    // The console lists it too, with its redrive button.
    let http = reqwest::Client::new();
    let admin =
        crate::scenario::login(&http, &base, "admin@tideway.local", "tideway-admin-1").await;
    let page = http
        .get(format!("{base}/ops/dead-letters"))
        .header(reqwest::header::COOKIE, format!("tw_access={admin}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(&format!("data-dead-letter=\"{id}\"")),
        "{page}"
    );
    assert!(page.contains("Redrive"), "{page}");

    // The server accepts now: the redrive sends the mail once, and the letter is gone.
    let redriven = dlq(dir.path(), &["redrive", "--consumer", "notification"]).await;
    assert!(redriven.contains(&format!("{id} redriven")), "{redriven}");
    let note = buyer.notified(&order, "order_confirmed", deadline).await;
    assert_eq!(note["attempts"], 2, "{note}");
    assert_eq!(dlq(dir.path(), &["list"]).await.trim(), "no dead letters");
    let mails = std::fs::read_dir(maildir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "eml")
        })
        .count();
    assert_eq!(mails, 1, "sent once");
    server.stop(crate::STOP_DEADLINE).await;
    drop(smtp.stdin.take());
    let _ = smtp.kill();
    let _ = smtp.wait();
}
