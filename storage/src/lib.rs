//! Troupe's store (redb): oplog, materialised state, blobs, quarantine.
//!
//! One redb file per node. Every write goes through [`commit`]: a bundle or a
//! batch of bundles, their state changes, op ranges, tips and quarantine rows
//! commit in one write transaction, so a crash leaves all of it or none of it.
//! Every bundle read is checked against the hash recorded for its slot
//! (redb does not check page checksums on normal reads); a copy that fails is
//! never returned: a read through [`Store`] moves it to quarantine at once
//! and answers [`ReadError::Corrupt`], a snapshot read ([`Store::view`])
//! answers the typed error and leaves the move to the caller.
//!
//! Materialised state is written by the protocol's register algorithm
//! ([`troupe_protocol::register::apply_bundle`]) running on redb tables, and
//! can be rebuilt from the oplog ([`Store::rebuild`]).
//!
//! # Who calls what
//! | caller | calls |
//! |---|---|
//! | node, local edits | [`Store::author_tip`] to sign, then [`Store::commit_local`] / [`Store::commit_local_many`] |
//! | sync driver | [`Store::view`] ([`troupe_protocol::sync::oplog_view::OplogView`]), [`Store::commit_batch`], [`Store::quarantine_bytes`], [`Store::quarantine_corrupt`], blob receive ([`Store::blob_begin`], [`Store::blob_write_chunk`]) |
//! | repair | [`Store::scrub`] → [`RepairNeeded`] slots with the expected hash; [`Store::scrub_report`] adds the blobs to fetch again |
//! | node start-up | [`Store::open_or_salvage`] (a damaged file is salvaged, never a dead end) → [`SalvageReport`] ranges to re-sync |
//! | sync status | [`Store::set_peer_progress`], [`Store::peer_progress`] |
//! | emergency backup | [`Store::export`], or [`export_damaged`] straight from a damaged file |
//! | UI / CLI | [`Store::value`], [`Store::field_heads`], [`Store::entity_fields`], [`Store::conflicts`], [`Store::history`], quarantine list/show/retry/skip/skipped |
//! | undo | [`Store::workspace_view`] with `troupe_protocol::undo::plan_undo` |
//! | maintenance, `verify` | [`Store::scrub_report`], [`Store::rebuild`], [`Store::verify_rebuild`], [`Store::gc_blobs`], [`Store::check_integrity`] |
//!
//! # Atomicity and durability
//! Tables and key layouts are listed in the `schema` module. Each commit
//! ([`Store::commit_local`], [`Store::commit_local_many`],
//! [`Store::commit_batch`]) is one redb write transaction holding the
//! bundles, slot hashes, ranges, tips, state rows and quarantine rows, so
//! a crash leaves all of it or none of it. Those commits are durable
//! (`Durability::Immediate`: redb's commit syncs before it returns). Group
//! commit and sync use the deferred forms ([`Store::commit_local_many_deferred`],
//! [`Store::commit_batch_deferred`], [`Store::commit_batches_deferred`],
//! [`Store::commit_received_deferred`]): many transactions, then one
//! [`Store::flush`] before any of them is acknowledged. For a store opened
//! from a path the flush is an append to the commit journal beside the file
//! (`store.redb.journal`: the bundles of each deferred commit, in order, or
//! a received batch's payload as it crossed the wire; each record hashed)
//! and one sync of it,
//! instead of a redb durable commit that writes and syncs every B-tree page
//! the commits touched; every 32 MiB of journal, and whenever received
//! asset bytes wait (they are not journaled), the flush is a redb durable
//! commit (a checkpoint), after which new records are written over the old
//! ones from the journal's start. [`Store::open`] applies
//! the records a crash left above the store's last durable commit, each
//! exactly as first applied, so a flushed commit is never lost (the
//! `journal` module has the file format and the argument). Rows that are
//! hints, not data, use non-durable commits without the journal: per-peer
//! progress, and salvage's intermediate steps (made durable by its last
//! commit before the new file is put in place). A fork (two bundles for one author and seq) quarantines every copy
//! and rebuilds the workspace's state without the withdrawn one in the same
//! transaction.
//!
//! # Integrity
//! Bundles are checked against the per-slot hash written when they were
//! verified. Every other row that is data or an index (entity state,
//! superseded markers, asset rows, ranges, tips, per-slot hashes, the hash
//! index and its log, fork records) carries a checksum over key and value,
//! checked on every read: a damaged row is a typed error ([`DamagedRow`]),
//! never a wrong value. [`Store::open`] runs redb's whole-file page check,
//! so a file damaged at rest fails to open (salvage) instead of panicking
//! redb. [`Store::open_or_salvage`] then copies what re-verifies into a new
//! file (`salvage`), keeping the damaged one aside. [`Store::scrub`]
//! re-verifies every bundle (hash, slot, chain link, one signature per run)
//! and every blob, and moves what fails to quarantine (see the `scrub`
//! module).
//!
//! # Performance
//! A commit does a fixed amount of redb work per bundle and per entity, not
//! per op: materialised state is one sealed row per entity (all its fields'
//! heads and its deletions), cached for the whole transaction and written
//! back once, in key order; a bundle of `Set` ops runs the register rule
//! straight on those rows; `superseded` rows are keyed by the op they name,
//! so one probe per bundle answers "is any op of this bundle superseded";
//! ranges and tips are read and written once per author per commit; slots
//! above an author's tip skip the slot lookups; there is no hash → slot
//! index to keep (readers find bundles by slot).
//! On the write path an entity row stays bytes (`entity::RawRow`: the stored
//! row copied once, values moved as length-prefixed bytes, not decoded), is
//! looked up once per run of ops on it, and carries a cheap 64-bit checksum
//! (schema 3). What is left is mostly redb's own (the bundle, slot and entity
//! inserts, about one dirty 4 KiB page per entity touched at each commit)
//! and freeing the decoded bundles. Current figures:
//! the README's storage benchmark paragraph.
//!
//! `cargo bench -p troupe-storage --bench apply` (release, 2 cores shared
//! with other builds; schema 1 and schema 2 binaries run alternately, so
//! both columns saw the same load; wall times vary about twofold with it):
//!
//! | figure | schema 1 | schema 2 | target |
//! |---|---|---|---|
//! | apply 100,000 bundles (1M ops), batches of 256, durable | 6.4–11.8 s | 3.0–5.6 s | ≤ 0.5 s |
//! | group commit, 1,000 local bundles per txn | 23–42k/s | 50–65k/s | ≥ 50k/s |
//! | single durable commit (sync-bound) | 1.6–2.5k/s | 1.7–2.3k/s | |
//! | scrub, 100,000 bundles | 0.49–0.76 s | 0.19–0.31 s | ≤ 0.5 s |
//! | peak RSS while applying | 31 MiB | 36 MiB | ≤ 64 MiB |
//! | blob put / get, 64 MiB | 1.0–1.5 / 0.7–1.0 GB/s | same | ≥ 400 MB/s |
//!
//! The apply target is not met. The bench's own decode and hash of the
//! stream take 0.3–0.45 s of it. Of the store's on-CPU time (about 2.6 s
//! when the machine is quiet): the register on cached entity rows 28 %,
//! writing entity rows back (B-tree inserts, encode, seal) 21 %, redb's
//! commit (copying, checksumming and writing about 300 dirty pages per
//! commit, 250 of them entity rows) 25 %, bundle and slot inserts 12 %, the
//! hash index log and its merges 8 % (that index is gone since),
//! verification 3 %. Off-CPU, each of
//! the 391 durable commits waits for its sync (0.5–4 ms each here).

