//! The driver: one run of one seed. It owns the world (clock and queue), the
//! network, the nodes and the checkers, and turns events into engine inputs,
//! engine outputs into store transactions and frames, in the three-step loop
//! every shell uses (feed input, drain outputs to `None`, re-arm the timer).
//!
//! A run has two phases. In the chaos phase the workload runs and faults are
//! injected (link flaps, partitions, stream breaks, corruption in flight,
//! crashes at any point including mid-commit, bit rot at rest). Then faults
//! stop, partitions heal, crashed nodes restart, every link comes back, and
//! the liveness checker must see convergence within the bound.

use std::collections::{BTreeMap, BTreeSet};

use troupe_protocol::WorkspaceId;
use troupe_protocol::crypto::ActorKey;
use troupe_protocol::sync::oplog_view::OplogView;
use troupe_protocol::sync::{Input, Millis, Output, PeerId, SyncEvent};
use troupe_protocol::workspace::WorkspaceSecret;

use crate::checkers::Slot;
use crate::checkers::liveness::divergence;
use crate::checkers::safety::Safety;
use crate::error::SimError;
use crate::network::{Network, Sent};
use crate::node::SimNode;
use crate::options::Options;
use crate::rng::SimRng;
use crate::trace::Trace;
use crate::workload;
use crate::world::World;

/// Wall-clock epoch added to simulated time for bundle timestamps.
const EPOCH_MS: u64 = 1_760_000_000_000;

enum Ev {
    Frame {
        from: usize,
        to: usize,
        epoch: u64,
        bytes: Vec<u8>,
    },
    Input {
        node: usize,
        life: u64,
        input: Input,
    },
    Timer {
        node: usize,
        life: u64,
        at: Millis,
    },
    Edit {
        node: usize,
    },
    Dial {
        a: usize,
        b: usize,
    },
    Flap,
    Partition,
    Unpartition,
    Crash,
    Restart {
        node: usize,
    },
    Rot,
    EndChaos,
    Check,
}

/// Figures from one run.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Rolling hash of every event: equal for two runs of one seed.
    pub trace_hash: String,
    /// Events processed.
    pub events: u64,
    /// Simulated time at the end.
    pub sim_ms: Millis,
    /// Simulated time from healing to convergence.
    pub converge_ms: Millis,
    /// Nodes × simulated time, in node-milliseconds.
    pub node_ms: u128,
    /// Bundles authored.
    pub authored: u64,
    /// Mean authored bundle size in bytes.
    pub mean_bundle_bytes: f64,
    /// Bundles committed from peers, over all nodes.
    pub delivered: u64,
    /// Frame bytes delivered, over all nodes.
    pub bytes_in: u64,
    /// Crashes injected.
    pub crashes: u64,
    /// Bundles rotted at rest.
    pub rots: u64,
    /// Frames corrupted in flight.
    pub corrupted: u64,
    /// Streams broken.
    pub breaks: u64,
    /// Items quarantined (bad frames and rotted copies).
    pub quarantined: u64,
    /// Peers blamed by engines.
    pub blamed: u64,
}

/// One run in progress.
pub struct Sim {
    opts: Options,
    rng: SimRng,
    world: World<Ev>,
    net: Network,
    nodes: Vec<SimNode>,
    ids: BTreeMap<PeerId, usize>,
    workspaces: Vec<WorkspaceId>,
    wanted: BTreeSet<(usize, usize)>,
    safety: Safety,
    trace: Trace,
    chaos: bool,
    inflight: Vec<Option<Vec<Slot>>>,
    healed_at: Millis,
    out: Outcome,
    log: bool,
    rotted_ever: BTreeSet<usize>,
}

