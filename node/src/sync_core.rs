//! The sync engine and the store together, on the storage thread.
//!
//! [`SyncCore`] is the state behind the daemon's
//! [`ActorHandle`](crate::storage_actor::ActorHandle): every engine input and
//! every local write runs here, one at a time, so the engine always reads the
//! store as it is. After each input the engine's outputs are drained to the
//! end (STYLE rule: `poll_output` until `None`):
//!
//! - `CommitBatch` requests are collected while the call's inputs are
//!   handled and then committed together as ONE store transaction (all of
//!   them or none; the engine keeps their bundles as uncommitted meanwhile),
//!   and answered with `BatchCommitted` / `BatchRejected`; the batches of one
//!   call are flushed to disk together before the call returns, i.e. before
//!   any acknowledgement reaches the network;
//! - `Quarantine` goes into the store's quarantine with its source peer;
//! - `SendFrame`, `Disconnect` and the next wake-up become [`NetCommand`]s for
//!   the async driver ([`crate::sync_driver`]), which owns the streams;
//! - events are logged and published on the [`EventBus`].
//!
//! The engine itself is sans-IO; this module is the only place that feeds it.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{debug, info, trace, warn};
use troupe_protocol::ids::WorkspaceId;
use troupe_protocol::sync::{Engine, EngineConfig, Input, Millis, Output, SyncEvent, SyncStats};
use troupe_protocol::workspace::WorkspaceSecret;

use crate::events::{EventBus, NodeEvent};
use crate::identity;
use crate::local::{Change, Local};
use crate::store_recovery::StoreRecovery;
use crate::throttle::Throttle;

/// What the core asks the async driver to do on the network.
#[derive(Debug)]
pub enum NetCommand {
    /// Write one frame to the peer's stream.
    Send {
        /// To whom.
        peer: libp2p::PeerId,
        /// The frame.
        bytes: Vec<u8>,
    },
    /// Close the connection to the peer.
    Disconnect {
        /// Whom.
        peer: libp2p::PeerId,
        /// Why, for the log.
        reason: String,
    },
    /// The peer proved membership of a workspace in its current session:
    /// its readers may decode batches where they read them.
    Member {
        /// Who.
        peer: libp2p::PeerId,
    },
    /// Feed `Input::Timeout` at this many ms after the core's epoch (`None`:
    /// no timer needed).
    WakeAt(Option<Millis>),
    /// Feed `Input::Continue` once the commands before this one are done
    /// (the engine's `Output::Continue`: the frames it sent go out first).
    Continue,
}

/// What a received batch's acknowledgement needs after its commit: batch id,
/// newest clock, assets to fetch, source name, and this device's own tip
/// before the commit when the batch carried bundles of its own actor.
type BatchMeta = (
    u64,
    Option<troupe_protocol::hlc::Hlc>,
    Vec<(troupe_protocol::ids::BlobHash, u64)>,
    String,
    Option<u64>,
);

/// Sync figures for `GET /v1/status`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SyncStatus {
    /// Frames sent.
    pub frames_sent: u64,
    /// Bytes sent in frames.
    pub bytes_sent: u64,
    /// Bundles sent in batches.
    pub bundles_sent: u64,
    /// Bundles received in batches.
    pub bundles_received: u64,
    /// Bundles committed from peers since start.
    pub bundles_committed: u64,
    /// Writing commands (local edits) answered since start.
    pub local_writes: u64,
    /// Per workspace (hex id): peers we are up to date with.
    pub up_to_date: BTreeMap<String, Vec<String>>,
    /// Times the store was closed and opened again after a failed write
    /// (a full disk) since start.
    pub store_reopened: u64,
    /// The last write the store failed (a full disk), in words.
    pub store_failure: Option<String>,
}

/// Engine + store on one thread; see the module doc.
pub struct SyncCore {
    local: Local,
    engine: Engine,
    epoch: Instant,
    net: mpsc::UnboundedSender<NetCommand>,
    events: EventBus,
    status: Arc<Mutex<SyncStatus>>,
    last_wake: Option<Option<Millis>>,
    /// Batches committed since the last flush to disk.
    unflushed: bool,
    /// Asset bytes written without a flush since. They need no flush
    /// before the call's frames leave (the next wants promise nothing to
    /// the peer; after a crash a fetch resumes from what is on disk), so
    /// they are flushed as [`crate::blob_flush`] says, or with the next
    /// batch, whichever comes first.
    blob_flush: crate::blob_flush::BlobFlush,
    /// Events held past their call until the asset bytes they report are
    /// on disk.
    deferred_events: Vec<NodeEvent>,
    /// Batches the engine asked to commit during this call, not yet
    /// committed: they go to the store together, in one transaction.
    to_commit: Vec<PendingBatch>,
    /// Blob chunks received during this round, written together at its end:
    /// (blob, offset, size, plain bytes).
    blob_writes: Vec<(troupe_protocol::ids::BlobHash, u64, u64, Vec<u8>)>,
    /// Assets seen in received bundles, to fetch once this call's inputs are done.
    blob_wants: Vec<(WorkspaceId, troupe_protocol::ids::BlobHash, u64)>,
    workspaces_tx: Option<tokio::sync::watch::Sender<Vec<WorkspaceSecret>>>,
    dial_tx: Option<tokio::sync::mpsc::UnboundedSender<Vec<String>>>,
    /// Inputs a step produced for the engine besides its acknowledgement
    /// (a new incarnation's link bundles), fed right after it.
    followups: Vec<Input>,
    /// Group commit: local writes committed but not yet flushed, with their
    /// answers and changes, held until the run of jobs settles.
    pending: Vec<(Deferred, CommandResult)>,
    pending_changes: Vec<Change>,
    /// `set` commands of the current run, committed together at its end.
    queued_sets: Vec<(crate::ops::fields::SetArgs, Deferred)>,
    /// Events of the current call, published once its writes are on disk, so
    /// "bundles received", "up to date" and "asset received" never announce
    /// something a crash could still take back.
    held_events: Option<Vec<NodeEvent>>,
    /// Peers' names as `troupe peers` shows them, made once per peer: a
    /// full sync names its sender for every batch it commits and reports.
    names: HashMap<troupe_protocol::sync::PeerId, String>,
    /// When sync progress with each peer in each workspace is next
    /// published (see [`PROGRESS_EVERY`]).
    progress_told: HashMap<(troupe_protocol::sync::PeerId, WorkspaceId), Throttle>,
    /// The key the transport authenticates, for an engine built anew.
    network_id: troupe_protocol::ids::ActorId,
    /// Peers the engine has a connection to (from their `PeerUp` on).
    connected: HashSet<troupe_protocol::sync::PeerId>,
    /// Failed writes and the store's reopening (see [`crate::store_recovery`]).
    recovery: StoreRecovery,
}

