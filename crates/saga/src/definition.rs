//! Saga definitions: a name and ordered steps, each an action, an optional compensation and
//! a timeout, over a typed state that is persisted as JSON.

use std::{any::TypeId, fmt, future::Future, sync::Arc, time::Duration};

use futures_util::{FutureExt, future::BoxFuture};
use serde::{Serialize, de::DeserializeOwned};

/// How long a step may take (from its start until it is done, including a reply it waits
/// for) unless [`Step::timeout`] says otherwise.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// The state a saga carries from step to step; persisted as JSON after every transition.
pub trait SagaState: Serialize + DeserializeOwned + Send + Sync + 'static {}

impl<T: Serialize + DeserializeOwned + Send + Sync + 'static> SagaState for T {}

/// Whether a call does a step's work or undoes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepKind {
    /// The step's work.
    Action,
    /// Undoing the step's work.
    Compensation,
}

impl StepKind {
    /// The stored text: `action` or `compensation`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Action => "action",
            Self::Compensation => "compensation",
        }
    }

    /// Parses the stored text.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "action" => Some(Self::Action),
            "compensation" => Some(Self::Compensation),
            _ => None,
        }
    }
}

impl fmt::Display for StepKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an action or compensation is told about the call it serves.
#[derive(Debug, Clone)]
pub struct StepContext {
    pub(crate) instance_id: String,
    pub(crate) saga: String,
    pub(crate) step: String,
    pub(crate) index: usize,
    pub(crate) kind: StepKind,
    pub(crate) attempt: u32,
}

impl StepContext {
    /// The saga instance's id.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// The saga's name.
    pub fn saga(&self) -> &str {
        &self.saga
    }

    /// The step's name.
    pub fn step(&self) -> &str {
        &self.step
    }

    /// The step's position, from 0.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Whether this call is the action or the compensation.
    pub fn kind(&self) -> StepKind {
        self.kind
    }

    /// Which send of the action this is: 1 for the first, 2 after the step's deadline passed
    /// once without a reply and the engine calls the action again (see [`Step::resends`]),
    /// and so on. A call repeated after a crash keeps its number. Always 1 for a
    /// compensation.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// `<instance id>:<step>:<kind>` — the same on every call of this step and kind, also
    /// after a crash, so the work it triggers downstream can be deduplicated.
    pub fn idempotency_key(&self) -> String {
        self.key_for(self.kind)
    }

    /// The idempotency key of this step's `kind` call; a compensation uses
    /// `key_for(StepKind::Action)` to find the work it undoes.
    pub fn key_for(&self, kind: StepKind) -> String {
        idempotency_key(&self.instance_id, &self.step, kind)
    }
}

/// `<instance id>:<step>:<kind>`.
pub fn idempotency_key(instance_id: &str, step: &str, kind: StepKind) -> String {
    format!("{instance_id}:{step}:{kind}")
}

/// What an action or compensation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome<S> {
    /// Done: the saga moves on with this state.
    Done(S),
    /// A command was sent; its reply arrives later through
    /// [`SagaEngine::deliver`](crate::SagaEngine::deliver) (or
    /// [`deliver_compensation`](crate::SagaEngine::deliver_compensation)), or the step times
    /// out.
    Waiting,
    /// Failed. From an action: the step must have had no effect, and the steps done before it
    /// are compensated in reverse order. From a compensation: the saga ends `failed` and
    /// needs an operator.
    Failed(String),
}

type StepFn<S> = Arc<dyn Fn(StepContext, S) -> BoxFuture<'static, StepOutcome<S>> + Send + Sync>;

fn boxed<S, F, Fut>(f: F) -> StepFn<S>
where
    S: SagaState,
    F: Fn(StepContext, S) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = StepOutcome<S>> + Send + 'static,
{
    Arc::new(move |ctx, state| f(ctx, state).boxed())
}

/// One step of a saga.
///
/// Actions and compensations must be idempotent: after a crash the engine calls them again
/// with the same [`StepContext::idempotency_key`]. A compensation must also succeed when the
/// action's work never happened (a timed-out step is compensated because its effect is
/// unknown).
pub struct Step<S> {
    pub(crate) name: String,
    pub(crate) action: StepFn<S>,
    pub(crate) compensation: Option<StepFn<S>>,
    pub(crate) timeout: Duration,
    pub(crate) resends: u32,
}

