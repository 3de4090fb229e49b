//! `troupe up`: the long-running node. Wires identity, swarm, dialler, mDNS
//! discovery and the local API under one shutdown signal.
//!
//! The store and the sync engine run together on one named thread
//! ([`SyncCore`] behind an [`ActorHandle`]); [`sync_driver`] connects them to
//! the swarm's streams. A damaged store file is salvaged at start (what
//! verifies is kept, the damaged file is set aside) and the node still starts.
//!
//! Teardown order on SIGINT/SIGTERM: the local API stops answering first,
//! then discovery stops advertising, then the dialler, the sync driver and the
//! swarm close connections, then the store closes; the port file is removed
//! last.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libp2p::multiaddr::Protocol;
use tokio::sync::mpsc;
use tracing::{Instrument, info, warn};

use crate::cli::config::{Config, UpConfig};
use crate::dialer::{self, DialTarget, DialerHandle};
use crate::discovery::{self, DiscoveryConfig, DiscoveryEvent};
use crate::events::{EventBus, NodeEvent};
use crate::identity::{Identity, IdentityError};
use crate::local::Local;
use crate::local_api::{self, ApiContext};
use crate::peers::PeerTable;
use crate::shutdown::{self, Shutdown};
use crate::storage_actor::ActorHandle;
use crate::swarm;
use crate::sync_core::{SyncCore, SyncStatus};
use crate::sync_driver::{self, DriverParts};

