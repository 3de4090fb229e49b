//! Scrub: re-verify everything held, move what fails to quarantine, and say
//! what needs a clean copy from peers.
//!
//! # Bundles
//! A copy carries its recorded hash (see the `held` module); `seq_hash`
//! holds it for older stores' copies and for slots whose copy is gone. The
//! two tables share their key layout, so one merge-join pass in key order
//! checks every slot without point lookups:
//! - the stored bytes hash (blake3 of the body) to the hash recorded when the
//!   bundle was fully verified and applied. Equal hashes mean the very bytes
//!   that verified then, so the ops are not decoded again; only the body's
//!   leading fields are read, to check the slot (workspace, author, seq) and
//!   the chain link to the previous slot's recorded hash;
//! - one signature per contiguous run of held copies (the last signed copy
//!   of the run; with the chain links it authenticates the run again, as at
//!   receive time);
//! - slots the ranges claim but that hold no copy, and copies without a
//!   recorded hash, are suspects too.
//!
//! Failing copies go to quarantine (source `scrub`) and out of the ranges.
//! Slots applied here whose copy is already gone (quarantined by a read or an
//! earlier scrub, and not a fork) are reported again until a clean copy
//! arrives, so a repair that failed once is retried.
//!
//! # Blobs
//! Every complete blob is re-read chunk by chunk (decompressed, each chunk
//! against its hash, the whole against its name). A blob that fails is
//! recorded in quarantine (reason and hash; its bytes are not copied), its
//! chunks are dropped and it becomes absent, so the sync engine fetches it
//! again like any missing blob; [`ScrubReport::blobs`] lists it.

use redb::{ReadTransaction, ReadableDatabase, ReadableTable, WriteTransaction};
use serde::Deserialize;
use troupe_protocol::ranges::SeqRangeSet;
use troupe_protocol::{ActorId, BlobHash, Bundle, BundleHash, WorkspaceId};

use crate::blob::{BlobStatus, Rows, decode_meta, read_chunk};
use crate::blob_hash::WholeCheck;
use crate::commit::decode_ranges;
use crate::error::{DamagedRow, QuarantineError};
use crate::quarantine::{QuarantineEntry, RepairNeeded, put_entry, quarantine_slot};
use crate::schema::*;
use crate::{Store, now_ms};

/// What a scrub found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScrubReport {
    /// Bundle slots that need a clean copy from a peer (the sync engine's
    /// repair asks for them with the expected hash).
    pub bundles: Vec<RepairNeeded>,
    /// Blobs whose stored bytes failed verification: recorded in
    /// quarantine, dropped, and to be fetched again from peers.
    pub blobs: Vec<BlobHash>,
    /// Bundle copies checked.
    pub bundles_checked: u64,
    /// Complete blobs checked.
    pub blobs_checked: u64,
}

/// The leading fields of a bundle body (postcard decodes a struct's fields
/// in order, so a prefix struct reads them without the ops).
#[derive(Deserialize)]
struct BodyHead {
    workspace: WorkspaceId,
    author: ActorId,
    seq: u64,
    prev_hash: Option<BundleHash>,
}

/// The body of a stored bundle frame and whether it carries a signature.
fn body_of(bytes: &[u8]) -> Option<(&[u8], bool)> {
    match bytes.first()? {
        0 => Some((&bytes[1..], false)),
        1 if bytes.len() >= 65 => Some((&bytes[65..], true)),
        _ => None,
    }
}

/// Checks a stored copy against its recorded hash and slot; returns its
/// prev link and whether it is signed.
pub(crate) fn check_copy(
    bytes: &[u8],
    expected: &BundleHash,
    slot: (&WorkspaceId, &ActorId, u64),
) -> Option<(Option<BundleHash>, bool)> {
    let (body, signed) = body_of(bytes)?;
    if blake3::hash(body).as_bytes() != &expected.0 {
        return None;
    }
    let (h, _) = postcard::take_from_bytes::<BodyHead>(body).ok()?;
    (h.workspace == *slot.0 && h.author == *slot.1 && h.seq == slot.2)
        .then_some((h.prev_hash, signed))
}

/// Per-author state of the merge-join.
struct Walk {
    ws: WorkspaceId,
    author: ActorId,
    /// Previous slot's seq and recorded hash (for the chain link).
    prev: Option<(u64, BundleHash)>,
    /// Last signed held copy of the current run, and the run's last seq.
    run_signed: Option<u64>,
    run_end: Option<u64>,
}

/// A bundle slot: workspace, author, seq.
type Slot = (WorkspaceId, ActorId, u64);

/// Slots to quarantine, the subset whose copy fails its run's signature
/// (hash intact), and slots whose copy is already gone.
type Suspects = (Vec<Slot>, Vec<Slot>, Vec<RepairNeeded>);

