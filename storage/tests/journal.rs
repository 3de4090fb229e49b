//! The commit journal: a deferred commit that a flush made durable comes
//! back after a crash (the store file alone no longer has it), also when the
//! store file has to be salvaged first; a clean close leaves no journal.
//!
//! A crash is imitated by copying the store file and its journal while the
//! store is open: redb writes nothing in place of its last durable commit,
//! so the copy is what the disk holds if the process dies at that moment.
//! The sigkill test kills real processes for the same property.

use std::path::{Path, PathBuf};

use troupe_protocol::sync::WireCopy;
use troupe_protocol::sync::message::encode_batch;
use troupe_protocol::testing::{chain, test_workspace};
use troupe_protocol::workspace::{WorkspaceInfo, WorkspaceKind};
use troupe_protocol::{Bundle, WorkspaceId};
use troupe_storage::{Received, Store};

fn journal_of(store: &Path) -> PathBuf {
    let mut name = store.file_name().unwrap().to_os_string();
    name.push(".journal");
    store.with_file_name(name)
}

/// The disk as a crash at this moment leaves it, copied to `to`.
fn crash_image(from: &Path, to: &Path, with_journal: bool) {
    std::fs::copy(from, to).unwrap();
    let _ = std::fs::remove_file(journal_of(to));
    if with_journal && journal_of(from).exists() {
        std::fs::copy(journal_of(from), journal_of(to)).unwrap();
    }
}

fn holds(s: &Store, ws: &WorkspaceId, b: &Bundle) -> bool {
    s.bundle(ws, &b.body().author, b.body().seq)
        .unwrap()
        .is_some_and(|got| &got == b)
}

/// A store with a checkpointed batch and a durable one, then two received
/// batches and a local group committed deferred and flushed, then one more
/// deferred batch that no flush covered. Returns (durable, flushed,
/// unflushed) bundles.
fn fixture(path: &Path) -> (Store, Vec<Bundle>, Vec<Bundle>, Vec<Bundle>) {
    let s = show_store(path);
    let ws = test_workspace().workspace_id();
    let (_, a) = chain(1, 10);
    // Deferred and flushed, past a checkpoint: the journal that follows
    // starts at a record above the first.
    s.set_journal_limit(0);
    s.commit_batch_deferred(&ws, a[..5].to_vec(), "peer")
        .unwrap();
    s.flush().unwrap();
    s.set_journal_limit(32 << 20);
    s.commit_batch(&ws, a[5..].to_vec(), "peer").unwrap();
    let (_, b) = chain(2, 30);
    s.commit_batch_deferred(&ws, b[..10].to_vec(), "peer")
        .unwrap();
    s.commit_batches_deferred(vec![(ws, b[10..20].to_vec(), "peer 2".into())])
        .unwrap();
    let (_, c) = chain(3, 5);
    s.commit_local_many_deferred(c.clone()).unwrap();
    s.flush().unwrap();
    assert!(!s.journal_waiting());
    let mut flushed = b[..20].to_vec();
    flushed.extend(c);
    s.commit_batch_deferred(&ws, b[20..].to_vec(), "peer")
        .unwrap();
    assert!(s.journal_waiting());
    (s, a, flushed, b[20..].to_vec())
}

