//! One materialised state row per entity: the heads of every known field and
//! the entity's live deletions, with a checksum over key and value.
//!
//! One row per entity (instead of one per field) means a bundle that edits
//! ten fields of a cue reads and writes one row, and deleting an entity
//! touches one row. Fields are kept sorted by name and heads by op id, so the
//! row (and the order [`crate::Store::fields`] reports) is a pure function of
//! the state: rebuilt and materialised rows compare byte for byte.
//!
//! Stored form (integers are LEB128 varints): the distinct authors of the
//! row's heads once (count, 32 bytes each), in order of first use; the
//! fields (count, then per field its name (length, UTF-8) and heads); the
//! deletions (heads); then [`state_tag`]. Heads: count, then per head the
//! author's position, seq, op index, hlc wall ms and counter, and the value
//! as `0` (none: a deletion head) or `n + 1` followed by the `n` bytes of its
//! postcard encoding. A row of ten fields with two heads each is about half
//! the size of one repeating the 32-byte author ids, and because each value
//! carries its length, the write path ([`RawRow`]) moves values as bytes:
//! loading a row is one copy and a scan, not one allocation per value.

use std::collections::HashMap;

use troupe_protocol::hlc::Hlc;
use troupe_protocol::register::Head;
use troupe_protocol::{ActorId, EntityId, FieldPath, OpId, Value, WorkspaceId};

use crate::error::DamagedRow;
use crate::schema::{parse_entity_key, state_tag};

/// Refuse to encode an entity row beyond this (redb's value limit is far
/// higher; a row this large means a runaway conflict set).
const MAX_ROW: usize = 1 << 30;

/// A cached row's arena is compacted when it grows past this and holds
/// more than half garbage (values of heads that were replaced).
const ARENA_COMPACT: usize = 1 << 16;

const DAMAGED: DamagedRow = DamagedRow {
    what: "entity state",
};

/// The state of one entity, decoded for reading.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct EntityRow {
    /// Every known field (a field stays known with no heads), sorted by name.
    pub(crate) fields: Vec<(String, Vec<Head>)>,
    /// Live entity deletions (not superseded at entity scope).
    pub(crate) deletes: Vec<Head>,
}

impl EntityRow {
    /// Decodes a stored row after checking its checksum.
    pub(crate) fn decode(key: &[u8], v: &[u8]) -> Result<EntityRow, DamagedRow> {
        RawRow::decode(key, v)?.to_row()
    }
}

/// A row's distinct authors in order of first use, as its encoding lists
/// them. Searched in place while short (a row's heads usually name one to
/// three); indexed once longer, since every head looks its author up and a
/// contested row may name thousands (each a peer's key, so the index is
/// seeded at random).
#[derive(Default)]
struct Authors {
    list: Vec<ActorId>,
    index: Option<HashMap<ActorId, usize, foldhash::fast::RandomState>>,
}

impl Authors {
    /// Past this many, positions are found through the index.
    const SCAN: usize = 16;

    #[inline]
    fn add(&mut self, a: ActorId) {
        if let Some(index) = &mut self.index {
            index.entry(a).or_insert_with(|| {
                self.list.push(a);
                self.list.len() - 1
            });
        } else if !self.list.contains(&a) {
            self.list.push(a);
            if self.list.len() > Self::SCAN {
                self.index = Some(self.list.iter().enumerate().map(|(i, a)| (*a, i)).collect());
            }
        }
    }

    /// Where `a` is listed (every head's author was added first).
    #[inline]
    fn position(&self, a: &ActorId) -> usize {
        match &self.index {
            Some(index) => index.get(a).copied().unwrap_or(0),
            None => self.list.iter().position(|x| x == a).unwrap_or(0),
        }
    }
}

/// A head as the write path keeps it: the value stays encoded in its row's
/// arena (`(start, len)`; `None` for a deletion head).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct RawHead {
    pub(crate) op: OpId,
    pub(crate) hlc: Hlc,
    value: Option<(u32, u32)>,
}

/// A field's heads, sorted by op id; one head (the usual case) needs no
/// allocation.
#[derive(Clone, Debug, Default)]
pub(crate) enum Heads {
    /// No heads (a known field whose heads were all superseded).
    #[default]
    Zero,
    /// One head: no conflict.
    One(RawHead),
    /// Several heads (or none left after a removal).
    Many(Vec<RawHead>),
}

