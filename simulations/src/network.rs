//! The simulated network: connections between nodes as ordered streams,
//! with delay, jitter, retransmission delay (packet duplication under the
//! stream), reordering (held until the gap fills), in-flight corruption
//! (bundle data damaged before the transport's integrity check; any other
//! damaged frame is caught by the transport and breaks the connection),
//! breaks (loss on a reliable stream ends the connection), and partitions
//! that block one or both directions.
//!
//! A connection carries an epoch; frames of an older connection between the
//! same pair are never delivered to a newer one. While a direction is
//! blocked, its frames are held in order (a stalled stream) and released when
//! the block lifts, unless the connection ends first.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use troupe_protocol::sync::Millis;

use troupe_protocol::sync::message::Message;

use crate::options::Options;
use crate::rng::SimRng;

#[derive(Debug, Default)]
struct Conn {
    epoch: u64,
    /// Per direction (0: low → high index, 1: high → low), the time the
    /// last frame is delivered: the next one is never earlier (ordered stream).
    next_free: [Millis; 2],
    /// Per direction, frames that reached a blocked direction, in order.
    held: [VecDeque<Vec<u8>>; 2],
}

/// What happened to a frame handed to [`Network::send`].
#[derive(Debug)]
pub enum Sent {
    /// No connection: the frame is dropped (the sender will see `PeerDown`).
    NoConnection,
    /// The stream broke under this frame: close the connection.
    Broke,
    /// The frame arrives at `at` on connection `epoch` (possibly corrupted).
    Scheduled {
        /// Arrival time.
        at: Millis,
        /// Connection epoch.
        epoch: u64,
        /// The bytes as they will arrive.
        bytes: Vec<u8>,
        /// Whether a byte was flipped.
        corrupted: bool,
    },
}

/// Counters for the figures.
#[derive(Debug, Default, Clone)]
pub struct NetStats {
    /// Frames handed to the network.
    pub frames_sent: u64,
    /// Frames delivered.
    pub frames_delivered: u64,
    /// Bytes delivered, per receiving node.
    pub bytes_in: Vec<u64>,
    /// Streams broken by loss.
    pub breaks: u64,
    /// Frames corrupted in flight.
    pub corrupted: u64,
    /// Connections opened.
    pub opened: u64,
}

/// Connections and blocks between `n` nodes.
#[derive(Debug)]
pub struct Network {
    conns: BTreeMap<(usize, usize), Conn>,
    blocked: BTreeSet<(usize, usize)>,
    next_epoch: u64,
    /// Counters.
    pub stats: NetStats,
}

fn key(a: usize, b: usize) -> ((usize, usize), usize) {
    if a < b { ((a, b), 0) } else { ((b, a), 1) }
}

impl Network {
    /// A network of `n` nodes with no connections.
    pub fn new(n: usize) -> Network {
        Network {
            conns: BTreeMap::new(),
            blocked: BTreeSet::new(),
            next_epoch: 1,
            stats: NetStats {
                bytes_in: vec![0; n],
                ..NetStats::default()
            },
        }
    }

    /// The epoch of the open connection between `a` and `b`, if any.
    pub fn epoch(&self, a: usize, b: usize) -> Option<u64> {
        self.conns.get(&key(a, b).0).map(|c| c.epoch)
    }

    /// Whether traffic from `from` to `to` is blocked by a partition.
    pub fn blocked(&self, from: usize, to: usize) -> bool {
        self.blocked.contains(&(from, to))
    }

    /// Opens a connection when none is open and neither direction is blocked.
    pub fn open(&mut self, a: usize, b: usize) -> bool {
        if a == b || self.blocked(a, b) || self.blocked(b, a) {
            return false;
        }
        let (k, _) = key(a, b);
        if self.conns.contains_key(&k) {
            return false;
        }
        let epoch = self.next_epoch;
        self.next_epoch += 1;
        self.conns.insert(
            k,
            Conn {
                epoch,
                ..Conn::default()
            },
        );
        self.stats.opened += 1;
        true
    }

    /// Closes the connection; returns whether one was open.
    pub fn close(&mut self, a: usize, b: usize) -> bool {
        self.conns.remove(&key(a, b).0).is_some()
    }

    /// Every open connection with `node` as an end (the other ends).
    pub fn peers_of(&self, node: usize) -> Vec<usize> {
        self.conns
            .keys()
            .filter_map(|&(a, b)| {
                if a == node {
                    Some(b)
                } else if b == node {
                    Some(a)
                } else {
                    None
                }
            })
            .collect()
    }

