//! The encryption and authentication under every connection: a Noise XX
//! handshake that proves each side's peer id, then AES-256-GCM records.
//!
//! It is libp2p's noise upgrade in all but its transport cipher and its
//! copies, both of which bounded an asset's speed. Over a 200 MiB asset
//! with libp2p's upgrade, ChaCha20-Poly1305 was 44 % of both processes'
//! network threads, and each record went through three buffers on the way
//! in (one of them zeroed first). Here:
//!
//! - **The handshake** is `Noise_XX_25519_AESGCM_SHA256`, run by the same
//!   Noise library libp2p uses, with the same identity proof: in its
//!   second and third messages each side sends its libp2p public key and
//!   that key's signature over its Noise static key
//!   ([`STATIC_KEY_DOMAIN`] + key), and the peer id is the key's. A
//!   proof that does not verify, or is not exactly one key and one
//!   signature, ends the handshake. The swarm then refuses a dialled peer
//!   whose id is not the one asked for, as it did with libp2p's noise.
//! - **The records** ([`record`]) use the two keys the handshake ends with,
//!   one per direction, with AES-256-GCM and a counter nonce per
//!   direction, as Noise's own transport does. A record carries up to
//!   [`record::MAX_PLAINTEXT`] bytes (Noise's are 65,535 at most), is
//!   sealed and opened in place, and a record that fails its tag ends the
//!   connection: no byte of it is handed on.
//!
//! AES-256-GCM is used because this machine kind has AES instructions:
//! ring seals 64 KiB records at about 3.6 GB/s with it against 2.3 GB/s
//! with ChaCha20-Poly1305 (one core, a throwaway program).
//!
//! The protocol id is [`PROTOCOL`]; both ends must speak it (a node of
//! this version does not talk to one that only speaks `/noise`).

pub mod record;

use std::io;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::PeerId;
use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo};
use libp2p::identity::{Keypair, PublicKey};

pub use record::Channel;

/// The protocol id negotiated for this upgrade.
pub const PROTOCOL: &str = "/troupe/noise-aes/1";

/// The Noise protocol name: handshake pattern, DH, cipher, hash.
const NOISE_PARAMS: &str = "Noise_XX_25519_AESGCM_SHA256";

/// What an identity key signs, before the Noise static key: it keeps the
/// signature from meaning anything anywhere else.
pub const STATIC_KEY_DOMAIN: &[u8] = b"troupe-noise-static-key:";

/// Largest identity key or signature in a proof; an ed25519 key in its
/// protobuf form is 36 bytes and its signature 64.
const MAX_PROOF_PART: usize = 1024;

/// Why a connection's handshake failed. The swarm logs it and drops the
/// connection; a dialler tries again later.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecureError {
    /// The socket failed or closed mid-handshake.
    #[error("the connection failed during the handshake: {0}")]
    Io(#[from] io::Error),
    /// A handshake message did not decrypt or was out of place.
    #[error("the peer's handshake is not valid Noise: {0}")]
    Noise(#[from] snow::Error),
    /// The peer's identity proof is malformed or does not verify.
    #[error("the peer did not prove its identity: {0}")]
    Proof(&'static str),
}

/// The upgrade: this node's identity and the Noise static key it signed.
#[derive(Clone)]
pub struct Config {
    inner: Arc<Local>,
}

struct Local {
    /// The Noise static private key, fresh for each process.
    static_secret: [u8; 32],
    /// Our identity proof: public key and signature over the static key.
    proof: Vec<u8>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("secure::Config").finish_non_exhaustive()
    }
}

impl Config {
    /// A fresh Noise static key, signed by `identity`.
    ///
    /// # Errors
    /// When the identity key cannot sign.
    pub fn new(identity: &Keypair) -> Result<Config, libp2p::identity::SigningError> {
        let static_secret: [u8; 32] = rand::random();
        let public = dh::public(&static_secret);
        let signature = identity.sign(&[STATIC_KEY_DOMAIN, &public].concat())?;
        let proof = proof::encode(&identity.public(), &signature);
        Ok(Config {
            inner: Arc::new(Local {
                static_secret,
                proof,
            }),
        })
    }
}

impl UpgradeInfo for Config {
    type Info = &'static str;
    type InfoIter = std::iter::Once<&'static str>;

    fn protocol_info(&self) -> Self::InfoIter {
        std::iter::once(PROTOCOL)
    }
}

impl<C> InboundConnectionUpgrade<C> for Config
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = (PeerId, Channel<C>);
    type Error = SecureError;
    type Future = BoxFuture<'static, Result<(PeerId, Channel<C>), SecureError>>;

    fn upgrade_inbound(self, io: C, _: Self::Info) -> Self::Future {
        Box::pin(handshake(self.inner, io, false))
    }
}

