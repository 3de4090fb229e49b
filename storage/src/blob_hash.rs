//! How a blob's chunks and the whole blob are checked, with one pass over
//! the bytes.
//!
//! A blob is named by the blake3 of its plain bytes, and every stored chunk
//! has its own hash so a range read verifies alone. blake3 is a tree: the
//! blob's hash is built from the hashes ("chaining values") of aligned
//! subtrees, and a 1 MiB chunk at a 1 MiB boundary is such a subtree. So
//! when a chunk's stored hash is its subtree's chaining value (hashed at its
//! offset in the blob), the chunk hashes alone give the blob's hash
//! ([`whole`]): a receive, an add, a read of the whole blob or a scrub
//! hashes each byte once, where hashing every chunk on its own and the blob
//! again took two passes. The check is exactly as strong: the bytes are
//! hashed into the same tree `blake3::hash` builds.
//!
//! Blobs written before this ([`BlobMeta::subtree_hashes`] false) keep
//! chunk hashes of each chunk alone, and are checked the old way. A blob of
//! one chunk has one hash either way: the chunk's is the blob's.

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, left_subtree_len, merge_subtrees_non_root, merge_subtrees_root,
};

use crate::blob::{BlobMeta, CHUNK};
use troupe_protocol::BlobHash;

const CHUNK_BYTES: u64 = CHUNK as u64;

/// The stored hash of chunk `i` (`plain`) of a blob of `size` bytes: its
/// subtree's chaining value when `subtree` and the blob has more than one
/// chunk, else blake3 of the chunk alone.
pub(crate) fn chunk_hash(subtree: bool, size: u64, i: usize, plain: &[u8]) -> [u8; 32] {
    if subtree && size > CHUNK_BYTES {
        let mut h = blake3::Hasher::new();
        h.set_input_offset((i as u64).saturating_mul(CHUNK_BYTES));
        h.update(plain);
        h.finalize_non_root()
    } else {
        *blake3::hash(plain).as_bytes()
    }
}

/// Subtree hashes of every chunk of `bytes` (a whole blob), in order.
pub(crate) fn chunk_hashes(bytes: &[u8]) -> Vec<[u8; 32]> {
    let size = bytes.len() as u64;
    bytes
        .chunks(CHUNK)
        .enumerate()
        .map(|(i, c)| chunk_hash(true, size, i, c))
        .collect()
}

/// The blob's blake3 from its subtree chunk hashes, or `None` when they do
/// not fit a blob of `size` bytes (the wrong count: damaged metadata).
pub(crate) fn whole(hashes: &[[u8; 32]], size: u64) -> Option<[u8; 32]> {
    if hashes.len() as u64 != size.div_ceil(CHUNK_BYTES) {
        return None;
    }
    match hashes {
        [] => Some(*blake3::hash(&[]).as_bytes()),
        [one] => Some(*one),
        _ => {
            let (left, right) = halves(hashes, size);
            Some(*merge_subtrees_root(&left, &right, Mode::Hash).as_bytes())
        }
    }
}

/// The chaining values of the two children of the subtree of `len` bytes
/// whose chunk hashes are `hashes` (more than one, as many as `len` needs).
fn halves(hashes: &[[u8; 32]], len: u64) -> (ChainingValue, ChainingValue) {
    // The left child is the largest power of two of blake3 chunks below
    // `len`: a whole number of our chunks, since `len` spans more than one.
    let left = left_subtree_len(len);
    let k = (left / CHUNK_BYTES) as usize;
    (
        subtree(&hashes[..k], left),
        subtree(&hashes[k..], len - left),
    )
}

fn subtree(hashes: &[[u8; 32]], len: u64) -> ChainingValue {
    match hashes {
        [one] => *one,
        _ => {
            let (left, right) = halves(hashes, len);
            merge_subtrees_non_root(&left, &right, Mode::Hash)
        }
    }
}

/// Checks that a blob's chunks, each already verified against its stored
/// hash and fed in order, make up the blob named `h`: from the stored
/// hashes when they are subtree hashes (no second pass), else by hashing
/// the bytes again.
pub(crate) struct WholeCheck {
    again: Option<blake3::Hasher>,
    len: u64,
}

impl WholeCheck {
    pub(crate) fn new(m: &BlobMeta) -> WholeCheck {
        WholeCheck {
            again: (!m.subtree_hashes).then(blake3::Hasher::new),
            len: 0,
        }
    }

    pub(crate) fn update(&mut self, plain: &[u8]) {
        self.len += plain.len() as u64;
        if let Some(h) = &mut self.again {
            h.update(plain);
        }
    }

    pub(crate) fn matches(self, m: &BlobMeta, h: &BlobHash) -> bool {
        self.len == m.size
            && match self.again {
                Some(hasher) => hasher.finalize().as_bytes() == &h.0,
                None => whole(&m.chunk_hashes, m.size) == Some(h.0),
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtree_chunk_hashes_give_the_blobs_blake3() {
        let k = CHUNK;
        for len in [
            0,
            1,
            k - 1,
            k,
            k + 1,
            2 * k,
            2 * k + 5,
            3 * k - 7,
            3 * k,
            4 * k,
            5 * k + 1,
            8 * k,
            9 * k - 1,
        ] {
            let bytes = troupe_protocol::testing::noise(len, len as u64);
            let hashes = chunk_hashes(&bytes);
            assert_eq!(hashes.len(), len.div_ceil(k), "{len}");
            assert_eq!(
                whole(&hashes, len as u64),
                Some(*blake3::hash(&bytes).as_bytes()),
                "{len} bytes"
            );
        }
    }

    #[test]
    fn a_changed_chunk_or_a_wrong_count_does_not_give_the_name() {
        let bytes = troupe_protocol::testing::noise(3 * CHUNK + 10, 3);
        let name = *blake3::hash(&bytes).as_bytes();
        let mut hashes = chunk_hashes(&bytes);
        // Each chunk's hash depends on where it sits: two chunks swapped
        // do not make the same blob.
        hashes.swap(0, 1);
        assert_ne!(whole(&hashes, bytes.len() as u64), Some(name));
        hashes.swap(0, 1);
        let mut other = bytes.clone();
        other[CHUNK + 3] ^= 1;
        hashes[1] = chunk_hash(true, bytes.len() as u64, 1, &other[CHUNK..2 * CHUNK]);
        assert_ne!(whole(&hashes, bytes.len() as u64), Some(name));
        assert_eq!(whole(&hashes[..3], bytes.len() as u64), None);
        assert_eq!(whole(&[], 5), None);
    }

    #[test]
    fn one_chunk_has_the_same_hash_both_ways() {
        let bytes = troupe_protocol::testing::noise(1000, 1);
        assert_eq!(
            chunk_hash(true, 1000, 0, &bytes),
            chunk_hash(false, 1000, 0, &bytes)
        );
    }
}
