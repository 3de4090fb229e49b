//! Wire messages of `/troupe/sync/1`.
//!
//! Goals: compact, versioned, and safe to decode from anyone: the frame size
//! is capped before parsing and every count is checked against
//! [`limits`](super::limits) right after decoding, before anything acts on it.
//! Non-goals: streaming partial frames (the transport delimits frames) and
//! compatibility across major versions (a new version byte is a new protocol).
//!
//! # Wire format
//! A frame is `version (1 byte, = 1) || postcard(Message)`, at most
//! [`MAX_FRAME`] bytes. A batch's `data` is `2 || zstd(columns)`: its bundles
//! laid out column-wise (the `columnar` module), which the receiver turns back
//! into the exact bundle bytes (bundle bytes as in [`crate::bundle`]: flag,
//! optional signature, body). The older row layout, zstd over the
//! concatenation of `u32 little-endian length || bundle bytes` items, is
//! still accepted.

use std::io::Read;

use serde::{Deserialize, Serialize};

use super::limits::{
    BLOB_CHUNK, MAX_AUTHORS, MAX_BATCH_BUNDLES, MAX_BATCH_PLAIN, MAX_FRAME, MAX_PROOFS,
    MAX_RANGE_WORKSPACES, MAX_REASON_BYTES, PROOF_PAD,
};
use crate::error::DecodeError;
use crate::ids::{ActorId, BlobHash, BundleHash, WorkspaceId};
use crate::limits::MAX_BUNDLE_BYTES;
use crate::ranges::SeqRangeSet;

/// The protocol version byte that starts every frame.
pub const VERSION: u8 = 1;

/// What one side holds of one workspace: per author, the seqs held.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceRanges {
    /// Workspace (only ever sent for workspaces both sides proved).
    pub workspace: WorkspaceId,
    /// Per author, ascending by author.
    pub authors: Vec<(ActorId, SeqRangeSet)>,
}

/// One message. Field order and variant order are the wire format: append only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// First message both ways: a fresh nonce the other side's proofs must bind.
    Hello {
        /// 32 fresh random bytes.
        nonce: [u8; 32],
    },
    /// Membership proofs, one per workspace held, padded with random values to
    /// a multiple of [`PROOF_PAD`]. Workspace ids are never named.
    Proofs {
        /// Keyed hashes bound to both peer ids and both nonces.
        proofs: Vec<[u8; 32]>,
    },
    /// What the sender holds in every workspace both sides proved (possibly none).
    Ranges {
        /// Per shared workspace.
        workspaces: Vec<WorkspaceRanges>,
    },
    /// "Send me these seqs of this author."
    Want {
        /// Workspace.
        workspace: WorkspaceId,
        /// Author.
        author: ActorId,
        /// Seqs wanted.
        ranges: SeqRangeSet,
    },
    /// Bundles, compressed; acknowledged with [`Message::BatchAck`] once committed.
    Batch {
        /// Workspace.
        workspace: WorkspaceId,
        /// Sender-chosen id, unique per (connection, workspace).
        batch_id: u64,
        /// The batch's bundles, compressed (see the module doc).
        #[serde(with = "crate::encoding::byte_buf")]
        data: Vec<u8>,
    },
    /// The batch is committed (or refused) on the receiver; the sender may send more.
    BatchAck {
        /// Workspace.
        workspace: WorkspaceId,
        /// Which batch.
        batch_id: u64,
    },
    /// "I now also hold these seqs": live push, answered by a [`Message::Want`].
    Announce {
        /// Workspace.
        workspace: WorkspaceId,
        /// Author.
        author: ActorId,
        /// Seqs newly held.
        ranges: SeqRangeSet,
    },
    /// "Send me this exact bundle": repair of a corrupt local copy.
    RepairWant {
        /// Workspace.
        workspace: WorkspaceId,
        /// Author.
        author: ActorId,
        /// Seq.
        seq: u64,
        /// The hash the copy must have.
        hash: BundleHash,
    },
    /// Answer to [`Message::RepairWant`]: the bytes, or `None` when not held.
    RepairReply {
        /// Workspace.
        workspace: WorkspaceId,
        /// Author.
        author: ActorId,
        /// Seq.
        seq: u64,
        /// Bundle bytes.
        bundle: Option<Vec<u8>>,
    },
    /// Keepalive.
    Ping(u64),
    /// Keepalive answer.
    Pong(u64),
    /// Closing, with a reason for the log.
    Bye {
        /// Why.
        reason: String,
    },
    /// "Send me these plain bytes of this blob."
    BlobWant {
        /// Workspace whose ops reference the blob (membership scope).
        workspace: WorkspaceId,
        /// Blob.
        hash: BlobHash,
        /// First plain byte.
        offset: u64,
        /// How many (at most [`BLOB_CHUNK`]).
        len: u32,
    },
    /// Answer to [`Message::BlobWant`]: the bytes asked for.
    BlobChunk {
        /// Workspace.
        workspace: WorkspaceId,
        /// Blob.
        hash: BlobHash,
        /// First plain byte.
        offset: u64,
        /// The blob's full plain size.
        size: u64,
        /// The bytes.
        #[serde(with = "crate::encoding::byte_buf")]
        bytes: Vec<u8>,
    },
    /// Answer to [`Message::BlobWant`]: not held here (or garbage collected).
    BlobUnavailable {
        /// Workspace.
        workspace: WorkspaceId,
        /// Blob.
        hash: BlobHash,
    },
    /// Membership proofs for workspaces joined (or added) after the handshake,
    /// bound to this session's nonces like [`Message::Proofs`] and padded the
    /// same way. An opening (`answer: false`) is always answered, with proofs
    /// for the workspaces it matched (possibly only padding), so a non-member
    /// learns nothing; an answer is not answered.
    LateProofs {
        /// Keyed hashes bound to both peer ids and both session nonces.
        proofs: Vec<[u8; 32]>,
        /// Whether this answers the peer's opening.
        answer: bool,
    },
    /// "I left this workspace": the receiver stops syncing it on this
    /// connection. Sent only to peers that share it.
    Withdrawn {
        /// The workspace left.
        workspace: WorkspaceId,
    },
}

