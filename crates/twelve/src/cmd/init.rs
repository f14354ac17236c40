//! `twelve init`

use std::path::Path;
use std::process::ExitCode;

use twelve_project::{init, Diagnostic};

use crate::cli::Profile;
use crate::output::CliResult;

pub fn run(profile: Profile, name: Option<String>, dir: &Path) -> CliResult<ExitCode> {
    let name = match name {
        Some(n) => n,
        None => {
            let abs = std::path::absolute(dir)
                .map_err(|e| Diagnostic::error(format!("cannot resolve {}: {e}", dir.display())))?;
            let base = abs
                .file_name()
                .map(|n| n.to_string_lossy().to_ascii_lowercase().replace('_', "-"))
                .unwrap_or_default();
            if !twelve_project::project::valid_app_name(&base) {
                return Err(Diagnostic::error(format!("the directory name {base:?} is not a valid app name"))
                    .with_help("pass --name my-app (lower-case letters, digits and dashes, starting with a letter)")
                    .into());
            }
            base
        }
    };
    let files = init::init(profile.name(), &name, dir)?;
    let shown = if dir == Path::new(".") {
        "the current directory".to_string()
    } else {
        dir.display().to_string()
    };
    println!(
        "Created {} project {name:?} in {shown} ({} files).",
        profile.name(),
        files.len()
    );
    let cd = if dir == Path::new(".") {
        String::new()
    } else {
        format!("cd {} && ", dir.display())
    };
    println!("Next: {cd}twelve render    # the plan a unit would run");
    Ok(ExitCode::SUCCESS)
}
