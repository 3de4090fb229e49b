//! Templates and clones: a workspace's current state, without history, as
//! the start of a new workspace.
//!
//! Decisions:
//! - A template is one JSON file (`"format": "troupe-template-1"`): the shown
//!   value of every field (a conflict contributes its winning value), and
//!   the bytes of every asset it references, hex-encoded inside the file. The
//!   bytes are included, not referenced by hash, because a template is made
//!   to be carried to devices that never held the source workspace.
//! - Member records (`troupe.member/…`, personal to the source's crew) and
//!   workspace settings (`troupe.workspace/settings`, e.g. archived) are
//!   left out: the new workspace starts writable and with only its creator.
//! - Entity ids are kept. Ids are unique only within a workspace and the new
//!   workspace has a fresh id and secret, so nothing can collide; keeping
//!   them keeps references between entities of the template valid without
//!   rewriting values.
//! - The new workspace's history holds only the new bundles (kind `import`),
//!   authored by the device that created it.
//!
//! A clone is the same thing without the file: the current state of a
//! workspace (archived ones included) copied into a new one.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};
use troupe_protocol::bundle::BundleKind;
use troupe_protocol::draft::Draft;
use troupe_protocol::ids::{BlobHash, WorkspaceId};
use troupe_protocol::path::FieldPath;
use troupe_protocol::register::winner;
use troupe_protocol::value::Value;

use super::OpsError;
use super::lifecycle::SETTINGS_TYPE;
use super::workspaces::{self, MEMBER_TYPE, resolve};
use crate::local::{Change, Local};

/// Format tag of template files.
pub const TEMPLATE_FORMAT: &str = "troupe-template-1";
/// Ops per bundle when filling a new workspace.
pub const OPS_PER_BUNDLE: usize = 256;
/// Largest template file read.
pub const MAX_TEMPLATE_BYTES: u64 = 2 << 30;

/// A template file: current state only, assets included.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Template {
    /// Always [`TEMPLATE_FORMAT`].
    pub format: String,
    /// Name of the workspace it was made from.
    pub source_name: String,
    /// `show` or `library`.
    pub kind: String,
    /// Every field's shown value, by path `type/id/field`.
    pub fields: BTreeMap<String, Value>,
    /// Asset bytes by hash, hex-encoded.
    pub assets: BTreeMap<String, String>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The current state of a workspace worth carrying into a new one.
///
/// # Errors
/// Store errors.
pub fn current_state(local: &Local, ws: &WorkspaceId) -> Result<Vec<(FieldPath, Value)>, OpsError> {
    let mut out = Vec::new();
    for (p, heads) in local.store().fields(ws)? {
        if p.entity_type == MEMBER_TYPE || p.entity_type == SETTINGS_TYPE {
            continue;
        }
        if let Some(v) = winner(&heads).and_then(|h| h.value.clone()) {
            out.push((p, v));
        }
    }
    Ok(out)
}

