// Diagnostics are built on the error path only.
#![allow(clippy::result_large_err)]

//! twelve on Kubernetes: the plan of an app (twelve-charm's `plan_unit`) rendered as
//! Kubernetes objects, and applied to an API server with server-side apply. Kubernetes is
//! the distributed engine; twelve does not invent one (no operator, no CRDs, no images).

pub mod apply;
pub mod kubeconfig;
#[cfg(feature = "mock")]
pub mod mock;
pub mod render;
mod tls;

pub use apply::{apply_all, cluster_secret_key, ApplyError, ApplyOptions, Client, Target};
pub use render::{render, RenderError, RenderOptions, Rendered};
