//! Range sync, batches and live announces.
//!
//! After the handshake each side sends its ranges; each side wants what it
//! lacks; the holder streams exactly that, author- then seq-ascending, in
//! batches of at most [`BATCH_BUNDLES`] bundles (the first batch into an
//! empty window [`FIRST_BATCH_BUNDLES`]) or [`BATCH_BYTES`] bytes, at
//! most [`MAX_IN_FLIGHT_BATCHES`] unacknowledged. Interior signatures are
//! dropped; each author-run in a batch ends with a signed bundle (extended up
//! to [`RUN_EXTENSION`] bundles to reach one when stored copies lack it). The
//! receiver verifies every batch, hands the good bundles to the driver to
//! commit, and acknowledges after the commit: committed ranges are the
//! checkpoint, so a broken connection costs at most the uncommitted batches.

use std::collections::{BTreeMap, BTreeSet};

use super::batch::build_batch;
use super::engine::{Engine, Pending};
use super::io::{Output, PeerId, SyncEvent};
use super::limits::{BATCH_BUNDLES, FIRST_BATCH_BUNDLES, MAX_IN_FLIGHT_BATCHES, MAX_THEIR_RANGES};
use super::message::{Message, WorkspaceRanges};
use super::oplog_view::OplogView;
use super::session::{add, sub};
use super::wire_copy::WireCopy;
use crate::bundle::Bundle;
use crate::error::VerifyError;
use crate::ids::{ActorId, WorkspaceId};
use crate::ranges::{MAX_RANGES, SeqRangeSet};
use crate::verify::verify_bundles;

/// Members of a peer-supplied set, without overflow.
fn count(s: &SeqRangeSet) -> u64 {
    s.ranges()
        .iter()
        .fold(0u64, |n, (a, b)| n.saturating_add(b - a).saturating_add(1))
}

fn single(seq: u64) -> SeqRangeSet {
    SeqRangeSet::from_ranges([(seq, seq)])
}

impl Engine {
    pub(crate) fn on_ranges(
        &mut self,
        peer: PeerId,
        workspaces: Vec<WorkspaceRanges>,
        view: &impl OplogView,
    ) {
        for w in workspaces {
            let Some(sh) = self.shared_mut(peer, w.workspace) else {
                self.blame(peer, "ranges for a workspace not shared".into(), view);
                continue;
            };
            if sh.ranges_known {
                continue;
            }
            sh.ranges_known = true;
            for (author, set) in &w.authors {
                sh.theirs.add(*author, set);
            }
            if sh.theirs.ranges() > MAX_THEIR_RANGES {
                sh.theirs.clear();
                self.blame(peer, "ranges too fragmented".into(), view);
                continue;
            }
            self.request_missing(peer, w.workspace, view);
        }
    }

    /// Asks `peer`, whose ranges in `ws` just arrived, for whatever it
    /// holds that we neither hold nor asked anyone for yet; reports peers
    /// we are now up to date with. Only this peer's claims are new, so only
    /// they are walked, with one read of every author's ranges.
    fn request_missing(&mut self, peer: PeerId, ws: WorkspaceId, view: &impl OplogView) {
        let Ok(ours) = view.ranges(&ws) else {
            return;
        };
        if let Some(sh) = self.shared_ref(peer, ws).filter(|sh| sh.ranges_known) {
            let wants: Vec<_> = sh
                .theirs
                .iter()
                .map(|(author, theirs)| (*author, self.need(ws, author, theirs, ours.get(author))))
                .filter(|(_, need)| !need.is_empty())
                .collect();
            for (author, need) in wants {
                self.ask(peer, ws, author, need);
            }
        }
        self.check_up_to_date(ws);
    }

    /// Asks for what is missing of `authors` alone, of `only` one peer
    /// or of every member: after a peer claimed more of an author, or an
    /// author's seqs were released to be asked elsewhere, nothing else
    /// changed, so only those authors' ranges are read. A member announcing
    /// one author at a time, or sending batches of copies it cannot vouch
    /// for, costs as much per author as the first, however many the
    /// workspace holds.
    pub(crate) fn request_missing_of(
        &mut self,
        ws: WorkspaceId,
        authors: &BTreeSet<ActorId>,
        only: Option<PeerId>,
        view: &impl OplogView,
    ) {
        let peers = match only {
            Some(peer) => vec![peer],
            None => self.members(ws),
        };
        for author in authors {
            let Ok(ours) = view.author_ranges(&ws, author) else {
                continue;
            };
            for &peer in &peers {
                let need = match self.shared_ref(peer, ws) {
                    Some(sh) if sh.ranges_known => match sh.theirs.get(author) {
                        Some(theirs) => self.need(ws, author, theirs, Some(&ours)),
                        None => continue,
                    },
                    _ => continue,
                };
                if !need.is_empty() {
                    self.ask(peer, ws, *author, need);
                }
            }
        }
        self.check_up_to_date(ws);
    }

