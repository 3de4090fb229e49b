//! Bit rot under a running store: a bundle whose stored bytes change is never
//! served. A snapshot read answers a typed Corrupt error; a store read also
//! moves the copy to quarantine and out of the ranges; scrub lists it for
//! repair with the expected hash until a clean copy from a peer restores it.

use std::sync::{Arc, Mutex};

use redb::StorageBackend;
use troupe_protocol::sync::oplog_view::{OplogView, ViewError};
use troupe_protocol::testing::{chain, key, test_workspace};
use troupe_protocol::workspace::{WorkspaceInfo, WorkspaceKind};
use troupe_storage::{ReadError, Store};

#[derive(Debug, Clone, Default)]
struct Mem(Arc<Mutex<Vec<u8>>>);

impl StorageBackend for Mem {
    fn len(&self) -> Result<u64, std::io::Error> {
        Ok(self.0.lock().unwrap().len() as u64)
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        let g = self.0.lock().unwrap();
        let o = offset as usize;
        out.copy_from_slice(
            g.get(o..o + out.len())
                .ok_or_else(|| std::io::Error::other("read past end"))?,
        );
        Ok(())
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.0.lock().unwrap().resize(len as usize, 0);
        Ok(())
    }
    fn sync_data(&self) -> Result<(), std::io::Error> {
        Ok(())
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        let mut g = self.0.lock().unwrap();
        let o = offset as usize;
        if g.len() < o + data.len() {
            g.resize(o + data.len(), 0);
        }
        g[o..o + data.len()].copy_from_slice(data);
        Ok(())
    }
}

/// The test workspace, added to `store`.
fn add_test_workspace(store: &Store) {
    store
        .add_workspace(&WorkspaceInfo::new(
            test_workspace(),
            "t",
            WorkspaceKind::Show,
        ))
        .unwrap();
}

