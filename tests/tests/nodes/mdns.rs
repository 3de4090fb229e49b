//! mDNS discovery inside network namespaces only, with `--interface` naming
//! the namespace's veth: three members of one workspace find and connect to
//! each other; a node of another workspace on the same bridge sees their
//! advertisements but recognises none, dials none, is dialled by none, and
//! never learns the workspace's id or secret.
//!
//! Skipped (with a message) when not root or without iproute2.

use std::time::{Duration, Instant};

use troupe_protocol::workspace::WorkspaceSecret;
use troupe_tests::netns::{Lab, NODE_IF};
use troupe_tests::store::{field_values, store_path, write_fields};
use troupe_tests::{Node, ids, wait_for};

const DISCOVERY_DEADLINE: Duration = Duration::from_secs(60);

/// The shared show's secret and the other show's, derived from the test name
/// so a run is reproducible.
fn secret(name: &str) -> String {
    let mut out = String::new();
    let mut x: u64 = name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    for _ in 0..32 {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        out.push_str(&format!("{:02x}", (x >> 56) as u8));
    }
    out
}

/// Seconds between the first log line containing `from` and the first after
/// it containing `to`, from the log's own timestamps (a measured figure for
/// the report, not an assertion).
fn log_span(log: &str, from: &str, to: &str) -> Option<f64> {
    let secs = |line: &str| -> Option<f64> {
        // 2026-11-25T06:15:31.105493Z …
        let t = line.get(11..26)?;
        let mut it = t.split(':');
        let h: f64 = it.next()?.parse().ok()?;
        let m: f64 = it.next()?.parse().ok()?;
        let s: f64 = it.next()?.parse().ok()?;
        Some(h * 3600.0 + m * 60.0 + s)
    };
    let mut lines = log.lines();
    let start = lines.by_ref().find(|l| l.contains(from)).and_then(secs)?;
    let end = lines.find(|l| l.contains(to)).and_then(secs)?;
    Some((end - start).rem_euclid(86_400.0))
}