/// Room a blob chunk's frame needs besides the chunk: the version, the
/// variant and its other fields, at most 1 + 1 + 32 + 32 + 10 + 10 + 5
/// bytes, rounded up.
const CHUNK_HEADER: usize = 96;

impl Message {
    /// The workspace a message in an active session is about, if it names one.
    pub fn workspace(&self) -> Option<WorkspaceId> {
        match self {
            Message::Want { workspace, .. }
            | Message::Batch { workspace, .. }
            | Message::BatchAck { workspace, .. }
            | Message::Announce { workspace, .. }
            | Message::RepairWant { workspace, .. }
            | Message::RepairReply { workspace, .. }
            | Message::BlobWant { workspace, .. }
            | Message::BlobChunk { workspace, .. }
            | Message::BlobUnavailable { workspace, .. } => Some(*workspace),
            _ => None,
        }
    }

    /// Encodes as one frame.
    pub fn to_frame(&self) -> Vec<u8> {
        // A blob chunk's bytes are copied once, into a buffer already big
        // enough, not into a growing encoding and then again after the
        // version byte.
        let room = match self {
            Message::BlobChunk { bytes, .. } => bytes.len() + CHUNK_HEADER,
            _ => 64,
        };
        let mut out = Vec::with_capacity(room);
        out.push(VERSION);
        crate::encoding::encode_into(self, out)
    }

    /// The frame of a [`Message::BlobChunk`] of `len` bytes, which `fill`
    /// appends to the frame itself: the same bytes as [`Message::to_frame`]
    /// of the message holding them, without the chunk in a buffer of its
    /// own first. `None` when `fill` says the bytes are not here (`false`)
    /// or appends another number of them.
    pub fn blob_chunk_frame<E>(
        workspace: WorkspaceId,
        hash: BlobHash,
        offset: u64,
        size: u64,
        len: usize,
        fill: impl FnOnce(&mut Vec<u8>) -> Result<bool, E>,
    ) -> Result<Option<Vec<u8>>, E> {
        let empty = Message::BlobChunk {
            workspace,
            hash,
            offset,
            size,
            bytes: Vec::new(),
        };
        let mut out = Vec::with_capacity(len + CHUNK_HEADER);
        out.push(VERSION);
        let mut out = crate::encoding::encode_into(&empty, out);
        // postcard writes a byte string as its varint length and then its
        // bytes, and they are the variant's last field: an empty one ends
        // the encoding with its length, a single 0.
        if out.pop() != Some(0) {
            unreachable!("a blob chunk's encoding ends with its byte string");
        }
        super::columnar::put_varint(&mut out, len as u64);
        let start = out.len();
        if !fill(&mut out)? || out.len() - start != len {
            return Ok(None);
        }
        Ok(Some(out))
    }

