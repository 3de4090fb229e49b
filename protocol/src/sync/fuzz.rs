//! Arbitrary input sequences for one [`Engine`], with model checks: what a
//! hostile or broken peer (and a confused driver) can throw at it.
//!
//! The bytes are read as a script: each step picks an input (peer up/down,
//! an arbitrary frame, a well-formed message with arbitrary fields, time
//! passing, acknowledgements, local commits, blob and repair wants). After
//! every input the outputs are drained and checked:
//! - the engine never panics and `poll_output` drains;
//! - it never sends a frame to a peer that is not up;
//! - every frame it sends decodes as a valid message;
//! - it never asks the driver to commit a bundle of a workspace it is not a
//!   member of, or a bundle that does not verify as a run.
//!
//! Used by the `engine_inputs` cargo-fuzz target and by a property test.

use std::collections::BTreeSet;

use super::io::{Input, Output, PeerId};
use super::message::Message;
use super::testing::MemView;
use super::{Engine, EngineConfig};
use crate::ids::{ActorId, BlobHash, BundleHash};
use crate::ranges::SeqRangeSet;
use crate::testing::{chain, test_workspace};

struct Script<'a> {
    data: &'a [u8],
}

impl Script<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(*b)
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.data.len());
        let (a, b) = self.data.split_at(n);
        self.data = b;
        a
    }
    fn u64(&mut self) -> u64 {
        self.take(8)
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
    }
}

/// Runs the script in `data` against a fresh engine; panics if a model
/// check fails.
pub fn run(data: &[u8]) {
    let ws = test_workspace().workspace_id();
    let mut engine = Engine::new(EngineConfig {
        local_peer: [1; 32],
        workspaces: vec![test_workspace()],
        rng_seed: 7,
    });
    let mut view = MemView::default();
    // Some history to serve and to chain against.
    let (_, bundles) = chain(3, 5);
    view.commit(&bundles);
    let author = bundles[0].body().author;
    let peers = [PeerId([2; 32]), PeerId([3; 32]), PeerId([4; 32])];
    let mut up: BTreeSet<PeerId> = BTreeSet::new();
    let mut pending_commits: Vec<Input> = Vec::new();
    let mut pending_blobs: Vec<Input> = Vec::new();
    let mut now = 0u64;
    let mut codec = super::message::BatchCodec::default();
    let mut s = Script { data };
    let mut steps = 0;
    while let Some(op) = s.byte() {
        steps += 1;
        if steps > 2_000 {
            break;
        }
        let peer = peers[usize::from(s.byte().unwrap_or(0)) % peers.len()];
        let input = match op % 12 {
            0 => {
                up.insert(peer);
                Input::PeerUp { peer }
            }
            1 => {
                up.remove(&peer);
                Input::PeerDown { peer }
            }
            2 => {
                let n = usize::from(s.byte().unwrap_or(0)) * 4;
                Input::Frame {
                    peer,
                    bytes: s.take(n).to_vec(),
                }
            }
            3 => {
                // Well-formed messages with arbitrary fields reach deeper states.
                let seq = s.u64() % 16;
                let msg = match s.byte().unwrap_or(0) % 8 {
                    0 => Message::Hello {
                        nonce: [s.byte().unwrap_or(0); 32],
                    },
                    1 => Message::Want {
                        workspace: ws,
                        author,
                        ranges: SeqRangeSet::from_ranges([(seq.max(1), seq.max(1) + 3)]),
                    },
                    2 => Message::Announce {
                        workspace: ws,
                        author: ActorId([s.byte().unwrap_or(0); 32]),
                        ranges: SeqRangeSet::from_ranges([(seq.max(1), seq.max(1))]),
                    },
                    3 => Message::BatchAck {
                        workspace: ws,
                        batch_id: seq,
                    },
                    4 => Message::RepairWant {
                        workspace: ws,
                        author,
                        seq: seq.max(1),
                        hash: BundleHash([s.byte().unwrap_or(0); 32]),
                    },
                    5 => Message::BlobWant {
                        workspace: ws,
                        hash: BlobHash([s.byte().unwrap_or(0); 32]),
                        offset: seq,
                        len: 100,
                    },
                    6 => Message::BlobChunk {
                        workspace: ws,
                        hash: BlobHash([s.byte().unwrap_or(0); 32]),
                        offset: seq,
                        size: 1_000,
                        bytes: s.take(64).to_vec(),
                    },
                    _ => Message::Ranges { workspaces: vec![] },
                };
                Input::Frame {
                    peer,
                    bytes: msg.to_frame(),
                }
            }
            4 => {
                now += s.u64() % 40_000;
                Input::Timeout
            }
            5 | 6 if !pending_commits.is_empty() => pending_commits.remove(0),
            7 if !pending_blobs.is_empty() => pending_blobs.remove(0),
            8 => Input::LocalBundleCommitted {
                workspace: ws,
                author,
                seq: 1 + s.u64() % 5,
            },
            9 => Input::BlobWanted {
                workspace: ws,
                hash: BlobHash([s.byte().unwrap_or(0); 32]),
                size: s.u64() % 10_000_000,
            },
            10 => Input::RepairWanted {
                workspace: ws,
                author,
                seq: 1 + s.u64() % 5,
                hash: bundles[0].hash(),
            },
            11 => {
                // A frame decoded ahead by the driver, as the node feeds them.
                let n = usize::from(s.byte().unwrap_or(0)) * 4;
                let frame = super::PreparedFrame::prepare(s.take(n), &mut codec);
                Input::Prepared {
                    peer,
                    frame: Box::new(frame),
                }
            }
            _ => Input::Timeout,
        };
        engine.handle_input(now, input, &view);
        while let Some(out) = engine.poll_output() {
            match out {
                Output::SendFrame { peer, bytes } => {
                    assert!(up.contains(&peer), "frame to a peer that is not up");
                    assert!(
                        Message::from_frame(&bytes).is_ok(),
                        "the engine sent an invalid frame"
                    );
                }
                Output::CommitBatch {
                    peer,
                    workspace,
                    batch_id,
                    bundles: got,
                    wire,
                } => {
                    assert_eq!(workspace, ws, "commit for a workspace not joined");
                    if let Some(w) = wire {
                        assert_eq!(
                            w.bundles().as_ref(),
                            Ok(&got),
                            "the wire copy does not give back the committed bundles"
                        );
                    }
                    let results = crate::verify::verify_bundles(&ws, &got, |a, seq| {
                        use super::oplog_view::OplogView;
                        view.bundle_hash(&ws, a, seq).ok().flatten()
                    });
                    assert!(
                        results.iter().all(Result::is_ok),
                        "asked to commit bundles that do not verify"
                    );
                    pending_commits.push(Input::BatchCommitted {
                        peer,
                        workspace,
                        batch_id,
                    });
                }
                Output::WriteBlobChunk { hash, .. } => {
                    pending_blobs.push(Input::BlobChunkRejected {
                        hash,
                        reason: "fuzz".into(),
                    });
                }
                Output::Disconnect { peer, .. } => {
                    up.remove(&peer);
                    pending_commits.push(Input::PeerDown { peer });
                }
                Output::Continue => pending_commits.push(Input::Continue),
                Output::Quarantine { .. } | Output::Event(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        /// Any script: no panic, and every model check holds.
        #[test]
        fn arbitrary_input_sequences_keep_the_model(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2_000)) {
            super::run(&data);
        }
    }
}
