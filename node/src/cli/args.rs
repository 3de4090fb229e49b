//! The command line as typed: clap definitions, no validation beyond types.
//! [`super::config`] turns these into a checked [`super::config::Config`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Troupe: shared show data for touring crews, synced peer to peer with no internet.
#[derive(Debug, Parser)]
#[command(name = "troupe", version, propagate_version = true)]
pub struct Cli {
    /// Options every command shares.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command shares.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Where this node keeps its key, store and API files
    /// (default: the per-user data directory, e.g. ~/.local/share/troupe).
    #[arg(long, global = true, env = "TROUPE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Print machine-readable JSON instead of sentences (read commands).
    #[arg(long, global = true)]
    pub json: bool,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the data directory and this device's key.
    Init {
        /// Your name as crew members will see it, e.g. "Alex (stage manager)".
        #[arg(long)]
        name: Option<String>,
    },
    /// Create, share, join and list workspaces.
    #[command(subcommand)]
    Workspace(WorkspaceCommand),
    /// Set a field: `troupe set WORKSPACE TYPE/ID/FIELD VALUE`.
    Set {
        /// Workspace name or id.
        workspace: String,
        /// Field path, e.g. contacts.person/jane/name.
        path: String,
        /// The new value.
        value: String,
    },
    /// Read a field.
    Get {
        /// Workspace name or id.
        workspace: String,
        /// Field path.
        path: String,
    },
    /// Show an entity with all its fields.
    Show {
        /// Workspace name or id.
        workspace: String,
        /// Entity, as TYPE/ID.
        entity: String,
    },
    /// Copy an entity into another workspace (e.g. from your library into a
    /// show), recording where it came from.
    Copy {
        /// Source workspace.
        from: String,
        /// The entity, as TYPE/ID.
        entity: String,
        /// Target workspace.
        to: String,
        /// Give the copy another id.
        #[arg(long = "as", value_name = "NEW_ID")]
        new_id: Option<String>,
    },
    /// Add or fetch files (assets).
    #[command(subcommand)]
    Assets(AssetsCommand),
    /// Connected peers and peers seen on the LAN (needs a running node).
    Peers,
    /// What the running node is doing (needs a running node).
    Status,
    /// Stop the running node gracefully (as Ctrl-C in its terminal does).
    Stop,
    /// Recent changes in a workspace, newest first, optionally filtered.
    History(HistoryArgs),
    /// Conflicts: list them in words, resolve them, see past resolutions.
    /// `troupe conflicts WORKSPACE` is short for `troupe conflicts list WORKSPACE`.
    Conflicts(ConflictsArgs),
    /// Undo a change (default: your last change in the workspace).
    Undo {
        /// Workspace name or id.
        workspace: String,
        /// The change's id (from `troupe history`); default: your last.
        bundle: Option<String>,
    },
    /// Redo an undone change (default: your last undo).
    Redo {
        /// Workspace name or id.
        workspace: String,
        /// The undo's id; default: your last undo.
        bundle: Option<String>,
    },
    /// Run jobs: programs whose output becomes one change.
    #[command(subcommand)]
    Job(JobCommand),
    /// Import contacts from a JSON or CSV file as one change.
    Import {
        /// Workspace name or id.
        workspace: String,
        /// The file (.json: an array of objects; .csv: a header row).
        file: PathBuf,
    },
    /// Search current values and history for a text.
    Search {
        /// Workspace name or id.
        workspace: String,
        /// What to look for (case-insensitive).
        text: String,
    },
    /// Show one change with everything it did, in words.
    ShowBundle {
        /// Workspace name or id.
        workspace: String,
        /// The change's id (from `troupe history`).
        bundle: String,
    },
    /// Review changes that failed verification and were set aside.
    #[command(subcommand)]
    Quarantine(QuarantineCommand),
    /// Re-check every stored change and ask members now for clean copies of damaged ones.
    Repair,
    /// Re-check every stored change; damaged ones go to quarantine.
    Scrub,
    /// Free the bytes of deleted files whose retention has passed (dry run unless --apply).
    Gc {
        /// Workspace name or id (optional; GC covers the whole device).
        workspace: Option<String>,
        /// Free the space (without it, only show what would be freed).
        #[arg(long)]
        apply: bool,
    },
    /// Export a workspace as JSON plus its files, also from a damaged store.
    Export {
        /// Workspace name or id (its full id works even when the store is too damaged to open).
        workspace: String,
        /// Directory to write into (created if needed).
        dir: PathBuf,
    },
    /// Run the node: connect to peers, discover them on the LAN, serve the local API.
    Up(UpArgs),
    /// Run a self-contained demonstration on this machine only (loopback):
    /// three nodes, an offline edit, a conflict, convergence.
    Demo {
        /// Keep the demo's data dirs and logs instead of removing them.
        #[arg(long)]
        keep: bool,
    },
}

