//! Undo and redo of whole bundles.
//!
//! Undoing bundle B writes an `undo` bundle that sets each field B touched back
//! to what B replaced. A field someone else changed since B is reported and left
//! alone: undo never overwrites another person's later work. Redo is the undo of
//! the undo.

use crate::bundle::Bundle;
use crate::hlc::Hlc;
use crate::ids::{ActorId, OpId};
use crate::op::Op;
use crate::path::FieldPath;
use crate::register::{Head, StateBackend, winner};
use crate::value::Value;

/// Reads an op by id (from the store or a replica), with its bundle's hlc.
pub trait OpLookup {
    /// The op, or `None` when its bundle is not held.
    fn op(&mut self, id: &OpId) -> Option<(Op, Hlc)>;
}

/// A field undo left alone, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Skipped {
    /// The field.
    pub path: Option<FieldPath>,
    /// Who changed it since (empty when the reason is not a later change).
    pub changed_by: Vec<ActorId>,
    /// In words.
    pub reason: String,
}

/// The ops to write and what was left alone.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UndoPlan {
    /// Ops for the `undo` (or `redo`) bundle; empty when nothing can be undone.
    pub ops: Vec<Op>,
    /// Fields reported, not overwritten.
    pub skipped: Vec<Skipped>,
}

fn previous_value(lookup: &mut impl OpLookup, pred: &[OpId], on: &FieldPath) -> Value {
    // What B replaced: the winner among its preds on this field, as B's writer saw them.
    let heads: Vec<Head> = pred
        .iter()
        .filter_map(|id| {
            let (op, hlc) = lookup.op(id)?;
            let value = match op {
                Op::Set { path, value, .. } if &path == on => Some(value),
                Op::Set { .. } => return None,
                Op::DeleteEntity { .. } => None,
                Op::DeleteAsset { .. } => return None,
            };
            Some(Head {
                op: *id,
                hlc,
                value,
            })
        })
        .collect();
    winner(&heads)
        .and_then(|h| h.value.clone())
        .unwrap_or(Value::Null)
}

/// Plans the undo of `bundle` against current state.
///
/// # Errors
/// Only the backend's.
pub fn plan_undo<B: StateBackend>(
    state: &mut B,
    lookup: &mut impl OpLookup,
    bundle: &Bundle,
) -> Result<UndoPlan, B::Error> {
    let mut plan = UndoPlan::default();
    for (id, op) in bundle.ops_with_ids() {
        match op {
            Op::Set { path, pred, .. } => {
                let heads = state.field_heads(path)?.unwrap_or_default();
                if heads.len() == 1 && heads[0].op == id {
                    let value = previous_value(lookup, pred, path);
                    plan.ops.push(Op::Set {
                        path: path.clone(),
                        value,
                        pred: vec![id],
                    });
                } else {
                    plan.skipped.push(changed_since(path, &heads, id));
                }
            }
            Op::DeleteEntity {
                entity_type,
                entity_id,
                pred,
            } => {
                for f in state.entity_fields(entity_type, entity_id)? {
                    let heads = state.field_heads(&f)?.unwrap_or_default();
                    if heads.len() == 1 && heads[0].op == id {
                        let value = previous_value(lookup, pred, &f);
                        plan.ops.push(Op::Set {
                            path: f,
                            value,
                            pred: vec![id],
                        });
                    } else if heads.iter().any(|h| h.op != id) {
                        plan.skipped.push(changed_since(&f, &heads, id));
                    }
                }
            }
            Op::DeleteAsset { hash, .. } => plan.skipped.push(Skipped {
                path: None,
                changed_by: vec![],
                reason: format!(
                    "the deletion of asset {} is not undone; add the file again to restore it",
                    hash.short()
                ),
            }),
        }
    }
    Ok(plan)
}

fn changed_since(path: &FieldPath, heads: &[Head], id: OpId) -> Skipped {
    let mut by: Vec<ActorId> = heads
        .iter()
        .filter(|h| h.op != id)
        .map(|h| h.op.author)
        .collect();
    by.sort();
    by.dedup();
    Skipped {
        path: Some(path.clone()),
        changed_by: by,
        reason: format!("{} was changed since; left as it is", path.field),
    }
}
