//! Byte flips in a closed store file never yield a wrong value: every read
//! of a bundle or field answers the right value, a typed error, or (for a
//! row whose key was damaged) nothing, and then scrub or redb's integrity
//! check reports damage; or the file refuses to open (salvage territory).

use troupe_protocol::testing::{chain, test_workspace};
use troupe_protocol::workspace::{WorkspaceInfo, WorkspaceKind};
use troupe_protocol::{Bundle, FieldPath, Value};
use troupe_storage::{ReadError, Store};

fn fixture(dir: &std::path::Path) -> (std::path::PathBuf, Vec<Bundle>, Vec<(FieldPath, Value)>) {
    let path = dir.join("clean.redb");
    let s = Store::open(&path).unwrap();
    s.add_workspace(&WorkspaceInfo::new(
        test_workspace(),
        "t",
        WorkspaceKind::Show,
    ))
    .unwrap();
    let ws = test_workspace().workspace_id();
    let mut all = Vec::new();
    for seed in 1..=2 {
        let (_, b) = chain(seed, 30);
        s.commit_batch(&ws, b.clone(), "peer").unwrap();
        all.extend(b);
    }
    let fields = s
        .fields(&ws)
        .unwrap()
        .into_iter()
        .map(|(p, _)| {
            let v = s.value(&ws, &p).unwrap().unwrap();
            (p, v)
        })
        .collect();
    drop(s);
    (path, all, fields)
}

#[test]
fn byte_flips_never_yield_a_wrong_value() {
    let dir = tempfile::tempdir().unwrap();
    let (clean, bundles, fields) = fixture(dir.path());
    let image = std::fs::read(&clean).unwrap();
    let ws = test_workspace().workspace_id();
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let (mut refused, mut detected, mut harmless) = (0, 0, 0);
    for trial in 0..120 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let at = (rng % image.len() as u64) as usize;
        let mut img = image.clone();
        img[at] ^= 1 << (rng >> 61);
        let path = dir.path().join(format!("t{trial}.redb"));
        std::fs::write(&path, &img).unwrap();
        let mut store = match Store::open(&path) {
            Ok(s) => s,
            Err(_) => {
                refused += 1;
                continue;
            }
        };
        let mut missing = false;
        let mut errors = false;
        for b in &bundles {
            match store.bundle(&ws, &b.body().author, b.body().seq) {
                Ok(Some(got)) => assert_eq!(&got, b, "trial {trial}: wrong bundle served"),
                Ok(None) => missing = true,
                Err(ReadError::Corrupt(_)) | Err(_) => errors = true,
            }
        }
        for (p, v) in &fields {
            match store.value(&ws, p) {
                Ok(Some(got)) => assert_eq!(&got, v, "trial {trial}: wrong value at {p}"),
                Ok(None) => missing = true,
                Err(_) => errors = true,
            }
        }
        if missing {
            let scrub_found = store.scrub().map(|r| !r.is_empty()).unwrap_or(true);
            let integrity_found = !matches!(store.check_integrity(), Ok(true));
            assert!(
                scrub_found || integrity_found,
                "trial {trial}: a row vanished and nothing reported damage"
            );
        }
        if missing || errors {
            detected += 1;
        } else {
            harmless += 1;
        }
    }
    eprintln!("refused to open {refused}, detected {detected}, no effect {harmless}");
    assert!(refused + detected > 0, "some flips must hit live data");
}
