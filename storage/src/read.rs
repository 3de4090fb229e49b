//! Reads. Every bundle read is verified against the hash index; a copy that
//! fails is reported as [`ReadError::Corrupt`], never returned.

use std::collections::BTreeMap;

use redb::{ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable};
use troupe_protocol::draft::AuthorTip;
use troupe_protocol::hlc::Hlc;
use troupe_protocol::ranges::SeqRangeSet;
use troupe_protocol::register::{Head, Scope, StateBackend, winner};
use troupe_protocol::sync::oplog_view::{BlobState, OplogView, ViewError};
use troupe_protocol::undo::OpLookup;
use troupe_protocol::{
    ActorId, BlobHash, Bundle, BundleHash, EntityId, FieldPath, Op, OpId, Value, WorkspaceId,
};

use crate::Store;
use crate::commit::{decode_ranges, decode_tip};
use crate::entity::{EntityRow, RawRow, entity_key_of, path, row_fields};
use crate::error::{CorruptBundle, DamagedRow, ReadError};
use crate::schema::*;

/// One line of a workspace's history.
#[derive(Clone, Debug, PartialEq)]
pub struct HistoryEntry {
    /// Author.
    pub author: ActorId,
    /// Seq.
    pub seq: u64,
    /// Bundle hash.
    pub hash: BundleHash,
    /// Kind name (`user_edit`, `undo`, …).
    pub kind: &'static str,
    /// Summary in words.
    pub summary: String,
    /// Timestamp.
    pub hlc: Hlc,
}

type RoTable = ReadOnlyTable<&'static [u8], &'static [u8]>;

fn open(txn: &ReadTransaction, t: Tbl) -> Result<RoTable, ReadError> {
    Ok(txn.open_table(t)?)
}

/// Reads a held bundle and verifies it against its indexed hash.
pub(crate) fn read_bundle(
    bundles: &RoTable,
    seq_hash: &RoTable,
    ws: &WorkspaceId,
    author: &ActorId,
    seq: u64,
) -> Result<Option<Bundle>, ReadError> {
    let k = seq_key(ws, author, seq);
    let Some(row) = bundles.get(k.as_slice())? else {
        return Ok(None);
    };
    let held = crate::held::split(&k, row.value());
    let expected = crate::held::recorded_with(seq_hash, &k, Some(&held))?;
    let corrupt = |reason: String| {
        ReadError::Corrupt(Box::new(CorruptBundle {
            workspace: *ws,
            author: *author,
            seq,
            expected,
            reason,
        }))
    };
    let Some(h) = expected else {
        return Err(corrupt("no hash index entry".into()));
    };
    match Bundle::decode_expecting(held.copy.to_vec(), &h) {
        Ok(b) if b.body().workspace == *ws && b.body().author == *author && b.body().seq == seq => {
            Ok(Some(b))
        }
        Ok(_) => Err(corrupt("bundle stored under the wrong slot".into())),
        Err(e) => Err(corrupt(e.to_string())),
    }
}

fn scan_prefix(
    t: &RoTable,
    prefix: &[u8],
    mut f: impl FnMut(&[u8], &[u8]) -> Result<(), ReadError>,
) -> Result<(), ReadError> {
    for row in t.range(prefix..)? {
        let (k, v) = row?;
        if !k.value().starts_with(prefix) {
            break;
        }
        f(k.value(), v.value())?;
    }
    Ok(())
}

impl Store {
    /// A consistent read snapshot for the sync engine ([`OplogView`]).
    ///
    /// # Errors
    /// [`ReadError::Storage`].
    pub fn view(&self) -> Result<StoreView, ReadError> {
        Ok(StoreView {
            txn: self.db.begin_read()?,
            slots: std::cell::OnceCell::new(),
        })
    }