pub mod blob;
mod blob_hash;
mod blob_rows;
pub mod commit;
mod entity;
pub mod error;
pub mod export;
mod file_backend;
mod fork;
mod held;
mod journal;
pub mod progress;
pub mod quarantine;
pub mod read;
pub mod rebuild;
pub mod remove;
pub mod salvage;
mod schema;
pub mod scrub;
mod sorted_insert;
mod state;
#[cfg(feature = "testing")]
pub mod testing;
mod tip_repair;
mod writeback;

use std::path::Path;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, StorageBackend};
use troupe_protocol::WorkspaceId;
use troupe_protocol::workspace::WorkspaceInfo;

pub use blob::{BlobMeta, GcReport, ReceivedChunk, blob_receive_runs};
pub use commit::{BatchOutcome, Received};
pub use error::{
    BlobError, CommitError, CorruptBundle, DamagedRow, ExportError, OpenError, QuarantineError,
    ReadError, RebuildError, SalvageError, StorageFailure,
};
pub use export::{ExportReport, export_damaged};
pub use progress::PeerProgress;
pub use quarantine::{QuarantineEntry, RepairNeeded, SkippedEntry};
pub use read::{DraftReads, HistoryEntry, StoreView, WorkspaceView};
pub use rebuild::{RebuildDiff, RebuildReport};
pub use remove::RemoveReport;
pub use salvage::{LostRange, SalvageReport, salvage_copy};
pub use scrub::{ScrubFindings, ScrubPass, ScrubReport};

