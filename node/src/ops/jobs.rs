//! Jobs and imports: many changes from a program or a file, committed as
//! exactly one bundle or not at all.
//!
//! # Job output format (JSON lines)
//! A job writes one JSON object per line on stdout; blank lines are ignored.
//! ```text
//! {"set": "contacts.person/jane/phone", "value": "555-0100"}
//! {"set": "schedule.event/tech/starts", "value": 1764000000000}
//! {"set": "cues.cue/q12/follows", "value": {"entity": "cues.cue/q11"}}
//! {"delete": "contacts.person/old-temp"}
//! ```
//! `value` may be text, a number (integer or decimal), true/false, null, or
//! `{"entity": "TYPE/ID"}`. A field may be set at most once per job.
//!
//! The command runs in the CLI's process ([`run_command`]); its stdout is
//! staged to a file and [`commit_ops`] validates every line and commits one
//! `job_output` bundle, in the daemon or directly on the store. A command
//! that exits non-zero, or any line that does not validate, leaves the
//! workspace unchanged. Above 1,000 ops the answer carries an advisory.
//!
//! # Import
//! `import` reads contacts from JSON (an array of objects) or CSV (a header
//! row, then one contact per row) and commits them as one `import` bundle.
//! Each record needs an `id` or a `name` (the id is then made from the name);
//! every other column or key becomes a field of `contacts.person/ID`.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value as Json, json};
use troupe_protocol::bundle::BundleKind;
use troupe_protocol::draft::Draft;
use troupe_protocol::ids::EntityId;
use troupe_protocol::op::Op;
use troupe_protocol::path::FieldPath;
use troupe_protocol::value::Value;

use super::OpsError;
use super::fields::{parse_entity, parse_path};
use super::workspaces::resolve;
use crate::local::{Change, Local};

/// Entity type contacts are imported as.
pub const CONTACT_TYPE: &str = "contacts.person";
/// Largest job output or import file read (bytes).
pub const MAX_INPUT_BYTES: u64 = 64 << 20;

/// What a finished job command produced.
#[derive(Debug)]
pub struct JobOutput {
    /// Its stdout (the ops).
    pub stdout: Vec<u8>,
    /// The last lines of its stderr, for the report.
    pub stderr_tail: String,
    /// Exit code (`None` when killed by a signal).
    pub code: Option<i32>,
}

/// Why a job command could not be run to a useful end.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The command could not be started.
    #[error("the command {program:?} could not be started: {reason}")]
    Spawn {
        /// Program name.
        program: String,
        /// Why.
        reason: String,
    },
    /// The command ran and failed.
    #[error("the command exited with {status}{tail}")]
    Failed {
        /// "status 3" or "a signal".
        status: String,
        /// `": <stderr tail>"` or empty.
        tail: String,
    },
    /// No command was given.
    #[error("no command was given after `--`")]
    Empty,
}

/// Runs a job command to completion and captures its output. Only a zero
/// exit counts as success.
///
/// # Errors
/// [`JobError`] when it cannot start or exits non-zero.
pub fn run_command(argv: &[String], cwd: &Path) -> Result<JobOutput, JobError> {
    let (program, args) = argv.split_first().ok_or(JobError::Empty)?;
    let mut child = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| JobError::Spawn {
            program: program.clone(),
            reason: e.to_string(),
        })?;
    let mut err_pipe = child.stderr.take();
    let err_thread = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(p) = err_pipe.as_mut() {
            let _ = p.take(MAX_INPUT_BYTES).read_to_end(&mut buf);
        }
        buf
    });
    let mut stdout = Vec::new();
    if let Some(p) = child.stdout.take() {
        let _ = p.take(MAX_INPUT_BYTES).read_to_end(&mut stdout);
    }
    let status = child.wait().map_err(|e| JobError::Spawn {
        program: program.clone(),
        reason: e.to_string(),
    })?;
    let stderr = err_thread.join().unwrap_or_default();
    let text = String::from_utf8_lossy(&stderr);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let stderr_tail = lines[lines.len().saturating_sub(5)..].join(" | ");
    if !status.success() {
        return Err(JobError::Failed {
            status: status
                .code()
                .map_or_else(|| "a signal".to_owned(), |c| format!("status {c}")),
            tail: if stderr_tail.is_empty() {
                String::new()
            } else {
                format!(" (its last error output: {stderr_tail})")
            },
        });
    }
    Ok(JobOutput {
        stdout,
        stderr_tail,
        code: status.code(),
    })
}

/// A JSON value as a field value (see the module doc for the accepted forms).
///
/// # Errors
/// A sentence naming what is not accepted.
pub fn json_value(v: &Json) -> Result<Value, String> {
    Ok(match v {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::String(s) => Value::Text(s.as_str().into()),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().ok_or("the number is out of range")?),
        },
        Json::Object(o) if o.len() == 1 && o.get("entity").is_some_and(Json::is_string) => {
            let e = o["entity"].as_str().unwrap_or("");
            let (entity_type, id) = parse_entity(e).map_err(|e| e.to_string())?;
            Value::Entity { entity_type, id }
        }
        _ => {
            return Err(
                "a value must be text, a number, true/false, null or {\"entity\": \"TYPE/ID\"}"
                    .into(),
            );
        }
    })
}

