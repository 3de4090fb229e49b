//! The libp2p shell: TCP, our Noise handshake and AES-GCM records ([`crate::secure`]), yamux, and one stream protocol, `/troupe/sync/1`.
//!
//! The swarm runs on its own task and is driven only from there. Everything
//! else talks to it through a [`NetworkHandle`]:
//!
//! - [`NetworkHandle::dial`] connects to an address and answers with the peer id
//!   once noise has authenticated it. Dial explicitly before opening streams:
//!   the stream control does not know addresses.
//! - [`NetworkHandle::open_stream`] opens an outbound `/troupe/sync/1` stream to
//!   a connected peer.
//! - Inbound streams arrive on [`Inbound`], fed by a dedicated acceptor task so
//!   a busy consumer never stalls the swarm (the stream behaviour drops streams
//!   when its queue is not drained; see [`INBOUND_QUEUE`]).
//!
//! Connection changes go to the [`PeerTable`] and the [`EventBus`].

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use libp2p::core::{ConnectedPoint, Transport as _, upgrade};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{ConnectionId, DialError, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Stream, StreamProtocol, Swarm, tcp};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tracing::{Instrument, debug, info, warn};

use crate::events::{EventBus, NodeEvent};
use crate::identity::Identity;
use crate::peers::PeerTable;
use crate::shutdown::Shutdown;

/// How long [`NetworkHandle::open_stream`] waits for the swarm task to record
/// a connection that the peer is already using.
const CONNECT_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// How long a connection may take from its first byte to a secure,
/// multiplexed session. A stranger's connection that never finishes its
/// handshake gives its slot ([`crate::admission`]) back after this; a
/// member on a LAN finishes in milliseconds.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The swarm's behaviours: inbound caps, then the one stream protocol.
#[derive(libp2p::swarm::NetworkBehaviour)]
#[behaviour(prelude = "libp2p::swarm::derive_prelude", to_swarm = "()")]
struct Behaviour {
    admission: crate::admission::Admission,
    stream: libp2p_stream::Behaviour,
}

/// The one protocol Troupe speaks on libp2p streams.
pub const SYNC_PROTOCOL: StreamProtocol = StreamProtocol::new("/troupe/sync/1");

/// Inbound streams waiting for the consumer. Beyond this, new streams are
/// refused (dropped, which resets them) rather than queued without bound.
pub const INBOUND_QUEUE: usize = 64;

/// How long a connection with no open stream stays up. Long, because a
/// connection is also how a peer shows as "connected"; the dialler reconnects
/// after it closes.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// An inbound `/troupe/sync/1` stream and the authenticated peer that opened it.
pub type Inbound = mpsc::Receiver<(PeerId, Stream)>;

/// Connection changes, typed, for the sync driver (the engine's `PeerUp` /
/// `PeerDown`). Only the first connection to a peer and the close of its last
/// one are reported, so a brief double connection is not a flap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionEvent {
    /// The first connection to this peer opened.
    Up(PeerId),
    /// The last connection to this peer closed.
    Down(PeerId),
}

/// How many connection events a slow subscriber may lag before missing some
/// (it is then told how many it missed and should re-read the peer table).
pub const CONNECTION_EVENT_BUFFER: usize = 256;

/// Why the network could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// Building the transport failed (noise key setup).
    #[error("cannot set up the encrypted transport: {0}")]
    Transport(String),
    /// An address could not be listened on: it is in use, not local, or not TCP.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
}

/// Why a dial or stream failed. Both are normal on a LAN; callers retry later.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// The connection attempt failed (refused, unreachable, wrong peer id).
    #[error("dial failed: {0}")]
    Dial(String),
    /// The peer is not connected, or the stream failed while opening.
    #[error("cannot open a stream: {0}")]
    Stream(String),
    /// The peer is connected but does not speak this node's sync protocol:
    /// it runs another version of Troupe. Retrying soon cannot help.
    #[error("the peer does not speak {0}: it runs another version of Troupe")]
    OtherVersion(StreamProtocol),
    /// The network task has stopped (shutdown).
    #[error("the network has stopped")]
    Stopped,
}

