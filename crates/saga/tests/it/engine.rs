//! The engine's paths through a saga: done, failed at every step, timed out, replied to
//! twice or late, and replied to by two engines at once.

use std::{sync::Arc, time::Duration};

use tideway_saga::{
    Delivery, EngineOptions, Reply, SagaError, SagaStatus, Started, StepKind, StepStatus,
    SystemClock,
};

use crate::support::{
    DEADLINE, Ledger, Plan, STEPS, TWO_TIMEOUT, World, engine_on, new_id, resending_saga, saga,
};

/// The timeline as (step, kind, status) triples.
fn timeline(instance: &tideway_saga::SagaInstance) -> Vec<(String, StepKind, StepStatus)> {
    instance
        .steps
        .iter()
        .map(|s| (s.step.clone(), s.kind, s.status))
        .collect()
}

fn row(step: &str, kind: StepKind, status: StepStatus) -> (String, StepKind, StepStatus) {
    (step.to_owned(), kind, status)
}

#[tokio::test]
async fn happy_path_does_every_step_once_and_completes() {
    for db in tideway_testkit::backends().await {
        let world = World::new(db).await;
        let engine = world.engine();
        let id = new_id();
        assert_eq!(
            engine
                .start(&world.saga, &id, Plan::default())
                .await
                .unwrap(),
            Started::Created
        );
        let done = engine.wait_finished(&id, DEADLINE).await.unwrap();
        assert_eq!(done.status, SagaStatus::Completed);
        assert_eq!(done.reason, None);
        assert_eq!(done.current_step, None);
        assert_eq!(done.state_as::<Plan>().unwrap().done, STEPS);
        assert_eq!(
            timeline(&done),
            STEPS
                .map(|s| row(s, StepKind::Action, StepStatus::Done))
                .to_vec()
        );
        for step in &done.steps {
            assert_eq!(step.attempts, 1);
            assert!(step.finished_ms.is_some_and(|f| f >= step.started_ms));
        }
        assert_eq!(world.ledger.holding(&id), ["four", "one", "two"]);
        for step in ["one", "two", "four"] {
            assert_eq!(world.ledger.effects(&id, step), 1, "{step}");
        }
        engine.shutdown().await;
    }
}

#[tokio::test]
async fn a_waiting_step_moves_on_with_its_reply() {
    for db in tideway_testkit::backends().await {
        let world = World::new(db).await;
        let engine = world.engine();
        let id = new_id();
        let plan = Plan {
            wait_at: Some(1),
            ..Plan::default()
        };
        engine.start(&world.saga, &id, plan).await.unwrap();
        let waiting = engine
            .wait_until(&id, DEADLINE, |i| i.waiting)
            .await
            .unwrap();
        assert_eq!(waiting.status, SagaStatus::Running);
        assert_eq!(waiting.current_step.as_deref(), Some("two"));
        assert_eq!(
            waiting.steps.last().map(|s| s.status),
            Some(StepStatus::Waiting)
        );
        let reply = Reply::<Plan>::done_with(|p| p.done.push("two replied".into()));
        assert_eq!(
            engine.deliver(&id, "two", reply).await.unwrap(),
            Delivery::Accepted
        );
        let done = engine.wait_finished(&id, DEADLINE).await.unwrap();
        assert_eq!(done.status, SagaStatus::Completed);
        assert_eq!(
            done.state_as::<Plan>().unwrap().done,
            ["one", "two replied", "three", "four"]
        );
        engine.shutdown().await;
    }
}

