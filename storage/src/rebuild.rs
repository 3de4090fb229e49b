//! Rebuilding materialised state from the oplog, and checking that the
//! materialised state equals a fresh replay.
//!
//! The replay runs the same register code as commits over every held
//! bundle, verified against the hash index; blob bytes are never needed
//! (asset references are inline in values). The register is a function of the
//! set of ops, so replay order does not matter.

use redb::backends::InMemoryBackend;
use redb::{Database, ReadableDatabase, ReadableTable, WriteTransaction};
use troupe_protocol::{ActorId, Bundle, WorkspaceId};

use crate::Store;
use crate::error::{CommitError, DamagedRow, RebuildError};
use crate::schema::*;
use crate::state::TxnState;

/// One difference between materialised and rebuilt state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RebuildDiff {
    /// The state table.
    pub table: &'static str,
    /// The row key.
    pub key: Vec<u8>,
    /// The materialised row, when present.
    pub ours: Option<Vec<u8>>,
    /// The rebuilt row, when present.
    pub rebuilt: Option<Vec<u8>>,
}

/// What a replay did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RebuildReport {
    /// Bundles replayed.
    pub replayed: u64,
    /// Slots skipped because their copy failed its hash (scrub, repair, rebuild again).
    pub skipped_corrupt: Vec<(WorkspaceId, ActorId, u64)>,
}

/// Replays every held, verifying bundle into the state tables of `dst`.
/// Returns the number replayed and the slots skipped as corrupt.
fn replay_into(
    bundles: &impl ReadableTable<&'static [u8], &'static [u8]>,
    seq_hash: &impl ReadableTable<&'static [u8], &'static [u8]>,
    dst: &WriteTransaction,
) -> Result<RebuildReport, RebuildError> {
    let mut state: Option<TxnState<'_>> = None;
    let mut n = 0;
    let mut skipped = Vec::new();
    for row in bundles.iter()? {
        let (k, v) = row?;
        let (ws, author, seq) =
            parse_seq_key(k.value()).ok_or(DamagedRow { what: "bundle key" })?;
        let held = crate::held::split(k.value(), v.value());
        let expected = crate::held::recorded_with(seq_hash, k.value(), Some(&held))?;
        let bundle = match expected.map(|h| Bundle::decode_expecting(held.copy.to_vec(), &h)) {
            Some(Ok(b)) => b,
            _ => {
                skipped.push((ws, author, seq));
                continue;
            }
        };
        let st = match &mut state {
            Some(s) => s,
            None => state.insert(TxnState::open(dst, ws)?),
        };
        st.ws = ws;
        st.apply(&bundle)?;
        n += 1;
    }
    if let Some(st) = &mut state {
        st.flush()?;
    }
    Ok(RebuildReport {
        replayed: n,
        skipped_corrupt: skipped,
    })
}

/// Removes every state row of one workspace, in slices (bounded memory).
fn clear_workspace_state(txn: &WriteTransaction, ws: &WorkspaceId) -> Result<(), CommitError> {
    const SLICE: usize = 4096;
    for t in STATE_TABLES {
        let mut table = txn.open_table(t)?;
        // asset_refs is keyed by blob hash first, then workspace.
        let by_hash = redb::TableHandle::name(&t) == "asset_refs";
        loop {
            let mut keys = Vec::with_capacity(SLICE);
            if by_hash {
                for row in table.iter()? {
                    let (k, _) = row?;
                    if k.value().get(32..64) == Some(ws.0.as_slice()) {
                        keys.push(k.value().to_vec());
                    }
                }
            } else {
                for row in table.range(ws.0.as_slice()..)? {
                    let (k, _) = row?;
                    if !k.value().starts_with(&ws.0) || keys.len() == SLICE {
                        break;
                    }
                    keys.push(k.value().to_vec());
                }
            }
            let done = by_hash || keys.len() < SLICE;
            for k in keys {
                table.remove(k.as_slice())?;
            }
            if done {
                break;
            }
        }
    }
    Ok(())
}

/// Rebuilds one workspace's state inside `txn` from its held bundles
/// (after a fork withdrew an applied copy). Copies failing their hash are
/// left out, as in [`Store::rebuild`].
pub(crate) fn rebuild_workspace(
    txn: &WriteTransaction,
    ws: &WorkspaceId,
) -> Result<(), CommitError> {
    clear_workspace_state(txn, ws)?;
    let bundles = txn.open_table(BUNDLES)?;
    let seq_hash = txn.open_table(SEQ_HASH)?;
    let mut state = TxnState::open(txn, *ws)?;
    for row in bundles.range(ws.0.as_slice()..)? {
        let (k, v) = row?;
        if !k.value().starts_with(&ws.0) {
            break;
        }
        let held = crate::held::split(k.value(), v.value());
        let expected = crate::held::recorded_with(&seq_hash, k.value(), Some(&held))?;
        if let Some(Ok(b)) = expected.map(|h| Bundle::decode_expecting(held.copy.to_vec(), &h)) {
            state.apply(&b)?;
        }
    }
    state.flush()?;
    Ok(())
}

