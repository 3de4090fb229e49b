//! What a person asks of their node, as one request type that runs the same
//! way in the daemon (through `POST /v1/command`) and directly on the store
//! (when no daemon runs). One code path means the CLI, the local API and the
//! tests all see the same answers.
//!
//! | module | owns |
//! |---|---|
//! | [`invite`] | the invite code: workspace secret, name and kind, checksummed |
//! | [`workspaces`] | create, invite, join, list; name-or-id lookup |
//! | [`fields`] | set, get, show; conflicts described in words |
//! | [`assets`] | adding files as content-addressed blobs, and reading them back |
//! | [`conflicts`] | resolving conflicts in one bundle; the history of resolutions |
//! | [`undo`] | undo and redo of whole bundles |
//! | [`jobs`] | job output (JSON lines) and contact imports as one bundle |
//! | [`search`] | filtered history, text search, one bundle in words |
//! | [`maintenance`] | quarantine, scrub, repair, asset delete, GC, export |
//! | [`lifecycle`] | archive, retention, `workspace show`, leave; isolation checks |
//! | [`templates`] | template files and clones: current state, no history |
//! | [`library`] | copying an entity between workspaces, with provenance |
//!
//! Every answer is JSON (what `--json` prints); [`crate::cli`] turns it into
//! sentences. Every error is an [`OpsError`] the CLI explains in three
//! sentences.

pub mod assets;
pub mod conflicts;
pub mod fields;
pub mod invite;
pub mod jobs;
pub mod library;
pub mod lifecycle;
pub mod maintenance;
pub mod search;
pub mod templates;
pub mod undo;
pub mod workspaces;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use troupe_storage::{BlobError, CommitError, ReadError};

use crate::local::{Change, Local, LocalError};

