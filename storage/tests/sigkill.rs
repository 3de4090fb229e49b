//! A real process that commits batches in a loop is SIGKILLed at varying
//! moments; after every re-open each acknowledged batch is present, no batch
//! is partly there, every bundle verifies and state equals a replay. The
//! batches are committed durably, or deferred and flushed through the commit
//! journal (received, also kept as they crossed the wire, and local), so the
//! kills land in journal appends, syncs and checkpoints too.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use troupe_protocol::bundle::BundleKind;
use troupe_protocol::draft::{AuthorTip, Draft};
use troupe_protocol::hlc::Hlc;
use troupe_protocol::sync::WireCopy;
use troupe_protocol::sync::message::encode_batch;
use troupe_protocol::testing::{key, test_workspace};
use troupe_protocol::workspace::{WorkspaceInfo, WorkspaceKind};
use troupe_protocol::{FieldPath, Value};
use troupe_storage::{Received, Store};

const BATCH: u64 = 5;
const CHILD_ENV: &str = "TROUPE_STORAGE_KILL_CHILD_DIR";

/// The child: commits batches of `BATCH` bundles forever, acknowledging each.
#[test]
#[ignore = "run by killed_at_random_moments_every_acknowledged_batch_survives"]
fn child_commits_until_killed() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let store = Store::open(std::path::Path::new(&dir).join("s.redb")).unwrap();
    store.set_journal_limit(8 << 10);
    let ws = test_workspace().workspace_id();
    if store.workspace(&ws).unwrap().is_none() {
        store
            .add_workspace(&WorkspaceInfo::new(
                test_workspace(),
                "t",
                WorkspaceKind::Show,
            ))
            .unwrap();
    }
    let k = key(3);
    let mut tip = store.author_tip(&ws, &k.actor_id()).unwrap();
    let mut out = std::io::stdout();
    loop {
        let mut batch = Vec::new();
        for _ in 0..BATCH {
            let seq = tip.last_seq + 1;
            let mut d = Draft::new(ws, BundleKind::UserEdit, format!("b{seq}"));
            for f in 0..4 {
                let p =
                    FieldPath::new("cues.cue", &format!("c{}", seq % 7), &format!("f{f}")).unwrap();
                d.set(p, Value::Int(seq as i64), vec![]);
            }
            let b = d
                .sign(
                    &k,
                    &tip,
                    Hlc {
                        wall_ms: seq,
                        counter: 0,
                    },
                )
                .unwrap();
            tip = AuthorTip::after(&b);
            batch.push(b);
        }
        // Four ways to commit, in turn: a durable batch; a deferred batch
        // and a flush (made durable by the commit journal); the same with
        // the batch journaled as it would have crossed the wire; a deferred
        // local group and a flush. The journal's limit is small, so some
        // flushes are checkpoints instead.
        let o = match (tip.last_seq / BATCH) % 4 {
            0 => store.commit_batch(&ws, batch, "loop").unwrap(),
            1 => {
                let o = store.commit_batch_deferred(&ws, batch, "loop").unwrap();
                store.flush().unwrap();
                o
            }
            2 => {
                let payload = encode_batch(batch.iter().map(|b| b.bytes()));
                let wire = WireCopy::new(payload, (0..BATCH as u32).collect(), &batch);
                let o = store
                    .commit_received_deferred(vec![Received {
                        workspace: ws,
                        bundles: batch,
                        source: "loop".into(),
                        wire: Some(wire),
                    }])
                    .unwrap()
                    .pop()
                    .unwrap()
                    .unwrap();
                store.flush().unwrap();
                o
            }
            _ => {
                let o = store.commit_local_many_deferred(batch.clone()).unwrap();
                store.flush().unwrap();
                o
            }
        };
        assert_eq!(o.committed.len() as u64, BATCH);
        writeln!(out, "ack {}", tip.last_seq).unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn killed_at_random_moments_every_acknowledged_batch_survives() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let ws = test_workspace().workspace_id();
    let author = key(3).actor_id();
    let mut acked = 0u64;
    let mut rng: u64 = 0x2545_f491_4f6c_dd1d;
    let mut advanced = 0;
    for round in 0..200 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        // Kill after a varying number of acknowledgements (0 = during open or the first batch).
        let kill_after = rng % 4;
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "child_commits_until_killed",
                "--ignored",
                "--nocapture",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let mut seen = 0;
        while seen < kill_after {
            match lines.next() {
                Some(Ok(l)) => {
                    if let Some(n) = l.strip_prefix("ack ") {
                        acked = acked.max(n.trim().parse().unwrap());
                        seen += 1;
                    }
                }
                _ => break,
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        // Anything printed before the kill landed is acknowledged too.
        for l in lines.map_while(Result::ok) {
            if let Some(n) = l.strip_prefix("ack ") {
                acked = acked.max(n.trim().parse().unwrap());
            }
        }

        let store = Store::open(dir.path().join("s.redb")).unwrap();
        if store.workspace(&ws).unwrap().is_none() {
            assert_eq!(acked, 0, "round {round}");
            continue;
        }
        let ranges = store.ranges(&ws).unwrap();
        let held = ranges.get(&author).map(|r| r.ranges().to_vec());
        let n = match held.as_deref() {
            None => 0,
            Some([(1, n)]) => *n,
            Some(other) => panic!("round {round}: holes in {other:?}"),
        };
        assert!(n >= acked, "round {round}: acknowledged {acked}, held {n}");
        assert_eq!(n % BATCH, 0, "round {round}: a partial batch is held");
        if n > acked {
            advanced += 1;
        }
        assert_eq!(store.author_tip(&ws, &author).unwrap().last_seq, n);
        assert!(store.scrub().unwrap().is_empty(), "round {round}");
        assert!(store.verify_rebuild().unwrap().is_empty(), "round {round}");
        acked = n;
    }
    assert!(acked > 0, "the child made progress");
    eprintln!(
        "held {acked} bundles after 200 kills; {advanced} rounds committed past the last ack"
    );
}
