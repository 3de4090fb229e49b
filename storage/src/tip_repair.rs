//! Repair of author tips, part of [`crate::Store::rebuild`], and the
//! removal of the hash → slot index older stores kept.
//!
//! A tip row is the highest seq committed for one author in one workspace;
//! the local signer signs its next bundle against it, so a tip that fails
//! its seal or lags the highest recorded slot is rewritten from the
//! recorded slot hashes (carried by the copies, or in `seq_hash`), which
//! hold the truth.
//!
//! Stores written before the index was dropped have `hash_index` and
//! `hash_log` tables: every reader finds bundles by slot (history entries
//! carry author and seq), so the index only cost every commit a log row and
//! every 64th commit a merge of tens of thousands of random inserts (a
//! tenth of a full sync's storage time, and pauses of 0.1 s). They are
//! deleted when such a store is opened.

use std::collections::BTreeMap;

use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};
use troupe_protocol::BundleHash;

use crate::error::{DamagedRow, RebuildError};
use crate::schema::*;

/// The hash index of older stores (hash → slot), see the module doc.
const LEGACY_HASH_INDEX: Tbl = TableDefinition::new("hash_index");
/// The log of recent index entries of older stores.
const LEGACY_HASH_LOG: Tbl = TableDefinition::new("hash_log");

/// Deletes the hash index tables of an older store (nothing when there
/// are none).
pub(crate) fn drop_legacy_index(txn: &WriteTransaction) -> Result<(), redb::TableError> {
    txn.delete_table(LEGACY_HASH_INDEX)?;
    txn.delete_table(LEGACY_HASH_LOG)?;
    Ok(())
}

/// Rewrites every author tip that fails its seal or lags the highest
/// recorded slot.
pub(crate) fn repair_tips(txn: &WriteTransaction) -> Result<(), RebuildError> {
    let mut top: BTreeMap<[u8; 64], (u64, BundleHash)> = BTreeMap::new();
    let mut note = |k: &[u8], h: BundleHash| -> Result<(), RebuildError> {
        let (ws, author, seq) = parse_seq_key(k).ok_or(DamagedRow { what: "slot key" })?;
        let t = top.entry(author_key(&ws, &author)).or_insert((seq, h));
        if seq >= t.0 {
            *t = (seq, h);
        }
        Ok(())
    };
    // Recorded slots: the hashes copies carry, then `seq_hash` (older
    // stores' copies, and slots whose copy is gone).
    for row in txn.open_table(BUNDLES)?.iter()? {
        let (k, v) = row?;
        if let Some(h) = crate::held::split(k.value(), v.value()).carried {
            note(k.value(), h)?;
        }
    }
    for row in txn.open_table(SEQ_HASH)?.iter()? {
        let (k, v) = row?;
        if let Some(h) = read_seq_hash(k.value(), v.value()) {
            note(k.value(), h)?;
        }
    }
    let mut tips: Table<'_, &'static [u8], &'static [u8]> = txn.open_table(TIPS)?;
    for (ak, (seq, h)) in top {
        let keep = match tips.get(ak.as_slice())? {
            Some(v) => crate::commit::decode_tip(&ak, v.value()).is_ok_and(|t| t.0 >= seq),
            None => false,
        };
        if !keep {
            let v = crate::commit::encode_tip(&ak, seq, &h);
            tips.insert(ak.as_slice(), v.as_slice())?;
        }
    }
    Ok(())
}