/// File locked by the running daemon, so two cannot share a data dir.
pub const LOCK_FILE: &str = "node.lock";
/// Jobs waiting for the storage thread before callers wait for room.
const STORE_QUEUE: usize = 64;
/// The name of the thread that owns the store (and the sync engine): what
/// `top -H`, a profiler or the bench shows for the node's storage work.
pub const STORE_THREAD: &str = "troupe-store";
/// How long each stage may take to stop.
const STAGE_GRACE: Duration = Duration::from_secs(5);

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// The data dir could not be created or locked.
    #[error("cannot use the data directory {path}: {reason}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Another `troupe up` already runs on this data dir.
    #[error("another node is already running on {0}")]
    AlreadyRunning(PathBuf),
    /// The key could not be loaded.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The network could not start.
    #[error(transparent)]
    Network(#[from] swarm::StartError),
    /// mDNS could not start.
    #[error(transparent)]
    Discovery(#[from] discovery::DiscoveryError),
    /// The local API could not start.
    #[error(transparent)]
    Api(#[from] local_api::ApiError),
    /// `--interface` names an interface this machine does not have; mDNS
    /// would silently find nobody.
    #[error("there is no network interface named {0:?} here (see `ip link`)")]
    NoSuchInterface(String),
    /// The store could not be opened or salvaged.
    #[error("cannot open this node's store: {0}")]
    Store(String),
    /// Signal handlers could not be installed.
    #[error("cannot watch for SIGINT/SIGTERM: {0}")]
    Signals(std::io::Error),
}

/// Creates the data dir (owner-only) if needed and loads or creates the key.
/// Returns the identity and whether the key was created now.
///
/// # Errors
/// [`DaemonError::DataDir`] or [`DaemonError::Identity`].
pub fn init(data_dir: &Path) -> Result<(Identity, bool), DaemonError> {
    let dir_err = |e: std::io::Error| DaemonError::DataDir {
        path: data_dir.to_owned(),
        reason: e.to_string(),
    };
    if !data_dir.exists() {
        std::fs::create_dir_all(data_dir).map_err(dir_err)?;
        // Only a directory we created is narrowed to the owner: an existing one
        // the user named may be shared on purpose (the key file is 0600 anyway).
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
                .map_err(dir_err)?;
        }
    }
    Ok(Identity::load_or_create(data_dir)?)
}

/// Runs the node until SIGINT/SIGTERM or until `external` is triggered.
///
/// # Errors
/// [`DaemonError`] when a component cannot start.
pub async fn run(cfg: &Config, up: UpConfig, external: Shutdown) -> Result<(), DaemonError> {
    let (identity, created) = init(&cfg.data_dir)?;
    let _lock = lock(&cfg.data_dir)?;
    let span = tracing::info_span!("node", me = %identity.peer_id());
    serve(cfg, up, external, identity, created)
        .instrument(span)
        .await
}

async fn serve(
    cfg: &Config,
    up: UpConfig,
    external: Shutdown,
    identity: Identity,
    created: bool,
) -> Result<(), DaemonError> {
    if created {
        info!(actor = %identity.actor_id(), "created a new device key");
    }

    let peers = PeerTable::new();
    let events = EventBus::new();
    let root = external;
    let net_stage = root.stage();
    let disc_stage = root.stage();
    let api_stage = root.stage();

    let epoch = Instant::now();
    let (cmd_tx, cmd_rx) = tokio::sync::mpsc::unbounded_channel();
    let sync_status = Arc::new(Mutex::new(SyncStatus::default()));
    let core = open_core(
        &cfg.data_dir,
        &identity,
        &up,
        cmd_tx,
        events.clone(),
        sync_status.clone(),
        epoch,
    )?;
    let workspaces = core
        .call(|c| c.local().store().workspaces())
        .await
        .map_err(|e| DaemonError::Store(e.to_string()))?
        .map_err(|e| DaemonError::Store(e.to_string()))?;
    info!(workspaces = workspaces.len(), "store open");
    let (ws_tx, ws_rx) = tokio::sync::watch::channel(
        workspaces
            .iter()
            .map(|w| w.secret.clone())
            .collect::<Vec<_>>(),
    );
    let _ = core.call(move |c| c.publish_workspaces(ws_tx)).await;

    let (net, inbound) = swarm::start(
        &identity,
        &up.listen,
        peers.clone(),
        events.clone(),
        &net_stage,
    )?;
    let listen = net
        .wait_listening()
        .await
        .map_err(|_| DaemonError::DataDir {
            path: cfg.data_dir.clone(),
            reason: "the network stopped while starting".into(),
        })?;
    sync_driver::start(
        DriverParts {
            core: core.clone(),
            net: net.clone(),
            inbound,
            commands: cmd_rx,
            epoch,
            events: events.clone(),
        },
        &net_stage,
    );

    // Ask for the assets whose bytes are not here yet, then check every
    // stored bundle and asset once; damaged ones are quarantined and fetched
    // again from members. Reads verify what they serve meanwhile, so the
    // scrub waits for a quiet moment: the first catch-up with members gets
    // the machine first. Its long read runs on a thread of its own.
    let scrub_core = core.clone();
    let scrub_status = sync_status.clone();
    let stopping = net_stage.clone();
    net_stage.spawn(
        async move {
            match scrub_core.call(|c| c.want_missing_assets()).await {
                Ok(Ok(0)) | Err(_) => {}
                Ok(Ok(n)) => info!(assets = n, "fetching assets whose bytes are not here yet"),
                Ok(Err(e)) => warn!(error = %e, "could not list the assets to fetch"),
            }
            tokio::select! {
                _ = quiet_moment(&scrub_status) => scrub(&scrub_core).await,
                _ = stopping.triggered() => {}
            }
        }
        .in_current_span(),
    );

    let targets = up
        .peers
        .iter()
        .cloned()
        .map(DialTarget::from_addr)
        .collect();
    let dialer = dialer::start(
        net.clone(),
        targets,
        &cfg.data_dir,
        events.clone(),
        &net_stage,
    );

    // Invites joined on the running node carry addresses: dial them now.
    let (dial_tx, mut dial_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<String>>();
    let _ = core.call(move |c| c.dial_requests(dial_tx)).await;
    let invite_dialer = dialer.clone();
    let me = identity.peer_id();
    let stopping = net_stage.clone();
    net_stage.spawn(
        async move {
            loop {
                // Ends with the stage: the sender lives as long as the core.
                let addrs = tokio::select! {
                    a = dial_rx.recv() => match a {
                        Some(a) => a,
                        None => return,
                    },
                    _ = stopping.triggered() => return,
                };
                for a in addrs {
                    let Ok(addr) = a.parse::<libp2p::Multiaddr>() else {
                        continue;
                    };
                    let target = DialTarget::from_addr(addr);
                    // Our own invite, joined again: nothing to dial.
                    if target.peer != Some(me) {
                        info!(addr = %a, "dialling an address from an invite");
                        if !invite_dialer.add(target).await {
                            return;
                        }
                    }
                }
            }
        }
        .in_current_span(),
    );

    if !up.no_mdns {
        check_interfaces(&up.interfaces)?;
        let port = listen
            .iter()
            .flat_map(|a| a.iter())
            .find_map(|p| match p {
                Protocol::Tcp(port) => Some(port),
                _ => None,
            })
            .unwrap_or(0);
        let rx = discovery::start(
            DiscoveryConfig {
                interfaces: up.interfaces.clone(),
                workspaces: workspaces.iter().map(|w| w.secret.clone()).collect(),
                updates: Some(ws_rx),
                port,
            },
            identity.peer_id(),
            &disc_stage,
        )?;
        disc_stage.spawn(
            on_discovery(rx, peers.clone(), events.clone(), dialer.clone()).in_current_span(),
        );
    } else {
        info!("mDNS is off (--no-mdns): only --peer and remembered addresses are dialled");
    }

    let status = status_fn(
        &identity,
        &cfg.data_dir,
        &up,
        workspaces.len(),
        net.clone(),
        sync_status,
    );
    let stop_request = Shutdown::new();
    let ctx = ApiContext {
        stop: Some(stop_request.clone()),
        core: Some(core.clone()),
        token: local_api::new_token(),
        status,
        peers: peers.clone(),
        events: events.clone(),
    };
    let api_addr = local_api::start(ctx, up.api_port, &cfg.data_dir, &api_stage).await?;
    info!(%api_addr, listen = ?listen, "node running");

    tokio::select! {
        sig = shutdown::os_signal() => {
            let sig = sig.map_err(DaemonError::Signals)?;
            info!(signal = sig, "stopping");
        }
        _ = root.triggered() => info!("stopping"),
        _ = stop_request.triggered() => info!("stopping: asked through the local API"),
    }
    for (name, stage) in [
        ("local API", &api_stage),
        ("discovery", &disc_stage),
        ("network", &net_stage),
    ] {
        if !stage.shutdown(STAGE_GRACE).await {
            warn!(stage = name, "did not stop within {STAGE_GRACE:?}");
        }
    }
    let _ = core.shutdown().await;
    root.trigger();
    let _ = std::fs::remove_file(cfg.data_dir.join(local_api::PORT_FILE));
    let _ = std::fs::remove_file(cfg.data_dir.join(local_api::SOCKET_FILE));
    info!("stopped");
    Ok(())
}

/// Refuses `--interface` names that do not exist (Linux: `/sys/class/net`;
/// elsewhere the check is skipped and mdns-sd simply matches nothing).
fn check_interfaces(names: &[String]) -> Result<(), DaemonError> {
    let sys = Path::new("/sys/class/net");
    if !sys.is_dir() {
        return Ok(());
    }
    match names.iter().find(|n| !sys.join(n).exists()) {
        Some(missing) => Err(DaemonError::NoSuchInterface(missing.clone())),
        None => Ok(()),
    }
}

/// Takes the data dir's lock file for as long as the returned file lives:
/// the daemon for its whole life, a CLI command while it opens the store.
///
/// # Errors
/// [`DaemonError::AlreadyRunning`] or [`DaemonError::DataDir`].
pub fn lock(data_dir: &Path) -> Result<std::fs::File, DaemonError> {
    let path = data_dir.join(LOCK_FILE);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| DaemonError::DataDir {
            path: data_dir.to_owned(),
            reason: e.to_string(),
        })?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(DaemonError::AlreadyRunning(data_dir.to_owned()))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(DaemonError::DataDir {
            path: data_dir.to_owned(),
            reason: e.to_string(),
        }),
    }
}

