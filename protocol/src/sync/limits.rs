//! Every cap and timer of the sync engine, in one place.
//!
//! Goals: bound what one peer can make us allocate or hold, and bound how long a
//! silent or stuck peer keeps its slot. Non-goals: fairness between peers
//! (drivers schedule them) and bandwidth shaping.

use super::io::Millis;

/// Largest frame on `/troupe/sync/1`, compressed batches included. Checked
/// before any parsing.
pub const MAX_FRAME: usize = 4 * 1024 * 1024;
/// Bundles a sender puts in one batch before closing it.
pub const BATCH_BUNDLES: usize = 256;
/// Bundles a sender puts in a batch that starts an empty window (the first
/// batch of a sync, or the first after the receiver caught up). Small, so the
/// receiver starts committing while the rest of the window is still being
/// read, framed and decoded: a 256-bundle first batch took 3.5–4.5 ms to
/// build and decode before the receiver could begin a 1,000-bundle catch-up.
pub const FIRST_BATCH_BUNDLES: usize = 64;
/// Plain bytes a sender puts in one batch before closing it.
pub const BATCH_BYTES: usize = 1024 * 1024;
/// Extra bundles a sender may append to a batch so that each author-run ends
/// with a signed bundle (stored copies of interior bundles carry no signature).
pub const RUN_EXTENSION: usize = 256;
/// Most bundles a receiver accepts in one batch (batch plus run extension).
pub const MAX_BATCH_BUNDLES: usize = BATCH_BUNDLES + RUN_EXTENSION;
/// Most plain (decompressed) bytes a receiver accepts for one batch; bounds
/// decompression memory whatever the compressed size.
pub const MAX_BATCH_PLAIN: usize = 16 * 1024 * 1024;
/// Run tails whose signatures the reader checks where a batch is decoded,
/// at most, per batch (see `prepare`). A sender's batch holds one run per
/// author, so a handful covers any honest batch; the cap keeps a peer that
/// is not (yet) a proven member from making the reader check hundreds of
/// signatures a frame before the engine has judged it. Tails past it are
/// checked by verification, on the store's thread, as before.
pub const MAX_PRE_CHECKS: usize = 8;
/// Batches a sender keeps unacknowledged per (peer, workspace). A receiver
/// that falls behind commits the batches waiting for it in one transaction
/// and one disk flush (the node does), then acknowledges them together; the
/// window must be wide enough that the next batches are already on their
/// way, read and decoded while it commits. With four, a receiver took the
/// whole window each time and then sat idle while the sender read, framed
/// and sent the next four (a lock-step of about 10 ms committing and 9 ms
/// waiting through the first quarter of a 1M-write sync). With eight, the
/// receiving store's thread still ran only 74–88 % of a 1M-write sync: in
/// a fifth of it neither core did the receiver's work while it waited for
/// the next batches and its flushes. Twelve keep it at 87–92 % and the
/// sync about a tenth shorter; sixteen were no faster. The cost is up to
/// twelve batches of memory per peer (the receiver's peak in that sync
/// went from 40 to 42–51 MiB).
pub const MAX_IN_FLIGHT_BATCHES: usize = 12;
/// Most workspace proofs in one handshake (a node in more workspaces proves
/// only the first ones; 64 shows is far beyond any crew).
pub const MAX_PROOFS: usize = 64;
/// Proof lists are padded with random values to a multiple of this, so the
/// count does not tell a non-member how many workspaces a node holds.
pub const PROOF_PAD: usize = 8;
/// Most workspaces in one ranges message (at most the proven ones).
pub const MAX_RANGE_WORKSPACES: usize = MAX_PROOFS;
/// Most authors in one ranges message (a sender announces the rest of a
/// workspace's authors after it, one message each).
pub const MAX_AUTHORS: usize = 4096;
/// Most ranges one peer's claims may add up to in one workspace, over all
/// authors (so also the most authors it may claim: a claim of nothing
/// takes no room). Each set is capped ([`crate::ranges::MAX_RANGES`]),
/// but announcements for ever more authors would otherwise fill memory
/// without end; an honest store's sets are a range or two an author
/// (holes are quarantined slots). A sender leaves out what is past it.
pub const MAX_THEIR_RANGES: usize = 1 << 16;
/// Late proofs (a workspace joined while connected) a peer may send at
/// once; after that, one more every [`LATE_PROOFS_EVERY`]. A person joins
/// workspaces a few at a time, and each of our openings makes room for
/// its answer; a peer past the allowance is blamed.
pub const LATE_PROOFS_BURST: u32 = 16;
/// See [`LATE_PROOFS_BURST`].
pub const LATE_PROOFS_EVERY: Millis = 10_000;
/// Longest `Bye` reason.
pub const MAX_REASON_BYTES: usize = 256;
/// Bad items (undecodable, failing verification, protocol violations) after
/// which a peer is disconnected.
pub const MAX_BAD_ITEMS: u32 = 16;
/// How long a peer may take to finish the handshake.
pub const HANDSHAKE_TIMEOUT: Millis = 10_000;
/// Send a ping after this long without sending anything.
pub const KEEPALIVE: Millis = 10_000;
/// Disconnect a peer heard nothing from for this long.
pub const IDLE_TIMEOUT: Millis = 30_000;
/// Most repairs outstanding at once.
pub const MAX_REPAIRS: usize = 1024;

/// Bytes of one blob chunk (a frame carries one, well under [`MAX_FRAME`]).
pub const BLOB_CHUNK: usize = 1024 * 1024;
/// Chunks of one blob asked and not yet received. The receiver asks for
/// more once a call's chunks are written (their flush to disk comes later),
/// so the window must cover what the sender reads and sends while the
/// receiver writes the previous chunks (8 left the two sides taking turns).
pub const BLOB_WINDOW: usize = 16;
/// Blob chunks asked of one peer and not yet received, all blobs together:
/// many small assets travel at once (256 left both sides idle between
/// rounds: 10,000 small assets took 40 round trips), and the bytes bound
/// below still caps what is in flight.
pub const MAX_BLOB_WANTS_IN_FLIGHT: usize = 1024;
/// Plain bytes asked of one peer and not yet received, all blobs together:
/// twice one blob's window, so one large blob leaves room for others.
pub const MAX_BLOB_BYTES_IN_FLIGHT: u64 = 2 * BLOB_WINDOW as u64 * BLOB_CHUNK as u64;
/// How long an asset fetch that no connected member could serve rests
/// before it asks them again (a member may have been receiving it).
pub const BLOB_RETRY_FIRST: Millis = 2_000;
/// The longest such rest: the wait doubles up to it.
pub const BLOB_RETRY_MAX: Millis = 60_000;
/// Blobs being fetched at once (each waits its turn for the in-flight
/// bounds); more wants are answered "unavailable".
pub const MAX_BLOB_FETCHES: usize = 16_384;
/// Wants a peer has not served for this long (no batch from it) are released
/// and asked of other members: a peer must not stall a sync by staying silent
/// about one range while answering keepalives.
pub const WANT_TIMEOUT: Millis = 15_000;
/// Seqs a peer sent a bad copy of are asked of it again after this long (the
/// bad copy may have been a transient fault); repeated bad copies disconnect
/// it through [`MAX_BAD_ITEMS`].
pub const RETRY_REFUSED: Millis = 5_000;
