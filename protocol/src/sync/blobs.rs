//! Blob transfer: fetching an asset's bytes by hash from a member that holds
//! them, in chunks, resumable, verified before visible.
//!
//! - **Want/have**: the driver asks with `Input::BlobWanted`; the engine asks
//!   one member of the workspace at a time for chunks (`BlobWant`), keeping
//!   up to [`BLOB_WINDOW`] chunks of a blob in flight on that peer's ordered
//!   stream. Many blobs travel at once, within per-peer bounds on chunks
//!   ([`MAX_BLOB_WANTS_IN_FLIGHT`]) and bytes ([`MAX_BLOB_BYTES_IN_FLIGHT`])
//!   asked and not yet received; fetches beyond them wait their turn in
//!   order.
//! - **Resumable**: a fetch starts (and restarts, after a disconnect or on
//!   another peer) from what the store holds (`OplogView::blob_state`
//!   `Partial { verified_len }`), never from zero when bytes are already held.
//! - **Verified**: the driver writes each chunk with
//!   `Output::WriteBlobChunk`; the store hashes the whole blob when the last
//!   chunk arrives and only then makes it visible. A mismatch
//!   (`Input::BlobChunkRejected`) blames the sender and tries another member.
//! - **Unavailable is an answer, for now**: a member that does not hold the
//!   bytes (yet: it may be receiving them itself, or it garbage-collected
//!   them) says `BlobUnavailable`. Once every connected member has said so,
//!   `SyncEvent::BlobUnavailable` is emitted once and the fetch rests: it is
//!   asked again when a member connects, or after [`BLOB_RETRY_FIRST`],
//!   doubling up to [`BLOB_RETRY_MAX`], so an asset relayed through a member
//!   that was still receiving it arrives once that member has it. No busy
//!   loop: one want per member per wait.
//! - **Scoped**: only a peer that proved membership of the workspace may ask,
//!   and only members are asked.

use std::collections::{BTreeSet, VecDeque};

use super::engine::Engine;
use super::io::{Output, PeerId, SyncEvent};
use super::limits::{
    BLOB_CHUNK, BLOB_RETRY_FIRST, BLOB_RETRY_MAX, BLOB_WINDOW, MAX_BLOB_BYTES_IN_FLIGHT,
    MAX_BLOB_FETCHES, MAX_BLOB_WANTS_IN_FLIGHT,
};
use super::message::Message;
use super::oplog_view::{BlobState, OplogView};
use crate::ids::{BlobHash, WorkspaceId};

/// One blob being fetched.
#[derive(Debug)]
pub(crate) struct BlobFetch {
    pub(crate) workspace: WorkspaceId,
    pub(crate) size: u64,
    /// The member being asked now.
    pub(crate) peer: Option<PeerId>,
    /// Members that answered "unavailable" since the fetch last rested.
    pub(crate) tried: Vec<PeerId>,
    /// Members that sent bytes that did not verify: never asked again.
    pub(crate) bad: Vec<PeerId>,
    /// How long the fetch rests the next time nobody has the bytes.
    pub(crate) backoff: crate::sync::Millis,
    /// When it is asked again (an entry in the engine's retries), if resting.
    pub(crate) retry_at: Option<crate::sync::Millis>,
    /// `SyncEvent::BlobUnavailable` was emitted for it.
    pub(crate) reported: bool,
    /// Plain bytes written and acknowledged by the driver.
    pub(crate) written: u64,
    /// Next offset to ask for.
    pub(crate) next: u64,
    /// Offsets asked and not yet received.
    pub(crate) in_flight: BTreeSet<u64>,
    /// In its peer's waiting queue.
    pub(crate) queued: bool,
}

/// The blobs being fetched, by hash.
///
/// A hash map, where the rest of the engine keeps ordered maps: each small
/// asset's fetch is looked up a dozen times between being wanted and
/// ending, and with thousands in flight the searches of a tree of 32-byte
/// keys took 7.6 % of a receiving node's storage thread (10,000 assets of
/// 1 KiB; the thread's CPU fell by about an eighth with the hash map).
/// Determinism is kept by the type: it never hands out its map order, only
/// hashes sorted. The keys come from peers (asset references in their
/// bundles), so the hasher is std's, keyed at random, not a fixed fold an
/// attacker could aim collisions at.
#[derive(Debug, Default)]
pub(crate) struct Fetches(
    #[allow(clippy::disallowed_types)] std::collections::HashMap<BlobHash, BlobFetch>,
);

impl Fetches {
    pub(crate) fn get(&self, hash: &BlobHash) -> Option<&BlobFetch> {
        self.0.get(hash)
    }

