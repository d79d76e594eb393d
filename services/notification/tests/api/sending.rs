//! One email per event over real SMTP: sent once however often the event comes, retried
//! while the server refuses, dead-lettered when it never accepts; the mailbox default.

use tideway_notification::Config;
use tideway_notification_api::{DeliveryStatus, NotificationKind};
use tideway_payment_api::PaymentStatus;
use tideway_testkit::{eventually, eventually_async};

use crate::helpers::{
    SETTLE, Smtp, TestBus, cancelled, confirmed, order, placed, quick, spawn_with, voided,
};

#[tokio::test]
async fn a_confirmed_order_is_mailed_once_in_text_and_html_however_often_it_arrives() {
    let smtp = Smtp::start(0);
    let app = spawn_with(
        quick(Config {
            smtp_url: Some(smtp.url().into()),
            ..Config::default()
        }),
        TestBus::Embedded,
    )
    .await;
    let order_id = order();
    let confirmation = confirmed(&order_id, "ada");
    // The same event three times: a relay that re-published, a redelivery.
    app.publish(&[
        placed(&order_id, "ada"),
        confirmation.clone(),
        confirmation.clone(),
        confirmation.clone(),
    ])
    .await;
    let messages = eventually(SETTLE, "the mail to arrive", || {
        let messages = smtp.messages();
        (!messages.is_empty()).then_some(messages)
    })
    .await;
    let mail = &messages[0];
    assert!(mail.contains("X-Envelope-To: ada@example.com"), "{mail}");
    assert!(mail.contains("is confirmed"), "{mail}");
    assert!(mail.contains("multipart/alternative"), "{mail}");
    assert!(
        mail.contains("text/plain") && mail.contains("text/html"),
        "{mail}"
    );
    assert!(
        mail.contains(&format!("<{}@tideway.local>", confirmation.id)),
        "the Message-ID is the event's: {mail}"
    );

    let page = app.mine_page("ada").await;
    assert_eq!(page.items.len(), 1, "{page:?}");
    let note = &page.items[0];
    assert_eq!(note.id, confirmation.id);
    assert_eq!(note.kind, NotificationKind::OrderConfirmed);
    assert_eq!(note.status, DeliveryStatus::Sent);
    assert_eq!(note.attempts, 1);
    assert!(note.text.contains("2 x Copper kettle"), "{}", note.text);
    assert!(note.sent_at.is_some());
    assert_eq!(smtp.messages().len(), 1, "sent exactly once");

    // Another customer sees none of it; the console (admins) sees everyone's.
    assert!(app.mine_page("grace").await.items.is_empty());
    assert_eq!(app.recent(&["customer"]).await.status(), 403);
    let recent = app.recent(&["admin"]).await;
    assert_eq!(recent.status(), 200);
    let recent: serde_json::Value = recent.json().await.unwrap();
    assert_eq!(recent["items"][0]["id"], confirmation.id.as_str());

    // Bad input: a problem document naming the field.
    let bad = app.mine("ada", "?limit=0").await;
    assert_eq!(bad.status(), 400);
    let problem: serde_json::Value = bad.json().await.unwrap();
    assert!(problem.to_string().contains("limit"), "{problem}");
    let unauthenticated = app
        .client
        .get(app.server.url(tideway_notification_api::MINE_PATH))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);
    app.bus.shutdown().await;
}