/// Builds the ops of a job from its output, checking every line.
fn job_ops(
    local: &Local,
    ws: &troupe_protocol::ids::WorkspaceId,
    text: &str,
) -> Result<Vec<Op>, OpsError> {
    let mut ops = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |why: String| {
            let shown: String = line.chars().take(120).collect();
            OpsError::Rejected(format!(
                "line {n} of the job's output ({shown}) is not valid: {why}"
            ))
        };
        let j: Json = serde_json::from_str(line).map_err(|e| bad(format!("not JSON ({e})")))?;
        let obj = j
            .as_object()
            .ok_or_else(|| bad("not a JSON object".into()))?;
        if let Some(p) = obj.get("set") {
            let p = p
                .as_str()
                .ok_or_else(|| bad("\"set\" must be a TYPE/ID/FIELD text".into()))?;
            let path = parse_path(p).map_err(|e| bad(e.to_string()))?;
            let value = json_value(
                obj.get("value")
                    .ok_or_else(|| bad("\"value\" is missing".into()))?,
            )
            .map_err(bad)?;
            if !seen.insert(path.to_string()) {
                return Err(bad(format!("{path} is set twice in one job")));
            }
            let pred = local
                .store()
                .field_heads(ws, &path)?
                .iter()
                .map(|h| h.op)
                .collect();
            let op = Op::Set { path, value, pred };
            ops.push(op);
        } else if let Some(e) = obj.get("delete") {
            let e = e
                .as_str()
                .ok_or_else(|| bad("\"delete\" must be a TYPE/ID text".into()))?;
            let (entity_type, entity_id) = parse_entity(e).map_err(|e| bad(e.to_string()))?;
            ops.push(delete_op(local, ws, entity_type, entity_id)?);
        } else {
            return Err(bad("it has neither \"set\" nor \"delete\"".into()));
        }
    }
    if ops.is_empty() {
        return Err(OpsError::NothingToDo(
            "the job produced no changes (its output had no op lines)".into(),
        ));
    }
    Ok(ops)
}

fn delete_op(
    local: &Local,
    ws: &troupe_protocol::ids::WorkspaceId,
    entity_type: String,
    entity_id: EntityId,
) -> Result<Op, OpsError> {
    let mut pred: Vec<_> = local
        .store()
        .entity_fields(ws, &entity_type, &entity_id)?
        .iter()
        .flat_map(|(_, heads)| heads.iter().map(|h| h.op))
        .collect();
    pred.sort();
    pred.dedup();
    Ok(Op::DeleteEntity {
        entity_type,
        entity_id,
        pred,
    })
}

fn read_input(file: &Path) -> Result<String, OpsError> {
    let err = |reason: String| OpsError::File {
        path: file.to_owned(),
        reason,
    };
    let meta = std::fs::metadata(file).map_err(|e| err(e.to_string()))?;
    if meta.len() > MAX_INPUT_BYTES {
        return Err(err(format!(
            "it is {} bytes; at most {MAX_INPUT_BYTES} are read",
            meta.len()
        )));
    }
    std::fs::read_to_string(file).map_err(|e| err(e.to_string()))
}

fn commit(
    local: &mut Local,
    ws: troupe_protocol::ids::WorkspaceId,
    kind: BundleKind,
    summary: String,
    ops: Vec<Op>,
) -> Result<(Json, Vec<Change>), OpsError> {
    let mut d = Draft::new(ws, kind, summary.clone());
    for op in ops {
        d.push(op);
    }
    let (written, change) = local.commit(d)?;
    Ok((
        json!({
            "workspace": ws.to_string(),
            "bundle": written.hash.to_string(),
            "kind": kind.name(),
            "summary": summary,
            "ops": written.ops,
            "advisories": written.advisories.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        }),
        vec![change],
    ))
}

/// Validates a job's staged output (`ops_file`, JSON lines) and commits it
/// as one `job_output` bundle, or nothing.
///
/// # Errors
/// [`OpsError::Rejected`] naming the first bad line; nothing is written.
pub fn commit_ops(
    local: &mut Local,
    workspace: &str,
    label: &str,
    ops_file: &Path,
) -> Result<(Json, Vec<Change>), OpsError> {
    let info = resolve(local, workspace)?;
    if info.archived {
        return Err(OpsError::Archived);
    }
    let ws = info.id();
    let text = read_input(ops_file)?;
    let ops = job_ops(local, &ws, &text)?;
    let summary: String = format!("job: {label}").chars().take(200).collect();
    commit(local, ws, BundleKind::JobOutput, summary, ops)
}

