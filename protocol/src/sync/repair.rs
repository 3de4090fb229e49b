//! Repair: fetching a clean copy of one bundle, by (author, seq) and expected
//! hash, from any member that has it; a peer whose copy does not hash right is
//! blamed and the request moves to the next peer.

use super::engine::{Engine, Pending, Repair};
use super::io::{Output, PeerId, SyncEvent};
use super::limits::MAX_REPAIRS;
use super::message::Message;
use super::oplog_view::OplogView;
use crate::bundle::Bundle;
use crate::ids::{ActorId, BundleHash, WorkspaceId};

impl Engine {
    pub(crate) fn repair_wanted(
        &mut self,
        ws: WorkspaceId,
        author: ActorId,
        seq: u64,
        hash: BundleHash,
    ) {
        if self.repairs.len() >= MAX_REPAIRS || !self.secrets.contains_key(&ws) {
            return self.event(SyncEvent::RepairFailed {
                workspace: ws,
                author,
                seq,
            });
        }
        self.repairs.entry((ws, author, seq)).or_insert(Repair {
            hash,
            tried: Vec::new(),
            asked: None,
        });
        self.try_repair((ws, author, seq));
    }

    /// Asks the next untried member, or gives up.
    pub(crate) fn try_repair(&mut self, key: (WorkspaceId, ActorId, u64)) {
        let (ws, author, seq) = key;
        let members = self.members(ws);
        let Some(r) = self.repairs.get_mut(&key) else {
            return;
        };
        match members.into_iter().find(|p| !r.tried.contains(p)) {
            Some(peer) => {
                r.tried.push(peer);
                r.asked = Some(peer);
                let hash = r.hash;
                self.send(
                    peer,
                    &Message::RepairWant {
                        workspace: ws,
                        author,
                        seq,
                        hash,
                    },
                );
            }
            None => {
                self.repairs.remove(&key);
                self.event(SyncEvent::RepairFailed {
                    workspace: ws,
                    author,
                    seq,
                });
            }
        }
    }

    pub(crate) fn on_repair_want(
        &mut self,
        peer: PeerId,
        ws: WorkspaceId,
        author: ActorId,
        seq: u64,
        hash: BundleHash,
        view: &impl OplogView,
    ) {
        if self.shared_mut(peer, ws).is_none() {
            return self.blame(peer, "repair want for a workspace not shared".into(), view);
        }
        let ours = matches!(view.bundle_hash(&ws, &author, seq), Ok(Some(h)) if h == hash);
        let bundle = if ours {
            view.bundle(&ws, &author, seq).ok().flatten()
        } else {
            None
        };
        self.send(
            peer,
            &Message::RepairReply {
                workspace: ws,
                author,
                seq,
                bundle,
            },
        );
    }

    pub(crate) fn on_repair_reply(
        &mut self,
        peer: PeerId,
        ws: WorkspaceId,
        author: ActorId,
        seq: u64,
        bundle: Option<Vec<u8>>,
        view: &impl OplogView,
    ) {
        let key = (ws, author, seq);
        let Some(r) = self.repairs.get(&key).filter(|r| r.asked == Some(peer)) else {
            return self.blame(peer, "repair reply nobody asked for".into(), view);
        };
        let hash = r.hash;
        let Some(bytes) = bundle else {
            return self.try_repair(key);
        };
        match Bundle::decode_expecting(bytes.clone(), &hash) {
            Ok(b)
                if b.body().workspace == ws && b.body().author == author && b.body().seq == seq =>
            {
                self.repairs.remove(&key);
                let id = self.next_local_batch;
                self.next_local_batch += 1;
                self.uncommitted.insert(key.0, key.1, key.2, hash);
                let pending = Pending {
                    peer_batch: None,
                    epoch: 0,
                    slots: vec![(author, seq)],
                };
                self.committing.insert((peer, ws, id), pending);
                self.out.push_back(Output::CommitBatch {
                    peer,
                    workspace: ws,
                    batch_id: id,
                    bundles: vec![b],
                    wire: None,
                });
            }
            res => {
                let reason = match res {
                    Err(e) => e.to_string(),
                    Ok(_) => "repair copy names another slot".into(),
                };
                self.out.push_back(Output::Quarantine {
                    peer,
                    workspace: ws,
                    bytes,
                    reason: reason.clone(),
                });
                self.blame(peer, format!("bad repair copy: {reason}"), view);
                self.try_repair(key);
            }
        }
    }
}
