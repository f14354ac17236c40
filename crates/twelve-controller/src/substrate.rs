//! The local substrate: turning a unit's plan (written in the rock's language) into what
//! runs on this machine, and keeping each unit's supervisor running.
//!
//! - The rock's paths map to the release: the app directory, `/bin/python3` and bare
//!   commands to the release's virtual environment or binaries, `/tmp` to the unit's own
//!   temporary directory, the plan's files (gunicorn.conf.py) to the unit's directory.
//! - The rock's `_daemon_` becomes the app's own system user when twelve runs as root
//!   ([`AppUser`], one per app, from a reserved uid range); otherwise services run as the
//!   invoking user.

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use twelve_charm::UnitPlan;
use twelve_layer::{quote_word, Command, LayerDoc, Service};

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

/// The first and last uid of the range twelve gives app users from (above rockcraft's
/// `_daemon_`, 584792; outside the usual login and subordinate-id ranges).
pub const APP_UID_MIN: u32 = 590_000;
pub const APP_UID_MAX: u32 = 599_999;

/// Who app processes run as on this machine.
#[derive(Debug, Clone, PartialEq)]
pub enum RunAs {
    /// twelve runs as root: every app gets a system user of its own ([`AppUser`]), as
    /// systemd's DynamicUser gives each service one.
    PerApp,
    /// twelve runs unprivileged: apps run as the invoking user (no isolation between apps).
    Invoker,
}

/// The system user and group an app's processes run as, each app its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// Eight hex digits naming a `TWELVE_HOME`, so that two controllers' apps of the same
/// name get different users (and cgroups).
pub fn home_tag(home: &Path) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(home.as_os_str().as_encoded_bytes());
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// The user name of an app of the controller at `home`: `tw<tag>-<app>`, within the 32
/// characters a user name may have (a longer app name keeps 14 characters and gains a
/// digest of the whole, so two long names never share a user). The tag comes first so
/// that `ps`, which shows eight characters, tells apps apart.
pub fn app_user_name(home: &Path, app: &str) -> String {
    use sha2::Digest;
    let tag = &home_tag(home)[..6];
    let name = format!("tw{tag}-{app}");
    if name.len() <= 32 {
        return name;
    }
    let digest = sha2::Sha256::digest(app.as_bytes());
    let h: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    let head: String = app.chars().take(14).collect();
    format!("tw{tag}-{head}-{}", &h[..7])
}

impl RunAs {
    pub fn detect() -> RunAs {
        if nix::unistd::geteuid().is_root() {
            RunAs::PerApp
        } else {
            RunAs::Invoker
        }
    }

    /// The app's user, created (with a group of its own) when it does not exist yet.
    /// `None` when twelve runs unprivileged.
    pub fn app_user(&self, home: &Path, app: &str) -> Result<Option<AppUser>, String> {
        self.system_user(home, app, "app")
    }

    /// The user a managed backing service's servers run as (`twelve deploy postgresql`):
    /// a user of its own, named and numbered as an app's (services and apps share one
    /// namespace), so that neither apps nor other services can read its data. Created
    /// when it does not exist yet; `None` when twelve runs unprivileged.
    pub fn service_user(&self, home: &Path, service: &str) -> Result<Option<AppUser>, String> {
        self.system_user(home, service, "service")
    }

    /// Deletes a backing service's user and group (after its servers stopped): whether it
    /// is gone. `userdel` refuses while a process of the user still runs (a server's
    /// helpers exit a moment after the server): the caller tries again.
    pub fn remove_service_user(&self, home: &Path, service: &str) -> bool {
        if *self == RunAs::Invoker {
            return true;
        }
        let name = app_user_name(home, service);
        if lookup_user(&name).is_none() {
            return true;
        }
        let _ = std::process::Command::new("userdel").arg(&name).output();
        lookup_user(&name).is_none()
    }

