//! LAN discovery with mDNS (`_troupe._udp.local.`), readable only by members.
//!
//! # Goals
//! - Find peers on the venue LAN without configuration.
//! - Tell members from strangers without revealing which workspaces exist:
//!   several shows' crews share one LAN and must learn nothing about each other.
//! - Stay on the interfaces the user allows (`--interface`), never more.
//!
//! # Non-goals
//! - Authentication. An advertisement only says "dial me"; the sync handshake
//!   proves membership. A replayed advertisement costs a dial, nothing more,
//!   and dialling with `/p2p/<peer id>` makes noise check that the peer is who
//!   the advertisement named.
//!
//! # Advertisement
//! Instance name and host label: the peer id. Port: the TCP listen port.
//! Addresses: those of the enabled interfaces (kept current by mdns-sd).
//! TXT properties:
//!
//! | key | value |
//! |---|---|
//! | `v` | `1`, the format version |
//! | `p` | the peer id |
//! | `s` | 16 random bytes, hex: the salt of this advertisement period |
//! | `t0`, `t1`, … | per workspace, the first [`TAG_LEN`] bytes of `member_tag(salt)`, hex |
//!
//! The tag list is padded with random decoys to a multiple of [`TAG_PAD`], so
//! the count reveals little, and the salt changes every [`ROTATE_EVERY`] so
//! tags cannot be linked across periods. A browser that holds a workspace
//! secret recomputes `member_tag(salt)` and looks for it; nobody else can.
//!
//! # Interface restriction
//! With `--interface`, the daemon disables every interface and then enables
//! only the named ones before anything is registered or browsed. mdns-sd
//! still joins the mDNS group on every interface when its thread starts (an
//! IGMP membership report, not an mDNS packet) and leaves the disabled ones
//! when the selection arrives; tests therefore run mDNS only inside network
//! namespaces, where no real interface exists.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use mdns_sd::{IfKind, ResolvedService, ServiceDaemon, ServiceEvent, ServiceInfo};
use rand::RngCore;
use tokio::sync::mpsc;
use tracing::{Instrument, debug, info, warn};
use troupe_protocol::WorkspaceId;
use troupe_protocol::workspace::WorkspaceSecret;

use crate::shutdown::Shutdown;

/// The mDNS service type Troupe advertises and browses.
pub const SERVICE_TYPE: &str = "_troupe._udp.local.";
/// Bytes of each member tag put in the advertisement (a 128-bit prefix:
/// unguessable, and short enough for many workspaces in one TXT record).
pub const TAG_LEN: usize = 16;
/// Tags are padded with decoys to a multiple of this.
pub const TAG_PAD: usize = 4;
/// At most this many workspaces are advertised (one mDNS packet must hold them).
pub const MAX_ADVERTISED: usize = 24;
/// A new salt (and so new tags) this often.
pub const ROTATE_EVERY: Duration = Duration::from_secs(600);

/// What discovery needs to know.
#[derive(Clone, Debug, Default)]
pub struct DiscoveryConfig {
    /// Interface names to use; empty means every multicast interface.
    pub interfaces: Vec<String>,
    /// The workspaces we are a member of.
    pub workspaces: Vec<WorkspaceSecret>,
    /// The TCP port we listen on.
    pub port: u16,
    /// New workspace lists (after `workspace create`/`join` on a running
    /// node): the advertisement is replaced at once, with a fresh salt.
    pub updates: Option<tokio::sync::watch::Receiver<Vec<WorkspaceSecret>>>,
}

/// What discovery saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiscoveryEvent {
    /// A peer advertising at least one of our workspaces: dial it.
    Member {
        /// Its peer id.
        peer: PeerId,
        /// Addresses to dial (each ends in `/p2p/<peer>`).
        addrs: Vec<Multiaddr>,
        /// Which of our workspaces it shares.
        workspaces: Vec<WorkspaceId>,
    },
    /// A Troupe node sharing none of our workspaces: it is not dialled.
    Stranger {
        /// Its peer id.
        peer: PeerId,
    },
    /// An advertisement was withdrawn.
    Gone {
        /// Its peer id.
        peer: PeerId,
    },
}

/// Why discovery could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// mdns-sd refused (no multicast socket, bad name, bad TXT).
    #[error("mDNS failed: {0}")]
    Mdns(#[from] mdns_sd::Error),
}

/// The TXT properties of one advertisement period.
fn properties(
    peer: &PeerId,
    salt: &[u8; 16],
    workspaces: &[WorkspaceSecret],
) -> Vec<(String, String)> {
    let mut props = vec![
        ("v".to_owned(), "1".to_owned()),
        ("p".to_owned(), peer.to_string()),
        ("s".to_owned(), hex(salt)),
    ];
    let mut tags: Vec<[u8; TAG_LEN]> = workspaces
        .iter()
        .take(MAX_ADVERTISED)
        .map(|w| truncate_tag(&w.member_tag(salt)))
        .collect();
    let padded = tags.len().div_ceil(TAG_PAD).max(1) * TAG_PAD;
    while tags.len() < padded {
        let mut decoy = [0u8; TAG_LEN];
        rand::rngs::OsRng.fill_bytes(&mut decoy);
        tags.push(decoy);
    }
    // Sort so a tag's position says nothing about which workspace it is.
    tags.sort_unstable();
    for (i, t) in tags.iter().enumerate() {
        props.push((format!("t{i}"), hex(t)));
    }
    props
}