    pub(crate) fn get_mut(&mut self, hash: &BlobHash) -> Option<&mut BlobFetch> {
        self.0.get_mut(hash)
    }

    pub(crate) fn insert(&mut self, hash: BlobHash, fetch: BlobFetch) {
        self.0.insert(hash, fetch);
    }

    pub(crate) fn remove(&mut self, hash: &BlobHash) -> Option<BlobFetch> {
        self.0.remove(hash)
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The hashes of the fetches `keep` picks, in hash order.
    pub(crate) fn sorted_where(&self, keep: impl Fn(&BlobFetch) -> bool) -> Vec<BlobHash> {
        let mut out: Vec<BlobHash> = self
            .0
            .iter()
            .filter(|(_, f)| keep(f))
            .map(|(h, _)| *h)
            .collect();
        out.sort_unstable();
        out
    }
}

/// What is asked of one peer and not yet received, over all blobs.
#[derive(Debug, Default)]
pub(crate) struct BlobLoad {
    /// Chunks.
    pub(crate) wants: usize,
    /// Plain bytes.
    pub(crate) bytes: u64,
    /// Fetches that want more chunks than the bounds allowed, in order.
    pub(crate) waiting: VecDeque<BlobHash>,
}

impl BlobLoad {
    fn room(&self, len: u32) -> bool {
        self.wants < MAX_BLOB_WANTS_IN_FLIGHT
            && self.bytes.saturating_add(u64::from(len)) <= MAX_BLOB_BYTES_IN_FLIGHT
    }
}

fn chunk_len(size: u64, offset: u64) -> u32 {
    // BLOB_CHUNK fits in u32, so the min does too.
    size.saturating_sub(offset).min(BLOB_CHUNK as u64) as u32
}

fn held(view: &impl OplogView, hash: &BlobHash) -> (u64, bool) {
    match view.blob_state(hash) {
        Ok(BlobState::Complete { size }) => (size, true),
        Ok(BlobState::Partial { verified_len, .. }) => (verified_len, false),
        _ => (0, false),
    }
}

impl Engine {
    /// `Input::BlobWanted`.
    pub(crate) fn blob_wanted(
        &mut self,
        ws: WorkspaceId,
        hash: BlobHash,
        size: u64,
        view: &impl OplogView,
    ) {
        let (have, complete) = held(view, &hash);
        if complete {
            return self.event(SyncEvent::BlobComplete {
                workspace: ws,
                hash,
            });
        }
        if let Some(f) = self.blobs.get_mut(&hash) {
            if f.retry_at.is_some() {
                // Resting after "unavailable": a new reason to want it (a
                // bundle naming it just arrived) asks everyone again now.
                f.tried.clear();
                self.try_blob(hash, true);
            }
            return;
        }
        if !self.secrets.contains_key(&ws) || self.blobs.len() >= MAX_BLOB_FETCHES {
            return self.event(SyncEvent::BlobUnavailable {
                workspace: ws,
                hash,
            });
        }
        self.blobs.insert(
            hash,
            BlobFetch {
                workspace: ws,
                size,
                peer: None,
                tried: Vec::new(),
                bad: Vec::new(),
                backoff: BLOB_RETRY_FIRST,
                retry_at: None,
                reported: false,
                written: have,
                next: have,
                in_flight: BTreeSet::new(),
                queued: false,
            },
        );
        self.try_blob(hash, false);
    }

    /// Asks the next member not yet tried. With `give_up`, a fetch nobody
    /// connected can serve rests (see the module doc), reported once with
    /// `BlobUnavailable`; otherwise it waits for a member to connect.
    pub(crate) fn try_blob(&mut self, hash: BlobHash, give_up: bool) {
        let Some(ws) = self.blobs.get(&hash).map(|f| f.workspace) else {
            return;
        };
        let members = self.members(ws);
        self.drop_in_flight(hash);
        let now = self.now;
        let Some(f) = self.blobs.get_mut(&hash) else {
            return;
        };
        f.next = f.written;
        f.peer = members
            .into_iter()
            .find(|p| !f.tried.contains(p) && !f.bad.contains(p));
        if f.peer.is_none() && !give_up {
            return; // waits for a member to connect (or its rest to end)
        }
        if let Some(at) = f.retry_at.take() {
            self.blob_retries.remove(&(at, hash));
        }
        if f.peer.is_some() {
            self.request_chunks(hash);
            return;
        }
        let at = now.saturating_add(f.backoff);
        f.backoff = f.backoff.saturating_mul(2).min(BLOB_RETRY_MAX);
        f.retry_at = Some(at);
        self.blob_retries.insert((at, hash));
        if !std::mem::replace(&mut f.reported, true) {
            self.event(SyncEvent::BlobUnavailable {
                workspace: ws,
                hash,
            });
        }
    }

