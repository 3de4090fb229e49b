//! Bundles: the atomic, signed unit of change.
//!
//! # Format
//! A stored or transferred bundle is `flag || [signature] || body`: `body` is the
//! canonical postcard encoding of [`BundleBody`]; `flag` is 1 when a 64-byte
//! ed25519 signature over the body hash follows, 0 when it is left out. The
//! [`BundleHash`], the checksum everything refers to, is `blake3(body)`, and
//! `prev_hash` chains each author's bundles by it: bundle `seq` names the hash
//! of the same author's bundle `seq - 1` in the workspace.
//!
//! # Why the signature is optional
//! The hash chain makes one signature at the end of a run authenticate the
//! whole run (see [`crate::verify`]), so interior signatures add nothing but 64
//! incompressible bytes each: on 100,000 one-person bundles that is 6.1 MiB on
//! the wire. Authors sign every bundle; senders drop the signatures a receiver
//! does not need (every run in a batch still ends in a signed bundle), and a
//! store keeps whatever signatures it received. A bundle with no signature is
//! accepted only when a later signed bundle of the same author vouches for it.

use serde::{Deserialize, Serialize};

use crate::crypto::{self, ActorKey, Signature};
use crate::encoding;
use crate::error::{DecodeError, ModelError, VerifyError};
use crate::hlc::Hlc;
use crate::ids::{ActorId, BundleHash, OpId, WorkspaceId};
use crate::limits;
use crate::op::Op;

/// Why a bundle was written. Undo and redo name the bundle they revert.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum BundleKind {
    /// A person's edit in a UI or the CLI.
    UserEdit,
    /// The whole output of one job run.
    JobOutput,
    /// An import (CSV, JSON, library copy, template).
    Import,
    /// A conflict resolution: its ops name every head they settle.
    MergeResolution,
    /// Reverts the named bundle.
    Undo {
        /// The bundle undone.
        of: BundleHash,
    },
    /// Reverts the named undo bundle.
    Redo {
        /// The undo bundle redone.
        of: BundleHash,
    },
}

impl BundleKind {
    /// A one-word name for tables and JSON.
    pub fn name(&self) -> &'static str {
        match self {
            BundleKind::UserEdit => "user_edit",
            BundleKind::JobOutput => "job_output",
            BundleKind::Import => "import",
            BundleKind::MergeResolution => "merge_resolution",
            BundleKind::Undo { .. } => "undo",
            BundleKind::Redo { .. } => "redo",
        }
    }
}

/// The signed content of a bundle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BundleBody {
    /// The workspace it belongs to; checked against the one it arrived for.
    pub workspace: WorkspaceId,
    /// The writer; also the signing key.
    pub author: ActorId,
    /// 1, 2, 3… per (workspace, author). Never reused.
    pub seq: u64,
    /// Hash of the author's previous bundle; `None` exactly when `seq == 1`.
    pub prev_hash: Option<BundleHash>,
    /// When, by the writer's hybrid logical clock.
    pub hlc: Hlc,
    /// Why.
    pub kind: BundleKind,
    /// A short human summary, e.g. "Edited contact Jane Doe".
    pub summary: String,
    /// The changes, applied together or not at all.
    pub ops: Vec<Op>,
}

impl BundleBody {
    /// Checks every cap and rule that does not need other bundles.
    ///
    /// # Errors
    /// [`DecodeError::Invalid`] naming the rule.
    pub fn check(&self) -> Result<(), DecodeError> {
        if self.seq == 0 {
            return Err(DecodeError::Invalid("seq starts at 1"));
        }
        if (self.seq == 1) != self.prev_hash.is_none() {
            return Err(DecodeError::Invalid(
                "prev_hash must be absent exactly at seq 1",
            ));
        }
        if self.ops.is_empty() {
            return Err(DecodeError::Invalid("bundle has no ops"));
        }
        if self.ops.len() > limits::MAX_OPS_PER_BUNDLE {
            return Err(DecodeError::Invalid("too many ops in one bundle"));
        }
        if self.summary.len() > limits::MAX_SUMMARY_BYTES {
            return Err(DecodeError::Invalid("summary too long"));
        }
        for op in &self.ops {
            op.check().map_err(DecodeError::Invalid)?;
        }
        Ok(())
    }

