//! Removing a workspace's local data in one transaction, for a person who
//! leaves a show and asks for its data to be deleted from this device.
//!
//! Every row keyed by the workspace goes: its metadata, bundles, seq hashes,
//! ranges, tips, materialised state, forks and peer
//! progress. Asset bytes that no other workspace references are freed in the
//! same transaction; bytes another workspace still references stay.
//! Quarantined copies are kept (they are evidence of damage, listed and
//! skipped with the quarantine commands).

use redb::{ReadableTable, WriteTransaction};
use troupe_protocol::WorkspaceId;

use crate::Store;
use crate::error::CommitError;
use crate::schema::*;

/// What [`Store::remove_workspace`] deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoveReport {
    /// Rows deleted across all tables.
    pub rows: u64,
    /// Blobs whose bytes were freed (referenced by no other workspace).
    pub blobs_freed: u64,
}

fn remove_prefix(txn: &WriteTransaction, table: Tbl, prefix: &[u8]) -> Result<u64, CommitError> {
    let mut t = txn.open_table(table)?;
    let mut keys = Vec::new();
    for row in t.range(prefix..)? {
        let (k, _) = row?;
        if !k.value().starts_with(prefix) {
            break;
        }
        keys.push(k.value().to_vec());
    }
    for k in &keys {
        t.remove(k.as_slice())?;
    }
    Ok(keys.len() as u64)
}

impl Store {
    /// Deletes every local row of workspace `ws` in one transaction: after
    /// it, the store holds nothing of the workspace but quarantined copies.
    /// Returns [`CommitError::UnknownWorkspace`] when it is not here.
    ///
    /// # Errors
    /// [`CommitError::UnknownWorkspace`], [`CommitError::Storage`].
    pub fn remove_workspace(&self, ws: &WorkspaceId) -> Result<RemoveReport, CommitError> {
        let txn = self.db.begin_write()?;
        let mut report = RemoveReport::default();
        {
            let mut w = txn.open_table(WORKSPACES)?;
            if w.remove(ws.0.as_slice())?.is_none() {
                return Err(CommitError::UnknownWorkspace(*ws));
            }
            report.rows += 1;
        }
        for table in [
            BUNDLES,
            SEQ_HASH,
            RANGES,
            TIPS,
            ENTITIES,
            SUPERSEDED,
            ASSET_DELETES,
            FORKS,
            PEER_PROGRESS,
        ] {
            report.rows += remove_prefix(&txn, table, &ws.0)?;
        }
        {
            let mut refs = txn.open_table(ASSET_REFS)?;
            let mut mine = Vec::new();
            let mut others = std::collections::BTreeSet::new();
            for row in refs.iter()? {
                let (k, _) = row?;
                let k = k.value();
                if k.len() == 64 {
                    if k[32..] == ws.0 {
                        mine.push(k.to_vec());
                    } else {
                        others.insert(k[..32].to_vec());
                    }
                }
            }
            for k in &mine {
                refs.remove(k.as_slice())?;
            }
            report.rows += mine.len() as u64;
            let mut meta = txn.open_table(BLOB_META)?;
            let mut chunks = txn.open_table(BLOB_CHUNKS)?;
            for k in &mine {
                let Ok(h) = <[u8; 32]>::try_from(&k[..32]).map(troupe_protocol::BlobHash) else {
                    continue;
                };
                if others.contains(&h.0[..]) {
                    continue;
                }
                let number = match meta.remove(h.0.as_slice())? {
                    Some(v) => {
                        report.blobs_freed += 1;
                        crate::blob::decode_meta(v.value())
                            .ok()
                            .and_then(|m| m.rows)
                    }
                    None => None,
                };
                crate::blob::remove_all_rows(&mut chunks, &h, number)?;
            }
        }
        txn.commit()?;
        Ok(report)
    }
}
