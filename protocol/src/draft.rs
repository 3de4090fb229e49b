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

/// Seals `drafts` (all of one workspace) as the author's next consecutive
/// bundles after `tip`, with ONE signature, on the last.
///
/// Group commit writes many small bundles at once; signing each costs about
/// 21 µs and checking each again 42 µs, more than the rest of the commit.
/// The run is hash-chained (`prev_hash`), so the signature on its last bundle
/// authenticates every bundle before it (the argument is in [`crate::verify`]);
/// the store and every peer verify it that way, and a peer asking for an
/// interior bundle alone is sent its signed successor with it. `hlc` gives
/// each bundle its timestamp, in order.
///
/// # Errors
/// [`ModelError`] when a draft breaks a cap or the drafts name more than one
/// workspace; nothing is returned then.
pub fn sign_run(
    drafts: Vec<Draft>,
    key: &ActorKey,
    tip: &AuthorTip,
    mut hlc: impl FnMut() -> Hlc,
) -> Result<Vec<Bundle>, ModelError> {
    let Some(workspace) = drafts.first().map(Draft::workspace) else {
        return Ok(Vec::new());
    };
    if drafts.iter().any(|d| d.workspace != workspace) {
        return Err(ModelError::Invalid(
            "a run of bundles belongs to one workspace",
        ));
    }
    let last = drafts.len() - 1;
    let mut tip = *tip;
    let mut out = Vec::with_capacity(drafts.len());
    for (i, d) in drafts.into_iter().enumerate() {
        let b = BundleBody {
            workspace,
            author: key.actor_id(),
            seq: tip.last_seq + 1,
            prev_hash: tip.last_hash,
            hlc: hlc(),
            kind: d.kind,
            summary: d.summary,
            ops: d.ops,
        }
        .seal(key, i == last)?;
        tip = AuthorTip::after(&b);
        out.push(b);
    }
    Ok(out)
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

    fn edit(ws: WorkspaceId, i: u32) -> Draft {
        let mut d = Draft::new(ws, BundleKind::UserEdit, format!("edit {i}"));
        let path = FieldPath::new("contacts.person", &format!("p{i}"), "phone").unwrap();
        d.set(path, Value::from("555-0100"), vec![]);
        d
    }

    #[test]
    fn a_run_is_chained_and_authenticated_by_its_last_signature() {
        let ws = test_workspace().workspace_id();
        let first = edit(ws, 0)
            .sign(&key(1), &AuthorTip::default(), Hlc::default())
            .unwrap();
        let mut t = 0;
        let run = sign_run(
            (1..6).map(|i| edit(ws, i)).collect(),
            &key(1),
            &AuthorTip::after(&first),
            || {
                t += 1;
                Hlc {
                    wall_ms: 1_000 + t,
                    counter: 0,
                }
            },
        )
        .unwrap();
        assert_eq!(run.len(), 5);
        let seqs: Vec<u64> = run.iter().map(|b| b.body().seq).collect();
        assert_eq!(seqs, vec![2, 3, 4, 5, 6]);
        assert_eq!(run[0].body().prev_hash, Some(first.hash()));
        for w in run.windows(2) {
            assert_eq!(w[1].body().prev_hash, Some(w[0].hash()));
            assert!(w[0].body().hlc < w[1].body().hlc);
        }
        assert!(run[..4].iter().all(|b| b.signature().is_none()));
        assert!(run[4].check_signature().is_ok());
        let known = |_: &crate::ids::ActorId, s: u64| (s == 1).then(|| first.hash());
        assert!(
            crate::verify::verify_bundles(&ws, &run, known)
                .iter()
                .all(Result::is_ok),
            "the run verifies with its one signature"
        );
        // Without the signed tip nothing vouches for the others.
        let verdicts = crate::verify::verify_bundles(&ws, &run[..4], known);
        assert!(verdicts.iter().all(Result::is_err));
        // A tampered interior bundle breaks the chain to the signature.
        let mut forged = run.clone();
        forged[1] = edit(ws, 99)
            .sign(&key(2), &AuthorTip::after(&run[0]), Hlc::default())
            .unwrap()
            .without_signature();
        let verdicts = crate::verify::verify_bundles(&ws, &forged, known);
        assert!(verdicts[1].is_err());
    }

    #[test]
    fn a_run_names_one_workspace() {
        let a = test_workspace().workspace_id();
        let b = crate::workspace::WorkspaceSecret([9; 32]).workspace_id();
        assert!(
            sign_run(
                vec![edit(a, 1), edit(b, 2)],
                &key(1),
                &AuthorTip::default(),
                Hlc::default
            )
            .is_err()
        );
        assert_eq!(
            sign_run(vec![], &key(1), &AuthorTip::default(), Hlc::default),
            Ok(vec![])
        );
    }
}
