//! The narrow read interface the sync engine needs from storage.
//!
//! The engine decides what to send and what to ask for from these reads; it
//! never writes. Writes come back to the driver as outputs (commit a batch,
//! quarantine bytes, write a blob chunk), which the driver runs against the
//! store and acknowledges. The store implements this on a read transaction;
//! tests use an in-memory implementation.

use std::collections::BTreeMap;

use crate::ids::{ActorId, BlobHash, BundleHash, WorkspaceId};
use crate::ranges::SeqRangeSet;

/// How much of a blob this node holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobState {
    /// Never seen.
    Absent,
    /// A partial receive: bytes `0..verified_len` (plain) are held and verified.
    Partial {
        /// Plain bytes held and verified so far.
        verified_len: u64,
        /// Total plain size, as named by the asset reference.
        size: u64,
    },
    /// Complete and verified.
    Complete {
        /// Plain size.
        size: u64,
    },
    /// Known, but its bytes were garbage collected (or deliberately not kept).
    Unavailable,
}

/// A read that failed. Corruption is reported, never papered over.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ViewError {
    /// A stored bundle did not verify against its indexed hash; the store
    /// quarantines it, and the engine asks peers for a clean copy.
    #[error("stored bundle {author:?}/{seq} in {workspace:?} is corrupt: {reason}")]
    Corrupt {
        /// Workspace.
        workspace: WorkspaceId,
        /// Author.
        author: ActorId,
        /// Seq.
        seq: u64,
        /// What failed.
        reason: String,
    },
    /// The store could not be read at all.
    #[error("storage read failed: {0}")]
    Storage(String),
}

/// Reads the engine needs. Every method answers from one consistent snapshot.
pub trait OplogView {
    /// The seq ranges held per author in `workspace` (only verified, applied
    /// bundles: quarantined ones leave holes).
    ///
    /// # Errors
    /// [`ViewError::Storage`].
    fn ranges(&self, workspace: &WorkspaceId) -> Result<BTreeMap<ActorId, SeqRangeSet>, ViewError>;

    /// The seq ranges held of one author in `workspace` (empty when none):
    /// what a peer's want for that author is served from, without reading
    /// every author's (a workspace may hold thousands). The default picks
    /// it out of [`OplogView::ranges`]; a store reads one row.
    ///
    /// # Errors
    /// [`ViewError::Storage`].
    fn author_ranges(
        &self,
        workspace: &WorkspaceId,
        author: &ActorId,
    ) -> Result<SeqRangeSet, ViewError> {
        Ok(self.ranges(workspace)?.remove(author).unwrap_or_default())
    }

    /// The raw bytes of a held bundle, verified against its indexed hash.
    /// `Ok(None)` when not held.
    ///
    /// # Errors
    /// [`ViewError::Corrupt`] when the bytes fail their hash.
    fn bundle(
        &self,
        workspace: &WorkspaceId,
        author: &ActorId,
        seq: u64,
    ) -> Result<Option<Vec<u8>>, ViewError>;

    /// The indexed hash of a held bundle (for chain checks and repair requests).
    ///
    /// # Errors
    /// [`ViewError::Storage`].
    fn bundle_hash(
        &self,
        workspace: &WorkspaceId,
        author: &ActorId,
        seq: u64,
    ) -> Result<Option<BundleHash>, ViewError>;

    /// The held bundles of `author` with seqs `from..=to`, in seq order,
    /// each with its recorded hash and checked as [`OplogView::bundle`]
    /// checks it; `take` gets each one and answers whether to go on. Seqs
    /// not held, or whose copy fails its check, are skipped. It exists so a
    /// sender can read a batch in one ordered pass: a store answers it with
    /// one scan instead of two lookups per seq (the default does those).
    ///
    /// # Errors
    /// [`ViewError::Storage`] when the store cannot be read.
    fn bundle_run(
        &self,
        workspace: &WorkspaceId,
        author: &ActorId,
        from: u64,
        to: u64,
        take: &mut dyn FnMut(u64, Vec<u8>, BundleHash) -> bool,
    ) -> Result<(), ViewError> {
        for seq in from..=to {
            if let (Ok(Some(bytes)), Ok(Some(hash))) = (
                self.bundle(workspace, author, seq),
                self.bundle_hash(workspace, author, seq),
            ) && !take(seq, bytes, hash)
            {
                break;
            }
        }
        Ok(())
    }

    /// How much of a blob is held.
    ///
    /// # Errors
    /// [`ViewError::Storage`].
    fn blob_state(&self, hash: &BlobHash) -> Result<BlobState, ViewError>;

    /// Plain bytes `offset..offset+len` of a complete blob, verified,
    /// appended to `out` (a frame being built): `Ok(false)`, with `out` as
    /// it was, when not complete here. Appending lets a store copy the
    /// verified bytes straight from where it holds them into the frame, so
    /// a chunk sent to a peer is copied once on its way.
    ///
    /// # Errors
    /// [`ViewError::Corrupt`]-like storage errors.
    fn blob_range_into(
        &self,
        hash: &BlobHash,
        offset: u64,
        len: u32,
        out: &mut Vec<u8>,
    ) -> Result<bool, ViewError>;

    /// [`OplogView::blob_range_into`] into a buffer of its own: `Ok(None)`
    /// when not complete here.
    ///
    /// # Errors
    /// As [`OplogView::blob_range_into`].
    fn blob_range(
        &self,
        hash: &BlobHash,
        offset: u64,
        len: u32,
    ) -> Result<Option<Vec<u8>>, ViewError> {
        let mut out = Vec::new();
        Ok(self
            .blob_range_into(hash, offset, len, &mut out)?
            .then_some(out))
    }
}
