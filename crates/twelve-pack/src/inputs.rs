//! The inputs of a release: which project files become the rock's app directory, the
//! content hash over them (the release id), and copying them into a release.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use twelve_project::{Framework, Project};

use crate::PackError;

/// Bumped whenever the layout of a release or the way it is built changes, so that old
/// releases are not reused for new inputs.
pub(crate) const FORMAT: &str = "twelve-pack/1";

/// Names never copied into a release nor hashed, at any depth.
const SKIP_NAMES: &[&str] = &[".git", "node_modules", "__pycache__", ".venv", "venv"];
/// File name endings never copied nor hashed.
const SKIP_SUFFIXES: &[&str] = &[".pyc", ".rock", ".charm"];

/// Dependency and build files hashed from the project root (and from the app source dir,
/// which the walk covers) whatever the framework.
pub(crate) const DEPENDENCY_FILES: &[&str] = &[
    "rockcraft.yaml",
    "requirements.txt",
    "pyproject.toml",
    "package.json",
    "package-lock.json",
    "npm-shrinkwrap.json",
    "go.mod",
    "go.sum",
    "build.sh",
    "pom.xml",
    "build.gradle",
    "build.gradle.kts",
    "settings.gradle",
    "settings.gradle.kts",
];

#[derive(Debug, Clone)]
pub(crate) enum Kind {
    Dir,
    File { executable: bool },
    Symlink(PathBuf),
}

/// One entry of the app source dir, relative to it.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub rel: PathBuf,
    pub abs: PathBuf,
    pub kind: Kind,
}

/// The entries of the project's app source dir that become the rock's app directory,
/// in a stable (sorted, depth-first) order.
pub(crate) fn app_entries(project: &Project) -> Result<Vec<Entry>, PackError> {
    let src = &project.files.app_source_dir;
    if !src.is_dir() {
        return Err(PackError::Invalid(format!(
            "the app directory {} does not exist",
            src.display()
        )));
    }
    let mut out = Vec::new();
    walk(project, src, Path::new(""), &mut out)?;
    Ok(out)
}

fn skipped(project: &Project, rel: &Path, name: &str) -> bool {
    if SKIP_NAMES.contains(&name) || SKIP_SUFFIXES.iter().any(|s| name.ends_with(s)) {
        return true;
    }
    let top = rel.parent() == Some(Path::new(""));
    if !top {
        return false;
    }
    let src = &project.files.app_source_dir;
    match name {
        // The charm lives beside the app, never inside the rock.
        "charm" if src.join(name) == project.root.join("charm") => true,
        // Build output: the Spring Boot jar is taken from it separately.
        "target" => true,
        // Gradle's build output and caches.
        "build" | ".gradle"
            if project.framework == Framework::SpringBoot
                && crate::java::is_gradle_project(&project.root) =>
        {
            true
        }
        // rockcraft leaves the Django development database out.
        "db.sqlite3" => project.framework == Framework::Django,
        // A Go binary built in place by `go build`.
        n if n == project.name => project.framework == Framework::Go,
        _ => false,
    }
}

fn walk(project: &Project, dir: &Path, rel: &Path, out: &mut Vec<Entry>) -> Result<(), PackError> {
    let mut children: Vec<_> = fs::read_dir(dir)
        .map_err(|e| PackError::io(format!("reading {}", dir.display()), e))?
        .filter_map(|e| e.ok())
        .collect();
    children.sort_by_key(|e| e.file_name());
    for child in children {
        let name = child.file_name();
        let name_str = name.to_string_lossy();
        let child_rel = rel.join(&name);
        if skipped(project, &child_rel, &name_str) {
            continue;
        }
        let abs = child.path();
        let meta = fs::symlink_metadata(&abs)
            .map_err(|e| PackError::io(format!("reading {}", abs.display()), e))?;
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = fs::read_link(&abs)
                .map_err(|e| PackError::io(format!("reading {}", abs.display()), e))?;
            out.push(Entry {
                rel: child_rel,
                abs,
                kind: Kind::Symlink(target),
            });
        } else if ft.is_dir() {
            out.push(Entry {
                rel: child_rel.clone(),
                abs: abs.clone(),
                kind: Kind::Dir,
            });
            walk(project, &abs, &child_rel, out)?;
        } else if ft.is_file() {
            let executable = meta.permissions().mode() & 0o111 != 0;
            out.push(Entry {
                rel: child_rel,
                abs,
                kind: Kind::File { executable },
            });
        }
        // Sockets, fifos and devices are left out.
    }
    Ok(())
}

