//! Blob transfer: chunked, resumable after a cut, verified, scoped to members,
//! and "unavailable" reported once while the fetch rests and asks again.

use super::{members, pid, stranger, ws};
use crate::ids::BlobHash;
use crate::sync::io::{Input, SyncEvent};
use crate::sync::limits::BLOB_CHUNK;
use crate::sync::message::Message;
use crate::sync::testing::Net;
use crate::testing::test_workspace;

/// Deterministic bytes that do not compress to nothing.
fn logo(len: usize) -> Vec<u8> {
    crate::testing::noise(len, 0x2545_f491_4f6c_dd1d)
}

fn want(net: &mut Net, node: usize, hash: BlobHash, size: u64) {
    net.input(
        node,
        Input::BlobWanted {
            workspace: ws(),
            hash,
            size,
        },
    );
}

fn completed(net: &Net, node: usize, hash: BlobHash) -> usize {
    net.nodes[node]
        .events
        .iter()
        .filter(|e| matches!(e, SyncEvent::BlobComplete { hash: h, .. } if *h == hash))
        .count()
}

fn chunks_received(net: &Net, node: usize) -> usize {
    net.nodes[node]
        .frames_in
        .iter()
        .filter(|(_, f)| matches!(Message::from_frame(f), Ok(Message::BlobChunk { .. })))
        .count()
}

#[test]
fn a_multi_chunk_blob_arrives_verified() {
    let mut net = members(2);
    let bytes = logo(3 * BLOB_CHUNK + 12_345);
    let hash = net.nodes[0].view.put_blob(&bytes);
    net.connect(0, 1);
    net.drive_bounded(1_000);
    want(&mut net, 1, hash, bytes.len() as u64);
    net.drive_bounded(1_000);
    assert_eq!(completed(&net, 1, hash), 1);
    let got = &net.nodes[1].view.blobs[&hash];
    assert!(got.complete);
    assert_eq!(got.bytes, bytes);
    assert_eq!(
        chunks_received(&net, 1),
        4,
        "exactly one copy of each chunk"
    );
}

#[test]
fn a_cut_transfer_resumes_from_what_is_held() {
    let mut net = members(2);
    let bytes = logo(10 * BLOB_CHUNK);
    let hash = net.nodes[0].view.put_blob(&bytes);
    net.connect(0, 1);
    net.drive_bounded(1_000);
    want(&mut net, 1, hash, bytes.len() as u64);
    // Run until part of the blob is held, then cut the connection.
    while net.nodes[1]
        .view
        .blobs
        .get(&hash)
        .is_none_or(|b| b.bytes.len() < 3 * BLOB_CHUNK)
    {
        assert!(net.step(), "transfer stalled before the cut");
    }
    let held = net.nodes[1].view.blobs[&hash].bytes.len();
    assert!(held < bytes.len(), "cut before the end");
    net.cut(0, 1);
    net.drive_bounded(1_000);
    assert_eq!(completed(&net, 1, hash), 0);
    let before = chunks_received(&net, 1);
    net.connect(0, 1);
    net.drive_bounded(1_000);
    assert_eq!(completed(&net, 1, hash), 1, "resumed without a new want");
    assert_eq!(net.nodes[1].view.blobs[&hash].bytes, bytes);
    let resent = chunks_received(&net, 1) - before;
    assert_eq!(
        resent,
        (bytes.len() - held).div_ceil(BLOB_CHUNK),
        "only the missing chunks crossed again"
    );
}

#[test]
fn bytes_that_do_not_hash_right_are_refused_and_fetched_elsewhere() {
    let mut net = members(3);
    let bytes = logo(2 * BLOB_CHUNK + 7);
    let hash = net.nodes[0].view.put_blob(&bytes);
    net.nodes[2].view.put_blob(&bytes);
    // Node 0's copy rots on disk (its view still claims the hash).
    net.nodes[0].view.blobs.get_mut(&hash).unwrap().bytes[5] ^= 0x40;
    net.connect(0, 1);
    net.drive_bounded(1_000);
    want(&mut net, 1, hash, bytes.len() as u64);
    net.drive_bounded(1_000);
    assert_eq!(completed(&net, 1, hash), 0, "the bad copy is never visible");
    assert!(
        net.nodes[1]
            .events
            .iter()
            .any(|e| matches!(e, SyncEvent::PeerBlamed { peer, .. } if *peer == pid(100)))
    );
    // Node 0 was blamed; the fetch rests until a member that can serve it
    // connects, and then goes on by itself.
    net.connect(1, 2);
    net.drive_bounded(1_000);
    assert_eq!(
        completed(&net, 1, hash),
        1,
        "fetched from 2 without a new want"
    );
    assert_eq!(net.nodes[1].view.blobs[&hash].bytes, bytes);
}

