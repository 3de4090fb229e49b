//! A simulated node: the real sync [`Engine`] and the real [`Store`] on an
//! in-memory, crash-injecting redb backend. A crash throws away the engine
//! and everything not yet synced to the durable image; a restart re-opens the
//! store from that image with a fresh engine, as a real process would.

use troupe_protocol::crypto::ActorKey;
use troupe_protocol::hlc::HlcClock;
use troupe_protocol::sync::{Engine, EngineConfig, Millis, PeerId};
use troupe_protocol::workspace::{WorkspaceInfo, WorkspaceKind, WorkspaceSecret};
use troupe_protocol::{ActorId, WorkspaceId};
use troupe_storage::Store;
use troupe_storage::testing::CrashBackend;

use crate::error::SimError;
use crate::rng::SimRng;

/// A node's process while it runs.
pub struct Running {
    /// The sync engine.
    pub engine: Engine,
    /// The store on `backend`.
    pub store: Store,
    /// The disk, shared with the store (crash injection and bit rot).
    pub backend: CrashBackend,
    /// Hybrid logical clock for local bundles.
    pub hlc: HlcClock,
    /// The timer currently scheduled in the world, if any.
    pub armed: Option<Millis>,
}

/// One node: identity, memberships, and its process when up.
pub struct SimNode {
    /// Index in the simulation.
    pub index: usize,
    /// Signing key; its public half is the peer id.
    pub key: ActorKey,
    /// Peer id (the actor id bytes).
    pub id: PeerId,
    /// Workspaces it belongs to.
    pub secrets: Vec<WorkspaceSecret>,
    /// The process, `None` while crashed.
    pub run: Option<Running>,
    /// Incarnation: events of an earlier life are dropped.
    pub life: u64,
    /// The last durable image, kept while the node is down.
    image: Vec<u8>,
    rng: SimRng,
}

impl SimNode {
    /// A fresh node with an empty store holding its workspaces.
    ///
    /// # Errors
    /// [`SimError::Storage`] when the store cannot be created.
    pub fn new(
        index: usize,
        key: ActorKey,
        secrets: Vec<WorkspaceSecret>,
        rng: SimRng,
    ) -> Result<SimNode, SimError> {
        let id = PeerId(key.actor_id().0);
        let mut node = SimNode {
            index,
            key,
            id,
            secrets,
            run: None,
            life: 0,
            image: Vec::new(),
            rng,
        };
        node.start()?;
        let secrets = node.secrets.clone();
        let store = &node.running()?.store;
        for (i, s) in secrets.iter().enumerate() {
            store
                .add_workspace(&WorkspaceInfo::new(
                    s.clone(),
                    format!("show {i}"),
                    WorkspaceKind::Show,
                ))
                .map_err(|e| SimError::Storage(format!("node {index}: add workspace: {e}")))?;
        }
        Ok(node)
    }

    /// The actor id of this node.
    pub fn actor(&self) -> ActorId {
        self.key.actor_id()
    }

    /// Whether it belongs to `ws`.
    pub fn member(&self, ws: &WorkspaceId) -> bool {
        self.secrets.iter().any(|s| s.workspace_id() == *ws)
    }

    /// The running process.
    ///
    /// # Errors
    /// [`SimError::Storage`] when the node is down (a driver bug).
    pub fn running(&mut self) -> Result<&mut Running, SimError> {
        let i = self.index;
        self.run
            .as_mut()
            .ok_or_else(|| SimError::Storage(format!("node {i} is down")))
    }

    /// Starts the process from the durable image (empty the first time).
    ///
    /// # Errors
    /// [`SimError::Storage`] when the durable image does not open: a crash
    /// left the file unusable, which redb promises never happens.
    pub fn start(&mut self) -> Result<(), SimError> {
        self.life += 1;
        let backend = CrashBackend::from_image(std::mem::take(&mut self.image));
        let store = Store::open_unchecked_with_backend(backend.clone()).map_err(|e| {
            SimError::Safety(format!(
                "node {}: the durable image does not re-open after a crash: {e}",
                self.index
            ))
        })?;
        let engine = Engine::new(EngineConfig {
            local_peer: self.id.0,
            workspaces: self.secrets.clone(),
            rng_seed: self.rng.next_u64(),
        });
        self.run = Some(Running {
            engine,
            store,
            backend,
            hlc: HlcClock::default(),
            armed: None,
        });
        Ok(())
    }

    /// Cuts power: the process is gone, the durable image stays.
    pub fn crash(&mut self) {
        if let Some(run) = self.run.take() {
            run.backend.crash_now();
            self.image = run.backend.durable_image();
        }
        self.life += 1;
    }

    /// Stops the process cleanly (the store closes normally) and returns the
    /// disk, so a test can change it at rest; [`SimNode::start`] re-opens
    /// what the disk holds when it is handed back with [`SimNode::set_disk`].
    pub fn stop(&mut self) -> Option<CrashBackend> {
        let run = self.run.take()?;
        let backend = run.backend.clone();
        drop(run);
        self.life += 1;
        Some(backend)
    }

    /// Hands the disk back after [`SimNode::stop`].
    pub fn set_disk(&mut self, backend: &CrashBackend) {
        self.image = backend.durable_image();
    }

    /// Whether the process is up.
    pub fn is_up(&self) -> bool {
        self.run.is_some()
    }
}
