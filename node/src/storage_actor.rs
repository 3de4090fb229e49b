//! Blocking state on a named thread behind a cloneable async handle.
//!
//! The store (redb) blocks on disk IO and must be owned by exactly one place.
//! Running it on its own OS thread keeps those waits off the tokio workers and
//! serialises every access without a lock. Callers send a job — a closure over
//! `&mut S` — through a bounded channel and await its answer on a oneshot.
//!
//! - Bounded channel: a burst of requests waits for room (backpressure) instead
//!   of growing memory.
//! - One oneshot per request: an answer always goes to the caller that asked.
//! - Explicit [`ActorHandle::shutdown`]: runs no further jobs, drops the state
//!   on its own thread (closing the store) and waits for that to finish.
//! - Generic over `S`, so the store plugs in later and tests use a dummy.
//!
//! A job that panics ends the actor: the state may be half-changed, so it is
//! not used again; every later call gets [`ActorError::Stopped`].

use tokio::sync::{mpsc, oneshot};

/// State that finishes a run of jobs together: after the jobs waiting in the
/// channel have run (up to [`RUN`]), and before any other kind of work,
/// `settle` is called once (group commit: one disk flush, then the answers).
pub trait Settle {
    /// Called after each run of jobs.
    fn settle(&mut self) {}
}

/// Most jobs in one run before [`Settle::settle`].
pub const RUN: usize = 256;

/// A unit of work run on the actor thread with exclusive access to the state.
type Job<S> = Box<dyn FnOnce(&mut S) + Send + 'static>;

enum Message<S> {
    Job(Job<S>),
    Shutdown(oneshot::Sender<()>),
}

/// Why a request got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ActorError {
    /// The actor was shut down or its thread ended (for instance after a job
    /// panicked). Restart the node; the store re-opens from its last commit.
    #[error("the storage thread has stopped")]
    Stopped,
}

/// Why the actor could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpawnError<E> {
    /// The OS refused a new thread (resource limits).
    #[error("cannot start the {name} thread: {source}")]
    Thread {
        /// Thread name.
        name: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Building the state (opening the store) failed; nothing is running.
    #[error(transparent)]
    Init(E),
}

/// A cloneable async handle to state owned by a named thread.
pub struct ActorHandle<S> {
    tx: mpsc::Sender<Message<S>>,
}

impl<S> Clone for ActorHandle<S> {
    fn clone(&self) -> Self {
        ActorHandle {
            tx: self.tx.clone(),
        }
    }
}

impl<S> std::fmt::Debug for ActorHandle<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActorHandle")
            .field("closed", &self.tx.is_closed())
            .finish()
    }
}

