//! Trust boundaries between apps on one machine (docs/security.md), tried the way they get
//! broken: another app as the attacker, a supervisor killed at the worst time, a port
//! somebody else holds, a unit that eats memory. Real controller, real Flask units, real
//! cgroups. These need root (twelve gives each app a system user only when it runs as
//! root); CI runs as root.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

const LONG: Duration = Duration::from_secs(90);

fn need_root() -> bool {
    if !is_root() {
        eprintln!("SKIPPED: per-app users and cgroups need root (CI runs as root)");
        return false;
    }
    true
}

/// A unit's supervisor directory, from `status`.
fn unit_dir(t: &Twelve, app: &str, n: u32) -> PathBuf {
    let st = t.status(app);
    let unit = format!("{app}/{n}");
    let u = st["units"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == unit.as_str())
        .unwrap_or_else(|| panic!("{unit} in {st}"));
    PathBuf::from(u["supervisor"].as_str().unwrap())
}

/// The processes in a unit's cgroup (the directory `.cgroups` names first).
fn cgroup_procs(dir: &Path) -> Vec<i32> {
    let record = std::fs::read_to_string(dir.join(".cgroups")).unwrap_or_default();
    let Some(cg) = record.lines().next().and_then(|l| l.split_once(' ')) else {
        return vec![];
    };
    std::fs::read_to_string(Path::new(cg.1).join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn status_field(pid: i32, field: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .map(|v| v.trim().to_string())
}

fn uid_of(pid: i32) -> Option<u32> {
    status_field(pid, "Uid:")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A live process: there and not a zombie (this sandbox's init does not reap).
fn alive(pid: i32) -> bool {
    status_field(pid, "State:").is_some_and(|s| !s.starts_with('Z'))
}

fn cmdline(pid: i32) -> String {
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default())
        .replace('\0', " ")
}

fn ppid(pid: i32) -> Option<i32> {
    status_field(pid, "PPid:")?.parse().ok()
}

fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
        .collect()
}

fn supervisor_pid(dir: &Path) -> i32 {
    std::fs::read_to_string(dir.join(".pebble.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// The app's processes in its unit (the supervisor, root's, left out), with their uids.
fn app_processes(dir: &Path) -> Vec<(i32, u32, String)> {
    let sup = supervisor_pid(dir);
    cgroup_procs(dir)
        .into_iter()
        .filter(|p| *p != sup && alive(*p))
        .filter_map(|p| Some((p, uid_of(p)?, cmdline(p))))
        .collect()
}

/// `twelve exec UNIT -- sh -c SCRIPT`: (exit success, stdout + stderr).
fn exec_sh(t: &Twelve, unit: &str, script: &str) -> (bool, String) {
    let out = t.cmd(&["exec", unit, "--", "sh", "-c", script]);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn deploy_active(t: &Twelve, dir: &Path, app: &str, extra: &[&str]) {
    let mut args = vec!["deploy", dir.to_str().unwrap(), app];
    args.extend_from_slice(extra);
    let out = t.ok(&args);
    assert!(out.contains(&format!("{app} is active")), "{out}");
}

#[test]
fn one_app_cannot_read_signal_or_take_over_another() {
    if !need_root() {
        return;
    }
    let t = Twelve::new();
    let src = t.example("flask");
    // bravo's code differs from alpha's, so it has a release of its own.
    let bravo_src = tempfile::Builder::new()
        .prefix("twelve-bravo-")
        .tempdir()
        .unwrap();
    copy_dir(&src, bravo_src.path());
    std::fs::write(bravo_src.path().join("bravo_only.py"), "TOKEN = 'b'\n").unwrap();
    let _ = std::fs::set_permissions(
        bravo_src.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    );
    deploy_active(&t, &src, "alpha", &[]);
    deploy_active(&t, bravo_src.path(), "bravo", &[]);
    let (a_dir, b_dir) = (unit_dir(&t, "alpha", 0), unit_dir(&t, "bravo", 0));

    // Every process of each app (web, workers, schedulers, the statsd exporter) runs as
    // that app's own non-root user.
    let uids = |dir: &Path| -> (BTreeSet<u32>, String) {
        let procs = eventually("the unit's services", LONG, || {
            let p = app_processes(dir);
            let cmds: String = p.iter().map(|x| x.2.clone() + "\n").collect();
            (["gunicorn", "worker.py", "scheduler.py", "statsd-exporter"]
                .iter()
                .all(|s| cmds.contains(s)))
            .then_some(p)
        });
        (
            procs.iter().map(|p| p.1).collect(),
            procs.iter().map(|p| p.2.clone() + "\n").collect(),
        )
    };
    let (a_uids, a_cmds) = uids(&a_dir);
    let (b_uids, b_cmds) = uids(&b_dir);
    assert_eq!(
        a_uids.len(),
        1,
        "one uid for all of alpha: {a_uids:?}\n{a_cmds}"
    );
    assert_eq!(
        b_uids.len(),
        1,
        "one uid for all of bravo: {b_uids:?}\n{b_cmds}"
    );
    let (a_uid, b_uid) = (*a_uids.first().unwrap(), *b_uids.first().unwrap());
    assert!(
        a_uid != 0 && b_uid != 0 && a_uid != b_uid,
        "{a_uid} {b_uid}"
    );

    let gunicorn = |dir: &Path| {
        app_processes(dir)
            .into_iter()
            .find(|p| p.2.contains("gunicorn"))
            .unwrap()
            .0
    };
    let (a_pid, b_pid) = (gunicorn(&a_dir), gunicorn(&b_dir));

    // What alpha may do with its own things (so that the refusals below are refusals).
    let (ok, out) = exec_sh(
        &t,
        "alpha/0",
        &format!(
            "tr '\\0' '\\n' < /proc/{a_pid}/environ | grep -c FLASK_SECRET_KEY && kill -0 {a_pid} && cat {}/files/flask/gunicorn.conf.py >/dev/null && touch {}/run/mine && echo \"$HOME\" && touch \"$HOME/x\"",
            a_dir.display(),
            a_dir.display()
        ),
    );
    assert!(ok, "alpha with its own processes and files: {out}");
    assert!(
        out.contains(&format!("{}/home", a_dir.display())),
        "HOME is the unit's own, writable: {out}"
    );

    // And what it may not do with bravo's.
    let b = b_dir.display();
    let release_of = |pid: i32| {
        let cmd = cmdline(pid);
        let at = cmd.find("/releases/").unwrap_or_else(|| panic!("{cmd}"));
        cmd[at..].split('/').nth(2).unwrap().to_string()
    };
    let (a_release, b_release) = (release_of(a_pid), release_of(b_pid));
    assert_ne!(a_release, b_release);
    let releases = t.home.path().join("releases");
    let (ok, out) = exec_sh(
        &t,
        "alpha/0",
        &format!(
            "cat {}/{a_release}/app/app.py >/dev/null",
            releases.display()
        ),
    );
    assert!(ok, "alpha reads its own code: {out}");
    for (what, script) in [
        ("read bravo's environment", format!("cat /proc/{b_pid}/environ")),
        ("signal bravo's processes", format!("kill -0 {b_pid}")),
        ("terminate bravo's processes", format!("kill -TERM {b_pid}")),
        ("read bravo's gunicorn.conf.py", format!("cat {b}/files/flask/gunicorn.conf.py")),
        ("list bravo's unit", format!("ls {b}")),
        ("read bravo's logs", format!("cat {b}/pebble.log")),
        ("write bravo's tmp", format!("touch {b}/tmp/x")),
        (
            "plant a socket where bravo's gunicorn listens",
            format!("rm -f {b}/run/gunicorn.sock; python3 -c 'import socket; s = socket.socket(socket.AF_UNIX); s.bind(\"{b}/run/gunicorn.sock\")'"),
        ),
        ("list the controller's home", format!("ls {}", t.home.path().display())),
        ("read the state store", format!("cat {}/state.db", t.home.path().display())),
        (
            "read bravo's code",
            format!("cat {}/{b_release}/app/bravo_only.py", releases.display()),
        ),
    ] {
        let (ok, out) = exec_sh(&t, "alpha/0", &script);
        assert!(!ok, "alpha could {what}: {script}\n{out}");
    }
    assert!(alive(b_pid), "bravo's gunicorn survived alpha's attempts");
    let (code, body) = via_ingress(&t, "bravo", "/").unwrap();
    assert_eq!((code, body.trim()), (200, "hello from flask-example"));

    // The ingress reaches bravo on its gunicorn socket: the peer there is bravo's user.
    let (_, how) = eventually("bravo over its Unix socket", LONG, || {
        via_ingress(&t, "bravo", "/request").filter(|(_, b)| b.contains("\"unix\""))
    });
    assert!(how.contains("\"transport\":\"unix\""), "{how}");

    // Had alpha's server got its socket where bravo's gunicorn listens (root puts it there
    // for the test: alpha itself cannot), the ingress still never hands it bravo's
    // requests: the peer is not bravo's user.
    let hijack_dir = tempfile::Builder::new()
        .prefix("twelve-hijack-")
        .tempdir()
        .unwrap();
    let _ = std::fs::set_permissions(
        hijack_dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    );
    let planted = hijack_dir.path().join("s.sock");
    let server = r#"
import os, socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
s.listen(64)
while True:
    c, _ = s.accept()
    c.recv(65536)
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: close\r\n\r\nhijacked\n")
    c.close()
"#;
    let mut evil = std::process::Command::new("setpriv")
        .args([
            &format!("--reuid={a_uid}"),
            &format!("--regid={a_uid}"),
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            server,
        ])
        .arg(&planted)
        .spawn()
        .unwrap();
    eventually("alpha's server listening", LONG, || {
        planted.exists().then_some(())
    });
    let b_sock = b_dir.join("run/gunicorn.sock");
    std::fs::rename(&planted, &b_sock).unwrap();
    let mut answers = vec![];
    for _ in 0..20 {
        if let Some((_, body)) = via_ingress(&t, "bravo", "/") {
            answers.push(body.trim().to_string());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = evil.kill();
    let _ = evil.wait();
    assert!(
        answers.iter().all(|b| b == "hello from flask-example") && answers.len() == 20,
        "the ingress handed bravo's requests to another user's socket: {answers:?}"
    );

    // Nothing of the controller's reaches an app's environment.
    let env = app_env(t.port("alpha/0"));
    assert!(env.get("TWELVE_HOME").is_none(), "{env}");
    assert_eq!(
        env["HOME"].as_str(),
        Some(format!("{}/home", a_dir.display()).as_str())
    );
}

#[test]
fn a_killed_supervisor_leaves_nothing_running_and_removal_leaves_no_process() {
    if !need_root() {
        return;
    }
    let t = Twelve::new();
    let src = t.example("flask");
    deploy_active(&t, &src, "web", &[]);
    let dir = unit_dir(&t, "web", 0);
    let procs = eventually("the unit's services", LONG, || {
        let p = app_processes(&dir);
        (p.len() >= 4).then_some(p)
    });
    let uid = procs[0].1;
    let sup = supervisor_pid(&dir);

    // SIGKILL the supervisor: its services would be orphans still serving with the app's
    // secrets. Within 10 s none of them is left, and every process of the app has a live
    // supervisor above it.
    nix_kill(sup, 9);
    let killed_at = Instant::now();
    let under_live_supervisor = |pid: i32| {
        let mut p = ppid(pid);
        while let Some(pp) = p.filter(|pp| *pp > 1) {
            if alive(pp) && cmdline(pp).contains("pebble run") {
                return true;
            }
            p = ppid(pp);
        }
        false
    };
    eventually(
        "no orphan of the killed supervisor",
        Duration::from_secs(10),
        || {
            let old_left: Vec<i32> = procs.iter().map(|p| p.0).filter(|p| alive(*p)).collect();
            let stray: Vec<i32> = all_pids()
                .into_iter()
                .filter(|p| alive(*p) && uid_of(*p) == Some(uid) && !under_live_supervisor(*p))
                .collect();
            (old_left.is_empty() && stray.is_empty()).then_some(())
        },
    );
    eprintln!("orphans gone {:?} after the kill", killed_at.elapsed());
    eventually("the app serving again", LONG, || {
        via_ingress(&t, "web", "/").filter(|(c, _)| *c == 200)
    });

    // Remove every app and stop the controller: no process of this TWELVE_HOME is left
    // (units, services, the ingress), and the app's user is gone.
    t.ok(&["remove-application", "web"]);
    t.ok(&["controller", "stop"]);
    let home = t.home.path().display().to_string();
    eventually("no process of this home", Duration::from_secs(10), || {
        let left: Vec<String> = all_pids()
            .into_iter()
            .filter(|p| alive(*p) && *p != std::process::id() as i32)
            .filter(|p| uid_of(*p) == Some(uid) || cmdline(*p).contains(&home))
            .map(|p| format!("{p}: {}", cmdline(p)))
            .collect();
        if !left.is_empty() {
            eprintln!("still running: {left:?}");
        }
        left.is_empty().then_some(())
    });
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    assert!(
        !passwd
            .lines()
            .any(|l| l.split(':').nth(2) == Some(&uid.to_string())),
        "the app's user was removed with it"
    );
}

fn nix_kill(pid: i32, sig: i32) {
    let ok = std::process::Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

#[test]
fn a_controller_refuses_an_ingress_port_held_by_anything_else() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut t = Twelve::new();
    t.ingress_port = holder.local_addr().unwrap().port();
    let err = t.fails(&["status"]);
    assert!(
        err.contains(&format!(
            "the ingress port {} is already held",
            t.ingress_port
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("pid {}", std::process::id())),
        "names the holder: {err}"
    );
    assert!(
        err.contains("TWELVE_INGRESS_PORT"),
        "says what to do: {err}"
    );
    // Nothing was left running for that home.
    assert!(!t.home.path().join("controller.pid").exists());
    drop(holder);
    // Once the port is free, the same home works.
    t.ok(&["status"]);
}

/// A copy of the Flask example with a route that allocates `mb` MiB.
fn hog_project(t: &Twelve) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("twelve-hog-")
        .tempdir()
        .unwrap();
    copy_dir(&t.example("flask"), dir.path());
    let app = dir.path().join("app.py");
    let mut text = std::fs::read_to_string(&app).unwrap();
    text.push_str(
        "\n\n@app.route(\"/hog\")\ndef hog():\n    data = b\"x\" * (200 * 1024 * 1024)\n    return flask.Response(f\"held {len(data)}\\n\", mimetype=\"text/plain\")\n",
    );
    std::fs::write(&app, text).unwrap();
    let _ = std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    );
    dir
}

fn oom_kills(dir: &Path) -> u64 {
    let record = std::fs::read_to_string(dir.join(".cgroups")).unwrap_or_default();
    record
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter_map(|(kind, d)| {
            let (file, key) = match kind {
                "memory" => ("memory.oom_control", "oom_kill "),
                "v2" => ("memory.events", "oom_kill "),
                _ => return None,
            };
            std::fs::read_to_string(Path::new(d).join(file))
                .ok()?
                .lines()
                .find_map(|l| l.strip_prefix(key))?
                .trim()
                .parse()
                .ok()
        })
        .max()
        .unwrap_or(0)
}

#[test]
fn a_unit_over_its_memory_limit_is_killed_and_restarted_while_others_serve() {
    if !need_root() {
        return;
    }
    let t = Twelve::new();
    let hog = hog_project(&t);
    deploy_active(&t, hog.path(), "hog", &["--constraints", "mem=64M cores=1"]);
    deploy_active(&t, &t.example("flask"), "calm", &[]);
    let st = t.status("hog");
    assert_eq!(st["constraints"]["mem"], 64 * 1024 * 1024, "{st}");
    assert_eq!(st["constraints"]["cores"], 1.0, "{st}");
    let dir = unit_dir(&t, "hog", 0);
    let sup = supervisor_pid(&dir);

    // calm is asked continuously while hog blows its limit.
    let stop = Arc::new(AtomicBool::new(false));
    let (asked, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let port = t.ingress_port;
    let load = {
        let (stop, asked, failed) = (stop.clone(), asked.clone(), failed.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                asked.fetch_add(1, Ordering::Relaxed);
                let r = http_get_host(port, "/", &format!("calm.localhost:{port}"));
                if r.map(|(c, _)| c) != Some(200) {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    let before = oom_kills(&dir);
    let r = via_ingress(&t, "hog", "/hog");
    assert!(
        r.as_ref().is_none_or(|(c, _)| *c != 200),
        "200 MB under a 64M limit: {r:?}"
    );
    eventually("the OOM kill counted", Duration::from_secs(10), || {
        (oom_kills(&dir) > before).then_some(())
    });
    eventually("hog serving again", LONG, || {
        via_ingress(&t, "hog", "/").filter(|(c, _)| *c == 200)
    });
    assert_eq!(
        supervisor_pid(&dir),
        sup,
        "the supervisor itself was spared"
    );

    // Raised live, without a restart: the same request now fits.
    t.ok(&["set-constraints", "hog", "mem=1G"]);
    assert_eq!(t.status("hog")["constraints"]["mem"], 1u64 << 30);
    let (code, body) = eventually("the hog route under 1G", LONG, || {
        via_ingress(&t, "hog", "/hog").filter(|(c, _)| *c == 200)
    });
    assert_eq!((code, body.trim()), (200, "held 209715200"));
    assert_eq!(supervisor_pid(&dir), sup, "no restart to change a limit");

    eventually("enough requests to calm", LONG, || {
        (asked.load(Ordering::Relaxed) >= 50).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    let (asked, failed) = (
        asked.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    assert_eq!(failed, 0, "calm failed {failed} of {asked} requests");

    // Bad constraints change nothing and say what is wrong.
    let err = t.fails(&["set-constraints", "hog", "mem=12Q"]);
    assert!(err.contains("unknown unit"), "{err}");
    let err = t.fails(&["set-constraints", "hog", "disk=1G"]);
    assert!(err.contains("twelve supports mem and cores"), "{err}");
    assert_eq!(t.status("hog")["constraints"]["mem"], 1u64 << 30);
}
