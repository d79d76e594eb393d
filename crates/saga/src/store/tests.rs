use super::*;

fn record(id: &str) -> InstanceRecord {
    InstanceRecord {
        id: id.into(),
        saga: "s".into(),
        state: r#"{"n":1}"#.into(),
        status: SagaStatus::Running,
        step: 0,
        waiting: false,
        deadline_ms: None,
        reason: None,
        created_ms: 1_000,
        updated_ms: 1_000,
        version: 1,
        resends: 0,
    }
}

#[tokio::test]
async fn install_is_idempotent_and_safe_when_concurrent() {
    for db in tideway_testkit::backends().await {
        let (a, b) = tokio::join!(install(&db), install(&db));
        a.unwrap();
        b.unwrap();
        install(&db).await.unwrap();
    }
}

#[tokio::test]
async fn install_adds_the_resend_count_to_tables_made_before_it() {
    for db in tideway_testkit::backends().await {
        // The table as it was before steps could be re-sent, with an instance in it.
        sqlx_query(
            "CREATE TABLE saga_instances (
                id TEXT PRIMARY KEY, saga TEXT NOT NULL, state TEXT NOT NULL,
                status TEXT NOT NULL, step BIGINT NOT NULL, waiting BIGINT NOT NULL,
                deadline_ms BIGINT, reason TEXT, created_ms BIGINT NOT NULL,
                updated_ms BIGINT NOT NULL, version BIGINT NOT NULL
            )",
        )
        .execute(db.pool())
        .await
        .unwrap();
        sqlx_query(
            "INSERT INTO saga_instances VALUES ('old', 's', '{}', 'running', 0, 1, 5, NULL, 1, 1, 3)",
        )
        .execute(db.pool())
        .await
        .unwrap();
        install(&db).await.unwrap();
        install(&db).await.unwrap();
        let store = DbSagaStore::new((*db).clone());
        let old = store.load("old").await.unwrap().unwrap();
        assert_eq!((old.version, old.resends), (3, 0));
        let mut next = old.clone();
        next.version = 4;
        next.resends = 2;
        assert!(store.update(&next, 3, &[]).await.unwrap());
        assert_eq!(store.load("old").await.unwrap().unwrap().resends, 2);
    }
}

#[tokio::test]
async fn round_trips_instances_with_and_without_nulls() {
    for db in tideway_testkit::backends().await {
        install(&db).await.unwrap();
        let store = DbSagaStore::new((*db).clone());
        let first = record("i-1");
        assert!(store.insert(&first).await.unwrap());
        assert!(
            !store.insert(&first).await.unwrap(),
            "a second insert is refused"
        );
        assert_eq!(store.load("i-1").await.unwrap(), Some(first.clone()));
        assert_eq!(store.load("nope").await.unwrap(), None);

        let mut next = first.clone();
        next.version = 2;
        next.status = SagaStatus::Compensating;
        next.waiting = true;
        next.deadline_ms = Some(5_000);
        next.reason = Some("declined".into());
        assert!(store.update(&next, 1, &[]).await.unwrap());
        assert_eq!(store.load("i-1").await.unwrap(), Some(next.clone()));
        assert_eq!(
            store.unfinished().await.unwrap(),
            vec![("i-1".into(), "s".into())]
        );
        assert!(store.due(4_999).await.unwrap().is_empty());
        assert_eq!(store.due(5_000).await.unwrap(), vec!["i-1".to_owned()]);
    }
}

#[tokio::test]
async fn a_stale_version_changes_nothing() {
    for db in tideway_testkit::backends().await {
        install(&db).await.unwrap();
        let store = DbSagaStore::new((*db).clone());
        store.insert(&record("i-1")).await.unwrap();
        let mut a = record("i-1");
        a.version = 2;
        a.step = 1;
        let mut b = record("i-1");
        b.version = 2;
        b.step = 7;
        let log = [StepLogWrite::Started {
            index: 7,
            step: "x".into(),
            kind: StepKind::Action,
            at_ms: 1,
            seq: 2,
        }];
        let (wa, wb) = tokio::join!(store.update(&a, 1, &[]), store.update(&b, 1, &log));
        assert_eq!(
            u8::from(wa.unwrap()) + u8::from(wb.unwrap()),
            1,
            "exactly one of two writers on one version wins"
        );
        let stored = store.load("i-1").await.unwrap().unwrap();
        assert_eq!(stored.version, 2);
        // The loser's timeline write was rolled back with its instance write.
        let steps = store.steps("i-1").await.unwrap();
        assert_eq!(steps.len(), usize::from(stored.step == 7));
    }
}

