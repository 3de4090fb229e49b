//! The write path: a committed bundle is readable, verified and applied; a
//! re-sent copy is skipped; a different bundle at a held (author, seq) is a
//! fork and is quarantined, never applied; an archived workspace refuses
//! every write with a typed error.

use troupe_protocol::draft::{AuthorTip, Draft};
use troupe_protocol::testing::{chain, chain_with, key, test_workspace};
use troupe_protocol::workspace::{WorkspaceInfo, WorkspaceKind};
use troupe_protocol::{BundleKind, FieldPath, Value};
use troupe_storage::{CommitError, Store};

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path().join("troupe.redb")).unwrap();
    s.add_workspace(&WorkspaceInfo::new(
        test_workspace(),
        "Tour",
        WorkspaceKind::Show,
    ))
    .unwrap();
    (dir, s)
}

#[test]
fn local_commit_is_applied_and_tip_advances() {
    let (_d, s) = store();
    let ws = test_workspace().workspace_id();
    let k = key(1);
    let tip = s.author_tip(&ws, &k.actor_id()).unwrap();
    assert_eq!(tip, AuthorTip::default());
    let path: FieldPath = "contacts.person/jane/name".parse().unwrap();
    let mut d = Draft::new(ws, BundleKind::UserEdit, "Add Jane");
    d.set(path.clone(), Value::from("Jane"), vec![]);
    let b = d.sign(&k, &tip, Default::default()).unwrap();
    s.commit_local(&b).unwrap();
    assert_eq!(s.value(&ws, &path).unwrap(), Some(Value::from("Jane")));
    assert_eq!(
        s.author_tip(&ws, &k.actor_id()).unwrap(),
        AuthorTip::after(&b)
    );
    assert_eq!(s.bundle(&ws, &k.actor_id(), 1).unwrap().unwrap(), b);
    let h = s.history(&ws).unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!(
        (h[0].kind, h[0].summary.as_str()),
        ("user_edit", "Add Jane")
    );
    // Signing again against the stale tip reuses seq 1: refused, nothing written.
    let mut d = Draft::new(ws, BundleKind::UserEdit, "Again");
    d.set(path.clone(), Value::from("Janet"), vec![]);
    let again = d.sign(&k, &tip, Default::default()).unwrap();
    assert!(matches!(
        s.commit_local(&again),
        Err(CommitError::SeqReused { seq: 1, .. })
    ));
    assert_eq!(s.value(&ws, &path).unwrap(), Some(Value::from("Jane")));
}

#[test]
fn batch_commits_and_resend_is_skipped() {
    let (_d, s) = store();
    let (ws, bundles) = chain(2, 20);
    let out = s.commit_batch(&ws, bundles.clone(), "peer").unwrap();
    assert_eq!(out.committed.len(), 20);
    assert!(out.quarantined.is_empty());
    let out = s.commit_batch(&ws, bundles.clone(), "peer").unwrap();
    assert_eq!((out.committed.len(), out.already_held), (0, 20));
    let r = s.ranges(&ws).unwrap();
    assert_eq!(r[&key(2).actor_id()].ranges(), &[(1, 20)]);
    assert!(s.verify_rebuild().unwrap().is_empty());
}

