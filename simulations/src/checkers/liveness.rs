//! Liveness, checked once faults stop and the network heals: every member of
//! a workspace holds every bundle authored in it, and all members show the
//! same state (the same heads on every field, so the same values and the same
//! conflicts), within a bound of simulated time.

use std::collections::BTreeMap;

use troupe_protocol::WorkspaceId;
use troupe_protocol::ranges::SeqRangeSet;

use super::Slot;
use crate::node::SimNode;

/// `None` when converged, else what still differs (for the failure message).
pub fn divergence(
    nodes: &[SimNode],
    workspaces: &[WorkspaceId],
    authored: &BTreeMap<Slot, troupe_protocol::BundleHash>,
) -> Option<String> {
    for ws in workspaces {
        let mut want: BTreeMap<troupe_protocol::ActorId, SeqRangeSet> = BTreeMap::new();
        for (w, a, s) in authored.keys() {
            if w == ws {
                want.entry(*a).or_default().insert(*s);
            }
        }
        let members: Vec<&SimNode> = nodes.iter().filter(|n| n.member(ws)).collect();
        for n in &members {
            let Some(run) = &n.run else {
                return Some(format!("node {} is down", n.index));
            };
            let held = match run.store.ranges(ws) {
                Ok(r) => r,
                Err(e) => return Some(format!("node {}: ranges: {e}", n.index)),
            };
            if held != want {
                let missing: u64 = want
                    .iter()
                    .map(|(a, set)| {
                        set.iter()
                            .filter(|s| !held.get(a).is_some_and(|h| h.contains(*s)))
                            .count() as u64
                    })
                    .sum();
                let first = want.iter().find_map(|(a, set)| {
                    set.iter()
                        .find(|s| !held.get(a).is_some_and(|h| h.contains(*s)))
                        .map(|s| (*a, s))
                });
                let holders: Vec<usize> = members
                    .iter()
                    .filter(|m| {
                        first.is_some_and(|(a, s)| {
                            m.run.as_ref().is_some_and(|r| {
                                r.store
                                    .ranges(ws)
                                    .is_ok_and(|h| h.get(&a).is_some_and(|x| x.contains(s)))
                            })
                        })
                    })
                    .map(|m| m.index)
                    .collect();
                return Some(format!(
                    "node {} lacks {missing} of the bundles authored in {ws:?} (first: {first:?}, held by nodes {holders:?})",
                    n.index
                ));
            }
        }
        let mut first: Option<(usize, Vec<_>)> = None;
        for n in &members {
            let run = n.run.as_ref()?;
            let fields = match run.store.fields(ws) {
                Ok(f) => f,
                Err(e) => return Some(format!("node {}: fields: {e}", n.index)),
            };
            match &first {
                None => first = Some((n.index, fields)),
                Some((i, f)) if *f != fields => {
                    return Some(format!(
                        "nodes {i} and {} hold the same bundles of {ws:?} but show different state",
                        n.index
                    ));
                }
                Some(_) => {}
            }
        }
    }
    None
}