#[tokio::test]
async fn a_failure_at_every_step_is_compensated_in_reverse_to_a_clean_slate() {
    for db in tideway_testkit::backends().await {
        let world = World::new(db).await;
        let engine = world.engine();
        for fail_at in 0..STEPS.len() {
            let id = new_id();
            let plan = Plan {
                fail_at: Some(fail_at),
                ..Plan::default()
            };
            engine.start(&world.saga, &id, plan).await.unwrap();
            let done = engine.wait_finished(&id, DEADLINE).await.unwrap();
            let failed = STEPS[fail_at];
            assert_eq!(done.status, SagaStatus::Compensated, "failing at {failed}");
            assert_eq!(done.reason.as_deref(), Some(&*format!("{failed} refused")));
            assert!(
                world.ledger.holding(&id).is_empty(),
                "failing at {failed} left {:?}",
                world.ledger.holding(&id)
            );
            // Undone last first; `three` has nothing to undo.
            let with_effects: Vec<&str> = STEPS[..fail_at]
                .iter()
                .rev()
                .copied()
                .filter(|s| *s != "three")
                .collect();
            assert_eq!(
                world.ledger.undone(&id),
                with_effects,
                "failing at {failed}"
            );
            let mut expected: Vec<_> = STEPS[..fail_at]
                .iter()
                .map(|s| row(s, StepKind::Action, StepStatus::Done))
                .collect();
            expected.push(row(failed, StepKind::Action, StepStatus::Failed));
            expected.extend(
                with_effects
                    .iter()
                    .map(|s| row(s, StepKind::Compensation, StepStatus::Done)),
            );
            assert_eq!(timeline(&done), expected, "failing at {failed}");
            // The failed action is never compensated: it had no effect.
            assert_eq!(world.ledger.calls(&id, failed, StepKind::Compensation), 0);
        }
        engine.shutdown().await;
    }
}

#[tokio::test]
async fn a_failed_reply_compensates_the_steps_before() {
    for db in tideway_testkit::backends().await {
        let world = World::new(db).await;
        let engine = world.engine();
        let id = new_id();
        let plan = Plan {
            wait_at: Some(3),
            ..Plan::default()
        };
        engine.start(&world.saga, &id, plan).await.unwrap();
        engine
            .wait_until(&id, DEADLINE, |i| i.waiting)
            .await
            .unwrap();
        let reply = Reply::<Plan>::failed("declined");
        assert_eq!(
            engine.deliver(&id, "four", reply).await.unwrap(),
            Delivery::Accepted
        );
        let done = engine.wait_finished(&id, DEADLINE).await.unwrap();
        assert_eq!(done.status, SagaStatus::Compensated);
        assert_eq!(done.reason.as_deref(), Some("declined"));
        assert_eq!(world.ledger.undone(&id), ["two", "one"]);
        engine.shutdown().await;
    }
}

#[tokio::test]
async fn a_failed_compensation_ends_failed_with_both_reasons() {
    for db in tideway_testkit::backends().await {
        let world = World::new(db).await;
        let engine = world.engine();
        let id = new_id();
        let plan = Plan {
            fail_at: Some(3),
            fail_compensation_at: Some(1),
            ..Plan::default()
        };
        engine.start(&world.saga, &id, plan).await.unwrap();
        let done = engine.wait_finished(&id, DEADLINE).await.unwrap();
        assert_eq!(done.status, SagaStatus::Failed);
        assert_eq!(
            done.reason.as_deref(),
            Some("four refused; then compensating two failed: cannot undo")
        );
        // The engine stops at the failed compensation: `one` stays for an operator.
        assert_eq!(world.ledger.holding(&id), ["one", "two"]);
        engine.shutdown().await;
    }
}

