//! Looking after the store: quarantine review, scrub and repair, asset
//! deletion and garbage collection, and export.
//!
//! These are the commands a stage manager reaches for when something looks
//! wrong ("why is Jordan's change missing?") or before the tour ends ("give
//! me everything as files"). Every answer says in words what is affected.
//!
//! Repair asks members for clean copies through [`Change::RepairWanted`]:
//! inside a running node the sync engine sends the request at once (and to
//! every member that connects later); run directly on the store, the holes
//! stay recorded and are filled when `troupe up` next runs.

use std::path::Path;

use serde_json::{Value as Json, json};
use troupe_protocol::bundle::{Bundle, BundleKind};
use troupe_protocol::conflict::Names;
use troupe_protocol::draft::Draft;
use troupe_protocol::ids::{ActorId, BlobHash};
use troupe_protocol::op::Op;
use troupe_protocol::sync::BlobState;
use troupe_protocol::value::Value;
use troupe_storage::{ExportError, ExportReport, QuarantineEntry, QuarantineError, RepairNeeded};

use super::OpsError;
use super::assets::ASSET_TYPE;
use super::fields::WorkspaceNames;
use super::search::op_words;
use super::workspaces::resolve;
use crate::local::{Change, Local};

impl From<QuarantineError> for OpsError {
    fn from(e: QuarantineError) -> Self {
        match e {
            QuarantineError::NotFound(id) => OpsError::NotFound(format!(
                "there is no quarantine entry {id} (it may have been retried or skipped already)"
            )),
            other => OpsError::Store(other.to_string()),
        }
    }
}

fn entry_json(local: &Local, e: &QuarantineEntry, detail: bool) -> Json {
    let names = WorkspaceNames::new(local, e.workspace);
    let ws_name = local
        .store()
        .workspace(&e.workspace)
        .ok()
        .flatten()
        .map(|w| w.name);
    let decoded = Bundle::decode(e.bytes.clone()).ok();
    let author = e.author.map(|a| names.actor(&a));
    // A copy a peer sent and sync refused is recorded without a slot: its
    // bytes still say which change they claim to be (not verified). The
    // author is named once, for the sentence and the JSON.
    let claimed = match (e.author, e.seq) {
        (Some(_), Some(_)) => None,
        _ => Bundle::claimed_slot(&e.bytes)
            .filter(|(ws, _, _)| *ws == e.workspace)
            .map(|(_, a, s)| (a, names.actor(&a), s)),
    };
    let missing = match (&decoded, &author, e.seq) {
        (Some(b), Some(a), Some(s)) => format!(
            "change {s} by {a} ('{}', {} field change(s)) is not applied; later changes by {a} that build on it wait for it",
            b.body().summary,
            b.body().ops.len()
        ),
        (None, Some(a), Some(s)) => format!(
            "change {s} by {a} is not applied (its bytes do not decode); later changes by {a} wait for a clean copy"
        ),
        _ => match &claimed {
            Some((a, who, s)) => claimed_missing(local, e, a, who, *s),
            None => "unreadable bytes; nothing known is missing because of them".to_owned(),
        },
    };
    let mut j = json!({
        "id": e.id,
        "workspace": e.workspace.to_string(),
        "workspace_name": ws_name,
        "author": e.author.map(|a| a.to_string()),
        "author_name": author,
        "seq": e.seq,
        "reason": e.reason,
        "source": e.source,
        "time_ms": e.time_ms,
        "expected": e.expected.map(|h| h.to_string()),
        "missing": missing,
        "repairable": e.expected.is_some() && e.author.is_some() && e.seq.is_some(),
        "claims": claimed.map(|(a, who, s)| json!({
            "author": a.to_string(),
            "author_name": who,
            "seq": s,
        })),
    });
    if detail {
        j["bytes"] = json!(e.bytes.len());
        if let Some(b) = decoded {
            j["summary"] = json!(b.body().summary);
            j["ops"] = json!(
                b.body()
                    .ops
                    .iter()
                    .map(|o| op_words(&names, o))
                    .collect::<Vec<_>>()
            );
        }
    }
    j
}

