//! History with filters, text search over current values and history, and
//! one bundle shown with its ops in words.
//!
//! A person asks "who changed Jane's phone last week?" or "where did
//! 'Elsinore' come from?": `history` filters the oplog by entity, field,
//! author and time; `search` looks through what is shown now and through
//! every value ever written; `show_bundle` spells one change out.

use serde_json::{Value as Json, json};
use troupe_protocol::bundle::{Bundle, BundleKind};
use troupe_protocol::conflict::{Names, type_label};
use troupe_protocol::ids::{ActorId, WorkspaceId};
use troupe_protocol::op::Op;
use troupe_protocol::register::winner;
use troupe_storage::HistoryEntry;

use super::OpsError;
use super::fields::{WorkspaceNames, parse_entity, value_json};
use super::workspaces::resolve;
use crate::local::Local;

/// What `history` keeps; every field is optional and they combine with "and".
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct HistoryFilter {
    /// Only bundles touching this entity (`TYPE/ID`).
    pub entity: Option<String>,
    /// Only bundles touching this field name.
    pub field: Option<String>,
    /// Only bundles by this person (display name or id prefix).
    pub author: Option<String>,
    /// Only bundles at or after this time (see [`parse_time`]).
    pub since: Option<String>,
    /// Only bundles at or before this time.
    pub until: Option<String>,
}

/// Finds a held bundle of `ws` by its hash or a unique prefix of it (at least
/// 6 hex digits), as `history` prints them.
///
/// # Errors
/// [`OpsError::NotFound`] when none or several match.
pub fn find_bundle(local: &Local, ws: &WorkspaceId, given: &str) -> Result<Bundle, OpsError> {
    let g = given.trim().to_lowercase();
    if g.len() < 6 || !g.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(OpsError::NotFound(format!(
            "{given:?} is not a bundle id; use at least the first 6 characters shown by `troupe history`"
        )));
    }
    let hits: Vec<HistoryEntry> = local
        .store()
        .history(ws)?
        .into_iter()
        .filter(|e| e.hash.to_string().starts_with(&g))
        .collect();
    match hits.as_slice() {
        [one] => local
            .store()
            .history_bundle(ws, one)?
            .ok_or_else(|| OpsError::NotFound(format!("bundle {given} is no longer held here"))),
        [] => Err(OpsError::NotFound(format!(
            "no change with id {given} is in this workspace"
        ))),
        _ => Err(OpsError::NotFound(format!(
            "{given} matches several changes; use more of the id"
        ))),
    }
}

/// Finds the member a person means: display name (case-insensitive), "me",
/// or an actor id prefix. `None` when nobody in `candidates` matches.
pub fn match_actor(
    names: &WorkspaceNames<'_>,
    me: ActorId,
    candidates: impl IntoIterator<Item = ActorId>,
    given: &str,
) -> Option<ActorId> {
    let g = given.trim().to_lowercase();
    if g == "me" {
        return Some(me);
    }
    let mut by_name = None;
    let mut by_id = None;
    for a in candidates {
        if names.actor(&a).to_lowercase() == g {
            by_name = Some(a);
        }
        if g.len() >= 4 && a.to_string().starts_with(&g) {
            by_id = Some(a);
        }
    }
    by_name.or(by_id)
}

