//! One error enum per operation. Each variant says what the caller can do.

use troupe_protocol::{ActorId, BlobHash, BundleHash, VerifyError, WorkspaceId};

/// A failure inside redb itself (IO, a damaged file, a full disk).
#[derive(Debug, thiserror::Error)]
#[error("storage failure: {0}")]
pub struct StorageFailure(#[from] pub redb::Error);

impl StorageFailure {
    /// The store is closed: a write failed and it could not be opened again
    /// yet ([`crate::Store::needs_reopen`]).
    pub fn closed() -> Self {
        StorageFailure(redb::Error::DatabaseClosed)
    }
}

macro_rules! from_redb {
    ($t:ty) => {
        impl From<redb::Error> for $t {
            fn from(e: redb::Error) -> Self {
                <$t>::Storage(StorageFailure(e))
            }
        }
        impl From<redb::DatabaseError> for $t {
            fn from(e: redb::DatabaseError) -> Self {
                <$t>::Storage(StorageFailure(e.into()))
            }
        }
        impl From<redb::TransactionError> for $t {
            fn from(e: redb::TransactionError) -> Self {
                <$t>::Storage(StorageFailure(e.into()))
            }
        }
        impl From<redb::TableError> for $t {
            fn from(e: redb::TableError) -> Self {
                <$t>::Storage(StorageFailure(e.into()))
            }
        }
        impl From<redb::StorageError> for $t {
            fn from(e: redb::StorageError) -> Self {
                <$t>::Storage(StorageFailure(e.into()))
            }
        }
        impl From<redb::CommitError> for $t {
            fn from(e: redb::CommitError) -> Self {
                <$t>::Storage(StorageFailure(e.into()))
            }
        }
    };
}

/// Opening a store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// redb could not open the file (damaged, locked, unreadable). The caller
    /// can salvage the file or restore it from peers.
    #[error(transparent)]
    Storage(#[from] StorageFailure),
    /// The file was written by another schema version (a newer build, or
    /// one too old to upgrade). Use a matching build, or export with it and
    /// import here.
    #[error(
        "the store has schema version {found} and this build reads version {expected} (and older); use a build that reads it, or export with that build and import here"
    )]
    Schema {
        /// Version found in the file.
        found: u32,
        /// Version this build writes.
        expected: u32,
    },
    /// The file was damaged and salvaging it failed too. The damaged file is
    /// still in place; move it aside and start from an empty store, then
    /// re-join the workspaces from peers.
    #[error("the store file is damaged and could not be salvaged: {0}")]
    Salvage(Box<SalvageError>),
    /// The commit journal beside the store file could not be read or
    /// renamed. It holds the last durable writes; nothing was changed. Check
    /// the data directory's permissions and free space, then start again.
    #[error("cannot read the store's commit journal {}: {source}", path.display())]
    Journal {
        /// The journal file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}
from_redb!(OpenError);

impl OpenError {
    /// Whether this failure means the file is damaged (salvage can help),
    /// as opposed to locked, unreadable by permission, or another version.
    pub fn is_damage(&self) -> bool {
        match self {
            OpenError::Storage(StorageFailure(e)) => {
                matches!(
                    e,
                    redb::Error::Corrupted(_)
                        | redb::Error::RepairAborted
                        | redb::Error::PreviousIo
                        | redb::Error::ValueTooLarge(_)
                        | redb::Error::UpgradeRequired(_)
                ) || matches!(e, redb::Error::Io(io) if matches!(
                    io.kind(),
                    std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
                ))
            }
            OpenError::Schema { found: 0, .. } => true,
            _ => false,
        }
    }
}

/// Salvaging a damaged store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SalvageError {
    /// redb could not open the damaged file at all, not even read-only or
    /// from a repaired scratch copy. Nothing can be copied: start from an
    /// empty store and re-join the workspaces from peers.
    #[error("the damaged store cannot be read at all: {0}")]
    Unreadable(String),
    /// Creating or renaming files failed (disk full, permissions). Free
    /// space or fix permissions, then salvage again; the damaged file is
    /// untouched.
    #[error("salvage file operation failed: {0}")]
    Io(#[source] std::io::Error),
    /// redb failed while writing the new file. Salvage again.
    #[error(transparent)]
    Storage(#[from] StorageFailure),
    /// A row could not be encoded for the new file. Report this as a bug.
    #[error(transparent)]
    Damaged(#[from] DamagedRow),
}
from_redb!(SalvageError);

impl From<CommitError> for SalvageError {
    fn from(e: CommitError) -> Self {
        match e {
            CommitError::Storage(s) => SalvageError::Storage(s),
            CommitError::Damaged(d) => SalvageError::Damaged(d),
            other => SalvageError::Unreadable(other.to_string()),
        }
    }
}

/// A stored row (state, metadata) did not decode: the file is damaged.
/// Run `rebuild` (state rows) or scrub and repair from peers (bundles).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stored {what} does not decode: the store is damaged; rebuild or repair it")]
pub struct DamagedRow {
    /// Which kind of row.
    pub what: &'static str,
}

/// A write failed; nothing of it was committed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommitError {
    /// redb failed; the transaction was rolled back. Retry later or salvage.
    #[error(transparent)]
    Storage(#[from] StorageFailure),
    /// The workspace is not in this store. Add it first.
    #[error("workspace {0:?} is not in this store")]
    UnknownWorkspace(WorkspaceId),
    /// The workspace is archived (read-only). Unarchive it to write.
    #[error("workspace {0:?} is archived and read-only")]
    Archived(WorkspaceId),
    /// A local bundle did not verify; nothing was written. Fix the signing
    /// code or the tip it signed against.
    #[error("local bundle {author:?}/{seq} does not verify: {error}")]
    Invalid {
        /// Author.
        author: ActorId,
        /// Seq.
        seq: u64,
        /// Why.
        error: VerifyError,
    },
    /// A local bundle reuses a seq already held with different content. Sign
    /// against `Store::author_tip` and try again.
    #[error("local bundle reuses {author:?}/{seq}, held with other content")]
    SeqReused {
        /// Author.
        author: ActorId,
        /// Seq.
        seq: u64,
    },
    /// Materialised state is damaged. Run `rebuild`.
    #[error(transparent)]
    Damaged(#[from] DamagedRow),
}
from_redb!(CommitError);

/// A stored bundle copy that failed verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stored bundle {author:?}/{seq} in {workspace:?} is corrupt: {reason}")]
pub struct CorruptBundle {
    /// Workspace.
    pub workspace: WorkspaceId,
    /// Author.
    pub author: ActorId,
    /// Seq.
    pub seq: u64,
    /// Expected hash, when the index still has it.
    pub expected: Option<BundleHash>,
    /// What failed.
    pub reason: String,
}

/// A read failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// redb failed. Retry, or salvage the file.
    #[error(transparent)]
    Storage(#[from] StorageFailure),
    /// A stored bundle failed its hash; it was not returned. Call
    /// `Store::quarantine_corrupt` and repair it from peers.
    #[error("{0}")]
    Corrupt(Box<CorruptBundle>),
    /// A state row did not decode. Run `rebuild`.
    #[error(transparent)]
    Damaged(#[from] DamagedRow),
}
from_redb!(ReadError);

/// Quarantine maintenance failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuarantineError {
    /// redb failed. Retry later.
    #[error(transparent)]
    Storage(#[from] StorageFailure),
    /// No quarantine entry with this id (already skipped or retried).
    #[error("no quarantine entry {0}")]
    NotFound(u64),
    /// Retrying ran into a write error (archived, unknown workspace, damage).
    #[error(transparent)]
    Commit(#[from] CommitError),
    /// A row did not decode. Run scrub and rebuild.
    #[error(transparent)]
    Damaged(#[from] DamagedRow),
}
from_redb!(QuarantineError);

/// Rebuilding state failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RebuildError {
    /// redb failed; the old state is untouched. Retry or salvage.
    #[error(transparent)]
    Storage(#[from] StorageFailure),
    /// A row did not decode. Run scrub first, then rebuild.
    #[error(transparent)]
    Damaged(#[from] DamagedRow),
}
from_redb!(RebuildError);

/// A blob operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlobError {
    /// redb failed. Retry later.
    #[error(transparent)]
    Storage(#[from] StorageFailure),
    /// The blob is not held here. Fetch it from a peer.
    #[error("blob {0:?} is not held here")]
    NotFound(BlobHash),
    /// The blob's bytes were garbage collected. Ask peers or an archive node.
    #[error("blob {0:?} was garbage collected and is unavailable here")]
    Unavailable(BlobHash),
    /// Stored blob bytes failed verification; they were not returned. Fetch a
    /// clean copy from a peer.
    #[error("stored blob {0:?} is corrupt")]
    Corrupt(BlobHash),
    /// A received blob did not hash to its name; the partial copy was discarded.
    /// Fetch it again from another peer.
    #[error("received blob does not hash to {expected:?}; discarded")]
    HashMismatch {
        /// The name it was received under.
        expected: BlobHash,
    },
    /// A chunk arrived at the wrong offset. Resume from `expected`.
    #[error("chunk at offset {got}, expected {expected}")]
    Offset {
        /// Where the next chunk must start.
        expected: u64,
        /// Where it started.
        got: u64,
    },
    /// More bytes than the announced size. Discard and restart.
    #[error("blob receive overruns its size {size}")]
    Overrun {
        /// Announced size.
        size: u64,
    },
    /// No receive was begun for this blob. Call `blob_begin` first.
    #[error("no receive in progress for {0:?}")]
    NotReceiving(BlobHash),
    /// Metadata did not decode. Scrub and refetch.
    #[error(transparent)]
    Damaged(#[from] DamagedRow),
}
from_redb!(BlobError);

impl From<OpenError> for SalvageError {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Storage(s) => SalvageError::Storage(s),
            OpenError::Salvage(s) => *s,
            other => SalvageError::Unreadable(other.to_string()),
        }
    }
}

/// Exporting a workspace failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The workspace is not in this store. List workspaces and pick another.
    #[error("workspace {0:?} is not in this store")]
    UnknownWorkspace(WorkspaceId),
    /// Reading the store failed (damage or redb). Export from the file with
    /// `export_damaged`, which salvages a copy first.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Writing the export failed (disk full, permissions). Pick another
    /// directory or free space; a finished export always has `state.json`.
    #[error("export file operation failed: {0}")]
    Io(#[source] std::io::Error),
    /// The damaged store could not be salvaged for export. Nothing can be
    /// read from this file; recover the workspace from peers.
    #[error(transparent)]
    Salvage(Box<SalvageError>),
}
