//! Blobs: content-addressed by blake3 of the plain bytes, stored as zstd
//! chunks of 1 MiB (raw, with a tag, when a chunk does not compress:
//! photos, recordings), deduplicated, immutable, verified on every read.
//! Each chunk's stored hash is its subtree's in the blob's blake3 tree, so
//! the chunk hashes give the blob's and every byte is hashed once (see the
//! `blob_hash` module).
//! A row longer than 1 MiB less 4 KiB is kept in two rows, so it fits redb's
//! power-of-two runs of pages without taking twice its size.
//!
//! Rows are keyed by a number the store gives each blob when it first
//! writes it (`Rows`), not by the blob's hash: numbers only grow, so a
//! stream of received assets appends to the end of the table instead of
//! writing into a random page of it for every asset (10,000 small assets
//! made the table larger than the page cache, and each insert read back and
//! rewrote a page). Blobs written before numbers existed keep their rows
//! under their hash; both are read the same way.
//!
//! A partial receive is kept as plain pieces in arrival order and is invisible
//! to reads until its full length has arrived and hashes to its name; then it
//! becomes chunks in the same transaction, or is discarded with a typed error.
//! GC frees the bytes of a blob once no op within each referencing
//! workspace's retention window references it (unreferenced blobs: the
//! default window after their last use); afterwards reads answer
//! [`BlobError::Unavailable`] and state is untouched.

use redb::{ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};
use troupe_protocol::BlobHash;
use troupe_protocol::sync::oplog_view::BlobState;
use troupe_protocol::workspace::DEFAULT_RETENTION_DAYS;

use crate::blob_hash::{self, WholeCheck};
pub(crate) use crate::blob_rows::{Numbers, Rows, next_number};
use crate::error::{BlobError, DamagedRow};
use crate::schema::*;
use crate::state::read_u64;
use crate::{Store, decode_ws, now_ms};

/// Plain bytes per stored chunk.
pub const CHUNK: usize = 1 << 20;
const DAY_MS: u64 = 24 * 60 * 60 * 1000;
const ZSTD_LEVEL: i32 = 1;
/// Never trust a stored size for an up-front allocation beyond this.
const PREALLOC_MAX: u64 = 64 << 20;

/// Where a blob stands here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlobStatus {
    /// Receiving: `received` plain bytes held, in order.
    Receiving {
        /// Bytes held.
        received: u64,
    },
    /// Complete and verified.
    Complete,
    /// Bytes garbage collected.
    Unavailable,
}

/// Blob metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobMeta {
    /// Plain size.
    pub size: u64,
    /// State.
    pub status: BlobStatus,
    /// The hash of each plain chunk held, so ranges verify alone: as
    /// [`BlobMeta::subtree_hashes`] says.
    pub chunk_hashes: Vec<[u8; 32]>,
    /// Last put or read (ms since the Unix epoch).
    pub last_use_ms: u64,
    /// The number its rows are kept under (`Rows`); `None` for rows kept
    /// under the blob's hash (written before numbers existed) and for
    /// blobs whose bytes are gone.
    pub rows: Option<u64>,
    /// The chunk hashes are the chaining values of the chunks' subtrees in
    /// the blob's blake3 tree, so they give the blob's hash without a second
    /// pass over its bytes (see the `blob_hash` module); `false` for blobs
    /// written before, whose chunk hashes are blake3 of each chunk alone.
    pub subtree_hashes: bool,
}

/// [`BlobMeta`] as it was stored before subtree hashes: read, never
/// written (but by tests that make an older store).
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
pub(crate) struct MetaV2 {
    pub(crate) size: u64,
    pub(crate) status: BlobStatus,
    pub(crate) chunk_hashes: Vec<[u8; 32]>,
    pub(crate) last_use_ms: u64,
    pub(crate) rows: Option<u64>,
}

/// [`BlobMeta`] as it was stored before row numbers: read, never written.
#[derive(Deserialize)]
struct MetaV1 {
    size: u64,
    status: BlobStatus,
    chunk_hashes: Vec<[u8; 32]>,
    last_use_ms: u64,
}

/// One received chunk for [`Store::blob_receive_many`].
#[derive(Clone, Copy, Debug)]
pub struct ReceivedChunk<'a> {
    /// The blob.
    pub hash: BlobHash,
    /// Its plain size (a receive begins at offset 0 with it).
    pub size: u64,
    /// Where the bytes go (must equal the bytes held).
    pub offset: u64,
    /// The plain bytes.
    pub bytes: &'a [u8],
}

/// Most chunk bytes [`blob_receive_runs`] puts in one run: what fits
/// redb's write buffer (half its page cache) with room for the tables'
/// other pages.
const RECEIVE_RUN_BYTES: usize = crate::CACHE_BYTES / 2 - (512 << 10);

/// Splits received chunks, in order, into the runs to give
/// [`Store::blob_receive_many`] one at a time, one transaction each.
///
/// redb keeps a transaction's new pages in a write buffer of half its
/// cache and writes the oldest to the file when it overflows; at the
/// commit it reads every page so written back to checksum it, and writes
/// it again. A window of a large asset's 1 MiB chunks in one transaction
/// overflowed it, so most of the asset was written twice and read back
/// once. Runs that fit are written once. Each run holds at least one
/// chunk, however large.
pub fn blob_receive_runs<'c, 'a>(
    chunks: &'c [ReceivedChunk<'a>],
) -> impl Iterator<Item = &'c [ReceivedChunk<'a>]> {
    let mut rest = chunks;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut n = 1;
        let mut bytes = rest[0].bytes.len();
        while let Some(c) = rest.get(n) {
            if bytes + c.bytes.len() > RECEIVE_RUN_BYTES {
                break;
            }
            bytes += c.bytes.len();
            n += 1;
        }
        let (run, later) = rest.split_at(n);
        rest = later;
        Some(run)
    })
}

