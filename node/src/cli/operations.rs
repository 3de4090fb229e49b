//! The CLI side of conflicts, jobs, export and the other operations
//! commands: the parts that must run in the CLI's own process (a job's
//! command, an emergency export of a store too damaged to open) and their
//! answers in sentences.

use std::path::Path;

use serde_json::Value as Json;

use super::config::Config;
use super::progress;
use super::report::{EXIT_FAILED, EXIT_USAGE, Report};
use crate::ops::jobs::{self, JobError};
use crate::ops::{Request, maintenance};

/// Runs `command` and, if it exits 0, hands its output to the node to be
/// validated and committed as one `job_output` bundle.
///
/// # Errors
/// A [`Report`]: the command failed (exit status, stderr tail) or a line did
/// not validate; in both cases nothing was applied.
pub fn job_run(cfg: &Config, workspace: String, command: &[String]) -> Result<Json, Report> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| ".".into());
    let out = progress::around("Running the job", || jobs::run_command(command, &cwd)).map_err(
        |e| {
            let todo = match e {
                JobError::Spawn { .. } | JobError::Empty => {
                    "Check the command's name and path (it runs from the current directory) and try again."
                }
                JobError::Failed { .. } => {
                    "Fix what the command complains about, run it on its own to check its output, then run the job again."
                }
            };
            Report::new(
                EXIT_FAILED,
                format!("The job did not finish: {e}."),
                "Nothing was applied to the workspace; the job's output was discarded.",
                todo,
            )
        },
    )?;
    let staged = jobs::staging_file(&cfg.data_dir);
    std::fs::write(&staged, &out.stdout).map_err(|e| {
        Report::new(
            EXIT_FAILED,
            format!(
                "The job's output could not be staged in {}: {e}.",
                staged.display()
            ),
            "Nothing was applied to the workspace.",
            "Check the data directory's free space and permissions.",
        )
    })?;
    let label = command.join(" ").chars().take(160).collect();
    let result = super::commands::run(
        cfg,
        "job run",
        Request::JobCommit {
            workspace,
            label,
            ops_file: staged.clone(),
        },
    );
    let _ = std::fs::remove_file(&staged);
    result
}

/// Exports through the node or the store; when the store cannot be opened at
/// all, exports from a salvaged copy of its file ("emergency export": the
/// workspace must then be named by its full id).
///
/// # Errors
/// A [`Report`].
pub fn export(cfg: &Config, workspace: String, dir: &Path) -> Result<Json, Report> {
    let req = Request::Export {
        workspace: workspace.clone(),
        dir: dir.to_owned(),
    };
    let first = progress::around("Exporting", || super::commands::run(cfg, "export", req));
    match first {
        Ok(j) => Ok(j),
        Err(report) if report.what_happened.contains("store could not be opened") => {
            let ws = workspace.trim().parse().map_err(|_| {
                Report::new(
                    EXIT_USAGE,
                    "The store is too damaged to open, so the workspace cannot be found by name.",
                    "Nothing was exported or changed.",
                    "Name the workspace by its full id (from an earlier `troupe workspace list`, or an invite) to export from a salvaged copy.",
                )
            })?;
            let file = cfg.data_dir.join(crate::local::STORE_FILE);
            let r = progress::around("Exporting from a salvaged copy", || {
                troupe_storage::export_damaged(&file, &ws, dir)
            })
            .map_err(|e| {
                Report::new(
                    EXIT_FAILED,
                    format!("The emergency export failed: {e}."),
                    "Nothing readable could be exported; the store file was not changed.",
                    "Recover the workspace from another member's device (`troupe workspace join`).",
                )
            })?;
            Ok(maintenance::export_json(&r))
        }
        Err(report) => Err(report),
    }
}

fn short(v: &Json) -> String {
    let s = v.as_str().unwrap_or("");
    s[..8.min(s.len())].to_owned()
}

fn lines(v: &Json, key: &str) -> Vec<String> {
    v[key]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|x| x.as_str().unwrap_or("").to_owned())
        .collect()
}

fn print_bundle(b: &Json) {
    println!(
        "{}  {} by {} ({})",
        short(&b["bundle"]),
        b["summary"].as_str().unwrap_or(""),
        b["author_name"].as_str().unwrap_or("?"),
        b["kind"].as_str().unwrap_or("")
    );
    for o in b["ops"].as_array().cloned().unwrap_or_default() {
        println!("    {}", o["words"].as_str().unwrap_or(""));
    }
}

