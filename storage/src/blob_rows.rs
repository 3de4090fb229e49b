//! Where a blob's rows are kept in `blob_chunks`: under a number the
//! store gives the blob when it first writes it. Numbers only grow, so
//! received assets append to the end of the table; keyed by their random
//! hash, each small asset wrote into a random page, and once the table
//! outgrew the page cache every insert read a page back and rewrote it.
//! Rows written before numbers existed stay under the blob's hash
//! ([`Rows::Hash`]) and are read, checked, freed and salvaged the same way.

use redb::ReadableTable;
use troupe_protocol::BlobHash;

use crate::blob::BlobMeta;
use crate::error::{BlobError, DamagedRow};
use crate::schema::seal;
use crate::state::read_u64;

type Rw<'t> = redb::Table<'t, &'static [u8], &'static [u8]>;

/// First bytes of every row kept under a number ([`Rows::Number`]). Rows kept
/// under a hash start with the hash's 32 bytes and are longer than any
/// numbered key (at most 25 bytes), so the two never share a key, and a
/// prefix of one kind (12 or 13 bytes of a number, 32 or 33 of a hash)
/// never matches a row of the other except for a hash beginning with these
/// four bytes and the same number: about one in 2^96.
const NUMBERED: [u8; 4] = *b"\0row";
/// Key (in `blob_chunks`) of the next row number to give: shorter than
/// every row key, so no prefix of a blob's rows reaches it.
const NEXT_NUMBER: &[u8] = &NUMBERED;

/// Where the rows of one blob are kept in `blob_chunks`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rows {
    /// Under the blob's hash (stores written before row numbers).
    Hash(BlobHash),
    /// Under a number given by [`next_number`].
    Number(u64),
}

/// A row key, built on the stack.
pub(crate) struct RowKey {
    buf: [u8; 41],
    len: usize,
}

impl RowKey {
    fn new(parts: &[&[u8]]) -> RowKey {
        let mut k = RowKey {
            buf: [0; 41],
            len: 0,
        };
        for p in parts {
            k.buf[k.len..k.len + p.len()].copy_from_slice(p);
            k.len += p.len();
        }
        k
    }

    /// The key's bytes.
    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Rows {
    /// Where the rows described by `m` (of the blob `h`) are.
    pub(crate) fn of(h: &BlobHash, m: &BlobMeta) -> Rows {
        m.rows.map_or(Rows::Hash(*h), Rows::Number)
    }

    /// The prefix of every row of the blob: chunks, tails and pieces.
    pub(crate) fn prefix(&self) -> RowKey {
        match self {
            Rows::Hash(h) => RowKey::new(&[&h.0]),
            Rows::Number(n) => RowKey::new(&[&NUMBERED, &n.to_be_bytes()]),
        }
    }

    /// Key of stored chunk `i`.
    pub(crate) fn chunk(&self, i: u32) -> RowKey {
        RowKey::new(&[self.prefix().as_slice(), &i.to_be_bytes()])
    }

    /// Key of the tail row of a chunk stored in two rows ([`ROW_MAX`]).
    pub(crate) fn tail(&self, i: u32) -> RowKey {
        RowKey::new(&[self.chunk(i).as_slice(), b"t"])
    }

    /// The prefix of the pieces of a partial receive.
    pub(crate) fn pieces(&self) -> RowKey {
        RowKey::new(&[self.prefix().as_slice(), b"p"])
    }

    /// Key of the piece that begins at `offset`.
    pub(crate) fn piece(&self, offset: u64) -> RowKey {
        RowKey::new(&[self.pieces().as_slice(), &offset.to_be_bytes()])
    }
}

/// Gives the next row number: numbers only grow and are never given twice,
/// so rows of a blob removed long ago are never mistaken for a new one's.
pub(crate) fn next_number(chunks: &mut Rw<'_>) -> Result<u64, BlobError> {
    let mut numbers = Numbers::default();
    let n = numbers.take(chunks)?;
    numbers.save(chunks)?;
    Ok(n)
}

/// Row numbers given out through one write transaction: the counter row is
/// read at the first number and written once by [`Numbers::save`], however
/// many blobs the transaction stores (a sync call stores hundreds of small
/// assets; reading, sealing and rewriting the counter for each was a few
/// per cent of the receiving thread). `save` must run before the
/// transaction commits, or the numbers would be given again.
#[derive(Debug, Default)]
pub(crate) struct Numbers {
    /// The next number to give, once the counter row was read.
    next: Option<u64>,
}

impl Numbers {
    /// The next number, unique over the store's life.
    pub(crate) fn take(&mut self, chunks: &mut Rw<'_>) -> Result<u64, BlobError> {
        let n = match self.next {
            Some(n) => n,
            None => match chunks.get(NEXT_NUMBER)? {
                Some(v) => read_u64(NEXT_NUMBER, v.value()).ok_or(DamagedRow {
                    what: "next blob row number",
                })?,
                None => 1,
            },
        };
        let next = n.checked_add(1).ok_or(DamagedRow {
            what: "next blob row number (exhausted)",
        })?;
        self.next = Some(next);
        Ok(n)
    }