    /// Decodes one frame from a peer: size cap first, then version, then
    /// postcard, then every count.
    ///
    /// # Errors
    /// [`DecodeError::TooLarge`], [`DecodeError::Version`],
    /// [`DecodeError::Malformed`] or [`DecodeError::Invalid`].
    pub fn from_frame(bytes: &[u8]) -> Result<Message, DecodeError> {
        if bytes.len() > MAX_FRAME {
            return Err(DecodeError::TooLarge {
                len: bytes.len(),
                max: MAX_FRAME,
            });
        }
        match bytes.first() {
            Some(&VERSION) => {}
            Some(&v) => return Err(DecodeError::Version(v)),
            None => return Err(DecodeError::Malformed("empty frame".into())),
        }
        let msg: Message = crate::encoding::decode(&bytes[1..], MAX_FRAME)?;
        msg.check()?;
        Ok(msg)
    }

    /// Checks every count and range set against the caps.
    fn check(&self) -> Result<(), DecodeError> {
        let too_many = |what: &'static str, n: usize, max: usize| {
            if n > max {
                Err(DecodeError::Invalid(what))
            } else {
                Ok(())
            }
        };
        match self {
            Message::Proofs { proofs } | Message::LateProofs { proofs, .. } => {
                too_many("too many proofs", proofs.len(), MAX_PROOFS + PROOF_PAD)
            }
            Message::Ranges { workspaces } => {
                too_many(
                    "too many workspaces",
                    workspaces.len(),
                    MAX_RANGE_WORKSPACES,
                )?;
                for w in workspaces {
                    too_many("too many authors", w.authors.len(), MAX_AUTHORS)?;
                    for (_, r) in &w.authors {
                        r.check()?;
                    }
                }
                Ok(())
            }
            Message::Want { ranges, .. } | Message::Announce { ranges, .. } => ranges.check(),
            Message::RepairWant { seq, .. } if *seq == 0 => Err(DecodeError::Invalid("seq 0")),
            Message::RepairReply {
                bundle: Some(b), ..
            } => too_many("bundle too large", b.len(), MAX_BUNDLE_BYTES),
            Message::Bye { reason } => too_many("reason too long", reason.len(), MAX_REASON_BYTES),
            Message::BlobWant { len, .. } => {
                too_many("blob chunk too large", *len as usize, BLOB_CHUNK)
            }
            Message::BlobChunk { bytes, .. } => {
                too_many("blob chunk too large", bytes.len(), BLOB_CHUNK)
            }
            _ => Ok(()),
        }
    }
}

/// Top bit of an item length: this item's `prev_hash` was left out; it is
/// the hash of the previous item. Saves 32 incompressible bytes per bundle.
const ELIDED: u32 = 1 << 31;

/// First byte of a batch payload in the column layout ([`super::columnar`]);
/// a payload in the row layout starts with zstd's magic number instead.
const COLUMNAR: u8 = 2;

/// Offset of the 32 `prev_hash` bytes in bundle bytes (flag, optional
/// signature, then the body: workspace, author, varint seq, option tag 1).
fn prev_hash_at(bytes: &[u8]) -> Option<usize> {
    let body = match bytes.first()? {
        0 => 1,
        1 => 65,
        _ => return None,
    };
    let mut at = body + 64;
    for _ in 0..10 {
        let b = *bytes.get(at)?;
        at += 1;
        if b & 0x80 == 0 {
            return (bytes.get(at) == Some(&1)).then_some(at + 1);
        }
    }
    None
}

/// `bytes` without their `prev_hash`, when it equals `prev`.
#[cfg(test)]
pub(crate) fn elide_prev_hash(bytes: &[u8], prev: &BundleHash) -> Option<Vec<u8>> {
    let at = prev_hash_at(bytes)?;
    if bytes.get(at..at + 32)? != prev.0.as_slice() {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() - 32);
    out.extend_from_slice(&bytes[..at]);
    out.extend_from_slice(&bytes[at + 32..]);
    Some(out)
}

