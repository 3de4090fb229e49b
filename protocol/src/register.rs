//! The field register: which ops are a field's current heads, and which one is shown.
//!
//! # The rule
//! Every `Set` acts on one field; every `DeleteEntity` acts on every field of
//! its entity. An op is *superseded* on a field when another op on that field
//! names it in `pred` (a `Set` supersedes within its field; a `DeleteEntity`
//! supersedes within its whole entity). The heads of a field are the ops acting
//! on it that are not superseded there:
//!
//! ```text
//! heads(f) = { s in Sets(f) ∪ Deletes(entity(f)) : (f, s) ∉ SupField ∧ (entity(f), s) ∉ SupEntity }
//! ```
//!
//! This is a pure function of the *set* of ops, so replicas that hold the same
//! bundles hold the same heads whatever order and however often the bundles
//! arrived (property-tested below). Supersession is scoped to the field or
//! entity of the op that names the pred, so a malformed pred pointing elsewhere
//! cannot make replicas disagree.
//!
//! One head: no conflict. Several: a conflict, shown by a deterministic winner
//! (highest hlc, then op id) while every head stays readable. A head that is a
//! delete marks the field deleted; an entity exists while any of its fields has
//! a value head.
//!
//! The algorithm is written once, against [`StateBackend`]; the in-memory
//! [`Replica`] (tests, simulator model) and the redb store implement it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::bundle::Bundle;
use crate::hlc::Hlc;
use crate::ids::{ActorId, BlobHash, BundleHash, EntityId, OpId};
use crate::op::Op;
use crate::path::FieldPath;
use crate::value::Value;

/// One current head of a field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Head {
    /// The op.
    pub op: OpId,
    /// Its bundle's timestamp: decides the shown winner.
    pub hlc: Hlc,
    /// The value it set, or `None` when the head is an entity deletion.
    pub value: Option<Value>,
}

impl Head {
    fn rank(&self) -> (Hlc, OpId) {
        (self.hlc, self.op)
    }
}

/// The shown head among several: highest hlc, then highest op id. Deterministic on every replica.
pub fn winner(heads: &[Head]) -> Option<&Head> {
    heads.iter().max_by_key(|h| h.rank())
}

/// Where supersession applies.
#[derive(Clone, Copy, Debug)]
pub enum Scope<'a> {
    /// Within one field (named by a `Set`).
    Field(&'a FieldPath),
    /// Within every field of an entity (named by a `DeleteEntity`).
    Entity(&'a str, &'a EntityId),
}

