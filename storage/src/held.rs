//! A `bundles` row: a held copy, the hash recorded for its slot, and (since
//! schema 6) a checksum of the copy, in one row.
//!
//! # Why the hash rides with the copy
//! Every bundle read checks the stored bytes against the hash recorded when
//! the bundle was verified and applied, so a copy that rotted at rest is
//! never served. Until schema 4 that hash lived only in `seq_hash`, a row of
//! its own: every committed bundle cost two B-tree inserts for the slot, and
//! a tenth of a full sync's storage time went to the second one.
//!
//! # Why the copy has a checksum of its own
//! Checking a copy against its hash means hashing it with blake3 again on
//! every read: in a 1M-write sync that was a fifth of the sending storage
//! thread's time, for a check that only has to catch damage at rest (what
//! peers send is verified by its hash and signatures when it arrives).
//! Since schema 6 a row is `[3][hash: 32][hash tag: 8][copy tag: 8][copy]`:
//! - the hash tag (a 64-bit multiply-fold checksum over key and hash) says
//!   whether the hash itself survived; a row whose hash tag fails counts as
//!   carrying no hash, as a `seq_hash` row failing its seal always has;
//! - the copy tag (the same kind of checksum over the copy, seeded by the
//!   hash tag) says whether the copy is the one that hashed to it when the
//!   row was written: a row whose two tags hold is served without hashing
//!   the copy again ([`HeldRow::intact`]). A copy tag that fails only sends
//!   the read back to the full check (blake3 of the copy against the hash),
//!   so damage to the tag alone never withholds a clean copy.
//!
//! Schema 5 rows are `[2][hash: 32][seal: 8][copy]` (a blake3 seal over key
//! and hash, the copy checked with blake3 on every read). The copy is the
//! bundle's bytes as received, which start with 0 or 1 (unsigned or signed,
//! see `troupe_protocol::bundle`), so a row of an older store (the bare
//! copy) is told apart by its first byte and read as it is, with its hash in
//! `seq_hash`. Nothing is rewritten on upgrade.
//!
//! `seq_hash` keeps a row for a slot whose copy is gone (quarantined, or
//! withdrawn by a fork): the hash a clean copy must have. The recorded hash
//! of a slot is the one its copy carries, else its `seq_hash` row.

use redb::{ReadableTable, WriteTransaction};
use troupe_protocol::{ActorId, BundleHash, WorkspaceId};

use crate::schema::{SEQ_HASH, fold, le_word, read_seq_hash, seq_hash_value, state_tag, unseal};

/// First byte of a schema 5 row, carrying its hash under a blake3 seal (a
/// copy starts with 0 or 1).
const CARRIES_HASH: u8 = 2;
/// Flag, hash and seal before the copy, in a schema 5 row.
const SEALED_HEAD: usize = 1 + 32 + 8;
/// First byte of a row that carries its hash and a checksum of its copy.
const CHECKED: u8 = 3;
/// Flag, hash, hash tag and copy tag before the copy.
const HEAD: usize = 1 + 32 + 8 + 8;

/// The `bundles` value for a copy whose verified hash is `hash`.
#[cfg(test)]
pub(crate) fn held_value(key: &[u8], hash: &BundleHash, copy: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    held_value_append(&mut v, key, hash, copy);
    v
}

/// Appends the `bundles` value for a copy whose verified hash is `hash`
/// to `v` (a batch's values, one after the other).
pub(crate) fn held_value_append(v: &mut Vec<u8>, key: &[u8], hash: &BundleHash, copy: &[u8]) {
    let hash_tag = hash_tag(key, &hash.0);
    v.reserve(HEAD + copy.len());
    v.push(CHECKED);
    v.extend_from_slice(&hash.0);
    v.extend_from_slice(&hash_tag.to_le_bytes());
    v.extend_from_slice(&copy_tag(hash_tag, copy).to_le_bytes());
    v.extend_from_slice(copy);
}

const K0: u64 = 0x2d35_8dcc_aa6c_78a5;
const K1: u64 = 0x8bb8_4b93_962e_acc9;
const K2: u64 = 0x4b33_a62e_d433_d4a3;

