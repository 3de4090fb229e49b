//! Invariant: the heads of a field are a pure function of the set of ops, so
//! replicas given the same bundles in any order, with duplicates, reach equal
//! heads, winners and conflict sets (DESIGN §3; design notes §1 "conflict
//! detection operates at field level").

use proptest::prelude::*;

use crate::bundle::{Bundle, BundleKind};
use crate::conflict;
use crate::crypto::ActorKey;
use crate::draft::{AuthorTip, Draft};
use crate::hlc::HlcClock;
use crate::op::Op;
use crate::path::FieldPath;
use crate::register::{Head, Replica, winner};
use crate::testing::{key, test_workspace};
use crate::undo;
use crate::value::Value;

/// A tiny deterministic PRNG so one proptest-chosen seed drives a whole scenario.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Writer {
    key: ActorKey,
    view: Replica,
    tip: AuthorTip,
    clock: HlcClock,
    own: Vec<Bundle>,
}

const FIELDS: [&str; 3] = ["name", "email", "phone"];
const ENTITIES: [&str; 2] = ["jane", "sam"];

fn path(e: &str, f: &str) -> FieldPath {
    FieldPath::new("contacts.person", e, f).unwrap()
}

fn preds(heads: &[Head]) -> Vec<crate::ids::OpId> {
    heads.iter().map(|h| h.op).collect()
}

/// Generates a history of `steps` bundles by three writers who see each other's
/// bundles only sometimes, so concurrent edits, deletes, undos and resolutions mix.
pub(crate) fn random_history(seed: u64, steps: usize) -> Vec<Bundle> {
    let ws = test_workspace().workspace_id();
    let mut rng = Rng(seed);
    let mut writers: Vec<Writer> = (1..=3)
        .map(|i| Writer {
            key: key(i),
            view: Replica::new(),
            tip: AuthorTip::default(),
            clock: HlcClock::default(),
            own: vec![],
        })
        .collect();
    let mut all: Vec<Bundle> = Vec::new();
    for step in 0..steps {
        let w = rng.below(3) as usize;
        // Sometimes catch up on a random subset of what others wrote.
        if rng.below(3) == 0 {
            for b in &all {
                if rng.below(2) == 0 {
                    writers[w].view.apply(b);
                }
            }
        }
        let wall = 1_000 + step as u64 * 10 + rng.below(30);
        let writer = &mut writers[w];
        let mut kind = BundleKind::UserEdit;
        let mut draft_ops: Vec<Op> = Vec::new();
        match rng.below(10) {
            0 => {
                let e = ENTITIES[rng.below(2) as usize];
                let mut pred = Vec::new();
                for f in FIELDS {
                    pred.extend(preds(writer.view.heads(&path(e, f))));
                }
                draft_ops.push(Op::DeleteEntity {
                    entity_type: "contacts.person".into(),
                    entity_id: e.parse().unwrap(),
                    pred,
                });
            }
            1 if !writer.own.is_empty() => {
                let target = writer.own[rng.below(writer.own.len() as u64) as usize].clone();
                let mut view = writer.view.clone();
                let plan = undo::plan_undo(&mut view, &mut writer.view.clone(), &target).unwrap();
                draft_ops = plan.ops;
                kind = BundleKind::Undo { of: target.hash() };
            }
            2 => {
                let groups = conflict::group(writer.view.conflicts());
                if let Some(g) = groups.first() {
                    let choices: Vec<_> = g
                        .fields
                        .iter()
                        .map(|c| {
                            (
                                c.clone(),
                                conflict::Choice::Head(winner(&c.heads).unwrap().op),
                            )
                        })
                        .collect();
                    draft_ops = conflict::resolution_ops(&choices).unwrap();
                    kind = BundleKind::MergeResolution;
                }
            }
            _ => {}
        }
        if draft_ops.is_empty() {
            let e = ENTITIES[rng.below(2) as usize];
            for f in FIELDS {
                if rng.below(2) == 0 || f == "name" {
                    let p = path(e, f);
                    let pred = preds(writer.view.heads(&p));
                    draft_ops.push(Op::Set {
                        path: p,
                        value: Value::Int(rng.below(5) as i64),
                        pred,
                    });
                }
            }
        }
        let mut d = Draft::new(ws, kind, format!("step {step}"));
        for op in draft_ops {
            d.push(op);
        }
        let b = d
            .sign(&writer.key, &writer.tip, writer.clock.tick(wall))
            .unwrap();
        writer.tip = AuthorTip::after(&b);
        writer.view.apply(&b);
        writer.own.push(b.clone());
        all.push(b);
    }
    all
}