fn bundle_pass(
    txn: &ReadTransaction,
    report: &mut ScrubReport,
) -> Result<Suspects, QuarantineError> {
    let seq_hash = txn.open_table(SEQ_HASH)?;
    let bundles = txn.open_table(BUNDLES)?;
    let forks = txn.open_table(FORKS)?;
    let mut suspects: Vec<Slot> = Vec::new();
    let mut bad_signature: Vec<Slot> = Vec::new();
    let mut gone: Vec<RepairNeeded> = Vec::new();
    let mut present: std::collections::BTreeMap<(WorkspaceId, ActorId), SeqRangeSet> =
        Default::default();
    let mut hi = seq_hash.iter()?;
    let mut bi = bundles.iter()?;
    let mut h = hi.next().transpose()?;
    let mut b = bi.next().transpose()?;
    let mut walk: Option<Walk> = None;
    let close_run =
        |w: &Walk, suspects: &mut Vec<_>, bad: &mut Vec<_>| -> Result<(), QuarantineError> {
            if let Some(s) = w.run_signed {
                let k = seq_key(&w.ws, &w.author, s);
                let ok = match bundles.get(k.as_slice())? {
                    Some(v) => Bundle::decode(crate::held::split(&k, v.value()).copy.to_vec())
                        .is_ok_and(|b| b.check_signature().is_ok()),
                    None => false,
                };
                if !ok {
                    suspects.push((w.ws, w.author, s));
                    bad.push((w.ws, w.author, s));
                }
            }
            Ok(())
        };
    loop {
        let hk = h.as_ref().map(|(k, _)| k.value().to_vec());
        let bk = b.as_ref().map(|(k, _)| k.value().to_vec());
        let key = match (&hk, &bk) {
            (None, None) => break,
            (Some(x), Some(y)) => x.min(y).clone(),
            (Some(x), None) => x.clone(),
            (None, Some(y)) => y.clone(),
        };
        let (ws, author, seq) = parse_seq_key(&key).ok_or(DamagedRow { what: "bundle key" })?;
        let same_author = walk
            .as_ref()
            .is_some_and(|w| w.ws == ws && w.author == author);
        if !same_author {
            if let Some(w) = &walk {
                close_run(w, &mut suspects, &mut bad_signature)?;
            }
            walk = Some(Walk {
                ws,
                author,
                prev: None,
                run_signed: None,
                run_end: None,
            });
        }
        let w = walk.as_mut().expect("set above");
        let expected = match (&hk, &h) {
            (Some(x), Some((_, v))) if *x == key => Some(read_seq_hash(&key, v.value())),
            _ => None,
        };
        let (copy, carried) = match (&bk, &b) {
            (Some(y), Some((_, v))) if *y == key => {
                let r = crate::held::split(&key, v.value());
                (Some(r.copy.to_vec()), r.carried)
            }
            _ => (None, None),
        };
        if expected.is_some() {
            h = hi.next().transpose()?;
        }
        if copy.is_some() {
            b = bi.next().transpose()?;
        }
        let expected = carried.or(expected.flatten());
        match (copy, expected) {
            (Some(bytes), Some(e)) => {
                report.bundles_checked += 1;
                let link_ok = |prev: Option<BundleHash>| match w.prev {
                    Some((ps, ph)) if ps.checked_add(1) == Some(seq) => prev == Some(ph),
                    _ => true,
                };
                match check_copy(&bytes, &e, (&ws, &author, seq)) {
                    Some((prev, signed)) if link_ok(prev) => {
                        present.entry((ws, author)).or_default().insert(seq);
                        if w.run_end.is_some_and(|r| r.checked_add(1) != Some(seq)) {
                            close_run(w, &mut suspects, &mut bad_signature)?;
                            w.run_signed = None;
                        }
                        w.run_end = Some(seq);
                        if signed {
                            w.run_signed = Some(seq);
                        }
                    }
                    _ => suspects.push((ws, author, seq)),
                }
            }
            (Some(_), None) => {
                report.bundles_checked += 1;
                suspects.push((ws, author, seq));
            }
            (None, Some(e)) => {
                if forks.get(key.as_slice())?.is_none() {
                    gone.push(RepairNeeded {
                        workspace: ws,
                        author,
                        seq,
                        expected: Some(e),
                    });
                }
            }
            (None, None) => {}
        }
        w.prev = expected.map(|e| (seq, e));
    }
    if let Some(w) = &walk {
        close_run(w, &mut suspects, &mut bad_signature)?;
    }
    // Slots the ranges claim without a verified copy.
    let ranges = txn.open_table(RANGES)?;
    for row in ranges.iter()? {
        let (k, v) = row?;
        let k = k.value();
        let (Some(ws), Some(a)) = (k.get(..32), k.get(32..64)) else {
            return Err(DamagedRow { what: "ranges key" }.into());
        };
        let ws = WorkspaceId(
            ws.try_into()
                .map_err(|_| DamagedRow { what: "ranges key" })?,
        );
        let author = ActorId(
            a.try_into()
                .map_err(|_| DamagedRow { what: "ranges key" })?,
        );
        let claimed = decode_ranges(k, v.value())?;
        let held = present.remove(&(ws, author)).unwrap_or_default();
        for seq in claimed.difference(&held).iter() {
            if !suspects.contains(&(ws, author, seq)) {
                suspects.push((ws, author, seq));
            }
        }
    }
    suspects.sort();
    suspects.dedup();
    Ok((suspects, bad_signature, gone))
}

