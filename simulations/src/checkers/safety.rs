//! Safety, checked at every step:
//! - only verified bundles are applied: every bundle a store commits from a
//!   peer is byte-for-byte one some author committed (same hash);
//! - an author never signs two different bundles for one seq, crashes included;
//! - no partial batch is visible: after a crash during a batch commit, the
//!   store holds all of the batch's new bundles or none, and its state equals
//!   a replay of its oplog;
//! - no non-member receives workspace data: no frame delivered to a node
//!   names a workspace it does not belong to (before or after the
//!   handshake), and no store holds bundles of a workspace it is not in;
//! - nothing acknowledged is lost across crashes: every bundle a store
//!   acknowledged (a local commit or a batch commit that returned) is still
//!   there after a restart, except copies the simulator itself rotted.

use std::collections::{BTreeMap, BTreeSet};

use troupe_protocol::sync::message::Message;
use troupe_protocol::sync::oplog_view::OplogView;
use troupe_protocol::{Bundle, BundleHash, WorkspaceId};
use troupe_storage::{BatchOutcome, Store};

use super::Slot;
use crate::error::SimError;

/// The safety checker's memory of what was authored and acknowledged.
#[derive(Debug, Default)]
pub struct Safety {
    /// Every bundle an author committed.
    pub authored: BTreeMap<Slot, BundleHash>,
    /// Plain size of each authored bundle (for the bytes-per-bundle figure).
    pub authored_bytes: u64,
    /// Per node, what its store acknowledged.
    pub acked: Vec<BTreeMap<Slot, BundleHash>>,
    /// Per node, slots whose stored copy the simulator rotted.
    pub rotted: Vec<BTreeSet<Slot>>,
    /// Per node, its own bundles whose commit the power cut answered with
    /// an error: redb can lose power after its commit point (freeing pages
    /// after a durable commit syncs again), so the restart decides.
    pub unanswered: Vec<Vec<Bundle>>,
}

fn fail(msg: String) -> Result<(), SimError> {
    Err(SimError::Safety(msg))
}

impl Safety {
    /// A checker for `n` nodes.
    pub fn new(n: usize) -> Safety {
        Safety {
            acked: vec![BTreeMap::new(); n],
            rotted: vec![BTreeSet::new(); n],
            unanswered: vec![Vec::new(); n],
            ..Safety::default()
        }
    }

    /// A node's own bundle was committed durably.
    ///
    /// # Errors
    /// A second, different bundle for a slot already authored (seq reuse).
    pub fn authored(&mut self, node: usize, b: &Bundle) -> Result<(), SimError> {
        let body = b.body();
        let slot = (body.workspace, body.author, body.seq);
        if let Some(h) = self.authored.insert(slot, b.hash())
            && h != b.hash()
        {
            return fail(format!(
                "node {node} reused seq {} after a crash: two different bundles for one slot",
                body.seq
            ));
        }
        self.authored_bytes += b.bytes().len() as u64;
        self.acked[node].insert(slot, b.hash());
        self.rotted[node].remove(&slot);
        Ok(())
    }

    /// A batch from a peer was committed on `node`.
    ///
    /// # Errors
    /// A committed bundle nobody authored (a corrupt or forged copy applied).
    pub fn committed(
        &mut self,
        node: usize,
        ws: &WorkspaceId,
        outcome: &BatchOutcome,
    ) -> Result<(), SimError> {
        for (author, seq, hash) in &outcome.committed {
            let slot = (*ws, *author, *seq);
            match self.authored.get(&slot) {
                Some(h) if h == hash => {}
                other => {
                    return fail(format!(
                        "node {node} applied {author:?}/{seq} with hash {hash:?}, authored {other:?}"
                    ));
                }
            }
            self.acked[node].insert(slot, *hash);
            self.rotted[node].remove(&slot);
        }
        Ok(())
    }

    /// A frame is delivered to `to`, a member of `member`.
    ///
    /// # Errors
    /// The frame names a workspace `to` does not belong to.
    pub fn frame(
        &self,
        to: usize,
        member: impl Fn(&WorkspaceId) -> bool,
        bytes: &[u8],
    ) -> Result<(), SimError> {
        let Ok(msg) = Message::from_frame(bytes) else {
            return Ok(());
        };
        let named: Vec<WorkspaceId> = match &msg {
            Message::Ranges { workspaces } => workspaces.iter().map(|w| w.workspace).collect(),
            Message::Want { workspace, .. }
            | Message::Batch { workspace, .. }
            | Message::BatchAck { workspace, .. }
            | Message::Announce { workspace, .. }
            | Message::RepairWant { workspace, .. }
            | Message::RepairReply { workspace, .. } => vec![*workspace],
            _ => Vec::new(),
        };
        for ws in named {
            if !member(&ws) {
                return fail(format!(
                    "node {to} (not a member) received a frame naming workspace {ws:?}"
                ));
            }
        }
        Ok(())
    }