/// The storage the register algorithm needs. Implemented in memory by
/// [`Replica`] and on redb by the store, inside its write transaction.
pub trait StateBackend {
    /// Storage failure.
    type Error;
    /// Heads of a field, or `None` when no `Set` ever reached it.
    fn field_heads(&mut self, path: &FieldPath) -> Result<Option<Vec<Head>>, Self::Error>;
    /// Replaces a field's heads (the field stays known even with no heads).
    fn put_field_heads(&mut self, path: &FieldPath, heads: &[Head]) -> Result<(), Self::Error>;
    /// Every known field of an entity.
    fn entity_fields(
        &mut self,
        entity_type: &str,
        id: &EntityId,
    ) -> Result<Vec<FieldPath>, Self::Error>;
    /// The entity's deletions not yet superseded at entity scope.
    fn entity_deletes(
        &mut self,
        entity_type: &str,
        id: &EntityId,
    ) -> Result<Vec<Head>, Self::Error>;
    /// Replaces the entity's live deletions.
    fn put_entity_deletes(
        &mut self,
        entity_type: &str,
        id: &EntityId,
        heads: &[Head],
    ) -> Result<(), Self::Error>;
    /// Records that `op` is superseded within `scope`.
    fn add_superseded(&mut self, scope: Scope<'_>, op: OpId) -> Result<(), Self::Error>;
    /// Whether `op` is superseded within `scope`.
    fn is_superseded(&mut self, scope: Scope<'_>, op: OpId) -> Result<bool, Self::Error>;
    /// Records an asset deletion (for GC and display).
    fn record_asset_delete(
        &mut self,
        hash: &BlobHash,
        op: OpId,
        hlc: Hlc,
        reason: &str,
    ) -> Result<(), Self::Error>;
}

/// What applying a bundle changed, for events and conflict notices.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ApplyReport {
    /// Fields whose heads changed.
    pub changed: Vec<FieldPath>,
    /// Fields that now have more than one head.
    pub conflicted: Vec<FieldPath>,
}

/// Applies every op of `bundle` to the state in `backend`. The caller makes it
/// atomic (one write transaction) and ensures each bundle is applied once.
///
/// # Errors
/// Only the backend's.
pub fn apply_bundle<B: StateBackend>(
    backend: &mut B,
    bundle: &Bundle,
) -> Result<ApplyReport, B::Error> {
    let hlc = bundle.body().hlc;
    let mut touched: BTreeSet<FieldPath> = BTreeSet::new();
    for (id, op) in bundle.ops_with_ids() {
        match op {
            Op::Set { path, value, pred } => {
                apply_set(backend, id, hlc, path, value, pred)?;
                touched.insert(path.clone());
            }
            Op::DeleteEntity {
                entity_type,
                entity_id,
                pred,
            } => {
                touched.extend(apply_delete(
                    backend,
                    id,
                    hlc,
                    entity_type,
                    entity_id,
                    pred,
                )?);
            }
            Op::DeleteAsset { hash, reason } => {
                backend.record_asset_delete(hash, id, hlc, reason)?
            }
        }
    }
    let mut report = ApplyReport::default();
    for path in touched {
        if backend.field_heads(&path)?.is_some_and(|h| h.len() > 1) {
            report.conflicted.push(path.clone());
        }
        report.changed.push(path);
    }
    Ok(report)
}

fn apply_set<B: StateBackend>(
    b: &mut B,
    id: OpId,
    hlc: Hlc,
    path: &FieldPath,
    value: &Value,
    pred: &[OpId],
) -> Result<(), B::Error> {
    let (ty, eid) = path.entity();
    let mut heads = match b.field_heads(path)? {
        Some(h) => h,
        // A new field starts with the entity's live deletions as heads: a
        // delete acts on every field, including ones it never saw.
        None => {
            let mut h = Vec::new();
            for d in b.entity_deletes(ty, eid)? {
                if !b.is_superseded(Scope::Field(path), d.op)? {
                    h.push(d);
                }
            }
            h
        }
    };
    for p in pred {
        b.add_superseded(Scope::Field(path), *p)?;
    }
    heads.retain(|h| !pred.contains(&h.op));
    let live = !b.is_superseded(Scope::Field(path), id)?
        && !b.is_superseded(Scope::Entity(ty, eid), id)?;
    if live && !heads.iter().any(|h| h.op == id) {
        heads.push(Head {
            op: id,
            hlc,
            value: Some(value.clone()),
        });
        heads.sort_by_key(|h| h.op);
    }
    b.put_field_heads(path, &heads)
}

fn apply_delete<B: StateBackend>(
    b: &mut B,
    id: OpId,
    hlc: Hlc,
    ty: &str,
    eid: &EntityId,
    pred: &[OpId],
) -> Result<Vec<FieldPath>, B::Error> {
    for p in pred {
        b.add_superseded(Scope::Entity(ty, eid), *p)?;
    }
    let live = !b.is_superseded(Scope::Entity(ty, eid), id)?;
    let mut deletes = b.entity_deletes(ty, eid)?;
    deletes.retain(|h| !pred.contains(&h.op));
    let head = Head {
        op: id,
        hlc,
        value: None,
    };
    if live && !deletes.iter().any(|h| h.op == id) {
        deletes.push(head.clone());
        deletes.sort_by_key(|h| h.op);
    }
    b.put_entity_deletes(ty, eid, &deletes)?;
    let fields = b.entity_fields(ty, eid)?;
    for f in &fields {
        let mut heads = b.field_heads(f)?.unwrap_or_default();
        heads.retain(|h| !pred.contains(&h.op));
        if live && !heads.iter().any(|h| h.op == id) && !b.is_superseded(Scope::Field(f), id)? {
            heads.push(head.clone());
            heads.sort_by_key(|h| h.op);
        }
        b.put_field_heads(f, &heads)?;
    }
    Ok(fields)
}

/// In-memory materialised state of one workspace: the reference implementation
/// of [`StateBackend`], used by property tests and the simulator's checkers.
#[derive(Clone, Debug, Default)]
pub struct Replica {
    fields: BTreeMap<FieldPath, Vec<Head>>,
    deletes: BTreeMap<(String, EntityId), Vec<Head>>,
    sup_field: BTreeSet<(FieldPath, OpId)>,
    sup_entity: BTreeSet<(String, EntityId, OpId)>,
    asset_deletes: BTreeMap<BlobHash, Vec<(OpId, Hlc, String)>>,
    bundles: BTreeMap<(ActorId, u64), Bundle>,
    applied: BTreeSet<BundleHash>,
}

impl Replica {
    /// An empty replica.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies a bundle unless it was applied before. Returns what changed.
    pub fn apply(&mut self, bundle: &Bundle) -> ApplyReport {
        if !self.applied.insert(bundle.hash()) {
            return ApplyReport::default();
        }
        self.bundles
            .insert((bundle.body().author, bundle.body().seq), bundle.clone());
        match apply_bundle(self, bundle) {
            Ok(r) => r,
            Err(never) => match never {},
        }
    }