/// How often at most a [`NodeEvent::SyncProgress`] is published for one
/// peer and workspace (the last one, when everything asked for has come,
/// always is). A full sync commits hundreds of batches a second; every
/// event wakes each subscriber of the local API's event stream, on the
/// cores the sync needs, for a count a person reads a few times a second
/// at most.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// Peers (and peer and workspace pairs) [`SyncCore`] keeps a name or a
/// progress time for before it starts again: far more than one node meets
/// in a session.
const MAX_NAMES: usize = 1024;

/// A command's answer as the local API returns it.
pub type CommandResult = Result<crate::ops::Answer, crate::ops::OpsError>;
/// Where a deferred command's answer goes once it is durable.
pub type Deferred = tokio::sync::oneshot::Sender<CommandResult>;

impl crate::storage_actor::Settle for SyncCore {
    /// Makes the local writes of this run durable with one flush, then
    /// answers them and tells the engine (so peers only ever hear of durable
    /// bundles).
    fn settle(&mut self) {
        let started = Instant::now();
        let sets = self.queued_sets.len();
        self.run_queued_sets();
        if self.pending.is_empty() {
            return;
        }
        let t = Instant::now();
        let flushed = self.local.store().flush();
        trace!(
            sets,
            answers = self.pending.len(),
            commit_us = (t - started).as_micros() as u64,
            flush_us = t.elapsed().as_micros() as u64,
            "local group commit"
        );
        let pending = std::mem::take(&mut self.pending);
        let changes = std::mem::take(&mut self.pending_changes);
        if let Ok(mut s) = self.status.lock() {
            s.local_writes += pending.len() as u64;
        }
        // A write the store failed may have left it needing a reopen.
        let failed = pending.iter().find_map(|(_, r)| match r {
            Err(e @ crate::ops::OpsError::Store(_)) => Some(e.to_string()),
            _ => None,
        });
        for (tx, result) in pending {
            let result = match (&flushed, result) {
                (Err(e), Ok(_)) => Err(crate::ops::OpsError::Store(format!(
                    "the change may not have reached the disk: {e}"
                ))),
                (_, r) => r,
            };
            let _ = tx.send(result);
        }
        if let Err(e) = &flushed {
            warn!(error = %e, "could not flush local writes to disk");
            // Opened again, the store holds none of what was not flushed, so
            // a write answered as failed is not applied either.
            self.recovery.note(e);
        } else if let Some(e) = failed
            && !self.check_store(&e)
        {
            // Refused cleanly (nothing of it applied): the store works on,
            // and the status says what the last failure was.
            let said = crate::store_recovery::describe(&e, self.local.path());
            if let Ok(mut s) = self.status.lock() {
                s.store_failure = Some(said);
            }
        }
        // What was not flushed may be gone once the store is opened again:
        // peers hear only of what is on disk.
        if self.recover_store() {
            return;
        }
        self.changed(changes);
    }
}

impl std::fmt::Debug for SyncCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SyncCore({:?})", self.local)
    }
}

impl SyncCore {
    /// Builds the engine for every workspace in the store. `epoch` is the
    /// instant engine time counts from (the driver shares it for timers).
    /// `network_id` is the key the transport authenticates (the actor key the
    /// node started with): membership proofs are bound to it, and it stays the
    /// same for the process even if the signing key changes (a new
    /// incarnation).
    ///
    /// # Errors
    /// [`troupe_storage::ReadError`] when the workspace list cannot be read.
    pub fn new(
        local: Local,
        network_id: troupe_protocol::ids::ActorId,
        net: mpsc::UnboundedSender<NetCommand>,
        events: EventBus,
        status: Arc<Mutex<SyncStatus>>,
        epoch: Instant,
    ) -> Result<Self, troupe_storage::ReadError> {
        let workspaces = local
            .store()
            .workspaces()?
            .into_iter()
            .map(|w| w.secret)
            .collect();
        let engine = engine_for(network_id, workspaces);
        Ok(SyncCore {
            local,
            engine,
            epoch,
            net,
            events,
            status,
            last_wake: None,
            unflushed: false,
            blob_flush: Default::default(),
            deferred_events: Vec::new(),
            to_commit: Vec::new(),
            blob_wants: Vec::new(),
            blob_writes: Vec::new(),
            workspaces_tx: None,
            dial_tx: None,
            followups: Vec::new(),
            pending: Vec::new(),
            pending_changes: Vec::new(),
            queued_sets: Vec::new(),
            held_events: None,
            names: HashMap::new(),
            progress_told: HashMap::new(),
            network_id,
            connected: HashSet::new(),
            recovery: StoreRecovery::default(),
        })
    }

    /// The answer to every command while the store cannot be opened again.
    fn closed_error(&self) -> crate::ops::OpsError {
        let why = self.recovery.closed().unwrap_or("the store is closed");
        let when = self
            .recovery
            .paused(Instant::now())
            .map_or(0, |d| d.as_secs() + 1);
        crate::ops::OpsError::Store(format!(
            "{why}. The store could not be opened again; the node tries again in {when} s"
        ))
    }

    /// Where to publish the workspace list whenever it changes (discovery
    /// re-advertises from it).
    pub fn publish_workspaces(&mut self, tx: tokio::sync::watch::Sender<Vec<WorkspaceSecret>>) {
        self.workspaces_tx = Some(tx);
    }

    /// Where to send addresses to dial now (the daemon hands them to its
    /// dialler), so joining from an invite connects at once.
    pub fn dial_requests(&mut self, tx: tokio::sync::mpsc::UnboundedSender<Vec<String>>) {
        self.dial_tx = Some(tx);
    }

    /// Read access for API handlers.
    pub fn local(&self) -> &Local {
        &self.local
    }

