//! The unit supervisor (`twelve pebble`). See reference/pebble.md.

pub mod cli;
