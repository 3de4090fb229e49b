//! What the crews do: concurrent edits to the same and different fields,
//! entity deletes, undo and redo, merge resolutions of conflicts, and jobs
//! that write many ops in one bundle. Each edit reads the node's own store
//! (current heads become `pred`) like the real node does, so concurrent
//! writers on different nodes make real conflicts.
//!
//! Blobs are not in the workload yet: the engine's blob transfer is being
//! written separately.

use troupe_protocol::bundle::BundleKind;
use troupe_protocol::conflict::{Choice, FieldConflict, resolution_ops};
use troupe_protocol::draft::Draft;
use troupe_protocol::undo::plan_undo;
use troupe_protocol::{EntityId, FieldPath, Op, Value, WorkspaceId};
use troupe_storage::Store;

use crate::options::Options;
use crate::rng::SimRng;

/// Entity types the crews edit.
const TYPES: [&str; 3] = ["contacts.person", "schedule.event", "cues.cue"];
/// Entities per type: small, so writers collide.
const ENTITIES: u64 = 4;
/// Fields per entity.
const FIELDS: u64 = 4;

/// Which kind of edit was drafted (for the trace and the figures).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EditKind {
    /// A few field sets.
    Set,
    /// An entity delete.
    Delete,
    /// Undo of one of the node's own bundles.
    Undo,
    /// Redo of one of the node's own undos.
    Redo,
    /// A merge resolution of current conflicts.
    Resolve,
    /// A job writing many fields.
    Job,
}

fn path(rng: &mut SimRng) -> FieldPath {
    let t = TYPES[rng.below(TYPES.len() as u64) as usize];
    let e = rng.below(ENTITIES);
    let f = rng.below(FIELDS);
    FieldPath::new(t, &format!("e{e}"), &format!("f{f}")).expect("valid by construction")
}

fn heads(
    store: &Store,
    ws: &WorkspaceId,
    p: &FieldPath,
) -> Result<Vec<troupe_protocol::OpId>, String> {
    Ok(store
        .field_heads(ws, p)
        .map_err(|e| e.to_string())?
        .iter()
        .map(|h| h.op)
        .collect())
}

/// Drafts one edit for `ws` against the node's current state. `None` when
/// the chosen kind has nothing to do (no conflicts to resolve, nothing to undo).
///
/// # Errors
/// A store read failed (the message says which).
pub fn draft(
    store: &Store,
    ws: &WorkspaceId,
    me: &troupe_protocol::ActorId,
    rng: &mut SimRng,
    opts: &Options,
) -> Result<Option<(EditKind, Draft)>, String> {
    let roll = rng.below(100);
    let kind = match roll {
        0..=54 => EditKind::Set,
        55..=62 => EditKind::Delete,
        63..=72 => EditKind::Undo,
        73..=77 => EditKind::Redo,
        78..=91 => EditKind::Resolve,
        _ => EditKind::Job,
    };
    let d = match kind {
        EditKind::Set => {
            let mut d = Draft::new(*ws, BundleKind::UserEdit, "edit");
            for _ in 0..rng.range(1, 3) {
                let p = path(rng);
                let pred = heads(store, ws, &p)?;
                d.set(p, Value::Int(rng.below(1000) as i64), pred);
            }
            d
        }
        EditKind::Job => {
            let mut d = Draft::new(*ws, BundleKind::JobOutput, "import contacts");
            for i in 0..rng.range(10, opts.job_ops_max.max(10)) {
                let p = FieldPath::new(
                    "contacts.person",
                    &format!("job{}", rng.below(20)),
                    &format!("c{i}"),
                )
                .expect("valid by construction");
                let pred = heads(store, ws, &p)?;
                d.set(p, Value::Text(format!("row {i}").into()), pred);
            }
            d
        }
        EditKind::Delete => {
            let t = TYPES[rng.below(TYPES.len() as u64) as usize];
            let id =
                EntityId::new(format!("e{}", rng.below(ENTITIES))).expect("valid by construction");
            let fields = store.entity_fields(ws, t, &id).map_err(|e| e.to_string())?;
            if fields.is_empty() {
                return Ok(None);
            }
            let mut pred: Vec<_> = fields
                .iter()
                .flat_map(|(_, h)| h.iter().map(|h| h.op))
                .collect();
            pred.sort();
            pred.dedup();
            let mut d = Draft::new(*ws, BundleKind::UserEdit, "delete");
            d.push(Op::DeleteEntity {
                entity_type: t.to_string(),
                entity_id: id,
                pred,
            });
            d
        }
        EditKind::Undo | EditKind::Redo => {
            let tip = store.author_tip(ws, me).map_err(|e| e.to_string())?;
            if tip.last_seq == 0 {
                return Ok(None);
            }
            let seq = tip.last_seq - rng.below(tip.last_seq.min(5));
            let Some(b) = store.bundle(ws, me, seq).map_err(|e| e.to_string())? else {
                return Ok(None);
            };
            let is_undo = matches!(b.body().kind, BundleKind::Undo { .. });
            if (kind == EditKind::Redo) != is_undo {
                return Ok(None);
            }
            let mut state = store.workspace_view(ws).map_err(|e| e.to_string())?;
            let mut lookup = store.workspace_view(ws).map_err(|e| e.to_string())?;
            let plan = plan_undo(&mut state, &mut lookup, &b).map_err(|e| e.to_string())?;
            if plan.ops.is_empty() {
                return Ok(None);
            }
            let k = if is_undo {
                BundleKind::Redo { of: b.hash() }
            } else {
                BundleKind::Undo { of: b.hash() }
            };
            let mut d = Draft::new(*ws, k, "undo");
            for op in plan.ops {
                d.push(op);
            }
            d
        }
        EditKind::Resolve => {
            let conflicts = store.conflicts(ws).map_err(|e| e.to_string())?;
            if conflicts.is_empty() {
                return Ok(None);
            }
            let mut choices = Vec::new();
            for (p, hs) in conflicts.into_iter().take(3) {
                let choice = if rng.chance(500_000) {
                    Choice::Head(hs[rng.below(hs.len() as u64) as usize].op)
                } else {
                    Choice::Value(Value::Text("agreed".into()))
                };
                choices.push((FieldConflict { path: p, heads: hs }, choice));
            }
            let Some(ops) = resolution_ops(&choices) else {
                return Ok(None);
            };
            let mut d = Draft::new(*ws, BundleKind::MergeResolution, "resolve");
            for op in ops {
                d.push(op);
            }
            d
        }
    };
    if d.ops().is_empty() {
        return Ok(None);
    }
    Ok(Some((kind, d)))
}
