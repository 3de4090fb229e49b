//! Which inbound connections the node takes: caps per remote address and
//! in all, on connections still in their handshake and on established ones.
//!
//! A venue's network is shared with strangers. Without caps, anyone on it
//! could open connections until the node ran out of file descriptors and
//! memory, and no member could reach it any more. A stranger's connections
//! are held to a few per address ([`Limits::pending_per_address`],
//! [`Limits::established_per_address`]), so filling the totals takes many
//! addresses. And the caps are on inbound connections only: the node still
//! dials every member it discovers, so two members stay in touch however
//! full either side's inbound slots are.
//!
//! An address is an IPv4 address, or an IPv6 /64 (one host can hold a
//! whole /64 and pick any address in it).

use std::collections::HashMap;
use std::net::IpAddr;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use libp2p::core::transport::PortUse;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{
    ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm, ListenFailure, NetworkBehaviour,
    THandler, THandlerInEvent, THandlerOutEvent, ToSwarm, dummy,
};

use crate::throttle::Throttle;

/// The caps on inbound connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections from one address still in their handshake.
    pub pending_per_address: usize,
    /// Connections in their handshake, from every address.
    pub pending: usize,
    /// Established connections from one address. A device runs one node,
    /// which holds one connection to us (two, briefly, when both dial at
    /// once); the rest is room for several nodes on one machine.
    pub established_per_address: usize,
    /// Established inbound connections in all: far more members than a
    /// crew has, well inside the file descriptors a process may open.
    pub established: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            pending_per_address: 8,
            pending: 64,
            established_per_address: 32,
            established: 256,
        }
    }
}

/// Why an inbound connection was refused (logged by the swarm task).
#[derive(Debug, thiserror::Error)]
#[error("inbound connection refused: {0}")]
pub struct Refused(&'static str);

/// Where a connection came from, as far as the caps are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Address {
    V4([u8; 4]),
    /// The /64 prefix.
    V6([u8; 8]),
    /// Not an IP address (no cap of its own beyond the totals).
    Other,
}

/// The IP address in `addr`, if it has one.
fn ip(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(a) => Some(IpAddr::V4(a)),
        Protocol::Ip6(a) => Some(IpAddr::V6(a)),
        _ => None,
    })
}

fn address(addr: &Multiaddr) -> Address {
    match ip(addr).map(|ip| ip.to_canonical()) {
        Some(IpAddr::V4(a)) => Address::V4(a.octets()),
        Some(IpAddr::V6(a)) => {
            let mut prefix = [0; 8];
            prefix.copy_from_slice(&a.octets()[..8]);
            Address::V6(prefix)
        }
        None => Address::Other,
    }
}

/// The swarm behaviour that applies [`Limits`]; it has no protocol of its
/// own (its connection handler does nothing).
#[derive(Debug, Default)]
pub struct Admission {
    limits: Limits,
    pending: HashMap<ConnectionId, Address>,
    established: HashMap<ConnectionId, Address>,
}

impl Admission {
    /// Applies `limits`.
    pub fn new(limits: Limits) -> Self {
        Admission {
            limits,
            ..Admission::default()
        }
    }

