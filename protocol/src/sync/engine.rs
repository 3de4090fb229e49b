//! The engine: sessions, routing of inputs, timers. Transfers (ranges, wants,
//! batches, announces, repair) are in [`super::transfer`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::handshake;
use super::io::{Input, Millis, Output, PeerId, SyncEvent};
use super::limits::{
    HANDSHAKE_TIMEOUT, IDLE_TIMEOUT, KEEPALIVE, MAX_AUTHORS, MAX_BAD_ITEMS, MAX_PROOFS,
    MAX_THEIR_RANGES,
};
use super::message::{Message, WorkspaceRanges};
use super::oplog_view::OplogView;
use super::prepare::PreparedFrame;
use super::rng::SplitMix64;
use super::session::{AwaitHello, Session, sub};
use crate::ids::{ActorId, BundleHash, WorkspaceId};
use crate::ranges::SeqRangeSet;
use crate::workspace::WorkspaceSecret;

/// How the engine starts.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// This node's id (its actor id bytes), as the transport authenticates it.
    pub local_peer: [u8; 32],
    /// The workspaces this node is a member of.
    pub workspaces: Vec<WorkspaceSecret>,
    /// Seed for nonces and proof padding. Drivers seed from the OS generator;
    /// the simulator from its run seed, so runs replay exactly.
    pub rng_seed: u64,
}

/// Counters for tests, benchmarks and the status page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Frames handed to the driver.
    pub frames_sent: u64,
    /// Bytes in those frames.
    pub bytes_sent: u64,
    /// Bundles put into batches we sent.
    pub bundles_sent: u64,
    /// Bundles that arrived in batches.
    pub bundles_received: u64,
}

pub(crate) struct Peer {
    pub(crate) session: Option<Session>,
    pub(crate) last_recv: Millis,
    pub(crate) last_send: Millis,
    pub(crate) bad: u32,
    pub(crate) epoch: u64,
}

pub(crate) struct Repair {
    pub(crate) hash: BundleHash,
    pub(crate) tried: Vec<PeerId>,
    pub(crate) asked: Option<PeerId>,
}

/// A batch handed to the driver to commit, under an engine-chosen id (so a
/// peer's ids, which restart with each session, never collide).
pub(crate) struct Pending {
    /// The sender's batch id to acknowledge; `None` for repairs.
    pub(crate) peer_batch: Option<u64>,
    /// The session it arrived in: no ack goes to a later session.
    pub(crate) epoch: u64,
    /// (author, seq) of each bundle.
    pub(crate) slots: Vec<(ActorId, u64)>,
}