impl<C> OutboundConnectionUpgrade<C> for Config
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = (PeerId, Channel<C>);
    type Error = SecureError;
    type Future = BoxFuture<'static, Result<(PeerId, Channel<C>), SecureError>>;

    fn upgrade_outbound(self, io: C, _: Self::Info) -> Self::Future {
        Box::pin(handshake(self.inner, io, true))
    }
}

/// Runs the three XX messages and checks the peer's proof.
async fn handshake<C>(
    local: Arc<Local>,
    mut io: C,
    initiator: bool,
) -> Result<(PeerId, Channel<C>), SecureError>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let params = NOISE_PARAMS.parse().map_err(SecureError::Noise)?;
    let builder = snow::Builder::with_resolver(params, Box::new(dh::Resolver))
        .local_private_key(&local.static_secret)?;
    let mut state = if initiator {
        builder.build_initiator()?
    } else {
        builder.build_responder()?
    };
    let peer = if initiator {
        // -> e
        write(&mut state, &mut io, &[]).await?;
        // <- e, ee, s, es + the responder's proof, checked before ours goes
        // out: an impostor learns nothing of who dialled it.
        let payload = read(&mut state, &mut io).await?;
        let peer = proof::verify(&payload, remote_static(&state)?)?;
        // -> s, se + our proof
        write(&mut state, &mut io, &local.proof).await?;
        peer
    } else {
        // <- e
        read(&mut state, &mut io).await?;
        // -> e, ee, s, es + our proof
        write(&mut state, &mut io, &local.proof).await?;
        // <- s, se + the initiator's proof
        let payload = read(&mut state, &mut io).await?;
        proof::verify(&payload, remote_static(&state)?)?
    };
    if !state.is_handshake_finished() {
        return Err(SecureError::Proof("the handshake did not finish"));
    }
    let (initiator_to_responder, responder_to_initiator) = state.dangerously_get_raw_split();
    let (send_key, receive_key) = if initiator {
        (initiator_to_responder, responder_to_initiator)
    } else {
        (responder_to_initiator, initiator_to_responder)
    };
    Ok((peer, Channel::new(io, &send_key, &receive_key)))
}

/// The peer's Noise static key, known once its `s` message is read.
fn remote_static(state: &snow::HandshakeState) -> Result<&[u8], SecureError> {
    state
        .get_remote_static()
        .ok_or(SecureError::Proof("no static key"))
}

/// Writes the next handshake message, carrying `payload`, behind its
/// two-byte length.
async fn write<C: AsyncWrite + Unpin>(
    state: &mut snow::HandshakeState,
    io: &mut C,
    payload: &[u8],
) -> Result<(), SecureError> {
    // Past the payload, a message holds at most two keys and their tags.
    let mut framed = vec![0u8; 2 + payload.len() + 256];
    let n = state.write_message(payload, &mut framed[2..])?;
    let len = u16::try_from(n).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    framed[..2].copy_from_slice(&len.to_be_bytes());
    io.write_all(&framed[..2 + n]).await?;
    io.flush().await?;
    Ok(())
}

/// Reads one handshake message (at most 65,535 bytes, by its two-byte
/// length) and returns its payload.
async fn read<C: AsyncRead + Unpin>(
    state: &mut snow::HandshakeState,
    io: &mut C,
) -> Result<Vec<u8>, SecureError> {
    let mut len = [0u8; 2];
    io.read_exact(&mut len).await?;
    let mut message = vec![0u8; usize::from(u16::from_be_bytes(len))];
    io.read_exact(&mut message).await?;
    let mut payload = vec![0u8; message.len()];
    let n = state.read_message(&message, &mut payload)?;
    payload.truncate(n);
    Ok(payload)
}

