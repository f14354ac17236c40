// Diagnostics (with their source line and help) are built on the error path only.
#![allow(clippy::result_large_err)]

//! twelve: deploy and operate 12-factor web apps. One binary, many roles.

use std::process::ExitCode;

use clap::Parser;

mod cli;
mod cmd;
mod output;

/// mimalloc rather than glibc's malloc: the ingress allocates and frees small buffers for
/// every request on two threads, and spends ~6% less CPU per request with it
/// (bench/RESULTS.md, ingress round 3).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // A unit supervisor parses its own arguments only: it is the one long-lived role there
    // is one of per unit, and building the whole command tree touches code it never needs.
    if std::env::args_os().nth(1).is_some_and(|a| a == "pebble") {
        let cli::PebbleOnly::Pebble(args) = cli::PebbleCli::parse().command;
        return twelve_pebble::cli::run(args);
    }
    let cli = cli::Cli::parse();
    let daemon = matches!(
        &cli.command,
        cli::Command::Pebble(_)
            | cli::Command::Ingress(_)
            | cli::Command::StatsdExporter(_)
            | cli::Command::App(cli::AppCommand::Controller { .. })
    );
    if !daemon {
        // `twelve status | head` ends quietly, as other command-line tools do; daemons keep
        // ignoring SIGPIPE so a closed client socket never kills them.
        // SAFETY: setting a signal disposition to its default at start-up, before threads.
        unsafe {
            let _ = nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGPIPE,
                nix::sys::signal::SigHandler::SigDfl,
            );
        }
    }
    let result = match cli.command {
        cli::Command::Init { profile, name, dir } => cmd::init::run(profile, name, &dir),
        cli::Command::Render {
            dir,
            scenario,
            unit,
            format,
            reveal,
            charm_dir,
            paas_charm,
        } => cmd::render::run(
            &dir,
            scenario.as_deref(),
            unit,
            format,
            reveal,
            charm_dir,
            paas_charm,
        ),
        cli::Command::K8s { command } => cmd::k8s::run(command),
        cli::Command::Pebble(args) => return twelve_pebble::cli::run(args),
        cli::Command::Ingress(twelve_ingress::IngressArgs {
            command:
                twelve_ingress::IngressCommand::Configure {
                    http,
                    https,
                    no_https,
                },
        }) => cmd::edge::ingress_configure(http, https, no_https),
        cli::Command::Ingress(args) => return twelve_ingress::cli_main(args),
        cli::Command::StatsdExporter(args) => return twelve_statsd::cli_main(args),
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