/// The sans-IO sync engine: one per node, serving every peer and workspace.
///
/// # Call order
/// 1. Feed each event as an [`Input`] through [`Engine::handle_input`], with the
///    current time and a read view of the store taken after the last commit.
///    Report [`Input::PeerUp`] before any frame of that connection (frames from
///    unknown peers are dropped) and frames in the order received.
/// 2. After every input, drain [`Engine::poll_output`] to `None` and perform each
///    output in order. [`Output::CommitBatch`] must run as one storage
///    transaction and be answered with [`Input::BatchCommitted`] or
///    [`Input::BatchRejected`] with the output's `batch_id` (the peer sends
///    at most [`MAX_IN_FLIGHT_BATCHES`](super::limits::MAX_IN_FLIGHT_BATCHES)
///    unacknowledged batches). Commits may finish after the peer went away;
///    acknowledge them anyway.
///    After [`Output::Disconnect`], close the connection and report
///    [`Input::PeerDown`].
/// 3. Re-arm the timer from [`Engine::poll_timeout`]; when it fires, send
///    [`Input::Timeout`].
///
/// The engine never reads a clock, spawns a thread or iterates a hash map, so a
/// simulator driving it replays exactly.
pub struct Engine {
    pub(crate) local: PeerId,
    pub(crate) secrets: BTreeMap<WorkspaceId, WorkspaceSecret>,
    pub(crate) rng: SplitMix64,
    pub(crate) now: Millis,
    pub(crate) peers: BTreeMap<PeerId, Peer>,
    pub(crate) out: VecDeque<Output>,
    /// Seqs asked of some peer and not yet committed, so two peers are not asked for the same.
    pub(crate) requested: BTreeMap<(WorkspaceId, ActorId), SeqRangeSet>,
    /// Verified bundles handed to the driver and not yet acknowledged: their hashes
    /// link the next batch's runs before the store has them.
    pub(crate) uncommitted: super::uncommitted::Uncommitted,
    /// Batches handed to the driver: (source, workspace, local id) → what.
    pub(crate) committing: BTreeMap<(PeerId, WorkspaceId, u64), Pending>,
    pub(crate) repairs: BTreeMap<(WorkspaceId, ActorId, u64), Repair>,
    /// Blobs being fetched.
    pub(crate) blobs: super::blobs::Fetches,
    /// Blob chunks in flight per peer, and fetches waiting for room.
    pub(crate) blob_load: BTreeMap<PeerId, super::blobs::BlobLoad>,
    /// Fetches every connected member answered "unavailable" for, by when
    /// they are asked again.
    pub(crate) blob_retries: std::collections::BTreeSet<(Millis, crate::ids::BlobHash)>,
    pub(crate) next_local_batch: u64,
    pub(crate) stats: SyncStats,
    pub(crate) codec: super::message::BatchCodec,
    /// The decoded items and the payload of the batch frame being handled (see
    /// [`PreparedFrame`]); taken when the batch is dispatched, cleared
    /// after every frame.
    pub(crate) prepared_batch: Option<(super::prepare::BatchItems, Vec<u8>)>,
    /// Sessions whose send window has room and bundles to fill it, left
    /// for [`Input::Continue`] so each batch leaves as soon as it is built.
    /// Not empty exactly while an [`Output::Continue`] is unanswered.
    pub(crate) to_fill: std::collections::BTreeSet<(PeerId, WorkspaceId)>,
}

impl Engine {
    /// A fresh engine with no peers.
    pub fn new(config: EngineConfig) -> Self {
        Engine {
            local: PeerId(config.local_peer),
            secrets: config
                .workspaces
                .into_iter()
                .map(|s| (s.workspace_id(), s))
                .collect(),
            rng: SplitMix64::new(config.rng_seed),
            now: 0,
            peers: BTreeMap::new(),
            out: VecDeque::new(),
            requested: BTreeMap::new(),
            uncommitted: Default::default(),
            committing: BTreeMap::new(),
            repairs: BTreeMap::new(),
            blobs: Default::default(),
            blob_load: BTreeMap::new(),
            blob_retries: std::collections::BTreeSet::new(),
            next_local_batch: 0,
            stats: SyncStats::default(),
            codec: super::message::BatchCodec::default(),
            prepared_batch: None,
            to_fill: std::collections::BTreeSet::new(),
        }
    }

    /// Counters since creation.
    pub fn stats(&self) -> SyncStats {
        self.stats
    }

    /// Whether any asset is still being fetched (asked for, or waiting for a
    /// member to ask). A driver that holds written asset bytes back from
    /// the disk while more keep coming flushes at once when none are.
    pub fn fetching_blobs(&self) -> bool {
        !self.blobs.is_empty()
    }

    /// The next output to perform, in order; drain to `None` after every input.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When to send [`Input::Timeout`]: the earliest handshake deadline,
    /// keepalive or idle limit, or asset fetch to ask again. `None` with no
    /// peers.
    pub fn poll_timeout(&self) -> Option<Millis> {
        let retry = self.blob_retries.first().map(|(at, _)| *at);
        self.peers
            .values()
            .map(|p| {
                let idle = p.last_recv.saturating_add(IDLE_TIMEOUT);
                match &p.session {
                    Some(Session::AwaitHello(s)) => s.deadline.min(idle),
                    Some(Session::AwaitProofs(s)) => s.deadline.min(idle),
                    Some(Session::Active(a)) => a
                        .shared
                        .values()
                        .filter_map(super::session::Shared::deadline)
                        .fold(idle.min(p.last_send.saturating_add(KEEPALIVE)), Millis::min),
                    None => idle.min(p.last_send.saturating_add(KEEPALIVE)),
                }
            })
            .min()
            .map(|t| retry.map_or(t, |r| r.min(t)))
    }

