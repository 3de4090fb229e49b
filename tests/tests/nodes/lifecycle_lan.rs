//! Workspaces on one venue LAN: four real nodes in network namespaces the
//! test creates, found by mDNS on the test's own veths only.
//!
//! Alex has a laptop and a phone and a personal library synced between them;
//! Alex runs "Hamlet"; Jordan runs "Macbeth" and joins "Hamlet"; Sam joins
//! "Macbeth" and starts "Tour 2027" with Jordan. Every join happens on a
//! running node (the invite's addresses are dialled at once, and Jordan and
//! Sam, already connected for Macbeth, share the tour without reconnecting).
//! Each show's data and the library reach only their members, in the stores
//! as well as the command output; a library entity copied into a show and a
//! show entity copied back are independent copies with provenance; archiving
//! a show refuses writes on every node; templates and clones carry no history.
//!
//! Skipped (with a message) when not root or without iproute2.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value as Json, json};
use troupe_tests::netns::{Lab, NODE_IF};
use troupe_tests::{Node, wait_for};

const DEADLINE: Duration = Duration::from_secs(60);
const JANE: &str = "contacts.person/jane/name";
/// A library entry that is never copied: its bytes must stay on Alex's devices.
const FRESNEL: &str = "Fresnel 1kW (Alex's own)";

async fn ok(node: &Node, args: &[&str]) -> Json {
    match node.cli_json(args).await {
        Ok(v) => v,
        Err(e) => panic!("{e}\nlog of {}:\n{}", node.name, tail(&node.log())),
    }
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

async fn refused(node: &Node, args: &[&str], contains: &str) {
    let out = node.cli(args).await.expect("run troupe");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "{}: troupe {} succeeded",
        node.name,
        args.join(" ")
    );
    assert!(
        err.contains("What happened: ") && err.contains("What you can do: "),
        "not a plain-sentence error: {err}"
    );
    assert!(err.contains(contains), "expected {contains:?} in: {err}");
}

async fn value(node: &Node, ws: &str, path: &str) -> Result<Json, String> {
    node.cli_json(&["get", ws, path])
        .await
        .map(|v| v["value"].clone())
        .map_err(|e| e.to_string())
}

async fn wait_value(node: &Node, ws: &str, path: &str, want: Json) {
    let r = wait_for(
        &format!("{}: {ws} {path} = {want}", node.name),
        DEADLINE,
        || {
            let want = want.clone();
            async move {
                let got = value(node, ws, path).await?;
                if got == want {
                    Ok(())
                } else {
                    Err(got.to_string())
                }
            }
        },
    )
    .await;
    if let Err(e) = r {
        panic!("{e}\nlog of {}:\n{}", node.name, tail(&node.log()));
    }
}

