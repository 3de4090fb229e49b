//! Conflicts as people see them: grouped by the bundles that disagree, described
//! in words, and resolved by a `merge_resolution` bundle that names every head.

use std::collections::BTreeMap;

use crate::ids::{ActorId, EntityId, OpId};
use crate::op::Op;
use crate::path::FieldPath;
use crate::register::{Head, winner};
use crate::value::Value;

/// How to name people and entities in words. The node answers from workspace
/// data (display names are data, not identity).
pub trait Names {
    /// A person's or device's display name, e.g. "Alex".
    fn actor(&self, id: &ActorId) -> String;
    /// A human label for an entity, e.g. "Jane Doe", if it has one.
    fn entity(&self, entity_type: &str, id: &EntityId) -> Option<String>;
}

/// One conflicted field.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldConflict {
    /// The field.
    pub path: FieldPath,
    /// All its heads; none is lost until someone resolves them.
    pub heads: Vec<Head>,
}

/// Conflicts on one entity caused by the same set of bundles: what a person
/// resolves in one go.
#[derive(Clone, Debug, PartialEq)]
pub struct ConflictGroup {
    /// Entity type.
    pub entity_type: String,
    /// Entity id.
    pub entity_id: EntityId,
    /// The bundles whose heads disagree, as (author, seq).
    pub bundles: Vec<(ActorId, u64)>,
    /// The conflicted fields.
    pub fields: Vec<FieldConflict>,
}

/// Groups conflicted fields by entity and by the set of bundles involved.
pub fn group<'a>(
    conflicts: impl IntoIterator<Item = (&'a FieldPath, &'a [Head])>,
) -> Vec<ConflictGroup> {
    type Key = (String, EntityId, Vec<(ActorId, u64)>);
    let mut groups: BTreeMap<Key, Vec<FieldConflict>> = BTreeMap::new();
    for (path, heads) in conflicts {
        if heads.len() < 2 {
            continue;
        }
        let mut bundles: Vec<(ActorId, u64)> =
            heads.iter().map(|h| (h.op.author, h.op.seq)).collect();
        bundles.sort();
        bundles.dedup();
        groups
            .entry((
                path.entity_type.to_string(),
                path.entity_id.clone(),
                bundles,
            ))
            .or_default()
            .push(FieldConflict {
                path: path.clone(),
                heads: heads.to_vec(),
            });
    }
    groups
        .into_iter()
        .map(
            |((entity_type, entity_id, bundles), fields)| ConflictGroup {
                entity_type,
                entity_id,
                bundles,
                fields,
            },
        )
        .collect()
}

/// A person-facing word for an entity type: `contacts.person` → "Contact".
pub fn type_label(entity_type: &str) -> String {
    let known = [
        ("contacts.person", "Contact"),
        ("schedule.event", "Schedule event"),
        ("cues.cue", "Cue"),
        ("scripts.version", "Script version"),
    ];
    if let Some((_, l)) = known.iter().find(|(t, _)| *t == entity_type) {
        return (*l).to_string();
    }
    let last = entity_type
        .rsplit('.')
        .next()
        .unwrap_or(entity_type)
        .replace('_', " ");
    let mut c = last.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn join_names(names: &[String]) -> String {
    match names {
        [] => String::new(),
        [a] => a.clone(),
        [rest @ .., last] => format!("{} and {}", rest.join(", "), last),
    }
}

impl ConflictGroup {
    /// "Contact 'Jane Doe' was edited by Alex and Jordan: name differs: 'Jane Doe' / 'Jane A. Doe'".
    pub fn describe(&self, names: &impl Names) -> String {
        let what = match names.entity(&self.entity_type, &self.entity_id) {
            Some(label) => format!("{} '{}'", type_label(&self.entity_type), label),
            None => format!("{} {}", type_label(&self.entity_type), self.entity_id),
        };
        // Name people in the order they edited.
        let mut heads: Vec<&Head> = self.fields.iter().flat_map(|f| f.heads.iter()).collect();
        heads.sort_by_key(|h| (h.hlc, h.op));
        let mut who: Vec<String> = Vec::new();
        for h in heads {
            let n = names.actor(&h.op.author);
            if !who.contains(&n) {
                who.push(n);
            }
        }
        let deleted = self
            .fields
            .iter()
            .any(|f| f.heads.iter().any(|h| h.value.is_none()));
        let verb = if deleted {
            "was deleted and edited concurrently by"
        } else {
            "was edited by"
        };
        let details: Vec<String> = self
            .fields
            .iter()
            .map(|f| {
                let mut heads = f.heads.clone();
                heads.sort_by_key(|h| std::cmp::Reverse((h.hlc, h.op)));
                let values: Vec<String> = heads
                    .iter()
                    .map(|h| match &h.value {
                        Some(v) => v.display(),
                        None => "(deleted)".to_string(),
                    })
                    .collect();
                format!("{} differs: {}", f.path.field, values.join(" / "))
            })
            .collect();
        format!("{what} {verb} {}: {}", join_names(&who), details.join("; "))
    }
}

/// How one conflicted field is settled.
#[derive(Clone, Debug, PartialEq)]
pub enum Choice {
    /// Keep the value of this head.
    Head(OpId),
    /// Write a new value.
    Value(Value),
}

/// Builds the ops of a `merge_resolution` bundle: for each field, a `Set` whose
/// `pred` names every current head, so the conflict closes on every replica
/// that applies it. Picking a deletion head writes `Null`.
///
/// Returns `None` for a field whose chosen head is not among its heads.
pub fn resolution_ops(choices: &[(FieldConflict, Choice)]) -> Option<Vec<Op>> {
    choices
        .iter()
        .map(|(c, choice)| {
            let value = match choice {
                Choice::Value(v) => v.clone(),
                Choice::Head(id) => c
                    .heads
                    .iter()
                    .find(|h| h.op == *id)?
                    .value
                    .clone()
                    .unwrap_or(Value::Null),
            };
            Some(Op::Set {
                path: c.path.clone(),
                value,
                pred: c.heads.iter().map(|h| h.op).collect(),
            })
        })
        .collect()
}

/// The head that takes the whole bundle's side: for each field, the head written
/// by `author` (for "take Alex's version of everything").
pub fn side_of(conflict: &FieldConflict, author: &ActorId) -> Option<OpId> {
    conflict
        .heads
        .iter()
        .filter(|h| h.op.author == *author)
        .max_by_key(|h| (h.hlc, h.op))
        .map(|h| h.op)
}

/// The value currently shown for a conflicted field.
pub fn shown(conflict: &FieldConflict) -> Option<&Value> {
    winner(&conflict.heads).and_then(|h| h.value.as_ref())
}