    /// Handles one input at time `now`, reading the store through `view`.
    /// Never panics on peer input: bad frames blame the peer.
    pub fn handle_input(&mut self, now: Millis, input: Input, view: &impl OplogView) {
        self.now = self.now.max(now);
        match input {
            Input::PeerUp { peer } => {
                // A reconnect replaces the old session; release what it held first.
                self.release(peer, view);
                self.peer_up(peer);
            }
            Input::PeerDown { peer } => self.release(peer, view),
            Input::Frame { peer, bytes } => {
                // A batch's payload is decoded once it is known to be for a
                // workspace the peer shares (see `message`).
                self.frame(peer, PreparedFrame::envelope(&bytes), view);
            }
            Input::Prepared { peer, frame } => self.frame(peer, *frame, view),
            Input::Timeout => self.timeout(view),
            Input::BatchCommitted {
                peer,
                workspace,
                batch_id,
            } => self.batch_done(peer, workspace, batch_id, true, view),
            Input::BatchRejected {
                peer,
                workspace,
                batch_id,
                ..
            } => self.batch_done(peer, workspace, batch_id, false, view),
            Input::LocalBundleCommitted {
                workspace,
                author,
                seq,
            } => {
                let mut newly = BTreeMap::new();
                newly.insert(author, SeqRangeSet::from_ranges([(seq, seq)]));
                self.announce(workspace, &newly, None);
            }
            Input::RepairWanted {
                workspace,
                author,
                seq,
                hash,
            } => self.repair_wanted(workspace, author, seq, hash),
            Input::WorkspaceAdded(secret) => self.workspace_added(secret),
            Input::WorkspaceRemoved(ws) => self.workspace_removed(ws),
            Input::BlobWanted {
                workspace,
                hash,
                size,
            } => self.blob_wanted(workspace, hash, size, view),
            Input::BlobChunkWritten {
                hash,
                offset,
                len,
                complete,
            } => self.blob_written(hash, offset, len, complete),
            Input::BlobChunkRejected { hash, reason } => self.blob_rejected(hash, reason, view),
            Input::Continue => {
                for (peer, ws) in std::mem::take(&mut self.to_fill) {
                    self.fill_window(peer, ws, view);
                }
            }
        }
    }

    /// Queues `msg` for `peer`.
    pub(crate) fn send(&mut self, peer: PeerId, msg: &Message) {
        self.send_frame(peer, msg.to_frame());
    }

