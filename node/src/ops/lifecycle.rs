//! A workspace's life after creation: archive and un-archive, the retention
//! window, `workspace show`, and leaving (stop syncing; keep an export of the
//! data, or delete it).
//!
//! Archiving is data, not a local flag: the field
//! `troupe.workspace/settings/archived` syncs like any other, so every member
//! refuses local writes once it has heard of the archive. The store's own
//! `archived` flag is not used for this, because it also refuses remote
//! bundles: members must keep accepting bundles made before (or concurrently
//! with) the archive so every copy converges on the same state. Un-archiving
//! writes the same field back to `false`; it is the one write an archived
//! workspace accepts.
//!
//! Isolation: entity ids are unique only within a workspace, so a value that
//! names an entity is only meaningful inside its own workspace.
//! [`check_references`] refuses a write whose entity references do not
//! resolve inside the target workspace.

use serde_json::{Value as Json, json};
use troupe_protocol::bundle::BundleKind;
use troupe_protocol::draft::Draft;
use troupe_protocol::ids::WorkspaceId;
use troupe_protocol::path::FieldPath;
use troupe_protocol::value::Value;
use troupe_protocol::workspace::WorkspaceInfo;

use super::OpsError;
use super::workspaces::{MEMBER_TYPE, resolve};
use crate::local::{Change, Local};

/// Entity type of workspace-wide settings (synced like any data).
pub const SETTINGS_TYPE: &str = "troupe.workspace";
/// Entity id of the settings record.
pub const SETTINGS_ID: &str = "settings";
/// Longest retention window accepted, in days (ten years).
pub const MAX_RETENTION_DAYS: u32 = 3_650;
/// Folder (in the data dir) where `workspace leave` keeps an export.
pub const LEFT_DIR: &str = "left";

fn settings_path(field: &str) -> FieldPath {
    FieldPath::new(SETTINGS_TYPE, SETTINGS_ID, field).expect("settings path is valid")
}

/// Whether the workspace's synced state says it is archived.
///
/// # Errors
/// Store errors.
pub fn is_archived(local: &Local, ws: &WorkspaceId) -> Result<bool, OpsError> {
    Ok(matches!(
        local.store().value(ws, &settings_path("archived"))?,
        Some(Value::Bool(true))
    ))
}

/// Refuses a write to an archived workspace (by the synced setting or the
/// store's local flag).
///
/// # Errors
/// [`OpsError::Archived`]; lookup and store errors.
pub fn ensure_writable(local: &Local, workspace: &str) -> Result<WorkspaceInfo, OpsError> {
    let info = resolve(local, workspace)?;
    if info.archived || is_archived(local, &info.id())? {
        return Err(OpsError::Archived);
    }
    Ok(info)
}

/// Refuses values that name an entity which does not exist in `ws`: such a
/// reference would point at another workspace's entity (ids are only unique
/// within a workspace) or at nothing.
///
/// # Errors
/// [`OpsError::CrossWorkspace`].
pub fn check_references<'a>(
    local: &Local,
    ws: &WorkspaceId,
    ws_name: &str,
    values: impl IntoIterator<Item = &'a Value>,
    pending: &[(String, String)],
) -> Result<(), OpsError> {
    for v in values {
        if let Value::Entity { entity_type, id } = v {
            let here = pending
                .iter()
                .any(|(t, i)| t == entity_type && i == id.as_str())
                || !local.store().entity_fields(ws, entity_type, id)?.is_empty();
            if !here {
                return Err(OpsError::CrossWorkspace(format!(
                    "the value refers to {entity_type}/{id}, which does not exist in '{ws_name}' (entity ids are only meaningful inside their own workspace)"
                )));
            }
        }
    }
    Ok(())
}

fn set_archived(
    local: &mut Local,
    workspace: &str,
    archived: bool,
) -> Result<(Json, Vec<Change>), OpsError> {
    let info = resolve(local, workspace)?;
    let ws = info.id();
    let path = settings_path("archived");
    let heads = local.store().field_heads(&ws, &path)?;
    if heads.len() == 1 && heads[0].value == Some(Value::Bool(archived)) {
        return Ok((
            json!({ "id": ws.to_string(), "name": info.name, "archived": archived, "changed": false }),
            vec![],
        ));
    }
    let summary = if archived {
        "archived the workspace"
    } else {
        "un-archived the workspace"
    };
    let mut d = Draft::new(ws, BundleKind::UserEdit, summary);
    d.set(
        path,
        Value::Bool(archived),
        heads.iter().map(|h| h.op).collect(),
    );
    let (_, change) = local.commit(d)?;
    Ok((
        json!({ "id": ws.to_string(), "name": info.name, "archived": archived, "changed": true }),
        vec![change],
    ))
}

