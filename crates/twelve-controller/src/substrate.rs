//! The local substrate: turning a unit's plan (written in the rock's language) into what
//! runs on this machine, and keeping each unit's supervisor running.
//!
//! - The rock's paths map to the release: the app directory, `/bin/python3` and bare
//!   commands to the release's virtual environment or binaries, `/tmp` to the unit's own
//!   temporary directory, the plan's files (gunicorn.conf.py) to the unit's directory.
//! - `_daemon_` is a real unprivileged user when twelve runs as root; otherwise services
//!   run as the invoking user.

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use twelve_charm::UnitPlan;
use twelve_layer::{quote_word, Command, LayerDoc, Service};

/// rockcraft's shared unprivileged user.
pub const DAEMON_USER: &str = "_daemon_";
pub const DAEMON_UID: u32 = 584792;

/// Rock path prefixes and the host paths they stand for, longest first.
#[derive(Debug, Clone, Default)]
pub struct PathMap {
    pairs: Vec<(String, PathBuf)>,
    /// Directories searched for bare command names, before the system's.
    pub bin_dirs: Vec<PathBuf>,
    /// Bare command names that stand for a given program (`twelve`: this binary).
    programs: Vec<(String, PathBuf)>,
}

impl PathMap {
    pub fn new(mut pairs: Vec<(String, PathBuf)>, bin_dirs: Vec<PathBuf>) -> PathMap {
        pairs.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        PathMap {
            pairs,
            bin_dirs,
            programs: vec![],
        }
    }

    pub fn add(&mut self, rock: &str, host: PathBuf) {
        self.pairs.push((rock.to_string(), host));
        self.pairs.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    }

    /// Makes the bare command `name` run `program`.
    pub fn add_program(&mut self, name: &str, program: PathBuf) {
        self.programs.push((name.to_string(), program));
    }

    /// Maps a path if it is, or is under, a rock path.
    pub fn path(&self, p: &str) -> String {
        for (rock, host) in &self.pairs {
            if p == rock {
                return host.display().to_string();
            }
            if let Some(rest) = p.strip_prefix(rock.as_str()) {
                if rest.starts_with('/') {
                    return format!("{}{rest}", host.display());
                }
            }
        }
        p.to_string()
    }

    /// Maps one argument: a path, or `--flag=/path`.
    fn word(&self, w: &str) -> String {
        if w.starts_with('/') {
            return self.path(w);
        }
        if let Some((flag, value)) = w.split_once('=') {
            if value.starts_with('/') {
                return format!("{flag}={}", self.path(value));
            }
        }
        w.to_string()
    }

    /// Maps a command line; a bare program name found in the release's bin dirs becomes
    /// its absolute path.
    pub fn command(&self, command: &str) -> String {
        let Ok(cmd) = Command::parse(command) else {
            return command.to_string();
        };
        let mut base: Vec<String> = cmd.base.iter().map(|w| self.word(w)).collect();
        if let Some(first) = base.first_mut() {
            if let Some((_, program)) = self.programs.iter().find(|(n, _)| n == first) {
                *first = program.display().to_string();
            } else if !first.contains('/') {
                if let Some(found) = self
                    .bin_dirs
                    .iter()
                    .map(|d| d.join(&*first))
                    .find(|p| p.is_file())
                {
                    *first = found.display().to_string();
                }
            }
        }
        let args: Vec<String> = cmd.default_args.iter().map(|w| self.word(w)).collect();
        Command {
            base,
            default_args: args,
            has_args_group: cmd.has_args_group,
        }
        .to_string()
    }

    /// Maps rock paths written as quoted strings in a file (`chdir = '/flask/app'`).
    pub fn quoted_paths(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (rock, host) in &self.pairs {
            for q in ['\'', '"'] {
                out = out.replace(
                    &format!("{q}{rock}{q}"),
                    &format!("{q}{}{q}", host.display()),
                );
            }
        }
        out
    }

    pub fn argv(&self, argv: &[String]) -> Vec<String> {
        let line: Vec<String> = argv.iter().map(|w| quote_word(w)).collect();
        Command::parse(&self.command(&line.join(" ")))
            .map(|c| c.argv())
            .unwrap_or_else(|_| argv.to_vec())
    }
}

/// Who app processes run as on this machine.
#[derive(Debug, Clone, PartialEq)]
pub enum RunAs {
    /// twelve runs as root: apps run as `_daemon_`.
    Daemon { uid: u32, gid: u32 },
    /// twelve runs unprivileged: apps run as the invoking user.
    Invoker,
}