#[test]
fn a_fork_is_quarantined_and_never_applied() {
    let (_d, s) = store();
    let (ws, good) = chain(3, 3);
    let (_, forked) = chain_with(3, 3, "fork");
    let author = good[0].body().author;
    s.commit_batch(&ws, good.clone(), "a").unwrap();
    let p = FieldPath::new("contacts.person", "p3x1", "f0").unwrap();
    assert_eq!(s.value(&ws, &p).unwrap(), Some(Value::Text("v-1-0".into())));
    let out = s.commit_batch(&ws, vec![forked[1].clone()], "b").unwrap();
    assert!(out.committed.is_empty());
    assert_eq!(out.forks, vec![(author, 2)]);
    // Both copies are in quarantine, and neither is applied any more.
    let q = s.quarantine_list().unwrap();
    assert_eq!(q.len(), 2);
    let incoming = q.iter().find(|e| e.source == "b").unwrap().clone();
    let held = q.iter().find(|e| e.source == "fork").unwrap().clone();
    assert_eq!(incoming.expected, Some(good[1].hash()));
    assert!(incoming.reason.contains("fork") && held.reason.contains("fork"));
    assert_eq!(held.hash, Some(good[1].hash()));
    assert_eq!(held.bytes, good[1].bytes());
    assert!(s.bundle(&ws, &author, 2).unwrap().is_none());
    assert!(!s.ranges(&ws).unwrap()[&author].contains(2));
    assert_eq!(s.value(&ws, &p).unwrap(), None);
    assert!(s.verify_rebuild().unwrap().is_empty());
    // The same copies arriving again are recognised: not applied, not added.
    let out = s
        .commit_batch(&ws, vec![good[1].clone(), forked[1].clone()], "c")
        .unwrap();
    assert!(out.committed.is_empty());
    assert_eq!(out.already_quarantined, 2);
    assert_eq!(s.quarantine_list().unwrap().len(), 2);
    // Retrying while the fork is unresolved changes nothing.
    let out = s.quarantine_retry(incoming.id).unwrap();
    assert_eq!(out.forks, vec![(author, 2)]);
    assert_eq!(s.quarantine_list().unwrap().len(), 2);
    // The user skips one copy (recorded) and retries the other: applied again.
    s.quarantine_skip(incoming.id).unwrap();
    let skipped = s.quarantine_skipped().unwrap();
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].hash, incoming.hash);
    let out = s.quarantine_retry(held.id).unwrap();
    assert_eq!(out.committed, vec![(author, 2, good[1].hash())]);
    assert_eq!(s.value(&ws, &p).unwrap(), Some(Value::Text("v-1-0".into())));
    assert!(s.quarantine_list().unwrap().is_empty());
    assert!(s.verify_rebuild().unwrap().is_empty());
}

#[test]
fn two_copies_of_a_new_slot_in_one_batch_are_a_fork() {
    let (_d, s) = store();
    let (ws, good) = chain(4, 2);
    let (_, forked) = chain_with(4, 2, "fork");
    let out = s
        .commit_batch(&ws, vec![good[0].clone(), forked[0].clone()], "peer")
        .unwrap();
    assert!(out.committed.is_empty());
    assert_eq!(out.forks, vec![(good[0].body().author, 1)]);
    assert_eq!(s.quarantine_list().unwrap().len(), 2);
    assert!(s.fields(&ws).unwrap().is_empty());
    assert!(s.ranges(&ws).unwrap().is_empty());
}

#[test]
fn an_archived_workspace_refuses_writes() {
    let (_d, s) = store();
    let (ws, bundles) = chain(4, 2);
    s.set_archived(&ws, true).unwrap();
    assert!(matches!(
        s.commit_batch(&ws, bundles.clone(), "peer"),
        Err(CommitError::Archived(_))
    ));
    assert!(matches!(
        s.commit_local(&bundles[0]),
        Err(CommitError::Archived(_))
    ));
    assert!(s.ranges(&ws).unwrap().is_empty());
    s.set_archived(&ws, false).unwrap();
    assert_eq!(
        s.commit_batch(&ws, bundles, "peer")
            .unwrap()
            .committed
            .len(),
        2
    );
}

#[test]
fn an_unsigned_tail_is_quarantined_with_its_source() {
    let (_d, s) = store();
    let (ws, bundles) = chain(5, 3);
    let stripped: Vec<_> = bundles.iter().map(|b| b.without_signature()).collect();
    let out = s.commit_batch(&ws, stripped, "mallory").unwrap();
    assert!(out.committed.is_empty());
    assert_eq!(out.quarantined.len(), 3);
    // The signed copies arrive: retrying the quarantined ones now finds them held.
    s.commit_batch(&ws, bundles, "alice").unwrap();
    for e in s.quarantine_list().unwrap() {
        let out = s.quarantine_retry(e.id).unwrap();
        assert_eq!(out.already_held, 1);
    }
    assert!(s.quarantine_list().unwrap().is_empty());
}

#[test]
fn unknown_workspace_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path().join("x.redb")).unwrap();
    let (ws, bundles) = chain(1, 1);
    assert!(matches!(
        s.commit_batch(&ws, bundles, "p"),
        Err(CommitError::UnknownWorkspace(_))
    ));
}

