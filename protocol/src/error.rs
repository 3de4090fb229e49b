//! Error types of the protocol core, one per operation.

use crate::ids::{ActorId, BundleHash, WorkspaceId};

/// Text that does not parse as an identifier, path or kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// Wrong number of characters; check for a truncated copy-paste.
    #[error("{what} must be {expected} hex digits, found {found}")]
    Length {
        /// What was being parsed.
        what: &'static str,
        /// Expected characters.
        expected: usize,
        /// Characters found.
        found: usize,
    },
    /// A character outside 0-9a-f.
    #[error("{what} must be hex digits (0-9, a-f)")]
    NotHex {
        /// What was being parsed.
        what: &'static str,
    },
    /// An entity id with characters outside `[A-Za-z0-9_-]` or of bad length.
    #[error("entity id {found:?} must be 1-64 letters, digits, '_' or '-'")]
    EntityId {
        /// The offending text (truncated).
        found: String,
    },
    /// An op id not of the form `actor:seq:index`.
    #[error("op id {found:?} must look like <actor hex>:<seq>:<index>")]
    OpId {
        /// The offending text (truncated).
        found: String,
    },
    /// A malformed field path.
    #[error("field path {found:?} is invalid: {why}")]
    Path {
        /// Which rule it broke.
        why: &'static str,
        /// The offending text (truncated).
        found: String,
    },
    /// Neither `show` nor `library`.
    #[error("workspace kind {found:?} must be `show` or `library`")]
    Kind {
        /// The offending text.
        found: String,
    },
}

/// Bytes that do not decode as a bundle or message. Separates "need more" from
/// "never valid" so stream readers can tell them apart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input is larger than the cap for its kind; it was not parsed.
    #[error("encoded size {len} exceeds the cap of {max} bytes")]
    TooLarge {
        /// Offending size.
        len: usize,
        /// Cap.
        max: usize,
    },
    /// Not a valid encoding (truncated, trailing bytes, bad tag, bad UTF-8 …).
    #[error("malformed encoding: {0}")]
    Malformed(String),
    /// Decoded, but breaks a rule or cap of the data model.
    #[error("invalid content: {0}")]
    Invalid(&'static str),
    /// A message from a newer protocol version.
    #[error("unsupported version {0}")]
    Version(u8),
}

/// Why a bundle failed verification. Each variant says which check failed, so
/// quarantine can record a reason a person can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The bytes do not decode or break a cap.
    #[error("does not decode: {0}")]
    Decode(#[from] DecodeError),
    /// The bytes hash to something other than what they were stored or requested under.
    #[error("checksum mismatch: expected {expected}, computed {actual}")]
    Hash {
        /// The hash it should have.
        expected: BundleHash,
        /// The hash of the bytes present.
        actual: BundleHash,
    },
    /// The signature does not verify under the author's key.
    #[error("signature by {author:?} does not verify")]
    Signature {
        /// Claimed author.
        author: ActorId,
    },
    /// This copy carries no signature and no later signed bundle of the same
    /// author vouches for it; ask for a signed copy or the rest of the run.
    #[error("bundle at seq {seq} is unsigned and nothing later in its run vouches for it")]
    Unsigned {
        /// The seq of the unauthenticated bundle.
        seq: u64,
    },
    /// `prev_hash` does not name the author's previous bundle, or `seq` is not the next number.
    #[error("chain broken at seq {seq}: {why}")]
    Chain {
        /// The seq where the link fails.
        seq: u64,
        /// What is wrong with the link.
        why: &'static str,
    },
    /// The bundle belongs to another workspace than the one it arrived for.
    #[error("bundle is for workspace {found:?}, expected {expected:?}")]
    Workspace {
        /// Expected workspace.
        expected: WorkspaceId,
        /// Workspace named in the bundle.
        found: WorkspaceId,
    },
}

/// A request to build a bundle or op that breaks the data model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A value, path or count breaks a cap or rule.
    #[error("{0}")]
    Invalid(&'static str),
    /// A bundle with no ops records nothing.
    #[error("a bundle needs at least one op")]
    Empty,
    /// More ops than a bundle may hold; split the job.
    #[error("{count} ops exceed the limit of {max} per bundle")]
    TooManyOps {
        /// Ops requested.
        count: usize,
        /// Cap.
        max: usize,
    },
}
