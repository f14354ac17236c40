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

/// What `init` wrote, and why only part of the template when it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitReport {
    pub written: Vec<PathBuf>,
    pub scope: InitScope,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitScope {
    /// An empty directory: a runnable project, the app included.
    Full,
    /// The directory already holds the app (`found`, relative to the directory): only the
    /// project files (`rockcraft.yaml`, `charm/`) are written, as `rockcraft init` writes only
    /// `rockcraft.yaml`. `entry` is the entry point the extension will use.
    ProjectFiles { found: String, entry: String },
    /// The directory is a project's `charm/` (where `charmcraft init` runs): the charm side
    /// only (`charmcraft.yaml`, `src/charm.py`, `requirements.txt`).
    CharmOnly,
}

/// Writes a new project for `profile` named `name` into `dir` and returns the files written.
/// Refuses, before writing anything, when any of them exists.
pub fn init(profile: &str, name: &str, dir: &Path) -> Result<Vec<PathBuf>, Diagnostic> {
    init_report(profile, name, dir).map(|r| r.written)
}

/// The files of the framework's app that show the directory already holds an app, in the
/// order the extensions look for them.
fn app_markers(framework: Framework, name: &str) -> Vec<String> {
    let snake = name.replace('-', "_");
    match framework {
        Framework::Flask | Framework::FastApi => {
            let mut c: Vec<String> = vec!["app.py".into(), "main.py".into()];
            for d in ["app", "src", snake.as_str()] {
                for f in ["__init__.py", "app.py", "main.py"] {
                    c.push(format!("{d}/{f}"));
                }
            }
            c
        }
        Framework::Django => vec![
            format!("{snake}/manage.py"),
            format!("{snake}/{snake}/wsgi.py"),
            "manage.py".into(),
        ],
        Framework::Go => vec!["go.mod".into(), "main.go".into()],
        Framework::ExpressJs => vec!["app/package.json".into(), "package.json".into()],
        Framework::SpringBoot => vec![
            "pom.xml".into(),
            "mvnw".into(),
            "build.gradle".into(),
            "build.gradle.kts".into(),
            "gradlew".into(),
        ],
    }
}

/// `init` that says what it did: the whole template in a new directory, only the project
/// files beside an existing app, only the charm side in a project's `charm/`.
pub fn init_report(profile: &str, name: &str, dir: &Path) -> Result<InitReport, Diagnostic> {
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

    let scope = if is_charm_dir(dir) {
        InitScope::CharmOnly
    } else {
        match app_markers(framework, name)
            .into_iter()
            .find(|m| dir.join(m).is_file())
        {
            Some(found) => {
                let app_dir = match framework {
                    Framework::Django => crate::project::app_source_dir(dir, framework, name),
                    Framework::ExpressJs => dir.join("app"),
                    _ => dir.to_path_buf(),
                };
                let entry = match framework {
                    Framework::Flask | Framework::FastApi | Framework::Django => {
                        crate::project::entry_point(&app_dir, framework, name)
                    }
                    _ => found.clone(),
                };
                InitScope::ProjectFiles { found, entry }
            }
            None => InitScope::Full,
        }
    };

    // A charm side made before (`twelve init` in charm/) is kept: the rest is written.
    let charm_exists = scope != InitScope::CharmOnly && dir.join("charm/charmcraft.yaml").is_file();
    let mut files = Vec::new();
    collect(template, &mut files);
    let planned: Vec<(PathBuf, String, bool)> = files
        .into_iter()
        .filter_map(|(rel, contents)| {
            let rel = rel
                .strip_prefix(template.path())
                .unwrap_or(&rel)
                .to_path_buf();
            if charm_exists && rel.starts_with("charm") {
                return None;
            }
            let rel = match &scope {
                InitScope::Full => rel,
                InitScope::ProjectFiles { .. } => (rel == Path::new("rockcraft.yaml")
                    || rel.starts_with("charm"))
                .then_some(rel)?,
                InitScope::CharmOnly => rel.strip_prefix("charm").ok()?.to_path_buf(),
            };
            let rel = PathBuf::from(subst(&rel.to_string_lossy()));
            let exec = rel
                .file_name()
                .is_some_and(|n| n == "migrate" || n.to_string_lossy().ends_with(".sh"));
            Some((dir.join(rel), subst(contents), exec))
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
    Ok(InitReport { written, scope })
}

/// A project's `charm/` directory: named `charm`, and not a project root itself.
pub fn is_charm_dir(dir: &Path) -> bool {
    let named_charm = std::path::absolute(dir)
        .ok()
        .and_then(|d| d.file_name().map(|n| n == "charm"))
        .unwrap_or(false);
    named_charm && !dir.join("rockcraft.yaml").exists()
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
