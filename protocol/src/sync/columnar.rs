//! Column-wise layout of a batch's bundles, before compression.
//!
//! Goal: fewer bytes on the wire for the same bundles. Laid out one bundle
//! after another, a batch interleaves unlike data (hashes, clocks, names,
//! phone numbers), and zstd's window sees each kind only in short stretches.
//! Here every kind of field goes into its own column — authors as indexes
//! into a table, seqs and clock times as deltas, entity types, ids, field
//! names, and values grouped by their op's position (so all the names of a
//! batch of contacts sit together, then all the phone numbers) — and the
//! columns are compressed as one buffer. On the contact workload this takes a
//! full sync of 1M field writes from 8.6 MiB to about 4 MiB.
//!
//! Non-goals: a new bundle format. The bytes a receiver rebuilds are the
//! canonical encoding of the body, byte for byte what the sender holds, so
//! hashes and signatures verify unchanged; an item whose bytes are not
//! canonical (or belong to another workspace) travels whole in the raw column.
//!
//! Safety: everything is untrusted. Counts are capped before allocation
//! ([`MAX_BATCH_BUNDLES`], [`MAX_OPS_PER_BUNDLE`]), every read is bounds-checked,
//! and the rebuilt bytes are capped in total ([`MAX_BATCH_PLAIN`]) and per
//! item ([`MAX_BUNDLE_BYTES`]). The receiver still decodes and verifies every
//! rebuilt bundle as usual; a wrong rebuild fails its hash or signature.

use super::column_body::{self, Head, OpPieces, Pieces, Str};
use super::limits::{MAX_BATCH_BUNDLES, MAX_BATCH_PLAIN};
use super::message::restore_prev_hash;
use crate::bundle::{Bundle, BundleBody};
use crate::error::{DecodeError, VerifyError};
use crate::ids::{ActorId, BundleHash, WorkspaceId};
use crate::limits::{MAX_BUNDLE_BYTES, MAX_OPS_PER_BUNDLE, MAX_PRED};

/// Values are grouped by their op's position in the bundle, up to this many groups.
const VALUE_COLUMNS: usize = 16;
/// Most authors one batch can name (its bundles come from this many authors at most).
const MAX_AUTHORS: usize = MAX_BATCH_BUNDLES;

const ELIDED: u8 = 1;
const SIGNED: u8 = 2;
const RAW: u8 = 4;
const HAS_PREV: u8 = 8;

const OP_SET: u8 = 0;
const OP_OTHER: u8 = 1;

/// Column indexes, in the order the columns follow the header on the wire.
const FLAGS: usize = 0;
const RAW_COL: usize = 1;
const AUTHOR: usize = 2;
const SEQ: usize = 3;
const PREV: usize = 4;
const HLC: usize = 5;
const META: usize = 6;
const SIG: usize = 7;
const OPS: usize = 8;
const OTHER: usize = 9;
const ETYPE: usize = 10;
const EID: usize = 11;
const FIELD: usize = 12;
const PRED: usize = 13;
const VALUES: usize = 14;
/// Columns in all: the fixed ones, then one per value group.
const N_COLUMNS: usize = VALUES + VALUE_COLUMNS;

/// The columns of one batch being laid out.
struct Columns {
    col: [Vec<u8>; N_COLUMNS],
}

impl Default for Columns {
    fn default() -> Self {
        Columns {
            col: std::array::from_fn(|_| Vec::new()),
        }
    }
}

impl Columns {
    /// Every column's length, to undo a partly laid out item.
    fn lengths(&self) -> [usize; N_COLUMNS] {
        std::array::from_fn(|i| self.col[i].len())
    }

