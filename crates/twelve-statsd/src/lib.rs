//! A statsd exporter in the manner of Prometheus' `statsd_exporter`, built into twelve so
//! that Flask and Django units get the metrics the 12-factor charms give them without an
//! external binary.
//!
//! - [`line`]: the statsd line protocol (counters with sample rates, gauges with `+`/`-`
//!   deltas, timers `ms`, histograms `h`, distributions `d`, several values per line,
//!   DogStatsD `|#tag:value` tags), parsed as `statsd_exporter` parses it.
//! - [`mapping`]: the gunicorn mapping of the charms' `statsd-mapping.conf` with the
//!   framework prefix; other names have invalid characters turned into `_`.
//! - [`registry`]: counters, gauges and summaries (quantiles 0.5, 0.9, 0.99 over a
//!   10-minute window, `statsd_exporter`'s default for timers), in the Prometheus text
//!   exposition format.
//! - [`server`]: the UDP and TCP statsd listeners and the HTTP `/metrics` endpoint.
//!
//! The parsing, mapping and registry are pure; only `server` does I/O.

pub mod cli;
pub mod line;
pub mod mapping;
pub mod registry;
pub mod server;

pub use cli::{cli_main, StatsdArgs};
pub use line::{parse_line, parse_packet, Event, Value};
pub use mapping::{escape_metric_name, Mapper};
pub use registry::Registry;
pub use server::{serve, Config};