    /// A read snapshot of one workspace's state, for undo planning
    /// ([`StateBackend`] reads and [`OpLookup`]).
    ///
    /// # Errors
    /// [`ReadError::Storage`].
    pub fn workspace_view(&self, ws: &WorkspaceId) -> Result<WorkspaceView, ReadError> {
        let txn = self.db.begin_read()?;
        Ok(WorkspaceView {
            ws: *ws,
            entities: open(&txn, ENTITIES)?,
            superseded: open(&txn, SUPERSEDED)?,
            bundles: open(&txn, BUNDLES)?,
            seq_hash: open(&txn, SEQ_HASH)?,
        })
    }

    /// A held bundle, verified. `Ok(None)` when not held.
    ///
    /// # Errors
    /// [`ReadError::Corrupt`] when the copy fails its hash: it was not
    /// returned, and it has already been moved to quarantine and out of the
    /// ranges (so sync fetches a clean copy; [`Store::scrub`] lists the slot
    /// with its expected hash until one arrives); [`ReadError::Storage`].
    pub fn bundle(
        &self,
        ws: &WorkspaceId,
        author: &ActorId,
        seq: u64,
    ) -> Result<Option<Bundle>, ReadError> {
        let r = {
            let txn = self.db.begin_read()?;
            read_bundle(
                &open(&txn, BUNDLES)?,
                &open(&txn, SEQ_HASH)?,
                ws,
                author,
                seq,
            )
        };
        self.quarantine_on_read(r)
    }

    /// Moves the copy behind a [`ReadError::Corrupt`] to quarantine, then
    /// hands the result back unchanged. Best effort: when the move itself
    /// fails (a full disk), the corrupt copy is still never returned and
    /// the next read or scrub tries again.
    fn quarantine_on_read<T>(&self, r: Result<T, ReadError>) -> Result<T, ReadError> {
        if let Err(ReadError::Corrupt(c)) = &r {
            let _ = self.quarantine_corrupt(&c.workspace, &c.author, c.seq);
        }
        r
    }

    /// A held bundle by hash, verified. There is no hash → slot index
    /// (every commit would pay for one), so this walks the recorded slots:
    /// when the slot is known (a [`HistoryEntry`] has it), read it with
    /// [`Store::bundle`] and compare the hash instead.
    ///
    /// # Errors
    /// As [`Store::bundle`].
    pub fn bundle_by_hash(&self, hash: &BundleHash) -> Result<Option<Bundle>, ReadError> {
        let slot = {
            let txn = self.db.begin_read()?;
            let mut slot = None;
            // A hash failing its seal locates nothing (scrub reports it).
            for row in open(&txn, BUNDLES)?.iter()? {
                let (k, v) = row?;
                if crate::held::split(k.value(), v.value()).carried == Some(*hash) {
                    slot = parse_seq_key(k.value());
                    break;
                }
            }
            // Older stores' copies, and slots whose copy is gone.
            if slot.is_none() {
                for row in open(&txn, SEQ_HASH)?.iter()? {
                    let (k, v) = row?;
                    if read_seq_hash(k.value(), v.value()) == Some(*hash) {
                        slot = parse_seq_key(k.value());
                        break;
                    }
                }
            }
            slot
        };
        match slot {
            Some((ws, author, seq)) => self.bundle_with_hash(&ws, &author, seq, hash),
            None => Ok(None),
        }
    }

    /// The bundle a [`Store::history`] entry names, verified: read at its
    /// slot, `None` when that slot no longer holds it (quarantined, or the
    /// slot now holds another copy of a fork).
    ///
    /// # Errors
    /// As [`Store::bundle`].
    pub fn history_bundle(
        &self,
        ws: &WorkspaceId,
        entry: &HistoryEntry,
    ) -> Result<Option<Bundle>, ReadError> {
        self.bundle_with_hash(ws, &entry.author, entry.seq, &entry.hash)
    }

