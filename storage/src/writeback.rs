//! Early writeback: the disk starts on a store file's new pages while the
//! store goes on working, so the durable flush that follows waits for less.
//!
//! A receiver writes asset bytes in commits that are not durable on their
//! own and not journaled; one flush later, a checkpoint, makes them
//! durable. Left alone, the OS holds those pages in memory until that
//! flush, and the store's one thread then waits for the disk to write all
//! of them. Here a helper thread asks the OS to write the file out
//! (`fdatasync` on its own handle) once enough new bytes are waiting,
//! while the store thread goes on with the next chunks.
//!
//! Journaled commits (sync batches, local group commits) do not wake it.
//! Their flush is the journal's small sync, and the store pages they dirty
//! are needed on disk only at the next checkpoint (every 32 MiB of
//! journal). Woken for them too, the helper's syncs of the store file
//! made the journal syncs of a 1M-write sync wait behind them: 17 flushes
//! of 25–50 ms, 0.62 s of flushing in all, against 0.30–0.35 s without
//! (`BENCH_LOG=troupe_node::sync_core=trace`, the `sync call` lines).
//!
//! It changes nothing about what is durable when: redb's commits are safe
//! whatever the OS writes early (the OS may write any dirty page at any
//! time anyway), and a flush still ends with redb's own sync.
//!
//! The helper's handle is a second, read-only open of the file. redb's
//! locks on Linux are open-file-description locks (`F_OFD_SETLK`), which
//! belong to redb's own handle, so opening or closing this one never
//! touches them (classic `fcntl` locks would be released by any close).

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread::JoinHandle;

/// New bytes written to the file after which the helper is woken. Large
/// enough that the helper's syncs stay few (one per several megabytes),
/// small enough that the disk starts well before the store's flush.
pub(crate) const KICK_BYTES: u64 = 4 << 20;

/// The helper thread and the count of bytes written since it was woken.
#[derive(Debug)]
pub(crate) struct Writeback {
    tx: Option<SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
    pending: AtomicU64,
}

impl Writeback {
    /// Starts the helper on its own handle of the file at `path`. `None`
    /// when the file cannot be opened again or no thread can start: the
    /// store then works as before, its flushes doing all the writing.
    pub(crate) fn start(path: &Path) -> Option<Writeback> {
        let file = File::open(path).ok()?;
        let (tx, rx) = sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("troupe-writeback".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    // A failed early write changes nothing: the store's own
                    // flush writes the pages and reports its errors.
                    let _ = file.sync_data();
                }
            })
            .ok()?;
        Some(Writeback {
            tx: Some(tx),
            thread: Some(thread),
            pending: AtomicU64::new(0),
        })
    }

    /// Counts `bytes` just committed (not yet durable) and wakes the helper
    /// once [`KICK_BYTES`] have gathered. Never blocks: when the helper is
    /// still busy, its next pass writes these bytes too.
    pub(crate) fn wrote(&self, bytes: u64) {
        let total = self.pending.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if total < KICK_BYTES {
            return;
        }
        self.pending.store(0, Ordering::Relaxed);
        if let Some(tx) = &self.tx {
            // Full: a pass is already due and will write these bytes too.
            let _ = tx.try_send(());
        }
    }

    /// A durable flush has just written everything: start counting again.
    pub(crate) fn flushed(&self) {
        self.pending.store(0, Ordering::Relaxed);
    }
}

impl Drop for Writeback {
    fn drop(&mut self) {
        // Closing the channel ends the helper after its current pass.
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn the_helper_is_woken_only_past_the_threshold_and_stops_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut f = File::create(&path).unwrap();
        f.write_all(b"x").unwrap();
        let wb = Writeback::start(&path).unwrap();
        wb.wrote(KICK_BYTES - 1);
        assert_eq!(wb.pending.load(Ordering::Relaxed), KICK_BYTES - 1);
        wb.wrote(1);
        assert_eq!(wb.pending.load(Ordering::Relaxed), 0, "woken and reset");
        wb.wrote(10);
        wb.flushed();
        assert_eq!(wb.pending.load(Ordering::Relaxed), 0);
        drop(wb); // joins the helper: a hang here fails the test run
    }

    #[test]
    fn a_missing_file_means_no_helper() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Writeback::start(&dir.path().join("absent")).is_none());
    }
}
