//! `twelve pack`: builds an immutable, content-addressed release of a 12-factor app on this
//! machine, the local stand-in for a rock.
//!
//! A release lives in `<releases_dir>/<id>/` where the id is `r-` and the first 12 hex
//! digits of a SHA-256 over the app's files, rockcraft.yaml and its dependency files:
//!
//! * `app/`: the rock's app directory (`/flask/app`, `/django/app`, `/app`);
//! * `venv` (Python): a symlink to a virtual environment shared by every release with the
//!   same requirements, under `<cache_dir>/venvs/`;
//! * `bin/<name>` (Go): the binary the rock has at `/usr/local/bin/<name>`;
//! * `app/<jar>` (Spring Boot): the application jar;
//! * `app/node_modules` (ExpressJS): the production dependencies;
//! * `release.json`: what the release is and the map from rock paths to its files.
//!
//! A release is built in `<id>.tmp-<pid>-<n>` and renamed into place when complete, so a
//! crash never leaves half a release; packing unchanged inputs again reuses it at once.

mod build;
mod inputs;
mod java;
pub mod oci;
mod run;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use twelve_project::{Framework, Project};

/// A progress callback: gets one short line per build step.
pub type Progress = Box<dyn Fn(&str) + Send + Sync>;

/// Where releases go and where shared build caches live.
pub struct PackOptions {
    /// Releases are directories `<releases_dir>/<id>/`.
    pub releases_dir: PathBuf,
    /// Shared caches: `venvs/`, `go-build/`, `go/`.
    pub cache_dir: PathBuf,
    /// Called with a short line for each build step ("creating virtual environment").
    pub progress: Option<Progress>,
    /// What builds Python virtual environments.
    pub python_installer: PythonInstaller,
}

/// What builds a Python release's virtual environment.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum PythonInstaller {
    /// uv when it is there (`$TWELVE_UV`, else on PATH; `TWELVE_UV=pip` says pip), else pip.
    #[default]
    Auto,
    Pip,
    Uv(PathBuf),
}

impl PackOptions {
    pub fn new(releases_dir: impl Into<PathBuf>, cache_dir: impl Into<PathBuf>) -> PackOptions {
        PackOptions {
            releases_dir: releases_dir.into(),
            cache_dir: cache_dir.into(),
            progress: None,
            python_installer: PythonInstaller::Auto,
        }
    }

    pub fn with_progress(mut self, f: impl Fn(&str) + Send + Sync + 'static) -> PackOptions {
        self.progress = Some(Box::new(f));
        self
    }

    pub(crate) fn say(&self, line: &str) {
        if let Some(p) = &self.progress {
            p(line);
        }
    }
}

/// Why a pack (or loading a release) failed.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// A build tool is not installed.
    #[error("{tool} is needed to pack this app but {why}\nhelp: install it with `apt-get install -y {package}` (or run scripts/setup.sh)")]
    ToolMissing {
        tool: String,
        /// The Debian package that provides it.
        package: String,
        why: String,
    },
    /// A build step exited unsuccessfully.
    #[error("`{command}` failed ({status}); the end of its output:\n{tail}")]
    StepFailed {
        command: String,
        status: String,
        /// The last ~20 lines of its output.
        tail: String,
    },
    /// A Maven or Gradle build cannot run offline: it needs `missing` (artifacts as
    /// `group:artifact:version`, or a wrapper's distribution URL) from the network.
    /// `log` keeps the build's whole output.
    #[error("{message}\nthe build's full log: {}", log.display())]
    Offline {
        missing: Vec<String>,
        message: String,
        log: PathBuf,
    },
    /// A Maven or Gradle build failed (a compile error, a failing test, ...): `summary`
    /// has its error lines, `log` its whole output.
    #[error("{summary}\nthe build's full log: {}", log.display())]
    BuildFailed { summary: String, log: PathBuf },
    #[error("{context}: {error}")]
    Io {
        context: String,
        error: std::io::Error,
    },
    /// The project cannot be packed as it is (no jar, no main class, ...).
    #[error("{0}")]
    Invalid(String),
    #[error("no release {id} in {}", dir.display())]
    NotFound { id: String, dir: PathBuf },
}

