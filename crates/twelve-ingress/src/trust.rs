//! Whether a backend's Unix socket is the app's own. A socket path is only a name: any
//! process that can write its directory can put its own server there and receive the app's
//! requests and cookies. The ingress uses a unit's socket only when
//!
//! - the server on the other end (its `SO_PEERCRED`, the credentials of the process that
//!   called `listen`) runs as the backend's `socket_uid`, or as the ingress's own effective
//!   uid when the route names none; checked on every new connection, before a byte is sent;
//! - the socket's directory is owned by root or by that uid and is not writable by group or
//!   others (checked at most once a second per backend).
//!
//! Otherwise the request goes over TCP, the refusal is logged once per backend, and the
//! socket is not tried again for a second (no wasted connect per request meanwhile).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

/// How long a verdict on the directory holds, and how long a refused socket is skipped.
pub(crate) const RECHECK: Duration = Duration::from_secs(1);

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

fn now_ms() -> u64 {
    EPOCH.elapsed().as_millis() as u64 + 1
}

/// The effective uid of the ingress.
pub(crate) fn own_uid() -> u32 {
    // SAFETY: geteuid cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() }
}

/// A backend's Unix socket and what its server must be.
#[derive(Debug)]
pub(crate) struct UnixBackend {
    pub path: PathBuf,
    /// The uid the server on the socket must run as.
    pub uid: u32,
    /// The unit, for the log line.
    unit: String,
    /// Until when (ms) the directory was found right.
    dir_ok_until: AtomicU64,
    /// Until when (ms) the socket is not tried, after a refusal.
    skip_until: AtomicU64,
    logged: AtomicBool,
}

impl UnixBackend {
    pub(crate) fn new(unit: &str, path: PathBuf, socket_uid: Option<u32>) -> UnixBackend {
        UnixBackend {
            path,
            uid: socket_uid.unwrap_or_else(own_uid),
            unit: unit.to_string(),
            dir_ok_until: AtomicU64::new(0),
            skip_until: AtomicU64::new(0),
            logged: AtomicBool::new(false),
        }
    }

    /// Whether to try the socket now (not refused within the last [`RECHECK`]).
    pub(crate) fn worth_trying(&self) -> bool {
        let until = self.skip_until.load(Ordering::Relaxed);
        until == 0 || now_ms() >= until
    }

    /// Checks a connected socket's server (`peer_uid`) and the socket's directory.
    /// `Err` says why it is not trusted; the caller goes to TCP.
    pub(crate) fn check(&self, peer_uid: u32) -> Result<(), String> {
        if peer_uid != self.uid {
            return Err(format!(
                "its server runs as uid {peer_uid}, not {}",
                self.uid
            ));
        }
        let now = now_ms();
        if self.dir_ok_until.load(Ordering::Relaxed) > now {
            return Ok(());
        }
        check_dir(&self.path, self.uid)?;
        self.dir_ok_until
            .store(now + RECHECK.as_millis() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Skips the socket for [`RECHECK`] and logs why, the first time.
    pub(crate) fn refuse(&self, why: &str, tcp: std::net::SocketAddr) {
        self.skip_until
            .store(now_ms() + RECHECK.as_millis() as u64, Ordering::Relaxed);
        self.dir_ok_until.store(0, Ordering::Relaxed);
        if !self.logged.swap(true, Ordering::Relaxed) {
            eprintln!(
                "twelve ingress: {}: not using socket {}: {why}; requests go to {tcp} \
                 (logged once per backend)",
                self.unit,
                self.path.display()
            );
        }
    }
}

/// The socket's directory must be owned by root or `uid` and writable by its owner alone.
fn check_dir(socket: &Path, uid: u32) -> Result<(), String> {
    let dir = socket.parent().unwrap_or(Path::new("/"));
    let meta = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if meta.uid() != 0 && meta.uid() != uid {
        return Err(format!(
            "its directory {} is owned by uid {}, not root or {uid}",
            dir.display(),
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "its directory {} is writable by group or others (mode {:o})",
            dir.display(),
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}
