//! Running processes: identity and environment resolution, spawning in a new process
//! group with the right credentials, signalling groups, collecting output of one-off
//! commands, and reaping orphans the daemon inherits as a child subreaper.
//!
//! Every child the daemon spawns is registered in `TRACKED` before control returns to the
//! runtime, so the orphan reaper never steals an exit status tokio is waiting for
//! (reference/crates.md §3.4). The daemon runs a single-threaded runtime, so spawning and
//! reaping never interleave.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use indexmap::IndexMap;
use nix::unistd::{Gid, Group, Uid, User};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// The pids of children that tokio waits for.
static TRACKED: Mutex<Option<HashSet<u32>>> = Mutex::new(None);

fn track(pid: u32) {
    TRACKED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashSet::new)
        .insert(pid);
}

/// Forget a child once tokio has reaped it.
pub fn untrack(pid: u32) {
    if let Some(set) = TRACKED.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        set.remove(&pid);
    }
}

fn is_tracked(pid: u32) -> bool {
    TRACKED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .is_some_and(|s| s.contains(&pid))
}

/// Set once the daemon has made itself exempt from the OOM killer: its services then go
/// back to the ordinary score, so that a unit over its memory limit loses a service
/// process (which the daemon restarts), never its supervisor.
static OOM_PROTECTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Exempts the daemon from the OOM killer (root only; a no-op otherwise).
pub fn protect_from_oom() {
    if Uid::effective().is_root() && std::fs::write("/proc/self/oom_score_adj", "-1000").is_ok() {
        OOM_PROTECTED.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// In a child between fork and exec: the ordinary OOM score again. Raw syscalls only.
fn reset_oom_score() {
    // SAFETY: open/write/close on a static path and buffer.
    unsafe {
        let fd = libc::open(
            c"/proc/self/oom_score_adj".as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC,
        );
        if fd >= 0 {
            libc::write(fd, b"0".as_ptr().cast(), 1);
            libc::close(fd);
        }
    }
}

/// Make the daemon the reaper of its orphaned descendants.
pub fn become_subreaper() -> std::io::Result<()> {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes plain integers.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The pids of the daemon's children, from `/proc/self/task/*/children`, or by scanning
/// `/proc` for our ppid where that file is missing (CONFIG_PROC_CHILDREN off).
fn child_pids() -> Vec<u32> {
    let mut pids: Vec<u32> = Vec::new();
    let mut found = false;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            if let Ok(children) = std::fs::read_to_string(task.path().join("children")) {
                found = true;
                pids.extend(
                    children
                        .split_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok()),
                );
            }
        }
    }
    if found {
        return pids;
    }
    let me = std::process::id().to_string();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(p.path().join("stat")) else {
            continue;
        };
        // Fields after the ")" that closes the command name: state, ppid, ...
        let ppid = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().nth(1));
        if ppid == Some(me.as_str()) {
            pids.push(pid);
        }
    }
    pids
}

/// Reaps exited children that nobody waits for (orphans re-parented to the daemon).
pub fn reap_orphans() {
    for pid in child_pids() {
        if is_tracked(pid) {
            continue;
        }
        let _ = nix::sys::wait::waitpid(
            nix::unistd::Pid::from_raw(pid as i32),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG),
        );
    }
}

/// Who a process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub home: Option<String>,
    pub name: Option<String>,
}

/// The user/group fields of a service, an exec check or an exec request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IdentitySpec {
    pub user: Option<String>,
    pub user_id: Option<u32>,
    pub group: Option<String>,
    pub group_id: Option<u32>,
}

impl IdentitySpec {
    pub fn is_empty(&self) -> bool {
        self.user.is_none() && self.user_id.is_none()
    }

    /// Fields set here win over `base` (as exec and checks over their service-context).
    pub fn or(self, base: &IdentitySpec) -> IdentitySpec {
        if !self.is_empty() {
            return self;
        }
        base.clone()
    }

