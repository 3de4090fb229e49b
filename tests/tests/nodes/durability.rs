//! An answered write is on disk: `set`s through a running node's local API,
//! many at once (group commits), then `kill -9` while writes are in flight.
//! Every write the node answered must be there after the restart.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use troupe_node::local_api::ApiClient;
use troupe_tests::{Node, loopback};

use super::lifecycle::ok;

/// Concurrent writers: enough that the node groups their writes.
const WRITERS: usize = 8;
/// Answered writes to wait for before the kill.
const ANSWERED: usize = 2_000;
const DEADLINE: Duration = Duration::from_secs(60);

fn path(writer: usize, i: usize) -> String {
    format!("contacts.person/w{writer}n{i}/phone")
}

async fn api(dir: &Path) -> anyhow::Result<ApiClient> {
    ApiClient::detect(dir)
        .await
        .ok_or_else(|| anyhow::anyhow!("no local API answers in {}", dir.display()))
}

#[tokio::test(flavor = "multi_thread")]
async fn every_answered_set_survives_a_killed_node() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("data");
    ok(&dir, &["init", "--name", "Stage"]).await;
    ok(&dir, &["workspace", "create", "show"]).await;

    let node = Node::start_in("a", None, &dir, &loopback(None))?;
    node.ready().await?;
    let client = api(&dir).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let so_far = Arc::new(AtomicUsize::new(0));
    let reached = Arc::new(tokio::sync::Notify::new());
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (client, stop, so_far, reached) = (
            client.clone(),
            stop.clone(),
            so_far.clone(),
            reached.clone(),
        );
        writers.push(tokio::spawn(async move {
            // Each writer's own fields, in order: its first `answered` were.
            let mut answered = 0;
            while !stop.load(Ordering::Relaxed) {
                let i = answered;
                let set = json!({"command": "set", "workspace": "show",
                    "path": path(w, i), "value": format!("{w}-{i}")});
                if client.post("/v1/command", &set).await.is_err() {
                    break;
                }
                answered += 1;
                if so_far.fetch_add(1, Ordering::Relaxed) + 1 == ANSWERED {
                    reached.notify_one();
                }
            }
            answered
        }));
    }
    // Kill the moment enough writes were answered, with the writers going
    // on: the last answers have just left, and more writes are waiting.
    if tokio::time::timeout(DEADLINE, reached.notified())
        .await
        .is_err()
    {
        anyhow::bail!(
            "the writers got {} answers in {DEADLINE:?}\nlog:\n{}",
            so_far.load(Ordering::Relaxed),
            node.log()
        );
    }
    drop(node); // SIGKILL
    stop.store(true, Ordering::Relaxed);
    let mut answered = Vec::new();
    for w in writers {
        answered.push(w.await?);
    }
    let total: usize = answered.iter().sum();
    eprintln!("killed after {total} answered sets ({answered:?})");

    let again = Node::start_in("a again", None, &dir, &loopback(None))?;
    again.ready().await?;
    let client = api(&dir).await?;
    for (w, &n) in answered.iter().enumerate() {
        for i in 0..n {
            let got = client
                .post(
                    "/v1/command",
                    &json!({"command": "get", "workspace": "show", "path": path(w, i)}),
                )
                .await?;
            assert_eq!(
                got["value"],
                json!(format!("{w}-{i}")),
                "{} was answered before the kill but is not there after it",
                path(w, i)
            );
        }
    }
    assert!(again.stop().await?.success());
    Ok(())
}