    /// Asks again, of every connected member, for the resting fetches whose
    /// wait is over; one whose bytes arrived meanwhile (added here) ends.
    pub(crate) fn retry_blobs(&mut self, view: &impl OplogView) {
        while let Some(&(at, hash)) = self.blob_retries.first() {
            if at > self.now {
                return;
            }
            self.blob_retries.remove(&(at, hash));
            let Some(f) = self.blobs.get_mut(&hash) else {
                continue;
            };
            f.retry_at = None;
            f.tried.clear();
            let ws = f.workspace;
            if held(view, &hash).1 {
                self.end_fetch(hash);
                self.event(SyncEvent::BlobComplete {
                    workspace: ws,
                    hash,
                });
            } else {
                self.try_blob(hash, true);
            }
        }
    }

    /// Forgets a fetch: its chunks in flight and its rest, if any.
    fn end_fetch(&mut self, hash: BlobHash) {
        self.drop_in_flight(hash);
        if let Some(f) = self.blobs.remove(&hash)
            && let Some(at) = f.retry_at
        {
            self.blob_retries.remove(&(at, hash));
        }
    }

    /// Forgets the chunks of `hash` in flight (its peer's load goes down).
    fn drop_in_flight(&mut self, hash: BlobHash) {
        let Some(f) = self.blobs.get_mut(&hash) else {
            return;
        };
        let wants = f.in_flight.len();
        let bytes: u64 = f
            .in_flight
            .iter()
            .map(|&o| u64::from(chunk_len(f.size, o)))
            .sum();
        f.in_flight.clear();
        f.queued = false;
        if let Some(load) = f.peer.and_then(|p| self.blob_load.get_mut(&p)) {
            load.wants = load.wants.saturating_sub(wants);
            load.bytes = load.bytes.saturating_sub(bytes);
        }
    }

    /// Asks for the next chunks of `hash`: up to [`BLOB_WINDOW`] in flight,
    /// within its peer's bounds. A fetch that wants more than the bounds
    /// allow waits in the peer's queue. Returns whether it had to wait.
    fn request_chunks(&mut self, hash: BlobHash) -> bool {
        let mut asks = Vec::new();
        let Some(f) = self.blobs.get_mut(&hash) else {
            return false;
        };
        let Some(peer) = f.peer else { return false };
        let load = self.blob_load.entry(peer).or_default();
        let mut blocked = false;
        while f.in_flight.len() < BLOB_WINDOW && f.next < f.size {
            let len = chunk_len(f.size, f.next);
            if !load.room(len) {
                blocked = true;
                break;
            }
            load.wants += 1;
            load.bytes += u64::from(len);
            f.in_flight.insert(f.next);
            asks.push(Message::BlobWant {
                workspace: f.workspace,
                hash,
                offset: f.next,
                len,
            });
            f.next += u64::from(len);
        }
        if blocked && !f.queued {
            f.queued = true;
            load.waiting.push_back(hash);
        }
        for m in asks {
            self.send(peer, &m);
        }
        blocked
    }

    /// Lets waiting fetches on `peer` ask for chunks while there is room.
    fn pump(&mut self, peer: PeerId) {
        loop {
            let Some(hash) = self
                .blob_load
                .get_mut(&peer)
                .and_then(|l| l.waiting.pop_front())
            else {
                return;
            };
            // Entries of fetches that moved to another peer or ended are stale.
            let Some(f) = self.blobs.get_mut(&hash).filter(|f| f.peer == Some(peer)) else {
                continue;
            };
            f.queued = false;
            if self.request_chunks(hash) {
                return;
            }
        }
    }

    /// A member of `ws` connected: resume fetches that were waiting for one.
    pub(crate) fn resume_blobs(&mut self, ws: WorkspaceId) {
        let waiting = self
            .blobs
            .sorted_where(|f| f.workspace == ws && f.peer.is_none());
        for h in waiting {
            self.try_blob(h, false);
        }
    }

    /// `peer` went away: its fetches move to another member or wait.
    pub(crate) fn release_blobs(&mut self, peer: PeerId) {
        let mine = self.blobs.sorted_where(|f| f.peer == Some(peer));
        self.blob_load.remove(&peer);
        for h in mine {
            if let Some(f) = self.blobs.get_mut(&h) {
                f.in_flight.clear();
                f.queued = false;
                f.peer = None;
            }
            self.try_blob(h, false);
        }
    }