/// As [`elide_prev_hash`], in the same buffer (no copy); the bytes come
/// back unchanged as the error when their `prev_hash` is not `prev`.
pub(crate) fn elide_prev_hash_in_place(
    mut bytes: Vec<u8>,
    prev: &BundleHash,
) -> Result<Vec<u8>, Vec<u8>> {
    match prev_hash_at(&bytes) {
        Some(at) if bytes.get(at..at + 32) == Some(prev.0.as_slice()) => {
            bytes.drain(at..at + 32);
            Ok(bytes)
        }
        _ => Err(bytes),
    }
}

/// Puts `prev` back where [`elide_prev_hash`] took it out.
pub(crate) fn restore_prev_hash(bytes: &[u8], prev: &BundleHash) -> Option<Vec<u8>> {
    let at = prev_hash_at(bytes)?;
    let mut out = Vec::with_capacity(bytes.len() + 32);
    out.extend_from_slice(&bytes[..at]);
    out.extend_from_slice(&prev.0);
    out.extend_from_slice(&bytes[at..]);
    Some(out)
}

/// zstd level for batches. Measured on the column layout of 100,000
/// contact bundles (`sync_pair` bench, same run): level 1 takes about 40 %
/// less compression time than level 3 for 2.6 % more bytes (7.95 vs 7.75
/// MiB with prev hashes kept; about 4.5 MiB on the wire, target 6); level
/// -1 saves little more time for 8 % more bytes; higher levels cost far
/// more time than they save.
const ZSTD_LEVEL: i32 = 1;

/// Reusable zstd contexts for batches (creating them per batch costs more
/// than compressing a small batch).
pub struct BatchCodec {
    compressor: zstd::bulk::Compressor<'static>,
    decompressor: zstd::bulk::Decompressor<'static>,
}

impl std::fmt::Debug for BatchCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BatchCodec")
    }
}

impl Default for BatchCodec {
    fn default() -> Self {
        BatchCodec {
            // Creating contexts fails only on allocation failure.
            compressor: zstd::bulk::Compressor::new(ZSTD_LEVEL).expect("zstd context"),
            decompressor: zstd::bulk::Decompressor::new().expect("zstd context"),
        }
    }
}

impl BatchCodec {
    /// A codec compressing at zstd `level` instead of the default, so a
    /// benchmark can weigh time against bytes on the wire (any level's
    /// output decodes the same way).
    pub fn with_level(level: i32) -> BatchCodec {
        BatchCodec {
            // Creating contexts fails only on allocation failure.
            compressor: zstd::bulk::Compressor::new(level).expect("zstd context"),
            decompressor: zstd::bulk::Decompressor::new().expect("zstd context"),
        }
    }

