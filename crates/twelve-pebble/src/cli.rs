//! `twelve pebble ...`: the daemon and the client commands.

use std::process::ExitCode;

/// Arguments of `twelve pebble`.
#[derive(Debug, clap::Args)]
pub struct PebbleArgs {
    #[command(subcommand)]
    pub command: PebbleCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum PebbleCommand {
    /// Run the supervisor daemon.
    Run {
        #[arg(long)]
        dir: std::path::PathBuf,
        #[arg(long)]
        hold: bool,
    },
}

pub fn run(args: PebbleArgs) -> ExitCode {
    let _ = args;
    eprintln!("error: twelve pebble is not built yet");
    ExitCode::FAILURE
}
