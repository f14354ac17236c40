//! Every verb of the CLI is defined here, in one place; help text and docs derive from it.

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "twelve",
    version,
    about = "Deploy and operate 12-factor web apps",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The Pebble-compatible unit supervisor and its client commands.
    Pebble(twelve_pebble::cli::PebbleArgs),
}