    /// Packs bundle byte strings into a compressed batch payload. Items marked
    /// `true` had their `prev_hash` left out (it equals the hash of the item before).
    pub fn encode<'a>(&mut self, items: impl IntoIterator<Item = (bool, &'a [u8])>) -> Vec<u8> {
        let items: Vec<(bool, &[u8])> = items.into_iter().collect();
        let plain = super::columnar::encode(&items);
        // Compressing an in-memory buffer fails only on allocation failure.
        let packed = self
            .compressor
            .compress(&plain)
            .expect("in-memory zstd compression");
        let mut out = Vec::with_capacity(packed.len() + 1);
        out.push(COLUMNAR);
        out.extend_from_slice(&packed);
        out
    }

    /// The same items in the row layout (one length-prefixed bundle after
    /// another), which decoders still accept; tests compare the two.
    pub fn encode_rows<'a>(
        &mut self,
        items: impl IntoIterator<Item = (bool, &'a [u8])>,
    ) -> Vec<u8> {
        let mut plain = Vec::new();
        for (elided, item) in items {
            let flag = if elided { ELIDED } else { 0 };
            plain.extend_from_slice(&(item.len() as u32 | flag).to_le_bytes());
            plain.extend_from_slice(item);
        }
        // Compressing an in-memory buffer fails only on allocation failure.
        self.compressor
            .compress(&plain)
            .expect("in-memory zstd compression")
    }

    /// Unpacks a batch payload, bounding the decompressed size and every item
    /// before allocating it.
    ///
    /// # Errors
    /// [`DecodeError::TooLarge`] past [`MAX_BATCH_PLAIN`] bytes or
    /// [`MAX_BATCH_BUNDLES`] items; [`DecodeError::Malformed`] otherwise.
    pub fn decode(&mut self, data: &[u8]) -> Result<Vec<(bool, Vec<u8>)>, DecodeError> {
        match self.unpack(data)? {
            (plain, true) => super::columnar::decode(&plain),
            (plain, false) => split_items(&plain),
        }
    }

    /// As [`BatchCodec::decode`], with the bodies of structured items built
    /// from their columns (see [`super::column_body`]).
    pub(crate) fn decode_rebuilt(
        &mut self,
        data: &[u8],
    ) -> Result<Vec<super::columnar::Rebuilt>, DecodeError> {
        match self.unpack(data)? {
            (plain, true) => super::columnar::decode_rebuilt(&plain),
            (plain, false) => Ok(split_items(&plain)?
                .into_iter()
                .map(|(elided, bytes)| super::columnar::Rebuilt::raw(elided, bytes))
                .collect()),
        }
    }

    /// A payload decompressed, and whether it is in the column layout.
    fn unpack(&mut self, data: &[u8]) -> Result<(Vec<u8>, bool), DecodeError> {
        Ok(match data.split_first() {
            Some((&COLUMNAR, packed)) => (self.decompress(packed)?, true),
            _ => (self.decompress(data)?, false),
        })
    }

    fn decompress(&mut self, data: &[u8]) -> Result<Vec<u8>, DecodeError> {
        Ok(match zstd::zstd_safe::get_frame_content_size(data) {
            Ok(Some(n)) if n > MAX_BATCH_PLAIN as u64 => {
                return Err(DecodeError::TooLarge {
                    len: usize::try_from(n).unwrap_or(usize::MAX),
                    max: MAX_BATCH_PLAIN,
                });
            }
            // The declared size bounds the buffer; a lying header fails to decode.
            Ok(Some(n)) => self
                .decompressor
                .decompress(data, n as usize)
                .map_err(|e| DecodeError::Malformed(format!("zstd: {e}")))?,
            _ => stream_decode(data)?,
        })
    }
}

/// The column layout of `items` before compression (what
/// [`BatchCodec::encode`] compresses), so benchmarks can time the layout
/// apart from zstd.
#[cfg(feature = "testing")]
pub fn column_layout(items: &[(bool, &[u8])]) -> Vec<u8> {
    super::columnar::encode(items)
}

/// Packs bundle byte strings into a compressed batch payload (one-off contexts).
pub fn encode_batch<'a>(items: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    BatchCodec::default().encode(items.into_iter().map(|i| (false, i)))
}

/// Unpacks a batch payload (one-off contexts); see [`BatchCodec::decode`].
///
/// # Errors
/// As [`BatchCodec::decode`].
pub fn decode_batch(data: &[u8]) -> Result<Vec<(bool, Vec<u8>)>, DecodeError> {
    BatchCodec::default().decode(data)
}

/// Decompresses a frame without a declared size, reading at most the cap.
fn stream_decode(data: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let decoder = zstd::stream::read::Decoder::with_buffer(data)
        .map_err(|e| DecodeError::Malformed(format!("zstd: {e}")))?;
    let mut plain = Vec::new();
    decoder
        .take(MAX_BATCH_PLAIN as u64 + 1)
        .read_to_end(&mut plain)
        .map_err(|e| DecodeError::Malformed(format!("zstd: {e}")))?;
    if plain.len() > MAX_BATCH_PLAIN {
        return Err(DecodeError::TooLarge {
            len: plain.len(),
            max: MAX_BATCH_PLAIN,
        });
    }
    Ok(plain)
}

fn split_items(plain: &[u8]) -> Result<Vec<(bool, Vec<u8>)>, DecodeError> {
    let mut items = Vec::new();
    let mut rest = plain;
    while !rest.is_empty() {
        if items.len() == MAX_BATCH_BUNDLES {
            return Err(DecodeError::TooLarge {
                len: items.len() + 1,
                max: MAX_BATCH_BUNDLES,
            });
        }
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            return Err(DecodeError::Malformed("truncated batch item length".into()));
        };
        let raw = u32::from_le_bytes(*len);
        let elided = raw & ELIDED != 0;
        let len = (raw & !ELIDED) as usize;
        if len > MAX_BUNDLE_BYTES || len > tail.len() {
            return Err(DecodeError::TooLarge {
                len,
                max: tail.len().min(MAX_BUNDLE_BYTES),
            });
        }
        items.push((elided, tail[..len].to_vec()));
        rest = &tail[len..];
    }
    Ok(items)
}
