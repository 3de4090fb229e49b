//! Bundles: the atomic, signed unit of change.
//!
//! # Format
//! A stored or transferred bundle is `body || signature`, where `body` is the
//! canonical postcard encoding of [`BundleBody`] and `signature` is 64 bytes of
//! ed25519 over `blake3(body)` (domain-separated). Its [`BundleHash`], the
//! checksum everything else refers to, is `blake3(blake3(body) || signature)`,
//! so it covers every byte. `prev_hash` chains each author's bundles: bundle
//! `seq` names the hash of the same author's bundle `seq - 1` in the workspace.

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
        let mut bytes = encoding::encode(&self);
        if bytes.len() + 64 > limits::MAX_BUNDLE_BYTES {
            return Err(ModelError::Invalid(
                "bundle larger than 8 MiB: split it or move data to assets",
            ));
        }
        let body_hash = crypto::hash(&bytes);
        let signature = key.sign_body(&body_hash);
        bytes.extend_from_slice(&signature.0);
        let hash = bundle_hash(&body_hash, &signature);
        Ok(Bundle {
            body: self,
            signature,
            hash,
            bytes,
        })
    }
}

fn bundle_hash(body_hash: &[u8; 32], sig: &Signature) -> BundleHash {
    let mut h = blake3::Hasher::new();
    h.update(body_hash);
    h.update(&sig.0);
    BundleHash(*h.finalize().as_bytes())
}

/// A decoded bundle with its hash computed from its bytes. Decoding checks
/// the caps; the signature and chain are checked by [`Bundle::check_signature`]
/// and [`crate::verify`], because a run of chained bundles needs only one
/// signature check.
#[derive(Clone, Debug, PartialEq)]
pub struct Bundle {
    body: BundleBody,
    signature: Signature,
    hash: BundleHash,
    bytes: Vec<u8>,
}

impl Bundle {
    /// Decodes untrusted bytes and computes their hash.
    ///
    /// # Errors
    /// [`VerifyError::Decode`] for oversize, malformed or rule-breaking input.
    pub fn decode(bytes: Vec<u8>) -> Result<Bundle, VerifyError> {
        if bytes.len() > limits::MAX_BUNDLE_BYTES {
            return Err(DecodeError::TooLarge {
                len: bytes.len(),
                max: limits::MAX_BUNDLE_BYTES,
            }
            .into());
        }
        if bytes.len() < 64 {
            return Err(DecodeError::Malformed("shorter than a signature".into()).into());
        }
        let split = bytes.len() - 64;
        let body: BundleBody = encoding::decode(&bytes[..split], limits::MAX_BUNDLE_BYTES)?;
        body.check()?;
        let mut sig = [0u8; 64];
        sig.copy_from_slice(&bytes[split..]);
        let signature = Signature(sig);
        let body_hash = crypto::hash(&bytes[..split]);
        let hash = bundle_hash(&body_hash, &signature);
        Ok(Bundle {
            body,
            signature,
            hash,
            bytes,
        })
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
    /// [`VerifyError::Signature`].
    pub fn check_signature(&self) -> Result<(), VerifyError> {
        let body_hash = crypto::hash(&self.bytes[..self.bytes.len() - 64]);
        if crypto::verify_body(&self.body.author, &body_hash, &self.signature) {
            Ok(())
        } else {
            Err(VerifyError::Signature {
                author: self.body.author,
            })
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
        if let Some(prev) = prev {
            if self.body.prev_hash.as_ref() != Some(prev) {
                return Err(VerifyError::Chain {
                    seq: self.body.seq,
                    why: "prev_hash does not match the previous bundle",
                });
            }
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

    /// The signature.
    pub fn signature(&self) -> &Signature {
        &self.signature
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
