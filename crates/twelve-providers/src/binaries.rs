use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::{ProviderError, Result};

/// Where server binaries are looked up. Injectable so tests (and users with unusual
/// installs) can point it elsewhere.
#[derive(Debug, Clone)]
pub struct Binaries {
    dirs: Vec<PathBuf>,
}

impl Default for Binaries {
    /// `/usr/lib/postgresql/<version>/bin` (newest first), then `$PATH`, then
    /// `/usr/local/sbin`, `/usr/sbin`, `/sbin`.
    fn default() -> Self {
        let mut dirs = Vec::new();
        if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
            let mut versions: Vec<(u32, PathBuf)> = entries
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let v: u32 = e.file_name().to_str()?.parse().ok()?;
                    Some((v, e.path().join("bin")))
                })
                .collect();
            versions.sort_by_key(|b| std::cmp::Reverse(b.0));
            dirs.extend(versions.into_iter().map(|(_, p)| p));
        }
        if let Some(path) = std::env::var_os("PATH") {
            dirs.extend(std::env::split_paths(&path));
        }
        for d in ["/usr/local/sbin", "/usr/sbin", "/sbin"] {
            let d = PathBuf::from(d);
            if !dirs.contains(&d) {
                dirs.push(d);
            }
        }
        Binaries { dirs }
    }
}

impl Binaries {
    /// Look only in these directories.
    pub fn in_dirs<I, P>(dirs: I) -> Binaries
    where
        I: IntoIterator<Item = P>,
        P: Into<PathBuf>,
    {
        Binaries {
            dirs: dirs.into_iter().map(Into::into).collect(),
        }
    }

    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// The path of an executable `binary`, or [`ProviderError::MissingBinary`] naming the
    /// Debian `package` to install.
    pub fn find(&self, binary: &str, package: &str) -> Result<PathBuf> {
        self.dirs
            .iter()
            .map(|d| d.join(binary))
            .find(|p| is_executable(p))
            .ok_or_else(|| ProviderError::MissingBinary {
                binary: binary.to_string(),
                package: package.to_string(),
                searched: if self.dirs.is_empty() {
                    "no directories".to_string()
                } else {
                    self.dirs
                        .iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(":")
                },
            })
    }
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}