impl Heads {
    fn from_vec(v: Vec<RawHead>) -> Heads {
        match v.len() {
            0 => Heads::Zero,
            1 => Heads::One(v[0]),
            _ => Heads::Many(v),
        }
    }

    /// The heads as a list (no allocation when there are none).
    fn into_vec(self) -> Vec<RawHead> {
        match self {
            Heads::Zero => Vec::new(),
            Heads::One(h) => vec![h],
            Heads::Many(v) => v,
        }
    }

    /// The heads in op order.
    pub(crate) fn as_slice(&self) -> &[RawHead] {
        match self {
            Heads::Zero => &[],
            Heads::One(h) => std::slice::from_ref(h),
            Heads::Many(v) => v,
        }
    }

    /// How many heads there are.
    pub(crate) fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Keeps the heads `f` accepts.
    pub(crate) fn retain(&mut self, f: impl Fn(&RawHead) -> bool) {
        match self {
            Heads::Zero => {}
            Heads::One(h) => {
                if !f(h) {
                    *self = Heads::Zero;
                }
            }
            Heads::Many(v) => v.retain(f),
        }
    }

    /// Whether `op` is one of the heads (a binary search: a field may hold
    /// as many heads as a peer's bundle has ops on it).
    pub(crate) fn contains(&self, op: &OpId) -> bool {
        match self {
            Heads::Zero => false,
            Heads::One(h) => h.op == *op,
            Heads::Many(v) => v.binary_search_by(|h| h.op.cmp(op)).is_ok(),
        }
    }

    /// Adds a head, keeping op order (the caller checked it is not there).
    /// Its place is found by binary search; a bundle's ops on one field
    /// come in op order, so each lands at the end.
    pub(crate) fn insert_sorted(&mut self, h: RawHead) {
        *self = match std::mem::take(self) {
            Heads::Zero => Heads::One(h),
            Heads::One(a) if a.op < h.op => Heads::Many(vec![a, h]),
            Heads::One(a) => Heads::Many(vec![h, a]),
            Heads::Many(mut v) => {
                let i = v.partition_point(|x| x.op < h.op);
                v.insert(i, h);
                Heads::Many(v)
            }
        };
    }
}

/// An entity row on the write path: names and values stay bytes in one
/// arena (a copy of the stored row plus what this transaction added), so
/// loading, editing and storing a row moves bytes instead of decoding and
/// re-encoding every value.
#[derive(Clone, Debug, Default)]
pub(crate) struct RawRow {
    arena: Vec<u8>,
    /// (name start, name length, heads): the first `sorted` in name order,
    /// then the fields added out of place since (see
    /// [`RawRow::insert_field`]), in the order they came.
    fields: Vec<(u32, u32, Heads)>,
    sorted: usize,
    /// Where each field added out of place is, by name (seeded at random:
    /// the names are peers').
    out_of_place: Option<Box<ByName>>,
    deletes: Vec<RawHead>,
}

/// Where fields added out of place are in a row's list, by name.
type ByName = HashMap<Box<[u8]>, usize, foldhash::fast::RandomState>;

/// Fields a new row has room for before its field list grows.
const NEW_FIELDS: usize = 16;
/// From this many fields, a new field that sorts before the last one is
/// added after them all and put in place when the row is next encoded, not
/// shifted into place: a bundle adding many fields in descending name
/// order would otherwise move the whole list once per field (about
/// 4·10^11 bytes for the 100,000 a bundle may hold).
const OUT_OF_PLACE_FROM: usize = 64;
/// Arena bytes a new row has room for (names and values of about ten
/// fields), and the room a loaded row gets beyond its stored bytes for the
/// values a batch adds: growing from nothing, a new contact's row was
/// copied to a larger buffer six or seven times as its fields went in.
const ARENA_ROOM: usize = 512;

impl RawRow {
    /// An empty row with room for a typical entity's fields.
    pub(crate) fn with_room() -> RawRow {
        RawRow {
            arena: Vec::with_capacity(ARENA_ROOM),
            fields: Vec::with_capacity(NEW_FIELDS),
            sorted: 0,
            out_of_place: None,
            deletes: Vec::new(),
        }
    }

    /// Whether the row carries nothing (then it is not stored).
    pub(crate) fn is_empty(&self) -> bool {
        self.fields.is_empty() && self.deletes.is_empty()
    }

