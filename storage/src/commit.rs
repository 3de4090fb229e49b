//! The one write path: local bundles and remote batches, each in one write
//! transaction with their state changes, ranges, tips and quarantine rows.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use redb::{ReadableTable, ReadableTableMetadata, WriteTransaction};
use troupe_protocol::ranges::SeqRangeSet;
use troupe_protocol::sync::WireCopy;
use troupe_protocol::verify::verify_bundles;
use troupe_protocol::{ActorId, Bundle, BundleHash, FieldPath, VerifyError, WorkspaceId};

use crate::error::{CommitError, DamagedRow};
use crate::fork::{forked, record_fork};
use crate::held;
use crate::journal;
use crate::quarantine::{QuarantineEntry, put_entry};
use crate::rebuild::rebuild_workspace;
use crate::schema::*;
use crate::sorted_insert::SortedRows;
use crate::state::TxnState;
use crate::{Store, decode_ws, now_ms};

/// What a batch commit did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BatchOutcome {
    /// Bundles verified, stored and applied, as (author, seq, hash).
    pub committed: Vec<(ActorId, u64, BundleHash)>,
    /// Bundles already held with the same hash (skipped).
    pub already_held: usize,
    /// Bundles moved to quarantine: (quarantine id, author, seq, reason).
    pub quarantined: Vec<(u64, ActorId, u64, String)>,
    /// Fields that now have more than one head.
    pub conflicted: Vec<FieldPath>,
    /// Slots found forked (two different bundles for one author and seq):
    /// every copy is in quarantine and none is applied; tell the user.
    pub forks: Vec<(ActorId, u64)>,
    /// Copies of forked slots that were already in quarantine (not added again).
    pub already_quarantined: usize,
}

/// One received batch for [`Store::commit_received_deferred`].
#[derive(Debug)]
pub struct Received {
    /// The workspace it arrived for.
    pub workspace: WorkspaceId,
    /// The verified bundles to apply, as the sync engine picked them.
    pub bundles: Vec<Bundle>,
    /// Who sent it (recorded with any quarantine entry).
    pub source: String,
    /// The batch as it arrived, when the bundles were picked from one: the
    /// commit journal keeps it instead of the bundles' own bytes.
    pub wire: Option<WireCopy>,
}

/// Stands for a tip row that fails its seal: above every seq, so no slot
/// lookup is skipped and the row is never overwritten by a lower tip.
const UNKNOWN_TIP: u64 = u64::MAX;

const FORK_REASON: &str = "fork: a different bundle exists for this author and seq; neither is applied until one is chosen";

#[derive(Clone, Copy, PartialEq)]
enum Mode<'a> {
    Local,
    Remote(&'a str),
}

impl Store {
    /// Commits one locally signed bundle durably, with its state changes.
    ///
    /// # Errors
    /// [`CommitError::Invalid`] or [`CommitError::SeqReused`] when it does not
    /// fit (nothing written); [`CommitError::Archived`],
    /// [`CommitError::UnknownWorkspace`], [`CommitError::Storage`].
    pub fn commit_local(&self, bundle: &Bundle) -> Result<BatchOutcome, CommitError> {
        self.commit_local_many(std::slice::from_ref(bundle))
    }

    /// Group commit: many local bundles (any workspaces) in one durable write
    /// transaction. All of them or none.
    ///
    /// # Errors
    /// As [`Store::commit_local`]; one bad bundle refuses the whole group.
    pub fn commit_local_many(&self, bundles: &[Bundle]) -> Result<BatchOutcome, CommitError> {
        self.commit_local_group(bundles.to_vec(), redb::Durability::Immediate)
    }

    /// [`Store::commit_local_many`] in a write transaction that is not
    /// durable on its own: the group commit of a run of local writes, made
    /// durable by one [`Store::flush`] before any of them is acknowledged.
    /// A run signed once, on its last bundle, verifies here as a whole.
    /// Takes the bundles (a group commit's run is not copied again).
    ///
    /// # Errors
    /// As [`Store::commit_local_many`].
    pub fn commit_local_many_deferred(
        &self,
        bundles: Vec<Bundle>,
    ) -> Result<BatchOutcome, CommitError> {
        self.commit_local_group(bundles, redb::Durability::None)
    }

