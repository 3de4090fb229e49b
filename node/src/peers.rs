//! The peer table: who is connected and who has been seen on the LAN.
//!
//! The swarm task writes connections, discovery writes advertisements, and
//! the local API reads a snapshot. A `std::sync::Mutex` is enough: no lock is
//! held across an `.await`, and every critical section is a map update.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use libp2p::{Multiaddr, PeerId};
use serde::Serialize;

use crate::identity::peer_to_actor;
use crate::throttle::Throttle;

/// A connected peer, as `/v1/peers` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConnectedPeer {
    /// libp2p peer id.
    pub peer_id: String,
    /// The same key as an actor id (hex), when it is an ed25519 key.
    pub actor_id: Option<String>,
    /// Remote address of the first connection.
    pub addr: String,
    /// Open connections (usually 1; 2 briefly when both sides dial at once).
    pub connections: u32,
    /// Unix seconds when the first connection opened.
    pub since: u64,
}

/// A peer seen through mDNS, as `/v1/peers` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DiscoveredPeer {
    /// libp2p peer id from the advertisement.
    pub peer_id: String,
    /// Whether its advertisement carried a tag for one of our workspaces.
    pub member: bool,
    /// Addresses it advertised.
    pub addrs: Vec<String>,
    /// Unix seconds of the last advertisement seen.
    pub last_seen: u64,
}

/// A peer that connected but does not speak this node's sync protocol, as
/// `/v1/peers` shows it. It runs another version of Troupe, so nothing syncs
/// with it until both devices run the same version; a crew with one device
/// left on an old version must be able to see which one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OtherVersionPeer {
    /// libp2p peer id.
    pub peer_id: String,
    /// Remote address of the connection that found it out.
    pub addr: String,
    /// Unix seconds of the first time this run found it out.
    pub since: u64,
    /// Unix seconds of the last time.
    pub last_seen: u64,
}

/// What `/v1/peers` returns.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PeersSnapshot {
    /// Peers with an open connection.
    pub connected: Vec<ConnectedPeer>,
    /// Peers seen by mDNS, members or not.
    pub discovered: Vec<DiscoveredPeer>,
    /// Peers that run another version of Troupe (nothing syncs with them).
    pub other_version: Vec<OtherVersionPeer>,
}

struct Inner {
    connected: BTreeMap<PeerId, ConnectedPeer>,
    /// With the order in which advertisements were seen.
    discovered: BTreeMap<PeerId, (DiscoveredPeer, u64)>,
    /// Advertisements seen so far.
    seen: u64,
    /// With the monotonic time of the last failure, which spaces redials.
    other_version: BTreeMap<PeerId, (OtherVersionPeer, Instant)>,
    /// When the user is next told of a new peer on another version.
    other_version_told: Throttle,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            connected: BTreeMap::new(),
            discovered: BTreeMap::new(),
            seen: 0,
            other_version: BTreeMap::new(),
            other_version_told: Throttle::new(OTHER_VERSION_TELL_EVERY),
        }
    }
}

/// Forgets the entry `rank` puts first when `map` holds `max` already, so
/// that one more fits.
fn make_room<V, R: Ord>(map: &mut BTreeMap<PeerId, V>, max: usize, rank: impl Fn(&V) -> R) {
    if map.len() < max {
        return;
    }
    if let Some(k) = map.iter().min_by_key(|(_, v)| rank(v)).map(|(k, _)| *k) {
        map.remove(&k);
    }
}

/// What [`PeerTable::other_version`] made of a peer on another version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtherVersionNews {
    /// It was listed already.
    Known,
    /// It is new to the list (or spoke this version since it was last on it).
    New {
        /// `Some(untold)` when the user should be told now: no other was
        /// told of in the last [`OTHER_VERSION_TELL_EVERY`]. `untold`
        /// counts those found meanwhile and not told of.
        tell: Option<u64>,
    },
}

/// Peers seen through mDNS that the table keeps (the rest, seen longest
/// ago, are forgotten): far more devices than a venue LAN holds.
pub const MAX_DISCOVERED: usize = 1024;
/// Peers on another version that the table keeps (the rest, found longest
/// ago, are forgotten).
pub const MAX_OTHER_VERSION: usize = 64;
/// How often at most the user is told of a new peer on another version.
pub const OTHER_VERSION_TELL_EVERY: Duration = Duration::from_secs(60);

/// The table's sizes that a status line shows ([`PeerTable::counts`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerCounts {
    /// Peers with at least one open connection.
    pub connected: usize,
    /// Peers listed as on another version of Troupe.
    pub other_version: usize,
}

