//! Malicious or broken peers: nothing they send is applied unverified, the
//! engine never panics, and they are blamed.

use proptest::prelude::*;

use super::super::handshake;
use super::super::io::{Input, Output, SyncEvent};
use super::super::limits::{MAX_BAD_ITEMS, MAX_FRAME, MAX_PROOFS, PROOF_PAD};
use super::super::message::{Message, encode_batch};
use super::super::testing::{MemView, Net};
use super::super::{Engine, EngineConfig, OplogView};
use super::{members, pid, seed, ws};
use crate::testing::{chain, chain_with, key, test_workspace};

fn blamed(net: &Net, node: usize, by: usize) -> bool {
    let peer = net.nodes[by].id;
    net.nodes[node]
        .events
        .iter()
        .any(|e| matches!(e, SyncEvent::PeerBlamed { peer: p, .. } if *p == peer))
}

/// Victim (0) syncs from a liar (1) whose store serves the given bytes.
fn serve_bad(bundles: &[crate::bundle::Bundle], patch: impl FnOnce(&mut MemView)) -> Net {
    let mut net = members(2);
    seed(&mut net.nodes[1].view, bundles);
    patch(&mut net.nodes[1].view);
    net.connect(0, 1);
    net.drive_bounded(1_000);
    net
}

#[test]
fn a_bad_signature_is_quarantined_and_blamed() {
    let (_, bundles) = chain(1, 1);
    let net = serve_bad(&bundles, |v| {
        let e = v.bundles.values_mut().next().unwrap();
        e.0[5] ^= 1; // inside the signature
    });
    assert_eq!(net.nodes[0].committed, 0);
    assert!(net.nodes[0].view.bundles.is_empty());
    assert_eq!(net.nodes[0].quarantined.len(), 1);
    assert!(blamed(&net, 0, 1));
}

#[test]
fn a_wrong_hash_or_altered_body_is_refused() {
    let (_, bundles) = chain(1, 3);
    let net = serve_bad(&bundles, |v| {
        let e = v.bundles.values_mut().last().unwrap();
        let n = e.0.len();
        e.0[n - 1] ^= 1;
    });
    assert!(net.nodes[0].view.bundles.len() < 3);
    assert!(!net.nodes[0].view.bundles.keys().any(|k| k.2 == 3));
    assert!(blamed(&net, 0, 1));
}

/// A victim engine that finished the handshake with `attacker` and heard it
/// claims `claimed` of author 1; returns the engine and the frames it sent.
fn handshaken(claimed: u64) -> (Engine, MemView, crate::sync::PeerId) {
    let me = pid(100);
    let mut e = Engine::new(EngineConfig {
        local_peer: me.0,
        workspaces: vec![test_workspace()],
        rng_seed: 1,
    });
    let view = MemView::default();
    let attacker = handshake_with(&mut e, &view, claimed);
    (e, view, attacker)
}

/// Runs a (new) session between `e` and peer 101 by hand.
fn handshake_with(e: &mut Engine, view: &MemView, claimed: u64) -> crate::sync::PeerId {
    let (me, attacker) = (pid(100), pid(101));
    e.handle_input(0, Input::PeerUp { peer: attacker }, view);
    let mut theirs = None;
    while let Some(o) = e.poll_output() {
        if let Output::SendFrame { bytes, .. } = o
            && let Ok(Message::Hello { nonce }) = Message::from_frame(&bytes)
        {
            theirs = Some(nonce);
        }
    }
    let theirs = theirs.expect("hello sent");
    let mine = [5; 32];
    let hello = Message::Hello { nonce: mine }.to_frame();
    e.handle_input(
        1,
        Input::Frame {
            peer: attacker,
            bytes: hello,
        },
        view,
    );
    let proof = handshake::proof(&test_workspace(), &attacker, &me, &mine, &theirs);
    let proofs = Message::Proofs {
        proofs: vec![proof],
    }
    .to_frame();
    e.handle_input(
        2,
        Input::Frame {
            peer: attacker,
            bytes: proofs,
        },
        view,
    );
    let ranges = Message::Ranges {
        workspaces: vec![super::super::message::WorkspaceRanges {
            workspace: ws(),
            authors: vec![(
                key(1).actor_id(),
                crate::ranges::SeqRangeSet::up_to(claimed),
            )],
        }],
    };
    e.handle_input(
        3,
        Input::Frame {
            peer: attacker,
            bytes: ranges.to_frame(),
        },
        view,
    );
    while e.poll_output().is_some() {}
    attacker
}