fn describe(input: &Input) -> String {
    match input {
        Input::Frame { peer, bytes } => {
            let m = troupe_protocol::sync::message::Message::from_frame(bytes)
                .map(|m| {
                    let mut s = format!("{m:?}");
                    s.truncate(160);
                    s
                })
                .unwrap_or_else(|e| format!("undecodable: {e}"));
            format!("frame from {peer:?}: {m}")
        }
        other => {
            let mut s = format!("{other:?}");
            s.truncate(160);
            s
        }
    }
}

impl Sim {
    /// Builds the world for `opts`: nodes, stores, links, first events.
    ///
    /// # Errors
    /// [`SimError::Storage`] when a store cannot be created.
    pub fn new(opts: Options) -> Result<Sim, SimError> {
        let mut rng = SimRng::new(opts.seed);
        let secrets: Vec<WorkspaceSecret> = (0..opts.workspaces)
            .map(|_| WorkspaceSecret(rng.bytes32()))
            .collect();
        let mut nodes = Vec::new();
        for i in 0..opts.nodes {
            let key = ActorKey::from_secret_bytes(rng.bytes32());
            let mine = opts.membership[i]
                .iter()
                .map(|w| secrets[*w].clone())
                .collect();
            nodes.push(SimNode::new(i, key, mine, rng.fork())?);
        }
        let ids = nodes.iter().map(|n| (n.id, n.index)).collect();
        let mut sim = Sim {
            workspaces: secrets.iter().map(WorkspaceSecret::workspace_id).collect(),
            net: Network::new(opts.nodes),
            safety: Safety::new(opts.nodes),
            inflight: vec![None; opts.nodes],
            wanted: opts.links.iter().copied().collect(),
            world: World::default(),
            trace: Trace::default(),
            chaos: true,
            healed_at: 0,
            out: Outcome::default(),
            log: std::env::var_os("TROUPE_SIM_LOG").is_some(),
            rotted_ever: BTreeSet::new(),
            ids,
            nodes,
            rng,
            opts,
        };
        for &(a, b) in &sim.opts.links.clone() {
            let t = sim.rng.below(1_000);
            sim.world.at(t, Ev::Dial { a, b });
        }
        for i in 0..sim.opts.nodes {
            if !sim.opts.membership[i].is_empty() {
                let t = sim.rng.wait(sim.opts.edit_mean_ms);
                sim.world.at(t, Ev::Edit { node: i });
            }
        }
        let o = sim.opts.clone();
        let t = sim.rng.wait(o.flap_mean_ms);
        sim.world.at(t, Ev::Flap);
        if o.partition_mean_ms > 0 {
            let t = sim.rng.wait(o.partition_mean_ms);
            sim.world.at(t, Ev::Partition);
        }
        if o.crash_mean_ms > 0 {
            let t = sim.rng.wait(o.crash_mean_ms);
            sim.world.at(t, Ev::Crash);
        }
        if o.rot_mean_ms > 0 {
            let t = sim.rng.wait(o.rot_mean_ms);
            sim.world.at(t, Ev::Rot);
        }
        sim.world.at(o.chaos_ms, Ev::EndChaos);
        Ok(sim)
    }

    /// Runs to convergence or failure.
    ///
    /// # Errors
    /// The first safety violation, a liveness timeout, or an unexplained storage error.
    pub fn run(mut self) -> Result<Outcome, SimError> {
        let deadline = self.opts.chaos_ms + self.opts.liveness_bound_ms;
        loop {
            let Some(ev) = self.world.pop() else {
                return Err(SimError::Liveness("the event queue ran dry".into()));
            };
            if self.world.now() > deadline {
                let why = divergence(&self.nodes, &self.workspaces, &self.safety.authored)
                    .unwrap_or_else(|| "not checked".into());
                return Err(SimError::Liveness(format!(
                    "no convergence {} ms after healing: {why}",
                    self.opts.liveness_bound_ms
                )));
            }
            if self.step(ev)? {
                break;
            }
        }
        for n in &self.nodes {
            let Some(run) = &n.run else { continue };
            self.safety
                .final_store(n.index, &run.store, &self.workspaces, |w| n.member(w))?;
        }
        let now = self.world.now();
        self.out.trace_hash = self.trace.hash();
        self.out.events = self.trace.events();
        self.out.sim_ms = now;
        self.out.converge_ms = now - self.healed_at;
        self.out.node_ms = self.opts.nodes as u128 * u128::from(now);
        self.out.authored = self.safety.authored.len() as u64;
        self.out.mean_bundle_bytes = if self.out.authored == 0 {
            0.0
        } else {
            self.safety.authored_bytes as f64 / self.out.authored as f64
        };
        self.out.bytes_in = self.net.stats.bytes_in.iter().sum();
        self.out.corrupted = self.net.stats.corrupted;
        self.out.breaks = self.net.stats.breaks;
        Ok(self.out)
    }

