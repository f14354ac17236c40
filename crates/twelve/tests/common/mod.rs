//! A twelve installation in a temporary `TWELVE_HOME`, driven through the real CLI, with a
//! guard that removes every app and stops the controller when the test ends.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Twelve {
    pub home: tempfile::TempDir,
    /// This home's ingress port (each test home runs its own ingress).
    pub ingress_port: u16,
    /// `TWELVE_WEB_ADDR`: any free port unless [`Twelve::with_fixed_web_addr`].
    pub web_listen: String,
    /// More environment for every command (and so for the controller they start).
    pub env: Vec<(String, String)>,
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Virtual environments and Go's build cache, shared by every test's home so that pip and
/// go work once. It must be reachable by the unprivileged app user.
fn pack_cache() -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let in_tree = repo().join(".cache/pack");
    let traversable = repo().ancestors().all(|p| {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode() & 0o001 != 0)
            .unwrap_or(false)
    });
    let dir = if traversable {
        in_tree
    } else {
        PathBuf::from("/var/tmp/twelve-test-pack-cache")
    };
    std::fs::create_dir_all(&dir).unwrap();
    let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755));
    dir
}

impl Twelve {
    pub fn new() -> Twelve {
        use std::os::unix::fs::PermissionsExt;
        let home = tempfile::Builder::new()
            .prefix("twelve-test-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let ingress_port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Twelve {
            home,
            ingress_port,
            web_listen: "127.0.0.1:0".into(),
            env: vec![],
        }
    }

    /// Gives the observability server one port for the whole test, so that an outside
    /// client (Prometheus, a browser page) keeps reaching it when the controller restarts,
    /// as it does when the shared twelve binary is rebuilt during the test.
    pub fn with_fixed_web_addr(mut self) -> Twelve {
        self.web_listen = format!("127.0.0.1:{}", free_port());
        self
    }