impl<S: SagaState> Step<S> {
    /// A step called `name` doing `action`, with no compensation and the default timeout.
    pub fn new<F, Fut>(name: impl Into<String>, action: F) -> Self
    where
        F: Fn(StepContext, S) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = StepOutcome<S>> + Send + 'static,
    {
        Self {
            name: name.into(),
            action: boxed(action),
            compensation: None,
            timeout: DEFAULT_STEP_TIMEOUT,
            resends: 0,
        }
    }

    /// Undoes the action when a later step fails or this one times out.
    #[must_use]
    pub fn compensate<F, Fut>(mut self, compensation: F) -> Self
    where
        F: Fn(StepContext, S) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = StepOutcome<S>> + Send + 'static,
    {
        self.compensation = Some(boxed(compensation));
        self
    }

    /// How long the step may take, a reply it waits for included.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How many times the action is called again, each with a fresh deadline, when the
    /// step's deadline passes, before the step counts as timed out and is compensated
    /// (default 0: compensate at the first deadline). Each call carries the same
    /// [`StepContext::idempotency_key`], so a command sent again is deduplicated by its
    /// consumer, which answers it (again) instead of acting twice: a reply lost with a
    /// crashed process is asked for again instead of cancelling the saga.
    #[must_use]
    pub fn resends(mut self, resends: u32) -> Self {
        self.resends = resends;
        self
    }
}

impl<S> Clone for Step<S> {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            action: Arc::clone(&self.action),
            compensation: self.compensation.clone(),
            timeout: self.timeout,
            resends: self.resends,
        }
    }
}

impl<S> fmt::Debug for Step<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Step")
            .field("name", &self.name)
            .field("compensated", &self.compensation.is_some())
            .field("timeout", &self.timeout)
            .field("resends", &self.resends)
            .finish()
    }
}

/// A saga: a name and ordered steps over the state `S`.
pub struct SagaDefinition<S> {
    pub(crate) name: String,
    pub(crate) steps: Vec<Step<S>>,
}

impl<S: SagaState> SagaDefinition<S> {
    /// A saga called `name` with no steps yet. The name is stored with every instance, so
    /// that [`SagaEngine::resume_all`](crate::SagaEngine::resume_all) finds the definition.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            steps: Vec::new(),
        }
    }

    /// Appends a step.
    #[must_use]
    pub fn step(mut self, step: Step<S>) -> Self {
        self.steps.push(step);
        self
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The steps' names, in order.
    pub fn step_names(&self) -> impl Iterator<Item = &str> {
        self.steps.iter().map(|s| s.name.as_str())
    }

    /// Why the definition cannot run, if it cannot.
    pub(crate) fn problem(&self) -> Option<String> {
        if self.name.is_empty() {
            return Some("the saga has no name".into());
        }
        if self.steps.is_empty() {
            return Some(format!("saga {} has no steps", self.name));
        }
        for (i, step) in self.steps.iter().enumerate() {
            if step.name.is_empty() {
                return Some(format!("step {i} of saga {} has no name", self.name));
            }
            if self.steps[..i].iter().any(|s| s.name == step.name) {
                return Some(format!("saga {} names two steps {}", self.name, step.name));
            }
        }
        None
    }
}

impl<S> Clone for SagaDefinition<S> {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            steps: self.steps.clone(),
        }
    }
}

impl<S> fmt::Debug for SagaDefinition<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SagaDefinition")
            .field("name", &self.name)
            .field("steps", &self.steps)
            .finish()
    }
}

/// An outcome with the state as JSON text.
pub(crate) enum RawOutcome {
    Done(String),
    Waiting,
    Failed(String),
}

/// A definition with its state type erased, so one engine runs sagas of any state type.
pub(crate) trait ErasedSaga: Send + Sync + 'static {
    fn state_type(&self) -> TypeId;
    fn len(&self) -> usize;
    fn step_name(&self, index: usize) -> Option<&str>;
    fn index_of(&self, step: &str) -> Option<usize>;
    fn timeout(&self, index: usize) -> Duration;
    fn resends(&self, index: usize) -> u32;
    fn has_compensation(&self, index: usize) -> bool;
    /// Runs the action or compensation of step `ctx.index` on the JSON state.
    fn run(&self, ctx: StepContext, state: &str) -> BoxFuture<'static, RawOutcome>;
}

