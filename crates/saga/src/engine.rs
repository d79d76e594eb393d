//! The engine: starts instances, runs their steps write-ahead, applies replies, times steps
//! out, compensates, and resumes what a crash interrupted.

use std::{
    any::TypeId,
    collections::HashMap,
    fmt,
    sync::{Arc, PoisonError, RwLock},
    time::Duration,
};

use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::instrument;

use crate::{
    Clock, InstanceRecord, SagaDefinition, SagaError, SagaState, SagaStatus, SagaStore,
    StepContext, StepKind, StepLogWrite, StepRecord, StepStatus, SystemClock,
    clock::duration_ms,
    definition::{ErasedSaga, RawOutcome},
};

/// How often [`SagaEngine::wait_until`] looks at the store when nothing changed in this
/// process (another engine may be advancing the instance).
const WAIT_POLL: Duration = Duration::from_millis(50);

/// How many times a reply is retried when others change the instance meanwhile.
const DELIVER_ATTEMPTS: usize = 16;

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// The time source for deadlines.
    pub clock: Arc<dyn Clock>,
    /// How often the sweeper started by [`SagaEngine::spawn_sweeper`] looks for steps past
    /// their deadline.
    pub sweep_interval: Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            sweep_interval: Duration::from_secs(1),
        }
    }
}

/// What [`SagaEngine::start`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    /// Created the instance and began its first step.
    Created,
    /// An instance with that id existed; it was left as it was.
    Existing,
}

/// What [`SagaEngine::deliver`] did with a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The instance was on that step and moved on.
    Accepted,
    /// The instance was not on that step (a duplicate, late or stray reply): nothing changed.
    Ignored,
}

/// A reply to a command a step sent (see [`StepOutcome::Waiting`](crate::StepOutcome)).
pub struct Reply<S>(ReplyKind<S>);

type Update<S> = Arc<dyn Fn(&mut S) + Send + Sync>;

enum ReplyKind<S> {
    Done(Option<Update<S>>),
    Failed(String),
}

impl<S> Reply<S> {
    /// The command succeeded; the state is kept as it is.
    pub fn done() -> Self {
        Self(ReplyKind::Done(None))
    }

    /// The command succeeded; `update` records its result in the state. It may run more than
    /// once (on fresh copies of the state) when others change the instance meanwhile.
    pub fn done_with(update: impl Fn(&mut S) + Send + Sync + 'static) -> Self {
        Self(ReplyKind::Done(Some(Arc::new(update))))
    }

    /// The command failed: like [`StepOutcome::Failed`](crate::StepOutcome::Failed).
    pub fn failed(reason: impl Into<String>) -> Self {
        Self(ReplyKind::Failed(reason.into()))
    }
}

impl<S> fmt::Debug for Reply<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            ReplyKind::Done(update) => f
                .debug_tuple("Done")
                .field(&update.as_ref().map(|_| ".."))
                .finish(),
            ReplyKind::Failed(reason) => f.debug_tuple("Failed").field(reason).finish(),
        }
    }
}

/// An instance as [`SagaEngine::instance`] and [`SagaEngine::recent`] show it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SagaInstance {
    /// The instance id.
    pub id: String,
    /// The saga's name.
    pub saga: String,
    /// Where it stands.
    pub status: SagaStatus,
    /// The current state.
    pub state: serde_json::Value,
    /// The step being run or compensated, while there is one.
    pub current_step: Option<String>,
    /// Whether the current step waits for a reply.
    pub waiting: bool,
    /// Why it is compensating or ended as it did.
    pub reason: Option<String>,
    /// Created (unix ms).
    pub created_ms: i64,
    /// Last changed (unix ms).
    pub updated_ms: i64,
    /// Every action and compensation started, in order, with its times.
    pub steps: Vec<StepRecord>,
}

impl SagaInstance {
    /// The state as the saga's type.
    pub fn state_as<S: DeserializeOwned>(&self) -> Result<S, SagaError> {
        S::deserialize(&self.state).map_err(SagaError::State)
    }
}

