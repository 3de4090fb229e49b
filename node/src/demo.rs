//! `troupe demo`: a crew of three on this machine, end to end, in real
//! processes, on loopback only.
//!
//! It starts three `troupe up` processes (this same binary) with mDNS off,
//! listening on 127.0.0.1 only, each in its own data dir under one temporary
//! directory. Alex creates a show and invites Jordan and Sam; Alex adds a
//! contact; everyone sees it. Sam's laptop leaves (its node stops), and Sam
//! and Alex both change the same phone number. When Sam comes back all three
//! converge on the same state, with the conflict kept and described in words
//! on every node. Alex resolves it, and every node shows the resolution. Then
//! everything is stopped and the temporary directory removed (`--keep`
//! leaves it for inspection).
//!
//! Every edit and read goes through the real CLI (`troupe set`, `get`,
//! `show`, `conflicts`) against the running daemons' local APIs, so the demo
//! exercises what a user runs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value as Json;

use crate::cli::report::{EXIT_FAILED, Report};

/// How long any one step may take before the demo gives up and says so.
pub const STEP_DEADLINE: Duration = Duration::from_secs(20);
const WS: &str = "Hamlet — spring tour";
const PHONE: &str = "contacts.person/jane/phone";

struct Member {
    name: &'static str,
    role: &'static str,
    dir: PathBuf,
    daemon: Option<Child>,
}

/// The demo's temp dir and processes; dropping it stops every process and
/// removes the directory (unless kept), also on failure.
struct Stage {
    root: PathBuf,
    keep: bool,
    crew: Vec<Member>,
    started: Instant,
    exe: PathBuf,
}