    /// A node's own bundle whose commit failed as the power went.
    pub fn unanswered(&mut self, node: usize, b: Bundle) {
        self.unanswered[node].push(b);
    }

    /// After a restart: an unanswered bundle the store holds was committed
    /// after all (it counts as authored and acknowledged from now on); one
    /// it does not hold was not, and its seq may be signed again.
    ///
    /// # Errors
    /// As [`Safety::authored`]; the store cannot be read.
    pub fn resolve_unanswered(&mut self, node: usize, store: &Store) -> Result<(), SimError> {
        let view = store
            .view()
            .map_err(|e| SimError::Storage(format!("node {node}: view: {e}")))?;
        for b in std::mem::take(&mut self.unanswered[node]) {
            let body = b.body();
            let got = view
                .bundle_hash(&body.workspace, &body.author, body.seq)
                .map_err(|e| SimError::Storage(e.to_string()))?;
            if got == Some(b.hash()) {
                self.authored(node, &b)?;
            }
        }
        Ok(())
    }

    /// Checks a store just re-opened after a crash. `inflight` = the new
    /// slots of a batch commit the crash interrupted.
    ///
    /// # Errors
    /// An acknowledged bundle missing, a partial batch, or state that differs
    /// from a replay of the oplog.
    pub fn after_restart(
        &self,
        node: usize,
        store: &Store,
        inflight: Option<&[Slot]>,
    ) -> Result<(), SimError> {
        let view = store
            .view()
            .map_err(|e| SimError::Storage(format!("node {node}: view: {e}")))?;
        for (slot, hash) in &self.acked[node] {
            if self.rotted[node].contains(slot) {
                continue;
            }
            let got = view
                .bundle_hash(&slot.0, &slot.1, slot.2)
                .map_err(|e| SimError::Storage(e.to_string()))?;
            if got != Some(*hash) {
                return fail(format!(
                    "node {node} lost acknowledged bundle {:?}/{} across a crash",
                    slot.1, slot.2
                ));
            }
        }
        if let Some(slots) = inflight {
            let mut held = 0;
            for (ws, a, s) in slots {
                if view
                    .bundle_hash(ws, a, *s)
                    .map_err(|e| SimError::Storage(e.to_string()))?
                    .is_some()
                {
                    held += 1;
                }
            }
            if held != 0 && held != slots.len() {
                return fail(format!(
                    "node {node}: a crash mid-commit left {held} of {} bundles of one batch",
                    slots.len()
                ));
            }
        }
        if !self.rotted[node].is_empty() {
            // Replay skips a rotted copy until its repair arrives; compare after that.
            return Ok(());
        }
        let diffs = store
            .verify_rebuild()
            .map_err(|e| SimError::Storage(format!("node {node}: verify_rebuild: {e}")))?;
        if !diffs.is_empty() {
            return fail(format!(
                "node {node}: after a crash, state differs from a replay of the oplog: {:?}",
                diffs.first()
            ));
        }
        Ok(())
    }

    /// Checks a store at the end: it holds only workspaces it belongs to and
    /// only bundles some author wrote.
    ///
    /// # Errors
    /// Data of a foreign workspace, or a bundle nobody authored.
    pub fn final_store(
        &self,
        node: usize,
        store: &Store,
        all: &[WorkspaceId],
        member: impl Fn(&WorkspaceId) -> bool,
    ) -> Result<(), SimError> {
        for ws in all {
            let ranges = store
                .ranges(ws)
                .map_err(|e| SimError::Storage(e.to_string()))?;
            if !member(ws) && !ranges.is_empty() {
                return fail(format!(
                    "node {node} (not a member) holds bundles of {ws:?}"
                ));
            }
            let view = store.view().map_err(|e| SimError::Storage(e.to_string()))?;
            for (author, set) in &ranges {
                for seq in set.iter() {
                    let h = view
                        .bundle_hash(ws, author, seq)
                        .map_err(|e| SimError::Storage(e.to_string()))?;
                    if h.is_none() || self.authored.get(&(*ws, *author, seq)) != h.as_ref() {
                        return fail(format!(
                            "node {node} holds {author:?}/{seq} with hash {h:?}, not what was authored"
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}
