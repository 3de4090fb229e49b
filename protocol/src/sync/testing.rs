//! A deterministic in-memory network of engines for tests and benchmarks: an
//! in-memory [`OplogView`], and a driver in the style of quinn-proto's `Pair`
//! (one FIFO of inputs, time advanced only on request, livelock is a failure).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::io::{Input, Millis, Output, PeerId, SyncEvent};
use super::oplog_view::{BlobState, OplogView, ViewError};
use super::{Engine, EngineConfig};
use crate::bundle::Bundle;
use crate::ids::{ActorId, BlobHash, BundleHash, WorkspaceId};
use crate::ranges::SeqRangeSet;
use crate::workspace::WorkspaceSecret;

/// An in-memory store: bundle bytes and hashes by (workspace, author, seq).
#[derive(Debug, Default, Clone)]
pub struct MemView {
    /// Stored bytes and indexed hash.
    pub bundles: BTreeMap<(WorkspaceId, ActorId, u64), (Vec<u8>, BundleHash)>,
    /// Blobs by hash.
    pub blobs: BTreeMap<BlobHash, MemBlob>,
    /// Reads of every author's ranges ([`OplogView::ranges`]): the read
    /// that costs a store a pass over the whole workspace.
    pub full_range_reads: std::cell::Cell<u64>,
}

/// A blob held (or being received) by a [`MemView`].
#[derive(Clone, Debug, Default)]
pub struct MemBlob {
    /// Plain bytes held so far.
    pub bytes: Vec<u8>,
    /// Full size.
    pub size: u64,
    /// Whether complete and verified.
    pub complete: bool,
}

impl MemView {
    /// Holds a complete blob (what `assets add` does on a real store).
    pub fn put_blob(&mut self, bytes: &[u8]) -> BlobHash {
        let hash = BlobHash(*blake3::hash(bytes).as_bytes());
        self.blobs.insert(
            hash,
            MemBlob {
                bytes: bytes.to_vec(),
                size: bytes.len() as u64,
                complete: true,
            },
        );
        hash
    }

    /// What the driver does for `Output::WriteBlobChunk`: appends at the
    /// held length, verifies the whole blob when it is complete.
    pub fn write_blob_chunk(
        &mut self,
        hash: BlobHash,
        offset: u64,
        size: u64,
        bytes: &[u8],
    ) -> Input {
        let b = self.blobs.entry(hash).or_insert_with(|| MemBlob {
            bytes: Vec::new(),
            size,
            complete: false,
        });
        if b.complete || offset != b.bytes.len() as u64 || b.size != size {
            return Input::BlobChunkRejected {
                hash,
                reason: "offset does not follow what is held".into(),
            };
        }
        b.bytes.extend_from_slice(bytes);
        let complete = b.bytes.len() as u64 == size;
        if complete {
            if *blake3::hash(&b.bytes).as_bytes() != hash.0 {
                self.blobs.remove(&hash);
                return Input::BlobChunkRejected {
                    hash,
                    reason: "the blob does not hash to its name".into(),
                };
            }
            b.complete = true;
        }
        Input::BlobChunkWritten {
            hash,
            offset,
            len: bytes.len() as u64,
            complete,
        }
    }

    /// Stores verified bundles (what the driver does for `CommitBatch`).
    pub fn commit(&mut self, bundles: &[Bundle]) {
        for b in bundles {
            let body = b.body();
            self.bundles.insert(
                (body.workspace, body.author, body.seq),
                (b.bytes().to_vec(), b.hash()),
            );
        }
    }

    /// As [`MemView::commit`], taking the bundles (no copy of their bytes).
    pub fn commit_owned(&mut self, bundles: Vec<Bundle>) {
        for b in bundles {
            let body = b.body();
            let key = (body.workspace, body.author, body.seq);
            let hash = b.hash();
            self.bundles.insert(key, (b.into_bytes(), hash));
        }
    }