    fn commit_local_group(
        &self,
        bundles: Vec<Bundle>,
        durability: redb::Durability,
    ) -> Result<BatchOutcome, CommitError> {
        let mut by_ws: BTreeMap<WorkspaceId, Vec<Bundle>> = BTreeMap::new();
        for b in bundles {
            by_ws.entry(b.body().workspace).or_default().push(b);
        }
        let mut txn = self.db.begin_write()?;
        txn.set_durability(durability)
            .map_err(|e| CommitError::Storage(crate::StorageFailure(e.into())))?;
        // Only a deferred group needs the journal to become durable.
        let record = matches!(durability, redb::Durability::None)
            .then(|| {
                self.record(
                    by_ws
                        .iter()
                        .map(|(ws, g)| (journal::Mode::Local, *ws, g.as_slice(), None)),
                )
            })
            .flatten();
        let out = (|| {
            let mut out = BatchOutcome::default();
            for (ws, group) in by_ws {
                let o = commit_in(&txn, &ws, group, Mode::Local)?;
                merge(&mut out, o);
            }
            Ok(out)
        })();
        self.end_record(txn, record, out)
    }

    /// One local bundle in a write transaction that is not durable on its own:
    /// group commit, where the caller makes a run of them durable with one
    /// [`Store::flush`] before acknowledging any.
    ///
    /// # Errors
    /// As [`Store::commit_local`].
    pub fn commit_local_deferred(&self, bundle: &Bundle) -> Result<BatchOutcome, CommitError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(redb::Durability::None)
            .map_err(|e| CommitError::Storage(crate::StorageFailure(e.into())))?;
        let ws = bundle.body().workspace;
        let r = self.record([(journal::Mode::Local, ws, std::slice::from_ref(bundle), None)]);
        let out = commit_in(&txn, &ws, vec![bundle.clone()], Mode::Local);
        self.end_record(txn, r, out)
    }

    /// Commits a batch of remote bundles for `workspace` in one durable write
    /// transaction: verifies them (one signature per run, chain links against
    /// the store), skips copies already held, applies the good ones and
    /// quarantines the bad ones with `source` recorded. A different bundle at
    /// a held (author, seq) is a fork: quarantined, never applied.
    ///
    /// # Errors
    /// [`CommitError::Archived`], [`CommitError::UnknownWorkspace`],
    /// [`CommitError::Storage`] (nothing written). Bad bundles are not errors:
    /// see [`BatchOutcome::quarantined`].
    pub fn commit_batch(
        &self,
        workspace: &WorkspaceId,
        bundles: Vec<Bundle>,
        source: &str,
    ) -> Result<BatchOutcome, CommitError> {
        let txn = self.db.begin_write()?;
        let out = commit_in(&txn, workspace, bundles, Mode::Remote(source))?;
        txn.commit()?;
        Ok(out)
    }

    /// Like [`Store::commit_batch`] (atomic, all or nothing), but not made
    /// durable on its own: a crash before the next [`Store::flush`] (or any
    /// durable commit) rolls the store back to the last durable state, as if
    /// the batch had never arrived. Sync uses this to make a run of batches
    /// durable with one disk flush; it acknowledges them only after the flush.
    ///
    /// # Errors
    /// As [`Store::commit_batch`].
    pub fn commit_batch_deferred(
        &self,
        workspace: &WorkspaceId,
        bundles: Vec<Bundle>,
        source: &str,
    ) -> Result<BatchOutcome, CommitError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(redb::Durability::None)
            .map_err(|e| CommitError::Storage(crate::StorageFailure(e.into())))?;
        let r = self.record([(
            journal::Mode::Remote(source.to_string()),
            *workspace,
            bundles.as_slice(),
            None,
        )]);
        let out = commit_in(&txn, workspace, bundles, Mode::Remote(source));
        self.end_record(txn, r, out)
    }

    /// Several received batches in ONE write transaction, deferred like
    /// [`Store::commit_batch_deferred`]: each batch is applied exactly as
    /// that call would apply it, in order, and the transaction holds all of
    /// them or none (stronger than one transaction each). Saves a commit of
    /// redb's dirty pages per batch when batches arrive together.
    ///
    /// The outer error means nothing at all was written (every batch is
    /// refused); an inner error refuses one batch before anything of it was
    /// written ([`CommitError::Archived`], [`CommitError::UnknownWorkspace`]).
    ///
    /// # Errors
    /// [`CommitError::Storage`] (or a damaged row) in any batch: nothing written.
    pub fn commit_batches_deferred(
        &self,
        batches: Vec<(WorkspaceId, Vec<Bundle>, String)>,
    ) -> Result<Vec<Result<BatchOutcome, CommitError>>, CommitError> {
        self.commit_received_deferred(
            batches
                .into_iter()
                .map(|(workspace, bundles, source)| Received {
                    workspace,
                    bundles,
                    source,
                    wire: None,
                })
                .collect(),
        )
    }

    /// [`Store::commit_batches_deferred`] for batches that may carry the
    /// payload they arrived in ([`Received::wire`]): the journal then keeps
    /// that payload (compressed, about a fifteenth of the bundles' bytes)
    /// instead of the bundles' own bytes, and replays it by decoding it
    /// again. Applied exactly as `commit_batches_deferred` applies them.
    ///
    /// # Errors
    /// As [`Store::commit_batches_deferred`].
    pub fn commit_received_deferred(
        &self,
        batches: Vec<Received>,
    ) -> Result<Vec<Result<BatchOutcome, CommitError>>, CommitError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(redb::Durability::None)
            .map_err(|e| CommitError::Storage(crate::StorageFailure(e.into())))?;
        let r = self.record(batches.iter().map(|b| {
            (
                journal::Mode::Remote(b.source.clone()),
                b.workspace,
                b.bundles.as_slice(),
                b.wire.as_ref(),
            )
        }));
        let outs = batches
            .into_iter()
            .map(|b| commit_received_in(&txn, &b.workspace, b.bundles, &b.source))
            .collect();
        self.end_record(txn, r, outs)
    }

    /// Starts the journal record of a deferred commit (nothing when the
    /// store has no journal). The groups' bytes are copied now, so the
    /// bundles can be moved into the commit: a group with its wire copy
    /// keeps that, any other the bundles' own bytes.
    fn record<'b>(
        &self,
        groups: impl IntoIterator<
            Item = (
                journal::Mode,
                WorkspaceId,
                &'b [Bundle],
                Option<&'b WireCopy>,
            ),
        >,
    ) -> Option<Record<'_>> {
        let j = self.journal.as_ref()?;
        let mut j = crate::lock(j);
        let groups: Vec<_> = groups.into_iter().collect();
        let at = j.begin(groups.len() as u32);
        for (mode, ws, bundles, wire) in &groups {
            match (mode, wire) {
                (journal::Mode::Remote(source), Some(wire)) => j.wire_group(source, ws, wire),
                _ => {
                    j.group(mode, ws, bundles.len() as u32);
                    for b in *bundles {
                        j.bundle(b.bytes());
                    }
                }
            }
        }
        let seq = j.next_seq();
        Some(Record {
            j,
            at,
            seq,
            open: true,
        })
    }

    /// Ends a deferred commit: on success the transaction also records the
    /// journal record's number and commits, and the record waits for the
    /// next flush; on any failure neither is kept.
    fn end_record<T>(
        &self,
        txn: WriteTransaction,
        record: Option<Record<'_>>,
        out: Result<T, CommitError>,
    ) -> Result<T, CommitError> {
        let committed = out.and_then(|out| {
            if let Some(r) = &record {
                txn.open_table(META)?
                    .insert(JOURNAL_SEQ, r.seq.to_be_bytes().as_slice())?;
            }
            txn.commit()?;
            Ok(out)
        });
        if let Some(mut r) = record
            && committed.is_ok()
        {
            // Not counted for early writeback: a journaled commit's store
            // pages are needed on disk only at the next checkpoint, and
            // writing them early made every journal sync of a bulk sync
            // wait behind the store file's (see the `writeback` module).
            r.j.finish(r.at);
            r.open = false;
        }
        committed
    }

    /// Applies one journal record again at open, exactly as it was first
    /// committed (same bundles, modes and sources, one transaction).
    pub(crate) fn replay(&self, record: journal::Record) -> Result<(), CommitError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(redb::Durability::None)
            .map_err(|e| CommitError::Storage(crate::StorageFailure(e.into())))?;
        for g in record.groups {
            match g.mode {
                journal::Mode::Local => match commit_in(&txn, &g.ws, g.bundles, Mode::Local) {
                    Ok(_) => {}
                    // The store no longer takes the run as it did (only
                    // if the file was changed since): it stays unapplied,
                    // as a refused commit would.
                    Err(e @ (CommitError::Storage(_) | CommitError::Damaged(_))) => return Err(e),
                    Err(_) => {
                        txn.abort()?;
                        return Ok(());
                    }
                },
                journal::Mode::Remote(source) => {
                    // A refused batch was refused the first time too.
                    let _ = commit_received_in(&txn, &g.ws, g.bundles, &source)?;
                }
            }
        }
        txn.open_table(META)?
            .insert(JOURNAL_SEQ, record.seq.to_be_bytes().as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// Makes every earlier deferred commit durable (one flush to disk).
    ///
    /// # Errors
    /// [`CommitError::Storage`]: the deferred commits may be lost on a crash;
    /// retry, or treat them as not yet received.
    ///
    /// A store opened from a path usually does this by appending the
    /// waiting journal records and syncing the journal; when the journal is
    /// full, or a deferred write it does not hold is waiting (received asset
    /// bytes), the flush is a checkpoint: one redb durable commit.
    pub fn flush(&self) -> Result<(), CommitError> {
        if let Some(j) = &self.journal {
            let mut j = crate::lock(j);
            if !j.wants_checkpoint() {
                return j.sync().map_err(io_failure);
            }
        }
        self.checkpoint()
    }

    /// One redb durable commit: every earlier commit is in the store file
    /// for good, and the journal's records are written over from its start.
    pub(crate) fn checkpoint(&self) -> Result<(), CommitError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(redb::Durability::Immediate)
            .map_err(|e| CommitError::Storage(crate::StorageFailure(e.into())))?;
        txn.commit()?;
        if let Some(w) = &self.writeback {
            w.flushed();
        }
        if let Some(j) = &self.journal {
            crate::lock(j).checkpointed().map_err(io_failure)?;
        }
        Ok(())
    }

    /// Notes a deferred write that the journal does not hold: the next
    /// flush makes it durable with a checkpoint.
    pub(crate) fn unjournaled(&self) {
        if let Some(j) = &self.journal {
            crate::lock(j).unjournaled();
        }
    }

    /// Whether journal records wait for a flush (tests).
    #[doc(hidden)]
    pub fn journal_waiting(&self) -> bool {
        self.journal
            .as_ref()
            .is_some_and(|j| crate::lock(j).has_waiting())
    }

    /// A batch commit for salvage: not durable on its own (salvage ends with
    /// one durable commit before the new file is put in place).
    pub(crate) fn commit_salvaged(
        &self,
        workspace: &WorkspaceId,
        bundles: Vec<Bundle>,
    ) -> Result<BatchOutcome, CommitError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(redb::Durability::None)
            .map_err(|e| CommitError::Storage(crate::StorageFailure(e.into())))?;
        let out = commit_in(&txn, workspace, bundles, Mode::Remote("salvage"))?;
        txn.commit()?;
        Ok(out)
    }

    pub(crate) fn commit_in_txn(
        txn: &WriteTransaction,
        workspace: &WorkspaceId,
        bundles: Vec<Bundle>,
        source: &str,
    ) -> Result<BatchOutcome, CommitError> {
        commit_in(txn, workspace, bundles, Mode::Remote(source))
    }
}