    /// Writes the counter past every number given (nothing when none was).
    pub(crate) fn save(self, chunks: &mut Rw<'_>) -> Result<(), BlobError> {
        if let Some(next) = self.next {
            chunks.insert(
                NEXT_NUMBER,
                seal(NEXT_NUMBER, next.to_be_bytes().to_vec()).as_slice(),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use redb::ReadableDatabase;
    use serde::Serialize;

    use super::*;
    use crate::Store;
    use crate::blob::{BlobStatus, decode_meta, encode_meta};
    use crate::schema::{BLOB_CHUNKS, BLOB_META};

    /// The metadata layout before row numbers, to write an older store.
    #[derive(Serialize)]
    struct OldMeta {
        size: u64,
        status: BlobStatus,
        chunk_hashes: Vec<[u8; 32]>,
        last_use_ms: u64,
    }

    fn noise(len: usize, seed: u64) -> Vec<u8> {
        troupe_protocol::testing::noise(len, seed)
    }

    /// Writes `bytes` as a store written before row numbers would have:
    /// the old metadata layout and zstd rows under the blob's hash.
    fn put_old(s: &Store, bytes: &[u8]) -> BlobHash {
        let h = BlobHash(*blake3::hash(bytes).as_bytes());
        let chunks: Vec<&[u8]> = bytes.chunks(crate::blob::CHUNK).collect();
        let txn = s.db.begin_write().unwrap();
        {
            let mut rows = txn.open_table(BLOB_CHUNKS).unwrap();
            for (i, c) in chunks.iter().enumerate() {
                let z = zstd::bulk::compress(c, 1).unwrap();
                rows.insert(Rows::Hash(h).chunk(i as u32).as_slice(), z.as_slice())
                    .unwrap();
            }
            let m = OldMeta {
                size: bytes.len() as u64,
                status: BlobStatus::Complete,
                chunk_hashes: chunks.iter().map(|c| *blake3::hash(c).as_bytes()).collect(),
                last_use_ms: 1,
            };
            put_meta_row(&txn, &h, &m);
        }
        txn.commit().unwrap();
        h
    }

    /// Writes `m` (a metadata layout, old or current) as the meta row of `h`.
    fn put_meta_row(txn: &redb::WriteTransaction, h: &BlobHash, m: &impl Serialize) {
        txn.open_table(BLOB_META)
            .unwrap()
            .insert(h.0.as_slice(), postcard::to_allocvec(m).unwrap().as_slice())
            .unwrap();
    }

    fn meta(s: &Store, h: &BlobHash) -> Option<BlobMeta> {
        let txn = s.db.begin_read().unwrap();
        let t = txn.open_table(BLOB_META).unwrap();
        t.get(h.0.as_slice())
            .unwrap()
            .map(|v| decode_meta(v.value()).unwrap())
    }

    /// Rows whose key starts with `prefix`.
    fn rows_under(s: &Store, prefix: &[u8]) -> usize {
        let txn = s.db.begin_read().unwrap();
        let t = txn.open_table(BLOB_CHUNKS).unwrap();
        t.range(prefix..)
            .unwrap()
            .map(|r| r.unwrap())
            .take_while(|(k, _)| k.value().starts_with(prefix))
            .count()
    }

    #[test]
    fn metadata_in_either_layout_decodes_and_damage_does_not() {
        let old = OldMeta {
            size: 5,
            status: BlobStatus::Receiving { received: 2 },
            chunk_hashes: vec![[3; 32]],
            last_use_ms: 9,
        };
        let m = decode_meta(&postcard::to_allocvec(&old).unwrap()).unwrap();
        assert_eq!(m.rows, None);
        assert_eq!(m.status, BlobStatus::Receiving { received: 2 });
        assert_eq!((m.size, m.last_use_ms, m.chunk_hashes.len()), (5, 9, 1));

        assert!(
            !m.subtree_hashes,
            "older layouts have chunk hashes of each chunk alone"
        );
        let now = BlobMeta {
            rows: Some(77),
            subtree_hashes: true,
            ..m
        };
        let bytes = encode_meta(&now).unwrap();
        assert_eq!(decode_meta(&bytes).unwrap(), now);
        // Without its last field, it is the layout before subtree hashes.
        let before = decode_meta(&bytes[..bytes.len() - 1]).unwrap();
        assert_eq!((before.rows, before.subtree_hashes), (Some(77), false));
        assert!(decode_meta(&bytes[..bytes.len() - 2]).is_err());
        assert!(decode_meta(&[bytes.as_slice(), &[0, 0, 0]].concat()).is_err());
    }

    #[test]
    fn a_blob_stored_before_row_numbers_reads_scrubs_and_is_freed() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path().join("s.redb")).unwrap();
        let bytes = noise(crate::blob::CHUNK + 5_000, 1);
        let h = put_old(&s, &bytes);
        assert_eq!(s.get_blob(&h).unwrap(), bytes);
        let at = crate::blob::CHUNK as u64 - 3;
        use troupe_protocol::sync::oplog_view::OplogView;
        assert_eq!(
            s.view().unwrap().blob_range(&h, at, 10).unwrap().unwrap(),
            bytes[at as usize..at as usize + 10]
        );
        let report = s.scrub_report().unwrap();
        assert!(report.blobs.is_empty(), "{report:?}");
        assert_eq!(report.blobs_checked, 1);

        // Unreferenced and long unused: GC frees its rows under the hash.
        let freed = s.gc_blobs(u64::MAX / 2).unwrap();
        assert_eq!(freed.freed, vec![h]);
        assert_eq!(rows_under(&s, &h.0), 0);
        let m = meta(&s, &h).unwrap();
        assert_eq!((m.status, m.rows), (BlobStatus::Unavailable, None));

        // Put again, it is kept under a number like any new blob.
        assert_eq!(s.put_blob(&bytes).unwrap(), h);
        let n = meta(&s, &h).unwrap().rows.expect("a number");
        // A full raw chunk is a head and a tail row, then the short chunk.
        assert_eq!(rows_under(&s, Rows::Number(n).prefix().as_slice()), 3);
        assert_eq!(s.get_blob(&h).unwrap(), bytes);
    }

    #[test]
    fn an_old_blob_that_rotted_is_dropped_by_scrub_with_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path().join("s.redb")).unwrap();
        let bytes = noise(3_000, 2);
        let h = put_old(&s, &bytes);
        let txn = s.db.begin_write().unwrap();
        txn.open_table(BLOB_CHUNKS)
            .unwrap()
            .insert(Rows::Hash(h).chunk(0).as_slice(), b"rotten".as_slice())
            .unwrap();
        txn.commit().unwrap();
        assert_eq!(s.scrub_report().unwrap().blobs, vec![h]);
        assert_eq!(rows_under(&s, &h.0), 0);
        assert!(meta(&s, &h).is_none(), "absent: fetched again from a peer");
    }