/// What a GC run freed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs whose bytes were freed.
    pub freed: Vec<BlobHash>,
    /// Plain bytes freed.
    pub bytes: u64,
}

/// Decodes a stored [`BlobMeta`], in any of its layouts: each one ends with
/// a field the one before lacks, so an older row never decodes as a newer
/// layout (it ends too soon) nor a newer one as an older (bytes are left).
pub(crate) fn decode_meta(v: &[u8]) -> Result<BlobMeta, DamagedRow> {
    if let Ok((m, [])) = postcard::take_from_bytes::<BlobMeta>(v) {
        return Ok(m);
    }
    if let Ok((m, [])) = postcard::take_from_bytes::<MetaV2>(v) {
        return Ok(BlobMeta {
            size: m.size,
            status: m.status,
            chunk_hashes: m.chunk_hashes,
            last_use_ms: m.last_use_ms,
            rows: m.rows,
            subtree_hashes: false,
        });
    }
    match postcard::take_from_bytes::<MetaV1>(v) {
        Ok((m, [])) => Ok(BlobMeta {
            size: m.size,
            status: m.status,
            chunk_hashes: m.chunk_hashes,
            last_use_ms: m.last_use_ms,
            rows: None,
            subtree_hashes: false,
        }),
        _ => Err(DamagedRow { what: "blob meta" }),
    }
}

fn encode<T: Serialize>(v: &T, what: &'static str) -> Result<Vec<u8>, DamagedRow> {
    postcard::to_allocvec(v).map_err(|_| DamagedRow { what })
}

pub(crate) fn encode_meta(m: &BlobMeta) -> Result<Vec<u8>, DamagedRow> {
    encode(m, "blob meta (encode)")
}

/// Longest value kept in one chunk row. redb stores a row that does not
/// fit a page in a run of pages rounded up to a power of two, so a raw
/// 1 MiB chunk (1 MiB plus its tag, key and leaf header) took a 2 MiB run:
/// twice the file, twice the bytes written and read. A longer row is kept
/// as a head of this length under the chunk's key and the rest under
/// [`chunk_tail_key`], and fits a 1 MiB run plus a small one. The margin
/// leaves room for the leaf's header and key.
pub(crate) const ROW_MAX: usize = CHUNK - (4 << 10);

/// Stores the row of chunk `i`, in two rows when it is longer than
/// [`ROW_MAX`].
pub(crate) fn put_chunk_row(
    chunks: &mut Rw<'_>,
    rows: Rows,
    i: u32,
    row: &[u8],
) -> Result<(), redb::StorageError> {
    put_row_parts(chunks, rows, i, &[], row)
}

/// Stores the row `head ++ body` of chunk `i` (in two rows when it is
/// longer than [`ROW_MAX`]), copying the parts straight into the rows'
/// pages: a raw chunk is its tag and the plain bytes as they arrived, with
/// no row assembled in memory first.
fn put_row_parts(
    chunks: &mut Rw<'_>,
    rows: Rows,
    i: u32,
    head: &[u8],
    body: &[u8],
) -> Result<(), redb::StorageError> {
    let len = head.len() + body.len();
    let split = len.min(ROW_MAX);
    // The head part is one tag byte at most, so the tail is all body.
    let h = head.len().min(split);
    let (first_body, rest) = body.split_at(split - h);
    {
        let mut first = chunks.insert_reserve(rows.chunk(i).as_slice(), split)?;
        let out = first.as_mut();
        out[..h].copy_from_slice(&head[..h]);
        out[h..].copy_from_slice(first_body);
    }
    if !rest.is_empty() {
        chunks.insert(rows.tail(i).as_slice(), rest)?;
    }
    Ok(())
}

/// A chunk's stored row, as [`encode_chunk`] chose it.
enum ChunkRow<'a> {
    /// Stored as it is, after [`RAW_TAG`].
    Raw(&'a [u8]),
    /// A zstd frame.
    Zstd(Vec<u8>),
}

impl ChunkRow<'_> {
    fn put(&self, chunks: &mut Rw<'_>, rows: Rows, i: u32) -> Result<(), redb::StorageError> {
        match self {
            ChunkRow::Raw(plain) => put_row_parts(chunks, rows, i, &[RAW_TAG], plain),
            ChunkRow::Zstd(z) => put_row_parts(chunks, rows, i, &[], z),
        }
    }
}

/// The part of a stored tail that belongs to `head`: only a full
/// [`ROW_MAX`] head has one (rows written before the split, and rows that
/// fit, have none).
fn tail_of<'t>(head: &[u8], tail: Option<&'t [u8]>) -> &'t [u8] {
    match tail {
        Some(t) if head.len() == ROW_MAX => t,
        _ => &[],
    }
}

/// Joins a head row with its tail row ([`tail_of`]), as one logical row.
pub(crate) fn join_row(head: &[u8], tail: Option<&[u8]>) -> Vec<u8> {
    [head, tail_of(head, tail)].concat()
}

type Rw<'t> = redb::Table<'t, &'static [u8], &'static [u8]>;

/// The blob metadata and chunk tables of a write transaction, opened once
/// for everything the caller writes in it.
fn write_tables(txn: &redb::WriteTransaction) -> Result<(Rw<'_>, Rw<'_>), BlobError> {
    Ok((txn.open_table(BLOB_META)?, txn.open_table(BLOB_CHUNKS)?))
}