#[tokio::test]
async fn a_restarted_call_counts_attempts_and_keeps_its_first_start() {
    for db in tideway_testkit::backends().await {
        install(&db).await.unwrap();
        let store = DbSagaStore::new((*db).clone());
        store.insert(&record("i-1")).await.unwrap();
        let started = |at_ms, seq| StepLogWrite::Started {
            index: 0,
            step: "reserve".into(),
            kind: StepKind::Action,
            at_ms,
            seq,
        };
        let mut r = record("i-1");
        for (version, write) in [
            (2, started(10, 2)),
            (3, started(20, 3)),
            (
                4,
                StepLogWrite::Status {
                    index: 0,
                    kind: StepKind::Action,
                    status: StepStatus::Done,
                    finished_ms: Some(30),
                    detail: Some("ok".into()),
                },
            ),
        ] {
            let expected = r.version;
            r.version = version;
            assert!(store.update(&r, expected, &[write]).await.unwrap());
        }
        let steps = store.steps("i-1").await.unwrap();
        assert_eq!(
            steps,
            vec![StepRecord {
                index: 0,
                step: "reserve".into(),
                kind: StepKind::Action,
                status: StepStatus::Done,
                attempts: 2,
                started_ms: 10,
                finished_ms: Some(30),
                detail: Some("ok".into()),
            }]
        );
    }
}

#[tokio::test]
async fn recent_answers_the_newest_instances_first_up_to_the_limit() {
    for db in tideway_testkit::backends().await {
        install(&db).await.unwrap();
        let store = DbSagaStore::new((*db).clone());
        assert!(store.recent(10).await.unwrap().is_empty());
        // Created out of order; two share a creation time (the id breaks the tie).
        for (id, created_ms) in [("b", 2_000), ("a", 1_000), ("d", 3_000), ("c", 3_000)] {
            let mut r = record(id);
            r.created_ms = created_ms;
            r.updated_ms = created_ms;
            store.insert(&r).await.unwrap();
        }
        let ids = |records: Vec<InstanceRecord>| -> Vec<String> {
            records.into_iter().map(|r| r.id).collect()
        };
        assert_eq!(ids(store.recent(10).await.unwrap()), ["d", "c", "b", "a"]);
        assert_eq!(ids(store.recent(2).await.unwrap()), ["d", "c"]);
        let newest = store.recent(1).await.unwrap();
        assert_eq!(newest[0], {
            let mut d = record("d");
            d.created_ms = 3_000;
            d.updated_ms = 3_000;
            d
        });
    }
}

#[tokio::test]
async fn steps_of_groups_the_timelines_of_many_instances_in_one_read() {
    for db in tideway_testkit::backends().await {
        install(&db).await.unwrap();
        let store = DbSagaStore::new((*db).clone());
        for id in ["i-1", "i-2", "i-3"] {
            store.insert(&record(id)).await.unwrap();
        }
        let started = |index, step: &str, kind, seq| StepLogWrite::Started {
            index,
            step: step.into(),
            kind,
            at_ms: seq * 10,
            seq,
        };
        // i-1: two actions, then the second compensated (started last, listed last).
        let mut r = record("i-1");
        r.version = 2;
        let log = [
            started(0, "one", StepKind::Action, 2),
            started(1, "two", StepKind::Action, 3),
            started(1, "two", StepKind::Compensation, 4),
        ];
        assert!(store.update(&r, 1, &log).await.unwrap());
        let mut r = record("i-2");
        r.version = 2;
        let log = [started(0, "one", StepKind::Action, 2)];
        assert!(store.update(&r, 1, &log).await.unwrap());

        let ids: Vec<String> = ["i-1", "i-2", "i-3", "nope"].map(String::from).into();
        let timelines = store.steps_of(&ids).await.unwrap();
        assert_eq!(timelines.len(), 2, "no entry without steps: {timelines:?}");
        for (id, timeline) in &timelines {
            assert_eq!(
                *timeline,
                store.steps(id).await.unwrap(),
                "{id}: the same timeline as one instance's"
            );
        }
        let order: Vec<(&str, StepKind)> = timelines["i-1"]
            .iter()
            .map(|s| (s.step.as_str(), s.kind))
            .collect();
        assert_eq!(
            order,
            [
                ("one", StepKind::Action),
                ("two", StepKind::Action),
                ("two", StepKind::Compensation)
            ]
        );
        assert!(store.steps_of(&[]).await.unwrap().is_empty());
    }
}