/// Splits one CSV line into cells (`"` quotes, `""` inside quotes).
fn csv_cells(line: &str) -> Vec<String> {
    let mut cells = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => cells.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    cells.push(cur);
    cells.into_iter().map(|c| c.trim().to_owned()).collect()
}

/// An id from a name: lower-case letters and digits, '-' between words.
fn slug(name: &str) -> String {
    let mut s = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            s.push(c.to_ascii_lowercase());
        } else if !s.ends_with('-') && !s.is_empty() {
            s.push('-');
        }
    }
    s.trim_end_matches('-').chars().take(64).collect()
}

/// A field name from a column header: "Phone Number" → "phone_number".
fn field_name(h: &str) -> String {
    let mut s = String::new();
    for c in h.trim().chars() {
        if c.is_ascii_alphanumeric() {
            s.push(c.to_ascii_lowercase());
        } else if !s.ends_with('_') && !s.is_empty() {
            s.push('_');
        }
    }
    s.trim_end_matches('_').to_owned()
}

type Record = Vec<(String, Json)>;

fn records(file: &Path, text: &str) -> Result<Vec<Record>, OpsError> {
    let is_json = file
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        || text.trim_start().starts_with('[');
    if is_json {
        let j: Json = serde_json::from_str(text)
            .map_err(|e| OpsError::Rejected(format!("the file is not valid JSON: {e}")))?;
        let arr = j.as_array().ok_or_else(|| {
            OpsError::Rejected("the JSON file must hold an array of contacts".into())
        })?;
        arr.iter()
            .enumerate()
            .map(|(i, r)| {
                r.as_object()
                    .map(|o| o.iter().map(|(k, v)| (field_name(k), v.clone())).collect())
                    .ok_or_else(|| {
                        OpsError::Rejected(format!(
                            "contact {} of the file is not an object",
                            i + 1
                        ))
                    })
            })
            .collect()
    } else {
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let header: Vec<String> = lines
            .next()
            .map(csv_cells)
            .unwrap_or_default()
            .iter()
            .map(|h| field_name(h))
            .collect();
        if header.is_empty() || header.iter().any(String::is_empty) {
            return Err(OpsError::Rejected(
                "the CSV file needs a header row naming every column (e.g. name,phone,email)"
                    .into(),
            ));
        }
        Ok(lines
            .map(|l| {
                header
                    .iter()
                    .cloned()
                    .zip(csv_cells(l).into_iter().map(Json::String))
                    .collect()
            })
            .collect())
    }
}

/// Imports contacts from a JSON or CSV file as one `import` bundle.
///
/// # Errors
/// [`OpsError::Rejected`] naming the first bad record; nothing is written.
pub fn import(
    local: &mut Local,
    workspace: &str,
    file: &Path,
) -> Result<(Json, Vec<Change>), OpsError> {
    let info = resolve(local, workspace)?;
    if info.archived {
        return Err(OpsError::Archived);
    }
    let ws = info.id();
    let text = read_input(file)?;
    let recs = records(file, &text)?;
    let mut ops = Vec::new();
    let mut seen = HashSet::new();
    for (i, rec) in recs.iter().enumerate() {
        let n = i + 1;
        let get = |k: &str| {
            rec.iter()
                .find(|(f, _)| f == k)
                .and_then(|(_, v)| v.as_str().map(str::to_owned))
        };
        let id = match get("id").filter(|s| !s.is_empty()) {
            Some(id) => id,
            None => slug(&get("name").unwrap_or_default()),
        };
        if id.is_empty() {
            return Err(OpsError::Rejected(format!(
                "contact {n} of the file has neither an id nor a name"
            )));
        }
        if !seen.insert(id.clone()) {
            return Err(OpsError::Rejected(format!(
                "contact {n} of the file has the same id ({id}) as an earlier one"
            )));
        }
        for (field, v) in rec {
            if field == "id" || (v.is_string() && v.as_str() == Some("")) {
                continue;
            }
            let path = FieldPath::new(CONTACT_TYPE, &id, field).map_err(|e| {
                OpsError::Rejected(format!("contact {n} ({id}), column {field:?}: {e}"))
            })?;
            let value = json_value(v)
                .map_err(|e| OpsError::Rejected(format!("contact {n} ({id}), {field}: {e}")))?;
            let pred = local
                .store()
                .field_heads(&ws, &path)?
                .iter()
                .map(|h| h.op)
                .collect();
            ops.push(Op::Set { path, value, pred });
        }
    }
    if ops.is_empty() {
        return Err(OpsError::NothingToDo(
            "the file holds no contacts to import".into(),
        ));
    }
    let name = file
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    let summary = format!("imported {} contact(s) from '{name}'", seen.len());
    let (mut j, changes) = commit(local, ws, BundleKind::Import, summary, ops)?;
    j["contacts"] = json!(seen.len());
    Ok((j, changes))
}

/// Where the CLI stages a job's output before handing it to the node.
pub fn staging_file(data_dir: &Path) -> PathBuf {
    data_dir.join(format!("job-output-{}.jsonl", std::process::id()))
}