#[test]
fn a_commit_finishing_after_a_reconnect_is_not_acked_into_the_new_session() {
    let (_, a) = chain(1, 2);
    let (mut e, view, peer) = handshaken(2);
    let batch = |b: &crate::bundle::Bundle| Message::Batch {
        workspace: ws(),
        batch_id: 0,
        data: encode_batch([b.bytes()]),
    };
    e.handle_input(
        4,
        Input::Frame {
            peer,
            bytes: batch(&a[0]).to_frame(),
        },
        &view,
    );
    let mut old = None;
    while let Some(o) = e.poll_output() {
        if let Output::CommitBatch { batch_id, .. } = o {
            old = Some(batch_id);
        }
    }
    // The connection drops and comes back while the store is still committing.
    e.handle_input(5, Input::PeerDown { peer }, &view);
    handshake_with(&mut e, &view, 2);
    e.handle_input(
        6,
        Input::Frame {
            peer,
            bytes: batch(&a[1]).to_frame(),
        },
        &view,
    );
    let mut new = None;
    while let Some(o) = e.poll_output() {
        match o {
            Output::CommitBatch { batch_id, .. } => new = Some(batch_id),
            Output::Event(SyncEvent::PeerBlamed { reason, .. }) => panic!("blamed: {reason}"),
            _ => {}
        }
    }
    assert_ne!(old, new, "local commit ids never repeat");
    let input = Input::BatchCommitted {
        peer,
        workspace: ws(),
        batch_id: old.unwrap(),
    };
    e.handle_input(7, input, &view);
    while let Some(o) = e.poll_output() {
        if let Output::SendFrame { bytes, .. } = o {
            let m = Message::from_frame(&bytes).unwrap();
            assert!(
                !matches!(m, Message::BatchAck { .. }),
                "old batch acked in new session"
            );
        }
    }
}

#[test]
fn a_broken_chain_is_not_applied() {
    let (_, a) = chain_with(1, 2, "a");
    let (_, b) = chain_with(1, 2, "b");
    // Seq 2 of another history after seq 1 of this one, both signed: a fork.
    let (mut e, view, attacker) = handshaken(2);
    let data = encode_batch([a[0].bytes(), b[1].bytes()]);
    let m = Message::Batch {
        workspace: ws(),
        batch_id: 0,
        data,
    };
    e.handle_input(
        4,
        Input::Frame {
            peer: attacker,
            bytes: m.to_frame(),
        },
        &view,
    );
    let (mut committed, mut quarantined, mut blamed_it) = (Vec::new(), 0, false);
    while let Some(o) = e.poll_output() {
        match o {
            Output::CommitBatch { bundles, .. } => committed.extend(bundles),
            Output::Quarantine { .. } => quarantined += 1,
            Output::Event(SyncEvent::PeerBlamed { .. }) => blamed_it = true,
            _ => {}
        }
    }
    assert_eq!(committed, vec![a[0].clone()]);
    assert_eq!(quarantined, 1);
    assert!(blamed_it);
    // A fork against what the victim already holds is refused too.
    let mut net = members(2);
    seed(&mut net.nodes[0].view, &a[..1]);
    seed(&mut net.nodes[1].view, &b);
    net.connect(0, 1);
    net.drive_bounded(1_000);
    assert_eq!(net.nodes[0].view.bundles.len(), 1);
    assert!(blamed(&net, 0, 1));
}

#[test]
fn unsolicited_bundles_are_not_applied() {
    let (_, a) = chain(1, 3);
    let (mut e, view, attacker) = handshaken(1);
    let data = encode_batch(a.iter().map(|b| b.bytes()));
    let m = Message::Batch {
        workspace: ws(),
        batch_id: 0,
        data,
    };
    e.handle_input(
        4,
        Input::Frame {
            peer: attacker,
            bytes: m.to_frame(),
        },
        &view,
    );
    let mut committed = Vec::new();
    while let Some(o) = e.poll_output() {
        if let Output::CommitBatch { bundles, .. } = o {
            committed.extend(bundles);
        }
    }
    assert_eq!(committed, vec![a[0].clone()], "only the wanted seq");
}