fn truncate_tag(tag: &[u8; 32]) -> [u8; TAG_LEN] {
    let mut out = [0u8; TAG_LEN];
    out.copy_from_slice(&tag[..TAG_LEN]);
    out
}

/// Which of `workspaces` an advertisement's salt and tags prove membership of.
/// Compares in constant time per tag.
pub fn recognise(
    salt: &[u8; 16],
    tags: &[[u8; TAG_LEN]],
    workspaces: &[WorkspaceSecret],
) -> Vec<WorkspaceId> {
    workspaces
        .iter()
        .filter(|w| {
            let mine = truncate_tag(&w.member_tag(salt));
            tags.iter().fold(false, |found, t| found | ct_eq(&mine, t))
        })
        .map(WorkspaceSecret::workspace_id)
        .collect()
}

fn ct_eq(a: &[u8; TAG_LEN], b: &[u8; TAG_LEN]) -> bool {
    a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Parses a resolved advertisement into an event, or `None` if it is not a
/// valid Troupe advertisement or is our own.
fn classify(
    info: &ResolvedService,
    me: &PeerId,
    workspaces: &[WorkspaceSecret],
) -> Option<DiscoveryEvent> {
    let peer: PeerId = info.get_property_val_str("p")?.parse().ok()?;
    if &peer == me {
        return None;
    }
    let salt = unhex::<16>(info.get_property_val_str("s")?)?;
    let tags: Vec<[u8; TAG_LEN]> = info
        .get_properties()
        .iter()
        .filter(|p| p.key().starts_with('t'))
        .filter_map(|p| unhex::<TAG_LEN>(p.val_str()))
        .collect();
    let shared = recognise(&salt, &tags, workspaces);
    if shared.is_empty() {
        return Some(DiscoveryEvent::Stranger { peer });
    }
    let port = info.get_port();
    let ips: BTreeSet<IpAddr> = info
        .get_addresses()
        .iter()
        .map(|a| a.to_ip_addr())
        .collect();
    let addrs = ips
        .into_iter()
        // Link-local IPv6 needs a scope id libp2p cannot carry; skip it.
        .filter(|ip| !matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80))
        .map(|ip| {
            Multiaddr::empty()
                .with(ip.into())
                .with(Protocol::Tcp(port))
                .with(Protocol::P2p(peer))
        })
        .collect();
    Some(DiscoveryEvent::Member {
        peer,
        addrs,
        workspaces: shared,
    })
}