    /// The heads of a field (empty when unknown).
    pub fn heads(&self, path: &FieldPath) -> &[Head] {
        self.fields.get(path).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The value shown for a field: the winner's, unless the winner is a deletion.
    pub fn value(&self, path: &FieldPath) -> Option<&Value> {
        winner(self.heads(path)).and_then(|h| h.value.as_ref())
    }

    /// Every known field with its heads, in path order.
    pub fn fields(&self) -> impl Iterator<Item = (&FieldPath, &[Head])> {
        self.fields.iter().map(|(p, h)| (p, h.as_slice()))
    }

    /// Fields with more than one head.
    pub fn conflicts(&self) -> impl Iterator<Item = (&FieldPath, &[Head])> {
        self.fields().filter(|(_, h)| h.len() > 1)
    }

    /// A stored bundle by author and seq.
    pub fn bundle(&self, author: &ActorId, seq: u64) -> Option<&Bundle> {
        self.bundles.get(&(*author, seq))
    }

    /// Recorded asset deletions.
    pub fn asset_deletes(&self) -> &BTreeMap<BlobHash, Vec<(OpId, Hlc, String)>> {
        &self.asset_deletes
    }

    /// The op with this id, if its bundle is here.
    pub fn op(&self, id: &OpId) -> Option<(&Op, Hlc)> {
        let b = self.bundles.get(&(id.author, id.seq))?;
        Some((b.body().ops.get(id.index as usize)?, b.body().hlc))
    }
}

impl crate::undo::OpLookup for Replica {
    fn op(&mut self, id: &OpId) -> Option<(Op, Hlc)> {
        Replica::op(self, id).map(|(o, h)| (o.clone(), h))
    }
}

impl StateBackend for Replica {
    type Error = std::convert::Infallible;

    fn field_heads(&mut self, path: &FieldPath) -> Result<Option<Vec<Head>>, Self::Error> {
        Ok(self.fields.get(path).cloned())
    }
    fn put_field_heads(&mut self, path: &FieldPath, heads: &[Head]) -> Result<(), Self::Error> {
        self.fields.insert(path.clone(), heads.to_vec());
        Ok(())
    }
    fn entity_fields(&mut self, ty: &str, id: &EntityId) -> Result<Vec<FieldPath>, Self::Error> {
        Ok(self
            .fields
            .keys()
            .filter(|p| p.entity_type == ty && &p.entity_id == id)
            .cloned()
            .collect())
    }
    fn entity_deletes(&mut self, ty: &str, id: &EntityId) -> Result<Vec<Head>, Self::Error> {
        Ok(self
            .deletes
            .get(&(ty.to_string(), id.clone()))
            .cloned()
            .unwrap_or_default())
    }
    fn put_entity_deletes(
        &mut self,
        ty: &str,
        id: &EntityId,
        heads: &[Head],
    ) -> Result<(), Self::Error> {
        self.deletes
            .insert((ty.to_string(), id.clone()), heads.to_vec());
        Ok(())
    }
    fn add_superseded(&mut self, scope: Scope<'_>, op: OpId) -> Result<(), Self::Error> {
        match scope {
            Scope::Field(p) => self.sup_field.insert((p.clone(), op)),
            Scope::Entity(t, id) => self.sup_entity.insert((t.to_string(), id.clone(), op)),
        };
        Ok(())
    }
    fn is_superseded(&mut self, scope: Scope<'_>, op: OpId) -> Result<bool, Self::Error> {
        Ok(match scope {
            Scope::Field(p) => self.sup_field.contains(&(p.clone(), op)),
            Scope::Entity(t, id) => self.sup_entity.contains(&(t.to_string(), id.clone(), op)),
        })
    }
    fn record_asset_delete(
        &mut self,
        hash: &BlobHash,
        op: OpId,
        hlc: Hlc,
        reason: &str,
    ) -> Result<(), Self::Error> {
        let v = self.asset_deletes.entry(*hash).or_default();
        if !v.iter().any(|(o, _, _)| *o == op) {
            v.push((op, hlc, reason.to_string()));
            v.sort_by_key(|(o, _, _)| *o);
        }
        Ok(())
    }
}