    fn name(&self, i: usize) -> &[u8] {
        let (s, l, _) = self.fields[i];
        &self.arena[s as usize..(s + l) as usize]
    }

    /// A field's name (checked UTF-8 when the row was loaded or the field added).
    pub(crate) fn name_str(&self, i: usize) -> &str {
        std::str::from_utf8(self.name(i)).unwrap_or_default()
    }

    /// How many fields the row knows.
    pub(crate) fn field_count(&self) -> usize {
        self.fields.len()
    }

    /// Where a field is (`Err`: where it would go, for
    /// [`RawRow::insert_field`]).
    pub(crate) fn find(&self, name: &str) -> Result<usize, usize> {
        let name = name.as_bytes();
        let (mut lo, mut hi) = (0, self.sorted);
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.name(mid).cmp(name) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(mid),
            }
        }
        match self.out_of_place.as_ref().and_then(|o| o.get(name)) {
            Some(&i) => Ok(i),
            None => Err(lo),
        }
    }

    /// Puts the fields added out of place into name order (indices from
    /// before no longer hold).
    pub(crate) fn settle(&mut self) {
        if self.out_of_place.take().is_none() {
            return;
        }
        // The list is a run in name order, then the late fields: a stable
        // sort finds that run and merges the late ones into it.
        let arena = &self.arena;
        let name = |f: &(u32, u32, Heads)| &arena[f.0 as usize..(f.0 + f.1) as usize];
        self.fields.sort_by(|a, b| name(a).cmp(name(b)));
        self.sorted = self.fields.len();
    }

    /// The heads of the field at `i`.
    pub(crate) fn heads(&self, i: usize) -> &Heads {
        &self.fields[i].2
    }

    /// The heads of the field at `i`, for editing.
    pub(crate) fn heads_mut(&mut self, i: usize) -> &mut Heads {
        &mut self.fields[i].2
    }

    /// The live entity deletions.
    pub(crate) fn deletes(&self) -> &[RawHead] {
        &self.deletes
    }

    /// Adds a field that [`RawRow::find`] said would go at `i`; returns
    /// where it is. In a row of [`OUT_OF_PLACE_FROM`] fields or more, one
    /// that sorts before the last goes after them all until
    /// [`RawRow::settle`].
    pub(crate) fn insert_field(&mut self, i: usize, name: &str, heads: Heads) -> usize {
        let start = self.arena.len() as u32;
        self.arena.extend_from_slice(name.as_bytes());
        let field = (start, name.len() as u32, heads);
        let in_place = self.out_of_place.is_none()
            && (i == self.fields.len() || self.fields.len() < OUT_OF_PLACE_FROM);
        if in_place {
            self.fields.insert(i, field);
            self.sorted += 1;
            return i;
        }
        let at = self.fields.len();
        self.fields.push(field);
        self.out_of_place
            .get_or_insert_with(Box::default)
            .insert(name.as_bytes().into(), at);
        at
    }

    /// Replaces (or adds) a field's heads.
    pub(crate) fn put_field(&mut self, name: &str, heads: &[Head]) -> Result<(), DamagedRow> {
        let hs = heads
            .iter()
            .map(|h| self.raw_head(h))
            .collect::<Result<Vec<_>, _>>()?;
        let hs = Heads::from_vec(hs);
        match self.find(name) {
            Ok(i) => self.fields[i].2 = hs,
            Err(i) => {
                self.insert_field(i, name, hs);
            }
        }
        Ok(())
    }

    /// Replaces the live deletions.
    pub(crate) fn put_deletes(&mut self, heads: &[Head]) -> Result<(), DamagedRow> {
        self.deletes = heads
            .iter()
            .map(|h| self.raw_head(h))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(())
    }

    /// A head with `value` encoded into the arena.
    pub(crate) fn new_head(
        &mut self,
        op: OpId,
        hlc: Hlc,
        value: Option<&Value>,
    ) -> Result<RawHead, DamagedRow> {
        let value = match value {
            None => None,
            Some(v) => {
                let start = self.arena.len();
                // Most values fit a small buffer; postcard's growing writer
                // pushes byte by byte.
                let mut tmp = [0u8; 256];
                match postcard::to_slice(v, &mut tmp) {
                    Ok(b) => self.arena.extend_from_slice(b),
                    Err(_) => {
                        self.arena = postcard::to_extend(v, std::mem::take(&mut self.arena))
                            .map_err(|_| DamagedRow {
                                what: "entity state (encode)",
                            })?;
                    }
                }
                let len = self.arena.len() - start;
                if self.arena.len() > MAX_ROW {
                    return Err(DamagedRow {
                        what: "entity state (encode)",
                    });
                }
                Some((start as u32, len as u32))
            }
        };
        Ok(RawHead { op, hlc, value })
    }

    fn raw_head(&mut self, h: &Head) -> Result<RawHead, DamagedRow> {
        self.new_head(h.op, h.hlc, h.value.as_ref())
    }

    /// Decodes one head's value.
    fn head(&self, h: &RawHead) -> Result<Head, DamagedRow> {
        let value = match h.value {
            None => None,
            Some((s, l)) => {
                let b = self
                    .arena
                    .get(s as usize..(s as usize).saturating_add(l as usize))
                    .ok_or(DAMAGED)?;
                Some(postcard::from_bytes::<Value>(b).map_err(|_| DAMAGED)?)
            }
        };
        Ok(Head {
            op: h.op,
            hlc: h.hlc,
            value,
        })
    }

    /// Decoded copies of heads.
    pub(crate) fn to_heads(&self, hs: &[RawHead]) -> Result<Vec<Head>, DamagedRow> {
        hs.iter().map(|h| self.head(h)).collect()
    }

    /// The row decoded for reading (fields in name order).
    pub(crate) fn to_row(&self) -> Result<EntityRow, DamagedRow> {
        let mut fields = Vec::with_capacity(self.fields.len());
        for (i, (_, _, hs)) in self.fields.iter().enumerate() {
            let name = std::str::from_utf8(self.name(i)).map_err(|_| DAMAGED)?;
            fields.push((name.to_string(), self.to_heads(hs.as_slice())?));
        }
        if self.out_of_place.is_some() {
            fields.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        }
        Ok(EntityRow {
            fields,
            deletes: self.to_heads(&self.deletes)?,
        })
    }

    /// Decodes a stored row after checking its checksum.
    pub(crate) fn decode(key: &[u8], v: &[u8]) -> Result<RawRow, DamagedRow> {
        let at = v.len().checked_sub(8).ok_or(DAMAGED)?;
        let (body, tag) = v.split_at(at);
        if state_tag(key, body) != tag {
            return Err(DAMAGED);
        }
        let mut arena = Vec::with_capacity(body.len() + ARENA_ROOM);
        arena.extend_from_slice(body);
        RawRow::parse(arena).ok_or(DAMAGED)
    }

    /// Reads the stored form (without its checksum), which becomes the arena.
    fn parse(arena: Vec<u8>) -> Option<RawRow> {
        let mut r = Reader { b: &arena, at: 0 };
        let n = r.count(32)?;
        let mut authors = Vec::with_capacity(n);
        for _ in 0..n {
            authors.push(ActorId(r.take(32)?.try_into().ok()?));
        }
        let n = r.count(2)?;
        let mut fields = Vec::with_capacity(n);
        for _ in 0..n {
            let len = r.count(1)?;
            let start = r.at;
            std::str::from_utf8(r.take(len)?).ok()?;
            let heads = r.heads(&authors)?;
            fields.push((start as u32, len as u32, heads));
        }
        let deletes = r.heads(&authors)?.into_vec();
        if r.at != arena.len() {
            return None;
        }
        Some(RawRow {
            arena,
            sorted: fields.len(),
            fields,
            out_of_place: None,
            deletes,
        })
    }

    /// Encodes the row for `key` with its checksum into `buf` (cleared
    /// first), returning the stored bytes.
    pub(crate) fn encode_into<'b>(
        &mut self,
        key: &[u8],
        buf: &'b mut Vec<u8>,
    ) -> Result<&'b [u8], DamagedRow> {
        self.settle();
        buf.clear();
        let mut authors = Authors::default();
        let all = self.fields.iter().flat_map(|(_, _, h)| h.as_slice());
        for h in all.chain(&self.deletes) {
            authors.add(h.op.author);
        }
        put_varint(buf, authors.list.len() as u64);
        for a in &authors.list {
            buf.extend_from_slice(&a.0);
        }
        put_varint(buf, self.fields.len() as u64);
        for (i, (_, _, hs)) in self.fields.iter().enumerate() {
            let name = self.name(i);
            put_varint(buf, name.len() as u64);
            buf.extend_from_slice(name);
            self.put_heads(buf, &authors, hs.as_slice())?;
        }
        self.put_heads(buf, &authors, &self.deletes)?;
        if buf.len() > MAX_ROW {
            return Err(DamagedRow {
                what: "entity state (encode)",
            });
        }
        let tag = state_tag(key, buf);
        buf.extend_from_slice(&tag);
        Ok(buf.as_slice())
    }

    fn put_heads(
        &self,
        buf: &mut Vec<u8>,
        authors: &Authors,
        heads: &[RawHead],
    ) -> Result<(), DamagedRow> {
        put_varint(buf, heads.len() as u64);
        for h in heads {
            let pos = authors.position(&h.op.author);
            put_varint(buf, pos as u64);
            put_varint(buf, h.op.seq);
            put_varint(buf, u64::from(h.op.index));
            put_varint(buf, h.hlc.wall_ms);
            put_varint(buf, u64::from(h.hlc.counter));
            match h.value {
                None => buf.push(0),
                Some((s, l)) => {
                    let v = self
                        .arena
                        .get(s as usize..(s as usize).saturating_add(l as usize))
                        .ok_or(DAMAGED)?;
                    put_varint(buf, u64::from(l) + 1);
                    buf.extend_from_slice(v);
                }
            }
        }
        Ok(())
    }

    /// Drops the bytes of replaced values once they dominate a large arena
    /// (a long replay editing one entity many times).
    pub(crate) fn compact_if_bloated(&mut self) -> Result<(), DamagedRow> {
        if self.arena.len() <= ARENA_COMPACT {
            return Ok(());
        }
        let mut buf = Vec::new();
        self.encode_into(&[], &mut buf)?;
        buf.truncate(buf.len().saturating_sub(8));
        if buf.len() * 2 < self.arena.len() {
            *self = RawRow::parse(buf).ok_or(DAMAGED)?;
        }
        Ok(())
    }
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Reads the stored form; `None` when it is malformed.
struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = *self.b.get(self.at + i)?;
            v |= u64::from(b & 0x7f).checked_shl(7 * i as u32)?;
            if b & 0x80 == 0 {
                self.at += i + 1;
                return Some(v);
            }
        }
        None
    }

    fn u32(&mut self) -> Option<u32> {
        u32::try_from(self.varint()?).ok()
    }

    /// A count of items each at least `min` bytes long (bounds what a
    /// damaged count could make us allocate).
    fn count(&mut self, min: usize) -> Option<usize> {
        let n = usize::try_from(self.varint()?).ok()?;
        (n.saturating_mul(min) <= self.b.len() - self.at).then_some(n)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.b.get(self.at..end)?;
        self.at = end;
        Some(s)
    }

    /// A list of heads; one head (the usual case) is read without an
    /// allocation.
    fn heads(&mut self, authors: &[ActorId]) -> Option<Heads> {
        let n = self.count(6)?;
        let mut last: Option<OpId> = None;
        match n {
            0 => Some(Heads::Zero),
            1 => Some(Heads::One(self.head(authors, &mut last)?)),
            _ => {
                let mut out = Vec::with_capacity(n);
                for _ in 0..n {
                    out.push(self.head(authors, &mut last)?);
                }
                Some(Heads::Many(out))
            }
        }
    }

    /// One head, which must sort after `last` (heads are stored in op
    /// order; anything else is damage).
    fn head(&mut self, authors: &[ActorId], last: &mut Option<OpId>) -> Option<RawHead> {
        let author = *authors.get(usize::try_from(self.varint()?).ok()?)?;
        let seq = self.varint()?;
        let index = self.u32()?;
        let wall_ms = self.varint()?;
        let counter = self.u32()?;
        let value = match self.varint()? {
            0 => None,
            n => {
                let len = usize::try_from(n - 1).ok()?;
                let start = self.at;
                self.take(len)?;
                Some((u32::try_from(start).ok()?, u32::try_from(len).ok()?))
            }
        };
        let op = OpId { author, seq, index };
        if last.is_some_and(|l| l >= op) {
            return None;
        }
        *last = Some(op);
        Some(RawHead {
            op,
            hlc: Hlc { wall_ms, counter },
            value,
        })
    }
}