/// Shared, cloneable peer table.
#[derive(Clone, Default)]
pub struct PeerTable {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for PeerTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("PeerTable")
            .field("connected", &inner.connected.len())
            .field("discovered", &inner.discovered.len())
            .finish()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl PeerTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves only a map half-updated for
        // display; keep serving rather than poisoning every later reader.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a new connection; returns true if it is the first to that peer.
    pub fn connected(&self, peer: PeerId, addr: &Multiaddr) -> bool {
        let mut inner = self.lock();
        match inner.connected.get_mut(&peer) {
            Some(p) => {
                p.connections += 1;
                false
            }
            None => {
                inner.connected.insert(
                    peer,
                    ConnectedPeer {
                        peer_id: peer.to_string(),
                        actor_id: peer_to_actor(&peer).map(|a| a.to_string()),
                        addr: addr.to_string(),
                        connections: 1,
                        since: unix_now(),
                    },
                );
                true
            }
        }
    }

    /// Records a closed connection; returns true if it was the last one.
    pub fn disconnected(&self, peer: PeerId, remaining: u32) -> bool {
        let mut inner = self.lock();
        if remaining == 0 {
            inner.connected.remove(&peer).is_some()
        } else {
            if let Some(p) = inner.connected.get_mut(&peer) {
                p.connections = remaining;
            }
            false
        }
    }

    /// Whether a connection to `peer` is open.
    pub fn is_connected(&self, peer: &PeerId) -> bool {
        self.lock().connected.contains_key(peer)
    }

    /// Records an advertisement; returns true if the peer is new or changed
    /// membership (worth an event). Anyone on the LAN can advertise any
    /// number of made-up peers, so past [`MAX_DISCOVERED`] the one seen
    /// longest ago is forgotten, strangers before members.
    pub fn discovered(&self, peer: PeerId, member: bool, addrs: &[Multiaddr]) -> bool {
        let mut inner = self.lock();
        let entry = DiscoveredPeer {
            peer_id: peer.to_string(),
            member,
            addrs: addrs.iter().map(ToString::to_string).collect(),
            last_seen: unix_now(),
        };
        let changed = inner
            .discovered
            .get(&peer)
            .is_none_or(|(old, _)| old.member != member);
        if !inner.discovered.contains_key(&peer) {
            // Strangers go first: a member shares a workspace with us.
            make_room(&mut inner.discovered, MAX_DISCOVERED, |(p, order)| {
                (p.member, *order)
            });
        }
        inner.seen += 1;
        let order = inner.seen;
        inner.discovered.insert(peer, (entry, order));
        changed
    }

    /// Records that `peer` does not speak this node's sync protocol. A
    /// connection costs a stranger little, so new peer ids are cheap: the
    /// list keeps the [`MAX_OTHER_VERSION`] found last, and the user is
    /// told of at most one every [`OTHER_VERSION_TELL_EVERY`].
    pub fn other_version(&self, peer: PeerId) -> OtherVersionNews {
        self.other_version_at_instant(peer, Instant::now())
    }

    /// [`PeerTable::other_version`] at `at`.
    fn other_version_at_instant(&self, peer: PeerId, at: Instant) -> OtherVersionNews {
        let mut inner = self.lock();
        let now = unix_now();
        let addr = inner
            .connected
            .get(&peer)
            .map(|c| c.addr.clone())
            .unwrap_or_default();
        if let Some((p, last)) = inner.other_version.get_mut(&peer) {
            p.last_seen = now;
            if !addr.is_empty() {
                p.addr = addr;
            }
            *last = at;
            return OtherVersionNews::Known;
        }
        make_room(&mut inner.other_version, MAX_OTHER_VERSION, |(_, last)| {
            *last
        });
        let entry = OtherVersionPeer {
            peer_id: peer.to_string(),
            addr,
            since: now,
            last_seen: now,
        };
        inner.other_version.insert(peer, (entry, at));
        OtherVersionNews::New {
            tell: inner.other_version_told.due(at),
        }
    }

    /// When `peer` last turned out to speak another version, if it has
    /// not spoken this node's since: the dialler waits before trying again.
    pub fn other_version_at(&self, peer: &PeerId) -> Option<Instant> {
        self.lock().other_version.get(peer).map(|(_, at)| *at)
    }

    /// Records that `peer` speaks this node's sync protocol (again).
    pub fn same_version(&self, peer: &PeerId) {
        self.lock().other_version.remove(peer);
    }

    /// Forgets an advertisement that was withdrawn.
    pub fn lost(&self, peer: &PeerId) {
        self.lock().discovered.remove(peer);
    }

    /// How many peers are connected and how many are on another version:
    /// what `troupe status` reports, without copying the table (up to
    /// [`MAX_DISCOVERED`] advertised peers) as [`PeerTable::snapshot`] does.
    pub fn counts(&self) -> PeerCounts {
        let inner = self.lock();
        PeerCounts {
            connected: inner.connected.len(),
            other_version: inner.other_version.len(),
        }
    }

