//! Bit rot under a running store: a bundle whose stored bytes change is never
//! served. The read answers a typed Corrupt error, `quarantine_corrupt` moves
//! it to quarantine and out of the ranges, scrub lists it for repair with the
//! expected hash, and a clean copy from a peer restores it.

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

#[test]
fn a_rotten_bundle_is_never_served_and_is_repaired() {
    let mem = Mem::default();
    let store = Store::open_with_backend(mem.clone()).unwrap();
    store
        .add_workspace(&WorkspaceInfo::new(
            test_workspace(),
            "t",
            WorkspaceKind::Show,
        ))
        .unwrap();
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

    match store.bundle(&ws, &author, 5) {
        Err(ReadError::Corrupt(c)) => {
            assert_eq!(c.seq, 5);
            assert_eq!(c.expected, Some(victim.hash()));
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let view = store.view().unwrap();
    assert!(matches!(
        view.bundle(&ws, &author, 5),
        Err(ViewError::Corrupt { seq: 5, .. })
    ));
    assert_eq!(
        view.bundle(&ws, &author, 4).unwrap().unwrap(),
        bundles[3].bytes()
    );
    drop(view);
    assert!(
        store.history(&ws).is_err(),
        "history refuses to show a rotten bundle"
    );

    let repair = store.scrub().unwrap();
    assert_eq!(repair.len(), 1);
    assert_eq!(
        (repair[0].seq, repair[0].expected),
        (5, Some(victim.hash()))
    );
    assert_eq!(
        store.ranges(&ws).unwrap()[&author].ranges(),
        &[(1, 4), (6, 10)]
    );
    assert_eq!(store.bundle(&ws, &author, 5).unwrap(), None);
    assert!(store.quarantine_corrupt(&ws, &author, 6).unwrap().is_none());
    let q = store.quarantine_list().unwrap();
    assert_eq!((q.len(), q[0].source.as_str()), (1, "scrub"));
    assert!(store.scrub().unwrap().is_empty());

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
}