/// Archives a workspace on every member: a synced setting after which
/// members refuse local writes until someone un-archives it.
///
/// # Errors
/// Lookup and store errors.
pub fn archive(local: &mut Local, workspace: &str) -> Result<(Json, Vec<Change>), OpsError> {
    set_archived(local, workspace, true)
}

/// Un-archives a workspace (the one write an archived workspace accepts).
///
/// # Errors
/// Lookup and store errors.
pub fn unarchive(local: &mut Local, workspace: &str) -> Result<(Json, Vec<Change>), OpsError> {
    set_archived(local, workspace, false)
}

/// Sets how many days removed files are kept before garbage collection may
/// free them. The window is a synced setting
/// (`troupe.workspace/settings/retention_days`), so every member keeps the
/// same history of files; the store's own copy, which its GC reads, follows
/// it (see [`apply_synced_retention`]).
///
/// # Errors
/// [`OpsError::BadArgument`] outside 1..=[`MAX_RETENTION_DAYS`]; store errors.
pub fn retention(
    local: &mut Local,
    workspace: &str,
    days: u32,
) -> Result<(Json, Vec<Change>), OpsError> {
    if days == 0 || days > MAX_RETENTION_DAYS {
        return Err(OpsError::BadArgument(format!(
            "a retention window must be 1 to {MAX_RETENTION_DAYS} days, not {days}"
        )));
    }
    let info = ensure_writable(local, workspace)?;
    let ws = info.id();
    let path = settings_path("retention_days");
    let heads = local.store().field_heads(&ws, &path)?;
    let mut changes = Vec::new();
    if !(heads.len() == 1 && heads[0].value == Some(Value::Int(i64::from(days)))) {
        let mut d = Draft::new(
            ws,
            BundleKind::UserEdit,
            format!("kept removed files for {days} days"),
        );
        d.set(
            path,
            Value::Int(i64::from(days)),
            heads.iter().map(|h| h.op).collect(),
        );
        let (_, change) = local.commit(d)?;
        changes.push(change);
    }
    local.store().set_retention_days(&ws, days)?;
    Ok((
        json!({ "id": ws.to_string(), "name": info.name, "retention_days": days }),
        changes,
    ))
}

/// The workspace's retention window: the synced setting when a member set
/// one, else this store's (default 90 days).
///
/// # Errors
/// Store errors.
pub fn retention_days(local: &Local, info: &WorkspaceInfo) -> Result<u32, OpsError> {
    Ok(
        match local
            .store()
            .value(&info.id(), &settings_path("retention_days"))?
        {
            Some(Value::Int(d)) if d >= 1 => u32::try_from(d)
                .unwrap_or(MAX_RETENTION_DAYS)
                .min(MAX_RETENTION_DAYS),
            _ => info.retention_days,
        },
    )
}

/// Brings every workspace's store-side retention window (what garbage
/// collection reads) in line with the synced setting.
///
/// # Errors
/// Store errors.
pub fn apply_synced_retention(local: &Local) -> Result<(), OpsError> {
    for info in local.store().workspaces()? {
        let days = retention_days(local, &info)?;
        if days != info.retention_days {
            local.store().set_retention_days(&info.id(), days)?;
        }
    }
    Ok(())
}

