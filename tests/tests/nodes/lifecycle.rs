//! Workspaces as crews live them, through the `troupe` binary and three
//! real nodes on loopback (`--peer`, no mDNS): two shows and one person's
//! library with overlapping people. Alex is in "Hamlet" and has a library;
//! Jordan is in "Hamlet" and "Macbeth"; Sam only in "Macbeth". Each show's
//! data reaches only its members even though Jordan connects to both;
//! the same entity id means different things in each show; a library copy
//! carries provenance; an archive made on one node refuses writes on every
//! node after sync; templates and clones carry no history; leaving with
//! `--delete-data` removes the data.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use troupe_tests::{Node, loopback, troupe_bin, wait_for};

const DEADLINE: Duration = Duration::from_secs(60);
const JANE: &str = "contacts.person/jane/name";

pub(crate) async fn troupe(dir: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new(troupe_bin())
        .arg("--data-dir")
        .arg(dir)
        .arg("--json")
        .args(args)
        .output()
        .await
        .expect("run troupe")
}

/// Runs a CLI command on `dir` (through its node when one runs) and parses its JSON.
pub(crate) async fn ok(dir: &Path, args: &[&str]) -> serde_json::Value {
    let out = troupe(dir, args).await;
    assert!(
        out.status.success(),
        "troupe {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

async fn refused(dir: &Path, args: &[&str], contains: &str) {
    let out = troupe(dir, args).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "troupe {} succeeded", args.join(" "));
    for label in [
        "What happened: ",
        "What was affected: ",
        "What you can do: ",
    ] {
        assert!(err.contains(label), "missing {label:?} in: {err}");
    }
    assert!(err.contains(contains), "expected {contains:?} in: {err}");
}

fn names(list: &serde_json::Value) -> Vec<String> {
    let mut v: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

async fn value(dir: &Path, ws: &str, path: &str) -> Result<serde_json::Value, String> {
    let out = troupe(dir, &["get", ws, path]).await;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    Ok(v["value"].clone())
}

async fn wait_value(dir: &Path, ws: &str, path: &str, want: serde_json::Value) {
    wait_for(&format!("{ws} {path} = {want}"), DEADLINE, || {
        let want = want.clone();
        async move {
            let got = value(dir, ws, path).await?;
            if got == want {
                Ok(())
            } else {
                Err(got.to_string())
            }
        }
    })
    .await
    .unwrap();
}

/// The node's dial address, `ADDR/p2p/PEER`.
pub(crate) async fn address(node: &Node) -> String {
    let s = node.ready().await.unwrap();
    format!(
        "{}/p2p/{}",
        s["listen_addrs"][0].as_str().unwrap(),
        s["peer_id"].as_str().unwrap()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn two_shows_and_a_library_stay_apart_and_archive_templates_clone_and_leave_work()
-> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let (alex, jordan, sam) = (
        tmp.path().join("alex"),
        tmp.path().join("jordan"),
        tmp.path().join("sam"),
    );
    for (dir, name) in [(&alex, "Alex"), (&jordan, "Jordan"), (&sam, "Sam")] {
        ok(dir, &["init", "--name", name]).await;
    }
    ok(&alex, &["workspace", "create", "Hamlet"]).await;
    ok(
        &alex,
        &["workspace", "create", "Alex library", "--kind", "library"],
    )
    .await;
    // A library is for one person's devices: inviting needs --force.
    refused(&alex, &["workspace", "invite", "Alex library"], "--force").await;
    let lib_inv = ok(&alex, &["workspace", "invite", "Alex library", "--force"]).await;
    assert_eq!(lib_inv["kind"], "library");
    let hamlet = ok(
        &alex,
        &[
            "workspace",
            "invite",
            "Hamlet",
            "--peer",
            "/ip4/127.0.0.1/tcp/9",
        ],
    )
    .await;
    let joined = ok(
        &jordan,
        &["workspace", "join", hamlet["invite"].as_str().unwrap()],
    )
    .await;
    assert_eq!(joined["peers_remembered"][0], "/ip4/127.0.0.1/tcp/9");
    ok(&jordan, &["workspace", "create", "Macbeth"]).await;
    let macbeth = ok(&jordan, &["workspace", "invite", "Macbeth"]).await;
    ok(
        &sam,
        &["workspace", "join", macbeth["invite"].as_str().unwrap()],
    )
    .await;
    // The same entity id in two shows: two different people.
    ok(&alex, &["set", "Hamlet", JANE, "Jane (Hamlet)"]).await;
    ok(&jordan, &["set", "Macbeth", JANE, "Jane (Macbeth)"]).await;
    ok(
        &alex,
        &[
            "set",
            "Alex library",
            "lighting.fixture/par64/name",
            "PAR 64",
        ],
    )
    .await;

    let a = Node::start_in("alex", None, &alex, &loopback(None))?;
    let a_addr = address(&a).await;
    let j = Node::start_in("jordan", None, &jordan, &loopback(Some(&a_addr)))?;
    let j_addr = address(&j).await;
    let s = Node::start_in("sam", None, &sam, &loopback(Some(&j_addr)))?;
    s.ready().await?;

    wait_value(&jordan, "Hamlet", JANE, "Jane (Hamlet)".into()).await;
    wait_value(&sam, "Macbeth", JANE, "Jane (Macbeth)".into()).await;
    wait_value(&jordan, "Macbeth", JANE, "Jane (Macbeth)".into()).await;
    // Isolation: nobody holds a workspace they were not invited to.
    assert_eq!(
        names(&ok(&alex, &["workspace", "list"]).await),
        ["Alex library", "Hamlet"]
    );
    assert_eq!(
        names(&ok(&jordan, &["workspace", "list"]).await),
        ["Hamlet", "Macbeth"]
    );
    assert_eq!(names(&ok(&sam, &["workspace", "list"]).await), ["Macbeth"]);
    refused(&sam, &["get", "Hamlet", JANE], "workspace list").await;
    refused(&alex, &["get", "Macbeth", JANE], "workspace list").await;
    assert_eq!(value(&alex, "Hamlet", JANE).await.unwrap(), "Jane (Hamlet)");

    // Library → show: an independent copy that says where it came from.
    ok(
        &alex,
        &["copy", "Alex library", "lighting.fixture/par64", "Hamlet"],
    )
    .await;
    wait_value(
        &jordan,
        "Hamlet",
        "lighting.fixture/par64/copied_from",
        "Alex library/lighting.fixture/par64".into(),
    )
    .await;
    wait_value(
        &jordan,
        "Hamlet",
        "lighting.fixture/par64/name",
        "PAR 64".into(),
    )
    .await;
    refused(
        &alex,
        &["copy", "Alex library", "lighting.fixture/par64", "Hamlet"],
        "--as",
    )
    .await;

    // Workspace show: kind, retention, members, counts.
    ok(&alex, &["workspace", "retention", "Hamlet", "30"]).await;
    let shown = ok(&alex, &["workspace", "show", "Hamlet"]).await;
    assert_eq!(shown["kind"], "show");
    assert_eq!(shown["retention_days"], 30);
    assert_eq!(shown["archived"], false);
    assert_eq!(shown["members"], serde_json::json!(["Alex", "Jordan"]));
    assert_eq!(shown["entities"], 2);
    let lib = ok(&alex, &["workspace", "show", "Alex library"]).await;
    assert_eq!(lib["kind"], "library");
    assert_eq!(lib["retention_days"], 90);

    // Archive on Alex's node: read-only on Jordan's after sync, still readable.
    ok(&alex, &["workspace", "archive", "Hamlet"]).await;
    wait_for("Jordan to see Hamlet archived", DEADLINE, || async {
        let v = ok(&jordan, &["workspace", "show", "Hamlet"]).await;
        if v["archived"] == true {
            Ok(())
        } else {
            Err(v)
        }
    })
    .await?;
    for dir in [&alex, &jordan] {
        refused(dir, &["set", "Hamlet", JANE, "x"], "workspace unarchive").await;
    }
    assert_eq!(
        value(&jordan, "Hamlet", JANE).await.unwrap(),
        "Jane (Hamlet)"
    );
    // Macbeth is untouched.
    ok(&jordan, &["set", "Macbeth", JANE, "Jane M."]).await;

    // Template and clone of the archived show: current state, no history.
    let file = tmp.path().join("hamlet.template.json");
    let t = ok(
        &alex,
        &[
            "workspace",
            "template",
            "export",
            "Hamlet",
            file.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(t["fields"], 4); // jane, and the fixture: name, copied_from, copied_at
    ok(
        &alex,
        &[
            "workspace",
            "create",
            "Hamlet 2027",
            "--from-template",
            file.to_str().unwrap(),
        ],
    )
    .await;
    ok(&alex, &["workspace", "clone", "Hamlet", "Hamlet copy"]).await;
    let source_history = ok(&alex, &["history", "Hamlet"]).await;
    assert!(source_history.as_array().unwrap().len() >= 5);
    for ws in ["Hamlet 2027", "Hamlet copy"] {
        assert_eq!(value(&alex, ws, JANE).await.unwrap(), "Jane (Hamlet)");
        let h = ok(&alex, &["history", ws]).await;
        let h = h.as_array().unwrap();
        // Alex's introduction plus one import bundle, both authored here.
        assert_eq!(h.len(), 2, "{ws}: {h:?}");
        assert!(h.iter().all(|e| e["author_name"] == "Alex"), "{h:?}");
        let shown = ok(&alex, &["workspace", "show", ws]).await;
        assert_eq!(shown["archived"], false);
        assert_eq!(shown["members"], serde_json::json!(["Alex"]));
        ok(&alex, &["set", ws, JANE, "Jane 2027"]).await;
    }

    // Un-archive: writable again everywhere.
    ok(&alex, &["workspace", "unarchive", "Hamlet"]).await;
    wait_for("Jordan to write to Hamlet again", DEADLINE, || async {
        let out = troupe(&jordan, &["set", "Hamlet", JANE, "Jane H."]).await;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    })
    .await?;
    wait_value(&alex, "Hamlet", JANE, "Jane H.".into()).await;

    // Leaving with --delete-data: gone from Jordan's device, Macbeth kept.
    let left = ok(&jordan, &["workspace", "leave", "Hamlet", "--delete-data"]).await;
    assert_eq!(left["deleted"], true);
    assert_eq!(
        names(&ok(&jordan, &["workspace", "list"]).await),
        ["Macbeth"]
    );
    refused(&jordan, &["get", "Hamlet", JANE], "workspace list").await;
    assert_eq!(value(&jordan, "Macbeth", JANE).await.unwrap(), "Jane M.");
    // Sam leaves without --delete-data: an export is kept.
    let kept = ok(&sam, &["workspace", "leave", "Macbeth"]).await;
    assert!(Path::new(kept["kept_export"].as_str().unwrap()).exists());
    assert!(names(&ok(&sam, &["workspace", "list"]).await).is_empty());

    for n in [&s, &j, &a] {
        n.stop().await?;
    }
    Ok(())
}