impl Store {
    /// Clears materialised state and replays the oplog into it, in one write
    /// transaction; damaged or low author tips are rebuilt from the
    /// per-slot hashes in the same transaction. Returns how many bundles were replayed and the slots
    /// skipped because their copy is corrupt (scrub and repair those, then
    /// rebuild again).
    ///
    /// # Errors
    /// [`RebuildError::Storage`] (the old state stays), [`RebuildError::Damaged`].
    pub fn rebuild(&self) -> Result<RebuildReport, RebuildError> {
        let txn = self.db.begin_write()?;
        for t in STATE_TABLES {
            txn.delete_table(t)?;
        }
        let r = {
            let bundles = txn.open_table(BUNDLES)?;
            let seq_hash = txn.open_table(SEQ_HASH)?;
            replay_into(&bundles, &seq_hash, &txn)?
        };
        for t in STATE_TABLES {
            txn.open_table(t)?;
        }
        crate::tip_repair::repair_tips(&txn)?;
        txn.commit()?;
        Ok(r)
    }

    /// Replays the oplog into a fresh in-memory state and compares it, row by
    /// row, with the materialised state. Returns the differences (at most
    /// 100); empty means equal.
    ///
    /// # Errors
    /// [`RebuildError::Storage`], [`RebuildError::Damaged`].
    pub fn verify_rebuild(&self) -> Result<Vec<RebuildDiff>, RebuildError> {
        let fresh = Database::builder().create_with_backend(InMemoryBackend::new())?;
        let ours = self.db.begin_read()?;
        let wtxn = fresh.begin_write()?;
        {
            let bundles = ours.open_table(BUNDLES)?;
            let seq_hash = ours.open_table(SEQ_HASH)?;
            replay_into(&bundles, &seq_hash, &wtxn)?;
            for t in STATE_TABLES {
                wtxn.open_table(t)?;
            }
        }
        wtxn.commit()?;
        let theirs = fresh.begin_read()?;
        let mut diffs = Vec::new();
        for t in STATE_TABLES {
            let a = ours.open_table(t)?;
            let b = theirs.open_table(t)?;
            let mut ia = a.iter()?;
            let mut ib = b.iter()?;
            let mut ra = ia.next().transpose()?;
            let mut rb = ib.next().transpose()?;
            while diffs.len() < 100 {
                let (ka, kb) = (
                    ra.as_ref().map(|(k, _)| k.value().to_vec()),
                    rb.as_ref().map(|(k, _)| k.value().to_vec()),
                );
                let va = ra.as_ref().map(|(_, v)| v.value().to_vec());
                let vb = rb.as_ref().map(|(_, v)| v.value().to_vec());
                match (ka, kb) {
                    (None, None) => break,
                    (Some(x), Some(y)) if x == y => {
                        if va != vb {
                            diffs.push(RebuildDiff {
                                table: t.to_string_name(),
                                key: x,
                                ours: va,
                                rebuilt: vb,
                            });
                        }
                        ra = ia.next().transpose()?;
                        rb = ib.next().transpose()?;
                    }
                    (Some(x), y) if y.as_ref().is_none_or(|y| &x < y) => {
                        diffs.push(RebuildDiff {
                            table: t.to_string_name(),
                            key: x,
                            ours: va,
                            rebuilt: None,
                        });
                        ra = ia.next().transpose()?;
                    }
                    (_, y) => {
                        let Some(y) = y else { break };
                        diffs.push(RebuildDiff {
                            table: t.to_string_name(),
                            key: y,
                            ours: None,
                            rebuilt: vb,
                        });
                        rb = ib.next().transpose()?;
                    }
                }
            }
        }
        Ok(diffs)
    }
}

trait TableName {
    fn to_string_name(&self) -> &'static str;
}

impl TableName for Tbl {
    fn to_string_name(&self) -> &'static str {
        match redb::TableHandle::name(self) {
            "entities" => "entities",
            "superseded" => "superseded",
            "asset_deletes" => "asset_deletes",
            "asset_refs" => "asset_refs",
            _ => "other",
        }
    }
}
