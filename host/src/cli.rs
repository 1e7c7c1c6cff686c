//! The command line: `portcullis serve` and `portcullis check` (and, as the gateway grows,
//! `audit`, `approvals`, …).
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Portcullis: an identity-aware gateway with sandboxed WebAssembly policy plugins.
#[derive(Debug, Parser)]
#[command(name = "portcullis", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway until SIGTERM or SIGINT, then drain in-flight requests.
    Serve {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration and load every plugin it names; report every problem.
    Check {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
}