enum Command {
    Dial {
        addr: Multiaddr,
        reply: oneshot::Sender<Result<PeerId, NetError>>,
    },
    Disconnect {
        peer: PeerId,
    },
}

/// A cloneable handle to the running swarm.
#[derive(Clone)]
pub struct NetworkHandle {
    local_peer: PeerId,
    commands: mpsc::Sender<Command>,
    control: libp2p_stream::Control,
    protocol: StreamProtocol,
    listen_addrs: watch::Receiver<Vec<Multiaddr>>,
    peers: PeerTable,
    connections: broadcast::Sender<ConnectionEvent>,
}

impl std::fmt::Debug for NetworkHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkHandle")
            .field("local_peer", &self.local_peer)
            .finish_non_exhaustive()
    }
}

impl NetworkHandle {
    /// Our own peer id.
    pub fn local_peer(&self) -> PeerId {
        self.local_peer
    }

    /// The addresses we listen on right now (resolved: no port 0).
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.listen_addrs.borrow().clone()
    }

    /// Waits until at least one listen address is up, or the network stops.
    ///
    /// # Errors
    /// [`NetError::Stopped`].
    pub async fn wait_listening(&self) -> Result<Vec<Multiaddr>, NetError> {
        let mut rx = self.listen_addrs.clone();
        let addrs = rx
            .wait_for(|a| !a.is_empty())
            .await
            .map_err(|_| NetError::Stopped)?;
        Ok(addrs.clone())
    }

    /// The peer table this network writes.
    pub fn peers(&self) -> &PeerTable {
        &self.peers
    }

    /// Connects to `addr` (which may end in `/p2p/<peer id>` to pin the peer)
    /// and returns the authenticated peer id.
    ///
    /// # Errors
    /// [`NetError::Dial`] or [`NetError::Stopped`].
    pub async fn dial(&self, addr: Multiaddr) -> Result<PeerId, NetError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Dial { addr, reply })
            .await
            .map_err(|_| NetError::Stopped)?;
        rx.await.map_err(|_| NetError::Stopped)?
    }

    /// Connection changes from now on (subscribe before reading the peer
    /// table to miss nothing).
    pub fn connection_events(&self) -> broadcast::Receiver<ConnectionEvent> {
        self.connections.subscribe()
    }

    /// Closes every connection to `peer` (the engine's `Disconnect` output).
    /// The dialler may connect again later; the engine decides whether to talk.
    ///
    /// # Errors
    /// [`NetError::Stopped`].
    pub async fn disconnect(&self, peer: PeerId) -> Result<(), NetError> {
        self.commands
            .send(Command::Disconnect { peer })
            .await
            .map_err(|_| NetError::Stopped)
    }

    /// The sync protocol this node speaks ([`SYNC_PROTOCOL`] but in tests).
    pub fn protocol(&self) -> &StreamProtocol {
        &self.protocol
    }

    /// Opens an outbound sync stream ([`NetworkHandle::protocol`]) to a
    /// connected peer.
    ///
    /// # Errors
    /// [`NetError::OtherVersion`] if the peer does not speak the protocol,
    /// [`NetError::Stream`] if it is not connected or the stream fails.
    pub async fn open_stream(&self, peer: PeerId) -> Result<Stream, NetError> {
        // The peer's first inbound stream can reach the sync driver before
        // the swarm task has recorded the connection: give the record a
        // moment rather than drop a fresh connection.
        let mut waited = std::time::Duration::ZERO;
        while !self.peers.is_connected(&peer) {
            if waited >= CONNECT_GRACE {
                return Err(NetError::Stream(format!(
                    "{peer} is not connected; dial it first"
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            waited += std::time::Duration::from_millis(2);
        }
        let mut control = self.control.clone();
        control
            .open_stream(peer, self.protocol.clone())
            .await
            .map_err(|e| match e {
                libp2p_stream::OpenStreamError::UnsupportedProtocol(p) => NetError::OtherVersion(p),
                e => NetError::Stream(e.to_string()),
            })
    }
}

/// Builds the swarm, starts listening on `listen`, and spawns the swarm task
/// and the inbound acceptor under `shutdown`.
///
/// # Errors
/// [`StartError`] when the transport cannot be built or an address cannot be listened on.
pub fn start(
    identity: &Identity,
    listen: &[Multiaddr],
    peers: PeerTable,
    events: EventBus,
    shutdown: &Shutdown,
) -> Result<(NetworkHandle, Inbound), StartError> {
    start_speaking(SYNC_PROTOCOL, identity, listen, peers, events, shutdown)
}

/// As [`start`], speaking `protocol` instead of [`SYNC_PROTOCOL`]: what a
/// device running another version of Troupe looks like to this one, so
/// that how a node meets such a device can be tested.
///
/// # Errors
/// As [`start`].
pub fn start_speaking(
    protocol: StreamProtocol,
    identity: &Identity,
    listen: &[Multiaddr],
    peers: PeerTable,
    events: EventBus,
    shutdown: &Shutdown,
) -> Result<(NetworkHandle, Inbound), StartError> {
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(identity.keypair.clone())
        .with_tokio()
        .with_other_transport(
            |key| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
                Ok(
                    tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
                        .upgrade(upgrade::Version::V1Lazy)
                        .authenticate(crate::secure::Config::new(key)?)
                        .multiplex(crate::muxer::Yamux::default())
                        .timeout(HANDSHAKE_TIMEOUT),
                )
            },
        )
        .map_err(|e| StartError::Transport(e.to_string()))?
        .with_behaviour(|_| Behaviour {
            admission: crate::admission::Admission::new(crate::admission::Limits::default()),
            stream: libp2p_stream::Behaviour::new(),
        })
        .map_err(|e| StartError::Transport(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_TIMEOUT))
        .build();

    for addr in listen {
        check_port_free(addr)?;
        swarm
            .listen_on(addr.clone())
            .map_err(|e| StartError::Listen {
                addr: addr.clone(),
                reason: error_chain(&e),
            })?;
    }

    let mut control = swarm.behaviour().stream.new_control();
    // `accept` fails only if the protocol is already registered; this is the
    // only registration on a fresh behaviour.
    let incoming = control
        .accept(protocol.clone())
        .map_err(|e| StartError::Transport(e.to_string()))?;

    let (cmd_tx, cmd_rx) = mpsc::channel(32);
    let (addr_tx, addr_rx) = watch::channel(Vec::new());
    let (in_tx, in_rx) = mpsc::channel(INBOUND_QUEUE);
    let (conn_tx, _) = broadcast::channel(CONNECTION_EVENT_BUFFER);
    let handle = NetworkHandle {
        local_peer: *swarm.local_peer_id(),
        commands: cmd_tx,
        control,
        protocol,
        listen_addrs: addr_rx,
        peers: peers.clone(),
        connections: conn_tx.clone(),
    };

    let task = SwarmTask {
        swarm,
        commands: cmd_rx,
        listen_addrs: addr_tx,
        pending_dials: HashMap::new(),
        refusals: crate::admission::RefusalReport::default(),
        peers,
        events,
        connections: conn_tx,
    };
    let span = tracing::info_span!("swarm", me = %handle.local_peer);
    shutdown.spawn(task.run(shutdown.clone()).instrument(span));
    shutdown.spawn(accept(incoming, in_tx, shutdown.clone()));
    Ok((handle, in_rx))
}

/// libp2p's TCP listener sets `SO_REUSEPORT`, so a second node could bind a
/// fixed port that is already in use and silently share its connections. A
/// plain bind first (without that option) fails on a busy port, and says so.
fn check_port_free(addr: &Multiaddr) -> Result<(), StartError> {
    let mut ip = None;
    let mut port = None;
    for p in addr.iter() {
        match p {
            Protocol::Ip4(a) => ip = Some(std::net::IpAddr::V4(a)),
            Protocol::Ip6(a) => ip = Some(std::net::IpAddr::V6(a)),
            Protocol::Tcp(p) => port = Some(p),
            _ => {}
        }
    }
    let (Some(ip), Some(port)) = (ip, port) else {
        return Ok(());
    };
    if port == 0 {
        return Ok(());
    }
    std::net::TcpListener::bind((ip, port))
        .map(drop)
        .map_err(|e| StartError::Listen {
            addr: addr.clone(),
            reason: e.to_string(),
        })
}

/// An error and its sources in one line (libp2p's outer errors often print
/// nothing useful on their own).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut cur: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if !text.is_empty() && !parts.iter().any(|p: &String| p.contains(&text)) {
            parts.push(text);
        }
        cur = err.source();
    }
    if parts.is_empty() {
        format!("{e:?}")
    } else {
        parts.join(": ")
    }
}

