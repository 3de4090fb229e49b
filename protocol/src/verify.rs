//! Verifying many bundles at once: one signature per contiguous run.
//!
//! # Why one signature per run is enough
//! Each bundle's hash is `blake3(blake3(body) || signature)`, and each body
//! names the hash of the author's previous bundle in `prev_hash`. Take a run
//! `b_i … b_j` of one author's bundles in which every link holds
//! (`prev_hash(b_{k+1}) == hash(b_k)`, recomputed here from the bytes). If the
//! signature on `b_j` verifies, the author signed `body_j`, which contains
//! `hash(b_{j-1})`; by blake3's collision resistance no other bytes have that
//! hash, so `b_{j-1}` is exactly what the author committed to, body and
//! signature alike. By induction the whole run is authentic. Verifying each
//! signature alone would add nothing but ~40 µs per bundle.
//!
//! When the signature at the end of a run fails, the run is re-checked bundle
//! by bundle, so good bundles are still accepted and only the bad ones are
//! reported. A bundle whose `prev_hash` disagrees with an authentic
//! predecessor is a fork (the same author and seq with two histories) or a
//! corruption, and is refused.

use std::collections::BTreeMap;

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
    // Index by (author, seq); a second, different bundle for the same slot is a fork.
    let mut slots: BTreeMap<(ActorId, u64), usize> = BTreeMap::new();
    for (i, b) in bundles.iter().enumerate() {
        let body = b.body();
        if body.workspace != *workspace {
            results[i] = Err(VerifyError::Workspace {
                expected: *workspace,
                found: body.workspace,
            });
            continue;
        }
        match slots.get(&(body.author, body.seq)) {
            Some(&j) if bundles[j].hash() != b.hash() => {
                results[i] = Err(VerifyError::Chain {
                    seq: body.seq,
                    why: "two different bundles for the same seq (fork)",
                });
            }
            Some(_) => {} // exact duplicate: shares the first copy's verdict below
            None => {
                slots.insert((body.author, body.seq), i);
            }
        }
    }

    // Walk each author's bundles in seq order, cutting runs at gaps and broken links.
    let mut run: Vec<usize> = Vec::new();
    let mut last: Option<(ActorId, u64, BundleHash)> = None;
    let mut runs: Vec<Vec<usize>> = Vec::new();
    for (&(author, seq), &i) in &slots {
        let b = &bundles[i];
        let continues = matches!(last, Some((a, s, h)) if a == author && s + 1 == seq && b.body().prev_hash == Some(h));
        if !continues {
            if !run.is_empty() {
                runs.push(std::mem::take(&mut run));
            }
            // First of a run: its link is checked against the trusted predecessor if any.
            let expected = match last {
                Some((a, s, h)) if a == author && s + 1 == seq => Some(h),
                _ if seq > 1 => known_prev(&author, seq - 1),
                _ => None,
            };
            run.push(i);
            if let Some(h) = expected {
                if b.body().prev_hash != Some(h) {
                    results[i] = Err(VerifyError::Chain {
                        seq,
                        why: "prev_hash does not match the previous bundle (fork or corruption)",
                    });
                }
            }
        } else {
            run.push(i);
        }
        last = Some((author, seq, b.hash()));
    }
    if !run.is_empty() {
        runs.push(run);
    }

    for run in runs {
        let tail = *run.last().expect("runs are non-empty");
        if bundles[tail].check_signature().is_ok() {
            continue;
        }
        // Fall back to one-by-one so good bundles in a bad run still pass.
        for &i in &run {
            if results[i].is_ok() {
                if let Err(e) = bundles[i].check_signature() {
                    results[i] = Err(e);
                }
            }
        }
    }

    // A bundle after a failed one in the same run is still authentic if its own
    // signature holds, but its link points at bytes we refused: it stays valid;
    // the refused predecessor becomes a hole that repair fills.
    for (i, b) in bundles.iter().enumerate() {
        if let Some(&j) = slots.get(&(b.body().author, b.body().seq)) {
            if j != i && bundles[j].hash() == b.hash() {
                results[i] = results[j].clone();
            }
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
        let n = bytes.len();
        bytes[n - 1] ^= 1;
        bundles[9] = Bundle::decode(bytes).unwrap();
        let res = verify_bundles(&ws, &bundles, |_, _| None);
        assert!(res[..9].iter().all(|r| r.is_ok()));
        assert!(matches!(res[9], Err(VerifyError::Signature { .. })));
    }

    #[test]
    fn a_broken_link_against_the_store_is_refused() {
        let (ws, bundles) = chain(1, 5);
        let res = verify_bundles(&ws, &bundles[2..], |_, _| Some(BundleHash([9; 32])));
        assert!(matches!(res[0], Err(VerifyError::Chain { seq: 3, .. })));
        assert!(res[1..].iter().all(|r| r.is_ok()));
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
}