    /// Runs a local command that is answered at once (a read, or a write
    /// that makes itself durable) and tells the engine what changed, so
    /// connected members hear of it now.
    ///
    /// The writes of this run that wait for the group flush are flushed and
    /// answered first: an answer never shows a write that a crash could
    /// still take back.
    ///
    /// # Errors
    /// Whatever `f` returns; its changes are only forwarded on success.
    pub fn write<R>(
        &mut self,
        f: impl FnOnce(&mut Local) -> Result<(R, Vec<Change>), crate::ops::OpsError>,
    ) -> Result<R, crate::ops::OpsError> {
        if self.still_closed() {
            return Err(self.closed_error());
        }
        crate::storage_actor::Settle::settle(self);
        match f(&mut self.local) {
            Ok((r, changes)) => {
                self.changed(changes);
                Ok(r)
            }
            Err(e) => {
                self.check_store(&e);
                self.recover_store();
                Err(e)
            }
        }
    }

    /// Group commit: runs a local command whose bundles are committed without
    /// a flush of their own; its answer (and what peers hear of it) waits
    /// for the one flush that ends this run of jobs
    /// ([`crate::storage_actor::Settle::settle`]).
    ///
    /// `set` commands are only queued here: the run's consecutive sets are
    /// committed together, in order, in one transaction with one signature
    /// per workspace ([`crate::ops::fields::set_run`]), before any other
    /// command touches the store and before the run's flush.
    pub fn command_deferred(&mut self, request: crate::ops::Request, reply: Deferred) {
        if self.still_closed() {
            let _ = reply.send(Err(self.closed_error()));
            return;
        }
        if let crate::ops::Request::Set {
            workspace,
            path,
            value,
        } = request
        {
            let args = crate::ops::fields::SetArgs {
                workspace,
                path,
                value,
            };
            self.queued_sets.push((args, reply));
            return;
        }
        self.run_queued_sets();
        self.local.set_deferred(true);
        let result = crate::ops::execute(&mut self.local, request);
        self.local.set_deferred(false);
        match result {
            Ok((v, changes)) => {
                self.pending_changes.extend(changes);
                self.pending.push((reply, Ok(crate::ops::Answer::Json(v))));
            }
            Err(e) => self.pending.push((reply, Err(e))),
        }
    }

