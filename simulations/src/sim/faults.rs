//! Fault injection of the driver: crashes (now or at a later sync, i.e.
//! mid-commit), restarts from the durable image with the start-up scrub, and
//! bit rot at rest limited to copies another node holds clean.

use troupe_protocol::sync::Input;
use troupe_protocol::sync::oplog_view::OplogView;

use super::{Ev, Sim};
use crate::checkers::Slot;
use crate::error::SimError;

impl Sim {
    pub(super) fn crash(&mut self, i: usize) {
        if self.log {
            eprintln!("{:>8} n{i} CRASH", self.world.now());
        }
        self.trace.record(self.world.now(), "crash", i, &[]);
        self.out.crashes += 1;
        self.nodes[i].crash();
        for j in self.net.peers_of(i) {
            self.break_conn(i, j);
        }
        let t = if self.chaos {
            self.rng.range(500, 5_000)
        } else {
            100
        };
        self.world.after(t, Ev::Restart { node: i });
    }

    pub(super) fn restart(&mut self, i: usize) -> Result<(), SimError> {
        if self.nodes[i].is_up() {
            return Ok(());
        }
        self.trace.record(self.world.now(), "restart", i, &[]);
        self.nodes[i].start()?;
        let inflight = self.inflight[i].take();
        let run = self.nodes[i].running()?;
        self.safety.resolve_unanswered(i, &run.store)?;
        self.safety
            .after_restart(i, &run.store, inflight.as_deref())?;
        // Start-up scrub: rotted copies go to quarantine and are asked of peers.
        let repairs = run
            .store
            .scrub()
            .map_err(|e| SimError::Storage(format!("node {i}: scrub: {e}")))?;
        for r in repairs {
            let Some(hash) = r.expected else {
                return Err(SimError::Safety(format!(
                    "node {i}: scrub found a broken chain at {:?}/{} with no expected hash",
                    r.author, r.seq
                )));
            };
            self.out.quarantined += 1;
            self.queue_input(
                i,
                Input::RepairWanted {
                    workspace: r.workspace,
                    author: r.author,
                    seq: r.seq,
                    hash,
                },
            );
        }
        for (a, b) in self.wanted.clone() {
            if a == i || b == i {
                let t = self.rng.range(10, 500);
                self.world.after(t, Ev::Dial { a, b });
            }
        }
        self.rearm(i);
        Ok(())
    }

    /// Flips a byte of one stored bundle on one node, only when another node
    /// holds a clean copy (a clean copy always exists), then power-cycles
    /// the node so its start-up scrub finds it.
    pub(super) fn rot(&mut self) -> Result<(), SimError> {
        let i = self.rng.below(self.opts.nodes as u64) as usize;
        if !self.nodes[i].is_up()
            || self.nodes[i]
                .run
                .as_ref()
                .is_some_and(|r| r.backend.armed())
        {
            return Ok(());
        }
        let candidates: Vec<(Slot, troupe_protocol::BundleHash)> = self.safety.acked[i]
            .iter()
            .filter(|(slot, _)| !self.safety.rotted[i].contains(slot))
            .filter(|(slot, _)| {
                (0..self.opts.nodes).any(|j| {
                    j != i
                        && self.safety.acked[j].contains_key(slot)
                        && !self.safety.rotted[j].contains(slot)
                })
            })
            .map(|(s, h)| (*s, *h))
            .collect();
        if candidates.is_empty() {
            return Ok(());
        }
        let (slot, _) = candidates[self.rng.below(candidates.len() as u64) as usize];
        let run = self.nodes[i].running()?;
        let stored = run
            .store
            .view()
            .map_err(|e| SimError::Storage(e.to_string()))?
            .bundle(&slot.0, &slot.1, slot.2);
        let Ok(Some(bytes)) = stored else {
            return Ok(());
        };
        let at = bytes.len() - 1 - self.rng.below(bytes.len().min(64) as u64) as usize;
        let mask = 1 << self.rng.below(8);
        // Rot at rest: the node stops cleanly, the disk changes, the node starts again
        // (a crash on top of rot is a damaged file: salvage's job, not modelled here).
        self.trace.record(self.world.now(), "stop", i, &[]);
        let Some(disk) = self.nodes[i].stop() else {
            return Ok(());
        };
        let hits = disk.rot(&bytes, at, mask);
        self.nodes[i].set_disk(&disk);
        for j in self.net.peers_of(i) {
            self.break_conn(i, j);
        }
        self.world
            .after(self.rng.range(100, 1_000), Ev::Restart { node: i });
        if hits == 0 {
            return Ok(());
        }
        self.out.rots += 1;
        self.rotted_ever.insert(i);
        self.safety.rotted[i].insert(slot);
        self.trace
            .record(self.world.now(), "rot", i, &slot.2.to_le_bytes());
        Ok(())
    }
}