/// Prints the answers of the operations commands as sentences; `false` when
/// `command` is not one of them.
pub fn print_human(command: &str, v: &Json) -> bool {
    let s = |k: &str| v[k].as_str().unwrap_or("").to_owned();
    match command {
        "conflicts resolve" => {
            println!("{}.", s("summary"));
            println!("Saved as change {}.", short(&v["bundle"]));
        }
        "conflicts history" => {
            let list = v.as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                println!("No conflicts have been resolved in this workspace yet.");
            }
            for b in &list {
                print_bundle(b);
            }
        }
        "undo" | "redo" => {
            println!("{} (change {}).", s("summary"), short(&v["bundle"]));
            for r in lines(v, "restored") {
                println!("  {r}");
            }
            for l in v["left_alone"].as_array().cloned().unwrap_or_default() {
                println!("  Left alone: {}", l["words"].as_str().unwrap_or(""));
            }
        }
        "job run" | "import" => {
            println!(
                "Applied {} field change(s) as one change {} ({}).",
                v["ops"],
                short(&v["bundle"]),
                s("summary")
            );
            for a in lines(v, "advisories") {
                println!("Warning: {a}.");
            }
        }
        "search" => {
            let cur = v["current"].as_array().cloned().unwrap_or_default();
            let past = v["history"].as_array().cloned().unwrap_or_default();
            if cur.is_empty() && past.is_empty() {
                println!("Nothing matches {:?}.", s("text"));
            }
            if !cur.is_empty() {
                println!("Now:");
            }
            for c in &cur {
                println!("  {} = {}", c["path"].as_str().unwrap_or(""), c["value"]);
            }
            if !past.is_empty() {
                println!("In history:");
            }
            for p in &past {
                println!(
                    "  {}  {} by {}",
                    short(&p["bundle"]),
                    p["summary"].as_str().unwrap_or(""),
                    p["author_name"].as_str().unwrap_or("")
                );
                for o in lines(p, "matching_ops") {
                    println!("      {o}");
                }
            }
        }
        "show-bundle" => print_bundle(v),
        "quarantine list" => {
            let list = v["entries"].as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                println!("Nothing is in quarantine.");
            }
            for e in &list {
                println!(
                    "#{} in '{}', from {}: {}",
                    e["id"],
                    e["workspace_name"].as_str().unwrap_or("?"),
                    e["source"].as_str().unwrap_or("?"),
                    e["reason"].as_str().unwrap_or("")
                );
                println!(
                    "    Missing because of it: {}",
                    e["missing"].as_str().unwrap_or("")
                );
            }
            let skipped = v["skipped"].as_array().map_or(0, Vec::len);
            if skipped > 0 {
                println!("{skipped} entr(ies) were skipped earlier by choice.");
            }
        }
        "quarantine show" => {
            println!("#{} from {}: {}", v["id"], s("source"), s("reason"));
            println!("Missing because of it: {}", s("missing"));
            if !v["summary"].is_null() {
                println!("The change: {}", s("summary"));
                for o in lines(v, "ops") {
                    println!("    {o}");
                }
            }
        }
        "quarantine retry" => {
            if v["applied"].as_bool() == Some(true) {
                println!("Entry #{} verified this time and was applied.", v["id"]);
            } else {
                for q in v["quarantined_again"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                {
                    println!(
                        "It failed again and is back in quarantine as #{}: {}",
                        q["id"],
                        q["reason"].as_str().unwrap_or("")
                    );
                }
            }
        }
        "quarantine skip" => println!(
            "Entry #{} was dropped for good (recorded in `quarantine list` as skipped).",
            v["id"]
        ),
        "scrub" | "repair" => {
            let n = v["damaged"].as_u64().unwrap_or(0);
            if n == 0 {
                println!("Every stored change verified.");
            } else {
                println!("{n} stored change(s) failed verification and were moved to quarantine.");
            }
            let q = v["quarantined_total"].as_u64().unwrap_or(0);
            if q > 0 {
                println!(
                    "{q} entr(ies) in quarantine (`troupe quarantine list`). Clean copies are asked of members while the node runs (`troupe up`)."
                );
            }
        }
        "assets delete" => println!(
            "File {} is recorded as deleted; its bytes are freed by `troupe gc --apply` after {} days.",
            short(&v["asset"]),
            v["retention_days"]
        ),
        "assets list" => {
            let list = v.as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                println!("No files in this workspace.");
            }
            for a in &list {
                println!(
                    "{}  {} ({} bytes): {}",
                    short(&a["asset"]),
                    a["name"].as_str().unwrap_or(""),
                    a["size"],
                    a["words"].as_str().unwrap_or("")
                );
            }
        }
        "gc" => {
            let n = v["blobs"].as_array().map_or(0, Vec::len);
            if v["applied"].as_bool() == Some(true) {
                println!("Freed {} bytes ({n} file(s)).", v["bytes"]);
            } else if n == 0 {
                println!(
                    "Nothing to free: every file is still needed or within its retention period."
                );
            } else {
                println!(
                    "Would free {} bytes ({n} file(s)); run `troupe gc --apply` to free them.",
                    v["bytes"]
                );
            }
        }
        "export" => {
            println!(
                "Exported {} field(s) ({} in conflict, all values kept) and {} file(s) to {}.",
                v["fields"],
                v["conflicts"],
                v["assets_written"],
                s("state_file")
            );
            let missing = v["assets_missing"].as_array().map_or(0, Vec::len);
            if missing > 0 {
                println!(
                    "{missing} file(s) are not on this device and are listed in the JSON as missing."
                );
            }
            if !v["salvaged"].is_null() {
                println!(
                    "The store was damaged: this export holds everything that verified ({} changes).",
                    v["salvaged"]["bundles_kept"]
                );
            }
        }
        _ => return false,
    }
    true
}
