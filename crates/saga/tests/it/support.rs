//! A four-step test saga whose side effects are recorded in a [`Ledger`], and helpers to run
//! it on a fresh database.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tideway_saga::{
    DbSagaStore, EngineOptions, ManualClock, Reply, SagaDefinition, SagaEngine, Step, StepContext,
    StepKind, StepOutcome,
};
use tideway_store::Db;
use tideway_testkit::{TestDb, within};
use tokio::sync::watch;

/// Generous: the machine is busy; tests assert outcomes, never timings.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The steps; `three` has no effect and no compensation.
pub const STEPS: [&str; 4] = ["one", "two", "three", "four"];

/// What a test wants the saga instance to do; part of the persisted state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The action at this index fails.
    pub fail_at: Option<usize>,
    /// The action at this index sends a command and waits for a reply.
    pub wait_at: Option<usize>,
    /// The action at this index delivers its own reply before answering `Waiting`.
    pub reply_inline_at: Option<usize>,
    /// The compensation at this index fails.
    pub fail_compensation_at: Option<usize>,
    /// Steps done, in order, and notes from replies.
    pub done: Vec<String>,
}

#[derive(Debug, Default)]
struct Book {
    /// Action keys whose effect happened.
    applied: HashSet<String>,
    /// (instance, step) effects in force.
    holding: HashSet<(String, String)>,
    /// Times each action key's effect happened (deduplicated by key: must stay 1).
    effects: HashMap<String, u32>,
    /// Times each key was called.
    calls: HashMap<String, u32>,
    /// (instance, step) undone, in order.
    undone: Vec<(String, String)>,
    /// Keys whose first call does its work and then never returns (a crash mid-step).
    hang_once: HashSet<String>,
    /// The attempt number of each key's latest call.
    attempts: HashMap<String, u32>,
}

/// The in-memory downstream world of the test saga: it deduplicates work by idempotency
/// key, as a real service would.
#[derive(Debug)]
pub struct Ledger {
    book: Mutex<Book>,
    changed: watch::Sender<u64>,
    engine: OnceLock<SagaEngine>,
}

impl Ledger {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            book: Mutex::new(Book::default()),
            changed: watch::Sender::new(0),
            engine: OnceLock::new(),
        })
    }

    fn edit<T>(&self, f: impl FnOnce(&mut Book) -> T) -> T {
        let out = f(&mut self.book.lock().unwrap());
        self.changed.send_modify(|n| *n += 1);
        out
    }

    fn read<T>(&self, f: impl FnOnce(&Book) -> T) -> T {
        f(&self.book.lock().unwrap())
    }

    /// Makes the first call with `key` hang after doing its work.
    pub fn hang_once(&self, key: String) {
        self.edit(|b| b.hang_once.insert(key));
    }

    /// Records a call; whether it is to hang.
    fn call(&self, ctx: &StepContext) -> bool {
        let key = ctx.idempotency_key();
        self.edit(|b| {
            *b.calls.entry(key.clone()).or_default() += 1;
            b.attempts.insert(key.clone(), ctx.attempt());
            b.hang_once.remove(&key)
        })
    }

    /// Does the action's work once per key.
    fn apply(&self, ctx: &StepContext) {
        let key = ctx.idempotency_key();
        self.edit(|b| {
            if b.applied.insert(key.clone()) {
                *b.effects.entry(key).or_default() += 1;
                b.holding
                    .insert((ctx.instance_id().to_owned(), ctx.step().to_owned()));
            }
        });
    }

    /// Undoes the action's work if it is in force (and does nothing otherwise).
    fn undo(&self, ctx: &StepContext) {
        let at = (ctx.instance_id().to_owned(), ctx.step().to_owned());
        self.edit(|b| {
            if b.holding.remove(&at) {
                b.undone.push(at);
            }
        });
    }

    /// The steps whose effect is in force for `instance`, sorted.
    pub fn holding(&self, instance: &str) -> Vec<String> {
        let mut steps: Vec<_> = self.read(|b| {
            b.holding
                .iter()
                .filter(|(i, _)| i == instance)
                .map(|(_, s)| s.clone())
                .collect()
        });
        steps.sort();
        steps
    }

    /// The steps undone for `instance`, in order.
    pub fn undone(&self, instance: &str) -> Vec<String> {
        self.read(|b| {
            b.undone
                .iter()
                .filter(|(i, _)| i == instance)
                .map(|(_, s)| s.clone())
                .collect()
        })
    }

    /// How many times the effect of `instance`'s `step` action happened.
    pub fn effects(&self, instance: &str, step: &str) -> u32 {
        let key = tideway_saga::idempotency_key(instance, step, StepKind::Action);
        self.read(|b| b.effects.get(&key).copied().unwrap_or(0))
    }

    /// How many times `instance`'s `step` `kind` was called.
    pub fn calls(&self, instance: &str, step: &str, kind: StepKind) -> u32 {
        let key = tideway_saga::idempotency_key(instance, step, kind);
        self.read(|b| b.calls.get(&key).copied().unwrap_or(0))
    }

    /// The attempt number (`StepContext::attempt`) of the latest call of `instance`'s
    /// `step` action.
    pub fn attempt(&self, instance: &str, step: &str) -> u32 {
        let key = tideway_saga::idempotency_key(instance, step, StepKind::Action);
        self.read(|b| b.attempts.get(&key).copied().unwrap_or(0))
    }

    /// Waits until `condition` holds, for at most [`DEADLINE`], checking it on every change.
    pub async fn wait_for(&self, what: &str, condition: impl Fn(&Self) -> bool) {
        let mut changes = self.changed.subscribe();
        within(DEADLINE, what, changes.wait_for(|_| condition(self)))
            .await
            .expect("the ledger outlives its waits");
    }
}

