//! Salvage: when redb reports a damaged file (or its integrity check fails),
//! copy everything that still verifies into a new file, keep the damaged one
//! aside, and report exactly what must be fetched again from peers.
//!
//! # Goals
//! - The node always starts: a damaged file is never a dead end.
//! - Nothing is trusted because it was in the old file. Workspaces are kept
//!   only when their id re-derives from their secret; bundles are re-verified
//!   from their bytes alone (hash, chain links, one signature per run, with no
//!   help from the old hash index) and re-applied through the normal commit
//!   path, so state is rebuilt, never copied; blobs are kept only when every
//!   chunk and the whole blob hash to their names.
//! - The report never says "nothing lost" over a loss: slots the old file
//!   claimed but that were not recovered are listed per (workspace, author),
//!   and tables that could not be read to the end are named.
//!
//! # Non-goals
//! Recovering bytes redb can no longer find (no raw scan of the file), and
//! keeping materialised state or partial blob receives (rebuilt / refetched).
//!
//! # Steps and crash safety
//! 1. Read the damaged file read-only (or, when redb insists on a repair, a
//!    scratch copy of it). Every read runs under `catch_unwind`: redb may
//!    panic on pages that fail its internal checks, and a damaged file must
//!    not take the node down.
//! 2. Build the new store in `<file>.salvage-partial` (non-durable commits,
//!    one durable commit at the end), then rename it to `<file>.salvage-ready`.
//! 3. Rename the damaged file to `<file>.damaged-<ms>`, then the ready file
//!    to `<file>`, and sync the directory.
//!
//! A crash before step 3 leaves the damaged file in place (salvage runs
//! again); a crash inside step 3 leaves a `.salvage-ready` file that
//! [`Store::open_or_salvage`] moves into place.
//!
//! After a salvage the node should start a new incarnation (a new actor key)
//! before it writes again: the old file may have held bundles its actor had
//! already sent, and a seq must never be reused.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::catch_unwind;
use std::path::{Path, PathBuf};

use redb::{Database, Durability, ReadableTable};
use troupe_protocol::ranges::SeqRangeSet;
use troupe_protocol::{ActorId, BlobHash, Bundle, WorkspaceId};

use crate::blob::{BlobMeta, BlobStatus, decode_meta, encode_meta};
use crate::commit::{decode_ranges, decode_tip};
use crate::error::{OpenError, SalvageError};
use crate::quarantine::{QuarantineEntry, put_entry};
use crate::schema::*;
use crate::{CACHE_BYTES, Store, decode_ws, now_ms};

mod damaged;
use damaged::Damaged;

/// Bundle slots the damaged file claimed to hold that were not recovered:
/// the sync engine fetches them again (by range, or by repair with the hash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LostRange {
    /// Workspace.
    pub workspace: WorkspaceId,
    /// Author.
    pub author: ActorId,
    /// The seqs to fetch again.
    pub seqs: SeqRangeSet,
}

/// What a salvage kept, lost, and could not tell.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SalvageReport {
    /// Where the damaged file was kept (`None` for [`salvage_copy`], which
    /// leaves its source in place).
    pub damaged_copy: Option<PathBuf>,
    /// Workspaces recovered (their ids re-derive from their secrets).
    pub workspaces: usize,
    /// Bundles re-verified and committed into the new file.
    pub bundles_kept: u64,
    /// Bundles that decoded but did not verify alone (e.g. an unsigned bundle
    /// whose signed successor was lost): kept in the new file's quarantine,
    /// where a retry commits them once their successor arrives.
    pub bundles_quarantined: u64,
    /// Slots the old file claimed that are not in the new file.
    pub lost: Vec<LostRange>,
    /// Complete blobs recovered, verified.
    pub blobs_kept: u64,
    /// Complete blobs that could not be recovered (fetch from peers).
    pub blobs_lost: Vec<BlobHash>,
    /// Quarantine entries carried over.
    pub quarantine_kept: u64,
    /// Tables that could not be read to the end: losses there are unknown,
    /// so the report is not lossless even when `lost` is empty.
    pub unreadable: Vec<String>,
}