#[test]
fn a_rotten_bundle_is_never_served_and_is_repaired() {
    let mem = Mem::default();
    let store = Store::open_with_backend(mem.clone()).unwrap();
    add_test_workspace(&store);
    let (ws, bundles) = chain(7, 10);
    store.commit_batch(&ws, bundles.clone(), "peer").unwrap();
    let author = key(7).actor_id();
    let victim = &bundles[4];

    // Flip one byte of the summary inside the stored copy (every copy of it in the image).
    let needle = victim.bytes();
    let mut hits = 0;
    {
        let mut img = mem.0.lock().unwrap();
        let mut i = 0;
        while i + needle.len() <= img.len() {
            if &img[i..i + needle.len()] == needle {
                let at = i + needle.len() - 5;
                img[at] ^= 0x20;
                hits += 1;
                i += needle.len();
            } else {
                i += 1;
            }
        }
    }
    assert!(hits >= 1, "the bundle's bytes are in the image");
    // Re-open so no cached page hides the damage.
    drop(store);
    let store = Store::open_unchecked_with_backend(mem.clone()).unwrap();

    // A snapshot taken before any store read sees the rot as a typed error.
    let view = store.view().unwrap();
    assert!(matches!(
        view.bundle(&ws, &author, 5),
        Err(ViewError::Corrupt { seq: 5, .. })
    ));
    assert_eq!(
        view.bundle(&ws, &author, 4).unwrap().unwrap(),
        bundles[3].bytes()
    );
    // A sender's ordered read passes over the rotten copy and serves the rest,
    // each with its recorded hash.
    let mut served = Vec::new();
    view.bundle_run(&ws, &author, 1, 10, &mut |seq, bytes, hash| {
        served.push((seq, bytes, hash));
        true
    })
    .unwrap();
    let expected: Vec<_> = bundles
        .iter()
        .filter(|b| b.body().seq != 5)
        .map(|b| (b.body().seq, b.bytes().to_vec(), b.hash()))
        .collect();
    assert_eq!(served, expected);
    drop(view);

    match store.bundle(&ws, &author, 5) {
        Err(ReadError::Corrupt(c)) => {
            assert_eq!(c.seq, 5);
            assert_eq!(c.expected, Some(victim.hash()));
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // The read moved it to quarantine and out of the ranges.
    let q = store.quarantine_list().unwrap();
    assert_eq!((q.len(), q[0].source.as_str()), (1, "read"));
    assert_eq!(
        store.ranges(&ws).unwrap()[&author].ranges(),
        &[(1, 4), (6, 10)]
    );
    assert_eq!(store.bundle(&ws, &author, 5).unwrap(), None);
    assert_eq!(
        store.history(&ws).unwrap().len(),
        9,
        "history skips the gap"
    );
    // A caller that still quarantines after the read adds no second entry.
    assert_eq!(store.quarantine_corrupt(&ws, &author, 5).unwrap(), None);
    assert_eq!(store.quarantine_list().unwrap().len(), 1);

    // Scrub keeps listing the slot, with its hash, until a clean copy comes.
    for _ in 0..2 {
        let repair = store.scrub().unwrap();
        assert_eq!(repair.len(), 1);
        assert_eq!(
            (repair[0].seq, repair[0].expected),
            (5, Some(victim.hash()))
        );
    }
    assert!(store.quarantine_corrupt(&ws, &author, 6).unwrap().is_none());
    assert_eq!(store.quarantine_list().unwrap().len(), 1);

    // A clean copy arrives: restored, not applied twice.
    let out = store
        .commit_batch(&ws, vec![victim.clone()], "peer")
        .unwrap();
    assert_eq!(out.committed.len(), 1);
    assert_eq!(store.ranges(&ws).unwrap()[&author].ranges(), &[(1, 10)]);
    assert_eq!(
        store.bundle(&ws, &author, 5).unwrap().as_ref(),
        Some(victim)
    );
    assert!(store.verify_rebuild().unwrap().is_empty());
    assert_eq!(store.history(&ws).unwrap().len(), 10);
    assert!(store.scrub().unwrap().is_empty());
}

#[test]
fn a_rotten_blob_is_dropped_by_scrub_and_reported_for_refetch() {
    let mem = Mem::default();
    let store = Store::open_with_backend(mem.clone()).unwrap();
    // Incompressible bytes: zstd stores them verbatim, so they are findable.
    let blob = troupe_protocol::testing::noise(8192, 0x9e37_79b9_7f4a_7c15);
    let h = store.put_blob(&blob).unwrap();
    assert!(store.scrub_report().unwrap().blobs.is_empty());
    drop(store);
    {
        let needle = &blob[1000..1064];
        let mut img = mem.0.lock().unwrap();
        let at = img
            .windows(needle.len())
            .position(|w| w == needle)
            .expect("blob bytes are in the image");
        img[at + 10] ^= 0x01;
    }
    let store = Store::open_unchecked_with_backend(mem.clone()).unwrap();
    assert!(store.get_blob(&h).is_err(), "a rotten blob is never served");
    let report = store.scrub_report().unwrap();
    assert_eq!(report.blobs, vec![h]);
    assert!(matches!(
        store.blob_state(&h).unwrap(),
        troupe_protocol::sync::oplog_view::BlobState::Absent
    ));
    let q = store.quarantine_list().unwrap();
    assert_eq!((q.len(), q[0].source.as_str()), (1, "scrub"));
    assert!(store.scrub_report().unwrap().blobs.is_empty());
    // A clean copy can be received again.
    assert_eq!(store.put_blob(&blob).unwrap(), h);
    assert_eq!(store.get_blob(&h).unwrap(), blob);
}

#[test]
fn bundles_are_found_by_hash_and_rebuild_keeps_the_tip() {
    let store = Store::open_with_backend(Mem::default()).unwrap();
    add_test_workspace(&store);
    // 150 commits of one bundle each.
    let (ws, bundles) = chain(3, 150);
    for b in &bundles {
        store.commit_batch(&ws, vec![b.clone()], "peer").unwrap();
    }
    for b in [&bundles[0], &bundles[63], &bundles[64], &bundles[149]] {
        assert_eq!(store.bundle_by_hash(&b.hash()).unwrap().as_ref(), Some(b));
    }
    let (_, other) = chain(4, 1);
    assert_eq!(store.bundle_by_hash(&other[0].hash()).unwrap(), None);
    assert!(store.scrub().unwrap().is_empty());
    // Rebuild replays the per-slot hashes and keeps the tip.
    let tip = store.author_tip(&ws, &key(3).actor_id()).unwrap();
    store.rebuild().unwrap();
    for b in [&bundles[0], &bundles[100], &bundles[149]] {
        assert_eq!(store.bundle_by_hash(&b.hash()).unwrap().as_ref(), Some(b));
    }
    assert_eq!(store.author_tip(&ws, &key(3).actor_id()).unwrap(), tip);
    assert!(store.verify_rebuild().unwrap().is_empty());
}

#[test]
fn scrub_catches_a_rotten_signature_that_the_hash_does_not_cover() {
    let mem = Mem::default();
    let store = Store::open_with_backend(mem.clone()).unwrap();
    add_test_workspace(&store);
    let (ws, bundles) = chain(7, 10);
    store.commit_batch(&ws, bundles.clone(), "peer").unwrap();
    let author = key(7).actor_id();
    let victim = &bundles[9];
    assert!(victim.signature().is_some());
    drop(store);
    {
        let needle = victim.bytes();
        let mut img = mem.0.lock().unwrap();
        let mut i = 0;
        let mut hits = 0;
        while i + needle.len() <= img.len() {
            if &img[i..i + needle.len()] == needle {
                img[i + 10] ^= 0x04; // inside the signature, outside the hashed body
                hits += 1;
                i += needle.len();
            } else {
                i += 1;
            }
        }
        assert!(hits >= 1);
    }
    let store = Store::open_unchecked_with_backend(mem.clone()).unwrap();
    let repair = store.scrub().unwrap();
    assert_eq!(repair.len(), 1);
    assert_eq!(
        (repair[0].seq, repair[0].expected),
        (10, Some(victim.hash()))
    );
    let q = store.quarantine_list().unwrap();
    assert!(q[0].reason.contains("signature"), "{}", q[0].reason);
    assert_eq!(store.ranges(&ws).unwrap()[&author].ranges(), &[(1, 9)]);
    let out = store
        .commit_batch(&ws, vec![victim.clone()], "peer")
        .unwrap();
    assert_eq!(out.committed.len(), 1);
    assert!(store.scrub().unwrap().is_empty());
    assert!(store.verify_rebuild().unwrap().is_empty());
}

#[test]
fn a_scrub_pass_runs_beside_writes_and_leaves_a_copy_repaired_meanwhile() {
    let mem = Mem::default();
    let store = Store::open_with_backend(mem.clone()).unwrap();
    add_test_workspace(&store);
    let (ws, bundles) = chain(7, 10);
    store.commit_batch(&ws, bundles.clone(), "peer").unwrap();
    let author = key(7).actor_id();
    let victim = &bundles[4];
    {
        let needle = victim.bytes();
        let mut img = mem.0.lock().unwrap();
        let at = img
            .windows(needle.len())
            .position(|w| w == needle)
            .expect("the bundle's bytes are in the image");
        img[at + needle.len() - 5] ^= 0x20;
    }
    drop(store);
    let store = Store::open_unchecked_with_backend(mem.clone()).unwrap();

    // The pass reads a snapshot: the store takes writes meanwhile.
    let pass = store.scrub_pass().unwrap();
    let (_, other) = chain(8, 3);
    assert_eq!(
        store
            .commit_batch(&ws, other, "peer")
            .unwrap()
            .committed
            .len(),
        3
    );
    let findings = pass.check().unwrap();

    // Before the findings are applied, a read quarantines the rotten copy
    // and a clean copy arrives from a peer.
    assert!(store.bundle(&ws, &author, 5).is_err());
    store
        .commit_batch(&ws, vec![victim.clone()], "peer")
        .unwrap();

    store.scrub_apply(findings).unwrap();
    let q = store.quarantine_list().unwrap();
    assert_eq!(
        (q.len(), q[0].source.as_str()),
        (1, "read"),
        "the clean copy is not quarantined again"
    );
    assert_eq!(
        store.bundle(&ws, &author, 5).unwrap().as_ref(),
        Some(victim)
    );
    assert!(store.scrub().unwrap().is_empty());
    assert!(store.verify_rebuild().unwrap().is_empty());
}

#[test]
fn a_store_with_the_old_hash_index_loses_it_at_open_and_keeps_its_bundles() {
    use redb::{ReadableDatabase, TableDefinition, TableHandle};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let (ws, bundles) = chain(5, 3);
    {
        let store = Store::open(&path).unwrap();
        add_test_workspace(&store);
        store.commit_batch(&ws, bundles.clone(), "peer").unwrap();
    }
    // What an older store held beside its bundles.
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        for name in ["hash_index", "hash_log"] {
            let t: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new(name);
            txn.open_table(t)
                .unwrap()
                .insert([7u8; 32].as_slice(), [1u8; 80].as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
    }
    {
        let store = Store::open(&path).unwrap();
        assert_eq!(
            store.bundle_by_hash(&bundles[1].hash()).unwrap().as_ref(),
            Some(&bundles[1])
        );
        assert!(store.scrub().unwrap().is_empty());
    }
    let db = redb::Database::open(&path).unwrap();
    let names: Vec<String> = db
        .begin_read()
        .unwrap()
        .list_tables()
        .unwrap()
        .map(|t| t.name().to_string())
        .collect();
    assert!(!names.iter().any(|n| n.starts_with("hash_")), "{names:?}");
}
