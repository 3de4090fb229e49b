//! The Troupe node: the IO shells around the protocol engine and the store.
//!
//! | module | owns |
//! |---|---|
//! | [`identity`] | the actor key in the data dir, which is also the libp2p identity |
//! | [`swarm`] | libp2p TCP + noise + yamux and `/troupe/sync/1` streams |
//! | [`muxer`] | yamux on each connection, in 64 KiB frames |
//! | [`admission`] | caps on inbound connections, per address and in all |
//! | [`framing`] | length-delimited frames with a hard cap |
//! | [`discovery`] | mDNS advertisement and browsing with member tags |
//! | [`dialer`] | explicit and remembered addresses, redialled with backoff |
//! | [`peers`] | who is connected and who was seen |
//! | [`events`] | the event stream the local API serves |
//! | [`local_api`] | HTTP + JSON on 127.0.0.1 with a bearer token, and its client |
//! | [`storage_actor`] | blocking state on a named thread behind an async handle |
//! | [`shutdown`] | one cancellation signal, task tracking, OS signals |
//! | [`local`] | the store, the device key and clock: signing local bundles |
//! | [`incarnation`] | a new actor key when this device may have lost bundles it sent |
//! | [`ops`] | every user command, run in the daemon or directly on the store |
//! | [`sync_core`] | engine + store on the storage thread |
//! | [`blob_flush`] | when received asset bytes are flushed to disk |
//! | [`sync_driver`] | the task between libp2p streams and the core |
//! | [`daemon`] | `troupe up`: wires the pieces together |
//! | [`demo`] | `troupe demo`: three real nodes on loopback, a conflict, convergence |
//! | [`cli`] | argument parsing, validated config, error reports |
//!
//! # How sync is driven
//! The sync engine is a sans-IO state machine. It lives with the store on the
//! storage thread ([`sync_core::SyncCore`] behind a
//! [`storage_actor::ActorHandle`]), so it always reads the store as it is and
//! a batch is committed and acknowledged before the next input. The async
//! [`sync_driver`] task turns connection events ([`swarm::ConnectionEvent`]),
//! inbound streams ([`swarm::Inbound`]), frames ([`framing`]) and timers into
//! engine inputs, and carries out the core's network commands: each side
//! writes on the stream it opened and reads the one the peer opened. User
//! commands ([`ops`]) run on the same thread through `POST /v1/command`, and
//! a local commit is announced to connected members at once.

pub mod admission;
pub mod blob_flush;
pub mod cli;
pub mod daemon;
pub mod demo;
pub mod dialer;
pub mod discovery;
pub mod events;
pub mod framing;
pub mod identity;
pub mod incarnation;
pub mod local;
pub mod local_api;
pub mod muxer;
pub mod ops;
pub mod peers;
pub mod secure;
pub mod shutdown;
pub mod storage_actor;
pub mod store_recovery;
pub mod swarm;
pub mod sync_core;
pub mod sync_driver;
mod throttle;

pub use events::{EventBus, NodeEvent};
pub use identity::Identity;
pub use shutdown::Shutdown;
pub use swarm::{NetworkHandle, SYNC_PROTOCOL};