    /// The bundles held in `ws`, decoded, in (author, seq) order.
    pub fn decoded(&self, ws: &WorkspaceId) -> Vec<Bundle> {
        self.bundles
            .iter()
            .filter(|((w, _, _), _)| w == ws)
            .filter_map(|(_, (bytes, _))| Bundle::decode(bytes.clone()).ok())
            .collect()
    }
}

impl OplogView for MemView {
    fn ranges(&self, ws: &WorkspaceId) -> Result<BTreeMap<ActorId, SeqRangeSet>, ViewError> {
        self.full_range_reads.set(self.full_range_reads.get() + 1);
        let mut out: BTreeMap<ActorId, SeqRangeSet> = BTreeMap::new();
        for (w, a, s) in self.bundles.keys() {
            if w == ws {
                out.entry(*a).or_default().insert(*s);
            }
        }
        Ok(out)
    }

    fn author_ranges(&self, ws: &WorkspaceId, a: &ActorId) -> Result<SeqRangeSet, ViewError> {
        let mut out = SeqRangeSet::new();
        for (_, _, s) in self
            .bundles
            .range((*ws, *a, 0)..=(*ws, *a, u64::MAX))
            .map(|(k, _)| k)
        {
            out.insert(*s);
        }
        Ok(out)
    }

    fn bundle(&self, ws: &WorkspaceId, a: &ActorId, s: u64) -> Result<Option<Vec<u8>>, ViewError> {
        Ok(self.bundles.get(&(*ws, *a, s)).map(|(b, _)| b.clone()))
    }

    fn bundle_hash(
        &self,
        ws: &WorkspaceId,
        a: &ActorId,
        s: u64,
    ) -> Result<Option<BundleHash>, ViewError> {
        Ok(self.bundles.get(&(*ws, *a, s)).map(|(_, h)| *h))
    }

    fn bundle_run(
        &self,
        ws: &WorkspaceId,
        a: &ActorId,
        from: u64,
        to: u64,
        take: &mut dyn FnMut(u64, Vec<u8>, BundleHash) -> bool,
    ) -> Result<(), ViewError> {
        if from > to {
            return Ok(());
        }
        for ((_, _, s), (b, h)) in self.bundles.range((*ws, *a, from)..=(*ws, *a, to)) {
            if !take(*s, b.clone(), *h) {
                break;
            }
        }
        Ok(())
    }

    fn blob_state(&self, h: &BlobHash) -> Result<BlobState, ViewError> {
        Ok(match self.blobs.get(h) {
            None => BlobState::Absent,
            Some(b) if b.complete => BlobState::Complete {
                size: b.bytes.len() as u64,
            },
            Some(b) => BlobState::Partial {
                verified_len: b.bytes.len() as u64,
                size: b.size,
            },
        })
    }

    fn blob_range_into(
        &self,
        h: &BlobHash,
        offset: u64,
        len: u32,
        out: &mut Vec<u8>,
    ) -> Result<bool, ViewError> {
        let Some(b) = self.blobs.get(h).filter(|b| b.complete) else {
            return Ok(false);
        };
        let start = (offset as usize).min(b.bytes.len());
        let end = start.saturating_add(len as usize).min(b.bytes.len());
        out.extend_from_slice(&b.bytes[start..end]);
        Ok(true)
    }
}

/// One simulated node.
pub struct Node {
    /// Its id.
    pub id: PeerId,
    /// Its engine.
    pub engine: Engine,
    /// Its store.
    pub view: MemView,
    /// Every frame it received, with the sender.
    pub frames_in: Vec<(PeerId, Vec<u8>)>,
    /// Every event it reported.
    pub events: Vec<SyncEvent>,
    /// Every quarantined item: (source, reason).
    pub quarantined: Vec<(PeerId, String)>,
    /// Bundles committed from batches.
    pub committed: u64,
    /// Disconnects it asked for.
    pub disconnects: Vec<(PeerId, String)>,
    /// A peer whose batches its store refuses to commit (answered with
    /// [`Input::BatchRejected`]), as a store that cannot take them would.
    pub rejects_batches_of: Option<PeerId>,
    /// Sends no batch at all (a member that claims what it never serves);
    /// tests send its batches themselves with [`Net::inject`].
    pub withholds_batches: bool,
}