/// Victim 0 and attacker 1 after a clean handshake.
fn connected() -> Net {
    let mut net = members(2);
    net.connect(0, 1);
    net.drive_bounded(100);
    net
}

#[test]
fn oversize_frames_and_counts_are_refused_before_parsing() {
    let mut net = connected();
    let mut huge = vec![1u8; MAX_FRAME + 1];
    huge[1] = 0;
    net.inject(1, 0, huge);
    // Proofs: variant 1, a count claiming four billion entries.
    net.inject(1, 0, vec![1, 1, 0xff, 0xff, 0xff, 0xff, 0x0f]);
    let too_many = Message::Proofs {
        proofs: vec![[0; 32]; MAX_PROOFS + PROOF_PAD + 1],
    };
    net.inject(1, 0, too_many.to_frame());
    net.inject(1, 0, vec![9, 0, 0]); // unknown version
    net.inject(1, 0, Vec::new());
    net.drive_bounded(100);
    let n = net.nodes[0]
        .events
        .iter()
        .filter(|e| matches!(e, SyncEvent::PeerBlamed { .. }))
        .count();
    assert_eq!(n, 5);
    assert_eq!(net.nodes[0].committed, 0);
}

#[test]
fn bogus_ranges_and_wants_do_no_harm() {
    let mut net = connected();
    let (_, bundles) = chain(1, 5);
    seed(&mut net.nodes[0].view, &bundles);
    // Not normalised: Want (variant 3), ws, author, two overlapping ranges.
    let mut f = vec![1, 3];
    f.extend_from_slice(&ws().0);
    f.extend_from_slice(&key(1).actor_id().0);
    f.extend_from_slice(&[2, 5, 2, 1, 9]);
    net.inject(1, 0, f);
    // Valid form, absurd span: only what is held is served.
    let want = Message::Want {
        workspace: ws(),
        author: key(1).actor_id(),
        ranges: crate::ranges::SeqRangeSet::from_ranges([(1, u64::MAX - 1)]),
    };
    net.inject(1, 0, want.to_frame());
    // Claims to hold everything: the victim asks, gets nothing, stays usable.
    let announce = Message::Announce {
        workspace: ws(),
        author: key(9).actor_id(),
        ranges: crate::ranges::SeqRangeSet::from_ranges([(1, 1 << 62), ((1 << 62) + 2, u64::MAX)]),
    };
    net.inject(1, 0, announce.to_frame());
    // A want for a workspace not shared.
    let other = Message::Want {
        workspace: crate::ids::WorkspaceId([3; 32]),
        author: key(1).actor_id(),
        ranges: crate::ranges::SeqRangeSet::up_to(3),
    };
    net.inject(1, 0, other.to_frame());
    net.drive_bounded(1_000);
    assert_eq!(
        net.nodes[0].engine.stats().bundles_sent,
        5,
        "only held seqs served"
    );
    assert!(blamed(&net, 0, 1));
    assert!(net.nodes[0].view.ranges(&ws()).unwrap().len() == 1);
}

#[test]
fn garbage_batches_are_blamed_and_never_committed() {
    let mut net = connected();
    let junk = encode_batch([&b"not a bundle"[..], &[1u8; 70][..]]);
    for id in 0..u64::from(MAX_BAD_ITEMS) {
        let m = Message::Batch {
            workspace: ws(),
            batch_id: id,
            data: junk.clone(),
        };
        net.inject(1, 0, m.to_frame());
    }
    net.drive_bounded(1_000);
    assert_eq!(net.nodes[0].committed, 0);
    assert_eq!(
        net.nodes[0].disconnects.len(),
        1,
        "disconnected after too many bad items"
    );
    // A zip bomb: more than the plain cap decompresses to an error, not memory.
    let mut net = connected();
    let bomb = zstd::bulk::compress(&vec![0u8; 20 * 1024 * 1024], 19).unwrap();
    let m = Message::Batch {
        workspace: ws(),
        batch_id: 0,
        data: bomb,
    };
    net.inject(1, 0, m.to_frame());
    net.drive_bounded(100);
    assert!(blamed(&net, 0, 1));
}