    fn truncate(&mut self, lengths: &[usize; N_COLUMNS]) {
        for (c, n) in self.col.iter_mut().zip(lengths) {
            c.truncate(*n);
        }
    }
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(d: i64) -> u64 {
    ((d << 1) ^ (d >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// `piece` behind its length (so the receiver copies it without parsing).
fn put_piece(out: &mut Vec<u8>, piece: &[u8]) {
    put_varint(out, piece.len() as u64);
    out.extend_from_slice(piece);
}

/// What [`split`] carries from one item to the next.
struct Layout {
    ws: Option<WorkspaceId>,
    authors: Vec<ActorId>,
    last_seq: u64,
    last_wall: u64,
}

/// Cuts one item's bytes into the columns, reading the canonical encoding
/// of the body field by field without decoding it (no allocation, no
/// re-encoding). Every piece is a contiguous slice of `bytes`, in the order
/// [`decode`] puts them back, so the rebuilt item is `bytes` exactly; the
/// few fields `decode` re-encodes (seq, clock time, op count, option and
/// op tags) must be in their one canonical form. Anything else (another
/// workspace, an unknown tag, a non-canonical number, bytes left over, a
/// cap exceeded) is an error, and the caller sends the item raw.
fn split(
    c: &mut Columns,
    lay: &mut Layout,
    ws: &WorkspaceId,
    elided: bool,
    bytes: &[u8],
) -> Result<(), DecodeError> {
    if bytes.len() > MAX_BUNDLE_BYTES {
        return Err(bad("bundle too large"));
    }
    let mut r = Reader { data: bytes };
    let mut flags = 0;
    match r.byte()? {
        0 => {}
        1 => {
            flags |= SIGNED;
            c.col[SIG].extend_from_slice(r.bytes(64)?);
        }
        _ => return Err(bad("unknown bundle flag")),
    }
    if r.bytes(32)? != ws.0.as_slice() {
        return Err(bad("another workspace"));
    }
    let author = ActorId(r.array()?);
    let seq = r.canonical_varint()?;
    match (elided, r.byte()?) {
        (true, 1) => flags |= ELIDED,
        (false, 0) => {}
        (false, 1) => {
            flags |= HAS_PREV;
            c.col[PREV].extend_from_slice(r.bytes(32)?);
        }
        _ => return Err(bad("prev_hash tag")),
    }
    let wall = r.canonical_varint()?;
    put_varint(
        &mut c.col[HLC],
        zigzag(wall.wrapping_sub(lay.last_wall) as i64),
    );
    c.col[HLC].extend_from_slice(r.varint_piece()?);
    put_piece(&mut c.col[META], r.kind_piece()?);
    c.col[META].extend_from_slice(r.str_piece()?);
    let n_ops = r.canonical_varint()?;
    if n_ops > MAX_OPS_PER_BUNDLE as u64 {
        return Err(bad("too many ops in one bundle"));
    }
    put_varint(&mut c.col[OPS], n_ops);
    for i in 0..n_ops as usize {
        let start = r.data;
        match r.byte()? {
            0 => {
                c.col[OPS].push(OP_SET);
                c.col[ETYPE].extend_from_slice(r.str_piece()?);
                c.col[EID].extend_from_slice(r.str_piece()?);
                c.col[FIELD].extend_from_slice(r.str_piece()?);
                put_piece(
                    &mut c.col[VALUES + i.min(VALUE_COLUMNS - 1)],
                    r.value_piece()?,
                );
                c.col[PRED].extend_from_slice(r.pred_piece()?);
            }
            tag @ (1 | 2) => {
                if tag == 1 {
                    // DeleteEntity: entity type, entity id, pred.
                    r.str_piece()?;
                    r.str_piece()?;
                    r.pred_piece()?;
                } else {
                    // DeleteAsset: blob hash, reason.
                    r.bytes(32)?;
                    r.str_piece()?;
                }
                c.col[OPS].push(OP_OTHER);
                put_piece(&mut c.col[OTHER], r.consumed_since(start));
            }
            _ => return Err(bad("unknown op tag")),
        }
    }
    if !r.data.is_empty() {
        return Err(bad("bytes after the ops"));
    }
    c.col[FLAGS].push(flags);
    let idx = match lay.authors.iter().position(|a| *a == author) {
        Some(i) => i,
        None => {
            lay.authors.push(author);
            lay.authors.len() - 1
        }
    };
    put_varint(&mut c.col[AUTHOR], idx as u64);
    put_varint(
        &mut c.col[SEQ],
        zigzag(seq.wrapping_sub(lay.last_seq) as i64),
    );
    lay.last_seq = seq;
    lay.last_wall = wall;
    Ok(())
}

/// Lays out `items` (elided flag, bundle bytes as [`super::message::BatchCodec`]
/// takes them) column-wise. The workspace is the batch's (from its first
/// structured item; items of another workspace travel raw).
pub(crate) fn encode(items: &[(bool, &[u8])]) -> Vec<u8> {
    let mut c = Columns::default();
    let mut lay = Layout {
        ws: None,
        authors: Vec::new(),
        last_seq: 0,
        last_wall: 0,
    };
    for &(elided, bytes) in items {
        let guess = lay.ws.unwrap_or_else(|| {
            // The workspace sits right after the signature flag (and signature).
            let at = if bytes.first() == Some(&1) { 65 } else { 1 };
            bytes
                .get(at..at + 32)
                .and_then(|s| s.try_into().ok())
                .map_or(WorkspaceId([0; 32]), WorkspaceId)
        });
        let before = c.lengths();
        if split(&mut c, &mut lay, &guess, elided, bytes).is_ok() {
            lay.ws = Some(guess);
        } else {
            c.truncate(&before);
            c.col[FLAGS].push(RAW | if elided { ELIDED } else { 0 });
            put_piece(&mut c.col[RAW_COL], bytes);
        }
    }
    let body: usize = c.col.iter().map(|col| col.len() + 5).sum();
    let mut out = Vec::with_capacity(10 + 32 + 32 * lay.authors.len() + body);
    put_varint(&mut out, items.len() as u64);
    out.extend_from_slice(&lay.ws.unwrap_or(WorkspaceId([0; 32])).0);
    put_varint(&mut out, lay.authors.len() as u64);
    for a in &lay.authors {
        out.extend_from_slice(&a.0);
    }
    for col in &c.col {
        put_piece(&mut out, col);
    }
    out
}

/// A bounds-checked reader over one column (or, for [`split`], one item).
struct Reader<'a> {
    data: &'a [u8],
}

fn bad(what: &'static str) -> DecodeError {
    DecodeError::Invalid(what)
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&b, rest) = self.data.split_first().ok_or(bad("column ends early"))?;
            self.data = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(bad("varint too long"))
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.data.len() {
            return Err(bad("column ends early"));
        }
        let (a, b) = self.data.split_at(n);
        self.data = b;
        Ok(a)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N)?);
        Ok(a)
    }

    fn byte(&mut self) -> Result<u8, DecodeError> {
        Ok(self.bytes(1)?[0])
    }

    /// Copies one varint, as encoded, into `out`; returns it as encoded.
    fn copy_varint(&mut self, out: &mut Vec<u8>) -> Result<&'a [u8], DecodeError> {
        let piece = self.varint_piece()?;
        out.extend_from_slice(piece);
        Ok(piece)
    }

    /// Copies one encoded string (length, bytes) into `out`; returns it.
    fn copy_str(&mut self, out: &mut Vec<u8>) -> Result<Str<'a>, DecodeError> {
        let start = self.data;
        let n = usize::try_from(self.varint()?).map_err(|_| bad("string too long"))?;
        let len = self.consumed_since(start);
        let text = self.bytes(n)?;
        out.extend_from_slice(self.consumed_since(start));
        Ok(Str { len, text })
    }

    /// Copies one length-prefixed encoding (without its length) into `out`;
    /// returns the encoding.
    fn copy_sized(&mut self, out: &mut Vec<u8>) -> Result<&'a [u8], DecodeError> {
        let n = usize::try_from(self.varint()?).map_err(|_| bad("item too long"))?;
        let piece = self.bytes(n)?;
        out.extend_from_slice(piece);
        Ok(piece)
    }

    /// Copies one encoded `Vec<OpId>` into `out`; returns it as encoded.
    fn copy_pred(&mut self, out: &mut Vec<u8>) -> Result<&'a [u8], DecodeError> {
        let piece = self.pred_piece()?;
        out.extend_from_slice(piece);
        Ok(piece)
    }

    /// The bytes read since `start` (an earlier state of `self.data`).
    fn consumed_since(&self, start: &'a [u8]) -> &'a [u8] {
        &start[..start.len() - self.data.len()]
    }

    /// One varint, as encoded.
    fn varint_piece(&mut self) -> Result<&'a [u8], DecodeError> {
        let start = self.data;
        self.varint()?;
        Ok(self.consumed_since(start))
    }

    /// One varint that must be in its shortest form (the form
    /// [`put_varint`] writes), for fields the decoder re-encodes.
    fn canonical_varint(&mut self) -> Result<u64, DecodeError> {
        let start = self.data;
        let v = self.varint()?;
        let (mut again, mut n, mut rest) = ([0u8; 10], 0, v);
        while rest >= 0x80 {
            again[n] = (rest as u8) | 0x80;
            rest >>= 7;
            n += 1;
        }
        again[n] = rest as u8;
        if self.consumed_since(start) != &again[..=n] {
            return Err(bad("non-canonical varint"));
        }
        Ok(v)
    }

    /// One encoded string or byte string (length, bytes), as encoded.
    fn str_piece(&mut self) -> Result<&'a [u8], DecodeError> {
        let start = self.data;
        let n = usize::try_from(self.varint()?).map_err(|_| bad("string too long"))?;
        self.bytes(n)?;
        Ok(self.consumed_since(start))
    }

    /// One encoded `Vec<OpId>`, as encoded (the count capped as [`decode`] caps it).
    fn pred_piece(&mut self) -> Result<&'a [u8], DecodeError> {
        let start = self.data;
        let n = self.varint()?;
        if n > MAX_PRED as u64 {
            return Err(bad("too many preds"));
        }
        for _ in 0..n {
            self.bytes(32)?;
            self.varint()?;
            self.varint()?;
        }
        Ok(self.consumed_since(start))
    }

    /// One encoded [`crate::bundle::BundleKind`], as encoded.
    fn kind_piece(&mut self) -> Result<&'a [u8], DecodeError> {
        let start = self.data;
        match self.byte()? {
            0..=3 => {}
            // Undo and Redo name a bundle hash.
            4 | 5 => {
                self.bytes(32)?;
            }
            _ => return Err(bad("unknown bundle kind")),
        }
        Ok(self.consumed_since(start))
    }

    /// One encoded [`crate::value::Value`], as encoded.
    fn value_piece(&mut self) -> Result<&'a [u8], DecodeError> {
        let start = self.data;
        match self.byte()? {
            // Null
            0 => {}
            // Bool
            1 => {
                self.byte()?;
            }
            // Int (zigzag varint)
            2 => {
                self.varint()?;
            }
            // Float (8 bytes)
            3 => {
                self.bytes(8)?;
            }
            // Text, Bytes
            4 | 5 => {
                self.str_piece()?;
            }
            // Entity: type, id
            6 => {
                self.str_piece()?;
                self.str_piece()?;
            }
            // Asset: hash, name, size, media type
            7 => {
                self.bytes(32)?;
                self.str_piece()?;
                self.varint()?;
                self.str_piece()?;
            }
            _ => return Err(bad("unknown value tag")),
        }
        Ok(self.consumed_since(start))
    }

    fn column(&mut self) -> Result<Reader<'a>, DecodeError> {
        let n = usize::try_from(self.varint()?).map_err(|_| bad("column too long"))?;
        Ok(Reader {
            data: self.bytes(n)?,
        })
    }
}

