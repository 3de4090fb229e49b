//! Troupe's store (redb): oplog, materialised state, blobs, quarantine.
//!
//! Not built yet: this crate is filled by the storage work. It exposes nothing.
