//! The node's identity: the actor's ed25519 key, kept in the data dir, is also
//! its libp2p identity.
//!
//! One key means one name for a device everywhere: the `ActorId` that signs
//! bundles is the public key the noise handshake authenticates, so a peer's
//! connection already tells us which actor we are talking to.
//!
//! # Mapping between `PeerId` and `ActorId`
//! An `ActorId` is the 32-byte ed25519 public key. libp2p wraps that key in its
//! protobuf `PublicKey` encoding (36 bytes for ed25519) and, because that is
//! shorter than 42 bytes, the `PeerId` is the *identity* multihash of those
//! bytes, not a hash. So the mapping is exact in both directions:
//! [`actor_to_peer`] builds the libp2p public key from the 32 bytes, and
//! [`peer_to_actor`] decodes the protobuf key out of the multihash digest.
//!
//! # On disk
//! `actor.key` holds the 32 secret bytes, raw, mode 0600 (owner only). It is
//! written to a temporary file and renamed, so a crash never leaves half a key.

use std::io::Write;
use std::path::{Path, PathBuf};

use libp2p::PeerId;
use libp2p::identity::{Keypair, PublicKey, ed25519};
use rand::RngCore;
use troupe_protocol::ActorId;
use troupe_protocol::crypto::ActorKey;

/// File name of the actor key inside the data dir.
pub const KEY_FILE: &str = "actor.key";

/// Why the identity could not be loaded or created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The key file could not be read or written; check the data dir's
    /// permissions and free space.
    #[error("cannot access the key file {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The key file exists but does not hold exactly 32 bytes: it was damaged
    /// or is not a Troupe key. Restore it from a backup; a new key would be a
    /// new actor.
    #[error("the key file {path} holds {len} bytes, not 32")]
    Malformed {
        /// The key file.
        path: PathBuf,
        /// What it holds.
        len: usize,
    },
    /// The key file is readable by other users; refuse to use a possibly
    /// leaked key and let the owner fix the mode.
    #[error("the key file {path} is readable by other users (mode {mode:o})")]
    TooOpen {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

/// The node's key in both of its forms.
#[derive(Clone)]
pub struct Identity {
    /// Signs bundles.
    pub actor_key: ActorKey,
    /// Authenticates connections; built from the same 32 secret bytes.
    pub keypair: Keypair,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({})", self.peer_id())
    }
}

impl Identity {
    /// Builds both forms from 32 secret bytes.
    pub fn from_secret(secret: [u8; 32]) -> Self {
        let actor_key = ActorKey::from_secret_bytes(secret);
        // The only failure of `try_from_bytes` is a length other than 32, which the
        // array type rules out.
        let secret_key = ed25519::SecretKey::try_from_bytes(secret)
            .expect("32 bytes is the ed25519 secret key length");
        let keypair = Keypair::from(ed25519::Keypair::from(secret_key));
        Identity { actor_key, keypair }
    }

    /// The actor id (the public key).
    pub fn actor_id(&self) -> ActorId {
        self.actor_key.actor_id()
    }

    /// The libp2p peer id for the same key.
    pub fn peer_id(&self) -> PeerId {
        self.keypair.public().to_peer_id()
    }

    /// Loads the key from `data_dir`, or creates one from the OS RNG if none exists.
    /// Returns the identity and whether it was created now.
    ///
    /// # Errors
    /// [`IdentityError`] when the file cannot be read, written, is malformed or
    /// is readable by others.
    pub fn load_or_create(data_dir: &Path) -> Result<(Self, bool), IdentityError> {
        let path = data_dir.join(KEY_FILE);
        match Self::load(&path) {
            Ok(id) => Ok((id, false)),
            Err(IdentityError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                let mut secret = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut secret);
                write_private(&path, &secret)?;
                Ok((Self::from_secret(secret), true))
            }
            Err(e) => Err(e),
        }
    }

    /// Loads an existing key file.
    ///
    /// # Errors
    /// As [`Identity::load_or_create`]; a missing file is [`IdentityError::Io`]
    /// with kind `NotFound`.
    pub fn load(path: &Path) -> Result<Self, IdentityError> {
        let io = |source| IdentityError::Io {
            path: path.to_owned(),
            source,
        };
        let bytes = std::fs::read(path).map_err(io)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(IdentityError::TooOpen {
                    path: path.to_owned(),
                    mode,
                });
            }
        }
        let secret: [u8; 32] =
            bytes
                .as_slice()
                .try_into()
                .map_err(|_| IdentityError::Malformed {
                    path: path.to_owned(),
                    len: bytes.len(),
                })?;
        Ok(Self::from_secret(secret))
    }
}

/// Writes `bytes` to `path` readable by the owner only (0600 on unix), via a
/// temporary file and a rename so readers never see a partial file.
///
/// # Errors
/// [`IdentityError::Io`].
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), IdentityError> {
    let io = |source| IdentityError::Io {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io)
}

