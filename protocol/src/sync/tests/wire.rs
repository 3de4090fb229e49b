//! Wire-format details: prev-hash elision round trips and refuses mismatches.

use super::super::message::{
    Message, decode_batch, elide_prev_hash, encode_batch, restore_prev_hash,
};
use crate::testing::chain;

#[test]
fn elided_prev_hash_round_trips_signed_and_unsigned() {
    let (_, bundles) = chain(1, 3);
    for b in [bundles[1].clone(), bundles[2].without_signature()] {
        let prev = b.body().prev_hash.unwrap();
        let short = elide_prev_hash(b.bytes(), &prev).unwrap();
        assert_eq!(short.len() + 32, b.bytes().len());
        assert_eq!(restore_prev_hash(&short, &prev).unwrap(), b.bytes());
    }
    // Seq 1 has no prev_hash; a wrong one is not elided.
    assert!(elide_prev_hash(bundles[0].bytes(), &bundles[0].hash()).is_none());
    assert!(elide_prev_hash(bundles[2].bytes(), &bundles[0].hash()).is_none());
    assert!(restore_prev_hash(&[], &bundles[0].hash()).is_none());
}

#[test]
fn batches_round_trip_and_frames_too() {
    let (_, bundles) = chain(1, 4);
    let data = encode_batch(bundles.iter().map(|b| b.bytes()));
    let items = decode_batch(&data).unwrap();
    assert_eq!(items.len(), 4);
    assert!(
        items
            .iter()
            .zip(&bundles)
            .all(|((e, i), b)| !e && i == b.bytes())
    );
    let m = Message::Batch {
        workspace: super::ws(),
        batch_id: 3,
        data,
    };
    assert_eq!(Message::from_frame(&m.to_frame()).unwrap(), m);
}
