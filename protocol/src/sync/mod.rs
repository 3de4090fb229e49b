//! The sans-IO sync engine for `/troupe/sync/1`.
//!
//! Goals: scoped (only members of a workspace see any of it), checkpointed
//! (committed ranges are the resume point), verified (every received bundle
//! passes [`crate::verify`] before the driver may commit it), deterministic
//! (time and randomness are inputs). Non-goals: transport, discovery, storage
//! live elsewhere.
//!
//! | module | owns |
//! |---|---|
//! | [`io`] | inputs, outputs, events |
//! | [`message`] | the wire format |
//! | [`limits`] | every cap and timer |
//! | `handshake` | membership proofs |
//! | `membership` | workspaces joined or left while connected |
//! | `session` | per-peer state machine |
//! | `transfer` | ranges, wants, batches, announces |
//! | `claims` | what a peer holds, with a running count of its ranges |
//! | `batch` | building one outgoing batch |
//! | `columnar` | the column layout of a batch's bundles on the wire |
//! | `repair` | fetching clean copies of corrupt bundles |
//! | `blobs` | fetching blob bytes in chunks, resumable, verified |
//! | [`oplog_view`] | what the engine reads from storage |
//! | `uncommitted` | hashes of verified bundles not yet committed |
//! | `wire_copy` | a received batch kept as it arrived, for a journal |

mod batch;
mod blobs;
mod claims;
mod column_body;
pub(crate) mod columnar;
mod engine;
#[cfg(any(test, feature = "testing"))]
pub mod fuzz;
mod handshake;
pub mod io;
pub mod limits;
mod membership;
pub mod message;
pub mod oplog_view;
mod prepare;
mod repair;
mod rng;
mod session;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod transfer;
mod uncommitted;
mod wire_copy;

#[cfg(test)]
mod tests;

pub use engine::{Engine, EngineConfig, SyncStats};
pub use io::{Input, Millis, Output, PeerId, SyncEvent};
pub use oplog_view::{BlobState, OplogView, ViewError};
pub use prepare::PreparedFrame;
pub use wire_copy::{WireCopy, WireCopyError};