/// Opens the store (salvaging a damaged file), joins the workspaces named by
/// `--workspace-secrets`, and starts the storage thread with the engine.
fn open_core(
    data_dir: &Path,
    identity: &Identity,
    up: &UpConfig,
    cmd_tx: tokio::sync::mpsc::UnboundedSender<crate::sync_core::NetCommand>,
    events: EventBus,
    status: Arc<Mutex<SyncStatus>>,
    epoch: Instant,
) -> Result<ActorHandle<SyncCore>, DaemonError> {
    let dir = data_dir.to_owned();
    let identity = identity.clone();
    let extra = up.workspaces.clone();
    ActorHandle::spawn(STORE_THREAD, STORE_QUEUE, move || {
        let (local, report) = Local::open(&dir, &identity).map_err(|e| e.to_string())?;
        local.prepare_journal();
        if let Some(r) = report {
            crate::local::log_salvage(&r);
        }
        for secret in extra {
            let id = secret.workspace_id();
            if local
                .store()
                .workspace(&id)
                .map_err(|e| e.to_string())?
                .is_none()
            {
                let info = troupe_protocol::workspace::WorkspaceInfo::new(
                    secret,
                    format!("workspace {}", id.short()),
                    troupe_protocol::workspace::WorkspaceKind::Show,
                );
                local
                    .store()
                    .add_workspace(&info)
                    .map_err(|e| e.to_string())?;
                info!(workspace = %id, "joined a workspace from --workspace-secrets");
            }
        }
        SyncCore::new(local, identity.actor_id(), cmd_tx, events, status, epoch)
            .map_err(|e| e.to_string())
    })
    .map_err(|e| DaemonError::Store(e.to_string()))
}

