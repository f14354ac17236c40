//! Each deploy keeps a copy of the project as it was (rockcraft.yaml, the charm directory,
//! paas-config.yaml, the app's files), so that the app keeps running what was deployed:
//! editing or deleting the source directory afterwards changes nothing until the next
//! `twelve deploy`, and rolling back to a release takes that release's project too.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Names never copied: version control, dependency trees and build output that pack
/// rebuilds itself, and packed artefacts.
const SKIP_DIRS: &[&str] = &[
    ".git",
    ".hg",
    ".svn",
    "node_modules",
    ".venv",
    "venv",
    "__pycache__",
    ".mypy_cache",
    ".pytest_cache",
    ".tox",
    "target",
    ".cache",
];
const SKIP_SUFFIXES: &[&str] = &[".pyc", ".rock", ".charm"];

/// A project copied under `dir`: its root, and its charm directory when that was given
/// apart (`--charm-dir`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub project_dir: PathBuf,
    pub charm_dir: Option<PathBuf>,
    /// SHA-256 of what was copied (names, contents, links), to tell an unchanged project.
    pub digest: String,
}

/// Copies `project_dir` (and `charm_dir` when it lies outside it) into `dir`, which must
/// not exist. Written aside and renamed into place: a snapshot is whole or absent.
/// `skip` (twelve's home, when it lies inside the project) is never copied.
pub fn take(
    project_dir: &Path,
    charm_dir: Option<&Path>,
    dir: &Path,
    skip: &Path,
) -> io::Result<Snapshot> {
    let tmp = dir.with_extension("tmp");
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    let mut hash = Sha256::new();
    let copied = (|| {
        copy_tree(
            project_dir,
            &tmp.join("project"),
            Path::new("project"),
            skip,
            &mut hash,
        )?;
        let charm = match charm_dir {
            None => None,
            Some(c) => match c.strip_prefix(project_dir) {
                Ok(rel) => Some(PathBuf::from("project").join(rel)),
                Err(_) => {
                    copy_tree(c, &tmp.join("charm"), Path::new("charm"), skip, &mut hash)?;
                    Some(PathBuf::from("charm"))
                }
            },
        };
        if let Some(c) = &charm {
            hash.update(b"charm-dir\0");
            hash.update(c.to_string_lossy().as_bytes());
        }
        Ok::<_, io::Error>(charm)
    })();
    let charm = match copied {
        Ok(c) => c,
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    if let Err(e) = fs::rename(&tmp, dir) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let digest = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(Snapshot {
        project_dir: dir.join("project"),
        charm_dir: charm.map(|c| dir.join(c)),
        digest,
    })
}

fn copy_tree(from: &Path, to: &Path, rel: &Path, skip: &Path, hash: &mut Sha256) -> io::Result<()> {
    fs::create_dir_all(to)?;
    let mut entries = fs::read_dir(from)?.collect::<Result<Vec<_>, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let name_str = name.to_string_lossy();
        let kind = entry.file_type()?;
        let target = to.join(&name);
        let path = rel.join(&name);
        if kind.is_dir() {
            if !SKIP_DIRS.contains(&name_str.as_ref()) && entry.path() != skip {
                hash.update(b"dir\0");
                hash.update(path.to_string_lossy().as_bytes());
                copy_tree(&entry.path(), &target, &path, skip, hash)?;
            }
        } else if kind.is_symlink() {
            let link = fs::read_link(entry.path())?;
            hash.update(b"link\0");
            hash.update(path.to_string_lossy().as_bytes());
            hash.update(b"\0");
            hash.update(link.to_string_lossy().as_bytes());
            std::os::unix::fs::symlink(link, &target)?;
        } else if kind.is_file() && !SKIP_SUFFIXES.iter().any(|s| name_str.ends_with(s)) {
            let bytes = fs::read(entry.path())?;
            hash.update(b"file\0");
            hash.update(path.to_string_lossy().as_bytes());
            hash.update((bytes.len() as u64).to_le_bytes());
            hash.update(&bytes);
            fs::write(&target, &bytes)?;
            fs::set_permissions(&target, entry.metadata()?.permissions())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_the_project_without_dependency_trees_and_maps_the_charm_dir() {
        let src = tempfile::tempdir().unwrap();
        let root = src.path().join("p");
        fs::create_dir_all(root.join("charm")).unwrap();
        fs::create_dir_all(root.join("node_modules/x")).unwrap();
        fs::create_dir_all(root.join(".git")).unwrap();
        fs::write(root.join("rockcraft.yaml"), "name: p\n").unwrap();
        fs::write(root.join("charm/charmcraft.yaml"), "name: p\n").unwrap();
        fs::write(root.join("node_modules/x/big.js"), "x").unwrap();
        fs::write(root.join("app.pyc"), "x").unwrap();
        let outside = src.path().join("elsewhere");
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("charmcraft.yaml"), "name: q\n").unwrap();

        let home = tempfile::tempdir().unwrap();
        let s = take(
            &root,
            Some(&root.join("charm")),
            &home.path().join("s1"),
            home.path(),
        )
        .unwrap();
        assert_eq!(s.charm_dir, Some(home.path().join("s1/project/charm")));
        assert!(s.project_dir.join("rockcraft.yaml").is_file());
        assert!(s.project_dir.join("charm/charmcraft.yaml").is_file());
        assert!(!s.project_dir.join("node_modules").exists());
        assert!(!s.project_dir.join(".git").exists());
        assert!(!s.project_dir.join("app.pyc").exists());

        let s = take(&root, Some(&outside), &home.path().join("s2"), home.path()).unwrap();
        assert_eq!(
            fs::read_to_string(s.charm_dir.unwrap().join("charmcraft.yaml")).unwrap(),
            "name: q\n"
        );
        assert!(!home.path().join("s2.tmp").exists());
        let again = take(
            &root,
            Some(&root.join("charm")),
            &home.path().join("s3"),
            home.path(),
        )
        .unwrap();
        let first = take(
            &root,
            Some(&root.join("charm")),
            &home.path().join("s4"),
            home.path(),
        )
        .unwrap();
        assert_eq!(
            again.digest, first.digest,
            "the same project, the same digest"
        );
        fs::write(root.join("charm/charmcraft.yaml"), "name: p2\n").unwrap();
        let changed = take(
            &root,
            Some(&root.join("charm")),
            &home.path().join("s5"),
            home.path(),
        )
        .unwrap();
        assert_ne!(changed.digest, first.digest);
        assert!(
            take(&root, None, &home.path().join("s1"), home.path()).is_err(),
            "never over another"
        );
        // A home inside the project is not copied into itself.
        let inner = root.join("home");
        fs::create_dir_all(inner.join("projects")).unwrap();
        let s = take(&root, None, &inner.join("projects/s6"), &inner).unwrap();
        assert!(!s.project_dir.join("home").exists());
    }
}
