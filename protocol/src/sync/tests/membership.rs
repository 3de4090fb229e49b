//! Workspaces joined or left while peers are connected.

use super::super::OplogView;
use super::super::io::{Input, SyncEvent};
use super::super::limits::PROOF_PAD;
use super::super::message::Message;
use super::super::testing::Net;
use super::{pid, seed, state, stranger, ws};
use crate::testing::{chain, test_workspace};
use crate::workspace::WorkspaceSecret;

fn blamed(net: &Net) -> Vec<String> {
    net.nodes
        .iter()
        .flat_map(|n| n.events.iter())
        .filter_map(|e| match e {
            SyncEvent::PeerBlamed { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect()
}

fn joined(net: &Net, node: usize) -> bool {
    let peer = net.nodes[1 - node].id;
    net.nodes[node].events.contains(&SyncEvent::PeerJoined {
        peer,
        workspace: ws(),
    })
}

#[test]
fn a_workspace_joined_while_connected_syncs_without_reconnecting() {
    let mut net = Net::new(vec![
        (pid(100), vec![test_workspace(), stranger()]),
        (pid(101), vec![stranger()]),
    ]);
    let (_, bundles) = chain(1, 600);
    seed(&mut net.nodes[0].view, &bundles);
    net.connect(0, 1);
    net.drive_bounded(1_000);
    assert!(
        net.nodes[1]
            .view
            .ranges(&ws())
            .unwrap_or_default()
            .is_empty()
    );
    assert!(!joined(&net, 0) && !joined(&net, 1));

    net.input(1, Input::WorkspaceAdded(test_workspace()));
    net.drive_bounded(10_000);

    assert!(joined(&net, 0) && joined(&net, 1));
    assert_eq!(
        net.nodes[1].view.ranges(&ws()),
        net.nodes[0].view.ranges(&ws())
    );
    assert_eq!(state(&net.nodes[1].view), state(&net.nodes[0].view));
    assert!(net.nodes.iter().all(|n| n.disconnects.is_empty()));
    assert_eq!(blamed(&net), Vec::<String>::new());
}

#[test]
fn a_workspace_added_during_the_handshake_is_proved_after_it() {
    let mut net = Net::new(vec![
        (pid(100), vec![test_workspace(), stranger()]),
        (pid(101), vec![stranger()]),
    ]);
    let (_, bundles) = chain(1, 50);
    seed(&mut net.nodes[0].view, &bundles);
    net.connect(0, 1);
    // Both peer-ups, then node 1 answers the hello (proofs without the
    // workspace) before it learns of the join.
    for _ in 0..3 {
        net.step();
    }
    net.input(1, Input::WorkspaceAdded(test_workspace()));
    net.drive_bounded(10_000);
    assert_eq!(
        net.nodes[1].view.ranges(&ws()),
        net.nodes[0].view.ranges(&ws())
    );
    assert_eq!(blamed(&net), Vec::<String>::new());
}

#[test]
fn late_proofs_tell_a_non_member_nothing() {
    let other = WorkspaceSecret([9; 32]);
    let mut net = Net::new(vec![(pid(100), vec![stranger()]), (pid(101), vec![other])]);
    let (_, bundles) = chain(1, 20);
    seed(&mut net.nodes[1].view, &bundles);
    net.connect(0, 1);
    net.drive_bounded(1_000);
    let before = net.nodes[0].frames_in.len();
    // Node 1 joins the show; node 0 is not in it.
    net.input(1, Input::WorkspaceAdded(test_workspace()));
    net.drive_bounded(1_000);

    let id = ws();
    let shapes: Vec<String> = net.nodes[0].frames_in[before..]
        .iter()
        .map(|(_, f)| {
            assert!(
                !f.windows(32).any(|w| w == id.0.as_slice()),
                "a frame to a non-member names the workspace"
            );
            match Message::from_frame(f).expect("frames decode") {
                Message::LateProofs { proofs, answer } => format!("late {} {answer}", proofs.len()),
                m => format!("{m:?}"),
            }
        })
        .collect();
    assert_eq!(shapes, vec![format!("late {PROOF_PAD} false")]);
    // The answer is padding only, the same size a member's would be.
    let answers: Vec<String> = net.nodes[1]
        .frames_in
        .iter()
        .rev()
        .take(1)
        .map(
            |(_, f)| match Message::from_frame(f).expect("frames decode") {
                Message::LateProofs { proofs, answer } => format!("late {} {answer}", proofs.len()),
                m => format!("{m:?}"),
            },
        )
        .collect();
    assert_eq!(answers, vec![format!("late {PROOF_PAD} true")]);
    assert!(net.nodes[0].view.ranges(&id).unwrap_or_default().is_empty());
    assert!(
        !net.nodes.iter().any(|n| n.events.iter().any(|e| matches!(e,
        SyncEvent::PeerJoined { workspace, .. } if *workspace == id)))
    );
}

#[test]
fn leaving_mid_transfer_withdraws_without_blame_and_others_finish_it() {
    let mut net = Net::new(vec![
        (pid(100), vec![test_workspace(), stranger()]),
        (pid(101), vec![test_workspace(), stranger()]),
        (pid(102), vec![test_workspace()]),
    ]);
    let (_, bundles) = chain(1, 3_000);
    seed(&mut net.nodes[0].view, &bundles);
    seed(&mut net.nodes[2].view, &bundles);
    net.connect(0, 1);
    // Let part of the transfer happen, then node 0 leaves the workspace.
    while net.nodes[1].committed < 512 {
        assert!(net.step());
    }
    let got = net.nodes[1].committed;
    assert!(got < 3_000, "the transfer must still be running ({got})");
    net.input(0, Input::WorkspaceRemoved(ws()));
    net.drive_bounded(10_000);
    assert_eq!(blamed(&net), Vec::<String>::new());
    assert!(net.nodes.iter().all(|n| n.disconnects.is_empty()));
    let after_leave = net.nodes[1].committed;
    assert!(
        after_leave < 3_000,
        "node 0 stopped serving ({after_leave})"
    );
    // Node 2 connects and finishes what node 0 no longer serves.
    net.connect(1, 2);
    net.drive_bounded(20_000);
    assert_eq!(
        net.nodes[1].view.ranges(&ws()),
        net.nodes[2].view.ranges(&ws())
    );
    assert!(net.nodes[1].committed > after_leave);
    assert_eq!(blamed(&net), Vec::<String>::new());
}

#[test]
fn a_peer_flooding_late_proofs_is_answered_only_up_to_its_allowance() {
    use super::super::limits::{LATE_PROOFS_BURST, LATE_PROOFS_EVERY, MAX_BAD_ITEMS};
    // Connected, nothing in common: each late proof costs node 0 a keyed
    // hash per workspace it holds, and an answer.
    let other = WorkspaceSecret([9; 32]);
    let mut net = Net::new(vec![(pid(100), vec![stranger()]), (pid(101), vec![other])]);
    net.connect(0, 1);
    net.drive_bounded(1_000);
    let answers = |net: &Net| {
        net.nodes[1]
            .frames_in
            .iter()
            .filter(|(_, f)| {
                matches!(
                    Message::from_frame(f),
                    Ok(Message::LateProofs { answer: true, .. })
                )
            })
            .count()
    };
    let opening = Message::LateProofs {
        proofs: vec![[5; 32]; PROOF_PAD],
        answer: false,
    }
    .to_frame();
    for _ in 0..LATE_PROOFS_BURST {
        net.inject(1, 0, opening.clone());
    }
    net.drive_bounded(1_000);
    assert_eq!(
        answers(&net),
        LATE_PROOFS_BURST as usize,
        "the burst is answered"
    );
    assert_eq!(blamed(&net), Vec::<String>::new());
    // Some time later, one more is allowed.
    net.now += LATE_PROOFS_EVERY;
    net.inject(1, 0, opening.clone());
    net.drive_bounded(1_000);
    assert_eq!(answers(&net), LATE_PROOFS_BURST as usize + 1);
    // A flood right after is blamed, not answered, until the peer is cut off.
    for _ in 0..2 * MAX_BAD_ITEMS {
        net.inject(1, 0, opening.clone());
    }
    net.drive_bounded(1_000);
    assert_eq!(answers(&net), LATE_PROOFS_BURST as usize + 1);
    assert_eq!(blamed(&net).len(), MAX_BAD_ITEMS as usize);
    assert_eq!(net.nodes[0].disconnects.len(), 1);
}
