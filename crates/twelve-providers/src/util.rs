use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::distr::{Alphanumeric, SampleString};

use crate::{ProviderError, Result};

/// A fresh alphanumeric password (32 characters: quoting is never a problem).
pub(crate) fn password() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), 32)
}

/// App names: `^[a-z][a-z0-9_-]{0,47}$`.
pub(crate) fn validate_app(app: &str) -> Result<()> {
    let ok = !app.is_empty()
        && app.len() <= 48
        && app.as_bytes()[0].is_ascii_lowercase()
        && app
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ProviderError::InvalidAppName {
            app: app.to_string(),
        })
    }
}

/// The SQL name of an app: dashes become underscores (`web-app` → `web_app`).
pub(crate) fn sql_name(app: &str) -> String {
    app.replace('-', "_")
}

/// The URL with its password replaced by `***`.
pub(crate) fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "<unparsable URL>".to_string(),
    }
}

/// `msg` with every occurrence of the secrets replaced by `***`.
pub(crate) fn scrub(msg: impl std::fmt::Display, secrets: &[&str]) -> String {
    let mut s = msg.to_string();
    for secret in secrets {
        if !secret.is_empty() {
            s = s.replace(secret, "***");
        }
    }
    s
}

pub(crate) fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// Reads a small regular file in a directory a server's user may write (its own): never
/// through a symbolic link (which could point root at a file of its own, whose content
/// would then reach the server as a password, or an error message), never blocking on a
/// FIFO, at most 1 MiB.
pub(crate) fn read_nofollow(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let (f, _) = open_regular_nofollow(path)?;
    let mut text = String::new();
    f.take(1 << 20).read_to_string(&mut text)?;
    Ok(text)
}

/// Opens a regular file for reading, never through a symbolic link, never blocking on a
/// FIFO; with its length.
pub(crate) fn open_regular_nofollow(path: &Path) -> std::io::Result<(std::fs::File, u64)> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a regular file",
        ));
    }
    Ok((f, meta.len()))
}

/// Read `dir/admin.secret`, or create it (0600) with a fresh password.
pub(crate) fn admin_secret(dir: &Path) -> Result<String> {
    let path = dir.join("admin.secret");
    match read_nofollow(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(ProviderError::io(&path, e)),
    }
    let pw = password();
    write_private(&path, &pw)?;
    Ok(pw)
}

/// Read `dir/admin.secret` if it exists.
pub(crate) fn read_admin_secret(dir: &Path) -> Option<String> {
    read_nofollow(&dir.join("admin.secret"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Write a file readable by its owner only, atomically.
pub(crate) fn write_private(path: &Path, contents: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| ProviderError::io(&tmp, e))?;
    f.write_all(contents.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| ProviderError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| ProviderError::io(path, e))
}

/// Creates `dir` (and its parents) and gives it `mode`; a symbolic link in its place (one a
/// server's user could plant in its own directory) is refused, never followed.
pub(crate) fn create_dir(dir: &Path, mode: u32) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| ProviderError::io(dir, e))?;
    open_dir_nofollow(dir)
        .and_then(|d| d.set_permissions(std::fs::Permissions::from_mode(mode)))
        .map_err(|e| ProviderError::io(dir, e))
}

/// Opens a log file for appending, creating it; never through a symbolic link (a server's
/// user could plant one towards a file of root's, which root would then hand it open).
pub(crate) fn open_log(log: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(log)
        .map_err(|e| ProviderError::io(log, e))
}

/// Whether 127.0.0.1:`port` can be bound right now.
pub(crate) fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Whether a process with this pid exists.
pub(crate) fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // A zombie (exited, not yet reaped) counts as dead.
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        if let Some(rest) = stat.rsplit_once(')') {
            if rest.1.trim_start().starts_with('Z') {
                return false;
            }
        }
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

/// The first line of a pid file, if that process is alive.
pub(crate) fn pid_from_file(path: &Path) -> Option<u32> {
    let text = read_nofollow(path).ok()?;
    let pid: u32 = text.lines().next()?.trim().parse().ok()?;
    pid_alive(pid).then_some(pid)
}

