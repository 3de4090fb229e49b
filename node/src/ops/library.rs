//! Copying an entity between workspaces, e.g. a lighting fixture from a
//! person's library into a show and back.
//!
//! A copy is independent: its fields are written as new ops in the target
//! workspace and later edits on either side stay there. Provenance is
//! recorded as two ordinary fields of the copy, `copied_from`
//! (`"<workspace name>/<type>/<id>"`) and `copied_at` (milliseconds since
//! 1970), so any UI can say where a copy came from. Assets travel by hash:
//! the bytes are already in this device's store and the copy's op keeps them
//! from garbage collection in the target workspace. A value that names
//! another entity is refused unless that entity exists in the target
//! (isolation: ids mean nothing across workspaces).

use serde_json::{Value as Json, json};
use troupe_protocol::bundle::BundleKind;
use troupe_protocol::draft::Draft;
use troupe_protocol::path::FieldPath;
use troupe_protocol::register::winner;
use troupe_protocol::value::Value;

use super::OpsError;
use super::lifecycle::{check_references, ensure_writable};
use super::workspaces::resolve;
use crate::local::{Change, Local, wall_ms};

/// Field recording where a copy came from.
pub const COPIED_FROM: &str = "copied_from";
/// Field recording when it was copied.
pub const COPIED_AT: &str = "copied_at";

fn parse_entity(entity: &str) -> Result<(String, String), OpsError> {
    let parts: Vec<&str> = entity.trim().split('/').collect();
    let [t, id] = parts.as_slice() else {
        return Err(OpsError::BadPath(format!(
            "{entity:?} is not an entity; write TYPE/ID, e.g. lighting.fixture/par64"
        )));
    };
    FieldPath::new(t, id, "x").map_err(|e| OpsError::BadPath(format!("{entity:?}: {e}")))?;
    Ok(((*t).to_owned(), (*id).to_owned()))
}

/// Copies entity `entity` (`TYPE/ID`) of `from` into `to`, as `new_id` or
/// the same id.
///
/// # Errors
/// [`OpsError::BadArgument`] when the entity is missing in `from` or its id
/// is taken in `to`; [`OpsError::CrossWorkspace`]; [`OpsError::Archived`]
/// for an archived target; [`OpsError::Asset`] when bytes are missing.
pub fn copy(
    local: &mut Local,
    from: &str,
    entity: &str,
    to: &str,
    new_id: Option<&str>,
) -> Result<(Json, Vec<Change>), OpsError> {
    let src = resolve(local, from)?;
    let dst = ensure_writable(local, to)?;
    if src.id() == dst.id() {
        return Err(OpsError::BadArgument(
            "the source and target are the same workspace".into(),
        ));
    }
    let (t, id) = parse_entity(entity)?;
    let target_id = new_id.unwrap_or(&id).to_owned();
    let probe =
        FieldPath::new(&t, &target_id, "x").map_err(|e| OpsError::BadPath(e.to_string()))?;
    let src_fields = local.store().entity_fields(
        &src.id(),
        &t,
        &FieldPath::new(&t, &id, "x")
            .map_err(|e| OpsError::BadPath(e.to_string()))?
            .entity_id,
    )?;
    let mut values: Vec<(String, Value)> = src_fields
        .iter()
        .filter_map(|(p, heads)| {
            winner(heads)
                .and_then(|h| h.value.clone())
                .map(|v| (p.field.to_string(), v))
        })
        .filter(|(f, _)| f != COPIED_FROM && f != COPIED_AT)
        .collect();
    if values.is_empty() {
        return Err(OpsError::BadArgument(format!(
            "{t}/{id} has no fields in '{}'",
            src.name
        )));
    }
    if !local
        .store()
        .entity_fields(&dst.id(), &t, &probe.entity_id)?
        .is_empty()
    {
        return Err(OpsError::BadArgument(format!(
            "'{}' already has {t}/{target_id}; copy it under another id with --as NEW_ID",
            dst.name
        )));
    }
    check_references(
        local,
        &dst.id(),
        &dst.name,
        values.iter().map(|(_, v)| v),
        &[(t.clone(), target_id.clone())],
    )?;
    for (_, v) in &values {
        if let Value::Asset(a) = v {
            local.store().get_blob(&a.hash)?;
        }
    }
    values.push((
        COPIED_FROM.into(),
        Value::Text(format!("{}/{t}/{id}", src.name).into()),
    ));
    values.push((COPIED_AT.into(), Value::Int(wall_ms() as i64)));
    let mut d = Draft::new(
        dst.id(),
        BundleKind::Import,
        format!("copied {t}/{id} from '{}'", src.name),
    );
    for (f, v) in &values {
        let p = FieldPath::new(&t, &target_id, f).map_err(|e| OpsError::BadPath(e.to_string()))?;
        d.set(p, v.clone(), vec![]);
    }
    let (written, change) = local.commit(d)?;
    Ok((
        json!({
            "from": src.name,
            "to": dst.name,
            "entity": format!("{t}/{target_id}"),
            "copied_from": format!("{}/{t}/{id}", src.name),
            "fields": values.len(),
            "bundle": written.hash.to_string(),
        }),
        vec![change],
    ))
}