    #[test]
    fn salvage_keeps_old_and_numbered_blobs_under_new_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let old_bytes = noise(2_000, 3);
        let new_bytes = noise(crate::blob::CHUNK * 2 + 1, 4);
        let (old, new) = {
            let s = Store::open(&path).unwrap();
            (put_old(&s, &old_bytes), s.put_blob(&new_bytes).unwrap())
        };
        let report = Store::salvage(&path).unwrap();
        assert_eq!(report.blobs_kept, 2, "{report:?}");
        let s = Store::open(&path).unwrap();
        assert_eq!(s.get_blob(&old).unwrap(), old_bytes);
        assert_eq!(s.get_blob(&new).unwrap(), new_bytes);
        let (a, b) = (meta(&s, &old).unwrap().rows, meta(&s, &new).unwrap().rows);
        assert!(a.is_some() && b.is_some() && a != b, "{a:?} {b:?}");
        assert_eq!(rows_under(&s, &old.0), 0, "nothing left under the hash");
    }

    #[test]
    fn numbers_only_grow_even_after_their_blobs_are_freed() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path().join("s.redb")).unwrap();
        let a = s.put_blob(&noise(100, 5)).unwrap();
        let b = s.put_blob(&noise(100, 6)).unwrap();
        let (na, nb) = (meta(&s, &a).unwrap().rows, meta(&s, &b).unwrap().rows);
        assert!(na < nb, "{na:?} {nb:?}");
        assert_eq!(s.gc_blobs(u64::MAX / 2).unwrap().freed.len(), 2);
        let c = s.put_blob(&noise(100, 7)).unwrap();
        let nc = meta(&s, &c).unwrap().rows;
        assert!(nc > nb, "the freed numbers are not given again: {nc:?}");
        // A freed blob received again gets a new number too.
        let again = noise(100, 5);
        assert_eq!(s.put_blob(&again).unwrap(), a);
        assert!(meta(&s, &a).unwrap().rows > nc);
        assert_eq!(s.get_blob(&c).unwrap(), noise(100, 7));
    }

    /// Begins a receive of `bytes` and writes its first chunk, then leaves
    /// its metadata as an older version would have: chunk hashes of each
    /// chunk alone (`rotted` writes a wrong one).
    fn old_partial(s: &Store, bytes: &[u8], rotted: bool) -> BlobHash {
        let k = crate::blob::CHUNK;
        let h = BlobHash(*blake3::hash(bytes).as_bytes());
        s.blob_begin(&h, bytes.len() as u64).unwrap();
        assert!(!s.blob_write_chunk(&h, 0, &bytes[..k]).unwrap());
        let m = meta(s, &h).unwrap();
        assert!(m.subtree_hashes);
        let mut first = *blake3::hash(&bytes[..k]).as_bytes();
        if rotted {
            first[0] ^= 1;
        }
        let old = crate::blob::MetaV2 {
            size: m.size,
            status: m.status,
            chunk_hashes: vec![first],
            last_use_ms: m.last_use_ms,
            rows: m.rows,
        };
        let txn = s.db.begin_write().unwrap();
        put_meta_row(&txn, &h, &old);
        txn.commit().unwrap();
        assert!(!meta(s, &h).unwrap().subtree_hashes);
        h
    }

    #[test]
    fn a_receive_begun_before_subtree_hashes_completes_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path().join("s.redb")).unwrap();
        let k = crate::blob::CHUNK;
        let bytes = noise(3 * k + 77, 4);
        let h = old_partial(&s, &bytes, false);
        assert!(!s.blob_write_chunk(&h, k as u64, &bytes[k..2 * k]).unwrap());
        assert!(
            !s.blob_write_chunk(&h, 2 * k as u64, &bytes[2 * k..3 * k])
                .unwrap()
        );
        assert!(
            s.blob_write_chunk(&h, 3 * k as u64, &bytes[3 * k..])
                .unwrap()
        );
        assert!(meta(&s, &h).unwrap().subtree_hashes);
        assert_eq!(s.get_blob(&h).unwrap(), bytes);
        let report = s.scrub_report().unwrap();
        assert!(report.blobs.is_empty(), "{report:?}");

        // A held chunk that no longer matches its old hash: the receive is
        // discarded rather than completed from it.
        let bytes = noise(2 * k + 9, 5);
        let h = old_partial(&s, &bytes, true);
        assert!(matches!(
            s.blob_write_chunk(&h, k as u64, &bytes[k..2 * k]),
            Err(crate::BlobError::HashMismatch { .. })
        ));
        assert!(meta(&s, &h).is_none());
    }
}
