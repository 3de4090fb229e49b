//! Operations as a person uses them, through the real `troupe` binary:
//! undo/redo, jobs and imports as one bundle, filtered history and search,
//! a bundle in words, quarantine of a corrupt bundle with its reason,
//! export of a damaged store, asset deletion and GC dry run, and conflicts
//! resolved in one `merge_resolution` bundle between two real nodes.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use serde_json::Value as Json;
use troupe_tests::{Node, troupe_bin, wait_for};

fn troupe(data_dir: &Path, args: &[&str]) -> Output {
    std::process::Command::new(troupe_bin())
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .output()
        .expect("run troupe")
}

fn ok_json(data_dir: &Path, args: &[&str]) -> Json {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = troupe(data_dir, &all);
    assert!(
        out.status.success(),
        "troupe {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON answer")
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

fn setup(dir: &Path) -> std::path::PathBuf {
    let data = dir.join("d");
    assert!(troupe(&data, &["init", "--name", "Alex"]).status.success());
    ok_json(&data, &["workspace", "create", "Hamlet"]);
    data
}

fn history_len(data: &Path) -> usize {
    ok_json(data, &["history", "Hamlet", "--limit", "100000"])
        .as_array()
        .unwrap()
        .len()
}

#[test]
fn undo_redo_history_search_and_a_bundle_in_words() {
    let dir = tempfile::tempdir().unwrap();
    let data = setup(dir.path());
    ok_json(
        &data,
        &["set", "Hamlet", "contacts.person/jane/name", "Jane Doe"],
    );
    ok_json(
        &data,
        &["set", "Hamlet", "contacts.person/jane/phone", "555-0100"],
    );
    ok_json(
        &data,
        &["set", "Hamlet", "contacts.person/jane/phone", "555-0199"],
    );

    // Undo (default: my last change) puts the previous value back.
    let undo = ok_json(&data, &["undo", "Hamlet"]);
    assert_eq!(undo["left_alone"].as_array().unwrap().len(), 0);
    let phone = ok_json(&data, &["get", "Hamlet", "contacts.person/jane/phone"]);
    assert_eq!(phone["value"], "555-0100");
    // The next undo walks further back, to a change whose field was changed
    // since (by the undo): reported and left alone, nothing written.
    assert_report(
        &troupe(&data, &["undo", "Hamlet"]),
        1,
        "phone was changed since; left as it is (changed since by Alex)",
    );
    // Redo (default: my last undo) re-applies the undone change.
    let redo = ok_json(&data, &["redo", "Hamlet"]);
    assert_eq!(redo["of"], undo["bundle"], "{redo}");
    let phone = ok_json(&data, &["get", "Hamlet", "contacts.person/jane/phone"]);
    assert_eq!(phone["value"], "555-0199");
    // Redo of something that is not an undo is refused in three sentences.
    let first = ok_json(&data, &["history", "Hamlet", "--field", "name"]);
    let name_bundle = first[0]["bundle"].as_str().unwrap()[..12].to_owned();
    assert_report(
        &troupe(&data, &["redo", "Hamlet", &name_bundle]),
        2,
        "is not an undo",
    );
    assert_report(
        &troupe(&data, &["undo", "Hamlet", "zzzzzz"]),
        2,
        "not a bundle id",
    );

    // History filters: field, entity, author, time.
    let by_field = ok_json(&data, &["history", "Hamlet", "--field", "phone"]);
    assert_eq!(by_field.as_array().unwrap().len(), 4, "{by_field}");
    assert!(
        by_field[0]["matching_ops"][0]
            .as_str()
            .unwrap()
            .contains("Contact 'Jane Doe' phone"),
        "{by_field}"
    );
    let by_entity = ok_json(
        &data,
        &["history", "Hamlet", "--entity", "contacts.person/jane"],
    );
    assert_eq!(by_entity.as_array().unwrap().len(), 5);
    assert_eq!(
        ok_json(&data, &["history", "Hamlet", "--author", "Alex"])
            .as_array()
            .unwrap()
            .len(),
        history_len(&data)
    );
    assert_eq!(
        ok_json(&data, &["history", "Hamlet", "--since", "1h"])
            .as_array()
            .unwrap()
            .len(),
        history_len(&data)
    );
    assert!(
        ok_json(&data, &["history", "Hamlet", "--until", "2001-01-01"])
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_report(
        &troupe(&data, &["history", "Hamlet", "--author", "Nobody"]),
        2,
        "Nobody",
    );
    assert_report(
        &troupe(&data, &["history", "Hamlet", "--since", "yesterday-ish"]),
        2,
        "is not a time",
    );

    // Search finds current values and values only in history.
    let found = ok_json(&data, &["search", "Hamlet", "555-0100"]);
    assert!(found["current"].as_array().unwrap().is_empty(), "{found}");
    assert!(!found["history"].as_array().unwrap().is_empty(), "{found}");
    let found = ok_json(&data, &["search", "Hamlet", "jane doe"]);
    assert_eq!(found["current"][0]["path"], "contacts.person/jane/name");

    // One bundle in words.
    let shown = ok_json(&data, &["show-bundle", "Hamlet", &name_bundle]);
    assert_eq!(shown["kind"], "user_edit");
    assert_eq!(
        shown["ops"][0]["words"],
        "set Contact 'Jane Doe' name to 'Jane Doe'"
    );
    let human = troupe(&data, &["show-bundle", "Hamlet", &name_bundle]);
    assert!(String::from_utf8_lossy(&human.stdout).contains("set Contact 'Jane Doe' name"));
}

#[test]
fn a_job_commits_one_bundle_or_nothing_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let data = setup(dir.path());
    let good = dir.path().join("good.sh");
    std::fs::write(
        &good,
        concat!(
            "echo '{\"set\": \"contacts.person/bob/name\", \"value\": \"Bob\"}'\n",
            "echo\n",
            "echo '{\"set\": \"contacts.person/bob/age\", \"value\": 42}'\n",
            "echo '{\"set\": \"contacts.person/bob/boss\", \"value\": {\"entity\": \"contacts.person/jane\"}}'\n",
        ),
    )
    .unwrap();
    let before = history_len(&data);
    let out = ok_json(
        &data,
        &["job", "run", "Hamlet", "--", "sh", good.to_str().unwrap()],
    );
    assert_eq!(out["kind"], "job_output");
    assert_eq!(out["ops"], 3);
    assert_eq!(history_len(&data), before + 1, "exactly one bundle");
    let age = ok_json(&data, &["get", "Hamlet", "contacts.person/bob/age"]);
    assert_eq!(age["value"], 42);

    // Failures leave nothing: non-zero exit (with its stderr), a bad line
    // after good ones, a command that does not exist, no ops at all.
    let before = history_len(&data);
    let failing = troupe(
        &data,
        &[
            "job",
            "run",
            "Hamlet",
            "--",
            "sh",
            "-c",
            "echo '{\"set\": \"contacts.person/x/name\", \"value\": \"X\"}'; echo 'no venue file' >&2; exit 3",
        ],
    );
    assert_report(&failing, 1, "status 3");
    assert_report(&failing, 1, "no venue file");
    let bad_line = troupe(
        &data,
        &[
            "job",
            "run",
            "Hamlet",
            "--",
            "sh",
            "-c",
            "echo '{\"set\": \"contacts.person/x/name\", \"value\": \"X\"}'; echo '{\"set\": \"contacts.person/x\", \"value\": 1}'",
        ],
    );
    assert_report(&bad_line, 1, "line 2");
    assert_report(
        &troupe(&data, &["job", "run", "Hamlet", "--", "/no/such/program"]),
        1,
        "could not be started",
    );
    assert_report(
        &troupe(&data, &["job", "run", "Hamlet", "--", "true"]),
        1,
        "no changes",
    );
    assert_eq!(history_len(&data), before, "a failed job applies nothing");
    let x = ok_json(&data, &["get", "Hamlet", "contacts.person/x/name"]);
    assert_eq!(x["set"], false);

    // Above 1,000 ops: committed whole, with an advisory.
    let big = troupe(
        &data,
        &[
            "--json",
            "job",
            "run",
            "Hamlet",
            "--",
            "sh",
            "-c",
            "i=0; while [ $i -lt 1001 ]; do echo \"{\\\"set\\\": \\\"cues.cue/q$i/label\\\", \\\"value\\\": \\\"Q$i\\\"}\"; i=$((i+1)); done",
        ],
    );
    assert!(
        big.status.success(),
        "{}",
        String::from_utf8_lossy(&big.stderr)
    );
    let big: Json = serde_json::from_slice(&big.stdout).unwrap();
    assert_eq!(big["ops"], 1001);
    assert!(
        big["advisories"][0].as_str().unwrap().contains("1001"),
        "{big}"
    );

    // Import: CSV and JSON contacts, one bundle each.
    let csv = dir.path().join("crew.csv");
    std::fs::write(&csv, "Name,Phone Number\nJane Q,1\n\"Smith, Al\",2\n").unwrap();
    let before = history_len(&data);
    let imp = ok_json(&data, &["import", "Hamlet", csv.to_str().unwrap()]);
    assert_eq!(imp["kind"], "import");
    assert_eq!(imp["contacts"], 2);
    assert_eq!(history_len(&data), before + 1);
    let al = ok_json(
        &data,
        &["get", "Hamlet", "contacts.person/smith-al/phone_number"],
    );
    assert_eq!(al["value"], "2");
    let js = dir.path().join("crew.json");
    std::fs::write(&js, r#"[{"id": "kim", "name": "Kim", "age": 30}]"#).unwrap();
    ok_json(&data, &["import", "Hamlet", js.to_str().unwrap()]);
    assert_eq!(
        ok_json(&data, &["get", "Hamlet", "contacts.person/kim/age"])["value"],
        30
    );
    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, r#"[{"phone": "1"}]"#).unwrap();
    let before = history_len(&data);
    assert_report(
        &troupe(&data, &["import", "Hamlet", broken.to_str().unwrap()]),
        1,
        "neither an id nor a name",
    );
    assert_eq!(history_len(&data), before);
}

/// Flips one byte of `marker` wherever it is in the store file (no node runs).
fn corrupt(store: &Path, marker: &[u8]) -> usize {
    let mut b = std::fs::read(store).unwrap();
    let mut hits = 0;
    let mut i = 0;
    while i + marker.len() <= b.len() {
        if &b[i..i + marker.len()] == marker {
            b[i + marker.len() / 2] ^= 0x20;
            hits += 1;
            i += marker.len();
        } else {
            i += 1;
        }
    }
    std::fs::write(store, b).unwrap();
    hits
}

#[test]
fn a_corrupt_bundle_is_quarantined_with_a_reason_and_export_keeps_what_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let data = setup(dir.path());
    ok_json(
        &data,
        &["set", "Hamlet", "contacts.person/jane/name", "Jane Doe"],
    );
    let marker = "NOTES-abcdefghijklmnopqrstuvwxyz-0123456789";
    ok_json(
        &data,
        &["set", "Hamlet", "contacts.person/jane/notes", marker],
    );
    ok_json(
        &data,
        &["set", "Hamlet", "contacts.person/jane/phone", "555"],
    );
    let logo = dir.path().join("logo.txt");
    std::fs::write(&logo, b"the company logo").unwrap();
    let asset = ok_json(&data, &["assets", "add", "Hamlet", logo.to_str().unwrap()]);

    assert!(corrupt(&data.join("store.redb"), marker.as_bytes()) >= 1);

    // Export of the damaged store: everything that verifies is there.
    let out_dir = dir.path().join("export");
    let exp = ok_json(&data, &["export", "Hamlet", out_dir.to_str().unwrap()]);
    assert_eq!(exp["assets_written"], 1, "{exp}");
    let state = std::fs::read_to_string(out_dir.join("state.json")).unwrap();
    assert!(
        state.contains("Jane Doe") && state.contains("555"),
        "{state}"
    );
    let asset_hash = asset["asset"].as_str().unwrap();
    assert_eq!(
        std::fs::read(out_dir.join("assets").join(asset_hash)).unwrap(),
        b"the company logo"
    );

    // The damaged bundle is in quarantine, with a reason, a source and what is missing.
    let q = ok_json(&data, &["quarantine", "list"]);
    let entries = q["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{q}");
    let e = &entries[0];
    assert!(!e["reason"].as_str().unwrap().is_empty());
    assert!(!e["source"].as_str().unwrap().is_empty());
    assert!(
        e["missing"].as_str().unwrap().contains("set notes of"),
        "{e}"
    );
    let id = e["id"].to_string();
    let shown = ok_json(&data, &["quarantine", "show", &id]);
    assert_eq!(shown["summary"], "set notes of contacts.person/jane");
    let human = troupe(&data, &["quarantine", "list"]);
    assert!(String::from_utf8_lossy(&human.stdout).contains("Missing because of it"));

    // Scrub and repair answer; retry fails again (still corrupt), skip is recorded.
    ok_json(&data, &["scrub"]);
    ok_json(&data, &["repair"]);
    let retry = ok_json(&data, &["quarantine", "retry", &id]);
    assert_eq!(retry["applied"], false, "{retry}");
    let again = retry["quarantined_again"][0]["id"].to_string();
    ok_json(&data, &["quarantine", "skip", &again]);
    let q = ok_json(&data, &["quarantine", "list"]);
    assert!(q["entries"].as_array().unwrap().is_empty(), "{q}");
    assert_eq!(q["skipped"].as_array().unwrap().len(), 1);
    assert_report(
        &troupe(&data, &["quarantine", "show", "999"]),
        2,
        "no quarantine entry 999",
    );

    // Assets: delete records the op; GC is a dry run by default and respects retention.
    ok_json(
        &data,
        &[
            "assets",
            "delete",
            "Hamlet",
            &asset_hash[..10],
            "--reason",
            "old logo",
        ],
    );
    let gc = ok_json(&data, &["gc", "Hamlet"]);
    assert_eq!(gc["applied"], false);
    assert!(
        gc["blobs"].as_array().unwrap().is_empty(),
        "within retention: {gc}"
    );
    let list = ok_json(&data, &["assets", "list", "Hamlet"]);
    assert_eq!(list[0]["state"], "held", "{list}");
    let hist = ok_json(&data, &["history", "Hamlet", "--limit", "1"]);
    assert!(
        hist[0]["summary"]
            .as_str()
            .unwrap()
            .contains("deleted file")
    );
}

const DEADLINE: Duration = Duration::from_secs(60);

fn loopback(extra: &[String]) -> Vec<String> {
    let mut a = vec![
        "--no-mdns".to_owned(),
        "--listen".to_owned(),
        "/ip4/127.0.0.1/tcp/0".to_owned(),
    ];
    a.extend_from_slice(extra);
    a
}

async fn wait_value(node: &Node, path: &str, want: &str) -> anyhow::Result<()> {
    wait_for(
        &format!("{} to see {want}", node.name),
        DEADLINE,
        || async {
            let v = node
                .cli_json(&["get", "Hamlet", path])
                .await
                .map_err(|e| e.to_string())?;
            if v["value"] == want && v["conflict"] == false {
                Ok(())
            } else {
                Err(v.to_string())
            }
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\nlog a:\n{}", node.log()))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_conflict_is_resolved_in_one_bundle_everywhere_and_stays_in_history() -> anyhow::Result<()>
{
    // Two devices set up and joined while offline, as the demo does; both
    // edit the same fields before they ever meet.
    let tmp = tempfile::tempdir()?;
    let (adir, bdir) = (tmp.path().join("a"), tmp.path().join("b"));
    assert!(troupe(&adir, &["init", "--name", "Alex"]).status.success());
    assert!(
        troupe(&bdir, &["init", "--name", "Jordan"])
            .status
            .success()
    );
    ok_json(&adir, &["workspace", "create", "Hamlet"]);
    let invite = ok_json(&adir, &["workspace", "invite", "Hamlet"]);
    ok_json(
        &bdir,
        &["workspace", "join", invite["invite"].as_str().unwrap()],
    );
    ok_json(
        &adir,
        &["set", "Hamlet", "contacts.person/jane/name", "Jane A. Doe"],
    );
    ok_json(
        &adir,
        &["set", "Hamlet", "contacts.person/jane/phone", "111"],
    );
    ok_json(
        &bdir,
        &["set", "Hamlet", "contacts.person/jane/name", "Jane B. Doe"],
    );
    ok_json(
        &bdir,
        &["set", "Hamlet", "contacts.person/jane/phone", "222"],
    );

    let a = Node::start_in("a", None, &adir, &loopback(&[]))?;
    let sa = a.ready().await?;
    let peer = format!(
        "{}/p2p/{}",
        sa["listen_addrs"][0].as_str().unwrap(),
        sa["peer_id"].as_str().unwrap()
    );
    let b2 = Node::start_in("b", None, &bdir, &loopback(&["--peer".into(), peer]))?;
    b2.ready().await?;

    let open = wait_for("a to see the conflict", DEADLINE, || async {
        let c = a
            .cli_json(&["conflicts", "list", "Hamlet"])
            .await
            .map_err(|e| e.to_string())?;
        if c.as_array().is_some_and(|l| !l.is_empty()) {
            Ok(c)
        } else {
            Err(c.to_string())
        }
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\nlog a:\n{}\nlog b:\n{}", a.log(), b2.log()))?;
    let words = open[0]["description"].as_str().unwrap();
    assert!(words.contains("name differs"), "{words}");

    // A field without a choice is refused, nothing written.
    let refused = troupe(
        &a.data_dir,
        &[
            "conflicts",
            "resolve",
            "Hamlet",
            "contacts.person/jane",
            "--field",
            "name",
            "--pick",
            "Jane Doe",
        ],
    );
    assert_report(&refused, 2, "no choice was given");

    // Pick a typed value for the name, take B's side for the rest: one bundle.
    let before = a
        .cli_json(&["history", "Hamlet", "--limit", "1000"])
        .await?;
    let resolved = a
        .cli_json(&[
            "conflicts",
            "resolve",
            "Hamlet",
            "contacts.person/jane",
            "--field",
            "name",
            "--pick",
            "Jane Doe",
            "--take",
            "Jordan",
        ])
        .await?;
    let after = a
        .cli_json(&["history", "Hamlet", "--limit", "1000"])
        .await?;
    assert_eq!(
        after.as_array().unwrap().len(),
        before.as_array().unwrap().len() + 1
    );
    assert_eq!(after[0]["kind"], "merge_resolution");
    assert!(
        resolved["summary"]
            .as_str()
            .unwrap()
            .contains("phone: kept"),
        "{resolved}"
    );
    let none = a.cli_json(&["conflicts", "list", "Hamlet"]).await?;
    assert!(none.as_array().unwrap().is_empty(), "{none}");
    wait_value(&b2, "contacts.person/jane/name", "Jane Doe").await?;
    wait_value(&b2, "contacts.person/jane/phone", "222").await?;

    // Scrub and repair also run inside a running node (the repair request
    // goes to the sync engine); nothing is damaged here.
    let r = a.cli_json(&["repair"]).await?;
    assert_eq!(r["damaged"], 0, "{r}");
    assert_eq!(b2.cli_json(&["scrub"]).await?["damaged"], 0);

    // The resolution stays in history on both devices, with its choices.
    for n in [&a, &b2] {
        let h = n.cli_json(&["conflicts", "history", "Hamlet"]).await?;
        assert_eq!(h.as_array().unwrap().len(), 1, "{h}");
        assert_eq!(h[0]["ops"].as_array().unwrap().len(), 2);
        assert!(
            h[0]["summary"]
                .as_str()
                .unwrap()
                .contains("name: wrote 'Jane Doe'")
        );
    }
    Ok(())
}
