//! Honest peers: joining, catching up, converging, resuming, relaying, repairing.

use super::super::OplogView;
use super::super::io::{Input, SyncEvent};
use super::super::limits::{BATCH_BUNDLES, FIRST_BATCH_BUNDLES, MAX_IN_FLIGHT_BATCHES};
use super::super::message::Message;
use super::super::testing::Net;
use super::{members, pid, seed, state, stranger, ws};
use crate::bundle::{Bundle, BundleKind};
use crate::draft::{AuthorTip, Draft};
use crate::hlc::Hlc;
use crate::path::FieldPath;
use crate::testing::{chain, chain_with, key, test_workspace};
use crate::value::Value;

#[test]
fn empty_join_reports_peer_and_up_to_date_without_data() {
    let mut net = members(2);
    net.connect(0, 1);
    net.drive_bounded(100);
    for (i, other) in [(0, 1), (1, 0)] {
        let n = &net.nodes[i];
        let peer = net.nodes[other].id;
        assert!(n.events.contains(&SyncEvent::PeerJoined {
            peer,
            workspace: ws()
        }));
        assert!(n.events.contains(&SyncEvent::UpToDate {
            peer,
            workspace: ws()
        }));
        assert_eq!(n.committed, 0);
    }
}

#[test]
fn catch_up_copies_exactly_the_missing_bundles() {
    let mut net = members(2);
    let (_, bundles) = chain(1, 1000);
    seed(&mut net.nodes[0].view, &bundles);
    seed(&mut net.nodes[1].view, &bundles[..300]);
    net.connect(0, 1);
    net.drive_bounded(1_000);
    assert_eq!(
        net.nodes[1].view.ranges(&ws()),
        net.nodes[0].view.ranges(&ws())
    );
    assert_eq!(net.nodes[0].engine.stats().bundles_sent, 700);
    assert_eq!(net.nodes[1].engine.stats().bundles_sent, 0);
    assert_eq!(state(&net.nodes[1].view), state(&net.nodes[0].view));
    let peer = net.nodes[0].id;
    assert!(net.nodes[1].events.contains(&SyncEvent::UpToDate {
        peer,
        workspace: ws()
    }));
}

/// One bundle by `seed` setting the same contact name as everyone else.
fn rival_edit(seed: u8, prev: &crate::bundle::Bundle) -> crate::bundle::Bundle {
    let mut d = Draft::new(ws(), BundleKind::UserEdit, "rename");
    let path: FieldPath = "contacts.person/shared/name".parse().unwrap();
    d.set(path, Value::from(format!("name by {seed}")), vec![]);
    d.sign(
        &key(seed),
        &AuthorTip::after(prev),
        Hlc {
            wall_ms: 9_000,
            counter: 0,
        },
    )
    .unwrap()
}

#[test]
fn concurrent_edits_converge_on_every_node() {
    let mut net = members(3);
    for i in 0..3u8 {
        let (_, mut bundles) = chain_with(i + 1, 40 + u64::from(i) * 30, &format!("n{i}"));
        let last = bundles.last().unwrap().clone();
        bundles.push(rival_edit(i + 1, &last));
        seed(&mut net.nodes[usize::from(i)].view, &bundles);
    }
    net.connect(0, 1);
    net.connect(1, 2);
    net.connect(0, 2);
    net.drive_bounded(5_000);
    let want = net.nodes[0].view.ranges(&ws()).unwrap();
    assert_eq!(want.len(), 3);
    let s0 = state(&net.nodes[0].view);
    let conflict = &s0["contacts.person/shared/name"];
    assert_eq!(
        conflict.len(),
        3,
        "three concurrent heads kept as a conflict"
    );
    for n in &net.nodes {
        assert_eq!(n.view.ranges(&ws()).unwrap(), want);
        assert_eq!(state(&n.view), s0);
    }
}

