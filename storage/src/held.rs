//! A `bundles` row: a held copy, and (since schema 5) the hash recorded
//! for its slot, in one row.
//!
//! # Why the hash rides with the copy
//! Every bundle read checks the stored bytes against the hash recorded when
//! the bundle was verified and applied, so a copy that rotted at rest is
//! never served. Until schema 4 that hash lived only in `seq_hash`, a row of
//! its own: every committed bundle cost two B-tree inserts for the slot, and
//! a tenth of a full sync's storage time went to the second one. Now the
//! row is `[2][hash: 32][seal: 8][copy]`:
//! - the seal (key and hash, see [`crate::schema::seal`]) says whether the
//!   hash itself survived; a row whose seal fails counts as carrying no
//!   hash, as a `seq_hash` row failing its seal always has;
//! - the copy is the bundle's bytes as received, which start with 0 or 1
//!   (unsigned or signed, see `troupe_protocol::bundle`), so a row of an
//!   older store (the bare copy) is told apart by its first byte and read as
//!   it is, with its hash in `seq_hash`. Nothing is rewritten on upgrade.
//!
//! `seq_hash` keeps a row for a slot whose copy is gone (quarantined, or
//! withdrawn by a fork): the hash a clean copy must have. The recorded hash
//! of a slot is the one its copy carries, else its `seq_hash` row.

use redb::{ReadableTable, WriteTransaction};
use troupe_protocol::BundleHash;

use crate::schema::{SEQ_HASH, read_seq_hash, row_tag, seq_hash_value, unseal};

/// First byte of a row that carries its hash (a copy starts with 0 or 1).
const CARRIES_HASH: u8 = 2;
/// Flag, hash and seal before the copy.
const HEAD: usize = 1 + 32 + 8;

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
    v.reserve(HEAD + copy.len());
    v.push(CARRIES_HASH);
    v.extend_from_slice(&hash.0);
    v.extend_from_slice(&row_tag(key, &hash.0));
    v.extend_from_slice(copy);
}

/// A `bundles` row taken apart.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HeldRow<'v> {
    /// The bundle's bytes (what peers are served and what decodes).
    pub(crate) copy: &'v [u8],
    /// The hash the row carries, when it has one and its seal holds.
    pub(crate) carried: Option<BundleHash>,
}

/// Splits a `bundles` row stored under `key`.
pub(crate) fn split<'v>(key: &[u8], v: &'v [u8]) -> HeldRow<'v> {
    match v.split_first() {
        Some((&CARRIES_HASH, rest)) if v.len() >= HEAD => {
            let (sealed, copy) = rest.split_at(HEAD - 1);
            HeldRow {
                copy,
                carried: unseal(key, sealed)
                    .and_then(|h| h.try_into().ok())
                    .map(BundleHash),
            }
        }
        _ => HeldRow {
            copy: v,
            carried: None,
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
            assert_eq!((r.copy, r.carried), (copy, Some(h)));
            // An older store's row is the copy alone.
            let old = split(&key, copy);
            assert_eq!((old.copy, old.carried), (copy, None));
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
        assert_eq!((r.copy, r.carried), (&[1u8, 2, 3][..], None));
        // Too short to carry anything: read as a bare (and undecodable) copy.
        assert_eq!(split(&key, &[2, 1]).copy, &[2, 1]);
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
