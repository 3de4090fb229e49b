//! A 160 MiB asset crosses between two `troupe up` processes on loopback: the
//! receiver is killed (SIGKILL) in the middle of the transfer, restarted, and
//! resumes from the bytes it already held; the file it serves afterwards is
//! byte-for-byte the original.

use std::time::{Duration, Instant};

use troupe_tests::{Node, loopback, troupe_bin, troupe_json as troupe, wait_for};

const DEADLINE: Duration = Duration::from_secs(120);
const SIZE: usize = 160 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread")]
async fn a_large_asset_survives_a_killed_receiver_and_arrives_verified() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let (a_dir, b_dir) = (tmp.path().join("a"), tmp.path().join("b"));
    troupe(&a_dir, &["init", "--name", "Alex"])?;
    troupe(&b_dir, &["init", "--name", "Sam"])?;
    troupe(&a_dir, &["workspace", "create", "Hamlet"])?;
    let invite = troupe(&a_dir, &["workspace", "invite", "Hamlet"])?["invite"]
        .as_str()
        .unwrap()
        .to_owned();
    troupe(&b_dir, &["workspace", "join", &invite])?;

    // Incompressible bytes, like a photo or a recording.
    let original = troupe_protocol::testing::noise(SIZE, 0x9e37_79b9_7f4a_7c15);
    let file = tmp.path().join("rehearsal.wav");
    std::fs::write(&file, &original)?;

    let a = Node::start_in("a", None, &a_dir, &loopback(None))?;
    let status = a.ready().await?;
    let a_addr = format!(
        "{}/p2p/{}",
        status["listen_addrs"][0].as_str().unwrap(),
        status["peer_id"].as_str().unwrap()
    );
    let added = a
        .cli_json(&["assets", "add", "Hamlet", file.to_str().unwrap()])
        .await?;
    let hash = added["asset"].as_str().unwrap().to_owned();

    let sent = |s: &serde_json::Value| s["sync"]["bytes_sent"].as_u64().unwrap_or(0);
    let base = sent(&a.cli_json(&["status"]).await?);
    let t = Instant::now();
    let b = Node::start_in("b", None, &b_dir, &loopback(Some(&a_addr)))?;
    // Kill B once it must hold part of the file on disk, with a good part
    // of the file still to come (so the kill lands mid-transfer). A sends
    // at most one window of chunks more than B has received, and while
    // bytes keep arriving B flushes them at the latest every
    // `blob_flush::MAX_BYTES` (64 MiB), so a window, that much and a fifth
    // more sent leaves part of the file durable on B.
    let window = (troupe_protocol::sync::limits::BLOB_WINDOW
        * troupe_protocol::sync::limits::BLOB_CHUNK) as u64;
    let flushed_by = troupe_node::blob_flush::MAX_BYTES;
    loop {
        let now = sent(&a.cli_json(&["status"]).await?);
        if now > base + window + flushed_by + (SIZE as u64) / 5 {
            break;
        }
        anyhow::ensure!(
            t.elapsed() < DEADLINE,
            "transfer never started:\n{}",
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    drop(b); // SIGKILL
    let at_kill = sent(&a.cli_json(&["status"]).await?);
    let out = tmp.path().join("out.wav");
    let early = std::process::Command::new(troupe_bin())
        .arg("--data-dir")
        .arg(&b_dir)
        .args(["assets", "get", "Hamlet", &hash, out.to_str().unwrap()])
        .output()?;
    assert!(
        !early.status.success(),
        "a half-received asset must not be readable"
    );

    let b = Node::start_in("b", None, &b_dir, &loopback(Some(&a_addr)))?;
    b.ready().await?;
    wait_for("the asset to arrive on b", DEADLINE, || async {
        b.cli_json(&["assets", "get", "Hamlet", &hash, out.to_str().unwrap()])
            .await
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\nlog of b:\n{}", b.log()))?;
    eprintln!(
        "{} MiB asset: killed and restarted, complete {:?} after the first start",
        SIZE >> 20,
        t.elapsed()
    );
    let got = std::fs::read(&out)?;
    assert!(
        got == original,
        "the received asset differs from the original"
    );
    let after = sent(&a.cli_json(&["status"]).await?) - at_kill;
    eprintln!("bytes sent by a after the restart: {after}");
    assert!(
        after < SIZE as u64,
        "the restarted receiver resumed instead of starting over ({after} bytes re-sent)"
    );
    Ok(())
}