#[test]
fn interrupted_sync_resumes_from_committed_ranges() {
    let total = 2_000u64;
    let mut net = members(2);
    let (_, bundles) = chain(1, total);
    seed(&mut net.nodes[0].view, &bundles);
    net.connect(0, 1);
    while net.nodes[1].committed < 700 {
        assert!(net.step());
    }
    let before = net.nodes[1].committed;
    net.cut(0, 1);
    net.drive_bounded(100);
    assert_eq!(net.nodes[1].view.bundles.len() as u64, before);
    // Sent and lost with the link (a batch built before the sender saw the
    // cut counts too).
    let lost = net.nodes[0].engine.stats().bundles_sent - before;
    net.connect(0, 1);
    net.drive_bounded(10_000);
    assert_eq!(
        net.nodes[1].view.ranges(&ws()),
        net.nodes[0].view.ranges(&ws())
    );
    let resent = net.nodes[0].engine.stats().bundles_sent - total;
    // Exactly the batches sent but not committed at the cut come again.
    assert_eq!(resent, lost);
    assert!(
        resent <= (MAX_IN_FLIGHT_BATCHES * BATCH_BUNDLES) as u64,
        "re-sent {resent} bundles"
    );
    assert_eq!(state(&net.nodes[1].view), state(&net.nodes[0].view));
}

#[test]
fn each_batch_of_a_window_leaves_before_the_next_is_built() {
    let mut net = members(2);
    let (_, bundles) = chain(1, 2_000);
    seed(&mut net.nodes[0].view, &bundles);
    net.connect(0, 1);
    // The step that builds the first batch hands it to the driver alone,
    // with a Continue for the rest of the window. Into an empty window it
    // is small, so the receiver starts on it while the rest is built.
    while net.nodes[0].engine.stats().bundles_sent == 0 {
        assert!(net.step());
    }
    let first = FIRST_BATCH_BUNDLES as u64;
    assert_eq!(net.nodes[0].engine.stats().bundles_sent, first);
    // The next one is full-size.
    while net.nodes[0].engine.stats().bundles_sent == first {
        assert!(net.step());
    }
    assert_eq!(
        net.nodes[0].engine.stats().bundles_sent,
        first + BATCH_BUNDLES as u64
    );
    net.drive_bounded(10_000);
    assert_eq!(net.nodes[0].engine.stats().bundles_sent, 2_000);
    assert_eq!(
        net.nodes[1].view.ranges(&ws()),
        net.nodes[0].view.ranges(&ws())
    );
    assert_eq!(state(&net.nodes[1].view), state(&net.nodes[0].view));
}

#[test]
fn chain_topology_relays_history_and_live_edits() {
    let mut net = members(3);
    let (_, bundles) = chain(1, 300);
    seed(&mut net.nodes[0].view, &bundles[..299]);
    net.connect(0, 1);
    net.connect(1, 2);
    net.drive_bounded(5_000);
    assert_eq!(net.nodes[2].view.bundles.len(), 299);
    // A live edit on node 0 reaches node 2 through node 1.
    seed(&mut net.nodes[0].view, &bundles[299..]);
    let author = key(1).actor_id();
    net.input(
        0,
        Input::LocalBundleCommitted {
            workspace: ws(),
            author,
            seq: 300,
        },
    );
    net.drive_bounded(1_000);
    assert_eq!(
        net.nodes[2].view.ranges(&ws()),
        net.nodes[0].view.ranges(&ws())
    );
    assert_eq!(state(&net.nodes[2].view), state(&net.nodes[0].view));
}

