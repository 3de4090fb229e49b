//! The register's [`StateBackend`] on redb tables, inside a write transaction.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;

use redb::{ReadableTable, ReadableTableMetadata, Table, WriteTransaction};
use troupe_protocol::hlc::Hlc;
use troupe_protocol::register::{self, ApplyReport, Head, Scope, StateBackend};
use troupe_protocol::{
    ActorId, BlobHash, Bundle, EntityId, FieldPath, Op, OpId, Value, WorkspaceId,
};

use crate::entity::{Heads, RawRow, path};
use crate::error::DamagedRow;
use crate::schema::*;
use crate::sorted_insert::{ENTITY_MIN_RUN, SortedRows};

/// Failure inside the state backend.
#[derive(Debug)]
pub(crate) enum StateError {
    Db(redb::Error),
    Damaged(DamagedRow),
}

impl From<redb::StorageError> for StateError {
    fn from(e: redb::StorageError) -> Self {
        StateError::Db(e.into())
    }
}

impl From<redb::Error> for StateError {
    fn from(e: redb::Error) -> Self {
        StateError::Db(e)
    }
}

impl From<redb::TableError> for StateError {
    fn from(e: redb::TableError) -> Self {
        StateError::Db(e.into())
    }
}

macro_rules! state_into {
    ($t:ty) => {
        impl From<StateError> for $t {
            fn from(e: StateError) -> Self {
                match e {
                    StateError::Db(e) => e.into(),
                    StateError::Damaged(d) => d.into(),
                }
            }
        }
    };
}
state_into!(crate::error::CommitError);
state_into!(crate::error::RebuildError);
state_into!(crate::error::QuarantineError);

/// Entity rows cached per transaction before they are written back: bounds
/// memory during a long replay (rebuild) while a sync batch stays in one pass.
const CACHE_MAX_ENTITIES: usize = 8192;

struct Cached {
    row: RawRow,
    dirty: bool,
    /// For a row not in the table when loaded: which gap between the
    /// table's keys it falls in (a hash of the key after it), so that
    /// [`TxnState::flush`] can write new rows sharing a gap as one run.
    gap: Option<u64>,
}

/// State tables of one write transaction, scoped to one workspace at a time.
///
/// Entity rows and new `superseded` rows are cached in memory and written
/// back in key order by [`TxnState::flush`], so a batch reads and writes each
/// entity once however many of its ops touch it. Every row read from redb is
/// checked against its seal first. Callers must call `flush` before the
/// transaction commits.
pub(crate) struct TxnState<'t> {
    pub(crate) ws: WorkspaceId,
    entities: Table<'t, &'static [u8], &'static [u8]>,
    superseded: Table<'t, &'static [u8], &'static [u8]>,
    asset_deletes: Table<'t, &'static [u8], &'static [u8]>,
    asset_refs: Table<'t, &'static [u8], &'static [u8]>,
    /// Cached rows in load order, their index by key, and the last one used
    /// (consecutive ops of a bundle usually edit one entity).
    rows: Vec<(Vec<u8>, Cached)>,
    /// Keyed at random (foldhash, seeded per map), not with a fixed
    /// function: the keys are entity types and ids that peers choose, and
    /// with a fixed function a peer could compute colliding ids offline and
    /// make every lookup of a batch walk one long probe chain, on every node
    /// (a bundle may hold 100,000 ops). Seeding costs nothing measurable:
    /// `commit_batch` in the storage apply bench ran 1,051.6 M instructions
    /// against 1,047.6 M with the fixed fold it replaced; std's SipHash
    /// cost 1,070.8 M.
    cache: HashMap<Vec<u8>, usize, foldhash::fast::RandomState>,
    last: usize,
    /// `superseded` keys added in this transaction, not yet written.
    sup_new: BTreeSet<Vec<u8>>,
    /// Whether the `superseded` table may hold a row (it is empty in a
    /// store that never saw an op replace another: the first sync of a
    /// fresh copy skips one B-tree probe per bundle).
    sup_rows: bool,
    /// The bundle being applied, and whether any `superseded` row (in redb
    /// or added in this transaction) may name one of its ops (almost never:
    /// only when an op naming it was applied first).
    current: Option<(ActorId, u64, bool)>,
    /// Scratch key buffer (no allocation per lookup).
    key: Vec<u8>,
    /// Scratch encode buffer for entity rows.
    buf: Vec<u8>,
}

impl<'t> TxnState<'t> {
    pub(crate) fn open(
        txn: &'t WriteTransaction,
        ws: WorkspaceId,
    ) -> Result<Self, redb::TableError> {
        let superseded = txn.open_table(SUPERSEDED)?;
        let sup_rows = !superseded.is_empty().map_err(redb::TableError::Storage)?;
        Ok(TxnState {
            ws,
            entities: txn.open_table(ENTITIES)?,
            superseded,
            sup_rows,
            asset_deletes: txn.open_table(ASSET_DELETES)?,
            asset_refs: txn.open_table(ASSET_REFS)?,
            rows: Vec::new(),
            cache: HashMap::default(),
            last: usize::MAX,
            sup_new: BTreeSet::new(),
            current: None,
            key: Vec::with_capacity(128),
            buf: Vec::with_capacity(4096),
        })
    }