/// One command, as the CLI sends it to the daemon (JSON body of
/// `POST /v1/command`) or runs it on the store itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    /// Create a workspace.
    WorkspaceCreate {
        /// Its name.
        name: String,
        /// `show` or `library`.
        kind: String,
    },
    /// Print an invite for a workspace.
    WorkspaceInvite {
        /// Name or id.
        workspace: String,
        /// Addresses a joiner can dial without mDNS (multiaddrs).
        #[serde(default)]
        peers: Vec<String>,
        /// Invite to a library workspace anyway (libraries are meant for
        /// one person's devices).
        #[serde(default)]
        force: bool,
    },
    /// Join a workspace from an invite.
    WorkspaceJoin {
        /// The invite text.
        invite: String,
    },
    /// List workspaces.
    WorkspaceList,
    /// Leave a workspace: stop syncing it, keep an export or delete its data.
    WorkspaceLeave {
        /// Name or id.
        workspace: String,
        /// Delete the data instead of keeping an export.
        #[serde(default)]
        delete_data: bool,
    },
    /// Kind, retention, archived, members and counts of one workspace.
    WorkspaceShow {
        /// Name or id.
        workspace: String,
    },
    /// Archive a workspace (read-only on every member).
    WorkspaceArchive {
        /// Name or id.
        workspace: String,
    },
    /// Un-archive a workspace.
    WorkspaceUnarchive {
        /// Name or id.
        workspace: String,
    },
    /// Set the retention window (days removed files are kept).
    WorkspaceRetention {
        /// Name or id.
        workspace: String,
        /// Days.
        days: u32,
    },
    /// Write a workspace's current state as a template file.
    WorkspaceTemplateExport {
        /// Name or id.
        workspace: String,
        /// The template file to write.
        file: PathBuf,
    },
    /// Create a workspace from a template file.
    WorkspaceCreateFromTemplate {
        /// Its name.
        name: String,
        /// `show` or `library`; the template's kind when absent.
        #[serde(default)]
        kind: Option<String>,
        /// The template file.
        file: PathBuf,
    },
    /// Copy a workspace's current state into a new workspace.
    WorkspaceClone {
        /// Name or id of the source.
        workspace: String,
        /// The new workspace's name.
        new_name: String,
    },
    /// Copy an entity into another workspace, with provenance.
    Copy {
        /// Source workspace.
        from: String,
        /// `type/id`.
        entity: String,
        /// Target workspace.
        to: String,
        /// Id for the copy (the same id when absent).
        #[serde(default)]
        new_id: Option<String>,
    },
    /// Set one field to a text value.
    Set {
        /// Name or id.
        workspace: String,
        /// `type/id/field`.
        path: String,
        /// The text.
        value: String,
    },
    /// Read one field.
    Get {
        /// Name or id.
        workspace: String,
        /// `type/id/field`.
        path: String,
    },
    /// Read every field of an entity.
    Show {
        /// Name or id.
        workspace: String,
        /// `type/id`.
        entity: String,
    },
    /// The bundles of a workspace, newest first.
    History {
        /// Name or id.
        workspace: String,
        /// At most this many.
        limit: usize,
        /// Entity, field, author and time filters.
        #[serde(default)]
        filter: search::HistoryFilter,
    },
    /// Open conflicts, grouped and in words.
    Conflicts {
        /// Name or id.
        workspace: String,
    },
    /// Store a file as an asset of the workspace.
    AssetsAdd {
        /// Name or id.
        workspace: String,
        /// The file (read by the process that runs the command).
        file: PathBuf,
    },
    /// Write an asset's bytes to a file.
    AssetsGet {
        /// Name or id.
        workspace: String,
        /// Asset hash (hex) or a unique prefix.
        hash: String,
        /// Output file.
        out: PathBuf,
    },
    /// Settle the conflicts of one entity in one `merge_resolution` bundle.
    ConflictResolve {
        /// Name or id.
        workspace: String,
        /// `type/id`.
        entity: String,
        /// Per-field choices.
        #[serde(default)]
        picks: Vec<conflicts::Pick>,
        /// Take this member's side for every field not picked.
        #[serde(default)]
        take: Option<String>,
    },
    /// Past conflict resolutions with their choices.
    ConflictHistory {
        /// Name or id.
        workspace: String,
    },
    /// Undo a bundle (default: this device's last change).
    Undo {
        /// Name or id.
        workspace: String,
        /// Bundle id or prefix.
        #[serde(default)]
        bundle: Option<String>,
    },
    /// Redo an undo (default: this device's last undo).
    Redo {
        /// Name or id.
        workspace: String,
        /// Undo bundle id or prefix.
        #[serde(default)]
        bundle: Option<String>,
    },
    /// Commit a job's staged output (JSON lines) as one `job_output` bundle.
    JobCommit {
        /// Name or id.
        workspace: String,
        /// The command as typed, for the summary.
        label: String,
        /// The staged output file.
        ops_file: PathBuf,
    },
    /// Import contacts from a JSON or CSV file as one `import` bundle.
    Import {
        /// Name or id.
        workspace: String,
        /// The file.
        file: PathBuf,
    },
    /// Text search over current values and history.
    Search {
        /// Name or id.
        workspace: String,
        /// The text.
        text: String,
    },
    /// One bundle with its ops in words.
    ShowBundle {
        /// Name or id.
        workspace: String,
        /// Bundle id or prefix.
        bundle: String,
    },
    /// Quarantined bundles with reasons.
    QuarantineList,
    /// One quarantine entry.
    QuarantineShow {
        /// Quarantine id.
        id: u64,
    },
    /// Retry a quarantined bundle.
    QuarantineRetry {
        /// Quarantine id.
        id: u64,
    },
    /// Drop a quarantined bundle for good.
    QuarantineSkip {
        /// Quarantine id.
        id: u64,
    },
    /// Re-verify the store.
    Scrub,
    /// Scrub, and ask members for clean copies now.
    Repair,
    /// Record an asset as deleted.
    AssetsDelete {
        /// Name or id.
        workspace: String,
        /// Asset hash or prefix.
        hash: String,
        /// Why, in the user's words.
        #[serde(default)]
        reason: String,
    },
    /// Assets of a workspace and whether their bytes are here.
    AssetsList {
        /// Name or id.
        workspace: String,
    },
    /// Free asset bytes no longer needed (dry run unless `apply`).
    Gc {
        /// Free them (otherwise only report).
        apply: bool,
    },
    /// Export a workspace as JSON plus asset files.
    Export {
        /// Name or id.
        workspace: String,
        /// Target directory.
        dir: PathBuf,
    },
}

impl Request {
    /// Whether the command changes the store (the daemon then tells peers).
    pub fn writes(&self) -> bool {
        matches!(
            self,
            Request::WorkspaceCreate { .. }
                | Request::WorkspaceJoin { .. }
                | Request::Set { .. }
                | Request::AssetsAdd { .. }
                | Request::ConflictResolve { .. }
                | Request::Undo { .. }
                | Request::Redo { .. }
                | Request::JobCommit { .. }
                | Request::Import { .. }
                | Request::QuarantineRetry { .. }
                | Request::QuarantineSkip { .. }
                | Request::Scrub
                | Request::Repair
                | Request::AssetsDelete { .. }
                | Request::Gc { apply: true }
                | Request::WorkspaceLeave { .. }
                | Request::WorkspaceArchive { .. }
                | Request::WorkspaceUnarchive { .. }
                | Request::WorkspaceRetention { .. }
                | Request::WorkspaceCreateFromTemplate { .. }
                | Request::WorkspaceClone { .. }
                | Request::Copy { .. }
        )
    }
}