/// The identity proof a handshake carries: `[u16 length][public key in
/// libp2p's protobuf form][u16 length][signature]`, nothing after.
mod proof {
    use super::{MAX_PROOF_PART, PeerId, PublicKey, STATIC_KEY_DOMAIN, SecureError};

    /// Our proof's bytes.
    pub(super) fn encode(key: &PublicKey, signature: &[u8]) -> Vec<u8> {
        let key = key.encode_protobuf();
        let mut out = Vec::with_capacity(4 + key.len() + signature.len());
        for part in [&key[..], signature] {
            // Our own key and signature are tens of bytes.
            let len = u16::try_from(part.len()).unwrap_or(u16::MAX);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(part);
        }
        out
    }

    /// The peer id that `bytes` proves owns the Noise static key
    /// `remote_static`.
    pub(super) fn verify(bytes: &[u8], remote_static: &[u8]) -> Result<PeerId, SecureError> {
        let (key, rest) = part(bytes)?;
        let (signature, rest) = part(rest)?;
        if !rest.is_empty() {
            return Err(SecureError::Proof("bytes after the signature"));
        }
        let key = PublicKey::try_decode_protobuf(key)
            .map_err(|_| SecureError::Proof("not an identity key"))?;
        if !key.verify(&[STATIC_KEY_DOMAIN, remote_static].concat(), signature) {
            return Err(SecureError::Proof(
                "the signature over the static key does not verify",
            ));
        }
        Ok(key.to_peer_id())
    }

    fn part(bytes: &[u8]) -> Result<(&[u8], &[u8]), SecureError> {
        let (len, rest) = bytes
            .split_first_chunk::<2>()
            .ok_or(SecureError::Proof("cut short"))?;
        let len = usize::from(u16::from_be_bytes(*len));
        if len > MAX_PROOF_PART || len > rest.len() {
            return Err(SecureError::Proof("a part is longer than allowed or sent"));
        }
        Ok(rest.split_at(len))
    }
}

/// X25519 for the Noise library, with ring's SHA-256 and AES-GCM for the
/// handshake's own hashing and encryption.
mod dh {
    use snow::resolvers::{CryptoResolver, RingResolver};
    use snow::types::{Cipher, Dh, Hash, Random};
    use x25519_dalek::{X25519_BASEPOINT_BYTES, x25519};

    /// The public key of an X25519 private key.
    pub(super) fn public(secret: &[u8; 32]) -> [u8; 32] {
        x25519(*secret, X25519_BASEPOINT_BYTES)
    }

    /// What the handshake is built with.
    pub(super) struct Resolver;

    impl CryptoResolver for Resolver {
        fn resolve_rng(&self) -> Option<Box<dyn Random>> {
            Some(Box::new(OsRandom))
        }

        fn resolve_dh(&self, choice: &snow::params::DHChoice) -> Option<Box<dyn Dh>> {
            matches!(choice, snow::params::DHChoice::Curve25519)
                .then(|| Box::new(X25519::default()) as Box<dyn Dh>)
        }

        fn resolve_hash(&self, choice: &snow::params::HashChoice) -> Option<Box<dyn Hash>> {
            RingResolver.resolve_hash(choice)
        }

        fn resolve_cipher(&self, choice: &snow::params::CipherChoice) -> Option<Box<dyn Cipher>> {
            RingResolver.resolve_cipher(choice)
        }
    }

    struct OsRandom;