    /// Queues an encoded frame for `peer`.
    pub(crate) fn send_frame(&mut self, peer: PeerId, bytes: Vec<u8>) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.last_send = self.now;
        }
        self.stats.frames_sent += 1;
        self.stats.bytes_sent += bytes.len() as u64;
        self.out.push_back(Output::SendFrame { peer, bytes });
    }

    pub(crate) fn event(&mut self, e: SyncEvent) {
        self.out.push_back(Output::Event(e));
    }

    /// Counts a bad item against `peer`, disconnecting past the limit.
    pub(crate) fn blame(&mut self, peer: PeerId, reason: String, view: &impl OplogView) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        p.bad += 1;
        let over = p.bad >= MAX_BAD_ITEMS;
        self.event(SyncEvent::PeerBlamed { peer, reason });
        if over {
            self.disconnect(peer, "too many bad items".into(), view);
        }
    }

    /// Drops the session and tells the driver to close the connection.
    pub(crate) fn disconnect(&mut self, peer: PeerId, reason: String, view: &impl OplogView) {
        if self.peers.contains_key(&peer) {
            self.out.push_back(Output::Disconnect { peer, reason });
            self.release(peer, view);
        }
    }

    fn peer_up(&mut self, peer: PeerId) {
        // Session epochs share the local id counter: unique, increasing.
        self.next_local_batch += 1;
        let my_nonce = self.rng.bytes32();
        let session = Session::AwaitHello(AwaitHello {
            my_nonce,
            deadline: self.now.saturating_add(HANDSHAKE_TIMEOUT),
        });
        self.peers.insert(
            peer,
            Peer {
                session: Some(session),
                last_recv: self.now,
                last_send: self.now,
                bad: 0,
                epoch: self.next_local_batch,
            },
        );
        self.send(peer, &Message::Hello { nonce: my_nonce });
    }

    /// Forgets `peer`: its outstanding wants go back to the pool and are asked
    /// of other peers; its repair requests move on.
    fn release(&mut self, peer: PeerId, view: &impl OplogView) {
        let Some(p) = self.peers.remove(&peer) else {
            return;
        };
        self.release_blobs(peer);
        let mut touched = Vec::new();
        if let Some(Session::Active(a)) = p.session {
            for (ws, sh) in a.shared {
                self.unrequest(ws, &sh.wanted);
                // Only what was asked of this peer is to be asked elsewhere.
                touched.push((ws, sh.wanted.into_keys().collect::<BTreeSet<_>>()));
            }
        }
        let stuck: Vec<_> = self
            .repairs
            .iter()
            .filter(|(_, r)| r.asked == Some(peer))
            .map(|(k, _)| *k)
            .collect();
        for k in stuck {
            self.try_repair(k);
        }
        for (ws, authors) in touched {
            self.request_missing_of(ws, &authors, None, view);
        }
    }

    fn timeout(&mut self, view: &impl OplogView) {
        let now = self.now;
        let ids: Vec<PeerId> = self.peers.keys().copied().collect();
        for id in ids {
            let Some(p) = self.peers.get(&id) else {
                continue;
            };
            let (deadline, active) = match &p.session {
                Some(Session::AwaitHello(s)) => (Some(s.deadline), false),
                Some(Session::AwaitProofs(s)) => (Some(s.deadline), false),
                _ => (None, true),
            };
            if deadline.is_some_and(|d| now >= d) {
                self.disconnect(id, "handshake timed out".into(), view);
            } else if now >= p.last_recv.saturating_add(IDLE_TIMEOUT) {
                self.disconnect(id, "peer silent".into(), view);
            } else if active && now >= p.last_send.saturating_add(KEEPALIVE) {
                self.send(id, &Message::Ping(now));
            }
            if active {
                self.transfer_deadlines(id, view);
            }
        }
        self.retry_blobs(view);
    }

    fn frame(&mut self, peer: PeerId, frame: PreparedFrame, view: &impl OplogView) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        p.last_recv = self.now;
        let msg = match frame.msg {
            Ok(m) => m,
            Err(e) => return self.blame(peer, format!("undecodable frame: {e}"), view),
        };
        // A batch's bundles, decoded with the frame, for `on_batch`.
        self.prepared_batch = frame.batch;
        self.message(peer, msg, view);
        self.prepared_batch = None;
    }

    fn message(&mut self, peer: PeerId, msg: Message, view: &impl OplogView) {
        let Some(session) = self.peers.get_mut(&peer).and_then(|p| p.session.take()) else {
            return;
        };
        let mut late_since = None;
        let next = match (session, msg) {
            (Session::AwaitHello(s), Message::Hello { nonce }) => {
                let proved = self.secrets.keys().take(MAX_PROOFS).copied().collect();
                let s = s.hello(nonce, proved);
                let proofs = handshake::our_proofs(
                    self.secrets.values(),
                    &self.local,
                    &peer,
                    &s.my_nonce,
                    &s.their_nonce,
                    &mut self.rng,
                );
                self.send(peer, &Message::Proofs { proofs });
                Session::AwaitProofs(s)
            }
            (Session::AwaitProofs(s), Message::Proofs { proofs }) => {
                let shared = handshake::shared(
                    self.secrets
                        .values()
                        .filter(|x| s.proved.contains(&x.workspace_id())),
                    &proofs,
                    &self.local,
                    &peer,
                    &s.my_nonce,
                    &s.their_nonce,
                );
                // Always answered, so "no shared workspace" looks the same to everyone.
                self.send_joined_ranges(peer, &shared, view);
                late_since = Some(s.proved.clone());
                Session::Active(s.proven(shared))
            }
            (Session::Active(a), msg) => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.session = Some(Session::Active(a));
                }
                return self.active(peer, msg, view);
            }
            (_, Message::Bye { reason }) => {
                return self.disconnect(peer, format!("peer left: {reason}"), view);
            }
            (_, _) => {
                self.event(SyncEvent::PeerBlamed {
                    peer,
                    reason: "message out of order in handshake".into(),
                });
                // Session already taken: nothing of this peer is kept.
                self.out.push_back(Output::Disconnect {
                    peer,
                    reason: "handshake violated".into(),
                });
                self.peers.remove(&peer);
                return;
            }
        };
        let joined: Vec<WorkspaceId> = match &next {
            Session::Active(a) => a.shared.keys().copied().collect(),
            _ => Vec::new(),
        };
        if let Some(p) = self.peers.get_mut(&peer) {
            p.session = Some(next);
        }
        for ws in joined {
            self.resume_blobs(ws);
        }
        if let Some(proved) = late_since {
            self.prove_added_since(peer, &proved);
        }
    }

    /// Reports `peer` joined in each of `shared` and sends it what we hold
    /// there (one `Ranges` message, possibly empty).
    pub(crate) fn send_joined_ranges(
        &mut self,
        peer: PeerId,
        shared: &std::collections::BTreeSet<WorkspaceId>,
        view: &impl OplogView,
    ) {
        let mut workspaces = Vec::new();
        // Authors past what one message may carry follow as announcements,
        // which the peer merges the same way (a workspace may hold more
        // authors than `MAX_AUTHORS`: every device, every restored copy).
        let mut in_message = 0;
        let mut more = Vec::new();
        for ws in shared {
            self.event(SyncEvent::PeerJoined {
                peer,
                workspace: *ws,
            });
            let mut authors = Vec::new();
            // The peer refuses claims past this many ranges in all; the
            // authors past it are left for a later session.
            let mut claimed = 0;
            for (author, ranges) in view.ranges(ws).unwrap_or_default() {
                claimed += ranges.ranges().len();
                if claimed > MAX_THEIR_RANGES {
                    break;
                }
                if in_message < MAX_AUTHORS {
                    in_message += 1;
                    authors.push((author, ranges));
                } else {
                    more.push(Message::Announce {
                        workspace: *ws,
                        author,
                        ranges,
                    });
                }
            }
            workspaces.push(WorkspaceRanges {
                workspace: *ws,
                authors,
            });
        }
        self.send(peer, &Message::Ranges { workspaces });
        for m in &more {
            self.send(peer, m);
        }
    }

    fn active(&mut self, peer: PeerId, msg: Message, view: &impl OplogView) {
        if msg
            .workspace()
            .is_some_and(|ws| self.withdrawn_with(peer, &ws))
        {
            return;
        }
        match msg {
            Message::Ranges { workspaces } => self.on_ranges(peer, workspaces, view),
            Message::Want {
                workspace,
                author,
                ranges,
            } => self.on_want(peer, workspace, author, ranges, view),
            Message::Batch {
                workspace,
                batch_id,
                data,
            } => {
                // Decoded with its frame ([`PreparedFrame::prepare`]), or
                // read without its payload decoded
                // ([`PreparedFrame::envelope`]: a driver does not decode
                // for a peer it has not seen proved a member). Then it is
                // decoded here, and only for a workspace the peer shares:
                // `on_batch` refuses any other, and a non-member's payload
                // costs no decompression at all.
                let (items, payload) = match self.prepared_batch.take() {
                    Some(prepared) => prepared,
                    None if self.shared_mut(peer, workspace).is_some() => {
                        (super::prepare::batch_items(&mut self.codec, &data), data)
                    }
                    None => (Err("not decoded".into()), Vec::new()),
                };
                self.on_batch(peer, workspace, batch_id, items, payload, view);
            }
            Message::BatchAck {
                workspace,
                batch_id,
            } => self.on_ack(peer, workspace, batch_id, view),
            Message::Announce {
                workspace,
                author,
                ranges,
            } => self.on_announce(peer, workspace, author, ranges, view),
            Message::RepairWant {
                workspace,
                author,
                seq,
                hash,
            } => self.on_repair_want(peer, workspace, author, seq, hash, view),
            Message::RepairReply {
                workspace,
                author,
                seq,
                bundle,
            } => self.on_repair_reply(peer, workspace, author, seq, bundle, view),
            Message::Ping(n) => self.send(peer, &Message::Pong(n)),
            Message::Pong(_) => {}
            Message::Bye { reason } => self.disconnect(peer, format!("peer left: {reason}"), view),
            Message::Hello { .. } | Message::Proofs { .. } => {
                self.blame(peer, "handshake message after handshake".into(), view);
            }
            Message::BlobWant {
                workspace,
                hash,
                offset,
                len,
            } => self.on_blob_want(peer, workspace, hash, offset, len, view),
            Message::BlobChunk {
                workspace,
                hash,
                offset,
                size,
                bytes,
            } => self.on_blob_chunk(peer, workspace, hash, offset, size, bytes, view),
            Message::BlobUnavailable { hash, .. } => self.on_blob_unavailable(peer, hash, view),
            Message::LateProofs { proofs, answer } => {
                self.on_late_proofs(peer, &proofs, answer, view);
            }
            Message::Withdrawn { workspace } => self.on_withdrawn(peer, workspace, view),
        }
    }

    /// The shared-workspace state with `peer`, if both proved `ws`.
    pub(crate) fn shared_mut(
        &mut self,
        peer: PeerId,
        ws: WorkspaceId,
    ) -> Option<&mut super::session::Shared> {
        match self.peers.get_mut(&peer)?.session.as_mut()? {
            Session::Active(a) => a.shared.get_mut(&ws),
            _ => None,
        }
    }

    /// Active peers sharing `ws`, ascending.
    pub(crate) fn members(&self, ws: WorkspaceId) -> Vec<PeerId> {
        self.peers
            .iter()
            .filter(|(_, p)| matches!(&p.session, Some(Session::Active(a)) if a.shared.contains_key(&ws)))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Returns `seqs` (per author) to the pool of slots no peer is asked for,
    /// so they can be asked of another.
    pub(crate) fn unrequest(&mut self, ws: WorkspaceId, seqs: &BTreeMap<ActorId, SeqRangeSet>) {
        for (author, set) in seqs {
            if let Some(r) = self.requested.get_mut(&(ws, *author)) {
                *r = r.difference(set);
            }
        }
    }

    /// Stops expecting `seqs` of `author` from `peer` (refused or not served).
    pub(crate) fn forget_from(
        &mut self,
        peer: PeerId,
        ws: WorkspaceId,
        author: ActorId,
        seqs: &SeqRangeSet,
    ) {
        if let Some(r) = self.requested.get_mut(&(ws, author)) {
            *r = r.difference(seqs);
        }
        if let Some(sh) = self.shared_mut(peer, ws) {
            sub(&mut sh.wanted, &author, seqs);
            sh.theirs.sub(&author, seqs);
        }
    }
}