    /// One event; true when the run is over (converged).
    fn step(&mut self, ev: Ev) -> Result<bool, SimError> {
        let now = self.world.now();
        match ev {
            Ev::Frame {
                from,
                to,
                epoch,
                bytes,
            } => {
                if let Some(bytes) = self.net.arrive(from, to, epoch, bytes) {
                    self.deliver(from, to, bytes)?;
                }
            }
            Ev::Input { node, life, input } => {
                if self.nodes[node].life == life && self.nodes[node].is_up() {
                    self.feed(node, input)?;
                }
            }
            Ev::Timer { node, life, at } => {
                let n = &mut self.nodes[node];
                if n.life == life
                    && let Some(run) = n.run.as_mut()
                {
                    if run.armed == Some(at) {
                        run.armed = None;
                    }
                    if run.engine.poll_timeout().is_some_and(|t| t <= now) {
                        self.trace.record(now, "timeout", node, &[]);
                        self.feed(node, Input::Timeout)?;
                    } else {
                        self.rearm(node);
                    }
                }
            }
            Ev::Edit { node } => {
                if self.chaos {
                    if self.nodes[node].is_up() {
                        self.edit(node)?;
                    }
                    let t = self.rng.wait(self.opts.edit_mean_ms);
                    self.world.after(t, Ev::Edit { node });
                }
            }
            Ev::Dial { a, b } => self.dial(a, b),
            Ev::Flap => {
                if self.chaos && !self.opts.links.is_empty() {
                    let (a, b) =
                        self.opts.links[self.rng.below(self.opts.links.len() as u64) as usize];
                    if self.wanted.remove(&(a, b)) {
                        self.trace
                            .record(now, "link-down", a, &(b as u64).to_le_bytes());
                        self.break_conn(a, b);
                    } else {
                        self.wanted.insert((a, b));
                        self.trace
                            .record(now, "link-up", a, &(b as u64).to_le_bytes());
                        self.dial(a, b);
                    }
                    let t = self.rng.wait(self.opts.flap_mean_ms);
                    self.world.after(t, Ev::Flap);
                }
            }
            Ev::Partition => {
                if self.chaos {
                    let asym = self.rng.chance(500_000);
                    let side: Vec<bool> = (0..self.opts.nodes)
                        .map(|_| self.rng.chance(500_000))
                        .collect();
                    for a in 0..self.opts.nodes {
                        for b in 0..self.opts.nodes {
                            if side[a] && !side[b] {
                                self.net.block(a, b);
                                if !asym {
                                    self.net.block(b, a);
                                }
                            }
                        }
                    }
                    self.trace.record(now, "partition", usize::from(asym), &[]);
                    let t = self.rng.wait(self.opts.partition_mean_ms);
                    self.world.after(t, Ev::Unpartition);
                }
            }
            Ev::Unpartition => {
                self.heal_network()?;
                if self.chaos {
                    let t = self.rng.wait(self.opts.partition_mean_ms);
                    self.world.after(t, Ev::Partition);
                }
            }
            Ev::Crash => {
                if self.chaos {
                    let i = self.rng.below(self.opts.nodes as u64) as usize;
                    // A crash on top of bit rot is a damaged file (salvage's job, file-based).
                    let rotted_ever = self.rotted_ever.contains(&i);
                    if let Some(run) = self.nodes[i].run.as_ref().filter(|_| !rotted_ever) {
                        if self.rng.chance(500_000) {
                            self.crash(i);
                        } else {
                            // Power fails at one of the next syncs: mid-commit.
                            let k = self.rng.range(1, 4);
                            run.backend.crash_at_sync(k);
                            self.trace.record(now, "arm-crash", i, &k.to_le_bytes());
                        }
                    }
                    let t = self.rng.wait(self.opts.crash_mean_ms);
                    self.world.after(t, Ev::Crash);
                }
            }
            Ev::Restart { node } => self.restart(node)?,
            Ev::Rot => {
                if self.chaos {
                    self.rot()?;
                    let t = self.rng.wait(self.opts.rot_mean_ms);
                    self.world.after(t, Ev::Rot);
                }
            }
            Ev::EndChaos => {
                self.chaos = false;
                self.healed_at = now;
                self.trace.record(now, "heal", 0, &[]);
                self.heal_network()?;
                for i in 0..self.opts.nodes {
                    match &self.nodes[i].run {
                        Some(run) => run.backend.disarm(),
                        None => self.world.after(0, Ev::Restart { node: i }),
                    }
                }
                self.wanted = self.opts.links.iter().copied().collect();
                if self.opts.bounce_on_heal {
                    for (a, b) in self.net.open_pairs() {
                        self.break_conn(a, b);
                    }
                }
                for (a, b) in self.wanted.clone() {
                    self.dial(a, b);
                }
                self.world.after(1_000, Ev::Check);
            }
            Ev::Check => {
                if divergence(&self.nodes, &self.workspaces, &self.safety.authored).is_none() {
                    return Ok(true);
                }
                self.world.after(1_000, Ev::Check);
            }
        }
        Ok(false)
    }