    fn system_user(&self, home: &Path, app: &str, what: &str) -> Result<Option<AppUser>, String> {
        if *self == RunAs::Invoker {
            return Ok(None);
        }
        let name = app_user_name(home, app);
        if let Some(u) = lookup_user(&name) {
            return Ok(Some(u));
        }
        let comment = format!("twelve {what} {app} ({})", home.display());
        for uid in APP_UID_MIN..=APP_UID_MAX {
            let taken = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                .ok()
                .flatten()
                .is_some()
                || nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(uid))
                    .ok()
                    .flatten()
                    .is_some();
            if taken {
                continue;
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
                    "--comment",
                    &comment,
                    "--uid",
                    &uid.to_string(),
                ])
                .arg(&name)
                .output()
                .map_err(|e| format!("cannot run useradd to create the user of {app}: {e}"))?;
            if out.status.success() {
                return lookup_user(&name)
                    .map(Some)
                    .ok_or_else(|| format!("created the user {name} but cannot look it up"));
            }
            // Another controller took this uid, or this name, in the meantime.
            if let Some(u) = lookup_user(&name) {
                return Ok(Some(u));
            }
            if out.status.code() == Some(4) {
                continue;
            }
            return Err(format!(
                "cannot create the user {name} for {app}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Err(format!(
            "no free uid left in {APP_UID_MIN}-{APP_UID_MAX} for the user of {app}"
        ))
    }

    /// Deletes the app's user and group (after its processes are gone).
    pub fn remove_app_user(&self, home: &Path, app: &str) {
        if *self == RunAs::Invoker {
            return;
        }
        let name = app_user_name(home, app);
        if lookup_user(&name).is_some() {
            let _ = std::process::Command::new("userdel").arg(&name).output();
        }
    }
}

fn lookup_user(name: &str) -> Option<AppUser> {
    nix::unistd::User::from_name(name)
        .ok()
        .flatten()
        .map(|u| AppUser {
            name: u.name,
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
        })
}

/// The app a unit directory belongs to: `<app>-<n>` or `<app>-<n>.<k>`.
pub fn app_of_unit_dir(dir: &Path) -> Option<String> {
    let name = dir.file_name()?.to_str()?;
    let base = match name.rsplit_once('.') {
        Some((b, k)) if k.parse::<u32>().is_ok() => b,
        _ => name,
    };
    let (app, n) = base.rsplit_once('-')?;
    (n.parse::<u32>().is_ok() && !app.is_empty()).then(|| app.to_string())
}

/// Gives `path` to `owner` (uid, gid) with `mode`; root keeps what is root's when `owner`
/// is `None` (twelve runs unprivileged).
pub fn own(path: &Path, owner: Option<(u32, u32)>, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some((uid, gid)) = owner {
        nix::unistd::chown(
            path,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        )
        .map_err(std::io::Error::from)?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Lays out a unit's directory for its app's user: the directory itself root's and the
/// app group's (0750: the app reads its files, nobody else enters), and `tmp` (TMPDIR),
/// `run` (its sockets) and `home` (HOME) the app user's own (0700).
pub fn unit_dirs(dir: &Path, user: Option<&AppUser>) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    own(dir, user.map(|u| (0, u.gid)), 0o750)?;
    for sub in ["tmp", "run", "home"] {
        let path = dir.join(sub);
        std::fs::create_dir_all(&path)?;
        own(&path, user.map(|u| (u.uid, u.gid)), 0o700)?;
    }
    Ok(())
}

/// Writes the files of a unit's plan (gunicorn.conf.py): root's, readable by the app's
/// group (0640) and nobody else's; the app cannot change its own supervisor's inputs.
pub fn write_unit_files(
    files: &IndexMap<PathBuf, String>,
    user: Option<&AppUser>,
) -> Result<(), String> {
    for (path, content) in files {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            // `files/` and the directories under it: the app's group traverses them
            // (the controller's umask would leave them root's alone).
            for dir in parent.ancestors() {
                own(dir, user.map(|u| (0, u.gid)), 0o750)
                    .map_err(|e| format!("{}: {e}", dir.display()))?;
                if dir.file_name().is_some_and(|n| n == "files") {
                    break;
                }
            }
        }
        std::fs::write(path, content).map_err(|e| e.to_string())?;
        own(path, user.map(|u| (0, u.gid)), 0o640)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// Closes a release directory to every app but the ones that run it: mode 0750, root's,
/// with a POSIX ACL entry `group:<app group>:r-x` for each app group in `gids` (a
/// release is content-addressed, so two apps deploying the same files share it). What is
/// inside keeps its modes: without a way through this directory, nobody else reaches it.
/// Fails where the file system has no ACLs (the caller then leaves it open, and says so).
pub fn restrict_release(dir: &Path, gids: &[u32]) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    // The kernel's posix_acl_xattr format: a version, then (tag, perm, id) entries in tag
    // order, named groups by id, a mask when there are named entries.
    const USER_OBJ: u16 = 0x01;
    const GROUP_OBJ: u16 = 0x04;
    const GROUP: u16 = 0x08;
    const MASK: u16 = 0x10;
    const OTHER: u16 = 0x20;
    const UNDEFINED: u32 = u32::MAX;
    let mut gids = gids.to_vec();
    gids.sort_unstable();
    gids.dedup();
    let mut acl: Vec<u8> = 2u32.to_le_bytes().to_vec();
    let mut entry = |tag: u16, perm: u16, id: u32| {
        acl.extend_from_slice(&tag.to_le_bytes());
        acl.extend_from_slice(&perm.to_le_bytes());
        acl.extend_from_slice(&id.to_le_bytes());
    };
    entry(USER_OBJ, 7, UNDEFINED);
    entry(GROUP_OBJ, 5, UNDEFINED);
    for g in &gids {
        entry(GROUP, 5, *g);
    }
    entry(MASK, 5, UNDEFINED);
    entry(OTHER, 0, UNDEFINED);
    own(dir, Some((0, 0)), 0o750)?;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: a NUL-terminated path, a static attribute name, and a buffer with its length.
    let r = unsafe {
        libc::setxattr(
            path.as_ptr(),
            c"system.posix_acl_access".as_ptr(),
            acl.as_ptr().cast(),
            acl.len(),
            0,
        )
    };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        // Leave it as it was: readable, rather than closed to the app that runs it.
        let _ = own(dir, None, 0o755);
        return Err(e);
    }
    Ok(())
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
    /// The app's own user, who owns the unit's files (`None`: twelve runs unprivileged).
    pub app_user: Option<AppUser>,
}

