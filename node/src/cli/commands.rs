//! Store commands from the command line: through the running daemon when one
//! answers for the data dir, otherwise directly on the store (holding the
//! data dir's lock, so a daemon cannot start halfway through). Both paths run
//! the same [`crate::ops::execute`], so they answer the same JSON.

use std::path::Path;

use serde_json::Value as Json;

use super::config::Config;
use super::report::{EXIT_FAILED, EXIT_USAGE, Report};
use crate::daemon::{self, DaemonError};
use crate::identity::{Identity, KEY_FILE};
use crate::local::Local;
use crate::local_api::{ApiClient, ClientError};
use crate::ops::{self, OpsError, Request};

/// Runs `req` and returns its JSON answer.
///
/// # Errors
/// A [`Report`] in three sentences.
pub fn run(cfg: &Config, command: &str, req: Request) -> Result<Json, Report> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            Report::new(
                EXIT_FAILED,
                format!("The async runtime could not start: {e}."),
                "Nothing was read or changed.",
                "Check this machine's process limits and try again.",
            )
        })?;
    if let Some(client) = rt.block_on(ApiClient::detect(&cfg.data_dir)) {
        let req = match req {
            Request::WorkspaceInvite {
                workspace,
                peers,
                force,
            } if peers.is_empty() => Request::WorkspaceInvite {
                workspace,
                peers: own_addresses(&rt.block_on(client.get("/v1/status")).unwrap_or_default()),
                force,
            },
            other => other,
        };
        let body = serde_json::to_value(&req).unwrap_or_default();
        return rt
            .block_on(client.post("/v1/command", &body))
            .map_err(|e| match e {
                ClientError::Status { message, kind, .. } if !kind.is_empty() => {
                    report_kind(command, &kind, &message, req.writes())
                }
                other => Report::new(
                    EXIT_FAILED,
                    format!("The running node did not carry out `{command}`: {other}."),
                    "If it was a change, it may or may not have been made.",
                    "Check with `troupe history`, and look at the node's log.",
                ),
            });
    }
    direct(cfg, command, req)
}

/// A running node's own dialable addresses (from its status), for an invite
/// made without `--peer`: addresses other machines can reach first, loopback
/// last, each ending in `/p2p/<peer id>`, at most
/// [`MAX_INVITE_PEERS`](crate::ops::workspaces::MAX_INVITE_PEERS).
fn own_addresses(status: &Json) -> Vec<String> {
    let Some(id) = status["peer_id"].as_str() else {
        return Vec::new();
    };
    let mut addrs: Vec<&str> = status["listen_addrs"]
        .as_array()
        .map(|a| a.iter().filter_map(Json::as_str).collect())
        .unwrap_or_default();
    addrs.sort_by_key(|a| a.starts_with("/ip4/127.") || a.starts_with("/ip6/::1/"));
    addrs
        .into_iter()
        .take(crate::ops::workspaces::MAX_INVITE_PEERS)
        .map(|a| format!("{a}/p2p/{id}"))
        .collect()
}

fn direct(cfg: &Config, command: &str, req: Request) -> Result<Json, Report> {
    let dir = &cfg.data_dir;
    if !dir.join(KEY_FILE).exists() {
        return Err(Report::new(
            EXIT_USAGE,
            format!("There is no Troupe node set up in {}.", dir.display()),
            "Nothing was read or changed.",
            format!(
                "Run `troupe init --name \"Your Name\" --data-dir {}` first (or pass the --data-dir you used before).",
                dir.display()
            ),
        ));
    }
    let _lock = daemon::lock(dir).map_err(|e| match e {
        DaemonError::AlreadyRunning(_) => Report::new(
            EXIT_FAILED,
            format!(
                "A node is running on {} but its local API does not answer.",
                dir.display()
            ),
            "Nothing was read or changed.",
            "Wait a moment and try again; if it persists, stop the node (Ctrl-C) and restart it.",
        ),
        other => Report::new(
            EXIT_FAILED,
            format!("The data directory cannot be used: {other}."),
            "Nothing was read or changed.",
            "Check the directory's permissions and free space.",
        ),
    })?;
    let identity = load_identity(dir)?;
    let (mut local, salvaged) = Local::open(dir, &identity).map_err(|e| {
        Report::new(
            EXIT_FAILED,
            format!("The store could not be opened: {e}."),
            "Nothing was read or changed.",
            "If the disk is full or read-only, fix that; otherwise run `troupe up` once, which salvages a damaged store.",
        )
    })?;
    if let Some(r) = salvaged {
        eprintln!(
            "Note: the store file was damaged and has been salvaged ({} bundles kept; the damaged file is kept at {}). Start `troupe up` to fetch what was lost from other members.",
            r.bundles_kept,
            r.damaged_copy
                .as_ref()
                .map_or_else(|| "?".into(), |p| p.display().to_string())
        );
    }
    let writes = req.writes();
    ops::execute(&mut local, req)
        .map(|(j, _changes)| j)
        .map_err(|e| report_ops(command, &e, writes))
}