fn count(r: &mut Reader<'_>, max: usize, what: &'static str) -> Result<usize, DecodeError> {
    let n = r.varint()?;
    if n > max as u64 {
        return Err(bad(what));
    }
    Ok(n as usize)
}

/// One item rebuilt from the columns, with its body when it could be built
/// straight from them (see [`super::column_body`]).
pub(crate) struct Rebuilt {
    /// Its `prev_hash` was left out: it names the item before.
    pub(crate) elided: bool,
    /// The item's bytes. An elided `prev_hash` of a structured item has its
    /// 32 bytes reserved (zero) at `prev_at`, to be filled in place.
    pub(crate) bytes: Vec<u8>,
    /// Where those reserved bytes start.
    pub(crate) prev_at: Option<usize>,
    /// The body, equal to what parsing `bytes` (with the hash filled in)
    /// gives; `None` when only the parser may say.
    pub(crate) body: Option<BundleBody>,
}

impl Rebuilt {
    /// An item that travelled whole: its bytes are parsed as they came.
    pub(crate) fn raw(elided: bool, bytes: Vec<u8>) -> Rebuilt {
        Rebuilt {
            elided,
            bytes,
            prev_at: None,
            body: None,
        }
    }

    /// The bytes as the sender cut them: an elided `prev_hash` left out.
    fn into_item(self) -> (bool, Vec<u8>) {
        let mut bytes = self.bytes;
        if let Some(at) = self.prev_at {
            bytes.drain(at..at + 32);
        }
        (self.elided, bytes)
    }

