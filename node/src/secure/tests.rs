use futures::{AsyncReadExt, AsyncWriteExt};
use proptest::prelude::*;
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

use super::record::MAX_PLAINTEXT;
use super::*;

type Pipe = Compat<tokio::io::DuplexStream>;

fn pipe() -> (Pipe, Pipe) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    (a.compat(), b.compat())
}

/// A dialler and a listener over one in-memory pipe, with their identities.
async fn connect() -> (
    (PeerId, Channel<Pipe>),
    (PeerId, Channel<Pipe>),
    PeerId,
    PeerId,
) {
    let (a_key, b_key) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let (a_cfg, b_cfg) = (Config::new(&a_key).unwrap(), Config::new(&b_key).unwrap());
    let (a_io, b_io) = pipe();
    let (a, b) = tokio::join!(
        a_cfg.upgrade_outbound(a_io, PROTOCOL),
        b_cfg.upgrade_inbound(b_io, PROTOCOL)
    );
    (
        a.unwrap(),
        b.unwrap(),
        a_key.public().to_peer_id(),
        b_key.public().to_peer_id(),
    )
}

/// Deterministic bytes with no pattern, from any seed.
fn bytes(len: usize, seed: u64) -> Vec<u8> {
    troupe_protocol::testing::noise(len, seed | 1)
}

