//! What goes into and comes out of the [`Engine`](super::Engine).
//!
//! Inputs are facts the driver observed (a peer connected, bytes arrived, a
//! storage transaction finished, time passed); outputs are things the driver
//! must do (send bytes, commit bundles, quarantine bytes, disconnect) and events
//! to show. The engine never performs IO itself.

use std::fmt;

use crate::bundle::Bundle;
use crate::ids::{ActorId, BlobHash, BundleHash, WorkspaceId};
use crate::workspace::WorkspaceSecret;

/// Milliseconds on the driver's monotonic clock. The engine only compares and
/// adds them, so any epoch works.
pub type Millis = u64;

/// A transport-authenticated peer (the node's actor id bytes). The transport
/// (noise) guarantees the other side holds this key; the handshake binds
/// membership proofs to it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerId(pub [u8; 32]);

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer:{}", ActorId(self.0).short())
    }
}

/// One fact for [`Engine::handle_input`](super::Engine::handle_input).
#[derive(Debug, Clone)]
pub enum Input {
    /// A connection to `peer` opened; the engine starts the handshake.
    PeerUp {
        /// Who.
        peer: PeerId,
    },
    /// The connection closed; in-flight work with this peer is released.
    PeerDown {
        /// Who.
        peer: PeerId,
    },
    /// One frame arrived from `peer` (the transport delimits frames).
    Frame {
        /// From whom.
        peer: PeerId,
        /// The frame, as received.
        bytes: Vec<u8>,
    },
    /// One frame from `peer`, already decoded by the driver where it was
    /// read ([`super::PreparedFrame::prepare`]), so the decoding does not
    /// wait for the engine's thread; or parsed with its batch payload left
    /// to the engine ([`super::PreparedFrame::envelope`]). Handled exactly
    /// as [`Input::Frame`].
    Prepared {
        /// From whom.
        peer: PeerId,
        /// The decoded frame.
        frame: Box<super::PreparedFrame>,
    },
    /// The time from [`Engine::poll_timeout`](super::Engine::poll_timeout) passed.
    Timeout,
    /// The driver committed an [`Output::CommitBatch`] in one transaction.
    BatchCommitted {
        /// Source peer of the batch.
        peer: PeerId,
        /// Workspace.
        workspace: WorkspaceId,
        /// The id from the output.
        batch_id: u64,
    },
    /// The driver could not commit an [`Output::CommitBatch`]; nothing of it was applied.
    BatchRejected {
        /// Source peer of the batch.
        peer: PeerId,
        /// Workspace.
        workspace: WorkspaceId,
        /// The id from the output.
        batch_id: u64,
        /// Why, for the log.
        reason: String,
    },
    /// A bundle written on this node was committed; connected members hear of it.
    LocalBundleCommitted {
        /// Workspace.
        workspace: WorkspaceId,
        /// Author (this node's actor).
        author: ActorId,
        /// Its seq.
        seq: u64,
    },
    /// The store found a corrupt bundle (quarantined it) and wants a clean copy.
    RepairWanted {
        /// Workspace.
        workspace: WorkspaceId,
        /// Author.
        author: ActorId,
        /// Seq.
        seq: u64,
        /// The hash the clean copy must have.
        hash: BundleHash,
    },
    /// The node joined a workspace; peers connecting from now on may share it.
    WorkspaceAdded(WorkspaceSecret),
    /// The node left a workspace; nothing more of it is sent or accepted.
    WorkspaceRemoved(WorkspaceId),
    /// Fetch a blob's bytes (an asset referenced in `workspace`) from a
    /// member; ends with [`SyncEvent::BlobComplete`] or
    /// [`SyncEvent::BlobUnavailable`].
    BlobWanted {
        /// Workspace whose members are asked.
        workspace: WorkspaceId,
        /// Blob.
        hash: BlobHash,
        /// Its plain size, as the asset reference names it.
        size: u64,
    },
    /// The driver wrote an [`Output::WriteBlobChunk`]; `complete` when the
    /// store verified the whole blob and made it visible.
    BlobChunkWritten {
        /// Blob.
        hash: BlobHash,
        /// Offset written.
        offset: u64,
        /// Bytes written.
        len: u64,
        /// Whether the blob is now complete and verified.
        complete: bool,
    },
    /// The driver could not write a chunk, or the finished blob did not hash
    /// to `hash` (the store discarded it): the sender is blamed.
    BlobChunkRejected {
        /// Blob.
        hash: BlobHash,
        /// Why, for the log.
        reason: String,
    },
    /// Go on with the work an [`Output::Continue`] announced.
    Continue,
}

