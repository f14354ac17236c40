//! The controller: desired state in an embedded store (SQLite), an API on a unix socket,
//! and the reconciler that turns apps into units supervised by `twelve pebble`.

pub mod acme;
pub mod actions;
pub mod api;
pub mod backing;
pub mod backups;
pub mod cgroup;
mod changes;
pub mod client;
pub mod controller;
pub mod edge;
pub mod home;
pub mod ingress;
pub mod migration;
pub mod model;
pub mod planner;
pub mod releases;
mod rollout;
pub mod secrets;
pub mod snapshot;
pub mod store;
pub mod substrate;
pub mod vault;
pub mod web;

pub use api::{ApiError, AppStatus, Request, UnitStatus};
pub use client::ControllerClient;
pub use controller::Controller;
pub use home::Home;
