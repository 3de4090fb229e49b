//! Building one outgoing batch: which bundles, which signatures to drop, and
//! which `prev_hash`es to leave out.
//!
//! Goals: each author-run in a batch ends with a signed bundle so the receiver
//! can authenticate the whole run with one signature check; interior
//! signatures and in-run `prev_hash`es (recomputable by the receiver) are not
//! sent. Non-goals: choosing what to send (that is the peer's want).

use std::collections::BTreeMap;

use super::limits::{BATCH_BYTES, RUN_EXTENSION};
use super::message::elide_prev_hash_in_place;
use super::oplog_view::OplogView;
use super::session::sub;
use crate::ids::{ActorId, BundleHash, WorkspaceId};
use crate::ranges::SeqRangeSet;

fn signed(bytes: &[u8]) -> bool {
    bytes.first() == Some(&1) && bytes.len() >= 65
}

/// Drops the signature, in place (no new buffer).
fn strip(mut bytes: Vec<u8>) -> Vec<u8> {
    if signed(&bytes) {
        // The flag of an unsigned copy goes where the signature ended.
        bytes[64] = 0;
        bytes.drain(..64);
    }
    bytes
}

/// One batch item: whether its prev_hash was elided, and its bytes.
type WireItem = (bool, Vec<u8>);

/// A bundle read for a batch: author, seq, stored bytes, recorded hash.
type Picked = (ActorId, u64, Vec<u8>, BundleHash);

/// Takes the next batch off `to_send`, at most `max_bundles` (before the
/// run extension) or [`BATCH_BYTES`]: the bundle bytes to send and the
/// (author, seq)s they are. Interior signatures are dropped only where the
/// run ends in a signed copy.
pub(crate) fn build_batch(
    view: &impl OplogView,
    ws: WorkspaceId,
    to_send: &mut BTreeMap<ActorId, SeqRangeSet>,
    max_bundles: usize,
) -> (Vec<WireItem>, Vec<(ActorId, u64)>) {
    let mut picked: Vec<Picked> = Vec::new();
    let mut taken: BTreeMap<ActorId, SeqRangeSet> = BTreeMap::new();
    let mut bytes = 0usize;
    'outer: for (author, set) in to_send.iter() {
        for &(from, to) in set.ranges() {
            // Each range is read in one ordered pass, up to the batch's size.
            let mut full = false;
            let mut last = None;
            let read = view.bundle_run(&ws, author, from, to, &mut |seq, b, h| {
                if picked.len() >= max_bundles || bytes >= BATCH_BYTES {
                    full = true;
                    return false;
                }
                bytes += b.len();
                picked.push((*author, seq, b, h));
                last = Some(seq);
                true
            });
            // Seqs passed over (not held, a damaged copy, a failed read) are
            // taken too, as before: they are not sent and not asked again.
            let end = match (full, read) {
                (true, Ok(())) => last,
                _ => Some(to),
            };
            if let Some(end) = end {
                taken.entry(*author).or_default().insert_range(from, end);
            }
            if full {
                break 'outer;
            }
            if picked.len() >= max_bundles || bytes >= BATCH_BYTES {
                break 'outer;
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
        let (author, seq) = (run[0].0, run[run.len() - 1].1);
        // Extend an unsigned tail to the next signed copy we hold.
        if budget > 0
            && !signed(&run[run.len() - 1].2)
            && let Some(next) = seq.checked_add(1)
        {
            let mut expect = next;
            let _ = view.bundle_run(
                &ws,
                &author,
                next,
                next.saturating_add(budget as u64 - 1),
                &mut |s, b, h| {
                    if s != expect {
                        return false; // a gap ends the run
                    }
                    budget -= 1;
                    taken.entry(author).or_default().insert(s);
                    let done = signed(&b);
                    run.push((author, s, b, h));
                    expect = s.saturating_add(1);
                    !done && budget > 0
                },
            );
        }
        let tail_signed = signed(&run[run.len() - 1].2);
        let n = run.len();
        let mut prev: Option<BundleHash> = None;
        for (i, (a, s, b, h)) in run.into_iter().enumerate() {
            sent.push((a, s));
            let b = if tail_signed && i + 1 < n {
                strip(b)
            } else {
                b
            };
            // Within a run the receiver recomputes prev_hash from the item before.
            items.push(match &prev {
                Some(p) => match elide_prev_hash_in_place(b, p) {
                    Ok(e) => (true, e),
                    Err(b) => (false, b),
                },
                None => (false, b),
            });
            prev = Some(h);
        }
    }
    for (author, set) in &taken {
        sub(to_send, author, set);
    }
    (items, sent)
}
