//! This node's own hands on its store: open it (salvaging a damaged file),
//! sign and commit local bundles, and say what changed so sync can tell peers.
//!
//! [`Local`] owns the [`Store`], the device key and the hybrid logical clock.
//! It is used in two places, always on one thread at a time:
//! - inside the running daemon, on the storage thread, wrapped by
//!   [`crate::sync_core::SyncCore`], which forwards every [`Change`] to the
//!   sync engine (so connected members hear of a local edit at once);
//! - directly by CLI commands when no daemon runs on the data dir.
//!
//! Every write returns the [`Change`]s it made. A caller that drops them only
//! delays sync (peers still learn of the bundles on the next range exchange).

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use troupe_protocol::bundle::Bundle;
use troupe_protocol::crypto::ActorKey;
use troupe_protocol::draft::{Advisory, Draft, sign_run};
use troupe_protocol::hlc::{Hlc, HlcClock};
use troupe_protocol::ids::{ActorId, BundleHash, WorkspaceId};
use troupe_protocol::workspace::WorkspaceSecret;
use troupe_storage::{CommitError, OpenError, ReadError, SalvageReport, Store};

use crate::identity::Identity;

/// The store's file name inside the data dir.
pub const STORE_FILE: &str = "store.redb";
/// The device's display name (`troupe init --name`), one line of text.
pub const NAME_FILE: &str = "device-name";

/// Something that changed locally which connected peers should hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A bundle authored here was committed.
    Committed {
        /// Workspace.
        workspace: WorkspaceId,
        /// This node's actor.
        author: ActorId,
        /// Its seq.
        seq: u64,
    },
    /// This node joined or created a workspace.
    WorkspaceAdded(WorkspaceSecret),
    /// This node left a workspace.
    WorkspaceRemoved(WorkspaceId),
    /// Addresses (from an invite) a running node should dial now rather than
    /// at its next start.
    Dial(Vec<String>),
    /// A bundle here failed verification; members should send a clean copy.
    RepairWanted {
        /// Workspace.
        workspace: WorkspaceId,
        /// Author.
        author: ActorId,
        /// Seq.
        seq: u64,
        /// The hash the clean copy must have.
        hash: BundleHash,
    },
}

/// A local bundle that was committed.
#[derive(Debug, Clone)]
pub struct Written {
    /// Its hash (what `undo`, `show` and `history` name it by).
    pub hash: BundleHash,
    /// Workspace.
    pub workspace: WorkspaceId,
    /// Its seq in this node's chain.
    pub seq: u64,
    /// Number of ops.
    pub ops: usize,
    /// Warnings a person should see (e.g. a very large job).
    pub advisories: Vec<Advisory>,
}

/// Why a local write failed. Nothing of it was applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocalError {
    /// The store file could not be opened or salvaged.
    #[error("cannot open the store {path}: {source}")]
    Open {
        /// The store file.
        path: PathBuf,
        /// Why.
        source: OpenError,
    },
    /// The draft is not a valid bundle (empty, too large, bad path).
    #[error("the change is not valid: {0}")]
    Invalid(String),
    /// The store refused or failed the commit (archived workspace, unknown
    /// workspace, disk error).
    #[error(transparent)]
    Commit(#[from] CommitError),
    /// A read needed for the write failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The device key could not be replaced (a new incarnation); the old
    /// key stays in use.
    #[error("cannot write the new device key: {0}")]
    Key(String),
    /// The store did not apply the bundle (it verified badly: a bug or a
    /// damaged chain tip). Nothing was changed.
    #[error("the store did not apply the new bundle: {0}")]
    NotApplied(String),
}

/// Says in the log that the store file was damaged and salvaged at an
/// open, and where the damaged file was set aside.
pub fn log_salvage(r: &SalvageReport) {
    tracing::warn!(
        kept = r.bundles_kept,
        lost_ranges = r.lost.len(),
        damaged_copy = ?r.damaged_copy,
        "the store file was damaged and has been salvaged; what was lost is fetched again from peers"
    );
}

/// The store plus what it takes to author bundles on this device.
pub struct Local {
    store: Store,
    key: ActorKey,
    clock: HlcClock,
    path: PathBuf,
    name: Option<String>,
    /// Commits are not durable until [`Store::flush`] (group commit).
    deferred: bool,
}