/// Discovery glue: record sightings, publish them, and dial members only.
async fn on_discovery(
    mut rx: mpsc::Receiver<DiscoveryEvent>,
    peers: PeerTable,
    events: EventBus,
    dialer: DialerHandle,
) {
    while let Some(ev) = rx.recv().await {
        match ev {
            DiscoveryEvent::Member {
                peer,
                addrs,
                workspaces,
            } => {
                if peers.discovered(peer, true, &addrs) {
                    info!(%peer, shared = workspaces.len(), "found a member on the LAN");
                    events.publish(NodeEvent::PeerDiscovered {
                        peer_id: peer.to_string(),
                        member: true,
                    });
                }
                if !dialer
                    .add(DialTarget {
                        peer: Some(peer),
                        addrs,
                    })
                    .await
                {
                    return;
                }
            }
            DiscoveryEvent::Stranger { peer } => {
                if peers.discovered(peer, false, &[]) {
                    info!(%peer, "saw a node of another workspace; not dialling");
                    events.publish(NodeEvent::PeerDiscovered {
                        peer_id: peer.to_string(),
                        member: false,
                    });
                }
            }
            DiscoveryEvent::Gone { peer } => peers.lost(&peer),
        }
    }
}

fn status_fn(
    identity: &Identity,
    data_dir: &Path,
    up: &UpConfig,
    workspaces: usize,
    net: swarm::NetworkHandle,
    sync: Arc<Mutex<SyncStatus>>,
) -> local_api::StatusFn {
    let peer_id = identity.peer_id().to_string();
    let actor_id = identity.actor_id().to_string();
    let data_dir = data_dir.display().to_string();
    let mdns = serde_json::json!({
        "enabled": !up.no_mdns,
        "interfaces": if up.interfaces.is_empty() { serde_json::json!("all") } else { serde_json::json!(up.interfaces) },
        "workspaces_advertised": workspaces,
    });
    Arc::new(move || {
        let peers = net.peers().counts();
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "peer_id": peer_id,
            "actor_id": actor_id,
            "data_dir": data_dir,
            "listen_addrs": net.listen_addrs().iter().map(ToString::to_string).collect::<Vec<_>>(),
            "sync_protocol": net.protocol().to_string(),
            "connected_peers": peers.connected,
            "other_version_peers": peers.other_version,
            "mdns": mdns,
            "sync": sync.lock().map(|s| serde_json::to_value(&*s).unwrap_or_default()).unwrap_or_default(),
        })
    })
}

/// How long after start the scrub may begin (see [`quiet_moment`]).
const SCRUB_DELAY: Duration = Duration::from_secs(3);

/// A quiet moment for the scrub: this long without a sync frame sent, a
/// bundle received or a local write answered.
const SCRUB_QUIET: Duration = Duration::from_secs(1);

/// The scrub waits for a quiet moment at most this long after
/// [`SCRUB_DELAY`], then runs anyway (a node that syncs without pause still
/// gets its store checked).
const SCRUB_MAX_WAIT: Duration = Duration::from_secs(60);