/// The last `n` non-empty lines of a log file, joined with ` | `.
pub(crate) fn tail(path: &Path, n: usize) -> String {
    let Ok(text) = read_nofollow_tail(path) else {
        return String::new();
    };
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// The last 64 KiB of a log file, read as [`read_nofollow`] reads.
fn read_nofollow_tail(path: &Path) -> std::io::Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    let (mut f, len) = open_regular_nofollow(path)?;
    f.seek(SeekFrom::Start(len.saturating_sub(64 << 10)))?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Send SIGTERM, wait up to `grace` for the process to go, then SIGKILL.
pub(crate) async fn terminate(pid: u32, grace: Duration) {
    use nix::sys::signal::{kill, Signal};
    let p = nix::unistd::Pid::from_raw(pid as i32);
    let _ = kill(p, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !pid_alive(pid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = kill(p, Signal::SIGKILL);
    for _ in 0..50 {
        if !pid_alive(pid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A command whose process starts a new session (so it survives the controller) and
/// optionally runs as another user.
pub(crate) fn detached(
    program: &Path,
    as_user: Option<&nix::unistd::User>,
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(program);
    cmd.stdin(std::process::Stdio::null());
    if let Some(u) = as_user {
        cmd.uid(u.uid.as_raw()).gid(u.gid.as_raw());
        cmd.env("HOME", &u.dir).env("USER", &u.name);
    }
    // SAFETY: setsid is async-signal-safe and allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            let _ = nix::unistd::setsid();
            Ok(())
        });
    }
    cmd
}

/// Append stdout+stderr of a command to a log file.
pub(crate) fn log_to(cmd: &mut tokio::process::Command, log: &Path) -> Result<()> {
    cmd.stdout(open_log(log)?).stderr(open_log(log)?);
    Ok(())
}

/// Run a short setup command to completion; on failure say what it printed.
pub(crate) async fn run_setup(
    mut cmd: tokio::process::Command,
    server: &str,
    action: &str,
) -> Result<()> {
    cmd.stdin(std::process::Stdio::null());
    let out = cmd.output().await.map_err(|e| ProviderError::Failed {
        server: server.to_string(),
        action: action.to_string(),
        reason: e.to_string(),
    })?;
    if out.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if text.is_empty() {
        text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    }
    let text: Vec<&str> = text.lines().rev().take(6).collect();
    let text: Vec<&str> = text.into_iter().rev().collect();
    Err(ProviderError::Failed {
        server: server.to_string(),
        action: action.to_string(),
        reason: format!("{} ({})", text.join(" | "), out.status),
    })
}

/// Poll `f` until it succeeds or `timeout` passes; returns the last error.
pub(crate) async fn wait_for<F, Fut, T>(timeout: Duration, mut f: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The user a managed server runs as: `None` when twelve is not root (the server runs as
/// twelve's own user); else the service's user given with
/// [`Providers::with_service_user`](crate::Providers::with_service_user) (the controller
/// gives each service a system user of its own), or `nobody` without one. Never root.
pub(crate) fn server_user(
    preferred: Option<&str>,
    server: &str,
) -> Result<Option<nix::unistd::User>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let name = preferred.unwrap_or("nobody");
    match nix::unistd::User::from_name(name) {
        Ok(Some(u)) if !u.uid.is_root() => Ok(Some(u)),
        Ok(Some(_)) => Err(ProviderError::Failed {
            server: server.to_string(),
            action: "choosing the user the server runs as".into(),
            reason: format!("`{name}` is root; managed servers never run as root"),
        }),
        _ => Err(ProviderError::Failed {
            server: server.to_string(),
            action: "choosing the user the server runs as".into(),
            reason: format!(
                "there is no user `{name}` on this machine; create it (useradd --system {name})"
            ),
        }),
    }
}

/// Gives `dir` and everything under it to the server's `user` (symbolic links themselves,
/// never what they point to), except the admin secret, which stays with twelve; `dir`
/// becomes 0700, so that no other user (an app's, another service's) can enter it. This
/// is how a directory made by an older twelve (owned by root or `postgres`) is taken over.
/// Nothing to do when twelve is not root (`user` is `None`).
pub(crate) fn hand_over(dir: &Path, user: Option<&nix::unistd::User>) -> Result<()> {
    create_dir(dir, 0o700)?;
    let Some(user) = user else {
        return Ok(());
    };
    chown_tree(dir, user, Some("admin.secret"))
}

/// `chown -hR`: symbolic links are changed themselves and never followed, so a link the
/// server's user planted in its directory cannot make root give away another file, not
/// even one swapped in while this runs (directories are opened `O_NOFOLLOW` and walked
/// through their descriptors). Files named `keep_root` become (or stay) root's.
pub(crate) fn chown_tree(
    path: &Path,
    user: &nix::unistd::User,
    keep_root: Option<&str>,
) -> Result<()> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| ProviderError::io(path, e))?;
    if !meta.is_dir() {
        return chown_entry(path, path, &meta, user, keep_root);
    }
    let dir = open_dir_nofollow(path).map_err(|e| ProviderError::io(path, e))?;
    chown_dir(dir, path, user, keep_root)
}

fn open_dir_nofollow(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_DIRECTORY)
        .open(path)
}

/// The owner `path` (named `shown` in errors) should have, set without following a link.
fn chown_entry(
    path: &Path,
    shown: &Path,
    meta: &std::fs::Metadata,
    user: &nix::unistd::User,
    keep_root: Option<&str>,
) -> Result<()> {
    let keep = meta.is_file()
        && keep_root.is_some_and(|k| shown.file_name() == Some(std::ffi::OsStr::new(k)));
    let (uid, gid) = if keep {
        (0, 0)
    } else {
        (user.uid.as_raw(), user.gid.as_raw())
    };
    if meta.uid() != uid || meta.gid() != gid {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))
            .map_err(|e| ProviderError::io(shown, e))?;
    }
    Ok(())
}