    /// The bundle, or why it is not one and its bytes. `prev` is the hash
    /// of the item before, which an elided `prev_hash` names; without it
    /// the bytes are parsed as they came (and fail).
    pub(crate) fn into_bundle(
        self,
        prev: Option<&BundleHash>,
    ) -> Result<Bundle, (VerifyError, Vec<u8>)> {
        let Rebuilt {
            elided,
            mut bytes,
            prev_at,
            mut body,
        } = self;
        if elided {
            match (prev, prev_at) {
                (Some(p), Some(at)) => {
                    bytes[at..at + 32].copy_from_slice(&p.0);
                    if let Some(b) = &mut body {
                        b.prev_hash = Some(*p);
                    }
                }
                (None, Some(at)) => {
                    bytes.drain(at..at + 32);
                    body = None;
                }
                (Some(p), None) => {
                    if let Some(full) = restore_prev_hash(&bytes, p) {
                        bytes = full;
                    }
                }
                (None, None) => {}
            }
        }
        match body {
            Some(b) => Bundle::from_parsed(bytes, b),
            None => Bundle::decode_or_return(bytes),
        }
    }
}

/// Rebuilds the items from the column layout, as [`encode`] took them.
///
/// # Errors
/// [`DecodeError`] for anything malformed, over a cap, or left over.
pub(crate) fn decode(plain: &[u8]) -> Result<Vec<(bool, Vec<u8>)>, DecodeError> {
    Ok(decode_rebuilt(plain)?
        .into_iter()
        .map(Rebuilt::into_item)
        .collect())
}

