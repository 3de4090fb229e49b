//! The `troupe` command.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "troupe: the node is not built yet.\n\
         What happened: this build has the protocol core only; networking, the daemon and the CLI are still to come.\n\
         What you can do: run the tests (`cargo test --workspace`) to exercise what exists."
    );
    ExitCode::from(2)
}