    /// Commits the queued `set` commands as one run (see
    /// [`SyncCore::command_deferred`]); their answers wait for the flush.
    fn run_queued_sets(&mut self) {
        if self.queued_sets.is_empty() {
            return;
        }
        let (args, replies): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.queued_sets).into_iter().unzip();
        self.local.set_deferred(true);
        let results = crate::ops::fields::set_run(&mut self.local, args);
        self.local.set_deferred(false);
        for (reply, result) in replies.into_iter().zip(results) {
            match result {
                Ok((written, change)) => {
                    self.pending_changes.push(change);
                    self.pending
                        .push((reply, Ok(crate::ops::Answer::Set(written))));
                }
                Err(e) => self.pending.push((reply, Err(e))),
            }
        }
    }

    /// Tells the engine what changed locally.
    fn changed(&mut self, changes: Vec<Change>) {
        let membership = changes
            .iter()
            .any(|c| matches!(c, Change::WorkspaceAdded(_) | Change::WorkspaceRemoved(_)));
        // One engine call for the lot: a group commit's bundles are
        // announced together, with one store snapshot read per input.
        let mut inputs = Vec::with_capacity(changes.len());
        for c in changes {
            let input = match c {
                Change::Committed {
                    workspace,
                    author,
                    seq,
                } => Input::LocalBundleCommitted {
                    workspace,
                    author,
                    seq,
                },
                Change::WorkspaceAdded(secret) => Input::WorkspaceAdded(secret),
                Change::WorkspaceRemoved(id) => Input::WorkspaceRemoved(id),
                Change::Dial(addrs) => {
                    if let Some(tx) = &self.dial_tx {
                        let _ = tx.send(addrs);
                    }
                    continue;
                }
                Change::RepairWanted {
                    workspace,
                    author,
                    seq,
                    hash,
                } => Input::RepairWanted {
                    workspace,
                    author,
                    seq,
                    hash,
                },
            };
            inputs.push(input);
        }
        if !inputs.is_empty() {
            self.inputs(inputs);
        }
        if membership
            && let Some(tx) = &self.workspaces_tx
            && let Ok(list) = self.local.store().workspaces()
        {
            let _ = tx.send(list.into_iter().map(|w| w.secret).collect());
        }
    }

    /// Publishes an event, or holds it until the running call's flush.
    fn publish(&mut self, ev: NodeEvent) {
        match &mut self.held_events {
            Some(held) => held.push(ev),
            None => self.events.publish(ev),
        }
    }

    fn now(&self) -> Millis {
        self.epoch.elapsed().as_millis() as Millis
    }

    /// Feeds one input and carries out everything the engine asks for.
    pub fn input(&mut self, input: Input) {
        self.inputs(vec![input]);
    }

    /// Feeds several inputs in order (frames that arrived together), carrying
    /// out everything the engine asks for after each.
    ///
    /// Batches to commit are collected while the inputs are handled (the
    /// engine keeps them as uncommitted until their acknowledgement) and
    /// committed together in one store transaction once every input is in;
    /// then their acknowledgements are fed, and the whole call is flushed to
    /// disk once, before it returns.
    pub fn inputs(&mut self, inputs: Vec<Input>) {
        if self.still_closed() {
            // No engine work on a closed store; connections are turned away.
            self.admit(inputs);
            return;
        }
        // The engine reads the store: local writes it may send are durable first.
        crate::storage_actor::Settle::settle(self);
        let inputs = self.admit(inputs);
        self.held_events.get_or_insert_with(Vec::new);
        let started = Instant::now();
        let count = inputs.len();
        let mut engine_time = std::time::Duration::ZERO;
        let mut commit_time = std::time::Duration::ZERO;
        let mut round = inputs;
        loop {
            let t = Instant::now();
            for input in round {
                // An input's other acknowledgements go in before the next input.
                let mut queue = VecDeque::from([input]);
                while let Some(input) = queue.pop_front() {
                    let now = self.now();
                    match self.local.store().view() {
                        Ok(view) => self.engine.handle_input(now, input, &view),
                        Err(e) => {
                            warn!(error = %e, "cannot read the store; a sync step was skipped");
                            self.check_store(&e);
                            continue;
                        }
                    }
                    while let Some(out) = self.engine.poll_output() {
                        if let Some(ack) = self.run(out) {
                            queue.push_back(ack);
                        }
                    }
                    queue.extend(self.followups.drain(..));
                }
            }
            engine_time += t.elapsed();
            let t = Instant::now();
            round = self.commit_collected();
            round.extend(self.write_collected_blobs());
            commit_time += t.elapsed();
            if round.is_empty() {
                break;
            }
        }
        let t = Instant::now();
        let held = self.held_events.take().unwrap_or_default();
        self.flush();
        trace!(
            inputs = count,
            engine_us = engine_time.as_micros() as u64,
            commit_us = commit_time.as_micros() as u64,
            flush_us = t.elapsed().as_micros() as u64,
            total_us = started.elapsed().as_micros() as u64,
            "sync call"
        );
        self.deferred_events.extend(held);
        // A failed write: the store is opened again and the call's events
        // are dropped; the assets it lacks are asked for again below.
        self.recover_store();
        // Nothing written waits for the disk any more: the events may go.
        if !self.blob_flush.pending() {
            for ev in std::mem::take(&mut self.deferred_events) {
                self.events.publish(ev);
            }
        }
        let wants = std::mem::take(&mut self.blob_wants);
        if !wants.is_empty() {
            return self.inputs(blobs_wanted(wants));
        }
        self.after_drain();
    }

    /// Makes the batches committed during this call durable before any of
    /// their acknowledgements leave (the driver sends frames only after the
    /// call returns), so one disk flush covers a run of batches; asset bytes
    /// go with it, or on their own when [`crate::blob_flush`] says.
    fn flush(&mut self) {
        let blobs_due = self
            .blob_flush
            .due(Instant::now(), self.engine.fetching_blobs());
        if !self.unflushed && !blobs_due {
            return;
        }
        self.unflushed = false;
        self.blob_flush.flushed();
        if let Err(e) = self.local.store().flush() {
            warn!(error = %e, "could not flush received batches to disk; they are fetched again if lost");
            // The store is opened again, as of its last flush, whatever
            // redb makes of the failure: what is kept is what is on disk.
            self.recovery.note(&e);
        }
    }

    fn after_drain(&mut self) {
        let mut wake = self.engine.poll_timeout();
        if let Some(t) = self.blob_flush.next_due() {
            // Wake up to flush the asset bytes if nothing else does first.
            let due = t.saturating_duration_since(self.epoch);
            let due = due.as_millis() as Millis + 1;
            wake = Some(wake.map_or(due, |w| w.min(due)));
            // Always re-arm: a wake that fired early must not leave the bytes
            // (and their events) waiting for traffic that may never come.
            self.last_wake = None;
        }
        if self.last_wake != Some(wake) {
            self.last_wake = Some(wake);
            let _ = self.net.send(NetCommand::WakeAt(wake));
        }
        let SyncStats {
            frames_sent,
            bytes_sent,
            bundles_sent,
            bundles_received,
        } = self.engine.stats();
        if let Ok(mut s) = self.status.lock() {
            s.frames_sent = frames_sent;
            s.bytes_sent = bytes_sent;
            s.bundles_sent = bundles_sent;
            s.bundles_received = bundles_received;
        }
    }

    /// Carries out one output; returns the acknowledgement to feed back.
    fn run(&mut self, out: Output) -> Option<Input> {
        match out {
            Output::SendFrame { peer, bytes } => {
                if let Some(p) = identity::libp2p_peer(&peer) {
                    let _ = self.net.send(NetCommand::Send { peer: p, bytes });
                }
                None
            }
            Output::Disconnect { peer, reason } => {
                warn!(?peer, %reason, "disconnecting a peer");
                if let Some(p) = identity::libp2p_peer(&peer) {
                    let _ = self.net.send(NetCommand::Disconnect { peer: p, reason });
                }
                None
            }
            Output::CommitBatch {
                peer,
                workspace,
                batch_id,
                bundles,
                wire,
            } => {
                self.to_commit.push(PendingBatch {
                    peer,
                    workspace,
                    batch_id,
                    bundles,
                    wire,
                });
                None
            }
            Output::Quarantine {
                peer,
                workspace,
                bytes,
                reason,
            } => {
                let source = self.name_of(&peer);
                match self
                    .local
                    .store()
                    .quarantine_bytes(&workspace, bytes, &reason, &source)
                {
                    Ok(id) => warn!(id, %source, %reason, "quarantined a bundle from a peer"),
                    Err(e) => warn!(error = %e, %reason, "could not record a refused bundle"),
                }
                None
            }
            Output::Event(ev) => {
                self.event(ev);
                None
            }
            Output::WriteBlobChunk {
                hash,
                offset,
                size,
                bytes,
                ..
            } => {
                self.blob_writes.push((hash, offset, size, bytes));
                None
            }
            // Behind this call's sends in the driver's queue, and the driver
            // takes them only after the call: the batch built so far leaves
            // before the next one is built.
            Output::Continue => {
                let _ = self.net.send(NetCommand::Continue);
                None
            }
        }
    }

    /// Continues under a new actor key before any further local write (see
    /// [`crate::incarnation`]); the link bundles go to the engine next.
    fn new_incarnation(&mut self, why: &str) {
        let Some(dir) = self.local.path().parent().map(Path::to_owned) else {
            return;
        };
        match crate::incarnation::start_new(&mut self.local, &dir, why) {
            Ok(inc) => {
                self.publish(NodeEvent::NewIncarnation {
                    previous: inc.previous.to_string(),
                    current: inc.current.to_string(),
                    reason: why.to_owned(),
                });
                for c in inc.changes {
                    if let Change::Committed {
                        workspace,
                        author,
                        seq,
                    } = c
                    {
                        self.followups.push(Input::LocalBundleCommitted {
                            workspace,
                            author,
                            seq,
                        });
                    }
                }
            }
            Err(e) => {
                warn!(error = %e, reason = why, "could not start a new incarnation; local writes may reuse sequence numbers")
            }
        }
    }

    /// Writes the blob chunks received during this round of the call in one
    /// store transaction (a receive begins at offset 0); the store verifies
    /// each whole blob before it becomes visible. The writes are made
    /// durable by the flush that ends this call, before any acknowledgement
    /// (the next wants) leaves, like received batches. Returns one answer
    /// per chunk, in order.
    fn write_collected_blobs(&mut self) -> Vec<Input> {
        let writes = std::mem::take(&mut self.blob_writes);
        if writes.is_empty() {
            return Vec::new();
        }
        let chunks: Vec<troupe_storage::ReceivedChunk<'_>> = writes
            .iter()
            .map(
                |(hash, offset, size, bytes)| troupe_storage::ReceivedChunk {
                    hash: *hash,
                    size: *size,
                    offset: *offset,
                    bytes,
                },
            )
            .collect();
        type Write = (troupe_protocol::ids::BlobHash, u64, u64, Vec<u8>);
        let answer = |(hash, offset, _, bytes): &Write, r: Result<bool, String>| match r {
            Ok(complete) => Input::BlobChunkWritten {
                hash: *hash,
                offset: *offset,
                len: bytes.len() as u64,
                complete,
            },
            Err(reason) => Input::BlobChunkRejected {
                hash: *hash,
                reason,
            },
        };
        let mut out = Vec::with_capacity(writes.len());
        // One transaction per run that fits redb's write buffer.
        for run in troupe_storage::blob_receive_runs(&chunks) {
            let results = self.local.store().blob_receive_many(run);
            let bytes = run.iter().map(|c| c.bytes.len() as u64).sum();
            self.blob_flush.wrote(Instant::now(), bytes);
            let written = &writes[out.len()..out.len() + run.len()];
            match results {
                Ok(rs) => out.extend(
                    written
                        .iter()
                        .zip(rs)
                        .map(|(w, r)| answer(w, r.map_err(|e| e.to_string()))),
                ),
                Err(e) => {
                    warn!(error = %e, "could not write received asset bytes; they are fetched again");
                    if self.check_store(&e) {
                        // The disk failed, not the sender: nobody is blamed,
                        // and the sync starts over once the store is open.
                        return Vec::new();
                    }
                    out.extend(written.iter().map(|w| answer(w, Err(e.to_string()))));
                }
            }
        }
        out
    }

    /// Assets referenced by bundles just received: their bytes are fetched
    /// from members, so a file added on one device appears on the others.
    fn assets_in(
        bundles: &[troupe_protocol::bundle::Bundle],
    ) -> Vec<(troupe_protocol::ids::BlobHash, u64)> {
        let mut out = Vec::new();
        for b in bundles {
            for op in &b.body().ops {
                if let troupe_protocol::op::Op::Set {
                    value: troupe_protocol::value::Value::Asset(a),
                    ..
                } = op
                {
                    out.push((a.hash, a.size));
                }
            }
        }
        out
    }

    /// Commits every collected batch in one store transaction; returns
    /// their acknowledgements in order.
    fn commit_collected(&mut self) -> Vec<Input> {
        let batches = std::mem::take(&mut self.to_commit);
        if batches.is_empty() {
            return Vec::new();
        }
        let mut meta = Vec::with_capacity(batches.len());
        let mut work = Vec::with_capacity(batches.len());
        let me = self.local.actor();
        for b in batches {
            let newest = b.bundles.iter().map(|x| x.body().hlc).max();
            let assets = Self::assets_in(&b.bundles);
            let source = self.name_of(&b.peer);
            // This device's own tip before the commit, when a batch carries
            // bundles of its own actor (see `new_incarnation`).
            let my_tip = b
                .bundles
                .iter()
                .any(|x| x.body().author == me)
                .then(|| self.local.store().author_tip(&b.workspace, &me).ok())
                .flatten()
                .map(|t| t.last_seq);
            work.push(troupe_storage::Received {
                workspace: b.workspace,
                bundles: b.bundles,
                source: source.clone(),
                wire: b.wire,
            });
            meta.push((
                b.peer,
                b.workspace,
                b.batch_id,
                newest,
                assets,
                source,
                my_tip,
            ));
        }
        let results: Vec<Result<troupe_storage::BatchOutcome, String>> =
            match self.local.store().commit_received_deferred(work) {
                Ok(r) => r
                    .into_iter()
                    .map(|r| r.map_err(|e| e.to_string()))
                    .collect(),
                Err(e) => {
                    self.check_store(&e);
                    meta.iter().map(|_| Err(e.to_string())).collect()
                }
            };
        meta.into_iter()
            .zip(results)
            .map(
                |((peer, workspace, batch_id, newest, assets, source, my_tip), r)| {
                    self.committed(
                        peer,
                        workspace,
                        (batch_id, newest, assets, source, my_tip),
                        r,
                    )
                },
            )
            .collect()
    }

    fn committed(
        &mut self,
        peer: troupe_protocol::sync::PeerId,
        workspace: WorkspaceId,
        (batch_id, newest, assets, source, my_tip): BatchMeta,
        result: Result<troupe_storage::BatchOutcome, String>,
    ) -> Input {
        let me = self.local.actor();
        match result {
            Ok(outcome) => {
                self.unflushed = true;
                if let Some(h) = newest {
                    self.local.observe(h);
                }
                let n = outcome.committed.len() as u64;
                if n > 0 {
                    if let Ok(mut s) = self.status.lock() {
                        s.bundles_committed += n;
                    }
                    debug!(from = %source, bundles = n, "committed a batch");
                    self.publish(NodeEvent::BundlesReceived {
                        workspace: workspace.to_string(),
                        from: source.clone(),
                        bundles: n,
                    });
                }
                if !outcome.conflicted.is_empty() {
                    self.publish(NodeEvent::Conflicts {
                        workspace: workspace.to_string(),
                        fields: outcome.conflicted.iter().map(ToString::to_string).collect(),
                    });
                }
                if let Some(tip) = my_tip {
                    let newer = outcome
                        .committed
                        .iter()
                        .any(|(a, seq, _)| *a == me && *seq > tip);
                    let forked = outcome.forks.iter().any(|(a, _)| *a == me);
                    if newer || forked {
                        self.new_incarnation(if newer {
                            "a peer holds newer bundles of this device than its own store (restored from a backup or copied)"
                        } else {
                            "a peer holds a different bundle for one of this device's sequence numbers (the data dir was copied)"
                        });
                    }
                }
                for (author, seq) in &outcome.forks {
                    warn!(%author, seq, "two different bundles claim the same author and seq; both are in quarantine");
                }
                for (id, author, seq, reason) in &outcome.quarantined {
                    warn!(id, %author, seq, %reason, "the store quarantined a bundle from a peer");
                }
                if !assets.is_empty() {
                    // An asset whose state cannot be read is asked for (a
                    // held one is answered as held).
                    let held =
                        blobs_where(self.local.store(), assets.iter().map(|(h, _)| h), |s| {
                            matches!(s, troupe_protocol::sync::BlobState::Complete { .. })
                        });
                    for ((hash, size), held) in assets.into_iter().zip(held) {
                        if !held {
                            self.blob_wants.push((workspace, hash, size));
                        }
                    }
                }
                Input::BatchCommitted {
                    peer,
                    workspace,
                    batch_id,
                }
            }
            Err(e) => {
                warn!(error = %e, from = %source, "could not commit a batch; nothing of it was applied");
                Input::BatchRejected {
                    peer,
                    workspace,
                    batch_id,
                    reason: e.to_string(),
                }
            }
        }
    }

    /// `peer`'s name (what [`peer_name`] makes), from the cache.
    fn name_of(&mut self, peer: &troupe_protocol::sync::PeerId) -> String {
        if let Some(name) = self.names.get(peer) {
            return name.clone();
        }
        if self.names.len() >= MAX_NAMES {
            self.names.clear();
        }
        let name = peer_name(peer);
        self.names.insert(*peer, name.clone());
        name
    }

    fn event(&mut self, ev: SyncEvent) {
        match ev {
            SyncEvent::PeerJoined { peer, workspace } => {
                let name = self.name_of(&peer);
                info!(peer = %name, %workspace, "peer proved membership; syncing");
                if let Some(p) = identity::libp2p_peer(&peer) {
                    let _ = self.net.send(NetCommand::Member { peer: p });
                }
                self.publish(NodeEvent::SyncStarted {
                    peer_id: name,
                    workspace: workspace.to_string(),
                });
            }
            SyncEvent::Progress {
                peer,
                workspace,
                received,
                expected,
            } => {
                let key = (peer, workspace);
                if received >= expected {
                    // Everything asked for has come: always told.
                    self.progress_told.remove(&key);
                } else {
                    if !self.progress_told.contains_key(&key)
                        && self.progress_told.len() >= MAX_NAMES
                    {
                        self.progress_told.clear();
                    }
                    let told = self
                        .progress_told
                        .entry(key)
                        .or_insert_with(|| Throttle::new(PROGRESS_EVERY));
                    if told.due(Instant::now()).is_none() {
                        return;
                    }
                }
                let name = self.name_of(&peer);
                debug!(peer = %name, received, expected, "sync progress");
                self.publish(NodeEvent::SyncProgress {
                    peer_id: name,
                    workspace: workspace.to_string(),
                    received,
                    expected,
                });
            }
            SyncEvent::UpToDate { peer, workspace } => {
                let name = self.name_of(&peer);
                info!(peer = %name, %workspace, "up to date with peer");
                if let Ok(mut s) = self.status.lock() {
                    let list = s.up_to_date.entry(workspace.to_string()).or_default();
                    if !list.contains(&name) {
                        list.push(name.clone());
                    }
                }
                self.publish(NodeEvent::UpToDate {
                    peer_id: name,
                    workspace: workspace.to_string(),
                });
            }
            SyncEvent::PeerBlamed { peer, reason } => {
                let name = self.name_of(&peer);
                warn!(peer = %name, %reason, "peer sent something invalid");
                self.publish(NodeEvent::PeerBlamed {
                    peer_id: name,
                    reason,
                });
            }
            SyncEvent::BlobComplete { workspace, hash } => {
                info!(%workspace, blob = %hash, "received an asset");
                self.publish(NodeEvent::AssetReceived {
                    workspace: workspace.to_string(),
                    asset: hash.to_string(),
                });
            }
            SyncEvent::BlobUnavailable { workspace, hash } => {
                warn!(%workspace, blob = %hash, "no connected member has this asset's bytes");
                self.publish(NodeEvent::AssetUnavailable {
                    workspace: workspace.to_string(),
                    asset: hash.to_string(),
                });
            }
            SyncEvent::RepairFailed {
                workspace,
                author,
                seq,
            } => {
                warn!(%workspace, %author, seq, "no connected peer has a clean copy of a damaged bundle yet");
            }
        }
    }

    /// Takes the read snapshot a start-up scrub checks off this thread (see
    /// [`troupe_storage::Store::scrub_pass`]), so sync and local writes go
    /// on while every stored bundle and asset is re-read.
    ///
    /// # Errors
    /// The store's error when no snapshot can be taken.
    pub fn scrub_pass(
        &mut self,
    ) -> Result<troupe_storage::ScrubPass, troupe_storage::QuarantineError> {
        if self.still_closed() {
            return Err(troupe_storage::StorageFailure::closed().into());
        }
        self.local.store().scrub_pass()
    }

    /// Ends a scrub (see `Store::scrub_apply`): damaged bundles go to
    /// quarantine and a clean copy of each is asked of connected members
    /// (and, because quarantined bundles leave holes in the ranges, of every
    /// member that connects later); damaged assets are dropped and fetched
    /// again. Returns how many bundles need repair.
    ///
    /// # Errors
    /// The store's error when the scrub itself cannot run.
    pub fn scrub_finish(
        &mut self,
        findings: troupe_storage::ScrubFindings,
    ) -> Result<usize, troupe_storage::QuarantineError> {
        if self.still_closed() {
            return Err(troupe_storage::StorageFailure::closed().into());
        }
        let report = self.local.store().scrub_apply(findings)?;
        for h in &report.blobs {
            warn!(asset = %h, "a stored asset failed verification and was dropped; it is fetched again");
        }
        if !report.blobs.is_empty()
            && let Err(e) = self.want_missing_assets()
        {
            warn!(error = %e, "could not list the assets to fetch again");
        }
        let needed = report.bundles;
        for r in &needed {
            warn!(workspace = %r.workspace, author = %r.author, seq = r.seq, "a stored bundle failed verification and was quarantined; asking members for a clean copy");
            if let Some(hash) = r.expected {
                self.input(Input::RepairWanted {
                    workspace: r.workspace,
                    author: r.author,
                    seq: r.seq,
                    hash,
                });
            }
        }
        Ok(needed.len())
    }

    /// Asks members for every asset the workspaces reference whose bytes are
    /// not complete here (a receive cut short by a restart resumes from what
    /// is held). Returns how many were asked for.
    ///
    /// # Errors
    /// The store's read error.
    pub fn want_missing_assets(&mut self) -> Result<usize, troupe_storage::ReadError> {
        let wants = blobs_wanted(self.missing_assets()?);
        let n = wants.len();
        if n > 0 {
            self.inputs(wants);
        }
        Ok(n)
    }

    /// Every asset the workspaces reference whose bytes are not complete
    /// here, with its workspace and size.
    fn missing_assets(
        &self,
    ) -> Result<Vec<(WorkspaceId, troupe_protocol::ids::BlobHash, u64)>, troupe_storage::ReadError>
    {
        use troupe_protocol::sync::BlobState;
        // The asset-reference table names every referenced asset without
        // reading fields; only workspaces with a missing asset are read, to
        // learn its size.
        let store = self.local.store();
        let mut missing: BTreeMap<WorkspaceId, Vec<troupe_protocol::ids::BlobHash>> =
            BTreeMap::new();
        let refs = store.asset_references()?;
        let done = blobs_where(store, refs.iter().map(|(h, _)| h), |s| {
            matches!(s, BlobState::Complete { .. } | BlobState::Unavailable)
        });
        for ((hash, ws), done) in refs.into_iter().zip(done) {
            if !done {
                missing.entry(ws).or_default().push(hash);
            }
        }
        let mut wants = Vec::new();
        for (ws, hashes) in missing {
            let mut sizes: BTreeMap<troupe_protocol::ids::BlobHash, u64> = BTreeMap::new();
            for (_, heads) in store.fields(&ws)? {
                for h in heads {
                    if let Some(troupe_protocol::value::Value::Asset(a)) = h.value
                        && hashes.contains(&a.hash)
                    {
                        sizes.insert(a.hash, a.size);
                    }
                }
            }
            wants.extend(sizes.into_iter().map(|(hash, size)| (ws, hash, size)));
        }
        Ok(wants)
    }

    /// Whether the store has to be opened again after `error`; if so, that
    /// is done at the end of the running call ([`SyncCore::recover_store`]).
    fn check_store(&mut self, error: &dyn std::fmt::Display) -> bool {
        // Noted already in this call: the store is not probed again.
        if self.recovery.has_fault() {
            return true;
        }
        if self.local.store().needs_reopen().is_none() {
            return false;
        }
        self.recovery.note(error);
        true
    }

    /// The inputs the engine may see. Its peers are tracked, for a reopen
    /// to disconnect; while sessions are paused after one, a new connection
    /// is closed again instead of starting a session (its dialler comes
    /// back later).
    fn admit(&mut self, inputs: Vec<Input>) -> Vec<Input> {
        let paused = self.recovery.paused(Instant::now());
        let mut admitted = Vec::with_capacity(inputs.len());
        for input in inputs {
            match &input {
                Input::PeerUp { peer } => {
                    if let Some(left) = paused {
                        if let Some(p) = identity::libp2p_peer(peer) {
                            let reason = format!(
                                "this device's store was opened again after a failed write; syncing resumes in {} s",
                                left.as_secs().max(1)
                            );
                            let _ = self.net.send(NetCommand::Disconnect { peer: p, reason });
                        }
                        continue;
                    }
                    self.connected.insert(*peer);
                }
                Input::PeerDown { peer } => {
                    self.connected.remove(peer);
                }
                _ => {}
            }
            admitted.push(input);
        }
        admitted
    }

    /// After a call in which the store failed a write: closes the store and
    /// opens it again from its file (as of its last flush), and starts the
    /// sync over with every peer from what is on disk, after a pause (see
    /// [`crate::store_recovery`]). Local writes waiting for the disk are
    /// answered with the failure. True when it did, so the caller drops the
    /// rest of the call's work.
    fn recover_store(&mut self) -> bool {
        let Some(first) = self.recovery.take_fault() else {
            return false;
        };
        let said = crate::store_recovery::describe(&first, self.local.path());
        let lost = || {
            Err(crate::ops::OpsError::Store(format!(
                "the change may not have reached the disk: {said}"
            )))
        };
        for (tx, _) in std::mem::take(&mut self.pending) {
            let _ = tx.send(lost());
        }
        for (_, tx) in std::mem::take(&mut self.queued_sets) {
            let _ = tx.send(lost());
        }
        self.pending_changes.clear();
        self.reopen_store(said);
        true
    }

    /// Opens the store again from its file after `said` (a failure in
    /// words). Opened, the sync starts over after a pause; not opened (a
    /// full disk refuses the writes an open makes), the store stays closed
    /// and is tried again after a pause, or at a command after it.
    fn reopen_store(&mut self, said: String) {
        let now = Instant::now();
        match self.local.reopen() {
            Ok(report) => {
                if let Some(r) = report {
                    crate::local::log_salvage(&r);
                }
                let pause = self.recovery.reopened(now);
                warn!(
                    "{said}. The store was closed and opened again as of its last flush; the sync with every peer starts over from what is on disk in {} s, and nobody is blamed",
                    pause.as_secs()
                );
                self.restart_sync();
                if let Ok(mut s) = self.status.lock() {
                    s.store_reopened += 1;
                    s.store_failure = Some(said);
                }
            }
            Err(e) => {
                let retry = self.recovery.close(now, said.clone());
                let why = format!(
                    "{said}. The store could not be opened again ({e}); it is tried again in {} s, and until then the node answers no command and syncs with nobody",
                    retry.as_secs()
                );
                tracing::error!("{why}");
                self.restart_sync();
                if let Ok(mut s) = self.status.lock() {
                    s.store_failure = Some(why);
                }
                // Woken to try again, whether or not anything else comes.
                let at = Some(self.now() + retry.as_millis() as Millis + 1);
                self.last_wake = Some(at);
                let _ = self.net.send(NetCommand::WakeAt(at));
            }
        }
    }

    /// Tries a closed store again once its pause is over; true while it
    /// stays closed.
    fn still_closed(&mut self) -> bool {
        let Some(said) = self.recovery.closed().map(str::to_owned) else {
            return false;
        };
        if self.recovery.paused(Instant::now()).is_none() {
            self.reopen_store(said);
        }
        self.recovery.closed().is_some()
    }

    /// Starts the sync over from what the store holds: a new engine (nothing
    /// the old one knew of sessions, batches or fetches holds any more),
    /// every peer disconnected (its dialler comes back after the pause), and
    /// the assets the store lacks asked for again, as after a start.
    fn restart_sync(&mut self) {
        let workspaces = match self.local.store().workspaces() {
            Ok(list) => list.into_iter().map(|w| w.secret).collect(),
            Err(e) => {
                warn!(error = %e, "cannot read the workspaces of the reopened store");
                Vec::new()
            }
        };
        self.engine = engine_for(self.network_id, workspaces);
        for peer in std::mem::take(&mut self.connected) {
            if let Some(p) = identity::libp2p_peer(&peer) {
                let _ = self.net.send(NetCommand::Disconnect {
                    peer: p,
                    reason: "this device's store failed a write; the sync starts over".into(),
                });
            }
        }
        self.to_commit.clear();
        self.blob_writes.clear();
        self.blob_wants = self.missing_assets().unwrap_or_else(|e| {
            warn!(error = %e, "cannot list the assets to fetch again");
            Vec::new()
        });
        self.followups.clear();
        self.deferred_events.clear();
        self.held_events = None;
        self.blob_flush = Default::default();
        self.progress_told.clear();
        self.unflushed = false;
        self.last_wake = None;
        if let Ok(mut s) = self.status.lock() {
            s.up_to_date.clear();
        }
    }

    /// Forgets up-to-date marks for a peer that left.
    pub fn peer_gone(&mut self, peer: &libp2p::PeerId) {
        let name = peer.to_string();
        if let Ok(mut s) = self.status.lock() {
            for list in s.up_to_date.values_mut() {
                list.retain(|p| p != &name);
            }
        }
    }
}

