//! Graceful shutdown: one signal fans out to every task, and the parent waits
//! until they have all finished.
//!
//! A [`Shutdown`] owns a cancellation token and a task tracker. Every long-lived
//! task is spawned through [`Shutdown::spawn`] (or a stage's own tracker), watches
//! [`Shutdown::token`] and returns when it fires. Teardown is ordered by stage:
//! the daemon stops accepting work first (local API, discovery), then the
//! network, then storage, so nothing writes to a store that is already closed.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// One cancellation signal plus the tasks that must finish before the process exits.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Shutdown {
    /// A fresh signal with no tasks.
    pub fn new() -> Self {
        Self::default()
    }

    /// The token tasks watch; cancelled exactly once, when shutdown starts.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// A child signal for one stage: cancelled with the parent, or on its own
    /// to stop that stage before the others (ordered teardown).
    pub fn stage(&self) -> Shutdown {
        Shutdown {
            token: self.token.child_token(),
            tracker: TaskTracker::new(),
        }
    }

    /// Spawns a tracked task on the current tokio runtime.
    ///
    /// # Panics
    /// Outside a tokio runtime, like `tokio::spawn`.
    pub fn spawn<F>(&self, fut: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(fut)
    }

    /// Starts shutdown: every task watching the token sees it.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// Whether shutdown has started.
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves when shutdown starts.
    pub async fn triggered(&self) {
        self.token.cancelled().await;
    }

    /// Triggers shutdown and waits for every tracked task of this stage to
    /// finish, up to `grace`. Returns false if some task was still running at
    /// the deadline (the caller logs it; the process then exits anyway).
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.trigger();
        self.tracker.close();
        tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
    }
}

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM, returning its name for the log.
///
/// # Errors
/// If the signal handlers cannot be installed.
pub async fn os_signal() -> std::io::Result<&'static str> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => Ok("SIGTERM"),
            _ = int.recv() => Ok("SIGINT"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await?;
        Ok("Ctrl-C")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn every_task_sees_the_signal_and_is_awaited() {
        let sd = Shutdown::new();
        let done = Arc::new(AtomicUsize::new(0));
        for _ in 0..3 {
            let token = sd.token();
            let done = done.clone();
            sd.spawn(async move {
                token.cancelled().await;
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
        assert!(sd.shutdown(Duration::from_secs(5)).await);
        assert_eq!(done.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_stage_stops_alone_and_with_its_parent() {
        let parent = Shutdown::new();
        let first = parent.stage();
        let second = parent.stage();
        assert!(first.shutdown(Duration::from_secs(5)).await);
        assert!(first.is_triggered());
        assert!(
            !second.is_triggered(),
            "stopping one stage leaves the others running"
        );
        parent.trigger();
        assert!(second.is_triggered());
    }

    #[tokio::test]
    async fn a_task_ignoring_the_signal_is_reported() {
        let sd = Shutdown::new();
        sd.spawn(std::future::pending::<()>());
        assert!(!sd.shutdown(Duration::from_millis(50)).await);
    }
}
