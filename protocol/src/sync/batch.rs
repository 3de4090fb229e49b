//! Building one outgoing batch: which bundles, which signatures to drop, and
//! which `prev_hash`es to leave out.
//!
//! Goals: each author-run in a batch ends with a signed bundle so the receiver
//! can authenticate the whole run with one signature check; interior
//! signatures and in-run `prev_hash`es (recomputable by the receiver) are not
//! sent. Non-goals: choosing what to send (that is the peer's want).

use std::collections::BTreeMap;

use super::limits::{BATCH_BUNDLES, BATCH_BYTES, RUN_EXTENSION};
use super::message::elide_prev_hash;
use super::oplog_view::OplogView;
use super::session::sub;
use crate::ids::{ActorId, WorkspaceId};
use crate::ranges::SeqRangeSet;

fn signed(bytes: &[u8]) -> bool {
    bytes.first() == Some(&1) && bytes.len() >= 65
}

fn strip(bytes: Vec<u8>) -> Vec<u8> {
    if signed(&bytes) {
        let mut out = Vec::with_capacity(bytes.len() - 64);
        out.push(0);
        out.extend_from_slice(&bytes[65..]);
        out
    } else {
        bytes
    }
}

/// One batch item: whether its prev_hash was elided, and its bytes.
type WireItem = (bool, Vec<u8>);

/// Takes the next batch off `to_send`: the bundle bytes to send and the
/// (author, seq)s they are. Interior signatures are dropped only where the run
/// ends in a signed copy.
pub(crate) fn build_batch(
    view: &impl OplogView,
    ws: WorkspaceId,
    to_send: &mut BTreeMap<ActorId, SeqRangeSet>,
) -> (Vec<WireItem>, Vec<(ActorId, u64)>) {
    let mut picked: Vec<(ActorId, u64, Vec<u8>)> = Vec::new();
    let mut taken: BTreeMap<ActorId, SeqRangeSet> = BTreeMap::new();
    let mut bytes = 0usize;
    'outer: for (author, set) in to_send.iter() {
        for seq in set.iter() {
            if picked.len() >= BATCH_BUNDLES || bytes >= BATCH_BYTES {
                break 'outer;
            }
            taken.entry(*author).or_default().insert(seq);
            if let Ok(Some(b)) = view.bundle(&ws, author, seq) {
                bytes += b.len();
                picked.push((*author, seq, b));
            }
        }
    }
    let mut budget = RUN_EXTENSION;
    let mut items = Vec::with_capacity(picked.len());
    let mut sent = Vec::with_capacity(picked.len());
    let mut picked = picked.into_iter().peekable();
    while let Some(first) = picked.next() {
        let mut run = vec![first];
        while let Some(next) = picked.peek() {
            let last = &run[run.len() - 1];
            if next.0 == last.0 && next.1 == last.1 + 1 {
                run.extend(picked.next());
            } else {
                break;
            }
        }
        let (author, mut seq) = (run[0].0, run[run.len() - 1].1);
        // Extend an unsigned tail to the next signed copy we hold.
        while budget > 0 && !signed(&run[run.len() - 1].2) {
            let Some(next) = seq.checked_add(1) else {
                break;
            };
            seq = next;
            match view.bundle(&ws, &author, seq) {
                Ok(Some(b)) => {
                    budget -= 1;
                    taken.entry(author).or_default().insert(seq);
                    run.push((author, seq, b));
                }
                _ => break,
            }
        }
        let tail_signed = signed(&run[run.len() - 1].2);
        let n = run.len();
        let mut prev = None;
        for (i, (a, s, b)) in run.into_iter().enumerate() {
            sent.push((a, s));
            let b = if tail_signed && i + 1 < n {
                strip(b)
            } else {
                b
            };
            // Within a run the receiver recomputes prev_hash from the item before.
            let elided = prev.as_ref().and_then(|p| elide_prev_hash(&b, p));
            prev = view.bundle_hash(&ws, &a, s).ok().flatten();
            items.push(match elided {
                Some(e) => (true, e),
                None => (false, b),
            });
        }
    }
    for (author, set) in &taken {
        sub(to_send, author, set);
    }
    (items, sent)
}