impl<S: SagaState> ErasedSaga for SagaDefinition<S> {
    fn state_type(&self) -> TypeId {
        TypeId::of::<S>()
    }

    fn len(&self) -> usize {
        self.steps.len()
    }

    fn step_name(&self, index: usize) -> Option<&str> {
        self.steps.get(index).map(|s| s.name.as_str())
    }

    fn index_of(&self, step: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.name == step)
    }

    fn timeout(&self, index: usize) -> Duration {
        self.steps
            .get(index)
            .map_or(DEFAULT_STEP_TIMEOUT, |s| s.timeout)
    }

    fn resends(&self, index: usize) -> u32 {
        self.steps.get(index).map_or(0, |s| s.resends)
    }

    fn has_compensation(&self, index: usize) -> bool {
        self.steps
            .get(index)
            .is_some_and(|s| s.compensation.is_some())
    }

    fn run(&self, ctx: StepContext, state: &str) -> BoxFuture<'static, RawOutcome> {
        let Some(step) = self.steps.get(ctx.index) else {
            let reason = format!("saga {} has no step {}", self.name, ctx.index);
            return async move { RawOutcome::Failed(reason) }.boxed();
        };
        let f = match ctx.kind {
            StepKind::Action => Some(Arc::clone(&step.action)),
            StepKind::Compensation => step.compensation.clone(),
        };
        let state = serde_json::from_str::<S>(state);
        async move {
            let Some(f) = f else {
                // Nothing to undo: the engine skips such steps, so this is only reached
                // when a definition changed under a running instance.
                return match state {
                    Ok(state) => to_raw(StepOutcome::Done(state)),
                    Err(err) => RawOutcome::Failed(format!("cannot decode the saga state: {err}")),
                };
            };
            match state {
                Ok(state) => to_raw(f(ctx, state).await),
                Err(err) => RawOutcome::Failed(format!("cannot decode the saga state: {err}")),
            }
        }
        .boxed()
    }
}

fn to_raw<S: Serialize>(outcome: StepOutcome<S>) -> RawOutcome {
    match outcome {
        StepOutcome::Done(state) => match serde_json::to_string(&state) {
            Ok(json) => RawOutcome::Done(json),
            Err(err) => RawOutcome::Failed(format!("cannot encode the saga state: {err}")),
        },
        StepOutcome::Waiting => RawOutcome::Waiting,
        StepOutcome::Failed(reason) => RawOutcome::Failed(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noop(name: &str) -> Step<u32> {
        Step::new(name, |_, s: u32| async move { StepOutcome::Done(s + 1) })
    }

    #[test]
    fn rejects_unnamed_empty_and_duplicate_steps() {
        assert!(
            SagaDefinition::<u32>::new("")
                .step(noop("a"))
                .problem()
                .is_some()
        );
        assert!(SagaDefinition::<u32>::new("s").problem().is_some());
        let dup = SagaDefinition::new("s").step(noop("a")).step(noop("a"));
        assert_eq!(dup.problem().as_deref(), Some("saga s names two steps a"));
        assert!(
            SagaDefinition::new("s")
                .step(noop("a"))
                .step(noop("b"))
                .problem()
                .is_none()
        );
    }

    #[test]
    fn keys_name_instance_step_and_kind() {
        let ctx = StepContext {
            instance_id: "i-1".into(),
            saga: "s".into(),
            step: "reserve".into(),
            index: 0,
            kind: StepKind::Compensation,
            attempt: 1,
        };
        assert_eq!(ctx.idempotency_key(), "i-1:reserve:compensation");
        assert_eq!(ctx.key_for(StepKind::Action), "i-1:reserve:action");
    }

    #[tokio::test]
    async fn runs_a_step_on_json_state() {
        let saga = SagaDefinition::new("s").step(noop("a"));
        let ctx = StepContext {
            instance_id: "i".into(),
            saga: "s".into(),
            step: "a".into(),
            index: 0,
            kind: StepKind::Action,
            attempt: 1,
        };
        assert!(matches!(saga.run(ctx.clone(), "41").await, RawOutcome::Done(s) if s == "42"));
        assert!(
            matches!(saga.run(ctx, "\"x\"").await, RawOutcome::Failed(r) if r.starts_with("cannot decode"))
        );
    }
}
