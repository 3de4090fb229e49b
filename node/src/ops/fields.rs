//! Setting and reading fields, entity views, and open conflicts
//! described in words.
//!
//! A field shows one value (the register's winner: newest timestamp) but
//! keeps every concurrent value until someone resolves them; `get` and `show`
//! say so with `"conflict": true` and list all values, and `conflicts`
//! describes each group the way a stage manager would say it.

use serde_json::{Value as Json, json};
use troupe_protocol::bundle::BundleKind;
use troupe_protocol::conflict::{self, Names};
use troupe_protocol::draft::Draft;
use troupe_protocol::ids::{ActorId, EntityId, WorkspaceId};
use troupe_protocol::path::FieldPath;
use troupe_protocol::register::{Head, winner};
use troupe_protocol::value::Value;

use super::OpsError;
use super::workspaces::{MEMBER_TYPE, resolve};
use crate::local::{Change, Local};

/// Fields whose text names an entity in conflict descriptions, in order.
const LABEL_FIELDS: [&str; 3] = ["name", "title", "label"];

pub(crate) fn parse_path(path: &str) -> Result<FieldPath, OpsError> {
    let parts: Vec<&str> = path.trim().split('/').collect();
    let [t, id, field] = parts.as_slice() else {
        return Err(OpsError::BadPath(format!(
            "{path:?} is not a field path; write TYPE/ID/FIELD, e.g. contacts.person/jane/phone"
        )));
    };
    FieldPath::new(t, id, field).map_err(|e| OpsError::BadPath(format!("{path:?}: {e}")))
}

pub(crate) fn parse_entity(entity: &str) -> Result<(String, EntityId), OpsError> {
    let parts: Vec<&str> = entity.trim().split('/').collect();
    let [t, id] = parts.as_slice() else {
        return Err(OpsError::BadPath(format!(
            "{entity:?} is not an entity; write TYPE/ID, e.g. contacts.person/jane"
        )));
    };
    // Validate both through a throwaway path.
    let p =
        FieldPath::new(t, id, "x").map_err(|e| OpsError::BadPath(format!("{entity:?}: {e}")))?;
    Ok((p.entity_type, p.entity_id))
}

/// A value as JSON: text stays text, other kinds keep their shape.
pub fn value_json(v: &Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Bool(b) => json!(b),
        Value::Int(i) => json!(i),
        Value::Float(f) => json!(f),
        Value::Text(t) => json!(t),
        Value::Bytes(b) => json!({ "bytes": b.len() }),
        Value::Entity { entity_type, id } => json!({ "entity": format!("{entity_type}/{id}") }),
        Value::Asset(a) => json!({
            "asset": a.hash.to_string(), "name": a.name, "size": a.size, "media_type": a.media_type,
        }),
    }
}

/// Names from workspace data: members' display names and entities' labels.
pub struct WorkspaceNames<'a> {
    local: &'a Local,
    ws: WorkspaceId,
}

impl<'a> WorkspaceNames<'a> {
    /// Names for `ws`.
    pub fn new(local: &'a Local, ws: WorkspaceId) -> Self {
        WorkspaceNames { local, ws }
    }

    fn text(&self, path: Option<FieldPath>) -> Option<String> {
        let path = path?;
        match self.local.store().value(&self.ws, &path).ok()?? {
            Value::Text(t) if !t.is_empty() => Some(t),
            _ => None,
        }
    }
}

impl Names for WorkspaceNames<'_> {
    fn actor(&self, id: &ActorId) -> String {
        if *id == self.local.actor()
            && let Some(n) = self.local.device_name()
        {
            return n;
        }
        self.text(FieldPath::new(MEMBER_TYPE, &id.to_string(), "name").ok())
            .unwrap_or_else(|| format!("device {}", id.short()))
    }

    fn entity(&self, entity_type: &str, id: &EntityId) -> Option<String> {
        LABEL_FIELDS
            .iter()
            .find_map(|f| self.text(FieldPath::new(entity_type, id.as_str(), f).ok()))
    }
}

