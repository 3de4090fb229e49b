//! Troupe's protocol core: the data model, its canonical encoding, verification,
//! the conflict rules, undo, and (in [`sync`]) the sans-IO sync engine.
//!
//! This crate does no IO: no sockets, no files, no clocks, no threads, no global
//! randomness. Time and random bytes arrive as arguments; collections iterate in
//! a defined order. The node and the simulator drive the same code, so what the
//! simulator proves is what ships.
//!
//! | module | owns |
//! |---|---|
//! | [`ids`] | `WorkspaceId`, `ActorId`, `EntityId`, `OpId`, `BundleHash`, `BlobHash` |
//! | [`workspace`] | the workspace secret and what it derives (id, member tags) |
//! | [`crypto`] | blake3 hashing, domain-separated keyed hashes, ed25519 actor keys |
//! | [`value`], [`path`], [`op`] | what a change says |
//! | [`bundle`] | signed, hash-chained bundles; single-bundle verification |
//! | [`verify`] | many bundles at once: one signature per contiguous run |
//! | [`encoding`] | canonical postcard with hard caps |
//! | [`hlc`] | hybrid logical clock |
//! | [`ranges`] | `SeqRangeSet`: what a node holds, what a peer lacks |
//! | [`register`] | field heads, winners, the in-memory `Replica` |
//! | [`conflict`] | conflicts grouped by bundle, in words; resolution ops |
//! | [`undo`] | undo/redo plans |
//! | [`draft`] | assembling edits, jobs and imports into one bundle |
//! | [`sync`] | the sans-IO sync engine and the read interface it needs |
//!
//! ```
//! use troupe_protocol::{crypto::ActorKey, draft::{AuthorTip, Draft}, bundle::BundleKind,
//!     hlc::HlcClock, path::FieldPath, register::Replica, value::Value, workspace::WorkspaceSecret};
//!
//! let ws = WorkspaceSecret([1; 32]).workspace_id();
//! let alex = ActorKey::from_secret_bytes([7; 32]);
//! let mut clock = HlcClock::default();
//! let mut draft = Draft::new(ws, BundleKind::UserEdit, "Add Jane");
//! let name: FieldPath = "contacts.person/jane/name".parse().unwrap();
//! draft.set(name.clone(), Value::from("Jane Doe"), vec![]);
//! let bundle = draft.sign(&alex, &AuthorTip::default(), clock.tick(1_700_000_000_000)).unwrap();
//! bundle.verify_alone(&ws, None).unwrap();
//!
//! let mut replica = Replica::new();
//! replica.apply(&bundle);
//! assert_eq!(replica.value(&name), Some(&Value::from("Jane Doe")));
//! ```

pub mod bundle;
pub mod conflict;
pub mod crypto;
pub mod draft;
pub mod encoding;
pub mod error;
mod hex;
pub mod hlc;
pub mod ids;
pub mod limits;
pub mod op;
pub mod path;
pub mod ranges;
pub mod register;
pub mod sync;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod undo;
pub mod value;
pub mod verify;
pub mod workspace;

pub use bundle::{Bundle, BundleBody, BundleKind};
pub use error::{DecodeError, ModelError, ParseError, VerifyError};
pub use ids::{ActorId, BlobHash, BundleHash, EntityId, OpId, WorkspaceId};
pub use op::Op;
pub use path::FieldPath;
pub use value::{AssetRef, Value};

#[cfg(test)]
mod tests;