/// A new engine for `workspaces`, bound to the key the transport
/// authenticates (see [`SyncCore::new`]): at start, and when a reopened
/// store starts the sync over.
fn engine_for(
    network_id: troupe_protocol::ids::ActorId,
    workspaces: Vec<WorkspaceSecret>,
) -> Engine {
    Engine::new(EngineConfig {
        local_peer: network_id.0,
        workspaces,
        rng_seed: rand::random(),
    })
}

/// Asks the engine for assets: (workspace, blob, size) each.
fn blobs_wanted(wants: Vec<(WorkspaceId, troupe_protocol::ids::BlobHash, u64)>) -> Vec<Input> {
    wants
        .into_iter()
        .map(|(workspace, hash, size)| Input::BlobWanted {
            workspace,
            hash,
            size,
        })
        .collect()
}

/// A batch the engine asked to commit, waiting for the end of the call.
struct PendingBatch {
    peer: troupe_protocol::sync::PeerId,
    workspace: WorkspaceId,
    batch_id: u64,
    bundles: Vec<troupe_protocol::bundle::Bundle>,
    /// The batch as it arrived, which the journal keeps instead of the
    /// bundles' bytes.
    wire: Option<troupe_protocol::sync::WireCopy>,
}

/// For each of `hashes`, in order, whether its blob's state is one `done`
/// accepts, all read in one transaction (a batch or a starting node names
/// hundreds of assets). A state that cannot be read is not accepted.
fn blobs_where<'h>(
    store: &troupe_storage::Store,
    hashes: impl ExactSizeIterator<Item = &'h troupe_protocol::ids::BlobHash>,
    done: impl Fn(&troupe_protocol::sync::BlobState) -> bool,
) -> Vec<bool> {
    let n = hashes.len();
    match store.blob_states(hashes) {
        Ok(states) => states.iter().map(|s| s.as_ref().is_ok_and(&done)).collect(),
        Err(_) => vec![false; n],
    }
}