impl PackError {
    pub(crate) fn io(context: impl Into<String>, error: std::io::Error) -> PackError {
        PackError::Io {
            context: context.into(),
            error,
        }
    }
}

/// A built release, as recorded in its `release.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// `r-` + the first 12 hex digits of `inputs_hash`.
    pub id: String,
    pub name: String,
    pub framework: Framework,
    /// SHA-256 (hex) over the app files, rockcraft.yaml and the dependency files.
    pub inputs_hash: String,
    /// When it was built, RFC 3339 (UTC).
    pub created: String,
    /// The project directory it was packed from.
    pub source: PathBuf,
    /// Versions of the tools that built it ("python3", "npm", "go", "javac", ...).
    #[serde(default)]
    pub tools: BTreeMap<String, String>,
    /// Rock path -> path relative to the release directory.
    pub paths: BTreeMap<String, String>,
    /// Python: the shared virtual environment `venv` links to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub venv: Option<PathBuf>,
    /// Go: the binary, relative to the release directory (`bin/<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary: Option<String>,
    /// Spring Boot: the jar, relative to the release directory (`app/<file>.jar`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jar: Option<String>,
    /// The release directory (not stored).
    #[serde(skip)]
    pub dir: PathBuf,
    /// True when `pack` found this release already built (not stored).
    #[serde(skip)]
    pub reused: bool,
}

impl Release {
    /// Reads `<releases_dir>/<id>/release.json`.
    pub fn load(releases_dir: &Path, id: &str) -> Result<Release, PackError> {
        if !valid_id(id) {
            return Err(PackError::NotFound {
                id: id.to_string(),
                dir: releases_dir.to_path_buf(),
            });
        }
        let dir = releases_dir.join(id);
        let path = dir.join("release.json");
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(PackError::NotFound {
                    id: id.to_string(),
                    dir: releases_dir.to_path_buf(),
                })
            }
            Err(e) => return Err(PackError::io(format!("reading {}", path.display()), e)),
        };
        let mut release: Release = serde_json::from_str(&text).map_err(|e| {
            PackError::Invalid(format!("{} is not a valid release: {e}", path.display()))
        })?;
        release.dir = dir;
        Ok(release)
    }

    /// Rock paths and the host paths they stand for, longest rock path first, so the
    /// first prefix that matches a path is the most specific one.
    pub fn rock_paths(&self) -> Vec<(String, PathBuf)> {
        let mut v: Vec<(String, PathBuf)> = self
            .paths
            .iter()
            .map(|(rock, rel)| (rock.clone(), self.dir.join(rel)))
            .collect();
        v.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        v
    }

    /// Directories to put in front of PATH, joined with `:` (empty for Spring Boot).
    pub fn path_env(&self) -> String {
        let dirs: Vec<PathBuf> = match self.framework {
            f if f.is_python() => vec![self.dir.join("venv/bin")],
            Framework::Go => vec![self.dir.join("bin")],
            Framework::ExpressJs => vec![self.dir.join("app/node_modules/.bin")],
            _ => vec![],
        };
        dirs.iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    }

    /// The release's app directory (the rock's `/flask/app`, `/django/app` or `/app`).
    pub fn app_dir(&self) -> PathBuf {
        self.dir.join("app")
    }
}

fn valid_id(id: &str) -> bool {
    id.len() == 14
        && id.starts_with("r-")
        && id[2..]
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

/// Every complete release in `releases_dir`, oldest first. A missing directory has none.
pub fn list_releases(releases_dir: &Path) -> Result<Vec<Release>, PackError> {
    let rd = match fs::read_dir(releases_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => {
            return Err(PackError::io(
                format!("reading {}", releases_dir.display()),
                e,
            ))
        }
    };
    let mut out = Vec::new();
    for entry in rd.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !valid_id(&name) {
            continue;
        }
        if let Ok(r) = Release::load(releases_dir, &name) {
            out.push(r);
        }
    }
    out.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)));
    Ok(out)
}