#[test]
fn a_group_commit_with_one_bad_bundle_writes_nothing() {
    let (_d, s) = store();
    let (ws, good) = chain(6, 4);
    let (_, other) = chain(7, 2);
    // seq 2 of author 7 without seq 1's successor chain is fine; a stripped
    // tail with nothing vouching for it is not.
    let bad = other[1].without_signature();
    let group = vec![good[0].clone(), good[1].clone(), other[0].clone(), bad];
    assert!(matches!(
        s.commit_local_many(&group),
        Err(CommitError::Invalid { seq: 2, .. })
    ));
    assert!(s.ranges(&ws).unwrap().is_empty());
    assert!(s.fields(&ws).unwrap().is_empty());
    assert!(
        s.quarantine_list().unwrap().is_empty(),
        "local failures are errors, not quarantine"
    );
    s.commit_local_many(&good).unwrap();
    assert_eq!(
        s.ranges(&ws).unwrap()[&key(6).actor_id()].ranges(),
        &[(1, 4)]
    );
}

#[test]
fn the_sync_view_reads_ranges_bytes_and_hashes_from_one_snapshot() {
    use troupe_protocol::sync::oplog_view::OplogView;
    let (_d, s) = store();
    let (ws, bundles) = chain(8, 5);
    s.commit_batch(&ws, bundles[..3].to_vec(), "p").unwrap();
    let view = s.view().unwrap();
    s.commit_batch(&ws, bundles[3..].to_vec(), "p").unwrap();
    let a = key(8).actor_id();
    assert_eq!(
        view.ranges(&ws).unwrap()[&a].ranges(),
        &[(1, 3)],
        "snapshot"
    );
    // One author's ranges, read alone, are the same; an author never seen
    // has none.
    assert_eq!(view.author_ranges(&ws, &a).unwrap().ranges(), &[(1, 3)]);
    assert!(
        view.author_ranges(&ws, &key(9).actor_id())
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        view.bundle(&ws, &a, 2).unwrap().unwrap(),
        bundles[1].bytes()
    );
    assert_eq!(view.bundle(&ws, &a, 4).unwrap(), None);
    assert_eq!(
        view.bundle_hash(&ws, &a, 3).unwrap(),
        Some(bundles[2].hash())
    );
    drop(view);
    let view = s.view().unwrap();
    assert_eq!(view.ranges(&ws).unwrap()[&a].ranges(), &[(1, 5)]);
    assert_eq!(
        s.bundle_by_hash(&bundles[4].hash()).unwrap().as_ref(),
        Some(&bundles[4])
    );
    let h = s.history(&ws).unwrap();
    assert_eq!(
        h.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![5, 4, 3, 2, 1]
    );
}

#[test]
fn several_batches_commit_in_one_transaction_like_one_each() {
    let (_d, s) = store();
    let (ws, bundles) = chain(4, 30);
    let (_, other) = chain(5, 5);
    let unknown = troupe_protocol::workspace::WorkspaceSecret([9; 32]).workspace_id();
    let outs = s
        .commit_batches_deferred(vec![
            (ws, bundles[..10].to_vec(), "a".into()),
            (unknown, other.clone(), "a".into()),
            (ws, bundles[10..].to_vec(), "b".into()),
            (ws, bundles[5..15].to_vec(), "b".into()),
        ])
        .unwrap();
    s.flush().unwrap();
    assert_eq!(outs.len(), 4);
    assert_eq!(outs[0].as_ref().unwrap().committed.len(), 10);
    assert!(matches!(outs[1], Err(CommitError::UnknownWorkspace(_))));
    assert_eq!(outs[2].as_ref().unwrap().committed.len(), 20);
    let last = outs[3].as_ref().unwrap();
    assert_eq!((last.committed.len(), last.already_held), (0, 10));
    let r = s.ranges(&ws).unwrap();
    assert_eq!(r[&key(4).actor_id()].ranges(), &[(1, 30)]);
    assert!(s.verify_rebuild().unwrap().is_empty());
    // The same as committing them one by one.
    let (_d2, one) = store();
    one.commit_batch(&ws, bundles[..10].to_vec(), "a").unwrap();
    one.commit_batch(&ws, bundles[10..].to_vec(), "b").unwrap();
    for p in ["p4x1", "p4x7"] {
        let path = FieldPath::new("contacts.person", p, "f0").unwrap();
        assert_eq!(s.value(&ws, &path).unwrap(), one.value(&ws, &path).unwrap());
    }
}

