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
    // `archived` here is the store's local flag; the synced archive setting
    // is reported by `workspace show` and `workspace list`.
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
    if heads.len() == 1 && heads[0].value == Some(Value::Text(name.as_str().into())) {
        return Ok(vec![]);
    }
    let mut d = Draft::new(ws, BundleKind::UserEdit, format!("{name} joined"));
    d.set(
        path,
        Value::Text(name.into()),
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

/// Most peer addresses an invite carries (it must stay short enough to paste).
pub const MAX_INVITE_PEERS: usize = 4;

/// The invite for a workspace.
///
/// # Errors
/// Lookup and store errors.
pub fn invite(local: &Local, workspace: &str) -> Result<Json, OpsError> {
    invite_with(local, workspace, &[], true)
}

/// The invite for a workspace, carrying member addresses a joiner dials
/// without mDNS. A library workspace (one person's devices) needs `force`.
///
/// # Errors
/// [`OpsError::LibraryInvite`] for a library without `force`;
/// [`OpsError::BadArgument`] for a bad or excess address; lookup errors.
pub fn invite_with(
    local: &Local,
    workspace: &str,
    peers: &[String],
    force: bool,
) -> Result<Json, OpsError> {
    let info = resolve(local, workspace)?;
    if info.kind == WorkspaceKind::Library && !force {
        return Err(OpsError::LibraryInvite(info.name));
    }
    if peers.len() > MAX_INVITE_PEERS {
        return Err(OpsError::BadArgument(format!(
            "an invite carries at most {MAX_INVITE_PEERS} addresses, not {}",
            peers.len()
        )));
    }
    for p in peers {
        p.parse::<libp2p::Multiaddr>().map_err(|e| {
            OpsError::BadArgument(format!(
                "{p:?} is not a peer address ({e}); write it like /ip4/192.168.1.20/tcp/4001/p2p/12D3…"
            ))
        })?;
    }
    let code = Invite {
        secret: info.secret.clone(),
        name: info.name.clone(),
        kind: info.kind,
        peers: peers.to_vec(),
    }
    .encode();
    Ok(json!({
        "id": info.id().to_string(),
        "name": info.name,
        "kind": info.kind.to_string(),
        "peers": peers,
        "invite": code,
    }))
}

/// Adds an invite's addresses to `known_peers.json` in the data dir, which
/// the node dials at its next start (a running node is not redialled from
/// here: restart it, or pass `--peer`).
fn remember_peers(local: &Local, peers: &[String]) -> Vec<String> {
    let Some(dir) = local.path().parent() else {
        return vec![];
    };
    let file = dir.join(crate::dialer::KNOWN_PEERS_FILE);
    let mut known: Vec<String> = std::fs::read_to_string(&file)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let mut added = Vec::new();
    for p in peers {
        if p.parse::<libp2p::Multiaddr>().is_ok() && !known.contains(p) {
            known.push(p.clone());
            added.push(p.clone());
        }
    }
    if !added.is_empty() {
        let text = serde_json::to_string_pretty(&known).unwrap_or_default();
        if std::fs::write(&file, text).is_err() {
            return vec![];
        }
    }
    added
}

/// Joins a workspace from an invite; joining one already held is a no-op.
///
/// # Errors
/// [`OpsError::BadInvite`]; store errors.
pub fn join(local: &mut Local, text: &str) -> Result<(Json, Vec<Change>), OpsError> {
    let inv = Invite::decode(text).map_err(OpsError::BadInvite)?;
    let id = inv.secret.workspace_id();
    let remembered = remember_peers(local, &inv.peers);
    if let Some(held) = local.store().workspace(&id)? {
        let mut j = describe(&held);
        j["already_member"] = json!(true);
        j["peers_remembered"] = json!(remembered);
        return Ok((j, vec![Change::Dial(inv.peers)]));
    }
    let name: String = inv.name.chars().take(MAX_NAME_LEN).collect();
    let info = WorkspaceInfo::new(inv.secret, name, inv.kind);
    local.store().add_workspace(&info)?;
    let mut changes = vec![Change::WorkspaceAdded(info.secret.clone())];
    changes.extend(introduce(local, id)?);
    changes.push(Change::Dial(inv.peers.clone()));
    let mut j = describe(&info);
    j["already_member"] = json!(false);
    j["peers_remembered"] = json!(remembered);
    Ok((j, changes))
}

/// Every workspace on this device.
///
/// # Errors
/// Store errors.
pub fn list(local: &Local) -> Result<Json, OpsError> {
    let mut out = Vec::new();
    for w in local.store().workspaces()? {
        let mut j = describe(&w);
        j["archived"] = json!(w.archived || super::lifecycle::is_archived(local, &w.id())?);
        out.push(j);
    }
    Ok(Json::Array(out))
}
