//! The Troupe node: the IO shells around the protocol engine and the store.
//!
//! | module | owns |
//! |---|---|
//! | [`identity`] | the actor key in the data dir, which is also the libp2p identity |
//! | [`swarm`] | libp2p TCP + noise + yamux and `/troupe/sync/1` streams |
//! | [`framing`] | length-delimited frames with a hard cap |
//! | [`discovery`] | mDNS advertisement and browsing with member tags |
//! | [`dialer`] | explicit and remembered addresses, redialled with backoff |
//! | [`peers`] | who is connected and who was seen |
//! | [`events`] | the event stream the local API serves |
//! | [`local_api`] | HTTP + JSON on 127.0.0.1 with a bearer token, and its client |
//! | [`storage_actor`] | blocking state on a named thread behind an async handle |
//! | [`shutdown`] | one cancellation signal, task tracking, OS signals |
//! | [`daemon`] | `troupe up`: wires the pieces together |
//! | [`cli`] | argument parsing, validated config, error reports |
//!
//! # Where the sync driver plugs in
//! The sync engine is a sans-IO state machine; the driver is the one task
//! that feeds it. Everything it needs from the network is here:
//!
//! - **Connections** → `Input::PeerUp` / `PeerDown`: subscribe to
//!   [`NetworkHandle::connection_events`] (typed [`swarm::ConnectionEvent`]);
//!   map peers with [`identity::sync_peer`] and back with [`identity::libp2p_peer`].
//! - **Inbound streams**: [`swarm::start`] returns an [`swarm::Inbound`]
//!   receiver of `(peer, stream)`, fed by a dedicated acceptor task. Today
//!   [`daemon`] closes them with a log line; the driver takes that receiver
//!   instead and reads frames with [`framing::read_frame`] → `Input::Frame`.
//! - **Outbound**: [`NetworkHandle::open_stream`] on a connected peer, then
//!   [`framing::write_frame`] for each `Output::SendFrame`. One simple
//!   convention: each side writes on the stream it opened and reads the
//!   stream the peer opened, so no side has to win a race to open one.
//! - **Disconnect**: [`NetworkHandle::disconnect`] for `Output::Disconnect`.
//! - **Discovery**: members found by mDNS are dialled by [`dialer`] already;
//!   the driver only sees the resulting connections. Workspaces for the
//!   member tags come from [`discovery::DiscoveryConfig::workspaces`].
//! - **The store**: [`storage_actor::ActorHandle`]`<Store>` on a named thread;
//!   `call(|store| store.commit(..))` for `Output::CommitBatch`, answered with
//!   `Input::BatchCommitted` / `BatchRejected`.
//! - **Events for apps**: [`EventBus::publish`] a [`NodeEvent`] (add variants
//!   for progress, new bundles and conflicts); `/v1/events` streams them.
//! - **Status**: [`local_api::ApiContext::status`] is a closure, so sync
//!   progress can be added to `GET /v1/status` without touching the API.

pub mod cli;
pub mod daemon;
pub mod dialer;
pub mod discovery;
pub mod events;
pub mod framing;
pub mod identity;
pub mod local;
pub mod local_api;
pub mod peers;
pub mod shutdown;
pub mod storage_actor;
pub mod swarm;
pub mod sync_core;
pub mod sync_driver;

pub use events::{EventBus, NodeEvent};
pub use identity::Identity;
pub use shutdown::Shutdown;
pub use swarm::{NetworkHandle, SYNC_PROTOCOL};