#[tokio::test(flavor = "multi_thread")]
async fn members_discover_each_other_and_a_stranger_learns_nothing() -> anyhow::Result<()> {
    let mut lab = match Lab::new("md")? {
        Ok(lab) => lab,
        Err(skip) => {
            eprintln!("SKIPPED mdns test: {}", skip.0);
            return Ok(());
        }
    };
    let show = secret("mdns/hamlet");
    let other = secret("mdns/lear");
    let files = tempfile::tempdir()?;
    let show_file = files.path().join("hamlet");
    let other_file = files.path().join("lear");
    std::fs::write(&show_file, format!("{show}\n"))?;
    std::fs::write(&other_file, format!("{other}\n"))?;

    let setup = Instant::now();
    let mut namespaces = Vec::new();
    for _ in 0..4 {
        let ns = lab.add_node()?;
        let ifaces = Lab::interfaces(&ns)?;
        assert!(
            ifaces.iter().all(|i| i == "lo" || i == NODE_IF),
            "only test-made interfaces: {ifaces:?}"
        );
        namespaces.push(ns);
    }
    eprintln!("mDNS: four namespaces set up in {:?}", setup.elapsed());

    // Build or locate the binary before timing anything.
    troupe_tests::troupe_bin();
    let started = Instant::now();
    let mut nodes = Vec::new();
    let show_secret = WorkspaceSecret::from_hex(&show)?;
    let dirs = [
        tempfile::tempdir()?,
        tempfile::tempdir()?,
        tempfile::tempdir()?,
        tempfile::tempdir()?,
    ];
    // A has one edit in the shared show before anyone starts.
    write_fields(
        &dirs[0].path().join("data"),
        &show_secret,
        &[("cue/q1/label", "Preset")],
    )?;
    let roles = [
        ("a", &show_file),
        ("b", &show_file),
        ("c", &show_file),
        ("stranger", &other_file),
    ];
    for (i, ((name, file), ns)) in roles.into_iter().zip(&namespaces).enumerate() {
        let args = vec![
            "--interface".to_owned(),
            NODE_IF.to_owned(),
            "--listen".to_owned(),
            format!("/ip4/10.99.0.{}/tcp/0", i + 1),
            "--workspace-secrets".to_owned(),
            file.display().to_string(),
        ];
        let dir = dirs[i].path().join("data");
        nodes.push(Node::start_in(name, Some(ns), &dir, &args)?);
    }
    let mut peer_ids = Vec::new();
    for n in &nodes {
        let status = n.ready().await?;
        assert_eq!(status["mdns"]["interfaces"], serde_json::json!([NODE_IF]));
        peer_ids.push(status["peer_id"].as_str().unwrap().to_owned());
    }
    eprintln!(
        "mDNS: all four nodes answered their local API {:?} after the first started",
        started.elapsed()
    );
    let (members, stranger) = (&nodes[..3], &nodes[3]);
    let stranger_id = &peer_ids[3];

    // Every member connects to the two others (found by mDNS, then dialled).
    for (i, m) in members.iter().enumerate() {
        let want: Vec<&String> = (0..3).filter(|&j| j != i).map(|j| &peer_ids[j]).collect();
        wait_for(
            &format!("{} to connect to the other members", m.name),
            DISCOVERY_DEADLINE,
            || async {
                let v = m.cli_json(&["peers"]).await.map_err(|e| e.to_string())?;
                let connected = ids(&v["connected"]);
                if want.iter().all(|w| connected.contains(w)) {
                    Ok(())
                } else {
                    Err(v.to_string())
                }
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}\nlog:\n{}", m.log()))?;
    }
    eprintln!(
        "mDNS: 3 members connected to each other {:?} after the first node started",
        started.elapsed()
    );
    for m in members {
        if let Some(secs) = log_span(&m.log(), "mDNS discovery running", "peer connected") {
            eprintln!(
                "mDNS: {} connected to its first member {secs:.3} s after its discovery started (from its log)",
                m.name
            );
        }
    }

    // B and C get A's edit.
    for m in &members[1..] {
        wait_for(
            &format!("{} to commit a's edit", m.name),
            DISCOVERY_DEADLINE,
            || async {
                let s = m.cli_json(&["status"]).await.map_err(|e| e.to_string())?;
                if s["sync"]["bundles_committed"].as_u64().unwrap_or(0) >= 1 {
                    Ok(())
                } else {
                    Err(s["sync"].to_string())
                }
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}\nlog:\n{}", m.log()))?;
    }
    eprintln!(
        "mDNS: 3 members converged {:?} after the first node started",
        started.elapsed()
    );

    // The stranger sees all three advertisements, as non-members.
    wait_for(
        "the stranger to see three advertisements",
        DISCOVERY_DEADLINE,
        || async {
            let v = stranger
                .cli_json(&["peers"])
                .await
                .map_err(|e| e.to_string())?;
            let seen = v["discovered"].as_array().cloned().unwrap_or_default();
            if seen.len() == 3 {
                Ok(v)
            } else {
                Err(v.to_string())
            }
        },
    )
    .await?;
    eprintln!(
        "mDNS: the stranger saw three advertisements {:?} after the first node started",
        started.elapsed()
    );
    // Each member has seen the stranger's advertisement and knows it is not a member.
    for m in members {
        wait_for(
            &format!("{} to see the stranger", m.name),
            DISCOVERY_DEADLINE,
            || async {
                let v = m.cli_json(&["peers"]).await.map_err(|e| e.to_string())?;
                let seen = v["discovered"].as_array().cloned().unwrap_or_default();
                match seen.iter().find(|p| p["peer_id"] == stranger_id.as_str()) {
                    Some(p) if p["member"] == false => Ok(()),
                    _ => Err(v.to_string()),
                }
            },
        )
        .await?;
    }

    let v = stranger.cli_json(&["peers"]).await?;
    assert!(
        v["discovered"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["member"] == false),
        "{v}"
    );
    assert!(
        v["connected"].as_array().unwrap().is_empty(),
        "nobody dialled the stranger, it dialled nobody: {v}"
    );
    for m in members {
        let v = m.cli_json(&["peers"]).await?;
        assert!(
            !ids(&v["connected"]).contains(stranger_id),
            "{} connected to the stranger: {v}",
            m.name
        );
    }
    let log = stranger.log();
    assert!(
        !log.contains(&show),
        "the stranger's log holds the show's secret"
    );
    assert!(
        !log.contains("found a member"),
        "the stranger recognised someone:\n{log}"
    );

    for n in &nodes {
        assert!(
            n.stop().await?.success(),
            "{} did not stop cleanly:\n{}",
            n.name,
            n.log()
        );
    }
    eprintln!(
        "mDNS: all stopped {:?} after the first node started",
        started.elapsed()
    );
    for (i, d) in dirs.iter().enumerate().take(3) {
        assert_eq!(
            field_values(&d.path().join("data"), &show_secret, "cue/q1/label")?,
            ["Preset"],
            "member {i} holds a's edit"
        );
    }
    // The stranger's store knows nothing of the show, and its log never names it.
    let stranger_dir = dirs[3].path().join("data");
    let store = troupe_storage::Store::open(store_path(&stranger_dir))?;
    let show_id = show_secret.workspace_id();
    assert!(
        store.workspace(&show_id)?.is_none(),
        "the stranger joined the show"
    );
    assert!(
        store.fields(&show_id)?.is_empty(),
        "the stranger holds show data"
    );
    drop(store);
    assert!(
        !stranger.log().contains(&show_id.to_string()),
        "the stranger's log names the show's workspace"
    );
    drop(nodes);
    drop(dirs);
    drop(lab);
    Ok(())
}