/// The acceptor: moves inbound streams from the behaviour to the consumer's queue.
async fn accept(
    mut incoming: libp2p_stream::IncomingStreams,
    out: mpsc::Sender<(PeerId, Stream)>,
    shutdown: Shutdown,
) {
    loop {
        tokio::select! {
            _ = shutdown.triggered() => return,
            next = incoming.next() => {
                let Some((peer, stream)) = next else { return };
                match out.try_send((peer, stream)) {
                    Ok(()) => debug!(%peer, "inbound stream"),
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        warn!(%peer, "inbound stream refused: {INBOUND_QUEUE} already waiting");
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
        }
    }
}

struct SwarmTask {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    listen_addrs: watch::Sender<Vec<Multiaddr>>,
    pending_dials: HashMap<ConnectionId, oneshot::Sender<Result<PeerId, NetError>>>,
    /// Inbound connections the caps refused, reported a few at a time.
    refusals: crate::admission::RefusalReport,
    peers: PeerTable,
    events: EventBus,
    connections: broadcast::Sender<ConnectionEvent>,
}

impl SwarmTask {
    async fn run(mut self, shutdown: Shutdown) {
        loop {
            tokio::select! {
                _ = shutdown.triggered() => break,
                Some(cmd) = self.commands.recv() => self.on_command(cmd),
                event = self.swarm.select_next_some() => self.on_event(event),
            }
        }
        debug!("swarm task stopped");
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Dial { addr, reply } => {
                let opts = libp2p::swarm::dial_opts::DialOpts::from(addr.clone());
                let id = opts.connection_id();
                match self.swarm.dial(opts) {
                    Ok(()) => {
                        self.pending_dials.insert(id, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(NetError::Dial(dial_error_text(&e))));
                    }
                }
            }
            Command::Disconnect { peer } => {
                // Err only means "not connected", which is the goal anyway.
                let _ = self.swarm.disconnect_peer_id(peer);
            }
        }
    }

    fn on_event(&mut self, event: SwarmEvent<()>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                info!(%address, "listening");
                self.listen_addrs.send_modify(|a| a.push(address.clone()));
                self.events.publish(NodeEvent::Listening {
                    addr: address.to_string(),
                });
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_addrs
                    .send_modify(|a| a.retain(|x| x != &address));
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                let addr = match &endpoint {
                    ConnectedPoint::Dialer { address, .. } => address.clone(),
                    ConnectedPoint::Listener { send_back_addr, .. } => send_back_addr.clone(),
                };
                if let Some(reply) = self.pending_dials.remove(&connection_id) {
                    let _ = reply.send(Ok(peer_id));
                }
                if self.peers.connected(peer_id, &addr) {
                    info!(peer = %peer_id, %addr, "peer connected");
                    let _ = self.connections.send(ConnectionEvent::Up(peer_id));
                    self.events.publish(NodeEvent::PeerConnected {
                        peer_id: peer_id.to_string(),
                        actor_id: crate::identity::peer_to_actor(&peer_id).map(|a| a.to_string()),
                        addr: addr.to_string(),
                    });
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                cause,
                ..
            } => {
                if self.peers.disconnected(peer_id, num_established) {
                    info!(peer = %peer_id, ?cause, "peer disconnected");
                    let _ = self.connections.send(ConnectionEvent::Down(peer_id));
                    self.events.publish(NodeEvent::PeerDisconnected {
                        peer_id: peer_id.to_string(),
                    });
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                error,
                ..
            } => {
                let text = dial_error_text(&error);
                debug!(error = %text, "dial failed");
                if let Some(reply) = self.pending_dials.remove(&connection_id) {
                    let _ = reply.send(Err(NetError::Dial(text)));
                }
            }
            SwarmEvent::IncomingConnectionError {
                error,
                send_back_addr,
                ..
            } => {
                let refused = match &error {
                    libp2p::swarm::ListenError::Denied { cause } => {
                        cause.downcast_ref::<crate::admission::Refused>()
                    }
                    _ => None,
                };
                let report = refused.and_then(|why| {
                    let now = std::time::Instant::now();
                    self.refusals.note(&send_back_addr, why, now)
                });
                match report {
                    Some(report) => warn!("{report}"),
                    None => debug!(%error, "inbound connection failed"),
                }
            }
            other => debug!(?other, "swarm event"),
        }
    }
}

/// A dial error in one line (libp2p's own text nests transport errors).
fn dial_error_text(e: &DialError) -> String {
    match e {
        DialError::Transport(errs) => errs
            .iter()
            .map(|(addr, err)| format!("{addr}: {}", error_chain(err)))
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::{read_frame, write_frame};

    fn node(seed: u8, shutdown: &Shutdown) -> (NetworkHandle, Inbound) {
        let id = Identity::from_secret([seed; 32]);
        let listen: Multiaddr = "/ip4/127.0.0.1/tcp/0".parse().unwrap();
        start(&id, &[listen], PeerTable::new(), EventBus::new(), shutdown).unwrap()
    }

    #[tokio::test]
    async fn two_swarms_dial_and_exchange_a_frame_on_a_sync_stream() {
        let shutdown = Shutdown::new();
        let (a, _a_in) = node(1, &shutdown);
        let (b, mut b_in) = node(2, &shutdown);
        let b_addr = b.wait_listening().await.unwrap()[0].clone();
        let mut b_conns = b.connection_events();

        assert!(
            a.open_stream(b.local_peer()).await.is_err(),
            "not dialled yet"
        );
        let peer = a.dial(b_addr).await.unwrap();
        assert_eq!(peer, b.local_peer());

        let mut out = a.open_stream(peer).await.unwrap();
        write_frame(&mut out, b"hello").await.unwrap();
        let (from, mut inbound) = b_in.recv().await.unwrap();
        assert_eq!(from, a.local_peer());
        assert_eq!(read_frame(&mut inbound).await.unwrap().unwrap(), b"hello");
        assert!(a.peers().is_connected(&b.local_peer()));
        assert_eq!(
            b_conns.recv().await.unwrap(),
            ConnectionEvent::Up(a.local_peer())
        );

        a.disconnect(b.local_peer()).await.unwrap();
        assert_eq!(
            b_conns.recv().await.unwrap(),
            ConnectionEvent::Down(a.local_peer())
        );
        assert!(!b.peers().is_connected(&a.local_peer()));
        assert!(shutdown.shutdown(Duration::from_secs(5)).await);
    }

    #[tokio::test]
    async fn a_busy_fixed_port_or_a_foreign_address_is_refused_with_a_reason() {
        let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = busy.local_addr().unwrap().port();
        let id = Identity::from_secret([4; 32]);
        let shutdown = Shutdown::new();
        for addr in [
            format!("/ip4/127.0.0.1/tcp/{port}"),
            "/ip4/192.0.2.1/tcp/0".to_owned(),
        ] {
            let addr: Multiaddr = addr.parse().unwrap();
            match start(&id, &[addr], PeerTable::new(), EventBus::new(), &shutdown) {
                Err(StartError::Listen { reason, .. }) => assert!(!reason.trim().is_empty()),
                other => panic!("expected a listen error, got {:?}", other.map(|_| ())),
            }
        }
    }

    #[tokio::test]
    async fn dialling_a_closed_port_fails_with_a_reason() {
        let shutdown = Shutdown::new();
        let (a, _in) = node(3, &shutdown);
        // Bind then drop a listener to get a port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
        match a.dial(addr).await {
            Err(NetError::Dial(reason)) => assert!(reason.contains("refused"), "{reason}"),
            other => panic!("expected a dial error, got {other:?}"),
        }
        assert!(shutdown.shutdown(Duration::from_secs(5)).await);
    }
}