    fn deliver(&mut self, from: usize, to: usize, bytes: Vec<u8>) -> Result<(), SimError> {
        self.trace.record(self.world.now(), "frame", to, &bytes);
        let peer = self.nodes[from].id;
        self.feed(to, Input::Frame { peer, bytes })
    }

    fn heal_network(&mut self) -> Result<(), SimError> {
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

    fn queue_input(&mut self, node: usize, input: Input) {
        let life = self.nodes[node].life;
        self.world.after(0, Ev::Input { node, life, input });
    }

    fn dial(&mut self, a: usize, b: usize) {
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

    fn break_conn(&mut self, a: usize, b: usize) {
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

    fn crash(&mut self, i: usize) {
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

    fn restart(&mut self, i: usize) -> Result<(), SimError> {
        if self.nodes[i].is_up() {
            return Ok(());
        }
        self.trace.record(self.world.now(), "restart", i, &[]);
        self.nodes[i].start()?;
        let inflight = self.inflight[i].take();
        let run = self.nodes[i].running()?;
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
    fn rot(&mut self) -> Result<(), SimError> {
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

    fn edit(&mut self, i: usize) -> Result<(), SimError> {
        let now = self.world.now();
        let mine = &self.opts.membership[i];
        let ws = self.workspaces[mine[self.rng.below(mine.len() as u64) as usize]];
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
            Err(e) => self.store_failed(i, format!("commit_local: {e}")),
        }
    }

    /// A store call failed: a simulated crash if the disk lost power, else a failure.
    fn store_failed(&mut self, i: usize, what: String) -> Result<(), SimError> {
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

    fn rearm(&mut self, i: usize) {
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
    fn feed(&mut self, i: usize, input: Input) -> Result<(), SimError> {
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
                Output::CommitBatch {
                    peer,
                    workspace,
                    batch_id,
                    bundles,
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