fn asset_hashes<'a>(values: impl IntoIterator<Item = &'a Value>) -> Vec<BlobHash> {
    let mut v: Vec<BlobHash> = values
        .into_iter()
        .filter_map(|v| match v {
            Value::Asset(a) => Some(a.hash),
            _ => None,
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Writes `fields` into workspace `ws` as import bundles.
///
/// # Errors
/// Store errors.
pub fn fill(
    local: &mut Local,
    ws: WorkspaceId,
    fields: Vec<(FieldPath, Value)>,
    summary: &str,
) -> Result<(usize, Vec<Change>), OpsError> {
    let mut changes = Vec::new();
    let mut bundles = 0;
    for chunk in fields.chunks(OPS_PER_BUNDLE) {
        let mut d = Draft::new(ws, BundleKind::Import, summary);
        for (p, v) in chunk {
            let preds = local
                .store()
                .field_heads(&ws, p)?
                .iter()
                .map(|h| h.op)
                .collect();
            d.set(p.clone(), v.clone(), preds);
        }
        let (_, c) = local.commit(d)?;
        changes.push(c);
        bundles += 1;
    }
    Ok((bundles, changes))
}

/// Writes a workspace's current state (no history) and its assets' bytes
/// to a template file.
///
/// # Errors
/// [`OpsError::Asset`] when an asset's bytes are not on this device;
/// [`OpsError::File`]; lookup and store errors.
pub fn export(local: &Local, workspace: &str, file: &Path) -> Result<Json, OpsError> {
    let info = resolve(local, workspace)?;
    let state = current_state(local, &info.id())?;
    let mut assets = BTreeMap::new();
    for h in asset_hashes(state.iter().map(|(_, v)| v)) {
        assets.insert(h.to_string(), hex(&local.store().get_blob(&h)?));
    }
    let t = Template {
        format: TEMPLATE_FORMAT.into(),
        source_name: info.name.clone(),
        kind: info.kind.to_string(),
        fields: state
            .iter()
            .map(|(p, v)| (p.to_string(), v.clone()))
            .collect(),
        assets,
    };
    let text = serde_json::to_vec_pretty(&t).map_err(|e| OpsError::Store(e.to_string()))?;
    std::fs::write(file, &text).map_err(|e| OpsError::File {
        path: file.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(json!({
        "name": info.name,
        "file": file.display().to_string(),
        "fields": t.fields.len(),
        "assets": t.assets.len(),
        "bytes": text.len(),
    }))
}

/// Creates a workspace (fresh id and secret) from a template file.
///
/// # Errors
/// [`OpsError::File`] for an unreadable or malformed file; creation and
/// store errors.
pub fn create_from(
    local: &mut Local,
    name: &str,
    kind: Option<&str>,
    file: &Path,
) -> Result<(Json, Vec<Change>), OpsError> {
    let bad = |reason: String| OpsError::File {
        path: file.to_owned(),
        reason,
    };
    let meta = std::fs::metadata(file).map_err(|e| bad(e.to_string()))?;
    if meta.len() > MAX_TEMPLATE_BYTES {
        return Err(bad("it is too large to be a template".into()));
    }
    let bytes = std::fs::read(file).map_err(|e| bad(e.to_string()))?;
    let t: Template = serde_json::from_slice(&bytes)
        .map_err(|e| bad(format!("it is not a Troupe template ({e})")))?;
    if t.format != TEMPLATE_FORMAT {
        return Err(bad(format!(
            "it is a {:?} file; this version reads {TEMPLATE_FORMAT}",
            t.format
        )));
    }
    let mut fields = Vec::with_capacity(t.fields.len());
    for (p, v) in t.fields {
        let path: FieldPath = p
            .parse()
            .map_err(|e| bad(format!("it has a bad field path {p:?}: {e}")))?;
        fields.push((path, v));
    }
    // Every asset's bytes must be present and match their hash.
    for h in asset_hashes(fields.iter().map(|(_, v)| v)) {
        let data = t
            .assets
            .get(&h.to_string())
            .and_then(|s| unhex(s))
            .ok_or_else(|| bad(format!("it lacks the bytes of asset {}", h.short())))?;
        let stored = local.store().put_blob(&data)?;
        if stored != h {
            return Err(bad(format!(
                "the bytes of asset {} do not match",
                h.short()
            )));
        }
    }
    let kind = kind.map_or(t.kind.clone(), str::to_owned);
    let (mut j, mut changes) = workspaces::create(local, name, &kind)?;
    let ws: WorkspaceId = resolve(local, j["id"].as_str().unwrap_or_default())?.id();
    let n = fields.len();
    let (bundles, more) = fill(
        local,
        ws,
        fields,
        &format!("created from template '{}'", t.source_name),
    )?;
    changes.extend(more);
    j["from_template"] = json!(file.display().to_string());
    j["fields"] = json!(n);
    j["bundles"] = json!(bundles);
    Ok((j, changes))
}

/// Copies a workspace's current state (no history) into a new workspace.
///
/// # Errors
/// [`OpsError::Asset`] when an asset's bytes are not on this device;
/// creation and store errors.
pub fn clone(
    local: &mut Local,
    workspace: &str,
    new_name: &str,
) -> Result<(Json, Vec<Change>), OpsError> {
    let info = resolve(local, workspace)?;
    let state = current_state(local, &info.id())?;
    for h in asset_hashes(state.iter().map(|(_, v)| v)) {
        local.store().get_blob(&h)?;
    }
    let (mut j, mut changes) = workspaces::create(local, new_name, &info.kind.to_string())?;
    let ws = resolve(local, j["id"].as_str().unwrap_or_default())?.id();
    let n = state.len();
    let (bundles, more) = fill(local, ws, state, &format!("cloned from '{}'", info.name))?;
    changes.extend(more);
    j["cloned_from"] = json!(info.name);
    j["fields"] = json!(n);
    j["bundles"] = json!(bundles);
    Ok((j, changes))
}
