//! The driver half of the run: frames in, engine outputs performed (frames
//! into the network, batches into one store transaction each, quarantine,
//! disconnects), timers re-armed from `poll_timeout`, connections opened and
//! broken, local edits committed and announced.

use troupe_protocol::WorkspaceId;
use troupe_protocol::sync::message::Message;
use troupe_protocol::sync::oplog_view::OplogView;
use troupe_protocol::sync::{Input, Output, SyncEvent};
use troupe_protocol::workspace::WorkspaceSecret;

use super::{EPOCH_MS, Ev, Sim, describe};
use crate::checkers::Slot;
use crate::error::SimError;
use crate::network::Sent;
use crate::workload;

impl Sim {
    pub(super) fn deliver(
        &mut self,
        from: usize,
        to: usize,
        bytes: Vec<u8>,
    ) -> Result<(), SimError> {
        if matches!(
            Message::from_frame(&bytes),
            Ok(Message::Batch { .. } | Message::RepairReply { .. })
        ) {
            self.out.data_bytes_in += bytes.len() as u64;
        }
        self.trace.record(self.world.now(), "frame", to, &bytes);
        let peer = self.nodes[from].id;
        self.feed(to, Input::Frame { peer, bytes })
    }

    pub(super) fn heal_network(&mut self) -> Result<(), SimError> {
        self.trace.record(self.world.now(), "unpartition", 0, &[]);
        for (from, to, bytes) in self.net.heal() {
            self.net.count_delivery(to, bytes.len());
            self.deliver(from, to, bytes)?;
        }
        for (a, b) in self.wanted.clone() {
            if self.net.epoch(a, b).is_none() {
                let t = self.rng.range(10, 500);
                self.world.after(t, Ev::Dial { a, b });
            }
        }
        Ok(())
    }

    pub(super) fn queue_input(&mut self, node: usize, input: Input) {
        let life = self.nodes[node].life;
        self.world.after(0, Ev::Input { node, life, input });
    }

    pub(super) fn dial(&mut self, a: usize, b: usize) {
        if !self.wanted.contains(&(a.min(b), a.max(b)))
            || !self.nodes[a].is_up()
            || !self.nodes[b].is_up()
            || self.net.epoch(a, b).is_some()
        {
            return;
        }
        if self.net.open(a, b) {
            if self.log {
                eprintln!("{:>8} connect n{a} n{b}", self.world.now());
            }
            self.trace
                .record(self.world.now(), "connect", a, &(b as u64).to_le_bytes());
            let (ia, ib) = (self.nodes[a].id, self.nodes[b].id);
            self.queue_input(a, Input::PeerUp { peer: ib });
            self.queue_input(b, Input::PeerUp { peer: ia });
        } else {
            // Blocked by a partition: the dialler retries.
            let t = self.rng.range(1_000, 3_000);
            self.world.after(t, Ev::Dial { a, b });
        }
    }

    pub(super) fn break_conn(&mut self, a: usize, b: usize) {
        if !self.net.close(a, b) {
            return;
        }
        if self.log {
            eprintln!("{:>8} disconnect n{a} n{b}", self.world.now());
        }
        self.trace
            .record(self.world.now(), "disconnect", a, &(b as u64).to_le_bytes());
        let (ia, ib) = (self.nodes[a].id, self.nodes[b].id);
        if self.nodes[a].is_up() {
            self.queue_input(a, Input::PeerDown { peer: ib });
        }
        if self.nodes[b].is_up() {
            self.queue_input(b, Input::PeerDown { peer: ia });
        }
        let t = self.rng.range(200, 3_000);
        self.world.after(t, Ev::Dial { a, b });
    }

    /// Node `i` joins workspace `w` while running (its peers may already be
    /// connected); a node that is down joins once it is back.
    pub(super) fn join(&mut self, i: usize, w: usize) -> Result<(), SimError> {
        if !self.nodes[i].is_up() {
            self.world.after(200, Ev::Join { node: i, ws: w });
            return Ok(());
        }
        let secret = WorkspaceSecret(self.secret_bytes[w]);
        let now = self.world.now();
        self.trace.record(now, "join", i, &(w as u64).to_le_bytes());
        if self.log {
            eprintln!("{now:>8} n{i} joins workspace {w}");
        }
        let run = self.nodes[i].running()?;
        if let Err(e) = run
            .store
            .add_workspace(&troupe_protocol::workspace::WorkspaceInfo::new(
                secret.clone(),
                format!("show {w}"),
                troupe_protocol::workspace::WorkspaceKind::Show,
            ))
        {
            // Power lost mid-join: nothing was written; join again once back up.
            self.store_failed(i, format!("join: {e}"))?;
            self.world.after(200, Ev::Join { node: i, ws: w });
            return Ok(());
        }
        self.nodes[i].secrets.push(secret.clone());
        self.queue_input(i, Input::WorkspaceAdded(secret));
        Ok(())
    }