    /// Looks the user up in passwd/group. None when no user is set.
    pub fn resolve(&self) -> Result<Option<Identity>, String> {
        if self.user.is_none() && self.user_id.is_none() {
            if self.group.is_some() || self.group_id.is_some() {
                return Err("must specify user, not just group".into());
            }
            return Ok(None);
        }
        let by_name = match &self.user {
            Some(name) => Some(
                User::from_name(name)
                    .map_err(|e| format!("cannot look up user {name:?}: {e}"))?
                    .ok_or_else(|| format!("user {name:?} not found"))?,
            ),
            None => None,
        };
        let uid = match (self.user_id, &by_name) {
            (Some(id), Some(u)) if u.uid.as_raw() != id => {
                return Err(format!(
                    "user {:?} has uid {}, not {id}",
                    u.name,
                    u.uid.as_raw()
                ))
            }
            (Some(id), _) => id,
            (None, Some(u)) => u.uid.as_raw(),
            (None, None) => unreachable!("checked above"),
        };
        let user = match by_name {
            Some(u) => Some(u),
            None => User::from_uid(Uid::from_raw(uid)).ok().flatten(),
        };
        let group_by_name = match &self.group {
            Some(name) => Some(
                Group::from_name(name)
                    .map_err(|e| format!("cannot look up group {name:?}: {e}"))?
                    .ok_or_else(|| format!("group {name:?} not found"))?,
            ),
            None => None,
        };
        let gid = match (self.group_id, &group_by_name, &user) {
            (Some(id), Some(g), _) if g.gid.as_raw() != id => {
                return Err(format!(
                    "group {:?} has gid {}, not {id}",
                    g.name,
                    g.gid.as_raw()
                ))
            }
            (Some(id), _, _) => id,
            (None, Some(g), _) => g.gid.as_raw(),
            (None, None, Some(u)) => u.gid.as_raw(),
            (None, None, None) => {
                return Err(format!(
                    "cannot find primary group of uid {uid}: no passwd entry"
                ))
            }
        };
        let mut groups = vec![gid];
        if let Some(u) = &user {
            if let Ok(name) = std::ffi::CString::new(u.name.clone()) {
                if let Ok(list) = nix::unistd::getgrouplist(&name, Gid::from_raw(gid)) {
                    groups = list.into_iter().map(|g| g.as_raw()).collect();
                }
            }
        }
        Ok(Some(Identity {
            uid,
            gid,
            groups,
            home: user.as_ref().map(|u| u.dir.to_string_lossy().into_owned()),
            name: user.map(|u| u.name),
        }))
    }
}

/// Everything needed to start a process.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub argv: Vec<String>,
    /// The complete environment (the daemon's own, then the service's, and so on).
    pub env: Vec<(String, String)>,
    pub working_dir: Option<PathBuf>,
    pub identity: Option<Identity>,
}

/// The environment for a process: the daemon's own, then each layer in order, then
/// HOME and USER from passwd when a user is set and the layers did not give them.
pub fn build_env(
    layers: &[&IndexMap<String, String>],
    identity: Option<&Identity>,
) -> Vec<(String, String)> {
    let mut env: IndexMap<String, String> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let mut given = HashSet::new();
    for layer in layers {
        for (k, v) in layer.iter() {
            env.insert(k.clone(), v.clone());
            given.insert(k.as_str());
        }
    }
    if let Some(id) = identity {
        if !given.contains("HOME") {
            if let Some(home) = &id.home {
                env.insert("HOME".into(), home.clone());
            }
        }
        if !given.contains("USER") {
            if let Some(name) = &id.name {
                env.insert("USER".into(), name.clone());
            }
        }
    }
    env.into_iter().collect()
}

/// Spawns `spec` in its own process group, stdout and stderr piped.
pub fn spawn(spec: &Spec, stdin: bool, kill_on_drop: bool) -> Result<Child, String> {
    let (prog, args) = spec
        .argv
        .split_first()
        .ok_or_else(|| "empty command".to_string())?;
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(kill_on_drop)
        .process_group(0);
    if let Some(dir) = &spec.working_dir {
        if !dir.is_dir() {
            return Err(format!(
                "working directory {:?} does not exist",
                dir.display().to_string()
            ));
        }
        cmd.current_dir(dir);
    }
    if OOM_PROTECTED.load(std::sync::atomic::Ordering::Relaxed) {
        // SAFETY: only raw syscalls on static data between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                reset_oom_score();
                Ok(())
            });
        }
    }
    if let Some(id) = &spec.identity {
        let (uid, gid) = (id.uid, id.gid);
        let switch = uid != Uid::effective().as_raw() || gid != Gid::effective().as_raw();
        if switch {
            let groups: Vec<libc::gid_t> = id.groups.clone();
            // SAFETY: the closure runs between fork and exec; it only makes raw
            // syscalls on data captured before the fork (no allocation, no locks).
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setgroups(groups.len(), groups.as_ptr()) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    if libc::setgid(gid) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    if libc::setuid(uid) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
    }
    let child = cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("cannot find executable {prog:?}"),
        _ => format!("cannot start {prog:?}: {e}"),
    })?;
    if let Some(pid) = child.id() {
        track(pid);
    }
    Ok(child)
}