/// Stores a whole blob's bytes as chunk rows (their hashes are
/// [`blob_hash::chunk_hashes`], taken before).
fn write_chunks(chunks: &mut Rw<'_>, rows: Rows, bytes: &[u8]) -> Result<(), BlobError> {
    for (i, c) in bytes.chunks(CHUNK).enumerate() {
        let z = encode_chunk(c)?;
        let i = u32::try_from(i).map_err(|_| BlobError::Overrun {
            size: bytes.len() as u64,
        })?;
        z.put(chunks, rows, i)?;
    }
    Ok(())
}

/// First byte of a chunk row stored without compression (the plain bytes
/// follow). Compressed rows are zstd frames, which always begin with the
/// zstd magic number (0x28 first), so the two never mix up; rows written
/// before raw rows existed are all zstd frames.
const RAW_TAG: u8 = 0;
/// Bytes of a chunk compressed as a sample before the whole chunk is.
const SAMPLE: usize = 64 << 10;
/// Bytes of a smaller chunk whose byte values are counted first (see
/// [`looks_random`]).
const SMALL_SAMPLE: usize = 1024;
/// Chunks this small are stored raw: a zstd frame's own bytes eat what it
/// could save, and a read would pay a decompression for nothing.
const TINY: usize = 64;
/// A sample that does not shrink below this share of its size (in 1/64ths)
/// marks the chunk as incompressible (photos, recordings, archives).
const SAMPLE_KEEP_64THS: usize = 62;

thread_local! {
    /// One zstd context per thread, reused: making a context per chunk cost
    /// more than compressing a small asset.
    static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// The stored row for one plain chunk: zstd when it pays, raw otherwise.
/// Incompressible data (most media) is recognised from a sample, so it
/// costs neither a full compression nor a decompression on every read: a
/// trial compression of its first 64 KiB for a large chunk, a count of the
/// byte values in its first KiB for a small one ([`looks_random`]).
fn encode_chunk(plain: &[u8]) -> Result<ChunkRow<'_>, DamagedRow> {
    let compress = |b: &[u8]| {
        COMPRESSOR
            .with(|c| {
                let mut c = c.borrow_mut();
                if c.is_none() {
                    *c = zstd::bulk::Compressor::new(ZSTD_LEVEL).ok();
                }
                c.as_mut().and_then(|c| c.compress(b).ok())
            })
            .ok_or(DamagedRow {
                what: "blob chunk (compress)",
            })
    };
    if plain.len() > SAMPLE {
        let z = compress(&plain[..SAMPLE])?;
        if z.len() * 64 >= SAMPLE * SAMPLE_KEEP_64THS {
            return Ok(ChunkRow::Raw(plain));
        }
    } else if plain.len() < TINY || looks_random(&plain[..plain.len().min(SMALL_SAMPLE)]) {
        return Ok(ChunkRow::Raw(plain));
    }
    let z = compress(plain)?;
    // A frame that saves little but needs two rows is not worth a
    // decompression on every read.
    Ok(if z.len() < plain.len() && z.len() <= ROW_MAX {
        ChunkRow::Zstd(z)
    } else {
        ChunkRow::Raw(plain)
    })
}

/// Whether `sample` uses about as many distinct byte values as random
/// bytes of its length would (at least nine tenths of the expected count):
/// the mark of data that is already compressed or encrypted (a photo's
/// thumbnail, a small recording). Text and most uncompressed formats use far
/// fewer. Small chunks are judged by this instead of a trial compression:
/// for a 1 KiB asset, compressing it cost the receiving storage thread a
/// tenth of its time, to store it raw anyway.
fn looks_random(sample: &[u8]) -> bool {
    let mut seen = [0u64; 4];
    for &b in sample {
        seen[usize::from(b >> 6)] |= 1 << (b & 63);
    }
    let distinct: u32 = seen.iter().map(|w| w.count_ones()).sum();
    // Expected distinct values among n random bytes: 256 (1 - (255/256)^n).
    let expected = 256.0 * (1.0 - (255.0f64 / 256.0).powi(sample.len() as i32));
    f64::from(distinct) * 10.0 >= expected * 9.0
}

/// The plain bytes of a stored chunk row, given as its head and tail rows
/// (`expected_len` bounds the decompression), appended to `out`; `false`,
/// with `out` as it was, when the row does not decode to that length. A
/// raw row is copied once, straight from its two parts.
fn decode_chunk_into(
    head: &[u8],
    tail: Option<&[u8]>,
    expected_len: usize,
    out: &mut Vec<u8>,
) -> bool {
    let tail = tail_of(head, tail);
    match head.split_first() {
        Some((&RAW_TAG, plain)) => {
            if plain.len() + tail.len() != expected_len {
                return false;
            }
            out.reserve(expected_len);
            out.extend_from_slice(plain);
            out.extend_from_slice(tail);
            true
        }
        _ => {
            let plain = if tail.is_empty() {
                zstd::bulk::decompress(head, expected_len)
            } else {
                zstd::bulk::decompress(&[head, tail].concat(), expected_len)
            };
            match plain {
                Ok(p) if p.len() == expected_len => {
                    if out.is_empty() {
                        *out = p;
                    } else {
                        out.extend_from_slice(&p);
                    }
                    true
                }
                _ => false,
            }
        }
    }
}

pub(crate) fn read_chunk(
    chunks: &impl ReadableTable<&'static [u8], &'static [u8]>,
    h: &BlobHash,
    meta: &BlobMeta,
    i: usize,
) -> Result<Vec<u8>, BlobError> {
    let mut out = Vec::new();
    read_chunk_into(chunks, h, meta, i, &mut out)?;
    Ok(out)
}