/// Everything a person asks about a workspace: kind, retention, archived,
/// members by name, and counts.
///
/// # Errors
/// Lookup and store errors.
pub fn show(local: &Local, workspace: &str) -> Result<Json, OpsError> {
    let info = resolve(local, workspace)?;
    let ws = info.id();
    let fields = local.store().fields(&ws)?;
    let mut members = Vec::new();
    let mut entities = std::collections::BTreeSet::new();
    let mut count = 0usize;
    for (p, heads) in &fields {
        if heads.iter().all(|h| h.value.is_none()) {
            continue;
        }
        if p.entity_type == MEMBER_TYPE {
            if p.field == "name"
                && let Some(Value::Text(n)) =
                    troupe_protocol::register::winner(heads).and_then(|h| h.value.clone())
            {
                members.push(n);
            }
            continue;
        }
        if p.entity_type == SETTINGS_TYPE {
            continue;
        }
        count += 1;
        entities.insert((p.entity_type.clone(), p.entity_id.as_str().to_owned()));
    }
    members.sort();
    // One person's devices (and a device's incarnations) share a name.
    members.dedup();
    let history = local.store().history(&ws)?;
    Ok(json!({
        "id": ws.to_string(),
        "name": info.name,
        "kind": info.kind.to_string(),
        "archived": info.archived || is_archived(local, &ws)?,
        "retention_days": retention_days(local, &info)?,
        "members": members,
        "entities": entities.len(),
        "fields": count,
        "bundles": history.len(),
        "conflicts": local.store().conflicts(&ws)?.len(),
    }))
}

/// Leaves a workspace: this device stops syncing it. With `delete_data` its
/// local data is deleted; otherwise its current state is first exported
/// (JSON and files, no secret) into `<data dir>/left/`, so nothing a person
/// typed is lost, and then removed from the store.
///
/// # Errors
/// Lookup, file and store errors; nothing is removed on error.
pub fn leave(
    local: &mut Local,
    workspace: &str,
    delete_data: bool,
) -> Result<(Json, Vec<Change>), OpsError> {
    let info = resolve(local, workspace)?;
    let ws = info.id();
    let mut kept = Json::Null;
    if !delete_data {
        let base = local
            .path()
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default()
            .join(LEFT_DIR);
        let safe: String = info
            .name
            .chars()
            .map(|c| if c.is_alphanumeric() { c } else { '_' })
            .take(40)
            .collect();
        let dir = base.join(format!("{safe}-{}", ws.short()));
        local
            .store()
            .export(&ws, &dir)
            .map_err(|e| OpsError::File {
                path: dir.clone(),
                reason: e.to_string(),
            })?;
        kept = json!(dir.display().to_string());
    }
    let report = local.store().remove_workspace(&ws)?;
    Ok((
        json!({
            "id": ws.to_string(),
            "name": info.name,
            "deleted": delete_data,
            "kept_export": kept,
            "rows_removed": report.rows,
            "blobs_freed": report.blobs_freed,
        }),
        vec![Change::WorkspaceRemoved(ws)],
    ))
}

#[cfg(test)]
mod tests {
    use troupe_protocol::ids::EntityId;

    use super::*;
    use crate::ops::{fields, workspaces};

    fn jane() -> Value {
        Value::Entity {
            entity_type: "contacts.person".into(),
            id: EntityId::new("jane").expect("id"),
        }
    }

    #[test]
    fn a_reference_resolves_only_inside_its_own_workspace() {
        let tmp = tempfile::tempdir().expect("tmp");
        let mut l = crate::ops::test_local(tmp.path());
        workspaces::create(&mut l, "Hamlet", "show").expect("create");
        workspaces::create(&mut l, "Macbeth", "show").expect("create");
        fields::set(&mut l, "Hamlet", "contacts.person/jane/name", "Jane".into()).expect("set");
        let hamlet = resolve(&l, "Hamlet").expect("hamlet").id();
        let macbeth = resolve(&l, "Macbeth").expect("macbeth").id();

        assert!(check_references(&l, &hamlet, "Hamlet", [&jane()], &[]).is_ok());
        // The same id in the other show names nobody there: refused, in words.
        match check_references(&l, &macbeth, "Macbeth", [&jane()], &[]) {
            Err(OpsError::CrossWorkspace(why)) => {
                assert!(
                    why.contains("contacts.person/jane") && why.contains("Macbeth"),
                    "{why}"
                );
            }
            other => panic!("expected a cross-workspace refusal, got {other:?}"),
        }
        // An entity created in the same write counts as present.
        let pending = [("contacts.person".to_owned(), "jane".to_owned())];
        assert!(check_references(&l, &macbeth, "Macbeth", [&jane()], &pending).is_ok());
        // Plain values are not references.
        assert!(
            check_references(&l, &macbeth, "Macbeth", [&Value::Text("jane".into())], &[]).is_ok()
        );
    }
}