/// Maps a plan: paths, commands, users, and the host environment additions.
pub fn host_unit(
    plan: &UnitPlan,
    map: &PathMap,
    unit_dir: &Path,
    app_user: Option<&AppUser>,
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
        // A directory of plan files under the rock's /tmp (uvicorn's log config, named by
        // PYTHONPATH) is the files' directory, not the unit's temporary one.
        if let (Some(dir), Some(host_dir)) = (
            Path::new(rock_path).parent().and_then(Path::to_str),
            host.parent(),
        ) {
            if dir.starts_with("/tmp/") {
                map.add(dir, host_dir.to_path_buf());
            }
        }
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
    let home = unit_dir.join("home");
    let extra = |env: &mut IndexMap<String, String>| {
        env.insert("PATH".into(), path_env.clone());
        env.insert("TMPDIR".into(), tmp.display().to_string());
        env.insert("HOME".into(), home.display().to_string());
        env.entry("LANG".into()).or_insert_with(|| "C.UTF-8".into());
        env.entry("PYTHONUNBUFFERED".into())
            .or_insert_with(|| "1".into());
    };
    // Every service of the unit runs as the app's user, whether or not the plan names
    // one: the rocks run everything as `_daemon_` (`run-user`), never as root.
    let user = app_user.map(|u| u.name.clone());
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
        s.user = user.clone();
        s.user_id = None;
        s.group = None;
        s.group_id = None;
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
        app_user: app_user.cloned(),
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
    fn unit_directories_name_their_app() {
        for (dir, app) in [
            ("/h/units/web-0", Some("web")),
            ("/h/units/my-app-12.3", Some("my-app")),
            ("/h/units/web-x", None),
            ("/h/units/web", None),
            ("/h/units/-1", None),
        ] {
            assert_eq!(app_of_unit_dir(Path::new(dir)).as_deref(), app, "{dir}");
        }
    }

    #[test]
    fn app_users_are_distinct_per_home_and_app_and_valid_names() {
        let (h1, h2) = (Path::new("/var/lib/twelve"), Path::new("/srv/other"));
        let a = app_user_name(h1, "web");
        assert!(
            a.starts_with("tw") && a.ends_with("-web") && a.len() == 12,
            "{a}"
        );
        assert_ne!(a, app_user_name(h2, "web"), "two controllers, two users");
        let long1 = app_user_name(h1, "a-very-long-application-name-number-one");
        let long2 = app_user_name(h1, "a-very-long-application-name-number-two");
        assert_ne!(long1, long2);
        for n in [&a, &long1, &long2] {
            assert!(n.len() <= 32, "{n}");
            assert!(
                n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{n}"
            );
        }
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
