//! Quarantine (bundles that failed verification, kept with their raw bytes,
//! reason, time and source; never applied), corrupt-copy handling and scrub.

use redb::{ReadableTable, Table, WriteTransaction};
use serde::{Deserialize, Serialize};
use troupe_protocol::{ActorId, Bundle, BundleHash, WorkspaceId};

use crate::commit::{BatchOutcome, decode_ranges, encode_ranges};
use crate::error::{DamagedRow, QuarantineError};
use crate::fork::{forget_fork_copy, release_for_retry};
use crate::schema::*;
use crate::{Store, now_ms};

/// One quarantined bundle (or undecodable bytes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineEntry {
    /// Its id in the quarantine table.
    pub id: u64,
    /// Workspace it arrived for.
    pub workspace: WorkspaceId,
    /// Author, when the bytes decode.
    pub author: Option<ActorId>,
    /// Seq, when the bytes decode.
    pub seq: Option<u64>,
    /// The hash a clean copy must have, when known (corrupt copies, forks).
    pub expected: Option<BundleHash>,
    /// The hash of these bytes, when they decode.
    pub hash: Option<BundleHash>,
    /// Why, in words.
    pub reason: String,
    /// When (ms since the Unix epoch).
    pub time_ms: u64,
    /// Where it came from: a peer name, `local`, `scrub`, `read`.
    pub source: String,
    /// The raw bytes as received or found.
    pub bytes: Vec<u8>,
}

/// The record of a quarantine entry the user chose to skip.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedEntry {
    /// The quarantine id it had.
    pub id: u64,
    /// Workspace.
    pub workspace: WorkspaceId,
    /// Author, when the bytes decoded.
    pub author: Option<ActorId>,
    /// Seq, when the bytes decoded.
    pub seq: Option<u64>,
    /// Hash of the skipped bytes, when they decoded.
    pub hash: Option<BundleHash>,
    /// Why it was quarantined.
    pub reason: String,
    /// Where it came from.
    pub source: String,
    /// When it was quarantined (ms since the Unix epoch).
    pub time_ms: u64,
    /// When the user skipped it.
    pub skipped_ms: u64,
}

/// A bundle slot that needs a clean copy from a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepairNeeded {
    /// Workspace.
    pub workspace: WorkspaceId,
    /// Author.
    pub author: ActorId,
    /// Seq.
    pub seq: u64,
    /// The hash the clean copy must have, when the index still knows it.
    pub expected: Option<BundleHash>,
}

pub(crate) fn put_entry(
    q: &mut Table<'_, &'static [u8], &'static [u8]>,
    mut entry: QuarantineEntry,
) -> Result<u64, QuarantineErrorInner> {
    let next = match q.last()? {
        Some((k, _)) => k
            .value()
            .try_into()
            .map(u64::from_be_bytes)
            .map_err(|_| DamagedRow {
                what: "quarantine id",
            })?
            .saturating_add(1),
        None => 1,
    };
    entry.id = next;
    let v = postcard::to_allocvec(&entry).map_err(|_| DamagedRow {
        what: "quarantine (encode)",
    })?;
    q.insert(next.to_be_bytes().as_slice(), v.as_slice())?;
    Ok(next)
}

/// Internal error for helpers shared by several operations.
#[derive(Debug)]
pub(crate) enum QuarantineErrorInner {
    Db(redb::Error),
    Damaged(DamagedRow),
}
impl From<redb::StorageError> for QuarantineErrorInner {
    fn from(e: redb::StorageError) -> Self {
        Self::Db(e.into())
    }
}
impl From<redb::TableError> for QuarantineErrorInner {
    fn from(e: redb::TableError) -> Self {
        Self::Db(e.into())
    }
}
impl From<DamagedRow> for QuarantineErrorInner {
    fn from(e: DamagedRow) -> Self {
        Self::Damaged(e)
    }
}
macro_rules! inner_into {
    ($t:ty) => {
        impl From<QuarantineErrorInner> for $t {
            fn from(e: QuarantineErrorInner) -> Self {
                match e {
                    QuarantineErrorInner::Db(e) => e.into(),
                    QuarantineErrorInner::Damaged(d) => d.into(),
                }
            }
        }
    };
}
inner_into!(crate::error::CommitError);
inner_into!(QuarantineError);
inner_into!(crate::error::ReadError);
inner_into!(crate::error::SalvageError);

fn decode_entry(v: &[u8]) -> Result<QuarantineEntry, DamagedRow> {
    postcard::from_bytes(v).map_err(|_| DamagedRow {
        what: "quarantine entry",
    })
}

