//! Forks: two different bundles signed for one (workspace, author, seq).
//!
//! A fork is evidence that an actor's store was restored or copied and the
//! same seq was signed twice. Neither copy is applied automatically: the
//! held copy (if one was applied) leaves the oplog and the ranges, the
//! workspace's state is rebuilt without it in the same transaction, and every
//! copy seen goes to quarantine. The `forks` table remembers the slot and the
//! hashes seen, so a copy that arrives again is recognised instead of being
//! applied (or quarantined twice). The user resolves the fork by skipping
//! the copies they do not want; retrying the last one left commits it.

use std::collections::BTreeSet;

use redb::{ReadableTable, Table, WriteTransaction};
use troupe_protocol::{ActorId, BundleHash, WorkspaceId};

use crate::commit::{decode_ranges, encode_ranges};
use crate::error::DamagedRow;
use crate::now_ms;
use crate::quarantine::{QuarantineEntry, QuarantineErrorInner, put_entry};
use crate::schema::*;

type Rw<'t> = Table<'t, &'static [u8], &'static [u8]>;

/// The hashes recorded for a forked slot.
pub(crate) fn decode_forks(key: &[u8], v: &[u8]) -> Result<Vec<BundleHash>, DamagedRow> {
    let body = unseal(key, v).ok_or(DamagedRow {
        what: "fork record",
    })?;
    let raw: Vec<[u8; 32]> = postcard::from_bytes(body).map_err(|_| DamagedRow {
        what: "fork record",
    })?;
    Ok(raw.into_iter().map(BundleHash).collect())
}

fn encode_forks(key: &[u8], hashes: &BTreeSet<BundleHash>) -> Result<Vec<u8>, DamagedRow> {
    let raw: Vec<[u8; 32]> = hashes.iter().map(|h| h.0).collect();
    postcard::to_allocvec(&raw)
        .map(|b| seal(key, b))
        .map_err(|_| DamagedRow {
            what: "fork record (encode)",
        })
}

/// The recorded fork hashes at a slot, if the slot is forked.
pub(crate) fn forked(
    t: &impl ReadableTable<&'static [u8], &'static [u8]>,
    key: &[u8],
) -> Result<Option<Vec<BundleHash>>, QuarantineErrorInner> {
    match t.get(key)? {
        Some(v) => Ok(Some(decode_forks(key, v.value())?)),
        None => Ok(None),
    }
}

/// Records a fork at a slot (merging with hashes already recorded). When a
/// copy was applied there, moves it to quarantine and out of the bundles
/// and ranges; returns true then (the caller rebuilds state).
pub(crate) fn record_fork(
    txn: &WriteTransaction,
    ws: &WorkspaceId,
    author: &ActorId,
    seq: u64,
    seen: &BTreeSet<BundleHash>,
) -> Result<bool, QuarantineErrorInner> {
    let k = seq_key(ws, author, seq);
    let mut all = seen.clone();
    {
        let mut forks: Rw<'_> = txn.open_table(FORKS)?;
        if let Some(old) = forked(&forks, &k)? {
            all.extend(old);
        }
        let v = encode_forks(&k, &all)?;
        forks.insert(k.as_slice(), v.as_slice())?;
    }
    let row = {
        let mut bundles = txn.open_table(BUNDLES)?;
        let v = bundles.remove(k.as_slice())?;
        v.map(|v| v.value().to_vec())
    };
    let Some(row) = row else {
        return Ok(false);
    };
    let held = crate::held::split(&k, &row);
    let held_hash =
        crate::held::recorded_with(&txn.open_table(SEQ_HASH)?, k.as_slice(), Some(&held))?;
    // The withdrawn copy's hash stays recorded (a retry of that copy clears it).
    crate::held::keep_hash_of_removed(txn, &k, &held)?;
    let bytes = held.copy.to_vec();
    {
        let mut ranges = txn.open_table(RANGES)?;
        let ak = author_key(ws, author);
        let cur = ranges.get(ak.as_slice())?.map(|v| v.value().to_vec());
        if let Some(cur) = cur {
            let mut r = decode_ranges(&ak, &cur)?;
            r.remove(seq);
            let v = encode_ranges(&ak, &r)?;
            ranges.insert(ak.as_slice(), v.as_slice())?;
        }
    }
    let mut q = txn.open_table(QUARANTINE)?;
    put_entry(
        &mut q,
        QuarantineEntry {
            id: 0,
            workspace: *ws,
            author: Some(*author),
            seq: Some(seq),
            expected: None,
            hash: held_hash,
            reason: "fork: another bundle was signed for this author and seq; this copy \
                     was applied before and is withdrawn until one copy is chosen"
                .into(),
            time_ms: now_ms(),
            source: "fork".into(),
            bytes,
        },
    )?;
    Ok(true)
}

/// Drops `hash` from a forked slot's record (the user skipped that copy).
/// When one hash is left, the slot stays recorded until that copy is
/// retried; when none is left, the record goes.
pub(crate) fn forget_fork_copy(
    txn: &WriteTransaction,
    ws: &WorkspaceId,
    author: &ActorId,
    seq: u64,
    hash: &BundleHash,
) -> Result<(), QuarantineErrorInner> {
    let k = seq_key(ws, author, seq);
    let mut forks: Rw<'_> = txn.open_table(FORKS)?;
    let Some(mut all) = forked(&forks, &k)? else {
        return Ok(());
    };
    all.retain(|h| h != hash);
    if all.is_empty() {
        forks.remove(k.as_slice())?;
    } else {
        let set: BTreeSet<BundleHash> = all.into_iter().collect();
        let v = encode_forks(&k, &set)?;
        forks.insert(k.as_slice(), v.as_slice())?;
    }
    Ok(())
}

/// Before retrying a quarantined copy of a forked slot: `Ok(false)` while
/// other copies are still recorded (the fork is unresolved); otherwise clears
/// the slot (its record and index hash) so the copy commits as new.
pub(crate) fn release_for_retry(
    txn: &WriteTransaction,
    ws: &WorkspaceId,
    author: &ActorId,
    seq: u64,
    hash: &BundleHash,
) -> Result<bool, QuarantineErrorInner> {
    let k = seq_key(ws, author, seq);
    let mut forks: Rw<'_> = txn.open_table(FORKS)?;
    let Some(all) = forked(&forks, &k)? else {
        return Ok(true);
    };
    if all.iter().any(|h| h != hash) {
        return Ok(false);
    }
    forks.remove(k.as_slice())?;
    txn.open_table(SEQ_HASH)?.remove(k.as_slice())?;
    Ok(true)
}
