//! `twelve pebble run`: the daemon's life, from loading layers to the last service
//! stopped.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use twelve_layer::Plan;

use crate::logs::LogStore;
use crate::manager::Manager;

pub struct RunOptions {
    pub dir: PathBuf,
    /// Don't start the enabled services.
    pub hold: bool,
    /// Copy service output to stdout.
    pub verbose: bool,
}

pub fn pid_file(dir: &Path) -> PathBuf {
    dir.join(".pebble.pid")
}

/// Runs the daemon until it is told to stop; returns the process exit code.
pub fn run(opts: RunOptions) -> i32 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            crate::log(&format!("Cannot start runtime: {e}"));
            return 1;
        }
    };
    let code = rt.block_on(run_async(opts));
    rt.shutdown_timeout(Duration::from_millis(100));
    code
}

async fn run_async(opts: RunOptions) -> i32 {
    match daemon(opts).await {
        Ok(code) => code,
        Err(e) => {
            crate::log(&format!("Cannot start daemon: {e}"));
            1
        }
    }
}

async fn daemon(opts: RunOptions) -> Result<i32, String> {
    let dir = &opts.dir;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let layers = crate::layers::load_dir(&dir.join("layers"))?;
    let plan = Plan::from_layers(&layers).map_err(|e| e.to_string())?;
    crate::process::protect_from_oom();
    if let Err(e) = crate::process::become_subreaper() {
        crate::log(&format!("Cannot become child subreaper: {e}"));
    }

    let socket = crate::client::socket_in(dir);
    if socket.exists() {
        if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
            return Err(format!(
                "another daemon is already listening on {}",
                socket.display()
            ));
        }
        let _ = std::fs::remove_file(&socket);
    }
    let listener = tokio::net::UnixListener::bind(&socket)
        .map_err(|e| format!("cannot listen on {}: {e}", socket.display()))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot chmod {}: {e}", socket.display()))?;
    let pid_path = pid_file(dir);
    std::fs::write(&pid_path, format!("{}\n", std::process::id()))
        .map_err(|e| format!("cannot write {}: {e}", pid_path.display()))?;

    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let mut quit = signal(SignalKind::quit()).map_err(|e| e.to_string())?;
    let mut child = signal(SignalKind::child()).map_err(|e| e.to_string())?;
    // Losing the terminal or the parent must not end the daemon.
    let mut hup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;

    let (shutdown_tx, mut shutdown_rx) = mpsc::unbounded_channel();
    let logs = Arc::new(LogStore::new(opts.verbose));
    let mgr = Manager::new(layers, plan, logs, shutdown_tx);
    tokio::spawn(crate::api::serve(listener, mgr.clone()));
    crate::log("Started daemon.");
    mgr.plan_changed();

    if !opts.hold {
        let defaults = mgr.default_services();
        if defaults.is_empty() {
            crate::log("Cannot start default services: no default services");
        } else {
            let m = mgr.clone();
            let id = mgr.changes.spawn(
                "autostart",
                "Autostart default services".into(),
                async move {
                    m.start(&defaults)
                        .await
                        .map(|_| None)
                        .map_err(|e| (e, None))
                },
            );
            crate::log(&format!("Started default services with change {id}."));
        }
    }

    let code = loop {
        tokio::select! {
            _ = term.recv() => { crate::log("Exiting on terminated signal."); break 0; }
            _ = int.recv() => { crate::log("Exiting on interrupt signal."); break 0; }
            _ = quit.recv() => { crate::log("Exiting on quit signal."); break 0; }
            _ = hup.recv() => {}
            _ = child.recv() => crate::process::reap_orphans(),
            code = shutdown_rx.recv() => {
                let code = code.unwrap_or(0);
                crate::log(&format!("Shutting down (exit code {code})."));
                break code;
            }
        }
    };

    let limit = mgr.max_kill_delay() + crate::state::FAIL_DELAY + Duration::from_millis(100);
    // The services' process groups, known now: whatever is left of them when the stop
    // times out is killed, so that no service outlives its supervisor.
    let groups: Vec<u32> = mgr
        .service_infos(&[])
        .into_iter()
        .filter_map(|s| s.pid)
        .collect();
    let stopping = mgr.stop_all();
    tokio::pin!(stopping);
    let deadline = tokio::time::sleep(limit);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            r = &mut stopping => {
                if let Err(e) = r {
                    crate::log(&format!("Cannot stop all services: {e}"));
                }
                break;
            }
            _ = &mut deadline => {
                crate::log("Timed out stopping services; killing what is left of them.");
                for pgid in &groups {
                    crate::process::signal_group(*pgid, nix::sys::signal::Signal::SIGKILL);
                }
                break;
            }
            _ = child.recv() => crate::process::reap_orphans(),
        }
    }
    crate::process::reap_orphans();
    kill_session_leftovers();
    // The services' last lines still go to the log targets (bounded wait).
    mgr.logs.forwarder.shutdown().await;
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_file(&pid_path);
    Ok(code)
}

/// When this daemon leads its own session (as twelve starts unit supervisors), nothing of
/// that session may outlive it: a service started in a race with the shutdown (a restart
/// after a backoff, a replan) is killed here. A daemon run from a terminal does not lead
/// its session and leaves it alone.
fn kill_session_leftovers() {
    let me = std::process::id() as i32;
    let Ok(sid) = nix::unistd::getsid(None) else {
        return;
    };
    if sid.as_raw() != me {
        return;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp session ...; comm may hold spaces and parentheses.
        let session = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(3))
            .and_then(|s| s.parse::<i32>().ok());
        if session == Some(me) {
            crate::log(&format!("Killing process {pid}, left over from a service."));
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}