/// Moves the held copy at (ws, author, seq) to quarantine when it fails its
/// hash (or is missing while the ranges claim it), inside `txn`. Returns the
/// quarantine id, or `None` when the copy verifies or is already gone (a
/// read moved it before: no second entry). With `failed`, the copy is
/// known bad for that reason (e.g. its signature) and moves even though
/// its hash matches.
pub(crate) fn quarantine_slot(
    txn: &WriteTransaction,
    ws: &WorkspaceId,
    author: &ActorId,
    seq: u64,
    source: &str,
    failed: Option<&str>,
) -> Result<Option<(u64, Option<BundleHash>)>, QuarantineErrorInner> {
    let k = seq_key(ws, author, seq);
    let row = txn
        .open_table(BUNDLES)?
        .get(k.as_slice())?
        .map(|v| v.value().to_vec());
    let held = row.as_deref().map(|v| crate::held::split(&k, v));
    let expected =
        crate::held::recorded_with(&txn.open_table(SEQ_HASH)?, k.as_slice(), held.as_ref())?;
    let ak = author_key(ws, author);
    let claimed = {
        let ranges = txn.open_table(RANGES)?;
        let cur = ranges.get(ak.as_slice())?.map(|v| v.value().to_vec());
        match cur {
            Some(cur) => Some(decode_ranges(&ak, &cur)?),
            None => None,
        }
    };
    let bytes = held.map(|h| h.copy.to_vec());
    if bytes.is_none() && !claimed.as_ref().is_some_and(|r| r.contains(seq)) {
        return Ok(None);
    }
    let reason = match (&bytes, &expected) {
        (Some(_), _) if failed.is_some() => format!("stored copy {}", failed.unwrap_or("")),
        (Some(b), Some(h)) => match Bundle::decode_expecting(b.clone(), h) {
            Ok(_) => return Ok(None),
            Err(e) => format!("stored copy is corrupt: {e}"),
        },
        (Some(_), None) => "stored copy has no hash index entry".to_string(),
        (None, _) => "stored copy is missing".to_string(),
    };
    txn.open_table(BUNDLES)?.remove(k.as_slice())?;
    if let Some(held) = &held {
        crate::held::keep_hash_of_removed(txn, &k, held)?;
    }
    if let Some(mut r) = claimed {
        r.remove(seq);
        let v = encode_ranges(&ak, &r)?;
        txn.open_table(RANGES)?
            .insert(ak.as_slice(), v.as_slice())?;
    }
    let mut q = txn.open_table(QUARANTINE)?;
    let id = put_entry(
        &mut q,
        QuarantineEntry {
            id: 0,
            workspace: *ws,
            author: Some(*author),
            seq: Some(seq),
            expected,
            hash: None,
            reason,
            time_ms: now_ms(),
            source: source.to_string(),
            bytes: bytes.unwrap_or_default(),
        },
    )?;
    Ok(Some((id, expected)))
}

impl Store {
    /// Moves a held bundle whose copy fails verification to quarantine and
    /// removes it from the ranges, so sync asks peers for a clean copy.
    /// Returns the quarantine id, or `None` when the copy verifies after all
    /// or was already moved ([`Store::bundle`] moves a corrupt copy itself;
    /// this is for snapshot readers such as the sync engine's view).
    ///
    /// # Errors
    /// [`QuarantineError::Storage`], [`QuarantineError::Damaged`].
    pub fn quarantine_corrupt(
        &self,
        ws: &WorkspaceId,
        author: &ActorId,
        seq: u64,
    ) -> Result<Option<u64>, QuarantineError> {
        let txn = self.db.begin_write()?;
        let r = quarantine_slot(&txn, ws, author, seq, "read", None)?;
        txn.commit()?;
        Ok(r.map(|(id, _)| id))
    }

    /// Quarantines bytes that did not even decode (the sync engine's
    /// "quarantine bytes" output). Returns the quarantine id.
    ///
    /// # Errors
    /// [`QuarantineError::Storage`].
    pub fn quarantine_bytes(
        &self,
        ws: &WorkspaceId,
        bytes: Vec<u8>,
        reason: &str,
        source: &str,
    ) -> Result<u64, QuarantineError> {
        let txn = self.db.begin_write()?;
        let id = {
            let mut q = txn.open_table(QUARANTINE)?;
            put_entry(
                &mut q,
                QuarantineEntry {
                    id: 0,
                    workspace: *ws,
                    author: None,
                    seq: None,
                    expected: None,
                    hash: None,
                    reason: reason.to_string(),
                    time_ms: now_ms(),
                    source: source.to_string(),
                    bytes,
                },
            )?
        };
        txn.commit()?;
        Ok(id)
    }

    /// Every quarantine entry, oldest first.
    ///
    /// # Errors
    /// [`QuarantineError::Storage`], [`QuarantineError::Damaged`].
    pub fn quarantine_list(&self) -> Result<Vec<QuarantineEntry>, QuarantineError> {
        let txn = redb::ReadableDatabase::begin_read(&self.db)?;
        let q = txn.open_table(QUARANTINE)?;
        let mut out = Vec::new();
        for row in q.iter()? {
            let (_, v) = row?;
            out.push(decode_entry(v.value())?);
        }
        Ok(out)
    }