/// Why one blob's stored bytes fail (`None`: complete and intact, or not
/// complete and so not checked). Counts a checked blob in `checked`.
fn check_blob(
    meta: &impl ReadableTable<&'static [u8], &'static [u8]>,
    chunks: &impl ReadableTable<&'static [u8], &'static [u8]>,
    h: &BlobHash,
    checked: &mut u64,
) -> Result<Option<String>, QuarantineError> {
    let Some(v) = meta.get(h.0.as_slice())? else {
        return Ok(None);
    };
    let Ok(m) = decode_meta(v.value()) else {
        return Ok(Some("blob metadata does not decode".into()));
    };
    if m.status != BlobStatus::Complete {
        return Ok(None);
    }
    *checked += 1;
    let mut whole = WholeCheck::new(&m);
    for i in 0..m.chunk_hashes.len() {
        match read_chunk(chunks, h, &m, i) {
            Ok(plain) => whole.update(&plain),
            Err(_) => {
                // Looked up again only to say which way it failed.
                let missing = chunks
                    .get(Rows::of(h, &m).chunk(i as u32).as_slice())?
                    .is_none();
                return Ok(Some(if missing {
                    format!("chunk {i} is missing")
                } else {
                    format!("chunk {i} fails its hash")
                }));
            }
        }
    }
    if !whole.matches(&m, h) {
        return Ok(Some("the whole blob does not hash to its name".into()));
    }
    Ok(None)
}

/// Every complete blob whose stored bytes fail, with the reason.
fn blob_pass(
    txn: &ReadTransaction,
    report: &mut ScrubReport,
) -> Result<Vec<(BlobHash, String)>, QuarantineError> {
    let meta = txn.open_table(BLOB_META)?;
    let chunks = txn.open_table(BLOB_CHUNKS)?;
    let mut bad = Vec::new();
    for row in meta.iter()? {
        let (k, _) = row?;
        let h = BlobHash(
            k.value()
                .try_into()
                .map_err(|_| DamagedRow { what: "blob key" })?,
        );
        if let Some(why) = check_blob(&meta, &chunks, &h, &mut report.blobs_checked)? {
            bad.push((h, why));
        }
    }
    Ok(bad)
}

/// Drops the blobs found bad (those that still fail: the read pass ran on
/// a snapshot) and records each in quarantine; they become absent, so the
/// engine fetches them again.
fn drop_bad_blobs(
    txn: &WriteTransaction,
    found: Vec<(BlobHash, String)>,
    report: &mut ScrubReport,
) -> Result<(), QuarantineError> {
    let mut bad = Vec::new();
    {
        let meta = txn.open_table(BLOB_META)?;
        let chunks = txn.open_table(BLOB_CHUNKS)?;
        let mut again = 0;
        for (h, _) in found {
            if let Some(why) = check_blob(&meta, &chunks, &h, &mut again)? {
                bad.push((h, why));
            }
        }
    }
    if bad.is_empty() {
        return Ok(());
    }
    let mut meta = txn.open_table(BLOB_META)?;
    let mut chunks = txn.open_table(BLOB_CHUNKS)?;
    let mut q = txn.open_table(QUARANTINE)?;
    for (h, why) in bad {
        // Rows under a number are found through the metadata; if that does
        // not decode, only rows under the hash can be found (the others are
        // left as unreachable bytes).
        let number = match meta.get(h.0.as_slice())? {
            Some(v) => decode_meta(v.value()).ok().and_then(|m| m.rows),
            None => None,
        };
        crate::blob::remove_all_rows(&mut chunks, &h, number)?;
        meta.remove(h.0.as_slice())?;
        put_entry(
            &mut q,
            QuarantineEntry {
                id: 0,
                workspace: WorkspaceId([0; 32]),
                author: None,
                seq: None,
                expected: None,
                hash: None,
                reason: format!("blob {h} failed verification ({why}); dropped, fetch it again"),
                time_ms: now_ms(),
                source: "scrub".into(),
                bytes: Vec::new(),
            },
        )?;
        report.blobs.push(h);
    }
    Ok(())
}

