//! Per-peer session state: `AwaitHello → AwaitProofs → Active`.
//!
//! Each state is a struct holding exactly what that phase needs; transitions
//! consume the old state, so a session cannot be half in two phases.

use std::collections::{BTreeMap, BTreeSet};

use super::io::Millis;
use super::limits::{LATE_PROOFS_BURST, LATE_PROOFS_EVERY};
use crate::ids::{ActorId, WorkspaceId};
use crate::ranges::SeqRangeSet;

/// Where a session with one peer stands.
#[derive(Debug)]
pub(crate) enum Session {
    /// We sent our nonce and wait for theirs.
    AwaitHello(AwaitHello),
    /// Nonces exchanged and our proofs sent; we wait for theirs.
    AwaitProofs(AwaitProofs),
    /// Membership settled; syncing the shared workspaces (possibly none).
    Active(Active),
}

#[derive(Debug)]
pub(crate) struct AwaitHello {
    pub(crate) my_nonce: [u8; 32],
    pub(crate) deadline: Millis,
}

#[derive(Debug)]
pub(crate) struct AwaitProofs {
    pub(crate) my_nonce: [u8; 32],
    pub(crate) their_nonce: [u8; 32],
    pub(crate) deadline: Millis,
    /// The workspaces our proofs covered: only these can be shared when
    /// theirs arrive (one added in between is proved after, in
    /// [`Message::LateProofs`](super::message::Message::LateProofs)).
    pub(crate) proved: BTreeSet<WorkspaceId>,
}

impl AwaitHello {
    /// The peer's nonce arrived.
    pub(crate) fn hello(self, their_nonce: [u8; 32], proved: BTreeSet<WorkspaceId>) -> AwaitProofs {
        AwaitProofs {
            my_nonce: self.my_nonce,
            their_nonce,
            deadline: self.deadline,
            proved,
        }
    }
}

impl AwaitProofs {
    /// Proofs checked: these workspaces are shared.
    pub(crate) fn proven(self, shared: BTreeSet<WorkspaceId>) -> Active {
        Active {
            shared: shared.into_iter().map(|w| (w, Shared::default())).collect(),
            my_nonce: self.my_nonce,
            their_nonce: self.their_nonce,
            withdrawn: BTreeSet::new(),
            late_tokens: LATE_PROOFS_BURST,
            late_at: 0,
        }
    }
}

/// A settled session.
#[derive(Debug)]
pub(crate) struct Active {
    pub(crate) shared: BTreeMap<WorkspaceId, Shared>,
    /// The session's nonces, kept so a workspace joined while connected can
    /// be proved on this connection (bound to this session like the first
    /// proofs).
    pub(crate) my_nonce: [u8; 32],
    pub(crate) their_nonce: [u8; 32],
    /// Workspaces one side left during this session: late messages for them
    /// are dropped without blame.
    pub(crate) withdrawn: BTreeSet<WorkspaceId>,
    /// Late proofs this peer may still send before it must wait (one more
    /// every [`LATE_PROOFS_EVERY`], at most [`LATE_PROOFS_BURST`]; each of
    /// our openings adds one for its answer), and when they were counted.
    late_tokens: u32,
    late_at: Millis,
}

impl Active {
    /// Takes one late-proofs allowance at `now`; `false` when none is left.
    /// Checking late proofs costs a keyed hash for each of our workspaces
    /// and an answer, for a frame of a few bytes: a peer with nothing in
    /// common could otherwise keep the engine's thread busy with them.
    pub(crate) fn take_late(&mut self, now: Millis) -> bool {
        let earned = now.saturating_sub(self.late_at) / LATE_PROOFS_EVERY;
        if earned > 0 {
            let earned = u32::try_from(earned).unwrap_or(u32::MAX);
            let refilled = self
                .late_tokens
                .saturating_add(earned)
                .min(LATE_PROOFS_BURST);
            self.late_tokens = self.late_tokens.max(refilled);
            self.late_at = now;
        }
        match self.late_tokens.checked_sub(1) {
            Some(left) => {
                self.late_tokens = left;
                true
            }
            None => false,
        }
    }

    /// Room for the answer to an opening we send.
    pub(crate) fn expect_late(&mut self) {
        self.late_tokens = self
            .late_tokens
            .saturating_add(1)
            .min(2 * LATE_PROOFS_BURST);
    }
}

/// Sync state with one peer in one workspace.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// Whether their ranges arrived (before that we know nothing they hold).
    pub(crate) ranges_known: bool,
    /// What they hold, as far as we know (ranges, announces, what we sent them).
    pub(crate) theirs: super::claims::Claims,
    /// What we asked them for and have not committed yet.
    pub(crate) wanted: BTreeMap<ActorId, SeqRangeSet>,
    /// Bundles asked for / committed in this session (for progress).
    pub(crate) expected: u64,
    pub(crate) received: u64,
    /// Whether `UpToDate` was reported since the last want.
    pub(crate) up_to_date: bool,
    /// What they asked us for and we have not sent yet.
    pub(crate) to_send: BTreeMap<ActorId, SeqRangeSet>,
    /// Our batches they have not acknowledged.
    pub(crate) in_flight: BTreeSet<u64>,
    /// Next id for a batch we send.
    pub(crate) next_batch: u64,
    /// Whether the last batch we built was a small one into an empty window
    /// ([`FIRST_BATCH_BUNDLES`](super::limits::FIRST_BATCH_BUNDLES)): the next
    /// is full-size even if the window emptied meanwhile, so a receiver that
    /// keeps up does not get a run of small batches.
    pub(crate) last_small: bool,
    /// When this peer last made progress on our wants (a want sent, a batch
    /// received); wants outstanding [`WANT_TIMEOUT`](super::limits::WANT_TIMEOUT)
    /// past it are released and asked elsewhere.
    pub(crate) progress_at: Millis,
    /// Seqs this peer sent a bad copy of (or did not serve in time) in this
    /// session: asked of others first, and of this peer again after
    /// [`RETRY_REFUSED`](super::limits::RETRY_REFUSED).
    pub(crate) refused: BTreeMap<ActorId, SeqRangeSet>,
    /// When `refused` was last added to.
    pub(crate) refused_at: Millis,
}

impl Shared {
    /// The next time this workspace's transfer needs the timer, if any.
    pub(crate) fn deadline(&self) -> Option<Millis> {
        let want = (!self.wanted.is_empty())
            .then(|| self.progress_at.saturating_add(super::limits::WANT_TIMEOUT));
        let retry = (!self.refused.is_empty())
            .then(|| self.refused_at.saturating_add(super::limits::RETRY_REFUSED));
        match (want, retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Adds `b` into `map[k]`.
pub(crate) fn add(map: &mut BTreeMap<ActorId, SeqRangeSet>, k: ActorId, b: &SeqRangeSet) {
    if b.is_empty() {
        return;
    }
    let e = map.entry(k).or_default();
    *e = e.union(b);
}

/// Removes `b` from `map[k]`, dropping empty entries.
pub(crate) fn sub(map: &mut BTreeMap<ActorId, SeqRangeSet>, k: &ActorId, b: &SeqRangeSet) {
    if let Some(e) = map.get_mut(k) {
        *e = e.difference(b);
        if e.is_empty() {
            map.remove(k);
        }
    }
}