/// [`read_chunk`] appended to `out`, which is left as it was on an error.
fn read_chunk_into(
    chunks: &impl ReadableTable<&'static [u8], &'static [u8]>,
    h: &BlobHash,
    meta: &BlobMeta,
    i: usize,
    out: &mut Vec<u8>,
) -> Result<(), BlobError> {
    let i32 = u32::try_from(i).map_err(|_| BlobError::Corrupt(*h))?;
    let rows = Rows::of(h, meta);
    let head = chunks
        .get(rows.chunk(i32).as_slice())?
        .ok_or(BlobError::Corrupt(*h))?;
    let head = head.value();
    if head.len() < ROW_MAX {
        return verify_chunk_into(head, None, h, meta, i, out);
    }
    let tail = chunks.get(rows.tail(i32).as_slice())?;
    verify_chunk_into(head, tail.as_ref().map(|t| t.value()), h, meta, i, out)
}

/// Decompresses stored chunk `i` of a blob (its head row and the tail row,
/// if any) and checks its length and hash.
pub(crate) fn verify_chunk(
    head: &[u8],
    tail: Option<&[u8]>,
    h: &BlobHash,
    meta: &BlobMeta,
    i: usize,
) -> Result<Vec<u8>, BlobError> {
    let mut out = Vec::new();
    verify_chunk_into(head, tail, h, meta, i, &mut out)?;
    Ok(out)
}

/// [`verify_chunk`] appended to `out`, which is left as it was on an error.
fn verify_chunk_into(
    head: &[u8],
    tail: Option<&[u8]>,
    h: &BlobHash,
    meta: &BlobMeta,
    i: usize,
    out: &mut Vec<u8>,
) -> Result<(), BlobError> {
    let expected_len = meta
        .size
        .checked_sub((i as u64).saturating_mul(CHUNK as u64))
        .ok_or(BlobError::Corrupt(*h))?
        .min(CHUNK as u64) as usize;
    let want = meta.chunk_hashes.get(i).ok_or(BlobError::Corrupt(*h))?;
    let start = out.len();
    if !decode_chunk_into(head, tail, expected_len, out) {
        return Err(BlobError::Corrupt(*h));
    }
    if &blob_hash::chunk_hash(meta.subtree_hashes, meta.size, i, &out[start..]) != want {
        out.truncate(start);
        return Err(BlobError::Corrupt(*h));
    }
    Ok(())
}

pub(crate) fn blob_state_in(
    meta: &impl ReadableTable<&'static [u8], &'static [u8]>,
    h: &BlobHash,
) -> Result<BlobState, BlobError> {
    let Some(v) = meta.get(h.0.as_slice())? else {
        return Ok(BlobState::Absent);
    };
    let m = decode_meta(v.value())?;
    Ok(match m.status {
        BlobStatus::Receiving { received } => BlobState::Partial {
            verified_len: received,
            size: m.size,
        },
        BlobStatus::Complete => BlobState::Complete { size: m.size },
        BlobStatus::Unavailable => BlobState::Unavailable,
    })
}

/// Plain bytes `offset..offset+len` of a complete blob, verified, appended
/// to `out`; `false` when the blob is not complete here. `out` is left as
/// it was on an error.
pub(crate) fn range_into(
    meta: &impl ReadableTable<&'static [u8], &'static [u8]>,
    chunks: &impl ReadableTable<&'static [u8], &'static [u8]>,
    h: &BlobHash,
    offset: u64,
    len: u32,
    out: &mut Vec<u8>,
) -> Result<bool, BlobError> {
    let Some(v) = meta.get(h.0.as_slice())? else {
        return Ok(false);
    };
    let m = decode_meta(v.value())?;
    if m.status != BlobStatus::Complete || offset > m.size {
        return Ok(false);
    }
    let end = offset.saturating_add(len as u64).min(m.size);
    if end > offset
        && offset.is_multiple_of(CHUNK as u64)
        && end == offset.saturating_add(CHUNK as u64).min(m.size)
    {
        // Exactly one stored chunk (what the sync protocol asks for): its
        // verified plain bytes are the answer, without another copy.
        read_chunk_into(chunks, h, &m, (offset / CHUNK as u64) as usize, out)?;
        return Ok(true);
    }
    let start = out.len();
    out.reserve((end - offset).min(PREALLOC_MAX) as usize);
    let mut pos = offset;
    let mut c = Vec::new();
    while pos < end {
        let i = (pos / CHUNK as u64) as usize;
        c.clear();
        let piece = read_chunk_into(chunks, h, &m, i, &mut c).and_then(|()| {
            let from = (pos - (i as u64) * CHUNK as u64) as usize;
            let stop = ((end - (i as u64) * CHUNK as u64) as usize).min(c.len());
            c.get(from..stop).ok_or(BlobError::Corrupt(*h))
        });
        match piece {
            Ok(p) => out.extend_from_slice(p),
            Err(e) => {
                out.truncate(start);
                return Err(e);
            }
        }
        pos = (i as u64 + 1) * CHUNK as u64;
    }
    Ok(true)
}

impl Store {
    /// Stores a blob (deduplicated) and returns its hash.
    ///
    /// # Errors
    /// [`BlobError::Storage`].
    pub fn put_blob(&self, bytes: &[u8]) -> Result<BlobHash, BlobError> {
        // One pass: the chunk hashes give the blob's.
        let hashes = blob_hash::chunk_hashes(bytes);
        let h = BlobHash(blob_hash::whole(&hashes, bytes.len() as u64).ok_or(
            BlobError::Overrun {
                size: bytes.len() as u64,
            },
        )?);
        let txn = self.db.begin_write()?;
        {
            let mut meta = txn.open_table(BLOB_META)?;
            let old = match meta.get(h.0.as_slice())? {
                Some(v) => Some(decode_meta(v.value())?),
                None => None,
            };
            let mut m = match old {
                Some(m) if m.status == BlobStatus::Complete => m,
                stale => {
                    let mut chunks = txn.open_table(BLOB_CHUNKS)?;
                    // A partial receive's pieces go; the bytes are here whole.
                    if let Some(stale) = &stale {
                        remove_all_rows(&mut chunks, &h, stale.rows)?;
                    }
                    let n = next_number(&mut chunks)?;
                    write_chunks(&mut chunks, Rows::Number(n), bytes)?;
                    BlobMeta {
                        size: bytes.len() as u64,
                        status: BlobStatus::Complete,
                        chunk_hashes: hashes,
                        last_use_ms: 0,
                        rows: Some(n),
                        subtree_hashes: true,
                    }
                }
            };
            m.last_use_ms = now_ms();
            meta.insert(h.0.as_slice(), encode(&m, "blob meta (encode)")?.as_slice())?;
        }
        txn.commit()?;
        Ok(h)
    }

