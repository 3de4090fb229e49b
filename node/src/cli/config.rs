//! Raw arguments checked and resolved into a [`Config`]: every flag problem is
//! found here, before anything starts, and reported in words.

use std::path::{Path, PathBuf};

use libp2p::Multiaddr;
use troupe_protocol::workspace::WorkspaceSecret;

use super::args::{GlobalArgs, UpArgs};

/// The default listen address for users: every interface, any free port.
pub const DEFAULT_LISTEN: &str = "/ip4/0.0.0.0/tcp/0";

/// Settings every command shares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The data dir (key, store, API files).
    pub data_dir: PathBuf,
    /// JSON output for read commands.
    pub json: bool,
}

/// Settings of `troupe up`.
#[derive(Clone, Debug)]
pub struct UpConfig {
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Addresses to dial and keep dialling.
    pub peers: Vec<Multiaddr>,
    /// Interfaces mDNS may use; empty = all.
    pub interfaces: Vec<String>,
    /// mDNS off.
    pub no_mdns: bool,
    /// Local API port (0 = any).
    pub api_port: u16,
    /// Workspaces advertised over mDNS (interim, see `--workspace-secrets`).
    pub workspaces: Vec<WorkspaceSecret>,
}

/// A flag that cannot be used as given.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// No `--data-dir` and no home directory to put the default one in.
    #[error("no data directory: pass --data-dir, or set HOME")]
    NoDataDir,
    /// A multiaddr flag did not parse.
    #[error(
        "{flag} {value:?} is not a valid address ({reason}); write it like /ip4/192.168.1.20/tcp/4001"
    )]
    BadAddr {
        /// The flag.
        flag: &'static str,
        /// What was given.
        value: String,
        /// Parser message.
        reason: String,
    },
    /// `--listen` must be TCP (the only transport this build has).
    #[error("--listen {value:?} is not a TCP address; write it like /ip4/0.0.0.0/tcp/4001")]
    NotTcp {
        /// What was given.
        value: String,
    },
    /// `--interface` together with `--no-mdns` contradicts itself.
    #[error("--interface restricts mDNS, but --no-mdns turns it off; use one of them")]
    InterfaceWithoutMdns,
    /// An empty interface name.
    #[error("--interface needs a name such as eth0 or wlan0")]
    EmptyInterface,
    /// The workspace secrets file could not be read or has a bad line.
    #[error("cannot use the workspace secrets file {path}: {reason}")]
    Secrets {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl Config {
    /// Resolves the shared flags.
    ///
    /// # Errors
    /// [`ConfigError::NoDataDir`].
    pub fn from_args(g: &GlobalArgs) -> Result<Self, ConfigError> {
        let data_dir = match &g.data_dir {
            Some(d) => d.clone(),
            None => default_data_dir().ok_or(ConfigError::NoDataDir)?,
        };
        Ok(Config {
            data_dir,
            json: g.json,
        })
    }
}

impl UpConfig {
    /// Checks `troupe up`'s flags.
    ///
    /// # Errors
    /// [`ConfigError`] naming the flag at fault.
    pub fn from_args(a: &UpArgs) -> Result<Self, ConfigError> {
        let listen_raw: Vec<String> = if a.listen.is_empty() {
            vec![DEFAULT_LISTEN.to_owned()]
        } else {
            a.listen.clone()
        };
        let listen = listen_raw
            .iter()
            .map(|v| {
                let m = parse_addr("--listen", v)?;
                if !m
                    .iter()
                    .any(|p| matches!(p, libp2p::multiaddr::Protocol::Tcp(_)))
                {
                    return Err(ConfigError::NotTcp { value: v.clone() });
                }
                Ok(m)
            })
            .collect::<Result<_, _>>()?;
        let peers = a
            .peers
            .iter()
            .map(|v| parse_addr("--peer", v))
            .collect::<Result<_, _>>()?;
        if a.no_mdns && !a.interfaces.is_empty() {
            return Err(ConfigError::InterfaceWithoutMdns);
        }
        if a.interfaces.iter().any(|i| i.trim().is_empty()) {
            return Err(ConfigError::EmptyInterface);
        }
        let workspaces = match &a.workspace_secrets {
            Some(p) => read_secrets(p)?,
            None => Vec::new(),
        };
        Ok(UpConfig {
            listen,
            peers,
            interfaces: a.interfaces.clone(),
            no_mdns: a.no_mdns,
            api_port: a.api_port,
            workspaces,
        })
    }
}

fn parse_addr(flag: &'static str, v: &str) -> Result<Multiaddr, ConfigError> {
    v.parse()
        .map_err(|e: libp2p::multiaddr::Error| ConfigError::BadAddr {
            flag,
            value: v.to_owned(),
            reason: e.to_string(),
        })
}

fn read_secrets(path: &Path) -> Result<Vec<WorkspaceSecret>, ConfigError> {
    let err = |reason: String| ConfigError::Secrets {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    text.lines()
        .map(str::trim)
        .enumerate()
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .map(|(i, l)| WorkspaceSecret::from_hex(l).map_err(|e| err(format!("line {}: {e}", i + 1))))
        .collect()
}

/// The per-user data dir: `$XDG_DATA_HOME/troupe`, else `~/.local/share/troupe`
/// (`~/Library/Application Support/troupe` on macOS, `%APPDATA%\troupe` on Windows).
pub fn default_data_dir() -> Option<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if cfg!(windows) {
        return env("APPDATA").map(|d| d.join("troupe"));
    }
    if cfg!(target_os = "macos") {
        return env("HOME").map(|h| h.join("Library/Application Support/troupe"));
    }
    env("XDG_DATA_HOME")
        .map(|d| d.join("troupe"))
        .or_else(|| env("HOME").map(|h| h.join(".local/share/troupe")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::args::{Cli, Command};
    use clap::Parser;

    fn up(args: &[&str]) -> Result<UpConfig, ConfigError> {
        let mut argv = vec!["troupe", "up"];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).unwrap();
        let Command::Up(a) = cli.command else {
            unreachable!()
        };
        UpConfig::from_args(&a)
    }

    #[test]
    fn defaults_listen_everywhere_with_mdns_on() {
        let c = up(&[]).unwrap();
        assert_eq!(c.listen, vec![DEFAULT_LISTEN.parse::<Multiaddr>().unwrap()]);
        assert!(!c.no_mdns && c.interfaces.is_empty() && c.peers.is_empty());
    }

    #[test]
    fn bad_flags_are_named_in_the_error() {
        assert!(matches!(
            up(&["--peer", "10.0.0.1:4001"]),
            Err(ConfigError::BadAddr { flag: "--peer", .. })
        ));
        assert!(matches!(
            up(&["--listen", "/ip4/127.0.0.1/udp/1"]),
            Err(ConfigError::NotTcp { .. })
        ));
        assert_eq!(
            up(&["--no-mdns", "--interface", "lo"]).unwrap_err(),
            ConfigError::InterfaceWithoutMdns
        );
        assert_eq!(
            up(&["--interface", " "]).unwrap_err(),
            ConfigError::EmptyInterface
        );
    }

    #[test]
    fn repeatable_flags_collect() {
        let c = up(&[
            "--interface",
            "lo",
            "--interface",
            "veth0",
            "--peer",
            "/ip4/127.0.0.1/tcp/1",
        ])
        .unwrap();
        assert_eq!(c.interfaces, vec!["lo", "veth0"]);
        assert_eq!(c.peers.len(), 1);
    }

    #[test]
    fn secrets_file_skips_comments_and_reports_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("secrets");
        let s = WorkspaceSecret([5; 32]);
        std::fs::write(&f, format!("# hamlet\n{}\n\n", s.to_hex())).unwrap();
        assert_eq!(read_secrets(&f).unwrap(), vec![s]);
        std::fs::write(&f, "nothex\n").unwrap();
        assert!(
            matches!(read_secrets(&f), Err(ConfigError::Secrets { reason, .. }) if reason.starts_with("line 1"))
        );
    }
}
