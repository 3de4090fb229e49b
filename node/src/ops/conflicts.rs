//! Resolving conflicts, and the history of resolutions.
//!
//! `conflicts resolve` settles every conflicted field of one entity in one
//! `merge_resolution` bundle: per field the person picks a member's side
//! (`--field phone --pick Jordan`) or types a value (`--pick 555-0100`), or
//! takes one member's side for the rest (`--take Alex`). Each op names every
//! head of its field, so the conflict closes on every device that applies it.
//!
//! The history of resolutions is the oplog itself: every `merge_resolution`
//! bundle, whose summary records the choices in words ("name: kept Jordan's
//! 'Jane A. Doe'"), listed by `conflicts history` with its ops.

use serde_json::{Value as Json, json};
use troupe_protocol::bundle::BundleKind;
use troupe_protocol::conflict::{self, Choice, FieldConflict, Names, type_label};
use troupe_protocol::draft::Draft;
use troupe_protocol::limits::MAX_SUMMARY_BYTES;
use troupe_protocol::value::Value;

use super::OpsError;
use super::fields::{WorkspaceNames, parse_entity};
use super::search::{bundle_json, match_actor};
use super::workspaces::resolve;
use crate::local::{Change, Local};

/// One `--field F --pick X` as typed.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Pick {
    /// The field name.
    pub field: String,
    /// A member's name or id (their side), or a value to write.
    pub pick: String,
}

fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// Writes one `merge_resolution` bundle settling the conflicts of `entity`.
///
/// # Errors
/// [`OpsError::NothingToDo`] when the entity has no conflict;
/// [`OpsError::BadArgument`] when a field is left without a choice, a pick
/// names a field that is not in conflict, or `--take` names someone with no
/// side on a field.
pub fn resolve_conflict(
    local: &mut Local,
    workspace: &str,
    entity: &str,
    picks: &[Pick],
    take: Option<&str>,
) -> Result<(Json, Vec<Change>), OpsError> {
    let info = resolve(local, workspace)?;
    let ws = info.id();
    let (t, id) = parse_entity(entity)?;
    let fields = local.store().entity_fields(&ws, &t, &id)?;
    let conflicted: Vec<FieldConflict> = fields
        .into_iter()
        .filter(|(_, h)| h.len() > 1)
        .map(|(path, heads)| FieldConflict { path, heads })
        .collect();
    let names = WorkspaceNames::new(local, ws);
    let label = match names.entity(&t, &id) {
        Some(l) => format!("{} '{l}'", type_label(&t)),
        None => format!("{} {id}", type_label(&t)),
    };
    if conflicted.is_empty() {
        return Err(OpsError::NothingToDo(format!(
            "{label} has no conflict to resolve"
        )));
    }
    for p in picks {
        if !conflicted.iter().any(|c| c.path.field == p.field) {
            return Err(OpsError::BadArgument(format!(
                "{label} has no conflict on the field {:?} (in conflict: {})",
                p.field,
                conflicted
                    .iter()
                    .map(|c| c.path.field.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    let me = local.actor();
    let authors = |c: &FieldConflict| c.heads.iter().map(|h| h.op.author).collect::<Vec<_>>();
    let mut choices = Vec::new();
    let mut words = Vec::new();
    let mut chosen_json = Vec::new();
    for c in &conflicted {
        let (choice, said) = if let Some(p) = picks.iter().rev().find(|p| p.field == c.path.field) {
            match match_actor(&names, me, authors(c), &p.pick)
                .and_then(|a| Some((a, conflict::side_of(c, &a)?)))
            {
                Some((a, head)) => (Choice::Head(head), format!("kept {}'s", names.actor(&a))),
                None => (
                    Choice::Value(Value::Text(p.pick.as_str().into())),
                    "wrote".to_owned(),
                ),
            }
        } else if let Some(who) = take {
            let a = match_actor(&names, me, authors(c), who).ok_or_else(|| {
                OpsError::BadArgument(format!(
                    "{who:?} has no version of {} on {label}; the versions are by {}",
                    c.path.field,
                    c.heads
                        .iter()
                        .map(|h| names.actor(&h.op.author))
                        .collect::<Vec<_>>()
                        .join(" and ")
                ))
            })?;
            let head = conflict::side_of(c, &a).ok_or_else(|| {
                OpsError::BadArgument(format!("{who:?} has no version of {}", c.path.field))
            })?;
            (Choice::Head(head), format!("kept {}'s", names.actor(&a)))
        } else {
            return Err(OpsError::BadArgument(format!(
                "the field {} of {label} is in conflict ({}) but no choice was given for it; add --field {} --pick NAME_OR_VALUE, or --take NAME for every field",
                c.path.field,
                c.heads
                    .iter()
                    .map(|h| format!(
                        "{} by {}",
                        h.value.as_ref().map_or("(deleted)".into(), |v| v.display()),
                        names.actor(&h.op.author)
                    ))
                    .collect::<Vec<_>>()
                    .join(" / "),
                c.path.field
            )));
        };
        let value = match &choice {
            Choice::Value(v) => v.clone(),
            Choice::Head(h) => c
                .heads
                .iter()
                .find(|x| x.op == *h)
                .and_then(|x| x.value.clone())
                .unwrap_or(Value::Null),
        };
        words.push(format!("{}: {said} {}", c.path.field, value.display()));
        chosen_json.push(json!({
            "field": c.path.field, "value": super::fields::value_json(&value),
            "choice": said, "replaced": c.heads.len(),
        }));
        choices.push((c.clone(), choice));
    }
    let ops = conflict::resolution_ops(&choices).ok_or_else(|| {
        OpsError::Store("a chosen version vanished while resolving; try again".into())
    })?;
    let summary = cut(
        &format!("resolved conflict on {label}: {}", words.join("; ")),
        MAX_SUMMARY_BYTES,
    );
    let mut d = Draft::new(ws, BundleKind::MergeResolution, summary.clone());
    for op in ops {
        d.push(op);
    }
    let (written, change) = local.commit(d)?;
    Ok((
        json!({
            "workspace": ws.to_string(),
            "entity": format!("{t}/{id}"),
            "bundle": written.hash.to_string(),
            "summary": summary,
            "fields": chosen_json,
        }),
        vec![change],
    ))
}

/// Every conflict resolution in a workspace, newest first, with its choices.
///
/// # Errors
/// Store errors.
pub fn history(local: &Local, workspace: &str) -> Result<Json, OpsError> {
    let info = resolve(local, workspace)?;
    let names = WorkspaceNames::new(local, info.id());
    let mut out = Vec::new();
    for e in local.store().history(&info.id())? {
        if e.kind != BundleKind::MergeResolution.name() {
            continue;
        }
        if let Some(b) = local.store().history_bundle(&info.id(), &e)? {
            out.push(bundle_json(&names, &b));
        }
    }
    Ok(Json::Array(out))
}