/// A sync peer as its libp2p id string (what `troupe peers` shows).
fn peer_name(peer: &troupe_protocol::sync::PeerId) -> String {
    identity::libp2p_peer(peer)
        .map(|p| p.to_string())
        .unwrap_or_else(|| format!("{peer:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::ops::Request;

    fn core(dir: &std::path::Path) -> SyncCore {
        let (identity, _) = Identity::load_or_create(dir).unwrap();
        let (local, _) = Local::open(dir, &identity).unwrap();
        let (net, _) = tokio::sync::mpsc::unbounded_channel();
        SyncCore::new(
            local,
            identity.actor_id(),
            net,
            EventBus::new(),
            Arc::default(),
            Instant::now(),
        )
        .unwrap()
    }

    #[test]
    fn sync_progress_reaches_subscribers_a_few_times_a_second_and_always_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = core(dir.path());
        let mut rx = c.events.subscribe();
        let other = tempfile::tempdir().unwrap();
        let (identity, _) = Identity::load_or_create(other.path()).unwrap();
        let peer = troupe_protocol::sync::PeerId(identity.actor_id().0);
        let workspace = WorkspaceId([7; 32]);
        let progress = |received| SyncEvent::Progress {
            peer,
            workspace,
            received,
            expected: 1000,
        };
        // A batch's worth at a time, far faster than PROGRESS_EVERY.
        for received in (100..=900).step_by(100) {
            c.event(progress(received));
        }
        let mut told = Vec::new();
        while let Ok(NodeEvent::SyncProgress {
            received, peer_id, ..
        }) = rx.try_recv()
        {
            assert_eq!(peer_id, identity.peer_id().to_string());
            told.push(received);
        }
        assert_eq!(told, [100], "one event for a burst of batches");
        // Once PROGRESS_EVERY has passed, the next batch is told of.
        std::thread::sleep(PROGRESS_EVERY);
        c.event(progress(950));
        c.event(progress(960));
        // The last batch always is, however soon after.
        c.event(progress(1000));
        let mut told = Vec::new();
        while let Ok(NodeEvent::SyncProgress { received, .. }) = rx.try_recv() {
            told.push(received);
        }
        assert_eq!(told, [950, 1000]);
    }

    #[test]
    fn a_read_after_writes_of_its_run_sees_them_only_once_they_are_durable_and_answered() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = core(dir.path());
        let create = Request::WorkspaceCreate {
            name: "show".into(),
            kind: "show".into(),
        };
        c.write(|l| crate::ops::execute(l, create)).unwrap();
        // Two writes queued in the run, not yet flushed or answered.
        let mut answers = Vec::new();
        for (i, v) in ["555-0101", "555-0102"].into_iter().enumerate() {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let set = Request::Set {
                workspace: "show".into(),
                path: format!("contacts.person/p{i}/phone"),
                value: v.into(),
            };
            c.command_deferred(set, tx);
            answers.push(rx);
        }
        assert_eq!(
            c.queued_sets.len(),
            2,
            "the sets wait for the end of the run"
        );
        // A read in the same run: the writes are made durable and answered
        // before it runs, so what it shows is on disk.
        let get = Request::Get {
            workspace: "show".into(),
            path: "contacts.person/p1/phone".into(),
        };
        let seen = c
            .write(|l| {
                let on_disk = !l.store().journal_waiting();
                crate::ops::execute(l, get).map(|(v, ch)| ((v, on_disk), ch))
            })
            .unwrap();
        assert!(
            seen.1,
            "the read ran with writes still waiting for the disk"
        );
        assert_eq!(seen.0["value"], "555-0102");
        for mut rx in answers {
            let answered = rx.try_recv().expect("answered before the read ran");
            assert!(answered.is_ok());
        }
    }
}