    /// Applies one verified bundle with the register rule, and records the
    /// asset references it makes (for blob GC). Returns the fields it
    /// touched that now have more than one head (sorted, once each).
    pub(crate) fn apply(&mut self, bundle: &Bundle) -> Result<Vec<FieldPath>, StateError> {
        let body = bundle.body();
        let prefix = superseded_bundle_prefix(&self.ws, &body.author, body.seq);
        let named = self.sup_rows
            && match self.superseded.range(prefix.as_slice()..)?.next() {
                Some(row) => row?.0.value().starts_with(&prefix),
                None => false,
            }
            || self
                .sup_new
                .range(prefix.to_vec()..)
                .next()
                .is_some_and(|k| k.starts_with(&prefix));
        self.current = Some((body.author, body.seq, named));
        let sets_only = body.ops.iter().all(|o| matches!(o, Op::Set { .. }));
        let report = if sets_only {
            self.apply_sets(bundle)
        } else {
            register::apply_bundle(self, bundle).map(|r: ApplyReport| r.conflicted)
        };
        self.current = None;
        let report = report?;
        let wall = body.hlc.wall_ms;
        for op in &body.ops {
            if let Op::Set {
                value: Value::Asset(a),
                ..
            } = op
            {
                let mut k = a.hash.0.to_vec();
                k.extend_from_slice(&self.ws.0);
                let old = match self.asset_refs.get(k.as_slice())? {
                    Some(v) => read_u64(&k, v.value()).ok_or(StateError::Damaged(DamagedRow {
                        what: "asset reference",
                    }))?,
                    None => 0,
                };
                if wall >= old {
                    let v = seal(&k, wall.to_be_bytes().to_vec());
                    self.asset_refs.insert(k.as_slice(), v.as_slice())?;
                }
            }
        }
        if let Some((_, c)) = self.rows.get_mut(self.last) {
            c.row.compact_if_bloated().map_err(StateError::Damaged)?;
        }
        if self.cache.len() > CACHE_MAX_ENTITIES || self.sup_new.len() > CACHE_MAX_ENTITIES {
            self.flush()?;
        }
        Ok(report)
    }

    /// The register rule of [`register::apply_bundle`] for a bundle of `Set`
    /// ops only (the common case), run straight on the cached entity rows:
    /// one row lookup per run of ops on one entity, one field search per op,
    /// and no copies of the heads or paths. Same steps in the same order;
    /// `tests/rebuild_prop.rs` checks the result against the protocol's
    /// reference `Replica`. Returns the conflicted fields.
    fn apply_sets(&mut self, bundle: &Bundle) -> Result<Vec<FieldPath>, StateError> {
        let hlc = bundle.body().hlc;
        let mut at: Option<(&str, &EntityId, usize)> = None;
        // Whether any op left its field with several heads: a field's heads
        // change only through ops on it, so when no op did, none has now.
        let mut several = false;
        for (id, op) in bundle.ops_with_ids() {
            let Op::Set { path, value, pred } = op else {
                continue;
            };
            let (ty, eid) = path.entity();
            let idx = match at {
                Some((t, e, i)) if t == ty && e == eid => i,
                _ => {
                    let i = self.row_index(ty, eid)?;
                    at = Some((ty, eid, i));
                    i
                }
            };
            let found = self.rows[idx].1.row.find(&path.field);
            // A new field starts with the entity's live deletions as heads.
            let init = match found {
                Ok(_) => None,
                Err(_) if self.rows[idx].1.row.deletes().is_empty() => Some(Heads::Zero),
                Err(_) => {
                    let deletes = self.rows[idx].1.row.deletes().to_vec();
                    let mut h = Vec::with_capacity(deletes.len() + 1);
                    for d in deletes {
                        if !self.is_superseded(Scope::Field(path), d.op)? {
                            h.push(d);
                        }
                    }
                    Some(match h.len() {
                        0 => Heads::Zero,
                        1 => Heads::One(h[0]),
                        _ => Heads::Many(h),
                    })
                }
            };
            for p in pred {
                self.add_superseded(Scope::Field(path), *p)?;
            }
            let live = !self.is_superseded(Scope::Field(path), id)?
                && !self.is_superseded(Scope::Entity(ty, eid), id)?;
            let c = &mut self.rows[idx].1;
            c.dirty = true;
            let i = match (found, init) {
                (Ok(i), _) => i,
                (Err(i), init) => c.row.insert_field(i, &path.field, init.unwrap_or_default()),
            };
            let heads = c.row.heads_mut(i);
            if !pred.is_empty() {
                heads.retain(|h| !pred.contains(&h.op));
            }
            if live && !heads.contains(&id) {
                let h = c
                    .row
                    .new_head(id, hlc, Some(value))
                    .map_err(StateError::Damaged)?;
                c.row.heads_mut(i).insert_sorted(h);
            }
            several |= c.row.heads(i).len() > 1;
        }
        if !several {
            return Ok(Vec::new());
        }
        // Conflicts are read once every op of the bundle is in.
        let mut conflicted: Vec<FieldPath> = Vec::new();
        for op in &bundle.body().ops {
            let Op::Set { path, .. } = op else {
                continue;
            };
            let (ty, eid) = path.entity();
            let idx = match at {
                Some((t, e, i)) if t == ty && e == eid => i,
                _ => {
                    let i = self.row_index(ty, eid)?;
                    at = Some((ty, eid, i));
                    i
                }
            };
            let row = &self.rows[idx].1.row;
            if row.find(&path.field).is_ok_and(|i| row.heads(i).len() > 1) {
                conflicted.push(path.clone());
            }
        }
        if conflicted.len() > 1 {
            conflicted.sort_unstable();
            conflicted.dedup();
        }
        Ok(conflicted)
    }