    pub(super) fn edit(&mut self, i: usize) -> Result<(), SimError> {
        let now = self.world.now();
        let mine: Vec<WorkspaceId> = self.nodes[i]
            .secrets
            .iter()
            .map(WorkspaceSecret::workspace_id)
            .collect();
        if mine.is_empty() {
            return Ok(());
        }
        let ws = mine[self.rng.below(mine.len() as u64) as usize];
        let me = self.nodes[i].actor();
        let key =
            troupe_protocol::crypto::ActorKey::from_secret_bytes(self.nodes[i].key.secret_bytes());
        let run = self.nodes[i].running()?;
        let drafted = workload::draft(&run.store, &ws, &me, &mut self.rng, &self.opts)
            .map_err(|e| SimError::Storage(format!("node {i}: draft: {e}")))?;
        let Some((kind, draft)) = drafted else {
            return Ok(());
        };
        let tip = run
            .store
            .author_tip(&ws, &me)
            .map_err(|e| SimError::Storage(e.to_string()))?;
        let hlc = run.hlc.tick(EPOCH_MS + now);
        let bundle = draft
            .sign(&key, &tip, hlc)
            .map_err(|e| SimError::Storage(format!("node {i}: sign: {e}")))?;
        match run.store.commit_local(&bundle) {
            Ok(_) => {
                if self.log {
                    eprintln!(
                        "{now:>8} n{i} edit {kind:?} {ws:?} seq {}",
                        bundle.body().seq
                    );
                }
                self.trace.record(
                    now,
                    "edit",
                    i,
                    &[&[kind as u8][..], &bundle.hash().0].concat(),
                );
                self.safety.authored(i, &bundle)?;
                let seq = bundle.body().seq;
                self.queue_input(
                    i,
                    Input::LocalBundleCommitted {
                        workspace: ws,
                        author: me,
                        seq,
                    },
                );
                Ok(())
            }
            Err(e) => {
                if self.log {
                    eprintln!(
                        "{now:>8} n{i} edit {kind:?} {ws:?} seq {} unanswered: {e}",
                        bundle.body().seq
                    );
                }
                if run.backend.crashed() {
                    self.safety.unanswered(i, bundle);
                }
                self.store_failed(i, format!("commit_local: {e}"))
            }
        }
    }

    /// A store call failed: a simulated crash if the disk lost power, else a failure.
    pub(super) fn store_failed(&mut self, i: usize, what: String) -> Result<(), SimError> {
        let crashed = self.nodes[i]
            .run
            .as_ref()
            .is_some_and(|r| r.backend.crashed());
        if crashed {
            self.crash(i);
            Ok(())
        } else {
            Err(SimError::Storage(format!("node {i}: {what}")))
        }
    }

    pub(super) fn rearm(&mut self, i: usize) {
        let life = self.nodes[i].life;
        if let Some(run) = self.nodes[i].run.as_mut()
            && let Some(t) = run.engine.poll_timeout()
            && run.armed != Some(t)
        {
            run.armed = Some(t);
            self.world.at(
                t,
                Ev::Timer {
                    node: i,
                    life,
                    at: t,
                },
            );
        }
    }

