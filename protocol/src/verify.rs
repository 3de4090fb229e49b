//! Verifying many bundles at once: one signature per contiguous run.
//!
//! # Why one signature per run is enough
//! A bundle's hash is `blake3(body)`, and each body names the hash of the
//! author's previous bundle in `prev_hash`. Take a run `b_i … b_j` of one
//! author's bundles in which every link holds (`prev_hash(b_{k+1}) ==
//! hash(b_k)`, recomputed here from the bytes). If the signature on `b_j`
//! verifies, the author signed `hash(body_j)`, and `body_j` contains
//! `hash(b_{j-1})`; by blake3's collision resistance no other body has that
//! hash, so `b_{j-1}` is exactly what the author wrote. By induction the whole
//! run is authentic, signed or not. Checking each signature would add ~40 µs
//! per bundle and nothing else, which is also why senders may leave interior
//! signatures out.
//!
//! When the tail of a run carries no valid signature, the run is walked
//! backwards: a bundle is authentic if its successor in the run is, or if its
//! own signature verifies; otherwise it is refused (bad signature, or unsigned
//! with nothing vouching for it). Good bundles in a bad run still pass. A run
//! whose first `prev_hash` disagrees with an authentic predecessor (in the batch
//! or in the caller's store) is a fork, the same author and seq with two
//! histories, and is refused whole.

use crate::bundle::Bundle;
use crate::error::VerifyError;
use crate::ids::{ActorId, BundleHash, WorkspaceId};