    /// A copy for the local API.
    pub fn snapshot(&self) -> PeersSnapshot {
        let inner = self.lock();
        PeersSnapshot {
            connected: inner.connected.values().cloned().collect(),
            discovered: inner.discovered.values().map(|(p, _)| p.clone()).collect(),
            other_version: inner
                .other_version
                .values()
                .map(|(p, _)| p.clone())
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_counted_per_peer() {
        let t = PeerTable::new();
        let p = PeerId::random();
        let a: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        assert!(t.connected(p, &a));
        assert!(!t.connected(p, &a));
        assert!(!t.disconnected(p, 1));
        assert!(t.is_connected(&p));
        assert!(t.disconnected(p, 0));
        assert!(t.snapshot().connected.is_empty());
        assert_eq!(t.counts().connected, 0);
    }

    #[test]
    fn another_version_is_news_once_until_the_peer_speaks_this_one() {
        let t = PeerTable::new();
        let p = PeerId::random();
        let a: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        t.connected(p, &a);
        assert!(t.other_version_at(&p).is_none());
        assert_eq!(
            t.other_version(p),
            OtherVersionNews::New { tell: Some(0) },
            "the first time is news"
        );
        let first = t.other_version_at(&p).expect("marked");
        assert_eq!(
            t.other_version(p),
            OtherVersionNews::Known,
            "the same again is not"
        );
        assert!(t.other_version_at(&p).expect("marked") >= first);
        let listed = t.snapshot().other_version;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].addr, a.to_string());
        t.same_version(&p);
        assert!(t.other_version_at(&p).is_none() && t.snapshot().other_version.is_empty());
        // Found again: listed again, but the user was told a moment ago.
        assert_eq!(t.other_version(p), OtherVersionNews::New { tell: None });
        assert_eq!(t.snapshot().other_version.len(), 1);
        assert_eq!(
            t.counts(),
            PeerCounts {
                connected: 1,
                other_version: 1
            }
        );
    }

    #[test]
    fn many_peers_on_another_version_are_told_of_together_and_kept_to_a_bound() {
        let t = PeerTable::new();
        let first = PeerId::random();
        assert_eq!(
            t.other_version(first),
            OtherVersionNews::New { tell: Some(0) }
        );
        let more: Vec<PeerId> = (0..MAX_OTHER_VERSION + 10)
            .map(|_| PeerId::random())
            .collect();
        for p in &more {
            assert_eq!(
                t.other_version(*p),
                OtherVersionNews::New { tell: None },
                "told of at most once a minute"
            );
        }
        let kept = t.snapshot().other_version;
        assert_eq!(kept.len(), MAX_OTHER_VERSION);
        // The ones found last are kept; the first went.
        assert!(kept.iter().all(|p| p.peer_id != first.to_string()));
        for p in &more[more.len() - MAX_OTHER_VERSION..] {
            assert!(t.other_version_at(p).is_some());
        }
        // A minute on, the next is told of with the count between.
        let untold = u64::try_from(more.len()).unwrap();
        assert_eq!(
            t.other_version_at_instant(PeerId::random(), Instant::now() + OTHER_VERSION_TELL_EVERY),
            OtherVersionNews::New { tell: Some(untold) }
        );
    }

    #[test]
    fn made_up_advertisements_cannot_grow_the_table_without_bound() {
        let t = PeerTable::new();
        let member = PeerId::random();
        t.discovered(member, true, &[]);
        let strangers: Vec<PeerId> = (0..MAX_DISCOVERED + 100)
            .map(|_| PeerId::random())
            .collect();
        for p in &strangers {
            t.discovered(*p, false, &[]);
        }
        let seen: Vec<String> = t
            .snapshot()
            .discovered
            .into_iter()
            .map(|p| p.peer_id)
            .collect();
        assert_eq!(seen.len(), MAX_DISCOVERED);
        assert!(
            seen.contains(&member.to_string()),
            "the member is kept over strangers"
        );
        // The strangers seen last are kept, the first forgotten.
        assert!(seen.contains(&strangers[strangers.len() - 1].to_string()));
        assert!(!seen.contains(&strangers[0].to_string()));
    }

    #[test]
    fn discovery_reports_new_peers_and_membership_changes_only() {
        let t = PeerTable::new();
        let p = PeerId::random();
        assert!(t.discovered(p, false, &[]));
        assert!(!t.discovered(p, false, &[]));
        assert!(t.discovered(p, true, &[]));
        assert_eq!(t.snapshot().discovered.len(), 1);
        t.lost(&p);
        assert!(t.snapshot().discovered.is_empty());
    }
}
