//! Setting and reading fields, entity views, and open conflicts
//! described in words.
//!
//! A field shows one value (the register's winner: newest timestamp) but
//! keeps every concurrent value until someone resolves them; `get` and `show`
//! say so with `"conflict": true` and list all values, and `conflicts`
//! describes each group the way a stage manager would say it.

use std::collections::HashMap;

use serde_json::{Value as Json, json};
use troupe_protocol::bundle::BundleKind;
use troupe_protocol::conflict::{self, Names};
use troupe_protocol::draft::Draft;
use troupe_protocol::ids::{ActorId, BundleHash, EntityId, OpId, WorkspaceId};
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
    Ok((p.entity_type.into_string(), p.entity_id))
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
            Value::Text(t) if !t.is_empty() => Some(t.into_string()),
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
    let one = SetArgs {
        workspace: workspace.to_owned(),
        path: path.to_owned(),
        value,
    };
    let (written, change) = set_run(local, vec![one])
        .pop()
        .unwrap_or_else(|| Err(OpsError::Store("the write was lost".into())))?;
    Ok((written.to_json(), vec![change]))
}

/// One `set` command, as [`set_run`] takes it.
#[derive(Debug, Clone)]
pub struct SetArgs {
    /// Workspace name or id, as typed.
    pub workspace: String,
    /// `TYPE/ID/FIELD`.
    pub path: String,
    /// The new text.
    pub value: String,
}

/// One `set` command's answer and the change to tell sync about.
pub type SetAnswer = Result<(SetWritten, Change), OpsError>;

/// What one `set` wrote, as its answer reports it. It stays typed until the
/// answer is sent: a daemon commits runs of sets on its storage thread, the
/// one thread every write waits for, and building and later freeing a JSON
/// tree there for each set cost that thread about a tenth of its time. The
/// local API serialises it where the answer leaves; [`SetWritten::to_json`]
/// gives the same object for callers that want a JSON value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetWritten {
    /// The workspace written.
    pub workspace: WorkspaceId,
    /// The field set.
    pub path: FieldPath,
    /// The bundle that carries the change.
    pub bundle: BundleHash,
    /// Its sequence number in this device's chain.
    pub seq: u64,
    /// Whether the field showed a conflict, which this set resolved.
    pub resolved_conflict: bool,
}

impl SetWritten {
    /// The answer as a JSON value.
    pub fn to_json(&self) -> Json {
        json!({
            "workspace": self.workspace.to_string(),
            "path": self.path.to_string(),
            "bundle": self.bundle.to_string(),
            "seq": self.seq,
            "resolved_conflict": self.resolved_conflict,
        })
    }
}

impl serde::Serialize for SetWritten {
    /// The object [`SetWritten::to_json`] gives, byte for byte: the same
    /// keys in the same (sorted) order, written without building it.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        struct Shown<'a, T: std::fmt::Display>(&'a T);
        impl<T: std::fmt::Display> serde::Serialize for Shown<'_, T> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self.0)
            }
        }
        let mut m = s.serialize_map(Some(5))?;
        m.serialize_entry("bundle", &Shown(&self.bundle))?;
        m.serialize_entry("path", &Shown(&self.path))?;
        m.serialize_entry("resolved_conflict", &self.resolved_conflict)?;
        m.serialize_entry("seq", &self.seq)?;
        m.serialize_entry("workspace", &Shown(&self.workspace))?;
        m.end()
    }
}