#[test]
fn non_member_learns_nothing() {
    let mut net = Net::new(vec![
        (pid(100), vec![test_workspace()]),
        (pid(101), vec![stranger()]),
        (
            pid(102),
            vec![stranger(), crate::workspace::WorkspaceSecret([8; 32])],
        ),
    ]);
    let (_, bundles) = chain(1, 50);
    seed(&mut net.nodes[0].view, &bundles);
    net.connect(0, 1);
    net.connect(0, 2);
    net.drive_bounded(200);
    let secret_bytes: Vec<[u8; 32]> = vec![
        ws().0,
        test_workspace().0,
        key(1).actor_id().0,
        bundles[0].hash().0,
    ];
    let mut shapes = Vec::new();
    for n in &net.nodes[1..] {
        assert_eq!(n.committed, 0);
        assert!(
            !n.events
                .iter()
                .any(|e| matches!(e, SyncEvent::PeerJoined { .. }))
        );
        let mut shape = Vec::new();
        for (_, f) in &n.frames_in {
            for s in &secret_bytes {
                assert!(!f.windows(32).any(|w| w == s), "frame leaks member data");
            }
            match Message::from_frame(f).unwrap() {
                Message::Hello { .. } => shape.push("hello".to_string()),
                Message::Proofs { proofs } => shape.push(format!("proofs {}", proofs.len())),
                Message::Ranges { workspaces } => {
                    assert!(workspaces.is_empty());
                    shape.push("ranges 0".into());
                }
                other => panic!("non-member got {other:?}"),
            }
        }
        shapes.push(shape);
    }
    // Both outsiders saw the same shapes, whatever they hold themselves.
    assert_eq!(shapes[0], shapes[1]);
}

#[test]
fn a_bad_copy_from_one_peer_is_replaced_from_another() {
    // Node order by id decides which peer is asked first; make the liar first.
    let (mut net, [liar, honest, victim]) = three_by_id();
    let (_, bundles) = chain(1, 40);
    for &i in &[liar, honest, victim] {
        seed(&mut net.nodes[i].view, &bundles);
    }
    let author = key(1).actor_id();
    let slot = (ws(), author, 7);
    // The liar's store returns altered bytes under the right index hash.
    let entry = net.nodes[liar].view.bundles.get_mut(&slot).unwrap();
    let n = entry.0.len();
    entry.0[n - 3] ^= 1;
    // The victim's own copy went bad: its store quarantined it and asks for repair.
    net.nodes[victim].view.bundles.remove(&slot);
    net.connect(victim, liar);
    net.connect(victim, honest);
    net.drive_bounded(10_000);
    assert_eq!(net.nodes[victim].view.bundles[&slot].1, bundles[6].hash());
    let got =
        crate::bundle::Bundle::decode(net.nodes[victim].view.bundles[&slot].0.clone()).unwrap();
    assert_eq!(got.hash(), bundles[6].hash());
    let liar_id = net.nodes[liar].id;
    assert!(
        net.nodes[victim]
            .quarantined
            .iter()
            .any(|(p, _)| *p == liar_id)
    );
    assert!(
        net.nodes[victim]
            .events
            .iter()
            .any(|e| matches!(e, SyncEvent::PeerBlamed { peer, .. } if *peer == liar_id))
    );
}

#[test]
fn repair_request_skips_a_lying_peer() {
    let mut net = members(3);
    let (_, bundles) = chain(1, 10);
    let mut ids: Vec<usize> = (0..3).collect();
    ids.sort_by_key(|&i| net.nodes[i].id);
    let (liar, honest, victim) = (ids[0], ids[1], ids[2]);
    for &i in &[liar, honest, victim] {
        seed(&mut net.nodes[i].view, &bundles);
    }
    let author = key(1).actor_id();
    let slot = (ws(), author, 3);
    for &i in &[liar, victim] {
        let entry = net.nodes[i].view.bundles.get_mut(&slot).unwrap();
        let n = entry.0.len();
        entry.0[n - 2] ^= 1;
    }
    net.connect(victim, liar);
    net.connect(victim, honest);
    net.drive_bounded(1_000);
    net.input(
        victim,
        Input::RepairWanted {
            workspace: ws(),
            author,
            seq: 3,
            hash: bundles[2].hash(),
        },
    );
    net.drive_bounded(1_000);
    let v = &net.nodes[victim];
    assert_eq!(v.view.bundles[&slot].0, bundles[2].bytes());
    let liar_id = net.nodes[liar].id;
    assert!(v.quarantined.iter().any(|(p, _)| *p == liar_id));
    assert!(
        !v.events
            .iter()
            .any(|e| matches!(e, SyncEvent::RepairFailed { .. }))
    );
}

