//! Harness for multi-node tests: real `troupe` processes, each with its own
//! temporary data dir, optionally inside a network namespace.
//!
//! # Finding the binary
//! Cargo builds a package's binaries only for that package's own integration
//! tests, and `troupe` belongs to `troupe-node`. So [`troupe_bin`] uses
//! `TROUPE_BIN` when set; otherwise it runs `cargo build -p troupe-node --bin
//! troupe` once per test process (a no-op when it is fresh; `--release` when
//! the tests themselves are a release build) and uses
//! `target/<profile>/troupe` next to the test executable. The build runs in
//! the same target dir, so nothing is compiled twice.
//!
//! # Talking to a node
//! Through the `troupe` CLI run in the node's namespace (`ip netns exec`), so
//! the local API on the namespace's 127.0.0.1 is reachable and the CLI's
//! daemon detection is exercised too.

pub mod ceilings;
pub mod netns;
pub mod store;
pub mod tmpfs;
pub mod wait;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::Context as _;

pub use wait::wait_for;

/// How long a node may take to come up (bind, write its API files).
pub const START_DEADLINE: Duration = Duration::from_secs(30);

/// CPU time (user + system) a running process has used so far, in seconds
/// (0 when it cannot be read, e.g. the process is gone).
pub fn cpu_secs(pid: u32) -> f64 {
    stat_cpu_secs(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default())
}

/// CPU time (user + system) the threads of process `pid` called `name`
/// have used so far, in seconds: how busy one thread is, such as a node's
/// storage thread ([`troupe_node::daemon::STORE_THREAD`]). 0 when none can
/// be read.
pub fn thread_cpu_secs(pid: u32, name: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
        .filter(|stat| {
            // The thread's name sits between the first `(` and the last `)`.
            stat.split_once('(')
                .and_then(|(_, r)| r.rsplit_once(')'))
                .is_some_and(|(comm, _)| comm == name)
        })
        .map(|stat| stat_cpu_secs(&stat))
        .sum()
}

/// The most resident memory process `pid` has held so far (`VmHWM`), in
/// KiB (0 when it cannot be read).
pub fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// utime + stime of one `/proc/…/stat` line, in seconds.
fn stat_cpu_secs(stat: &str) -> f64 {
    // The command name may hold spaces: fields are counted after its `)`.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime (fields 14 and 15 of stat) in clock ticks.
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

/// The `troupe` binary, built if needed (see the crate doc).
///
/// # Panics
/// If the binary cannot be built or found; every node test needs it.
pub fn troupe_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("TROUPE_BIN") {
            return PathBuf::from(p);
        }
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/<test> (tests) or target/<profile>/<bin>
        // (the bench binary) → target/<profile>
        let mut profile_dir = exe
            .parent()
            .expect("executable inside target/<profile>")
            .to_owned();
        if profile_dir.file_name().is_some_and(|n| n == "deps") {
            profile_dir.pop();
        }
        let target_dir = profile_dir.parent().expect("target dir").to_owned();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", "troupe-node", "--bin", "troupe"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("CARGO_TARGET_DIR", &target_dir);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build for the troupe binary");
        assert!(status.success(), "building the troupe binary failed");
        let bin = profile_dir.join(format!("troupe{}", std::env::consts::EXE_SUFFIX));
        assert!(bin.exists(), "no troupe binary at {}", bin.display());
        bin
    })
}

/// `troupe up` arguments for a node on loopback with mDNS off, dialling
/// `peer` when given: what every loopback test runs.
pub fn loopback(peer: Option<&str>) -> Vec<String> {
    let mut a = vec![
        "--no-mdns".to_owned(),
        "--listen".to_owned(),
        "/ip4/127.0.0.1/tcp/0".to_owned(),
    ];
    if let Some(p) = peer {
        a.extend(["--peer".to_owned(), p.to_owned()]);
    }
    a
}

/// Runs `troupe --data-dir <dir> --json <args>` with no node running (set-up
/// before a node starts) and parses what it prints (`Null` for nothing).
///
/// # Errors
/// If the command cannot run or fails; the error carries its stderr.
pub fn troupe_json(dir: &Path, args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let out = Command::new(troupe_bin())
        .arg("--data-dir")
        .arg(dir)
        .arg("--json")
        .args(args)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "troupe {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null))
}

/// A `troupe up` process with its own temporary data dir. Killed on drop.
#[derive(Debug)]
pub struct Node {
    /// Name used in messages.
    pub name: String,
    /// The network namespace it runs in, if any.
    pub netns: Option<String>,
    /// Its data dir.
    pub data_dir: PathBuf,
    log: PathBuf,
    child: Mutex<Child>,
    _tmp: tempfile::TempDir,
}

fn command(netns: Option<&str>) -> Command {
    match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(troupe_bin());
            c
        }
        None => Command::new(troupe_bin()),
    }
}

impl Node {
    /// Starts `troupe --data-dir <tmp> up <args>`, logging at debug level to a
    /// file beside the data dir.
    ///
    /// # Errors
    /// If the process cannot be spawned.
    pub fn start(name: &str, netns: Option<&str>, args: &[String]) -> anyhow::Result<Node> {
        let tmp = tempfile::tempdir()?;
        let data_dir = tmp.path().join("data");
        Self::spawn(name, netns, data_dir, tmp, args)
    }

    /// Like [`Node::start`] on an existing data dir (a restart). The caller
    /// keeps the node that owned it alive (its temp dir) until this one is done.
    ///
    /// # Errors
    /// If the process cannot be spawned.
    pub fn start_in(
        name: &str,
        netns: Option<&str>,
        data_dir: &Path,
        args: &[String],
    ) -> anyhow::Result<Node> {
        Self::spawn(name, netns, data_dir.to_owned(), tempfile::tempdir()?, args)
    }