    /// [`Store::bundle`] at a slot, when the copy there is the one named.
    fn bundle_with_hash(
        &self,
        ws: &WorkspaceId,
        author: &ActorId,
        seq: u64,
        hash: &BundleHash,
    ) -> Result<Option<Bundle>, ReadError> {
        Ok(self.bundle(ws, author, seq)?.filter(|b| b.hash() == *hash))
    }

    /// The tip to sign the author's next bundle against: the highest seq ever
    /// committed here (quarantined copies included: a seq is never reused).
    ///
    /// # Errors
    /// [`ReadError::Storage`], [`ReadError::Damaged`].
    pub fn author_tip(&self, ws: &WorkspaceId, author: &ActorId) -> Result<AuthorTip, ReadError> {
        let txn = self.db.begin_read()?;
        tip_in(&open(&txn, TIPS)?, ws, author)
    }

    /// One read snapshot of fields' heads and authors' tips, for drafting a
    /// run of writes: each write reads the heads it supersedes, and a run of
    /// sets committed together reads them all from one snapshot instead of
    /// opening one per set.
    ///
    /// # Errors
    /// [`ReadError::Storage`].
    pub fn draft_reads(&self) -> Result<DraftReads, ReadError> {
        let txn = self.db.begin_read()?;
        Ok(DraftReads {
            entities: open(&txn, ENTITIES)?,
            tips: open(&txn, TIPS)?,
        })
    }

    /// Seq ranges held per author.
    ///
    /// # Errors
    /// [`ReadError::Storage`], [`ReadError::Damaged`].
    pub fn ranges(&self, ws: &WorkspaceId) -> Result<BTreeMap<ActorId, SeqRangeSet>, ReadError> {
        let txn = self.db.begin_read()?;
        ranges_in(&open(&txn, RANGES)?, ws)
    }

    /// A field's current heads (empty when unknown).
    ///
    /// # Errors
    /// [`ReadError::Storage`], [`ReadError::Damaged`].
    pub fn field_heads(&self, ws: &WorkspaceId, path: &FieldPath) -> Result<Vec<Head>, ReadError> {
        let txn = self.db.begin_read()?;
        let t = open(&txn, ENTITIES)?;
        Ok(field_in(&t, ws, path)?.unwrap_or_default())
    }

    /// The value shown for a field: the winning head's, `None` when unknown
    /// or when the winner is a deletion.
    ///
    /// # Errors
    /// As [`Store::field_heads`].
    pub fn value(&self, ws: &WorkspaceId, path: &FieldPath) -> Result<Option<Value>, ReadError> {
        Ok(winner(&self.field_heads(ws, path)?).and_then(|h| h.value.clone()))
    }

    /// Every known field of an entity with its heads.
    ///
    /// # Errors
    /// As [`Store::field_heads`].
    pub fn entity_fields(
        &self,
        ws: &WorkspaceId,
        entity_type: &str,
        id: &EntityId,
    ) -> Result<Vec<(FieldPath, Vec<Head>)>, ReadError> {
        let txn = self.db.begin_read()?;
        let t = open(&txn, ENTITIES)?;
        let k = entity_prefix(ws, entity_type, id);
        match t.get(k.as_slice())? {
            Some(v) => Ok(row_fields(&k, v.value())?),
            None => Ok(Vec::new()),
        }
    }

    /// Every known field of a workspace with its heads, in key order.
    ///
    /// # Errors
    /// As [`Store::field_heads`].
    pub fn fields(&self, ws: &WorkspaceId) -> Result<Vec<(FieldPath, Vec<Head>)>, ReadError> {
        let txn = self.db.begin_read()?;
        let t = open(&txn, ENTITIES)?;
        fields_with_prefix(&t, &ws.0)
    }