/// Returns once the node has been quiet for [`SCRUB_QUIET`] (no sync frame
/// sent, no bundle received, no local write answered), from
/// [`SCRUB_DELAY`] after start on, or after [`SCRUB_MAX_WAIT`] more. A
/// scrub re-reads the whole store: run alongside a first sync to an empty
/// peer it took a tenth of the CPU both nodes had (and on two cores that
/// sync is bounded by CPU); alongside a burst of local writes, 3–6 % of
/// the node's.
async fn quiet_moment(sync: &Mutex<SyncStatus>) {
    let activity = || {
        sync.lock()
            .map(|s| (s.frames_sent, s.bundles_received, s.local_writes))
            .unwrap_or_default()
    };
    tokio::time::sleep(SCRUB_DELAY).await;
    let mut last = activity();
    let checks = SCRUB_MAX_WAIT.as_millis() / SCRUB_QUIET.as_millis();
    for _ in 0..checks {
        tokio::time::sleep(SCRUB_QUIET).await;
        let now = activity();
        if now == last {
            return;
        }
        last = now;
    }
}

/// The start-up scrub: the snapshot is taken on the storage thread, checked
/// on a thread of its own (the long part: every bundle and asset re-read, so
/// a big store does not hold up sync), and what fails is quarantined back on
/// the storage thread. Says in the log what it found.
async fn scrub(core: &ActorHandle<SyncCore>) {
    let findings = match core.call(|c| c.scrub_pass()).await {
        Ok(Ok(pass)) => {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let spawned = std::thread::Builder::new()
                .name("troupe-scrub".into())
                .spawn(move || {
                    let _ = tx.send(pass.check());
                });
            if let Err(e) = spawned {
                warn!(error = %e, "cannot start the scrub thread; the store is not re-checked this time");
                return;
            }
            match rx.await {
                Ok(r) => r,
                Err(_) => {
                    warn!("the scrub thread stopped early; the store is not re-checked this time");
                    return;
                }
            }
        }
        Ok(Err(e)) => Err(e),
        Err(_) => return,
    };
    let done = match findings {
        Ok(f) => core.call(move |c| c.scrub_finish(f)).await,
        Err(e) => Ok(Err(e)),
    };
    match done {
        Ok(Ok(0)) => info!("store scrubbed: every bundle verifies"),
        Ok(Ok(n)) => warn!(
            bundles = n,
            "store scrubbed: damaged bundles quarantined; repairing from members"
        ),
        Ok(Err(e)) => warn!(error = %e, "the store scrub could not run"),
        Err(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::{Instant as Clock, sleep};

    /// `act` on the status (a frame sent, a write answered) every 250 ms,
    /// `times` times.
    fn busy_with(
        status: &Arc<Mutex<SyncStatus>>,
        times: u32,
        act: fn(&mut SyncStatus),
    ) -> tokio::task::JoinHandle<()> {
        let s = status.clone();
        tokio::spawn(async move {
            for _ in 0..times {
                sleep(Duration::from_millis(250)).await;
                act(&mut s.lock().unwrap());
            }
        })
    }

    #[tokio::test(start_paused = true)]
    async fn the_scrub_waits_for_a_quiet_second_and_at_most_a_minute() {
        // Nothing syncing: the delay, then one quiet second.
        let idle = Arc::new(Mutex::new(SyncStatus::default()));
        let t = Clock::now();
        quiet_moment(&idle).await;
        assert_eq!(t.elapsed(), SCRUB_DELAY + SCRUB_QUIET);

        // Ten seconds of sync frames, or of local writes (a burst of edits,
        // an import): the scrub starts within two seconds after.
        let acts: [fn(&mut SyncStatus); 2] = [|s| s.frames_sent += 1, |s| s.local_writes += 1];
        for act in acts {
            let busy = Arc::new(Mutex::new(SyncStatus::default()));
            let activity = busy_with(&busy, 40, act);
            let t = Clock::now();
            quiet_moment(&busy).await;
            let waited = t.elapsed();
            assert!(
                waited > Duration::from_secs(10) && waited <= Duration::from_secs(12),
                "{waited:?}"
            );
            activity.await.unwrap();
        }

        // Never quiet: it runs anyway once the longest wait is over.
        let endless = Arc::new(Mutex::new(SyncStatus::default()));
        let sync = busy_with(&endless, 1_000, |s| s.frames_sent += 1);
        let t = Clock::now();
        quiet_moment(&endless).await;
        assert_eq!(t.elapsed(), SCRUB_DELAY + SCRUB_MAX_WAIT);
        sync.abort();
    }
}
