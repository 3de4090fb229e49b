//! Dialling by address: `--peer` addresses, addresses from mDNS, and addresses
//! remembered from earlier runs, each retried with exponential backoff.
//!
//! Venue Wi-Fi often blocks multicast, so a node must be able to find its peers
//! without mDNS. Every address that once led to a connection is saved in
//! `known_peers.json` in the data dir and dialled again at the next start.
//!
//! A target is keyed by peer id when known (several addresses, tried in turn)
//! or by address alone (a `--peer` without `/p2p/`). While the peer is
//! connected the target waits; when the connection goes, it is dialled again,
//! but a peer found to run another version of Troupe only after
//! [`OTHER_VERSION_RETRY`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::events::{EventBus, NodeEvent};
use crate::shutdown::Shutdown;
use crate::swarm::{NetError, NetworkHandle};

/// File (in the data dir) of addresses that once led to a connection.
pub const KNOWN_PEERS_FILE: &str = "known_peers.json";
/// First retry delay after a failed dial.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest retry delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// How long after finding that a peer runs another version of Troupe it is
/// dialled again (it may have been updated meanwhile).
pub const OTHER_VERSION_RETRY: Duration = Duration::from_secs(60);
/// How often a connected target checks that it is still connected.
const RECHECK: Duration = Duration::from_secs(2);

/// Something to keep connected to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DialTarget {
    /// The peer, when known (from `/p2p/` or from mDNS).
    pub peer: Option<PeerId>,
    /// Addresses to try, in order.
    pub addrs: Vec<Multiaddr>,
}

impl DialTarget {
    /// A target from one address; a trailing `/p2p/<id>` names the peer.
    pub fn from_addr(addr: Multiaddr) -> Self {
        let peer = match addr.iter().last() {
            Some(Protocol::P2p(p)) => Some(p),
            _ => None,
        };
        DialTarget {
            peer,
            addrs: vec![addr],
        }
    }

    fn key(&self) -> String {
        match (&self.peer, self.addrs.first()) {
            (Some(p), _) => p.to_string(),
            (None, Some(a)) => a.to_string(),
            (None, None) => String::new(),
        }
    }
}

/// Adds targets to a running dialler.
#[derive(Clone, Debug)]
pub struct DialerHandle {
    tx: mpsc::Sender<DialTarget>,
}

impl DialerHandle {
    /// Adds (or refreshes the addresses of) a target. Returns false once the
    /// dialler has stopped.
    pub async fn add(&self, target: DialTarget) -> bool {
        self.tx.send(target).await.is_ok()
    }
}

struct Entry {
    target: DialTarget,
    due: Instant,
    backoff: Duration,
    in_flight: bool,
}

/// Starts the dialler with `initial` targets plus those remembered in `data_dir`.
pub fn start(
    net: NetworkHandle,
    initial: Vec<DialTarget>,
    data_dir: &Path,
    events: EventBus,
    shutdown: &Shutdown,
) -> DialerHandle {
    let (tx, rx) = mpsc::channel(64);
    let file = data_dir.join(KNOWN_PEERS_FILE);
    let mut targets = initial;
    for addr in load_known(&file) {
        targets.push(DialTarget::from_addr(addr));
    }
    shutdown.spawn(run(net, targets, rx, file, events, shutdown.clone()));
    DialerHandle { tx }
}

async fn run(
    net: NetworkHandle,
    initial: Vec<DialTarget>,
    mut rx: mpsc::Receiver<DialTarget>,
    file: PathBuf,
    events: EventBus,
    shutdown: Shutdown,
) {
    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    let mut known: Vec<Multiaddr> = load_known(&file);
    let now = Instant::now();
    for t in initial {
        merge(&mut entries, t, now);
    }
    let mut dials = FuturesUnordered::new();
    loop {
        let now = Instant::now();
        for (key, e) in entries.iter_mut() {
            if e.in_flight || e.due > now {
                continue;
            }
            if e.target.peer.is_some_and(|p| net.peers().is_connected(&p)) {
                e.due = now + RECHECK;
                e.backoff = BACKOFF_MIN;
                continue;
            }
            // A device on another version connects fine and then cannot
            // sync: reconnecting every few seconds would only repeat that.
            if let Some(at) = e.target.peer.and_then(|p| net.peers().other_version_at(&p)) {
                let retry = Instant::from_std(at) + OTHER_VERSION_RETRY;
                if retry > now {
                    e.due = retry;
                    continue;
                }
            }
            e.in_flight = true;
            let net = net.clone();
            let key = key.clone();
            let target = e.target.clone();
            dials.push(async move { (key, dial_any(&net, &target).await) });
        }
        let next_due = entries
            .values()
            .filter(|e| !e.in_flight)
            .map(|e| e.due)
            .min()
            .unwrap_or(now + BACKOFF_MAX);
        tokio::select! {
            _ = shutdown.triggered() => return,
            Some(t) = rx.recv() => merge(&mut entries, t, Instant::now()),
            Some((key, result)) = dials.next(), if !dials.is_empty() => {
                let Some(e) = entries.get_mut(&key) else { continue };
                e.in_flight = false;
                match result {
                    Ok((peer, addr)) => {
                        debug!(%peer, %addr, "dialled");
                        e.target.peer = Some(peer);
                        e.backoff = BACKOFF_MIN;
                        e.due = Instant::now() + RECHECK;
                        let full = with_peer(addr, peer);
                        if !known.contains(&full) {
                            known.push(full);
                            save_known(&file, &known);
                        }
                    }
                    Err(err) => {
                        info!(target = %key, error = %err, retry_in = ?e.backoff, "dial failed");
                        events.publish(NodeEvent::DialFailed { addr: key.clone(), error: err.to_string() });
                        e.due = Instant::now() + e.backoff;
                        e.backoff = (e.backoff * 2).min(BACKOFF_MAX);
                    }
                }
            }
            _ = tokio::time::sleep_until(next_due) => {}
        }
    }
}

