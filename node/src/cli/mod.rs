//! The command line: raw arguments ([`args`]), the validated configuration
//! ([`config`]), the operations commands' CLI side ([`operations`]), progress
//! for long work ([`progress`]), and errors turned into sentences and exit codes ([`report`]).

pub mod args;
pub mod commands;
pub mod config;
pub mod lifecycle;
pub mod operations;
pub mod progress;
pub mod report;

pub use args::Cli;
pub use config::{Config, UpConfig};
pub use report::Report;