impl Drop for Stage {
    fn drop(&mut self) {
        for m in &mut self.crew {
            stop(&self.exe, m);
        }
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

fn fail(what: impl Into<String>) -> Report {
    Report::new(
        EXIT_FAILED,
        what.into(),
        "Only the demo's own temporary directory was used; it has been removed.",
        "Run `troupe demo --keep` to keep the nodes' logs and data, and look at the `*.log` files there.",
    )
}

fn stop(exe: &Path, m: &mut Member) {
    if let Some(mut child) = m.daemon.take() {
        // `troupe stop` first (graceful: the node closes its store), then wait.
        let _ = Command::new(exe)
            .arg("--data-dir")
            .arg(&m.dir)
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Stage {
    fn say(&self, text: impl AsRef<str>) {
        println!(
            "[{:>5.1}s] {}",
            self.started.elapsed().as_secs_f64(),
            text.as_ref()
        );
    }

    /// Runs `troupe --data-dir <dir> --json <args>` and parses its answer.
    fn cli(&self, who: usize, args: &[&str]) -> Result<Json, Report> {
        let m = &self.crew[who];
        let out = Command::new(&self.exe)
            .arg("--data-dir")
            .arg(&m.dir)
            .arg("--json")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| fail(format!("The demo could not run the troupe command: {e}.")))?;
        if !out.status.success() {
            return Err(fail(format!(
                "`troupe {}` failed on {}'s node: {}",
                args.join(" "),
                m.name,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        serde_json::from_slice(&out.stdout)
            .map_err(|e| fail(format!("`troupe {}` printed no JSON: {e}.", args.join(" "))))
    }

    /// Starts `who`'s daemon, dialling `peers`; waits until its API answers.
    fn up(&mut self, who: usize, peers: &[String]) -> Result<(), Report> {
        let m = &self.crew[who];
        let log = std::fs::File::create(self.root.join(format!("{}.log", m.name.to_lowercase())))
            .map_err(|e| fail(format!("The demo could not create a log file: {e}.")))?;
        let mut cmd = Command::new(&self.exe);
        cmd.arg("--data-dir")
            .arg(&m.dir)
            .args(["up", "--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"])
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for p in peers {
            cmd.args(["--peer", p]);
        }
        let child = cmd
            .spawn()
            .map_err(|e| fail(format!("The demo could not start a node: {e}.")))?;
        self.crew[who].daemon = Some(child);
        let name = self.crew[who].name;
        self.wait(&format!("{name}'s node to start"), || {
            Ok(self.cli(who, &["status"]).is_ok())
        })
    }

    /// The address others dial to reach `who`.
    fn address(&self, who: usize) -> Result<String, Report> {
        let s = self.cli(who, &["status"])?;
        let addr = s["listen_addrs"][0].as_str().unwrap_or_default();
        let peer = s["peer_id"].as_str().unwrap_or_default();
        Ok(format!("{addr}/p2p/{peer}"))
    }

    fn wait(
        &self,
        what: &str,
        mut done: impl FnMut() -> Result<bool, Report>,
    ) -> Result<(), Report> {
        let deadline = Instant::now() + STEP_DEADLINE;
        loop {
            if done()? {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(fail(format!(
                    "The demo waited {STEP_DEADLINE:?} for {what}, and it did not happen."
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn get(&self, who: usize, path: &str) -> Result<Json, Report> {
        self.cli(who, &["get", WS, path])
    }

    fn set(&self, who: usize, path: &str, value: &str) -> Result<(), Report> {
        self.cli(who, &["set", WS, path, value]).map(|_| ())
    }
}

fn values(field: &Json) -> Vec<String> {
    let mut v: Vec<String> = field["values"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|x| x["value"].as_str().unwrap_or("").to_owned())
        .collect();
    v.sort();
    v
}

/// Runs the demo. `keep` leaves the temporary directory in place.
///
/// # Errors
/// A [`Report`] naming the step that did not happen.
pub fn run(keep: bool) -> Result<(), Report> {
    let exe = std::env::current_exe()
        .map_err(|e| fail(format!("The demo cannot find its own program file: {e}.")))?;
    let root = std::env::temp_dir().join(format!(
        "troupe-demo-{}-{}",
        std::process::id(),
        crate::local::wall_ms()
    ));
    std::fs::create_dir_all(&root)
        .map_err(|e| fail(format!("The demo cannot create {}: {e}.", root.display())))?;
    let crew = [
        ("Alex", "stage manager"),
        ("Jordan", "lighting"),
        ("Sam", "sound"),
    ]
    .into_iter()
    .map(|(name, role)| Member {
        name,
        role,
        dir: root.join(name.to_lowercase()),
        daemon: None,
    })
    .collect();
    let mut s = Stage {
        root,
        keep,
        crew,
        started: Instant::now(),
        exe,
    };
    println!("Troupe demo: three crew laptops, simulated on this machine.");
    println!("Everything runs on 127.0.0.1 (mDNS off): nothing leaves this computer.");
    println!();
    script(&mut s)?;
    let took = s.started.elapsed().as_secs_f64();
    let where_ = s.root.display().to_string();
    drop(s);
    if keep {
        println!(
            "[{took:>5.1}s] Stopped the three nodes; their data and logs are kept in {where_}."
        );
    } else {
        println!("[{took:>5.1}s] Stopped the three nodes and removed their temporary data. Done.");
    }
    Ok(())
}

fn script(s: &mut Stage) -> Result<(), Report> {
    for i in 0..3 {
        let (name, role) = (s.crew[i].name, s.crew[i].role);
        let dir = s.crew[i].dir.display().to_string();
        let who = format!("{name} ({role})");
        let out = Command::new(&s.exe)
            .args(["--data-dir", &dir, "--json", "init", "--name", &who])
            .output()
            .map_err(|e| fail(format!("The demo could not run `troupe init`: {e}.")))?;
        if !out.status.success() {
            return Err(fail(format!(
                "`troupe init` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
    }
    s.cli(0, &["workspace", "create", WS])?;
    let invite = s.cli(0, &["workspace", "invite", WS])?["invite"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    s.cli(1, &["workspace", "join", &invite])?;
    s.cli(2, &["workspace", "join", &invite])?;
    s.say(format!(
        "Alex created the show '{WS}' and shared its invite; Jordan and Sam joined."
    ));

    s.up(0, &[])?;
    let alex = s.address(0)?;
    s.up(1, std::slice::from_ref(&alex))?;
    s.up(2, std::slice::from_ref(&alex))?;
    s.say(format!(
        "Three nodes are running; Jordan's and Sam's dial Alex's at {alex}."
    ));

    let t = Instant::now();
    s.set(0, "contacts.person/jane/name", "Jane Doe")?;
    s.set(0, PHONE, "555-0100")?;
    s.set(0, "contacts.person/jane/role", "Company manager")?;
    s.say("Alex adds a contact: Jane Doe, company manager, phone 555-0100.");
    for who in [1, 2] {
        s.wait("the contact to reach everyone", || {
            Ok(s.get(who, PHONE)?["value"] == "555-0100"
                && s.get(who, "contacts.person/jane/role")?["value"] == "Company manager")
        })?;
    }
    s.say(format!(
        "Jordan and Sam see it {:.0} ms after Alex's last edit.",
        t.elapsed().as_secs_f64() * 1000.0
    ));

    stop(&s.exe.clone(), &mut s.crew[2]);
    s.say("Sam's laptop leaves the venue network (Sam's node stops).");
    s.set(2, PHONE, "555-0199")?;
    s.say("Sam, offline, changes Jane's phone to 555-0199.");
    s.set(0, PHONE, "555-0142")?;
    s.say("Meanwhile Alex changes Jane's phone to 555-0142.");
    s.wait("Jordan to get Alex's change", || {
        Ok(s.get(1, PHONE)?["value"] == "555-0142")
    })?;
    s.say("Jordan has Alex's change; Sam's change is only on Sam's laptop.");

    let t = Instant::now();
    s.up(2, std::slice::from_ref(&alex))?;
    s.say("Sam is back on the network.");
    let want = vec!["555-0142".to_owned(), "555-0199".to_owned()];
    for who in 0..3 {
        s.wait("all three nodes to hold both phone numbers", || {
            let f = s.get(who, PHONE)?;
            Ok(f["conflict"] == true && values(&f) == want)
        })?;
    }
    s.say(format!(
        "All three nodes converged {:.0} ms after Sam reconnected. Nothing was lost: both numbers are kept.",
        t.elapsed().as_secs_f64() * 1000.0
    ));
    println!();
    for who in 0..3 {
        let c = s.cli(who, &["conflicts", WS])?;
        let text = c[0]["description"].as_str().unwrap_or("(none)").to_owned();
        println!("  On {}'s node: {text}", s.crew[who].name);
    }
    println!();
    let shown = s.cli(1, &["show", WS, "contacts.person/jane"])?;
    println!(
        "  Jordan's node shows {}:",
        shown["label"].as_str().unwrap_or("the contact")
    );
    if let Some(fields) = shown["fields"].as_object() {
        for (name, f) in fields {
            let extra = if f["conflict"] == true {
                format!("   (conflict: {})", values(f).join(" / "))
            } else {
                String::new()
            };
            println!("    {name}: {}{extra}", f["value"].as_str().unwrap_or(""));
        }
    }
    println!();

    s.set(0, PHONE, "555-0199")?;
    s.say("Alex checks with Jane and resolves it: the phone is 555-0199.");
    for who in 0..3 {
        s.wait("the resolution to reach everyone", || {
            let f = s.get(who, PHONE)?;
            Ok(f["conflict"] == false && f["value"] == "555-0199")
        })?;
    }
    s.say("Every node shows 555-0199 and no conflict.");
    Ok(())
}
