//! Replay: the models rebuilt from the embedded bus's event log into empty tables equal
//! the live ones, on both engines, and a second replay changes nothing.

use tideway_reporting::replay;

use crate::helpers::{at, confirmed, line, spawn, story};

#[tokio::test]
async fn the_models_rebuilt_from_the_log_equal_the_live_ones() {
    for db in tideway_testkit::backends().await {
        let app = spawn(db).await;
        let events = story();
        app.publish(&events).await;
        // A re-publish of one event: the log keeps it once, the models count it once.
        app.publish(&events[1..2]).await;
        let live = app.models().await;

        // Damage the models, as a projection bug fixed by a new release would have.
        sqlx::query("UPDATE sales_daily SET units = units * 10")
            .execute(app.service.db().pool())
            .await
            .unwrap();
        sqlx::query("DELETE FROM funnel")
            .execute(app.service.db().pool())
            .await
            .unwrap();
        assert_ne!(app.models().await, live);

        let replayed = replay::from_event_log(app.service.db(), &app.log)
            .await
            .unwrap();
        assert_eq!(replayed.read, 8);
        assert_eq!(replayed.applied, 8);
        assert_eq!(app.models().await, live);

        // Again: the same models.
        replay::from_event_log(app.service.db(), &app.log)
            .await
            .unwrap();
        assert_eq!(app.models().await, live);

        // Live events keep counting once after a replay, and a redelivered one does not.
        let more = confirmed("o-5", vec![line("kettle", 1299, 1)], at(3, 12));
        app.publish(std::slice::from_ref(&more)).await;
        app.publish(std::slice::from_ref(&events[1])).await;
        let after = app.models().await;
        assert_eq!(after.funnel.confirmed, live.funnel.confirmed + 1);
        assert_eq!(after.revenue.days.len(), live.revenue.days.len() + 1);
        app.service.shutdown().await;
    }
}
