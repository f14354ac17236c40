//! twelve: deploy and operate 12-factor web apps. One binary, many roles.

use std::process::ExitCode;

use clap::Parser;

mod cli;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli.command {
        cli::Command::Pebble(args) => twelve_pebble::cli::run(args),
    }
}
