//! After random workloads (several writers, concurrent sets on shared fields,
//! entity deletes, undo, bundles arriving in random batches and order, with
//! duplicates), the store's materialised state equals the in-memory reference
//! `Replica`, equals a fresh replay of the oplog, and undo plans computed on
//! the store equal those computed on the reference.

use proptest::prelude::*;
use troupe_protocol::bundle::BundleKind;
use troupe_protocol::crypto::ActorKey;
use troupe_protocol::draft::{AuthorTip, Draft};
use troupe_protocol::hlc::Hlc;
use troupe_protocol::register::Replica;
use troupe_protocol::testing::{key, test_workspace};
use troupe_protocol::undo::plan_undo;
use troupe_protocol::workspace::{WorkspaceInfo, WorkspaceKind};
use troupe_protocol::{Bundle, EntityId, FieldPath, Op, Value, WorkspaceId};
use troupe_storage::Store;

#[derive(Clone, Debug)]
enum Action {
    Set { w: usize, path: usize, v: i64 },
    Delete { w: usize, entity: usize },
    Undo { w: usize },
    Sync { from: usize, to: usize },
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        6 => (0..3usize, 0..8usize, any::<i64>()).prop_map(|(w, path, v)| Action::Set { w, path, v }),
        1 => (0..3usize, 0..2usize).prop_map(|(w, entity)| Action::Delete { w, entity }),
        2 => (0..3usize).prop_map(|w| Action::Undo { w }),
        2 => (0..3usize, 0..3usize).prop_map(|(from, to)| Action::Sync { from, to }),
    ]
}

fn path(i: usize) -> FieldPath {
    FieldPath::new("cues.cue", &format!("e{}", i % 2), &format!("f{}", i / 2)).unwrap()
}

struct Writer {
    key: ActorKey,
    tip: AuthorTip,
    seen: Replica,
    own: Vec<Bundle>,
    clock: u64,
}

impl Writer {
    fn write(&mut self, ws: WorkspaceId, kind: BundleKind, ops: Vec<Op>) -> Option<Bundle> {
        if ops.is_empty() {
            return None;
        }
        let mut d = Draft::new(ws, kind, "step");
        for op in ops {
            d.push(op);
        }
        self.clock += 1;
        let b = d
            .sign(
                &self.key,
                &self.tip,
                Hlc {
                    wall_ms: self.clock,
                    counter: 0,
                },
            )
            .unwrap();
        self.tip = AuthorTip::after(&b);
        self.seen.apply(&b);
        self.own.push(b.clone());
        Some(b)
    }
}