#[tokio::test]
async fn a_step_without_a_reply_times_out_and_a_late_reply_is_ignored() {
    for db in tideway_testkit::backends().await {
        let world = World::new(db).await;
        let engine = world.engine();
        let id = new_id();
        let plan = Plan {
            wait_at: Some(1),
            ..Plan::default()
        };
        engine.start(&world.saga, &id, plan).await.unwrap();
        engine
            .wait_until(&id, DEADLINE, |i| i.waiting)
            .await
            .unwrap();
        // Not yet due.
        world.clock.advance(TWO_TIMEOUT - Duration::from_millis(1));
        assert_eq!(engine.sweep_once().await.unwrap(), 0);
        world.clock.advance(Duration::from_millis(1));
        assert_eq!(engine.sweep_once().await.unwrap(), 1);
        let done = engine.wait_finished(&id, DEADLINE).await.unwrap();
        assert_eq!(done.status, SagaStatus::Compensated);
        assert_eq!(
            done.reason.as_deref(),
            Some("step two timed out after 500 ms")
        );
        // The timed-out step's effect is unknown, so it is compensated too.
        assert_eq!(world.ledger.undone(&id), ["two", "one"]);
        assert!(world.ledger.holding(&id).is_empty());
        assert_eq!(
            timeline(&done),
            [
                row("one", StepKind::Action, StepStatus::Done),
                row("two", StepKind::Action, StepStatus::TimedOut),
                row("two", StepKind::Compensation, StepStatus::Done),
                row("one", StepKind::Compensation, StepStatus::Done),
            ]
        );

        let late = Reply::<Plan>::done_with(|p| p.done.push("late".into()));
        assert_eq!(
            engine.deliver(&id, "two", late).await.unwrap(),
            Delivery::Ignored
        );
        let after = engine.instance(&id).await.unwrap().unwrap();
        assert_eq!(after.status, SagaStatus::Compensated);
        assert_eq!(after.state, done.state, "the late reply changed nothing");
        assert_eq!(world.ledger.calls(&id, "three", StepKind::Action), 0);
        engine.shutdown().await;
    }
}

/// Step `two`'s action timeline entry.
fn two(instance: &tideway_saga::SagaInstance) -> Option<tideway_saga::StepRecord> {
    instance
        .steps
        .iter()
        .find(|s| s.step == "two" && s.kind == StepKind::Action)
        .cloned()
}

/// How many times step `two`'s action was started.
fn two_sent(instance: &tideway_saga::SagaInstance) -> i64 {
    two(instance).map_or(0, |s| s.attempts)
}

#[tokio::test]
async fn a_step_without_a_reply_is_sent_again_and_compensated_once_its_resends_are_spent() {
    for db in tideway_testkit::backends().await {
        let mut world = World::new(db).await;
        world.saga = resending_saga(&world.ledger, TWO_TIMEOUT, 2);
        let engine = world.engine();
        let id = new_id();
        let plan = Plan {
            wait_at: Some(1),
            ..Plan::default()
        };
        engine.start(&world.saga, &id, plan).await.unwrap();
        for sent in 1..=3_i64 {
            let waiting = engine
                .wait_until(&id, DEADLINE, |i| i.waiting && two_sent(i) == sent)
                .await
                .unwrap();
            assert_eq!(waiting.status, SagaStatus::Running);
            assert_eq!(
                world.ledger.calls(&id, "two", StepKind::Action),
                u32::try_from(sent).unwrap()
            );
            assert_eq!(
                world.ledger.attempt(&id, "two"),
                u32::try_from(sent).unwrap()
            );
            // Each send has a deadline of its own.
            world.clock.advance(TWO_TIMEOUT - Duration::from_millis(1));
            assert_eq!(engine.sweep_once().await.unwrap(), 0);
            world.clock.advance(Duration::from_millis(1));
            assert_eq!(engine.sweep_once().await.unwrap(), 1);
        }
        let done = engine.wait_finished(&id, DEADLINE).await.unwrap();
        assert_eq!(done.status, SagaStatus::Compensated);
        assert_eq!(
            done.reason.as_deref(),
            Some("step two timed out after 500 ms (sent 3 times)")
        );
        // Three sends with one key: one effect, undone once.
        assert_eq!(world.ledger.calls(&id, "two", StepKind::Action), 3);
        assert_eq!(world.ledger.effects(&id, "two"), 1);
        assert_eq!(world.ledger.undone(&id), ["two", "one"]);
        assert!(world.ledger.holding(&id).is_empty());
        assert_eq!(
            timeline(&done),
            [
                row("one", StepKind::Action, StepStatus::Done),
                row("two", StepKind::Action, StepStatus::TimedOut),
                row("two", StepKind::Compensation, StepStatus::Done),
                row("one", StepKind::Compensation, StepStatus::Done),
            ]
        );
        assert_eq!(two_sent(&done), 3);
        engine.shutdown().await;
    }
}

