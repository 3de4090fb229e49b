//! Decoding a frame before it reaches the engine, on whatever thread the
//! driver reads it on.
//!
//! The engine runs on the store's one thread, so everything it does there
//! waits for that thread. Turning a frame into a message, and a batch into
//! its bundles (decompress, restore elided `prev_hash`es, parse, hash), needs
//! nothing of the engine's state, so a driver can do it where the frame
//! arrives ([`PreparedFrame::prepare`]) and hand the result in with
//! [`crate::sync::Input::Prepared`]. [`crate::sync::Input::Frame`] does the
//! same inside the engine: both paths decode with the same code, in the same
//! order, and the engine judges the result exactly as before (nothing here
//! is trusted: verification, blame and refusals all stay in the engine).
//! The one piece of verification done here is the costly, stateless one:
//! the signatures of run tails, whose successes each copy remembers
//! ([`Bundle::pre_check_signature`]) so the store's thread skips that work.

use crate::bundle::Bundle;
use crate::error::VerifyError;
use crate::ids::BundleHash;

use super::limits::MAX_PRE_CHECKS;
use super::message::{BatchCodec, Message};

/// A batch's items once decoded: each a bundle, or why it is not one and
/// its bytes (for quarantine). `Err` when the batch itself does not decode.
pub(crate) type BatchItems = Result<Vec<Result<Bundle, (VerifyError, Vec<u8>)>>, String>;

/// One received frame, decoded; see the module doc.
#[derive(Debug, Clone)]
pub struct PreparedFrame {
    pub(crate) msg: Result<Message, String>,
    /// For a [`Message::Batch`]: its items, and its payload as it arrived
    /// (moved out of the message), which a journal may keep instead of the
    /// items' bytes (see [`crate::sync::WireCopy`]).
    pub(crate) batch: Option<(BatchItems, Vec<u8>)>,
}

impl PreparedFrame {
    /// Decodes `bytes` as the engine would. `codec` only carries reusable
    /// decompression state; any codec decodes any batch.
    pub fn prepare(bytes: &[u8], codec: &mut BatchCodec) -> PreparedFrame {
        let mut msg = Message::from_frame(bytes).map_err(|e| e.to_string());
        let batch = match &mut msg {
            Ok(Message::Batch { data, .. }) => {
                let items = batch_items(codec, data);
                Some((items, std::mem::take(data)))
            }
            _ => None,
        };
        PreparedFrame { msg, batch }
    }

    /// About how many bytes of memory the decoded frame holds: for a batch,
    /// its bundles (their bytes, their ops and the strings those hold, at
    /// most as long again as the bytes) and its payload; for a ranges
    /// message, its sets (16 bytes a range, from as little as two on the
    /// wire); else nothing beyond the frame. A driver charges this, not the
    /// frame's size on the wire, against what it lets wait for the engine:
    /// a batch of a few KiB can decode to hundreds of MiB.
    pub fn footprint(&self) -> usize {
        let Some((items, payload)) = &self.batch else {
            return match &self.msg {
                Ok(Message::Ranges { workspaces }) => workspaces
                    .iter()
                    .flat_map(|w| &w.authors)
                    .map(|(_, set)| {
                        std::mem::size_of::<(crate::ids::ActorId, crate::ranges::SeqRangeSet)>()
                            + std::mem::size_of_val(set.ranges())
                    })
                    .sum(),
                _ => 0,
            };
        };
        let bundles = items.as_ref().map_or(0, |items| {
            items
                .iter()
                .map(|item| match item {
                    Ok(b) => {
                        std::mem::size_of::<Bundle>()
                            + 2 * b.bytes().len()
                            + b.body().ops.len() * std::mem::size_of::<crate::op::Op>()
                    }
                    Err((_, bytes)) => std::mem::size_of::<Bundle>() + bytes.len(),
                })
                .sum()
        });
        bundles + payload.len()
    }

    /// Parses `bytes` as a message but leaves a batch's payload as it
    /// arrived. A driver reads this way from a peer it has not yet seen
    /// prove membership of a workspace: decompressing and parsing a batch
    /// can turn a few KiB on the wire into hundreds of MiB of bundles
    /// (up to [`MAX_BATCH_PLAIN`](super::limits::MAX_BATCH_PLAIN) of plain
    /// bytes, a few of them an op), and the engine refuses a batch for a
    /// workspace the peer does not share before it needs the bundles. The
    /// engine decodes a batch that comes this way itself, once it knows the
    /// workspace is shared, exactly as [`PreparedFrame::prepare`] would.
    pub fn envelope(bytes: &[u8]) -> PreparedFrame {
        PreparedFrame {
            msg: Message::from_frame(bytes).map_err(|e| e.to_string()),
            batch: None,
        }
    }
}