/// Adds a target, or refreshes the addresses of one with the same key and makes it due now.
fn merge(entries: &mut BTreeMap<String, Entry>, target: DialTarget, now: Instant) {
    let key = target.key();
    if key.is_empty() {
        return;
    }
    match entries.get_mut(&key) {
        Some(e) => {
            for a in target.addrs {
                if !e.target.addrs.contains(&a) {
                    e.target.addrs.push(a);
                }
            }
            if !e.in_flight {
                e.due = now;
            }
        }
        None => {
            entries.insert(
                key,
                Entry {
                    target,
                    due: now,
                    backoff: BACKOFF_MIN,
                    in_flight: false,
                },
            );
        }
    }
}

/// Tries each address in turn; the first success wins.
async fn dial_any(net: &NetworkHandle, t: &DialTarget) -> Result<(PeerId, Multiaddr), NetError> {
    let mut last = NetError::Dial("no address to dial".into());
    for addr in &t.addrs {
        let addr = match t.peer {
            Some(p) => with_peer(addr.clone(), p),
            None => addr.clone(),
        };
        match net.dial(addr.clone()).await {
            Ok(peer) => return Ok((peer, addr)),
            Err(NetError::Stopped) => return Err(NetError::Stopped),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// `addr` ending in `/p2p/<peer>` exactly once.
fn with_peer(addr: Multiaddr, peer: PeerId) -> Multiaddr {
    match addr.iter().last() {
        Some(Protocol::P2p(_)) => addr,
        _ => addr.with(Protocol::P2p(peer)),
    }
}

fn load_known(file: &Path) -> Vec<Multiaddr> {
    let Ok(text) = std::fs::read_to_string(file) else {
        return Vec::new();
    };
    match serde_json::from_str::<Vec<String>>(&text) {
        Ok(list) => list.iter().filter_map(|s| s.parse().ok()).collect(),
        Err(e) => {
            warn!(file = %file.display(), error = %e, "ignoring unreadable known-peers file");
            Vec::new()
        }
    }
}

fn save_known(file: &Path, known: &[Multiaddr]) {
    let list: Vec<String> = known.iter().map(ToString::to_string).collect();
    let text = serde_json::to_string_pretty(&list).unwrap_or_default();
    if let Err(e) = std::fs::write(file, text) {
        warn!(file = %file.display(), error = %e, "cannot save known peers");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p2p_suffix_names_the_peer_and_is_not_doubled() {
        let p = PeerId::random();
        let bare: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
        assert_eq!(DialTarget::from_addr(bare.clone()).peer, None);
        let full = with_peer(bare.clone(), p);
        assert_eq!(DialTarget::from_addr(full.clone()).peer, Some(p));
        assert_eq!(with_peer(full.clone(), p), full);
    }

    #[test]
    fn merging_a_known_peer_adds_addresses_without_duplicates() {
        let p = PeerId::random();
        let a: Multiaddr = "/ip4/10.0.0.1/tcp/1".parse().unwrap();
        let b: Multiaddr = "/ip4/10.0.0.2/tcp/1".parse().unwrap();
        let mut m = BTreeMap::new();
        let now = Instant::now();
        merge(
            &mut m,
            DialTarget {
                peer: Some(p),
                addrs: vec![a.clone()],
            },
            now,
        );
        merge(
            &mut m,
            DialTarget {
                peer: Some(p),
                addrs: vec![a.clone(), b.clone()],
            },
            now,
        );
        assert_eq!(m.len(), 1);
        assert_eq!(m[&p.to_string()].target.addrs, vec![a, b]);
    }

    #[test]
    fn known_peers_survive_a_round_trip_and_bad_files_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join(KNOWN_PEERS_FILE);
        let a: Multiaddr = "/ip4/127.0.0.1/tcp/9".parse().unwrap();
        save_known(&f, std::slice::from_ref(&a));
        assert_eq!(load_known(&f), vec![a]);
        std::fs::write(&f, "not json").unwrap();
        assert!(load_known(&f).is_empty());
    }
}
