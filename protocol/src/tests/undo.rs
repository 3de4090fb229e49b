//! Invariants: undo/redo operate on bundles; undo restores what a bundle
//! replaced; fields changed by someone else since are reported, not
//! overwritten; redo is the undo of the undo (DESIGN §3).

use crate::bundle::{Bundle, BundleKind};
use crate::crypto::ActorKey;
use crate::draft::{AuthorTip, Draft};
use crate::hlc::Hlc;
use crate::op::Op;
use crate::path::FieldPath;
use crate::register::Replica;
use crate::testing::{key, test_workspace};
use crate::undo::plan_undo;
use crate::value::Value;

struct Actor {
    key: ActorKey,
    tip: AuthorTip,
}

impl Actor {
    fn write(&mut self, r: &mut Replica, kind: BundleKind, ops: Vec<Op>, wall: u64) -> Bundle {
        let mut d = Draft::new(test_workspace().workspace_id(), kind, "t");
        for op in ops {
            d.push(op);
        }
        let b = d
            .sign(
                &self.key,
                &self.tip,
                Hlc {
                    wall_ms: wall,
                    counter: 0,
                },
            )
            .unwrap();
        self.tip = AuthorTip::after(&b);
        r.apply(&b);
        b
    }
}

fn set(r: &Replica, p: &FieldPath, v: &str) -> Op {
    Op::Set {
        path: p.clone(),
        value: v.into(),
        pred: r.heads(p).iter().map(|h| h.op).collect(),
    }
}

#[test]
fn undo_restores_the_whole_bundle_and_redo_reapplies_it() {
    let mut r = Replica::new();
    let mut alex = Actor {
        key: key(1),
        tip: AuthorTip::default(),
    };
    let name: FieldPath = "contacts.person/jane/name".parse().unwrap();
    let email: FieldPath = "contacts.person/jane/email".parse().unwrap();
    let ops = vec![set(&r, &name, "Jane"), set(&r, &email, "j@a")];
    alex.write(&mut r, BundleKind::UserEdit, ops, 1);
    let ops = vec![set(&r, &name, "Janet"), set(&r, &email, "j@b")];
    let edit = alex.write(&mut r, BundleKind::UserEdit, ops, 2);

    let plan = plan_undo(&mut r.clone(), &mut r.clone(), &edit).unwrap();
    assert!(plan.skipped.is_empty());
    let undo = alex.write(&mut r, BundleKind::Undo { of: edit.hash() }, plan.ops, 3);
    assert_eq!(r.value(&name), Some(&Value::from("Jane")));
    assert_eq!(r.value(&email), Some(&Value::from("j@a")));

    let plan = plan_undo(&mut r.clone(), &mut r.clone(), &undo).unwrap();
    alex.write(&mut r, BundleKind::Redo { of: undo.hash() }, plan.ops, 4);
    assert_eq!(r.value(&name), Some(&Value::from("Janet")));
    assert_eq!(r.value(&email), Some(&Value::from("j@b")));
}

#[test]
fn undo_leaves_fields_changed_by_others_and_says_so() {
    let mut r = Replica::new();
    let mut alex = Actor {
        key: key(1),
        tip: AuthorTip::default(),
    };
    let mut jordan = Actor {
        key: key(2),
        tip: AuthorTip::default(),
    };
    let name: FieldPath = "contacts.person/jane/name".parse().unwrap();
    let phone: FieldPath = "contacts.person/jane/phone".parse().unwrap();
    let ops = vec![set(&r, &name, "Jane"), set(&r, &phone, "555")];
    let edit = alex.write(&mut r, BundleKind::UserEdit, ops, 1);
    let ops = vec![set(&r, &name, "Jane Doe")];
    jordan.write(&mut r, BundleKind::UserEdit, ops, 2);

    let plan = plan_undo(&mut r.clone(), &mut r.clone(), &edit).unwrap();
    assert_eq!(plan.ops.len(), 1, "only the phone is undone");
    assert_eq!(plan.skipped.len(), 1);
    assert_eq!(plan.skipped[0].path.as_ref(), Some(&name));
    assert_eq!(plan.skipped[0].changed_by, vec![key(2).actor_id()]);
    alex.write(&mut r, BundleKind::Undo { of: edit.hash() }, plan.ops, 3);
    assert_eq!(
        r.value(&name),
        Some(&Value::from("Jane Doe")),
        "Jordan's later work is kept"
    );
    assert_eq!(
        r.value(&phone),
        Some(&Value::Null),
        "the phone did not exist before"
    );
}

#[test]
fn undo_of_a_delete_brings_the_entity_back() {
    let mut r = Replica::new();
    let mut alex = Actor {
        key: key(1),
        tip: AuthorTip::default(),
    };
    let name: FieldPath = "contacts.person/sam/name".parse().unwrap();
    let ops = vec![set(&r, &name, "Sam")];
    alex.write(&mut r, BundleKind::UserEdit, ops, 1);
    let pred = r.heads(&name).iter().map(|h| h.op).collect();
    let del = alex.write(
        &mut r,
        BundleKind::UserEdit,
        vec![Op::DeleteEntity {
            entity_type: "contacts.person".into(),
            entity_id: "sam".parse().unwrap(),
            pred,
        }],
        2,
    );
    assert_eq!(r.value(&name), None);
    let plan = plan_undo(&mut r.clone(), &mut r.clone(), &del).unwrap();
    alex.write(&mut r, BundleKind::Undo { of: del.hash() }, plan.ops, 3);
    assert_eq!(r.value(&name), Some(&Value::from("Sam")));
    assert_eq!(r.conflicts().count(), 0);
}