/// A journal record being written for a deferred commit (the journal stays
/// locked until the commit ends).
struct Record<'s> {
    j: std::sync::MutexGuard<'s, journal::Journal>,
    at: usize,
    seq: u64,
    /// Not yet sealed: dropping it (an error, or a panic in the commit)
    /// takes the started record out of the buffer.
    open: bool,
}

impl Drop for Record<'_> {
    fn drop(&mut self) {
        if self.open {
            self.j.cancel(self.at);
        }
    }
}

fn io_failure(e: std::io::Error) -> CommitError {
    CommitError::Storage(crate::StorageFailure(redb::Error::Io(e)))
}

fn merge(into: &mut BatchOutcome, o: BatchOutcome) {
    into.committed.extend(o.committed);
    into.already_held += o.already_held;
    into.quarantined.extend(o.quarantined);
    into.conflicted.extend(o.conflicted);
    into.forks.extend(o.forks);
    into.already_quarantined += o.already_quarantined;
}

/// One received batch inside a transaction of several: a refusal that comes
/// before any write (archived or unknown workspace) is that batch's answer
/// and leaves the others be; any other failure fails the whole transaction.
fn commit_received_in(
    txn: &WriteTransaction,
    ws: &WorkspaceId,
    bundles: Vec<Bundle>,
    source: &str,
) -> Result<Result<BatchOutcome, CommitError>, CommitError> {
    if let Err(e) = check_writable(txn, ws) {
        return match e {
            CommitError::Archived(_) | CommitError::UnknownWorkspace(_) => Ok(Err(e)),
            other => Err(other),
        };
    }
    Ok(Ok(commit_in(txn, ws, bundles, Mode::Remote(source))?))
}

