//! The receiving device's disk fills up in the middle of a sync: its data
//! dir is on a 24 MiB file system of the test's own, and a 40 MiB asset is
//! coming. The node must say that the disk is full, not blame the member
//! whose bytes are fine, keep answering reads of what it holds, and once
//! space is freed finish the sync by itself, without a restart.

use std::time::Duration;

use troupe_tests::tmpfs::Tmpfs;
use troupe_tests::{Node, loopback, troupe_json as troupe, wait_for};

const DEADLINE: Duration = Duration::from_secs(120);
const DISK_MIB: u64 = 24;
const ASSET: usize = 40 << 20;

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_blames_nobody_keeps_reads_working_and_the_sync_ends_once_space_is_freed()
-> anyhow::Result<()> {
    let disk = match Tmpfs::mount(DISK_MIB)? {
        Ok(d) => d,
        Err(skip) => {
            eprintln!("skipped: {}", skip.0);
            return Ok(());
        }
    };
    let tmp = tempfile::tempdir()?;
    let (a_dir, b_dir) = (tmp.path().join("a"), disk.path().join("b"));
    troupe(&a_dir, &["init", "--name", "Alex"])?;
    troupe(&b_dir, &["init", "--name", "Sam"])?;
    troupe(&a_dir, &["workspace", "create", "Hamlet"])?;
    let invite = troupe(&a_dir, &["workspace", "invite", "Hamlet"])?["invite"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    troupe(&b_dir, &["workspace", "join", &invite])?;
    troupe(
        &a_dir,
        &["set", "Hamlet", "contacts.person/jane/phone", "555-0100"],
    )?;
    let original = troupe_protocol::testing::noise(ASSET, 0x5eed_f00d);
    let file = tmp.path().join("score.wav");
    std::fs::write(&file, &original)?;
    let hash = troupe(
        &a_dir,
        &["assets", "add", "Hamlet", file.to_str().unwrap_or_default()],
    )?["asset"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    let a = Node::start_in("a", None, &a_dir, &loopback(None))?;
    let status = a.ready().await?;
    let a_addr = format!(
        "{}/p2p/{}",
        status["listen_addrs"][0].as_str().unwrap_or_default(),
        status["peer_id"].as_str().unwrap_or_default()
    );
    let b = Node::start_in("b", None, &b_dir, &loopback(Some(&a_addr)))?;
    b.ready().await?;

    wait_for("b to say that its disk is full", DEADLINE, || async {
        let log = b.log();
        if log.contains("the disk holding") && log.contains("is full") {
            Ok(())
        } else {
            Err("not yet")
        }
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\nlog of b:\n{}", b.log()))?;
    let log = b.log();
    assert!(
        !log.contains("sent something invalid"),
        "a full disk is not the sender's fault:\n{log}"
    );
    // What b holds can still be read, and its status names the failure.
    let got = b
        .cli_words(&["get", "Hamlet", "contacts.person/jane/phone"])
        .await?;
    assert!(got.contains("555-0100"), "b still reads its fields: {got}");
    let s = b.cli_json(&["status"]).await?;
    assert!(
        s["sync"]["store_reopened"].as_u64().unwrap_or(0) >= 1,
        "the status says the store was opened again: {s}"
    );
    assert!(
        s["sync"]["store_failure"]
            .as_str()
            .is_some_and(|f| f.contains("is full")),
        "the status says why: {s}"
    );

    // Room again: the sync finishes by itself, the asset arrives whole.
    disk.resize(256)?;
    let out = tmp.path().join("out.wav");
    wait_for("the asset to arrive on b", DEADLINE, || async {
        b.cli_json(&[
            "assets",
            "get",
            "Hamlet",
            &hash,
            out.to_str().unwrap_or_default(),
        ])
        .await
        .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\nlog of b:\n{}", b.log()))?;
    assert!(
        std::fs::read(&out)? == original,
        "the asset arrived byte for byte"
    );
    let log = b.log();
    assert!(
        !log.contains("sent something invalid"),
        "nobody was blamed:\n{log}"
    );
    let a_log = a.log();
    assert!(
        !a_log.contains("sent something invalid"),
        "a was not told anything bad either:\n{a_log}"
    );
    drop(b);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_on_a_full_disk_is_refused_in_words_and_the_node_takes_writes_again_once_space_is_freed()
-> anyhow::Result<()> {
    let disk = match Tmpfs::mount(3)? {
        Ok(d) => d,
        Err(skip) => {
            eprintln!("skipped: {}", skip.0);
            return Ok(());
        }
    };
    let dir = disk.path().join("c");
    troupe(&dir, &["init", "--name", "Casey"])?;
    troupe(&dir, &["workspace", "create", "Hamlet"])?;
    let c = Node::start_in("c", None, &dir, &loopback(None))?;
    c.ready().await?;
    let notes = |i: usize| format!("{i} {}", "rehearsal note ".repeat(3_000));
    let field = |i: usize| format!("contacts.person/p{i}/notes");

    // Long notes until the disk is full.
    let mut refused = None;
    for i in 0..200 {
        let out = c.cli(&["set", "Hamlet", &field(i), &notes(i)]).await?;
        if !out.status.success() {
            refused = Some((i, String::from_utf8_lossy(&out.stderr).into_owned()));
            break;
        }
    }
    let (i, said) = refused.ok_or_else(|| anyhow::anyhow!("the disk never filled up"))?;
    assert!(i > 0, "some notes fit first");
    assert!(
        said.contains("No space left on device") && said.contains("Free some space"),
        "the refusal says the disk is full and what to do: {said}"
    );
    // The node is up and says why (once its storage thread has dealt with
    // the failure, just after the answer).
    wait_for("the status to say why", DEADLINE, || async {
        let s = c.cli_json(&["status"]).await.map_err(|e| e.to_string())?;
        match s["sync"]["store_failure"].as_str() {
            Some(f) if f.contains("is full") => Ok(()),
            _ => Err(s.to_string()),
        }
    })
    .await?;

    // Room again: writes are taken without a restart; the refused one was
    // not applied, and every one answered before is there.
    disk.resize(64)?;
    wait_for("a write to be taken again", DEADLINE, || async {
        c.cli_json(&["set", "Hamlet", &field(i + 1), "after"])
            .await
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\nlog of c:\n{}", c.log()))?;
    let refused_field = c.cli_words(&["get", "Hamlet", &field(i)]).await?;
    assert!(
        refused_field.contains("is not set"),
        "a write answered as refused was not applied: {refused_field}"
    );
    for j in [0, i - 1] {
        let kept = c.cli_json(&["get", "Hamlet", &field(j)]).await?;
        assert!(
            kept.to_string().contains(&notes(j)[..20]),
            "a write answered before the disk filled up is kept: {j}"
        );
    }
    drop(c);
    Ok(())
}
