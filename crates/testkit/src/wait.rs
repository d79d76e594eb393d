//! Waiting for a condition under a deadline: the one way tests wait, never a bare sleep.
//!
//! A condition answers `bool` or `Option<T>` ([`Satisfied`]); it is checked at once, then
//! every [`POLL_INTERVAL`], and the test fails naming what it waited for once the deadline
//! passes. Where something signals its changes (a `watch` channel), await that signal
//! under [`within`] instead of polling.

use std::{fmt::Display, future::Future, time::Duration};

use tokio::time::Instant;

/// How long any awaited condition may take on a busy two-core machine: generous, since
/// tests assert outcomes, never timings.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// How often a condition is checked again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// What a condition answers: `bool` (it holds or not), or `Option<T>` (the value it was
/// waiting for, once there is one).
pub trait Satisfied {
    /// What the wait returns once the condition holds.
    type Output;
    /// `Some` once the condition holds.
    fn satisfied(self) -> Option<Self::Output>;
}

impl Satisfied for bool {
    type Output = ();
    fn satisfied(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Satisfied for Option<T> {
    type Output = T;
    fn satisfied(self) -> Option<T> {
        self
    }
}

/// Waits until `condition` holds and returns what it answered.
///
/// # Panics
/// Naming `what`, when the condition still does not hold after `deadline`.
pub async fn eventually<C: Satisfied>(
    deadline: Duration,
    what: impl Display,
    mut condition: impl FnMut() -> C,
) -> C::Output {
    let until = Instant::now() + deadline;
    loop {
        if let Some(done) = condition().satisfied() {
            return done;
        }
        if Instant::now() >= until {
            timed_out(deadline, &what);
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Like [`eventually`] for a condition that has to await (a query, a request); a check
/// that itself outlasts the deadline fails the test too.
///
/// # Panics
/// Naming `what`, when the condition still does not hold after `deadline`.
pub async fn eventually_async<F, Fut>(
    deadline: Duration,
    what: impl Display,
    mut condition: F,
) -> <Fut::Output as Satisfied>::Output
where
    F: FnMut() -> Fut,
    Fut: Future,
    Fut::Output: Satisfied,
{
    let until = Instant::now() + deadline;
    loop {
        let answer = tokio::time::timeout_at(until, condition())
            .await
            .unwrap_or_else(|_| timed_out(deadline, &what));
        if let Some(done) = answer.satisfied() {
            return done;
        }
        if Instant::now() >= until {
            timed_out(deadline, &what);
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Awaits `future` for at most `deadline`: for waits driven by a signal rather than polled.
///
/// `what` is formatted only on failure, so it may describe the state at that moment.
///
/// # Panics
/// Naming `what`, when `future` has not finished after `deadline`.
pub async fn within<F: Future>(deadline: Duration, what: impl Display, future: F) -> F::Output {
    tokio::time::timeout(deadline, future)
        .await
        .unwrap_or_else(|_| timed_out(deadline, &what))
}

fn timed_out(deadline: Duration, what: &dyn Display) -> ! {
    panic!("timed out after {deadline:?} waiting for {what}")
}

#[cfg(test)]
mod tests {
    use std::{
        cell::Cell,
        sync::{
            Arc,
            atomic::{AtomicU32, Ordering},
        },
    };

    use super::*;

    #[tokio::test]
    async fn answers_once_the_condition_holds() {
        let calls = Cell::new(0);
        eventually(DEADLINE, "three calls", || {
            calls.set(calls.get() + 1);
            calls.get() >= 3
        })
        .await;
        assert_eq!(calls.get(), 3);
        let n = AtomicU32::new(0);
        let found = eventually_async(DEADLINE, "a value", || async {
            let n = n.fetch_add(1, Ordering::SeqCst);
            (n == 2).then_some(n * 10)
        })
        .await;
        assert_eq!(found, 20);
        assert_eq!(within(DEADLINE, "a ready future", async { 7 }).await, 7);
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "timed out after 1s waiting for the impossible")]
    async fn fails_naming_what_it_waited_for() {
        eventually(Duration::from_secs(1), "the impossible", || false).await;
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "waiting for a hung check")]
    async fn a_check_that_hangs_fails_at_the_deadline() {
        eventually_async(Duration::from_secs(1), "a hung check", || {
            std::future::pending::<bool>()
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "waiting for state 3")]
    async fn within_describes_the_state_when_it_fails() {
        struct State(Arc<AtomicU32>);
        impl Display for State {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "state {}", self.0.load(Ordering::SeqCst))
            }
        }
        let state = Arc::new(AtomicU32::new(0));
        let changer = state.clone();
        within(Duration::from_secs(1), State(state), async move {
            changer.store(3, Ordering::SeqCst);
            std::future::pending::<()>().await;
        })
        .await;
    }
}