/// The checksum of a row's key and hash: the entity rows' `state_tag`
/// (damage at rest, or a row under another key), as a word.
fn hash_tag(key: &[u8], hash: &[u8; 32]) -> u64 {
    u64::from_le_bytes(state_tag(key, hash))
}

/// The checksum of a copy, seeded by its row's hash tag (so it also fails
/// for a copy under another key or beside another hash). Four independent
/// lanes of 8 bytes: a copy of 700 bytes costs a few dozen nanoseconds,
/// against about half a microsecond for hashing it with blake3 again.
fn copy_tag(hash_tag: u64, copy: &[u8]) -> u64 {
    let seed = hash_tag ^ (copy.len() as u64).rotate_left(17);
    let mut lanes = [seed, seed ^ K0, seed ^ K1, seed ^ K2];
    let mut blocks = copy.chunks_exact(32);
    for b in &mut blocks {
        for (lane, w) in lanes.iter_mut().zip(b.chunks_exact(8)) {
            *lane = fold(*lane ^ le_word(w), K1);
        }
    }
    let mut h = fold(lanes[0] ^ lanes[1].rotate_left(21), K2)
        ^ fold(lanes[2] ^ lanes[3].rotate_left(43), K0);
    for w in blocks.remainder().chunks(8) {
        h = fold(h ^ le_word(w), K1);
    }
    fold(h ^ K2, K1 ^ h.rotate_left(29))
}

/// A `bundles` row taken apart.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HeldRow<'v> {
    /// The bundle's bytes (what peers are served and what decodes).
    pub(crate) copy: &'v [u8],
    /// The hash the row carries, when it has one and its seal holds.
    pub(crate) carried: Option<BundleHash>,
    /// The copy's own checksum holds: it is the copy that hashed to
    /// `carried` when the row was written, so it needs no blake3 again.
    /// False for older rows and for a copy whose checksum fails (which
    /// a read then checks against `carried` in full).
    pub(crate) intact: bool,
}

impl HeldRow<'_> {
    /// Whether the copy may be served as the bundle with hash `hash` at
    /// `slot`: its checksum holds and it carries that hash, or it hashes to
    /// `hash` and names the slot (the full check, for older rows and for a
    /// copy whose checksum fails).
    pub(crate) fn sound(&self, hash: &BundleHash, slot: (&WorkspaceId, &ActorId, u64)) -> bool {
        (self.intact && self.carried.as_ref() == Some(hash))
            || crate::scrub::check_copy(self.copy, hash, slot).is_some()
    }
}

/// Splits a `bundles` row stored under `key`.
pub(crate) fn split<'v>(key: &[u8], v: &'v [u8]) -> HeldRow<'v> {
    match v.split_first() {
        Some((&CHECKED, rest)) if v.len() >= HEAD => {
            let (hash, rest) = rest.split_at(32);
            let (tags, copy) = rest.split_at(16);
            let hash: [u8; 32] = hash.try_into().unwrap_or([0; 32]);
            let h = hash_tag(key, &hash);
            let carried = (le_word(&tags[..8]) == h).then_some(BundleHash(hash));
            HeldRow {
                copy,
                carried,
                intact: carried.is_some() && le_word(&tags[8..]) == copy_tag(h, copy),
            }
        }
        Some((&CARRIES_HASH, rest)) if v.len() >= SEALED_HEAD => {
            let (sealed, copy) = rest.split_at(SEALED_HEAD - 1);
            HeldRow {
                copy,
                carried: unseal(key, sealed)
                    .and_then(|h| h.try_into().ok())
                    .map(BundleHash),
                intact: false,
            }
        }
        _ => HeldRow {
            copy: v,
            carried: None,
            intact: false,
        },
    }
}

/// Keeps the hash a copy carried as its slot's `seq_hash` row, for a copy
/// taken out of `bundles` (quarantined, or withdrawn by a fork): a clean
/// copy must still match it.
pub(crate) fn keep_hash_of_removed(
    txn: &WriteTransaction,
    key: &[u8],
    row: &HeldRow<'_>,
) -> Result<(), redb::TableError> {
    if let Some(h) = row.carried {
        let v = seq_hash_value(key, &h);
        txn.open_table(SEQ_HASH)?
            .insert(key, v.as_slice())
            .map_err(redb::TableError::Storage)?;
    }
    Ok(())
}

