//! `twelve render`: the plan of a unit, computed by twelve-charm from the project and a
//! scenario, with no controller, network or processes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use indexmap::IndexMap;
use serde_json::{json, Value};
use twelve_charm::scenario::parse_scenario;
use twelve_charm::{plan_unit, UnitPlan};
use twelve_project::{Diagnostic, LoadOptions, PaasCharmLine, Project};

use crate::cli::Format;
use crate::output::{print_notes, CliResult};

pub fn run(
    dir: &Path,
    scenario: Option<&Path>,
    unit: Option<u32>,
    format: Format,
    reveal: bool,
    charm_dir: Option<PathBuf>,
    paas_charm: Option<PaasCharmLine>,
) -> CliResult<ExitCode> {
    let mut project = Project::load_with(dir, &LoadOptions { charm_dir })?;
    if let Some(line) = paas_charm {
        project.paas_charm = line;
    }
    print_notes(&project.notes);
    let (file, src) = match scenario {
        Some(p) => {
            let src = std::fs::read_to_string(p).map_err(|e| {
                Diagnostic::error(format!("cannot read scenario {}: {e}", p.display()))
            })?;
            (p.to_path_buf(), src)
        }
        None => (PathBuf::from("<no scenario>"), String::new()),
    };
    let mut state = parse_scenario(&project, &file, &src)?;
    if let Some(u) = unit {
        if !state.units.contains(&u) {
            if scenario.is_some() && src.contains("units:") {
                return Err(Diagnostic::error(format!(
                    "unit {u} is not among the scenario's live units {:?}",
                    state.units
                ))
                .in_file(&file)
                .into());
            }
            state.units = vec![u];
        }
        state.unit = u;
    }
    let plan = plan_unit(&project, &state);
    let doc = to_document(&state.app, state.unit, &plan, reveal);
    let text = match format {
        Format::Json => serde_json::to_string_pretty(&doc).map_err(anyhow::Error::from)?,
        Format::Yaml => {
            serde_saphyr::to_string(&doc).map_err(|e| anyhow::anyhow!("cannot write YAML: {e}"))?
        }
    };
    println!("{}", text.trim_end());
    Ok(ExitCode::SUCCESS)
}

/// The public render document (docs/render.md): status, services, migration, actions, and
/// the rest of the plan. Secret values are redacted unless `reveal`.
pub fn to_document(app: &str, unit: u32, plan: &UnitPlan, reveal: bool) -> Value {
    let hide = |s: &str| {
        if reveal {
            s.to_string()
        } else {
            plan.redact(s)
        }
    };
    let mut services = serde_json::Map::new();
    for (name, s) in &plan.services {
        let mut v = serde_json::to_value(s).unwrap_or(Value::Null);
        if let Some(obj) = v.as_object_mut() {
            obj.shift_remove("override");
            if let Some(env) = obj.get_mut("environment").and_then(Value::as_object_mut) {
                for val in env.values_mut() {
                    if let Value::String(text) = val {
                        *text = hide(text);
                    }
                }
            }
        }
        services.insert(name.clone(), v);
    }
    let files: IndexMap<&String, String> = plan.files.iter().map(|(k, v)| (k, hide(v))).collect();
    json!({
        "app": app,
        "unit": format!("{app}/{unit}"),
        "status": {"state": plan.status.state, "message": plan.status.message, "services": plan.status.services},
        "services": services,
        "checks": plan.checks,
        "files": files,
        "migration": plan.migration,
        "actions": plan.actions,
        "ports": plan.ports,
        "scheduler-unit": plan.scheduler_unit,
        "notes": plan.notes,
    })
}