/// One thing for the driver to do, from [`Engine::poll_output`](super::Engine::poll_output).
#[derive(Debug, Clone)]
pub enum Output {
    /// Send `bytes` as one frame to `peer`.
    SendFrame {
        /// To whom.
        peer: PeerId,
        /// The frame.
        bytes: Vec<u8>,
    },
    /// Commit these verified bundles (and the ranges they add) in ONE storage
    /// transaction, then answer [`Input::BatchCommitted`] or [`Input::BatchRejected`].
    CommitBatch {
        /// Source peer.
        peer: PeerId,
        /// Workspace.
        workspace: WorkspaceId,
        /// Echo this in the acknowledgement.
        batch_id: u64,
        /// Verified bundles, author- and seq-ascending.
        bundles: Vec<Bundle>,
        /// The batch as it arrived, from which these bundles were picked:
        /// what a journal may keep instead of their bytes (`None` for
        /// bundles that came otherwise, such as a repair's clean copy).
        wire: Option<super::WireCopy>,
    },
    /// Store these raw bytes in quarantine for inspection; they are never applied.
    Quarantine {
        /// Who sent them.
        peer: PeerId,
        /// Workspace they arrived for.
        workspace: WorkspaceId,
        /// The bytes as received.
        bytes: Vec<u8>,
        /// Why they were refused.
        reason: String,
    },
    /// Close the connection to `peer`; the driver then sends [`Input::PeerDown`].
    Disconnect {
        /// Whom.
        peer: PeerId,
        /// Why, for the log.
        reason: String,
    },
    /// Something to show or log.
    Event(SyncEvent),
    /// Append these plain bytes to the blob's receive at `offset` (begin it
    /// when `offset` is 0), then answer [`Input::BlobChunkWritten`] or
    /// [`Input::BlobChunkRejected`]. Chunks of one blob come in order.
    WriteBlobChunk {
        /// Who sent them.
        peer: PeerId,
        /// Workspace.
        workspace: WorkspaceId,
        /// Blob.
        hash: BlobHash,
        /// Offset of the first byte.
        offset: u64,
        /// The blob's full plain size.
        size: u64,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// The engine has more of the work it was doing (batches to build for
    /// a peer's window): perform the outputs before this one, send what
    /// they send, then hand back [`Input::Continue`]. So a batch leaves as
    /// soon as it is built instead of waiting for the rest of the window
    /// (the receiver starts committing sooner). At most one is waiting.
    Continue,
}

/// What a person (or the log) may want to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncEvent {
    /// `peer` proved membership of `workspace`.
    PeerJoined {
        /// Who.
        peer: PeerId,
        /// Which workspace.
        workspace: WorkspaceId,
    },
    /// Bundles committed from `peer` so far versus asked for.
    Progress {
        /// From whom.
        peer: PeerId,
        /// Workspace.
        workspace: WorkspaceId,
        /// Committed so far in this session.
        received: u64,
        /// Asked for so far in this session.
        expected: u64,
    },
    /// We hold everything `peer` said it holds in `workspace`.
    UpToDate {
        /// Whom we caught up with.
        peer: PeerId,
        /// Workspace.
        workspace: WorkspaceId,
    },
    /// `peer` sent something invalid.
    PeerBlamed {
        /// Who.
        peer: PeerId,
        /// What was wrong.
        reason: String,
    },
    /// A wanted blob is complete and verified here.
    BlobComplete {
        /// Workspace.
        workspace: WorkspaceId,
        /// Blob.
        hash: BlobHash,
    },
    /// No connected member holds a wanted blob (never had it, or garbage
    /// collected it); asked once, not retried until wanted again.
    BlobUnavailable {
        /// Workspace.
        workspace: WorkspaceId,
        /// Blob.
        hash: BlobHash,
    },
    /// No connected peer could supply a clean copy of a corrupt bundle.
    RepairFailed {
        /// Workspace.
        workspace: WorkspaceId,
        /// Author.
        author: ActorId,
        /// Seq.
        seq: u64,
    },
}