#[test]
fn a_flushed_deferred_commit_comes_back_after_a_crash_through_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let ws = test_workspace().workspace_id();
    let (s, durable, flushed, unflushed) = fixture(&path);

    // The store file alone holds only its last durable commit.
    let bare = dir.path().join("bare.redb");
    crash_image(&path, &bare, false);
    {
        let b = Store::open(&bare).unwrap();
        assert!(durable.iter().all(|x| holds(&b, &ws, x)));
        assert!(flushed.iter().all(|x| !holds(&b, &ws, x)));
    }

    // With its journal, everything a flush covered is back, and it verifies.
    let crashed = dir.path().join("crashed.redb");
    crash_image(&path, &crashed, true);
    {
        let c = Store::open(&crashed).unwrap();
        assert!(durable.iter().all(|x| holds(&c, &ws, x)));
        assert!(flushed.iter().all(|x| holds(&c, &ws, x)));
        // Never acknowledged, and not there: all of that batch or none.
        assert!(unflushed.iter().all(|x| !holds(&c, &ws, x)));
        assert!(c.scrub().unwrap().is_empty());
        assert!(c.verify_rebuild().unwrap().is_empty());
        // Applied once: a second crash right after the open brings back the same.
        let again = dir.path().join("again.redb");
        crash_image(&crashed, &again, true);
        let a = Store::open(&again).unwrap();
        let count = |s: &Store| {
            s.ranges(&ws)
                .unwrap()
                .values()
                .map(|r| r.count())
                .sum::<u64>()
        };
        assert_eq!(count(&a), count(&c));
    }
    assert!(
        !journal_of(&crashed).exists(),
        "a clean close puts everything in the store file"
    );

    // A clean close of the original keeps even the unflushed batch.
    drop(s);
    assert!(!journal_of(&path).exists());
    let s = Store::open(&path).unwrap();
    assert!(unflushed.iter().all(|x| holds(&s, &ws, x)));
}

#[test]
fn a_salvaged_store_file_gets_its_journal_applied() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let ws = test_workspace().workspace_id();
    let (_s, durable, flushed, _) = fixture(&path);
    let crashed = dir.path().join("crashed.redb");
    crash_image(&path, &crashed, true);
    // Salvage rebuilds the file from what verifies; the store keeps its id,
    // so the journal beside it is still its own.
    Store::salvage(&crashed).unwrap();
    let c = Store::open(&crashed).unwrap();
    assert!(durable.iter().all(|x| holds(&c, &ws, x)));
    assert!(flushed.iter().all(|x| holds(&c, &ws, x)));
    assert!(c.verify_rebuild().unwrap().is_empty());
}

#[test]
fn an_emergency_export_includes_what_only_the_journal_holds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let ws = test_workspace().workspace_id();
    let (_s, _, _, _) = fixture(&path);
    let crashed = dir.path().join("crashed.redb");
    crash_image(&path, &crashed, true);
    // The export that salvages a copy of the file, as for a damaged store.
    let damaged_out = dir.path().join("from-damaged");
    let r = troupe_storage::export_damaged(&crashed, &ws, &damaged_out).unwrap();
    // The same crash image opened normally (journal applied), exported.
    let opened = dir.path().join("opened.redb");
    crash_image(&crashed, &opened, true);
    let normal_out = dir.path().join("from-open");
    let n = Store::open(&opened)
        .unwrap()
        .export(&ws, &normal_out)
        .unwrap();
    assert_eq!(r.fields, n.fields);
    let state = |d: &Path| {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.join("state.json")).unwrap()).unwrap();
        v["entities"].clone()
    };
    assert!(r.fields > 0);
    assert_eq!(state(&damaged_out), state(&normal_out));
    assert!(
        crashed.exists() && journal_of(&crashed).exists(),
        "the source is left as found"
    );
}

#[test]
fn a_refused_deferred_commit_leaves_nothing_in_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let s = Store::open(&path).unwrap();
    let (_, b) = chain(1, 3);
    // No such workspace here: refused before anything is written.
    assert!(
        s.commit_batch_deferred(&test_workspace().workspace_id(), b.clone(), "peer")
            .is_err()
    );
    assert!(s.commit_local_many_deferred(b.clone()).is_err());
    assert!(!s.journal_waiting());
    s.flush().unwrap();
    assert!(!journal_of(&path).exists(), "nothing was journaled");
}

/// Bytes of records in a journal file (zeros follow the last one).
fn journal_used(store: &Path) -> usize {
    let bytes = std::fs::read(journal_of(store)).unwrap();
    bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1)
}

