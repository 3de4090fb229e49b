//! Creating, sharing, joining and listing workspaces, and finding one by the
//! name or id a person typed.
//!
//! A device's display name (set with `troupe init --name`) is written into
//! each workspace it creates or joins, as the field
//! `troupe.member/<actor id>/name`, so conflicts can say "edited by Alex and
//! Jordan" on every member's device. It is data like any other: synced,
//! scoped to the workspace, changeable.

use serde_json::{Value as Json, json};
use troupe_protocol::bundle::BundleKind;
use troupe_protocol::draft::Draft;
use troupe_protocol::ids::WorkspaceId;
use troupe_protocol::path::FieldPath;
use troupe_protocol::value::Value;
use troupe_protocol::workspace::{WorkspaceInfo, WorkspaceKind, WorkspaceSecret};

use super::OpsError;
use super::invite::Invite;
use crate::local::{Change, Local};

/// Entity type of member records.
pub const MEMBER_TYPE: &str = "troupe.member";
/// Longest workspace name accepted.
pub const MAX_NAME_LEN: usize = 200;

/// Finds a workspace by exact id, unique id prefix (at least 4 hex digits)
/// or name (case-insensitive).
///
/// # Errors
/// [`OpsError::NoSuchWorkspace`] or [`OpsError::AmbiguousWorkspace`].
pub fn resolve(local: &Local, given: &str) -> Result<WorkspaceInfo, OpsError> {
    let all = local.store().workspaces()?;
    let g = given.trim();
    let lower = g.to_lowercase();
    let by_name: Vec<&WorkspaceInfo> = all
        .iter()
        .filter(|w| w.name.to_lowercase() == lower)
        .collect();
    let by_id: Vec<&WorkspaceInfo> = if g.len() >= 4 && g.bytes().all(|b| b.is_ascii_hexdigit()) {
        all.iter()
            .filter(|w| w.id().to_string().starts_with(&lower))
            .collect()
    } else {
        vec![]
    };
    let mut found: Vec<&WorkspaceInfo> = by_name;
    for w in by_id {
        if !found.iter().any(|f| f.id() == w.id()) {
            found.push(w);
        }
    }
    match found.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(OpsError::NoSuchWorkspace(g.to_owned())),
        many => Err(OpsError::AmbiguousWorkspace {
            given: g.to_owned(),
            matches: many
                .iter()
                .map(|w| format!("'{}' ({})", w.name, w.id().short()))
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

fn parse_kind(kind: &str) -> Result<WorkspaceKind, OpsError> {
    match kind.trim().to_lowercase().as_str() {
        "show" => Ok(WorkspaceKind::Show),
        "library" => Ok(WorkspaceKind::Library),
        other => Err(OpsError::BadArgument(format!(
            "{other:?} is not a workspace kind; use `show` (shared by a crew) or `library` (your own devices)"
        ))),
    }
}

fn describe(info: &WorkspaceInfo) -> Json {
    json!({
        "id": info.id().to_string(),
        "name": info.name,
        "kind": info.kind.to_string(),
        "archived": info.archived,
        "retention_days": info.retention_days,
    })
}

/// Writes this device's display name into the workspace, if it has one.
fn introduce(local: &mut Local, ws: WorkspaceId) -> Result<Vec<Change>, OpsError> {
    let Some(name) = local.device_name() else {
        return Ok(vec![]);
    };
    let path = FieldPath::new(MEMBER_TYPE, &local.actor().to_string(), "name")
        .map_err(|e| OpsError::BadPath(e.to_string()))?;
    let heads = local.store().field_heads(&ws, &path)?;
    if heads.len() == 1 && heads[0].value == Some(Value::Text(name.clone())) {
        return Ok(vec![]);
    }
    let mut d = Draft::new(ws, BundleKind::UserEdit, format!("{name} joined"));
    d.set(
        path,
        Value::Text(name),
        heads.iter().map(|h| h.op).collect(),
    );
    let (_, change) = local.commit(d)?;
    Ok(vec![change])
}

/// Creates a workspace with a fresh secret.
///
/// # Errors
/// [`OpsError::BadArgument`] for an empty name or unknown kind; store errors.
pub fn create(local: &mut Local, name: &str, kind: &str) -> Result<(Json, Vec<Change>), OpsError> {
    let name = name.trim();
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(OpsError::BadArgument(format!(
            "a workspace name must have 1 to {MAX_NAME_LEN} characters"
        )));
    }
    let kind = parse_kind(kind)?;
    let mut secret = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut secret);
    let info = WorkspaceInfo::new(WorkspaceSecret(secret), name, kind);
    local.store().add_workspace(&info)?;
    let mut changes = vec![Change::WorkspaceAdded(info.secret.clone())];
    changes.extend(introduce(local, info.id())?);
    Ok((describe(&info), changes))
}

/// The invite for a workspace.
///
/// # Errors
/// Lookup and store errors.
pub fn invite(local: &Local, workspace: &str) -> Result<Json, OpsError> {
    let info = resolve(local, workspace)?;
    let code = Invite {
        secret: info.secret.clone(),
        name: info.name.clone(),
        kind: info.kind,
    }
    .encode();
    Ok(json!({ "id": info.id().to_string(), "name": info.name, "invite": code }))
}

/// Joins a workspace from an invite; joining one already held is a no-op.
///
/// # Errors
/// [`OpsError::BadInvite`]; store errors.
pub fn join(local: &mut Local, text: &str) -> Result<(Json, Vec<Change>), OpsError> {
    let inv = Invite::decode(text).map_err(OpsError::BadInvite)?;
    let id = inv.secret.workspace_id();
    if let Some(held) = local.store().workspace(&id)? {
        let mut j = describe(&held);
        j["already_member"] = json!(true);
        return Ok((j, vec![]));
    }
    let name: String = inv.name.chars().take(MAX_NAME_LEN).collect();
    let info = WorkspaceInfo::new(inv.secret, name, inv.kind);
    local.store().add_workspace(&info)?;
    let mut changes = vec![Change::WorkspaceAdded(info.secret.clone())];
    changes.extend(introduce(local, id)?);
    let mut j = describe(&info);
    j["already_member"] = json!(false);
    Ok((j, changes))
}

/// Every workspace on this device.
///
/// # Errors
/// Store errors.
pub fn list(local: &Local) -> Result<Json, OpsError> {
    Ok(Json::Array(
        local.store().workspaces()?.iter().map(describe).collect(),
    ))
}
