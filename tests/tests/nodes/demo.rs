//! `troupe demo`, the README's first command: three real nodes on loopback,
//! an offline edit, a conflict described in words on every node, convergence,
//! a resolution, and nothing left behind.

use std::process::Command;

use troupe_tests::troupe_bin;

#[test]
fn the_demo_shows_a_conflict_in_words_converges_and_cleans_up() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(troupe_bin())
        .arg("demo")
        // The demo's temporary directory goes here, so the test can check it is gone.
        .env("TMPDIR", tmp.path())
        .output()
        .expect("run troupe demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let conflict = "Contact 'Jane Doe' was edited by Sam (sound) and Alex (stage manager): phone differs: '555-0142' / '555-0199'";
    for node in ["Alex", "Jordan", "Sam"] {
        assert!(
            stdout.contains(&format!("On {node}'s node: {conflict}")),
            "{node} must show the conflict in words:\n{stdout}"
        );
    }
    assert!(
        stdout.contains("phone: 555-0142   (conflict: 555-0142 / 555-0199)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Every node shows 555-0199 and no conflict."),
        "{stdout}"
    );
    assert!(stdout.contains("removed their temporary data"), "{stdout}");
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "the demo left files behind: {left:?}");
}
