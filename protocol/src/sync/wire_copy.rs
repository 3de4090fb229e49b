//! A received batch kept as it arrived, for a store's commit journal.
//!
//! A batch crosses the wire compressed and in columns: about a fifteenth of
//! its bundles' own bytes. The engine hands that payload on with the bundles
//! it picked from it ([`crate::sync::Output::CommitBatch`]), so a journal can
//! keep the payload, which items were picked, and a digest of the picked
//! bundles' hashes, and get exactly the same bundles back after a crash by
//! decoding it again ([`WireCopy::bundles`]). Nothing here is trusted more
//! than the wire: the payload goes through the same decoder, and the digest
//! proves the bundles are the ones first committed (a decoder that changed
//! in between gives an error, never other bundles).

use crate::bundle::Bundle;

use super::message::BatchCodec;

/// A batch payload as received, with the bundles picked from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireCopy {
    payload: Vec<u8>,
    picks: Vec<u32>,
    digest: [u8; 32],
}

/// Why a [`WireCopy`] does not give back its bundles.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireCopyError {
    /// The payload is not a batch.
    #[error("the kept batch does not decode: {0}")]
    Undecodable(String),
    /// A pick names no item, or an item that is not a bundle.
    #[error("item {0} of the kept batch is missing or not a bundle")]
    BadPick(u32),
    /// The picked bundles are not the ones first committed.
    #[error("the kept batch gives other bundles than were committed")]
    Digest,
}

impl WireCopy {
    /// The payload with the items at `picks`, which are `bundles` (in that
    /// order: the digest is computed from their hashes).
    pub fn new(payload: Vec<u8>, picks: Vec<u32>, bundles: &[Bundle]) -> WireCopy {
        WireCopy {
            payload,
            picks,
            digest: digest(bundles),
        }
    }

    /// Rebuilds a copy from its three parts, as a journal stored them.
    pub fn from_parts(payload: Vec<u8>, picks: Vec<u32>, digest: [u8; 32]) -> WireCopy {
        WireCopy {
            payload,
            picks,
            digest,
        }
    }

    /// The batch payload as it arrived (compressed).
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// Which of the payload's items were committed, in commit order.
    pub fn picks(&self) -> &[u32] {
        &self.picks
    }

    /// blake3 of the committed bundles' hashes, in commit order.
    pub fn digest(&self) -> &[u8; 32] {
        &self.digest
    }

    /// Decodes the payload again and returns the picked bundles.
    ///
    /// # Errors
    /// [`WireCopyError`]: the payload does not decode, a pick is out of
    /// range or names an item that is not a bundle, or the bundles' hashes
    /// do not match the digest.
    pub fn bundles(&self) -> Result<Vec<Bundle>, WireCopyError> {
        let items = super::prepare::batch_items(&mut BatchCodec::default(), &self.payload)
            .map_err(WireCopyError::Undecodable)?;
        let mut out = Vec::with_capacity(self.picks.len());
        for &p in &self.picks {
            match items.get(p as usize) {
                Some(Ok(b)) => out.push(b.clone()),
                _ => return Err(WireCopyError::BadPick(p)),
            }
        }
        if digest(&out) != self.digest {
            return Err(WireCopyError::Digest);
        }
        Ok(out)
    }
}

fn digest(bundles: &[Bundle]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    for b in bundles {
        h.update(&b.hash().0);
    }
    *h.finalize().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::message::encode_batch;
    use crate::testing::chain;

    fn payload(bundles: &[Bundle]) -> Vec<u8> {
        encode_batch(bundles.iter().map(Bundle::bytes))
    }

    #[test]
    fn the_picked_bundles_come_back_in_pick_order() {
        let (_, b) = chain(1, 6);
        let picked = vec![b[4].clone(), b[1].clone(), b[2].clone()];
        let w = WireCopy::new(payload(&b), vec![4, 1, 2], &picked);
        assert_eq!(w.bundles(), Ok(picked.clone()));
        // Stored as three parts and read back, it is the same copy.
        let again = WireCopy::from_parts(w.payload().to_vec(), w.picks().to_vec(), *w.digest());
        assert_eq!(again.bundles(), Ok(picked));
        assert!(w.payload().len() < b.iter().map(|x| x.bytes().len()).sum::<usize>());
    }

    #[test]
    fn a_copy_that_would_give_other_bundles_gives_an_error() {
        let (_, b) = chain(2, 4);
        let w = WireCopy::new(payload(&b), vec![0, 1], &b[..2]);
        // Another pick than the digest was made for.
        let moved = WireCopy::from_parts(w.payload().to_vec(), vec![0, 2], *w.digest());
        assert_eq!(moved.bundles(), Err(WireCopyError::Digest));
        // A pick past the items.
        let past = WireCopy::from_parts(w.payload().to_vec(), vec![0, 9], *w.digest());
        assert_eq!(past.bundles(), Err(WireCopyError::BadPick(9)));
        // A payload that is not a batch.
        let junk = WireCopy::from_parts(vec![7; 40], vec![0], *w.digest());
        assert!(matches!(junk.bundles(), Err(WireCopyError::Undecodable(_))));
        // An item that is not a bundle.
        let bad = encode_batch([b[0].bytes(), b"not a bundle".as_slice()]);
        let w = WireCopy::from_parts(bad, vec![1], *w.digest());
        assert_eq!(w.bundles(), Err(WireCopyError::BadPick(1)));
    }
}
