//! Export: a workspace's whole current state as one JSON file plus its asset
//! files, for an emergency backup or for reading the data with other tools.
//!
//! # Layout
//! ```text
//! <dir>/state.json          format, workspace metadata, every field with its
//!                           shown value, conflict flag and all heads, assets
//! <dir>/assets/<blake3 hex> the plain bytes of every held, verified asset
//! ```
//! Asset files are named by hash (user-given names are in `state.json`), so
//! no name can escape the directory. `state.json` is written last: a
//! directory without it is an unfinished export.
//!
//! # Non-goals
//! The workspace secret is not exported (a file left on a laptop must not
//! grant membership), nor is history: this is state, not a backup of the
//! oplog. Import belongs to the workspace lifecycle, not here.
//!
//! A damaged store exports through [`export_damaged`], which salvages a copy
//! first and reports what the copy lost alongside the export.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Value as Json, json};
use troupe_protocol::register::{Head, winner};
use troupe_protocol::{BlobHash, Value, WorkspaceId};

use crate::Store;
use crate::error::{BlobError, ExportError};
use crate::salvage::{SalvageReport, salvage_copy};

/// What an export wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportReport {
    /// The JSON file.
    pub state_file: PathBuf,
    /// Fields exported.
    pub fields: usize,
    /// Fields with more than one head (all heads are in the file).
    pub conflicts: usize,
    /// Asset files written.
    pub assets_written: usize,
    /// Assets referenced by state whose bytes are not here (never fetched,
    /// garbage collected, or corrupt): listed in the JSON with their status.
    pub assets_missing: Vec<BlobHash>,
    /// For [`export_damaged`]: what salvaging the damaged file lost.
    pub salvage: Option<SalvageReport>,
}

fn value_json(v: &Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Bool(b) => json!(b),
        Value::Int(i) => json!(i),
        Value::Float(f) => json!(f),
        Value::Text(t) => json!(t),
        Value::Bytes(b) => {
            json!({ "bytes_hex": b.iter().map(|x| format!("{x:02x}")).collect::<String>() })
        }
        Value::Entity { entity_type, id } => {
            json!({ "entity": { "type": entity_type, "id": id.as_str() } })
        }
        Value::Asset(a) => json!({ "asset": {
            "hash": a.hash.to_string(), "name": a.name, "size": a.size,
            "media_type": a.media_type, "file": format!("assets/{}", a.hash),
        }}),
    }
}

fn head_json(h: &Head) -> Json {
    json!({
        "op": h.op.to_string(),
        "hlc": { "wall_ms": h.hlc.wall_ms, "counter": h.hlc.counter },
        "deleted": h.value.is_none(),
        "value": h.value.as_ref().map_or(Json::Null, value_json),
    })
}