/// What is missing because of a refused copy that claims to be change `seq`
/// by `author` (named `who`): nothing once a clean copy of that change is
/// held (sync asked another member for it), else that change and the
/// author's later ones, until a member sends a clean copy.
fn claimed_missing(
    local: &Local,
    e: &QuarantineEntry,
    author: &ActorId,
    who: &str,
    seq: u64,
) -> String {
    match local.store().bundle(&e.workspace, author, seq) {
        Ok(Some(_)) => format!(
            "nothing: a clean copy of change {seq} by {who}, which these bytes claim to be, is held"
        ),
        _ => format!(
            "change {seq} by {who}, which these bytes claim to be, is not held yet; sync asks \
             members for a clean copy, and later changes by {who} wait for it"
        ),
    }
}

/// Quarantined bundles with reasons, sources and what is missing because of
/// each, plus the entries skipped earlier.
///
/// # Errors
/// Store errors.
pub fn quarantine_list(local: &Local) -> Result<Json, OpsError> {
    let list = local.store().quarantine_list()?;
    let skipped = local.store().quarantine_skipped()?;
    Ok(json!({
        "entries": list.iter().map(|e| entry_json(local, e, false)).collect::<Vec<_>>(),
        "skipped": skipped.iter().map(|s| json!({
            "id": s.id, "workspace": s.workspace.to_string(), "seq": s.seq,
            "reason": s.reason, "source": s.source, "skipped_ms": s.skipped_ms,
        })).collect::<Vec<_>>(),
    }))
}

/// One quarantine entry with its ops in words when the bytes decode.
///
/// # Errors
/// [`OpsError::NotFound`].
pub fn quarantine_show(local: &Local, id: u64) -> Result<Json, OpsError> {
    let e = local.store().quarantine_show(id)?;
    Ok(entry_json(local, &e, true))
}

/// Retries a quarantined bundle through the normal commit.
///
/// # Errors
/// [`OpsError::NotFound`]; store errors.
pub fn quarantine_retry(local: &mut Local, id: u64) -> Result<(Json, Vec<Change>), OpsError> {
    let out = local.store().quarantine_retry(id)?;
    let committed = !out.committed.is_empty();
    Ok((
        json!({
            "id": id,
            "applied": committed,
            "committed": out.committed.len(),
            "quarantined_again": out.quarantined.iter().map(|q| json!({"id": q.0, "reason": q.3})).collect::<Vec<_>>(),
        }),
        vec![],
    ))
}

/// Drops a quarantine entry for good; the choice is recorded.
///
/// # Errors
/// [`OpsError::NotFound`]; store errors.
pub fn quarantine_skip(local: &mut Local, id: u64) -> Result<(Json, Vec<Change>), OpsError> {
    let e = local.store().quarantine_show(id)?;
    local.store().quarantine_skip(id)?;
    Ok((
        json!({ "id": id, "skipped": true, "reason": e.reason }),
        vec![],
    ))
}

fn repairs(list: &[RepairNeeded]) -> Vec<Change> {
    list.iter()
        .filter_map(|r| {
            Some(Change::RepairWanted {
                workspace: r.workspace,
                author: r.author,
                seq: r.seq,
                hash: r.expected?,
            })
        })
        .collect()
}

/// Re-verifies every stored bundle; damaged ones go to quarantine and
/// members are asked for clean copies.
///
/// # Errors
/// Store errors.
pub fn scrub(local: &mut Local) -> Result<(Json, Vec<Change>), OpsError> {
    let needed = local.store().scrub()?;
    let j = json!({
        "damaged": needed.len(),
        "repairs": needed.iter().map(|r| json!({
            "workspace": r.workspace.to_string(),
            "author": r.author.to_string(),
            "seq": r.seq,
            "expected": r.expected.map(|h| h.to_string()),
        })).collect::<Vec<_>>(),
        "quarantined_total": local.store().quarantine_list()?.len(),
    });
    Ok((j, repairs(&needed)))
}

/// Asks members now for clean copies of every quarantined bundle whose
/// expected hash is known (after a scrub).
///
/// # Errors
/// Store errors.
pub fn repair(local: &mut Local) -> Result<(Json, Vec<Change>), OpsError> {
    let (mut j, mut changes) = scrub(local)?;
    for e in local.store().quarantine_list()? {
        if let (Some(author), Some(seq), Some(hash)) = (e.author, e.seq, e.expected) {
            changes.push(Change::RepairWanted {
                workspace: e.workspace,
                author,
                seq,
                hash,
            });
        }
    }
    changes.dedup();
    j["asked"] = json!(changes.len());
    Ok((j, changes))
}

