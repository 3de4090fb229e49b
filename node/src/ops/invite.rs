//! The invite: everything a device needs to join a workspace, as one line of
//! text that survives being pasted into a chat or typed from a screen.
//!
//! Format: `troupe1-` followed by lower-case hex of
//! `postcard(Invite) || blake3(that)[..4]`. The checksum catches a mistyped
//! character before a device joins a workspace that does not exist. Anyone
//! holding the invite is a member: it carries the workspace secret, so share
//! it like a key.

use serde::{Deserialize, Serialize};
use troupe_protocol::workspace::{WorkspaceKind, WorkspaceSecret};

/// Prefix (and version) of every invite.
pub const PREFIX: &str = "troupe1-";
/// Longest invite accepted (a name is capped well below this).
pub const MAX_INVITE_LEN: usize = 2_048;

/// What an invite carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invite {
    /// The workspace secret (membership).
    pub secret: WorkspaceSecret,
    /// Its name, so the joiner sees what they joined before any sync.
    pub name: String,
    /// Show or library.
    pub kind: WorkspaceKind,
    /// Addresses (multiaddrs) of members, so a joiner can dial without mDNS.
    /// Invites made before this field existed decode with none.
    pub peers: Vec<String>,
}

/// The invite layout before peer addresses were added (still accepted).
#[derive(Deserialize)]
struct InviteV0 {
    secret: WorkspaceSecret,
    name: String,
    kind: WorkspaceKind,
}

impl Invite {
    /// The text form.
    pub fn encode(&self) -> String {
        let mut bytes = postcard::to_allocvec(self).unwrap_or_default();
        let sum = blake3::hash(&bytes);
        bytes.extend_from_slice(&sum.as_bytes()[..4]);
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        format!("{PREFIX}{hex}")
    }

    /// Reads the text form; spaces and line breaks inside are ignored.
    ///
    /// # Errors
    /// A sentence saying what is wrong with the text.
    pub fn decode(text: &str) -> Result<Invite, String> {
        if text.len() > MAX_INVITE_LEN {
            return Err(format!("it is longer than {MAX_INVITE_LEN} characters"));
        }
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let Some(hex) = compact.strip_prefix(PREFIX) else {
            return Err(format!("it does not start with {PREFIX:?}"));
        };
        if hex.len() % 2 != 0 || hex.len() < 10 {
            return Err("it is cut short".into());
        }
        let mut bytes = Vec::with_capacity(hex.len() / 2);
        for i in (0..hex.len()).step_by(2) {
            let b = u8::from_str_radix(hex.get(i..i + 2).unwrap_or("zz"), 16)
                .map_err(|_| "it contains characters other than 0-9 and a-f".to_string())?;
            bytes.push(b);
        }
        let (body, sum) = bytes.split_at(bytes.len() - 4);
        if &blake3::hash(body).as_bytes()[..4] != sum {
            return Err("its checksum does not match (a character was changed or lost)".into());
        }
        match postcard::from_bytes::<Invite>(body) {
            Ok(i) => Ok(i),
            Err(_) => postcard::from_bytes::<InviteV0>(body)
                .map(|o| Invite {
                    secret: o.secret,
                    name: o.name,
                    kind: o.kind,
                    peers: vec![],
                })
                .map_err(|_| "its contents are not an invite".to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Invite {
        Invite {
            secret: WorkspaceSecret([7; 32]),
            name: "Hamlet — spring tour".into(),
            kind: WorkspaceKind::Show,
            peers: vec!["/ip4/10.0.0.2/tcp/4001".into()],
        }
    }

    #[test]
    fn an_invite_without_peer_addresses_still_decodes() {
        #[derive(Serialize)]
        struct Old {
            secret: WorkspaceSecret,
            name: String,
            kind: WorkspaceKind,
        }
        let mut bytes = postcard::to_allocvec(&Old {
            secret: WorkspaceSecret([7; 32]),
            name: "Old".into(),
            kind: WorkspaceKind::Show,
        })
        .unwrap();
        let sum = blake3::hash(&bytes);
        bytes.extend_from_slice(&sum.as_bytes()[..4]);
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let i = Invite::decode(&format!("{PREFIX}{hex}")).unwrap();
        assert_eq!(i.name, "Old");
        assert!(i.peers.is_empty());
    }

    #[test]
    fn an_invite_round_trips_even_when_wrapped() {
        let text = sample().encode();
        assert!(text.starts_with(PREFIX));
        let wrapped = format!("  {}\n{}  ", &text[..20], &text[20..]);
        assert_eq!(Invite::decode(&wrapped).unwrap(), sample());
    }

    #[test]
    fn a_changed_character_is_caught_by_the_checksum() {
        let text = sample().encode();
        let mut chars: Vec<char> = text.chars().collect();
        let i = PREFIX.len() + 10;
        chars[i] = if chars[i] == '0' { '1' } else { '0' };
        let bad: String = chars.into_iter().collect();
        assert!(Invite::decode(&bad).unwrap_err().contains("checksum"));
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        assert!(Invite::decode("hello").unwrap_err().contains("start with"));
        assert!(Invite::decode("troupe1-zz").is_err());
        assert!(Invite::decode(&"a".repeat(5_000)).is_err());
    }
}
