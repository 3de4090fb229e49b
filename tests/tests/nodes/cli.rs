//! The `troupe` command's contract for commands this build cannot do yet or
//! cannot do in the current situation: each says what happened, what was
//! affected and what to do, and exits non-zero with its documented code —
//! never a silent success. Also pins `init` (key created once, owner-only)
//! and the one-daemon-per-data-dir lock.

use std::process::Output;

use troupe_tests::{Node, troupe_bin, wait_for};

fn troupe(data_dir: &std::path::Path, args: &[&str]) -> Output {
    std::process::Command::new(troupe_bin())
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .output()
        .expect("run troupe")
}

fn assert_report(out: &Output, code: i32, contains: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    for label in [
        "What happened: ",
        "What was affected: ",
        "What you can do: ",
    ] {
        assert!(err.contains(label), "missing {label:?} in: {err}");
    }
    assert!(err.contains(contains), "expected {contains:?} in: {err}");
}

#[test]
fn init_creates_one_private_key_and_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = troupe(&data, &["--json", "init"]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let first: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(first["created"], true);
    let again: serde_json::Value =
        serde_json::from_slice(&troupe(&data, &["--json", "init"]).stdout).unwrap();
    assert_eq!(again["created"], false);
    assert_eq!(
        again["actor_id"], first["actor_id"],
        "a second init keeps the device key"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("actor.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn store_commands_say_they_are_not_available_yet() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["set", "hamlet", "contacts.person/jane/name", "Jane"][..],
        &["get", "hamlet", "contacts.person/jane/name"],
        &["workspace", "list"],
        &["assets", "add", "hamlet", "logo.png"],
        &["history", "hamlet"],
        &["demo"],
    ] {
        assert_report(
            &troupe(dir.path(), args),
            3,
            "not available in this build yet",
        );
    }
}

#[test]
fn read_commands_without_a_running_node_say_how_to_start_one() {
    let dir = tempfile::tempdir().unwrap();
    assert_report(&troupe(dir.path(), &["status"]), 4, "troupe up");
    assert_report(&troupe(dir.path(), &["peers"]), 4, "troupe up");
}

#[test]
fn contradictory_or_malformed_flags_are_refused_before_starting() {
    let dir = tempfile::tempdir().unwrap();
    assert_report(
        &troupe(dir.path(), &["up", "--no-mdns", "--interface", "lo"]),
        2,
        "--no-mdns",
    );
    assert_report(
        &troupe(dir.path(), &["up", "--no-mdns", "--peer", "10.0.0.1:4001"]),
        2,
        "--peer",
    );
    assert!(
        !dir.path().join("actor.key").exists(),
        "nothing was started"
    );
    let out = troupe(
        dir.path(),
        &[
            "up",
            "--interface",
            "nosuch0",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
        ],
    );
    assert_report(&out, 1, "no network interface named \"nosuch0\"");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_node_on_the_same_data_dir_is_refused() -> anyhow::Result<()> {
    let node = Node::start(
        "a",
        None,
        &[
            "--no-mdns".into(),
            "--listen".into(),
            "/ip4/127.0.0.1/tcp/0".into(),
        ],
    )?;
    node.ready().await?;
    let out = troupe(
        &node.data_dir,
        &["up", "--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"],
    );
    assert_report(&out, 1, "already running");
    // The first node is unaffected.
    wait_for(
        "the first node to still answer",
        troupe_tests::START_DEADLINE,
        || async { node.cli_json(&["status"]).await.map_err(|e| e.to_string()) },
    )
    .await?;
    assert!(node.stop().await?.success());
    Ok(())
}