    /// Every (asset, workspace) pair that some op references, without reading
    /// any field: what a node checks at start for assets whose bytes it lacks.
    ///
    /// # Errors
    /// [`ReadError::Storage`]; a malformed key is [`ReadError::Damaged`].
    pub fn asset_references(&self) -> Result<Vec<(BlobHash, WorkspaceId)>, ReadError> {
        let txn = self.db.begin_read()?;
        let t = open(&txn, ASSET_REFS)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, _) = row?;
            let k = k.value();
            let (Some(h), Some(w)) = (
                k.get(..32).and_then(|b| <[u8; 32]>::try_from(b).ok()),
                k.get(32..).and_then(|b| <[u8; 32]>::try_from(b).ok()),
            ) else {
                return Err(DamagedRow {
                    what: "asset reference key",
                }
                .into());
            };
            out.push((BlobHash(h), WorkspaceId(w)));
        }
        Ok(out)
    }

    /// Open conflicts: fields with more than one head.
    ///
    /// # Errors
    /// As [`Store::field_heads`].
    pub fn conflicts(&self, ws: &WorkspaceId) -> Result<Vec<(FieldPath, Vec<Head>)>, ReadError> {
        let mut all = self.fields(ws)?;
        all.retain(|(_, h)| h.len() > 1);
        Ok(all)
    }

    /// The workspace's history, newest first (by hlc, then author and seq).
    /// Every bundle is verified as it is read.
    ///
    /// # Errors
    /// [`ReadError::Corrupt`] at the first copy that fails its hash (moved
    /// to quarantine, as for [`Store::bundle`]; call again for the rest).
    pub fn history(&self, ws: &WorkspaceId) -> Result<Vec<HistoryEntry>, ReadError> {
        let r = self.history_in(ws);
        self.quarantine_on_read(r)
    }

    fn history_in(&self, ws: &WorkspaceId) -> Result<Vec<HistoryEntry>, ReadError> {
        let txn = self.db.begin_read()?;
        let bundles = open(&txn, BUNDLES)?;
        let seq_hash = open(&txn, SEQ_HASH)?;
        let mut slots = Vec::new();
        scan_prefix(&bundles, &ws.0, |k, _| {
            slots.push(parse_seq_key(k).ok_or(DamagedRow { what: "bundle key" })?);
            Ok(())
        })?;
        let mut out = Vec::with_capacity(slots.len());
        for (w, a, s) in slots {
            if let Some(b) = read_bundle(&bundles, &seq_hash, &w, &a, s)? {
                let body = b.body();
                out.push(HistoryEntry {
                    author: a,
                    seq: s,
                    hash: b.hash(),
                    kind: body.kind.name(),
                    summary: body.summary.clone(),
                    hlc: body.hlc,
                });
            }
        }
        out.sort_by_key(|x| std::cmp::Reverse((x.hlc, x.author, x.seq)));
        Ok(out)
    }
}

fn fields_with_prefix(
    t: &RoTable,
    prefix: &[u8],
) -> Result<Vec<(FieldPath, Vec<Head>)>, ReadError> {
    let mut out = Vec::new();
    scan_prefix(t, prefix, |k, v| {
        out.extend(row_fields(k, v)?);
        Ok(())
    })?;
    Ok(out)
}

/// A field's heads from its entity row (`None` when the field is unknown).
///
/// Only that field's values are decoded (a contact's row holds ten), so a
/// write that reads the heads it supersedes does not decode the whole row.
fn field_in(t: &RoTable, ws: &WorkspaceId, p: &FieldPath) -> Result<Option<Vec<Head>>, ReadError> {
    let k = entity_key_of(ws, p);
    let Some(v) = t.get(k.as_slice())? else {
        return Ok(None);
    };
    let row = RawRow::decode(&k, v.value())?;
    match row.find(&p.field) {
        Ok(i) => Ok(Some(row.to_heads(row.heads(i).as_slice())?)),
        Err(_) => Ok(None),
    }
}

/// An author's tip in a workspace (the default when it has written nothing).
fn tip_in(t: &RoTable, ws: &WorkspaceId, author: &ActorId) -> Result<AuthorTip, ReadError> {
    let ak = author_key(ws, author);
    match t.get(ak.as_slice())? {
        Some(v) => {
            let (seq, h) = decode_tip(&ak, v.value())?;
            Ok(AuthorTip {
                last_seq: seq,
                last_hash: Some(h),
            })
        }
        None => Ok(AuthorTip::default()),
    }
}

