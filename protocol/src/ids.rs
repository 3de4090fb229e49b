//! Identifier newtypes: who wrote what, where, and which bytes it was.
//!
//! Every identifier has a `Display` form that `FromStr` parses back, so the
//! CLI, the local API and log lines all speak the same text.

use compact_str::CompactString;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::ParseError;
use crate::hex;

macro_rules! hash_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// The raw 32 bytes.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// The first 8 hex digits: enough to tell ids apart in a log line or a table.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..4])
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                hex::write32(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($what, "({})"), self.short())
            }
        }

        impl FromStr for $name {
            type Err = ParseError;
            fn from_str(s: &str) -> Result<Self, ParseError> {
                hex::decode::<32>($what, s).map($name)
            }
        }
    };
}

hash_id!(
    /// A workspace: an isolated oplog namespace. Derived from the workspace
    /// secret by a keyed hash, so knowing the id grants nothing.
    WorkspaceId,
    "workspace id"
);
hash_id!(
    /// A device identity: the ed25519 public key of an actor.
    ActorId,
    "actor id"
);
hash_id!(
    /// The checksum and identity of a signed bundle: blake3 over its body hash and
    /// signature. Every stored or received bundle is checked against it.
    BundleHash,
    "bundle hash"
);
hash_id!(
    /// The identity of a blob: blake3 of its plain (uncompressed) bytes.
    BlobHash,
    "blob hash"
);

/// Longest entity id accepted.
pub const MAX_ENTITY_ID_LEN: usize = 64;

/// An entity id, unique within its workspace only: 1 to 64 characters of
/// `[A-Za-z0-9_-]`, so it is safe in paths, URLs and file names.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EntityId(CompactString);

impl EntityId {
    /// Validates and wraps an id.
    ///
    /// # Errors
    /// [`ParseError::EntityId`] when it is empty, too long or has other characters.
    pub fn new(s: impl AsRef<str>) -> Result<Self, ParseError> {
        let s = s.as_ref();
        if valid_entity_id(s) {
            Ok(EntityId(CompactString::new(s)))
        } else {
            Err(ParseError::EntityId { found: truncate(s) })
        }
    }

    /// An id read from a peer's bytes, unchecked as a decoded one is (the
    /// bundle's checks judge it, see [`EntityId::is_valid`]).
    pub(crate) fn decoded(s: CompactString) -> Self {
        EntityId(s)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether a decoded id still satisfies the rules (decoding does not check).
    pub fn is_valid(&self) -> bool {
        valid_entity_id(&self.0)
    }
}

fn valid_entity_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ENTITY_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

pub(crate) fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

impl fmt::Display for EntityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EntityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntityId({})", self.0)
    }
}

impl FromStr for EntityId {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        EntityId::new(s)
    }
}

/// One op: the `index`-th op of bundle `seq` by `author`. Ops name the ops they
/// supersede by this id (`pred`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OpId {
    /// Who wrote it.
    pub author: ActorId,
    /// The author's bundle sequence number (from 1) in the workspace.
    pub seq: u64,
    /// Position of the op inside its bundle.
    pub index: u32,
}

impl fmt::Display for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.author, self.seq, self.index)
    }
}

impl fmt::Debug for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.author.short(), self.seq, self.index)
    }
}

impl FromStr for OpId {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let mut parts = s.split(':');
        let (Some(a), Some(seq), Some(idx), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(ParseError::OpId { found: truncate(s) });
        };
        let author = a.parse()?;
        let seq = seq
            .parse()
            .map_err(|_| ParseError::OpId { found: truncate(s) })?;
        let index = idx
            .parse()
            .map_err(|_| ParseError::OpId { found: truncate(s) })?;
        Ok(OpId { author, seq, index })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_text() {
        let a = ActorId([7; 32]);
        assert_eq!(a.to_string().parse::<ActorId>().unwrap(), a);
        let op = OpId {
            author: a,
            seq: 12,
            index: 3,
        };
        assert_eq!(op.to_string().parse::<OpId>().unwrap(), op);
        assert!("nope".parse::<OpId>().is_err());
    }

    #[test]
    fn entity_ids_are_validated() {
        assert!(EntityId::new("abc-123_X").is_ok());
        assert!(EntityId::new("").is_err());
        assert!(EntityId::new("a/b").is_err());
        assert!(EntityId::new("x".repeat(65)).is_err());
    }
}