#[tokio::test]
async fn a_reply_to_a_step_sent_again_moves_the_saga_on() {
    for db in tideway_testkit::backends().await {
        let mut world = World::new(db).await;
        world.saga = resending_saga(&world.ledger, TWO_TIMEOUT, 3);
        let engine = world.engine();
        let id = new_id();
        let plan = Plan {
            wait_at: Some(1),
            ..Plan::default()
        };
        engine.start(&world.saga, &id, plan).await.unwrap();
        engine
            .wait_until(&id, DEADLINE, |i| i.waiting)
            .await
            .unwrap();
        world.clock.advance(TWO_TIMEOUT);
        assert_eq!(engine.sweep_once().await.unwrap(), 1);
        engine
            .wait_until(&id, DEADLINE, |i| i.waiting && two_sent(i) == 2)
            .await
            .unwrap();
        assert_eq!(world.ledger.attempt(&id, "two"), 2);
        let reply = Reply::<Plan>::done_with(|p| p.done.push("two replied".into()));
        assert_eq!(
            engine.deliver(&id, "two", reply).await.unwrap(),
            Delivery::Accepted
        );
        let done = engine.wait_finished(&id, DEADLINE).await.unwrap();
        assert_eq!(done.status, SagaStatus::Completed);
        assert_eq!(
            done.state_as::<Plan>().unwrap().done,
            ["one", "two replied", "three", "four"]
        );
        assert_eq!(world.ledger.effects(&id, "two"), 1);
        assert!(world.ledger.undone(&id).is_empty());
        let two = two(&done).unwrap();
        assert_eq!((two.attempts, two.status), (2, StepStatus::Done));
        // The next step starts with a clean count: `four` is called once, as the first send.
        assert_eq!(world.ledger.attempt(&id, "four"), 1);
        engine.shutdown().await;
    }
}

#[tokio::test]
async fn the_sweeper_task_times_steps_out_on_the_wall_clock() {
    for db in tideway_testkit::backends().await {
        tideway_saga::install(&db).await.unwrap();
        let ledger = Ledger::new();
        let saga = saga(&ledger, Duration::from_millis(200));
        let engine = engine_on(
            &db,
            EngineOptions {
                clock: Arc::new(SystemClock),
                sweep_interval: Duration::from_millis(20),
            },
        );
        engine.spawn_sweeper();
        let id = new_id();
        let plan = Plan {
            wait_at: Some(1),
            ..Plan::default()
        };
        engine.start(&saga, &id, plan).await.unwrap();
        let done = engine.wait_finished(&id, DEADLINE).await.unwrap();
        assert_eq!(done.status, SagaStatus::Compensated);
        assert_eq!(
            done.reason.as_deref(),
            Some("step two timed out after 200 ms")
        );
        assert!(ledger.holding(&id).is_empty());
        engine.shutdown().await;
    }
}

#[tokio::test]
async fn a_duplicate_reply_advances_once() {
    for db in tideway_testkit::backends().await {
        let world = World::new(db).await;
        let engine = world.engine();
        let id = new_id();
        let plan = Plan {
            wait_at: Some(1),
            ..Plan::default()
        };
        engine.start(&world.saga, &id, plan).await.unwrap();
        engine
            .wait_until(&id, DEADLINE, |i| i.waiting)
            .await
            .unwrap();
        let reply = || Reply::<Plan>::done_with(|p| p.done.push("reply".into()));
        assert_eq!(
            engine.deliver(&id, "two", reply()).await.unwrap(),
            Delivery::Accepted
        );
        assert_eq!(
            engine.deliver(&id, "two", reply()).await.unwrap(),
            Delivery::Ignored
        );
        let done = engine.wait_finished(&id, DEADLINE).await.unwrap();
        assert_eq!(done.status, SagaStatus::Completed);
        assert_eq!(
            done.state_as::<Plan>().unwrap().done,
            ["one", "reply", "three", "four"]
        );
        assert_eq!(
            engine.deliver(&id, "two", reply()).await.unwrap(),
            Delivery::Ignored
        );
        assert_eq!(world.ledger.effects(&id, "four"), 1);
        engine.shutdown().await;
    }
}

