//! One materialised state row per entity: the heads of every known field and
//! the entity's live deletions, sealed with a checksum over key and value.
//!
//! One row per entity (instead of one per field) means a bundle that edits
//! ten fields of a cue reads and writes one row, and deleting an entity
//! touches one row. Fields are kept sorted by name, so the row (and the
//! order [`crate::Store::fields`] reports) is a pure function of the state:
//! rebuilt and materialised rows compare byte for byte.

use serde::{Deserialize, Serialize};
use troupe_protocol::register::Head;
use troupe_protocol::{EntityId, FieldPath, WorkspaceId};

use crate::error::DamagedRow;
use crate::schema::{parse_entity_key, row_tag, unseal};

/// Refuse to encode an entity row beyond this (redb's value limit is far
/// higher; a row this large means a runaway conflict set).
const MAX_ROW: usize = 1 << 30;

/// The state of one entity.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
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
        let body = unseal(key, v).ok_or(DamagedRow {
            what: "entity state",
        })?;
        postcard::from_bytes(body).map_err(|_| DamagedRow {
            what: "entity state",
        })
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
            let r = postcard::to_slice(self, buf.as_mut_slice()).map(|b| b.len());
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