impl Store {
    /// Re-verifies every held bundle (hash, slot, chain link, one signature
    /// per run) and every complete blob, moves what fails to quarantine, all
    /// in one write transaction, and returns the bundle slots that need a
    /// clean copy from peers. See [`Store::scrub_report`] for blobs too.
    ///
    /// # Errors
    /// [`QuarantineError::Storage`], [`QuarantineError::Damaged`].
    pub fn scrub(&self) -> Result<Vec<RepairNeeded>, QuarantineError> {
        Ok(self.scrub_report()?.bundles)
    }

    /// [`Store::scrub`], with the blobs that failed and what was checked:
    /// the full answer for `verify` and repair.
    ///
    /// # Errors
    /// [`QuarantineError::Storage`], [`QuarantineError::Damaged`].
    pub fn scrub_report(&self) -> Result<ScrubReport, QuarantineError> {
        let findings = self.scrub_pass()?.check()?;
        self.scrub_apply(findings)
    }

    /// The first half of a scrub, for callers that must not stop writing
    /// meanwhile: a read snapshot whose [`ScrubPass::check`] (the long part:
    /// every bundle and blob re-read) runs on any thread; then
    /// [`Store::scrub_apply`] quarantines what still fails.
    ///
    /// # Errors
    /// [`QuarantineError::Storage`].
    pub fn scrub_pass(&self) -> Result<ScrubPass, QuarantineError> {
        Ok(ScrubPass {
            txn: self.db.begin_read()?,
        })
    }

    /// The second half of a scrub: in one write transaction, moves to
    /// quarantine what `findings` name and still fails now (a slot repaired
    /// or a blob replaced since the snapshot is left alone), and returns the
    /// report.
    ///
    /// # Errors
    /// [`QuarantineError::Storage`], [`QuarantineError::Damaged`].
    pub fn scrub_apply(&self, findings: ScrubFindings) -> Result<ScrubReport, QuarantineError> {
        let ScrubFindings {
            mut report,
            suspects,
            bad_signature,
            gone,
            blobs,
        } = findings;
        let txn = self.db.begin_write()?;
        let mut out = Vec::new();
        for (ws, author, seq) in suspects {
            let failed = bad_signature.contains(&(ws, author, seq))
                && signature_still_fails(&txn, &ws, &author, seq)?;
            let why = failed.then_some("fails its signature check");
            let expected = match quarantine_slot(&txn, &ws, &author, seq, "scrub", why)? {
                Some((_, expected)) => expected,
                // The copy matches its index but breaks the chain or its
                // run's signature: the index itself is suspect.
                None => None,
            };
            out.push(RepairNeeded {
                workspace: ws,
                author,
                seq,
                expected,
            });
        }
        out.extend(gone);
        out.sort_by_key(|r| (r.workspace, r.author, r.seq));
        report.bundles = out;
        drop_bad_blobs(&txn, blobs, &mut report)?;
        txn.commit()?;
        Ok(report)
    }
}

/// Whether the copy at a slot still fails its signature (it may have been
/// replaced by a clean copy since the read pass).
fn signature_still_fails(
    txn: &WriteTransaction,
    ws: &WorkspaceId,
    author: &ActorId,
    seq: u64,
) -> Result<bool, QuarantineError> {
    let bundles = txn.open_table(BUNDLES)?;
    let k = seq_key(ws, author, seq);
    Ok(match bundles.get(k.as_slice())? {
        Some(v) => match Bundle::decode(crate::held::split(&k, v.value()).copy.to_vec()) {
            Ok(b) => b.check_signature().is_err(),
            Err(_) => true,
        },
        None => false,
    })
}

/// A read snapshot of the store taken for a scrub (see [`Store::scrub_pass`]).
pub struct ScrubPass {
    txn: ReadTransaction,
}

impl std::fmt::Debug for ScrubPass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScrubPass")
    }
}

impl ScrubPass {
    /// Re-reads every held bundle and complete blob of the snapshot and
    /// lists what fails; writes nothing.
    ///
    /// # Errors
    /// [`QuarantineError::Storage`], [`QuarantineError::Damaged`].
    pub fn check(self) -> Result<ScrubFindings, QuarantineError> {
        let mut report = ScrubReport::default();
        let (suspects, bad_signature, gone) = bundle_pass(&self.txn, &mut report)?;
        let blobs = blob_pass(&self.txn, &mut report)?;
        Ok(ScrubFindings {
            report,
            suspects,
            bad_signature,
            gone,
            blobs,
        })
    }
}

/// What a scrub's read pass found, for [`Store::scrub_apply`].
#[derive(Debug)]
pub struct ScrubFindings {
    report: ScrubReport,
    suspects: Vec<Slot>,
    bad_signature: Vec<Slot>,
    gone: Vec<RepairNeeded>,
    blobs: Vec<(BlobHash, String)>,
}