#[tokio::test]
async fn two_engines_delivering_one_reply_at_once_advance_once() {
    for db in tideway_testkit::backends().await {
        let world = World::new(db).await;
        let a = world.engine();
        let b = world.engine();
        for _ in 0..5 {
            let id = new_id();
            let plan = Plan {
                wait_at: Some(1),
                ..Plan::default()
            };
            a.start(&world.saga, &id, plan).await.unwrap();
            a.wait_until(&id, DEADLINE, |i| i.waiting).await.unwrap();
            let reply = || Reply::<Plan>::done_with(|p| p.done.push("reply".into()));
            let (ra, rb) = tokio::join!(
                a.deliver(&id, "two", reply()),
                b.deliver(&id, "two", reply())
            );
            let mut outcomes = [ra.unwrap(), rb.unwrap()];
            outcomes.sort_by_key(|d| *d == Delivery::Ignored);
            assert_eq!(outcomes, [Delivery::Accepted, Delivery::Ignored]);
            let done = a.wait_finished(&id, DEADLINE).await.unwrap();
            assert_eq!(done.status, SagaStatus::Completed);
            assert_eq!(
                done.state_as::<Plan>().unwrap().done,
                ["one", "reply", "three", "four"]
            );
            assert_eq!(world.ledger.effects(&id, "four"), 1);
        }
        a.shutdown().await;
        b.shutdown().await;
    }
}

#[tokio::test]
async fn a_reply_that_arrives_before_waiting_is_stored_is_kept() {
    for db in tideway_testkit::backends().await {
        let world = World::new(db).await;
        let engine = world.engine();
        let id = new_id();
        let plan = Plan {
            reply_inline_at: Some(1),
            ..Plan::default()
        };
        engine.start(&world.saga, &id, plan).await.unwrap();
        let done = engine.wait_finished(&id, DEADLINE).await.unwrap();
        assert_eq!(done.status, SagaStatus::Completed);
        assert_eq!(
            done.state_as::<Plan>().unwrap().done,
            ["one", "inline reply", "three", "four"]
        );
        engine.shutdown().await;
    }
}

#[tokio::test]
async fn start_is_idempotent_on_the_instance_id() {
    for db in tideway_testkit::backends().await {
        let world = World::new(db).await;
        let engine = world.engine();
        let id = new_id();
        assert_eq!(
            engine
                .start(&world.saga, &id, Plan::default())
                .await
                .unwrap(),
            Started::Created
        );
        assert_eq!(
            engine
                .start(&world.saga, &id, Plan::default())
                .await
                .unwrap(),
            Started::Existing
        );
        engine.wait_finished(&id, DEADLINE).await.unwrap();
        assert_eq!(
            engine
                .start(&world.saga, &id, Plan::default())
                .await
                .unwrap(),
            Started::Existing
        );
        for step in ["one", "two", "four"] {
            assert_eq!(world.ledger.effects(&id, step), 1, "{step}");
            assert_eq!(world.ledger.calls(&id, step, StepKind::Action), 1, "{step}");
        }
        let other = tideway_saga::SagaDefinition::new("other")
            .step(tideway_saga::Step::new("x", |_, p: Plan| async move {
                tideway_saga::StepOutcome::Done(p)
            }));
        let err = engine
            .start(&other, &id, Plan::default())
            .await
            .unwrap_err();
        assert!(matches!(err, SagaError::WrongSaga { .. }), "{err:?}");
        engine.shutdown().await;
    }
}

#[tokio::test]
async fn bad_replies_are_refused_with_a_reason() {
    for db in tideway_testkit::backends().await {
        let world = World::new(db).await;
        let engine = world.engine();
        let err = engine
            .deliver(&new_id(), "two", Reply::<Plan>::done())
            .await
            .unwrap_err();
        assert!(matches!(err, SagaError::NotFound(_)), "{err:?}");
        let id = new_id();
        engine
            .start(&world.saga, &id, Plan::default())
            .await
            .unwrap();
        let err = engine
            .deliver(&id, "seven", Reply::<Plan>::done())
            .await
            .unwrap_err();
        assert!(matches!(err, SagaError::UnknownStep { .. }), "{err:?}");
        let err = engine
            .deliver(&id, "two", Reply::<u32>::done())
            .await
            .unwrap_err();
        assert!(matches!(err, SagaError::StateType(_)), "{err:?}");
        engine.wait_finished(&id, DEADLINE).await.unwrap();
        engine.shutdown().await;
    }
}