pub(crate) fn check_writable(txn: &WriteTransaction, ws: &WorkspaceId) -> Result<(), CommitError> {
    let t = txn.open_table(WORKSPACES)?;
    let info = match t.get(ws.0.as_slice())? {
        Some(v) => decode_ws(v.value())?,
        None => return Err(CommitError::UnknownWorkspace(*ws)),
    };
    if info.archived {
        return Err(CommitError::Archived(*ws));
    }
    Ok(())
}

fn read_hash(v: &[u8]) -> Result<BundleHash, DamagedRow> {
    v.try_into()
        .map(BundleHash)
        .map_err(|_| DamagedRow { what: "seq hash" })
}

/// The slots that two different bundles of `bundles` claim (almost always
/// none): found by sorting, with no set per bundle.
fn split_slots(bundles: &[Bundle]) -> BTreeSet<(ActorId, u64)> {
    let mut slots: Vec<(ActorId, u64, BundleHash)> = bundles
        .iter()
        .map(|b| (b.body().author, b.body().seq, b.hash()))
        .collect();
    slots.sort_unstable();
    slots
        .windows(2)
        .filter(|w| (w[0].0, w[0].1) == (w[1].0, w[1].1) && w[0].2 != w[1].2)
        .map(|w| (w[0].0, w[0].1))
        .collect()
}

