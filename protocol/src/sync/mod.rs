//! The sans-IO sync engine. See [`oplog_view`] for what it reads from storage.
//!
//! The engine itself arrives with the sync-engine work; this module currently
//! holds the read interface the store implements for it.

pub mod oplog_view;

pub use oplog_view::{BlobState, OplogView, ViewError};