use schema::*;

/// redb page cache size: bounds the store's memory (a node on a small
/// laptop or a Raspberry Pi backstage). Measured on the 1M-write sync to an
/// empty peer (`bench --only sync`, two runs each): 24 MiB gave a peak RSS
/// of 39–62 / 45–67 MiB (sender / receiver) and 7.3–7.6 s; 12 MiB 26 / 33
/// MiB and 6.8–7.2 s; 6 MiB 19 / 27 MiB and 6.6–6.9 s. The B-tree's
/// interior pages fit; leaves are read once per sync anyway, so a larger
/// cache only held memory (and grew the allocator's heaps).
pub(crate) const CACHE_BYTES: usize = 6 << 20;

/// The store: one redb database holding every workspace of this node.
#[derive(Debug)]
pub struct Store {
    db: Database,
    /// Starts the disk on new pages before the flush (file stores only).
    writeback: Option<writeback::Writeback>,
    /// Makes deferred commits durable with one append (file stores only;
    /// see the `journal` module).
    journal: Option<std::sync::Mutex<journal::Journal>>,
}

impl Store {
    /// Opens (or creates) the store file at `path`. The open verifies the
    /// checksum of every page (redb's integrity check), so a file altered
    /// since it was written fails to open with a typed error instead of
    /// being trusted; the caller salvages it.
    ///
    /// # Errors
    /// [`OpenError::Storage`] when redb cannot open the file (damaged or
    /// locked); [`OpenError::Schema`] for another schema version.
    ///
    /// Deferred commits that a flush made durable through the journal since
    /// the last checkpoint are applied again here, before the store is
    /// returned (see the `journal` module).
    pub fn open(path: impl AsRef<Path>) -> Result<Store, OpenError> {
        let path = path.as_ref();
        // Opened as redb's own `create` opens it, behind a backend that
        // holds back the syncs after the file grows (`file_backend`).
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(redb::DatabaseError::from)?;
        let mut store = Self::init(
            Database::builder()
                .set_check_integrity_on_open(true)
                .set_cache_size(CACHE_BYTES)
                .create_with_backend(file_backend::GrowthDeferred::new(file)?)?,
        )?;
        let (id, applied) = store.journal_marks()?;
        let (j, pending) =
            journal::Journal::open(journal::path_for(path), id, applied).map_err(|e| {
                OpenError::Journal {
                    path: journal::path_for(path),
                    source: e,
                }
            })?;
        store.journal = Some(std::sync::Mutex::new(j));
        if !pending.is_empty() {
            let jpath = journal::path_for(path);
            let replayed = pending
                .into_iter()
                .try_for_each(|record| store.replay(record))
                .and_then(|()| store.checkpoint());
            if let Err(e) = replayed {
                // The journal holds writes the store file does not (a full
                // disk refuses the replay's writes too): it must outlive
                // this failed open, not be removed as a clean close would.
                store.journal = None;
                return Err(replay_failure(e, &jpath));
            }
        }
        store.writeback = writeback::Writeback::start(path);
        Ok(store)
    }

