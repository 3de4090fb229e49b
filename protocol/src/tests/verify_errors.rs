//! Invariant: verification names the check that failed (hash, signature, chain,
//! workspace, caps), so quarantine records a reason a person can read.

use crate::bundle::{Bundle, BundleBody, BundleKind};
use crate::draft::{AuthorTip, Draft};
use crate::error::{DecodeError, VerifyError};
use crate::hlc::Hlc;
use crate::ids::{BundleHash, WorkspaceId};
use crate::testing::{chain, key};
use crate::verify::verify_bundles;

#[test]
fn truncated_bytes_are_a_decode_error() {
    let (_, b) = chain(1, 1);
    let mut bytes = b[0].bytes().to_vec();
    bytes.truncate(bytes.len() - 70);
    assert!(matches!(Bundle::decode(bytes), Err(VerifyError::Decode(_))));
}

#[test]
fn wrong_hash_is_a_hash_error() {
    let (_, b) = chain(1, 2);
    let err = Bundle::decode_expecting(b[0].bytes().to_vec(), &b[1].hash()).unwrap_err();
    assert!(matches!(err, VerifyError::Hash { expected, .. } if expected == b[1].hash()));
}

#[test]
fn flipped_signature_is_a_signature_error() {
    let (ws, b) = chain(1, 1);
    let mut bytes = b[0].bytes().to_vec();
    bytes[10] ^= 0x40;
    let m = Bundle::decode(bytes).unwrap();
    assert!(matches!(
        m.verify_alone(&ws, None),
        Err(VerifyError::Signature { .. })
    ));
}

#[test]
fn signature_by_another_key_is_refused() {
    // A body claiming author 1 but signed by key 2 cannot be built by `sign`…
    let ws = WorkspaceId([1; 32]);
    let mut d = Draft::new(ws, BundleKind::UserEdit, "x");
    d.set(
        "contacts.person/a/name".parse().unwrap(),
        "A".into(),
        vec![],
    );
    let good = d
        .sign(&key(2), &AuthorTip::default(), Hlc::default())
        .unwrap();
    // …so splice key 1's id into the body and keep key 2's signature.
    let mut body = good.body().clone();
    body.author = key(1).actor_id();
    let mut bytes = vec![1];
    bytes.extend_from_slice(&good.signature().unwrap().0);
    bytes.extend_from_slice(&crate::encoding::encode(&body));
    let forged = Bundle::decode(bytes).unwrap();
    assert!(
        matches!(forged.check_signature(), Err(VerifyError::Signature { author }) if author == key(1).actor_id())
    );
}

#[test]
fn a_signature_check_that_failed_is_not_remembered() {
    let (ws, b) = chain(1, 1);
    let mut bytes = b[0].bytes().to_vec();
    bytes[10] ^= 0x40;
    let mut forged = Bundle::decode(bytes).unwrap();
    assert!(matches!(
        forged.pre_check_signature(),
        Err(VerifyError::Signature { .. })
    ));
    assert!(!forged.signature_known_good());
    assert!(matches!(
        forged.check_signature(),
        Err(VerifyError::Signature { .. })
    ));
    let verdicts = verify_bundles(&ws, std::slice::from_ref(&forged), |_, _| None);
    assert!(matches!(verdicts[0], Err(VerifyError::Signature { .. })));
}

#[test]
fn a_remembered_signature_check_belongs_to_its_copy_and_not_to_equality() {
    let (_, b) = chain(1, 1);
    let mut checked = Bundle::decode(b[0].bytes().to_vec()).unwrap();
    let fresh = Bundle::decode(b[0].bytes().to_vec()).unwrap();
    assert!(!checked.signature_known_good(), "decoding checks nothing");
    checked.pre_check_signature().unwrap();
    assert!(checked.signature_known_good());
    assert!(checked.check_signature().is_ok());
    assert_eq!(checked, fresh);
    // A copy without its signature has nothing to remember.
    let bare = checked.without_signature();
    assert!(!bare.signature_known_good());
    assert!(matches!(
        bare.check_signature(),
        Err(VerifyError::Unsigned { seq: 1 })
    ));
}

#[test]
fn broken_chain_is_a_chain_error() {
    let (ws, b) = chain(1, 3);
    assert!(matches!(
        b[2].verify_alone(&ws, Some(&BundleHash([0; 32]))),
        Err(VerifyError::Chain { seq: 3, .. })
    ));
    assert!(b[2].verify_alone(&ws, Some(&b[1].hash())).is_ok());
}

#[test]
fn wrong_workspace_is_a_workspace_error() {
    let (_, b) = chain(1, 1);
    assert!(matches!(
        b[0].verify_alone(&WorkspaceId([5; 32]), None),
        Err(VerifyError::Workspace { .. })
    ));
}

#[test]
fn caps_are_enforced_at_decode() {
    let (_, b) = chain(1, 1);
    let mut body: BundleBody = b[0].body().clone();
    body.summary = "x".repeat(crate::limits::MAX_SUMMARY_BYTES + 1);
    let mut bytes = vec![0];
    bytes.extend_from_slice(&crate::encoding::encode(&body));
    assert!(matches!(
        Bundle::decode(bytes),
        Err(VerifyError::Decode(DecodeError::Invalid(_)))
    ));
    // And the builder refuses to sign what would never verify.
    assert!(body.sign(&key(1)).is_err());
}

#[test]
fn seq_one_must_have_no_prev_and_later_seqs_must() {
    let (_, b) = chain(1, 2);
    let mut body = b[1].body().clone();
    body.prev_hash = None;
    assert!(body.sign(&key(1)).is_err());
}

#[test]
fn batch_verification_reports_per_bundle() {
    let (ws, mut b) = chain(1, 20);
    let mut bytes = b[7].bytes().to_vec();
    let at = bytes
        .windows(4)
        .position(|w| w == b"v-7-")
        .expect("value text present");
    bytes[at] = b'w';
    b[7] = Bundle::decode(bytes).unwrap();
    let res = verify_bundles(&ws, &b, |_, _| None);
    for (i, r) in res.iter().enumerate() {
        if i == 7 {
            assert!(
                matches!(r, Err(VerifyError::Signature { .. })),
                "bundle 8 refused"
            );
        } else if i == 8 {
            // Its prev_hash names the original bundle 7, not the corrupted bytes.
            assert!(r.is_ok(), "bundle 9 is itself authentic: {r:?}");
        } else {
            assert!(r.is_ok(), "{i}: {r:?}");
        }
    }
}