async fn act(ledger: Arc<Ledger>, ctx: StepContext, mut plan: Plan) -> StepOutcome<Plan> {
    let hang = ledger.call(&ctx);
    let index = ctx.index();
    if plan.fail_at == Some(index) {
        // A failed action has no effect.
        return StepOutcome::Failed(format!("{} refused", ctx.step()));
    }
    if ctx.step() != "three" {
        ledger.apply(&ctx);
    }
    if hang {
        std::future::pending::<()>().await;
    }
    if plan.reply_inline_at == Some(index) {
        let engine = ledger.engine.get().expect("the engine is set").clone();
        engine
            .deliver(
                ctx.instance_id(),
                ctx.step(),
                Reply::<Plan>::done_with(|p| p.done.push("inline reply".into())),
            )
            .await
            .expect("deliver");
        return StepOutcome::Waiting;
    }
    if plan.wait_at == Some(index) {
        return StepOutcome::Waiting;
    }
    plan.done.push(ctx.step().to_owned());
    StepOutcome::Done(plan)
}

async fn undo(ledger: Arc<Ledger>, ctx: StepContext, plan: Plan) -> StepOutcome<Plan> {
    let hang = ledger.call(&ctx);
    if plan.fail_compensation_at == Some(ctx.index()) {
        return StepOutcome::Failed("cannot undo".into());
    }
    ledger.undo(&ctx);
    if hang {
        std::future::pending::<()>().await;
    }
    StepOutcome::Done(plan)
}

/// The test saga: `one`, `two` (timing out after `two_timeout`), `three` (no effect, no
/// compensation), `four`.
pub fn saga(ledger: &Arc<Ledger>, two_timeout: Duration) -> SagaDefinition<Plan> {
    resending_saga(ledger, two_timeout, 0)
}

/// The test saga, with step `two` called again `two_resends` times when its deadline passes
/// before it compensates.
pub fn resending_saga(
    ledger: &Arc<Ledger>,
    two_timeout: Duration,
    two_resends: u32,
) -> SagaDefinition<Plan> {
    let step = |name: &str| {
        let (a, u) = (Arc::clone(ledger), Arc::clone(ledger));
        let step = Step::new(name, move |ctx, plan| act(Arc::clone(&a), ctx, plan));
        if name == "three" {
            step
        } else {
            step.compensate(move |ctx, plan| undo(Arc::clone(&u), ctx, plan))
        }
    };
    SagaDefinition::new("test")
        .step(step("one"))
        .step(step("two").timeout(two_timeout).resends(two_resends))
        .step(step("three"))
        .step(step("four"))
}

/// One backend's world: the database, a hand-driven clock, the ledger and the saga.
pub struct World {
    pub db: TestDb,
    pub clock: Arc<ManualClock>,
    pub ledger: Arc<Ledger>,
    pub saga: SagaDefinition<Plan>,
}

/// How long step `two` may take in [`World`]s (on the hand-driven clock).
pub const TWO_TIMEOUT: Duration = Duration::from_millis(500);

impl World {
    /// A world on `db`, with the saga tables installed.
    pub async fn new(db: TestDb) -> Self {
        tideway_saga::install(&db).await.unwrap();
        let ledger = Ledger::new();
        Self {
            saga: saga(&ledger, TWO_TIMEOUT),
            db,
            clock: Arc::new(ManualClock::default()),
            ledger,
        }
    }

    /// An engine on the world's database and clock, with the saga registered (the first
    /// one is also the engine that inline replies go to).
    pub fn engine(&self) -> SagaEngine {
        let engine = engine_on(
            &self.db,
            EngineOptions {
                clock: self.clock.clone(),
                ..EngineOptions::default()
            },
        );
        engine.register(self.saga.clone()).unwrap();
        let _ = self.ledger.engine.set(engine.clone());
        engine
    }
}

pub fn engine_on(db: &Db, options: EngineOptions) -> SagaEngine {
    SagaEngine::new(DbSagaStore::new(db.clone()), options)
}

/// A fresh instance id.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