fn load_identity(dir: &Path) -> Result<Identity, Report> {
    Identity::load(&dir.join(KEY_FILE)).map_err(|e| {
        Report::new(
            EXIT_FAILED,
            format!("This device's key could not be used: {e}."),
            "Nothing was read or changed.",
            "Restore the key file from a backup, or fix its permissions with `chmod 600`.",
        )
    })
}

fn report_ops(command: &str, e: &OpsError, writes: bool) -> Report {
    report_kind(command, e.kind(), &e.to_string(), writes)
}

/// Three sentences for a command error, from its kind and message (the same
/// whether it came from the daemon or ran here).
pub fn report_kind(command: &str, kind: &str, message: &str, writes: bool) -> Report {
    let affected = if writes {
        "Nothing was changed."
    } else {
        "Nothing was changed; nothing could be read."
    };
    let (code, todo) = match kind {
        "no_such_workspace" => (
            EXIT_USAGE,
            "List the workspaces on this device with `troupe workspace list`, or join one with `troupe workspace join INVITE`.",
        ),
        "ambiguous_workspace" => (
            EXIT_USAGE,
            "Use more of the workspace id, or its full name.",
        ),
        "bad_path" => (
            EXIT_USAGE,
            "Write fields as TYPE/ID/FIELD, e.g. contacts.person/jane/phone: lower-case type and field, and an id of letters, digits, '-' or '_'.",
        ),
        "bad_invite" => (
            EXIT_USAGE,
            "Ask for the invite again (`troupe workspace invite` on a member's device) and paste it whole.",
        ),
        "bad_argument" => (EXIT_USAGE, "Fix the argument and run the command again."),
        "archived" => (
            EXIT_FAILED,
            "Un-archive it with `troupe workspace unarchive WORKSPACE` if the show is running again; it can still be read, exported and cloned.",
        ),
        "cross_workspace" => (
            EXIT_USAGE,
            "Copy the referenced entity into the target workspace first (`troupe copy FROM TYPE/ID TO`), or leave the reference out.",
        ),
        "library_invite" => (
            EXIT_USAGE,
            "Invite only your own devices; to do so, run `troupe workspace invite WORKSPACE --force`, or copy entities into a show with `troupe copy`.",
        ),
        "file" => (EXIT_FAILED, "Check the file's path and permissions."),
        "asset" => (
            EXIT_FAILED,
            "Connect to a member that has the file (`troupe up`), then try again.",
        ),
        "not_found" => (
            EXIT_USAGE,
            "List what is there first (`troupe history`, `troupe conflicts list`, `troupe quarantine list`) and use one of those ids.",
        ),
        "nothing_to_do" => (
            EXIT_FAILED,
            "Check `troupe history` and `troupe conflicts list` to see the current state.",
        ),
        "rejected" => (
            EXIT_FAILED,
            "Fix the line named above (the format is in the README under \"Jobs\") and run it again.",
        ),
        _ if message.contains("No space left on device") => (
            EXIT_FAILED,
            "Free some space on the disk holding the data directory, then try again; a running node opens its store again by itself.",
        ),
        _ => (
            EXIT_FAILED,
            "Check the disk; `troupe up` salvages a damaged store and fetches lost data from other members.",
        ),
    };
    Report::new(
        code,
        format!("`troupe {command}` failed: {message}."),
        affected,
        todo,
    )
}

