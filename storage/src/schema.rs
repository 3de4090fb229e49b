//! Tables and key layouts. Every table maps bytes to bytes; keys are built
//! here so that prefix scans (per workspace, per author, per entity) work.
//!
//! | table | key | value |
//! |---|---|---|
//! | `meta` | name | schema version, counters, store id, last journal record held |
//! | `workspaces` | ws | postcard `WorkspaceInfo` |
//! | `bundles` | ws, author, seq | held copy with the sealed hash recorded for its slot (`held` module); older stores: the raw copy |
//! | `seq_hash` | ws, author, seq | sealed hash of the bundle applied at that slot, for slots whose copy is gone (quarantined, withdrawn by a fork) and older stores' copies |
//! | `ranges` | ws, author | sealed postcard seq ranges held |
//! | `tips` | ws, author | sealed: highest seq ever committed and its hash |
//! | `entities` | ws, type 0 id 0 | compact `EntityRow` (authors once, heads by author position, values length-prefixed; see the `entity` module) and its `state_tag`: every known field's heads and the live entity deletions, one row per entity |
//! | `superseded` | ws, op id (author, seq, index), scope tag, scope | empty; keyed by the superseded op so one prefix probe per bundle answers for all its ops |
//! | `asset_deletes` | ws, blob hash, op id | sealed postcard (hlc, reason) |
//! | `asset_refs` | blob hash, ws | sealed newest referencing op's wall clock (ms) |
//! | `quarantine` | id | postcard `QuarantineEntry` |
//! | `blob_meta` | blob hash | postcard `BlobMeta` |
//! | `blob_chunks` | `\0row`, row number, chunk index (older stores: blob hash, chunk index); `\0row` alone: next row number | zstd or raw chunk (complete) or plain piece (partial) |
//! | `forks` | ws, author, seq | sealed postcard list of the different bundle hashes seen for the slot |
//! | `skipped` | quarantine id | postcard record of an entry the user chose to drop (no bytes) |
//! | `peer_progress` | ws, peer id | postcard `PeerProgress` (display only; ranges are the checkpoint) |
//!
//! Bundles are found by slot only: stores of the same schema version
//! written before that kept a hash → slot index (`hash_index`, `hash_log`),
//! deleted when they are opened (see the `tip_repair` module).

use redb::TableDefinition;
use troupe_protocol::register::Scope;
use troupe_protocol::{ActorId, BundleHash, EntityId, FieldPath, OpId, WorkspaceId};

pub(crate) type Tbl = TableDefinition<'static, &'static [u8], &'static [u8]>;

/// Version 2: one state row per entity, superseded keyed by op, hash index
/// log; `seq_hash`, tips, hash index and asset rows sealed. Version 3:
/// entity rows checked by [`state_tag`] instead of a blake3 tag (later the
/// hash index was dropped; version 3 stores that have it lose it at open,
/// nothing else changes). Version 4: blob metadata may say its chunk
/// hashes are blake3 subtree hashes (see the `blob_hash` module), which a
/// version 3 build would take for damage; a version 3 store is read as it
/// is and marked 4 when opened ([`SCHEMA_UPGRADES_FROM`]). Version 5: a
/// `bundles` row carries its slot's hash ahead of the copy, and `seq_hash`
/// keeps rows only for slots without a copy (see the `held` module); a
/// version 4 build would take those rows for damage. Version 6: a new
/// `bundles` row also carries a checksum of its copy, so reads need not
/// hash it again (see the `held` module); a version 5 build would take
/// those rows for damage. Older rows still read.
pub(crate) const SCHEMA_VERSION: u32 = 6;
/// Older versions this build opens and upgrades in place (nothing is
/// rewritten: every older row still reads).
pub(crate) const SCHEMA_UPGRADES_FROM: &[u32] = &[3, 4, 5];

pub(crate) const META: Tbl = TableDefinition::new("meta");
pub(crate) const WORKSPACES: Tbl = TableDefinition::new("workspaces");
pub(crate) const BUNDLES: Tbl = TableDefinition::new("bundles");
pub(crate) const SEQ_HASH: Tbl = TableDefinition::new("seq_hash");
pub(crate) const RANGES: Tbl = TableDefinition::new("ranges");
pub(crate) const TIPS: Tbl = TableDefinition::new("tips");
pub(crate) const ENTITIES: Tbl = TableDefinition::new("entities");
pub(crate) const SUPERSEDED: Tbl = TableDefinition::new("superseded");
pub(crate) const ASSET_DELETES: Tbl = TableDefinition::new("asset_deletes");
pub(crate) const ASSET_REFS: Tbl = TableDefinition::new("asset_refs");
pub(crate) const QUARANTINE: Tbl = TableDefinition::new("quarantine");
pub(crate) const BLOB_META: Tbl = TableDefinition::new("blob_meta");
pub(crate) const BLOB_CHUNKS: Tbl = TableDefinition::new("blob_chunks");
pub(crate) const FORKS: Tbl = TableDefinition::new("forks");
pub(crate) const SKIPPED: Tbl = TableDefinition::new("skipped");
pub(crate) const PEER_PROGRESS: Tbl = TableDefinition::new("peer_progress");