/// Why a command failed; nothing was changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpsError {
    /// No workspace has that name or id.
    #[error("there is no workspace called {0:?} on this device")]
    NoSuchWorkspace(String),
    /// Several workspaces match.
    #[error("{given:?} matches several workspaces: {matches}")]
    AmbiguousWorkspace {
        /// What was typed.
        given: String,
        /// The candidates, by name and short id.
        matches: String,
    },
    /// A field path or entity is malformed.
    #[error("{0}")]
    BadPath(String),
    /// An invite could not be read.
    #[error("the invite cannot be read: {0}")]
    BadInvite(String),
    /// An argument is not acceptable (unknown kind, empty name).
    #[error("{0}")]
    BadArgument(String),
    /// The workspace is archived: read-only.
    #[error("the workspace is archived and read-only")]
    Archived,
    /// A value names an entity that is not in the target workspace.
    #[error("{0}")]
    CrossWorkspace(String),
    /// A library workspace may only be shared among one person's devices.
    #[error("'{0}' is a personal library, meant for your own devices only")]
    LibraryInvite(String),
    /// A file could not be read or written.
    #[error("cannot use the file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The asset is not held here (not yet fetched, or deleted long ago).
    #[error("{0}")]
    Asset(String),
    /// The store failed (a disk error or damage).
    #[error("the store failed: {0}")]
    Store(String),
    /// The thing named (bundle, conflict, quarantine entry) is not here.
    #[error("{0}")]
    NotFound(String),
    /// The command had nothing to do (no conflict, nothing left to undo).
    #[error("{0}")]
    NothingToDo(String),
    /// A job's or import's output did not validate; nothing was applied.
    #[error("{0}")]
    Rejected(String),
}

impl From<LocalError> for OpsError {
    fn from(e: LocalError) -> Self {
        match e {
            LocalError::Commit(CommitError::Archived(_)) => OpsError::Archived,
            LocalError::Invalid(why) => OpsError::BadArgument(why),
            other => OpsError::Store(other.to_string()),
        }
    }
}

impl From<ReadError> for OpsError {
    fn from(e: ReadError) -> Self {
        OpsError::Store(e.to_string())
    }
}

impl From<CommitError> for OpsError {
    fn from(e: CommitError) -> Self {
        match e {
            CommitError::Archived(_) => OpsError::Archived,
            other => OpsError::Store(other.to_string()),
        }
    }
}

impl From<BlobError> for OpsError {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::NotFound(h) => OpsError::Asset(format!(
                "asset {} is not on this device yet (it arrives when a member that has it is connected)",
                h.short()
            )),
            BlobError::Unavailable(h) => OpsError::Asset(format!(
                "asset {} was removed from this device by garbage collection",
                h.short()
            )),
            other => OpsError::Store(other.to_string()),
        }
    }
}

/// A stable machine name for each error kind (the API's `kind` field).
impl OpsError {
    /// Short snake_case kind for JSON answers and exit codes.
    pub fn kind(&self) -> &'static str {
        match self {
            OpsError::NoSuchWorkspace(_) => "no_such_workspace",
            OpsError::AmbiguousWorkspace { .. } => "ambiguous_workspace",
            OpsError::BadPath(_) => "bad_path",
            OpsError::BadInvite(_) => "bad_invite",
            OpsError::BadArgument(_) => "bad_argument",
            OpsError::Archived => "archived",
            OpsError::CrossWorkspace(_) => "cross_workspace",
            OpsError::LibraryInvite(_) => "library_invite",
            OpsError::File { .. } => "file",
            OpsError::Asset(_) => "asset",
            OpsError::Store(_) => "store",
            OpsError::NotFound(_) => "not_found",
            OpsError::NothingToDo(_) => "nothing_to_do",
            OpsError::Rejected(_) => "rejected",
        }
    }
}