impl SalvageReport {
    /// True only when nothing at all was lost or left unread.
    pub fn is_lossless(&self) -> bool {
        self.lost.is_empty()
            && self.blobs_lost.is_empty()
            && self.unreadable.is_empty()
            && self.bundles_quarantined == 0
    }
}

/// Copies everything that verifies from the store file at `src` into a new
/// store file at `dst` (which must not exist), leaving `src` untouched.
/// Used by [`Store::salvage`] and by export from a damaged file.
///
/// # Errors
/// [`SalvageError::Unreadable`] when redb cannot open `src` at all (the node
/// starts from an empty store and re-joins its workspaces);
/// [`SalvageError::Io`] / [`SalvageError::Storage`] for the new file.
pub fn salvage_copy(src: &Path, dst: &Path) -> Result<SalvageReport, SalvageError> {
    let old = Damaged::open(src)?;
    let db = Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create(dst)?;
    let store = Store::init(db).map_err(|e| match e {
        OpenError::Storage(s) => SalvageError::Storage(s),
        other => SalvageError::Unreadable(other.to_string()),
    })?;
    let mut report = SalvageReport::default();
    let mut unreadable = |name: &str, why: Option<String>| {
        if let Some(w) = why {
            report.unreadable.push(format!("{name}: {w}"));
        }
    };

    // Workspaces: kept only when the id re-derives from the secret.
    let (ws_rows, why) = old.rows(WORKSPACES);
    unreadable("workspaces", why);
    let mut archived = Vec::new();
    let mut known: BTreeSet<WorkspaceId> = BTreeSet::new();
    for (k, v) in ws_rows {
        let Ok(mut info) = decode_ws(&v) else {
            continue;
        };
        if info.id().0.as_slice() != k.as_slice() {
            continue;
        }
        if info.archived {
            archived.push(info.id());
            info.archived = false;
        }
        known.insert(info.id());
        store.put_workspace(&info, Durability::None)?;
    }
    report.workspaces = known.len();

    // What the old file claimed to hold, from every table that says so.
    let mut claims: BTreeMap<(WorkspaceId, ActorId), SeqRangeSet> = BTreeMap::new();
    let (range_rows, why) = old.rows(RANGES);
    unreadable("ranges", why);
    for (k, v) in &range_rows {
        let (Ok(r), Some(ws), Some(a)) = (decode_ranges(k, v), k.get(..32), k.get(32..64)) else {
            continue;
        };
        let (Ok(ws), Ok(a)) = (<[u8; 32]>::try_from(ws), <[u8; 32]>::try_from(a)) else {
            continue;
        };
        let e = claims.entry((WorkspaceId(ws), ActorId(a))).or_default();
        *e = e.union(&r);
    }
    let (hash_rows, why) = old.rows(SEQ_HASH);
    unreadable("seq_hash", why);
    for (k, _) in &hash_rows {
        if let Some((ws, a, s)) = parse_seq_key(k) {
            claims.entry((ws, a)).or_default().insert(s);
        }
    }
    let (mut bundle_rows, why) = old.rows(BUNDLES);
    let scan_failed = why.is_some();
    unreadable("bundles", why);
    if scan_failed {
        // Fetch claimed slots the scan did not reach, one by one.
        let seen: BTreeSet<Vec<u8>> = bundle_rows.iter().map(|(k, _)| k.clone()).collect();
        let missing: Vec<Vec<u8>> = claims
            .iter()
            .flat_map(|((ws, a), r)| r.iter().map(move |s| seq_key(ws, a, s).to_vec()))
            .filter(|k| !seen.contains(k))
            .collect();
        bundle_rows.extend(old.get_each(BUNDLES, &missing));
    }
    for (k, _) in &bundle_rows {
        if let Some((ws, a, s)) = parse_seq_key(k) {
            claims.entry((ws, a)).or_default().insert(s);
        }
    }

    // Bundles: decoded from their bytes alone, grouped per author in seq
    // order, committed through the one write path (which re-verifies them).
    let mut by_author: BTreeMap<(WorkspaceId, ActorId), BTreeMap<u64, Bundle>> = BTreeMap::new();
    let mut junk: Vec<(WorkspaceId, Vec<u8>, String)> = Vec::new();
    for (k, v) in bundle_rows {
        let Some((ws, a, s)) = parse_seq_key(&k) else {
            continue;
        };
        // The copy alone: its carried hash is of no use here (every copy is
        // verified again through its chain as it is committed).
        let v = crate::held::split(&k, &v).copy.to_vec();
        match Bundle::decode(v.clone()) {
            Ok(b) if b.body().workspace == ws && b.body().author == a && b.body().seq == s => {
                by_author.entry((ws, a)).or_default().insert(s, b);
            }
            Ok(_) => junk.push((ws, v, "bundle stored under the wrong slot".into())),
            Err(e) => junk.push((ws, v, format!("does not decode: {e}"))),
        }
    }
    let mut kept: BTreeMap<(WorkspaceId, ActorId), SeqRangeSet> = BTreeMap::new();
    for ((ws, author), seqs) in by_author {
        if !known.contains(&ws) {
            continue;
        }
        let mut chunk: Vec<Bundle> = Vec::new();
        let mut it = seqs.into_values().peekable();
        while let Some(b) = it.next() {
            chunk.push(b);
            let signed = chunk.last().is_some_and(|b| b.signature().is_some());
            if (chunk.len() >= 256 && signed) || it.peek().is_none() {
                let out = store.commit_salvaged(&ws, std::mem::take(&mut chunk))?;
                report.bundles_kept += out.committed.len() as u64;
                report.bundles_quarantined += out.quarantined.len() as u64;
                let k = kept.entry((ws, author)).or_default();
                for (_, s, _) in out.committed {
                    k.insert(s);
                }
            }
        }
    }

    // Tips: never lower than the old file knew (a seq is never reused).
    let (tip_rows, why) = old.rows(TIPS);
    unreadable("tips", why);
    // Quarantine entries, and the undecodable bundle copies found above.
    let (q_rows, why) = old.rows(QUARANTINE);
    unreadable("quarantine", why);
    let (meta_rows, why) = old.rows(BLOB_META);
    unreadable("blob_meta", why);

    let mut txn = store.db.begin_write()?;
    txn.set_durability(Durability::None)
        .map_err(|e| SalvageError::Unreadable(e.to_string()))?;
    {
        let mut tips = txn.open_table(TIPS)?;
        for (k, v) in tip_rows {
            let Ok((seq, _)) = decode_tip(&k, &v) else {
                continue;
            };
            if k.len() != 64 || !known.iter().any(|w| k.starts_with(&w.0)) {
                continue;
            }
            let ours = match tips.get(k.as_slice())? {
                Some(t) => decode_tip(&k, t.value()).map(|t| t.0).unwrap_or(0),
                None => 0,
            };
            if seq > ours {
                tips.insert(k.as_slice(), v.as_slice())?;
            }
        }
        let mut q = txn.open_table(QUARANTINE)?;
        for (_, v) in q_rows {
            if let Ok(e) = postcard::from_bytes::<QuarantineEntry>(&v) {
                put_entry(&mut q, e)?;
                report.quarantine_kept += 1;
            }
        }
        for (ws, bytes, reason) in junk {
            put_entry(
                &mut q,
                QuarantineEntry {
                    id: 0,
                    workspace: ws,
                    author: None,
                    seq: None,
                    expected: None,
                    hash: None,
                    reason: format!("found damaged during salvage: {reason}"),
                    time_ms: now_ms(),
                    source: "salvage".into(),
                    bytes,
                },
            )?;
        }
    }
    txn.commit()?;

    // Blobs: complete ones whose chunks all verify are copied as stored.
    for (k, v) in meta_rows {
        let (Ok(h), Ok(m)) = (<[u8; 32]>::try_from(k.as_slice()), decode_meta(&v)) else {
            continue;
        };
        let h = BlobHash(h);
        match m.status {
            BlobStatus::Complete => {
                if copy_blob(&old, &store, &h, &m)? {
                    report.blobs_kept += 1;
                } else {
                    report.blobs_lost.push(h);
                }
            }
            BlobStatus::Unavailable => {
                let m = BlobMeta { rows: None, ..m };
                let txn = store.db.begin_write()?;
                txn.open_table(BLOB_META)?
                    .insert(h.0.as_slice(), encode_meta(&m)?.as_slice())?;
                txn.commit()?;
            }
            BlobStatus::Receiving { .. } => {}
        }
    }

    for ws in archived {
        if let Some(mut info) = store.workspace(&ws).ok().flatten() {
            info.archived = true;
            store.put_workspace(&info, Durability::None)?;
        }
    }
    // One durable commit makes everything above durable. The store keeps
    // its id and the number of the last journal record its durable state
    // held, so its commit journal (beside the file) is applied to the new
    // file at the next open, from the next record on: writes made durable
    // only there are not lost.
    let (meta_rows, _) = old.rows(META);
    let txn = store.db.begin_write()?;
    {
        let mut meta = txn.open_table(META)?;
        meta.insert(b"salvaged_at".as_slice(), now_ms().to_be_bytes().as_slice())?;
        let kept = |key: &[u8], len: usize| {
            meta_rows
                .iter()
                .find(|(k, v)| k.as_slice() == key && v.len() == len)
                .map(|(_, v)| v.clone())
        };
        if let Some(id) = kept(STORE_ID, 16) {
            meta.insert(STORE_ID, id.as_slice())?;
        }
        if let Some(seq) = kept(JOURNAL_SEQ, 8) {
            meta.insert(JOURNAL_SEQ, seq.as_slice())?;
        }
    }
    txn.commit()?;

    for ((ws, author), claimed) in claims {
        let have = kept.get(&(ws, author)).cloned().unwrap_or_default();
        let missing = claimed.difference(&have);
        if !missing.is_empty() {
            report.lost.push(LostRange {
                workspace: ws,
                author,
                seqs: missing,
            });
        }
    }
    Ok(report)
}