/// `meta` key of the store's id (16 bytes), written once at creation.
pub(crate) const STORE_ID: &[u8] = b"store_id";
/// `meta` key of the number of the last journal record this state holds.
pub(crate) const JOURNAL_SEQ: &[u8] = b"journal_seq";

/// Tables holding materialised state (cleared and refilled by rebuild).
pub(crate) const STATE_TABLES: [Tbl; 4] = [ENTITIES, SUPERSEDED, ASSET_DELETES, ASSET_REFS];

pub(crate) const ALL_TABLES: [Tbl; 16] = [
    META,
    WORKSPACES,
    BUNDLES,
    SEQ_HASH,
    RANGES,
    TIPS,
    ENTITIES,
    SUPERSEDED,
    ASSET_DELETES,
    ASSET_REFS,
    QUARANTINE,
    BLOB_META,
    BLOB_CHUNKS,
    FORKS,
    SKIPPED,
    PEER_PROGRESS,
];

pub(crate) fn author_key(ws: &WorkspaceId, author: &ActorId) -> [u8; 64] {
    let mut k = [0u8; 64];
    k[..32].copy_from_slice(&ws.0);
    k[32..].copy_from_slice(&author.0);
    k
}

pub(crate) fn seq_key(ws: &WorkspaceId, author: &ActorId, seq: u64) -> [u8; 72] {
    let mut k = [0u8; 72];
    k[..32].copy_from_slice(&ws.0);
    k[32..64].copy_from_slice(&author.0);
    k[64..].copy_from_slice(&seq.to_be_bytes());
    k
}

pub(crate) fn parse_seq_key(k: &[u8]) -> Option<(WorkspaceId, ActorId, u64)> {
    if k.len() != 72 {
        return None;
    }
    Some((
        WorkspaceId(k[..32].try_into().ok()?),
        ActorId(k[32..64].try_into().ok()?),
        u64::from_be_bytes(k[64..].try_into().ok()?),
    ))
}

/// Whether two `bundles` keys are one author's consecutive seqs in one
/// workspace (no key can sort between them).
pub(crate) fn consecutive_slots(a: &[u8], b: &[u8]) -> bool {
    match (parse_seq_key(a), parse_seq_key(b)) {
        (Some((wa, aa, x)), Some((wb, ab, y))) => {
            wa == wb && aa == ab && x.checked_add(1) == Some(y)
        }
        _ => false,
    }
}

pub(crate) fn entity_prefix(ws: &WorkspaceId, ty: &str, id: &EntityId) -> Vec<u8> {
    let mut k = Vec::with_capacity(32 + ty.len() + id.as_str().len() + 2);
    push_entity_prefix(&mut k, ws, ty, id);
    k
}

/// Appends an `entities` key to `k` (a reused buffer).
pub(crate) fn push_entity_prefix(k: &mut Vec<u8>, ws: &WorkspaceId, ty: &str, id: &EntityId) {
    k.extend_from_slice(&ws.0);
    k.extend_from_slice(ty.as_bytes());
    k.push(0);
    k.extend_from_slice(id.as_str().as_bytes());
    k.push(0);
}

/// Decodes the type and id of an `entities` key (after the 32-byte
/// workspace); the key ends with the separator after the id.
pub(crate) fn parse_entity_key(k: &[u8]) -> Option<(String, EntityId)> {
    let rest = std::str::from_utf8(k.get(32..)?).ok()?;
    let rest = rest.strip_suffix('\0')?;
    let (t, i) = rest.split_once('\0')?;
    // Validate through the path rules (a dummy field name).
    let p = FieldPath::new(t, i, "f").ok()?;
    Some((p.entity_type.into_string(), p.entity_id))
}

fn push_op(k: &mut Vec<u8>, op: &OpId) {
    k.extend_from_slice(&op.author.0);
    k.extend_from_slice(&op.seq.to_be_bytes());
    k.extend_from_slice(&op.index.to_be_bytes());
}

/// Prefix of every `superseded` row naming an op of the bundle at
/// (ws, author, seq): one probe tells whether any op of the bundle is
/// superseded anywhere.
pub(crate) fn superseded_bundle_prefix(ws: &WorkspaceId, author: &ActorId, seq: u64) -> [u8; 72] {
    seq_key(ws, author, seq)
}