    /// A complete blob's plain bytes, verified.
    ///
    /// # Errors
    /// [`BlobError::NotFound`] (absent or still receiving),
    /// [`BlobError::Unavailable`] (garbage collected), [`BlobError::Corrupt`].
    pub fn get_blob(&self, h: &BlobHash) -> Result<Vec<u8>, BlobError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(BLOB_META)?;
        let chunks = txn.open_table(BLOB_CHUNKS)?;
        let m = match meta.get(h.0.as_slice())? {
            Some(v) => decode_meta(v.value())?,
            None => return Err(BlobError::NotFound(*h)),
        };
        match m.status {
            BlobStatus::Complete => {}
            BlobStatus::Unavailable => return Err(BlobError::Unavailable(*h)),
            BlobStatus::Receiving { .. } => return Err(BlobError::NotFound(*h)),
        }
        let mut out = Vec::with_capacity(m.size.min(PREALLOC_MAX) as usize);
        let mut whole = WholeCheck::new(&m);
        for i in 0..m.chunk_hashes.len() {
            let plain = read_chunk(&chunks, h, &m, i)?;
            whole.update(&plain);
            out.extend_from_slice(&plain);
        }
        if !whole.matches(&m, h) {
            return Err(BlobError::Corrupt(*h));
        }
        Ok(out)
    }

    /// How much of a blob is held.
    ///
    /// # Errors
    /// [`BlobError::Storage`], [`BlobError::Damaged`].
    pub fn blob_state(&self, h: &BlobHash) -> Result<BlobState, BlobError> {
        let txn = self.db.begin_read()?;
        blob_state_in(&txn.open_table(BLOB_META)?, h)
    }

    /// How much of each of `hashes` is held, read in one transaction: a
    /// received batch names up to hundreds of assets, and a transaction
    /// each cost more than the lookups. One answer per hash, in order.
    ///
    /// # Errors
    /// The outer error: [`BlobError::Storage`] opening the transaction; each
    /// inner one: [`BlobError::Storage`], [`BlobError::Damaged`].
    pub fn blob_states<'h>(
        &self,
        hashes: impl IntoIterator<Item = &'h BlobHash>,
    ) -> Result<Vec<Result<BlobState, BlobError>>, BlobError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(BLOB_META)?;
        Ok(hashes
            .into_iter()
            .map(|h| blob_state_in(&meta, h))
            .collect())
    }

    /// Begins (or resumes) receiving a blob of `size` plain bytes. Returns the
    /// offset to continue from (0 for a new receive; the full size when the
    /// blob is already complete).
    ///
    /// # Errors
    /// [`BlobError::Storage`], [`BlobError::Damaged`].
    pub fn blob_begin(&self, h: &BlobHash, size: u64) -> Result<u64, BlobError> {
        let txn = self.db.begin_write()?;
        let at = {
            let (mut meta, mut chunks) = write_tables(&txn)?;
            begin_one((&mut meta, &mut chunks), h, size)?
        };
        txn.commit()?;
        Ok(at)
    }

    /// One received chunk in one transaction that is not made durable on its
    /// own (see [`Store::flush`]): begins the receive when `offset` is 0, then
    /// writes the piece as [`Store::blob_write_chunk`] does, verifying the
    /// whole blob when its last byte arrives. A crash before the next flush
    /// loses at most the unflushed pieces; what is held stays consistent
    /// (pieces and the received length change together) and an unverified
    /// blob is never visible.
    ///
    /// # Errors
    /// As [`Store::blob_write_chunk`].
    pub fn blob_receive_deferred(
        &self,
        h: &BlobHash,
        size: u64,
        offset: u64,
        bytes: &[u8],
    ) -> Result<bool, BlobError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(redb::Durability::None)
            .map_err(|e| BlobError::Storage(crate::StorageFailure(e.into())))?;
        let r = {
            let (mut meta, mut chunks) = write_tables(&txn)?;
            if offset == 0 {
                begin_one((&mut meta, &mut chunks), h, size)?;
            }
            write_chunk_in((&mut meta, &mut chunks), h, offset, bytes)?
        };
        txn.commit()?;
        // Asset bytes are not journaled: the next flush is a checkpoint.
        self.unjournaled();
        r
    }

    /// Received chunks, in order, in ONE transaction that is not made durable
    /// on its own (see [`Store::flush`]): each is written as
    /// [`Store::blob_receive_deferred`] writes one, so a run of chunks (many
    /// small blobs, or part of a large one's window) costs one commit
    /// instead of one per chunk. [`blob_receive_runs`] says how much to
    /// give one call. Each chunk gets its own answer: a chunk that does
    /// not fit what is held (wrong offset, past the end, not receiving) or
    /// completes a blob that does not hash to its name is refused alone and
    /// the others are kept.
    ///
    /// # Errors
    /// The outer error ([`BlobError::Storage`], [`BlobError::Damaged`]):
    /// nothing of the call was written.
    pub fn blob_receive_many(
        &self,
        chunks: &[ReceivedChunk<'_>],
    ) -> Result<Vec<Result<bool, BlobError>>, BlobError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(redb::Durability::None)
            .map_err(|e| BlobError::Storage(crate::StorageFailure(e.into())))?;
        let mut out = Vec::with_capacity(chunks.len());
        {
            // Opened once for the whole call: opening a table in a write
            // transaction and closing it again rewrites its root each time.
            let (mut meta, mut rows) = write_tables(&txn)?;
            // Row numbers for the whole call: the counter is written once,
            // after the loop (an error before it aborts the transaction).
            let mut numbers = Numbers::default();
            for c in chunks {
                let (answer, stored) =
                    match write_whole_in((&mut meta, &mut rows), &mut numbers, c)? {
                        Some(answer) => {
                            let stored = answer.is_ok();
                            (answer, stored)
                        }
                        None => {
                            if c.offset == 0 {
                                begin_in((&mut meta, &mut rows), &mut numbers, &c.hash, c.size)?;
                            }
                            match write_chunk_in((&mut meta, &mut rows), &c.hash, c.offset, c.bytes)
                            {
                                Ok(r) => (r, true),
                                // Refused before anything of this chunk was written.
                                Err(
                                    e @ (BlobError::NotReceiving(_)
                                    | BlobError::Offset { .. }
                                    | BlobError::Overrun { .. }),
                                ) => (Err(e), false),
                                Err(e) => return Err(e),
                            }
                        }
                    };
                // Counted as each chunk goes in, not after the commit: a
                // chunk's row leaves redb's small write buffer for the OS
                // at once, so the disk can start on it while the rest of
                // this call's chunks are written.
                if stored {
                    self.wrote(c.bytes.len() as u64);
                }
                out.push(answer);
            }
            numbers.save(&mut rows)?;
        }
        txn.commit()?;
        // Asset bytes are not journaled: the next flush is a checkpoint.
        self.unjournaled();
        Ok(out)
    }

    /// Writes the next piece of a receive at `offset` (which must equal the
    /// bytes held). When the full size has arrived the blob is hashed: on a
    /// match it becomes complete (returns `Ok(true)`), otherwise every piece
    /// is discarded and [`BlobError::HashMismatch`] is returned.
    ///
    /// # Errors
    /// [`BlobError::NotReceiving`], [`BlobError::Offset`], [`BlobError::Overrun`],
    /// [`BlobError::HashMismatch`], [`BlobError::Storage`].
    pub fn blob_write_chunk(
        &self,
        h: &BlobHash,
        offset: u64,
        bytes: &[u8],
    ) -> Result<bool, BlobError> {
        let txn = self.db.begin_write()?;
        let r = {
            let (mut meta, mut chunks) = write_tables(&txn)?;
            write_chunk_in((&mut meta, &mut chunks), h, offset, bytes)?
        };
        txn.commit()?;
        // Asset bytes are not journaled: the next flush is a checkpoint.
        self.unjournaled();
        r
    }

    /// Frees the bytes of every complete blob no op references within its
    /// workspaces' retention windows, as of `now_ms`.
    ///
    /// # Errors
    /// [`BlobError::Storage`], [`BlobError::Damaged`].
    pub fn gc_blobs(&self, now_ms: u64) -> Result<GcReport, BlobError> {
        self.gc_run(now_ms, true)
    }

    /// What [`Store::gc_blobs`] would free as of `now_ms`, without freeing
    /// anything (the `gc` dry run a person reviews first).
    ///
    /// # Errors
    /// [`BlobError::Storage`], [`BlobError::Damaged`].
    pub fn gc_blobs_dry_run(&self, now_ms: u64) -> Result<GcReport, BlobError> {
        self.gc_run(now_ms, false)
    }

    fn gc_run(&self, now_ms: u64, apply: bool) -> Result<GcReport, BlobError> {
        let txn = self.db.begin_write()?;
        let mut report = GcReport::default();
        {
            let workspaces = txn.open_table(WORKSPACES)?;
            let refs = txn.open_table(ASSET_REFS)?;
            let (mut meta, mut chunks) = write_tables(&txn)?;
            let mut victims = Vec::new();
            for row in meta.iter()? {
                let (k, v) = row?;
                let h = BlobHash(
                    k.value()
                        .try_into()
                        .map_err(|_| DamagedRow { what: "blob key" })?,
                );
                let m = decode_meta(v.value())?;
                if m.status != BlobStatus::Complete {
                    continue;
                }
                let mut ref_until = 0u64;
                let mut referenced = false;
                for r in refs.range(h.0.as_slice()..)? {
                    let (rk, rv) = r?;
                    let rk = rk.value();
                    if !rk.starts_with(&h.0) {
                        break;
                    }
                    referenced = true;
                    let last = read_u64(rk, rv.value()).ok_or(DamagedRow {
                        what: "asset reference",
                    })?;
                    let days = match workspaces.get(&rk[32..])? {
                        Some(w) => decode_ws(w.value())?.retention_days,
                        None => DEFAULT_RETENTION_DAYS,
                    };
                    ref_until = ref_until.max(last.saturating_add(days as u64 * DAY_MS));
                }
                // Referenced blobs follow their ops' windows; others their last use.
                let keep_until = if referenced {
                    ref_until
                } else {
                    m.last_use_ms
                        .saturating_add(DEFAULT_RETENTION_DAYS as u64 * DAY_MS)
                };
                if keep_until < now_ms {
                    victims.push((h, m));
                }
            }
            for (h, mut m) in victims {
                let rows = Rows::of(&h, &m);
                for i in 0..m.chunk_hashes.len() {
                    chunks.remove(rows.chunk(i as u32).as_slice())?;
                    chunks.remove(rows.tail(i as u32).as_slice())?;
                }
                report.bytes += m.size;
                m.status = BlobStatus::Unavailable;
                m.chunk_hashes.clear();
                m.rows = None;
                meta.insert(h.0.as_slice(), encode(&m, "blob meta (encode)")?.as_slice())?;
                report.freed.push(h);
            }
        }
        if apply {
            txn.commit()?;
        } else {
            txn.abort()?;
        }
        Ok(report)
    }
}

