//! Crash consistency: with a backend that keeps a live image and a durable
//! image (what survives power loss: the live image as of the last completed
//! sync), a crash at every sync point of a batch commit leaves, after
//! re-open, either the whole batch (bundles, ranges, tips, state) or none of
//! it, and the state always equals a replay of the oplog.

use std::sync::{Arc, Mutex};

use redb::StorageBackend;

type BackendIoError = std::io::Error;
use troupe_protocol::testing::{chain, key, test_workspace};
use troupe_protocol::workspace::{WorkspaceInfo, WorkspaceKind};
use troupe_storage::Store;

#[derive(Debug, Default)]
struct Images {
    live: Vec<u8>,
    durable: Vec<u8>,
    syncs: u64,
    crash_at: Option<u64>,
    crashed: bool,
}

#[derive(Debug, Clone, Default)]
struct CrashBackend(Arc<Mutex<Images>>);

fn crashed() -> BackendIoError {
    std::io::Error::other("simulated power loss")
}

impl StorageBackend for CrashBackend {
    fn len(&self) -> Result<u64, BackendIoError> {
        let g = self.0.lock().unwrap();
        if g.crashed {
            return Err(crashed());
        }
        Ok(g.live.len() as u64)
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), BackendIoError> {
        let g = self.0.lock().unwrap();
        if g.crashed {
            return Err(crashed());
        }
        let o = offset as usize;
        let src = g
            .live
            .get(o..o + out.len())
            .ok_or_else(|| std::io::Error::other("read past end"))?;
        out.copy_from_slice(src);
        Ok(())
    }
    fn set_len(&self, len: u64) -> Result<(), BackendIoError> {
        let mut g = self.0.lock().unwrap();
        if g.crashed {
            return Err(crashed());
        }
        g.live.resize(len as usize, 0);
        Ok(())
    }
    fn sync_data(&self) -> Result<(), BackendIoError> {
        let mut g = self.0.lock().unwrap();
        if g.crashed {
            return Err(crashed());
        }
        g.syncs += 1;
        if g.crash_at == Some(g.syncs) {
            g.crashed = true;
            return Err(crashed());
        }
        g.durable = g.live.clone();
        Ok(())
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), BackendIoError> {
        let mut g = self.0.lock().unwrap();
        if g.crashed {
            return Err(crashed());
        }
        let o = offset as usize;
        if g.live.len() < o + data.len() {
            g.live.resize(o + data.len(), 0);
        }
        g.live[o..o + data.len()].copy_from_slice(data);
        Ok(())
    }
}

fn reopen(durable: Vec<u8>) -> Store {
    let b = CrashBackend::default();
    {
        let mut g = b.0.lock().unwrap();
        g.live = durable.clone();
        g.durable = durable;
    }
    Store::open_with_backend(b).expect("a crashed store re-opens")
}

/// Commits a base, then the batch with a crash at sync `k` after the base
/// (None: no crash). Returns the durable image and the sync count used.
fn scenario(crash_after_base: Option<u64>) -> (Vec<u8>, u64, bool) {
    let ws = test_workspace().workspace_id();
    let (_, base) = chain(1, 5);
    let (_, batch) = chain(2, 30);
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
    let start = {
        let mut g = backend.0.lock().unwrap();
        g.crash_at = crash_after_base.map(|k| g.syncs + k);
        g.syncs
    };
    let mut all = batch;
    all.extend(chain(1, 8).1[5..].iter().cloned());
    let ok = store.commit_batch(&ws, all, "peer").is_ok();
    drop(store);
    let g = backend.0.lock().unwrap();
    (g.durable.clone(), g.syncs - start, ok)
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
            assert_eq!(r[&b].ranges(), &[(1, 30)], "crash at sync {k}");
            assert_eq!(a_ranges, Some(vec![(1, 8)]), "crash at sync {k}");
            assert_eq!(state.len(), 38 * 10);
            assert_eq!(store.author_tip(&ws, &b).unwrap().last_seq, 30);
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