impl Store {
    /// Writes the workspace's current state to `dir` (created if needed): see
    /// the module doc for the layout.
    ///
    /// # Errors
    /// [`ExportError::UnknownWorkspace`], [`ExportError::Io`],
    /// [`ExportError::Read`] (a damaged store: use [`export_damaged`]).
    pub fn export(&self, ws: &WorkspaceId, dir: &Path) -> Result<ExportReport, ExportError> {
        let info = self
            .workspace(ws)?
            .ok_or(ExportError::UnknownWorkspace(*ws))?;
        let fields = self.fields(ws)?;
        let assets_dir = dir.join("assets");
        std::fs::create_dir_all(&assets_dir).map_err(ExportError::Io)?;
        let mut report = ExportReport::default();
        let mut entities: BTreeMap<(String, String), serde_json::Map<String, Json>> =
            BTreeMap::new();
        let mut assets: BTreeMap<BlobHash, Json> = BTreeMap::new();
        for (path, heads) in &fields {
            report.fields += 1;
            if heads.len() > 1 {
                report.conflicts += 1;
            }
            for h in heads {
                if let Some(Value::Asset(a)) = &h.value {
                    assets
                        .entry(a.hash)
                        .or_insert_with(|| value_json(&Value::Asset(a.clone())));
                }
            }
            let shown = winner(heads);
            let (ty, id) = path.entity();
            entities
                .entry((ty.to_string(), id.as_str().to_string()))
                .or_default()
                .insert(
                    path.field.to_string(),
                    json!({
                        "value": shown.and_then(|h| h.value.as_ref()).map_or(Json::Null, value_json),
                        "deleted": shown.is_some_and(|h| h.value.is_none()),
                        "conflict": heads.len() > 1,
                        "heads": heads.iter().map(head_json).collect::<Vec<_>>(),
                    }),
                );
        }
        let mut asset_list = Vec::new();
        for (hash, meta) in assets {
            let status = match self.get_blob(&hash) {
                Ok(bytes) => {
                    std::fs::write(assets_dir.join(hash.to_string()), bytes)
                        .map_err(ExportError::Io)?;
                    report.assets_written += 1;
                    "exported"
                }
                Err(e) => {
                    report.assets_missing.push(hash);
                    match e {
                        BlobError::Unavailable(_) => "unavailable (garbage collected)",
                        BlobError::Corrupt(_) => "corrupt here (fetch from a peer)",
                        _ => "not held here (fetch from a peer)",
                    }
                }
            };
            asset_list.push(json!({ "status": status, "ref": meta }));
        }
        let doc = json!({
            "format": "troupe-export/1",
            "workspace": {
                "id": ws.to_string(),
                "name": info.name,
                "kind": info.kind.to_string(),
                "archived": info.archived,
                "retention_days": info.retention_days,
            },
            "entities": entities.into_iter().map(|((ty, id), f)| json!({
                "type": ty, "id": id, "fields": f,
            })).collect::<Vec<_>>(),
            "assets": asset_list,
        });
        let state_file = dir.join("state.json");
        let tmp = dir.join("state.json.partial");
        let text = serde_json::to_vec_pretty(&doc).map_err(|e| ExportError::Io(e.into()))?;
        std::fs::write(&tmp, text).map_err(ExportError::Io)?;
        std::fs::rename(&tmp, &state_file).map_err(ExportError::Io)?;
        report.state_file = state_file;
        Ok(report)
    }
}

/// Exports a workspace from a store file that may be damaged: salvages a copy
/// of it into `dir` (the original is not touched), exports from the copy,
/// removes the copy, and returns what the salvage lost with the export.
///
/// # Errors
/// [`ExportError::Salvage`] when even salvage cannot read the file, and as
/// [`Store::export`].
pub fn export_damaged(
    store_file: &Path,
    ws: &WorkspaceId,
    dir: &Path,
) -> Result<ExportReport, ExportError> {
    std::fs::create_dir_all(dir).map_err(ExportError::Io)?;
    let copy = dir.join(".salvaged-copy.redb");
    if copy.exists() {
        std::fs::remove_file(&copy).map_err(ExportError::Io)?;
    }
    let salvage = salvage_copy(store_file, &copy).map_err(|e| ExportError::Salvage(Box::new(e)))?;
    // The copy keeps the store's id, so the store's commit journal applies
    // to it: writes made durable only there are exported too.
    let (journal, copy_journal) = (
        crate::journal::path_for(store_file),
        crate::journal::path_for(&copy),
    );
    let result = (|| {
        let _ = std::fs::remove_file(&copy_journal);
        if journal.exists() {
            std::fs::copy(&journal, &copy_journal).map_err(ExportError::Io)?;
        }
        let store = Store::open(&copy).map_err(|e| ExportError::Salvage(Box::new(e.into())))?;
        store.export(ws, dir)
    })();
    // The copy was only a means to read; the export is what the caller keeps.
    let _ = std::fs::remove_file(&copy);
    let _ = std::fs::remove_file(&copy_journal);
    let mut report = result?;
    report.salvage = Some(salvage);
    Ok(report)
}