impl RunAs {
    /// Decides, creating the `_daemon_` user when twelve runs as root and it is missing.
    pub fn detect() -> Result<RunAs, String> {
        if !nix::unistd::geteuid().is_root() {
            return Ok(RunAs::Invoker);
        }
        if let Ok(Some(u)) = nix::unistd::User::from_name(DAEMON_USER) {
            return Ok(RunAs::Daemon {
                uid: u.uid.as_raw(),
                gid: u.gid.as_raw(),
            });
        }
        let out = std::process::Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                "--user-group",
            ])
            .args(["--uid", &DAEMON_UID.to_string(), DAEMON_USER])
            .output()
            .map_err(|e| format!("cannot run useradd to create the {DAEMON_USER} user: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "cannot create the {DAEMON_USER} user: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        match nix::unistd::User::from_name(DAEMON_USER) {
            Ok(Some(u)) => Ok(RunAs::Daemon {
                uid: u.uid.as_raw(),
                gid: u.gid.as_raw(),
            }),
            _ => Err(format!(
                "created the {DAEMON_USER} user but cannot look it up"
            )),
        }
    }

    pub fn chown(&self, path: &Path) {
        if let RunAs::Daemon { uid, gid } = self {
            let _ = nix::unistd::chown(
                path,
                Some(nix::unistd::Uid::from_raw(*uid)),
                Some(nix::unistd::Gid::from_raw(*gid)),
            );
        }
    }
}

/// The Unix socket a gunicorn unit listens on beside its port, for the ingress: a
/// connection there costs a fraction of a loopback TCP one, and gunicorn's sync workers
/// take one connection per request. `None` when the path would not fit in a socket
/// address (108 bytes on Linux), where the ingress uses the port alone.
pub fn gunicorn_socket(unit_dir: &Path) -> Option<PathBuf> {
    let path = unit_dir.join("run").join("gunicorn.sock");
    (path.as_os_str().len() < 100).then_some(path)
}

/// The lines added to a unit's `gunicorn.conf.py` for [`gunicorn_socket`]: the bind, when
/// its directory is there (without it gunicorn would not start; the ingress then uses the
/// port), which gunicorn unlinks if stale before binding and removes when it stops; and a
/// worker hook that gives requests arriving there the loopback address as `REMOTE_ADDR`,
/// as they had over TCP (gunicorn leaves it empty for a Unix socket peer).
fn gunicorn_socket_conf(sock: &Path) -> String {
    let py = |p: &Path| {
        p.display()
            .to_string()
            .replace('\\', "\\\\")
            .replace('\'', "\\'")
    };
    let quoted = py(sock);
    let dir = py(sock.parent().unwrap_or(Path::new("/")));
    format!(
        "\n# twelve: the ingress reaches this unit on a Unix socket beside the port.\n\
         import os as _twelve_os\n\n\
         if _twelve_os.path.isdir('{dir}'):\n\
         \x20   bind = bind + ['unix:{quoted}']\n\n\
         def post_worker_init(worker):\n\
         \x20   app = worker.wsgi\n\n\
         \x20   def twelve_unix_peer(environ, start_response):\n\
         \x20       if not environ.get('REMOTE_ADDR'):\n\
         \x20           environ['REMOTE_ADDR'] = '127.0.0.1'\n\
         \x20       return app(environ, start_response)\n\n\
         \x20   worker.wsgi = twelve_unix_peer\n"
    )
}

/// What a unit runs, mapped onto this machine.
#[derive(Debug, Clone, PartialEq)]
pub struct HostUnit {
    pub layer: LayerDoc,
    /// Files to write before replanning, host path -> content.
    pub files: IndexMap<PathBuf, String>,
    /// The app environment as the host runs it (for exec and migrations).
    pub environment: IndexMap<String, String>,
    pub app_dir: PathBuf,
    pub user: Option<String>,
}