/// Runs sagas. Cheap to clone; every clone is the same engine.
#[derive(Clone)]
pub struct SagaEngine {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn SagaStore>,
    clock: Arc<dyn Clock>,
    sweep_interval: Duration,
    sagas: RwLock<HashMap<String, Arc<dyn ErasedSaga>>>,
    tracker: TaskTracker,
    cancel: CancellationToken,
    /// Bumped after every change this engine writes, to wake [`SagaEngine::wait_until`].
    changed: watch::Sender<u64>,
}

impl fmt::Debug for SagaEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SagaEngine")
            .field("clock", &self.inner.clock)
            .field("sweep_interval", &self.inner.sweep_interval)
            .finish_non_exhaustive()
    }
}

impl SagaEngine {
    /// An engine on `store`. It runs nothing until sagas are started, resumed or delivered
    /// to; [`spawn_sweeper`](Self::spawn_sweeper) starts the timeout sweeper.
    pub fn new(store: impl SagaStore, options: EngineOptions) -> Self {
        Self {
            inner: Arc::new(Inner {
                store: Arc::new(store),
                clock: options.clock,
                sweep_interval: options.sweep_interval,
                sagas: RwLock::new(HashMap::new()),
                tracker: TaskTracker::new(),
                cancel: CancellationToken::new(),
                changed: watch::Sender::new(0),
            }),
        }
    }

    /// Makes `definition` known by its name, so that instances of it can be resumed and
    /// replied to. Replaces a definition of the same name.
    pub fn register<S: SagaState>(&self, definition: SagaDefinition<S>) -> Result<(), SagaError> {
        if let Some(problem) = definition.problem() {
            return Err(SagaError::InvalidDefinition(problem));
        }
        self.inner
            .sagas
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(definition.name.clone(), Arc::new(definition));
        Ok(())
    }

    fn saga(&self, name: &str) -> Result<Arc<dyn ErasedSaga>, SagaError> {
        self.inner
            .sagas
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
            .ok_or_else(|| SagaError::UnknownSaga(name.to_owned()))
    }

    /// Starts an instance `instance_id` of `definition` (registering it) with `initial`
    /// state and begins its first step in the background. Idempotent on the id: an existing
    /// instance of the same saga is left alone.
    #[instrument(skip_all, fields(saga = %definition.name, saga.instance = %instance_id), err)]
    pub async fn start<S: SagaState>(
        &self,
        definition: &SagaDefinition<S>,
        instance_id: &str,
        initial: S,
    ) -> Result<Started, SagaError> {
        let record = self.new_instance(definition, instance_id, &initial)?;
        if self.inner.store.insert(&record).await? {
            tracing::info!("saga started");
            self.notify();
            self.spawn_drive(instance_id.to_owned());
            return Ok(Started::Created);
        }
        let existing = self
            .inner
            .store
            .load(instance_id)
            .await?
            .ok_or_else(|| SagaError::NotFound(instance_id.to_owned()))?;
        if existing.saga != definition.name {
            return Err(SagaError::WrongSaga {
                id: instance_id.to_owned(),
                existing: existing.saga,
                requested: definition.name.clone(),
            });
        }
        Ok(Started::Existing)
    }

    /// The first record of an instance `instance_id` of `definition` (registering it) with
    /// `initial` state, for [`insert_in`](crate::insert_in) to write in the caller's own
    /// transaction; [`run_inserted`](Self::run_inserted) begins it once that commits.
    pub fn new_instance<S: SagaState>(
        &self,
        definition: &SagaDefinition<S>,
        instance_id: &str,
        initial: &S,
    ) -> Result<InstanceRecord, SagaError> {
        if self.saga(&definition.name).is_err() {
            self.register(definition.clone())?;
        }
        let now = self.now();
        Ok(InstanceRecord {
            id: instance_id.to_owned(),
            saga: definition.name.clone(),
            state: serde_json::to_string(initial).map_err(SagaError::State)?,
            status: SagaStatus::Running,
            step: 0,
            waiting: false,
            deadline_ms: None,
            reason: None,
            created_ms: now,
            updated_ms: now,
            version: 1,
            resends: 0,
        })
    }