#[test]
fn repair_with_no_good_copy_fails_visibly() {
    let mut net = members(2);
    let (_, bundles) = chain(1, 3);
    seed(&mut net.nodes[1].view, &bundles[..1]);
    net.connect(0, 1);
    net.drive_bounded(100);
    let author = key(1).actor_id();
    net.input(
        0,
        Input::RepairWanted {
            workspace: ws(),
            author,
            seq: 3,
            hash: bundles[2].hash(),
        },
    );
    net.drive_bounded(100);
    assert!(net.nodes[0].events.contains(&SyncEvent::RepairFailed {
        workspace: ws(),
        author,
        seq: 3
    }));
}

#[test]
fn keepalive_pings_and_silent_peers_are_dropped() {
    let mut net = members(2);
    net.connect(0, 1);
    net.drive_bounded(100);
    let frames = net.nodes[1].frames_in.len();
    net.advance_to_next_timeout();
    net.drive_bounded(100);
    assert!(net.nodes[1].frames_in.len() > frames, "a ping was sent");
    assert!(net.nodes[0].disconnects.is_empty());
    // A one-sided peer: node 0 hears nothing back and gives up.
    let mut lone = members(2);
    lone.input(0, Input::PeerUp { peer: pid(101) });
    lone.drive_bounded(10);
    for _ in 0..5 {
        lone.advance_to_next_timeout();
        lone.drive_bounded(10);
    }
    assert_eq!(lone.nodes[0].disconnects.len(), 1);
}

#[test]
fn relayed_copies_without_interior_signatures_still_verify() {
    // Node 1 stores only every 100th bundle and the last signed (as a relay
    // does); node 2 starts mid-run, so the first batch (51..=306) must extend
    // its run to the signed 350.
    let mut net = members(3);
    let (_, bundles) = chain(1, 350);
    let stored: Vec<_> = bundles
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if i % 100 == 99 || i == 349 {
                b.clone()
            } else {
                b.without_signature()
            }
        })
        .collect();
    seed(&mut net.nodes[1].view, &stored);
    seed(&mut net.nodes[2].view, &bundles[..50]);
    net.connect(1, 2);
    net.drive_bounded(2_000);
    assert!(net.nodes[2].quarantined.is_empty());
    assert_eq!(net.nodes[2].view.bundles.len(), 350);
    assert_eq!(
        net.nodes[1].engine.stats().bundles_sent,
        300,
        "no bundle sent twice"
    );
    assert_eq!(state(&net.nodes[2].view), state(&net.nodes[1].view));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
    /// Any interleaving of connects, cuts and partial progress ends, once
    /// everyone is connected, with identical stores on all nodes.
    #[test]
    fn any_schedule_of_cuts_converges(
        ops in proptest::collection::vec((0u8..3, 0usize..3, 0usize..3, 1u16..40), 1..30),
    ) {
        let mut net = members(3);
        for i in 0..3u8 {
            let (_, bundles) = chain_with(i + 1, 30 + u64::from(i) * 20, &format!("n{i}"));
            seed(&mut net.nodes[usize::from(i)].view, &bundles);
        }
        for (op, a, b, n) in ops {
            match op {
                0 => net.connect(a, b),
                1 => net.cut(a, b),
                _ => {
                    for _ in 0..n {
                        net.step();
                    }
                }
            }
        }
        net.connect(0, 1);
        net.connect(1, 2);
        net.connect(0, 2);
        net.drive_bounded(20_000);
        let want = net.nodes[0].view.ranges(&ws()).unwrap();
        proptest::prop_assert_eq!(want.values().map(|r| r.count()).sum::<u64>(), 30 + 50 + 70);
        for n in &net.nodes {
            proptest::prop_assert_eq!(&n.view.ranges(&ws()).unwrap(), &want);
            proptest::prop_assert!(n.quarantined.is_empty());
        }
    }
}