/// Maps a plan: paths, commands, users, and the host environment additions.
pub fn host_unit(
    plan: &UnitPlan,
    map: &PathMap,
    unit_dir: &Path,
    run_as: &RunAs,
    app_dir_rock: &str,
) -> HostUnit {
    let mut map = map.clone();
    let tmp = unit_dir.join("tmp");
    map.add("/tmp", tmp.clone());
    let mut files = IndexMap::new();
    for rock_path in plan.files.keys() {
        let host = unit_dir
            .join("files")
            .join(rock_path.trim_start_matches('/'));
        map.add(rock_path, host.clone());
        files.insert(host, String::new());
    }
    for ((rock_path, content), slot) in plan.files.iter().zip(files.values_mut()) {
        *slot = map.quoted_paths(content);
        if rock_path.ends_with("/gunicorn.conf.py") {
            if let Some(sock) = gunicorn_socket(unit_dir) {
                slot.push_str(&gunicorn_socket_conf(&sock));
            }
        }
    }
    let path_env = {
        let mut dirs: Vec<String> = map
            .bin_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        dirs.extend(
            [
                "/usr/local/sbin",
                "/usr/local/bin",
                "/usr/sbin",
                "/usr/bin",
                "/sbin",
                "/bin",
            ]
            .map(String::from),
        );
        dirs.join(":")
    };
    let extra = |env: &mut IndexMap<String, String>| {
        env.insert("PATH".into(), path_env.clone());
        env.insert("TMPDIR".into(), tmp.display().to_string());
        env.entry("LANG".into()).or_insert_with(|| "C.UTF-8".into());
        env.entry("PYTHONUNBUFFERED".into())
            .or_insert_with(|| "1".into());
    };
    let user = match run_as {
        RunAs::Daemon { .. } => Some(DAEMON_USER.to_string()),
        RunAs::Invoker => None,
    };
    let mut layer = LayerDoc {
        summary: Some("twelve unit plan".into()),
        ..Default::default()
    };
    for (name, s) in &plan.services {
        let mut s: Service = s.clone();
        if let Some(c) = &s.command {
            s.command = Some(map.command(c));
        }
        if let Some(w) = &s.working_dir {
            s.working_dir = Some(map.path(w));
        }
        let wants_user = s.user.is_some() || s.user_id.is_some();
        s.user = None;
        s.user_id = None;
        s.group = None;
        s.group_id = None;
        if wants_user {
            s.user = user.clone();
        }
        for v in s.environment.values_mut() {
            if v.starts_with('/') && !v.contains(':') {
                *v = map.path(v);
            }
        }
        extra(&mut s.environment);
        layer.services.insert(name.clone(), s);
    }
    layer.checks = plan.checks.clone();
    layer.log_targets = plan.log_targets.clone();
    let mut environment = plan.environment.clone();
    extra(&mut environment);
    HostUnit {
        layer,
        files,
        environment,
        app_dir: PathBuf::from(map.path(app_dir_rock)),
        user,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The added lines are Python that gunicorn runs: the bind list gains the socket, and
    /// the worker hook fills an empty `REMOTE_ADDR` and leaves a real one alone.
    #[test]
    fn gunicorn_units_bind_a_unix_socket_and_keep_a_client_address() {
        let unit = Path::new("/var/lib/twelve/units/web-0.2");
        let sock = gunicorn_socket(unit).unwrap();
        assert_eq!(sock, unit.join("run/gunicorn.sock"));
        assert_eq!(
            gunicorn_socket(&Path::new("/x").join("y".repeat(100))),
            None
        );
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("o'k/run");
        let conf = format!(
            "bind = ['0.0.0.0:8000']\n{}",
            gunicorn_socket_conf(&run.join("gunicorn.sock"))
        );
        let check = r#"
import os, sys
conf = {}
text = sys.stdin.read()
run = sys.argv[1]
exec(text, conf)
assert conf['bind'] == ['0.0.0.0:8000'], ('no directory, no socket', conf['bind'])
os.makedirs(run)
conf = {}
exec(text, conf)
assert conf['bind'] == ['0.0.0.0:8000', 'unix:' + run + '/gunicorn.sock'], conf['bind']
class Worker:
    wsgi = staticmethod(lambda environ, start_response: environ['REMOTE_ADDR'])
w = Worker()
conf['post_worker_init'](w)
assert w.wsgi({'REMOTE_ADDR': ''}, None) == '127.0.0.1'
assert w.wsgi({}, None) == '127.0.0.1'
assert w.wsgi({'REMOTE_ADDR': '10.0.0.7'}, None) == '10.0.0.7'
print('ok')
"#;
        let mut child = std::process::Command::new("python3")
            .args(["-c", check])
            .arg(&run)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(conf.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "ok",
            "{conf}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn rock_paths_and_bare_commands_map_to_the_release() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("venv/bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(bin.join("celery"), "").unwrap();
        let map = PathMap::new(
            vec![
                ("/flask/app".into(), dir.path().join("app")),
                ("/bin/python3".into(), bin.join("python3")),
                (
                    "/flask/gunicorn.conf.py".into(),
                    PathBuf::from("/u/files/flask/gunicorn.conf.py"),
                ),
            ],
            vec![bin.clone()],
        );
        let c =
            map.command("/bin/python3 -m gunicorn -c /flask/gunicorn.conf.py app:app -k [ sync ]");
        assert_eq!(
            c,
            format!(
                "{}/python3 -m gunicorn -c /u/files/flask/gunicorn.conf.py app:app -k [ sync ]",
                bin.display()
            )
        );
        assert_eq!(
            map.command("celery -A app worker"),
            format!("{}/celery -A app worker", bin.display())
        );
        let mut map = map;
        map.add_program("twelve", PathBuf::from("/opt/twelve/bin/twelve"));
        assert_eq!(
            map.command("twelve statsd-exporter --prefix flask"),
            "/opt/twelve/bin/twelve statsd-exporter --prefix flask"
        );
        assert_eq!(
            map.command("sleep 10"),
            "sleep 10",
            "system commands are left to PATH"
        );
        assert_eq!(
            map.path("/flask/app/static"),
            format!("{}/app/static", dir.path().display())
        );
        assert_eq!(
            map.path("/flask/apples"),
            "/flask/apples",
            "only whole path components map"
        );
        let argv = Command::parse(&map.command("x --config=/flask/app/c.py"))
            .unwrap()
            .argv();
        assert_eq!(
            argv,
            [
                "x".to_string(),
                format!("--config={}/app/c.py", dir.path().display())
            ]
        );
    }
}
