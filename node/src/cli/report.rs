//! Errors as the user reads them: what happened, what was affected, what to
//! do, plus the process exit code.
//!
//! Exit codes: 0 ok; 1 the command failed while running; 2 the command line
//! or configuration is wrong; 3 the command is not available in this build;
//! 4 the command needs a running node and none answers.

use std::process::ExitCode;

use super::config::ConfigError;

/// A failure explained in three sentences.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// What happened.
    pub what_happened: String,
    /// What was (and was not) affected.
    pub affected: String,
    /// What the user can do about it.
    pub what_to_do: String,
    /// Process exit code.
    pub code: u8,
}

/// Exit code: the command failed while running.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: wrong command line or configuration.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: not available in this build.
pub const EXIT_UNAVAILABLE: u8 = 3;
/// Exit code: needs a running node.
pub const EXIT_NO_DAEMON: u8 = 4;

impl Report {
    /// A report from its three sentences.
    pub fn new(
        code: u8,
        what_happened: impl Into<String>,
        affected: impl Into<String>,
        what_to_do: impl Into<String>,
    ) -> Self {
        Report {
            what_happened: what_happened.into(),
            affected: affected.into(),
            what_to_do: what_to_do.into(),
            code,
        }
    }

    /// For commands that need the store or the sync engine, which this build
    /// does not contain yet. Says so plainly instead of pretending.
    pub fn not_available(command: &str) -> Self {
        Report::new(
            EXIT_UNAVAILABLE,
            format!(
                "`troupe {command}` is not available in this build yet: it needs the store and the sync engine, which are not wired into the node."
            ),
            "Nothing was read or changed.",
            "Use `troupe init`, `troupe up`, `troupe status` and `troupe peers`, which work in this build.",
        )
    }

    /// For commands that talk to a running node when none answers.
    pub fn no_daemon(command: &str, data_dir: &std::path::Path) -> Self {
        Report::new(
            EXIT_NO_DAEMON,
            format!(
                "`troupe {command}` needs a running node, and none answers for {}.",
                data_dir.display()
            ),
            "Nothing was read or changed.",
            format!(
                "Start one with `troupe up --data-dir {}` (in another terminal), then try again.",
                data_dir.display()
            ),
        )
    }

    /// For a flag problem.
    pub fn config(e: &ConfigError) -> Self {
        Report::new(
            EXIT_USAGE,
            format!("The command line could not be used: {e}."),
            "Nothing was started or changed.",
            "Fix the flag and run the command again; `troupe help` lists every option.",
        )
    }

    /// The exit code as the process returns it.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code)
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "What happened: {}", self.what_happened)?;
        writeln!(f, "What was affected: {}", self.affected)?;
        write!(f, "What you can do: {}", self.what_to_do)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_print_three_labelled_sentences() {
        let r = Report::not_available("set");
        let text = r.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("What happened: `troupe set` is not available"));
        assert!(lines[1].starts_with("What was affected: "));
        assert!(lines[2].starts_with("What you can do: "));
        assert_eq!(r.code, EXIT_UNAVAILABLE);
    }

    #[test]
    fn config_errors_keep_their_detail() {
        let r = Report::config(&ConfigError::InterfaceWithoutMdns);
        assert!(r.what_happened.contains("--no-mdns"));
        assert_eq!(r.code, EXIT_USAGE);
    }
}