    /// Every open connection.
    pub fn open_pairs(&self) -> Vec<(usize, usize)> {
        self.conns.keys().copied().collect()
    }

    /// Hands a frame to the stream from `from` to `to`, drawing its fate.
    /// `faults` is false in the liveness phase (no loss or corruption).
    pub fn send(
        &mut self,
        now: Millis,
        (from, to): (usize, usize),
        mut bytes: Vec<u8>,
        opts: &Options,
        faults: bool,
        rng: &mut SimRng,
    ) -> Sent {
        let (k, d) = key(from, to);
        let Some(conn) = self.conns.get_mut(&k) else {
            return Sent::NoConnection;
        };
        self.stats.frames_sent += 1;
        if faults && rng.chance(opts.loss_ppm) {
            self.stats.breaks += 1;
            return Sent::Broke;
        }
        let mut at = now + opts.delay_ms + rng.below(opts.jitter_ms + 1);
        if rng.chance(opts.dup_ppm) {
            // A lost packet retransmitted: one more round trip.
            at += 2 * opts.delay_ms + 1;
        }
        if rng.chance(opts.reorder_ppm) {
            // Packets arrived out of order: the stream holds this frame until the gap fills.
            at += rng.below(opts.delay_ms + opts.jitter_ms + 1);
        }
        let at = at.max(conn.next_free[d]);
        conn.next_free[d] = at;
        let mut corrupted = false;
        if faults && rng.chance(opts.corrupt_ppm) {
            match corrupt_payload(&bytes, rng) {
                Some(b) => {
                    bytes = b;
                    corrupted = true;
                    self.stats.corrupted += 1;
                }
                None => {
                    // The authenticated transport detects a damaged control frame.
                    self.stats.breaks += 1;
                    return Sent::Broke;
                }
            }
        }
        Sent::Scheduled {
            at,
            epoch: conn.epoch,
            bytes,
            corrupted,
        }
    }

    /// A scheduled frame reached `to`: `Some(bytes)` to deliver now, `None`
    /// when its connection is gone or the direction is blocked (then held).
    pub fn arrive(
        &mut self,
        from: usize,
        to: usize,
        epoch: u64,
        bytes: Vec<u8>,
    ) -> Option<Vec<u8>> {
        let (k, d) = key(from, to);
        let blocked = self.blocked(from, to);
        let conn = self.conns.get_mut(&k)?;
        if conn.epoch != epoch {
            return None;
        }
        if blocked || !conn.held[d].is_empty() {
            conn.held[d].push_back(bytes);
            return None;
        }
        self.stats.frames_delivered += 1;
        self.stats.bytes_in[to] += bytes.len() as u64;
        Some(bytes)
    }

    /// Counts a frame released from a hold as delivered.
    pub fn count_delivery(&mut self, to: usize, len: usize) {
        self.stats.frames_delivered += 1;
        self.stats.bytes_in[to] += len as u64;
    }

    /// Blocks traffic from `from` to `to`.
    pub fn block(&mut self, from: usize, to: usize) {
        self.blocked.insert((from, to));
    }

    /// Lifts every block; returns the held frames to deliver now, per
    /// direction in order, as (from, to, bytes).
    pub fn heal(&mut self) -> Vec<(usize, usize, Vec<u8>)> {
        self.blocked.clear();
        let mut out = Vec::new();
        for (&(a, b), conn) in &mut self.conns {
            for (d, (from, to)) in [(a, b), (b, a)].into_iter().enumerate() {
                while let Some(bytes) = conn.held[d].pop_front() {
                    out.push((from, to, bytes));
                }
            }
        }
        out
    }
}

/// Flips one bit inside the bundle data of a `Batch` or `RepairReply` frame
/// (what a sender with failing memory would send; the transport's integrity
/// check passes because the damage happened before encryption). `None` for
/// any other frame.
fn corrupt_payload(frame: &[u8], rng: &mut SimRng) -> Option<Vec<u8>> {
    let mut msg = Message::from_frame(frame).ok()?;
    let data = match &mut msg {
        Message::Batch { data, .. } => data,
        Message::RepairReply {
            bundle: Some(data), ..
        } => data,
        _ => return None,
    };
    if data.is_empty() {
        return None;
    }
    let i = rng.below(data.len() as u64) as usize;
    data[i] ^= 1 << rng.below(8);
    Some(msg.to_frame())
}