    /// The store's id and the number of the last journal record it holds.
    fn journal_marks(&self) -> Result<([u8; 16], u64), OpenError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let id = match meta.get(STORE_ID)? {
            Some(v) => v.value().try_into().ok(),
            None => None,
        }
        .ok_or(OpenError::Schema {
            found: 0,
            expected: SCHEMA_VERSION,
        })?;
        let applied = match meta.get(JOURNAL_SEQ)? {
            Some(v) => v.value().try_into().map(u64::from_be_bytes).unwrap_or(0),
            None => 0,
        };
        Ok((id, applied))
    }

    /// Sets the journal size past which a flush is a checkpoint (tests that
    /// cross it often; the default is 32 MiB).
    pub fn set_journal_limit(&self, bytes: u64) {
        if let Some(j) = &self.journal {
            lock(j).set_limit(bytes);
        }
    }

    /// Opens a store on any redb backend (tests inject crashes and damage).
    ///
    /// # Errors
    /// As [`Store::open`].
    pub fn open_with_backend(backend: impl StorageBackend) -> Result<Store, OpenError> {
        Self::init(
            Database::builder()
                .set_check_integrity_on_open(true)
                .set_cache_size(CACHE_BYTES)
                .create_with_backend(backend)?,
        )
    }

    /// Opens a store on any redb backend without the whole-file integrity
    /// check at open (fast open of a large file the caller trusts; also how
    /// tests reach the store's own per-read verification). Bundle reads are
    /// still verified against their hashes and state rows against their
    /// checksums.
    ///
    /// # Errors
    /// As [`Store::open`].
    pub fn open_unchecked_with_backend(backend: impl StorageBackend) -> Result<Store, OpenError> {
        Self::init(
            Database::builder()
                .set_cache_size(CACHE_BYTES)
                .create_with_backend(backend)?,
        )
    }

    /// An empty store in memory, holding a file store's place while that
    /// store is closed and opened again ([`Store::needs_reopen`]): the file
    /// must be closed before it is opened anew. Nothing may be read from or
    /// written to it.
    ///
    /// # Errors
    /// As [`Store::open`] (an in-memory store does not fail to open).
    pub fn stand_in() -> Result<Store, OpenError> {
        Self::open_unchecked_with_backend(redb::backends::InMemoryBackend::new())
    }

    pub(crate) fn init(db: Database) -> Result<Store, OpenError> {
        let txn = db.begin_write()?;
        {
            for t in ALL_TABLES {
                txn.open_table(t)?;
            }
            tip_repair::drop_legacy_index(&txn)?;
            let mut meta = txn.open_table(META)?;
            let found = match meta.get(b"schema".as_slice())? {
                Some(v) => Some(v.value().try_into().map(u32::from_be_bytes).map_err(|_| {
                    OpenError::Schema {
                        found: 0,
                        expected: SCHEMA_VERSION,
                    }
                })?),
                None => None,
            };
            match found {
                Some(SCHEMA_VERSION) => {}
                Some(v) if !SCHEMA_UPGRADES_FROM.contains(&v) => {
                    return Err(OpenError::Schema {
                        found: v,
                        expected: SCHEMA_VERSION,
                    });
                }
                _ => {
                    meta.insert(
                        b"schema".as_slice(),
                        SCHEMA_VERSION.to_be_bytes().as_slice(),
                    )?;
                }
            }
            if meta.get(STORE_ID)?.is_none() {
                meta.insert(STORE_ID, new_store_id().as_slice())?;
            }
        }
        txn.commit()?;
        Ok(Store {
            db,
            writeback: None,
            journal: None,
        })
    }

    /// Why the store has to be closed and opened again before it can be
    /// used, or `None` while it works. After a write fails (a full disk, a
    /// failing disk), redb refuses every later transaction, reads too, until
    /// the file is opened again; opening it repairs what the failure left
    /// unsure and applies the journal's records, so the store comes back as
    /// of its last flush. A node asks this after a storage error, to tell
    /// such a failure from one that leaves the store usable.
    pub fn needs_reopen(&self) -> Option<StorageFailure> {
        match self.db.try_begin_write() {
            Ok(txn) => match txn.abort() {
                Ok(()) => None,
                Err(e) => Some(StorageFailure(e.into())),
            },
            // Another writer is busy: the store works.
            Err(redb::TransactionError::WouldBlock) => None,
            Err(e) => Some(StorageFailure(e.into())),
        }
    }

    /// Creates the commit journal's file now rather than at the first flush
    /// (see the `journal` module). A node calls this once it has opened
    /// the store, so its first commit after start does not pay for creating
    /// a file; a command that only reads the store never calls it and
    /// leaves no file. Nothing for a store without a journal.
    ///
    /// # Errors
    /// [`CommitError::Storage`] when the file cannot be created or synced;
    /// the store works on, and the first flush tries again.
    pub fn prepare_journal(&self) -> Result<(), CommitError> {
        match &self.journal {
            Some(j) => lock(j)
                .prepare()
                .map_err(|e| CommitError::Storage(StorageFailure(redb::Error::Io(e)))),
            None => Ok(()),
        }
    }

    /// Counts bytes committed without a flush of their own, so the disk
    /// can start on them early ([`writeback`]).
    pub(crate) fn wrote(&self, bytes: u64) {
        if let Some(w) = &self.writeback {
            w.wrote(bytes);
        }
    }

    /// Adds a workspace, or replaces its metadata (name, kind, archived,
    /// retention) when it is already here.
    ///
    /// # Errors
    /// [`CommitError::Storage`].
    pub fn add_workspace(&self, info: &WorkspaceInfo) -> Result<(), CommitError> {
        self.put_workspace(info, Durability::Immediate)
    }

    pub(crate) fn put_workspace(
        &self,
        info: &WorkspaceInfo,
        durability: Durability,
    ) -> Result<(), CommitError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(durability)
            .map_err(|e| CommitError::Storage(StorageFailure(e.into())))?;
        {
            let mut t = txn.open_table(WORKSPACES)?;
            let v = postcard::to_allocvec(info).map_err(|_| DamagedRow {
                what: "workspace (encode)",
            })?;
            t.insert(info.id().0.as_slice(), v.as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Archives (read-only) or unarchives a workspace.
    ///
    /// # Errors
    /// [`CommitError::UnknownWorkspace`], [`CommitError::Storage`].
    pub fn set_archived(&self, ws: &WorkspaceId, archived: bool) -> Result<(), CommitError> {
        let mut info = self
            .workspace(ws)
            .map_err(read_to_commit)?
            .ok_or(CommitError::UnknownWorkspace(*ws))?;
        info.archived = archived;
        self.add_workspace(&info)
    }

    /// Sets a workspace's blob retention window in days.
    ///
    /// # Errors
    /// [`CommitError::UnknownWorkspace`], [`CommitError::Storage`].
    pub fn set_retention_days(&self, ws: &WorkspaceId, days: u32) -> Result<(), CommitError> {
        let mut info = self
            .workspace(ws)
            .map_err(read_to_commit)?
            .ok_or(CommitError::UnknownWorkspace(*ws))?;
        info.retention_days = days;
        self.add_workspace(&info)
    }

    /// Every workspace in this store.
    ///
    /// # Errors
    /// [`ReadError::Storage`], [`ReadError::Damaged`].
    pub fn workspaces(&self) -> Result<Vec<WorkspaceInfo>, ReadError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(WORKSPACES)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (_, v) = row?;
            out.push(decode_ws(v.value())?);
        }
        Ok(out)
    }

    /// One workspace's metadata.
    ///
    /// # Errors
    /// [`ReadError::Storage`], [`ReadError::Damaged`].
    pub fn workspace(&self, ws: &WorkspaceId) -> Result<Option<WorkspaceInfo>, ReadError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(WORKSPACES)?;
        match t.get(ws.0.as_slice())? {
            Some(v) => Ok(Some(decode_ws(v.value())?)),
            None => Ok(None),
        }
    }

    /// Runs redb's own integrity check (page checksums and tree structure).
    /// Returns `Ok(false)` when it found and repaired damage.
    ///
    /// # Errors
    /// [`ReadError::Storage`] when the file is damaged beyond redb's repair.
    pub fn check_integrity(&mut self) -> Result<bool, ReadError> {
        Ok(self.db.check_integrity()?)
    }
}

