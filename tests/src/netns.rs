//! Network namespaces the test creates and removes: a bridge namespace and one
//! namespace per node, joined by veth pairs.
//!
//! mDNS in tests must never leave through a real interface. Inside these
//! namespaces the only interfaces are `lo` and the veth the test made, so
//! multicast reaches the other nodes on the bridge and nothing else.
//! Everything is removed on drop, also when the test fails or panics.
//!
//! Needs root and iproute2 (`ip`); [`Lab::new`] returns `Skip` with a reason
//! otherwise, and the test prints it and passes without running (CI runs as
//! root with iproute2 installed).

use std::process::Command;

/// The interface each node namespace gets (its end of the veth pair).
pub const NODE_IF: &str = "tv0";

/// Why a namespace test cannot run here.
#[derive(Debug)]
pub struct Skip(pub String);

/// A bridge namespace plus node namespaces; all deleted on drop.
#[derive(Debug)]
pub struct Lab {
    bridge_ns: String,
    nodes: Vec<String>,
    prefix: String,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip").args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

pub(crate) fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

impl Lab {
    /// Creates the bridge namespace. `tag` keeps names unique per test; the pid
    /// keeps them unique per run.
    ///
    /// # Errors
    /// `Ok(Err(Skip))` when not root or `ip` is missing; `Err` when creation fails.
    pub fn new(tag: &str) -> anyhow::Result<Result<Lab, Skip>> {
        if !cfg!(target_os = "linux") {
            return Ok(Err(Skip("network namespaces need Linux".into())));
        }
        if !is_root() {
            return Ok(Err(Skip(
                "network namespace tests need root (CI runs them as root)".into(),
            )));
        }
        if Command::new("ip").arg("-V").output().is_err() {
            return Ok(Err(Skip("`ip` (iproute2) is not installed".into())));
        }
        let prefix = format!("tr{}{}", tag, std::process::id());
        let bridge_ns = format!("{prefix}-br");
        let lab = Lab {
            bridge_ns: bridge_ns.clone(),
            nodes: Vec::new(),
            prefix,
        };
        ip(&["netns", "add", &bridge_ns])?;
        ip(&[
            "-n",
            &bridge_ns,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        ip(&["-n", &bridge_ns, "link", "set", "br0", "up"])?;
        Ok(Ok(lab))
    }

    /// Adds a node namespace with `tv0` at `10.99.0.<index+1>/24` on the bridge;
    /// returns the namespace name.
    ///
    /// # Errors
    /// When an `ip` command fails.
    pub fn add_node(&mut self) -> anyhow::Result<String> {
        let i = self.nodes.len();
        let ns = format!("{}-n{i}", self.prefix);
        ip(&["netns", "add", &ns])?;
        self.nodes.push(ns.clone());
        let port = format!("p{i}");
        ip(&[
            "-n",
            &ns,
            "link",
            "add",
            NODE_IF,
            "type",
            "veth",
            "peer",
            "name",
            &port,
            "netns",
            &self.bridge_ns,
        ])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("10.99.0.{}/24", i + 1),
            "dev",
            NODE_IF,
        ])?;
        ip(&["-n", &ns, "link", "set", NODE_IF, "multicast", "on", "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        ip(&["-n", &self.bridge_ns, "link", "set", &port, "master", "br0"])?;
        ip(&["-n", &self.bridge_ns, "link", "set", &port, "up"])?;
        Ok(ns)
    }

    /// The interface names present in namespace `ns` (to show a test that no
    /// real interface is reachable from it).
    ///
    /// # Errors
    /// When `ip` fails.
    pub fn interfaces(ns: &str) -> anyhow::Result<Vec<String>> {
        let out = Command::new("ip")
            .args(["-n", ns, "-o", "link", "show"])
            .output()?;
        anyhow::ensure!(out.status.success(), "ip link show failed");
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_owned())
            .collect())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.nodes.iter().chain(std::iter::once(&self.bridge_ns)) {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}
