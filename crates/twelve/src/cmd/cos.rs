//! `twelve metrics prometheus-config | loki-rules | dashboards`: the deployed apps' COS
//! assets (the framework's defaults and each charm's `cos_custom/`), as paas-charm hands
//! them to Prometheus, Loki and Grafana, written where those read them.

use std::path::{Path, PathBuf};

use anyhow::Context;
use twelve_charm::cos;
use twelve_controller::{ControllerClient, Home, Request};
use twelve_project::{Diagnostic, LoadOptions, Project};

use crate::output::CliResult;

/// The first line of every file twelve writes here: files without it are never removed.
const HEADER: &str = "# Written by twelve";

/// The project of each deployed app (its current release's snapshot), by app name.
fn deployed() -> CliResult<Vec<(String, Project)>> {
    let c = ControllerClient::new(Home::from_env());
    let status = c.call(&Request::Status { app: None })?;
    let mut out = vec![];
    for a in status["apps"].as_array().into_iter().flatten() {
        let Some(name) = a["name"].as_str() else {
            continue;
        };
        let r = c.call(&Request::ExportState {
            app: name.to_string(),
        })?;
        let dir = r["project_dir"].as_str().unwrap_or_default();
        let project = Project::load_with(
            Path::new(dir),
            &LoadOptions {
                charm_dir: r["charm_dir"].as_str().map(PathBuf::from),
            },
        )
        .map_err(|d| {
            Diagnostic::error(format!("the project of {name}: {}", d.message))
                .with_help(d.help.unwrap_or_else(|| "fix it and deploy again".into()))
        })?;
        out.push((name.to_string(), project));
    }
    Ok(out)
}

fn absolute(dir: &Path) -> CliResult<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(std::fs::canonicalize(dir).with_context(|| format!("cannot resolve {}", dir.display()))?)
}

/// Writes `name` in `dir` (readable by all: Prometheus and Loki run as users of their own).
fn write(dir: &Path, name: &str, text: &str) -> CliResult<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644));
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
    Ok(path)
}

/// Removes the files of `dir` ending with `suffix` that twelve wrote and that are not
/// in `keep` (apps removed since, or without rules now).
fn remove_stale(dir: &Path, suffix: &str, keep: &[String]) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.ends_with(suffix) || keep.contains(&name) {
            continue;
        }
        let ours = std::fs::read_to_string(e.path())
            .map(|t| t.starts_with(HEADER) || t.contains("\"twelve-written\""))
            .unwrap_or(false);
        if ours {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Writes `<app>.rules.yml` per app to `dir`; returns the `rule_files:` block naming them.
pub fn prometheus_rules(dir: &Path) -> CliResult<String> {
    let dir = absolute(dir)?;
    let mut keep = vec![];
    for (app, project) in deployed()? {
        let groups = cos::prometheus_rules(&project, &app)
            .map_err(|m| Diagnostic::error(format!("the alert rules of {app}: {m}")))?;
        if groups.is_empty() {
            continue;
        }
        let name = format!("{app}.rules.yml");
        let text = format!(
            "{HEADER} (twelve metrics prometheus-config): the alert rules of {app}, the {} framework's and its charm's cos_custom/prometheus_alert_rules.\n{}",
            project.framework,
            cos::rules_yaml(&groups)
        );
        write(&dir, &name, &text)?;
        keep.push(name);
    }
    remove_stale(&dir, ".rules.yml", &keep);
    let glob = serde_json::to_string(&format!("{}/*.rules.yml", dir.display()))
        .context("the rules directory's name")?;
    Ok(format!(
        "# Alert rules of twelve's apps (each framework's defaults and each charm's\n\
         # cos_custom/prometheus_alert_rules), one file per app. Prometheus reads them when\n\
         # it starts and on reload: run this command again after a deploy that changes\n\
         # them, then reload Prometheus (SIGHUP, or POST /-/reload).\n\
         rule_files:\n  - {glob}\n"
    ))
}

/// Writes `<dir>/<tenant>/<app>.yaml` per app with Loki alert rules.
pub fn loki_rules(dir: &Path, tenant: &str) -> CliResult<()> {
    if tenant.is_empty() || tenant.contains(['/', '\\']) || tenant.starts_with('.') {
        return Err(Diagnostic::error(format!("invalid tenant {tenant:?}"))
            .with_help("a Loki tenant (X-Scope-OrgID), `fake` when Loki runs without auth")
            .into());
    }
    let dir = absolute(&dir.join(tenant))?;
    let mut keep = vec![];
    for (app, project) in deployed()? {
        let groups = cos::loki_rules(&project, &app)
            .map_err(|m| Diagnostic::error(format!("the Loki rules of {app}: {m}")))?;
        if groups.is_empty() {
            continue;
        }
        let name = format!("{app}.yaml");
        let text = format!(
            "{HEADER} (twelve metrics loki-rules): the Loki alert rules of {app}'s charm (cos_custom/loki_alert_rules).\n{}",
            cos::rules_yaml(&groups)
        );
        let path = write(&dir, &name, &text)?;
        println!("{}", path.display());
        keep.push(name);
    }
    remove_stale(&dir, ".yaml", &keep);
    Ok(())
}

/// Writes each app's dashboards as `<dir>/<app>-<name>.json`.
pub fn dashboards(dir: &Path) -> CliResult<()> {
    let dir = absolute(dir)?;
    let mut keep = vec![];
    for (app, project) in deployed()? {
        for (name, mut json) in cos::dashboards(&project, &app) {
            if let Some(obj) = json.as_object_mut() {
                // Grafana ignores unknown keys; this marks the file as twelve's.
                obj.insert("twelve-written".into(), serde_json::Value::Bool(true));
            }
            let text = serde_json::to_string_pretty(&json).context("a dashboard")? + "\n";
            let path = write(&dir, &name, &text)?;
            println!("{}", path.display());
            keep.push(name);
        }
    }
    remove_stale(&dir, ".json", &keep);
    Ok(())
}
