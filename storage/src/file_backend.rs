//! The store file's backend: redb's own file backend, with the sync that
//! follows each growth of the file held back until a header write needs it.
//!
//! redb grows its file in steps (doubling while it is small) and syncs the
//! file right after each growth, so that the larger size is on disk before a
//! header naming the new layout can be: a header on disk that names a
//! layout longer than the file makes the store refuse to open. That sync
//! also writes every page dirtied since the last one. Deferred commits made
//! durable by the commit journal need their store pages on disk only at
//! the next checkpoint, so for them the sync was pure waiting: in a 1M-write
//! sync to an empty peer, five growths held the storage thread for 0.3–0.4
//! s of about 1.7 s.
//!
//! What redb asks for is an order: the growth durable before the header
//! reaches the file. redb writes its header (the first 320 bytes of the
//! file) only in durable commits and recovery, never in the deferred
//! commits that grow the file during a sync. Here a growth's own sync is
//! skipped and owed instead, and the owed sync runs before any write that
//! touches the file's first page, the header's. Any other sync pays it too.
//! So the header never reaches the file before the growth is durable, as
//! redb requires; the pages are written by the next checkpoint's syncs,
//! which wrote them anyway, or earlier by the OS.

use std::fs::File;
use std::io;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

/// Writes that start below this offset may touch redb's header (320 bytes
/// at the start of the file); a page is covered to keep a margin.
const HEADER_PAGE: u64 = 4096;

/// redb's [`FileBackend`] (or another backend, in tests) with the growth
/// syncs held back; see the module doc.
#[derive(Debug)]
pub(crate) struct GrowthDeferred<B = FileBackend> {
    inner: B,
    owed: Mutex<Owed>,
}

#[derive(Debug, Default)]
struct Owed {
    /// The last call was a growth: a sync that comes next is its own.
    just_grew: bool,
    /// A growth is not yet durable.
    growth: bool,
}

impl GrowthDeferred {
    /// The backend over an open store file.
    pub(crate) fn new(file: File) -> Result<GrowthDeferred, redb::DatabaseError> {
        Ok(GrowthDeferred::over(FileBackend::new(file)?))
    }
}

impl<B: StorageBackend> GrowthDeferred<B> {
    /// Holds back the growth syncs of `inner`.
    pub(crate) fn over(inner: B) -> GrowthDeferred<B> {
        GrowthDeferred {
            inner,
            owed: Mutex::new(Owed::default()),
        }
    }

    fn owed(&self) -> MutexGuard<'_, Owed> {
        self.owed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a growth's sync is owed (tests).
    #[cfg(test)]
    fn owes(&self) -> bool {
        self.owed().growth
    }
}

impl<B: StorageBackend> StorageBackend for GrowthDeferred<B> {
    fn len(&self) -> Result<u64, io::Error> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let mut owed = self.owed();
        let grows = len > self.inner.len()?;
        self.inner.set_len(len)?;
        owed.just_grew = grows;
        owed.growth |= grows;
        Ok(())
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        let mut owed = self.owed();
        if std::mem::take(&mut owed.just_grew) {
            // The growth's own sync: owed until the header is written.
            return Ok(());
        }
        self.inner.sync_data()?;
        owed.growth = false;
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        {
            let mut owed = self.owed();
            owed.just_grew = false;
            if owed.growth && offset < HEADER_PAGE {
                self.inner.sync_data()?;
                owed.growth = false;
            }
        }
        self.inner.write(offset, data)
    }

    fn close(&self) -> Result<(), io::Error> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn backend() -> (tempfile::TempDir, GrowthDeferred) {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.path().join("f"))
            .unwrap();
        (dir, GrowthDeferred::new(file).unwrap())
    }

    #[test]
    fn a_growth_sync_is_owed_until_the_header_page_is_written() {
        let (_d, b) = backend();
        b.set_len(8192).unwrap();
        // The growth's own sync is skipped: the growth is owed.
        b.sync_data().unwrap();
        assert!(b.owes());
        // Pages past the header do not pay it.
        b.write(4096, &[1; 16]).unwrap();
        assert!(b.owes());
        // A write into the header's page pays it first.
        b.write(64, &[2; 16]).unwrap();
        assert!(!b.owes());
        let mut got = [0u8; 16];
        b.read(64, &mut got).unwrap();
        assert_eq!(got, [2; 16]);
    }

    #[test]
    fn only_the_sync_right_after_a_growth_is_held_back() {
        let (_d, b) = backend();
        b.set_len(8192).unwrap();
        b.write(5000, &[1; 8]).unwrap();
        // Not right after the growth: a real sync, which pays the growth.
        b.sync_data().unwrap();
        assert!(!b.owes());
        // A shrink is not a growth: its next sync is real.
        b.set_len(4096).unwrap();
        b.sync_data().unwrap();
        assert!(!b.owes());
        assert_eq!(b.len().unwrap(), 4096);
    }

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Call {
        Grow,
        Sync,
        Write(u64),
    }

    /// redb's in-memory backend, logging what reaches it.
    #[derive(Debug)]
    struct Logged(redb::backends::InMemoryBackend, Arc<Mutex<Vec<Call>>>);

    impl StorageBackend for Logged {
        fn len(&self) -> Result<u64, io::Error> {
            self.0.len()
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
            self.0.read(offset, out)
        }
        fn set_len(&self, len: u64) -> Result<(), io::Error> {
            if len > self.0.len()? {
                self.1.lock().unwrap().push(Call::Grow);
            }
            self.0.set_len(len)
        }
        fn sync_data(&self) -> Result<(), io::Error> {
            self.1.lock().unwrap().push(Call::Sync);
            self.0.sync_data()
        }
        fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
            self.1.lock().unwrap().push(Call::Write(offset));
            self.0.write(offset, data)
        }
    }

    #[test]
    fn under_a_real_store_no_header_write_reaches_the_file_before_its_growth_is_synced() {
        use troupe_protocol::testing::{chain, test_workspace};
        use troupe_protocol::workspace::{WorkspaceInfo, WorkspaceKind};
        let log = Arc::new(Mutex::new(Vec::new()));
        let backend = Logged(redb::backends::InMemoryBackend::new(), log.clone());
        let s = crate::Store::open_with_backend(GrowthDeferred::over(backend)).unwrap();
        let ws = test_workspace().workspace_id();
        s.add_workspace(&WorkspaceInfo::new(
            test_workspace(),
            "Tour",
            WorkspaceKind::Show,
        ))
        .unwrap();
        let (_, b) = chain(1, 3000);
        // Deferred commits grow the file; durable ones write the header.
        for (i, part) in b.chunks(250).enumerate() {
            if i % 4 == 3 {
                s.commit_batch(&ws, part.to_vec(), "peer").unwrap();
            } else {
                s.commit_batch_deferred(&ws, part.to_vec(), "peer").unwrap();
            }
        }
        s.flush().unwrap();
        drop(s);
        let log = log.lock().unwrap().clone();
        let mut unsynced_growth = false;
        let mut held_back = 0;
        for (i, call) in log.iter().enumerate() {
            match call {
                Call::Grow => {
                    unsynced_growth = true;
                    if log.get(i + 1) != Some(&Call::Sync) {
                        held_back += 1;
                    }
                }
                Call::Sync => unsynced_growth = false,
                Call::Write(at) if *at < 320 => {
                    assert!(
                        !unsynced_growth,
                        "header written before its growth was synced"
                    )
                }
                Call::Write(_) => {}
            }
        }
        assert!(held_back > 0, "some growth's own sync was held back");
    }
}