#[test]
fn replayed_proofs_from_another_session_fail() {
    let me = pid(100);
    let attacker = pid(101);
    let mut e = Engine::new(EngineConfig {
        local_peer: me.0,
        workspaces: vec![test_workspace()],
        rng_seed: 1,
    });
    let view = MemView::default();
    e.handle_input(0, Input::PeerUp { peer: attacker }, &view);
    e.handle_input(
        1,
        Input::Frame {
            peer: attacker,
            bytes: Message::Hello { nonce: [5; 32] }.to_frame(),
        },
        &view,
    );
    // A proof recorded when the victim's nonce was different.
    let old = handshake::proof(&test_workspace(), &attacker, &me, &[5; 32], &[0; 32]);
    e.handle_input(
        2,
        Input::Frame {
            peer: attacker,
            bytes: Message::Proofs { proofs: vec![old] }.to_frame(),
        },
        &view,
    );
    let mut sent_ranges = None;
    while let Some(o) = e.poll_output() {
        match o {
            Output::Event(SyncEvent::PeerJoined { .. }) => panic!("replayed proof accepted"),
            Output::SendFrame { bytes, .. } => {
                if let Ok(Message::Ranges { workspaces }) = Message::from_frame(&bytes) {
                    sent_ranges = Some(workspaces.len());
                }
            }
            _ => {}
        }
    }
    assert_eq!(sent_ranges, Some(0));
}

#[test]
fn out_of_order_handshake_disconnects() {
    let mut net = members(2);
    net.input(0, Input::PeerUp { peer: pid(101) });
    net.drive_bounded(10);
    net.inject(1, 0, Message::Ranges { workspaces: vec![] }.to_frame());
    net.drive_bounded(10);
    assert_eq!(net.nodes[0].disconnects.len(), 1);
}

