//! Workspaces: the secret that makes someone a member, and what it derives.
//!
//! The secret is 32 random bytes handed out in an invite. From it, keyed blake3
//! derives the public [`WorkspaceId`] and per-salt member tags for discovery.
//! Neither reveals the secret, and a tag cannot be linked to the id or to another
//! tag without it.

use serde::{Deserialize, Serialize};

use crate::crypto::{self, context};
use crate::error::ParseError;
use crate::hex;
use crate::ids::WorkspaceId;

/// The membership secret of a workspace. Whoever holds it can read and write.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceSecret(pub [u8; 32]);

impl WorkspaceSecret {
    /// The public id of the workspace this secret opens.
    pub fn workspace_id(&self) -> WorkspaceId {
        WorkspaceId(crypto::keyed(context::WORKSPACE_ID, &self.0, &[]))
    }

    /// A discovery tag for this workspace under `salt`. Advertised over mDNS with
    /// the salt; only members can recompute and so recognise it. Use a fresh salt
    /// per advertisement period so tags cannot be linked over time.
    pub fn member_tag(&self, salt: &[u8; 16]) -> [u8; 32] {
        crypto::keyed(context::MEMBER_TAG, &self.0, &[salt])
    }

    /// The secret as hex, for invites and the data dir.
    pub fn to_hex(&self) -> String {
        hex::encode(&self.0)
    }

    /// Parses the hex form.
    ///
    /// # Errors
    /// [`ParseError`] if it is not 64 hex digits.
    pub fn from_hex(s: &str) -> Result<Self, ParseError> {
        hex::decode::<32>("workspace secret", s).map(WorkspaceSecret)
    }

    /// A membership proof over `parts` (nonces, peer ids) keyed by the secret;
    /// used by the sync handshake so a peer proves membership without revealing the secret.
    pub fn proof(&self, parts: &[&[u8]]) -> [u8; 32] {
        crypto::keyed(context::HANDSHAKE, &self.0, parts)
    }
}

impl std::fmt::Debug for WorkspaceSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WorkspaceSecret(for {:?})", self.workspace_id())
    }
}

/// What a workspace is for. A `library` is one person's contacts and fixtures,
/// synced only among their own devices; a `show` is shared by a crew.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum WorkspaceKind {
    /// A production shared by its crew (the default).
    #[default]
    Show,
    /// A personal library, copied from, never linked to.
    Library,
}

impl std::fmt::Display for WorkspaceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WorkspaceKind::Show => "show",
            WorkspaceKind::Library => "library",
        })
    }
}

impl std::str::FromStr for WorkspaceKind {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        match s {
            "show" => Ok(WorkspaceKind::Show),
            "library" => Ok(WorkspaceKind::Library),
            _ => Err(ParseError::Kind {
                found: crate::ids::truncate(s),
            }),
        }
    }
}

/// Default blob retention window, in days.
pub const DEFAULT_RETENTION_DAYS: u32 = 90;

/// A workspace as a node knows it: secret, name, kind and lifecycle flags.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceInfo {
    /// Membership secret.
    pub secret: WorkspaceSecret,
    /// Human name, e.g. "Hamlet — spring tour".
    pub name: String,
    /// Show or library.
    pub kind: WorkspaceKind,
    /// Read-only when set: every write is refused with a clear error.
    pub archived: bool,
    /// Blob bytes referenced only by ops older than this may be garbage collected.
    pub retention_days: u32,
}

impl WorkspaceInfo {
    /// A new, writable workspace with the default retention window.
    pub fn new(secret: WorkspaceSecret, name: impl Into<String>, kind: WorkspaceKind) -> Self {
        WorkspaceInfo {
            secret,
            name: name.into(),
            kind,
            archived: false,
            retention_days: DEFAULT_RETENTION_DAYS,
        }
    }

    /// The derived id.
    pub fn id(&self) -> WorkspaceId {
        self.secret.workspace_id()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_and_tags_are_derived_and_unlinkable() {
        let s = WorkspaceSecret([3; 32]);
        let t = WorkspaceSecret([4; 32]);
        assert_ne!(s.workspace_id(), t.workspace_id());
        assert_ne!(s.workspace_id().0, s.0);
        let a = s.member_tag(&[1; 16]);
        let b = s.member_tag(&[2; 16]);
        assert_ne!(a, b, "a fresh salt gives an unlinkable tag");
        assert_ne!(a, s.workspace_id().0);
        assert_eq!(a, s.member_tag(&[1; 16]), "members recompute the same tag");
        assert_eq!(WorkspaceSecret::from_hex(&s.to_hex()).unwrap(), s);
    }
}
