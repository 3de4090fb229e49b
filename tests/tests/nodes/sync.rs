//! Data crosses between real processes: an edit on one node reaches the
//! others (directly or through a middle node), and concurrent edits of one
//! field show the same conflict everywhere. Data is written into a stopped
//! node's store as that node's own edits and read back after a node stops
//! (the store-backed CLI commands are not there yet); the nodes themselves
//! only ever talk over loopback with `--no-mdns`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use troupe_protocol::workspace::WorkspaceSecret;
use troupe_tests::store::{
    corrupt_bundle, field_values, rebuild_differences, seed_history, write_fields,
};
use troupe_tests::{Node, loopback, wait_for};

const SYNC_DEADLINE: Duration = Duration::from_secs(60);

fn secret(seed: u8) -> WorkspaceSecret {
    WorkspaceSecret([seed; 32])
}

/// A data dir in its own temp dir (kept alive by the caller).
fn data_dir() -> anyhow::Result<(tempfile::TempDir, PathBuf)> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("data");
    Ok((tmp, dir))
}

/// Starts a node on `dir` and returns it with its dial address `ADDR/p2p/PEER`.
async fn start(name: &str, dir: &Path, peer: Option<&str>) -> anyhow::Result<(Node, String)> {
    let node = Node::start_in(name, None, dir, &loopback(peer))?;
    let status = node.ready().await?;
    let addr = format!(
        "{}/p2p/{}",
        status["listen_addrs"][0].as_str().unwrap_or_default(),
        status["peer_id"].as_str().unwrap_or_default()
    );
    Ok((node, addr))
}