    /// What of `theirs` (a peer's claim on `author`) we neither hold
    /// (`ours`) nor asked anyone for, capped to what one want may carry.
    fn need(
        &self,
        ws: WorkspaceId,
        author: &ActorId,
        theirs: &SeqRangeSet,
        ours: Option<&SeqRangeSet>,
    ) -> SeqRangeSet {
        let mut need = theirs.clone();
        if let Some(o) = ours {
            need = need.difference(o);
        }
        if let Some(r) = self.requested.get(&(ws, *author)) {
            need = need.difference(r);
        }
        if need.ranges().len() > MAX_RANGES {
            need = SeqRangeSet::from_ranges(need.ranges()[..MAX_RANGES].iter().copied());
        }
        need
    }

    /// Asks `peer` for `need` of `author`, and records it as asked.
    fn ask(&mut self, peer: PeerId, ws: WorkspaceId, author: ActorId, need: SeqRangeSet) {
        let r = self.requested.entry((ws, author)).or_default();
        *r = r.union(&need);
        let now = self.now;
        if let Some(sh) = self.shared_mut(peer, ws) {
            if sh.wanted.is_empty() {
                sh.progress_at = now;
            }
            add(&mut sh.wanted, author, &need);
            sh.expected = sh.expected.saturating_add(count(&need));
            sh.up_to_date = false;
        }
        self.send(
            peer,
            &Message::Want {
                workspace: ws,
                author,
                ranges: need,
            },
        );
    }

    fn shared_ref(&self, peer: PeerId, ws: WorkspaceId) -> Option<&super::session::Shared> {
        match self.peers.get(&peer)?.session.as_ref()? {
            super::session::Session::Active(a) => a.shared.get(&ws),
            _ => None,
        }
    }

    fn check_up_to_date(&mut self, ws: WorkspaceId) {
        for peer in self.members(ws) {
            let busy = self
                .committing
                .keys()
                .any(|(p, w, _)| *p == peer && *w == ws);
            let Some(sh) = self.shared_mut(peer, ws) else {
                continue;
            };
            if sh.ranges_known
                && sh.wanted.is_empty()
                && sh.refused.is_empty()
                && !sh.up_to_date
                && !busy
            {
                sh.up_to_date = true;
                self.event(SyncEvent::UpToDate {
                    peer,
                    workspace: ws,
                });
            }
        }
    }

    pub(crate) fn on_want(
        &mut self,
        peer: PeerId,
        ws: WorkspaceId,
        author: ActorId,
        ranges: SeqRangeSet,
        view: &impl OplogView,
    ) {
        if self.shared_ref(peer, ws).is_none() {
            return self.blame(peer, "want for a workspace not shared".into(), view);
        }
        let held = view.author_ranges(&ws, &author).unwrap_or_default();
        // Serve only what we hold; the rest of a bogus want is ignored.
        let give = ranges.difference(&ranges.difference(&held));
        if let Some(sh) = self.shared_mut(peer, ws) {
            add(&mut sh.to_send, author, &give);
        }
        self.fill_window(peer, ws, view);
    }

    pub(crate) fn on_ack(&mut self, peer: PeerId, ws: WorkspaceId, id: u64, view: &impl OplogView) {
        let known = self
            .shared_mut(peer, ws)
            .is_some_and(|sh| sh.in_flight.remove(&id));
        if !known {
            return self.blame(peer, "ack for a batch never sent".into(), view);
        }
        self.fill_window(peer, ws, view);
    }