/// A read snapshot for drafting writes ([`Store::draft_reads`]).
pub struct DraftReads {
    entities: RoTable,
    tips: RoTable,
}

impl std::fmt::Debug for DraftReads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DraftReads")
    }
}

impl DraftReads {
    /// As [`Store::field_heads`], in this snapshot.
    ///
    /// # Errors
    /// [`ReadError::Storage`], [`ReadError::Damaged`].
    pub fn field_heads(&self, ws: &WorkspaceId, path: &FieldPath) -> Result<Vec<Head>, ReadError> {
        Ok(field_in(&self.entities, ws, path)?.unwrap_or_default())
    }

    /// As [`Store::author_tip`], in this snapshot.
    ///
    /// # Errors
    /// [`ReadError::Storage`], [`ReadError::Damaged`].
    pub fn author_tip(&self, ws: &WorkspaceId, author: &ActorId) -> Result<AuthorTip, ReadError> {
        tip_in(&self.tips, ws, author)
    }
}

/// An entity's row, verified.
fn entity_in(t: &RoTable, k: &[u8]) -> Result<Option<EntityRow>, ReadError> {
    match t.get(k)? {
        Some(v) => Ok(Some(EntityRow::decode(k, v.value())?)),
        None => Ok(None),
    }
}

fn ranges_in(t: &RoTable, ws: &WorkspaceId) -> Result<BTreeMap<ActorId, SeqRangeSet>, ReadError> {
    let mut out = BTreeMap::new();
    scan_prefix(t, &ws.0, |k, v| {
        let a: [u8; 32] = k
            .get(32..)
            .and_then(|s| s.try_into().ok())
            .ok_or(DamagedRow { what: "ranges key" })?;
        let r = decode_ranges(k, v)?;
        if !r.is_empty() {
            out.insert(ActorId(a), r);
        }
        Ok(())
    })?;
    Ok(out)
}

/// A read snapshot for the sync engine.
pub struct StoreView {
    txn: ReadTransaction,
    /// `bundles` and `seq_hash`, which every bundle read needs: opened on
    /// first use, once per snapshot.
    slots: std::cell::OnceCell<(RoTable, RoTable)>,
}

impl StoreView {
    fn slot_tables(&self) -> Result<&(RoTable, RoTable), ViewError> {
        if let Some(t) = self.slots.get() {
            return Ok(t);
        }
        let t = (
            open(&self.txn, BUNDLES).map_err(view_err)?,
            open(&self.txn, SEQ_HASH).map_err(view_err)?,
        );
        Ok(self.slots.get_or_init(|| t))
    }
}

impl std::fmt::Debug for StoreView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreView")
    }
}

fn view_err(e: ReadError) -> ViewError {
    match e {
        ReadError::Corrupt(c) => ViewError::Corrupt {
            workspace: c.workspace,
            author: c.author,
            seq: c.seq,
            reason: c.reason,
        },
        other => ViewError::Storage(other.to_string()),
    }
}

impl OplogView for StoreView {
    fn ranges(&self, workspace: &WorkspaceId) -> Result<BTreeMap<ActorId, SeqRangeSet>, ViewError> {
        ranges_in(&open(&self.txn, RANGES).map_err(view_err)?, workspace).map_err(view_err)
    }

    fn author_ranges(
        &self,
        workspace: &WorkspaceId,
        author: &ActorId,
    ) -> Result<SeqRangeSet, ViewError> {
        let t = open(&self.txn, RANGES).map_err(view_err)?;
        let k = author_key(workspace, author);
        let row = t
            .get(k.as_slice())
            .map_err(|e| view_err(ReadError::from(e)))?;
        match row {
            Some(v) => decode_ranges(&k, v.value()).map_err(|e| view_err(e.into())),
            None => Ok(SeqRangeSet::new()),
        }
    }

