// Diagnostics (with their source line and help) are built on the error path only.
#![allow(clippy::result_large_err)]

//! The 12-factor charm rules as a pure function: (project, desired state, unit) -> the plan
//! that unit must run and the status it must show. No I/O of any kind: the same plan drives
//! the local substrate and Kubernetes, and `twelve render` shows it.

pub mod config;
pub mod cos;
pub mod integrations;
pub mod metrics;
pub mod plan;
pub mod scenario;
pub mod state;
pub mod status;

pub use plan::{
    is_scheduler, is_worker, plan_unit, ActionPlan, ActionRun, Migration, Ports, UnitPlan, REDACTED,
};
pub use state::{AppState, ProxySettings, SecretView, UnitNetwork};
pub use status::{ServicesAction, State, Status};
