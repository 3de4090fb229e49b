//! One materialised state row per entity: the heads of every known field and
//! the entity's live deletions, sealed with a checksum over key and value.
//!
//! One row per entity (instead of one per field) means a bundle that edits
//! ten fields of a cue reads and writes one row, and deleting an entity
//! touches one row. Fields are kept sorted by name, so the row (and the
//! order [`crate::Store::fields`] reports) is a pure function of the state:
//! rebuilt and materialised rows compare byte for byte.
//!
//! Stored form: the distinct authors of the row's heads once, then each
//! head names its author by position (a row of ten fields with two heads
//! each is about half the size of one repeating the 32-byte author ids).

use serde::ser::SerializeTuple;
use serde::{Serialize, Serializer};
use troupe_protocol::hlc::Hlc;
use troupe_protocol::register::Head;
use troupe_protocol::{ActorId, EntityId, FieldPath, OpId, Value, WorkspaceId};

use crate::error::DamagedRow;
use crate::schema::{parse_entity_key, row_tag, unseal};

/// Refuse to encode an entity row beyond this (redb's value limit is far
/// higher; a row this large means a runaway conflict set).
const MAX_ROW: usize = 1 << 30;

/// The state of one entity.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct EntityRow {
    /// Every known field (a field stays known with no heads), sorted by name.
    pub(crate) fields: Vec<(String, Vec<Head>)>,
    /// Live entity deletions (not superseded at entity scope).
    pub(crate) deletes: Vec<Head>,
}

impl EntityRow {
    /// Whether the row carries nothing (then it is not stored).
    pub(crate) fn is_empty(&self) -> bool {
        self.fields.is_empty() && self.deletes.is_empty()
    }

    /// A field's heads, `None` when the field is unknown.
    pub(crate) fn field(&self, name: &str) -> Option<&Vec<Head>> {
        self.fields
            .binary_search_by(|(f, _)| f.as_str().cmp(name))
            .ok()
            .map(|i| &self.fields[i].1)
    }

    /// A field's heads for editing; an unknown field is added with `init`.
    pub(crate) fn field_mut(&mut self, name: &str, init: Option<Vec<Head>>) -> &mut Vec<Head> {
        let i = match self.fields.binary_search_by(|(f, _)| f.as_str().cmp(name)) {
            Ok(i) => i,
            Err(i) => {
                self.fields
                    .insert(i, (name.to_string(), init.unwrap_or_default()));
                i
            }
        };
        &mut self.fields[i].1
    }

    /// Replaces (or adds) a field's heads.
    pub(crate) fn put_field(&mut self, name: &str, heads: &[Head]) {
        match self.fields.binary_search_by(|(f, _)| f.as_str().cmp(name)) {
            Ok(i) => {
                let slot = &mut self.fields[i].1;
                slot.clear();
                slot.extend_from_slice(heads);
            }
            Err(i) => self.fields.insert(i, (name.to_string(), heads.to_vec())),
        }
    }

    /// Decodes a stored row after checking its seal.
    pub(crate) fn decode(key: &[u8], v: &[u8]) -> Result<EntityRow, DamagedRow> {
        let damaged = DamagedRow {
            what: "entity state",
        };
        let body = unseal(key, v).ok_or(damaged.clone())?;
        let (authors, fields, deletes): StoredRow =
            postcard::from_bytes(body).map_err(|_| damaged.clone())?;
        let head = |h: StoredHead| -> Result<Head, DamagedRow> {
            let (a, seq, index, hlc, value) = h;
            let author = *authors.get(a as usize).ok_or(damaged.clone())?;
            Ok(Head {
                op: OpId { author, seq, index },
                hlc,
                value,
            })
        };
        let mut row = EntityRow {
            fields: Vec::with_capacity(fields.len()),
            deletes: Vec::with_capacity(deletes.len()),
        };
        for (f, hs) in fields {
            let hs = hs.into_iter().map(head).collect::<Result<Vec<_>, _>>()?;
            row.fields.push((f, hs));
        }
        for h in deletes {
            row.deletes.push(head(h)?);
        }
        Ok(row)
    }

    /// Encodes and seals the row for `key` into `buf` (grown as needed),
    /// returning the stored bytes.
    pub(crate) fn encode_into<'b>(
        &self,
        key: &[u8],
        buf: &'b mut Vec<u8>,
    ) -> Result<&'b [u8], DamagedRow> {
        loop {
            let cap = buf.len();
            let r = postcard::to_slice(&Compact::new(self), buf.as_mut_slice()).map(|b| b.len());
            match r {
                Ok(n) => {
                    if buf.len() < n + 8 {
                        buf.resize(n + 8, 0);
                    }
                    let tag = row_tag(key, &buf[..n]);
                    buf[n..n + 8].copy_from_slice(&tag);
                    return Ok(&buf[..n + 8]);
                }
                Err(postcard::Error::SerializeBufferFull) if cap < MAX_ROW => {
                    let grown = (cap * 2).max(4096);
                    buf.resize(grown, 0);
                }
                Err(_) => {
                    return Err(DamagedRow {
                        what: "entity state (encode)",
                    });
                }
            }
        }
    }
}

/// A stored head: author position, seq, op index, hlc, value.
type StoredHead = (u32, u64, u32, Hlc, Option<Value>);
/// A stored row: authors, fields with their heads, deletions.
type StoredRow = (
    Vec<ActorId>,
    Vec<(String, Vec<StoredHead>)>,
    Vec<StoredHead>,
);

/// Serializes an [`EntityRow`] in the stored form without copying values.
struct Compact<'a> {
    row: &'a EntityRow,
    authors: Vec<ActorId>,
}

impl<'a> Compact<'a> {
    fn new(row: &'a EntityRow) -> Self {
        let mut authors: Vec<ActorId> = Vec::new();
        let all = row.fields.iter().flat_map(|(_, h)| h).chain(&row.deletes);
        for h in all {
            if !authors.contains(&h.op.author) {
                authors.push(h.op.author);
            }
        }
        Compact { row, authors }
    }

    fn pos(&self, a: &ActorId) -> u32 {
        self.authors.iter().position(|x| x == a).unwrap_or(0) as u32
    }
}

struct Heads<'a>(&'a Compact<'a>, &'a [Head]);

impl Serialize for Heads<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.1.iter().map(|h| {
            (
                self.0.pos(&h.op.author),
                h.op.seq,
                h.op.index,
                h.hlc,
                &h.value,
            )
        }))
    }
}

impl Serialize for Compact<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(3)?;
        t.serialize_element(&self.authors)?;
        t.serialize_element(&Fields(self))?;
        t.serialize_element(&Heads(self, &self.row.deletes))?;
        t.end()
    }
}

struct Fields<'a>(&'a Compact<'a>);

impl Serialize for Fields<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(
            self.0
                .row
                .fields
                .iter()
                .map(|(f, hs)| (f.as_str(), Heads(self.0, hs))),
        )
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
        .map(|(field, heads)| (path(&ty, &id, field), heads))
        .collect())
}

/// A field path from parts already validated (a checked key, a sealed row).
pub(crate) fn path(ty: &str, id: &EntityId, field: String) -> FieldPath {
    FieldPath {
        entity_type: ty.to_string(),
        entity_id: id.clone(),
        field,
    }
}
