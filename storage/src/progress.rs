//! Per-peer sync progress, for display (`status`, the event stream): how far
//! a sync with a peer got, when, and its last error.
//!
//! This is not the checkpoint: committed op ranges are (a resumed sync asks
//! for what the ranges lack). Progress rows are therefore written with
//! non-durable commits: cheap, and persisted by the next durable commit; a
//! crash may lose the latest figure, never data.

use redb::{Durability, ReadableDatabase};
use serde::{Deserialize, Serialize};
use troupe_protocol::WorkspaceId;

use crate::error::{CommitError, DamagedRow, ReadError};
use crate::schema::PEER_PROGRESS;
use crate::{StorageFailure, Store};

/// How a sync with one peer in one workspace stands.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerProgress {
    /// Bundles received and committed in the current or last sync.
    pub done: u64,
    /// Bundles the peer had that this node lacked when the sync began.
    pub total: u64,
    /// When this row was last updated (ms since the Unix epoch, from the caller).
    pub updated_ms: u64,
    /// When a sync with this peer last completed, if ever.
    pub last_complete_ms: Option<u64>,
    /// The last error, in words, if the last attempt failed.
    pub last_error: Option<String>,
}

fn key(ws: &WorkspaceId, peer: &str) -> Vec<u8> {
    let mut k = ws.0.to_vec();
    k.extend_from_slice(peer.as_bytes());
    k
}

impl Store {
    /// Records sync progress with `peer` (its id in text form) in `ws`.
    /// Not durable on its own and not journaled: a crash may bring back an
    /// older figure, which is only shown (the ranges held are the checkpoint).
    ///
    /// # Errors
    /// [`CommitError::Storage`].
    pub fn set_peer_progress(
        &self,
        ws: &WorkspaceId,
        peer: &str,
        progress: &PeerProgress,
    ) -> Result<(), CommitError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::None)
            .map_err(|e| CommitError::Storage(StorageFailure(e.into())))?;
        let v = postcard::to_allocvec(progress).map_err(|_| DamagedRow {
            what: "peer progress (encode)",
        })?;
        txn.open_table(PEER_PROGRESS)?
            .insert(key(ws, peer).as_slice(), v.as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// Progress with every peer recorded in `ws`, by peer id.
    ///
    /// # Errors
    /// [`ReadError::Storage`], [`ReadError::Damaged`].
    pub fn peer_progress(
        &self,
        ws: &WorkspaceId,
    ) -> Result<Vec<(String, PeerProgress)>, ReadError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(PEER_PROGRESS)?;
        let mut out = Vec::new();
        for row in t.range(ws.0.as_slice()..)? {
            let (k, v) = row?;
            let Some(peer) = k.value().strip_prefix(ws.0.as_slice()) else {
                break;
            };
            let damaged = DamagedRow {
                what: "peer progress",
            };
            let peer = String::from_utf8(peer.to_vec()).map_err(|_| damaged.clone())?;
            out.push((peer, postcard::from_bytes(v.value()).map_err(|_| damaged)?));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use troupe_protocol::workspace::{WorkspaceInfo, WorkspaceKind, WorkspaceSecret};

    #[test]
    fn progress_is_kept_per_workspace_and_peer() {
        let s = Store::open_with_backend(redb::backends::InMemoryBackend::new()).unwrap();
        let a = WorkspaceSecret([1; 32]).workspace_id();
        let b = WorkspaceSecret([2; 32]).workspace_id();
        s.add_workspace(&WorkspaceInfo::new(
            WorkspaceSecret([1; 32]),
            "a",
            WorkspaceKind::Show,
        ))
        .unwrap();
        let p = PeerProgress {
            done: 3,
            total: 10,
            updated_ms: 5,
            last_complete_ms: None,
            last_error: Some("peer went away".into()),
        };
        s.set_peer_progress(&a, "peer-1", &p).unwrap();
        s.set_peer_progress(&b, "peer-2", &PeerProgress::default())
            .unwrap();
        assert_eq!(
            s.peer_progress(&a).unwrap(),
            vec![("peer-1".to_string(), p)]
        );
        assert_eq!(s.peer_progress(&b).unwrap().len(), 1);
    }
}