/// The recorded hash of the slot at `key` whose `bundles` row is `row`
/// (when it has one): the hash the row carries, else the `seq_hash` row's.
pub(crate) fn recorded_with(
    seq_hash: &impl ReadableTable<&'static [u8], &'static [u8]>,
    key: &[u8],
    row: Option<&HeldRow<'_>>,
) -> Result<Option<BundleHash>, redb::StorageError> {
    if let Some(h) = row.and_then(|r| r.carried) {
        return Ok(Some(h));
    }
    Ok(seq_hash
        .get(key)?
        .and_then(|v| read_seq_hash(key, v.value())))
}

/// The recorded hash of the slot at `key`, and whether a copy is held.
pub(crate) fn recorded(
    bundles: &impl ReadableTable<&'static [u8], &'static [u8]>,
    seq_hash: &impl ReadableTable<&'static [u8], &'static [u8]>,
    key: &[u8],
) -> Result<(Option<BundleHash>, bool), redb::StorageError> {
    let row = bundles.get(key)?;
    let held = row.as_ref().map(|v| split(key, v.value()));
    Ok((recorded_with(seq_hash, key, held.as_ref())?, held.is_some()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_carries_its_hash_and_an_older_row_reads_as_its_bare_copy() {
        let key = [7u8; 72];
        let h = BundleHash([3; 32]);
        for copy in [&[0u8, 9, 9][..], &[1u8; 70][..]] {
            let v = held_value(&key, &h, copy);
            let r = split(&key, &v);
            assert_eq!((r.copy, r.carried, r.intact), (copy, Some(h), true));
            // An older store's row is the copy alone.
            let old = split(&key, copy);
            assert_eq!((old.copy, old.carried, old.intact), (copy, None, false));
            // A schema 5 row: the hash under a blake3 seal, no copy checksum.
            let mut v5 = vec![CARRIES_HASH];
            v5.extend_from_slice(&h.0);
            v5.extend_from_slice(&crate::schema::row_tag(&key, &h.0));
            v5.extend_from_slice(copy);
            let r5 = split(&key, &v5);
            assert_eq!((r5.copy, r5.carried, r5.intact), (copy, Some(h), false));
        }
    }

    #[test]
    fn a_damaged_or_moved_hash_is_not_carried() {
        let key = [7u8; 72];
        let h = BundleHash([3; 32]);
        let mut v = held_value(&key, &h, &[1, 2, 3]);
        assert_eq!(split(&[8u8; 72], &v).carried, None, "moved to another key");
        v[5] ^= 1;
        let r = split(&key, &v);
        assert_eq!(
            (r.copy, r.carried, r.intact),
            (&[1u8, 2, 3][..], None, false)
        );
        // Too short to carry anything: read as a bare (and undecodable) copy.
        assert_eq!(split(&key, &[2, 1]).copy, &[2, 1]);
        assert_eq!(split(&key, &[3; HEAD - 1]).copy, &[3; HEAD - 1]);
    }

    /// Every single-bit flip anywhere in a row is caught: in the flag, hash
    /// or hash tag the hash is no longer carried; in the copy or its tag
    /// the copy is no longer taken as intact (a read then hashes it).
    #[test]
    fn any_flipped_bit_withdraws_the_hash_or_the_copy_s_clean_bill() {
        let key = [7u8; 72];
        let h = BundleHash([3; 32]);
        for len in [0usize, 1, 7, 31, 32, 33, 64, 95, 700] {
            let copy: Vec<u8> = (0..len).map(|i| (i * 37 + 1) as u8).collect();
            let v = held_value(&key, &h, &copy);
            let r = split(&key, &v);
            assert_eq!((r.copy, r.carried, r.intact), (&copy[..], Some(h), true));
            for bit in 0..v.len() * 8 {
                let mut w = v.clone();
                w[bit / 8] ^= 1 << (bit % 8);
                let r = split(&key, &w);
                if bit / 8 < 1 + 32 + 8 {
                    assert!(r.carried.is_none() || r.copy != copy, "bit {bit} of {len}");
                } else {
                    assert_eq!(r.carried, Some(h), "bit {bit} of {len}: the hash survived");
                    assert!(!r.intact, "bit {bit} of {len}");
                }
            }
            // The same copy beside another hash, or under another key.
            let other = held_value(&key, &BundleHash([4; 32]), &copy);
            let mut swapped = other[..HEAD - 8].to_vec();
            swapped.extend_from_slice(&v[HEAD - 8..]);
            assert!(!split(&key, &swapped).intact);
            assert!(!split(&[8u8; 72], &v).intact);
        }
    }

    /// A copy whose own checksum rotted, the copy itself clean, is still
    /// read, served and scrubbed clean (the read falls back to hashing it);
    /// a copy that rotted under a sound checksum is refused.
    #[test]
    fn a_rotten_copy_tag_costs_a_full_check_not_the_copy() {
        use redb::ReadableDatabase;
        use troupe_protocol::sync::oplog_view::OplogView;
        use troupe_protocol::testing::{chain, key, test_workspace};
        use troupe_protocol::workspace::{WorkspaceInfo, WorkspaceKind};

        use crate::schema::{BUNDLES, seq_key};
        use crate::{ReadError, Store};

        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path().join("s.redb")).unwrap();
        let info = WorkspaceInfo::new(test_workspace(), "t", WorkspaceKind::Show);
        s.add_workspace(&info).unwrap();
        let (ws, all) = chain(3, 4);
        let author = key(3).actor_id();
        s.commit_batch(&ws, all.clone(), "peer").unwrap();
        // `at` counts from the row's start, or back from its end when None.
        let flip = |seq: u64, at: Option<usize>| {
            let k = seq_key(&ws, &author, seq);
            let txn = s.db.begin_write().unwrap();
            {
                let mut t = txn.open_table(BUNDLES).unwrap();
                let mut v = t.get(k.as_slice()).unwrap().unwrap().value().to_vec();
                assert_eq!(v[0], CHECKED, "this build writes checked rows");
                let at = at.unwrap_or(v.len() - 3);
                v[at] ^= 0x04;
                t.insert(k.as_slice(), v.as_slice()).unwrap();
            }
            txn.commit().unwrap();
            let txn = s.db.begin_read().unwrap();
            let t = txn.open_table(BUNDLES).unwrap();
            let v = t.get(k.as_slice()).unwrap().unwrap();
            assert!(!split(&k, v.value()).intact);
        };
        flip(2, Some(HEAD - 3));
        assert_eq!(s.bundle(&ws, &author, 2).unwrap().as_ref(), Some(&all[1]));
        let mut served = Vec::new();
        s.view()
            .unwrap()
            .bundle_run(&ws, &author, 1, 4, &mut |seq, bytes, _| {
                served.push((seq, bytes));
                true
            })
            .unwrap();
        let want: Vec<_> = all
            .iter()
            .map(|b| (b.body().seq, b.bytes().to_vec()))
            .collect();
        assert_eq!(served, want);
        assert!(s.scrub().unwrap().is_empty());

        flip(3, None);
        assert!(matches!(
            s.bundle(&ws, &author, 3),
            Err(ReadError::Corrupt(_))
        ));
        let mut served = Vec::new();
        s.view()
            .unwrap()
            .bundle_run(&ws, &author, 1, 4, &mut |seq, _, _| {
                served.push(seq);
                true
            })
            .unwrap();
        assert_eq!(served, [1, 2, 4], "the rotten copy is never served");
    }

    /// A store written before copies carried their hash (schema 4: bare
    /// copies, every hash in `seq_hash`) opens, reads, serves, scrubs and
    /// takes new bundles on top; a rotten old copy is quarantined with its
    /// recorded hash and a clean copy restores it, in the new layout.
    #[test]
    fn a_schema_4_store_reads_as_it_is_and_grows_in_the_new_layout() {
        use redb::{Database, ReadableDatabase};
        use troupe_protocol::sync::oplog_view::OplogView;
        use troupe_protocol::testing::{chain, key, test_workspace};
        use troupe_protocol::workspace::{WorkspaceInfo, WorkspaceKind};

        use crate::schema::{BUNDLES, META, SEQ_HASH, seq_hash_value, seq_key};
        use crate::{ReadError, Store};

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let (ws, all) = chain(3, 9);
        let author = key(3).actor_id();
        {
            let s = Store::open(&path).unwrap();
            let info = WorkspaceInfo::new(test_workspace(), "t", WorkspaceKind::Show);
            s.add_workspace(&info).unwrap();
            s.commit_batch(&ws, all[..6].to_vec(), "peer").unwrap();
        }
        // Rewrite it as schema 4 wrote it.
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut b = txn.open_table(BUNDLES).unwrap();
                let mut h = txn.open_table(SEQ_HASH).unwrap();
                let rows = crate::schema::owned_rows(&b);
                assert_eq!(rows.len(), 6);
                for (k, v) in rows {
                    let row = split(&k, &v);
                    let hash = row.carried.expect("this build's rows carry their hash");
                    let bare = row.copy.to_vec();
                    b.insert(k.as_slice(), bare.as_slice()).unwrap();
                    h.insert(k.as_slice(), seq_hash_value(&k, &hash).as_slice())
                        .unwrap();
                }
                txn.open_table(META)
                    .unwrap()
                    .insert(b"schema".as_slice(), 4u32.to_be_bytes().as_slice())
                    .unwrap();
            }
            txn.commit().unwrap();
        }

        let s = Store::open(&path).unwrap();
        for b in &all[..6] {
            let got = s.bundle(&ws, &author, b.body().seq).unwrap();
            assert_eq!(got.as_ref(), Some(b), "old copy {} reads", b.body().seq);
        }
        assert_eq!(s.history(&ws).unwrap().len(), 6);
        assert_eq!(
            s.bundle_by_hash(&all[2].hash()).unwrap().as_ref(),
            Some(&all[2])
        );
        let mut served = Vec::new();
        s.view()
            .unwrap()
            .bundle_run(&ws, &author, 1, 6, &mut |seq, bytes, h| {
                served.push((seq, bytes, h));
                true
            })
            .unwrap();
        let want: Vec<_> = all[..6]
            .iter()
            .map(|b| (b.body().seq, b.bytes().to_vec(), b.hash()))
            .collect();
        assert_eq!(served, want, "old copies are served as they were received");
        assert!(s.scrub().unwrap().is_empty());
        assert!(s.verify_rebuild().unwrap().is_empty());

        // New bundles link to the old ones (the first link is checked
        // against the hash `seq_hash` holds) and carry their hash.
        let out = s.commit_batch(&ws, all[6..].to_vec(), "peer").unwrap();
        assert_eq!(out.committed.len(), 3);
        assert!(out.quarantined.is_empty());
        let k7 = seq_key(&ws, &author, 7);
        {
            let txn = s.db.begin_read().unwrap();
            let t = txn.open_table(BUNDLES).unwrap();
            let v = t.get(k7.as_slice()).unwrap().unwrap();
            assert_eq!(split(&k7, v.value()).carried, Some(all[6].hash()));
            let h = txn.open_table(SEQ_HASH).unwrap();
            assert!(h.get(k7.as_slice()).unwrap().is_none(), "no second row");
        }

        // Rot one old copy and one new one: both are refused, quarantined,
        // listed for repair with the hash recorded for them, and restored
        // by a clean copy.
        for b in [&all[2], &all[6]] {
            let seq = b.body().seq;
            let k = seq_key(&ws, &author, seq);
            {
                let txn = s.db.begin_write().unwrap();
                {
                    let mut t = txn.open_table(BUNDLES).unwrap();
                    let mut v = t.get(k.as_slice()).unwrap().unwrap().value().to_vec();
                    let at = v.len() - 3;
                    v[at] ^= 0x10;
                    t.insert(k.as_slice(), v.as_slice()).unwrap();
                }
                txn.commit().unwrap();
            }
            assert!(matches!(
                s.bundle(&ws, &author, seq),
                Err(ReadError::Corrupt(_))
            ));
            let repair = s.scrub().unwrap();
            assert_eq!(repair.len(), 1, "slot {seq}");
            assert_eq!((repair[0].seq, repair[0].expected), (seq, Some(b.hash())));
            let out = s.commit_batch(&ws, vec![b.clone()], "peer").unwrap();
            assert_eq!(out.committed.len(), 1, "slot {seq} restored");
            assert_eq!(s.bundle(&ws, &author, seq).unwrap().as_ref(), Some(b));
            assert!(s.scrub().unwrap().is_empty());
        }
        assert!(s.verify_rebuild().unwrap().is_empty());
    }
}