    /// Builds and sends one batch for the session when its window has room,
    /// and leaves the rest of the window for [`Input::Continue`] (asked for
    /// with one [`Output::Continue`]).
    pub(crate) fn fill_window(&mut self, peer: PeerId, ws: WorkspaceId, view: &impl OplogView) {
        let mut built = false;
        loop {
            let Some(sh) = self.shared_mut(peer, ws) else {
                return;
            };
            if sh.in_flight.len() >= MAX_IN_FLIGHT_BATCHES || sh.to_send.is_empty() {
                return;
            }
            if built {
                if self.to_fill.is_empty() {
                    self.out.push_back(Output::Continue);
                }
                self.to_fill.insert((peer, ws));
                return;
            }
            // A batch into an empty window is small: the receiver starts
            // committing it while the rest of the window is being built.
            let small = sh.in_flight.is_empty() && !sh.last_small;
            let max = if small {
                FIRST_BATCH_BUNDLES
            } else {
                BATCH_BUNDLES
            };
            let (items, sent) = build_batch(view, ws, &mut sh.to_send, max);
            sh.last_small = small;
            if items.is_empty() {
                continue;
            }
            built = true;
            let id = sh.next_batch;
            sh.next_batch += 1;
            sh.in_flight.insert(id);
            for (author, seq) in &sent {
                sh.theirs.add(*author, &single(*seq));
            }
            self.stats.bundles_sent += items.len() as u64;
            let data = self
                .codec
                .encode(items.iter().map(|(e, b)| (*e, b.as_slice())));
            self.send(
                peer,
                &Message::Batch {
                    workspace: ws,
                    batch_id: id,
                    data,
                },
            );
        }
    }