    /// Signs the body, producing a bundle ready to commit and send.
    ///
    /// # Errors
    /// [`ModelError`] when the body breaks a cap or rule (it would never verify).
    pub fn sign(self, key: &ActorKey) -> Result<Bundle, ModelError> {
        self.seal(key, true)
    }

    /// Encodes and hashes the body as `key`'s bundle, signed or not. An
    /// unsigned bundle is only ever committed or sent inside a run whose
    /// last bundle is signed (see [`crate::draft::sign_run`]): the signed
    /// successor's hash chain vouches for it, as [`crate::verify`] explains.
    ///
    /// # Errors
    /// As [`BundleBody::sign`].
    pub fn seal(self, key: &ActorKey, signed: bool) -> Result<Bundle, ModelError> {
        if self.ops.is_empty() {
            return Err(ModelError::Empty);
        }
        if self.ops.len() > limits::MAX_OPS_PER_BUNDLE {
            return Err(ModelError::TooManyOps {
                count: self.ops.len(),
                max: limits::MAX_OPS_PER_BUNDLE,
            });
        }
        self.check().map_err(|e| match e {
            DecodeError::Invalid(why) => ModelError::Invalid(why),
            _ => ModelError::Invalid("body does not encode"),
        })?;
        if self.author != key.actor_id() {
            return Err(ModelError::Invalid("author is not the signing key"));
        }
        let body_bytes = encoding::encode(&self);
        if body_bytes.len() + 65 > limits::MAX_BUNDLE_BYTES {
            return Err(ModelError::Invalid(
                "bundle larger than 8 MiB: split it or move data to assets",
            ));
        }
        let hash = BundleHash(crypto::hash(&body_bytes));
        let signature = signed.then(|| key.sign_body(&hash.0));
        let bytes = frame(signature.as_ref(), &body_bytes);
        Ok(Bundle {
            body: self,
            // Made here with the author's key (checked above) over this hash.
            signature_known_good: signature.is_some(),
            signature,
            hash,
            bytes,
        })
    }
}

fn frame(signature: Option<&Signature>, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 65);
    match signature {
        Some(sig) => {
            out.push(1);
            out.extend_from_slice(&sig.0);
        }
        None => out.push(0),
    }
    out.extend_from_slice(body);
    out
}

/// A decoded bundle with its hash computed from its bytes. Decoding checks
/// the caps; the signature and chain are checked by [`Bundle::check_signature`]
/// and [`crate::verify`], because a run of chained bundles needs only one
/// signature check.
#[derive(Clone, Debug)]
pub struct Bundle {
    body: BundleBody,
    signature: Option<Signature>,
    hash: BundleHash,
    bytes: Vec<u8>,
    /// The signature was verified (or made) for this very copy: set only
    /// by a check that succeeded ([`Bundle::pre_check_signature`]) or by
    /// signing, never by decoding, so [`Bundle::check_signature`] can answer
    /// from it. The fields above never change after construction.
    signature_known_good: bool,
}

/// Two copies are equal when their bytes (and so body, signature and hash)
/// are: whether a copy's signature was checked already is not part of it.
impl PartialEq for Bundle {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash
            && self.signature == other.signature
            && self.bytes == other.bytes
            && self.body == other.body
    }
}

impl Bundle {
    /// Decodes untrusted bytes and computes their hash.
    ///
    /// # Errors
    /// [`VerifyError::Decode`] for oversize, malformed or rule-breaking input.
    pub fn decode(bytes: Vec<u8>) -> Result<Bundle, VerifyError> {
        Bundle::decode_or_return(bytes).map_err(|(e, _)| e)
    }