/// A network of nodes with a single FIFO of inputs.
pub struct Net {
    /// The nodes.
    pub nodes: Vec<Node>,
    /// Current time.
    pub now: Millis,
    /// (to, input, connection incarnation): frames and peer-ups belong to
    /// one incarnation of a link; injected inputs to none.
    work: VecDeque<(usize, Input, Option<u64>)>,
    links: BTreeSet<(usize, usize)>,
    /// Current incarnation of each link (bumped on every connect).
    link_gen: BTreeMap<(usize, usize), u64>,
    /// The incarnation each node last saw come up, per peer: a node sends on
    /// the connection it knows, and a frame from an older connection than
    /// the receiver's is lost with that connection (as on a real transport).
    seen_gen: BTreeMap<(usize, usize), u64>,
    /// Steps taken so far.
    pub steps: u64,
    /// Whether to keep every received frame in [`Node::frames_in`] (benchmarks turn it off).
    pub record_frames: bool,
}

impl Net {
    /// Nodes with the given actor-id seeds and workspace memberships.
    pub fn new(nodes: Vec<(PeerId, Vec<WorkspaceSecret>)>) -> Self {
        let nodes = nodes
            .into_iter()
            .enumerate()
            .map(|(i, (id, workspaces))| Node {
                id,
                engine: Engine::new(EngineConfig {
                    local_peer: id.0,
                    workspaces,
                    rng_seed: 0x5eed + i as u64,
                }),
                view: MemView::default(),
                frames_in: Vec::new(),
                events: Vec::new(),
                quarantined: Vec::new(),
                committed: 0,
                disconnects: Vec::new(),
                rejects_batches_of: None,
                withholds_batches: false,
            })
            .collect();
        Net {
            nodes,
            now: 0,
            work: VecDeque::new(),
            links: BTreeSet::new(),
            link_gen: BTreeMap::new(),
            seen_gen: BTreeMap::new(),
            steps: 0,
            record_frames: true,
        }
    }