/// Waits for a child and forgets it.
pub async fn wait(child: &mut Child) -> crate::state::Exit {
    let pid = child.id();
    let status = child.wait().await;
    if let Some(pid) = pid {
        untrack(pid);
    }
    match status {
        Ok(s) => crate::state::Exit { code: s.code() },
        Err(_) => crate::state::Exit { code: None },
    }
}

/// Sends a signal to a process group (`kill(-pgid)`).
pub fn signal_group(pgid: u32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid as i32), sig);
}

/// Whether any process is left in a process group (zombies count until reaped).
pub fn group_alive(pgid: u32) -> bool {
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid as i32), None).is_ok()
}

/// SIGKILLs what is left of a process group whose leader exited and was reaped, waiting
/// (briefly) until it is gone; whether anything was left. A group whose number was
/// reused by a new leader (a process `pgid` that leads its own group) is not touched.
pub fn kill_orphaned_group(pgid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pgid}/stat")).unwrap_or_default();
    let leads_a_group = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(2))
        .is_some_and(|g| g == pgid.to_string());
    if leads_a_group || !group_alive(pgid) {
        return false;
    }
    signal_group(pgid, nix::sys::signal::Signal::SIGKILL);
    // Gone in microseconds unless a process sleeps in the kernel; its sockets and files
    // are released when it is.
    let until = std::time::Instant::now() + std::time::Duration::from_millis(300);
    while group_alive(pgid) && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    true
}

/// Sends a signal to one process.
pub fn signal_pid(pid: u32, sig: nix::sys::signal::Signal) -> Result<(), String> {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).map_err(|e| e.to_string())
}

/// Output of a one-off command.
#[derive(Debug, Clone, Default)]
pub struct Output {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub timed_out: bool,
}

/// The most a one-off command's stdout or stderr keeps; the rest is read and dropped.
pub const MAX_OUTPUT_BYTES: usize = 64 * 1024 * 1024;

async fn read_capped(mut pipe: impl AsyncRead + Unpin, cap: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = cap.saturating_sub(out.len());
                out.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    out
}

/// Runs `spec` to completion (or until `timeout`, then kills its process group),
/// collecting stdout and stderr up to `cap` bytes each.
pub async fn run_to_completion(
    spec: &Spec,
    stdin: Option<Vec<u8>>,
    timeout: Option<Duration>,
    cap: usize,
) -> Result<Output, String> {
    let mut child = spawn(spec, stdin.is_some(), true)?;
    let pgid = child.id();
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        tokio::spawn(async move {
            let _ = pipe.write_all(&data).await;
        });
    }
    let out = tokio::spawn(read_capped(child.stdout.take().expect("piped"), cap));
    let err = tokio::spawn(read_capped(child.stderr.take().expect("piped"), cap));
    let mut timed_out = false;
    let exit = match timeout {
        None => wait(&mut child).await,
        Some(t) => match tokio::time::timeout(t, wait(&mut child)).await {
            Ok(exit) => exit,
            Err(_) => {
                timed_out = true;
                if let Some(pgid) = pgid {
                    signal_group(pgid, nix::sys::signal::Signal::SIGKILL);
                }
                wait(&mut child).await
            }
        },
    };
    // Grandchildren that keep the pipes open must not hold us forever.
    let grace = Duration::from_secs(2);
    let stdout = tokio::time::timeout(grace, out)
        .await
        .ok()
        .and_then(|r| r.ok())
        .unwrap_or_default();
    let stderr = tokio::time::timeout(grace, err)
        .await
        .ok()
        .and_then(|r| r.ok())
        .unwrap_or_default();
    Ok(Output {
        exit_code: exit.code_or_minus_one(),
        stdout,
        stderr,
        timed_out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_layers_win_and_home_comes_from_passwd() {
        let mut service = IndexMap::new();
        service.insert("A".to_string(), "1".to_string());
        service.insert("PATH".to_string(), "/x".to_string());
        let id = IdentitySpec {
            user: Some("root".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap()
        .unwrap();
        assert_eq!(id.uid, 0);
        let env = build_env(&[&service], Some(&id));
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("A"), Some("1"));
        assert_eq!(get("PATH"), Some("/x"));
        assert_eq!(get("USER"), Some("root"));
        assert_eq!(get("HOME"), Some("/root"));
    }

    #[test]
    fn group_alone_is_refused_and_unknown_users_are_errors() {
        let e = IdentitySpec {
            group: Some("root".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert_eq!(e, "must specify user, not just group");
        let e = IdentitySpec {
            user: Some("no-such-user-here".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(e.contains("not found"), "{e}");
    }
}