    /// Whether `held` has room for one more connection from `from`.
    fn room(
        held: &HashMap<ConnectionId, Address>,
        from: Address,
        total: usize,
        per_address: usize,
        [in_all, from_one]: [&'static str; 2],
    ) -> Result<(), Refused> {
        if held.len() >= total {
            return Err(Refused(in_all));
        }
        let same = held.values().filter(|a| **a == from).count();
        if from != Address::Other && same >= per_address {
            return Err(Refused(from_one));
        }
        Ok(())
    }

    /// Takes a connection that starts its handshake, or refuses it.
    fn admit_pending(&mut self, id: ConnectionId, from: Address) -> Result<(), Refused> {
        let l = self.limits;
        let why = [
            "too many handshakes under way",
            "too many handshakes under way from one address",
        ];
        Self::room(&self.pending, from, l.pending, l.pending_per_address, why)?;
        self.pending.insert(id, from);
        Ok(())
    }

    /// Takes a connection whose handshake finished, or refuses it.
    fn admit_established(&mut self, id: ConnectionId, from: Address) -> Result<(), Refused> {
        self.pending.remove(&id);
        let l = self.limits;
        let why = [
            "too many connections",
            "too many connections from one address",
        ];
        let (total, per_address) = (l.established, l.established_per_address);
        Self::room(&self.established, from, total, per_address, why)?;
        self.established.insert(id, from);
        Ok(())
    }

    fn gone(&mut self, id: ConnectionId) {
        self.pending.remove(&id);
        self.established.remove(&id);
    }
}

impl NetworkBehaviour for Admission {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = ();

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.admit_pending(id, address(remote))
            .map_err(ConnectionDenied::new)
    }

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        _peer: PeerId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.admit_established(id, address(remote))
            .map_err(ConnectionDenied::new)?;
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _id: ConnectionId,
        _peer: PeerId,
        _addr: &Multiaddr,
        _role: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        match event {
            FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. })
            | FromSwarm::ListenFailure(ListenFailure { connection_id, .. }) => {
                self.gone(connection_id);
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _peer: PeerId,
        _id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        libp2p::core::util::unreachable(event)
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<(), THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

/// How often, at most, refused inbound connections are reported in the
/// log: a stranger flooding the node would otherwise write a line for each.
pub const REFUSALS_REPORTED_EVERY: Duration = Duration::from_secs(60);

/// Turns refused inbound connections into warnings an operator can act
/// on, a few at most: the first refusal is reported at once (with where it
/// came from and why), the ones after it within
/// [`REFUSALS_REPORTED_EVERY`] only counted, and the count given with the
/// next report. A member never meets a cap, so any refusal is worth a
/// look: something on the network is holding connections to this node.
#[derive(Debug)]
pub struct RefusalReport(Throttle);

impl Default for RefusalReport {
    fn default() -> Self {
        RefusalReport(Throttle::new(REFUSALS_REPORTED_EVERY))
    }
}

impl RefusalReport {
    /// Counts one refused connection from `from`; the sentence to log, when
    /// one is due.
    pub fn note(&mut self, from: &Multiaddr, why: &Refused, now: Instant) -> Option<String> {
        let before = self.0.due(now)?;
        let host = ip(from).map_or_else(|| from.to_string(), |ip| ip.to_string());
        let more = if before > 0 {
            format!(", and {before} more since the last report")
        } else {
            String::new()
        };
        Some(format!(
            "refused an inbound connection from {host} ({}){more}. Something on this \
             network is holding connections to this node without syncing; this node \
             still dials the members it finds",
            why.0
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Address {
        address(&s.parse().unwrap())
    }

    fn small() -> Admission {
        Admission::new(Limits {
            pending_per_address: 2,
            pending: 5,
            established_per_address: 3,
            established: 7,
        })
    }

    #[test]
    fn refusals_are_reported_at_once_then_once_a_minute_with_the_count_between() {
        let mut report = RefusalReport::default();
        let from: Multiaddr = "/ip4/192.168.1.66/tcp/40000".parse().unwrap();
        let why = Refused("too many handshakes under way from one address");
        let t0 = Instant::now();
        let first = report.note(&from, &why, t0).expect("the first is reported");
        assert!(
            first.contains("from 192.168.1.66 (too many handshakes under way from one address)"),
            "{first}"
        );
        assert!(!first.contains("since the last report"), "{first}");
        for s in 1..=20 {
            assert_eq!(report.note(&from, &why, t0 + Duration::from_secs(s)), None);
        }
        let next = report
            .note(&from, &why, t0 + REFUSALS_REPORTED_EVERY)
            .expect("reported again a minute after the first");
        assert!(next.contains("and 20 more since the last report"), "{next}");
        assert_eq!(report.note(&from, &why, t0 + REFUSALS_REPORTED_EVERY), None);
    }

    #[test]
    fn one_address_holds_only_its_share_of_handshakes_and_connections() {
        let mut a = small();
        let stranger = addr("/ip4/192.168.1.66/tcp/40000");
        let member = addr("/ip4/192.168.1.7/tcp/40001");
        let ids: Vec<ConnectionId> = (0..10).map(ConnectionId::new_unchecked).collect();
        assert!(a.admit_pending(ids[0], stranger).is_ok());
        assert!(a.admit_pending(ids[1], stranger).is_ok());
        assert!(
            a.admit_pending(ids[2], stranger).is_err(),
            "a third handshake"
        );
        assert!(a.admit_pending(ids[3], member).is_ok(), "another address");
        // A finished handshake frees its slot for the next.
        assert!(a.admit_established(ids[0], stranger).is_ok());
        assert!(a.admit_pending(ids[4], stranger).is_ok());
        assert!(a.admit_established(ids[1], stranger).is_ok());
        assert!(a.admit_established(ids[4], stranger).is_ok());
        assert!(a.admit_pending(ids[5], stranger).is_ok());
        assert!(
            a.admit_established(ids[5], stranger).is_err(),
            "a fourth connection from one address"
        );
        assert!(
            !a.pending.contains_key(&ids[5]),
            "its handshake slot freed too"
        );
        assert!(a.admit_established(ids[3], member).is_ok());
        // A closed connection frees its slot.
        a.gone(ids[0]);
        assert!(a.admit_pending(ids[6], stranger).is_ok());
        assert!(a.admit_established(ids[6], stranger).is_ok());
    }

    #[test]
    fn the_totals_hold_across_addresses() {
        let mut a = small();
        let mut n = 0;
        let mut next = || {
            n += 1;
            ConnectionId::new_unchecked(n)
        };
        for host in 0..5 {
            let from = addr(&format!("/ip4/10.0.0.{host}/tcp/1"));
            assert!(a.admit_pending(next(), from).is_ok());
        }
        let sixth = addr("/ip4/10.0.0.9/tcp/1");
        assert!(a.admit_pending(next(), sixth).is_err(), "pending total");
        let mut b = small();
        for host in 0..7 {
            let from = addr(&format!("/ip4/10.0.1.{host}/tcp/1"));
            let id = next();
            assert!(b.admit_pending(id, from).is_ok());
            assert!(b.admit_established(id, from).is_ok());
        }
        let id = next();
        assert!(b.admit_pending(id, sixth).is_ok());
        assert!(b.admit_established(id, sixth).is_err(), "established total");
    }

    #[test]
    fn an_ipv6_host_counts_as_one_address_across_its_64() {
        let mut a = small();
        let one = addr("/ip6/fd00:1:2:3::1/tcp/1");
        let same_64 = addr("/ip6/fd00:1:2:3:ffff::9/tcp/1");
        let other_64 = addr("/ip6/fd00:1:2:4::1/tcp/1");
        assert_eq!(one, same_64);
        assert!(a.admit_pending(ConnectionId::new_unchecked(1), one).is_ok());
        assert!(
            a.admit_pending(ConnectionId::new_unchecked(2), same_64)
                .is_ok()
        );
        assert!(
            a.admit_pending(ConnectionId::new_unchecked(3), same_64)
                .is_err()
        );
        assert!(
            a.admit_pending(ConnectionId::new_unchecked(4), other_64)
                .is_ok()
        );
        assert_eq!(
            addr("/ip6/::ffff:10.0.0.1/tcp/1"),
            addr("/ip4/10.0.0.1/tcp/1"),
            "an IPv4 address written as IPv6 is the same address"
        );
    }
}