/// The libp2p peer id of an actor (see the module doc for why this is exact).
/// Bytes that are not a valid ed25519 point give a peer id no one can
/// authenticate as, so it is never connected.
///
/// # Errors
/// `None` only if libp2p refuses the inline key (it does not, at 36 bytes).
pub fn actor_to_peer(actor: &ActorId) -> Option<PeerId> {
    // The multihash bytes of an inline key: identity code 0, length 36,
    // then the key's protobuf. Building them directly costs nothing; going
    // through `ed25519::PublicKey` decompresses the curve point (~20 µs),
    // and this runs for every frame sent.
    let mut bytes = [0u8; 2 + ED25519_PROTOBUF.len() + 32];
    bytes[1] = (ED25519_PROTOBUF.len() + 32) as u8;
    bytes[2..2 + ED25519_PROTOBUF.len()].copy_from_slice(&ED25519_PROTOBUF);
    bytes[2 + ED25519_PROTOBUF.len()..].copy_from_slice(&actor.0);
    PeerId::from_bytes(&bytes).ok()
}

/// The protobuf of an ed25519 public key up to its 32 bytes (KeyType =
/// Ed25519, then the data field's tag and length), as libp2p encodes it.
const ED25519_PROTOBUF: [u8; 4] = [0x08, 0x01, 0x12, 0x20];

/// The actor behind a peer id, when the peer id embeds an ed25519 key (every
/// Troupe node's does; peers with other key types are not Troupe actors).
/// Runs for every frame received: the key bytes are read from the canonical
/// encoding without decompressing the point (the transport already proved
/// the peer holds the key); any other encoding is decoded in full.
pub fn peer_to_actor(peer: &PeerId) -> Option<ActorId> {
    let mh = peer.as_ref();
    // 0x00 = identity multihash: the digest is the encoded public key itself.
    if mh.code() != 0x00 {
        return None;
    }
    let digest = mh.digest();
    if let Some(key) = digest.strip_prefix(&ED25519_PROTOBUF)
        && let Ok(key) = <[u8; 32]>::try_from(key)
    {
        return Some(ActorId(key));
    }
    let key = PublicKey::try_decode_protobuf(digest).ok()?;
    let ed = key.try_into_ed25519().ok()?;
    Some(ActorId(ed.to_bytes()))
}

/// The sync engine's name for a connected peer (its actor id bytes), from the
/// transport-authenticated libp2p peer id. `None` for non-ed25519 peers, which
/// are not Troupe actors and get no sync session.
pub fn sync_peer(peer: &PeerId) -> Option<troupe_protocol::sync::PeerId> {
    peer_to_actor(peer).map(|a| troupe_protocol::sync::PeerId(a.0))
}

/// The libp2p peer id for an engine peer (to send its frames or disconnect it).
pub fn libp2p_peer(peer: &troupe_protocol::sync::PeerId) -> Option<PeerId> {
    actor_to_peer(&ActorId(peer.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_id_and_actor_id_map_both_ways() {
        for seed in [1u8, 2, 200] {
            let id = Identity::from_secret([seed; 32]);
            assert_eq!(peer_to_actor(&id.peer_id()), Some(id.actor_id()));
            assert_eq!(actor_to_peer(&id.actor_id()), Some(id.peer_id()));
        }
        // The direct byte forms equal libp2p's own encoding and decoding.
        for seed in 0u8..=255 {
            let id = Identity::from_secret([seed; 32]);
            let slow =
                PublicKey::from(ed25519::PublicKey::try_from_bytes(&id.actor_id().0).unwrap())
                    .to_peer_id();
            assert_eq!(actor_to_peer(&id.actor_id()), Some(slow));
            let decoded = PublicKey::try_decode_protobuf(slow.as_ref().digest())
                .unwrap()
                .try_into_ed25519()
                .unwrap()
                .to_bytes();
            assert_eq!(peer_to_actor(&slow), Some(ActorId(decoded)));
        }
        assert_eq!(
            peer_to_actor(&PeerId::random()),
            None,
            "not an ed25519 identity"
        );
    }

    #[test]
    fn key_is_created_once_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let (a, created) = Identity::load_or_create(dir.path()).unwrap();
        assert!(created);
        let (b, created) = Identity::load_or_create(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(a.actor_id(), b.actor_id());
        assert_eq!(a.peer_id(), b.peer_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn damaged_or_exposed_key_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        write_private(&path, &[1, 2, 3]).unwrap();
        assert!(matches!(
            Identity::load_or_create(dir.path()),
            Err(IdentityError::Malformed { len: 3, .. })
        ));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            write_private(&path, &[9; 32]).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(matches!(
                Identity::load_or_create(dir.path()),
                Err(IdentityError::TooOpen { .. })
            ));
        }
    }
}
