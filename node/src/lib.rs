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

pub mod cli;
pub mod daemon;
pub mod dialer;
pub mod discovery;
pub mod events;
pub mod framing;
pub mod identity;
pub mod local_api;
pub mod peers;
pub mod shutdown;
pub mod storage_actor;
pub mod swarm;

pub use events::{EventBus, NodeEvent};
pub use identity::Identity;
pub use shutdown::Shutdown;
pub use swarm::{NetworkHandle, SYNC_PROTOCOL};