    /// Writes every changed entity row and new `superseded` row, in key
    /// order, and empties the cache.
    pub(crate) fn flush(&mut self) -> Result<(), StateError> {
        self.cache.clear();
        self.last = usize::MAX;
        let mut dirty: Vec<(Vec<u8>, RawRow, Option<u64>)> = self
            .rows
            .drain(..)
            .filter(|(_, c)| c.dirty)
            .map(|(k, c)| (k, c.row, c.gap))
            .collect();
        dirty.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        // New rows of one gap, written together: a long run goes through a
        // cursor (see the `sorted_insert` module). Nothing else in the
        // table sorts between them, so every two are adjacent.
        let mut run = SortedRows::with_min_run(|_: &[u8], _: &[u8]| true, ENTITY_MIN_RUN);
        let mut run_gap = None;
        for (k, mut row, gap) in dirty {
            // A held row (no gap) ends the run before it as well.
            if gap != run_gap {
                run.finish(&mut self.entities)?;
                run_gap = gap;
            }
            if row.is_empty() {
                if gap.is_none() {
                    self.entities.remove(k.as_slice())?;
                }
                continue;
            }
            let v = row
                .encode_into(&k, &mut self.buf)
                .map_err(StateError::Damaged)?;
            if gap.is_some() {
                run.push(&mut self.entities, &k, |out| out.extend_from_slice(v))?;
            } else {
                self.entities.insert(k.as_slice(), v)?;
            }
        }
        run.finish(&mut self.entities)?;
        for k in std::mem::take(&mut self.sup_new) {
            self.superseded.insert(k.as_slice(), [].as_slice())?;
            self.sup_rows = true;
        }
        Ok(())
    }

    /// The cached row of an entity, loaded (and verified) on first use.
    fn row(&mut self, ty: &str, id: &EntityId) -> Result<&mut Cached, StateError> {
        let i = self.row_index(ty, id)?;
        Ok(&mut self.rows[i].1)
    }

    /// Where the cached row of an entity is in `rows`, loaded (and
    /// verified) on first use. Valid until the next [`TxnState::flush`].
    fn row_index(&mut self, ty: &str, id: &EntityId) -> Result<usize, StateError> {
        self.key.clear();
        push_entity_prefix(&mut self.key, &self.ws, ty, id);
        let hit = self
            .rows
            .get(self.last)
            .is_some_and(|(k, _)| *k == self.key);
        if !hit {
            self.last = match self.cache.get(self.key.as_slice()) {
                Some(&i) => i,
                None => {
                    // One descent finds the row or, when there is none,
                    // the key after its place.
                    let next = self
                        .entities
                        .lower_bound(Bound::Included(self.key.as_slice()))?
                        .peek_next()?;
                    let (row, gap) = match next {
                        Some((k, v)) if k.value() == self.key.as_slice() => (
                            RawRow::decode(&self.key, v.value()).map_err(StateError::Damaged)?,
                            None,
                        ),
                        Some((k, _)) => (RawRow::with_room(), Some(gap_tag(k.value()))),
                        None => (RawRow::with_room(), Some(u64::MAX)),
                    };
                    self.rows.push((
                        self.key.clone(),
                        Cached {
                            row,
                            dirty: false,
                            gap,
                        },
                    ));
                    self.cache.insert(self.key.clone(), self.rows.len() - 1);
                    self.rows.len() - 1
                }
            };
        }
        Ok(self.last)
    }
}

