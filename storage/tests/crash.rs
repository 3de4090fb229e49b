//! Crash consistency: with a backend that keeps a live image and a durable
//! image (what survives power loss: the live image as of the last completed
//! sync), a crash at every sync point of a batch commit leaves, after
//! re-open, either the whole batch (bundles, ranges, tips, state) or none of
//! it, and the state always equals a replay of the oplog.

use troupe_protocol::testing::{chain, key, test_workspace};
use troupe_protocol::workspace::{WorkspaceInfo, WorkspaceKind};
use troupe_storage::Store;
use troupe_storage::testing::CrashBackend;

/// Bundles of the second author in the batch: a run long enough to go
/// through a redb cursor (`sorted_insert`), not row by row.
const RUN: u64 = 40;

fn reopen(durable: Vec<u8>) -> Store {
    Store::open_with_backend(CrashBackend::from_image(durable)).expect("a crashed store re-opens")
}

/// Commits a base, then the batch with a crash at sync `k` after the base
/// (None: no crash). Returns the durable image and the sync count used.
fn scenario(crash_after_base: Option<u64>) -> (Vec<u8>, u64, bool) {
    let ws = test_workspace().workspace_id();
    let (_, base) = chain(1, 5);
    let (_, batch) = chain(2, RUN);
    let backend = CrashBackend::default();
    let store = Store::open_with_backend(backend.clone()).unwrap();
    store
        .add_workspace(&WorkspaceInfo::new(
            test_workspace(),
            "t",
            WorkspaceKind::Show,
        ))
        .unwrap();
    store.commit_batch(&ws, base, "peer").unwrap();
    let start = backend.syncs();
    if let Some(k) = crash_after_base {
        backend.crash_at_sync(k);
    }
    let mut all = batch;
    all.extend(chain(1, 8).1[5..].iter().cloned());
    let ok = store.commit_batch(&ws, all, "peer").is_ok();
    drop(store);
    (backend.durable_image(), backend.syncs() - start, ok)
}

#[test]
fn a_crash_at_any_sync_of_a_batch_commit_leaves_all_or_nothing() {
    let ws = test_workspace().workspace_id();
    let (_, n, ok) = scenario(None);
    assert!(ok);
    assert!(n >= 1, "a durable commit syncs at least once");
    eprintln!("batch commit sync points: {n}");
    let (a, b) = (key(1).actor_id(), key(2).actor_id());
    let mut saw_none = false;
    let mut saw_all = false;
    for k in 1..=n + 1 {
        let (durable, _, ok) = scenario(Some(k));
        let store = reopen(durable);
        let r = store.ranges(&ws).unwrap();
        let state = store.fields(&ws).unwrap();
        let has_b = r.contains_key(&b);
        let a_ranges = r.get(&a).map(|s| s.ranges().to_vec());
        if has_b {
            saw_all = true;
            assert_eq!(r[&b].ranges(), &[(1, RUN)], "crash at sync {k}");
            assert_eq!(a_ranges, Some(vec![(1, 8)]), "crash at sync {k}");
            assert_eq!(state.len(), (RUN as usize + 8) * 10);
            assert_eq!(store.author_tip(&ws, &b).unwrap().last_seq, RUN);
        } else {
            saw_none = true;
            assert!(!ok, "an acknowledged commit survives (crash at sync {k})");
            assert_eq!(a_ranges, Some(vec![(1, 5)]), "crash at sync {k}");
            assert_eq!(state.len(), 5 * 10);
            assert_eq!(store.author_tip(&ws, &b).unwrap().last_seq, 0);
        }
        assert!(store.verify_rebuild().unwrap().is_empty());
        assert!(store.scrub().unwrap().is_empty());
    }
    assert!(saw_none, "some crash point lost the batch");
    assert!(saw_all, "the last crash point comes after the commit");
}