#[tokio::test]
async fn each_side_learns_the_others_peer_id_and_bytes_cross_both_ways() {
    let ((b_seen, mut a), (a_seen, mut b), a_id, b_id) = connect().await;
    assert_eq!(b_seen, b_id, "the dialler sees the listener's id");
    assert_eq!(a_seen, a_id, "the listener sees the dialler's id");

    // More than several records each way, in odd-sized writes and reads.
    let there = bytes(3 * MAX_PLAINTEXT + 12_345, 1);
    let back = bytes(MAX_PLAINTEXT / 3, 2);
    let (sent, got) = tokio::join!(
        async {
            for piece in there.chunks(100_003) {
                a.write_all(piece).await.unwrap();
            }
            a.close().await.unwrap();
            let mut got = Vec::new();
            a.read_to_end(&mut got).await.unwrap();
            got
        },
        async {
            let mut got = Vec::new();
            let mut buf = vec![0u8; 7_919];
            loop {
                let n = b.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            b.write_all(&back).await.unwrap();
            b.close().await.unwrap();
            got
        }
    );
    assert_eq!(got, there);
    assert_eq!(sent, back);
}

/// What a channel with send key `key` puts on the wire for `message`,
/// written in pieces of `piece` bytes and flushed every `flush_every` pieces.
async fn sealed(key: &[u8; 32], message: &[u8], piece: usize, flush_every: usize) -> Vec<u8> {
    let mut w = Channel::new(futures::io::Cursor::new(Vec::new()), key, &[9; 32]);
    for (i, p) in message.chunks(piece.max(1)).enumerate() {
        w.write_all(p).await.unwrap();
        if (i + 1) % flush_every.max(1) == 0 {
            w.flush().await.unwrap();
        }
    }
    w.flush().await.unwrap();
    w.into_inner().into_inner()
}

/// Reads `wire` as the peer with receive key `key` would: the plaintext, or
/// the error that ended it.
async fn opened(key: &[u8; 32], wire: Vec<u8>) -> (Vec<u8>, Option<std::io::ErrorKind>) {
    let mut r = Channel::new(futures::io::Cursor::new(wire), &[9; 32], key);
    let mut out = Vec::new();
    let mut buf = vec![0u8; 4_099];
    loop {
        match r.read(&mut buf).await {
            Ok(0) => return (out, None),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => {
                // Failed for good.
                assert!(r.read(&mut buf).await.is_err());
                return (out, Some(e.kind()));
            }
        }
    }
}

const KEY: [u8; 32] = [7; 32];

#[tokio::test]
async fn a_changed_byte_on_the_wire_is_an_error_and_never_plaintext() {
    let message = bytes(5_000, 3);
    let wire = sealed(&KEY, &message, 5_000, 1).await;
    assert_eq!(wire.len(), 4 + message.len() + 16, "one record");
    assert!(
        !wire.windows(64).any(|w| w == &message[..64]),
        "the plaintext is not on the wire"
    );
    assert_eq!(opened(&KEY, wire.clone()).await, (message.clone(), None));
    for at in [0, 3, 4, 100, wire.len() - 1] {
        let mut damaged = wire.clone();
        damaged[at] ^= 0x20;
        let (out, err) = opened(&KEY, damaged).await;
        assert!(
            out.is_empty(),
            "byte {at}: nothing of the record is handed on"
        );
        assert!(err.is_some(), "byte {at}: an error");
    }
    // Another key: refused.
    let (out, err) = opened(&[8; 32], wire.clone()).await;
    assert!(out.is_empty());
    assert_eq!(err, Some(std::io::ErrorKind::InvalidData));
    // Cut short: an error, not a short read.
    let (out, err) = opened(&KEY, wire[..wire.len() - 1].to_vec()).await;
    assert!(out.is_empty());
    assert_eq!(err, Some(std::io::ErrorKind::UnexpectedEof));
}

#[tokio::test]
async fn records_cannot_be_dropped_repeated_or_reordered() {
    let first = sealed(&KEY, &bytes(300, 4), 100, 1).await;
    // Three records of 100 bytes: 120 bytes each on the wire.
    assert_eq!(first.len(), 360);
    let (r0, r1, r2) = (&first[..120], &first[120..240], &first[240..]);
    for (name, wire) in [
        ("dropped", [r0, r2].concat()),
        ("repeated", [r0, r0, r1].concat()),
        ("reordered", [r1, r0, r2].concat()),
    ] {
        let (out, err) = opened(&KEY, wire).await;
        assert_eq!(err, Some(std::io::ErrorKind::InvalidData), "{name}");
        assert!(
            out.len() <= 100,
            "{name}: nothing after the break is handed on"
        );
    }
}

#[tokio::test]
async fn a_record_longer_than_allowed_is_refused_before_it_is_read() {
    let len = u32::try_from(MAX_PLAINTEXT + 16 + 1).unwrap();
    let (out, err) = opened(&KEY, len.to_be_bytes().to_vec()).await;
    assert!(out.is_empty());
    assert_eq!(err, Some(std::io::ErrorKind::InvalidData));
    // Shorter than a tag: refused too.
    let (_, err) = opened(&KEY, 15u32.to_be_bytes().to_vec()).await;
    assert_eq!(err, Some(std::io::ErrorKind::InvalidData));
}

#[tokio::test]
async fn a_proof_for_another_static_key_ends_the_handshake() {
    let (honest, thief) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    // The thief presents the honest node's proof (a real signature, over
    // another static key) beside its own static key.
    let honest_proof = Config::new(&honest).unwrap().inner.proof.clone();
    let forged = Config {
        inner: Arc::new(Local {
            static_secret: rand::random(),
            proof: honest_proof,
        }),
    };
    let (a_io, b_io) = pipe();
    let (dialler, listener) = tokio::join!(
        Config::new(&thief)
            .unwrap()
            .upgrade_outbound(a_io, PROTOCOL),
        forged.upgrade_inbound(b_io, PROTOCOL)
    );
    assert!(
        matches!(dialler, Err(SecureError::Proof(_))),
        "the dialler refuses the forged proof: {dialler:?}"
    );
    assert!(listener.is_err(), "and the listener gets no channel");
}

#[test]
fn a_proof_is_exactly_one_key_and_one_signature() {
    let key = Keypair::generate_ed25519();
    let static_key = dh::public(&[5; 32]);
    let signature = key
        .sign(&[STATIC_KEY_DOMAIN, &static_key].concat())
        .unwrap();
    let good = proof::encode(&key.public(), &signature);
    assert_eq!(
        proof::verify(&good, &static_key).unwrap(),
        key.public().to_peer_id()
    );
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(proof::verify(&trailing, &static_key).is_err());
    for cut in 0..good.len() {
        assert!(
            proof::verify(&good[..cut], &static_key).is_err(),
            "cut at {cut}"
        );
    }
    assert!(
        proof::verify(&good, &dh::public(&[6; 32])).is_err(),
        "another static key"
    );
    let mut bad_sig = good.clone();
    *bad_sig.last_mut().unwrap() ^= 1;
    assert!(proof::verify(&bad_sig, &static_key).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_pieces_and_flushes_read_back_as_written(
        len in 0usize..600_000,
        piece in 1usize..300_000,
        flush_every in 1usize..8,
        seed in any::<u64>(),
    ) {
        let message = bytes(len, seed);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let (out, err) = rt.block_on(async {
            opened(&KEY, sealed(&KEY, &message, piece, flush_every).await).await
        });
        prop_assert_eq!(err, None);
        prop_assert!(out == message);
    }

    #[test]
    fn the_fuzz_targets_check_holds_for_any_damage_or_cut(
        piece in 1u16..4_000,
        damage in any::<u32>(),
        cut in any::<u32>(),
        message in proptest::collection::vec(any::<u8>(), 0..20_000),
    ) {
        // Damage and cuts land on the wire (about a record's worth) often.
        let wire_len = message.len() + 20 * message.len().div_ceil(usize::from(piece));
        let (damage, cut) = (damage % (wire_len as u32 + 8), cut % (wire_len as u32 + 8));
        let mut data = piece.to_le_bytes().to_vec();
        data.extend_from_slice(&damage.to_le_bytes());
        data.extend_from_slice(&cut.to_le_bytes());
        data.extend_from_slice(&message);
        fuzzing::records(&data);
    }

    #[test]
    fn any_bytes_from_a_peer_never_panic_and_never_read_as_plaintext(
        wire in proptest::collection::vec(any::<u8>(), 0..2_000),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let (out, err) = rt.block_on(opened(&KEY, wire.clone()));
        prop_assert!(out.is_empty());
        prop_assert_eq!(err.is_none(), wire.is_empty());
    }
}