fn parse_hash(
    local: &Local,
    ws: &troupe_protocol::ids::WorkspaceId,
    given: &str,
) -> Result<BlobHash, OpsError> {
    let g = given.trim().to_lowercase();
    if g.len() == 64 {
        return g
            .parse()
            .map_err(|_| OpsError::BadArgument(format!("{given:?} is not an asset hash")));
    }
    for (path, heads) in local.store().fields(ws)? {
        if path.entity_type != ASSET_TYPE || path.field != "file" {
            continue;
        }
        for h in heads {
            if let Some(Value::Asset(a)) = h.value
                && a.hash.to_string().starts_with(&g)
                && g.len() >= 6
            {
                return Ok(a.hash);
            }
        }
    }
    Err(OpsError::NotFound(format!(
        "no file with id {given} is recorded in this workspace (see `troupe assets list`)"
    )))
}

/// Records that an asset is deleted (`DeleteAsset`); its bytes are freed by a
/// later `gc` once the retention window has passed.
///
/// # Errors
/// [`OpsError::NotFound`] for an unknown asset; write errors.
pub fn assets_delete(
    local: &mut Local,
    workspace: &str,
    hash: &str,
    reason: &str,
) -> Result<(Json, Vec<Change>), OpsError> {
    let info = resolve(local, workspace)?;
    let ws = info.id();
    let hash = parse_hash(local, &ws, hash)?;
    let mut d = Draft::new(
        ws,
        BundleKind::UserEdit,
        format!("deleted file {}", hash.short()),
    );
    d.push(Op::DeleteAsset {
        hash,
        reason: reason.chars().take(500).collect(),
    });
    let (written, change) = local.commit(d)?;
    Ok((
        json!({
            "asset": hash.to_string(),
            "bundle": written.hash.to_string(),
            "retention_days": super::lifecycle::retention_days(local, &info)?,
        }),
        vec![change],
    ))
}

/// Every asset recorded in the workspace and whether its bytes are here.
///
/// # Errors
/// Store errors.
pub fn assets_list(local: &Local, workspace: &str) -> Result<Json, OpsError> {
    let info = resolve(local, workspace)?;
    let mut out = Vec::new();
    for (path, heads) in local.store().fields(&info.id())? {
        if path.entity_type != ASSET_TYPE || path.field != "file" {
            continue;
        }
        for h in heads {
            let Some(Value::Asset(a)) = h.value else {
                continue;
            };
            let (state, words) = match local.store().blob_state(&a.hash)? {
                BlobState::Complete { .. } => ("held", "on this device".to_owned()),
                BlobState::Partial { verified_len, size } => (
                    "arriving",
                    format!("arriving: {verified_len} of {size} bytes so far"),
                ),
                BlobState::Unavailable => (
                    "unavailable",
                    "removed from this device by garbage collection; a member may still have it"
                        .to_owned(),
                ),
                BlobState::Absent => (
                    "absent",
                    "not on this device yet; it arrives from a member that has it".to_owned(),
                ),
            };
            out.push(json!({
                "asset": a.hash.to_string(), "name": a.name, "size": a.size,
                "state": state, "words": words,
            }));
        }
    }
    Ok(Json::Array(out))
}

/// Garbage collection of asset bytes: a dry run (default) lists what would
/// be freed; `apply` frees it. Retention windows are respected by the store.
///
/// # Errors
/// Store errors.
pub fn gc(local: &mut Local, apply: bool) -> Result<(Json, Vec<Change>), OpsError> {
    let now = crate::local::wall_ms();
    super::lifecycle::apply_synced_retention(local)?;
    let report = if apply {
        local.store().gc_blobs(now)?
    } else {
        local.store().gc_blobs_dry_run(now)?
    };
    Ok((
        json!({
            "applied": apply,
            "blobs": report.freed.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
            "bytes": report.bytes,
        }),
        vec![],
    ))
}