impl Request {
    /// Reads a command from its JSON form (the body of `POST /v1/command`).
    ///
    /// `set`, the command sent most (a group commit runs thousands a
    /// second), is read straight into its fields; any other body, or a
    /// `set` that does not read that way, goes through the tagged enum,
    /// which first buffers the whole object, and so gets its answers and
    /// its errors.
    ///
    /// # Errors
    /// The enum's error when the body is not a command.
    pub fn from_json(body: &[u8]) -> serde_json::Result<Request> {
        #[derive(Deserialize)]
        struct SetBody<'a> {
            #[serde(borrow)]
            command: std::borrow::Cow<'a, str>,
            workspace: String,
            path: String,
            value: String,
        }
        if let Ok(b) = serde_json::from_slice::<SetBody<'_>>(body)
            && b.command == "set"
        {
            return Ok(Request::Set {
                workspace: b.workspace,
                path: b.path,
                value: b.value,
            });
        }
        serde_json::from_slice(body)
    }
}

/// A command's answer as the daemon sends it back: most commands answer
/// with JSON built where they run, a `set` with what it wrote, serialised
/// only where the answer leaves (see [`fields::SetWritten`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Answer {
    /// A JSON answer.
    Json(Json),
    /// What a `set` wrote.
    Set(fields::SetWritten),
}

/// Runs one request against the local store; returns the JSON answer and the
/// changes to forward to sync.
///
/// # Errors
/// [`OpsError`]; nothing is changed on error.
pub fn execute(local: &mut Local, req: Request) -> Result<(Json, Vec<Change>), OpsError> {
    // Every command that writes bundles into a workspace is refused while it
    // is archived (`set`, `assets add` and `copy` check this themselves).
    match &req {
        Request::ConflictResolve { workspace, .. }
        | Request::Undo { workspace, .. }
        | Request::Redo { workspace, .. }
        | Request::JobCommit { workspace, .. }
        | Request::Import { workspace, .. }
        | Request::AssetsDelete { workspace, .. } => {
            lifecycle::ensure_writable(local, workspace)?;
        }
        _ => {}
    }
    match req {
        Request::WorkspaceCreate { name, kind } => workspaces::create(local, &name, &kind),
        Request::WorkspaceInvite {
            workspace,
            peers,
            force,
        } => Ok((
            workspaces::invite_with(local, &workspace, &peers, force)?,
            vec![],
        )),
        Request::WorkspaceJoin { invite } => workspaces::join(local, &invite),
        Request::WorkspaceList => Ok((workspaces::list(local)?, vec![])),
        Request::WorkspaceLeave {
            workspace,
            delete_data,
        } => lifecycle::leave(local, &workspace, delete_data),
        Request::WorkspaceShow { workspace } => Ok((lifecycle::show(local, &workspace)?, vec![])),
        Request::WorkspaceArchive { workspace } => lifecycle::archive(local, &workspace),
        Request::WorkspaceUnarchive { workspace } => lifecycle::unarchive(local, &workspace),
        Request::WorkspaceRetention { workspace, days } => {
            lifecycle::retention(local, &workspace, days)
        }
        Request::WorkspaceTemplateExport { workspace, file } => {
            Ok((templates::export(local, &workspace, &file)?, vec![]))
        }
        Request::WorkspaceCreateFromTemplate { name, kind, file } => {
            templates::create_from(local, &name, kind.as_deref(), &file)
        }
        Request::WorkspaceClone {
            workspace,
            new_name,
        } => templates::clone(local, &workspace, &new_name),
        Request::Copy {
            from,
            entity,
            to,
            new_id,
        } => library::copy(local, &from, &entity, &to, new_id.as_deref()),
        Request::Set {
            workspace,
            path,
            value,
        } => fields::set(local, &workspace, &path, value),
        Request::Get { workspace, path } => Ok((fields::get(local, &workspace, &path)?, vec![])),
        Request::Show { workspace, entity } => {
            Ok((fields::show(local, &workspace, &entity)?, vec![]))
        }
        Request::History {
            workspace,
            limit,
            filter,
        } => Ok((search::history(local, &workspace, limit, &filter)?, vec![])),
        Request::Conflicts { workspace } => Ok((fields::conflicts(local, &workspace)?, vec![])),
        Request::AssetsAdd { workspace, file } => {
            lifecycle::ensure_writable(local, &workspace)?;
            assets::add(local, &workspace, &file)
        }
        Request::AssetsGet {
            workspace,
            hash,
            out,
        } => Ok((assets::get(local, &workspace, &hash, &out)?, vec![])),
        Request::ConflictResolve {
            workspace,
            entity,
            picks,
            take,
        } => conflicts::resolve_conflict(local, &workspace, &entity, &picks, take.as_deref()),
        Request::ConflictHistory { workspace } => {
            Ok((conflicts::history(local, &workspace)?, vec![]))
        }
        Request::Undo { workspace, bundle } => {
            undo::run(local, &workspace, bundle.as_deref(), undo::Direction::Undo)
        }
        Request::Redo { workspace, bundle } => {
            undo::run(local, &workspace, bundle.as_deref(), undo::Direction::Redo)
        }
        Request::JobCommit {
            workspace,
            label,
            ops_file,
        } => jobs::commit_ops(local, &workspace, &label, &ops_file),
        Request::Import { workspace, file } => jobs::import(local, &workspace, &file),
        Request::Search { workspace, text } => {
            Ok((search::search(local, &workspace, &text)?, vec![]))
        }
        Request::ShowBundle { workspace, bundle } => {
            Ok((search::show_bundle(local, &workspace, &bundle)?, vec![]))
        }
        Request::QuarantineList => Ok((maintenance::quarantine_list(local)?, vec![])),
        Request::QuarantineShow { id } => Ok((maintenance::quarantine_show(local, id)?, vec![])),
        Request::QuarantineRetry { id } => maintenance::quarantine_retry(local, id),
        Request::QuarantineSkip { id } => maintenance::quarantine_skip(local, id),
        Request::Scrub => maintenance::scrub(local),
        Request::Repair => maintenance::repair(local),
        Request::AssetsDelete {
            workspace,
            hash,
            reason,
        } => maintenance::assets_delete(local, &workspace, &hash, &reason),
        Request::AssetsList { workspace } => {
            Ok((maintenance::assets_list(local, &workspace)?, vec![]))
        }
        Request::Gc { apply } => maintenance::gc(local, apply),
        Request::Export { workspace, dir } => {
            Ok((maintenance::export(local, &workspace, &dir)?, vec![]))
        }
    }
}