    /// As [`Bundle::decode`], handing the bytes back with the error (for
    /// quarantine) so the caller needs no copy of them.
    ///
    /// # Errors
    /// As [`Bundle::decode`].
    pub fn decode_or_return(bytes: Vec<u8>) -> Result<Bundle, (VerifyError, Vec<u8>)> {
        Bundle::assemble(bytes, None)
    }

    /// The workspace, author and seq that bytes say they are, read from the
    /// body's first fields alone, so it answers for bytes that do not decode
    /// as a bundle too; `None` when even those fields do not parse. Nothing
    /// here is verified: it names the slot a refused copy was meant to fill,
    /// so a receiver can stop waiting on the sender for that slot and ask
    /// another member, and quarantine review can say which change the copy
    /// claims to be.
    pub fn claimed_slot(bytes: &[u8]) -> Option<(WorkspaceId, ActorId, u64)> {
        let body = match bytes.first()? {
            0 => bytes.get(1..)?,
            1 => bytes.get(65..)?,
            _ => return None,
        };
        postcard::take_from_bytes::<(WorkspaceId, ActorId, u64)>(body)
            .ok()
            .map(|(slot, _)| slot)
    }

    /// As [`Bundle::decode_or_return`] for bytes whose body the caller has
    /// already parsed from exactly these bytes (the batch decoder builds it
    /// from the columns it rebuilt them from): the same caps, rules and
    /// hash, without parsing the body again.
    ///
    /// # Errors
    /// As [`Bundle::decode`].
    pub(crate) fn from_parsed(
        bytes: Vec<u8>,
        body: BundleBody,
    ) -> Result<Bundle, (VerifyError, Vec<u8>)> {
        Bundle::assemble(bytes, Some(body))
    }

    fn assemble(
        bytes: Vec<u8>,
        parsed: Option<BundleBody>,
    ) -> Result<Bundle, (VerifyError, Vec<u8>)> {
        match Bundle::parse(&bytes, parsed) {
            Ok((body, signature, hash)) => Ok(Bundle {
                body,
                signature,
                hash,
                bytes,
                signature_known_good: false,
            }),
            Err(e) => Err((e, bytes)),
        }
    }

    /// Checks the framing, parses the body (unless `parsed` is it already),
    /// checks its rules and hashes it.
    fn parse(
        bytes: &[u8],
        parsed: Option<BundleBody>,
    ) -> Result<(BundleBody, Option<Signature>, BundleHash), VerifyError> {
        if bytes.len() > limits::MAX_BUNDLE_BYTES {
            return Err(DecodeError::TooLarge {
                len: bytes.len(),
                max: limits::MAX_BUNDLE_BYTES,
            }
            .into());
        }
        let (signature, body_at) = match bytes.first() {
            Some(0) => (None, 1),
            Some(1) if bytes.len() >= 65 => {
                let mut sig = [0u8; 64];
                sig.copy_from_slice(&bytes[1..65]);
                (Some(Signature(sig)), 65)
            }
            Some(1) => return Err(DecodeError::Malformed("truncated signature".into()).into()),
            Some(f) => {
                return Err(DecodeError::Malformed(format!("unknown bundle flag {f}")).into());
            }
            None => return Err(DecodeError::Malformed("empty bundle".into()).into()),
        };
        let body_bytes = &bytes[body_at..];
        let body: BundleBody = match parsed {
            Some(b) => b,
            None => encoding::decode(body_bytes, limits::MAX_BUNDLE_BYTES)?,
        };
        body.check()?;
        let hash = BundleHash(crypto::hash(body_bytes));
        Ok((body, signature, hash))
    }