/// `n` bundles of `n` authors (keys from `tag` and the index), one field
/// each.
fn one_bundle_per_author(n: u64, tag: u8) -> Vec<crate::bundle::Bundle> {
    (0..n)
        .map(|i| {
            let mut secret = [tag; 32];
            secret[..8].copy_from_slice(&i.to_le_bytes());
            let k = crate::crypto::ActorKey::from_secret_bytes(secret);
            let mut d = Draft::new(ws(), BundleKind::UserEdit, "hello");
            let path = FieldPath::new("contacts.person", &format!("p{i}"), "name").unwrap();
            d.set(path, Value::Text("x".into()), vec![]);
            let hlc = Hlc {
                wall_ms: 1_000,
                counter: 0,
            };
            d.sign(&k, &AuthorTip::default(), hlc).unwrap()
        })
        .collect()
}

#[test]
fn a_workspace_with_more_authors_than_one_message_carries_syncs_whole() {
    use super::super::limits::MAX_AUTHORS;
    let mut net = members(2);
    let n = MAX_AUTHORS + 20;
    let bundles = one_bundle_per_author(n as u64, 7);
    seed(&mut net.nodes[0].view, &bundles);
    net.connect(0, 1);
    net.drive_bounded(100_000);
    assert_eq!(net.nodes[1].view.ranges(&ws()).unwrap().len(), n);
    assert_eq!(state(&net.nodes[1].view), state(&net.nodes[0].view));
    for node in &net.nodes {
        assert!(
            !node
                .events
                .iter()
                .any(|e| matches!(e, SyncEvent::PeerBlamed { .. })),
            "nobody is blamed"
        );
    }
}

#[test]
fn a_member_announcing_authors_one_at_a_time_is_not_answered_with_a_pass_over_all() {
    let mut net = members(2);
    net.connect(0, 1);
    net.drive_bounded(10_000);
    let n = 1_000u64;
    let bundles = one_bundle_per_author(n, 9);
    seed(&mut net.nodes[1].view, &bundles);
    let before = net.nodes[0].view.full_range_reads.get();
    for b in &bundles {
        let body = b.body();
        let announce = Message::Announce {
            workspace: ws(),
            author: body.author,
            ranges: crate::ranges::SeqRangeSet::from_ranges([(body.seq, body.seq)]),
        };
        net.inject(1, 0, announce.to_frame());
    }
    net.drive_bounded(100_000);
    assert_eq!(
        net.nodes[0].view.ranges(&ws()).unwrap().len(),
        n as usize,
        "every announced author was asked for and received"
    );
    assert_eq!(state(&net.nodes[0].view), state(&net.nodes[1].view));
    let passes = net.nodes[0].view.full_range_reads.get() - before;
    assert!(
        passes <= 2,
        "{passes} passes over every author's ranges for {n} announcements"
    );
}

#[test]
fn a_batch_the_store_refuses_is_asked_of_another_member_at_once() {
    // Node order by id decides which peer is asked first; that one's
    // batches are the ones the victim's store refuses.
    let (mut net, [first, second, victim]) = three_by_id();
    let (_, bundles) = chain(1, 40);
    seed(&mut net.nodes[first].view, &bundles);
    seed(&mut net.nodes[second].view, &bundles);
    net.nodes[victim].rejects_batches_of = Some(net.nodes[first].id);
    net.connect(victim, first);
    net.connect(victim, second);
    // No time passes: nothing waits for a timer to ask again.
    net.drive_bounded(10_000);
    assert_eq!(
        net.nodes[victim].view.bundles.len(),
        bundles.len(),
        "what the first member's batches carried came from the second"
    );
    assert!(state(&net.nodes[victim].view) == state(&net.nodes[second].view));
    assert!(net.nodes[victim].disconnects.is_empty());
}

#[test]
fn a_bad_copy_among_good_ones_is_asked_of_another_member_at_once() {
    bad_copy_among_good_ones(|bad| bad[5] ^= 1); // inside the signature
}