/// A device with a fresh store in `dir`, for the command tests.
#[cfg(test)]
pub(crate) fn test_local(dir: &std::path::Path) -> Local {
    let path = dir.join("store.redb");
    let store = troupe_storage::Store::open(&path).expect("store");
    let key = troupe_protocol::crypto::ActorKey::from_secret_bytes([5; 32]);
    Local::with_store(store, key, path).expect("local")
}

#[cfg(test)]
mod tests {
    use super::Request;

    /// What the tagged enum alone makes of a body: the request, or its error.
    fn by_enum(body: &str) -> String {
        match serde_json::from_str::<Request>(body) {
            Ok(r) => format!("{r:?}"),
            Err(e) => format!("error: {e}"),
        }
    }

    fn by_from_json(body: &str) -> String {
        match Request::from_json(body.as_bytes()) {
            Ok(r) => format!("{r:?}"),
            Err(e) => format!("error: {e}"),
        }
    }

    #[test]
    fn a_command_reads_the_same_through_the_set_shortcut_as_through_the_enum() {
        let bodies = [
            r#"{"command":"set","workspace":"Hamlet","path":"contacts.person/jane/phone","value":"555-0100"}"#,
            r#"{"value":"555 \"0100\"","path":"contacts.person/jane/phone","workspace":"Hamlet","command":"set"}"#,
            r#"{"command":"s\u0065t","workspace":"H\u00e9","path":"a/b/c","value":""}"#,
            r#"{"command":"set","workspace":"Hamlet","path":"a/b/c","value":"x","extra":1}"#,
            r#"{"command":"set","workspace":"Hamlet","path":"a/b/c"}"#,
            r#"{"command":"set","workspace":"Hamlet","path":"a/b/c","value":7}"#,
            r#"{"command":"set","command":"get","workspace":"Hamlet","path":"a/b/c","value":"x"}"#,
            r#"{"command":"get","workspace":"Hamlet","path":"a/b/c"}"#,
            r#"{"command":"get","workspace":"Hamlet","path":"a/b/c","value":"x"}"#,
            r#"{"command":"workspace_list"}"#,
            r#"{"command":"no_such_thing"}"#,
            r#"{"workspace":"Hamlet","path":"a/b/c","value":"x"}"#,
            r#"["set","Hamlet","a/b/c","x"]"#,
            r#"not json"#,
            "",
        ];
        for body in bodies {
            assert_eq!(by_from_json(body), by_enum(body), "{body}");
        }
        assert!(by_from_json(bodies[0]).starts_with("Set {"));
    }
}