    impl Random for OsRandom {
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
            use rand::RngCore;
            rand::rngs::OsRng
                .try_fill_bytes(dest)
                .map_err(|_| snow::Error::Rng)
        }
    }

    #[derive(Default)]
    struct X25519 {
        secret: [u8; 32],
        public: [u8; 32],
    }

    impl Dh for X25519 {
        fn name(&self) -> &'static str {
            "25519"
        }

        fn pub_len(&self) -> usize {
            32
        }

        fn priv_len(&self) -> usize {
            32
        }

        fn set(&mut self, privkey: &[u8]) {
            // snow hands over exactly `priv_len` bytes.
            let mut secret = [0u8; 32];
            let n = privkey.len().min(32);
            secret[..n].copy_from_slice(&privkey[..n]);
            self.public = public(&secret);
            self.secret = secret;
        }

        fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
            let mut secret = [0u8; 32];
            rng.try_fill_bytes(&mut secret)?;
            self.set(&secret);
            Ok(())
        }

        fn pubkey(&self) -> &[u8] {
            &self.public
        }

        fn privkey(&self) -> &[u8] {
            &self.secret
        }

        fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
            let point: [u8; 32] = pubkey
                .get(..32)
                .and_then(|p| p.try_into().ok())
                .ok_or(snow::Error::Dh)?;
            let shared = x25519(self.secret, point);
            // A low-order point gives all zeros: refuse it, so that both
            // sides' keys always shape the secret.
            if shared == [0u8; 32] {
                return Err(snow::Error::Dh);
            }
            out.get_mut(..32)
                .ok_or(snow::Error::Dh)?
                .copy_from_slice(&shared);
            Ok(())
        }
    }
}

/// The record reader under arbitrary damage, for the fuzzer and the tests.
#[cfg(any(fuzzing, test))]
pub mod fuzzing {
    use futures::{AsyncReadExt, AsyncWriteExt};

    use super::record::Channel;

    /// `data` is `[piece size: 2 bytes][damage: 4 bytes][cut: 4 bytes]
    /// [message]`. The message is written in pieces of that size, each
    /// flushed into its own record; then one byte of the wire is flipped
    /// and the wire cut short where the two fields say (past its end: not
    /// at all), and the bytes are read back. Panics unless the reader hands
    /// on exactly the records before the first touched one and then fails,
    /// or, with nothing touched, all of them and a clean end. A wire cut
    /// between two records reads as a clean end after the first: the
    /// channel's user (yamux) has its own end of stream.
    pub fn records(data: &[u8]) {
        let Some((head, message)) = data.split_first_chunk::<10>() else {
            return;
        };
        let piece = usize::from(u16::from_le_bytes([head[0], head[1]])).max(1);
        let damage = u32::from_le_bytes([head[2], head[3], head[4], head[5]]) as usize;
        let cut = u32::from_le_bytes([head[6], head[7], head[8], head[9]]) as usize;
        let key = [3u8; 32];
        futures::executor::block_on(async {
            // Where each record ends on the wire, and how much of the
            // message the records up to there carry.
            let mut ends = vec![(0usize, 0usize)];
            let mut w = Channel::new(futures::io::Cursor::new(Vec::new()), &key, &[0; 32]);
            let mut plain = 0;
            for p in message.chunks(piece) {
                w.write_all(p).await.expect("writing to memory");
                w.flush().await.expect("flushing to memory");
                plain += p.len();
                ends.push((w_len(&w), plain));
            }
            let mut wire = w.into_inner().into_inner();
            let cut = cut.min(wire.len());
            wire.truncate(cut);
            let damaged = damage < cut;
            if damaged {
                wire[damage] ^= 1;
            }
            // The first touched byte, and the records whole before it.
            let touched = if damaged { damage } else { cut };
            let &(intact_end, intact_plain) = ends
                .iter()
                .rev()
                .find(|(end, _)| *end <= touched)
                .unwrap_or(&(0, 0));
            let clean = !damaged && intact_end == cut;

            let mut r = Channel::new(futures::io::Cursor::new(wire), &[0; 32], &key);
            let mut out = Vec::new();
            let got = r.read_to_end(&mut out).await;
            assert_eq!(out, message[..intact_plain], "the whole records, in order");
            assert_eq!(
                got.is_ok(),
                clean,
                "an error exactly when a record is touched"
            );
        });
    }

    fn w_len(w: &Channel<futures::io::Cursor<Vec<u8>>>) -> usize {
        w.inner().get_ref().len()
    }
}

#[cfg(test)]
mod tests;
