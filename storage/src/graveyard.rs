//! Freeing received bundles off the store's thread.
//!
//! A received bundle is decoded on a network thread: its ops, paths, values
//! and predecessor lists are a few dozen small allocations. Freed on the
//! store's thread once committed, each is a free of memory another thread
//! allocated, the allocator's slow path: in a 1M-write sync that was 8.6 %
//! of the store thread's samples (perf, the receiver's `troupe-store`), and
//! that thread is what every commit waits on. A helper thread frees them
//! instead; the store thread only hands the batch over.
//!
//! The hand-over never blocks and never holds much: at most [`DEPTH`]
//! batches wait, and when the helper is that far behind (or could not
//! start) the batch is freed where it is, as before.

use std::sync::OnceLock;
use std::sync::mpsc::{SyncSender, sync_channel};

/// Anything the helper can drop.
type Grave = Box<dyn Send>;

/// Batches that may wait for the helper: a bound on the memory held for
/// freeing (a batch is at most a few megabytes of decoded bundles).
pub(crate) const DEPTH: usize = 4;

/// The helper's queue, started on first use; `None` when no thread could
/// start (everything is then freed in place).
static HELPER: OnceLock<Option<SyncSender<Grave>>> = OnceLock::new();

/// Frees `v` on the helper thread, or here when the helper is busy.
pub(crate) fn bury<T: Send + 'static>(v: T) {
    let helper = HELPER.get_or_init(|| {
        let (tx, rx) = sync_channel::<Grave>(DEPTH);
        std::thread::Builder::new()
            .name("troupe-free".into())
            .spawn(move || {
                for grave in rx {
                    drop(grave);
                }
            })
            .ok()?;
        Some(tx)
    });
    if let Some(tx) = helper {
        // Full or gone: the error hands the value back and it drops here.
        let _ = tx.try_send(Box::new(v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::{Sender, channel};
    use std::time::Duration;

    /// Reports the thread it was dropped on.
    struct Marker(Sender<Option<String>>);

    impl Drop for Marker {
        fn drop(&mut self) {
            let _ = self
                .0
                .send(std::thread::current().name().map(str::to_string));
        }
    }

    #[test]
    fn a_buried_value_is_dropped_on_the_helper_and_none_is_leaked() {
        let (tx, rx) = channel();
        let n = 50;
        for _ in 0..n {
            bury(vec![Marker(tx.clone())]);
        }
        let mut on_helper = 0;
        for _ in 0..n {
            let name = rx
                .recv_timeout(Duration::from_secs(10))
                .expect("every buried value is dropped");
            on_helper += usize::from(name.as_deref() == Some("troupe-free"));
        }
        // Some may have been dropped in place when the queue was full, but
        // the helper takes the first one at least.
        assert!(on_helper >= 1, "no value reached the helper");
    }
}