fn chown_dir(
    dir: std::fs::File,
    shown: &Path,
    user: &nix::unistd::User,
    keep_root: Option<&str>,
) -> Result<()> {
    use std::os::fd::AsRawFd;
    let io = |e| ProviderError::io(shown, e);
    let meta = dir.metadata().map_err(io)?;
    if meta.uid() != user.uid.as_raw() || meta.gid() != user.gid.as_raw() {
        std::os::unix::fs::fchown(&dir, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
            .map_err(io)?;
    }
    // Entries are reached through the open directory, never through a path that a link
    // swapped in could redirect.
    let at = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    for entry in std::fs::read_dir(&at).map_err(io)? {
        let name = entry.map_err(io)?.file_name();
        let (path, shown) = (at.join(&name), shown.join(&name));
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(ProviderError::io(&shown, e)),
        };
        if !meta.is_dir() {
            chown_entry(&path, &shown, &meta, user, keep_root)?;
            continue;
        }
        match open_dir_nofollow(&path) {
            Ok(sub) => chown_dir(sub, &shown, user, keep_root)?,
            // Replaced by a link (or a file) since: that is changed itself.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(nix::libc::ELOOP | nix::libc::ENOTDIR)
                ) =>
            {
                if let Ok(meta) = std::fs::symlink_metadata(&path) {
                    chown_entry(&path, &shown, &meta, user, keep_root)?;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ProviderError::io(&shown, e)),
        }
    }
    Ok(())
}

/// Makes `path` root's again (recursively, links not followed) and 0700: for a managed
/// server's directory kept after its service and user are removed, so that a later user
/// given the same uid cannot read it.
pub fn disown_tree(path: &Path) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let root = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(0))
        .ok()
        .flatten()
        .ok_or_else(|| ProviderError::io(path, std::io::Error::other("no root user")))?;
    chown_tree(path, &root, None)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| ProviderError::io(path, e))
}

/// Host and port of a URL (host defaults to 127.0.0.1).
pub(crate) fn host_port(u: &url::Url, default_port: u16) -> (String, u16) {
    let host = match u.host() {
        Some(url::Host::Ipv6(a)) => a.to_string(),
        Some(h) => h.to_string(),
        None => "127.0.0.1".to_string(),
    };
    (host, u.port().unwrap_or(default_port))
}

/// `host:port`, bracketing IPv6 addresses.
pub(crate) fn endpoint(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_in_a_servers_directory_are_read_only_when_they_are_plain_files() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("roots-secret");
        std::fs::write(&secret, "root's own").unwrap();
        let plain = dir.path().join("admin.secret");
        std::fs::write(&plain, "pw\n").unwrap();
        assert_eq!(read_nofollow(&plain).unwrap(), "pw\n");
        // A link planted where twelve reads: refused, not followed.
        let planted = dir.path().join("port");
        std::os::unix::fs::symlink(&secret, &planted).unwrap();
        assert!(read_nofollow(&planted).is_err());
        assert_eq!(read_admin_secret(dir.path()).as_deref(), Some("pw"));
        std::fs::remove_file(&plain).unwrap();
        std::os::unix::fs::symlink(&secret, &plain).unwrap();
        assert_eq!(read_admin_secret(dir.path()), None);
        assert!(admin_secret(dir.path()).is_err());
        assert!(tail(&planted, 5).is_empty());
        // A FIFO would block a plain read forever.
        let fifo = dir.path().join("server.pid");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(read_nofollow(&fifo).is_err());
        assert_eq!(pid_from_file(&fifo), None);
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "root's own");
    }

    #[test]
    fn passwords_are_alphanumeric_and_long() {
        let p = password();
        assert!(p.len() >= 24);
        assert!(p.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(p, password());
    }

    #[test]
    fn app_names() {
        assert!(validate_app("web-app").is_ok());
        assert!(validate_app("a1").is_ok());
        for bad in ["", "1a", "Web", "a;drop", "a b", "a'b", &"a".repeat(49)] {
            assert!(validate_app(bad).is_err(), "{bad}");
        }
        assert_eq!(sql_name("web-app-2"), "web_app_2");
    }

    #[test]
    fn redaction() {
        assert_eq!(
            redact_url("postgresql://postgres:hunter2@127.0.0.1:5432/postgres"),
            "postgresql://postgres:***@127.0.0.1:5432/postgres"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(scrub("bad pw hunter2!", &["hunter2"]), "bad pw ***!");
    }
}