    /// Decodes and checks the bytes hash to `expected` (what the store indexed or
    /// the request named).
    ///
    /// # Errors
    /// As [`Bundle::decode`], plus [`VerifyError::Hash`].
    pub fn decode_expecting(bytes: Vec<u8>, expected: &BundleHash) -> Result<Bundle, VerifyError> {
        let b = Bundle::decode(bytes)?;
        if b.hash != *expected {
            return Err(VerifyError::Hash {
                expected: *expected,
                actual: b.hash,
            });
        }
        Ok(b)
    }

    /// Checks the author's signature over this bundle alone.
    ///
    /// # Errors
    /// [`VerifyError::Signature`] when it does not verify; [`VerifyError::Unsigned`]
    /// when this copy carries no signature (a later signed bundle must vouch for it).
    pub fn check_signature(&self) -> Result<(), VerifyError> {
        let Some(sig) = &self.signature else {
            return Err(VerifyError::Unsigned { seq: self.body.seq });
        };
        if self.signature_known_good || crypto::verify_body(&self.body.author, &self.hash.0, sig) {
            Ok(())
        } else {
            Err(VerifyError::Signature {
                author: self.body.author,
            })
        }
    }

    /// [`Bundle::check_signature`] now, remembering a success in this copy so
    /// that a later check answers without the ed25519 work. A receiver does
    /// this where a frame is decoded, off the store's one thread, for the
    /// bundles whose signatures verification will ask for (the tails of
    /// runs); a failure is not remembered and is found again, and blamed,
    /// by the verification that asks.
    ///
    /// # Errors
    /// As [`Bundle::check_signature`].
    pub fn pre_check_signature(&mut self) -> Result<(), VerifyError> {
        self.check_signature()?;
        self.signature_known_good = true;
        Ok(())
    }

    /// Whether a check of this copy's signature succeeded already (tests).
    #[cfg(test)]
    pub(crate) fn signature_known_good(&self) -> bool {
        self.signature_known_good
    }

    /// This bundle without its signature, for sending inside a run that ends in
    /// a signed bundle. The hash is unchanged.
    pub fn without_signature(&self) -> Bundle {
        let at = if self.signature.is_some() { 65 } else { 1 };
        Bundle {
            body: self.body.clone(),
            signature: None,
            hash: self.hash,
            bytes: frame(None, &self.bytes[at..]),
            signature_known_good: false,
        }
    }

    /// Full single-bundle verification: signature, workspace and, when known,
    /// the hash of the author's previous bundle.
    ///
    /// # Errors
    /// The first failing check.
    pub fn verify_alone(
        &self,
        workspace: &WorkspaceId,
        prev: Option<&BundleHash>,
    ) -> Result<(), VerifyError> {
        if self.body.workspace != *workspace {
            return Err(VerifyError::Workspace {
                expected: *workspace,
                found: self.body.workspace,
            });
        }
        if let Some(prev) = prev
            && self.body.prev_hash.as_ref() != Some(prev)
        {
            return Err(VerifyError::Chain {
                seq: self.body.seq,
                why: "prev_hash does not match the previous bundle",
            });
        }
        self.check_signature()
    }

    /// The signed content.
    pub fn body(&self) -> &BundleBody {
        &self.body
    }

    /// The checksum and identity.
    pub fn hash(&self) -> BundleHash {
        self.hash
    }

    /// The exact bytes, as stored and sent.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Takes the bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// The signature, when this copy carries one.
    pub fn signature(&self) -> Option<&Signature> {
        self.signature.as_ref()
    }

    /// The id of the `index`-th op.
    pub fn op_id(&self, index: usize) -> OpId {
        OpId {
            author: self.body.author,
            seq: self.body.seq,
            index: index as u32,
        }
    }

    /// Ops with their ids.
    pub fn ops_with_ids(&self) -> impl Iterator<Item = (OpId, &Op)> {
        self.body
            .ops
            .iter()
            .enumerate()
            .map(|(i, op)| (self.op_id(i), op))
    }
}