/// Starts advertising and browsing; events arrive on the returned receiver
/// until shutdown.
///
/// # Errors
/// [`DiscoveryError`] if the mDNS daemon cannot start or refuses the service.
pub fn start(
    cfg: DiscoveryConfig,
    me: PeerId,
    shutdown: &Shutdown,
) -> Result<mpsc::Receiver<DiscoveryEvent>, DiscoveryError> {
    let daemon = ServiceDaemon::new()?;
    if !cfg.interfaces.is_empty() {
        // Commands run in order on the daemon thread, so nothing is sent before
        // the selection is in force.
        daemon.disable_interface(IfKind::All)?;
        let names: Vec<IfKind> = cfg
            .interfaces
            .iter()
            .map(|n| IfKind::Name(n.clone()))
            .collect();
        daemon.enable_interface(names)?;
    }
    let browse = daemon.browse(SERVICE_TYPE)?;
    let fullname = register(&daemon, &cfg, &me)?;
    info!(interfaces = ?cfg.interfaces, workspaces = cfg.workspaces.len(), "mDNS discovery running");

    let (tx, rx) = mpsc::channel(64);
    let sd = shutdown.clone();
    let span = tracing::info_span!("discovery", me = %me);
    shutdown.spawn(
        async move {
            let mut rotate = tokio::time::interval_at(tokio::time::Instant::now() + ROTATE_EVERY, ROTATE_EVERY);
            let mut fullname = fullname;
            let mut cfg = cfg;
            let mut updates = cfg.updates.take();
            loop {
                let update = async {
                    match updates.as_mut() {
                        Some(rx) => rx.changed().await.is_ok(),
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = sd.triggered() => break,
                    alive = update => {
                        let Some(rx) = updates.as_mut() else { continue };
                        if !alive {
                            updates = None;
                            continue;
                        }
                        cfg.workspaces = rx.borrow_and_update().clone();
                        let _ = daemon.unregister(&fullname);
                        match register(&daemon, &cfg, &me) {
                            Ok(name) => {
                                fullname = name;
                                info!(workspaces = cfg.workspaces.len(), "advertising a new set of workspaces");
                            }
                            Err(e) => warn!(error = %e, "cannot re-advertise the new workspaces"),
                        }
                    }
                    _ = rotate.tick() => {
                        let _ = daemon.unregister(&fullname);
                        match register(&daemon, &cfg, &me) {
                            Ok(name) => fullname = name,
                            Err(e) => warn!(error = %e, "cannot re-advertise with a fresh salt"),
                        }
                    }
                    ev = browse.recv_async() => {
                        let Ok(ev) = ev else {
                            warn!("mDNS browsing stopped");
                            break;
                        };
                        let out = match ev {
                            ServiceEvent::ServiceResolved(info) => classify(&info, &me, &cfg.workspaces),
                            ServiceEvent::ServiceRemoved(_, name) => name
                                .split('.')
                                .next()
                                .and_then(|p| p.parse().ok())
                                .map(|peer| DiscoveryEvent::Gone { peer }),
                            other => {
                                debug!(?other, "mDNS event");
                                None
                            }
                        };
                        if let Some(out) = out {
                            debug!(?out, "discovered");
                            if tx.send(out).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            }
            let _ = daemon.unregister(&fullname);
            if let Ok(status) = daemon.shutdown() {
                let _ = status.recv_async().await;
            }
        }
        .instrument(span),
    );
    Ok(rx)
}

/// Registers this period's advertisement and returns its full name.
fn register(
    daemon: &ServiceDaemon,
    cfg: &DiscoveryConfig,
    me: &PeerId,
) -> Result<String, DiscoveryError> {
    let mut salt = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let name = me.to_string();
    let host = format!("{name}.local.");
    let props = properties(me, &salt, &cfg.workspaces);
    let info =
        ServiceInfo::new(SERVICE_TYPE, &name, &host, "", cfg.port, &props[..])?.enable_addr_auto();
    let fullname = info.get_fullname().to_owned();
    daemon.register(info)?;
    Ok(fullname)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags_of(props: &[(String, String)]) -> (Vec<[u8; TAG_LEN]>, [u8; 16]) {
        let salt = unhex::<16>(&props.iter().find(|(k, _)| k == "s").unwrap().1).unwrap();
        let tags = props
            .iter()
            .filter(|(k, _)| k.starts_with('t'))
            .map(|(_, v)| unhex::<TAG_LEN>(v).unwrap())
            .collect();
        (tags, salt)
    }

    #[test]
    fn members_recognise_their_workspaces_and_strangers_recognise_nothing() {
        let hamlet = WorkspaceSecret([1; 32]);
        let lear = WorkspaceSecret([2; 32]);
        let other_show = WorkspaceSecret([3; 32]);
        let me = PeerId::random();
        let props = properties(&me, &[9; 16], &[hamlet.clone(), lear.clone()]);
        let (tags, salt) = tags_of(&props);
        assert_eq!(tags.len(), TAG_PAD, "padded with decoys");
        assert_eq!(
            recognise(&salt, &tags, std::slice::from_ref(&hamlet)),
            vec![hamlet.workspace_id()]
        );
        assert_eq!(
            recognise(&salt, &tags, &[lear.clone(), other_show.clone()]),
            vec![lear.workspace_id()]
        );
        assert!(recognise(&salt, &tags, &[other_show]).is_empty());
    }

    #[test]
    fn tags_change_with_the_salt_and_never_show_the_workspace_id() {
        let ws = WorkspaceSecret([7; 32]);
        let me = PeerId::random();
        let a = properties(&me, &[1; 16], std::slice::from_ref(&ws));
        let b = properties(&me, &[2; 16], std::slice::from_ref(&ws));
        let (ta, _) = tags_of(&a);
        let (tb, _) = tags_of(&b);
        let real_a = truncate_tag(&ws.member_tag(&[1; 16]));
        assert!(ta.contains(&real_a) && !tb.contains(&real_a));
        let id_hex = hex(&ws.workspace_id().0);
        let secret_hex = ws.to_hex();
        for (_, v) in a.iter().chain(&b).filter(|(k, _)| k != "v" && k != "p") {
            assert!(!id_hex.contains(v.as_str()) && !v.contains(&id_hex[..16]));
            assert!(!v.contains(&secret_hex[..16]));
        }
    }

    #[test]
    fn every_txt_property_fits_one_txt_string() {
        let many: Vec<WorkspaceSecret> = (0..100u8).map(|i| WorkspaceSecret([i; 32])).collect();
        let props = properties(&PeerId::random(), &[0; 16], &many);
        assert_eq!(
            props.iter().filter(|(k, _)| k.starts_with('t')).count(),
            MAX_ADVERTISED
        );
        assert!(props.iter().all(|(k, v)| k.len() + 1 + v.len() <= 255));
        assert!(ServiceInfo::new(SERVICE_TYPE, "x", "x.local.", "", 1, &props[..]).is_ok());
    }

    #[test]
    fn hex_round_trips_and_rejects_bad_input() {
        assert_eq!(unhex::<2>(&hex(&[0xab, 0x01])), Some([0xab, 0x01]));
        assert_eq!(unhex::<2>("abc"), None);
        assert_eq!(unhex::<2>("zz00"), None);
        assert_eq!(unhex::<2>("é00"), None);
    }
}