pub(crate) fn decode_ws(b: &[u8]) -> Result<WorkspaceInfo, DamagedRow> {
    postcard::from_bytes(b).map_err(|_| DamagedRow { what: "workspace" })
}

fn read_to_commit(e: ReadError) -> CommitError {
    match e {
        ReadError::Storage(s) => CommitError::Storage(s),
        ReadError::Damaged(d) => CommitError::Damaged(d),
        ReadError::Corrupt(_) => CommitError::Damaged(DamagedRow { what: "bundle" }),
    }
}

/// A journal that cannot be applied: a disk failure as it is, anything
/// else as damage (the caller salvages the file, then applies it again).
/// The words say how to open the store without it, should that fail too.
fn replay_failure(e: CommitError, journal: &Path) -> OpenError {
    match e {
        CommitError::Storage(s) => OpenError::Storage(s),
        other => OpenError::Storage(StorageFailure(redb::Error::Corrupted(format!(
            "the commit journal {} could not be applied ({other}); moving it out of the \
             data directory opens the store without the latest writes it holds, which \
             peers can send again",
            journal.display()
        )))),
    }
}

/// Locks the journal (a panic elsewhere cannot leave it half-changed: each
/// change is one call).
pub(crate) fn lock(
    j: &std::sync::Mutex<journal::Journal>,
) -> std::sync::MutexGuard<'_, journal::Journal> {
    j.lock().unwrap_or_else(|p| p.into_inner())
}