    pub(crate) fn on_batch(
        &mut self,
        peer: PeerId,
        ws: WorkspaceId,
        id: u64,
        items: super::prepare::BatchItems,
        payload: Vec<u8>,
        view: &impl OplogView,
    ) {
        let now = self.now;
        match self.shared_mut(peer, ws) {
            Some(sh) => sh.progress_at = now,
            None => return self.blame(peer, "batch for a workspace not shared".into(), view),
        }
        let epoch = self.peers.get(&peer).map_or(0, |p| p.epoch);
        let reused = self.committing.iter().any(|((p, w, _), pd)| {
            *p == peer && *w == ws && pd.epoch == epoch && pd.peer_batch == Some(id)
        });
        if reused {
            return self.blame(peer, "reused or reserved batch id".into(), view);
        }
        let items = match items {
            Ok(r) => r,
            Err(e) => {
                self.blame(peer, format!("undecodable batch: {e}"), view);
                self.send(
                    peer,
                    &Message::BatchAck {
                        workspace: ws,
                        batch_id: id,
                    },
                );
                // Which wants it answered cannot be told, so none is left
                // waiting on `peer`: every one is asked of another member
                // now, not after WANT_TIMEOUT (and of `peer` again only
                // after RETRY_REFUSED).
                let released = self.release_wanted(peer, ws);
                return self.request_missing_of(ws, &released, None, view);
            }
        };
        self.stats.bundles_received += items.len() as u64;
        let mut decoded = Vec::with_capacity(items.len());
        // Each decoded bundle's place among the batch's items (for the
        // wire copy a journal may keep).
        let mut places = Vec::with_capacity(items.len());
        // Copies of authors nothing was asked of from this peer are dropped
        // unverified: a batch answers wants, such a copy is never kept and
        // vouches for no kept one (a voucher is of its own author), and
        // verifying them (up to 512 run tails' signatures a frame) would
        // let a member keep this thread busy for nothing.
        let asked: Vec<ActorId> = self
            .shared_ref(peer, ws)
            .map(|sh| sh.wanted.keys().copied().collect())
            .unwrap_or_default();
        // Authors of copies that failed: their seqs are asked elsewhere.
        let mut released = BTreeSet::new();
        for (i, item) in items.into_iter().enumerate() {
            match item {
                Ok(b) if asked.binary_search(&b.body().author).is_ok() => {
                    decoded.push(b);
                    places.push(i as u32);
                }
                Ok(_) => {}
                Err((e, bytes)) => {
                    if let Some(author) = self.release_claimed(peer, ws, &bytes) {
                        released.insert(author);
                    }
                    self.refuse(peer, ws, bytes, &e, view);
                }
            }
        }
        let uncommitted = &self.uncommitted;
        let results = verify_bundles(&ws, &decoded, |a, s| {
            view.bundle_hash(&ws, a, s)
                .ok()
                .flatten()
                .or_else(|| uncommitted.get(&ws, a, s))
        });
        let mut good: Vec<(u32, Bundle)> = Vec::new();
        // Verified copies not kept (already held): an unsigned bundle that is
        // kept travels with the signed successor that vouches for it, so the
        // store can verify the run on its own.
        let mut vouchers: BTreeMap<(ActorId, u64), (u32, Bundle)> = BTreeMap::new();
        // One read of what is held of each author in the batch, not one per
        // bundle, nor of every author the workspace has (a copy set aside
        // as damaged counts as not held: the store restores it from this one).
        let mut held_ranges: BTreeMap<ActorId, SeqRangeSet> = BTreeMap::new();
        for b in &decoded {
            let author = b.body().author;
            held_ranges
                .entry(author)
                .or_insert_with(|| view.author_ranges(&ws, &author).unwrap_or_default());
        }
        for ((b, res), place) in decoded.into_iter().zip(results).zip(places) {
            let (author, seq) = (b.body().author, b.body().seq);
            match res {
                Ok(()) => {
                    let held = held_ranges.get(&author).is_some_and(|r| r.contains(seq))
                        || self.uncommitted.contains(&ws, &author, seq);
                    let wanted = self
                        .shared_ref(peer, ws)
                        .and_then(|sh| sh.wanted.get(&author))
                        .is_some_and(|w| w.contains(seq));
                    if wanted && !held {
                        good.push((place, b));
                    } else {
                        vouchers.insert((author, seq), (place, b));
                    }
                }
                // An honest holder may lack a signature for a run tail; ask elsewhere.
                Err(VerifyError::Unsigned { .. }) => {
                    released.insert(author);
                    self.undelivered(peer, ws, author, seq);
                }
                Err(e) => {
                    released.insert(author);
                    self.undelivered(peer, ws, author, seq);
                    self.refuse(peer, ws, b.into_bytes(), &e, view);
                }
            }
        }
        if !self.peers.contains_key(&peer) {
            return; // disconnected for too many bad items: nothing of it is applied
        }
        if good.is_empty() {
            self.send(
                peer,
                &Message::BatchAck {
                    workspace: ws,
                    batch_id: id,
                },
            );
            // Only the released seqs' authors can be worth asking for again:
            // a pass over every author's ranges here would let a member buy
            // one with each empty batch it sends.
            return self.request_missing_of(ws, &released, None, view);
        }
        let mut extra = Vec::new();
        if !vouchers.is_empty() {
            let kept: std::collections::BTreeSet<(ActorId, u64)> = good
                .iter()
                .map(|(_, b)| (b.body().author, b.body().seq))
                .collect();
            for (_, b) in &good {
                let (author, mut seq) = (b.body().author, b.body().seq);
                let mut signed = b.signature().is_some();
                while !signed {
                    seq += 1;
                    if kept.contains(&(author, seq)) {
                        break; // the successor is kept anyway
                    }
                    match vouchers.remove(&(author, seq)) {
                        Some(v) => {
                            signed = v.1.signature().is_some();
                            extra.push(v);
                        }
                        None => break,
                    }
                }
            }
        }
        good.extend(extra);
        good.sort_by_key(|(_, b)| (b.body().author, b.body().seq));
        let (picks, good): (Vec<u32>, Vec<Bundle>) = good.into_iter().unzip();
        let wire = (!payload.is_empty()).then(|| WireCopy::new(payload, picks, &good));
        let mut slots = Vec::with_capacity(good.len());
        for b in &good {
            let (author, seq) = (b.body().author, b.body().seq);
            self.uncommitted.insert(ws, author, seq, b.hash());
            slots.push((author, seq));
        }
        let local = self.next_local_batch;
        self.next_local_batch += 1;
        let pending = Pending {
            peer_batch: Some(id),
            epoch,
            slots,
        };
        self.committing.insert((peer, ws, local), pending);
        self.out.push_back(Output::CommitBatch {
            peer,
            workspace: ws,
            batch_id: local,
            bundles: good,
            wire,
        });
        if !released.is_empty() {
            self.request_missing_of(ws, &released, None, view);
        }
    }

    /// For a copy from `peer` that does not decode: when the slot its bytes
    /// claim ([`Bundle::claimed_slot`]) is one asked of `peer`, stops waiting
    /// on `peer` for it, as for a copy that decodes and fails verification,
    /// and returns its author to ask elsewhere. The claim is not trusted, and
    /// need not be: only a slot `peer` was asked for is released, so the
    /// worst a false claim does is have that slot asked of another member
    /// (and of `peer` again after [`RETRY_REFUSED`](super::limits::RETRY_REFUSED)).
    /// Bytes too broken to claim a slot leave their want to
    /// [`WANT_TIMEOUT`](super::limits::WANT_TIMEOUT).
    fn release_claimed(&mut self, peer: PeerId, ws: WorkspaceId, bytes: &[u8]) -> Option<ActorId> {
        let (claimed, author, seq) = Bundle::claimed_slot(bytes)?;
        let wanted = claimed == ws
            && self
                .shared_ref(peer, ws)
                .and_then(|sh| sh.wanted.get(&author))
                .is_some_and(|w| w.contains(seq));
        if !wanted {
            return None;
        }
        self.undelivered(peer, ws, author, seq);
        Some(author)
    }