#[test]
fn a_copy_that_does_not_decode_is_asked_of_another_member_at_once() {
    // Not a bundle at all (a byte too many): its author is read from the
    // slot its bytes claim.
    bad_copy_among_good_ones(|bad| {
        bad.push(0);
        assert!(
            Bundle::decode(bad.clone()).is_err(),
            "the copy does not decode"
        );
    });
}

/// The first member is asked for two authors and serves one batch: good
/// copies of one, and a copy of the other spoiled by `spoil`. With no time
/// passing, the victim keeps the good copies, quarantines the bad one and
/// has the right copy from the second member.
fn bad_copy_among_good_ones(spoil: impl FnOnce(&mut Vec<u8>)) {
    let (_, served) = chain(1, 10);
    let (_, other) = chain(2, 1);
    let first_holds = [served.as_slice(), other.as_slice()];
    let (mut net, [first, _, victim]) = waiting_on_the_first(&first_holds, &[&other]);
    let mut bad = other[0].bytes().to_vec();
    spoil(&mut bad);
    let data = super::super::message::encode_batch(
        served
            .iter()
            .map(|b| b.bytes())
            .chain(std::iter::once(bad.as_slice())),
    );
    let batch = Message::Batch {
        workspace: ws(),
        batch_id: 0,
        data,
    };
    net.inject(first, victim, batch.to_frame());
    // No time passes: nothing waits for a timer to ask again.
    net.drive_bounded(10_000);
    let held = |author: u8| {
        let author = key(author).actor_id();
        net.nodes[victim]
            .view
            .bundles
            .keys()
            .filter(|k| k.1 == author)
            .count()
    };
    assert_eq!(held(1), served.len(), "the good copies were kept");
    let slot = (ws(), key(2).actor_id(), 1);
    assert_eq!(
        net.nodes[victim].view.bundles.get(&slot).map(|b| b.1),
        Some(other[0].hash()),
        "the bad copy was replaced from the second member"
    );
    assert_eq!(net.nodes[victim].quarantined.len(), 1);
}

#[test]
fn a_batch_that_does_not_decode_is_asked_of_another_member_at_once() {
    let (_, served) = chain(1, 10);
    let (mut net, [first, _, victim]) = waiting_on_the_first(&[&served], &[&served]);
    // A batch whose items cannot be read at all: which wants it answered
    // cannot be told.
    let batch = Message::Batch {
        workspace: ws(),
        batch_id: 0,
        data: b"\x01not a batch of bundles".to_vec(),
    };
    net.inject(first, victim, batch.to_frame());
    // No time passes: nothing waits for WANT_TIMEOUT to ask again.
    net.drive_bounded(10_000);
    let author = key(1).actor_id();
    for b in &served {
        let slot = (ws(), author, b.body().seq);
        assert_eq!(
            net.nodes[victim].view.bundles.get(&slot).map(|b| b.1),
            Some(b.hash()),
            "seq {} came from the second member",
            b.body().seq
        );
    }
}

/// Three members, as [`three_by_id`]: the first and second hold the given
/// chains, the first withholds its batches, and the victim has connected
/// to both and asked the first (it is asked first) for everything.
fn waiting_on_the_first(
    first_holds: &[&[Bundle]],
    second_holds: &[&[Bundle]],
) -> (Net, [usize; 3]) {
    let (mut net, [first, second, victim]) = three_by_id();
    for chain in first_holds {
        seed(&mut net.nodes[first].view, chain);
    }
    for chain in second_holds {
        seed(&mut net.nodes[second].view, chain);
    }
    net.nodes[first].withholds_batches = true;
    net.connect(victim, first);
    net.connect(victim, second);
    net.drive_bounded(10_000);
    assert!(
        net.nodes[victim].view.bundles.is_empty(),
        "every author waits on the first member"
    );
    (net, [first, second, victim])
}

/// Three members, as indexes in the order they are asked (by node id).
fn three_by_id() -> (Net, [usize; 3]) {
    let net = members(3);
    let mut ids = [0, 1, 2];
    ids.sort_by_key(|&i| net.nodes[i].id);
    (net, ids)
}
