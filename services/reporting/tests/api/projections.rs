//! The read models built from a sequence of events on both engines, and a redelivered
//! event changes nothing.

use tideway_reporting_api::{CancelReason, RevenueDay, SalesRow, TopItem};

use crate::helpers::{Models, spawn, story};

fn sales(day: &str, item: &str, units: i64, revenue_minor: i64) -> SalesRow {
    SalesRow {
        day: day.to_owned(),
        item_id: item.to_owned(),
        name: format!("The {item}"),
        units,
        revenue_minor,
    }
}

fn check_story(models: &Models) {
    assert_eq!(
        models.sales.rows,
        [
            sales("2026-03-01", "beans", 1, 850),
            sales("2026-03-01", "kettle", 2, 2598),
            sales("2026-03-02", "beans", 3, 2550),
        ]
    );
    assert_eq!(
        models.revenue.days,
        [
            RevenueDay {
                day: "2026-03-01".into(),
                orders: 1,
                revenue_minor: 3448
            },
            RevenueDay {
                day: "2026-03-02".into(),
                orders: 1,
                revenue_minor: 2550
            },
        ]
    );
    let funnel = &models.funnel;
    assert_eq!(
        (funnel.placed, funnel.confirmed, funnel.cancelled),
        (4, 2, 2)
    );
    let mut reasons = funnel.cancelled_by_reason.clone();
    reasons.sort_by(|a, b| a.reason.cmp(&b.reason));
    assert_eq!(
        reasons,
        [
            CancelReason {
                reason: "payment declined: card declined".into(),
                orders: 1
            },
            CancelReason {
                reason: "stock rejected: sold out".into(),
                orders: 1
            },
        ]
    );
    assert_eq!(
        models.top.items,
        [
            TopItem {
                item_id: "beans".into(),
                name: "The beans".into(),
                units: 4,
                revenue_minor: 3400
            },
            TopItem {
                item_id: "kettle".into(),
                name: "The kettle".into(),
                units: 2,
                revenue_minor: 2598
            },
        ]
    );
}

#[tokio::test]
async fn the_models_follow_the_events() {
    for db in tideway_testkit::backends().await {
        let app = spawn(db).await;
        app.publish(&story()).await;
        check_story(&app.models().await);
        app.service.shutdown().await;
    }
}

#[tokio::test]
async fn a_redelivered_event_changes_nothing() {
    for db in tideway_testkit::backends().await {
        let app = spawn(db).await;
        let events = story();
        app.publish(&events).await;
        let before = app.models().await;
        // Every event again, as a redelivery (same ids) would bring them.
        app.publish(&events).await;
        assert_eq!(app.models().await, before);
        check_story(&before);
        app.service.shutdown().await;
    }
}