/// A batch payload's bundles, in order.
pub(crate) fn batch_items(codec: &mut BatchCodec, data: &[u8]) -> BatchItems {
    let raw = codec.decode_rebuilt(data).map_err(|e| e.to_string())?;
    let mut items = Vec::with_capacity(raw.len());
    // Hash of the previous item, which an elided `prev_hash` names.
    let mut last: Option<BundleHash> = None;
    for r in raw {
        let item = r.into_bundle(last.as_ref());
        last = item.as_ref().ok().map(Bundle::hash);
        items.push(item);
    }
    pre_check_tails(&mut items);
    Ok(items)
}

/// Checks, here, the signatures that verification will ask for: those of
/// the bundles that end a run of one author's consecutive seqs in the batch
/// (a sender signs the tail of each run it sends and leaves the interior
/// unsigned), up to [`MAX_PRE_CHECKS`]. Their successes are remembered in
/// each copy ([`Bundle::pre_check_signature`]), so the engine's and the
/// store's verification on the store's thread do not pay for them again;
/// nothing is decided here.
fn pre_check_tails(items: &mut [Result<Bundle, (VerifyError, Vec<u8>)>]) {
    let mut checks = 0;
    for i in 0..items.len() {
        if checks == MAX_PRE_CHECKS {
            return;
        }
        let next = match items.get(i + 1) {
            Some(Ok(n)) => Some((n.body().author, n.body().seq)),
            _ => None,
        };
        if let Some(Ok(b)) = items.get_mut(i) {
            let body = b.body();
            let continued = next == Some((body.author, body.seq.saturating_add(1)));
            if b.signature().is_some() && !continued {
                checks += 1;
                let _ = b.pre_check_signature();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::chain;

    /// Items as a sender sends two runs: interior copies unsigned, each
    /// run's tail signed; the second run's tail carries a bad signature.
    fn two_runs() -> Vec<Vec<u8>> {
        let (_, a) = chain(1, 3);
        let (_, b) = chain(2, 2);
        let mut items: Vec<Vec<u8>> = Vec::new();
        for run in [&a, &b] {
            for (i, x) in run.iter().enumerate() {
                let copy = if i + 1 == run.len() {
                    x.clone()
                } else {
                    x.without_signature()
                };
                items.push(copy.bytes().to_vec());
            }
        }
        let last = items.last_mut().expect("five items");
        last[10] ^= 0x40;
        items
    }

    #[test]
    fn the_signatures_of_run_tails_are_checked_where_the_batch_is_decoded() {
        let items = two_runs();
        let mut codec = BatchCodec::default();
        let data = codec.encode(items.iter().map(|i| (false, i.as_slice())));
        let decoded = batch_items(&mut codec, &data).expect("the batch decodes");
        let known: Vec<bool> = decoded
            .iter()
            .map(|i| {
                i.as_ref()
                    .expect("each item decodes")
                    .signature_known_good()
            })
            .collect();
        // The good tail is remembered; the interior has no signature; the
        // forged tail is left for verification to find and blame.
        assert_eq!(known, vec![false, false, true, false, false]);
        let forged = decoded[4].as_ref().expect("decodes");
        assert!(matches!(
            forged.check_signature(),
            Err(VerifyError::Signature { .. })
        ));
    }

    #[test]
    fn a_batch_of_many_signed_tails_gets_only_a_few_checked_here() {
        // Every other bundle of a chain, each signed: every one is a tail.
        let (_, a) = chain(3, 40);
        let items: Vec<Vec<u8>> = a.iter().step_by(2).map(|b| b.bytes().to_vec()).collect();
        let mut codec = BatchCodec::default();
        let data = codec.encode(items.iter().map(|i| (false, i.as_slice())));
        let decoded = batch_items(&mut codec, &data).expect("the batch decodes");
        let known = decoded
            .iter()
            .filter(|i| i.as_ref().is_ok_and(Bundle::signature_known_good))
            .count();
        assert_eq!(known, MAX_PRE_CHECKS);
        // The rest still verify where verification asks.
        assert!(
            decoded
                .iter()
                .all(|i| i.as_ref().is_ok_and(|b| b.check_signature().is_ok()))
        );
    }
}
