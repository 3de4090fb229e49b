//! What one peer holds in one workspace, as far as we know, with a running
//! count of its ranges.
//!
//! A peer's claims are bounded in ranges over all its authors
//! ([`MAX_THEIR_RANGES`](super::limits::MAX_THEIR_RANGES)), and every
//! announcement is checked against that bound. Summing the ranges on every
//! check made a member announcing one new author at a time cost work
//! quadratic in its authors (about 2·10^9 steps up to the cap); the count
//! is kept here instead, updated by every change, so a check costs nothing.

use std::collections::BTreeMap;
use std::collections::btree_map;

use crate::ids::ActorId;
use crate::ranges::SeqRangeSet;

/// One peer's claims in one workspace: per author, the seqs it holds (from
/// its ranges, its announcements and what we sent it).
#[derive(Debug, Default)]
pub(crate) struct Claims {
    by_author: BTreeMap<ActorId, SeqRangeSet>,
    /// Ranges over all authors' sets: always their sum.
    ranges: usize,
}

impl Claims {
    /// The seqs claimed of `author`, if any.
    pub(crate) fn get(&self, author: &ActorId) -> Option<&SeqRangeSet> {
        self.by_author.get(author)
    }

    /// Ranges over all authors.
    pub(crate) fn ranges(&self) -> usize {
        self.ranges
    }

    /// Every author claimed, with its seqs, author-ascending.
    pub(crate) fn iter(&self) -> btree_map::Iter<'_, ActorId, SeqRangeSet> {
        self.by_author.iter()
    }

    /// Forgets every claim.
    pub(crate) fn clear(&mut self) {
        self.by_author.clear();
        self.ranges = 0;
    }

    /// Makes `set` the claim of `author` (none when empty).
    pub(crate) fn set(&mut self, author: ActorId, set: SeqRangeSet) {
        let added = set.ranges().len();
        let old = if set.is_empty() {
            self.by_author.remove(&author)
        } else {
            self.by_author.insert(author, set)
        };
        self.ranges = self.ranges - old.map_or(0, |o| o.ranges().len()) + added;
    }

    /// Adds `seqs` to the claim of `author`.
    pub(crate) fn add(&mut self, author: ActorId, seqs: &SeqRangeSet) {
        if seqs.is_empty() {
            return;
        }
        let merged = match self.by_author.get(&author) {
            Some(held) => held.union(seqs),
            None => seqs.clone(),
        };
        self.set(author, merged);
    }

    /// Takes `seqs` out of the claim of `author`.
    pub(crate) fn sub(&mut self, author: &ActorId, seqs: &SeqRangeSet) {
        if let Some(held) = self.by_author.get(author) {
            let left = held.difference(seqs);
            self.set(*author, left);
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn sum(c: &Claims) -> usize {
        c.iter().map(|(_, s)| s.ranges().len()).sum()
    }

    #[derive(Debug, Clone)]
    enum Change {
        Add(u8, Vec<(u64, u64)>),
        Sub(u8, Vec<(u64, u64)>),
        Set(u8, Vec<(u64, u64)>),
        Clear,
    }

    fn seqs() -> impl Strategy<Value = Vec<(u64, u64)>> {
        prop::collection::vec((0u64..64, 0u64..4).prop_map(|(a, n)| (a, a + n)), 0..6)
    }

    fn change() -> impl Strategy<Value = Change> {
        prop_oneof![
            4 => (0u8..4, seqs()).prop_map(|(a, s)| Change::Add(a, s)),
            4 => (0u8..4, seqs()).prop_map(|(a, s)| Change::Sub(a, s)),
            2 => (0u8..4, seqs()).prop_map(|(a, s)| Change::Set(a, s)),
            1 => Just(Change::Clear),
        ]
    }

    proptest! {
        /// The running count is the sum of every author's ranges after any
        /// sequence of changes, and no author is kept with an empty claim
        /// (an author claiming nothing takes no room).
        #[test]
        fn the_count_is_always_the_sum_of_every_author_s_ranges(
            changes in prop::collection::vec(change(), 0..60)
        ) {
            let mut c = Claims::default();
            for ch in changes {
                match ch {
                    Change::Add(a, s) => c.add(ActorId([a; 32]), &SeqRangeSet::from_ranges(s)),
                    Change::Sub(a, s) => c.sub(&ActorId([a; 32]), &SeqRangeSet::from_ranges(s)),
                    Change::Set(a, s) => c.set(ActorId([a; 32]), SeqRangeSet::from_ranges(s)),
                    Change::Clear => c.clear(),
                }
                prop_assert_eq!(c.ranges(), sum(&c));
                prop_assert!(c.iter().all(|(_, s)| !s.is_empty()));
            }
        }
    }
}