/// Prints an answer as sentences (the `--json` output is the JSON itself).
pub fn print_human(command: &str, v: &Json) {
    let s = |k: &str| v[k].as_str().unwrap_or("").to_owned();
    match command {
        "workspace create" => {
            println!("Created workspace '{}' ({}).", s("name"), s("kind"));
            if let Some(n) = v["fields"].as_u64() {
                println!("Filled from the template with {n} fields (no history).");
            }
            println!("Id: {}", s("id"));
            println!(
                "Invite others with: troupe workspace invite \"{}\"",
                s("name")
            );
        }
        "workspace invite" => {
            if v["kind"] == "library" {
                println!("Note: this is a personal library; invite only your own devices.");
            }
            println!(
                "Invite to '{}' (anyone holding it can join; share it like a key):",
                s("name")
            );
            println!("{}", s("invite"));
        }
        "workspace join" => {
            if v["already_member"].as_bool() == Some(true) {
                println!("This device is already a member of '{}'.", s("name"));
            } else {
                println!(
                    "Joined '{}'. Its data arrives when a member's device is reachable (`troupe up`).",
                    s("name")
                );
            }
        }
        "workspace list" => {
            let list = v.as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                println!(
                    "No workspaces yet: `troupe workspace create NAME` or `troupe workspace join INVITE`."
                );
            }
            for w in &list {
                let archived = if w["archived"].as_bool() == Some(true) {
                    ", archived"
                } else {
                    ""
                };
                println!(
                    "{}  {} ({}{archived}, keeps removed files {} days)",
                    &w["id"].as_str().unwrap_or("")[..8.min(w["id"].as_str().unwrap_or("").len())],
                    w["name"].as_str().unwrap_or(""),
                    w["kind"].as_str().unwrap_or(""),
                    w["retention_days"]
                );
            }
        }
        "set" => {
            println!("Set {}.", s("path"));
            if v["resolved_conflict"].as_bool() == Some(true) {
                println!("This replaces the conflicting values the field had.");
            }
        }
        "get" => {
            if v["set"].as_bool() != Some(true) {
                println!("{} is not set.", s("path"));
            } else {
                print_field(&s("path"), v);
            }
        }
        "show" => {
            println!("{}", v["label"].as_str().unwrap_or(&s("entity")));
            let fields = v["fields"].as_object().cloned().unwrap_or_default();
            if fields.is_empty() {
                println!("  (no fields)");
            }
            for (name, f) in &fields {
                print_field(&format!("  {name}"), f);
            }
            for c in v["conflicts"].as_array().cloned().unwrap_or_default() {
                println!("Conflict: {}", c.as_str().unwrap_or(""));
            }
        }
        "conflicts" => {
            let list = v.as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                println!("No conflicts.");
            }
            for c in &list {
                println!("{}", c["description"].as_str().unwrap_or(""));
            }
        }
        "history" => {
            let list = v.as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                println!("No changes match.");
            }
            for e in list {
                println!(
                    "{}  {:<10} {} ({})",
                    &e["bundle"].as_str().unwrap_or("")
                        [..8.min(e["bundle"].as_str().unwrap_or("").len())],
                    e["author_name"].as_str().unwrap_or(""),
                    e["summary"].as_str().unwrap_or(""),
                    e["kind"].as_str().unwrap_or("")
                );
                for o in e["matching_ops"].as_array().cloned().unwrap_or_default() {
                    println!("            {}", o.as_str().unwrap_or(""));
                }
            }
        }
        "assets add" => println!(
            "Stored '{}' ({} bytes) as asset {}.",
            s("name"),
            v["size"],
            s("asset")
        ),
        "assets get" => println!("Wrote {} bytes to {}.", v["size"], s("out")),
        c if crate::cli::lifecycle::is_lifecycle(c) => crate::cli::lifecycle::print_lifecycle(c, v),
        other if super::operations::print_human(other, v) => {}
        _ => println!("{v}"),
    }
}

fn print_field(label: &str, f: &Json) {
    let shown = display(&f["value"]);
    if f["conflict"].as_bool() == Some(true) {
        let all: Vec<String> = f["values"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|x| {
                format!(
                    "{} (by {})",
                    display(&x["value"]),
                    x["author_name"].as_str().unwrap_or("?")
                )
            })
            .collect();
        println!("{label}: {shown}   [conflict: {}]", all.join(" / "));
    } else {
        println!("{label}: {shown}");
    }
}

fn display(v: &Json) -> String {
    match v {
        Json::String(t) => t.clone(),
        Json::Null => "(empty)".into(),
        other => other.to_string(),
    }
}
