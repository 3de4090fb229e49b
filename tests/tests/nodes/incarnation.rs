//! Never reuse a sequence number: Alex's laptop is restored from last week's
//! backup and Alex edits before it meets anyone. Without a new incarnation
//! that edit would reuse the seq of an edit Jordan already holds (a fork both
//! must quarantine). The restored store is noticed at open, the device
//! continues under a new actor key linked to the old one, and everything
//! converges with nothing in quarantine. Two real nodes on loopback.

use std::path::Path;
use std::time::Duration;

use serde_json::Value as Json;
use troupe_tests::{Node, loopback, wait_for};

use super::lifecycle::{address, ok};

const DEADLINE: Duration = Duration::from_secs(60);

async fn wait_value(dir: &Path, path: &str, want: &str) {
    wait_for(&format!("{path} = {want}"), DEADLINE, || async {
        let v = ok(dir, &["get", "Hamlet", path]).await;
        if v["value"] == want { Ok(()) } else { Err(v) }
    })
    .await
    .unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

fn authors(history: &Json) -> Vec<String> {
    history
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["author"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restored_store_continues_as_a_new_incarnation_without_forks() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let (alex, jordan, backup) = (
        tmp.path().join("alex"),
        tmp.path().join("jordan"),
        tmp.path().join("backup"),
    );
    ok(&alex, &["init", "--name", "Alex"]).await;
    ok(&jordan, &["init", "--name", "Jordan"]).await;
    ok(&alex, &["workspace", "create", "Hamlet"]).await;
    ok(&alex, &["set", "Hamlet", "cue.cue/q1/label", "Preset"]).await;
    let inv = ok(&alex, &["workspace", "invite", "Hamlet"]).await;
    ok(
        &jordan,
        &["workspace", "join", inv["invite"].as_str().unwrap()],
    )
    .await;
    // Last week's backup of Alex's laptop.
    copy_dir(&alex, &backup);
    let old_actor = authors(&ok(&alex, &["history", "Hamlet"]).await)[0].clone();

    // Alex edits after the backup; Jordan receives it.
    let a = Node::start_in("alex", None, &alex, &loopback(None))?;
    let a_addr = address(&a).await;
    let j = Node::start_in("jordan", None, &jordan, &loopback(Some(&a_addr)))?;
    j.ready().await?;
    ok(&alex, &["set", "Hamlet", "cue.cue/q2/label", "House out"]).await;
    wait_value(&jordan, "cue.cue/q2/label", "House out").await;
    a.stop().await?;
    j.stop().await?;

    // The laptop is restored from the backup, and Alex edits before any sync.
    std::fs::remove_dir_all(&alex)?;
    copy_dir(&backup, &alex);
    ok(&alex, &["set", "Hamlet", "cue.cue/q3/label", "Blackout"]).await;
    let history = authors(&ok(&alex, &["history", "Hamlet"]).await);
    let new_actor = history[0].clone();
    assert_ne!(new_actor, old_actor, "the edit is signed by a new actor");
    let retired: Vec<_> = std::fs::read_dir(&alex)?
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("actor.key.retired-")
        })
        .collect();
    assert_eq!(retired.len(), 1, "the old key is kept");
    let link = ok(
        &alex,
        &[
            "get",
            "Hamlet",
            &format!("troupe.member/{new_actor}/previous_actor"),
        ],
    )
    .await;
    assert_eq!(link["value"], old_actor.as_str());

    // Both meet again: everything converges, nothing is a fork.
    let a = Node::start_in("alex", None, &alex, &loopback(None))?;
    let a_addr = address(&a).await;
    let j = Node::start_in("jordan", None, &jordan, &loopback(Some(&a_addr)))?;
    j.ready().await?;
    wait_value(&jordan, "cue.cue/q3/label", "Blackout").await;
    wait_value(&alex, "cue.cue/q2/label", "House out").await;
    for dir in [&alex, &jordan] {
        let q = ok(dir, &["quarantine", "list"]).await;
        assert_eq!(q.as_array().map_or(0, Vec::len), 0, "quarantine: {q}");
        let c = ok(dir, &["conflicts", "list", "Hamlet"]).await;
        assert_eq!(c.as_array().map_or(0, Vec::len), 0, "conflicts: {c}");
    }
    // The history still reads "Alex" for both incarnations.
    let h = ok(&jordan, &["history", "Hamlet"]).await;
    for e in h.as_array().unwrap() {
        if e["author"] == new_actor.as_str() || e["author"] == old_actor.as_str() {
            assert_eq!(e["author_name"], "Alex", "{e}");
        }
    }
    // A later start of the same, unmoved data dir keeps the new key.
    a.stop().await?;
    let a = Node::start_in("alex", None, &alex, &loopback(None))?;
    a.ready().await?;
    ok(&alex, &["set", "Hamlet", "cue.cue/q4/label", "Bows"]).await;
    assert_eq!(
        authors(&ok(&alex, &["history", "Hamlet"]).await)[0],
        new_actor
    );
    a.stop().await?;
    j.stop().await?;
    Ok(())
}