/// A store's id: tells its journal from another store's. Not a secret, only
/// distinct: the clock, the process and a stack address, hashed.
fn new_store_id() -> [u8; 16] {
    let mut h = blake3::Hasher::new();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    h.update(&nanos.to_le_bytes());
    h.update(&std::process::id().to_le_bytes());
    let here = 0u8;
    h.update(&(&here as *const u8 as usize).to_le_bytes());
    let mut id = [0u8; 16];
    id.copy_from_slice(&h.finalize().as_bytes()[..16]);
    id
}

impl Drop for Store {
    /// A clean close: everything journaled goes into the store file with
    /// one durable commit, and the journal file is removed. When that
    /// fails, the journal stays and the next open applies it.
    fn drop(&mut self) {
        let Some(j) = &self.journal else {
            return;
        };
        if std::thread::panicking() {
            return;
        }
        // A store that was only read needs no commit to close.
        let needed = lock(j).since_checkpoint();
        if !needed || self.checkpoint().is_ok() {
            lock(j).remove();
        }
    }
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `version` as the schema of the closed store at `path`.
    fn mark(path: &Path, version: u32) {
        let db = Database::create(path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(b"schema".as_slice(), version.to_be_bytes().as_slice())
            .unwrap();
        txn.commit().unwrap();
    }

    fn schema_of(s: &Store) -> u32 {
        let txn = s.db.begin_read().unwrap();
        let t = txn.open_table(META).unwrap();
        let v = t.get(b"schema".as_slice()).unwrap().unwrap();
        u32::from_be_bytes(v.value().try_into().unwrap())
    }

    #[test]
    fn an_older_store_is_upgraded_at_open_and_a_newer_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let bytes = troupe_protocol::testing::noise(3 << 20, 9);
        let h = {
            let s = Store::open(&path).unwrap();
            s.put_blob(&bytes).unwrap()
        };
        mark(&path, 3);
        {
            let s = Store::open(&path).unwrap();
            assert_eq!(schema_of(&s), SCHEMA_VERSION);
            assert_eq!(s.get_blob(&h).unwrap(), bytes);
        }
        mark(&path, SCHEMA_VERSION + 1);
        match Store::open(&path) {
            Err(OpenError::Schema { found, expected }) => {
                assert_eq!((found, expected), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
            }
            other => panic!("a newer store must be refused: {other:?}"),
        }
        mark(&path, 2);
        assert!(matches!(
            Store::open(&path),
            Err(OpenError::Schema { found: 2, .. })
        ));
    }
}
