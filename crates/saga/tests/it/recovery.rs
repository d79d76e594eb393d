//! Crash recovery: an engine stops while a step's work is done but not yet recorded; a new
//! engine on the same database resumes, and the work happens once.

use tideway_saga::{SagaStatus, StepKind, StepStatus, idempotency_key};

use crate::support::{DEADLINE, Plan, STEPS, World, new_id};

#[tokio::test]
async fn an_engine_dropped_mid_action_is_resumed_and_each_effect_happens_once() {
    for db in tideway_testkit::backends().await {
        let world = World::new(db).await;
        let id = new_id();
        // `two` does its work and then never returns: the engine "crashes" before it can
        // record the step as done.
        world
            .ledger
            .hang_once(idempotency_key(&id, "two", StepKind::Action));
        let first = world.engine();
        first
            .start(&world.saga, &id, Plan::default())
            .await
            .unwrap();
        world
            .ledger
            .wait_for("two's work", |l| l.effects(&id, "two") == 1)
            .await;
        first.shutdown().await;
        let stopped = first.instance(&id).await.unwrap().unwrap();
        assert_eq!(stopped.status, SagaStatus::Running);
        assert_eq!(stopped.current_step.as_deref(), Some("two"));
        assert_eq!(
            stopped.steps.last().map(|s| (s.step.as_str(), s.status)),
            Some(("two", StepStatus::Running)),
            "the claim was written before the action ran"
        );

        let second = world.engine();
        assert_eq!(second.resume_all().await.unwrap(), 1);
        let done = second.wait_finished(&id, DEADLINE).await.unwrap();
        assert_eq!(done.status, SagaStatus::Completed);
        assert_eq!(done.state_as::<Plan>().unwrap().done, STEPS);
        assert_eq!(world.ledger.calls(&id, "two", StepKind::Action), 2);
        for step in ["one", "two", "four"] {
            assert_eq!(world.ledger.effects(&id, step), 1, "{step}");
        }
        let two = done.steps.iter().find(|s| s.step == "two").unwrap();
        assert_eq!((two.attempts, two.status), (2, StepStatus::Done));
        second.shutdown().await;
    }
}

#[tokio::test]
async fn an_engine_dropped_mid_compensation_is_resumed_to_a_clean_slate() {
    for db in tideway_testkit::backends().await {
        let world = World::new(db).await;
        let id = new_id();
        world
            .ledger
            .hang_once(idempotency_key(&id, "two", StepKind::Compensation));
        let first = world.engine();
        let plan = Plan {
            fail_at: Some(3),
            ..Plan::default()
        };
        first.start(&world.saga, &id, plan).await.unwrap();
        world
            .ledger
            .wait_for("two's compensation", |l| {
                l.calls(&id, "two", StepKind::Compensation) == 1
            })
            .await;
        first.shutdown().await;
        let stopped = first.instance(&id).await.unwrap().unwrap();
        assert_eq!(stopped.status, SagaStatus::Compensating);

        let second = world.engine();
        assert_eq!(second.resume_all().await.unwrap(), 1);
        let done = second.wait_finished(&id, DEADLINE).await.unwrap();
        assert_eq!(done.status, SagaStatus::Compensated);
        assert_eq!(done.reason.as_deref(), Some("four refused"));
        assert!(world.ledger.holding(&id).is_empty());
        assert_eq!(world.ledger.undone(&id), ["two", "one"]);
        assert_eq!(world.ledger.calls(&id, "two", StepKind::Compensation), 2);
        second.shutdown().await;
    }
}

#[tokio::test]
async fn resume_all_finishes_many_unfinished_instances() {
    for db in tideway_testkit::backends().await {
        let world = World::new(db).await;
        let ids: Vec<String> = (0..8).map(|_| new_id()).collect();
        // Half are stopped in `two`, half in `four`, each after doing that step's work.
        let hang_at = |n: usize| if n.is_multiple_of(2) { "two" } else { "four" };
        for (n, id) in ids.iter().enumerate() {
            world
                .ledger
                .hang_once(idempotency_key(id, hang_at(n), StepKind::Action));
        }
        let first = world.engine();
        for id in &ids {
            first.start(&world.saga, id, Plan::default()).await.unwrap();
        }
        world
            .ledger
            .wait_for("every instance stopped", |l| {
                ids.iter()
                    .enumerate()
                    .all(|(n, id)| l.effects(id, hang_at(n)) == 1)
            })
            .await;
        first.shutdown().await;

        let second = world.engine();
        assert_eq!(second.resume_all().await.unwrap(), ids.len());
        for id in &ids {
            let done = second.wait_finished(id, DEADLINE).await.unwrap();
            assert_eq!(done.status, SagaStatus::Completed, "{id}");
            for step in ["one", "two", "four"] {
                assert_eq!(world.ledger.effects(id, step), 1, "{id} {step}");
            }
        }
        for (n, id) in ids.iter().enumerate() {
            assert_eq!(world.ledger.calls(id, hang_at(n), StepKind::Action), 2);
        }
        assert_eq!(second.resume_all().await.unwrap(), 0, "nothing is left");
        second.shutdown().await;
    }
}
