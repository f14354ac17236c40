//! `twelve init --profile <framework>-framework`: a runnable project from embedded templates.

use std::path::{Path, PathBuf};

use include_dir::{include_dir, Dir, DirEntry};

use crate::diagnostic::Diagnostic;
use crate::framework::{Framework, ALL_FRAMEWORKS};
use crate::project::valid_app_name;

static TEMPLATES: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/templates");

/// The profile names `init` accepts.
pub fn profiles() -> Vec<&'static str> {
    ALL_FRAMEWORKS.iter().map(|f| f.extension()).collect()
}

/// Writes a new project for `profile` named `name` into `dir` and returns the files written.
/// Refuses, before writing anything, when any of them exists.
pub fn init(profile: &str, name: &str, dir: &Path) -> Result<Vec<PathBuf>, Diagnostic> {
    let framework = Framework::from_extension(profile).ok_or_else(|| {
        Diagnostic::error(format!("unknown profile {profile:?}"))
            .with_help(format!("choose one of: {}", profiles().join(", ")))
    })?;
    if !valid_app_name(name) {
        return Err(Diagnostic::error(format!("invalid project name {name:?}"))
            .with_help("use lower-case letters, digits and dashes, starting with a letter (like `my-app`); pass --name"));
    }
    let template = TEMPLATES.get_dir(framework.extension()).ok_or_else(|| {
        Diagnostic::error(format!(
            "the {profile} template is missing from this build of twelve"
        ))
    })?;
    let snake = name.replace('-', "_");
    let subst = |s: &str| {
        s.replace("{{name_snake}}", &snake)
            .replace("{{name}}", name)
    };

    let mut files = Vec::new();
    collect(template, &mut files);
    let planned: Vec<(PathBuf, String, bool)> = files
        .into_iter()
        .map(|(rel, contents)| {
            let rel = rel
                .strip_prefix(template.path())
                .unwrap_or(&rel)
                .to_path_buf();
            let rel = PathBuf::from(subst(&rel.to_string_lossy()));
            let exec = rel
                .file_name()
                .is_some_and(|n| n == "migrate" || n.to_string_lossy().ends_with(".sh"));
            (dir.join(rel), subst(contents), exec)
        })
        .collect();
    let existing: Vec<String> = planned
        .iter()
        .filter(|(p, _, _)| p.exists())
        .map(|(p, _, _)| p.strip_prefix(dir).unwrap_or(p).display().to_string())
        .collect();
    if !existing.is_empty() {
        return Err(Diagnostic::error(format!(
            "refusing to overwrite existing files in {}: {}",
            dir.display(),
            existing.join(", ")
        ))
        .with_help("run `twelve init` in an empty directory, or move those files away"));
    }
    let mut written = Vec::new();
    for (path, contents, exec) in planned {
        write_file(&path, &contents, exec)
            .map_err(|e| Diagnostic::error(format!("cannot write {}: {e}", path.display())))?;
        written.push(path);
    }
    Ok(written)
}

fn collect<'a>(dir: &'a Dir<'a>, out: &mut Vec<(PathBuf, &'a str)>) {
    for entry in dir.entries() {
        match entry {
            DirEntry::Dir(d) => collect(d, out),
            DirEntry::File(f) => {
                if let Some(text) = f.contents_utf8() {
                    out.push((f.path().to_path_buf(), text));
                }
            }
        }
    }
}

fn write_file(path: &Path, contents: &str, exec: bool) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, contents)?;
    if exec {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}