    /// `peer` sent no good copy of `seq` of `author`: it is no longer
    /// expected from `peer`, and is asked of it again only later.
    fn undelivered(&mut self, peer: PeerId, ws: WorkspaceId, author: ActorId, seq: u64) {
        let seqs = single(seq);
        self.forget_from(peer, ws, author, &seqs);
        self.note_refused(peer, ws, author, &seqs);
    }

    /// Remembers that `peer` did not deliver `seqs` of `author` (bad copy or
    /// no answer), so they are asked of it again later.
    fn note_refused(&mut self, peer: PeerId, ws: WorkspaceId, author: ActorId, seqs: &SeqRangeSet) {
        let now = self.now;
        if let Some(sh) = self.shared_mut(peer, ws) {
            add(&mut sh.refused, author, seqs);
            sh.refused_at = now;
            sh.up_to_date = false;
        }
    }

    /// The timer for `peer`'s transfers: wants unserved for
    /// [`WANT_TIMEOUT`](super::limits::WANT_TIMEOUT) are released and asked
    /// elsewhere; refused seqs are trusted to `peer` again after
    /// [`RETRY_REFUSED`](super::limits::RETRY_REFUSED). Either way, nothing a
    /// member holds stays un-asked for the whole session.
    pub(crate) fn transfer_deadlines(&mut self, peer: PeerId, view: &impl OplogView) {
        let now = self.now;
        let workspaces: Vec<WorkspaceId> = self
            .shared_ref_all(peer)
            .into_iter()
            .filter(|(_, sh)| sh.deadline().is_some_and(|d| now >= d))
            .map(|(ws, _)| ws)
            .collect();
        for ws in workspaces {
            let (stale, retry) = match self.shared_mut(peer, ws) {
                Some(sh) => {
                    let stale = !sh.wanted.is_empty()
                        && now >= sh.progress_at.saturating_add(super::limits::WANT_TIMEOUT);
                    let retry = if !sh.refused.is_empty()
                        && now >= sh.refused_at.saturating_add(super::limits::RETRY_REFUSED)
                    {
                        std::mem::take(&mut sh.refused)
                    } else {
                        BTreeMap::new()
                    };
                    for (author, set) in &retry {
                        sh.theirs.add(*author, set);
                    }
                    (stale, retry)
                }
                None => continue,
            };
            let mut authors = if stale {
                self.release_wanted(peer, ws)
            } else {
                BTreeSet::new()
            };
            authors.extend(retry.keys().copied());
            if !authors.is_empty() {
                self.request_missing_of(ws, &authors, None, view);
            }
        }
    }

    /// Stops waiting on `peer` for anything asked of it in `ws` (it answered
    /// with nothing usable, or nothing at all), so every such seq can be
    /// asked of another member at once and of `peer` again only after
    /// [`RETRY_REFUSED`](super::limits::RETRY_REFUSED). Returns the
    /// authors to ask for.
    fn release_wanted(&mut self, peer: PeerId, ws: WorkspaceId) -> BTreeSet<ActorId> {
        let wanted = match self.shared_mut(peer, ws) {
            Some(sh) => std::mem::take(&mut sh.wanted),
            None => return BTreeSet::new(),
        };
        for (author, set) in &wanted {
            self.forget_from(peer, ws, *author, set);
            self.note_refused(peer, ws, *author, set);
        }
        wanted.into_keys().collect()
    }

    fn shared_ref_all(&self, peer: PeerId) -> Vec<(WorkspaceId, &super::session::Shared)> {
        match self.peers.get(&peer).and_then(|p| p.session.as_ref()) {
            Some(super::session::Session::Active(a)) => {
                a.shared.iter().map(|(w, sh)| (*w, sh)).collect()
            }
            _ => Vec::new(),
        }
    }