async fn names(node: &Node) -> Vec<String> {
    let list = ok(node, &["workspace", "list"]).await;
    let mut v: Vec<String> = list
        .as_array()
        .expect("a list")
        .iter()
        .map(|w| w["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    v.sort();
    v
}

/// Whether any file under `dir` contains `needle` (stores keep values as
/// plain bytes, so a value that reached a device is found here).
fn holds(dir: &Path, needle: &str) -> bool {
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p)
                && bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
            {
                return true;
            }
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn shows_and_a_library_on_one_lan_stay_apart_and_lifecycle_works() -> anyhow::Result<()> {
    let mut lab = match Lab::new("lc")? {
        Ok(lab) => lab,
        Err(skip) => {
            eprintln!("SKIPPED lifecycle LAN test: {}", skip.0);
            return Ok(());
        }
    };
    troupe_tests::troupe_bin();
    let tmp = tempfile::tempdir()?;
    let people = [
        ("laptop", "Alex"),
        ("phone", "Alex (phone)"),
        ("jordan", "Jordan"),
        ("sam", "Sam"),
    ];
    let mut nodes = Vec::new();
    for (i, (who, name)) in people.iter().enumerate() {
        let ns = lab.add_node()?;
        assert!(
            Lab::interfaces(&ns)?
                .iter()
                .all(|i| i == "lo" || i == NODE_IF),
            "only test-made interfaces"
        );
        let dir = tmp.path().join(who);
        let init = std::process::Command::new(troupe_tests::troupe_bin())
            .arg("--data-dir")
            .arg(&dir)
            .args(["init", "--name", name])
            .output()?;
        anyhow::ensure!(init.status.success(), "init {who}");
        let args = vec![
            "--interface".to_owned(),
            NODE_IF.to_owned(),
            "--listen".to_owned(),
            format!("/ip4/10.99.0.{}/tcp/0", i + 1),
        ];
        nodes.push(Node::start_in(who, Some(&ns), &dir, &args)?);
    }
    for n in &nodes {
        n.ready().await?;
    }
    let [laptop, phone, jordan, sam] = &nodes[..] else {
        unreachable!()
    };

    // Alex's library, on the laptop, joined by the phone (own devices: --force).
    ok(
        laptop,
        &["workspace", "create", "Alex library", "--kind", "library"],
    )
    .await;
    ok(
        laptop,
        &[
            "set",
            "Alex library",
            "lighting.fixture/par64/name",
            "PAR 64",
        ],
    )
    .await;
    ok(
        laptop,
        &[
            "set",
            "Alex library",
            "lighting.fixture/fresnel/name",
            FRESNEL,
        ],
    )
    .await;
    refused(laptop, &["workspace", "invite", "Alex library"], "--force").await;
    let lib = ok(laptop, &["workspace", "invite", "Alex library", "--force"]).await;
    // A running node puts its own addresses in the invite.
    let addrs = lib["peers"].as_array().cloned().unwrap_or_default();
    assert!(
        addrs.iter().any(|a| a
            .as_str()
            .unwrap_or_default()
            .starts_with("/ip4/10.99.0.1/")),
        "invite carries the laptop's address: {lib}"
    );
    ok(
        phone,
        &["workspace", "join", lib["invite"].as_str().unwrap()],
    )
    .await;
    wait_value(
        phone,
        "Alex library",
        "lighting.fixture/par64/name",
        "PAR 64".into(),
    )
    .await;

    // Two shows with overlapping people; the same entity id in both.
    ok(laptop, &["workspace", "create", "Hamlet"]).await;
    ok(laptop, &["set", "Hamlet", JANE, "Jane (Hamlet)"]).await;
    ok(jordan, &["workspace", "create", "Macbeth"]).await;
    ok(jordan, &["set", "Macbeth", JANE, "Jane (Macbeth)"]).await;
    let hamlet = ok(laptop, &["workspace", "invite", "Hamlet"]).await;
    let macbeth = ok(jordan, &["workspace", "invite", "Macbeth"]).await;
    ok(
        jordan,
        &["workspace", "join", hamlet["invite"].as_str().unwrap()],
    )
    .await;
    ok(
        sam,
        &["workspace", "join", macbeth["invite"].as_str().unwrap()],
    )
    .await;
    wait_value(jordan, "Hamlet", JANE, "Jane (Hamlet)".into()).await;
    wait_value(sam, "Macbeth", JANE, "Jane (Macbeth)".into()).await;
    assert_eq!(
        value(laptop, "Hamlet", JANE).await.unwrap(),
        "Jane (Hamlet)"
    );
    assert_eq!(
        value(jordan, "Macbeth", JANE).await.unwrap(),
        "Jane (Macbeth)"
    );

    // Sam starts the tour while connected to Jordan for Macbeth; Jordan joins
    // on the same connection.
    let jordan_id = jordan.ready().await?["peer_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(sam.connected_peers().await?.contains(&jordan_id));
    let sam_id = sam.ready().await?["peer_id"].as_str().unwrap().to_owned();
    let connects = |log: String| {
        log.lines()
            .filter(|l| l.contains("peer connected") && l.contains(&sam_id))
            .count()
    };
    let before = connects(jordan.log());
    assert!(before >= 1, "jordan logged the connection to sam");
    ok(sam, &["workspace", "create", "Tour 2027"]).await;
    ok(
        sam,
        &["set", "Tour 2027", "schedule.date/d1/venue", "Leeds Grand"],
    )
    .await;
    let tour = ok(sam, &["workspace", "invite", "Tour 2027"]).await;
    ok(
        jordan,
        &["workspace", "join", tour["invite"].as_str().unwrap()],
    )
    .await;
    wait_value(
        jordan,
        "Tour 2027",
        "schedule.date/d1/venue",
        "Leeds Grand".into(),
    )
    .await;

    // Library → show: an independent copy that says where it came from.
    ok(
        laptop,
        &["copy", "Alex library", "lighting.fixture/par64", "Hamlet"],
    )
    .await;
    wait_value(
        jordan,
        "Hamlet",
        "lighting.fixture/par64/copied_from",
        "Alex library/lighting.fixture/par64".into(),
    )
    .await;
    // Show → library, from the phone's side of the library.
    ok(
        laptop,
        &["copy", "Hamlet", "contacts.person/jane", "Alex library"],
    )
    .await;
    wait_value(phone, "Alex library", JANE, "Jane (Hamlet)".into()).await;
    wait_value(
        phone,
        "Alex library",
        "contacts.person/jane/copied_from",
        "Hamlet/contacts.person/jane".into(),
    )
    .await;
    // Copies are independent: the phone's edit to the library entry leaves the show's copy.
    ok(
        phone,
        &[
            "set",
            "Alex library",
            "lighting.fixture/par64/name",
            "PAR 64 LED",
        ],
    )
    .await;
    wait_value(
        laptop,
        "Alex library",
        "lighting.fixture/par64/name",
        "PAR 64 LED".into(),
    )
    .await;
    assert_eq!(
        value(jordan, "Hamlet", "lighting.fixture/par64/name")
            .await
            .unwrap(),
        "PAR 64"
    );

    // Each device holds exactly its own workspaces.
    assert_eq!(names(laptop).await, ["Alex library", "Hamlet"]);
    assert_eq!(names(phone).await, ["Alex library"]);
    assert_eq!(names(jordan).await, ["Hamlet", "Macbeth", "Tour 2027"]);
    assert_eq!(names(sam).await, ["Macbeth", "Tour 2027"]);
    refused(sam, &["get", "Hamlet", JANE], "workspace list").await;
    refused(phone, &["get", "Macbeth", JANE], "workspace list").await;

    // The retention window is the workspace's, on every member (default 90).
    assert_eq!(
        ok(jordan, &["workspace", "show", "Hamlet"]).await["retention_days"],
        90
    );
    ok(laptop, &["workspace", "retention", "Hamlet", "30"]).await;
    wait_for("Jordan to see Hamlet's retention", DEADLINE, || async {
        let v = ok(jordan, &["workspace", "show", "Hamlet"]).await;
        if v["retention_days"] == 30 {
            Ok(())
        } else {
            Err(v)
        }
    })
    .await?;

    // Archive on the laptop: read-only on Jordan's node after sync, still readable.
    ok(laptop, &["workspace", "archive", "Hamlet"]).await;
    wait_for("Jordan to see Hamlet archived", DEADLINE, || async {
        let v = ok(jordan, &["workspace", "show", "Hamlet"]).await;
        if v["archived"] == true {
            Ok(())
        } else {
            Err(v)
        }
    })
    .await?;
    for n in [laptop, jordan] {
        refused(n, &["set", "Hamlet", JANE, "x"], "workspace unarchive").await;
    }
    assert_eq!(
        value(jordan, "Hamlet", JANE).await.unwrap(),
        "Jane (Hamlet)"
    );

    // Template and clone on Jordan's node: current state only, no history,
    // and nobody else receives them.
    let file = tmp.path().join("macbeth.template.json");
    ok(jordan, &["set", "Macbeth", JANE, "Jane M."]).await;
    let t = ok(
        jordan,
        &[
            "workspace",
            "template",
            "export",
            "Macbeth",
            file.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(t["fields"], 1);
    ok(
        jordan,
        &[
            "workspace",
            "create",
            "Macbeth 2027",
            "--from-template",
            file.to_str().unwrap(),
        ],
    )
    .await;
    ok(jordan, &["workspace", "clone", "Hamlet", "Hamlet copy"]).await;
    assert!(
        ok(jordan, &["history", "Macbeth"])
            .await
            .as_array()
            .unwrap()
            .len()
            >= 4
    );
    for (ws, jane) in [
        ("Macbeth 2027", "Jane M."),
        ("Hamlet copy", "Jane (Hamlet)"),
    ] {
        assert_eq!(value(jordan, ws, JANE).await.unwrap(), jane);
        let h = ok(jordan, &["history", ws]).await;
        let h = h.as_array().unwrap();
        assert_eq!(h.len(), 2, "{ws}: introduction and one import only: {h:?}");
        assert!(h.iter().all(|e| e["author_name"] == "Jordan"), "{h:?}");
        let shown = ok(jordan, &["workspace", "show", ws]).await;
        assert_eq!(shown["archived"], false);
        assert_eq!(shown["members"], json!(["Jordan"]));
    }
    assert_eq!(names(sam).await, ["Macbeth", "Tour 2027"]);

    for n in &nodes {
        assert!(n.stop().await?.success(), "{} did not stop cleanly", n.name);
    }
    // In the stores, not only in the output: the library's private entry
    // and each show's data stay with their members.
    let dir = |who: &str| tmp.path().join(who);
    assert!(holds(&dir("laptop"), FRESNEL) && holds(&dir("phone"), FRESNEL));
    for who in ["jordan", "sam"] {
        assert!(!holds(&dir(who), FRESNEL), "{who} holds Alex's library");
    }
    assert!(holds(&dir("jordan"), "Jane (Hamlet)"));
    assert!(
        !holds(&dir("sam"), "Jane (Hamlet)"),
        "sam holds Hamlet data"
    );
    for who in ["laptop", "phone"] {
        assert!(
            !holds(&dir(who), "Jane (Macbeth)"),
            "{who} holds Macbeth data"
        );
        assert!(!holds(&dir(who), "Leeds Grand"), "{who} holds the tour");
    }
    drop(nodes);
    drop(lab);
    Ok(())
}
