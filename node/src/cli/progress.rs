//! Progress for long work (scrub, export, gc, import, jobs): a spinner with
//! the elapsed time on a terminal, plain lines on stderr otherwise (logs and
//! scripts get one "started" and one "finished" line, nothing animated).
//! `--json` keeps stdout clean either way: progress only goes to stderr.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Runs `work` while showing `label` as progress.
pub fn around<T, E>(label: &str, work: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    let started = Instant::now();
    if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new_spinner();
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
            bar.set_style(style);
        }
        bar.set_message(label.to_owned());
        bar.enable_steady_tick(Duration::from_millis(120));
        let out = work();
        let how = if out.is_ok() { "done" } else { "failed" };
        bar.finish_with_message(format!("{label}: {how}"));
        out
    } else {
        eprintln!("{label}...");
        let out = work();
        let how = if out.is_ok() { "done" } else { "failed" };
        eprintln!("{label}: {how} in {:.1}s", started.elapsed().as_secs_f64());
        out
    }
}