/// Deletes every release whose id is not in `keep`, and the leftovers of interrupted
/// packs and deletions. Returns the ids deleted. Shared venvs in the cache are kept.
pub fn gc(releases_dir: &Path, keep: &[String]) -> Result<Vec<String>, PackError> {
    let rd = match fs::read_dir(releases_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => {
            return Err(PackError::io(
                format!("reading {}", releases_dir.display()),
                e,
            ))
        }
    };
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut deleted = Vec::new();
    for name in names {
        let path = releases_dir.join(&name);
        if valid_id(&name) {
            if keep.contains(&name) {
                continue;
            }
            // Rename first so a half-deleted release never looks complete.
            let doomed = releases_dir.join(format!("{name}.gc-{}", next_suffix()));
            fs::rename(&path, &doomed)
                .map_err(|e| PackError::io(format!("removing {}", path.display()), e))?;
            fs::remove_dir_all(&doomed)
                .map_err(|e| PackError::io(format!("removing {}", doomed.display()), e))?;
            deleted.push(name);
        }
    }
    remove_stale(releases_dir);
    Ok(deleted)
}

/// Removes `<x>.tmp-<pid>-<n>`, `<x>.gc-<pid>-<n>` and `<x>.old-<pid>-<n>` entries of `dir`
/// left by processes that are gone (a pack or gc that crashed or was killed).
pub(crate) fn remove_stale(dir: &Path) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for entry in rd.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let rest = [".tmp-", ".gc-", ".old-"]
            .iter()
            .find_map(|m| name.split_once(m).map(|(_, rest)| rest));
        let Some(pid) = rest.and_then(|r| r.split('-').next()?.parse::<u32>().ok()) else {
            continue;
        };
        let alive = pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists();
        if !alive {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// `<pid>-<n>`: unique among the packs of this process and of live processes.
pub(crate) fn next_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Builds (or finds already built) the release of `project`.
pub fn pack(project: &Project, opts: &PackOptions) -> Result<Release, PackError> {
    let releases_dir = absolute(&opts.releases_dir)?;
    let cache_dir = absolute(&opts.cache_dir)?;
    let root = absolute(&project.root)?;

    let entries = inputs::app_entries(project)?;
    let prebuilt_jar = java::prebuilt_jar_input(project)?;
    let hash = inputs::inputs_hash(project, &entries, prebuilt_jar.as_deref())?;
    let id = format!("r-{}", &hash[..12]);

    if let Ok(mut existing) = Release::load(&releases_dir, &id) {
        opts.say(&format!("release {id} is up to date"));
        existing.reused = true;
        return Ok(existing);
    }

    fs::create_dir_all(&releases_dir)
        .map_err(|e| PackError::io(format!("creating {}", releases_dir.display()), e))?;
    let tmp = releases_dir.join(format!("{id}.tmp-{}", next_suffix()));
    let final_dir = releases_dir.join(&id);
    fs::create_dir(&tmp).map_err(|e| PackError::io(format!("creating {}", tmp.display()), e))?;

    let mut release = Release {
        id: id.clone(),
        name: project.name.clone(),
        framework: project.framework,
        inputs_hash: hash,
        created: String::new(),
        source: root,
        tools: BTreeMap::new(),
        paths: BTreeMap::new(),
        venv: None,
        binary: None,
        jar: None,
        dir: final_dir.clone(),
        reused: false,
    };
    opts.say(&format!(
        "building release {id} of {} ({})",
        project.name, project.framework
    ));
    let built =
        build::build(project, &entries, &tmp, &cache_dir, opts, &mut release).and_then(|()| {
            release.created = time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            let json = serde_json::to_vec_pretty(&release)
                .map_err(|e| PackError::Invalid(format!("cannot write release.json: {e}")))?;
            inputs::write_synced(&tmp.join("release.json"), &json)
        });
    if let Err(e) = built {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    match fs::rename(&tmp, &final_dir) {
        Ok(()) => {
            opts.say(&format!("release {id} ready"));
            Ok(release)
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            // Another pack of the same inputs won the race: theirs is as good as ours.
            match Release::load(&releases_dir, &id) {
                Ok(mut theirs) => {
                    theirs.reused = true;
                    Ok(theirs)
                }
                Err(_) => Err(PackError::io(
                    format!("moving the release into {}", final_dir.display()),
                    e,
                )),
            }
        }
    }
}

fn absolute(p: &Path) -> Result<PathBuf, PackError> {
    std::path::absolute(p).map_err(|e| PackError::io(format!("resolving {}", p.display()), e))
}
