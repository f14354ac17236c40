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

    /// The token that lets a request with any `Host` use the observability server
    /// (`twelve dashboard --token`); 0600.
    pub fn web_token_file(&self) -> PathBuf {
        self.root.join("web-token")
    }

    /// Creates the directories with their modes, and makes the private files of
    /// a home an older twelve created private too.
    ///
    /// `TWELVE_HOME` and `units` are traverse-only (0711): an app's user reaches its own
    /// unit directory, and nobody lists which apps exist. Releases and the build cache stay
    /// readable (0755): apps run from them. `services` is traverse-only too, so that a
    /// managed server's own user reaches its directory (0700, owned by that user). The
    /// rest (state store, secrets key, logs, project copies, the ingress's state) is the
    /// controller's alone: 0700 directories, 0600 files.
    pub fn ensure(&self) -> std::io::Result<()> {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        for (d, mode) in [
            (self.root.clone(), TRAVERSE_ONLY),
            (self.releases(), 0o755),
            (self.cache(), 0o755),
            (self.units(), TRAVERSE_ONLY),
            (self.root.join("services"), TRAVERSE_ONLY),
            (self.root.join("projects"), 0o700),
            (self.root.join("ingress"), 0o700),
        ] {
            std::fs::create_dir_all(&d)?;
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode))?;
        }
        for f in self.private_files() {
            if std::fs::symlink_metadata(&f).is_ok_and(|m| m.is_file() && m.mode() & 0o077 != 0) {
                std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600))?;
            }
        }
        Ok(())
    }

    /// The files of the home no one but the controller's user may read.
    pub fn private_files(&self) -> Vec<PathBuf> {
        let mut files = crate::store::Store::files(&self.db()).to_vec();
        files.extend([
            self.root.join("secret.key"),
            self.web_token_file(),
            self.log_file(),
        ]);
        files
    }

    /// The dashboard token: read from [`Home::web_token_file`], else made (32 random
    /// bytes, base64url) and written 0600, never replacing one another process wrote
    /// first.
    pub fn web_token(&self) -> std::io::Result<String> {
        use base64::Engine;
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(t) = self.read_web_token()? {
            return Ok(t);
        }
        let bytes: [u8; 32] = rand::random();
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let path = self.web_token_file();
        let tmp = self
            .root
            .join(format!("web-token.tmp-{:016x}", rand::random::<u64>()));
        let written = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| {
                f.write_all(token.as_bytes())?;
                f.sync_all()
            })
            // A link never replaces: whoever links first wins, and the others read it.
            .and_then(|()| std::fs::hard_link(&tmp, &path));
        let _ = std::fs::remove_file(&tmp);
        match written {
            Ok(()) => Ok(token),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => self
                .read_web_token()?
                .ok_or_else(|| std::io::Error::other(format!("{} is empty", path.display()))),
            Err(e) => Err(e),
        }
    }

    /// The dashboard token when one was made.
    pub fn read_web_token(&self) -> std::io::Result<Option<String>> {
        match std::fs::read_to_string(self.web_token_file()) {
            Ok(t) => Ok(Some(t.trim().to_string()).filter(|t| !t.is_empty())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The mode of `TWELVE_HOME` and `TWELVE_HOME/units`: others may pass through, not list.
pub const TRAVERSE_ONLY: u32 = 0o711;

/// Makes every file and directory this process creates private unless a mode is given
/// (umask 077). The controller calls it first thing; the processes it starts (unit
/// supervisors, the ingress) get the usual 022 back (`client::spawn_detached`).
pub fn restrict_umask() {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
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