/// Waits until `node` has committed at least `n` bundles from peers.
async fn wait_committed(node: &Node, n: u64, logs: &[&Node]) -> anyhow::Result<()> {
    wait_for(
        &format!("{} to commit {n} bundles from peers", node.name),
        SYNC_DEADLINE,
        || async {
            let s = node
                .cli_json(&["status"])
                .await
                .map_err(|e| e.to_string())?;
            let got = s["sync"]["bundles_committed"].as_u64().unwrap_or(0);
            if got >= n {
                Ok(())
            } else {
                Err(format!("{}", s["sync"]))
            }
        },
    )
    .await
    .map_err(|e| {
        let mut msg = e.to_string();
        for l in logs {
            msg.push_str(&format!("\nlog of {}:\n{}", l.name, l.log()));
        }
        anyhow::anyhow!(msg)
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edit_on_a_appears_on_b() -> anyhow::Result<()> {
    let ws = secret(61);
    let (_ta, a_dir) = data_dir()?;
    let (_tb, b_dir) = data_dir()?;
    write_fields(&a_dir, &ws, &[("cue/q1/label", "Blackout")])?;
    write_fields(&b_dir, &ws, &[])?;

    let (a, a_addr) = start("a", &a_dir, None).await?;
    let t = Instant::now();
    let (b, _) = start("b", &b_dir, Some(&a_addr)).await?;
    wait_committed(&b, 1, &[&a, &b]).await?;
    eprintln!("two nodes: one edit converged in {:?}", t.elapsed());

    assert!(b.stop().await?.success());
    assert!(a.stop().await?.success());
    assert_eq!(field_values(&b_dir, &ws, "cue/q1/label")?, ["Blackout"]);
    assert_eq!(field_values(&a_dir, &ws, "cue/q1/label")?, ["Blackout"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_edits_give_the_same_conflict_on_both() -> anyhow::Result<()> {
    let ws = secret(62);
    let (_ta, a_dir) = data_dir()?;
    let (_tb, b_dir) = data_dir()?;
    // Both edit the same field while apart.
    write_fields(&a_dir, &ws, &[("cue/q7/colour", "red")])?;
    write_fields(&b_dir, &ws, &[("cue/q7/colour", "blue")])?;

    let (a, a_addr) = start("a", &a_dir, None).await?;
    let t = Instant::now();
    let (b, _) = start("b", &b_dir, Some(&a_addr)).await?;
    wait_committed(&b, 1, &[&a, &b]).await?;
    wait_committed(&a, 1, &[&a, &b]).await?;
    eprintln!("two nodes: a conflict converged in {:?}", t.elapsed());

    assert!(b.stop().await?.success());
    assert!(a.stop().await?.success());
    let on_a = field_values(&a_dir, &ws, "cue/q7/colour")?;
    let on_b = field_values(&b_dir, &ws, "cue/q7/colour")?;
    assert_eq!(on_a, ["blue", "red"], "both values are kept as a conflict");
    assert_eq!(on_a, on_b, "both nodes show the same conflict");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edit_crosses_a_chain_of_three_by_address() -> anyhow::Result<()> {
    let ws = secret(63);
    let (_ta, a_dir) = data_dir()?;
    let (_tb, b_dir) = data_dir()?;
    let (_tc, c_dir) = data_dir()?;
    write_fields(&a_dir, &ws, &[("cue/q3/label", "House lights")])?;
    write_fields(&b_dir, &ws, &[])?;
    write_fields(&c_dir, &ws, &[])?;

    let (a, a_addr) = start("a", &a_dir, None).await?;
    let a_peer = a_addr.rsplit('/').next().unwrap_or_default().to_owned();
    let t = Instant::now();
    let (b, b_addr) = start("b", &b_dir, Some(&a_addr)).await?;
    let (c, _) = start("c", &c_dir, Some(&b_addr)).await?;
    let c_peer = c.cli_json(&["status"]).await?["peer_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    wait_committed(&c, 1, &[&a, &b, &c]).await?;
    eprintln!("chain a-b-c: one edit converged in {:?}", t.elapsed());

    assert!(
        !c.connected_peers().await?.contains(&a_peer),
        "c only knows b's address"
    );
    assert!(!a.connected_peers().await?.contains(&c_peer));
    for n in [&c, &b, &a] {
        assert!(n.stop().await?.success());
    }
    assert_eq!(field_values(&c_dir, &ws, "cue/q3/label")?, ["House lights"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupted_bundle_is_quarantined_and_repaired_from_a_peer() -> anyhow::Result<()> {
    let ws = secret(64);
    let (_ta, a_dir) = data_dir()?;
    let (_tc, c_dir) = data_dir()?;
    write_fields(&a_dir, &ws, &[("cue/q9/label", "Curtain")])?;
    write_fields(&c_dir, &ws, &[])?;
    // C gets A's data, then both stop.
    {
        let (a, a_addr) = start("a", &a_dir, None).await?;
        let (c, _) = start("c", &c_dir, Some(&a_addr)).await?;
        wait_committed(&c, 1, &[&a, &c]).await?;
        assert!(c.stop().await?.success());
        assert!(a.stop().await?.success());
    }
    corrupt_bundle(&a_dir, &ws, 1)?;

    let (c, c_addr) = start("c", &c_dir, None).await?;
    let t = Instant::now();
    let (a, _) = start("a", &a_dir, Some(&c_addr)).await?;
    wait_committed(&a, 1, &[&a, &c]).await?;
    eprintln!("repair of one corrupted bundle took {:?}", t.elapsed());
    let log = a.log();
    assert!(
        log.contains("salvaged") || log.contains("quarantin"),
        "a says it set the damaged copy aside:\n{log}"
    );
    eprintln!(
        "a's damaged copy was handled by {}",
        if log.contains("salvaged") {
            "salvage at open"
        } else {
            "quarantine"
        }
    );
    assert!(a.stop().await?.success());
    assert!(c.stop().await?.success());
    assert_eq!(field_values(&a_dir, &ws, "cue/q9/label")?, ["Curtain"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_killed_mid_sync_resumes_and_converges() -> anyhow::Result<()> {
    const N: u64 = 20_000;
    let ws = secret(65);
    let (_ta, a_dir) = data_dir()?;
    let (_tb, b_dir) = data_dir()?;
    seed_history(&a_dir, &ws, N)?;
    write_fields(&b_dir, &ws, &[])?;

    let (a, a_addr) = start("a", &a_dir, None).await?;
    let t = Instant::now();
    let (b, _) = start("b", &b_dir, Some(&a_addr)).await?;
    wait_committed(&b, 1, &[&a, &b]).await?;
    let before = b.cli_json(&["status"]).await?["sync"]["bundles_committed"]
        .as_u64()
        .unwrap_or(0);
    drop(b); // SIGKILL
    eprintln!("b killed after committing about {before} of {N} bundles");
    let sent_before = a.cli_json(&["status"]).await?["sync"]["bundles_sent"]
        .as_u64()
        .unwrap_or(0);

    let (b2, _) = start("b again", &b_dir, Some(&a_addr)).await?;
    let last = format!("cue/bulk{}/label", N - 1);
    let a_peer = a_addr.rsplit('/').next().unwrap_or_default().to_owned();
    let ws_hex = ws.workspace_id().to_string();
    wait_for("b to be up to date with a", SYNC_DEADLINE * 3, || async {
        let s = b2.cli_json(&["status"]).await.map_err(|e| e.to_string())?;
        let list = &s["sync"]["up_to_date"][&ws_hex];
        let up = list.as_array().is_some_and(|l| {
            l.iter().any(|p| {
                p.as_str()
                    .is_some_and(|p| a_peer.contains(p) || p.contains(&a_peer))
            })
        });
        if up {
            Ok(())
        } else {
            Err(format!("{}", s["sync"]))
        }
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\nlog of a:\n{}", a.log()))?;
    eprintln!(
        "kill -9 mid-sync: {N} bundles converged in {:?}",
        t.elapsed()
    );
    let sent_total = a.cli_json(&["status"]).await?["sync"]["bundles_sent"]
        .as_u64()
        .unwrap_or(0);
    let resent = sent_total.saturating_sub(N);
    eprintln!(
        "a sent {sent_before} bundles before the kill, {sent_total} in all: {resent} sent twice"
    );
    // Resumed, not restarted: only what was in flight at the kill is sent
    // again (at most the batches the engine keeps in flight, 256 bundles each).
    use troupe_protocol::sync::limits::{BATCH_BUNDLES, MAX_IN_FLIGHT_BATCHES};
    assert!(
        resent <= (MAX_IN_FLIGHT_BATCHES * BATCH_BUNDLES) as u64,
        "b resumed instead of starting over: {resent} re-sent"
    );
    assert!(b2.stop().await?.success());
    assert!(a.stop().await?.success());
    assert_eq!(
        field_values(&b_dir, &ws, &last)?,
        [format!("bulk {}", N - 1)]
    );
    assert_eq!(rebuild_differences(&b_dir)?, 0, "b's store verifies");
    Ok(())
}
