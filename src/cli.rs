//! Command line: `serve` (the default), `migrate`, `check-config`, `healthcheck`.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "mkio-relay",
    version,
    about = "Durable MK.IO webhook receiver and local state API"
)]
pub struct Cli {
    /// A TOML file layered over the built-in defaults (environment variables still win).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (the default).
    Serve,
    /// Create or upgrade the database schema, then exit.
    Migrate,
    /// Validate the configuration, print it with secrets masked, then exit.
    CheckConfig,
    /// Exit 0 when the local daemon's /readyz (on ingest.listen) answers 200; for HEALTHCHECK.
    Healthcheck,
}