    pub fn cmd(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_twelve"))
            .args(args)
            .env("TWELVE_HOME", self.home.path())
            .env("TWELVE_PACK_CACHE", pack_cache())
            .env("TWELVE_INGRESS_PORT", self.ingress_port.to_string())
            .env("TWELVE_READY_TIMEOUT", "30")
            .env("TWELVE_WEB_ADDR", &self.web_listen)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.home.path())
            .output()
            .unwrap()
    }

    /// Runs and expects success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args);
        assert!(
            out.status.success(),
            "twelve {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs and expects failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.cmd(args);
        assert!(
            !out.status.success(),
            "twelve {args:?} should fail but printed {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn status(&self, app: &str) -> Value {
        let out = self.ok(&["status", app, "--format", "json"]);
        let v: Value = serde_json::from_str(&out).unwrap();
        v["apps"][0].clone()
    }

    /// The port of a unit, or `None` while the unit is not in the status yet.
    pub fn try_port(&self, unit: &str) -> Option<u16> {
        let app = unit.split('/').next()?;
        let st = self.status(app);
        let u = st["units"]
            .as_array()?
            .iter()
            .find(|u| u["name"] == unit)?
            .clone();
        u["address"].as_str()?.rsplit(':').next()?.parse().ok()
    }

    /// The port of a unit (`app/N`).
    pub fn port(&self, unit: &str) -> u16 {
        let app = unit.split('/').next().unwrap();
        let st = self.status(app);
        let u = st["units"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["name"] == unit)
            .unwrap_or_else(|| panic!("no {unit} in {st}"));
        u["address"]
            .as_str()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    /// Copies an example project into the home, to change it freely.
    pub fn example(&self, name: &str) -> PathBuf {
        let dst = self.home.path().join("src").join(name);
        copy_dir(&repo().join("examples").join(name), &dst);
        dst
    }

    pub fn pids_of_units(&self) -> Vec<i32> {
        let mut pids = vec![];
        if let Ok(entries) = std::fs::read_dir(self.home.path().join("units")) {
            for e in entries.flatten() {
                if let Ok(p) = std::fs::read_to_string(e.path().join(".pebble.pid")) {
                    if let Ok(p) = p.trim().parse() {
                        pids.push(p);
                    }
                }
            }
        }
        pids
    }
}

impl Drop for Twelve {
    fn drop(&mut self) {
        if let Ok(out) = Command::new(env!("CARGO_BIN_EXE_twelve"))
            .args(["status", "--format", "json"])
            .env("TWELVE_HOME", self.home.path())
            .output()
        {
            if let Ok(v) = serde_json::from_slice::<Value>(&out.stdout) {
                for app in v["apps"].as_array().into_iter().flatten() {
                    let name = app["name"].as_str().unwrap_or_default();
                    for i in app["integrations"].as_array().into_iter().flatten() {
                        let endpoint = i["endpoint"].as_str().unwrap_or_default();
                        let _ = self.cmd(&["remove-relation", name, endpoint, "--destroy-data"]);
                    }
                    let _ = self.cmd(&["remove-application", name]);
                }
                for s in v["backing-services"].as_array().into_iter().flatten() {
                    let name = s["name"].as_str().unwrap_or_default();
                    let _ = self.cmd(&["remove-application", name, "--destroy-data"]);
                }
            }
        }
        let _ = self.cmd(&["controller", "stop"]);
        if let Ok(pid) = std::fs::read_to_string(self.home.path().join("ingress/ingress.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
        for pid in self.pids_of_units() {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    }
}

pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        if name == "node_modules" || name == "target" || name == "__pycache__" {
            continue;
        }
        let to = dst.join(&name);
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
}

/// GET through the ingress with `Host: <app>.localhost`.
pub fn via_ingress(t: &Twelve, app: &str, path: &str) -> Option<(u16, String)> {
    http_get_host(
        t.ingress_port,
        path,
        &format!("{app}.localhost:{}", t.ingress_port),
    )
}

/// GET http://127.0.0.1:port/path; `None` when nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http_get_host(port, path, "127.0.0.1")
}

pub fn http_get_host(port: u16, path: &str, host: &str) -> Option<(u16, String)> {
    let mut s =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

/// The app's environment at /env, or `None` while nothing answers (e.g. restarting).
pub fn try_app_env(port: u16) -> Option<Value> {
    let (code, body) = http_get(port, "/env")?;
    (code == 200)
        .then(|| serde_json::from_str(&body).ok())
        .flatten()
}

/// The app's environment as it reports it at /env.
pub fn app_env(port: u16) -> Value {
    let (code, body) =
        http_get(port, "/env").unwrap_or_else(|| panic!("nothing answers on port {port}"));
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Polls `f` until it returns Some, or panics with `what` after `limit`.
pub fn eventually<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `kill -KILL pid`, which must succeed.
#[allow(dead_code)]
pub fn sigkill(pid: i32) {
    let ok = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success(), "kill -KILL {pid}");
}

impl Twelve {
    /// SIGKILLs the controller (the next command starts it again).
    #[allow(dead_code)]
    pub fn kill_controller(&self) {
        let pid: i32 = std::fs::read_to_string(self.home.path().join("controller.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        sigkill(pid);
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe extern "C" {
        fn geteuid() -> u32;
    }
    unsafe { geteuid() == 0 }
}

impl Twelve {
    /// The observability server's address (`host:port`), once the controller wrote it.
    pub fn web_addr(&self) -> String {
        eventually("TWELVE_HOME/web.addr", Duration::from_secs(30), || {
            std::fs::read_to_string(self.home.path().join("web.addr"))
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        })
    }

    /// The observability server's port.
    pub fn web_port(&self) -> u16 {
        self.web_addr().rsplit(':').next().unwrap().parse().unwrap()
    }
}

/// A TCP port nothing listened on a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Requests `app` through the ingress in a loop (bounded in time) until stopped; counts
/// successes and failures and keeps the first few failures with their time.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ok: std::sync::Arc<std::sync::atomic::AtomicU64>,
    failed: std::sync::Arc<std::sync::atomic::AtomicU64>,
    errors: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    pub fn start(t: &Twelve, app: &str) -> Load {
        use std::sync::atomic::Ordering;
        let load = Load {
            stop: Default::default(),
            ok: Default::default(),
            failed: Default::default(),
            errors: Default::default(),
            handle: None,
        };
        let (s, o, f, e) = (
            load.stop.clone(),
            load.ok.clone(),
            load.failed.clone(),
            load.errors.clone(),
        );
        let port = t.ingress_port;
        let host = format!("{app}.localhost:{port}");
        let handle = std::thread::spawn(move || {
            let started = Instant::now();
            while !s.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(300) {
                match http_get_host(port, "/", &host) {
                    Some((200, _)) => {
                        o.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        f.fetch_add(1, Ordering::Relaxed);
                        let mut e = e.lock().unwrap();
                        if e.len() < 10 {
                            e.push(format!("{:?}: {other:?}", started.elapsed()));
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Load {
            handle: Some(handle),
            ..load
        }
    }

    /// Failures so far.
    pub fn failed(&self) -> u64 {
        self.failed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops the loop: (successes, failures, the first failures).
    pub fn finish(mut self) -> (u64, u64, Vec<String>) {
        use std::sync::atomic::Ordering;
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.errors.lock().unwrap().clone(),
        )
    }
}
