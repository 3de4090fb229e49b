//! Undo and redo of whole bundles, as a person uses them.
//!
//! `undo` with no bundle takes this device's newest change in the workspace
//! that is not itself an undo or redo and has not been undone yet; `redo`
//! with no bundle takes this device's newest undo that has not been redone.
//! The plan comes from `troupe_protocol::undo::plan_undo`: a field someone
//! else changed since is reported by name and left as it is.

use std::collections::HashSet;

use serde_json::{Value as Json, json};
use troupe_protocol::bundle::{Bundle, BundleKind};
use troupe_protocol::conflict::Names;
use troupe_protocol::draft::Draft;
use troupe_protocol::ids::{BundleHash, WorkspaceId};
use troupe_protocol::limits::MAX_SUMMARY_BYTES;
use troupe_protocol::undo::plan_undo;

use super::OpsError;
use super::fields::WorkspaceNames;
use super::search::{find_bundle, op_words};
use super::workspaces::resolve;
use crate::local::{Change, Local};

/// Which of the two the person asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Revert a change.
    Undo,
    /// Revert an undo.
    Redo,
}

fn default_target(local: &Local, ws: &WorkspaceId, dir: Direction) -> Result<Bundle, OpsError> {
    let me = local.actor();
    let entries = local.store().history(ws)?;
    // Bundles already reverted (by anyone), so the default walks back in time.
    let mut reverted: HashSet<BundleHash> = HashSet::new();
    let mut mine = Vec::new();
    for e in &entries {
        if (e.kind == "undo" || e.kind == "redo")
            && let Some(b) = local.store().history_bundle(ws, e)?
            && let BundleKind::Undo { of } | BundleKind::Redo { of } = b.body().kind
        {
            reverted.insert(of);
        }
        if e.author == me {
            mine.push(e);
        }
    }
    let want = |kind: &str| match dir {
        Direction::Undo => kind != "undo" && kind != "redo",
        Direction::Redo => kind == "undo",
    };
    let e = mine
        .into_iter()
        .find(|e| want(e.kind) && !reverted.contains(&e.hash))
        .ok_or_else(|| {
            OpsError::NothingToDo(match dir {
                Direction::Undo => {
                    "this device has no change left to undo in this workspace".into()
                }
                Direction::Redo => "this device has no undo left to redo in this workspace".into(),
            })
        })?;
    local
        .store()
        .history_bundle(ws, e)?
        .ok_or_else(|| OpsError::NotFound("that change is no longer held here".into()))
}

/// Undoes (or redoes) one bundle: writes one `undo` (or `redo`) bundle and
/// reports every field left alone because someone changed it since.
///
/// # Errors
/// [`OpsError::NotFound`] for an unknown bundle; [`OpsError::NothingToDo`]
/// when every field it touched was changed since (the skipped fields are in
/// the message); [`OpsError::BadArgument`] for `redo` of a bundle that is not
/// an undo.
pub fn run(
    local: &mut Local,
    workspace: &str,
    bundle: Option<&str>,
    dir: Direction,
) -> Result<(Json, Vec<Change>), OpsError> {
    let info = resolve(local, workspace)?;
    let ws = info.id();
    let target = match bundle {
        Some(b) => find_bundle(local, &ws, b)?,
        None => default_target(local, &ws, dir)?,
    };
    if dir == Direction::Redo && !matches!(target.body().kind, BundleKind::Undo { .. }) {
        return Err(OpsError::BadArgument(format!(
            "change {} is not an undo, so there is nothing to redo; use `troupe undo` to revert it",
            target.hash().short()
        )));
    }
    let mut state = local.store().workspace_view(&ws)?;
    let mut lookup = local.store().workspace_view(&ws)?;
    let plan = plan_undo(&mut state, &mut lookup, &target)?;
    let names = WorkspaceNames::new(local, ws);
    let skipped: Vec<Json> = plan
        .skipped
        .iter()
        .map(|s| {
            let by: Vec<String> = s.changed_by.iter().map(|a| names.actor(a)).collect();
            let words = if by.is_empty() {
                s.reason.clone()
            } else {
                format!("{} (changed since by {})", s.reason, by.join(" and "))
            };
            json!({
                "path": s.path.as_ref().map(|p| p.to_string()),
                "changed_by": by,
                "words": words,
            })
        })
        .collect();
    let target_summary = target.body().summary.clone();
    if plan.ops.is_empty() {
        let why: Vec<String> = skipped
            .iter()
            .map(|s| s["words"].as_str().unwrap_or("").to_owned())
            .collect();
        return Err(OpsError::NothingToDo(format!(
            "nothing of '{target_summary}' can be {}: {}",
            if dir == Direction::Undo {
                "undone"
            } else {
                "redone"
            },
            if why.is_empty() {
                "it changed no field".into()
            } else {
                why.join("; ")
            }
        )));
    }
    let of = target.hash();
    let (kind, verb) = match dir {
        Direction::Undo => (BundleKind::Undo { of }, "undo"),
        Direction::Redo => (BundleKind::Redo { of }, "redo"),
    };
    let mut summary = format!("{verb} of '{target_summary}'");
    if summary.len() > MAX_SUMMARY_BYTES {
        summary = format!("{verb} of change {}", of.short());
    }
    let ops_words: Vec<String> = plan.ops.iter().map(|o| op_words(&names, o)).collect();
    let mut d = Draft::new(ws, kind, summary.clone());
    for op in plan.ops {
        d.push(op);
    }
    let (written, change) = local.commit(d)?;
    Ok((
        json!({
            "workspace": ws.to_string(),
            "bundle": written.hash.to_string(),
            "of": of.to_string(),
            "summary": summary,
            "restored": ops_words,
            "left_alone": skipped,
        }),
        vec![change],
    ))
}