/// Removes every row whose key starts with `prefix` (all chunks of a blob,
/// or only its unassembled pieces).
pub(crate) fn remove_prefixed(
    chunks: &mut Rw<'_>,
    prefix: &[u8],
) -> Result<(), redb::StorageError> {
    let mut keys = Vec::new();
    for row in chunks.range(prefix..)? {
        let (k, _) = row?;
        if !k.value().starts_with(prefix) {
            break;
        }
        keys.push(k.value().to_vec());
    }
    for k in keys {
        chunks.remove(k.as_slice())?;
    }
    Ok(())
}

/// Removes every row blob `h` may have: under `number` (its metadata's
/// [`BlobMeta::rows`], when known) and under its hash (older stores).
pub(crate) fn remove_all_rows(
    chunks: &mut Rw<'_>,
    h: &BlobHash,
    number: Option<u64>,
) -> Result<(), redb::StorageError> {
    if let Some(n) = number {
        remove_prefixed(chunks, Rows::Number(n).prefix().as_slice())?;
    }
    remove_prefixed(chunks, &h.0)
}

fn clear_pieces(chunks: &mut Rw<'_>, rows: Rows) -> Result<(), BlobError> {
    Ok(remove_prefixed(chunks, rows.pieces().as_slice())?)
}

/// [`begin_in`] as the only receive its transaction begins: the counter is
/// saved at once.
fn begin_one(
    (meta, chunks): (&mut Rw<'_>, &mut Rw<'_>),
    h: &BlobHash,
    size: u64,
) -> Result<u64, BlobError> {
    let mut numbers = Numbers::default();
    let at = begin_in((&mut *meta, &mut *chunks), &mut numbers, h, size)?;
    numbers.save(chunks)?;
    Ok(at)
}

