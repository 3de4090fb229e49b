//! Sentences for the workspace lifecycle commands (leave, show, archive,
//! retention, templates, clone, copy), kept apart from the other commands'
//! output so each can change without touching the other.

use serde_json::Value as Json;

/// Whether `command` is one of the lifecycle commands printed here.
pub fn is_lifecycle(command: &str) -> bool {
    matches!(
        command,
        "workspace leave"
            | "workspace show"
            | "workspace archive"
            | "workspace unarchive"
            | "workspace retention"
            | "workspace template export"
            | "workspace clone"
            | "copy"
    )
}

/// Prints a lifecycle command's answer as sentences.
pub fn print_lifecycle(command: &str, v: &Json) {
    let s = |k: &str| v[k].as_str().unwrap_or("").to_owned();
    match command {
        "workspace leave" => {
            println!("This device left '{}' and no longer syncs it.", s("name"));
            if v["deleted"].as_bool() == Some(true) {
                println!("Its data was deleted from this device.");
            } else {
                println!("Its last state was kept in {}.", s("kept_export"));
            }
        }
        "workspace show" => {
            println!("{} ({})", s("name"), s("kind"));
            println!("  id: {}", s("id"));
            println!(
                "  archived: {}",
                if v["archived"].as_bool() == Some(true) {
                    "yes (read-only; `troupe workspace unarchive` to write again)"
                } else {
                    "no"
                }
            );
            println!("  keeps removed files: {} days", v["retention_days"]);
            let members: Vec<String> = v["members"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .filter_map(|m| m.as_str().map(str::to_owned))
                .collect();
            println!("  members: {}", members.join(", "));
            println!(
                "  {} entities, {} fields, {} changes, {} conflicts",
                v["entities"], v["fields"], v["bundles"], v["conflicts"]
            );
        }
        "workspace archive" => println!(
            "'{}' is archived: read-only on every member's device once they sync.",
            s("name")
        ),
        "workspace unarchive" => println!("'{}' is writable again.", s("name")),
        "workspace retention" => println!(
            "'{}' now keeps removed files for {} days on this device.",
            s("name"),
            v["retention_days"]
        ),
        "workspace template export" => println!(
            "Wrote a template of '{}' ({} fields, {} files, no history) to {}.",
            s("name"),
            v["fields"],
            v["assets"],
            s("file")
        ),
        "workspace clone" => println!(
            "Created '{}' from the current state of '{}' ({} fields, no history). Id: {}",
            s("name"),
            s("cloned_from"),
            v["fields"],
            s("id")
        ),
        "copy" => println!(
            "Copied {} into '{}' as {} (recorded as copied from {}).",
            s("copied_from"),
            s("to"),
            s("entity"),
            s("copied_from")
        ),
        _ => println!("{v}"),
    }
}