#[tokio::test]
async fn a_refusing_server_is_retried_with_backoff_until_it_accepts_on_both_buses() {
    let mut buses = vec![TestBus::Embedded];
    if let Some(nats) = tideway_testkit::nats().await {
        buses.push(TestBus::Nats(nats));
    }
    for bus in buses {
        // Refuses the first two messages with 451, then accepts.
        let smtp = Smtp::start(2);
        let app = spawn_with(
            quick(Config {
                smtp_url: Some(smtp.url().into()),
                max_attempts: 6,
                ..Config::default()
            }),
            bus,
        )
        .await;
        let order_id = order();
        let cancellation = cancelled(&order_id, "ada");
        app.publish(&[placed(&order_id, "ada"), cancellation.clone()])
            .await;
        let messages = eventually(SETTLE, "the mail to be accepted", || {
            let messages = smtp.messages();
            (!messages.is_empty()).then_some(messages)
        })
        .await;
        assert!(messages[0].contains("is cancelled"), "{}", messages[0]);
        assert!(messages[0].contains("payment declined"), "{}", messages[0]);
        assert_eq!(smtp.refused(), 2);
        let note = eventually_async(SETTLE, "the notification to be marked sent", || async {
            let page = app.mine_page("ada").await;
            page.items
                .into_iter()
                .find(|n| n.status == DeliveryStatus::Sent)
        })
        .await;
        assert_eq!(note.id, cancellation.id);
        assert_eq!(note.attempts, 3, "two refusals, then accepted");
        assert_eq!(note.last_error, None);
        assert_eq!(smtp.messages().len(), 1, "sent exactly once");
        app.bus.shutdown().await;
    }
}

#[tokio::test]
async fn a_server_that_never_accepts_leaves_the_notification_failed_and_dead_lettered() {
    let smtp = Smtp::start(u32::MAX);
    let app = spawn_with(
        quick(Config {
            smtp_url: Some(smtp.url().into()),
            max_attempts: 3,
            ..Config::default()
        }),
        TestBus::Embedded,
    )
    .await;
    let order_id = order();
    let cancellation = cancelled(&order_id, "ada");
    app.publish(&[placed(&order_id, "ada"), cancellation.clone()])
        .await;
    let note = eventually_async(SETTLE, "the notification to fail", || async {
        let page = app.mine_page("ada").await;
        page.items
            .into_iter()
            .find(|n| n.status == DeliveryStatus::Failed)
    })
    .await;
    assert_eq!(note.attempts, 3);
    assert!(
        note.last_error
            .as_deref()
            .unwrap_or_default()
            .contains("451"),
        "{note:?}"
    );
    assert_eq!(smtp.refused(), 3);
    assert!(smtp.messages().is_empty());
    // Kept, not lost: the dead letter holds the event.
    let letters = tideway_bus::embedded::dead_letters(app.dead_letters.as_ref().unwrap())
        .await
        .unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].consumer, "notification");
    assert_eq!(letters[0].event.id, cancellation.id);
    app.bus.shutdown().await;
}

#[tokio::test]
async fn without_a_server_mail_goes_to_the_mailbox_and_only_refunds_of_voids_are_told() {
    let mailbox = tempfile::tempdir().unwrap();
    let app = spawn_with(
        Config {
            mailbox_dir: mailbox.path().join("mailbox"),
            ..Config::default()
        },
        TestBus::Embedded,
    )
    .await;
    let (refunded, voided_only) = (order(), order());
    let refund = voided(&refunded, PaymentStatus::Refunded);
    app.publish(&[
        placed(&refunded, "ada"),
        placed(&voided_only, "ada"),
        refund.clone(),
        refund.clone(),
        voided(&voided_only, PaymentStatus::Voided),
    ])
    .await;
    let page = app.mine_page("ada").await;
    assert_eq!(page.items.len(), 1, "{page:?}");
    assert_eq!(page.items[0].kind, NotificationKind::PaymentRefunded);
    assert_eq!(page.items[0].status, DeliveryStatus::Sent);
    assert!(
        page.items[0].text.contains("EUR 25.98"),
        "{}",
        page.items[0].text
    );
    let files: Vec<_> = std::fs::read_dir(mailbox.path().join("mailbox"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(files, vec![format!("{}.eml", refund.id)]);
    let mail = std::fs::read_to_string(mailbox.path().join("mailbox").join(&files[0])).unwrap();
    assert!(mail.contains("To: ada@example.com"), "{mail}");
    assert!(mail.contains("refunded"), "{mail}");
    app.bus.shutdown().await;
}