/// The JSON form of an export report.
pub fn export_json(r: &ExportReport) -> Json {
    json!({
        "state_file": r.state_file.display().to_string(),
        "fields": r.fields,
        "conflicts": r.conflicts,
        "assets_written": r.assets_written,
        "assets_missing": r.assets_missing.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
        "salvaged": r.salvage.as_ref().map(|s| json!({
            "bundles_kept": s.bundles_kept,
            "lossless": s.is_lossless(),
        })),
    })
}

/// Exports a workspace's state as JSON plus asset files into `dir`. If the
/// store cannot be read cleanly, exports from a salvaged copy instead
/// (everything that verifies), and says so.
///
/// # Errors
/// [`OpsError::File`] for an unusable directory; store errors.
pub fn export(local: &Local, workspace: &str, dir: &Path) -> Result<Json, OpsError> {
    let info = resolve(local, workspace)?;
    let file_err = |e: std::io::Error| OpsError::File {
        path: dir.to_owned(),
        reason: e.to_string(),
    };
    let report = match local.store().export(&info.id(), dir) {
        Ok(r) => r,
        Err(ExportError::Io(e)) => return Err(file_err(e)),
        Err(ExportError::Read(_)) => troupe_storage::export_damaged(local.path(), &info.id(), dir)
            .map_err(|e| match e {
                ExportError::Io(e) => file_err(e),
                other => OpsError::Store(other.to_string()),
            })?,
        Err(other) => return Err(OpsError::Store(other.to_string())),
    };
    let mut j = export_json(&report);
    j["workspace"] = json!(info.name);
    Ok(j)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::workspaces;
    use troupe_protocol::crypto::ActorKey;

    #[test]
    fn a_copy_sync_refused_says_which_change_it_claims_and_whether_a_clean_one_is_held() {
        let tmp = tempfile::tempdir().expect("tmp");
        let mut l = crate::ops::test_local(tmp.path());
        workspaces::create(&mut l, "Hamlet", "show").expect("create");
        let ws = workspaces::resolve(&l, "Hamlet").expect("hamlet").id();
        let (written, _) = crate::ops::fields::set(
            &mut l,
            "Hamlet",
            "contacts.person/jane/phone",
            "555-0100".into(),
        )
        .expect("set");
        let seq = written["seq"].as_u64().expect("seq");
        let me = l.actor();
        let held = l
            .store()
            .bundle(&ws, &me, seq)
            .expect("read")
            .expect("the set is held");

        // A forged copy of a change held here (a flipped signature byte).
        let mut forged = held.bytes().to_vec();
        forged[5] ^= 1;
        // A copy of a change not held: another author's, which decodes.
        let other = ActorKey::from_secret_bytes([9; 32]);
        let mut body = held.body().clone();
        body.author = other.actor_id();
        body.seq = seq + 2;
        body.prev_hash = Some(held.hash());
        let unheld = body.sign(&other).expect("signs").bytes().to_vec();
        let mut cut = unheld.clone();
        cut.truncate(cut.len() - 3);
        let store = l.store();
        for (bytes, why) in [
            (forged, "bad signature"),
            (cut, "does not decode"),
            (vec![1, 2, 3], "garbage"),
        ] {
            store
                .quarantine_bytes(&ws, bytes, why, "peer 12D3KooWxyz")
                .expect("quarantined");
        }

        let list = quarantine_list(&l).expect("list");
        let entries = list["entries"].as_array().expect("entries");
        let missing: Vec<&str> = entries
            .iter()
            .map(|e| e["missing"].as_str().expect("missing"))
            .collect();
        assert!(
            missing[0].starts_with(&format!("nothing: a clean copy of change {seq} by ")),
            "{}",
            missing[0]
        );
        assert_eq!(entries[0]["claims"]["seq"], seq);
        assert_eq!(entries[0]["claims"]["author"], me.to_string());
        assert!(
            missing[1].starts_with(&format!("change {} by ", seq + 2))
                && missing[1].contains("is not held yet; sync asks members for a clean copy"),
            "{}",
            missing[1]
        );
        assert_eq!(entries[1]["claims"]["author"], other.actor_id().to_string());
        assert_eq!(
            missing[2],
            "unreadable bytes; nothing known is missing because of them"
        );
        assert!(entries[2]["claims"].is_null());
    }
}
