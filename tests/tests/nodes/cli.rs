//! The `troupe` command's contract for commands that cannot run in the
//! current situation or are given something wrong: each says what happened, what was
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
fn store_commands_on_a_device_not_set_up_say_how_to_set_it_up() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["set", "hamlet", "contacts.person/jane/name", "Jane"][..],
        &["get", "hamlet", "contacts.person/jane/name"],
        &["workspace", "list"],
        &["history", "hamlet"],
    ] {
        assert_report(&troupe(dir.path(), args), 2, "troupe init");
    }
}

#[test]
fn store_commands_without_a_daemon_work_on_the_store_and_explain_mistakes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    assert!(troupe(&data, &["init", "--name", "Alex"]).status.success());
    let created = troupe(&data, &["--json", "workspace", "create", "Hamlet"]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let set = troupe(
        &data,
        &["set", "hamlet", "contacts.person/jane/name", "Jane Doe"],
    );
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    let got: serde_json::Value = serde_json::from_slice(
        &troupe(
            &data,
            &["--json", "get", "Hamlet", "contacts.person/jane/name"],
        )
        .stdout,
    )
    .unwrap();
    assert_eq!(got["value"], "Jane Doe");
    assert_eq!(got["conflict"], false);
    assert_eq!(got["values"][0]["author_name"], "Alex");
    // Mistakes name what to do.
    assert_report(
        &troupe(&data, &["set", "macbeth", "contacts.person/jane/name", "x"]),
        2,
        "troupe workspace list",
    );
    assert_report(
        &troupe(&data, &["set", "hamlet", "Contacts/jane", "x"]),
        2,
        "TYPE/ID/FIELD",
    );
    assert_report(
        &troupe(&data, &["workspace", "join", "troupe1-00ff"]),
        2,
        "invite",
    );
    assert_report(
        &troupe(&data, &["workspace", "create", "x", "--kind", "tour"]),
        2,
        "not a workspace kind",
    );
    let missing = dir.path().join("nope.png");
    assert_report(
        &troupe(
            &data,
            &["assets", "add", "hamlet", missing.to_str().unwrap()],
        ),
        1,
        "nope.png",
    );
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