/// Everything a user could observe about a replica's state.
fn observable(r: &Replica) -> Vec<(FieldPath, Vec<Head>, Option<Value>)> {
    r.fields()
        .map(|(p, h)| (p.clone(), h.to_vec(), r.value(p).cloned()))
        .collect()
}

fn shuffled_with_duplicates(bundles: &[Bundle], rng: &mut Rng) -> Vec<Bundle> {
    let mut v: Vec<Bundle> = bundles.to_vec();
    for _ in 0..bundles.len() / 3 {
        v.push(bundles[rng.below(bundles.len() as u64) as usize].clone());
    }
    for i in (1..v.len()).rev() {
        v.swap(i, rng.below(i as u64 + 1) as usize);
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn any_order_and_duplication_converges(seed in any::<u64>(), steps in 1usize..40) {
        let history = random_history(seed, steps);
        let mut rng = Rng(seed ^ 0xdead_beef);
        let mut reference = Replica::new();
        for b in &history {
            reference.apply(b);
        }
        let expected = observable(&reference);
        let expected_groups = conflict::group(reference.conflicts());
        for _ in 0..3 {
            let mut r = Replica::new();
            for b in shuffled_with_duplicates(&history, &mut rng) {
                r.apply(&b);
            }
            prop_assert_eq!(observable(&r), expected.clone());
            prop_assert_eq!(conflict::group(r.conflicts()), expected_groups.clone());
        }
    }
}

#[test]
fn concurrent_edits_of_one_field_conflict_and_keep_both_values() {
    let ws = test_workspace().workspace_id();
    let (alex, jordan) = (key(1), key(2));
    let p = path("jane", "name");
    let mut d = Draft::new(ws, BundleKind::UserEdit, "a");
    d.set(p.clone(), "Jane Doe".into(), vec![]);
    let a = d
        .sign(
            &alex,
            &AuthorTip::default(),
            crate::hlc::Hlc {
                wall_ms: 10,
                counter: 0,
            },
        )
        .unwrap();
    let mut d = Draft::new(ws, BundleKind::UserEdit, "b");
    d.set(p.clone(), "Jane A. Doe".into(), vec![]);
    d.set(path("jane", "email"), "j@x".into(), vec![]);
    let b = d
        .sign(
            &jordan,
            &AuthorTip::default(),
            crate::hlc::Hlc {
                wall_ms: 20,
                counter: 0,
            },
        )
        .unwrap();
    let mut r = Replica::new();
    r.apply(&a);
    r.apply(&b);
    assert_eq!(r.heads(&p).len(), 2, "both values stay readable");
    assert_eq!(
        r.value(&p),
        Some(&Value::from("Jane A. Doe")),
        "highest hlc wins the display"
    );
    assert_eq!(
        r.heads(&path("jane", "email")).len(),
        1,
        "different fields do not conflict"
    );

    struct N;
    impl conflict::Names for N {
        fn actor(&self, id: &crate::ids::ActorId) -> String {
            if *id == key(1).actor_id() {
                "Alex".into()
            } else {
                "Jordan".into()
            }
        }
        fn entity(&self, _: &str, _: &crate::ids::EntityId) -> Option<String> {
            Some("Jane Doe".into())
        }
    }
    let groups = conflict::group(r.conflicts());
    assert_eq!(groups.len(), 1);
    assert_eq!(
        groups[0].describe(&N),
        "Contact 'Jane Doe' was edited by Alex and Jordan: name differs: 'Jane A. Doe' / 'Jane Doe'"
    );

    // Resolving names every head, so the conflict closes wherever it is applied.
    let ops = conflict::resolution_ops(&[(
        groups[0].fields[0].clone(),
        conflict::Choice::Value("Jane Doe".into()),
    )])
    .unwrap();
    let mut d = Draft::new(ws, BundleKind::MergeResolution, "resolve");
    for op in ops {
        d.push(op);
    }
    let res = d
        .sign(
            &alex,
            &AuthorTip::after(&a),
            crate::hlc::Hlc {
                wall_ms: 30,
                counter: 0,
            },
        )
        .unwrap();
    r.apply(&res);
    assert_eq!(r.heads(&p).len(), 1);
    assert_eq!(r.value(&p), Some(&Value::from("Jane Doe")));
}

#[test]
fn delete_concurrent_with_edit_is_a_conflict_not_a_silent_loss() {
    let ws = test_workspace().workspace_id();
    let (alex, jordan) = (key(1), key(2));
    let p = path("sam", "name");
    let mut d = Draft::new(ws, BundleKind::UserEdit, "create");
    d.set(p.clone(), "Sam".into(), vec![]);
    let create = d
        .sign(
            &alex,
            &AuthorTip::default(),
            crate::hlc::Hlc {
                wall_ms: 1,
                counter: 0,
            },
        )
        .unwrap();
    let mut base = Replica::new();
    base.apply(&create);
    let pred = preds(base.heads(&p));
    let mut d = Draft::new(ws, BundleKind::UserEdit, "delete");
    d.push(Op::DeleteEntity {
        entity_type: "contacts.person".into(),
        entity_id: "sam".parse().unwrap(),
        pred: pred.clone(),
    });
    let del = d
        .sign(
            &alex,
            &AuthorTip::after(&create),
            crate::hlc::Hlc {
                wall_ms: 5,
                counter: 0,
            },
        )
        .unwrap();
    let mut d = Draft::new(ws, BundleKind::UserEdit, "rename");
    d.set(p.clone(), "Samuel".into(), pred);
    let edit = d
        .sign(
            &jordan,
            &AuthorTip::default(),
            crate::hlc::Hlc {
                wall_ms: 4,
                counter: 0,
            },
        )
        .unwrap();
    for order in [[&del, &edit], [&edit, &del]] {
        let mut r = base.clone();
        for b in order {
            r.apply(b);
        }
        let heads = r.heads(&p);
        assert_eq!(heads.len(), 2);
        assert!(
            heads.iter().any(|h| h.value.is_none()),
            "the delete is a head"
        );
        assert!(
            heads.iter().any(|h| h.value == Some(Value::from("Samuel"))),
            "the edit is kept"
        );
        assert_eq!(r.value(&p), None, "the later delete wins the display");
    }
}

#[test]
fn an_entity_deleted_alone_disappears() {
    let history = {
        let ws = test_workspace().workspace_id();
        let k = key(1);
        let mut r = Replica::new();
        let mut d = Draft::new(ws, BundleKind::UserEdit, "c");
        d.set(path("jane", "name"), "Jane".into(), vec![]);
        d.set(path("jane", "email"), "j@x".into(), vec![]);
        let c = d
            .sign(
                &k,
                &AuthorTip::default(),
                crate::hlc::Hlc {
                    wall_ms: 1,
                    counter: 0,
                },
            )
            .unwrap();
        r.apply(&c);
        let pred: Vec<_> = r.fields().flat_map(|(_, h)| preds(h)).collect();
        let mut d = Draft::new(ws, BundleKind::UserEdit, "d");
        d.push(Op::DeleteEntity {
            entity_type: "contacts.person".into(),
            entity_id: "jane".parse().unwrap(),
            pred,
        });
        let del = d
            .sign(
                &k,
                &AuthorTip::after(&c),
                crate::hlc::Hlc {
                    wall_ms: 2,
                    counter: 0,
                },
            )
            .unwrap();
        vec![c, del]
    };
    let mut r = Replica::new();
    for b in history.iter().rev() {
        r.apply(b);
    }
    assert_eq!(r.conflicts().count(), 0);
    assert!(r.fields().all(|(p, _)| r.value(p).is_none()));
}