    fn bundle(
        &self,
        workspace: &WorkspaceId,
        author: &ActorId,
        seq: u64,
    ) -> Result<Option<Vec<u8>>, ViewError> {
        // The bytes served are the very bytes that verified when they were
        // committed: their checksum holds (see the `held` module), or their
        // hash and slot are checked against the recorded hash (a rotten
        // copy is never served), without decoding the ops.
        let (b, h) = self.slot_tables()?;
        let storage = |e: redb::StorageError| ViewError::Storage(e.to_string());
        let k = seq_key(workspace, author, seq);
        let Some(row) = b.get(k.as_slice()).map_err(storage)? else {
            return Ok(None);
        };
        let held = crate::held::split(&k, row.value());
        let expected = crate::held::recorded_with(h, &k, Some(&held)).map_err(storage)?;
        let reason = match expected {
            Some(e) if held.sound(&e, (workspace, author, seq)) => {
                return Ok(Some(held.copy.to_vec()));
            }
            Some(_) => "stored copy does not match its recorded hash or slot",
            None => "no hash index entry",
        };
        Err(ViewError::Corrupt {
            workspace: *workspace,
            author: *author,
            seq,
            reason: reason.into(),
        })
    }

    fn bundle_run(
        &self,
        workspace: &WorkspaceId,
        author: &ActorId,
        from: u64,
        to: u64,
        take: &mut dyn FnMut(u64, Vec<u8>, BundleHash) -> bool,
    ) -> Result<(), ViewError> {
        if from > to {
            return Ok(());
        }
        // `bundles` and `seq_hash` share their key layout: one ordered scan
        // of each, joined on the key, instead of two lookups per seq. Each
        // copy is checked as `bundle` checks it; a copy that fails (or has
        // no recorded hash) is skipped, never served.
        let (b, h) = self.slot_tables()?;
        let storage = |e: redb::StorageError| ViewError::Storage(e.to_string());
        let (lo, hi) = (
            seq_key(workspace, author, from),
            seq_key(workspace, author, to),
        );
        let mut hashes = h
            .range(lo.as_slice()..=hi.as_slice())
            .map_err(storage)?
            .peekable();
        for row in b.range(lo.as_slice()..=hi.as_slice()).map_err(storage)? {
            let (k, v) = row.map_err(storage)?;
            let key = k.value();
            let held = crate::held::split(key, v.value());
            let mut expected = None;
            // Rows of older stores (and any row whose carried hash fails its
            // seal) find their hash in `seq_hash`, in the same key order.
            while let Some(next) = hashes.peek() {
                let (hk, hv) = match next {
                    Ok(kv) => kv,
                    Err(_) => break,
                };
                match hk.value().cmp(key) {
                    std::cmp::Ordering::Less => {
                        hashes.next();
                    }
                    std::cmp::Ordering::Equal => {
                        expected = read_seq_hash(key, hv.value());
                        hashes.next();
                        break;
                    }
                    std::cmp::Ordering::Greater => break,
                }
            }
            let Some((_, _, seq)) = parse_seq_key(key) else {
                continue;
            };
            let Some(hash) = held.carried.or(expected) else {
                continue;
            };
            if held.sound(&hash, (workspace, author, seq)) && !take(seq, held.copy.to_vec(), hash) {
                break;
            }
        }
        Ok(())
    }

    fn bundle_hash(
        &self,
        workspace: &WorkspaceId,
        author: &ActorId,
        seq: u64,
    ) -> Result<Option<BundleHash>, ViewError> {
        let (b, h) = self.slot_tables()?;
        let k = seq_key(workspace, author, seq);
        match crate::held::recorded(b, h, &k) {
            Ok((hash, true)) => Ok(hash),
            Ok((_, false)) => Ok(None),
            Err(e) => Err(ViewError::Storage(e.to_string())),
        }
    }

