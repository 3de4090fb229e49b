//! Files in a workspace (logos, scripts, plots) as content-addressed assets.
//!
//! `assets add` stores the bytes once (deduplicated by blake3, compressed,
//! verified on every read) and records them as the entity
//! `assets.file/<first 16 hex digits of the hash>` with fields `file` (the
//! asset reference) and `name`. The op is what syncs to members and what keeps
//! the bytes from garbage collection; the bytes follow from a member that
//! holds them.

use std::path::Path;

use serde_json::{Value as Json, json};
use troupe_protocol::bundle::BundleKind;
use troupe_protocol::draft::Draft;
use troupe_protocol::ids::BlobHash;
use troupe_protocol::path::FieldPath;
use troupe_protocol::value::{AssetRef, Value};

use super::OpsError;
use super::workspaces::resolve;
use crate::local::{Change, Local};

/// Entity type of asset records.
pub const ASSET_TYPE: &str = "assets.file";
/// Largest file `assets add` accepts in one piece.
pub const MAX_ASSET_BYTES: u64 = 1 << 30;

fn media_type(name: &str) -> &'static str {
    let ext = name.rsplit('.').next().unwrap_or("").to_lowercase();
    match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "svg" => "image/svg+xml",
        "pdf" => "application/pdf",
        "txt" | "md" => "text/plain",
        "csv" => "text/csv",
        "json" => "application/json",
        "wav" => "audio/wav",
        "mp3" => "audio/mpeg",
        _ => "application/octet-stream",
    }
}

fn entity_id(hash: &BlobHash) -> String {
    hash.to_string()[..16].to_owned()
}

/// Stores `file` and records it in the workspace.
///
/// # Errors
/// [`OpsError::File`] when it cannot be read or is too large; store errors.
pub fn add(
    local: &mut Local,
    workspace: &str,
    file: &Path,
) -> Result<(Json, Vec<Change>), OpsError> {
    let info = resolve(local, workspace)?;
    let file_err = |reason: String| OpsError::File {
        path: file.to_owned(),
        reason,
    };
    let meta = std::fs::metadata(file).map_err(|e| file_err(e.to_string()))?;
    if !meta.is_file() {
        return Err(file_err("it is not a regular file".into()));
    }
    if meta.len() > MAX_ASSET_BYTES {
        return Err(file_err(format!(
            "it is {} bytes; assets are limited to {MAX_ASSET_BYTES} bytes",
            meta.len()
        )));
    }
    let bytes = std::fs::read(file).map_err(|e| file_err(e.to_string()))?;
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    if info.archived {
        return Err(OpsError::Archived);
    }
    let hash = local.store().put_blob(&bytes)?;
    let id = entity_id(&hash);
    let asset = AssetRef {
        hash,
        name: name.clone(),
        size: bytes.len() as u64,
        media_type: media_type(&name).to_owned(),
    };
    let ws = info.id();
    let file_path =
        FieldPath::new(ASSET_TYPE, &id, "file").map_err(|e| OpsError::BadPath(e.to_string()))?;
    let name_path =
        FieldPath::new(ASSET_TYPE, &id, "name").map_err(|e| OpsError::BadPath(e.to_string()))?;
    let mut d = Draft::new(ws, BundleKind::UserEdit, format!("added file '{name}'"));
    let pred = |p: &FieldPath| -> Result<Vec<_>, OpsError> {
        Ok(local
            .store()
            .field_heads(&ws, p)?
            .iter()
            .map(|h| h.op)
            .collect())
    };
    let (fp, np) = (pred(&file_path)?, pred(&name_path)?);
    d.set(file_path, Value::Asset(asset), fp);
    d.set(name_path, Value::Text(name.as_str().into()), np);
    let (written, change) = local.commit(d)?;
    Ok((
        json!({
            "asset": hash.to_string(),
            "entity": format!("{ASSET_TYPE}/{id}"),
            "name": name,
            "size": bytes.len(),
            "bundle": written.hash.to_string(),
        }),
        vec![change],
    ))
}

/// Writes an asset's bytes (verified) to `out`.
///
/// # Errors
/// [`OpsError::Asset`] when it is not held here; [`OpsError::File`].
pub fn get(local: &Local, workspace: &str, hash: &str, out: &Path) -> Result<Json, OpsError> {
    let info = resolve(local, workspace)?;
    let given = hash.trim().to_lowercase();
    let hash: BlobHash = if given.len() == 64 {
        given
            .parse()
            .map_err(|_| OpsError::BadArgument(format!("{given:?} is not an asset hash")))?
    } else {
        let id = given.get(..16).unwrap_or(&given);
        let p = FieldPath::new(ASSET_TYPE, id, "file")
            .map_err(|_| OpsError::BadArgument(format!("{given:?} is not an asset hash")))?;
        match local.store().value(&info.id(), &p)? {
            Some(Value::Asset(a)) => a.hash,
            _ => {
                return Err(OpsError::Asset(format!(
                    "no asset starting with {given} is recorded in '{}'",
                    info.name
                )));
            }
        }
    };
    let bytes = local.store().get_blob(&hash)?;
    std::fs::write(out, &bytes).map_err(|e| OpsError::File {
        path: out.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(json!({ "asset": hash.to_string(), "size": bytes.len(), "out": out.display().to_string() }))
}
