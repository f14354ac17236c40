//! `twelve init`

use std::path::Path;
use std::process::ExitCode;

use twelve_project::init::{self, InitScope};
use twelve_project::Diagnostic;

use crate::cli::Profile;
use crate::output::CliResult;

/// The default name: the directory's, or in a project's `charm/` the project's (the `name:`
/// of `../rockcraft.yaml`, else the parent directory's name).
fn default_name(dir: &Path) -> CliResult<String> {
    let abs = std::path::absolute(dir)
        .map_err(|e| Diagnostic::error(format!("cannot resolve {}: {e}", dir.display())))?;
    let from_dir = |d: &Path| {
        d.file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase().replace('_', "-"))
            .unwrap_or_default()
    };
    let base = match abs.parent().filter(|_| init::is_charm_dir(dir)) {
        Some(project) => std::fs::read_to_string(project.join("rockcraft.yaml"))
            .ok()
            .and_then(|src| {
                src.lines().find_map(|l| {
                    l.strip_prefix("name:")
                        .map(|v| v.trim().trim_matches(['"', '\'']).to_string())
                })
            })
            .unwrap_or_else(|| from_dir(project)),
        None => from_dir(&abs),
    };
    if !twelve_project::project::valid_app_name(&base) {
        return Err(Diagnostic::error(format!(
            "the directory name {base:?} is not a valid app name"
        ))
        .with_help(
            "pass --name my-app (lower-case letters, digits and dashes, starting with a letter)",
        )
        .into());
    }
    Ok(base)
}

pub fn run(profile: Profile, name: Option<String>, dir: &Path) -> CliResult<ExitCode> {
    let name = match name {
        Some(n) => n,
        None => default_name(dir)?,
    };
    let report = init::init_report(profile.name(), &name, dir)?;
    let shown = if dir == Path::new(".") {
        "the current directory".to_string()
    } else {
        dir.display().to_string()
    };
    let listed = || {
        report
            .written
            .iter()
            .map(|p| p.strip_prefix(dir).unwrap_or(p).display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let cd = if dir == Path::new(".") {
        String::new()
    } else {
        format!("cd {} && ", dir.display())
    };
    match &report.scope {
        InitScope::Full => {
            println!(
                "Created {} project {name:?} in {shown} ({} files).",
                profile.name(),
                report.written.len()
            );
            println!("Next: {cd}twelve render    # the plan a unit would run");
        }
        InitScope::ProjectFiles { found, entry } => {
            println!(
                "Found an existing app in {shown}: {found} (entry point {entry}); left it alone."
            );
            println!(
                "Created the {} project files for {name:?}: {}.",
                profile.name(),
                listed()
            );
            println!("Next: {cd}twelve render    # the plan a unit would run");
        }
        InitScope::CharmOnly => {
            println!(
                "Created the charm side of {} project {name:?} in {shown}: {}.",
                profile.name(),
                listed()
            );
            println!("Next: twelve render ..    # from the project root, with its rockcraft.yaml");
        }
    }
    Ok(ExitCode::SUCCESS)
}
