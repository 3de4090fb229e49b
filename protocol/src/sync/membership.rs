//! Membership that changes while connected.
//!
//! A crew member joins a show's workspace on a running node while the other
//! devices are already connected to it; waiting for the next reconnect would
//! leave them apart until someone restarts. So a workspace added after the
//! handshake is proved on every open session with
//! [`Message::LateProofs`], bound to that session's nonces exactly like the
//! handshake's proofs (the argument in [`super::handshake`] carries over:
//! padded, constant-time compared, always answered, so a non-member learns
//! nothing). Once both sides proved it, each sends its ranges and the
//! workspace syncs as if it had been shared from the start.
//!
//! Leaving is the reverse: [`Message::Withdrawn`] tells the peers that shared
//! the workspace to stop, and what they still had in flight for it is
//! dropped quietly rather than counted against them.

use std::collections::BTreeSet;

use super::engine::Engine;
use super::handshake;
use super::io::PeerId;
use super::limits::MAX_PROOFS;
use super::message::Message;
use super::oplog_view::OplogView;
use super::session::Session;
use crate::ids::WorkspaceId;
use crate::workspace::WorkspaceSecret;

impl Engine {
    /// A workspace joined or created on this node: prove it to every peer
    /// already in session.
    pub(crate) fn workspace_added(&mut self, secret: WorkspaceSecret) {
        let ws = secret.workspace_id();
        if self.secrets.contains_key(&ws) {
            return;
        }
        self.secrets.insert(ws, secret);
        let active: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| matches!(p.session, Some(Session::Active(_))))
            .map(|(id, _)| *id)
            .collect();
        for peer in active {
            self.open_late_proofs(peer, &[ws]);
        }
    }

    /// After the handshake: proves the workspaces added while it ran (our
    /// first proofs did not cover them).
    pub(crate) fn prove_added_since(&mut self, peer: PeerId, proved: &BTreeSet<WorkspaceId>) {
        let late: Vec<WorkspaceId> = self
            .secrets
            .keys()
            .filter(|w| !proved.contains(w))
            .take(MAX_PROOFS)
            .copied()
            .collect();
        if !late.is_empty() {
            self.open_late_proofs(peer, &late);
        }
    }

    fn nonces(&self, peer: PeerId) -> Option<([u8; 32], [u8; 32])> {
        match self.peers.get(&peer)?.session.as_ref()? {
            Session::Active(a) => Some((a.my_nonce, a.their_nonce)),
            _ => None,
        }
    }

    fn late_proofs_for(&mut self, peer: PeerId, wss: &[WorkspaceId]) -> Option<Vec<[u8; 32]>> {
        let (mine, theirs) = self.nonces(peer)?;
        let secrets: Vec<&WorkspaceSecret> =
            wss.iter().filter_map(|w| self.secrets.get(w)).collect();
        Some(handshake::our_proofs(
            secrets,
            &self.local,
            &peer,
            &mine,
            &theirs,
            &mut self.rng,
        ))
    }

    fn open_late_proofs(&mut self, peer: PeerId, wss: &[WorkspaceId]) {
        if let Some(proofs) = self.late_proofs_for(peer, wss) {
            if let Some(Session::Active(a)) =
                self.peers.get_mut(&peer).and_then(|p| p.session.as_mut())
            {
                a.expect_late();
            }
            self.send(
                peer,
                &Message::LateProofs {
                    proofs,
                    answer: false,
                },
            );
        }
    }

    /// Their late proofs: any of our workspaces not yet shared with them that
    /// they proved becomes shared. An opening is answered with our proofs of
    /// exactly those (padding only when none matched).
    pub(crate) fn on_late_proofs(
        &mut self,
        peer: PeerId,
        proofs: &[[u8; 32]],
        answer: bool,
        view: &impl OplogView,
    ) {
        let Some((mine, theirs)) = self.nonces(peer) else {
            return;
        };
        let now = self.now;
        let allowed = match self.peers.get_mut(&peer).and_then(|p| p.session.as_mut()) {
            Some(Session::Active(a)) => a.take_late(now),
            _ => return,
        };
        if !allowed {
            return self.blame(peer, "late proofs too often".into(), view);
        }
        let already: BTreeSet<WorkspaceId> =
            match self.peers.get(&peer).and_then(|p| p.session.as_ref()) {
                Some(Session::Active(a)) => a.shared.keys().copied().collect(),
                _ => return,
            };
        let matched = handshake::shared(
            self.secrets
                .values()
                .filter(|s| !already.contains(&s.workspace_id())),
            proofs,
            &self.local,
            &peer,
            &mine,
            &theirs,
        );
        if !answer {
            let ids: Vec<WorkspaceId> = matched.iter().copied().collect();
            if let Some(proofs) = self.late_proofs_for(peer, &ids) {
                self.send(
                    peer,
                    &Message::LateProofs {
                        proofs,
                        answer: true,
                    },
                );
            }
        }
        if matched.is_empty() {
            return;
        }
        if let Some(Session::Active(a)) = self.peers.get_mut(&peer).and_then(|p| p.session.as_mut())
        {
            for ws in &matched {
                a.shared.entry(*ws).or_default();
                a.withdrawn.remove(ws);
            }
        }
        self.send_joined_ranges(peer, &matched, view);
        for ws in matched {
            self.resume_blobs(ws);
        }
    }

    /// This node left `ws`: tell the peers that shared it, then forget it.
    pub(crate) fn workspace_removed(&mut self, ws: WorkspaceId) {
        let sharing: Vec<PeerId> = self.members(ws);
        for peer in sharing {
            self.send(peer, &Message::Withdrawn { workspace: ws });
        }
        self.secrets.remove(&ws);
        for p in self.peers.values_mut() {
            if let Some(Session::Active(a)) = &mut p.session
                && a.shared.remove(&ws).is_some()
            {
                a.withdrawn.insert(ws);
            }
        }
        self.requested.retain(|(w, _), _| *w != ws);
        self.repairs.retain(|(w, _, _), _| *w != ws);
    }

    /// `peer` left `ws`: stop syncing it with them and ask others for what
    /// they were to send.
    pub(crate) fn on_withdrawn(&mut self, peer: PeerId, ws: WorkspaceId, view: &impl OplogView) {
        let Some(Session::Active(a)) = self.peers.get_mut(&peer).and_then(|p| p.session.as_mut())
        else {
            return;
        };
        // Not shared (we left too, or never shared it): nothing to undo.
        let Some(sh) = a.shared.remove(&ws) else {
            return;
        };
        a.withdrawn.insert(ws);
        self.unrequest(ws, &sh.wanted);
        let authors = sh.wanted.into_keys().collect();
        self.request_missing_of(ws, &authors, None, view);
    }

    /// Whether a message for `ws` from `peer` belongs to a workspace one side
    /// withdrew during this session (dropped without blame: it was in flight).
    pub(crate) fn withdrawn_with(&self, peer: PeerId, ws: &WorkspaceId) -> bool {
        matches!(
            self.peers.get(&peer).and_then(|p| p.session.as_ref()),
            Some(Session::Active(a)) if a.withdrawn.contains(ws)
        )
    }
}