fn begin_in(
    (meta, chunks): (&mut Rw<'_>, &mut Rw<'_>),
    numbers: &mut Numbers,
    h: &BlobHash,
    size: u64,
) -> Result<u64, BlobError> {
    let old = match meta.get(h.0.as_slice())? {
        Some(v) => Some(decode_meta(v.value())?),
        None => None,
    };
    Ok(match old {
        Some(m) if m.status == BlobStatus::Complete => m.size,
        Some(BlobMeta {
            status: BlobStatus::Receiving { received },
            size: s,
            ..
        }) if s == size => received,
        stale => {
            if let Some(stale) = &stale {
                // A receive of another size (or freed bytes): start clean.
                remove_all_rows(chunks, h, stale.rows)?;
            }
            let m = BlobMeta {
                size,
                status: BlobStatus::Receiving { received: 0 },
                chunk_hashes: Vec::new(),
                last_use_ms: now_ms(),
                rows: Some(numbers.take(chunks)?),
                subtree_hashes: true,
            };
            meta.insert(h.0.as_slice(), encode(&m, "blob meta (encode)")?.as_slice())?;
            0
        }
    })
}

/// A blob that arrives whole in one chunk (most small assets) and is not
/// held at all: hashed once and stored complete in one step, without the
/// "receiving" record in between. `None` when the chunk is not such a
/// blob; the general path then handles it.
fn write_whole_in(
    (meta, chunks): (&mut Rw<'_>, &mut Rw<'_>),
    numbers: &mut Numbers,
    c: &ReceivedChunk<'_>,
) -> Result<Option<Result<bool, BlobError>>, BlobError> {
    if c.offset != 0
        || c.bytes.is_empty()
        || c.bytes.len() as u64 != c.size
        || c.bytes.len() > CHUNK
    {
        return Ok(None);
    }
    if meta.get(c.hash.0.as_slice())?.is_some() {
        return Ok(None);
    }
    let hash = *blake3::hash(c.bytes).as_bytes();
    if hash != c.hash.0 {
        return Ok(Some(Err(BlobError::HashMismatch { expected: c.hash })));
    }
    // A new number: no rows are under it yet.
    let n = numbers.take(chunks)?;
    encode_chunk(c.bytes)?.put(chunks, Rows::Number(n), 0)?;
    let m = BlobMeta {
        size: c.size,
        status: BlobStatus::Complete,
        // One chunk: its hash is the blob's.
        chunk_hashes: vec![hash],
        last_use_ms: now_ms(),
        rows: Some(n),
        subtree_hashes: true,
    };
    meta.insert(c.hash.0.as_slice(), encode_meta(&m)?.as_slice())?;
    Ok(Some(Ok(true)))
}