/// Copies one complete blob if every chunk verifies; false when it does not.
fn copy_blob(
    old: &Damaged,
    store: &Store,
    h: &BlobHash,
    m: &BlobMeta,
) -> Result<bool, SalvageError> {
    let from = crate::blob::Rows::of(h, m);
    let keys: Vec<Vec<u8>> = (0..m.chunk_hashes.len())
        .map(|i| from.chunk(i as u32).as_slice().to_vec())
        .collect();
    let heads = old.get_each(BLOB_CHUNKS, &keys);
    if heads.len() != keys.len() {
        return Ok(false);
    }
    // Rows longer than one run of pages keep a tail under their own key.
    let tail_keys: Vec<Vec<u8>> = (0..m.chunk_hashes.len())
        .map(|i| from.tail(i as u32).as_slice().to_vec())
        .collect();
    let tails = old.get_each(BLOB_CHUNKS, &tail_keys);
    let mut whole = crate::blob_hash::WholeCheck::new(m);
    let mut rows = Vec::with_capacity(heads.len());
    for (i, (_, head)) in heads.iter().enumerate() {
        let tail = tails
            .iter()
            .find(|(k, _)| *k == tail_keys[i])
            .map(|(_, t)| t.as_slice());
        let Ok(plain) = crate::blob::verify_chunk(head, tail, h, m, i) else {
            return Ok(false);
        };
        let row = crate::blob::join_row(head, tail);
        rows.push(row);
        whole.update(&plain);
    }
    if !whole.matches(m, h) {
        return Ok(false);
    }
    let mut txn = store.db.begin_write()?;
    txn.set_durability(Durability::None)
        .map_err(|e| SalvageError::Unreadable(e.to_string()))?;
    {
        // Under a number of the new store, whatever the old one kept them under.
        let mut t = txn.open_table(BLOB_CHUNKS)?;
        let n = crate::blob::next_number(&mut t).map_err(|e| match e {
            crate::BlobError::Storage(e) => SalvageError::Storage(e),
            crate::BlobError::Damaged(e) => SalvageError::Damaged(e),
            other => SalvageError::Unreadable(other.to_string()),
        })?;
        for (i, row) in rows.iter().enumerate() {
            crate::blob::put_chunk_row(&mut t, crate::blob::Rows::Number(n), i as u32, row)?;
        }
        let m = BlobMeta {
            rows: Some(n),
            ..m.clone()
        };
        txn.open_table(BLOB_META)?
            .insert(h.0.as_slice(), encode_meta(&m)?.as_slice())?;
    }
    txn.commit()?;
    Ok(true)
}

