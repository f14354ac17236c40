// A Diagnostic carries a source line and help text; it is built on the error path only.
#![allow(clippy::result_large_err)]

//! Reading a 12-factor project: `rockcraft.yaml`, `charmcraft.yaml` and `paas-config.yaml`
//! as rockcraft, charmcraft and paas-charm read them, the framework extensions folded in,
//! and `init` templates. Knows nothing of processes or the network.

pub mod charmcraft;
pub mod cos;
pub mod diagnostic;
pub mod framework;
pub mod init;
pub mod paas_config;
pub mod project;
mod rockcraft;

pub use charmcraft::{ActionDef, ActionParam, ConfigOption, OptionType, Relation};
pub use cos::{CosAssets, DashboardFile, Rule, RuleFile, RuleGroup};
pub use diagnostic::{Diagnostic, Loc, Severity};
pub use framework::{Framework, ALL_FRAMEWORKS};
pub use paas_config::{PaasCharmLine, PaasConfig};
pub use project::{LoadOptions, Project, ProjectFiles};
