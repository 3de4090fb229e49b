//! Helpers for tests across the workspace: deterministic keys, chains and
//! proptest strategies. Enabled by the `testing` feature.

use crate::bundle::{Bundle, BundleKind};
use crate::crypto::ActorKey;
use crate::draft::{AuthorTip, Draft};
use crate::hlc::Hlc;
use crate::ids::WorkspaceId;
use crate::path::FieldPath;
use crate::value::Value;
use crate::workspace::WorkspaceSecret;

/// The workspace every helper uses unless told otherwise.
pub fn test_workspace() -> WorkspaceSecret {
    WorkspaceSecret([42; 32])
}

/// A deterministic actor key from a small seed.
pub fn key(seed: u8) -> ActorKey {
    ActorKey::from_secret_bytes([seed; 32])
}

/// `n` chained bundles by actor `seed`, each setting 10 contact fields.
pub fn chain(seed: u8, n: u64) -> (WorkspaceId, Vec<Bundle>) {
    chain_with(seed, n, "v")
}

/// As [`chain`], with `tag` mixed into values so two chains differ.
pub fn chain_with(seed: u8, n: u64, tag: &str) -> (WorkspaceId, Vec<Bundle>) {
    let ws = test_workspace().workspace_id();
    let k = key(seed);
    let mut tip = AuthorTip::default();
    let mut out = Vec::new();
    for i in 0..n {
        let mut d = Draft::new(ws, BundleKind::UserEdit, format!("contact {i}"));
        for f in 0..10 {
            let path = FieldPath::new("contacts.person", &format!("p{seed}x{i}"), &format!("f{f}"))
                .unwrap();
            d.set(path, Value::Text(format!("{tag}-{i}-{f}")), vec![]);
        }
        let b = d
            .sign(
                &k,
                &tip,
                Hlc {
                    wall_ms: 1_000 + i,
                    counter: 0,
                },
            )
            .unwrap();
        tip = AuthorTip::after(&b);
        out.push(b);
    }
    (ws, out)
}