fn received(ws: WorkspaceId, bundles: Vec<Bundle>, wire: Option<WireCopy>) -> Received {
    Received {
        workspace: ws,
        bundles,
        source: "peer".into(),
        wire,
    }
}

fn show_store(path: &Path) -> Store {
    let s = Store::open(path).unwrap();
    s.add_workspace(&WorkspaceInfo::new(
        test_workspace(),
        "Tour",
        WorkspaceKind::Show,
    ))
    .unwrap();
    s
}

#[test]
fn a_received_batch_kept_as_it_arrived_comes_back_after_a_crash_and_takes_less_room() {
    let dir = tempfile::tempdir().unwrap();
    let ws = test_workspace().workspace_id();
    let (_, b) = chain(4, 600);
    let payload = |items: &[Bundle]| encode_batch(items.iter().map(Bundle::bytes));
    // Two batches of 300 as they crossed the wire; of the second only the
    // first 200 were wanted (the rest held already, say).
    let first = WireCopy::new(payload(&b[..300]), (0..300).collect(), &b[..300]);
    let second = WireCopy::new(payload(&b[300..]), (0..200).collect(), &b[300..500]);

    let kept = dir.path().join("kept.redb");
    let s = show_store(&kept);
    s.commit_received_deferred(vec![
        received(ws, b[..300].to_vec(), Some(first)),
        received(ws, b[300..500].to_vec(), Some(second)),
    ])
    .unwrap()
    .into_iter()
    .zip([300, 200])
    .for_each(|(r, n)| assert_eq!(r.unwrap().committed.len(), n));
    s.flush().unwrap();

    // The same bundles journaled as their own bytes, for comparison.
    let raw = dir.path().join("raw.redb");
    let r = show_store(&raw);
    r.commit_batches_deferred(vec![
        (ws, b[..300].to_vec(), "peer".into()),
        (ws, b[300..500].to_vec(), "peer".into()),
    ])
    .unwrap();
    r.flush().unwrap();
    let (wire_bytes, raw_bytes) = (journal_used(&kept), journal_used(&raw));
    assert!(
        wire_bytes * 3 < raw_bytes,
        "kept as received: {wire_bytes} bytes of journal, as bundles: {raw_bytes}"
    );

    let crashed = dir.path().join("crashed.redb");
    crash_image(&kept, &crashed, true);
    let c = Store::open(&crashed).unwrap();
    assert!(b[..500].iter().all(|x| holds(&c, &ws, x)));
    assert!(
        b[500..].iter().all(|x| !holds(&c, &ws, x)),
        "only the picks"
    );
    assert!(c.scrub().unwrap().is_empty());
    assert!(c.verify_rebuild().unwrap().is_empty());
}

#[test]
fn a_kept_batch_that_no_longer_gives_its_bundles_is_left_out_and_later_records_still_apply() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let ws = test_workspace().workspace_id();
    let s = show_store(&path);
    let (_, b) = chain(4, 20);
    let good = WireCopy::new(
        encode_batch(b.iter().map(Bundle::bytes)),
        (0..10).collect(),
        &b[..10],
    );
    // What a decoder that changed after the crash would meet: the same
    // record, but the picks no longer give the bundles the digest names.
    let changed = WireCopy::from_parts(good.payload().to_vec(), (10..20).collect(), *good.digest());
    s.commit_received_deferred(vec![received(ws, b[..10].to_vec(), Some(changed))])
        .unwrap();
    // A local edit after it, in a record of its own: the only copy of it.
    let (_, local) = chain(3, 4);
    s.commit_local_many_deferred(local.clone()).unwrap();
    s.flush().unwrap();

    let crashed = dir.path().join("crashed.redb");
    crash_image(&path, &crashed, true);
    let c = Store::open(&crashed).unwrap();
    assert!(b.iter().all(|x| !holds(&c, &ws, x)), "never other bundles");
    assert!(local.iter().all(|x| holds(&c, &ws, x)), "the edit is back");
    assert!(c.verify_rebuild().unwrap().is_empty());
}
