//! Salvage of a damaged store file: the node always gets a working store
//! back, everything in it verifies, its state equals a replay of exactly the
//! bundles it kept (never a wrong value), and every bundle of the original
//! that is not kept is reported (lost ranges, or a table named unreadable),
//! so "lossless" is never claimed over a loss.

use std::collections::BTreeSet;
use std::path::Path;

use troupe_protocol::register::Replica;
use troupe_protocol::testing::{chain, test_workspace};
use troupe_protocol::workspace::{WorkspaceInfo, WorkspaceKind, WorkspaceSecret};
use troupe_protocol::{Bundle, WorkspaceId};
use troupe_storage::{SalvageReport, Store};

/// A store with two workspaces (one archived), three authors (one whose
/// interior signatures were left out, as senders may), a blob and a
/// quarantine entry.
fn fixture(path: &Path) -> Vec<Bundle> {
    let s = Store::open(path).unwrap();
    let ws = test_workspace().workspace_id();
    s.add_workspace(&WorkspaceInfo::new(
        test_workspace(),
        "Tour",
        WorkspaceKind::Show,
    ))
    .unwrap();
    let mut other = WorkspaceInfo::new(WorkspaceSecret([9; 32]), "Old", WorkspaceKind::Show);
    other.archived = true;
    s.add_workspace(&other).unwrap();
    let mut all = Vec::new();
    for seed in 1..=3 {
        let (_, mut b) = chain(seed, 40);
        if seed == 3 {
            let n = b.len();
            for x in &mut b[..n - 1] {
                *x = x.without_signature();
            }
        }
        s.commit_batch(&ws, b.clone(), "peer").unwrap();
        all.extend(b);
    }
    s.put_blob(&[7u8; 300_000]).unwrap();
    // Incompressible and over a chunk: raw chunk rows kept in two parts.
    s.put_blob(&noise()).unwrap();
    s.quarantine_bytes(&ws, vec![1, 2, 3], "garbage", "peer")
        .unwrap();
    all
}

/// 2.5 MiB that zstd cannot shrink (a photo, a recording).
fn noise() -> Vec<u8> {
    troupe_protocol::testing::noise(5 << 19, 7)
}

fn held(s: &Store, ws: &WorkspaceId) -> Vec<Bundle> {
    let mut out = Vec::new();
    for (a, r) in s.ranges(ws).unwrap() {
        for seq in r.iter() {
            out.push(s.bundle(ws, &a, seq).unwrap().expect("ranges claim it"));
        }
    }
    out
}

/// Checks the salvaged store against the original bundles and the report.
fn check(s: &Store, original: &[Bundle], report: &SalvageReport, label: &str) {
    let ws = test_workspace().workspace_id();
    let kept = held(s, &ws);
    let by_slot: BTreeSet<_> = original
        .iter()
        .map(|b| (b.body().author, b.body().seq, b.hash()))
        .collect();
    let mut replica = Replica::new();
    for b in &kept {
        assert!(
            by_slot.contains(&(b.body().author, b.body().seq, b.hash())),
            "{label}: a kept bundle is not one of the originals"
        );
        replica.apply(b);
    }
    // State equals a replay of exactly what was kept: never a wrong value.
    let fields = s.fields(&ws).unwrap();
    let reference: Vec<_> = replica
        .fields()
        .map(|(p, h)| (p.clone(), h.to_vec()))
        .collect();
    assert_eq!(fields, reference, "{label}: state differs from a replay");
    assert!(s.verify_rebuild().unwrap().is_empty(), "{label}");
    // Every original not kept is accounted for.
    let kept_slots: BTreeSet<_> = kept
        .iter()
        .map(|b| (b.body().author, b.body().seq))
        .collect();
    for b in original {
        let (a, seq) = (b.body().author, b.body().seq);
        if kept_slots.contains(&(a, seq)) {
            continue;
        }
        let reported = report
            .lost
            .iter()
            .any(|l| l.workspace == ws && l.author == a && l.seqs.contains(seq));
        assert!(
            reported || !report.unreadable.is_empty(),
            "{label}: {a:?}/{seq} vanished without a report"
        );
        assert!(!report.is_lossless(), "{label}: loss reported as lossless");
    }
}