fn heads_json(names: &WorkspaceNames<'_>, heads: &[Head]) -> Json {
    let shown = winner(heads).and_then(|h| h.value.as_ref());
    let mut values: Vec<Json> = heads
        .iter()
        .map(|h| {
            json!({
                "value": h.value.as_ref().map_or(Json::Null, value_json),
                "deleted": h.value.is_none(),
                "author": h.op.author.to_string(),
                "author_name": names.actor(&h.op.author),
                "seq": h.op.seq,
            })
        })
        .collect();
    values.sort_by_key(|v| v["value"].to_string());
    json!({
        "value": shown.map_or(Json::Null, value_json),
        "conflict": heads.len() > 1,
        "values": values,
    })
}

/// Sets a field to a text value, superseding every value it shows now.
///
/// # Errors
/// [`OpsError`]; nothing is written on error.
pub fn set(
    local: &mut Local,
    workspace: &str,
    path: &str,
    value: String,
) -> Result<(Json, Vec<Change>), OpsError> {
    let info = resolve(local, workspace)?;
    let path = parse_path(path)?;
    let ws = info.id();
    let heads = local.store().field_heads(&ws, &path)?;
    let summary = format!(
        "set {} of {}/{}",
        path.field, path.entity_type, path.entity_id
    );
    let mut d = Draft::new(ws, BundleKind::UserEdit, summary);
    d.set(
        path.clone(),
        Value::Text(value),
        heads.iter().map(|h| h.op).collect(),
    );
    let (written, change) = local.commit(d)?;
    Ok((
        json!({
            "workspace": ws.to_string(),
            "path": path.to_string(),
            "bundle": written.hash.to_string(),
            "seq": written.seq,
            "resolved_conflict": heads.len() > 1,
        }),
        vec![change],
    ))
}

/// Reads one field.
///
/// # Errors
/// [`OpsError`].
pub fn get(local: &Local, workspace: &str, path: &str) -> Result<Json, OpsError> {
    let info = resolve(local, workspace)?;
    let path = parse_path(path)?;
    let heads = local.store().field_heads(&info.id(), &path)?;
    let names = WorkspaceNames::new(local, info.id());
    let mut j = heads_json(&names, &heads);
    j["path"] = json!(path.to_string());
    j["set"] = json!(!heads.is_empty());
    Ok(j)
}

/// Every field of one entity, plus its conflicts in words.
///
/// # Errors
/// [`OpsError`].
pub fn show(local: &Local, workspace: &str, entity: &str) -> Result<Json, OpsError> {
    let info = resolve(local, workspace)?;
    let (t, id) = parse_entity(entity)?;
    let fields = local.store().entity_fields(&info.id(), &t, &id)?;
    let names = WorkspaceNames::new(local, info.id());
    let mut out = serde_json::Map::new();
    for (p, heads) in &fields {
        out.insert(p.field.clone(), heads_json(&names, heads));
    }
    let groups = conflict::group(fields.iter().map(|(p, h)| (p, h.as_slice())));
    Ok(json!({
        "entity": format!("{t}/{id}"),
        "label": names.entity(&t, &id),
        "fields": out,
        "conflicts": groups.iter().map(|g| g.describe(&names)).collect::<Vec<_>>(),
    }))
}

/// Open conflicts of a workspace, grouped by the bundles that disagree.
///
/// # Errors
/// [`OpsError`].
pub fn conflicts(local: &Local, workspace: &str) -> Result<Json, OpsError> {
    let info = resolve(local, workspace)?;
    let open = local.store().conflicts(&info.id())?;
    let names = WorkspaceNames::new(local, info.id());
    let groups = conflict::group(open.iter().map(|(p, h)| (p, h.as_slice())));
    Ok(Json::Array(
        groups
            .iter()
            .map(|g| {
                json!({
                    "entity": format!("{}/{}", g.entity_type, g.entity_id),
                    "fields": g.fields.iter().map(|f| f.path.field.clone()).collect::<Vec<_>>(),
                    "bundles": g.bundles.iter().map(|(a, s)| json!({"author": a.to_string(), "seq": s})).collect::<Vec<_>>(),
                    "description": g.describe(&names),
                })
            })
            .collect(),
    ))
}