fn wants_sent(net: &Net, node: usize) -> usize {
    let me = net.nodes[node].id;
    net.nodes
        .iter()
        .flat_map(|n| &n.frames_in)
        .filter(|(from, f)| {
            *from == me && matches!(Message::from_frame(f), Ok(Message::BlobWant { .. }))
        })
        .count()
}

#[test]
fn unavailable_is_an_answer_given_once() {
    let mut net = members(3);
    let hash = BlobHash([9; 32]);
    net.connect(0, 1);
    net.connect(0, 2);
    net.drive_bounded(1_000);
    want(&mut net, 0, hash, 1_000);
    net.drive_bounded(1_000); // terminates: no busy loop
    assert_eq!(wants_sent(&net, 0), 2, "each member asked once");
    // Ten minutes of timeouts: the fetch asks again after resting, each
    // rest twice as long as the one before (up to a minute), and the user
    // is told "unavailable" once.
    let start = net.now;
    while net.now < start + 600_000 {
        net.advance_to_next_timeout();
        net.drive_bounded(1_000);
    }
    let unavailable = net.nodes[0]
        .events
        .iter()
        .filter(|e| matches!(e, SyncEvent::BlobUnavailable { .. }))
        .count();
    assert_eq!(unavailable, 1);
    let asks = wants_sent(&net, 0) / 2;
    // Asked at 0 s, after rests of 2, 4, 8, 16 and 32 s (62 s), then every
    // 60 s: 1 + 5 + 8 or 9 rounds in 600 s.
    assert!((14..=17).contains(&asks), "{asks} rounds of asking");
    assert!(net.nodes[0].view.blobs.is_empty());
}

#[test]
fn an_asset_relayed_by_a_member_still_receiving_it_arrives() {
    // 0 holds the logo; 2 reaches it only through 1, which does not have it
    // yet when 2 asks.
    let mut net = members(3);
    let bytes = logo(3 * BLOB_CHUNK);
    let hash = net.nodes[0].view.put_blob(&bytes);
    net.connect(1, 2);
    net.drive_bounded(1_000);
    want(&mut net, 2, hash, bytes.len() as u64);
    net.drive_bounded(1_000);
    assert_eq!(completed(&net, 2, hash), 0);
    net.connect(0, 1);
    net.drive_bounded(1_000);
    want(&mut net, 1, hash, bytes.len() as u64);
    net.drive_bounded(1_000);
    assert_eq!(completed(&net, 1, hash), 1);
    assert_eq!(completed(&net, 2, hash), 0, "2 is resting, not spinning");
    net.advance_to_next_timeout();
    net.drive_bounded(1_000);
    assert_eq!(completed(&net, 2, hash), 1, "asked again after its rest");
    assert_eq!(net.nodes[2].view.blobs[&hash].bytes, bytes);
}

#[test]
fn a_non_member_can_neither_fetch_nor_be_asked() {
    let mut net = Net::new(vec![
        (pid(100), vec![test_workspace()]),
        (pid(101), vec![stranger()]),
    ]);
    let bytes = logo(1_000);
    let hash = net.nodes[0].view.put_blob(&bytes);
    net.connect(0, 1);
    net.drive_bounded(1_000);
    // The stranger asks for it by hash anyway, naming the member's workspace.
    let ask = Message::BlobWant {
        workspace: ws(),
        hash,
        offset: 0,
        len: 1_000,
    };
    net.inject(1, 0, ask.to_frame());
    net.drive_bounded(1_000);
    assert!(
        net.nodes[1]
            .frames_in
            .iter()
            .all(|(_, f)| !f.windows(64).any(|w| w == &bytes[..64])),
        "no blob bytes reached the stranger"
    );
    assert!(
        net.nodes[0]
            .events
            .iter()
            .any(|e| matches!(e, SyncEvent::PeerBlamed { peer, .. } if *peer == pid(101)))
    );
    // And a member's want is never sent to the stranger.
    let mut net2 = Net::new(vec![
        (pid(100), vec![test_workspace()]),
        (pid(101), vec![stranger()]),
    ]);
    net2.nodes[1].view.put_blob(&bytes);
    net2.connect(0, 1);
    net2.drive_bounded(1_000);
    want(&mut net2, 0, hash, bytes.len() as u64);
    net2.drive_bounded(1_000);
    assert!(
        net2.nodes[1]
            .frames_in
            .iter()
            .all(|(_, f)| !matches!(Message::from_frame(f), Ok(Message::BlobWant { .. })))
    );
}

/// Chunks and plain bytes node `node` has asked of `peer` and not received,
/// from the fetches' own records.
fn in_flight(net: &Net, node: usize, peer: crate::sync::PeerId) -> (usize, u64) {
    let e = &net.nodes[node].engine;
    let mut wants = 0;
    let mut bytes = 0;
    for h in e.blobs.sorted_where(|f| f.peer == Some(peer)) {
        let Some(f) = e.blobs.get(&h) else { continue };
        wants += f.in_flight.len();
        bytes += f
            .in_flight
            .iter()
            .map(|&o| (f.size - o).min(BLOB_CHUNK as u64))
            .sum::<u64>();
    }
    (wants, bytes)
}