#[test]
fn an_undamaged_store_salvages_losslessly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("troupe.redb");
    let original = fixture(&path);
    let before = {
        let s = Store::open(&path).unwrap();
        let ws = test_workspace().workspace_id();
        (s.fields(&ws).unwrap(), s.ranges(&ws).unwrap())
    };
    let report = Store::salvage(&path).unwrap();
    assert!(report.is_lossless(), "{report:?}");
    assert_eq!(report.workspaces, 2);
    assert_eq!(report.bundles_kept, 120);
    assert_eq!((report.blobs_kept, report.quarantine_kept), (2, 1));
    assert!(report.damaged_copy.as_ref().is_some_and(|p| p.exists()));
    let s = Store::open(&path).unwrap();
    let ws = test_workspace().workspace_id();
    assert_eq!((s.fields(&ws).unwrap(), s.ranges(&ws).unwrap()), before);
    check(&s, &original, &report, "clean");
    let old = WorkspaceSecret([9; 32]).workspace_id();
    assert!(s.workspace(&old).unwrap().unwrap().archived);
    let blob = s.get_blob(&blake3_of(&[7u8; 300_000])).unwrap();
    assert_eq!(blob.len(), 300_000);
    assert_eq!(s.get_blob(&blake3_of(&noise())).unwrap(), noise());
    assert_eq!(s.quarantine_list().unwrap().len(), 1);
    for seed in 1..=3u8 {
        let a = troupe_protocol::testing::key(seed).actor_id();
        assert_eq!(s.author_tip(&ws, &a).unwrap().last_seq, 40);
    }
}

fn blake3_of(b: &[u8]) -> troupe_protocol::BlobHash {
    troupe_protocol::BlobHash(*blake3::hash(b).as_bytes())
}

#[test]
fn a_damaged_file_is_salvaged_and_every_loss_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let clean = dir.path().join("clean.redb");
    let original = fixture(&clean);
    let image = std::fs::read(&clean).unwrap();
    let mut rng: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let (mut salvaged, mut lossy) = (0, 0);
    for trial in 0..40 {
        let mut img = image.clone();
        // A burst of damage: a few flipped bytes, or a zeroed 4 KiB page.
        if trial % 2 == 0 {
            for _ in 0..8 {
                let at = (next() % img.len() as u64) as usize;
                img[at] ^= 0x5a;
            }
        } else {
            let page = (next() % (img.len() as u64 / 4096)) as usize * 4096;
            let end = (page + 4096).min(img.len());
            img[page..end].fill(0);
        }
        let path = dir.path().join(format!("t{trial}.redb"));
        std::fs::write(&path, &img).unwrap();
        let (s, report) = match Store::open_or_salvage(&path) {
            Ok(x) => x,
            Err(e) => {
                // Only a file redb cannot read at all may refuse; it stays in place.
                assert!(path.exists(), "trial {trial}: {e}");
                continue;
            }
        };
        let Some(report) = report else {
            // Opened cleanly: the damage missed live pages; reads must still be right.
            let ws = test_workspace().workspace_id();
            for b in &original {
                if let Ok(Some(got)) = s.bundle(&ws, &b.body().author, b.body().seq) {
                    assert_eq!(&got, b, "trial {trial}: wrong bundle served");
                }
            }
            continue;
        };
        salvaged += 1;
        if !report.is_lossless() {
            lossy += 1;
        }
        check(&s, &original, &report, &format!("trial {trial}"));
    }
    eprintln!("salvaged {salvaged} of 40 damaged files, {lossy} with reported losses");
    assert!(salvaged > 0, "damage must reach salvage in some trials");
}
