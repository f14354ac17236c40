//! The unit supervisor (`twelve pebble`): a Pebble-compatible daemon that runs one
//! unit's services from layers, with an HTTP API on a unix socket, and its client.
//! See docs/pebble.md and reference/pebble.md.
//!
//! Module map, from pure to effectful:
//! - `state`: the service state machine (pure, table-tested);
//! - `logs`: per-service ring buffers; `forward`: log targets (Loki, OpenTelemetry);
//!   `timefmt`: Pebble's timestamps;
//! - `layers`: the layer stack on disk and added over the API (on `twelve-layer`);
//! - `process`: spawning, identities, signals, orphan reaping;
//! - `service`: the per-service driver task that runs the state machine;
//! - `manager`: plan, services and the operations; `checks`; `changes`;
//! - `api` (server), `client`, `daemon` (`pebble run`), `cli`.

pub mod api;
pub mod changes;
pub mod checks;
pub mod cli;
pub mod client;
pub mod daemon;
pub mod forward;
pub mod layers;
pub mod logs;
pub mod manager;
pub mod process;
pub mod service;
pub mod state;
pub mod timefmt;
pub mod types;

pub use client::Client;
pub use types::{
    ChangeInfo, CheckInfo, ExecRequest, ExecResult, LogEntry, LogTargetInfo, ServiceInfo,
};

/// Writes one of the daemon's own log lines to stderr, as Pebble:
/// `2022-10-26T01:18:26.904Z [pebble] Started daemon.` Errors are ignored: the daemon
/// must outlive a closed stderr.
pub(crate) fn log(msg: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{} [pebble] {msg}", timefmt::now());
}