/// The `entities` key of a field's entity.
pub(crate) fn entity_key_of(ws: &WorkspaceId, p: &FieldPath) -> Vec<u8> {
    crate::schema::entity_prefix(ws, &p.entity_type, &p.entity_id)
}

/// Expands a stored row into (path, heads) pairs, in field order.
pub(crate) fn row_fields(key: &[u8], v: &[u8]) -> Result<Vec<(FieldPath, Vec<Head>)>, DamagedRow> {
    let row = EntityRow::decode(key, v)?;
    let (ty, id) = parse_entity_key(key).ok_or(DamagedRow { what: "entity key" })?;
    Ok(row
        .fields
        .into_iter()
        .map(|(field, heads)| (path(&ty, &id, &field), heads))
        .collect())
}

/// A field path from parts already validated (a checked key, a sealed row).
pub(crate) fn path(ty: &str, id: &EntityId, field: &str) -> FieldPath {
    FieldPath {
        entity_type: ty.into(),
        entity_id: id.clone(),
        field: field.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(author: u8, seq: u64, value: Option<&str>) -> Head {
        Head {
            op: OpId {
                author: ActorId([author; 32]),
                seq,
                index: 0,
            },
            hlc: Hlc {
                wall_ms: 1_000 + seq,
                counter: 0,
            },
            value: value.map(|v| Value::Text(v.into())),
        }
    }

    proptest::proptest! {
        /// However many fields come, in whatever order (a bundle may add
        /// thousands in descending order, past the point where new ones
        /// wait out of place), every field is found where it was put while
        /// the row is edited, and the row reads back in name order.
        #[test]
        fn fields_added_in_any_order_are_found_and_stored_in_name_order(
            names in proptest::collection::vec(0u16..400, 0..300),
            sets in proptest::collection::vec((0u16..400, 1u64..50), 0..60),
        ) {
            let key = b"entity".as_slice();
            let mut row = RawRow::with_room();
            let mut model = std::collections::BTreeMap::new();
            for (step, n) in names.iter().chain(sets.iter().map(|(n, _)| n)).enumerate() {
                let name = format!("f{n}");
                let h = head(1, step as u64 + 1, Some(&name));
                let i = match row.find(&name) {
                    Ok(i) => i,
                    Err(i) => row.insert_field(i, &name, Heads::Zero),
                };
                let raw = row.new_head(h.op, h.hlc, h.value.as_ref()).unwrap();
                *row.heads_mut(i) = Heads::One(raw);
                model.insert(name, vec![h]);
                for (name, heads) in &model {
                    let i = row.find(name).unwrap();
                    proptest::prop_assert_eq!(&row.to_heads(row.heads(i).as_slice()).unwrap(), heads);
                }
            }
            let mut buf = Vec::new();
            let stored = row.encode_into(key, &mut buf).unwrap().to_vec();
            let back = EntityRow::decode(key, &stored).unwrap();
            proptest::prop_assert_eq!(back.fields, model.into_iter().collect::<Vec<_>>());
        }
    }

    /// A row whose heads name more authors than are looked up in place
    /// (concurrent edits from many devices, and deletions) reads back as
    /// written, each head with its own author.
    #[test]
    fn a_row_of_many_authors_reads_back_as_written() {
        let key = b"some entity key".as_slice();
        let mut row = RawRow::with_room();
        let mut written = Vec::new();
        for f in 0..3u8 {
            let mut heads: Vec<Head> = (0..40u8)
                .map(|a| {
                    head(
                        a.wrapping_mul(7).wrapping_add(f),
                        u64::from(a) + 1,
                        Some("v"),
                    )
                })
                .collect();
            // Heads are kept in op order.
            heads.sort_by_key(|h| h.op);
            let name = format!("field{f}");
            row.put_field(&name, &heads).unwrap();
            written.push((name, heads));
        }
        let deletes: Vec<Head> = (200..230u8).map(|a| head(a, 9, None)).collect();
        row.put_deletes(&deletes).unwrap();
        let mut buf = Vec::new();
        let stored = row.encode_into(key, &mut buf).unwrap().to_vec();
        let back = EntityRow::decode(key, &stored).unwrap();
        assert_eq!(back.fields, written);
        assert_eq!(back.deletes, deletes);
    }
}
