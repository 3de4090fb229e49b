//! The one task that connects the network to the [`SyncCore`].
//!
//! It turns connection events, inbound streams, frames, timers and the core's
//! [`NetCommand`]s into engine inputs and network actions (STYLE rules 9-10):
//!
//! - **Streams**: each side writes on the stream it opened and reads the one
//!   the peer opened, so nobody races to open "the" stream. A peer is "up"
//!   for the engine from its first connection event or its first inbound
//!   stream, whichever comes first; from then on its frames are delivered.
//! - **Generations**: every up/down cycle of a peer gets a new generation;
//!   frames read on a stream from an older generation are dropped, so a stale
//!   frame never reaches a new session.
//! - **Backpressure**: readers hand frames over a bounded channel, so a fast
//!   peer waits for the store instead of filling memory; writers have a
//!   bounded queue, and a peer that stops reading is disconnected.
//! - **Timers**: the core says when it next wants `Input::Timeout`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use libp2p::Stream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc};
use tracing::{Instrument, debug, info, warn};
use troupe_protocol::sync::message::BatchCodec;
use troupe_protocol::sync::{Input, PreparedFrame};

use crate::dialer::OTHER_VERSION_RETRY;
use crate::events::{EventBus, NodeEvent};
use crate::framing::{FrameReader, write_frames};
use crate::identity;
use crate::peers::OtherVersionNews;
use crate::shutdown::Shutdown;
use crate::storage_actor::ActorHandle;
use crate::swarm::{ConnectionEvent, Inbound, NetError, NetworkHandle};
use crate::sync_core::{NetCommand, SyncCore};

/// Frames waiting to be written to one peer before it counts as not reading.
/// The engine keeps at most a couple of batches, its own wants and the blob
/// chunks a peer may ask at once (`MAX_BLOB_WANTS_IN_FLIGHT`, 1,024) in
/// flight per peer, so a healthy peer never comes close.
pub const WRITE_QUEUE: usize = 4096;
/// Frames read from all peers and not yet handed to the core.
pub const READ_QUEUE: usize = 1024;
/// Bytes that frames read from all peers and not yet through the core may
/// hold, decoded ([`PreparedFrame::footprint`], at least their size on the
/// wire): a reader waits for room before it reads a frame's payload and
/// again, for what the decoded frame holds, before it queues it, so however
/// peers send, the queue holds at most this much (plus one frame being
/// read and decoded per stream).
pub const READ_BYTES: usize = 32 << 20;
/// At most this many waiting frames go to the core in one call: the call's
/// writes (received batches and blob chunks) share one transaction, so many
/// small assets cost one commit per call, not per asset.
pub const FRAMES_PER_CALL: usize = 512;
/// A call stops taking waiting frames once they hold this many bytes (a
/// window of large blob chunks), so one call's memory stays bounded.
pub const BYTES_PER_CALL: usize = 16 << 20;
/// A writer gathers waiting frames to one peer into one write and flush
/// until they hold this many bytes.
pub const WRITE_RUN_BYTES: usize = 1 << 20;

/// What the driver needs; see [`start`].
pub struct DriverParts {
    /// The core on the storage thread.
    pub core: ActorHandle<SyncCore>,
    /// The swarm.
    pub net: NetworkHandle,
    /// Streams peers opened to us.
    pub inbound: Inbound,
    /// The core's requests.
    pub commands: mpsc::UnboundedReceiver<NetCommand>,
    /// The instant the core measures its milliseconds from.
    pub epoch: Instant,
    /// Where a peer found to run another version of Troupe is announced.
    pub events: EventBus,
}

/// A frame read from a peer: who, on which stream generation, its length
/// on the wire, the frame decoded by the reader (so the storage thread does
/// not decode it: [`PreparedFrame`]), and its room in the read budget
/// ([`READ_BYTES`]).
type QueuedFrame = (PeerId, u64, usize, Box<PreparedFrame>, OwnedSemaphorePermit);

struct PeerLink {
    generation: u64,
    tx: mpsc::Sender<Vec<u8>>,
    /// Set once the core has seen this session's peer prove membership of
    /// a workspace: until then its readers leave batch payloads undecoded
    /// (see [`read_loop`]).
    member: Arc<AtomicBool>,
}

struct Driver {
    core: ActorHandle<SyncCore>,
    net: NetworkHandle,
    epoch: Instant,
    links: BTreeMap<PeerId, PeerLink>,
    generation: u64,
    frames_tx: mpsc::Sender<QueuedFrame>,
    /// Room for read frames, in bytes ([`READ_BYTES`]).
    read_budget: Arc<Semaphore>,
    ended_tx: mpsc::UnboundedSender<(PeerId, u64, String)>,
    events: EventBus,
    shutdown: Shutdown,
}