fn valid_frames() -> Vec<Vec<u8>> {
    let (_, bundles) = chain(1, 3);
    let items: Vec<&[u8]> = bundles.iter().map(|b| b.bytes()).collect();
    vec![
        Message::Hello { nonce: [1; 32] }.to_frame(),
        Message::Proofs {
            proofs: vec![[2; 32]; 8],
        }
        .to_frame(),
        Message::Want {
            workspace: ws(),
            author: key(1).actor_id(),
            ranges: crate::ranges::SeqRangeSet::up_to(3),
        }
        .to_frame(),
        Message::Batch {
            workspace: ws(),
            batch_id: 0,
            data: encode_batch(items),
        }
        .to_frame(),
        Message::Announce {
            workspace: ws(),
            author: key(1).actor_id(),
            ranges: crate::ranges::SeqRangeSet::up_to(3),
        }
        .to_frame(),
        Message::RepairReply {
            workspace: ws(),
            author: key(1).actor_id(),
            seq: 1,
            bundle: Some(bundles[0].bytes().to_vec()),
        }
        .to_frame(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn perturbed_frames_never_panic(which in 0usize..6, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8), cut in any::<usize>()) {
        let mut f = valid_frames().swap_remove(which);
        for (at, x) in flips {
            let i = at % f.len();
            f[i] ^= x;
        }
        f.truncate(1 + cut % f.len());
        let _ = Message::from_frame(&f);
        let mut net = connected();
        net.inject(1, 0, f);
        net.drive_bounded(1_000);
        prop_assert!(net.nodes[0].view.bundles.is_empty());
    }
}

#[test]
fn announces_cannot_grow_state_without_bound() {
    let mut net = connected();
    for i in 0..(crate::ranges::MAX_RANGES as u64 + 2) {
        let m = Message::Announce {
            workspace: ws(),
            author: key(9).actor_id(),
            ranges: crate::ranges::SeqRangeSet::from_ranges([(2 * i + 1, 2 * i + 1)]),
        };
        net.inject(1, 0, m.to_frame());
    }
    net.drive_bounded(100_000);
    assert!(blamed(&net, 0, 1));
    assert_eq!(
        net.nodes[0].disconnects.len(),
        0,
        "one bad claim is not a disconnect"
    );
}

#[test]
fn a_frame_decoded_by_the_driver_or_left_to_the_engine_is_handled_exactly_as_the_raw_frame() {
    use super::super::PreparedFrame;
    use super::super::message::BatchCodec;
    let (_, a) = chain(1, 3);
    let mut altered = a[2].bytes().to_vec();
    let n = altered.len();
    altered[n - 1] ^= 1;
    let batch = |id: u64, data: Vec<u8>| {
        Message::Batch {
            workspace: ws(),
            batch_id: id,
            data,
        }
        .to_frame()
    };
    let frames = vec![
        batch(0, encode_batch([a[0].bytes(), a[1].bytes()])),
        batch(1, encode_batch([altered.as_slice()])),
        batch(2, vec![0x28, 0xb5, 0x2f, 0xfd, 1, 2, 3]),
        vec![0xff; 40],
        batch(3, encode_batch([a[2].bytes()])),
    ];
    let (mut raw, raw_view, peer) = handshaken(3);
    let (mut prepared, prepared_view, _) = handshaken(3);
    let (mut parsed, parsed_view, _) = handshaken(3);
    let mut codec = BatchCodec::default();
    for (t, bytes) in frames.into_iter().enumerate() {
        let frame = Box::new(PreparedFrame::prepare(&bytes, &mut codec));
        let envelope = Box::new(PreparedFrame::envelope(&bytes));
        raw.handle_input(10 + t as u64, Input::Frame { peer, bytes }, &raw_view);
        prepared.handle_input(
            10 + t as u64,
            Input::Prepared { peer, frame },
            &prepared_view,
        );
        parsed.handle_input(
            10 + t as u64,
            Input::Prepared {
                peer,
                frame: envelope,
            },
            &parsed_view,
        );
        let outs = |e: &mut Engine| {
            std::iter::from_fn(|| e.poll_output())
                .map(|o| format!("{o:?}"))
                .collect::<Vec<_>>()
        };
        let (x, y, z) = (outs(&mut raw), outs(&mut prepared), outs(&mut parsed));
        assert!(!x.is_empty(), "frame {t} had an effect");
        assert_eq!(x, y, "frame {t} decoded by the driver");
        assert_eq!(x, z, "frame {t} read with its batch left to the engine");
    }
}

#[test]
fn a_decoded_frame_counts_what_it_holds_not_what_it_weighed_on_the_wire() {
    use super::super::PreparedFrame;
    use super::super::message::BatchCodec;
    let (_, a) = chain(1, 64);
    let frame = Message::Batch {
        workspace: ws(),
        batch_id: 0,
        data: encode_batch(a.iter().map(|b| b.bytes())),
    }
    .to_frame();
    let prepared = PreparedFrame::prepare(&frame, &mut BatchCodec::default());
    let bytes: usize = a.iter().map(|b| b.bytes().len()).sum();
    let ops: usize = a.iter().map(|b| b.body().ops.len()).sum();
    let held = prepared.footprint();
    assert!(
        held >= bytes + ops * std::mem::size_of::<crate::op::Op>(),
        "{held} bytes counted for {bytes} bytes of bundles and {ops} ops"
    );
    assert!(
        held > 10 * frame.len(),
        "{held} against {} on the wire",
        frame.len()
    );
    // Left undecoded, it holds nothing beyond the frame.
    assert_eq!(PreparedFrame::envelope(&frame).footprint(), 0);
    // A ranges message of many one-seq ranges holds eight times its size.
    let holey = crate::ranges::SeqRangeSet::from_ranges((1..=4096u64).map(|i| (2 * i, 2 * i)));
    let ranges = Message::Ranges {
        workspaces: vec![super::super::message::WorkspaceRanges {
            workspace: ws(),
            authors: (0..8u8)
                .map(|a| (crate::ids::ActorId([a; 32]), holey.clone()))
                .collect(),
        }],
    }
    .to_frame();
    let held = PreparedFrame::envelope(&ranges).footprint();
    assert!(
        held >= 8 * 4096 * 16,
        "{held} bytes counted for 32,768 ranges"
    );
    assert!(
        held > 4 * ranges.len(),
        "{held} against {} on the wire",
        ranges.len()
    );
}

#[test]
fn fragmented_claims_over_many_authors_are_refused_past_the_total_cap() {
    use super::super::limits::MAX_THEIR_RANGES;
    use crate::ranges::{MAX_RANGES, SeqRangeSet};
    let mut net = connected();
    // Every other seq: each set at the per-set cap, for one author more
    // than the total allows.
    let holey = SeqRangeSet::from_ranges((1..=MAX_RANGES as u64).map(|i| (2 * i, 2 * i)));
    assert_eq!(holey.ranges().len(), MAX_RANGES);
    let authors = MAX_THEIR_RANGES / MAX_RANGES + 1;
    for a in 0..authors {
        let announce = Message::Announce {
            workspace: ws(),
            author: crate::ids::ActorId([a as u8 + 1; 32]),
            ranges: holey.clone(),
        };
        net.inject(1, 0, announce.to_frame());
    }
    net.drive_bounded(10_000);
    let reasons: Vec<String> = net.nodes[0]
        .events
        .iter()
        .filter_map(|e| match e {
            SyncEvent::PeerBlamed { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        reasons,
        ["announced ranges too fragmented"],
        "the claims up to the cap are taken, the one past it refused"
    );
}

#[test]
fn one_batch_of_bad_items_fills_quarantine_only_up_to_the_disconnect() {
    let mut net = connected();
    let junk: Vec<Vec<u8>> = (0..200u32)
        .map(|i| {
            let mut b = b"not a bundle ".to_vec();
            b.extend_from_slice(&i.to_le_bytes());
            b
        })
        .collect();
    let batch = Message::Batch {
        workspace: ws(),
        batch_id: 0,
        data: encode_batch(junk.iter().map(Vec::as_slice)),
    };
    net.inject(1, 0, batch.to_frame());
    net.drive_bounded(1_000);
    assert_eq!(net.nodes[0].disconnects.len(), 1, "disconnected");
    assert_eq!(
        net.nodes[0].quarantined.len(),
        MAX_BAD_ITEMS as usize,
        "the items up to the disconnect are kept for the user, not all 200"
    );
    assert_eq!(net.nodes[0].committed, 0);
}

#[test]
fn copies_of_authors_nobody_asked_for_are_dropped_unverified() {
    use crate::testing::chain;
    // The peer claimed author 1 (so it was asked for author 1) and sends
    // author 2's bundles instead, the last one with a forged signature.
    let (mut e, view, peer) = handshaken(3);
    let (_, b) = chain(2, 3);
    let mut broken = b[2].bytes().to_vec();
    assert_eq!(broken[0], 1, "signed");
    broken[10] ^= 1;
    let frame = Message::Batch {
        workspace: ws(),
        batch_id: 0,
        data: encode_batch([b[0].bytes(), b[1].bytes(), broken.as_slice()]),
    }
    .to_frame();
    e.handle_input(10, Input::Frame { peer, bytes: frame }, &view);
    let outs: Vec<Output> = std::iter::from_fn(|| e.poll_output()).collect();
    assert!(
        !outs.iter().any(|o| matches!(
            o,
            Output::CommitBatch { .. }
                | Output::Quarantine { .. }
                | Output::Event(SyncEvent::PeerBlamed { .. })
        )),
        "nothing kept, nothing checked: {outs:?}"
    );
    // The batch is still acknowledged, so the window moves on.
    assert!(outs.iter().any(|o| matches!(
        o,
        Output::SendFrame { bytes, .. }
            if matches!(Message::from_frame(bytes), Ok(Message::BatchAck { batch_id: 0, .. }))
    )));
}

#[test]
fn batches_with_nothing_to_keep_do_not_each_buy_a_pass_over_every_author() {
    let mut net = connected();
    // Node 0 holds many authors; node 1 sends batches that carry nothing
    // (empty, and copies of an author nobody asked it for).
    let many: Vec<_> = (0..200u8).flat_map(|i| chain(i, 1).1).collect();
    seed(&mut net.nodes[0].view, &many);
    let (_, unasked) = chain(250, 3);
    let before = net.nodes[0].view.full_range_reads.get();
    for id in 0..400u64 {
        let data = if id % 2 == 0 {
            encode_batch(std::iter::empty())
        } else {
            encode_batch(unasked.iter().map(|b| b.bytes()))
        };
        let batch = Message::Batch {
            workspace: ws(),
            batch_id: id,
            data,
        };
        net.inject(1, 0, batch.to_frame());
    }
    net.drive_bounded(10_000);
    assert!(
        net.nodes[0].disconnects.is_empty(),
        "nothing in them is bad"
    );
    let passes = net.nodes[0].view.full_range_reads.get() - before;
    assert!(
        passes <= 2,
        "{passes} passes over every author for 400 batches"
    );
}