/// Which gap of the `entities` table a new row falls in: a hash of the
/// key after it. Two new rows with one tag share the gap (a collision
/// only makes a cursor run stop early and start again).
fn gap_tag(next_key: &[u8]) -> u64 {
    u64::from_le_bytes(state_tag(next_key, &[]))
}

/// A sealed u64 row value (`asset_refs`); `None` when damaged.
pub(crate) fn read_u64(key: &[u8], v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(unseal(key, v)?.try_into().ok()?))
}

impl StateBackend for TxnState<'_> {
    type Error = StateError;

    fn field_heads(&mut self, path: &FieldPath) -> Result<Option<Vec<Head>>, StateError> {
        let row = &self.row(&path.entity_type, &path.entity_id)?.row;
        match row.find(&path.field) {
            Ok(i) => Ok(Some(
                row.to_heads(row.heads(i).as_slice())
                    .map_err(StateError::Damaged)?,
            )),
            Err(_) => Ok(None),
        }
    }

    fn put_field_heads(&mut self, path: &FieldPath, heads: &[Head]) -> Result<(), StateError> {
        let c = self.row(&path.entity_type, &path.entity_id)?;
        c.row
            .put_field(&path.field, heads)
            .map_err(StateError::Damaged)?;
        c.dirty = true;
        Ok(())
    }

    fn entity_fields(&mut self, ty: &str, id: &EntityId) -> Result<Vec<FieldPath>, StateError> {
        let row = &mut self.row(ty, id)?.row;
        // In name order, as the register expects a row's fields.
        row.settle();
        Ok((0..row.field_count())
            .map(|i| path(ty, id, row.name_str(i)))
            .collect())
    }

    fn entity_deletes(&mut self, ty: &str, id: &EntityId) -> Result<Vec<Head>, StateError> {
        let row = &self.row(ty, id)?.row;
        row.to_heads(row.deletes()).map_err(StateError::Damaged)
    }

    fn put_entity_deletes(
        &mut self,
        ty: &str,
        id: &EntityId,
        heads: &[Head],
    ) -> Result<(), StateError> {
        let c = self.row(ty, id)?;
        c.row.put_deletes(heads).map_err(StateError::Damaged)?;
        c.dirty = true;
        Ok(())
    }

    fn add_superseded(&mut self, scope: Scope<'_>, op: OpId) -> Result<(), StateError> {
        if let Some((a, s, named)) = &mut self.current
            && *a == op.author
            && *s == op.seq
        {
            *named = true;
        }
        let k = superseded_key(&self.ws, scope, &op);
        self.sup_new.insert(k);
        Ok(())
    }

    fn is_superseded(&mut self, scope: Scope<'_>, op: OpId) -> Result<bool, StateError> {
        // An op of the bundle being applied: only rows found by the probe at
        // the start of the bundle, or added since, can name it.
        if let Some((a, s, named)) = self.current
            && a == op.author
            && s == op.seq
            && !named
        {
            return Ok(false);
        }
        let k = superseded_key(&self.ws, scope, &op);
        if self.sup_new.contains(&k) {
            return Ok(true);
        }
        Ok(self.sup_rows && self.superseded.get(k.as_slice())?.is_some())
    }

    fn record_asset_delete(
        &mut self,
        hash: &BlobHash,
        op: OpId,
        hlc: Hlc,
        reason: &str,
    ) -> Result<(), StateError> {
        let k = asset_delete_key(&self.ws, &hash.0, &op);
        let v = postcard::to_allocvec(&(hlc, reason)).map_err(|_| {
            StateError::Damaged(DamagedRow {
                what: "asset delete (encode)",
            })
        })?;
        let v = seal(&k, v);
        self.asset_deletes.insert(k.as_slice(), v.as_slice())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::backends::InMemoryBackend;
    use std::hash::BuildHasher;

    /// Two row caches (two transactions, here of two stores) hash one
    /// entity key differently: ids a peer computed to collide in one
    /// node's cache do not collide in another's, or in the next batch's.
    #[test]
    fn row_caches_are_keyed_at_random() {
        let ws = WorkspaceId([7; 32]);
        let dbs: Vec<_> = (0..2)
            .map(|_| {
                redb::Database::builder()
                    .create_with_backend(InMemoryBackend::new())
                    .unwrap()
            })
            .collect();
        let txns: Vec<_> = dbs.iter().map(|db| db.begin_write().unwrap()).collect();
        let states: Vec<_> = txns
            .iter()
            .map(|t| TxnState::open(t, ws).unwrap())
            .collect();
        let mut key = Vec::new();
        push_entity_prefix(
            &mut key,
            &ws,
            "contacts.person",
            &EntityId::new("p1").unwrap(),
        );
        assert_ne!(
            states[0].cache.hasher().hash_one(&key),
            states[1].cache.hasher().hash_one(&key)
        );
    }
}
