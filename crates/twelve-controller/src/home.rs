//! `TWELVE_HOME`: where the controller keeps its store, socket, releases and units.

use std::path::{Path, PathBuf};

/// The state directory and the paths inside it.
#[derive(Debug, Clone)]
pub struct Home {
    pub root: PathBuf,
}

impl Home {
    /// `$TWELVE_HOME`, else `/var/lib/twelve` for root, else the user's data dir + `twelve`.
    pub fn from_env() -> Home {
        if let Some(h) = std::env::var_os("TWELVE_HOME").filter(|h| !h.is_empty()) {
            return Home {
                root: PathBuf::from(h),
            };
        }
        if nix::unistd::geteuid().is_root() {
            return Home {
                root: PathBuf::from("/var/lib/twelve"),
            };
        }
        let base = dirs::data_dir().unwrap_or_else(|| PathBuf::from(".local/share"));
        Home {
            root: base.join("twelve"),
        }
    }

    pub fn at(root: impl Into<PathBuf>) -> Home {
        Home { root: root.into() }
    }

    pub fn socket(&self) -> PathBuf {
        self.root.join("controller.sock")
    }
    pub fn pid_file(&self) -> PathBuf {
        self.root.join("controller.pid")
    }
    pub fn log_file(&self) -> PathBuf {
        self.root.join("controller.log")
    }
    pub fn db(&self) -> PathBuf {
        self.root.join("state.db")
    }
    pub fn releases(&self) -> PathBuf {
        self.root.join("releases")
    }
    /// Build caches shared by releases (virtual environments, Go's build cache);
    /// `TWELVE_PACK_CACHE` puts them elsewhere (tests share one across homes).
    pub fn cache(&self) -> PathBuf {
        match std::env::var_os("TWELVE_PACK_CACHE").filter(|c| !c.is_empty()) {
            Some(c) => PathBuf::from(c),
            None => self.root.join("cache"),
        }
    }
    pub fn units(&self) -> PathBuf {
        self.root.join("units")
    }
    pub fn unit_dir(&self, app: &str, unit: u32) -> PathBuf {
        self.units().join(format!("{app}-{unit}"))
    }

    /// The supervisor directory of one incarnation of a unit (a unit gets a new one when
    /// it is replaced beside the old one: `<app>-<n>.<k>`).
    pub fn unit_dir_at(&self, app: &str, unit: u32, incarnation: u32) -> PathBuf {
        if incarnation == 0 {
            self.unit_dir(app, unit)
        } else {
            self.units().join(format!("{app}-{unit}.{incarnation}"))
        }
    }

    /// Creates the directories. They are world-traversable (0755) so that app processes
    /// running as an unprivileged user can read releases; the store and socket are 0600.
    pub fn ensure(&self) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        for d in [
            self.root.clone(),
            self.releases(),
            self.cache(),
            self.units(),
        ] {
            std::fs::create_dir_all(&d)?;
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755))?;
        }
        Ok(())
    }
}

/// Makes `path` and every parent up to `/` traversable by other users, when it is ours.
/// App processes run unprivileged and must reach the release directory.
pub fn make_traversable(path: &Path) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let me = nix::unistd::geteuid().as_raw();
    let mut p = Some(path);
    while let Some(dir) = p {
        if let Ok(meta) = std::fs::metadata(dir) {
            if meta.uid() == me && meta.is_dir() && meta.mode() & 0o001 == 0 {
                let _ = std::fs::set_permissions(
                    dir,
                    std::fs::Permissions::from_mode(meta.mode() | 0o011),
                );
            }
        }
        p = dir.parent();
    }
}