/// Group commit of a run of `set` commands (the daemon collects those that
/// wait on the storage thread together): one bundle each, in order, all
/// committed in one store transaction and signed once per workspace
/// ([`Local::commit_run`]). A later set of a field in the run supersedes the
/// earlier one, exactly as if each had been committed alone. Returns one
/// answer per command, in order; a command that is invalid on its own
/// (unknown workspace, bad path, archived) fails alone, a store failure
/// fails the run.
pub fn set_run(local: &mut Local, sets: Vec<SetArgs>) -> Vec<SetAnswer> {
    let actor = local.actor();
    let mut answers: Vec<Option<SetAnswer>> = (0..sets.len()).map(|_| None).collect();
    let mut writable: HashMap<String, WorkspaceId> = HashMap::new();
    let mut next_seq: HashMap<WorkspaceId, u64> = HashMap::new();
    let mut in_run: HashMap<(WorkspaceId, FieldPath), u64> = HashMap::new();
    let mut drafts = Vec::new();
    let mut drafted: Vec<(usize, FieldPath, u64, bool)> = Vec::new();
    // Every set of the run reads from one snapshot: nothing is written
    // until the run is committed below.
    let reads = local.store().draft_reads().map_err(|e| e.to_string());
    for (i, s) in sets.into_iter().enumerate() {
        let drafted_one = (|| {
            let reads = reads.as_ref().map_err(|e| OpsError::Store(e.clone()))?;
            let ws = match writable.get(&s.workspace) {
                Some(ws) => *ws,
                None => {
                    let ws = super::lifecycle::ensure_writable(local, &s.workspace)?.id();
                    writable.insert(s.workspace.clone(), ws);
                    ws
                }
            };
            let path = parse_path(&s.path)?;
            let seq = match next_seq.get(&ws) {
                Some(seq) => seq + 1,
                None => reads.author_tip(&ws, &actor)?.last_seq + 1,
            };
            // A field set earlier in this run: that value is its only head.
            let (pred, resolved) = match in_run.get(&(ws, path.clone())) {
                Some(&earlier) => (
                    vec![OpId {
                        author: actor,
                        seq: earlier,
                        index: 0,
                    }],
                    false,
                ),
                None => {
                    let heads = reads.field_heads(&ws, &path)?;
                    let resolved = heads.len() > 1;
                    (heads.iter().map(|h| h.op).collect(), resolved)
                }
            };
            let summary = format!(
                "set {} of {}/{}",
                path.field, path.entity_type, path.entity_id
            );
            let mut d = Draft::new(ws, BundleKind::UserEdit, summary);
            d.set(path.clone(), Value::Text(s.value.into()), pred);
            next_seq.insert(ws, seq);
            in_run.insert((ws, path.clone()), seq);
            Ok::<_, OpsError>((d, path, seq, resolved))
        })();
        match drafted_one {
            Ok((d, path, seq, resolved)) => {
                drafts.push(d);
                drafted.push((i, path, seq, resolved));
            }
            Err(e) => answers[i] = Some(Err(e)),
        }
    }
    match local.commit_run(drafts) {
        Ok(written) => {
            for ((i, path, seq, resolved), (w, change)) in drafted.into_iter().zip(written) {
                debug_assert_eq!(w.seq, seq, "the run was numbered as drafted");
                answers[i] = Some(Ok((
                    SetWritten {
                        workspace: w.workspace,
                        path,
                        bundle: w.hash,
                        seq: w.seq,
                        resolved_conflict: resolved,
                    },
                    change,
                )));
            }
        }
        Err(e) => {
            let e = OpsError::from(e);
            for (i, ..) in drafted {
                answers[i] = Some(Err(match &e {
                    OpsError::Archived => OpsError::Archived,
                    OpsError::BadArgument(why) => OpsError::BadArgument(why.clone()),
                    OpsError::Store(why) => OpsError::Store(why.clone()),
                    other => OpsError::Store(other.to_string()),
                }));
            }
        }
    }
    answers
        .into_iter()
        .map(|a| a.unwrap_or_else(|| Err(OpsError::Store("the write was lost".into()))))
        .collect()
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
        out.insert(p.field.to_string(), heads_json(&names, heads));
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

#[cfg(test)]
mod tests {

    use super::*;
    use crate::ops::{lifecycle, workspaces};

    fn args(ws: &str, path: &str, value: &str) -> SetArgs {
        SetArgs {
            workspace: ws.into(),
            path: path.into(),
            value: value.into(),
        }
    }

    #[test]
    fn a_set_answer_sent_typed_is_the_json_object_it_stands_for() {
        let tmp = tempfile::tempdir().expect("tmp");
        let mut l = crate::ops::test_local(tmp.path());
        workspaces::create(&mut l, "Hamlet", "show").expect("create");
        let hamlet = workspaces::resolve(&l, "Hamlet").expect("hamlet").id();
        let mut answers = set_run(
            &mut l,
            vec![args("Hamlet", "contacts.person/jane/phone", "555-0100")],
        );
        let (written, _) = answers.pop().expect("one answer").expect("set");
        let json = written.to_json();
        assert_eq!(json["workspace"], hamlet.to_string());
        assert_eq!(json["path"], "contacts.person/jane/phone");
        assert_eq!(json["bundle"], written.bundle.to_string());
        assert_eq!(json["seq"], written.seq);
        assert_eq!(json["resolved_conflict"], false);
        // What the local API sends is what the JSON value would print.
        let sent = serde_json::to_string(&crate::ops::Answer::Set(written)).expect("serialise");
        assert_eq!(sent, serde_json::to_string(&json).expect("serialise"));
    }

    #[test]
    fn a_run_of_sets_reads_as_the_same_sets_committed_one_by_one() {
        let tmp = tempfile::tempdir().expect("tmp");
        let mut l = crate::ops::test_local(tmp.path());
        workspaces::create(&mut l, "Hamlet", "show").expect("create");
        workspaces::create(&mut l, "Macbeth", "show").expect("create");
        workspaces::create(&mut l, "Lear", "show").expect("create");
        lifecycle::archive(&mut l, "Lear").expect("archive");
        set(
            &mut l,
            "Hamlet",
            "contacts.person/jane/phone",
            "555-0000".into(),
        )
        .expect("set");

        let answers = set_run(
            &mut l,
            vec![
                args("Hamlet", "contacts.person/jane/phone", "555-0100"),
                args("Macbeth", "contacts.person/jane/phone", "555-0200"),
                args("Hamlet", "contacts.person/jane/name", "Jane Doe"),
                args("Nobody's show", "contacts.person/jane/phone", "1"),
                args("Hamlet", "not a path", "1"),
                args("Lear", "contacts.person/jane/phone", "1"),
                args("Hamlet", "contacts.person/jane/phone", "555-0101"),
            ],
        );
        assert_eq!(answers.len(), 7);
        assert!(matches!(answers[3], Err(OpsError::NoSuchWorkspace(_))));
        assert!(matches!(answers[4], Err(OpsError::BadPath(_))));
        assert!(matches!(answers[5], Err(OpsError::Archived)));
        let seqs: Vec<u64> = [0, 2, 6]
            .iter()
            .map(|&i| answers[i].as_ref().expect("hamlet set").0.seq)
            .collect();
        // The workspace-creation bundle and the first set came before.
        let first = seqs[0];
        assert_eq!(seqs, vec![first, first + 1, first + 2]);
        assert!(answers[1].is_ok());

        // The later set in the run superseded the earlier: one value, no conflict.
        let phone = get(&l, "Hamlet", "contacts.person/jane/phone").expect("get");
        assert_eq!(phone["value"], "555-0101");
        assert_eq!(phone["conflict"], false, "{phone}");
        assert_eq!(
            get(&l, "Hamlet", "contacts.person/jane/name").expect("get")["value"],
            "Jane Doe"
        );
        assert_eq!(
            get(&l, "Macbeth", "contacts.person/jane/phone").expect("get")["value"],
            "555-0200"
        );
        assert_eq!(
            get(&l, "Lear", "contacts.person/jane/phone").expect("get")["set"],
            false
        );

        // Only the last bundle of each workspace's run is signed, and the
        // whole store still verifies (the signature vouches for the run).
        let hamlet = workspaces::resolve(&l, "Hamlet").expect("hamlet").id();
        let actor = l.actor();
        let signed: Vec<bool> = seqs
            .iter()
            .map(|&s| {
                l.store()
                    .bundle(&hamlet, &actor, s)
                    .expect("read")
                    .expect("held")
                    .signature()
                    .is_some()
            })
            .collect();
        assert_eq!(signed, vec![false, false, true]);
        let repairs = l.store().scrub().expect("scrub");
        assert!(repairs.is_empty(), "{repairs:?}");
        assert!(l.store().verify_rebuild().expect("rebuild").is_empty());
    }
}