impl<S: Settle + 'static> ActorHandle<S> {
    /// Starts a thread called `name` that builds its state with `init` (so a
    /// store that must not move between threads is created where it lives) and
    /// then serves jobs from a channel of `capacity`.
    ///
    /// Blocks until `init` has finished, so an open error is returned here
    /// rather than on the first request.
    ///
    /// # Errors
    /// [`SpawnError::Thread`] or [`SpawnError::Init`] with `init`'s error.
    ///
    /// # Panics
    /// If `capacity` is 0.
    pub fn spawn<E, F>(name: &str, capacity: usize, init: F) -> Result<Self, SpawnError<E>>
    where
        E: Send + 'static,
        F: FnOnce() -> Result<S, E> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(capacity);
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || match init() {
                Ok(state) => {
                    let _ = ready_tx.send(Ok(()));
                    serve(state, rx);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(|source| SpawnError::Thread {
                name: name.to_owned(),
                source,
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(ActorHandle { tx }),
            Ok(Err(e)) => Err(SpawnError::Init(e)),
            Err(_) => Err(SpawnError::Thread {
                name: name.to_owned(),
                source: std::io::Error::other("the thread ended while starting"),
            }),
        }
    }

    /// Runs `job` on the actor thread and returns its result. Waits for room in
    /// the channel when the actor is busy.
    ///
    /// # Errors
    /// [`ActorError::Stopped`] if the actor has shut down or the job panicked.
    pub async fn call<R, F>(&self, job: F) -> Result<R, ActorError>
    where
        R: Send + 'static,
        F: FnOnce(&mut S) -> R + Send + 'static,
    {
        let (reply_tx, reply_rx) = oneshot::channel();
        self.send(move |state| {
            let _ = reply_tx.send(job(state));
        })
        .await?;
        reply_rx.await.map_err(|_| ActorError::Stopped)
    }

    /// Queues `job` without waiting for it to run: for a job that answers
    /// by itself (a group-commit write holds its own reply channel), so the
    /// caller wakes once, for the answer, not also when the job has run.
    /// A job still queued when the actor stops is dropped unrun.
    ///
    /// # Errors
    /// [`ActorError::Stopped`] if the actor has stopped.
    pub async fn send<F>(&self, job: F) -> Result<(), ActorError>
    where
        F: FnOnce(&mut S) + Send + 'static,
    {
        self.tx
            .send(Message::Job(Box::new(job)))
            .await
            .map_err(|_| ActorError::Stopped)
    }

    /// Stops the actor: jobs queued before this call still run, later ones get
    /// [`ActorError::Stopped`]; the state is dropped on its thread and this
    /// returns once that is done.
    ///
    /// # Errors
    /// [`ActorError::Stopped`] if it had already stopped.
    pub async fn shutdown(&self) -> Result<(), ActorError> {
        let (done_tx, done_rx) = oneshot::channel();
        self.tx
            .send(Message::Shutdown(done_tx))
            .await
            .map_err(|_| ActorError::Stopped)?;
        done_rx.await.map_err(|_| ActorError::Stopped)
    }
}

/// The thread body: run jobs in order until shutdown or until every handle is gone.
fn serve<S: Settle>(mut state: S, mut rx: mpsc::Receiver<Message<S>>) {
    while let Some(mut msg) = rx.blocking_recv() {
        let mut ran = 0;
        loop {
            match msg {
                Message::Job(job) => job(&mut state),
                Message::Shutdown(done) => {
                    state.settle();
                    rx.close();
                    drop(state);
                    let _ = done.send(());
                    return;
                }
            }
            ran += 1;
            match rx.try_recv() {
                Ok(next) if ran < RUN => msg = next,
                Ok(next) => {
                    state.settle();
                    msg = next;
                    ran = 0;
                }
                Err(_) => break,
            }
        }
        state.settle();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A dummy store: records what it saw and when it was dropped.
    struct Dummy {
        log: Vec<u32>,
        dropped: Arc<AtomicBool>,
    }

    impl Settle for Dummy {}

    impl Drop for Dummy {
        fn drop(&mut self) {
            self.dropped.store(true, Ordering::SeqCst);
        }
    }

    fn dummy(dropped: &Arc<AtomicBool>) -> ActorHandle<Dummy> {
        let dropped = dropped.clone();
        ActorHandle::spawn("test-store", 2, move || {
            Ok::<_, ()>(Dummy {
                log: Vec::new(),
                dropped,
            })
        })
        .unwrap()
    }

    #[tokio::test]
    async fn jobs_run_in_order_on_the_named_thread() {
        let dropped = Arc::new(AtomicBool::new(false));
        let h = dummy(&dropped);
        for i in 0..10 {
            h.call(move |s| s.log.push(i)).await.unwrap();
        }
        let (log, name) = h
            .call(|s| {
                (
                    s.log.clone(),
                    std::thread::current().name().map(str::to_owned),
                )
            })
            .await
            .unwrap();
        assert_eq!(log, (0..10).collect::<Vec<_>>());
        assert_eq!(name.as_deref(), Some("test-store"));
    }

    #[tokio::test]
    async fn shutdown_drops_the_state_and_refuses_later_calls() {
        let dropped = Arc::new(AtomicBool::new(false));
        let h = dummy(&dropped);
        let other = h.clone();
        h.shutdown().await.unwrap();
        assert!(
            dropped.load(Ordering::SeqCst),
            "state dropped before shutdown returns"
        );
        assert_eq!(other.call(|s| s.log.len()).await, Err(ActorError::Stopped));
        assert_eq!(h.shutdown().await, Err(ActorError::Stopped));
    }

    #[tokio::test]
    async fn a_sent_job_answers_by_itself_in_order_and_none_runs_after_shutdown() {
        let dropped = Arc::new(AtomicBool::new(false));
        let h = dummy(&dropped);
        h.call(|s| s.log.push(0)).await.unwrap();
        let (tx, rx) = oneshot::channel();
        h.send(move |s| {
            s.log.push(1);
            let _ = tx.send(s.log.clone());
        })
        .await
        .unwrap();
        assert_eq!(
            rx.await.unwrap(),
            vec![0, 1],
            "ran once, after the earlier job"
        );
        h.shutdown().await.unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        assert_eq!(h.send(move |_| drop(tx)).await, Err(ActorError::Stopped));
        assert!(rx.await.is_err(), "its reply channel is dropped unrun");
    }

    #[tokio::test]
    async fn a_panicking_job_stops_the_actor() {
        let dropped = Arc::new(AtomicBool::new(false));
        let h = dummy(&dropped);
        let r: Result<(), _> = h.call(|_| panic!("job failed")).await;
        assert_eq!(r, Err(ActorError::Stopped));
        assert_eq!(h.call(|s| s.log.len()).await, Err(ActorError::Stopped));
    }

    #[test]
    fn init_errors_are_returned_from_spawn() {
        let r = ActorHandle::<Dummy>::spawn("test-store", 1, || Err::<Dummy, _>("no file"));
        assert!(matches!(r, Err(SpawnError::Init("no file"))));
    }
}