    fn blob_state(&self, hash: &BlobHash) -> Result<BlobState, ViewError> {
        crate::blob::blob_state_in(&open(&self.txn, BLOB_META).map_err(view_err)?, hash)
            .map_err(|e| ViewError::Storage(e.to_string()))
    }

    fn blob_range_into(
        &self,
        hash: &BlobHash,
        offset: u64,
        len: u32,
        out: &mut Vec<u8>,
    ) -> Result<bool, ViewError> {
        let meta = open(&self.txn, BLOB_META).map_err(view_err)?;
        let chunks = open(&self.txn, BLOB_CHUNKS).map_err(view_err)?;
        crate::blob::range_into(&meta, &chunks, hash, offset, len, out)
            .map_err(|e| ViewError::Storage(e.to_string()))
    }
}

/// A read snapshot of one workspace's state: the register's reads (writes are
/// refused) and op lookup, for planning undo with `troupe_protocol::undo`.
pub struct WorkspaceView {
    ws: WorkspaceId,
    entities: RoTable,
    superseded: RoTable,
    bundles: RoTable,
    seq_hash: RoTable,
}

impl std::fmt::Debug for WorkspaceView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WorkspaceView({:?})", self.ws)
    }
}

impl StateBackend for WorkspaceView {
    type Error = ReadError;

    fn field_heads(&mut self, path: &FieldPath) -> Result<Option<Vec<Head>>, ReadError> {
        field_in(&self.entities, &self.ws, path)
    }
    fn put_field_heads(&mut self, _: &FieldPath, _: &[Head]) -> Result<(), ReadError> {
        Err(DamagedRow {
            what: "read-only view (write attempted)",
        }
        .into())
    }
    fn entity_fields(&mut self, ty: &str, id: &EntityId) -> Result<Vec<FieldPath>, ReadError> {
        let row = entity_in(&self.entities, &entity_prefix(&self.ws, ty, id))?;
        Ok(row
            .map(|r| r.fields)
            .unwrap_or_default()
            .into_iter()
            .map(|(f, _)| path(ty, id, &f))
            .collect())
    }
    fn entity_deletes(&mut self, ty: &str, id: &EntityId) -> Result<Vec<Head>, ReadError> {
        let row = entity_in(&self.entities, &entity_prefix(&self.ws, ty, id))?;
        Ok(row.map(|r| r.deletes).unwrap_or_default())
    }
    fn put_entity_deletes(&mut self, _: &str, _: &EntityId, _: &[Head]) -> Result<(), ReadError> {
        Err(DamagedRow {
            what: "read-only view (write attempted)",
        }
        .into())
    }
    fn add_superseded(&mut self, _: Scope<'_>, _: OpId) -> Result<(), ReadError> {
        Err(DamagedRow {
            what: "read-only view (write attempted)",
        }
        .into())
    }
    fn is_superseded(&mut self, scope: Scope<'_>, op: OpId) -> Result<bool, ReadError> {
        Ok(self
            .superseded
            .get(superseded_key(&self.ws, scope, &op).as_slice())?
            .is_some())
    }
    fn record_asset_delete(
        &mut self,
        _: &BlobHash,
        _: OpId,
        _: Hlc,
        _: &str,
    ) -> Result<(), ReadError> {
        Err(DamagedRow {
            what: "read-only view (write attempted)",
        }
        .into())
    }
}

impl OpLookup for WorkspaceView {
    /// A corrupt or missing bundle answers `None` (undo then treats the op as
    /// unknown and restores nothing from it).
    fn op(&mut self, id: &OpId) -> Option<(Op, Hlc)> {
        let b = read_bundle(&self.bundles, &self.seq_hash, &self.ws, &id.author, id.seq).ok()??;
        let hlc = b.body().hlc;
        b.body()
            .ops
            .get(id.index as usize)
            .cloned()
            .map(|o| (o, hlc))
    }
}