    fn spawn(
        name: &str,
        netns: Option<&str>,
        data_dir: PathBuf,
        tmp: tempfile::TempDir,
        args: &[String],
    ) -> anyhow::Result<Node> {
        let log = tmp.path().join("node.log");
        let log_file = std::fs::File::create(&log)?;
        let child = command(netns)
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("up")
            .args(args)
            .env("RUST_LOG", "info,troupe_node=debug")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("spawn node {name}"))?;
        Ok(Node {
            name: name.to_owned(),
            netns: netns.map(str::to_owned),
            data_dir,
            log,
            child: Mutex::new(child),
            _tmp: tmp,
        })
    }

    /// The process id (of `ip netns exec` when in a namespace, which
    /// execs the node in place).
    pub fn pid(&self) -> u32 {
        self.child.lock().unwrap_or_else(|e| e.into_inner()).id()
    }

    /// Runs `troupe --data-dir <dir> --json <args>` in the node's namespace
    /// and returns what it printed and how it exited (for commands expected
    /// to be refused).
    ///
    /// # Errors
    /// If the command cannot be run.
    pub async fn cli(&self, args: &[&str]) -> std::io::Result<std::process::Output> {
        self.run_cli(true, args).await
    }

    /// Runs `troupe --data-dir <dir> --json <args>` in the node's namespace
    /// and parses its JSON output.
    ///
    /// # Errors
    /// If the command fails or prints no JSON; the error carries its stderr.
    pub async fn cli_json(&self, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let out = self.run_cli_ok(true, args).await?;
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// Runs `troupe --data-dir <dir> <args>` in the node's namespace and
    /// returns what it printed for a person (no `--json`).
    ///
    /// # Errors
    /// If the command fails; the error carries its stderr.
    pub async fn cli_words(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.run_cli_ok(false, args).await?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    async fn run_cli(&self, json: bool, args: &[&str]) -> std::io::Result<std::process::Output> {
        let mut cmd = tokio::process::Command::from(command(self.netns.as_deref()));
        cmd.arg("--data-dir").arg(&self.data_dir);
        if json {
            cmd.arg("--json");
        }
        cmd.args(args).output().await
    }

    /// [`Node::run_cli`], failing unless the command succeeded.
    async fn run_cli_ok(&self, json: bool, args: &[&str]) -> anyhow::Result<std::process::Output> {
        let out = self.run_cli(json, args).await?;
        anyhow::ensure!(
            out.status.success(),
            "{}: troupe {} failed ({}): {}",
            self.name,
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(out)
    }

    /// Waits until the node's local API answers, and returns its status.
    ///
    /// # Errors
    /// If it does not come up in time (the error includes its log).
    pub async fn ready(&self) -> anyhow::Result<serde_json::Value> {
        let r = wait_for(
            &format!("{} to answer status", self.name),
            START_DEADLINE,
            || async {
                let exited = self.try_wait();
                if let Ok(Some(status)) = exited {
                    return Ok(Err(format!("exited with {status}")));
                }
                self.cli_json(&["status"])
                    .await
                    .map(Ok)
                    .map_err(|e| e.to_string())
            },
        )
        .await;
        match r {
            Ok(Ok(status)) => Ok(status),
            Ok(Err(exit)) => anyhow::bail!("{} {exit}; log:\n{}", self.name, self.log()),
            Err(e) => anyhow::bail!("{e}; log of {}:\n{}", self.name, self.log()),
        }
    }

    /// The peer ids in `GET /v1/peers` → `connected`.
    ///
    /// # Errors
    /// If the CLI fails.
    pub async fn connected_peers(&self) -> anyhow::Result<Vec<String>> {
        let v = self.cli_json(&["peers"]).await?;
        Ok(ids(&v["connected"]))
    }

    fn lock_child(&self) -> std::sync::MutexGuard<'_, Child> {
        self.child.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn try_wait(&self) -> std::io::Result<Option<std::process::ExitStatus>> {
        self.lock_child().try_wait()
    }

    /// Everything the node logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Asks the node to stop (SIGTERM) and waits for it to exit.
    ///
    /// # Errors
    /// If it cannot be signalled or does not exit within the deadline.
    pub async fn stop(&self) -> anyhow::Result<std::process::ExitStatus> {
        let pid = self.lock_child().id().to_string();
        let ok = Command::new("kill")
            .args(["-TERM", &pid])
            .status()?
            .success();
        anyhow::ensure!(ok, "kill -TERM {pid} failed");
        wait_for(
            &format!("{} to exit", self.name),
            START_DEADLINE,
            || async {
                match self.try_wait() {
                    Ok(Some(s)) => Ok(s),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|p| p.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The `peer_id`s of a JSON array of peer objects.
pub fn ids(list: &serde_json::Value) -> Vec<String> {
    list.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["peer_id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::{cpu_secs, thread_cpu_secs};

    #[test]
    fn a_busy_thread_is_counted_under_its_own_name_only() {
        let me = std::process::id();
        let before = cpu_secs(me);
        let busy = std::thread::Builder::new()
            .name("cpu-probe".into())
            .spawn(move || {
                // Spin until the thread's own CPU shows 0.2 s (ticks are 10 ms).
                let started = std::time::Instant::now();
                while thread_cpu_secs(me, "cpu-probe") < 0.2 {
                    assert!(started.elapsed().as_secs() < 30, "never counted");
                    std::hint::black_box((0..10_000u64).sum::<u64>());
                }
            })
            .unwrap();
        busy.join().unwrap();
        // Gone threads leave no entry; a name no thread has counts nothing.
        assert_eq!(thread_cpu_secs(me, "no-such-thread"), 0.0);
        assert!(cpu_secs(me) - before >= 0.2);
    }
}