#[test]
fn new_entities_between_held_ones_read_back_as_written() {
    // Entities named in one order sort in short gaps between those already
    // held (`p4x100`–`p4x109` sort between `p4x10` and `p4x11`): a batch's
    // new rows are written gap by gap, beside edits of held rows.
    let (_d, s) = store();
    let (ws, bundles) = chain(4, 400);
    s.commit_batch(&ws, bundles[..100].to_vec(), "a").unwrap();
    let k = key(6);
    let mut tip = AuthorTip::default();
    let mut batch = bundles[100..].to_vec();
    let touched = [
        "p4x1", "p4x15", "p4x150", "p4x1500", "p4x99", "p4x399", "p5",
    ];
    for (i, id) in touched.iter().enumerate() {
        let mut d = Draft::new(ws, BundleKind::UserEdit, "note");
        let path = FieldPath::new("contacts.person", id, "note").unwrap();
        d.set(path, Value::Text(format!("note-{i}").into()), vec![]);
        let b = d
            .sign(
                &k,
                &tip,
                troupe_protocol::hlc::Hlc {
                    wall_ms: 5_000 + i as u64,
                    counter: 0,
                },
            )
            .unwrap();
        tip = AuthorTip::after(&b);
        batch.push(b);
    }
    let out = s.commit_batch(&ws, batch, "b").unwrap();
    assert_eq!(out.committed.len(), 300 + touched.len());
    assert!(out.quarantined.is_empty());
    assert!(s.verify_rebuild().unwrap().is_empty());
    assert_eq!(s.fields(&ws).unwrap().len(), 400 * 10 + touched.len());
    for i in [0, 1, 10, 99, 100, 109, 110, 150, 255, 256, 399] {
        let path = FieldPath::new("contacts.person", &format!("p4x{i}"), "f3").unwrap();
        assert_eq!(
            s.value(&ws, &path).unwrap(),
            Some(Value::Text(format!("v-{i}-3").into())),
            "p4x{i}"
        );
    }
    for (i, id) in touched.iter().enumerate() {
        let path = FieldPath::new("contacts.person", id, "note").unwrap();
        assert_eq!(
            s.value(&ws, &path).unwrap(),
            Some(Value::Text(format!("note-{i}").into())),
            "{id}"
        );
    }
}

#[test]
fn a_bundle_adding_thousands_of_fields_in_descending_order_is_stored_in_name_order() {
    let (_d, s) = store();
    let ws = test_workspace().workspace_id();
    let k = key(3);
    let path = |i: u32| -> FieldPath { format!("cues.cue/c1/f{i:05}").parse().unwrap() };
    // A hundred fields, then 3,000 more, each sorting before the last (the
    // first hundred interleave with them), then edits of some of both.
    let mut tip = AuthorTip::default();
    let rounds: [Vec<u32>; 3] = [
        (0..100).map(|i| i * 30 + 7).collect(),
        (0..3_000).rev().collect(),
        (0..3_100).step_by(97).collect(),
    ];
    let mut expected = std::collections::BTreeMap::new();
    for (r, fields) in rounds.iter().enumerate() {
        let mut d = Draft::new(ws, BundleKind::UserEdit, "cues");
        for &i in fields {
            let v = Value::from(format!("{r}-{i}").as_str());
            let pred = s
                .field_heads(&ws, &path(i))
                .unwrap()
                .iter()
                .map(|h| h.op)
                .collect();
            d.set(path(i), v.clone(), pred);
            expected.insert(path(i).field.to_string(), v);
        }
        let b = d.sign(&k, &tip, Default::default()).unwrap();
        tip = AuthorTip::after(&b);
        s.commit_local(&b).unwrap();
    }
    let id = "c1".parse().unwrap();
    let read = |s: &Store| -> Vec<(String, Value)> {
        s.entity_fields(&ws, "cues.cue", &id)
            .unwrap()
            .into_iter()
            .map(|(p, heads)| {
                assert_eq!(heads.len(), 1, "{p}: one head");
                (p.field.to_string(), heads[0].value.clone().unwrap())
            })
            .collect()
    };
    let stored = read(&s);
    assert_eq!(stored, expected.into_iter().collect::<Vec<_>>());
    // Replaying the oplog gives the same row.
    s.rebuild().unwrap();
    assert_eq!(read(&s), stored);
}
