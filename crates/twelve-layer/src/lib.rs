//! Pebble's layer format, as a pure library: parse layers, merge them into a plan, and
//! validate the plan. No I/O, no processes.
//!
//! Used by `twelve-project` (the `services:` of rockcraft.yaml are layer services) and by
//! `twelve-pebble` (the unit supervisor).

mod command;
mod duration;
mod layer;
mod plan;
mod scalar;

pub use command::{quote_word, Command, CommandError};
pub use duration::{format_go_duration, parse_go_duration, GoDuration};
pub use layer::*;
pub use plan::*;

#[cfg(test)]
mod tests;