/// Subscribes to connection events now (so none are missed) and spawns the
/// driver task on `stage`.
pub fn start(parts: DriverParts, stage: &Shutdown) {
    let conn = parts.net.connection_events();
    let (frames_tx, frames_rx) = mpsc::channel(READ_QUEUE);
    let read_budget = Arc::new(Semaphore::new(READ_BYTES));
    let (ended_tx, ended_rx) = mpsc::unbounded_channel();
    let driver = Driver {
        core: parts.core,
        net: parts.net,
        epoch: parts.epoch,
        links: BTreeMap::new(),
        generation: 0,
        frames_tx,
        read_budget,
        ended_tx,
        events: parts.events,
        shutdown: stage.clone(),
    };
    stage.spawn(
        driver
            .run(conn, parts.inbound, parts.commands, frames_rx, ended_rx)
            .in_current_span(),
    );
}

impl Driver {
    async fn run(
        mut self,
        mut conn: broadcast::Receiver<ConnectionEvent>,
        mut inbound: Inbound,
        mut commands: mpsc::UnboundedReceiver<NetCommand>,
        mut frames_rx: mpsc::Receiver<QueuedFrame>,
        mut ended_rx: mpsc::UnboundedReceiver<(PeerId, u64, String)>,
    ) {
        for peer in self.net.peers().snapshot().connected {
            if let Ok(p) = peer.peer_id.parse() {
                self.up(p).await;
            }
        }
        let mut wake: Option<Instant> = None;
        let shutdown = self.shutdown.clone();
        loop {
            let at = wake;
            let sleep = async move {
                match at {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            let ok = tokio::select! {
                // The core's sends first: they are the answers of the call
                // that just returned, and must not wait behind the next one.
                biased;
                _ = shutdown.triggered() => break,
                Some(cmd) = commands.recv() => {
                    match cmd {
                        NetCommand::WakeAt(at) => {
                            wake = at.map(|ms| self.epoch + Duration::from_millis(ms));
                            true
                        }
                        NetCommand::Continue => self.input(Input::Continue).await,
                        other => {
                            self.command(other);
                            true
                        }
                    }
                }
                ev = conn.recv() => match ev {
                    Ok(ConnectionEvent::Up(p)) => self.up(p).await,
                    Ok(ConnectionEvent::Down(p)) => self.down(p).await,
                    Err(broadcast::error::RecvError::Lagged(_)) => self.resync().await,
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                next = inbound.recv() => match next {
                    Some((p, stream)) => self.inbound(p, stream).await,
                    None => break,
                },
                Some(first) = frames_rx.recv() => {
                    // Take every frame already waiting (up to a bound) in one
                    // trip to the storage thread.
                    let mut bytes = first.2;
                    let mut frames = vec![first];
                    while frames.len() < FRAMES_PER_CALL && bytes < BYTES_PER_CALL {
                        match frames_rx.try_recv() {
                            Ok(f) => {
                                bytes += f.2;
                                frames.push(f);
                            }
                            Err(_) => break,
                        }
                    }
                    // The frames' room in the read budget is given back
                    // once the core has been through them.
                    let (frames, _room): (Vec<_>, Vec<_>) = frames
                        .into_iter()
                        .map(|(p, g, _, f, room)| ((p, g, f), room))
                        .unzip();
                    self.frames(frames).await
                }
                Some((p, generation, why)) = ended_rx.recv() => {
                    self.ended(p, generation, why).await;
                    true
                }
                _ = sleep => {
                    wake = None;
                    self.input(Input::Timeout).await
                }
            };
            if !ok {
                warn!("the storage thread stopped; sync stops");
                break;
            }
        }
        debug!("sync driver stopped");
    }

    /// Feeds the core; false when the core has stopped.
    async fn input(&self, input: Input) -> bool {
        self.core.call(move |c| c.input(input)).await.is_ok()
    }

    async fn up(&mut self, peer: PeerId) -> bool {
        if self.links.contains_key(&peer) {
            return true;
        }
        let Some(sync_peer) = identity::sync_peer(&peer) else {
            warn!(%peer, "peer key is not ed25519; cannot sync with it");
            return true;
        };
        self.generation += 1;
        let generation = self.generation;
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        self.links.insert(
            peer,
            PeerLink {
                generation,
                tx,
                member: Arc::new(AtomicBool::new(false)),
            },
        );
        let writer = write_loop(
            self.net.clone(),
            peer,
            generation,
            rx,
            self.ended_tx.clone(),
            self.events.clone(),
        );
        self.shutdown.spawn(writer.in_current_span());
        debug!(%peer, generation, "peer up for sync");
        self.input(Input::PeerUp { peer: sync_peer }).await
    }

    async fn down(&mut self, peer: PeerId) -> bool {
        if self.links.remove(&peer).is_none() {
            return true;
        }
        let Some(sync_peer) = identity::sync_peer(&peer) else {
            return true;
        };
        debug!(%peer, "peer down for sync");
        self.core
            .call(move |c| {
                c.input(Input::PeerDown { peer: sync_peer });
                c.peer_gone(&peer);
            })
            .await
            .is_ok()
    }

    /// After missing connection events: make the links match the peer table.
    async fn resync(&mut self) -> bool {
        let connected: Vec<PeerId> = self
            .net
            .peers()
            .snapshot()
            .connected
            .iter()
            .filter_map(|p| p.peer_id.parse().ok())
            .collect();
        let gone: Vec<PeerId> = self
            .links
            .keys()
            .filter(|p| !connected.contains(p))
            .copied()
            .collect();
        for p in gone {
            if !self.down(p).await {
                return false;
            }
        }
        for p in connected {
            if !self.up(p).await {
                return false;
            }
        }
        true
    }

    async fn inbound(&mut self, peer: PeerId, stream: Stream) -> bool {
        if !self.up(peer).await {
            return false;
        }
        let Some(link) = self.links.get(&peer) else {
            return true;
        };
        let reader = read_loop(
            peer,
            link.generation,
            link.member.clone(),
            stream,
            self.frames_tx.clone(),
            self.read_budget.clone(),
            self.ended_tx.clone(),
        );
        self.shutdown.spawn(reader.in_current_span());
        true
    }

    async fn frames(&self, frames: Vec<(PeerId, u64, Box<PreparedFrame>)>) -> bool {
        let inputs: Vec<Input> = frames
            .into_iter()
            .filter(|(peer, generation, _)| {
                // A frame from a stale stream belongs to a session that is over.
                self.links
                    .get(peer)
                    .is_some_and(|l| l.generation == *generation)
            })
            .filter_map(|(peer, _, frame)| {
                identity::sync_peer(&peer).map(|p| Input::Prepared { peer: p, frame })
            })
            .collect();
        if inputs.is_empty() {
            return true;
        }
        self.core.call(move |c| c.inputs(inputs)).await.is_ok()
    }

    /// A stream of the current generation ended: the session cannot go on,
    /// so the connection is closed (the dialler reconnects, and both sides
    /// start a fresh session from their committed ranges).
    async fn ended(&mut self, peer: PeerId, generation: u64, why: String) {
        if self
            .links
            .get(&peer)
            .is_some_and(|l| l.generation == generation)
        {
            info!(%peer, %why, "sync stream ended; closing the connection");
            self.disconnect(peer);
        }
    }

    fn command(&mut self, cmd: NetCommand) {
        match cmd {
            NetCommand::Send { peer, bytes } => {
                let Some(link) = self.links.get(&peer) else {
                    debug!(%peer, "dropping a frame for a peer that is gone");
                    return;
                };
                if let Err(mpsc::error::TrySendError::Full(_)) = link.tx.try_send(bytes) {
                    warn!(%peer, "peer is not reading its sync stream; disconnecting");
                    self.disconnect(peer);
                }
            }
            NetCommand::Disconnect { peer, reason } => {
                debug!(%peer, %reason, "engine asked to disconnect");
                self.disconnect(peer);
            }
            NetCommand::Member { peer } => {
                if let Some(link) = self.links.get(&peer) {
                    link.member.store(true, Ordering::Release);
                }
            }
            NetCommand::WakeAt(_) | NetCommand::Continue => {}
        }
    }

    fn disconnect(&self, peer: PeerId) {
        let net = self.net.clone();
        self.shutdown.spawn(async move {
            let _ = net.disconnect(peer).await;
        });
    }
}

async fn write_loop(
    net: NetworkHandle,
    peer: PeerId,
    generation: u64,
    mut rx: mpsc::Receiver<Vec<u8>>,
    ended: mpsc::UnboundedSender<(PeerId, u64, String)>,
    events: EventBus,
) {
    let mut stream = match net.open_stream(peer).await {
        Ok(s) => {
            net.peers().same_version(&peer);
            s
        }
        Err(e @ NetError::OtherVersion(_)) => {
            if let OtherVersionNews::New { tell } = net.peers().other_version(peer) {
                if let Some(untold) = tell {
                    let more = match untold {
                        0 => String::new(),
                        n => format!(
                            " ({n} more devices on another version connected since the last \
                             such warning; `troupe peers` lists them)"
                        ),
                    };
                    warn!(
                        %peer,
                        "device {peer} runs another version of Troupe: it does not speak {}, \
                         so nothing syncs with it. Update both devices to the same version; \
                         this node tries it again every {} seconds{more}",
                        net.protocol(),
                        OTHER_VERSION_RETRY.as_secs()
                    );
                }
                events.publish(NodeEvent::PeerOtherVersion {
                    peer_id: peer.to_string(),
                });
            }
            let _ = ended.send((peer, generation, e.to_string()));
            return;
        }
        Err(e) => {
            let _ = ended.send((peer, generation, format!("cannot open a stream: {e}")));
            return;
        }
    };
    // Frames already waiting go out in one write and one flush.
    let mut run: Vec<Vec<u8>> = Vec::new();
    let mut scratch = Vec::new();
    while let Some(frame) = rx.recv().await {
        let mut bytes = frame.len();
        run.push(frame);
        while bytes < WRITE_RUN_BYTES {
            match rx.try_recv() {
                Ok(f) => {
                    bytes += f.len();
                    run.push(f);
                }
                Err(_) => break,
            }
        }
        if let Err(e) = write_frames(&mut stream, &run, &mut scratch).await {
            let _ = ended.send((peer, generation, format!("write failed: {e}")));
            return;
        }
        run.clear();
        // A run of large frames leaves no large buffer behind.
        scratch.shrink_to(WRITE_RUN_BYTES);
    }
    // The link was dropped (peer down or shutdown): close our side.
    let _ = futures::AsyncWriteExt::close(&mut stream).await;
}

/// Reads one stream's frames and decodes them here, off the storage
/// thread. A batch's payload is decoded only once `member` is set: before
/// that the peer has proved nothing, and a batch of a few KiB can inflate
/// to hundreds of MiB of bundles (zstd, then a few plain bytes an op), so
/// the frame goes to the engine with its payload as it arrived, and the
/// engine refuses it, or decodes it itself once the peer shares its
/// workspace ([`PreparedFrame::envelope`]).
async fn read_loop(
    peer: PeerId,
    generation: u64,
    member: Arc<AtomicBool>,
    mut stream: Stream,
    frames: mpsc::Sender<QueuedFrame>,
    budget: Arc<Semaphore>,
    ended: mpsc::UnboundedSender<(PeerId, u64, String)>,
) {
    // Decompression state for this stream's batches (reused, as the
    // engine's own is).
    let mut codec = BatchCodec::default();
    let mut reader = FrameReader::default();
    let why = loop {
        match reader.next(&mut stream).await {
            Ok(Some(bytes)) => {
                // Frames are at most MAX_FRAME, well under the budget.
                let want = bytes.len().clamp(1, READ_BYTES) as u32;
                let Ok(room) = budget.clone().acquire_many_owned(want).await else {
                    return; // the driver stopped
                };
                // Decoded here, on this task's thread, while the storage
                // thread works on earlier frames.
                let t = Instant::now();
                let frame = Box::new(if member.load(Ordering::Acquire) {
                    PreparedFrame::prepare(bytes, &mut codec)
                } else {
                    PreparedFrame::envelope(bytes)
                });
                // What waits for the core is charged by what it holds
                // decoded: a member's batch of a few KiB can hold hundreds
                // of MiB. The wire's share is given back first, so readers
                // waiting for more room never hold room the others need.
                let held = frame.footprint().clamp(want as usize, READ_BYTES) as u32;
                let room = if held > want {
                    drop(room);
                    let Ok(room) = budget.clone().acquire_many_owned(held).await else {
                        return; // the driver stopped
                    };
                    room
                } else {
                    room
                };
                tracing::trace!(
                    bytes = bytes.len(),
                    prepare_us = t.elapsed().as_micros() as u64,
                    "frame prepared"
                );
                let queued = (peer, generation, bytes.len(), frame, room);
                if frames.send(queued).await.is_err() {
                    return; // the driver stopped
                }
            }
            Ok(None) => break "the peer closed its stream".to_owned(),
            Err(e) => break format!("read failed: {e}"),
        }
    };
    let _ = ended.send((peer, generation, why));
}
