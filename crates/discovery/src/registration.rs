//! The handle that keeps an instance registered.

use std::fmt;

use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{BoxFuture, DiscoveryError, Instance};

/// What removes a registration once its heartbeat has stopped.
type Remove = Box<dyn FnOnce() -> BoxFuture<'static, Result<(), DiscoveryError>> + Send + Sync>;

/// A registered instance. Its heartbeat (if the registry has one) runs as a task owned by
/// this handle.
///
/// Call [`deregister`](Self::deregister) before draining, so callers stop picking this
/// replica at once. Dropping the handle stops the heartbeat without removing the record —
/// what a crash looks like — and the record expires after the registry's TTL.
#[must_use = "dropping a registration stops its heartbeat"]
pub struct Registration {
    instance: Instance,
    cancel: CancellationToken,
    tasks: TaskTracker,
    remove: Option<Remove>,
}

impl Registration {
    /// A registration without heartbeat or removal (static and DNS registries).
    pub fn fixed(instance: Instance) -> Self {
        let tasks = TaskTracker::new();
        // Nothing will run on it; closed, so waiting on it returns at once.
        tasks.close();
        Self {
            instance,
            cancel: CancellationToken::new(),
            tasks,
            remove: None,
        }
    }

    /// A registration whose heartbeat runs on `tasks` until `cancel`, removed by `remove`.
    pub(crate) fn new(
        instance: Instance,
        cancel: CancellationToken,
        tasks: TaskTracker,
        remove: Remove,
    ) -> Self {
        tasks.close();
        Self {
            instance,
            cancel,
            tasks,
            remove: Some(remove),
        }
    }

    /// The registered instance.
    pub fn instance(&self) -> &Instance {
        &self.instance
    }

    /// Stops the heartbeat, waits until no heartbeat is in flight (so none re-creates the
    /// record), then removes the record.
    pub async fn deregister(mut self) -> Result<(), DiscoveryError> {
        self.stop().await;
        match self.remove.take() {
            Some(remove) => remove().await,
            None => Ok(()),
        }
    }

    /// Stops the heartbeat and leaves the record to expire, as a killed process would.
    pub async fn abandon(mut self) {
        self.remove = None;
        self.stop().await;
    }

    async fn stop(&self) {
        self.cancel.cancel();
        self.tasks.wait().await;
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("instance", &self.instance)
            .field("heartbeating", &!self.cancel.is_cancelled())
            .finish_non_exhaustive()
    }
}