/// Verifies `bundles` (any order, one workspace) and returns one result per
/// bundle, in input order. `known_prev(author, seq)` returns the hash of a
/// bundle the caller already trusts (typically from its store), used to check
/// the first link of each run.
///
/// Costs: one blake3 per bundle (done at decode), one link comparison per
/// bundle, and one ed25519 verification per run.
pub fn verify_bundles(
    workspace: &WorkspaceId,
    bundles: &[Bundle],
    mut known_prev: impl FnMut(&ActorId, u64) -> Option<BundleHash>,
) -> Vec<Result<(), VerifyError>> {
    let mut results: Vec<Result<(), VerifyError>> = vec![Ok(()); bundles.len()];
    let slot = |i: usize| (bundles[i].body().author, bundles[i].body().seq);
    // The bundles of this workspace in (author, seq) order. The sort is
    // stable, so of several copies of one slot the first given leads; a
    // batch arrives in this order already, which the sort finds in one pass.
    let mut order: Vec<usize> = Vec::with_capacity(bundles.len());
    for (i, b) in bundles.iter().enumerate() {
        let body = b.body();
        if body.workspace != *workspace {
            results[i] = Err(VerifyError::Workspace {
                expected: *workspace,
                found: body.workspace,
            });
            continue;
        }
        order.push(i);
    }
    order.sort_by_key(|&x| slot(x));
    // One entry per slot: its first copy. A second, different bundle for the
    // same slot is a fork; an exact duplicate shares the first copy's verdict
    // (`first_of`, below).
    let mut slots: Vec<usize> = Vec::with_capacity(order.len());
    let mut first_of: Vec<Option<usize>> = vec![None; bundles.len()];
    for &i in &order {
        match slots.last() {
            Some(&j) if slot(j) == slot(i) => {
                first_of[i] = Some(j);
                if bundles[j].hash() != bundles[i].hash() {
                    results[i] = Err(VerifyError::Chain {
                        seq: slot(i).1,
                        why: "two different bundles for the same seq (fork)",
                    });
                }
            }
            _ => {
                slots.push(i);
                first_of[i] = Some(i);
            }
        }
    }

    // Walk each author's bundles in seq order, cutting runs at gaps and broken links.
    // A run remembers what its first link must match: a trusted hash from the
    // store, or the in-batch predecessor (trusted only if that one verifies).
    struct Run {
        members: Vec<usize>,
        link: Link,
    }
    enum Link {
        None,
        Store,
        Batch(usize),
    }
    let mut runs: Vec<Run> = Vec::new();
    let mut last: Option<(ActorId, u64, usize)> = None;
    for &i in &slots {
        let (author, seq) = slot(i);
        let b = &bundles[i];
        let follows = matches!(last, Some((a, s, _)) if a == author && s + 1 == seq);
        match (follows, last) {
            (true, Some((_, _, j))) if b.body().prev_hash == Some(bundles[j].hash()) => {
                runs.last_mut().expect("a run is open").members.push(i);
            }
            (true, Some((_, _, j))) => runs.push(Run {
                members: vec![i],
                link: Link::Batch(j),
            }),
            _ => {
                let link = match (seq > 1).then(|| known_prev(&author, seq - 1)).flatten() {
                    Some(h) if b.body().prev_hash != Some(h) => Link::Store,
                    _ => Link::None,
                };
                runs.push(Run {
                    members: vec![i],
                    link,
                });
            }
        }
        last = Some((author, seq, i));
    }

    for run in &runs {
        let tail = *run.members.last().expect("runs are non-empty");
        if results[tail].is_ok() && bundles[tail].check_signature().is_ok() {
            continue;
        }
        // Walk back: authentic if the successor is, or if its own signature holds.
        let mut vouched = false;
        for &i in run.members.iter().rev() {
            if results[i].is_err() {
                vouched = false;
                continue;
            }
            if vouched {
                continue;
            }
            match bundles[i].check_signature() {
                Ok(()) => vouched = true,
                Err(e) => results[i] = Err(e),
            }
        }
    }

    // A run whose first link contradicts an authentic predecessor is a fork (or
    // a corruption signed by its author): refuse it whole. A predecessor that
    // failed verification is just a hole; the run after it stands on its own
    // signatures, and repair fills the hole.
    for run in &runs {
        let fork = match run.link {
            Link::None => false,
            Link::Store => true,
            Link::Batch(j) => results[j].is_ok(),
        };
        if fork {
            for &i in &run.members {
                let seq = bundles[i].body().seq;
                results[i] = Err(VerifyError::Chain {
                    seq,
                    why: "prev_hash does not match the previous bundle (fork or corruption)",
                });
            }
        }
    }

    // A bundle after a failed one in the same run is still authentic if its own
    // signature holds, but its link points at bytes we refused: it stays valid;
    // the refused predecessor becomes a hole that repair fills.
    for (i, b) in bundles.iter().enumerate() {
        if let Some(j) = first_of[i]
            && j != i
            && bundles[j].hash() == b.hash()
        {
            results[i] = results[j].clone();
        }
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::chain;

    #[test]
    fn a_clean_chain_verifies_with_one_signature_per_run() {
        let (ws, bundles) = chain(1, 50);
        let res = verify_bundles(&ws, &bundles, |_, _| None);
        assert!(res.iter().all(|r| r.is_ok()));
    }

    #[test]
    fn a_corrupted_middle_signature_is_caught_and_neighbours_survive() {
        let (ws, mut bundles) = chain(1, 10);
        // Corrupt the last bundle's signature: the run check fails, the fallback
        // finds exactly that one.
        let mut bytes = bundles[9].bytes().to_vec();
        bytes[1] ^= 1;
        bundles[9] = Bundle::decode(bytes).unwrap();
        let res = verify_bundles(&ws, &bundles, |_, _| None);
        assert!(res[..9].iter().all(|r| r.is_ok()));
        assert!(matches!(res[9], Err(VerifyError::Signature { .. })));
    }

    #[test]
    fn interior_signatures_may_be_left_out_but_the_tail_must_be_signed() {
        let (ws, bundles) = chain(1, 10);
        let mut stripped: Vec<Bundle> =
            bundles[..9].iter().map(Bundle::without_signature).collect();
        stripped.push(bundles[9].clone());
        assert!(
            verify_bundles(&ws, &stripped, |_, _| None)
                .iter()
                .all(|r| r.is_ok())
        );
        assert_eq!(
            stripped[3].hash(),
            bundles[3].hash(),
            "the hash does not cover the signature"
        );
        // Without the signed tail nothing vouches for the run.
        let res = verify_bundles(&ws, &stripped[..9], |_, _| None);
        assert!(
            res.iter()
                .all(|r| matches!(r, Err(VerifyError::Unsigned { .. })))
        );
    }

    #[test]
    fn a_broken_link_against_the_store_is_refused() {
        let (ws, bundles) = chain(1, 5);
        let res = verify_bundles(&ws, &bundles[2..], |_, _| Some(BundleHash([9; 32])));
        assert!(matches!(res[0], Err(VerifyError::Chain { seq: 3, .. })));
        assert!(
            res.iter()
                .all(|r| matches!(r, Err(VerifyError::Chain { .. }))),
            "the rest of a forked chain is refused with it"
        );
    }

    #[test]
    fn wrong_workspace_and_forks_are_refused() {
        let (ws, bundles) = chain(1, 3);
        let res = verify_bundles(&WorkspaceId([0; 32]), &bundles, |_, _| None);
        assert!(
            res.iter()
                .all(|r| matches!(r, Err(VerifyError::Workspace { .. })))
        );
        // Same author key (seed 1) but different content at seq 2 = fork.
        let (_, forked) = crate::testing::chain_with(1, 3, "fork");
        let mixed = vec![bundles[0].clone(), bundles[1].clone(), forked[1].clone()];
        let res = verify_bundles(&ws, &mixed, |_, _| None);
        assert!(res[0].is_ok() && res[1].is_ok());
        assert!(
            matches!(res[2], Err(VerifyError::Chain { .. })),
            "{:?}",
            res[2]
        );
    }

    proptest::proptest! {
        /// Without forks, a bundle's verdict is the same whatever the order
        /// and duplication of what is given: two authors' runs with their
        /// interior signatures stripped, some tails spoiled, shuffled, with
        /// copies repeated.
        #[test]
        fn verdicts_do_not_depend_on_order_or_repeats(
            spoil in proptest::collection::vec(proptest::bool::ANY, 2),
            cut in 1u64..7,
            order in proptest::collection::vec(proptest::num::usize::ANY, 0..24),
        ) {
            let (ws, a) = chain(1, 8);
            let (_, b) = chain(2, 5);
            // Each author sends two runs, split at `cut`; the first run's
            // tail (signed) is spoiled when asked, so its run is refused.
            let mut given: Vec<Bundle> = Vec::new();
            for (run, spoiled) in [(&a, spoil[0]), (&b, spoil[1])] {
                let cut = (cut as usize).min(run.len() - 1);
                for (i, x) in run.iter().enumerate() {
                    let tail = i + 1 == cut || i + 1 == run.len();
                    let mut copy = if tail { x.clone() } else { x.without_signature() };
                    if spoiled && i + 1 == cut {
                        let mut bytes = copy.bytes().to_vec();
                        bytes[5] ^= 1;
                        copy = Bundle::decode(bytes).expect("a spoiled signature decodes");
                    }
                    given.push(copy);
                }
            }
            let expected = verify_bundles(&ws, &given, |_, _| None);
            let by_hash: std::collections::BTreeMap<_, _> = given
                .iter()
                .zip(&expected)
                .map(|(b, r)| (b.hash(), r.is_ok()))
                .collect();
            // A shuffled selection with repeats, plus every copy once.
            let mut mixed: Vec<Bundle> =
                order.iter().map(|&k| given[k % given.len()].clone()).collect();
            mixed.extend(given.iter().rev().cloned());
            let got = verify_bundles(&ws, &mixed, |_, _| None);
            for (b, r) in mixed.iter().zip(&got) {
                proptest::prop_assert_eq!(r.is_ok(), by_hash[&b.hash()], "seq {}", b.body().seq);
            }
        }
    }
}