/// Writes one piece in `txn`. A piece that is exactly the next stored chunk
/// (the sync protocol's chunks are) is compressed and stored as that chunk
/// right away, with its subtree hash, so completing the blob only merges
/// the chunk hashes (each byte is hashed once); any other piece is kept as
/// is and the blob is assembled when it completes.
///
/// The outer error aborts the transaction; the inner one (a hash mismatch)
/// is answered after committing the discard.
fn write_chunk_in(
    (meta, chunks): (&mut Rw<'_>, &mut Rw<'_>),
    h: &BlobHash,
    offset: u64,
    bytes: &[u8],
) -> Result<Result<bool, BlobError>, BlobError> {
    let mut m = match meta.get(h.0.as_slice())? {
        Some(v) => decode_meta(v.value())?,
        None => return Err(BlobError::NotReceiving(*h)),
    };
    let BlobStatus::Receiving { received } = m.status else {
        return Err(BlobError::NotReceiving(*h));
    };
    if offset != received {
        return Err(BlobError::Offset {
            expected: received,
            got: offset,
        });
    }
    let now = received.saturating_add(bytes.len() as u64);
    if now > m.size {
        return Err(BlobError::Overrun { size: m.size });
    }
    let rows = Rows::of(h, &m);
    if !m.subtree_hashes {
        // A receive begun before subtree hashes: its chunks' hashes are
        // taken again (each chunk read back, verified the old way) so the
        // blob completes like any other.
        let mut again = Vec::with_capacity(m.chunk_hashes.len());
        for i in 0..m.chunk_hashes.len() {
            match read_chunk(&*chunks, h, &m, i) {
                Ok(plain) => again.push(blob_hash::chunk_hash(true, m.size, i, &plain)),
                Err(_) => return Ok(discard(meta, chunks, h, rows)),
            }
        }
        m.chunk_hashes = again;
        m.subtree_hashes = true;
    }
    let in_chunks = (m.chunk_hashes.len() as u64).saturating_mul(CHUNK as u64);
    let whole_chunk = received == in_chunks
        && !bytes.is_empty()
        && bytes.len() as u64 == (m.size - received).min(CHUNK as u64);
    if whole_chunk {
        let z = encode_chunk(bytes)?;
        let i = m.chunk_hashes.len();
        let i32 = u32::try_from(i).map_err(|_| BlobError::Overrun { size: m.size })?;
        z.put(chunks, rows, i32)?;
        m.chunk_hashes
            .push(blob_hash::chunk_hash(true, m.size, i, bytes));
    } else {
        chunks.insert(rows.piece(offset).as_slice(), bytes)?;
    }
    if now < m.size {
        m.status = BlobStatus::Receiving { received: now };
        meta.insert(h.0.as_slice(), encode(&m, "blob meta (encode)")?.as_slice())?;
        return Ok(Ok(false));
    }
    let ok = if whole_chunk
        && now
            == (m.chunk_hashes.len() as u64)
                .saturating_mul(CHUNK as u64)
                .min(m.size)
    {
        // Every byte is in stored chunks, each hashed as it arrived: the
        // chunk hashes give the blob's.
        clear_pieces(chunks, rows)?;
        blob_hash::whole(&m.chunk_hashes, m.size) == Some(h.0)
    } else {
        // Assemble: stored chunks, then pieces, then store it as chunks.
        let mut all = Vec::with_capacity(m.size.min(PREALLOC_MAX) as usize);
        for i in 0..m.chunk_hashes.len() {
            match read_chunk(&*chunks, h, &m, i) {
                Ok(plain) => all.extend_from_slice(&plain),
                Err(_) => return Ok(discard(meta, chunks, h, rows)),
            }
        }
        let prefix = rows.pieces();
        let prefix = prefix.as_slice();
        for row in chunks.range(prefix..)? {
            let (k, v) = row?;
            if !k.value().starts_with(prefix) {
                break;
            }
            all.extend_from_slice(v.value());
        }
        clear_pieces(chunks, rows)?;
        let hashes = blob_hash::chunk_hashes(&all);
        let ok = all.len() as u64 == m.size && blob_hash::whole(&hashes, m.size) == Some(h.0);
        if ok {
            // Rows of the chunks stored before are written over.
            write_chunks(chunks, rows, &all)?;
            m.chunk_hashes = hashes;
        }
        ok
    };
    if !ok {
        return Ok(discard(meta, chunks, h, rows));
    }
    m.status = BlobStatus::Complete;
    m.last_use_ms = now_ms();
    meta.insert(h.0.as_slice(), encode(&m, "blob meta (encode)")?.as_slice())?;
    Ok(Ok(true))
}

/// A receive that did not verify: every held byte and the metadata go.
fn discard(
    meta: &mut Rw<'_>,
    chunks: &mut Rw<'_>,
    h: &BlobHash,
    rows: Rows,
) -> Result<bool, BlobError> {
    // Best effort: the mismatch is the error to report either way.
    let _ = remove_prefixed(chunks, rows.prefix().as_slice());
    let _ = meta.remove(h.0.as_slice());
    Err(BlobError::HashMismatch { expected: *h })
}

#[cfg(test)]
mod tests {
    use super::*;
    use troupe_protocol::testing::noise;

    #[test]
    fn small_random_chunks_are_stored_raw_and_small_text_compressed() {
        for len in [64, 100, 300, 1024, 5000, 60_000] {
            for seed in 1..20 {
                let n = noise(len, seed);
                assert!(
                    matches!(encode_chunk(&n).unwrap(), ChunkRow::Raw(_)),
                    "{len} random bytes (seed {seed}) went through zstd"
                );
            }
        }
        let card = b"BEGIN:VCARD\nFN:Mei Schmidt\nROLE:Stage manager\nTEL:+44 7700 900123\nEMAIL:mei@crew.example\nNOTE:call 18:30, fly floor left\nEND:VCARD\n";
        let cards: Vec<u8> = card.iter().copied().cycle().take(1024).collect();
        assert!(!looks_random(card), "one short card is text too");
        assert!(
            matches!(encode_chunk(&cards).unwrap(), ChunkRow::Zstd(_)),
            "1 KiB of text stored raw"
        );
        // A run of one byte value is as far from random as can be.
        assert!(matches!(
            encode_chunk(&[7; 4096]).unwrap(),
            ChunkRow::Zstd(_)
        ));
        // Too small to be worth a frame.
        assert!(matches!(encode_chunk(b"cue 12").unwrap(), ChunkRow::Raw(_)));
    }
}