fn step_within_bounds(net: &mut Net, max_steps: u64) {
    use crate::sync::limits::{MAX_BLOB_BYTES_IN_FLIGHT, MAX_BLOB_WANTS_IN_FLIGHT};
    for _ in 0..max_steps {
        if !net.step() {
            return;
        }
        let (wants, bytes) = in_flight(net, 1, pid(100));
        assert!(
            wants <= MAX_BLOB_WANTS_IN_FLIGHT,
            "{wants} chunks in flight"
        );
        assert!(bytes <= MAX_BLOB_BYTES_IN_FLIGHT, "{bytes} bytes in flight");
        let asked = net.nodes[0]
            .frames_in
            .iter()
            .filter(|(_, f)| matches!(Message::from_frame(f), Ok(Message::BlobWant { .. })))
            .count();
        assert!(
            asked <= chunks_received(net, 1) + MAX_BLOB_WANTS_IN_FLIGHT,
            "the serving peer never sees more unanswered wants than the bound"
        );
    }
    panic!("did not settle within {max_steps} steps");
}

#[test]
fn many_small_blobs_travel_together_within_the_bounds() {
    use crate::sync::limits::MAX_BLOB_WANTS_IN_FLIGHT;
    let mut net = members(2);
    let blobs: Vec<(BlobHash, Vec<u8>)> = (0..3 * MAX_BLOB_WANTS_IN_FLIGHT + 17)
        .map(|i| {
            let mut b = logo(1_024);
            b[..8].copy_from_slice(&(i as u64).to_le_bytes());
            (net.nodes[0].view.put_blob(&b), b)
        })
        .collect();
    // Two large blobs too: their chunks share the byte bound.
    let big = logo(20 * BLOB_CHUNK + 3);
    let big_hash = net.nodes[0].view.put_blob(&big);
    net.connect(0, 1);
    net.drive_bounded(1_000);
    want(&mut net, 1, big_hash, big.len() as u64);
    for (h, b) in &blobs {
        want(&mut net, 1, *h, b.len() as u64);
    }
    // The wants are taken in; many blobs are asked for at once, not one
    // blob per round trip.
    for _ in 0..=blobs.len() {
        assert!(net.step());
    }
    let (wants, _) = in_flight(&net, 1, pid(100));
    assert!(wants > 8 + 1, "several blobs in flight at once: {wants}");
    step_within_bounds(&mut net, 100_000);
    for (h, b) in &blobs {
        assert_eq!(completed(&net, 1, *h), 1);
        assert_eq!(&net.nodes[1].view.blobs[h].bytes, b);
    }
    assert_eq!(completed(&net, 1, big_hash), 1);
    assert_eq!(net.nodes[1].view.blobs[&big_hash].bytes, big);
    assert_eq!(
        chunks_received(&net, 1),
        blobs.len() + 21,
        "exactly one copy of each chunk"
    );
    assert!(net.nodes[1].engine.blobs.is_empty());
    assert_eq!(in_flight(&net, 1, pid(100)), (0, 0));
}

#[test]
fn many_small_blobs_resume_after_a_cut() {
    use crate::sync::limits::MAX_BLOB_WANTS_IN_FLIGHT;
    let mut net = members(2);
    let blobs: Vec<(BlobHash, Vec<u8>)> = (0..2 * MAX_BLOB_WANTS_IN_FLIGHT + 5)
        .map(|i| {
            let mut b = logo(1_000);
            b[..8].copy_from_slice(&(i as u64).to_le_bytes());
            (net.nodes[0].view.put_blob(&b), b)
        })
        .collect();
    net.connect(0, 1);
    net.drive_bounded(1_000);
    for (h, b) in &blobs {
        want(&mut net, 1, *h, b.len() as u64);
    }
    let done = |net: &Net| {
        blobs
            .iter()
            .filter(|(h, _)| completed(net, 1, *h) == 1)
            .count()
    };
    while done(&net) < MAX_BLOB_WANTS_IN_FLIGHT / 2 {
        assert!(net.step(), "stalled before the cut");
    }
    net.cut(0, 1);
    net.drive_bounded(10_000);
    let before = done(&net);
    assert!(before < blobs.len(), "cut before the end");
    assert_eq!(
        in_flight(&net, 1, pid(100)),
        (0, 0),
        "nothing counted as in flight to a gone peer"
    );
    net.connect(0, 1);
    step_within_bounds(&mut net, 100_000);
    assert_eq!(
        done(&net),
        blobs.len(),
        "every blob arrived without new wants"
    );
    for (h, b) in &blobs {
        assert_eq!(completed(&net, 1, *h), 1, "each completes once");
        assert_eq!(&net.nodes[1].view.blobs[h].bytes, b);
    }
}