/// `troupe workspace …`
#[derive(Debug, Subcommand)]
pub enum WorkspaceCommand {
    /// Create a workspace.
    Create {
        /// Its name, e.g. "Hamlet — spring tour".
        name: String,
        /// `show` (shared by a crew) or `library` (your own devices).
        #[arg(long, default_value = "show")]
        kind: String,
        /// Start from a template file (`workspace template export`): its
        /// current state, new id and secret, no history.
        #[arg(long, value_name = "FILE")]
        from_template: Option<PathBuf>,
    },
    /// Print an invite that lets another device join.
    Invite {
        /// Workspace name or id.
        workspace: String,
        /// A member address to put in the invite, so the joiner can dial it
        /// without mDNS (repeatable), e.g. /ip4/192.168.1.20/tcp/4001/p2p/12D3….
        #[arg(long = "peer", value_name = "MULTIADDR")]
        peers: Vec<String>,
        /// Invite to a personal library anyway (libraries are for your own devices).
        #[arg(long)]
        force: bool,
    },
    /// Join a workspace from an invite.
    Join {
        /// The invite text.
        invite: String,
    },
    /// List the workspaces this node belongs to.
    List,
    /// Stop syncing a workspace on this device; its data is kept as an
    /// export in the data directory's left/ folder unless --delete-data is
    /// given.
    Leave {
        /// Workspace name or id.
        workspace: String,
        /// Delete the workspace's data from this device.
        #[arg(long)]
        delete_data: bool,
    },
    /// Kind, retention, archived, members and counts of a workspace.
    Show {
        /// Workspace name or id.
        workspace: String,
    },
    /// Make a workspace read-only on every member's device.
    Archive {
        /// Workspace name or id.
        workspace: String,
    },
    /// Make an archived workspace writable again.
    Unarchive {
        /// Workspace name or id.
        workspace: String,
    },
    /// Set how many days removed files are kept on this device.
    Retention {
        /// Workspace name or id.
        workspace: String,
        /// Days (default for new workspaces: 90).
        days: u32,
    },
    /// Templates: a workspace's current state as a file.
    #[command(subcommand)]
    Template(TemplateCommand),
    /// Copy a workspace's current state (no history) into a new workspace.
    Clone {
        /// Workspace name or id.
        workspace: String,
        /// The new workspace's name.
        new_name: String,
    },
}

/// `troupe workspace template …`
#[derive(Debug, Subcommand)]
pub enum TemplateCommand {
    /// Write a workspace's current state and files to a template file.
    Export {
        /// Workspace name or id.
        workspace: String,
        /// The file to write.
        file: PathBuf,
    },
}

