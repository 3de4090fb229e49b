//! Sets of sequence numbers as sorted, disjoint inclusive ranges.
//!
//! Each node states, per (workspace, author), the seqs it holds; the other side
//! sends the difference. Holes are normal: a quarantined bundle leaves one
//! until a clean copy arrives. Committed ranges are the sync checkpoint.

use serde::{Deserialize, Serialize};

use crate::error::DecodeError;

/// Most ranges one set may carry on the wire (a set this fragmented means a
/// badly damaged store; it is refused rather than allocated).
pub const MAX_RANGES: usize = 4096;

/// A set of `u64` as sorted, disjoint, non-adjacent inclusive ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SeqRangeSet(Vec<(u64, u64)>);

impl SeqRangeSet {
    /// The empty set.
    pub fn new() -> Self {
        SeqRangeSet(Vec::new())
    }

    /// `1..=n`, what an author with `n` bundles and no holes has.
    pub fn up_to(n: u64) -> Self {
        if n == 0 {
            SeqRangeSet::new()
        } else {
            SeqRangeSet(vec![(1, n)])
        }
    }

    /// Builds from arbitrary ranges, normalising them.
    pub fn from_ranges(ranges: impl IntoIterator<Item = (u64, u64)>) -> Self {
        let mut s = SeqRangeSet::new();
        for (a, b) in ranges {
            s.insert_range(a, b);
        }
        s
    }

