//! A durable, orchestrated saga engine that knows nothing of the business it runs.
//!
//! A [`SagaDefinition`] is a name and ordered [`Step`]s over a typed state `S` (serialised as
//! JSON). Each step has an action, an optional compensation and a timeout. An action either
//! finishes at once ([`StepOutcome::Done`] with the new state), or sends a command and
//! answers [`StepOutcome::Waiting`]; the command's reply arrives later through
//! [`SagaEngine::deliver`] — which is how a service drives sagas from events without this
//! crate knowing about any bus. [`StepOutcome::Failed`] makes the engine compensate the
//! steps already done, last first. A step that passes its deadline is first called again
//! ([`Step::resends`] times, each with a fresh deadline and the same idempotency key, so a
//! command or reply lost with a crashed process is asked for again and the consumer answers
//! it without acting twice); once its re-sends are spent the sweeper fails it and it is
//! compensated too (its effect is unknown, so compensations must tolerate work that never
//! happened).
//!
//! Every transition is written to the owning service's database (through a [`SagaStore`];
//! [`DbSagaStore`] runs on SQLite and PostgreSQL) *before* the engine acts on it: a step is
//! claimed (its start and deadline recorded) before its action runs, and is done only once
//! its outcome is stored. Each write is conditional on the instance's version, so two
//! engines never both advance one instance. After a crash, [`SagaEngine::resume_all`] picks
//! every unfinished instance up and calls the interrupted action or compensation again with
//! the same idempotency key (`<instance id>:<step>:<kind>`), which the step passes
//! downstream so the work happens once. The per-instance step log ([`StepRecord`]s) is the
//! timeline a service shows its users.
//!
//! ```no_run
//! # use std::time::Duration;
//! # use tideway_saga::*;
//! # async fn demo(db: tideway_store::Db) -> Result<(), SagaError> {
//! tideway_saga::install(&db).await?;
//! let saga = SagaDefinition::new("greeting")
//!     .step(Step::new("hello", |_ctx, n: u32| async move { StepOutcome::Done(n + 1) })
//!         .compensate(|_ctx, n: u32| async move { StepOutcome::Done(n - 1) })
//!         .timeout(Duration::from_secs(5)));
//! let engine = SagaEngine::new(DbSagaStore::new(db), EngineOptions::default());
//! engine.register(saga.clone())?;
//! engine.resume_all().await?;
//! engine.spawn_sweeper();
//! engine.start(&saga, "greeting-1", 0).await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod clock;
mod definition;
mod engine;
mod store;

pub use clock::{Clock, ManualClock, SystemClock};
pub use definition::{
    DEFAULT_STEP_TIMEOUT, SagaDefinition, SagaState, Step, StepContext, StepKind, StepOutcome,
    idempotency_key,
};
pub use engine::{Delivery, EngineOptions, Reply, SagaEngine, SagaInstance, Started};
pub use store::{
    DbSagaStore, InstanceRecord, PRUNE_RULES, SagaStatus, SagaStore, StepLogWrite, StepRecord,
    StepStatus, insert_in, install,
};

/// A failed saga operation.
#[derive(Debug, thiserror::Error)]
pub enum SagaError {
    /// The store failed.
    #[error("saga store failed")]
    Store(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The store holds a value this version cannot read.
    #[error("stored saga {column} {value:?} is not understood")]
    Corrupt {
        /// The column.
        column: &'static str,
        /// The value found.
        value: String,
    },
    /// The definition cannot run.
    #[error("invalid saga definition: {0}")]
    InvalidDefinition(String),
    /// No definition of that name is registered with the engine.
    #[error("no saga named {0} is registered")]
    UnknownSaga(String),
    /// The saga has no step of that name.
    #[error("saga {saga} has no step {step}")]
    UnknownStep {
        /// The saga.
        saga: String,
        /// The step asked for.
        step: String,
    },
    /// No instance has that id.
    #[error("no saga instance {0}")]
    NotFound(String),
    /// The id belongs to an instance of another saga.
    #[error("saga instance {id} belongs to saga {existing}, not {requested}")]
    WrongSaga {
        /// The instance id.
        id: String,
        /// Its saga.
        existing: String,
        /// The saga asked for.
        requested: String,
    },
    /// A reply was typed with another state type than the saga's.
    #[error("saga {0} has another state type than the reply")]
    StateType(String),
    /// The state could not be encoded or decoded.
    #[error("cannot encode or decode the saga state")]
    State(#[source] serde_json::Error),
    /// Others kept changing the instance while a reply was being applied.
    #[error("saga instance {0} changed too often to apply the reply")]
    Contended(String),
    /// The condition waited for did not hold by the deadline.
    #[error(
        "saga instance {id} did not reach the awaited condition in time (last status {status:?})"
    )]
    WaitTimedOut {
        /// The instance id.
        id: String,
        /// Its last status, if it exists.
        status: Option<SagaStatus>,
    },
}

impl SagaError {
    pub(crate) fn corrupt(column: &'static str, value: &str) -> Self {
        Self::Corrupt {
            column,
            value: value.to_owned(),
        }
    }
}

impl From<tideway_store::sqlx::Error> for SagaError {
    fn from(err: tideway_store::sqlx::Error) -> Self {
        Self::Store(Box::new(err))
    }
}
