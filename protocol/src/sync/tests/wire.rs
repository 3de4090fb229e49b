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

#[test]
fn a_frame_is_the_version_byte_and_the_canonical_encoding() {
    // to_frame writes into a buffer it sizes itself; the bytes must be the
    // ones any other encoder of the message would produce.
    let chunk = Message::BlobChunk {
        workspace: super::ws(),
        hash: crate::BlobHash([7; 32]),
        offset: 3 << 20,
        size: 200 << 20,
        bytes: (0..1u32 << 20).map(|i| (i * 31) as u8).collect(),
    };
    let small = Message::Ping(u64::MAX);
    let empty_chunk = Message::BlobChunk {
        workspace: super::ws(),
        hash: crate::BlobHash([0; 32]),
        offset: 0,
        size: 0,
        bytes: Vec::new(),
    };
    for m in [chunk, small, empty_chunk] {
        let frame = m.to_frame();
        let mut want = vec![frame[0]];
        want.extend_from_slice(&crate::encoding::encode(&m));
        assert_eq!(frame, want);
        assert_eq!(Message::from_frame(&frame).unwrap(), m);
        // A chunk's frame built around bytes appended in place is the same.
        if let Message::BlobChunk {
            workspace,
            hash,
            offset,
            size,
            bytes,
        } = &m
        {
            let built =
                Message::blob_chunk_frame(*workspace, *hash, *offset, *size, bytes.len(), |out| {
                    out.extend_from_slice(bytes);
                    Ok::<_, ()>(true)
                });
            assert_eq!(built, Ok(Some(frame.clone())));
            // Bytes not there, or not as many as announced: no frame.
            let absent =
                Message::blob_chunk_frame(*workspace, *hash, *offset, *size, bytes.len(), |_| {
                    Ok::<_, ()>(false)
                });
            assert_eq!(absent, Ok(None));
            let short = Message::blob_chunk_frame(
                *workspace,
                *hash,
                *offset,
                *size,
                bytes.len() + 1,
                |out| {
                    out.extend_from_slice(bytes);
                    Ok::<_, ()>(true)
                },
            );
            assert_eq!(short, Ok(None));
        }
    }
}
