//! Scenario tests of the sync engine on the deterministic in-memory network.

mod blobs;
mod malicious;
mod membership;
mod pair;
mod wire;

use std::collections::BTreeMap;

use super::PeerId;
use super::testing::{MemView, Net};
use crate::bundle::Bundle;
use crate::ids::WorkspaceId;
use crate::register::Replica;
use crate::testing::{key, test_workspace};
use crate::workspace::WorkspaceSecret;

/// A node id from a small seed.
pub(super) fn pid(seed: u8) -> PeerId {
    PeerId(key(seed).actor_id().0)
}

/// `n` nodes, all members of the test workspace.
pub(super) fn members(n: u8) -> Net {
    Net::new(
        (0..n)
            .map(|i| (pid(100 + i), vec![test_workspace()]))
            .collect(),
    )
}

/// A node that is a member of some other workspace only.
pub(super) fn stranger() -> WorkspaceSecret {
    WorkspaceSecret([7; 32])
}

pub(super) fn ws() -> WorkspaceId {
    test_workspace().workspace_id()
}

/// What a replica built from the store shows: every field's heads.
pub(super) fn state(view: &MemView) -> BTreeMap<String, Vec<String>> {
    let mut r = Replica::new();
    for b in view.decoded(&ws()) {
        r.apply(&b);
    }
    r.fields()
        .map(|(p, heads)| {
            (
                p.to_string(),
                heads.iter().map(|h| format!("{h:?}")).collect(),
            )
        })
        .collect()
}

pub(super) fn seed(view: &mut MemView, bundles: &[Bundle]) {
    view.commit(bundles);
}
