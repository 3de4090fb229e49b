//! Verified bundles handed to the driver and not yet acknowledged, by slot.
//!
//! A batch's bundles link to the ones before them by hash; while the
//! batches before it are still being committed, those hashes come from
//! here, not from the store. A sync keeps up to twelve batches (about
//! 3,000 bundles) here, and every received bundle is looked up, added and
//! removed once: keyed by workspace, author and seq together, each step
//! compared 72-byte keys a dozen times, 5 % of the receiving storage
//! thread in a 1M-write sync. Runs are one author's, so the slots are kept
//! per author and a lookup compares the 64-byte prefix once.

use std::collections::BTreeMap;

use crate::ids::{ActorId, BundleHash, WorkspaceId};

/// Hashes of uncommitted bundles, per workspace and author, by seq.
#[derive(Debug, Default)]
pub(crate) struct Uncommitted {
    by_author: BTreeMap<(WorkspaceId, ActorId), BTreeMap<u64, BundleHash>>,
}

impl Uncommitted {
    /// The hash of the uncommitted bundle at a slot.
    pub(crate) fn get(&self, ws: &WorkspaceId, author: &ActorId, seq: u64) -> Option<BundleHash> {
        self.by_author.get(&(*ws, *author))?.get(&seq).copied()
    }

    /// Whether a slot has an uncommitted bundle.
    pub(crate) fn contains(&self, ws: &WorkspaceId, author: &ActorId, seq: u64) -> bool {
        self.get(ws, author, seq).is_some()
    }

    /// Records a bundle handed to the driver.
    pub(crate) fn insert(&mut self, ws: WorkspaceId, author: ActorId, seq: u64, hash: BundleHash) {
        self.by_author
            .entry((ws, author))
            .or_default()
            .insert(seq, hash);
    }

    /// Forgets the slots of an acknowledged (or failed) batch of one
    /// workspace.
    pub(crate) fn remove_all<'a>(
        &mut self,
        ws: &WorkspaceId,
        slots: impl IntoIterator<Item = &'a (ActorId, u64)>,
    ) {
        for (author, seq) in slots {
            let key = (*ws, *author);
            if let Some(m) = self.by_author.get_mut(&key) {
                m.remove(seq);
                if m.is_empty() {
                    self.by_author.remove(&key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_found_until_their_batch_is_acknowledged() {
        let ws = WorkspaceId([1; 32]);
        let (a, b) = (ActorId([2; 32]), ActorId([3; 32]));
        let mut u = Uncommitted::default();
        u.insert(ws, a, 1, BundleHash([10; 32]));
        u.insert(ws, a, 2, BundleHash([11; 32]));
        u.insert(ws, b, 1, BundleHash([12; 32]));
        assert_eq!(u.get(&ws, &a, 2), Some(BundleHash([11; 32])));
        assert!(!u.contains(&ws, &a, 3));
        assert!(!u.contains(&WorkspaceId([9; 32]), &a, 1));
        u.remove_all(&ws, &[(a, 1), (b, 1)]);
        assert!(!u.contains(&ws, &a, 1) && !u.contains(&ws, &b, 1));
        assert!(u.contains(&ws, &a, 2));
        u.remove_all(&ws, &[(a, 2)]);
        assert!(u.by_author.is_empty(), "no empty author maps are left");
    }
}