/// As [`decode`], with each structured item's body built from its pieces.
///
/// # Errors
/// As [`decode`].
pub(crate) fn decode_rebuilt(plain: &[u8]) -> Result<Vec<Rebuilt>, DecodeError> {
    let mut head = Reader { data: plain };
    let n = count(&mut head, MAX_BATCH_BUNDLES, "too many bundles in a batch")?;
    let ws = WorkspaceId(head.array()?);
    let n_authors = count(&mut head, MAX_AUTHORS, "too many authors in a batch")?;
    let mut authors = Vec::with_capacity(n_authors);
    for _ in 0..n_authors {
        authors.push(ActorId(head.array()?));
    }
    let mut c = [(); 14 + VALUE_COLUMNS].map(|()| Reader { data: &[] });
    for col in &mut c {
        *col = head.column()?;
    }
    if !head.data.is_empty() {
        return Err(bad("trailing bytes after the columns"));
    }
    let [
        flags,
        raw,
        author,
        seq,
        prev,
        hlc,
        meta,
        sig,
        ops,
        other,
        etype,
        eid,
        field,
        pred,
        values @ ..,
    ] = &mut c;
    let (mut last_seq, mut last_wall) = (0u64, 0u64);
    let mut total = 0usize;
    let mut out = Vec::with_capacity(n);
    let mut op_pieces: Vec<OpPieces<'_>> = Vec::new();
    let mut names = column_body::Names::default();
    let mut size_hint = 256;
    for _ in 0..n {
        let f = flags.byte()?;
        let elided = f & ELIDED != 0;
        if f & RAW != 0 {
            let len = usize::try_from(raw.varint()?).map_err(|_| bad("item too long"))?;
            if len > MAX_BUNDLE_BYTES {
                return Err(bad("bundle too large"));
            }
            let item = raw.bytes(len)?.to_vec();
            total += item.len();
            if total > MAX_BATCH_PLAIN {
                return Err(bad("batch too large"));
            }
            out.push(Rebuilt::raw(elided, item));
            continue;
        }
        // Sized like the item before (a batch's items are alike), so the
        // bytes kept for the store are not twice their length.
        let mut item = Vec::with_capacity(size_hint);
        if f & SIGNED != 0 {
            item.push(1);
            item.extend_from_slice(sig.bytes(64)?);
        } else {
            item.push(0);
        }
        // The body, field by field in its canonical encoding (see `BundleBody`).
        item.extend_from_slice(&ws.0);
        let a = usize::try_from(author.varint()?).map_err(|_| bad("author index"))?;
        let author_id = *authors.get(a).ok_or(bad("author index out of range"))?;
        item.extend_from_slice(&author_id.0);
        last_seq = last_seq.wrapping_add(unzigzag(seq.varint()?) as u64);
        put_varint(&mut item, last_seq);
        let mut prev_at = None;
        let prev_hash = if elided {
            // Left out; the hash of the item before goes in these 32 bytes.
            item.push(1);
            prev_at = Some(item.len());
            item.extend_from_slice(&[0; 32]);
            Some(BundleHash([0; 32]))
        } else if f & HAS_PREV != 0 {
            item.push(1);
            let p = prev.array()?;
            item.extend_from_slice(&p);
            Some(BundleHash(p))
        } else {
            item.push(0);
            None
        };
        // The caps count the bytes as sent, without a reserved hash.
        let reserved = if prev_at.is_some() { 32 } else { 0 };
        last_wall = last_wall.wrapping_add(unzigzag(hlc.varint()?) as u64);
        put_varint(&mut item, last_wall);
        let pieces = Pieces {
            counter: hlc.copy_varint(&mut item)?,
            kind: meta.copy_sized(&mut item)?,
            summary: meta.copy_str(&mut item)?,
        };
        let n_ops = count(ops, MAX_OPS_PER_BUNDLE, "too many ops in one bundle")?;
        put_varint(&mut item, n_ops as u64);
        op_pieces.clear();
        for i in 0..n_ops {
            let op = match ops.byte()? {
                OP_SET => {
                    item.push(0);
                    OpPieces::Set {
                        etype: etype.copy_str(&mut item)?,
                        eid: eid.copy_str(&mut item)?,
                        field: field.copy_str(&mut item)?,
                        value: values[i.min(VALUE_COLUMNS - 1)].copy_sized(&mut item)?,
                        pred: pred.copy_pred(&mut item)?,
                    }
                }
                OP_OTHER => OpPieces::Other(other.copy_sized(&mut item)?),
                _ => return Err(bad("unknown op tag")),
            };
            op_pieces.push(op);
            if item.len() - reserved > MAX_BUNDLE_BYTES {
                return Err(bad("bundle too large"));
            }
        }
        if item.len() - reserved > MAX_BUNDLE_BYTES {
            return Err(bad("bundle too large"));
        }
        total += item.len() - reserved;
        if total > MAX_BATCH_PLAIN {
            return Err(bad("batch too large"));
        }
        let head = Head {
            workspace: ws,
            author: author_id,
            seq: last_seq,
            prev_hash,
            wall_ms: last_wall,
        };
        size_hint = (item.len() + 64).min(64 << 10);
        let body = column_body::body(head, &pieces, &op_pieces, &mut names);
        out.push(Rebuilt {
            elided,
            bytes: item,
            prev_at,
            body,
        });
    }
    let leftover = c.iter().any(|r| !r.data.is_empty());
    if leftover {
        return Err(bad("column bytes left over"));
    }
    Ok(out)
}

