//! Drafting bundles: edits, jobs and imports become exactly one bundle each.
//!
//! A job's output is staged in a [`Draft`] while the job runs; only a finished,
//! successful job is signed and committed, so a failing job leaves nothing.

use crate::bundle::{Bundle, BundleBody, BundleKind};
use crate::crypto::ActorKey;
use crate::error::ModelError;
use crate::hlc::Hlc;
use crate::ids::{BundleHash, OpId, WorkspaceId};
use crate::limits;
use crate::op::Op;
use crate::path::FieldPath;
use crate::value::Value;

/// Where an author's chain stands in a workspace: the next seq and the hash to link to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuthorTip {
    /// The last seq written (0 when none).
    pub last_seq: u64,
    /// Hash of that bundle.
    pub last_hash: Option<BundleHash>,
}

impl AuthorTip {
    /// The tip after `bundle`.
    pub fn after(bundle: &Bundle) -> Self {
        AuthorTip {
            last_seq: bundle.body().seq,
            last_hash: Some(bundle.hash()),
        }
    }
}

/// An advisory about a bundle that is valid but unusual.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Advisory {
    /// More than [`limits::ADVISORY_OPS`] ops in one bundle.
    LargeBundle {
        /// Op count.
        ops: usize,
    },
}

impl std::fmt::Display for Advisory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Advisory::LargeBundle { ops } => write!(
                f,
                "this change writes {ops} fields in one bundle (more than {}); it is kept whole, but undo and review will treat it as one large step",
                limits::ADVISORY_OPS
            ),
        }
    }
}

/// A bundle being assembled.
#[derive(Clone, Debug)]
pub struct Draft {
    workspace: WorkspaceId,
    kind: BundleKind,
    summary: String,
    ops: Vec<Op>,
}

impl Draft {
    /// Starts a draft.
    pub fn new(workspace: WorkspaceId, kind: BundleKind, summary: impl Into<String>) -> Self {
        Draft {
            workspace,
            kind,
            summary: summary.into(),
            ops: Vec::new(),
        }
    }

    /// The workspace the bundle will belong to.
    pub fn workspace(&self) -> WorkspaceId {
        self.workspace
    }

    /// Adds an op.
    pub fn push(&mut self, op: Op) {
        self.ops.push(op);
    }

    /// Adds a `Set`; `pred` must be the field's current heads.
    pub fn set(&mut self, path: FieldPath, value: Value, pred: Vec<OpId>) {
        self.ops.push(Op::Set { path, value, pred });
    }

    /// Ops so far.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Advisories for the draft as it stands.
    pub fn advisories(&self) -> Vec<Advisory> {
        if self.ops.len() > limits::ADVISORY_OPS {
            vec![Advisory::LargeBundle {
                ops: self.ops.len(),
            }]
        } else {
            vec![]
        }
    }

    /// Signs the draft as the author's next bundle.
    ///
    /// # Errors
    /// [`ModelError`] when empty, over the caps, or invalid.
    pub fn sign(self, key: &ActorKey, tip: &AuthorTip, hlc: Hlc) -> Result<Bundle, ModelError> {
        BundleBody {
            workspace: self.workspace,
            author: key.actor_id(),
            seq: tip.last_seq + 1,
            prev_hash: tip.last_hash,
            hlc,
            kind: self.kind,
            summary: self.summary,
            ops: self.ops,
        }
        .sign(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{key, test_workspace};

    #[test]
    fn a_large_job_is_one_bundle_with_an_advisory() {
        let ws = test_workspace().workspace_id();
        let mut d = Draft::new(ws, BundleKind::JobOutput, "call times");
        for i in 0..1_001 {
            let path = FieldPath::new("schedule.event", &format!("e{i}"), "call_time").unwrap();
            d.set(path, Value::from("18:30"), vec![]);
        }
        assert_eq!(d.advisories(), vec![Advisory::LargeBundle { ops: 1_001 }]);
        assert!(
            d.advisories()[0]
                .to_string()
                .contains("1001 fields in one bundle")
        );
        let b = d
            .sign(&key(1), &AuthorTip::default(), Hlc::default())
            .unwrap();
        assert_eq!(b.body().ops.len(), 1_001, "kept whole: one bundle");
        let small = Draft::new(ws, BundleKind::UserEdit, "x");
        assert!(small.advisories().is_empty());
        assert_eq!(
            small.sign(&key(1), &AuthorTip::default(), Hlc::default()),
            Err(ModelError::Empty)
        );
    }
}
