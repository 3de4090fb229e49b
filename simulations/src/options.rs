//! One seed expands into every option of a run; the options are printed at
//! the start so a failure can be read without re-running it.

use std::fmt;

use troupe_protocol::sync::Millis;

use crate::rng::SimRng;

/// How big a run is: the CI sweep uses many small runs, plus one large one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// 2 to 6 nodes, 1 to 3 workspaces, short phases: thousands per minute.
    Small,
    /// A fixed node count (e.g. 100) with a sparse connection graph.
    Large(usize),
}

/// Everything that shapes a run. All of it comes from the seed.
#[derive(Debug, Clone)]
pub struct Options {
    /// The seed everything was drawn from.
    pub seed: u64,
    /// Scale chosen by the caller.
    pub scale: Scale,
    /// Node count.
    pub nodes: usize,
    /// Workspace count.
    pub workspaces: usize,
    /// Per node, the indices of the workspaces it belongs to by the end of
    /// the chaos phase (may be empty: a stranger).
    pub membership: Vec<Vec<usize>>,
    /// (node, workspace, time): memberships that begin during the run, on a
    /// running node with peers already connected (the rest hold from the start).
    pub late_joins: Vec<(usize, usize, Millis)>,
    /// Links the crews use (node pairs, a < b); full mesh for small runs.
    pub links: Vec<(usize, usize)>,
    /// How long faults are injected (simulated ms).
    pub chaos_ms: Millis,
    /// After healing, convergence must happen within this (simulated ms).
    pub liveness_bound_ms: Millis,
    /// One-way base delay.
    pub delay_ms: Millis,
    /// Extra random delay per frame, up to this.
    pub jitter_ms: Millis,
    /// Per frame: the stream breaks (loss on a reliable stream), ppm.
    pub loss_ppm: u32,
    /// Per frame: a retransmission (duplicate at the packet level, hidden by the
    /// stream) adds a round trip of delay, ppm.
    pub dup_ppm: u32,
    /// Per frame: packets reordered under the stream (held until the gap fills), ppm.
    pub reorder_ppm: u32,
    /// Per frame: one byte flipped in flight, ppm.
    pub corrupt_ppm: u32,
    /// Mean time between a link going away or coming back.
    pub flap_mean_ms: Millis,
    /// Mean time between partitions (0: none).
    pub partition_mean_ms: Millis,
    /// Mean time between node crashes (0: none).
    pub crash_mean_ms: Millis,
    /// Mean time between disk bit rot on some node (0: none).
    pub rot_mean_ms: Millis,
    /// Mean time between edits on each member node.
    pub edit_mean_ms: Millis,
    /// Most ops in one job bundle.
    pub job_ops_max: u64,
    /// At healing, every open connection is closed and re-opened (crews
    /// arrive at the next venue), so each pair starts a fresh session. Off
    /// (`--no-bounce`) checks that live sessions converge on their own.
    pub bounce_on_heal: bool,
}