fn run(actions: Vec<Action>, cuts: Vec<usize>, seed: u64) {
    let ws = test_workspace().workspace_id();
    let mut writers: Vec<Writer> = (0..3)
        .map(|i| Writer {
            key: key(10 + i as u8),
            tip: AuthorTip::default(),
            seen: Replica::new(),
            own: vec![],
            clock: 0,
        })
        .collect();
    let mut all: Vec<Bundle> = Vec::new();
    for a in actions {
        match a {
            Action::Set { w, path: p, v } => {
                let p = path(p);
                let pred = writers[w].seen.heads(&p).iter().map(|h| h.op).collect();
                let op = Op::Set {
                    path: p,
                    value: Value::Int(v),
                    pred,
                };
                all.extend(writers[w].write(ws, BundleKind::UserEdit, vec![op]));
            }
            Action::Delete { w, entity } => {
                let id = EntityId::new(format!("e{entity}")).unwrap();
                let mut pred: Vec<_> = writers[w]
                    .seen
                    .fields()
                    .filter(|(p, _)| p.entity_id == id)
                    .flat_map(|(_, h)| h.iter().map(|h| h.op))
                    .collect();
                pred.sort();
                pred.dedup();
                let op = Op::DeleteEntity {
                    entity_type: "cues.cue".into(),
                    entity_id: id,
                    pred,
                };
                all.extend(writers[w].write(ws, BundleKind::UserEdit, vec![op]));
            }
            Action::Undo { w } => {
                let Some(last) = writers[w].own.last().cloned() else {
                    continue;
                };
                let mut lookup = writers[w].seen.clone();
                let plan = plan_undo(&mut writers[w].seen, &mut lookup, &last).unwrap();
                let kind = BundleKind::Undo { of: last.hash() };
                all.extend(writers[w].write(ws, kind, plan.ops));
            }
            Action::Sync { from, to } => {
                let bs: Vec<Bundle> = writers[from].own.clone();
                for b in &bs {
                    writers[to].seen.apply(b);
                }
            }
        }
    }

    // Deliver everything in a seeded shuffle, with duplicates, in batches.
    let mut order: Vec<Bundle> = all.iter().chain(all.iter().take(3)).cloned().collect();
    let mut s = seed | 1;
    for i in (1..order.len()).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        order.swap(i, (s % (i as u64 + 1)) as usize);
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s.redb")).unwrap();
    store
        .add_workspace(&WorkspaceInfo::new(
            test_workspace(),
            "t",
            WorkspaceKind::Show,
        ))
        .unwrap();
    let mut rest = order.as_slice();
    for c in cuts {
        let n = c.min(rest.len());
        let (batch, tail) = rest.split_at(n);
        let out = store.commit_batch(&ws, batch.to_vec(), "peer").unwrap();
        assert!(out.quarantined.is_empty(), "{:?}", out.quarantined);
        rest = tail;
    }
    let out = store.commit_batch(&ws, rest.to_vec(), "peer").unwrap();
    assert!(out.quarantined.is_empty());

    let mut reference = Replica::new();
    for b in &all {
        reference.apply(b);
    }
    let expect: Vec<_> = reference
        .fields()
        .map(|(p, h)| (p.clone(), h.to_vec()))
        .collect();
    let mut got = store.fields(&ws).unwrap();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got, expect, "store state == reference replica");
    for (p, _) in &expect {
        assert_eq!(store.value(&ws, p).unwrap().as_ref(), reference.value(p));
    }
    assert_eq!(
        store.conflicts(&ws).unwrap().len(),
        reference.conflicts().count()
    );
    assert_eq!(store.verify_rebuild().unwrap(), vec![], "store == replay");

    // Undo plans on the store equal those on the reference.
    for b in all.iter().rev().take(3) {
        let mut view = store.workspace_view(&ws).unwrap();
        let mut lookup = store.workspace_view(&ws).unwrap();
        let on_store = plan_undo(&mut view, &mut lookup, b).unwrap();
        let mut r2 = reference.clone();
        let on_ref = plan_undo(&mut reference, &mut r2, b).unwrap();
        assert_eq!(on_store, on_ref);
    }

    // An in-place rebuild gives the same state.
    let report = store.rebuild().unwrap();
    assert_eq!(report.replayed as usize, all.len());
    assert!(report.skipped_corrupt.is_empty());
    let mut again = store.fields(&ws).unwrap();
    again.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(again, expect, "rebuilt == reference");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn store_equals_rebuild_equals_replica(
        actions in prop::collection::vec(action(), 1..60),
        cuts in prop::collection::vec(1usize..20, 0..5),
        seed in any::<u64>(),
    ) {
        run(actions, cuts, seed);
    }
}

#[test]
fn a_conflicting_workload_is_checked_not_just_an_empty_one() {
    // Two writers set the same field concurrently, one deletes the entity,
    // one undoes: the property above must see conflicts and deletions.
    use Action::*;
    run(
        vec![
            Set {
                w: 0,
                path: 0,
                v: 1,
            },
            Set {
                w: 1,
                path: 0,
                v: 2,
            },
            Set {
                w: 2,
                path: 2,
                v: 3,
            },
            Delete { w: 2, entity: 0 },
            Sync { from: 0, to: 1 },
            Set {
                w: 1,
                path: 0,
                v: 4,
            },
            Undo { w: 1 },
            Set {
                w: 0,
                path: 4,
                v: 5,
            },
        ],
        vec![2, 3],
        7,
    );
}