/// `superseded` key: the superseded op first (so a bundle's rows share a
/// prefix), then the scope it is superseded in.
pub(crate) fn superseded_key(ws: &WorkspaceId, scope: Scope<'_>, op: &OpId) -> Vec<u8> {
    let mut k = Vec::with_capacity(128);
    k.extend_from_slice(&ws.0);
    push_op(&mut k, op);
    match scope {
        Scope::Field(p) => {
            k.push(0);
            k.extend_from_slice(p.entity_type.as_bytes());
            k.push(0);
            k.extend_from_slice(p.entity_id.as_str().as_bytes());
            k.push(0);
            k.extend_from_slice(p.field.as_bytes());
        }
        Scope::Entity(t, id) => {
            k.push(1);
            k.extend_from_slice(t.as_bytes());
            k.push(0);
            k.extend_from_slice(id.as_str().as_bytes());
            k.push(0);
        }
    }
    k
}

pub(crate) fn asset_delete_key(ws: &WorkspaceId, hash: &[u8; 32], op: &OpId) -> Vec<u8> {
    let mut k = Vec::with_capacity(108);
    k.extend_from_slice(&ws.0);
    k.extend_from_slice(hash);
    push_op(&mut k, op);
    k
}

pub(crate) fn row_tag(key: &[u8], body: &[u8]) -> [u8; 8] {
    let mut h = blake3::Hasher::new();
    h.update(&(key.len() as u32).to_be_bytes());
    h.update(key);
    h.update(body);
    let mut t = [0u8; 8];
    t.copy_from_slice(&h.finalize().as_bytes()[..8]);
    t
}

/// One step of the multiply-fold checksums: the 128-bit product of `a` and
/// `b`, its halves xored.
pub(crate) fn fold(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    (r as u64) ^ ((r >> 64) as u64)
}

/// The checksum of an `entities` row over its key and value: a 64-bit
/// multiply-fold hash. It guards against damage at rest (a flipped bit, a
/// torn page, a row under another key), not against an attacker: what
/// peers send is checked by bundle hashes and signatures, and state can be
/// rebuilt from those. A blake3 tag cost about 10 times as much on the
/// ~300-byte rows every apply decodes and encodes.
pub(crate) fn state_tag(key: &[u8], body: &[u8]) -> [u8; 8] {
    const K0: u64 = 0xa076_1d64_78bd_642f;
    const K1: u64 = 0xe703_7ed1_a0b4_28db;
    let mut h = K0 ^ (key.len() as u64).rotate_left(40) ^ body.len() as u64;
    for part in [key, body] {
        let mut words = part.chunks_exact(8);
        for w in &mut words {
            h = fold(h ^ le_word(w), K1);
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            h = fold(h ^ le_word(rest), K1);
        }
    }
    fold(h ^ K1, K0 ^ h.rotate_left(29)).to_le_bytes()
}

/// A little-endian word of up to 8 bytes, zeros after a short one: what the
/// multiply-fold checksums take in at each step.
pub(crate) fn le_word(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w[..b.len()].copy_from_slice(b);
    u64::from_le_bytes(w)
}

/// A sealed `seq_hash` value: the hash of the bundle applied at the slot.
pub(crate) fn seq_hash_value(key: &[u8], h: &BundleHash) -> Vec<u8> {
    seal(key, h.0.to_vec())
}

/// The hash recorded at a slot; `None` when the row fails its seal (then
/// the slot counts as unrecorded: its copy cannot be trusted, and a clean
/// copy verified through its chain records it again).
pub(crate) fn read_seq_hash(key: &[u8], v: &[u8]) -> Option<BundleHash> {
    unseal(key, v)?.try_into().ok().map(BundleHash)
}

/// Appends a checksum over key and value, so a damaged state row (redb does
/// not check page checksums on reads) is detected instead of read as a wrong
/// value, and a row that moved to another key fails too.
pub(crate) fn seal(key: &[u8], mut body: Vec<u8>) -> Vec<u8> {
    let t = row_tag(key, &body);
    body.extend_from_slice(&t);
    body
}

/// The value of a sealed row, or `None` when its checksum fails.
pub(crate) fn unseal<'a>(key: &[u8], v: &'a [u8]) -> Option<&'a [u8]> {
    let at = v.len().checked_sub(8)?;
    let (body, t) = v.split_at(at);
    (row_tag(key, body) == t).then_some(body)
}

/// Every row of a byte table, owned, in key order (tests compare tables).
#[cfg(test)]
pub(crate) fn owned_rows(
    t: &impl redb::ReadableTable<&'static [u8], &'static [u8]>,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    t.iter()
        .unwrap()
        .map(|r| {
            let (k, v) = r.unwrap();
            (k.value().to_vec(), v.value().to_vec())
        })
        .collect()
}