/// `troupe assets …`
#[derive(Debug, Subcommand)]
pub enum AssetsCommand {
    /// Store a file in a workspace.
    Add {
        /// Workspace name or id.
        workspace: String,
        /// The file.
        file: PathBuf,
    },
    /// Record a file as deleted; its bytes are freed by `troupe gc` after the retention period.
    Delete {
        /// Workspace name or id.
        workspace: String,
        /// The asset hash (or its first characters).
        hash: String,
        /// Why, in your words.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// List the files of a workspace and whether they are on this device.
    List {
        /// Workspace name or id.
        workspace: String,
    },
    /// Write an asset's bytes to a file.
    Get {
        /// Workspace name or id.
        workspace: String,
        /// The asset hash.
        hash: String,
        /// Where to write it.
        out: PathBuf,
    },
}

/// `troupe up` options.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Address to accept connections on (repeatable), as a multiaddr.
    /// Default: /ip4/0.0.0.0/tcp/0 (every interface, any free port).
    #[arg(long = "listen", value_name = "MULTIADDR")]
    pub listen: Vec<String>,
    /// Peer to dial and keep dialling (repeatable), e.g. /ip4/10.0.0.5/tcp/4001.
    #[arg(long = "peer", value_name = "MULTIADDR")]
    pub peers: Vec<String>,
    /// Use only this network interface for mDNS discovery (repeatable).
    #[arg(long = "interface", value_name = "NAME")]
    pub interfaces: Vec<String>,
    /// Do not use mDNS at all; only --peer and remembered addresses are dialled.
    #[arg(long)]
    pub no_mdns: bool,
    /// Port for the local API on 127.0.0.1 (0 = any free port).
    #[arg(long, default_value_t = 0)]
    pub api_port: u16,
    /// Until workspaces come from the store: a file of workspace secrets (hex,
    /// one per line) this node advertises membership of over mDNS.
    #[arg(long, value_name = "FILE")]
    pub workspace_secrets: Option<PathBuf>,
}

/// `troupe history` options.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Workspace name or id.
    pub workspace: String,
    /// Show at most this many changes.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Only changes to this entity (TYPE/ID).
    #[arg(long)]
    pub entity: Option<String>,
    /// Only changes to this field name.
    #[arg(long)]
    pub field: Option<String>,
    /// Only changes by this person (name, "me", or id prefix).
    #[arg(long)]
    pub author: Option<String>,
    /// Only changes at or after this time (2026-11-25, 2026-11-25T14:30, or 2h, 7d ago).
    #[arg(long)]
    pub since: Option<String>,
    /// Only changes at or before this time.
    #[arg(long)]
    pub until: Option<String>,
}

/// `troupe conflicts …`
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ConflictsArgs {
    /// Workspace name or id (same as `conflicts list`).
    pub workspace: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Option<ConflictsCommand>,
}

/// `troupe conflicts list|resolve|history`
#[derive(Debug, Subcommand)]
pub enum ConflictsCommand {
    /// Open conflicts, grouped and described in words.
    List {
        /// Workspace name or id.
        workspace: String,
    },
    /// Settle the conflicts of one entity in one change.
    Resolve {
        /// Workspace name or id.
        workspace: String,
        /// The entity, TYPE/ID.
        entity: String,
        /// A conflicted field (repeatable; each needs a --pick).
        #[arg(long = "field")]
        fields: Vec<String>,
        /// For the --field before it: a person's name (keep their version) or a new value.
        #[arg(long = "pick")]
        picks: Vec<String>,
        /// Keep this person's version of every field not picked.
        #[arg(long)]
        take: Option<String>,
    },
    /// Past resolutions and what was chosen.
    History {
        /// Workspace name or id.
        workspace: String,
    },
}

/// `troupe job …`
#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Run a command whose stdout lists changes as JSON lines; they become one
    /// change only if it succeeds and every line is valid.
    Run {
        /// Workspace name or id.
        workspace: String,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

/// `troupe quarantine …`
#[derive(Debug, Subcommand)]
pub enum QuarantineCommand {
    /// Changes set aside, with reasons, sources and what is missing because of them.
    List,
    /// One entry in detail.
    Show {
        /// Its number from `quarantine list`.
        id: u64,
    },
    /// Try to apply it again (after what it waited for arrived).
    Retry {
        /// Its number.
        id: u64,
    },
    /// Drop it for good (recorded as your choice).
    Skip {
        /// Its number.
        id: u64,
    },
}