/// Parses a time as the user types it: `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM[:SS]`
/// (UTC), milliseconds since 1970, or an age like `30m`, `2h`, `7d` (that long
/// before `now_ms`). Returns ms since the Unix epoch.
///
/// # Errors
/// [`OpsError::BadArgument`] naming the accepted forms.
pub fn parse_time(given: &str, now_ms: u64) -> Result<u64, OpsError> {
    let g = given.trim();
    let bad = || {
        OpsError::BadArgument(format!(
            "{given:?} is not a time; write 2026-11-25, 2026-11-25T14:30, or an age like 30m, 2h, 7d"
        ))
    };
    if let Ok(ms) = g.parse::<u64>() {
        return Ok(ms);
    }
    if let Some(unit) = g.chars().last().filter(|c| "smhd".contains(*c)) {
        let n: u64 = g[..g.len() - 1].parse().map_err(|_| bad())?;
        let mult = match unit {
            's' => 1_000,
            'm' => 60_000,
            'h' => 3_600_000,
            _ => 86_400_000,
        };
        return Ok(now_ms.saturating_sub(n.saturating_mul(mult)));
    }
    let (date, time) = g.split_once(['T', ' ']).unwrap_or((g, ""));
    let d: Vec<i64> = date
        .split('-')
        .map(|p| p.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let [y, mo, day] = d.as_slice() else {
        return Err(bad());
    };
    if !(1..=12).contains(mo) || !(1..=31).contains(day) {
        return Err(bad());
    }
    let t: Vec<i64> = if time.is_empty() {
        vec![]
    } else {
        time.trim_end_matches('Z')
            .split(':')
            .map(|p| p.parse().map_err(|_| bad()))
            .collect::<Result<_, _>>()?
    };
    let secs_in_day = t.first().copied().unwrap_or(0) * 3600
        + t.get(1).copied().unwrap_or(0) * 60
        + t.get(2).copied().unwrap_or(0);
    let days = days_from_civil(*y, *mo, *day);
    let ms = (days * 86_400 + secs_in_day) * 1000;
    u64::try_from(ms).map_err(|_| bad())
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// One op in words, e.g. "set Contact 'Jane Doe' phone to '555'".
pub fn op_words(names: &WorkspaceNames<'_>, op: &Op) -> String {
    let entity = |t: &str, id: &troupe_protocol::ids::EntityId| match names.entity(t, id) {
        Some(l) => format!("{} '{l}'", type_label(t)),
        None => format!("{} {id}", type_label(t)),
    };
    match op {
        Op::Set { path, value, pred } => {
            let replaced = match pred.len() {
                0 => String::new(),
                1 => String::new(),
                n => format!(" (settling {n} conflicting values)"),
            };
            format!(
                "set {} {} to {}{replaced}",
                entity(&path.entity_type, &path.entity_id),
                path.field,
                value.display()
            )
        }
        Op::DeleteEntity {
            entity_type,
            entity_id,
            ..
        } => format!("deleted {}", entity(entity_type, entity_id)),
        Op::DeleteAsset { hash, reason } => {
            format!("deleted file {} (reason: {reason})", hash.short())
        }
    }
}

fn op_json(names: &WorkspaceNames<'_>, op: &Op) -> Json {
    let mut j = match op {
        Op::Set { path, value, pred } => json!({
            "op": "set", "path": path.to_string(), "value": value_json(value),
            "replaces": pred.len(),
        }),
        Op::DeleteEntity {
            entity_type,
            entity_id,
            ..
        } => json!({ "op": "delete", "entity": format!("{entity_type}/{entity_id}") }),
        Op::DeleteAsset { hash, reason } => {
            json!({ "op": "delete_asset", "asset": hash.to_string(), "reason": reason })
        }
    };
    j["words"] = json!(op_words(names, op));
    j
}

fn kind_json(kind: &BundleKind) -> Json {
    match kind {
        BundleKind::Undo { of } => json!({ "kind": "undo", "of": of.to_string() }),
        BundleKind::Redo { of } => json!({ "kind": "redo", "of": of.to_string() }),
        other => json!({ "kind": other.name() }),
    }
}

/// A bundle as JSON: header, kind, and every op with its words.
pub fn bundle_json(names: &WorkspaceNames<'_>, b: &Bundle) -> Json {
    let body = b.body();
    let mut j = json!({
        "bundle": b.hash().to_string(),
        "author": body.author.to_string(),
        "author_name": names.actor(&body.author),
        "seq": body.seq,
        "summary": body.summary,
        "time_ms": body.hlc.wall_ms,
        "ops": body.ops.iter().map(|o| op_json(names, o)).collect::<Vec<_>>(),
    });
    if let (Some(o), Json::Object(k)) = (j.as_object_mut(), kind_json(&body.kind)) {
        o.extend(k);
    }
    j
}

/// One bundle with its ops in words.
///
/// # Errors
/// [`OpsError::NotFound`] when no held bundle has that id.
pub fn show_bundle(local: &Local, workspace: &str, bundle: &str) -> Result<Json, OpsError> {
    let info = resolve(local, workspace)?;
    let b = find_bundle(local, &info.id(), bundle)?;
    let names = WorkspaceNames::new(local, info.id());
    Ok(bundle_json(&names, &b))
}

fn touches(
    op: &Op,
    entity: Option<&(String, troupe_protocol::ids::EntityId)>,
    field: Option<&str>,
) -> bool {
    let (t, id, f) = match op {
        Op::Set { path, .. } => (
            path.entity_type.as_str(),
            &path.entity_id,
            Some(path.field.as_str()),
        ),
        Op::DeleteEntity {
            entity_type,
            entity_id,
            ..
        } => (entity_type.as_str(), entity_id, None),
        Op::DeleteAsset { .. } => return entity.is_none() && field.is_none(),
    };
    entity.is_none_or(|(et, eid)| et == t && eid == id)
        && field.is_none_or(|want| f.is_none_or(|f| f == want))
}

/// The newest `limit` bundles of a workspace that pass `filter`, newest first.
///
/// # Errors
/// [`OpsError::BadArgument`] for an unknown author or bad time; store errors.
pub fn history(
    local: &Local,
    workspace: &str,
    limit: usize,
    filter: &HistoryFilter,
) -> Result<Json, OpsError> {
    let info = resolve(local, workspace)?;
    let ws = info.id();
    let names = WorkspaceNames::new(local, ws);
    let entries = local.store().history(&ws)?;
    let now = crate::local::wall_ms();
    let since = filter
        .since
        .as_deref()
        .map(|t| parse_time(t, now))
        .transpose()?;
    let until = filter
        .until
        .as_deref()
        .map(|t| parse_time(t, now))
        .transpose()?;
    let author = match &filter.author {
        Some(a) => Some(
            match_actor(&names, local.actor(), entries.iter().map(|e| e.author), a).ok_or_else(
                || {
                    OpsError::BadArgument(format!(
                        "nobody called {a:?} has made changes in '{}'",
                        info.name
                    ))
                },
            )?,
        ),
        None => None,
    };
    let entity = filter.entity.as_deref().map(parse_entity).transpose()?;
    let by_ops = entity.is_some() || filter.field.is_some();
    let mut out = Vec::new();
    for e in &entries {
        if out.len() >= limit {
            break;
        }
        if author.is_some_and(|a| a != e.author)
            || since.is_some_and(|s| e.hlc.wall_ms < s)
            || until.is_some_and(|u| e.hlc.wall_ms > u)
        {
            continue;
        }
        let mut j = json!({
            "bundle": e.hash.to_string(),
            "author": e.author.to_string(),
            "author_name": names.actor(&e.author),
            "seq": e.seq,
            "kind": e.kind,
            "summary": e.summary,
            "time_ms": e.hlc.wall_ms,
        });
        if by_ops {
            let Some(b) = local.store().history_bundle(&ws, e)? else {
                continue;
            };
            let hits: Vec<String> = b
                .body()
                .ops
                .iter()
                .filter(|o| touches(o, entity.as_ref(), filter.field.as_deref()))
                .map(|o| op_words(&names, o))
                .collect();
            if hits.is_empty() {
                continue;
            }
            j["matching_ops"] = json!(hits);
        }
        out.push(j);
    }
    Ok(Json::Array(out))
}

/// Text search (case-insensitive) over current values and every value and
/// summary in history.
///
/// # Errors
/// [`OpsError::BadArgument`] for empty text; store errors.
pub fn search(local: &Local, workspace: &str, text: &str) -> Result<Json, OpsError> {
    let info = resolve(local, workspace)?;
    let ws = info.id();
    let needle = text.trim().to_lowercase();
    if needle.is_empty() {
        return Err(OpsError::BadArgument(
            "the search text is empty; give a word to look for".into(),
        ));
    }
    let names = WorkspaceNames::new(local, ws);
    let hit = |s: &str| s.to_lowercase().contains(&needle);
    let mut current = Vec::new();
    for (path, heads) in local.store().fields(&ws)? {
        let shown = winner(&heads).and_then(|h| h.value.as_ref());
        let any = heads
            .iter()
            .filter_map(|h| h.value.as_ref())
            .any(|v| hit(&v.display()));
        if any || hit(&path.to_string()) {
            current.push(json!({
                "path": path.to_string(),
                "value": shown.map_or(Json::Null, value_json),
                "conflict": heads.len() > 1,
            }));
        }
    }
    let mut past = Vec::new();
    for e in local.store().history(&ws)? {
        let Some(b) = local.store().history_bundle(&ws, &e)? else {
            continue;
        };
        let ops: Vec<String> = b
            .body()
            .ops
            .iter()
            .filter(|o| match o {
                Op::Set { value, .. } => hit(&value.display()),
                Op::DeleteAsset { reason, .. } => hit(reason),
                Op::DeleteEntity { .. } => false,
            })
            .map(|o| op_words(&names, o))
            .collect();
        if !ops.is_empty() || hit(&e.summary) {
            past.push(json!({
                "bundle": e.hash.to_string(),
                "author_name": names.actor(&e.author),
                "kind": e.kind,
                "summary": e.summary,
                "time_ms": e.hlc.wall_ms,
                "matching_ops": ops,
            }));
        }
    }
    Ok(json!({ "text": text, "current": current, "history": past }))
}