#[tokio::test]
async fn recent_lists_the_newest_instances_first_with_their_timelines() {
    for db in tideway_testkit::backends().await {
        let world = World::new(db).await;
        let engine = world.engine();
        assert!(engine.recent(10).await.unwrap().is_empty());
        let plans = [
            Plan::default(),
            Plan {
                fail_at: Some(2),
                ..Plan::default()
            },
            Plan {
                wait_at: Some(1),
                ..Plan::default()
            },
        ];
        let mut ids = Vec::new();
        for plan in plans {
            let id = new_id();
            let waits = plan.wait_at.is_some();
            engine.start(&world.saga, &id, plan).await.unwrap();
            if waits {
                engine
                    .wait_until(&id, DEADLINE, |i| i.waiting)
                    .await
                    .unwrap();
            } else {
                engine.wait_finished(&id, DEADLINE).await.unwrap();
            }
            ids.push(id);
            // Distinct creation times: the listing is ordered by them.
            world.clock.advance(Duration::from_millis(1));
        }

        let recent = engine.recent(10).await.unwrap();
        let listed: Vec<&str> = recent.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(listed, [&*ids[2], &*ids[1], &*ids[0]]);
        for listed in &recent {
            let one = engine.instance(&listed.id).await.unwrap().unwrap();
            assert_eq!(*listed, one, "listed as shown alone");
        }
        assert_eq!(
            recent
                .iter()
                .map(|i| (i.status, i.current_step.as_deref(), i.steps.len()))
                .collect::<Vec<_>>(),
            [
                (SagaStatus::Running, Some("two"), 2),
                // one, two done; three failed; two, one undone.
                (SagaStatus::Compensated, None, 5),
                (SagaStatus::Completed, None, 4),
            ]
        );

        let newest = engine.recent(1).await.unwrap();
        assert_eq!(newest.len(), 1);
        assert_eq!(newest[0].id, ids[2]);
        assert!(engine.recent(0).await.unwrap().is_empty());
        engine.shutdown().await;
    }
}

#[tokio::test]
async fn an_instance_inserted_in_a_transaction_exists_only_once_it_commits() {
    for db in tideway_testkit::backends().await {
        let world = World::new(db).await;
        let engine = world.engine();
        let (dropped, kept) = (new_id(), new_id());
        let record = engine
            .new_instance(&world.saga, &dropped, &Plan::default())
            .unwrap();
        let mut tx = world.db.begin().await.unwrap();
        assert!(tideway_saga::insert_in(&mut tx, &record).await.unwrap());
        tx.rollback().await.unwrap();
        assert!(engine.instance(&dropped).await.unwrap().is_none());

        let record = engine
            .new_instance(&world.saga, &kept, &Plan::default())
            .unwrap();
        let mut tx = world.db.begin().await.unwrap();
        assert!(tideway_saga::insert_in(&mut tx, &record).await.unwrap());
        tx.commit().await.unwrap();
        engine.run_inserted(&kept);
        let done = engine.wait_finished(&kept, DEADLINE).await.unwrap();
        assert_eq!(done.status, SagaStatus::Completed);
        assert_eq!(world.ledger.effects(&kept, "one"), 1);
        // Committed but never begun (a crash right after the commit): resumed at start-up.
        let orphan = new_id();
        let record = engine
            .new_instance(&world.saga, &orphan, &Plan::default())
            .unwrap();
        let mut tx = world.db.begin().await.unwrap();
        assert!(tideway_saga::insert_in(&mut tx, &record).await.unwrap());
        tx.commit().await.unwrap();
        assert_eq!(engine.resume_all().await.unwrap(), 1);
        let done = engine.wait_finished(&orphan, DEADLINE).await.unwrap();
        assert_eq!(done.status, SagaStatus::Completed);
        engine.shutdown().await;
    }
}
