// Diagnostics (with their source line and help) are built on the error path only.
#![allow(clippy::result_large_err)]

//! twelve: deploy and operate 12-factor web apps. One binary, many roles.

use std::process::ExitCode;

use clap::Parser;

mod cli;
mod cmd;
mod output;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Init { profile, name, dir } => cmd::init::run(profile, name, &dir),
        cli::Command::Render {
            dir,
            scenario,
            unit,
            format,
            reveal,
            charm_dir,
        } => cmd::render::run(&dir, scenario.as_deref(), unit, format, reveal, charm_dir),
        cli::Command::Pebble(args) => return twelve_pebble::cli::run(args),
        cli::Command::App(cmd) => cmd::app::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            output::print_error(&e);
            ExitCode::FAILURE
        }
    }
}