/// A SHA-256 that frames every field with its length, so that no two different input
/// sets hash the same stream.
pub(crate) struct Hasher(Sha256);

impl Hasher {
    pub fn new(domain: &str) -> Hasher {
        let mut h = Hasher(Sha256::new());
        h.field(domain.as_bytes());
        h
    }

    pub fn field(&mut self, bytes: &[u8]) {
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
    }

    pub fn str(&mut self, s: &str) {
        self.field(s.as_bytes());
    }

    pub fn file(&mut self, path: &Path) -> Result<(), PackError> {
        let mut f = fs::File::open(path)
            .map_err(|e| PackError::io(format!("reading {}", path.display()), e))?;
        let len = f
            .metadata()
            .map_err(|e| PackError::io(format!("reading {}", path.display()), e))?
            .len();
        self.0.update(len.to_le_bytes());
        let copied = std::io::copy(&mut f, &mut self.0)
            .map_err(|e| PackError::io(format!("reading {}", path.display()), e))?;
        if copied != len {
            return Err(PackError::Invalid(format!(
                "{} changed while it was being read; pack again",
                path.display()
            )));
        }
        Ok(())
    }

    pub fn hex(self) -> String {
        hex(&self.0.finalize())
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The inputs hash of a project: the app entries, the dependency files at the root, and
/// (for Spring Boot without build.sh) the prebuilt jar.
pub(crate) fn inputs_hash(
    project: &Project,
    entries: &[Entry],
    prebuilt_jar: Option<&Path>,
) -> Result<String, PackError> {
    let mut h = Hasher::new(FORMAT);
    h.str(project.framework.name());
    h.str(&project.name);
    for e in entries {
        h.field(e.rel.as_os_str().as_encoded_bytes());
        match &e.kind {
            Kind::Dir => h.str("dir"),
            Kind::Symlink(t) => {
                h.str("symlink");
                h.field(t.as_os_str().as_encoded_bytes());
            }
            Kind::File { executable } => {
                h.str(if *executable { "exec" } else { "file" });
                h.file(&e.abs)?;
            }
        }
    }
    for name in DEPENDENCY_FILES {
        let path = project.root.join(name);
        if path.is_file() {
            h.str("root");
            h.str(name);
            h.file(&path)?;
        }
    }
    if let Some(jar) = prebuilt_jar {
        h.str("jar");
        h.file(jar)?;
    }
    Ok(h.hex())
}

/// Copies the entries into `dest` (which must exist), keeping executable bits and symlinks.
pub(crate) fn copy_entries(entries: &[Entry], dest: &Path) -> Result<(), PackError> {
    for e in entries {
        let to = dest.join(&e.rel);
        let res = match &e.kind {
            Kind::Dir => fs::create_dir(&to),
            Kind::Symlink(target) => std::os::unix::fs::symlink(target, &to),
            Kind::File { .. } => fs::copy(&e.abs, &to).map(|_| ()),
        };
        res.map_err(|err| {
            PackError::io(
                format!("copying {} to {}", e.abs.display(), to.display()),
                err,
            )
        })?;
    }
    Ok(())
}

/// Writes `bytes` to `path` and flushes it to disk.
pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), PackError> {
    let mut f = fs::File::create(path)
        .map_err(|e| PackError::io(format!("writing {}", path.display()), e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| PackError::io(format!("writing {}", path.display()), e))
}