    /// Begins the first step of an instance committed through [`insert_in`](crate::insert_in),
    /// in the background.
    pub fn run_inserted(&self, instance_id: &str) {
        tracing::info!(saga.instance = %instance_id, "saga started");
        self.notify();
        self.spawn_drive(instance_id.to_owned());
    }

    /// Applies the reply to the command that step `step`'s action sent. Ignored (and
    /// harmless) unless the instance is still running that step: duplicates and replies that
    /// come after a timeout change nothing.
    pub async fn deliver<S: SagaState>(
        &self,
        instance_id: &str,
        step: &str,
        reply: Reply<S>,
    ) -> Result<Delivery, SagaError> {
        self.deliver_kind(instance_id, step, StepKind::Action, reply)
            .await
    }

    /// Applies the reply to the command that step `step`'s compensation sent; ignored unless
    /// the instance is still compensating that step.
    pub async fn deliver_compensation<S: SagaState>(
        &self,
        instance_id: &str,
        step: &str,
        reply: Reply<S>,
    ) -> Result<Delivery, SagaError> {
        self.deliver_kind(instance_id, step, StepKind::Compensation, reply)
            .await
    }

    #[instrument(skip_all, fields(saga.instance = %instance_id, saga.step = %step, kind = %kind), err)]
    async fn deliver_kind<S: SagaState>(
        &self,
        instance_id: &str,
        step: &str,
        kind: StepKind,
        reply: Reply<S>,
    ) -> Result<Delivery, SagaError> {
        for _ in 0..DELIVER_ATTEMPTS {
            let record = self
                .inner
                .store
                .load(instance_id)
                .await?
                .ok_or_else(|| SagaError::NotFound(instance_id.to_owned()))?;
            let saga = self.saga(&record.saga)?;
            if saga.state_type() != TypeId::of::<S>() {
                return Err(SagaError::StateType(record.saga));
            }
            let index = saga.index_of(step).ok_or_else(|| SagaError::UnknownStep {
                saga: record.saga.clone(),
                step: step.to_owned(),
            })?;
            let on_step = match kind {
                StepKind::Action => SagaStatus::Running,
                StepKind::Compensation => SagaStatus::Compensating,
            };
            // Accepted while the step is current, waiting or not: a fast reply may arrive
            // before the action's `Waiting` is stored (that write then loses on version).
            if record.status != on_step || record.step != index_i64(index) {
                tracing::info!(status = %record.status, "reply ignored: the instance is not on that step");
                return Ok(Delivery::Ignored);
            }
            let now = self.now();
            let outcome = match &reply.0 {
                ReplyKind::Done(update) => {
                    let mut state: S =
                        serde_json::from_str(&record.state).map_err(SagaError::State)?;
                    if let Some(update) = update {
                        update(&mut state);
                    }
                    RawOutcome::Done(serde_json::to_string(&state).map_err(SagaError::State)?)
                }
                ReplyKind::Failed(reason) => RawOutcome::Failed(reason.clone()),
            };
            let (next, log) = self.after_call(&record, &*saga, index, kind, outcome, now);
            if self.write(&record, &next, &log).await? {
                tracing::info!(status = %next.status, "reply applied");
                self.spawn_drive(instance_id.to_owned());
                return Ok(Delivery::Accepted);
            }
        }
        Err(SagaError::Contended(instance_id.to_owned()))
    }

