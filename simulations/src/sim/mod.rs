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
use troupe_protocol::sync::{Input, Millis, PeerId};
use troupe_protocol::workspace::WorkspaceSecret;

use crate::checkers::Slot;
use crate::checkers::liveness::divergence;
use crate::checkers::safety::Safety;
use crate::error::SimError;
use crate::network::Network;
use crate::node::SimNode;
use crate::options::Options;
use crate::rng::SimRng;
use crate::trace::Trace;
use crate::world::World;

mod driver;
mod faults;

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
    Join {
        node: usize,
        ws: usize,
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
    /// Of those, bytes of frames carrying bundles (batches, repair replies).
    pub data_bytes_in: u64,
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
    /// Each workspace's secret (for joins during the run).
    secret_bytes: Vec<[u8; 32]>,
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
                .filter(|w| !opts.late_joins.iter().any(|(n, lw, _)| *n == i && lw == *w))
                .map(|w| secrets[*w].clone())
                .collect();
            nodes.push(SimNode::new(i, key, mine, rng.fork())?);
        }
        let ids = nodes.iter().map(|n| (n.id, n.index)).collect();
        let mut sim = Sim {
            workspaces: secrets.iter().map(WorkspaceSecret::workspace_id).collect(),
            secret_bytes: secrets.iter().map(|s| s.0).collect(),
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
        for &(node, ws, t) in &o.late_joins {
            sim.world.at(t, Ev::Join { node, ws });
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
            Ev::Join { node, ws } => self.join(node, ws)?,
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
}