pub(crate) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn sync_dir(path: &Path) {
    if let Some(d) = path.parent()
        && let Ok(f) = std::fs::File::open(if d.as_os_str().is_empty() {
            Path::new(".")
        } else {
            d
        })
    {
        // Best effort: some filesystems refuse to sync a directory.
        let _ = f.sync_all();
    }
}

/// Moves a finished salvage into place if a crash interrupted the renames.
fn finish_interrupted(path: &Path) -> Result<(), SalvageError> {
    let ready = with_suffix(path, ".salvage-ready");
    if !ready.exists() {
        return Ok(());
    }
    if path.exists() {
        let aside = with_suffix(path, &format!(".damaged-{}", now_ms()));
        std::fs::rename(path, aside).map_err(SalvageError::Io)?;
    }
    std::fs::rename(&ready, path).map_err(SalvageError::Io)?;
    sync_dir(path);
    Ok(())
}

impl Store {
    /// Salvages the (closed) store file at `path`: copies what verifies into a
    /// new file, moves the damaged one to `<path>.damaged-<ms>`, puts the new
    /// one at `path`, and reports what must be re-synced. See the module doc.
    ///
    /// # Errors
    /// As [`salvage_copy`]; on error the damaged file is still at `path`.
    pub fn salvage(path: impl AsRef<Path>) -> Result<SalvageReport, SalvageError> {
        let path = path.as_ref();
        finish_interrupted(path)?;
        let partial = with_suffix(path, ".salvage-partial");
        let ready = with_suffix(path, ".salvage-ready");
        if partial.exists() {
            std::fs::remove_file(&partial).map_err(SalvageError::Io)?;
        }
        let mut report = salvage_copy(path, &partial)?;
        std::fs::rename(&partial, &ready).map_err(SalvageError::Io)?;
        sync_dir(path);
        let aside = with_suffix(path, &format!(".damaged-{}", now_ms()));
        std::fs::rename(path, &aside).map_err(SalvageError::Io)?;
        std::fs::rename(&ready, path).map_err(SalvageError::Io)?;
        sync_dir(path);
        report.damaged_copy = Some(aside);
        Ok(report)
    }

    /// Opens the store at `path`; when redb reports the file damaged, salvages
    /// it (see [`Store::salvage`]) and opens the result, returning the report
    /// so the caller can re-sync what was lost and start a new incarnation.
    ///
    /// # Errors
    /// [`OpenError`] for failures salvage cannot help with (the file is
    /// locked by another process, another schema version, IO), and
    /// [`OpenError::Salvage`] when salvage itself failed.
    pub fn open_or_salvage(
        path: impl AsRef<Path>,
    ) -> Result<(Store, Option<SalvageReport>), OpenError> {
        let path = path.as_ref();
        finish_interrupted(path).map_err(|e| OpenError::Salvage(Box::new(e)))?;
        // A panic inside redb on a damaged page reads as damage too.
        match catch_unwind(|| Store::open(path)) {
            Ok(Ok(s)) => return Ok((s, None)),
            Ok(Err(e)) if !e.is_damage() => return Err(e),
            _ => {}
        }
        let report = Store::salvage(path).map_err(|e| OpenError::Salvage(Box::new(e)))?;
        Ok((Store::open(path)?, Some(report)))
    }
}
