//! Hashing and signing, with every use domain-separated.
//!
//! blake3 in `derive_key` mode gives each purpose its own key, so a hash made for
//! one purpose (a workspace id, a member tag, a handshake proof) can never be
//! replayed as another. Actors sign with ed25519; the same key pair is the
//! node's libp2p identity.

use ed25519_dalek::{Signer, Verifier};
use serde::{Deserialize, Serialize};

use crate::ids::ActorId;

/// Contexts for `blake3::derive_key`: one per purpose, never reused.
pub(crate) mod context {
    pub const WORKSPACE_ID: &str = "troupe 2026-11 workspace id";
    pub const MEMBER_TAG: &str = "troupe 2026-11 mdns member tag";
    pub const HANDSHAKE: &str = "troupe 2026-11 membership proof";
    pub const BUNDLE_SIGNATURE: &[u8] = b"troupe/bundle-signature/v1";
}

/// An ed25519 signature over a bundle's hash (blake3 of its body).
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature(#[serde(with = "sig_bytes")] pub [u8; 64]);

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signature({})", crate::hex::encode(&self.0[..4]))
    }
}

mod sig_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        serde::Serialize::serialize(&serde_big_array(v), s)
    }
    fn serde_big_array(v: &[u8; 64]) -> ([u8; 32], [u8; 32]) {
        let mut a = [0; 32];
        let mut b = [0; 32];
        a.copy_from_slice(&v[..32]);
        b.copy_from_slice(&v[32..]);
        (a, b)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let (a, b) = <([u8; 32], [u8; 32])>::deserialize(d)?;
        let mut out = [0; 64];
        out[..32].copy_from_slice(&a);
        out[32..].copy_from_slice(&b);
        Ok(out)
    }
}

/// An actor's key pair. Kept in the data dir; its public half is the [`ActorId`].
#[derive(Clone)]
pub struct ActorKey(ed25519_dalek::SigningKey);

impl ActorKey {
    /// Builds a key from 32 secret bytes. The caller brings the randomness (the
    /// protocol core has no RNG of its own), e.g. from the OS at `troupe init`.
    pub fn from_secret_bytes(secret: [u8; 32]) -> Self {
        ActorKey(ed25519_dalek::SigningKey::from_bytes(&secret))
    }

    /// The 32 secret bytes, for saving to the data dir or building the libp2p identity.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The public identity.
    pub fn actor_id(&self) -> ActorId {
        ActorId(self.0.verifying_key().to_bytes())
    }

    /// Signs a bundle body hash.
    pub(crate) fn sign_body(&self, body_hash: &[u8; 32]) -> Signature {
        Signature(self.0.sign(&signed_message(body_hash)).to_bytes())
    }
}

impl std::fmt::Debug for ActorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ActorKey({:?})", self.actor_id())
    }
}

fn signed_message(body_hash: &[u8; 32]) -> [u8; 58] {
    let mut msg = [0u8; 58];
    msg[..26].copy_from_slice(context::BUNDLE_SIGNATURE);
    msg[26..].copy_from_slice(body_hash);
    msg
}

/// Checks `sig` over `body_hash` by `author`. False for a malformed key too.
pub(crate) fn verify_body(author: &ActorId, body_hash: &[u8; 32], sig: &Signature) -> bool {
    let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&author.0) else {
        return false;
    };
    let sig = ed25519_dalek::Signature::from_bytes(&sig.0);
    key.verify(&signed_message(body_hash), &sig).is_ok()
}

/// blake3 of `bytes`.
pub fn hash(bytes: &[u8]) -> [u8; 32] {
    *blake3::hash(bytes).as_bytes()
}

/// A keyed hash under a purpose-derived key: `blake3::keyed_hash(derive_key(context, key), msg)`.
pub(crate) fn keyed(context: &str, key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    let k = blake3::derive_key(context, key);
    let mut h = blake3::Hasher::new_keyed(&k);
    for p in parts {
        // Length-prefix every part so concatenations cannot collide.
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p);
    }
    *h.finalize().as_bytes()
}

/// Compares two digests in constant time.
pub fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut d = 0u8;
    for i in 0..32 {
        d |= a[i] ^ b[i];
    }
    d == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_for_their_message_and_key() {
        let k = ActorKey::from_secret_bytes([1; 32]);
        let other = ActorKey::from_secret_bytes([2; 32]);
        let h = hash(b"body");
        let s = k.sign_body(&h);
        assert!(verify_body(&k.actor_id(), &h, &s));
        assert!(!verify_body(&other.actor_id(), &h, &s));
        assert!(!verify_body(&k.actor_id(), &hash(b"other"), &s));
    }

    #[test]
    fn keyed_hashes_are_domain_separated() {
        let key = [9; 32];
        assert_ne!(keyed("a", &key, &[b"x"]), keyed("b", &key, &[b"x"]));
        assert_ne!(
            keyed("a", &key, &[b"xy", b"z"]),
            keyed("a", &key, &[b"x", b"yz"])
        );
    }
}