fn commit_in(
    txn: &WriteTransaction,
    ws: &WorkspaceId,
    bundles: Vec<Bundle>,
    mode: Mode<'_>,
) -> Result<BatchOutcome, CommitError> {
    check_writable(txn, ws)?;
    let mut out = BatchOutcome::default();
    let mut bad: Vec<(Bundle, String, Option<BundleHash>)> = Vec::new();
    let mut candidates: Vec<Bundle> = Vec::with_capacity(bundles.len());
    let mut vouchers: Vec<Bundle> = Vec::new();
    let mut restore: Vec<Bundle> = Vec::new();
    // Slots seen forked in this batch, with every hash seen there.
    let mut fork_slots: BTreeMap<(ActorId, u64), BTreeSet<BundleHash>> = BTreeMap::new();
    // Highest seq committed per author (loaded once per author): a slot
    // above it has no `seq_hash` row, so new bundles skip those lookups.
    let mut tip_of: HashMap<ActorId, u64> = HashMap::new();
    {
        let seq_hash = txn.open_table(SEQ_HASH)?;
        let held = txn.open_table(BUNDLES)?;
        let forks = txn.open_table(FORKS)?;
        let tips = txn.open_table(TIPS)?;
        let no_forks = forks.is_empty()?;
        // Two different copies of one slot inside the batch are a fork too.
        let forked_in_batch = if mode == Mode::Local {
            BTreeSet::new()
        } else {
            split_slots(&bundles)
        };
        let mut quarantined_here: BTreeSet<BundleHash> = BTreeSet::new();
        for b in bundles {
            let body = b.body();
            let slot = (body.author, body.seq);
            let k = seq_key(ws, &body.author, body.seq);
            let tip = match tip_of.get(&body.author) {
                Some(t) => *t,
                None => {
                    let ak = author_key(ws, &body.author);
                    // A tip row failing its seal: no shortcut, and it is
                    // left as found (the local signer gets a typed error
                    // from `author_tip` rather than a seq that may be reused).
                    let t = match tips.get(ak.as_slice())? {
                        Some(v) => decode_tip(&ak, v.value()).map_or(UNKNOWN_TIP, |t| t.0),
                        None => 0,
                    };
                    tip_of.insert(body.author, t);
                    t
                }
            };
            let (held_hash, has_copy) = if body.seq > tip {
                (None, false)
            } else {
                // A hash failing its seal counts as unrecorded: the bundle is
                // verified and applied again (applying is idempotent).
                held::recorded(&held, &seq_hash, k.as_slice())?
            };
            let fork = if no_forks { None } else { forked(&forks, &k)? };
            if let Some(known) = fork {
                if mode == Mode::Local {
                    return Err(CommitError::SeqReused {
                        author: body.author,
                        seq: body.seq,
                    });
                }
                if known.contains(&b.hash()) || !quarantined_here.insert(b.hash()) {
                    out.already_quarantined += 1;
                } else {
                    fork_slots.entry(slot).or_default().insert(b.hash());
                    bad.push((b, FORK_REASON.into(), held_hash));
                }
                continue;
            }
            let split = forked_in_batch.contains(&slot);
            match held_hash {
                Some(h) if h != b.hash() || split => {
                    if mode == Mode::Local {
                        return Err(CommitError::SeqReused {
                            author: body.author,
                            seq: body.seq,
                        });
                    }
                    let e = fork_slots.entry(slot).or_default();
                    e.insert(h);
                    if quarantined_here.insert(b.hash()) && h != b.hash() {
                        e.insert(b.hash());
                        bad.push((b, FORK_REASON.into(), Some(h)));
                    } else {
                        out.already_quarantined += 1;
                    }
                }
                None if split => {
                    fork_slots.entry(slot).or_default().insert(b.hash());
                    if quarantined_here.insert(b.hash()) {
                        bad.push((b, FORK_REASON.into(), None));
                    } else {
                        out.already_quarantined += 1;
                    }
                }
                Some(_) => {
                    if !has_copy {
                        // Applied before, its copy was quarantined as corrupt:
                        // this clean copy restores the bytes (state already has it).
                        restore.push(b);
                    } else {
                        out.already_held += 1;
                        // Kept for verification only: it may be the signed
                        // successor that vouches for an unsigned candidate.
                        vouchers.push(b);
                    }
                }
                None => candidates.push(b),
            }
        }
        let mut failure: Option<CommitError> = None;
        let n_candidates = candidates.len();
        candidates.append(&mut vouchers);
        let mut verdicts = verify_bundles(ws, &candidates, |a, s| {
            let k = seq_key(ws, a, s);
            match held::recorded(&held, &seq_hash, k.as_slice()) {
                Ok((h, _)) => h,
                Err(e) => {
                    failure = Some(e.into());
                    None
                }
            }
        });
        if let Some(e) = failure {
            return Err(e);
        }
        candidates.truncate(n_candidates);
        verdicts.truncate(n_candidates);
        let mut good = Vec::with_capacity(candidates.len());
        for (b, v) in candidates.into_iter().zip(verdicts) {
            match v {
                Ok(()) => good.push(b),
                Err(e) => {
                    if mode == Mode::Local {
                        return Err(CommitError::Invalid {
                            author: b.body().author,
                            seq: b.body().seq,
                            error: e,
                        });
                    }
                    bad.push((b, describe(&e), None));
                }
            }
        }
        candidates = good;
    }

    let mut bundles_t = txn.open_table(BUNDLES)?;
    let mut written: HashSet<(ActorId, u64)> = HashSet::with_capacity(candidates.len());
    let mut ranges_t = txn.open_table(RANGES)?;
    let mut tips = txn.open_table(TIPS)?;
    let mut ranges: BTreeMap<ActorId, SeqRangeSet> = BTreeMap::new();
    let mut tip_updates: BTreeMap<ActorId, (u64, BundleHash)> = BTreeMap::new();
    let mut state = TxnState::open(txn, *ws)?;

    // The copies' rows, written in key order a chunk at a time (see the
    // `sorted_insert` module).
    let mut copies = SortedRows::new(consecutive_slots);
    let mut store_copy =
        |b: &Bundle, ranges: &mut BTreeMap<ActorId, SeqRangeSet>| -> Result<(), CommitError> {
            let body = b.body();
            let k = seq_key(ws, &body.author, body.seq);
            copies.push(&mut bundles_t, &k, |v| {
                held::held_value_append(v, k.as_slice(), &b.hash(), b.bytes())
            })?;
            let r = match ranges.entry(body.author) {
                std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::btree_map::Entry::Vacant(v) => {
                    let ak = author_key(ws, &body.author);
                    let cur = match ranges_t.get(ak.as_slice())? {
                        Some(v) => decode_ranges(&ak, v.value())?,
                        None => SeqRangeSet::new(),
                    };
                    v.insert(cur)
                }
            };
            r.insert(body.seq);
            Ok(())
        };

    out.committed.reserve(restore.len() + candidates.len());
    for b in &restore {
        store_copy(b, &mut ranges)?;
        out.committed
            .push((b.body().author, b.body().seq, b.hash()));
    }
    for b in &candidates {
        let body = b.body();
        // An exact duplicate inside the batch: the first copy was written.
        if !written.insert((body.author, body.seq)) {
            out.already_held += 1;
            continue;
        }
        // The copy's row carries its hash (see the `held` module).
        store_copy(b, &mut ranges)?;
        let t = tip_updates.entry(body.author).or_insert((0, b.hash()));
        if body.seq > t.0 {
            *t = (body.seq, b.hash());
        }
        out.conflicted.extend(state.apply(b)?);
        out.committed.push((body.author, body.seq, b.hash()));
    }
    copies.finish(&mut bundles_t)?;
    for (author, r) in &ranges {
        let ak = author_key(ws, author);
        let v = encode_ranges(&ak, r)?;
        ranges_t.insert(ak.as_slice(), v.as_slice())?;
    }
    for (author, (seq, hash)) in tip_updates {
        let ak = author_key(ws, &author);
        let old = match tip_of.get(&author) {
            Some(t) => *t,
            None => match tips.get(ak.as_slice())? {
                Some(v) => decode_tip(&ak, v.value()).map_or(UNKNOWN_TIP, |t| t.0),
                None => 0,
            },
        };
        if seq > old {
            tips.insert(ak.as_slice(), encode_tip(&ak, seq, &hash).as_slice())?;
        }
    }
    state.flush()?;
    drop((bundles_t, ranges_t, tips, state));
    let mut rebuild = false;
    for ((author, seq), seen) in &fork_slots {
        rebuild |= record_fork(txn, ws, author, *seq, seen)?;
        out.forks.push((*author, *seq));
    }
    if rebuild {
        // The withdrawn copy's ops leave the state: replay the workspace.
        rebuild_workspace(txn, ws)?;
    }
    if !bad.is_empty() {
        let source = match mode {
            Mode::Remote(s) => s,
            Mode::Local => "local",
        };
        let mut q = txn.open_table(QUARANTINE)?;
        let time_ms = now_ms();
        for (b, reason, expected) in bad {
            let body = b.body();
            let (author, seq) = (body.author, body.seq);
            let entry = QuarantineEntry {
                id: 0,
                workspace: *ws,
                author: Some(author),
                seq: Some(seq),
                expected,
                hash: Some(b.hash()),
                reason: reason.clone(),
                time_ms,
                source: source.to_string(),
                bytes: b.into_bytes(),
            };
            let id = put_entry(&mut q, entry)?;
            out.quarantined.push((id, author, seq, reason));
        }
    }
    Ok(out)
}