/// Checks that the bundles [`decode_rebuilt`] gives for `plain` are what
/// parsing every rebuilt item's bytes gives (the path before bodies were
/// built from the columns): the same bundles, the same errors with the same
/// bytes. Returns how many bodies were built from the columns. Panics on
/// any difference (tests and the `decode_columns` fuzz target).
#[cfg(any(fuzzing, test))]
pub(crate) fn check_built_bodies(plain: &[u8]) -> usize {
    let (Ok(rebuilt), Ok(items)) = (decode_rebuilt(plain), decode(plain)) else {
        assert!(decode_rebuilt(plain).is_err() && decode(plain).is_err());
        return 0;
    };
    let show = |r: Result<Bundle, (VerifyError, Vec<u8>)>| r.map_err(|(e, b)| (e.to_string(), b));
    let built = rebuilt.iter().filter(|r| r.body.is_some()).count();
    let (mut last_new, mut last_old): (Option<BundleHash>, Option<BundleHash>) = (None, None);
    for (r, (elided, bytes)) in rebuilt.into_iter().zip(items) {
        let new = r.into_bundle(last_new.as_ref());
        let bytes = match (elided, &last_old) {
            (true, Some(p)) => restore_prev_hash(&bytes, p).unwrap_or(bytes),
            _ => bytes,
        };
        let old = Bundle::decode_or_return(bytes);
        last_new = new.as_ref().ok().map(Bundle::hash);
        last_old = old.as_ref().ok().map(Bundle::hash);
        assert_eq!(show(new), show(old));
    }
    built
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use serde::Serialize;

    use super::*;
    use crate::bundle::BundleBody;
    use crate::ids::BundleHash;
    use crate::op::Op;
    use crate::sync::message::{BatchCodec, restore_prev_hash};
    use crate::testing::strategies::arb_body;

    /// The first encoder of this layout, kept as the reference the cutting
    /// one must match byte for byte: it decodes every item, keeps it only if
    /// it re-encodes to the same bytes, and writes the columns from the
    /// decoded fields.
    mod reference {
        use super::*;

        /// A placeholder `prev_hash` for items whose real one the receiver recomputes.
        const ZERO: BundleHash = BundleHash([0; 32]);

        fn put<T: Serialize>(out: &mut Vec<u8>, v: &T) {
            *out = postcard::to_extend(v, std::mem::take(out)).expect("encodes");
        }

        fn put_sized<T: Serialize>(out: &mut Vec<u8>, v: &T) {
            let mut scratch = Vec::new();
            put(&mut scratch, v);
            put_piece(out, &scratch);
        }

        fn parse(
            ws: &WorkspaceId,
            elided: bool,
            bytes: &[u8],
        ) -> Option<(Option<[u8; 64]>, BundleBody)> {
            let (sig, at) = match bytes.first()? {
                0 => (None, 1),
                1 if bytes.len() >= 65 => {
                    let mut s = [0u8; 64];
                    s.copy_from_slice(&bytes[1..65]);
                    (Some(s), 65)
                }
                _ => return None,
            };
            let full;
            let body_bytes = if elided {
                full = restore_prev_hash(bytes, &ZERO)?;
                &full[at..]
            } else {
                &bytes[at..]
            };
            let body: BundleBody = crate::encoding::decode(body_bytes, MAX_BUNDLE_BYTES).ok()?;
            let canonical = body.workspace == *ws && crate::encoding::encode(&body) == body_bytes;
            canonical.then_some((sig, body))
        }

        pub(super) fn encode(items: &[(bool, &[u8])]) -> Vec<u8> {
            let mut c = Columns::default();
            let mut authors: Vec<ActorId> = Vec::new();
            let mut ws: Option<WorkspaceId> = None;
            let (mut last_seq, mut last_wall) = (0u64, 0u64);
            for &(elided, bytes) in items {
                let guess = ws.unwrap_or_else(|| {
                    let at = if bytes.first() == Some(&1) { 65 } else { 1 };
                    bytes
                        .get(at..at + 32)
                        .and_then(|s| s.try_into().ok())
                        .map_or(WorkspaceId([0; 32]), WorkspaceId)
                });
                let Some((sig, body)) = parse(&guess, elided, bytes) else {
                    c.col[FLAGS].push(RAW | if elided { ELIDED } else { 0 });
                    put_piece(&mut c.col[RAW_COL], bytes);
                    continue;
                };
                ws = Some(guess);
                let mut flags = 0;
                if elided {
                    flags |= ELIDED;
                } else if let Some(p) = &body.prev_hash {
                    flags |= HAS_PREV;
                    c.col[PREV].extend_from_slice(&p.0);
                }
                if let Some(s) = sig {
                    flags |= SIGNED;
                    c.col[SIG].extend_from_slice(&s);
                }
                c.col[FLAGS].push(flags);
                let idx = match authors.iter().position(|a| *a == body.author) {
                    Some(i) => i,
                    None => {
                        authors.push(body.author);
                        authors.len() - 1
                    }
                };
                put_varint(&mut c.col[AUTHOR], idx as u64);
                put_varint(
                    &mut c.col[SEQ],
                    zigzag(body.seq.wrapping_sub(last_seq) as i64),
                );
                last_seq = body.seq;
                put_varint(
                    &mut c.col[HLC],
                    zigzag(body.hlc.wall_ms.wrapping_sub(last_wall) as i64),
                );
                last_wall = body.hlc.wall_ms;
                put_varint(&mut c.col[HLC], u64::from(body.hlc.counter));
                put_sized(&mut c.col[META], &body.kind);
                put(&mut c.col[META], &body.summary);
                put_varint(&mut c.col[OPS], body.ops.len() as u64);
                for (i, op) in body.ops.iter().enumerate() {
                    match op {
                        Op::Set { path, value, pred } => {
                            c.col[OPS].push(OP_SET);
                            put(&mut c.col[ETYPE], &path.entity_type);
                            put(&mut c.col[EID], &path.entity_id);
                            put(&mut c.col[FIELD], &path.field);
                            put(&mut c.col[PRED], pred);
                            put_sized(&mut c.col[VALUES + i.min(VALUE_COLUMNS - 1)], value);
                        }
                        other => {
                            c.col[OPS].push(OP_OTHER);
                            put_sized(&mut c.col[OTHER], other);
                        }
                    }
                }
            }
            let mut out = Vec::new();
            put_varint(&mut out, items.len() as u64);
            out.extend_from_slice(&ws.unwrap_or(WorkspaceId([0; 32])).0);
            put_varint(&mut out, authors.len() as u64);
            for a in &authors {
                out.extend_from_slice(&a.0);
            }
            for col in &c.col {
                put_piece(&mut out, col);
            }
            out
        }
    }

    fn ws() -> WorkspaceId {
        WorkspaceId([3; 32])
    }

    /// Bundle bytes for `body`, with a (not necessarily valid) signature or none.
    fn item(body: &BundleBody, sig: Option<[u8; 64]>) -> Vec<u8> {
        let mut out = match sig {
            Some(s) => {
                let mut v = vec![1];
                v.extend_from_slice(&s);
                v
            }
            None => vec![0],
        };
        out.extend_from_slice(&crate::encoding::encode(body));
        out
    }

    /// Batch items for generated bodies: (body, signed, elide its prev
    /// hash, signature byte) → (prev hash elided, item bytes).
    fn items_of(bodies: &[(BundleBody, bool, bool, u8)]) -> Vec<(bool, Vec<u8>)> {
        let mut items = Vec::new();
        for (body, signed, elide, s) in bodies {
            let bytes = item(body, signed.then_some([*s; 64]));
            let elided = *elide && body.prev_hash.is_some();
            let bytes = if elided {
                super::super::message::elide_prev_hash(&bytes, body.prev_hash.as_ref().unwrap())
                    .expect("has prev")
            } else {
                bytes
            };
            items.push((elided, bytes));
        }
        items
    }

    fn round_trip(items: &[(bool, Vec<u8>)]) -> Vec<(bool, Vec<u8>)> {
        let refs: Vec<(bool, &[u8])> = items.iter().map(|(e, b)| (*e, b.as_slice())).collect();
        decode(&encode(&refs)).expect("decodes")
    }

    proptest! {
        #[test]
        fn any_items_come_back_byte_for_byte(
            bodies in prop::collection::vec(
                (arb_body(ws(), ActorId([1; 32])), any::<bool>(), any::<bool>(), any::<u8>()),
                0..20,
            ),
            junk in prop::collection::vec(any::<u8>(), 0..80),
        ) {
            let mut items = items_of(&bodies);
            // Bytes that are no bundle at all travel raw.
            items.push((false, junk));
            prop_assert_eq!(round_trip(&items), items);
        }

        #[test]
        fn cutting_lays_out_what_decoding_laid_out(
            bodies in prop::collection::vec(
                (arb_body(ws(), ActorId([1; 32])), any::<bool>(), any::<bool>(), any::<u8>()),
                0..20,
            ),
            junk in prop::collection::vec(any::<u8>(), 0..80),
            junk_at in any::<prop::sample::Index>(),
            // A varint made over-long, a tag or a length changed: such items
            // must travel raw in both encoders, or come back exactly.
            damage in prop::option::of((any::<prop::sample::Index>(), any::<prop::sample::Index>(), any::<u8>())),
        ) {
            let mut items = items_of(&bodies);
            if let Some((which, at, byte)) = damage
                && !items.is_empty()
            {
                let it = &mut items[which.index(bodies.len())].1;
                let i = at.index(it.len());
                it[i] = byte;
            }
            items.insert(junk_at.index(items.len() + 1), (false, junk));
            let refs: Vec<(bool, &[u8])> = items.iter().map(|(e, b)| (*e, b.as_slice())).collect();
            let cut = encode(&refs);
            // Canonical items take the same columns as before; any item comes back exactly.
            if damage.is_none() {
                prop_assert_eq!(&cut, &reference::encode(&refs));
            }
            prop_assert_eq!(decode(&cut).expect("decodes"), items);
        }

        #[test]
        fn arbitrary_columns_never_panic(data in prop::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode(&data);
            check_built_bodies(&data);
        }

        /// Bodies built from the columns are the parser's, for any items
        /// and any damage to their columns (names, text, tags, lengths,
        /// varints): see `column_body`.
        #[test]
        fn bodies_built_from_columns_are_what_parsing_gives(
            bodies in prop::collection::vec(
                (arb_body(ws(), ActorId([1; 32])), any::<bool>(), any::<bool>(), any::<u8>()),
                1..12,
            ),
            damage in prop::collection::vec(
                (any::<prop::sample::Index>(), any::<u8>()), 0..4,
            ),
        ) {
            let items = items_of(&bodies);
            let refs: Vec<(bool, &[u8])> = items.iter().map(|(e, b)| (*e, b.as_slice())).collect();
            let mut plain = encode(&refs);
            let clean = damage.is_empty();
            for (at, byte) in damage {
                let i = at.index(plain.len());
                plain[i] = byte;
            }
            let built = check_built_bodies(&plain);
            if clean {
                // Canonical items of the batch's workspace all take the new path.
                prop_assert_eq!(built, items.len());
            }
        }
    }

    #[test]
    fn contacts_are_built_from_their_columns_not_parsed_again() {
        let (_, bundles) = crate::testing::chain(1, 64);
        let mut items: Vec<(bool, Vec<u8>)> = Vec::new();
        let mut prev: Option<BundleHash> = None;
        for b in &bundles {
            let copy = b.without_signature();
            let elided =
                prev.and_then(|p| super::super::message::elide_prev_hash(copy.bytes(), &p));
            items.push(match elided {
                Some(e) => (true, e),
                None => (false, copy.bytes().to_vec()),
            });
            prev = Some(b.hash());
        }
        let refs: Vec<(bool, &[u8])> = items.iter().map(|(e, b)| (*e, b.as_slice())).collect();
        let plain = encode(&refs);
        assert_eq!(check_built_bodies(&plain), bundles.len());
        let mut last = None;
        for (r, b) in decode_rebuilt(&plain)
            .expect("decodes")
            .into_iter()
            .zip(&bundles)
        {
            let got = r.into_bundle(last.as_ref()).expect("a bundle");
            assert_eq!(got.body(), b.body());
            assert_eq!(got.hash(), b.hash());
            last = Some(got.hash());
        }
    }

    #[test]
    fn bundles_of_another_workspace_or_non_canonical_bytes_travel_raw() {
        let mut b = BundleBody {
            workspace: ws(),
            author: ActorId([1; 32]),
            seq: 1,
            prev_hash: None,
            hlc: crate::hlc::Hlc {
                wall_ms: 5,
                counter: 0,
            },
            kind: crate::bundle::BundleKind::UserEdit,
            summary: "s".into(),
            ops: vec![],
        };
        let first = item(&b, None);
        b.workspace = WorkspaceId([4; 32]);
        let foreign = item(&b, None);
        // An over-long varint for seq: decodes, but is not the canonical encoding.
        let mut odd = first.clone();
        odd.splice(65..66, [0x81, 0x00]);
        let items = vec![(false, first), (false, foreign), (false, odd)];
        assert_eq!(round_trip(&items), items);
    }

    #[test]
    fn contacts_take_far_fewer_bytes_than_in_rows() {
        let (_, bundles) = crate::testing::chain(1, 256);
        let unsigned: Vec<_> = bundles
            .iter()
            .map(crate::bundle::Bundle::without_signature)
            .collect();
        let mut codec = BatchCodec::default();
        let items = || unsigned.iter().map(|b| (false, b.bytes()));
        let columns = codec.encode(items());
        let rows = codec.encode_rows(items());
        assert!(
            columns.len() * 10 < rows.len() * 8,
            "columns {} vs rows {}",
            columns.len(),
            rows.len()
        );
        let back = codec.decode(&columns).expect("decodes");
        assert!(
            back.iter()
                .zip(items())
                .all(|((e, b), (e2, b2))| *e == e2 && b == b2)
        );
        // The row layout is still understood.
        assert_eq!(codec.decode(&rows).expect("decodes"), back);
    }
}