impl std::fmt::Debug for Local {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Local({})", self.path.display())
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Local {
    /// Opens (or creates) the store in `data_dir`. A damaged file is salvaged:
    /// everything that verifies is kept, the damaged file is set aside, and
    /// the report says what must come back from peers.
    ///
    /// # Errors
    /// [`LocalError::Open`] when the file is locked, of another schema
    /// version, or cannot be salvaged.
    pub fn open(
        data_dir: &Path,
        identity: &Identity,
    ) -> Result<(Local, Option<SalvageReport>), LocalError> {
        let path = data_dir.join(STORE_FILE);
        let (store, report) = Store::open_or_salvage(&path).map_err(|source| LocalError::Open {
            path: path.clone(),
            source,
        })?;
        let mut local = Local::with_store(store, identity.actor_key.clone(), path)?;
        local.name = read_name(data_dir);
        let replaced = crate::incarnation::store_was_replaced(data_dir, &local.path);
        let why = match &report {
            Some(r) if crate::incarnation::salvage_lost_own(r, &local.actor()) => {
                Some("the store was salvaged and may have lost bundles this device wrote")
            }
            // A salvage writes a new file; what it lost was checked above.
            Some(_) => None,
            None if replaced => {
                Some("the data directory was restored from a backup or copied from elsewhere")
            }
            _ => None,
        };
        if let Some(why) = why {
            crate::incarnation::start_new(&mut local, data_dir, why)?;
        }
        Ok((local, report))
    }

    /// Closes the store and opens it again from its file, as a write that
    /// failed (a full disk) requires before the store can be used again
    /// ([`Store::needs_reopen`]). What was committed but not yet flushed is
    /// gone, as after a crash, and peers send it again; a damaged file is
    /// salvaged as at start.
    ///
    /// # Errors
    /// [`LocalError::Open`] when the file cannot be opened again (on a full
    /// disk, an open writes too). The store is then an empty stand-in that
    /// must not be used until a later call opens the file.
    pub fn reopen(&mut self) -> Result<Option<SalvageReport>, LocalError> {
        let open_error = |path: &Path, source| LocalError::Open {
            path: path.to_owned(),
            source,
        };
        let stand_in = Store::stand_in().map_err(|e| open_error(&self.path, e))?;
        // The old handle closes the file before it is opened anew.
        drop(std::mem::replace(&mut self.store, stand_in));
        let (store, report) =
            Store::open_or_salvage(&self.path).map_err(|e| open_error(&self.path, e))?;
        self.store = store;
        self.prepare_journal();
        Ok(report)
    }

    /// Creates the commit journal's file ahead of the first write
    /// ([`Store::prepare_journal`]), as a running node wants after opening
    /// its store; a failure is logged, and the first write tries again.
    pub fn prepare_journal(&self) {
        if let Err(e) = self.store.prepare_journal() {
            tracing::warn!(error = %e, "could not create the commit journal yet; the first write tries again");
        }
    }

    /// Wraps an open store (tests and tools).
    ///
    /// # Errors
    /// [`LocalError::Read`] when the clock's starting point cannot be read.
    pub fn with_store(store: Store, key: ActorKey, path: PathBuf) -> Result<Local, LocalError> {
        let me = key.actor_id();
        let mut last = Hlc::default();
        for ws in store.workspaces()? {
            let tip = store.author_tip(&ws.id(), &me)?;
            if tip.last_seq > 0
                && let Some(b) = store.bundle(&ws.id(), &me, tip.last_seq)?
            {
                last = last.max(b.body().hlc);
            }
        }
        Ok(Local {
            store,
            key,
            clock: HlcClock::starting_after(last),
            path,
            name: None,
            deferred: false,
        })
    }

    /// The store, for reads.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The store file's path (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The device's display name, if one was set.
    pub fn device_name(&self) -> Option<String> {
        self.name.clone()
    }

    /// Group commit: while set, [`Local::commit`] is not durable until the
    /// owner calls [`Store::flush`] (and must not acknowledge it before).
    pub fn set_deferred(&mut self, deferred: bool) {
        self.deferred = deferred;
    }

    /// This device's actor id.
    pub fn actor(&self) -> ActorId {
        self.key.actor_id()
    }

    /// The signing key's secret bytes (kept when the key is retired).
    pub(crate) fn key_secret(&self) -> [u8; 32] {
        self.key.secret_bytes()
    }

    /// Signs with `key` from now on (a new incarnation); the clock goes on.
    pub(crate) fn replace_key(&mut self, key: ActorKey) {
        self.key = key;
    }

    /// Notes a remote bundle's timestamp so later local edits order after it.
    pub fn observe(&mut self, hlc: Hlc) {
        self.clock.observe(hlc, wall_ms());
    }

    /// Signs `draft` as this device's next bundle in its workspace and
    /// commits it in one transaction.
    ///
    /// # Errors
    /// [`LocalError`]; nothing is applied on error.
    pub fn commit(&mut self, draft: Draft) -> Result<(Written, Change), LocalError> {
        // A run of one: signed, since it is its own last bundle.
        self.commit_run(vec![draft])?
            .pop()
            .ok_or_else(|| LocalError::NotApplied("the store returned nothing for it".into()))
    }

    /// Group commit of several drafts in one store transaction, in order:
    /// each workspace's drafts become this device's next consecutive bundles
    /// there, signed once, on the last of them ([`sign_run`]). Returns, per
    /// draft in input order, what was written.
    ///
    /// All or nothing: one draft that does not fit refuses the whole run.
    ///
    /// # Errors
    /// [`LocalError`]; nothing is applied on error.
    pub fn commit_run(&mut self, drafts: Vec<Draft>) -> Result<Vec<(Written, Change)>, LocalError> {
        let n = drafts.len();
        let mut by_ws: Vec<(WorkspaceId, Vec<(usize, Draft)>)> = Vec::new();
        for (i, d) in drafts.into_iter().enumerate() {
            let ws = d.workspace();
            match by_ws.iter_mut().find(|(w, _)| *w == ws) {
                Some((_, v)) => v.push((i, d)),
                None => by_ws.push((ws, vec![(i, d)])),
            }
        }
        let actor = self.actor();
        let mut bundles: Vec<(usize, Vec<Advisory>, Bundle)> = Vec::with_capacity(n);
        for (ws, run) in by_ws {
            let tip = self.store.author_tip(&ws, &actor)?;
            let (slots, run): (Vec<(usize, Vec<Advisory>)>, Vec<Draft>) = run
                .into_iter()
                .map(|(i, d)| ((i, d.advisories()), d))
                .unzip();
            let clock = &mut self.clock;
            let signed = sign_run(run, &self.key, &tip, || clock.tick(wall_ms()))
                .map_err(|e| LocalError::Invalid(e.to_string()))?;
            bundles.extend(slots.into_iter().zip(signed).map(|((i, a), b)| (i, a, b)));
        }
        bundles.sort_by_key(|(i, ..)| *i);
        // What each answer says, taken before the bundles go to the store.
        let mut written = Vec::with_capacity(n);
        let mut all = Vec::with_capacity(n);
        for (_, advisories, b) in bundles {
            let body = b.body();
            written.push((
                Written {
                    hash: b.hash(),
                    workspace: body.workspace,
                    seq: body.seq,
                    ops: body.ops.len(),
                    advisories,
                },
                Change::Committed {
                    workspace: body.workspace,
                    author: actor,
                    seq: body.seq,
                },
            ));
            all.push(b);
        }
        let out = if self.deferred {
            self.store.commit_local_many_deferred(all)?
        } else {
            self.store.commit_local_many(&all)?
        };
        if out.committed.len() != n {
            let why = out
                .quarantined
                .first()
                .map(|q| q.3.clone())
                .unwrap_or_else(|| "not every bundle of the run was applied".into());
            return Err(LocalError::NotApplied(why));
        }
        Ok(written)
    }
}

/// Reads the display name file (first line, trimmed; `None` if absent or empty).
pub fn read_name(data_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(data_dir.join(NAME_FILE)).ok()?;
    let line = text.lines().next()?.trim();
    (!line.is_empty()).then(|| line.chars().take(100).collect())
}