    /// Whether the set has no members.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The ranges, sorted.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.0
    }

    /// How many seqs are in the set.
    pub fn count(&self) -> u64 {
        self.0.iter().map(|(a, b)| b - a + 1).sum()
    }

    /// The highest member.
    pub fn max(&self) -> Option<u64> {
        self.0.last().map(|r| r.1)
    }

    /// Membership.
    pub fn contains(&self, x: u64) -> bool {
        self.0
            .binary_search_by(|&(a, b)| {
                if b < x {
                    std::cmp::Ordering::Less
                } else if a > x {
                    std::cmp::Ordering::Greater
                } else {
                    std::cmp::Ordering::Equal
                }
            })
            .is_ok()
    }

    /// Adds one seq.
    pub fn insert(&mut self, x: u64) {
        self.insert_range(x, x);
    }

    /// Adds `a..=b` (ignored when `a > b`): two binary searches and one
    /// splice, so a peer's fragmented sets cost no rebuild per range.
    pub fn insert_range(&mut self, a: u64, b: u64) {
        if a > b {
            return;
        }
        // Fast path: appending at the end, the common case when committing in order.
        if let Some(last) = self.0.last_mut()
            && a > last.1
        {
            if a == last.1 + 1 {
                last.1 = b;
            } else {
                self.0.push((a, b));
            }
            return;
        }
        // The ranges that overlap or touch `a..=b` are `lo..hi` (ends and
        // starts both ascend, the ranges being disjoint).
        let lo = self.0.partition_point(|&(_, y)| y.saturating_add(1) < a);
        let hi = self.0.partition_point(|&(x, _)| x <= b.saturating_add(1));
        if lo == hi {
            self.0.insert(lo, (a, b));
            return;
        }
        self.0[lo] = (a.min(self.0[lo].0), b.max(self.0[hi - 1].1));
        self.0.drain(lo + 1..hi);
    }

    /// Removes one seq (e.g. when a stored bundle is quarantined).
    pub fn remove(&mut self, x: u64) {
        let i = self.0.partition_point(|&(_, b)| b < x);
        let Some(&(a, b)) = self.0.get(i) else {
            return;
        };
        match (a <= x, a < x, x < b) {
            (false, ..) => {}
            (true, true, true) => {
                self.0[i] = (a, x - 1);
                self.0.insert(i + 1, (x + 1, b));
            }
            (true, true, false) => self.0[i] = (a, x - 1),
            (true, false, true) => self.0[i] = (x + 1, b),
            (true, false, false) => {
                self.0.remove(i);
            }
        }
    }

    /// Members of either set: one pass over both, whatever their sizes
    /// (both are normalised: sets from peers are checked when decoded).
    pub fn union(&self, other: &SeqRangeSet) -> SeqRangeSet {
        let (a, b) = (&self.0, &other.0);
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(a.len() + b.len());
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            let next = if j == b.len() || (i < a.len() && a[i].0 <= b[j].0) {
                i += 1;
                a[i - 1]
            } else {
                j += 1;
                b[j - 1]
            };
            match out.last_mut() {
                Some(last) if next.0 <= last.1.saturating_add(1) => last.1 = last.1.max(next.1),
                _ => out.push(next),
            }
        }
        SeqRangeSet(out)
    }

    /// Members of `self` not in `other`: what a peer holding `other` lacks.
    pub fn difference(&self, other: &SeqRangeSet) -> SeqRangeSet {
        let mut out = Vec::new();
        let mut j = 0;
        for &(a, b) in &self.0 {
            let mut cur = a;
            while j < other.0.len() && other.0[j].1 < cur {
                j += 1;
            }
            let mut k = j;
            while cur <= b {
                if k >= other.0.len() || other.0[k].0 > b {
                    out.push((cur, b));
                    break;
                }
                let (oa, ob) = other.0[k];
                if oa > cur {
                    out.push((cur, oa - 1));
                }
                if ob >= b {
                    break;
                }
                cur = ob + 1;
                k += 1;
            }
        }
        SeqRangeSet(out)
    }

    /// Members, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.0.iter().flat_map(|&(a, b)| a..=b)
    }

    /// Checks a decoded set is normalised and within caps.
    ///
    /// # Errors
    /// [`DecodeError::Invalid`] when not sorted/disjoint, empty-ranged, seq 0, or too fragmented.
    pub fn check(&self) -> Result<(), DecodeError> {
        if self.0.len() > MAX_RANGES {
            return Err(DecodeError::Invalid("range set too fragmented"));
        }
        let mut prev: Option<u64> = None;
        for &(a, b) in &self.0 {
            if a == 0 || a > b {
                return Err(DecodeError::Invalid(
                    "range set has an empty range or seq 0",
                ));
            }
            if let Some(p) = prev
                && a <= p.saturating_add(1)
            {
                return Err(DecodeError::Invalid("range set not sorted and disjoint"));
            }
            prev = Some(b);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn model(s: &SeqRangeSet) -> BTreeSet<u64> {
        s.iter().collect()
    }

    fn arb_set() -> impl Strategy<Value = SeqRangeSet> {
        prop::collection::vec((1u64..200, 0u64..20), 0..40)
            .prop_map(|v| SeqRangeSet::from_ranges(v.into_iter().map(|(a, l)| (a, a + l))))
    }

    proptest! {
        #[test]
        fn algebra_matches_a_set_model(a in arb_set(), b in arb_set(), x in 1u64..230) {
            prop_assert!(a.check().is_ok());
            let (ma, mb) = (model(&a), model(&b));
            prop_assert_eq!(model(&a.union(&b)), ma.union(&mb).copied().collect::<BTreeSet<_>>());
            prop_assert!(a.union(&b).check().is_ok());
            prop_assert_eq!(a.union(&b), b.union(&a));
            prop_assert_eq!(model(&a.difference(&b)), ma.difference(&mb).copied().collect::<BTreeSet<_>>());
            prop_assert!(a.difference(&b).check().is_ok());
            prop_assert_eq!(a.contains(x), ma.contains(&x));
            prop_assert_eq!(a.count() as usize, ma.len());
            let mut r = a.clone();
            r.remove(x);
            let mut mr = ma.clone();
            mr.remove(&x);
            prop_assert_eq!(model(&r), mr);
            prop_assert!(r.check().is_ok());
        }
    }

    proptest! {
        #[test]
        fn ranges_inserted_in_any_order_make_their_union(
            v in prop::collection::vec((1u64..300, 0u64..30), 0..60),
        ) {
            let s = SeqRangeSet::from_ranges(v.iter().map(|&(a, l)| (a, a + l)));
            prop_assert!(s.check().is_ok());
            let m: BTreeSet<u64> = v.iter().flat_map(|&(a, l)| a..=a + l).collect();
            prop_assert_eq!(model(&s), m);
        }
    }

    #[test]
    fn ranges_reaching_the_last_seq_merge() {
        let mut s = SeqRangeSet::from_ranges([(5, u64::MAX), (1, 3)]);
        assert_eq!(s.ranges(), &[(1, 3), (5, u64::MAX)]);
        s.insert(4);
        assert_eq!(s.ranges(), &[(1, u64::MAX)]);
        s.remove(u64::MAX);
        assert_eq!(s.ranges(), &[(1, u64::MAX - 1)]);
        let u = s.union(&SeqRangeSet::from_ranges([(u64::MAX, u64::MAX)]));
        assert_eq!(u.ranges(), &[(1, u64::MAX)]);
    }

    #[test]
    fn unnormalised_sets_are_refused() {
        assert!(SeqRangeSet(vec![(3, 4), (1, 2)]).check().is_err());
        assert!(
            SeqRangeSet(vec![(1, 2), (3, 4)]).check().is_err(),
            "adjacent ranges must be merged"
        );
        assert!(SeqRangeSet(vec![(0, 2)]).check().is_err());
        assert!(SeqRangeSet(vec![(1, 2), (4, 4)]).check().is_ok());
    }
}
