//! `twelve ingress` without the rest of twelve, for the benchmark and for trying it alone:
//! `cargo run --release -p twelve-ingress --example ingress -- run --dir /tmp/ingress`.

use clap::Parser;

/// The twelve binary's allocator, so that the benchmark measures what twelve runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "ingress")]
struct Cli {
    #[command(flatten)]
    args: twelve_ingress::IngressArgs,
}

fn main() -> std::process::ExitCode {
    twelve_ingress::cli_main(Cli::parse().args)
}