    pub(crate) fn on_blob_want(
        &mut self,
        peer: PeerId,
        ws: WorkspaceId,
        hash: BlobHash,
        offset: u64,
        len: u32,
        view: &impl OplogView,
    ) {
        if self.shared_mut(peer, ws).is_none() {
            return self.blame(peer, "blob want for a workspace not shared".into(), view);
        }
        let answer = match view.blob_state(&hash) {
            Ok(BlobState::Complete { size }) if offset < size => {
                // The chunk is read straight into the frame that carries it.
                let take = len.min(BLOB_CHUNK as u32);
                let end = offset.saturating_add(u64::from(take)).min(size);
                let frame = Message::blob_chunk_frame(
                    ws,
                    hash,
                    offset,
                    size,
                    (end - offset) as usize,
                    |out| view.blob_range_into(&hash, offset, take, out),
                );
                if let Ok(Some(frame)) = frame {
                    return self.send_frame(peer, frame);
                }
                Message::BlobUnavailable {
                    workspace: ws,
                    hash,
                }
            }
            Ok(BlobState::Complete { .. }) => {
                return self.blame(peer, "blob want past the end".into(), view);
            }
            _ => Message::BlobUnavailable {
                workspace: ws,
                hash,
            },
        };
        self.send(peer, &answer);
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_blob_chunk(
        &mut self,
        peer: PeerId,
        ws: WorkspaceId,
        hash: BlobHash,
        offset: u64,
        size: u64,
        bytes: Vec<u8>,
        view: &impl OplogView,
    ) {
        let ok = self.blobs.get(&hash).is_some_and(|f| {
            f.peer == Some(peer)
                && f.workspace == ws
                && f.size == size
                && f.in_flight.contains(&offset)
                && bytes.len() as u64 == u64::from(chunk_len(size, offset))
        });
        if !ok {
            return self.blame(peer, "blob chunk nobody asked for".into(), view);
        }
        if let Some(f) = self.blobs.get_mut(&hash) {
            f.in_flight.remove(&offset);
        }
        if let Some(load) = self.blob_load.get_mut(&peer) {
            load.wants = load.wants.saturating_sub(1);
            load.bytes = load.bytes.saturating_sub(bytes.len() as u64);
        }
        self.out.push_back(Output::WriteBlobChunk {
            peer,
            workspace: ws,
            hash,
            offset,
            size,
            bytes,
        });
    }

    pub(crate) fn on_blob_unavailable(
        &mut self,
        peer: PeerId,
        hash: BlobHash,
        view: &impl OplogView,
    ) {
        if self.blobs.get(&hash).is_none_or(|f| f.peer != Some(peer)) {
            return self.blame(peer, "blob answer nobody asked for".into(), view);
        }
        self.drop_in_flight(hash);
        if let Some(f) = self.blobs.get_mut(&hash) {
            f.tried.push(peer);
            f.peer = None;
        }
        self.try_blob(hash, true);
        self.pump(peer);
    }

    /// `Input::BlobChunkWritten`.
    pub(crate) fn blob_written(&mut self, hash: BlobHash, offset: u64, len: u64, complete: bool) {
        let Some(f) = self.blobs.get_mut(&hash) else {
            return;
        };
        f.written = f.written.max(offset.saturating_add(len));
        let peer = f.peer;
        if complete {
            let ws = f.workspace;
            self.end_fetch(hash);
            self.event(SyncEvent::BlobComplete {
                workspace: ws,
                hash,
            });
        } else if self.blobs.get(&hash).is_none_or(|f| !f.queued) {
            self.request_chunks(hash);
        }
        if let Some(p) = peer {
            self.pump(p);
        }
    }

    /// `Input::BlobChunkRejected`: the bytes did not verify (or could not be
    /// written); the sender is blamed and the fetch restarts from what the
    /// store holds, on another member.
    pub(crate) fn blob_rejected(&mut self, hash: BlobHash, reason: String, view: &impl OplogView) {
        let Some(f) = self.blobs.get_mut(&hash) else {
            return;
        };
        let (have, _) = held(view, &hash);
        f.written = have;
        self.drop_in_flight(hash);
        let Some(f) = self.blobs.get_mut(&hash) else {
            return;
        };
        let culprit = f.peer.take();
        if let Some(p) = culprit {
            f.bad.push(p);
            self.blame(p, format!("blob bytes did not verify: {reason}"), view);
        }
        self.try_blob(hash, true);
        if let Some(p) = culprit {
            self.pump(p);
        }
    }
}