pub(crate) fn describe(e: &VerifyError) -> String {
    e.to_string()
}

pub(crate) fn decode_ranges(key: &[u8], v: &[u8]) -> Result<SeqRangeSet, DamagedRow> {
    let body = unseal(key, v).ok_or(DamagedRow { what: "ranges" })?;
    let r: Vec<(u64, u64)> =
        postcard::from_bytes(body).map_err(|_| DamagedRow { what: "ranges" })?;
    Ok(SeqRangeSet::from_ranges(r))
}

pub(crate) fn encode_ranges(key: &[u8], r: &SeqRangeSet) -> Result<Vec<u8>, DamagedRow> {
    postcard::to_allocvec(r.ranges())
        .map(|b| seal(key, b))
        .map_err(|_| DamagedRow {
            what: "ranges (encode)",
        })
}

/// A sealed `tips` value: the seq and hash of the author's highest bundle.
pub(crate) fn encode_tip(key: &[u8], seq: u64, hash: &BundleHash) -> Vec<u8> {
    let mut v = seq.to_be_bytes().to_vec();
    v.extend_from_slice(&hash.0);
    seal(key, v)
}

pub(crate) fn decode_tip(key: &[u8], v: &[u8]) -> Result<(u64, BundleHash), DamagedRow> {
    let v = unseal(key, v).ok_or(DamagedRow { what: "author tip" })?;
    if v.len() != 40 {
        return Err(DamagedRow { what: "author tip" });
    }
    let seq = u64::from_be_bytes(
        v[..8]
            .try_into()
            .map_err(|_| DamagedRow { what: "author tip" })?,
    );
    let h = read_hash(&v[8..])?;
    Ok((seq, h))
}