    /// Picks up every unfinished instance (at start-up): a running one calls its current
    /// step's action again with the same idempotency key (unless it waits for a reply, which
    /// will come or time out); a compensating one carries on compensating. Returns how many
    /// instances were picked up.
    #[instrument(skip_all, err)]
    pub async fn resume_all(&self) -> Result<usize, SagaError> {
        let mut resumed = 0;
        for (id, saga) in self.inner.store.unfinished().await? {
            if self.saga(&saga).is_err() {
                tracing::warn!(saga.instance = %id, saga = %saga, "cannot resume: the saga is not registered");
                continue;
            }
            self.spawn_drive(id);
            resumed += 1;
        }
        tracing::info!(resumed, "unfinished sagas resumed");
        Ok(resumed)
    }

    /// Starts the background task that times steps out every
    /// [`EngineOptions::sweep_interval`], until [`shutdown`](Self::shutdown).
    pub fn spawn_sweeper(&self) {
        let engine = self.clone();
        self.inner.tracker.spawn(async move {
            let mut ticks = tokio::time::interval(engine.inner.sweep_interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = engine.inner.cancel.cancelled() => break,
                    _ = ticks.tick() => {
                        if let Err(err) = engine.sweep_once().await {
                            tracing::warn!(error = %err, "saga timeout sweep failed");
                        }
                    }
                }
            }
        });
    }

    /// Times out every call past its deadline now: a running step with re-sends left
    /// ([`Step::resends`](crate::Step::resends)) has its action called again with a fresh
    /// deadline; one without fails (and is compensated with the steps before it, since its
    /// effect is unknown); a compensation is called again. Returns how many instances it
    /// moved.
    #[instrument(level = "debug", skip_all, err)]
    pub async fn sweep_once(&self) -> Result<usize, SagaError> {
        let now = self.now();
        let mut moved = 0;
        for id in self.inner.store.due(now).await? {
            let Some(record) = self.inner.store.load(&id).await? else {
                continue;
            };
            if record.deadline_ms.is_none_or(|deadline| deadline > now) {
                continue;
            }
            let Ok(saga) = self.saga(&record.saga) else {
                continue;
            };
            let Some(index) = index_usize(record.step).filter(|i| *i < saga.len()) else {
                continue;
            };
            let name = saga.step_name(index).unwrap_or_default().to_owned();
            let timeout_ms = duration_ms(saga.timeout(index));
            let mut next = self.successor(&record, now);
            next.waiting = false;
            next.deadline_ms = None;
            let allowed = i64::from(saga.resends(index));
            let log = match record.status {
                SagaStatus::Running if record.resends < allowed => {
                    // No reply yet: perhaps the command or its reply was lost with a crashed
                    // process. Ask again (same idempotency key) before giving up on it.
                    next.resends = record.resends + 1;
                    tracing::warn!(
                        saga.instance = %id, saga.step = %name, resend = next.resends, of = allowed,
                        "saga step passed its deadline; calling its action again"
                    );
                    // `waiting` cleared: the drive below calls the action again.
                    vec![status_write(
                        index,
                        StepKind::Action,
                        StepStatus::TimedOut,
                        now,
                        Some(format!(
                            "no reply within {timeout_ms} ms; sending again ({} of {allowed})",
                            next.resends
                        )),
                    )]
                }
                SagaStatus::Running => {
                    let reason = format!("step {name} timed out after {timeout_ms} ms");
                    let reason = if allowed > 0 {
                        format!("{reason} (sent {} times)", allowed + 1)
                    } else {
                        reason
                    };
                    tracing::warn!(saga.instance = %id, saga.step = %name, "saga step timed out; compensating");
                    next.status = SagaStatus::Compensating;
                    next.reason = Some(reason.clone());
                    next.resends = 0;
                    // `step` stays: the timed-out step is compensated too.
                    vec![status_write(
                        index,
                        StepKind::Action,
                        StepStatus::TimedOut,
                        now,
                        Some(reason),
                    )]
                }
                SagaStatus::Compensating => {
                    tracing::warn!(saga.instance = %id, saga.step = %name, "saga compensation timed out; retrying");
                    vec![status_write(
                        index,
                        StepKind::Compensation,
                        StepStatus::TimedOut,
                        now,
                        Some(format!("no answer within {timeout_ms} ms; retrying")),
                    )]
                }
                _ => continue,
            };
            if self.write(&record, &next, &log).await? {
                self.spawn_drive(id);
                moved += 1;
            }
        }
        Ok(moved)
    }

    /// The instance `id`: status, state, reason and the timeline of its steps.
    #[instrument(skip_all, fields(saga.instance = %id), err)]
    pub async fn instance(&self, id: &str) -> Result<Option<SagaInstance>, SagaError> {
        let Some(record) = self.inner.store.load(id).await? else {
            return Ok(None);
        };
        let steps = self.inner.store.steps(id).await?;
        self.view(record, steps).map(Some)
    }

    /// The `limit` most recently started instances, of every saga and status, newest first,
    /// each with its timeline (as [`instance`](Self::instance) shows one): for an operator's
    /// console. Two reads whatever the limit (instances, then all their steps at once).
    #[instrument(skip_all, fields(limit = limit), err)]
    pub async fn recent(&self, limit: u32) -> Result<Vec<SagaInstance>, SagaError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let records = self.inner.store.recent(limit).await?;
        let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
        let mut steps = self.inner.store.steps_of(&ids).await?;
        records
            .into_iter()
            .map(|record| {
                let timeline = steps.remove(&record.id).unwrap_or_default();
                self.view(record, timeline)
            })
            .collect()
    }

    /// `record` with its timeline, as callers see it.
    fn view(
        &self,
        record: InstanceRecord,
        steps: Vec<StepRecord>,
    ) -> Result<SagaInstance, SagaError> {
        let current_step = if record.status.is_terminal() {
            None
        } else {
            self.saga(&record.saga).ok().and_then(|saga| {
                index_usize(record.step).and_then(|i| saga.step_name(i).map(str::to_owned))
            })
        };
        Ok(SagaInstance {
            state: serde_json::from_str(&record.state).map_err(SagaError::State)?,
            id: record.id,
            saga: record.saga,
            status: record.status,
            current_step,
            waiting: record.waiting,
            reason: record.reason,
            created_ms: record.created_ms,
            updated_ms: record.updated_ms,
            steps,
        })
    }

    /// Waits until the instance `id` exists and satisfies `condition`, for at most `timeout`.
    /// Wakes on every change this engine makes and looks at the store every 50 ms besides
    /// (another engine may be the one advancing it).
    pub async fn wait_until(
        &self,
        id: &str,
        timeout: Duration,
        condition: impl Fn(&SagaInstance) -> bool,
    ) -> Result<SagaInstance, SagaError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changes = self.inner.changed.subscribe();
        loop {
            changes.borrow_and_update();
            let instance = self.instance(id).await?;
            if let Some(instance) = &instance
                && condition(instance)
            {
                return Ok(instance.clone());
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(SagaError::WaitTimedOut {
                    id: id.to_owned(),
                    status: instance.map(|i| i.status),
                });
            }
            let _ = tokio::time::timeout((deadline - now).min(WAIT_POLL), changes.changed()).await;
        }
    }

    /// Waits until the instance `id` is completed, compensated or failed.
    pub async fn wait_finished(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Result<SagaInstance, SagaError> {
        self.wait_until(id, timeout, |i| i.status.is_terminal())
            .await
    }

    /// Stops the sweeper and every step under way (their instances stay where the store
    /// says and are picked up by [`resume_all`](Self::resume_all)), and waits for the tasks to
    /// end.
    pub async fn shutdown(&self) {
        self.inner.cancel.cancel();
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
    }

    fn now(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    fn notify(&self) {
        self.inner.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// `record` with the next version and `now` as its change time.
    fn successor(&self, record: &InstanceRecord, now: i64) -> InstanceRecord {
        let mut next = record.clone();
        next.version = record.version + 1;
        next.updated_ms = now;
        next
    }

    /// Stores `next` if `current` is still the stored version.
    async fn write(
        &self,
        current: &InstanceRecord,
        next: &InstanceRecord,
        log: &[StepLogWrite],
    ) -> Result<bool, SagaError> {
        let written = self.inner.store.update(next, current.version, log).await?;
        if written {
            self.notify();
        } else {
            tracing::debug!(saga.instance = %current.id, "instance changed meanwhile; leaving it to whoever changed it");
        }
        Ok(written)
    }

    fn spawn_drive(&self, id: String) {
        if self.inner.cancel.is_cancelled() {
            return;
        }
        let engine = self.clone();
        self.inner.tracker.spawn(async move {
            tokio::select! {
                () = engine.inner.cancel.cancelled() => {}
                result = engine.drive(&id) => {
                    if let Err(err) = result {
                        tracing::error!(saga.instance = %id, error = %err, "saga stalled; it is retried at the next resume");
                    }
                }
            }
        });
    }

    /// Runs the instance `id` until it waits, ends, or someone else moves it.
    async fn drive(&self, id: &str) -> Result<(), SagaError> {
        loop {
            let Some(record) = self.inner.store.load(id).await? else {
                return Ok(());
            };
            let saga = self.saga(&record.saga)?;
            let now = self.now();
            let (kind, index) = match record.status {
                SagaStatus::Running => match index_usize(record.step) {
                    Some(index) if index < saga.len() => (StepKind::Action, index),
                    _ => {
                        let mut next = self.successor(&record, now);
                        next.status = SagaStatus::Completed;
                        next.deadline_ms = None;
                        next.waiting = false;
                        if self.write(&record, &next, &[]).await? {
                            tracing::info!(saga.instance = %id, "saga completed");
                            metrics::counter!("tideway_saga_completed_total", "saga" => record.saga.clone())
                                .increment(1);
                        }
                        return Ok(());
                    }
                },
                SagaStatus::Compensating => match index_usize(record.step) {
                    Some(index) if index < saga.len() => {
                        if !saga.has_compensation(index) {
                            let mut next = self.successor(&record, now);
                            next.step = record.step - 1;
                            if !self.write(&record, &next, &[]).await? {
                                return Ok(());
                            }
                            continue;
                        }
                        (StepKind::Compensation, index)
                    }
                    _ => {
                        let mut next = self.successor(&record, now);
                        next.status = SagaStatus::Compensated;
                        next.deadline_ms = None;
                        next.waiting = false;
                        if self.write(&record, &next, &[]).await? {
                            tracing::info!(saga.instance = %id, reason = ?record.reason, "saga compensated");
                            metrics::counter!("tideway_saga_compensated_total", "saga" => record.saga.clone())
                                .increment(1);
                        }
                        return Ok(());
                    }
                },
                _ => return Ok(()),
            };
            if record.waiting {
                return Ok(());
            }
            if !self.run_call(&record, &*saga, index, kind).await? {
                return Ok(());
            }
        }
    }

    /// Claims the call (records its start and deadline), makes it, and records its outcome.
    /// `false` when another party moved the instance first.
    async fn run_call(
        &self,
        record: &InstanceRecord,
        saga: &dyn ErasedSaga,
        index: usize,
        kind: StepKind,
    ) -> Result<bool, SagaError> {
        let name = saga.step_name(index).unwrap_or_default().to_owned();
        let now = self.now();
        let mut claimed = self.successor(record, now);
        claimed.deadline_ms = Some(now.saturating_add(duration_ms(saga.timeout(index))));
        claimed.waiting = false;
        let start = StepLogWrite::Started {
            index: index_i64(index),
            step: name.clone(),
            kind,
            at_ms: now,
            seq: claimed.version,
        };
        if !self.write(record, &claimed, &[start]).await? {
            return Ok(false);
        }
        tracing::debug!(saga.instance = %record.id, saga.step = %name, kind = %kind, "saga step started");
        let ctx = StepContext {
            instance_id: record.id.clone(),
            saga: record.saga.clone(),
            step: name,
            index,
            kind,
            attempt: match kind {
                StepKind::Action => u32::try_from(record.resends)
                    .unwrap_or(u32::MAX)
                    .saturating_add(1),
                StepKind::Compensation => 1,
            },
        };
        let (saga_name, step_name) = (record.saga.clone(), ctx.step.clone());
        if kind == StepKind::Action && index == 0 && record.resends == 0 {
            // Counted when its first step first runs, so it covers both ways to start.
            metrics::counter!("tideway_saga_started_total", "saga" => saga_name.clone())
                .increment(1);
        }
        let began = std::time::Instant::now();
        let outcome = saga.run(ctx, &claimed.state).await;
        metrics::histogram!(
            "tideway_saga_step_duration_seconds",
            "saga" => saga_name,
            "step" => step_name,
            "kind" => kind.to_string()
        )
        .record(began.elapsed().as_secs_f64());
        let now = self.now();
        let (next, log) = self.after_call(&claimed, saga, index, kind, outcome, now);
        self.write(&claimed, &next, &log).await
    }

    /// The instance and timeline changes that follow `outcome` of step `index`'s `kind` call.
    fn after_call(
        &self,
        record: &InstanceRecord,
        saga: &dyn ErasedSaga,
        index: usize,
        kind: StepKind,
        outcome: RawOutcome,
        now: i64,
    ) -> (InstanceRecord, Vec<StepLogWrite>) {
        let mut next = self.successor(record, now);
        let at = index_i64(index);
        let log = match outcome {
            RawOutcome::Done(state) => {
                next.state = state;
                next.waiting = false;
                next.deadline_ms = None;
                next.resends = 0;
                next.step = match kind {
                    StepKind::Action => at + 1,
                    StepKind::Compensation => at - 1,
                };
                status_write(index, kind, StepStatus::Done, now, None)
            }
            RawOutcome::Waiting => {
                next.waiting = true;
                StepLogWrite::Status {
                    index: at,
                    kind,
                    status: StepStatus::Waiting,
                    finished_ms: None,
                    detail: None,
                }
            }
            RawOutcome::Failed(reason) => {
                next.waiting = false;
                next.deadline_ms = None;
                next.resends = 0;
                match kind {
                    StepKind::Action => {
                        tracing::warn!(saga.instance = %record.id, saga.step = saga.step_name(index), %reason, "saga step failed; compensating");
                        next.status = SagaStatus::Compensating;
                        // The failed action had no effect: compensation starts before it.
                        next.step = at - 1;
                        next.reason = Some(reason.clone());
                    }
                    StepKind::Compensation => {
                        tracing::error!(saga.instance = %record.id, saga.step = saga.step_name(index), %reason, "saga compensation failed; the instance needs an operator");
                        next.status = SagaStatus::Failed;
                        let step = saga.step_name(index).unwrap_or_default();
                        let failure = format!("compensating {step} failed: {reason}");
                        next.reason = Some(match &record.reason {
                            Some(first) => format!("{first}; then {failure}"),
                            None => failure,
                        });
                    }
                }
                status_write(index, kind, StepStatus::Failed, now, Some(reason))
            }
        };
        (next, vec![log])
    }
}

fn status_write(
    index: usize,
    kind: StepKind,
    status: StepStatus,
    at_ms: i64,
    detail: Option<String>,
) -> StepLogWrite {
    StepLogWrite::Status {
        index: index_i64(index),
        kind,
        status,
        finished_ms: Some(at_ms),
        detail,
    }
}

fn index_i64(index: usize) -> i64 {
    i64::try_from(index).unwrap_or(i64::MAX)
}

fn index_usize(step: i64) -> Option<usize> {
    usize::try_from(step).ok()
}