    /// One quarantine entry.
    ///
    /// # Errors
    /// [`QuarantineError::NotFound`], [`QuarantineError::Storage`].
    pub fn quarantine_show(&self, id: u64) -> Result<QuarantineEntry, QuarantineError> {
        let txn = redb::ReadableDatabase::begin_read(&self.db)?;
        let q = txn.open_table(QUARANTINE)?;
        let v = q
            .get(id.to_be_bytes().as_slice())?
            .ok_or(QuarantineError::NotFound(id))?;
        Ok(decode_entry(v.value())?)
    }

    /// Drops a quarantine entry for good (an explicit user choice).
    ///
    /// # Errors
    /// [`QuarantineError::NotFound`], [`QuarantineError::Storage`].
    /// The choice is recorded (see [`Store::quarantine_skipped`]); skipping a
    /// copy of a forked slot also drops it from the fork, so the copy left
    /// can then be retried and committed.
    pub fn quarantine_skip(&self, id: u64) -> Result<(), QuarantineError> {
        let txn = self.db.begin_write()?;
        {
            let mut q = txn.open_table(QUARANTINE)?;
            let entry = match q.remove(id.to_be_bytes().as_slice())? {
                Some(v) => decode_entry(v.value())?,
                None => return Err(QuarantineError::NotFound(id)),
            };
            drop(q);
            if let (Some(a), Some(s), Some(h)) = (entry.author, entry.seq, entry.hash) {
                forget_fork_copy(&txn, &entry.workspace, &a, s, &h)?;
            }
            let record = SkippedEntry {
                id,
                workspace: entry.workspace,
                author: entry.author,
                seq: entry.seq,
                hash: entry.hash,
                reason: entry.reason,
                source: entry.source,
                time_ms: entry.time_ms,
                skipped_ms: now_ms(),
            };
            let v = postcard::to_allocvec(&record).map_err(|_| DamagedRow {
                what: "skip record (encode)",
            })?;
            txn.open_table(SKIPPED)?
                .insert(id.to_be_bytes().as_slice(), v.as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Every quarantine entry the user chose to skip, oldest first (the
    /// record of that choice; the bytes are gone).
    ///
    /// # Errors
    /// [`QuarantineError::Storage`], [`QuarantineError::Damaged`].
    pub fn quarantine_skipped(&self) -> Result<Vec<SkippedEntry>, QuarantineError> {
        let txn = redb::ReadableDatabase::begin_read(&self.db)?;
        let t = txn.open_table(SKIPPED)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (_, v) = row?;
            out.push(postcard::from_bytes(v.value()).map_err(|_| DamagedRow {
                what: "skip record",
            })?);
        }
        Ok(out)
    }

    /// Retries a quarantined bundle (e.g. after its missing predecessor or a
    /// signed successor arrived): the entry is removed and the bytes go
    /// through the normal batch commit, in one transaction. If it fails again
    /// it is quarantined again under a new id (see the outcome).
    ///
    /// # Errors
    /// [`QuarantineError::NotFound`], [`QuarantineError::Commit`].
    ///
    /// A copy of a forked slot stays where it is (same id) while other copies
    /// of the slot are still recorded: skip the ones not wanted first.
    pub fn quarantine_retry(&self, id: u64) -> Result<BatchOutcome, QuarantineError> {
        let txn = self.db.begin_write()?;
        let entry = {
            let q = txn.open_table(QUARANTINE)?;
            let v = q
                .get(id.to_be_bytes().as_slice())?
                .ok_or(QuarantineError::NotFound(id))?;
            decode_entry(v.value())?
        };
        if let (Some(a), Some(s), Some(h)) = (entry.author, entry.seq, entry.hash)
            && !release_for_retry(&txn, &entry.workspace, &a, s, &h)?
        {
            return Ok(BatchOutcome {
                quarantined: vec![(
                    id,
                    a,
                    s,
                    "fork unresolved: skip the copies you do not want, then retry this one".into(),
                )],
                forks: vec![(a, s)],
                ..BatchOutcome::default()
            });
        }
        txn.open_table(QUARANTINE)?
            .remove(id.to_be_bytes().as_slice())?;
        let out = match Bundle::decode(entry.bytes.clone()) {
            Ok(b) => Store::commit_in_txn(&txn, &entry.workspace, vec![b], "retry")?,
            Err(e) => {
                let mut q = txn.open_table(QUARANTINE)?;
                let reason = format!("still does not decode: {e}");
                let new_id = put_entry(
                    &mut q,
                    QuarantineEntry {
                        reason: reason.clone(),
                        time_ms: now_ms(),
                        ..entry.clone()
                    },
                )?;
                BatchOutcome {
                    quarantined: vec![(
                        new_id,
                        entry.author.unwrap_or(ActorId([0; 32])),
                        entry.seq.unwrap_or(0),
                        reason,
                    )],
                    ..BatchOutcome::default()
                }
            }
        };
        txn.commit()?;
        Ok(out)
    }
}
