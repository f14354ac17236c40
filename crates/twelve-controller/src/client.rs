//! The CLI side of the API: connect, starting the controller when it is not running.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::api::{ApiError, Request, Response};
use crate::home::Home;

pub struct ControllerClient {
    home: Home,
}

impl ControllerClient {
    pub fn new(home: Home) -> ControllerClient {
        ControllerClient { home }
    }

    pub fn home(&self) -> &Home {
        &self.home
    }

    /// Whether a controller answers on the socket.
    pub fn is_running(&self) -> bool {
        self.call_once(&Request::Ping).is_ok()
    }

    /// Sends a request, starting the controller first if needed (saying so on stderr), or
    /// restarting it when it runs an older twelve binary than this one.
    pub fn call(&self, req: &Request) -> Result<serde_json::Value, ApiError> {
        match self.call_once(&Request::Ping) {
            Ok(r) if r.ok => {
                let theirs = r.result["binary"].as_str().unwrap_or_default();
                if theirs != binary_identity() {
                    let _ = self.call_once(&Request::Shutdown);
                    let deadline = Instant::now() + Duration::from_secs(10);
                    while Instant::now() < deadline && self.is_running() {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    eprintln!(
                        "The twelve binary changed: restarting the controller (apps keep running)."
                    );
                    self.start()?;
                }
            }
            _ => self.start()?,
        }
        let resp = self.call_once(req).map_err(|e| {
            ApiError::new(format!(
                "the controller is not reachable at {}: {e}",
                self.home.socket().display()
            ))
            .hint(format!(
                "see {} and try `twelve controller status`",
                self.home.log_file().display()
            ))
        })?;
        match resp {
            Response {
                ok: true, result, ..
            } => Ok(result),
            Response { error: Some(e), .. } => Err(e),
            Response { .. } => Err(ApiError::new(
                "the controller answered with an error and no message",
            )),
        }
    }

    /// Sends one request to a running controller.
    pub fn call_once(&self, req: &Request) -> std::io::Result<Response> {
        let mut stream = UnixStream::connect(self.home.socket())?;
        let mut line = serde_json::to_string(req).map_err(std::io::Error::other)?;
        line.push('\n');
        stream.write_all(line.as_bytes())?;
        let mut reader = BufReader::new(stream);
        let mut answer = String::new();
        reader.read_line(&mut answer)?;
        if answer.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the controller closed the connection",
            ));
        }
        serde_json::from_str(&answer).map_err(std::io::Error::other)
    }

    /// Starts `twelve controller run` detached from this process and waits for its socket.
    pub fn start(&self) -> Result<(), ApiError> {
        let exe = std::env::current_exe()
            .map_err(|e| ApiError::new(format!("cannot find the twelve binary: {e}")))?;
        self.home.ensure().map_err(|e| {
            ApiError::new(format!("cannot create {}: {e}", self.home.root.display()))
                .hint("set TWELVE_HOME to a writable directory")
        })?;
        let log_start = std::fs::metadata(self.home.log_file())
            .map(|m| m.len())
            .unwrap_or(0);
        let mut child = spawn_detached(
            &exe,
            &["controller", "run"],
            &self.home.root,
            &self.home.log_file(),
            false,
        )
        .map_err(|e| ApiError::new(format!("cannot start the controller: {e}")))?;
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                // It gave up: say why, from what it wrote to its log.
                let log = std::fs::read(self.home.log_file()).unwrap_or_default();
                let said =
                    String::from_utf8_lossy(log.get(log_start as usize..).unwrap_or_default())
                        .lines()
                        .rfind(|l| !l.trim().is_empty())
                        .map(|l| {
                            l.trim_start_matches("Error: ")
                                .trim_start_matches("error: ")
                                .to_string()
                        })
                        .unwrap_or_else(|| format!("it exited with {status}"));
                return Err(
                    ApiError::new(format!("the controller cannot start: {said}"))
                        .hint(format!("see {}", self.home.log_file().display())),
                );
            }
            if self.is_running() {
                eprintln!(
                    "Started the twelve controller (pid {pid}, state in {}).",
                    self.home.root.display()
                );
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(ApiError::new("the controller did not start within 15 s")
            .hint(format!("see {}", self.home.log_file().display())))
    }
}

/// Spawns `exe args` in a new session with output appended to `log`, and does not wait.
/// With `clean_env`, the child gets only a minimal environment (PATH, LANG, TZ, RUST_LOG,
/// and SSL_CERT_FILE: the CA bundle log forwarding trusts; not `TWELVE_HOME`), so that apps
/// under it do not inherit whatever shell first started the controller. The log is
/// created 0600; the child starts with umask 022 whatever this process's is (the
/// controller's is 077).
pub fn spawn_detached(
    exe: &Path,
    args: &[&str],
    home: &Path,
    log: &Path,
    clean_env: bool,
) -> std::io::Result<std::process::Child> {
    spawn_detached_in(exe, args, Some(home), log, clean_env, &[])
}

/// [`spawn_detached`], with `TWELVE_HOME` only when `home` is given and the environment
/// is not clean (a supervisor or the ingress is given its directory instead, so that the
/// apps under it never see the controller's home), joining the cgroups whose
/// `cgroup.procs` descriptors are `cgroup_fds` before it runs anything (so every process
/// it starts is in the unit's cgroup from its first instruction).
pub fn spawn_detached_in(
    exe: &Path,
    args: &[&str],
    home: Option<&Path>,
    log: &Path,
    clean_env: bool,
    cgroup_fds: &[i32],
) -> std::io::Result<std::process::Child> {
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::process::CommandExt;
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(log)?;
    let err = out.try_clone()?;
    let mut cmd = std::process::Command::new(exe);
    if clean_env {
        cmd.env_clear();
        cmd.env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        );
        for keep in ["LANG", "TZ", "RUST_LOG", "SSL_CERT_FILE"] {
            if let Some(v) = std::env::var_os(keep) {
                cmd.env(keep, v);
            }
        }
    }
    match home.filter(|_| !clean_env) {
        Some(home) => cmd.env("TWELVE_HOME", home),
        None => cmd.env_remove("TWELVE_HOME"),
    };
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .current_dir("/");
    let fds = cgroup_fds.to_vec();
    // SAFETY: setsid, umask and write are async-signal-safe; nothing else runs between
    // fork and exec, and `fds` was allocated before the fork.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
            crate::cgroup::join_in_child(&fds)?;
            Ok(())
        });
    }
    cmd.spawn()
}

/// What identifies the twelve binary this process started from (version, size and
/// modification time of the executable, read once at start).
pub fn binary_identity() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        let meta = std::env::current_exe().and_then(std::fs::metadata);
        let (size, mtime) = match meta {
            Ok(m) => (
                m.len(),
                m.modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_nanos())
                    .unwrap_or(0),
            ),
            Err(_) => (0, 0),
        };
        format!("{}-{size}-{mtime}", env!("CARGO_PKG_VERSION"))
    })
}
