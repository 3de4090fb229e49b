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

/// `len` deterministic bytes that zstd cannot shrink (what a photo or a
/// recording looks like to the store), from a xorshift generator started
/// at `seed` (not 0).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
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
            d.set(path, Value::Text(format!("{tag}-{i}-{f}").into()), vec![]);
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

/// Proptest strategies for the data model.
pub mod strategies {
    use proptest::prelude::*;

    use crate::bundle::{BundleBody, BundleKind};
    use crate::hlc::Hlc;
    use crate::ids::{ActorId, BlobHash, BundleHash, EntityId, OpId, WorkspaceId};
    use crate::op::Op;
    use crate::path::FieldPath;
    use crate::value::{AssetRef, Value};

    /// Short realistic names.
    pub fn arb_name() -> impl Strategy<Value = String> {
        "[a-z][a-z0-9_]{0,10}"
    }

    /// Field paths over a small space, so generated ops collide on fields.
    pub fn arb_path() -> impl Strategy<Value = FieldPath> {
        (
            prop::sample::select(vec!["contacts.person", "schedule.event", "cues.cue"]),
            "[a-c][0-9]",
            arb_name(),
        )
            .prop_map(|(t, id, f)| FieldPath::new(t, &id, &f).expect("valid by construction"))
    }

    /// Any valid value.
    pub fn arb_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            any::<f64>()
                .prop_filter("not NaN", |f| !f.is_nan())
                .prop_map(Value::Float),
            ".{0,40}".prop_map(|t: String| Value::Text(t.into())),
            prop::collection::vec(any::<u8>(), 0..40).prop_map(Value::Bytes),
            ("[a-z]{1,8}\\.[a-z]{1,8}", "[A-Za-z0-9_-]{1,12}").prop_map(|(t, id)| Value::Entity {
                entity_type: t,
                id: EntityId::new(id).expect("valid by construction"),
            }),
            (
                any::<[u8; 32]>(),
                ".{0,20}",
                any::<u64>(),
                "[a-z]{1,5}/[a-z]{1,5}"
            )
                .prop_map(|(h, n, s, m)| {
                    Value::Asset(AssetRef {
                        hash: BlobHash(h),
                        name: n,
                        size: s,
                        media_type: m,
                    })
                }),
        ]
    }

    /// Any op id.
    pub fn arb_op_id() -> impl Strategy<Value = OpId> {
        (any::<[u8; 32]>(), 1u64..1000, 0u32..20).prop_map(|(a, seq, index)| OpId {
            author: ActorId(a),
            seq,
            index,
        })
    }

    /// Any valid op.
    pub fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (arb_path(), arb_value(), prop::collection::vec(arb_op_id(), 0..3))
                .prop_map(|(path, value, pred)| Op::Set { path, value, pred }),
            1 => (arb_path(), prop::collection::vec(arb_op_id(), 0..3)).prop_map(|(p, pred)| Op::DeleteEntity {
                entity_type: p.entity_type.into_string(),
                entity_id: p.entity_id,
                pred
            }),
            1 => (any::<[u8; 32]>(), ".{0,30}").prop_map(|(h, reason)| Op::DeleteAsset { hash: BlobHash(h), reason }),
        ]
    }

    /// A valid body for `workspace` by `author` (seq and prev consistent).
    pub fn arb_body(workspace: WorkspaceId, author: ActorId) -> impl Strategy<Value = BundleBody> {
        (
            1u64..5,
            any::<[u8; 32]>(),
            any::<(u64, u32)>(),
            prop_oneof![
                Just(BundleKind::UserEdit),
                Just(BundleKind::JobOutput),
                Just(BundleKind::Import),
                Just(BundleKind::MergeResolution),
                any::<[u8; 32]>().prop_map(|h| BundleKind::Undo { of: BundleHash(h) }),
                any::<[u8; 32]>().prop_map(|h| BundleKind::Redo { of: BundleHash(h) }),
            ],
            ".{0,40}",
            prop::collection::vec(arb_op(), 1..8),
        )
            .prop_map(move |(seq, prev, (wall_ms, counter), kind, summary, ops)| {
                BundleBody {
                    workspace,
                    author,
                    seq,
                    prev_hash: (seq > 1).then_some(BundleHash(prev)),
                    hlc: Hlc { wall_ms, counter },
                    kind,
                    summary,
                    ops,
                }
            })
    }
}

/// The benchmark workload: contacts with 10 short, realistic fields, one
/// person per bundle, from a deterministic PRNG. Shared by every benchmark so
/// their figures describe the same data.
pub mod workload {
    use crate::value::Value;

    /// The ten fields of a contact.
    pub const FIELDS: [&str; 10] = [
        "name",
        "email",
        "phone",
        "role",
        "department",
        "company",
        "city",
        "notes",
        "pronouns",
        "call_time",
    ];
    const FIRST: [&str; 8] = [
        "Jane", "Alex", "Jordan", "Sam", "Priya", "Tomás", "Mei", "Olu",
    ];
    const LAST: [&str; 8] = [
        "Doe", "Kim", "García", "Okafor", "Schmidt", "Rossi", "Nguyen", "Smith",
    ];

    /// A value for `field` of person `i`, advancing the xorshift state `rng`.
    pub fn contact_value(rng: &mut u64, field: &str, i: usize) -> Value {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        let a = FIRST[(*rng % 8) as usize];
        let b = LAST[((*rng >> 8) % 8) as usize];
        Value::Text(
            match field {
                "name" => format!("{a} {b}"),
                "email" => format!(
                    "{}.{}{}@crew.example",
                    a.to_lowercase(),
                    b.to_lowercase(),
                    i % 97
                ),
                "phone" => format!("+44 7700 {:06}", *rng % 1_000_000),
                "call_time" => format!("{:02}:{:02}", 8 + (*rng % 10), (*rng >> 4) % 60),
                _ => format!("{field} {a} {}", *rng % 1000),
            }
            .into(),
        )
    }
}
