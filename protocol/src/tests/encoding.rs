//! Invariants: every op has a checksum; corrupt bundles are detected on read and
//! sync and never verify (design notes §4 "Corrupt oplog entry"); encoding
//! round-trips exactly; decoding hostile bytes never panics.

use proptest::prelude::*;

use crate::bundle::Bundle;
use crate::testing::{key, strategies::arb_body, test_workspace};

fn signed(body: crate::bundle::BundleBody) -> Bundle {
    body.sign(&key(1)).expect("generated bodies are valid")
}

proptest! {
    #[test]
    fn encode_decode_round_trip(body in arb_body(test_workspace().workspace_id(), key(1).actor_id())) {
        let b = signed(body.clone());
        let d = Bundle::decode(b.bytes().to_vec()).unwrap();
        prop_assert_eq!(d.body(), &body);
        prop_assert_eq!(d.hash(), b.hash());
        prop_assert_eq!(d.bytes(), b.bytes());
        prop_assert_eq!(crate::encoding::encode(&body).len() + 65, b.bytes().len());
        let bare = d.without_signature();
        prop_assert_eq!(bare.hash(), b.hash());
        // The slot a copy claims is its body's, signed or not, and still
        // reads when the bytes past it are broken.
        let slot = Some((body.workspace, body.author, body.seq));
        prop_assert_eq!(Bundle::claimed_slot(bare.bytes()), slot);
        prop_assert_eq!(Bundle::claimed_slot(b.bytes()), slot);
        prop_assert_eq!(Bundle::decode(bare.bytes().to_vec()).unwrap(), bare);
        prop_assert!(d.check_signature().is_ok());
        let mut longer = b.bytes().to_vec();
        longer.push(0);
        prop_assert!(Bundle::decode(longer.clone()).is_err());
        prop_assert_eq!(Bundle::claimed_slot(&longer), slot);
    }

    #[test]
    fn mutated_encodings_never_panic_and_never_verify(
        body in arb_body(test_workspace().workspace_id(), key(1).actor_id()),
        pos in any::<prop::sample::Index>(),
        bit in 0u8..8,
        cut in any::<prop::sample::Index>(),
        insert in any::<u8>(),
        how in 0u8..3,
    ) {
        let b = signed(body);
        let mut bytes = b.bytes().to_vec();
        match how {
            0 => { let i = pos.index(bytes.len()); bytes[i] ^= 1 << bit; }
            1 => { bytes.truncate(cut.index(bytes.len())); }
            _ => { let i = pos.index(bytes.len() + 1); bytes.insert(i, insert); }
        }
        crate::encoding::fuzzing::decode_bundle(&bytes);
        if let Ok(m) = Bundle::decode(bytes) {
            // The checksum covers the body: a body change always changes it; a
            // change confined to the signature leaves the body as signed.
            prop_assert!(m.hash() != b.hash() || m.body() == b.body());
            if m.body() != b.body() {
                prop_assert!(Bundle::decode_expecting(m.bytes().to_vec(), &b.hash()).is_err());
            }
            prop_assert!(m.check_signature().is_err(), "a mutated bundle must never verify");
            let ws = test_workspace().workspace_id();
            prop_assert!(crate::verify::verify_bundles(&ws, &[m], |_, _| None)[0].is_err());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        crate::encoding::fuzzing::decode_bundle(&bytes);
    }
}

#[test]
fn bytes_too_short_or_unframed_claim_no_slot() {
    let b = crate::testing::chain(1, 1).1.remove(0);
    for bad in [
        &[][..],
        &[0][..],
        &[2, 0, 0][..],
        &b.bytes()[..40],
        &b.bytes()[..70],
    ] {
        assert_eq!(Bundle::claimed_slot(bad), None, "{bad:?}");
    }
}

#[test]
fn oversize_input_is_refused_before_parsing() {
    let big = vec![0u8; crate::limits::MAX_BUNDLE_BYTES + 1];
    assert!(matches!(
        Bundle::decode(big),
        Err(crate::VerifyError::Decode(
            crate::DecodeError::TooLarge { .. }
        ))
    ));
}

proptest! {
    #[test]
    fn arbitrary_frames_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        crate::encoding::fuzzing::decode_message(&bytes);
    }
}