    /// Quarantines refused bytes and blames their sender.
    fn refuse(
        &mut self,
        peer: PeerId,
        ws: WorkspaceId,
        bytes: Vec<u8>,
        e: &VerifyError,
        view: &impl OplogView,
    ) {
        // A peer already disconnected for too many bad items (earlier in
        // this batch) adds nothing more to quarantine: each entry is a
        // write, and one batch holds up to 512 items.
        if !self.peers.contains_key(&peer) {
            return;
        }
        self.out.push_back(Output::Quarantine {
            peer,
            workspace: ws,
            bytes,
            reason: e.to_string(),
        });
        self.blame(peer, format!("bad bundle: {e}"), view);
    }

    /// The driver finished (or failed) a commit. A failed batch's seqs
    /// are asked of other members that hold them.
    pub(crate) fn batch_done(
        &mut self,
        peer: PeerId,
        ws: WorkspaceId,
        id: u64,
        ok: bool,
        view: &impl OplogView,
    ) {
        let Some(Pending {
            peer_batch,
            epoch,
            slots,
        }) = self.committing.remove(&(peer, ws, id))
        else {
            return;
        };
        let same_session = self.peers.get(&peer).is_some_and(|p| p.epoch == epoch);
        let mut newly: BTreeMap<ActorId, SeqRangeSet> = BTreeMap::new();
        self.uncommitted.remove_all(&ws, &slots);
        for (author, seq) in &slots {
            let s = newly.entry(*author).or_default();
            s.insert(*seq);
        }
        self.unrequest(ws, &newly);
        if let Some(sh) = self.shared_mut(peer, ws) {
            for (author, set) in &newly {
                sub(&mut sh.wanted, author, set);
                if !ok {
                    // Do not ask the same peer again in this session.
                    sh.theirs.sub(author, set);
                }
            }
            if ok {
                sh.received += slots.len() as u64;
            }
            let (received, expected) = (sh.received, sh.expected);
            if let Some(batch_id) = peer_batch.filter(|_| same_session) {
                self.send(
                    peer,
                    &Message::BatchAck {
                        workspace: ws,
                        batch_id,
                    },
                );
            }
            self.event(SyncEvent::Progress {
                peer,
                workspace: ws,
                received,
                expected,
            });
        }
        if ok {
            self.announce(ws, &newly, Some(peer));
            self.check_up_to_date(ws);
        } else {
            let authors = newly.into_keys().collect();
            self.request_missing_of(ws, &authors, None, view);
        }
    }

    /// Tells members that lack them that we now hold `newly`.
    pub(crate) fn announce(
        &mut self,
        ws: WorkspaceId,
        newly: &BTreeMap<ActorId, SeqRangeSet>,
        except: Option<PeerId>,
    ) {
        for peer in self.members(ws) {
            if Some(peer) == except {
                continue;
            }
            let mut msgs = Vec::new();
            if let Some(sh) = self.shared_mut(peer, ws) {
                for (author, set) in newly {
                    let lacking = match sh.theirs.get(author) {
                        Some(t) => set.difference(t),
                        None => set.clone(),
                    };
                    if !lacking.is_empty() {
                        sh.theirs.add(*author, &lacking);
                        msgs.push((*author, lacking));
                    }
                }
            }
            for (author, ranges) in msgs {
                self.send(
                    peer,
                    &Message::Announce {
                        workspace: ws,
                        author,
                        ranges,
                    },
                );
            }
        }
    }

    pub(crate) fn on_announce(
        &mut self,
        peer: PeerId,
        ws: WorkspaceId,
        author: ActorId,
        ranges: SeqRangeSet,
        view: &impl OplogView,
    ) {
        let Some(sh) = self.shared_mut(peer, ws) else {
            return self.blame(peer, "announce for a workspace not shared".into(), view);
        };
        // Bound what one peer's claims can make us hold: in ranges over
        // all authors (below), and an author claiming nothing takes no room.
        let merged = match sh.theirs.get(&author) {
            Some(t) => t.union(&ranges),
            None if ranges.is_empty() => return,
            None => ranges,
        };
        let others = sh.theirs.ranges() - sh.theirs.get(&author).map_or(0, |t| t.ranges().len());
        if merged.ranges().len() > MAX_RANGES || others + merged.ranges().len() > MAX_THEIR_RANGES {
            return self.blame(peer, "announced ranges too fragmented".into(), view);
        }
        sh.theirs.set(author, merged);
        self.request_missing_of(ws, &BTreeSet::from([author]), Some(peer), view);
    }
}