impl Options {
    /// Expands `seed` into options of the given scale.
    pub fn from_seed(seed: u64, scale: Scale) -> Options {
        let mut rng = SimRng::new(seed ^ 0x0b7_0b7);
        let (nodes, workspaces) = match scale {
            Scale::Small => (rng.range(2, 6) as usize, rng.range(1, 3) as usize),
            Scale::Large(n) => (n, 4),
        };
        let mut membership = vec![Vec::new(); nodes];
        for (i, m) in membership.iter_mut().enumerate() {
            for w in 0..workspaces {
                // Everyone joins workspace (i mod W); others by chance: overlapping members.
                if w == i % workspaces || rng.chance(300_000) {
                    m.push(w);
                }
            }
            // Some nodes are strangers on the same network.
            if nodes > 2 && rng.chance(150_000) {
                m.clear();
            }
        }
        // Every workspace has at least two members.
        for w in 0..workspaces {
            let mut count = membership.iter().filter(|m| m.contains(&w)).count();
            let mut i = 0;
            while count < 2 && i < nodes {
                if !membership[i].contains(&w) {
                    membership[i].push(w);
                    membership[i].sort_unstable();
                    count += 1;
                }
                i += 1;
            }
        }
        let links = match scale {
            Scale::Small => {
                let mut l = Vec::new();
                for a in 0..nodes {
                    for b in a + 1..nodes {
                        l.push((a, b));
                    }
                }
                l
            }
            Scale::Large(_) => {
                // Per workspace, a ring over its members plus one random chord
                // per member (data flows only between members), and a few
                // links to strangers and across shows (same LAN).
                let mut l = std::collections::BTreeSet::new();
                for w in 0..workspaces {
                    let m: Vec<usize> =
                        (0..nodes).filter(|i| membership[*i].contains(&w)).collect();
                    for k in 0..m.len() {
                        let (a, b) = (m[k], m[(k + 1) % m.len()]);
                        if a != b {
                            l.insert((a.min(b), a.max(b)));
                        }
                        let c = m[rng.below(m.len() as u64) as usize];
                        if c != a {
                            l.insert((a.min(c), a.max(c)));
                        }
                    }
                }
                for a in 0..nodes {
                    let c = rng.below(nodes as u64) as usize;
                    if c != a {
                        l.insert((a.min(c), a.max(c)));
                    }
                }
                l.into_iter().collect()
            }
        };
        let large = matches!(scale, Scale::Large(_));
        let chaos_ms = if large {
            60_000
        } else {
            rng.range(10_000, 40_000)
        };
        // From a stream of their own, so the other options of a seed stay as they were.
        let mut late_rng = SimRng::new(seed.wrapping_mul(31).wrapping_add(4));
        let mut late_joins = Vec::new();
        if !large && late_rng.chance(300_000) {
            for (i, m) in membership.iter().enumerate() {
                for &w in m {
                    if late_rng.chance(400_000) {
                        late_joins.push((i, w, late_rng.range(500, chaos_ms * 2 / 3)));
                    }
                }
            }
        }
        // Small runs draw which fault kinds are on; the large run has all of them.
        let faulty = |rng: &mut SimRng, ppm: u32, v: Millis| {
            if rng.chance(ppm) || large { v } else { 0 }
        };
        Options {
            seed,
            scale,
            nodes,
            workspaces,
            membership,
            links,
            late_joins,
            chaos_ms,
            liveness_bound_ms: if large { 300_000 } else { 120_000 },
            delay_ms: rng.range(1, 50),
            jitter_ms: rng.range(0, 100),
            loss_ppm: rng.range(0, 3_000) as u32,
            dup_ppm: rng.range(0, 20_000) as u32,
            reorder_ppm: rng.range(0, 20_000) as u32,
            corrupt_ppm: rng.range(0, 2_000) as u32,
            flap_mean_ms: rng.range(2_000, 20_000) * if large { 10 } else { 1 },
            partition_mean_ms: faulty(&mut rng, 600_000, rng_copy(seed, 1, 3_000, 20_000)),
            crash_mean_ms: faulty(&mut rng, 600_000, rng_copy(seed, 2, 3_000, 20_000)),
            rot_mean_ms: faulty(&mut rng, 500_000, rng_copy(seed, 3, 5_000, 30_000)),
            edit_mean_ms: if large {
                rng.range(5_000, 15_000)
            } else {
                rng.range(300, 3_000)
            },
            job_ops_max: if large { 50 } else { rng.range(10, 300) },
            bounce_on_heal: true,
        }
    }
}

/// A value in `lo..=hi` from a stream of its own, so adding one option does
/// not shift every other.
fn rng_copy(seed: u64, lane: u64, lo: u64, hi: u64) -> u64 {
    SimRng::new(seed.wrapping_mul(31).wrapping_add(lane)).range(lo, hi)
}

impl fmt::Display for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "seed            {:#018x} ({:?})", self.seed, self.scale)?;
        writeln!(
            f,
            "nodes           {} ({} workspaces, {} links)",
            self.nodes,
            self.workspaces,
            self.links.len()
        )?;
        if self.nodes <= 12 {
            writeln!(f, "membership      {:?}", self.membership)?;
        }
        if !self.late_joins.is_empty() {
            writeln!(
                f,
                "late joins      {:?} (node, workspace, ms)",
                self.late_joins
            )?;
        }
        writeln!(
            f,
            "phases          chaos {} ms, liveness bound {} ms",
            self.chaos_ms, self.liveness_bound_ms
        )?;
        writeln!(
            f,
            "network         delay {} ms + jitter {} ms; per million frames: break {}, dup {}, reorder {}, corrupt {}",
            self.delay_ms,
            self.jitter_ms,
            self.loss_ppm,
            self.dup_ppm,
            self.reorder_ppm,
            self.corrupt_ppm
        )?;
        writeln!(
            f,
            "faults (mean)   link flap {} ms, partition {} ms, crash {} ms, bit rot {} ms (0 = off)",
            self.flap_mean_ms, self.partition_mean_ms, self.crash_mean_ms, self.rot_mean_ms
        )?;
        write!(
            f,
            "workload        edit every {} ms per member, jobs up to {} ops; bounce connections on heal: {}",
            self.edit_mean_ms, self.job_ops_max, self.bounce_on_heal
        )
    }
}
