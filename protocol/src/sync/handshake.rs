//! Membership proofs: which workspaces two peers share, without telling a
//! non-member anything.
//!
//! Each side sends a fresh nonce ([`Message::Hello`](super::message::Message::Hello)),
//! then, per workspace it holds, `secret.proof([ROLE, prover id, verifier id,
//! prover nonce, verifier nonce])`, padded with random values to a multiple of
//! [`PROOF_PAD`]. The verifier recomputes the expected proof for each of its own
//! secrets and compares in constant time; a match means the prover holds that
//! secret. Proof sets are symmetric (each side matches exactly the workspaces
//! both hold), so both reach the same shared set without naming it.
//!
//! Goals: no workspace id in clear before membership is proven; proofs bound to
//! both peer ids (a relay cannot forward them) and both nonces (a recorded
//! proof fails in a new session). Non-goals: hiding that a node speaks Troupe,
//! or hiding the rough number of workspaces beyond the padding granularity.

use std::collections::BTreeSet;

use super::io::PeerId;
use super::limits::{MAX_PROOFS, PROOF_PAD};
use super::rng::SplitMix64;
use crate::crypto::ct_eq;
use crate::ids::WorkspaceId;
use crate::workspace::WorkspaceSecret;

/// Domain label mixed into every proof.
const ROLE: &[u8] = b"troupe/sync/1 membership";

/// The proof `prover` gives `verifier` for `secret`.
pub(crate) fn proof(
    secret: &WorkspaceSecret,
    prover: &PeerId,
    verifier: &PeerId,
    prover_nonce: &[u8; 32],
    verifier_nonce: &[u8; 32],
) -> [u8; 32] {
    secret.proof(&[ROLE, &prover.0, &verifier.0, prover_nonce, verifier_nonce])
}

/// Our proofs for every secret, padded with random values.
pub(crate) fn our_proofs<'a>(
    secrets: impl IntoIterator<Item = &'a WorkspaceSecret>,
    me: &PeerId,
    them: &PeerId,
    my_nonce: &[u8; 32],
    their_nonce: &[u8; 32],
    rng: &mut SplitMix64,
) -> Vec<[u8; 32]> {
    let mut out: Vec<[u8; 32]> = secrets
        .into_iter()
        .take(MAX_PROOFS)
        .map(|s| proof(s, me, them, my_nonce, their_nonce))
        .collect();
    while out.is_empty() || !out.len().is_multiple_of(PROOF_PAD) {
        out.push(rng.bytes32());
    }
    out
}

/// The workspaces `them` proved, among ours.
pub(crate) fn shared<'a>(
    secrets: impl IntoIterator<Item = &'a WorkspaceSecret>,
    received: &[[u8; 32]],
    me: &PeerId,
    them: &PeerId,
    my_nonce: &[u8; 32],
    their_nonce: &[u8; 32],
) -> BTreeSet<WorkspaceId> {
    let mut out = BTreeSet::new();
    for s in secrets.into_iter().take(MAX_PROOFS) {
        let expected = proof(s, them, me, their_nonce, my_nonce);
        // Compare against every entry so timing does not reveal the position.
        let mut hit = false;
        for p in received {
            hit |= ct_eq(p, &expected);
        }
        if hit {
            out.insert(s.workspace_id());
        }
    }
    out
}