    /// Feeds one input to node `i` and performs every output.
    pub(super) fn feed(&mut self, i: usize, input: Input) -> Result<(), SimError> {
        let now = self.world.now();
        {
            let Some(run) = self.nodes[i].run.as_mut() else {
                return Ok(());
            };
            let view = match run.store.view() {
                Ok(v) => v,
                Err(e) => return self.store_failed(i, format!("view: {e}")),
            };
            if self.log {
                eprintln!("{now:>8} n{i} <- {}", describe(&input));
            }
            run.engine.handle_input(now, input, &view);
        }
        let mut later = Vec::new();
        while let Some(out) = self.nodes[i]
            .run
            .as_mut()
            .and_then(|r| r.engine.poll_output())
        {
            match out {
                Output::SendFrame { peer, bytes } => {
                    let Some(&j) = self.ids.get(&peer) else {
                        continue;
                    };
                    if self.log {
                        let d = describe(&Input::Frame {
                            peer: self.nodes[j].id,
                            bytes: bytes.clone(),
                        });
                        eprintln!("{now:>8} n{i} -> n{j} {d}");
                    }
                    // Checked as sent: corruption in flight may fake any workspace id.
                    let to = &self.nodes[j];
                    self.safety.frame(j, |w| to.member(w), &bytes)?;
                    let faults = self.chaos;
                    match self
                        .net
                        .send(now, (i, j), bytes, &self.opts, faults, &mut self.rng)
                    {
                        Sent::NoConnection => {}
                        Sent::Broke => self.break_conn(i, j),
                        Sent::Scheduled {
                            at,
                            epoch,
                            bytes,
                            corrupted,
                        } => {
                            if corrupted {
                                self.trace.record(now, "corrupt", i, &bytes);
                            }
                            self.world.at(
                                at,
                                Ev::Frame {
                                    from: i,
                                    to: j,
                                    epoch,
                                    bytes,
                                },
                            );
                        }
                    }
                }
                // The workload asks for no blobs (blob transfer is covered by
                // the engine's own tests); refuse if one ever arrives.
                Output::WriteBlobChunk { hash, .. } => later.push(Input::BlobChunkRejected {
                    hash,
                    reason: "blobs are not simulated".into(),
                }),
                Output::CommitBatch {
                    peer,
                    workspace,
                    batch_id,
                    bundles,
                    ..
                } => {
                    if !self.nodes[i].member(&workspace) {
                        return Err(SimError::Safety(format!(
                            "node {i} (not a member) was asked to commit bundles of {workspace:?}"
                        )));
                    }
                    let run = self.nodes[i].running()?;
                    let slots: Vec<Slot> = {
                        let view = run
                            .store
                            .view()
                            .map_err(|e| SimError::Storage(e.to_string()))?;
                        bundles
                            .iter()
                            .map(|b| (workspace, b.body().author, b.body().seq))
                            .filter(|(w, a, s)| matches!(view.bundle_hash(w, a, *s), Ok(None)))
                            .collect()
                    };
                    self.inflight[i] = Some(slots);
                    let n = bundles.len();
                    match run
                        .store
                        .commit_batch(&workspace, bundles, &format!("{peer:?}"))
                    {
                        Ok(outcome) => {
                            self.inflight[i] = None;
                            if self.log {
                                eprintln!(
                                    "{now:>8} n{i} committed {:?} held {} quarantined {:?}",
                                    outcome
                                        .committed
                                        .iter()
                                        .map(|c| (c.0, c.1))
                                        .collect::<Vec<_>>(),
                                    outcome.already_held,
                                    outcome.quarantined
                                );
                            }
                            self.safety.committed(i, &workspace, &outcome)?;
                            self.out.delivered += outcome.committed.len() as u64;
                            self.out.quarantined += outcome.quarantined.len() as u64;
                            self.trace
                                .record(now, "commit", i, &(n as u64).to_le_bytes());
                            later.push(Input::BatchCommitted {
                                peer,
                                workspace,
                                batch_id,
                            });
                        }
                        Err(e) => return self.store_failed(i, format!("commit_batch: {e}")),
                    }
                }
                Output::Quarantine {
                    peer,
                    workspace,
                    bytes,
                    reason,
                } => {
                    self.out.quarantined += 1;
                    self.trace.record(now, "quarantine", i, &bytes);
                    let run = self.nodes[i].running()?;
                    if let Err(e) =
                        run.store
                            .quarantine_bytes(&workspace, bytes, &reason, &format!("{peer:?}"))
                    {
                        return self.store_failed(i, format!("quarantine: {e}"));
                    }
                }
                Output::Disconnect { peer, .. } => {
                    if let Some(&j) = self.ids.get(&peer) {
                        self.break_conn(i, j);
                    }
                }
                Output::Continue => later.push(Input::Continue),
                Output::Event(e) => {
                    if self.log {
                        eprintln!("{now:>8} n{i} event {e:?}");
                    }
                    if matches!(e, SyncEvent::PeerBlamed { .. }) {
                        self.out.blamed += 1;
                    }
                    self.trace
                        .record(now, "event", i, format!("{e:?}").as_bytes());
                }
            }
        }
        for input in later {
            self.queue_input(i, input);
        }
        self.rearm(i);
        Ok(())
    }
}