    fn index(&self, id: PeerId) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }

    /// Opens a connection between `a` and `b`.
    pub fn connect(&mut self, a: usize, b: usize) {
        if a == b || !self.links.insert((a.min(b), a.max(b))) {
            return;
        }
        let (ia, ib) = (self.nodes[a].id, self.nodes[b].id);
        let g = self.link_gen.entry((a.min(b), a.max(b))).or_insert(0);
        *g += 1;
        let g = Some(*g);
        self.work.push_back((a, Input::PeerUp { peer: ib }, g));
        self.work.push_back((b, Input::PeerUp { peer: ia }, g));
    }

    /// Breaks the connection: frames in flight are lost, both sides see it go down.
    pub fn cut(&mut self, a: usize, b: usize) {
        if !self.links.remove(&(a.min(b), a.max(b))) {
            return;
        }
        let (ia, ib) = (self.nodes[a].id, self.nodes[b].id);
        self.work.retain(|(to, input, _)| {
            !matches!(input, Input::Frame { peer, .. }
                if (*to == a && *peer == ib) || (*to == b && *peer == ia))
        });
        self.work.push_back((a, Input::PeerDown { peer: ib }, None));
        self.work.push_back((b, Input::PeerDown { peer: ia }, None));
    }

    /// Feeds an input from outside (a local commit, a repair request).
    pub fn input(&mut self, node: usize, input: Input) {
        self.work.push_back((node, input, None));
    }

    /// Injects a raw frame as if `from` sent it to `to`.
    pub fn inject(&mut self, from: usize, to: usize, bytes: Vec<u8>) {
        let peer = self.nodes[from].id;
        self.work
            .push_back((to, Input::Frame { peer, bytes }, None));
    }

    /// Processes one queued input; false when idle.
    pub fn step(&mut self) -> bool {
        let Some((i, input, generation)) = self.work.pop_front() else {
            return false;
        };
        self.steps += 1;
        match (&input, generation) {
            (Input::PeerUp { peer }, Some(g)) => {
                if let Some(j) = self.index(*peer) {
                    self.seen_gen.insert((i, j), g);
                }
            }
            (Input::Frame { peer, .. }, Some(g)) => {
                if let Some(j) = self.index(*peer)
                    && self.seen_gen.get(&(i, j)) != Some(&g)
                {
                    return true; // sent on a connection this node no longer has
                }
            }
            _ => {}
        }
        let node = &mut self.nodes[i];
        if let Input::Frame { peer, bytes } = &input
            && self.record_frames
        {
            node.frames_in.push((*peer, bytes.clone()));
        }
        node.engine.handle_input(self.now, input, &node.view);
        let mut later = Vec::new();
        while let Some(out) = self.nodes[i].engine.poll_output() {
            let node = &mut self.nodes[i];
            match out {
                Output::SendFrame { peer, bytes } => {
                    if node.withholds_batches
                        && matches!(
                            super::message::Message::from_frame(&bytes),
                            Ok(super::message::Message::Batch { .. })
                        )
                    {
                        continue;
                    }
                    let me = node.id;
                    if let Some(j) = self.index(peer)
                        && self.links.contains(&(i.min(j), i.max(j)))
                    {
                        let g = self.seen_gen.get(&(i, j)).copied();
                        if g == self.link_gen.get(&(i.min(j), i.max(j))).copied() {
                            self.work
                                .push_back((j, Input::Frame { peer: me, bytes }, g));
                        }
                    }
                }
                Output::CommitBatch {
                    peer,
                    workspace,
                    batch_id,
                    bundles,
                    wire,
                } => {
                    // What a journal keeps gives back exactly these bundles.
                    if let Some(w) = wire {
                        assert_eq!(w.bundles().as_ref(), Ok(&bundles), "wire copy differs");
                    }
                    if node.rejects_batches_of == Some(peer) {
                        later.push(Input::BatchRejected {
                            peer,
                            workspace,
                            batch_id,
                            reason: "the store refused the batch".into(),
                        });
                        continue;
                    }
                    node.committed += bundles.len() as u64;
                    node.view.commit_owned(bundles);
                    later.push(Input::BatchCommitted {
                        peer,
                        workspace,
                        batch_id,
                    });
                }
                Output::Quarantine { peer, reason, .. } => node.quarantined.push((peer, reason)),
                Output::Disconnect { peer, reason } => {
                    node.disconnects.push((peer, reason));
                    if let Some(j) = self.index(peer) {
                        self.cut(i, j);
                    }
                }
                Output::Event(e) => node.events.push(e),
                Output::WriteBlobChunk {
                    hash,
                    offset,
                    size,
                    bytes,
                    ..
                } => later.push(node.view.write_blob_chunk(hash, offset, size, &bytes)),
                Output::Continue => later.push(Input::Continue),
            }
        }
        for input in later {
            self.work.push_back((i, input, None));
        }
        true
    }

    /// Runs until idle; panics after `max_steps` (a livelock is a bug).
    pub fn drive_bounded(&mut self, max_steps: u64) {
        let start = self.steps;
        while self.step() {
            assert!(
                self.steps - start <= max_steps,
                "no quiescence after {max_steps} steps"
            );
        }
    }

    /// Advances time to the earliest wake-up of any node and delivers its timeouts.
    pub fn advance_to_next_timeout(&mut self) {
        let Some(t) = self
            .nodes
            .iter()
            .filter_map(|n| n.engine.poll_timeout())
            .min()
        else {
            return;
        };
        self.now = self.now.max(t);
        for i in 0..self.nodes.len() {
            if self.nodes[i]
                .engine
                .poll_timeout()
                .is_some_and(|d| d <= self.now)
            {
                self.work.push_back((i, Input::Timeout, None));
            }
        }
    }
}
