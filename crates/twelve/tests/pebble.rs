//! `twelve pebble`: the unit supervisor, run as a real daemon with real processes.
//!
//! Each test starts its own daemon in a temp dir (killed by a guard if the test fails)
//! and polls with deadlines; no assertion depends on a tight timing window.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod loki;

use loki::{certificates, Loki};
use twelve_pebble::client::{BlockingClient, Error};
use twelve_pebble::{ExecRequest, ServiceInfo};

const BIN: &str = env!("CARGO_BIN_EXE_twelve");
const DEADLINE: Duration = Duration::from_secs(10);

struct Daemon {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client: BlockingClient,
}

fn write_layers(dir: &Path, layers: &[(&str, &str)]) {
    let layers_dir = dir.join("layers");
    std::fs::create_dir_all(&layers_dir).unwrap();
    for (name, yaml) in layers {
        std::fs::write(layers_dir.join(name), yaml).unwrap();
    }
}

impl Daemon {
    fn start(layers: &[(&str, &str)]) -> Daemon {
        Daemon::start_with(layers, &[])
    }

    fn start_with(layers: &[(&str, &str)], args: &[&str]) -> Daemon {
        Daemon::start_env(layers, args, &[])
    }

    fn start_env(layers: &[(&str, &str)], args: &[&str], env: &[(&str, &Path)]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        write_layers(dir.path(), layers);
        let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
        let child = Command::new(BIN)
            .args(["pebble", "run", "--dir"])
            .arg(dir.path())
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, *v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let client = BlockingClient::new(dir.path().join(".pebble.socket")).unwrap();
        let d = Daemon {
            child: Some(child),
            dir,
            client,
        };
        d.wait_for("the API to answer", || {
            d.client.block_on(d.client.client().system_info()).is_ok()
        });
        d
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn cli(&self, args: &[&str]) -> Output {
        // `--dir` right after the subcommand: exec takes everything after `--`.
        Command::new(BIN)
            .arg("pebble")
            .args(&args[..1])
            .arg("--dir")
            .arg(self.path())
            .args(&args[1..])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs a client command that must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "twelve pebble {args:?} failed: {}\n--- daemon log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path().join("daemon.log")).unwrap_or_default()
    }

    fn wait_for(&self, what: &str, mut f: impl FnMut() -> bool) {
        let start = Instant::now();
        while !f() {
            if start.elapsed() > DEADLINE {
                panic!(
                    "timed out waiting for {what}\n--- daemon log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn service(&self, name: &str) -> ServiceInfo {
        let c = &self.client;
        c.block_on(c.client().services(&[name]))
            .unwrap()
            .pop()
            .unwrap()
    }

    fn pid(&self, name: &str) -> u32 {
        let mut pid = None;
        self.wait_for(&format!("{name} to run"), || {
            let s = self.service(name);
            pid = s.pid.filter(|_| s.is_active());
            pid.is_some()
        });
        pid.unwrap()
    }

    fn logs(&self, service: &str) -> Vec<String> {
        let c = &self.client;
        c.block_on(c.client().logs(&[service], Some(-1)))
            .unwrap()
            .into_iter()
            .map(|e| e.message)
            .collect()
    }

    fn wait_log(&self, service: &str, needle: &str) {
        self.wait_for(&format!("{needle:?} in the logs of {service}"), || {
            self.logs(service).iter().any(|l| l.contains(needle))
        });
    }

    /// Waits for the daemon to exit by itself; returns its exit code.
    fn wait_exit(&mut self) -> i32 {
        let mut child = self.child.take().unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            if start.elapsed() > DEADLINE + DEADLINE {
                let _ = child.kill();
                panic!("daemon did not exit\n--- daemon log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then the exit code.
    fn terminate(&mut self) -> i32 {
        let pid = self.child.as_ref().unwrap().id();
        kill(pid, "TERM");
        self.wait_exit()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill(child.id(), "TERM");
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn kill(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status();
}

fn alive(pid: u32) -> bool {
    // A zombie is as good as dead, but the daemon should reap it too (subreaper).
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|s| s.split_whitespace().next());
            state != Some("Z")
        }
        Err(_) => false,
    }
}

fn exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn layers_merge_and_bad_layers_are_one_line_errors() {
    let d = Daemon::start(&[
        (
            "001-base.yaml",
            "summary: base\nservices:\n  srv:\n    override: replace\n    command: sleep 1000\n    environment: {PORT: 5000, DATABASE: pg}\n    after: [other]\n  other:\n    override: replace\n    command: sleep 1000\n",
        ),
        (
            "002-over.yaml",
            "services:\n  srv:\n    override: merge\n    environment: {PORT: 8080, VERBOSE: 1}\n",
        ),
    ]);
    let plan = d.ok(&["plan"]);
    assert!(
        plan.contains("PORT: '8080'") || plan.contains("PORT: \"8080\""),
        "{plan}"
    );
    assert!(plan.contains("DATABASE: pg"), "{plan}");
    assert!(plan.contains("VERBOSE"), "{plan}");

    // A dynamic layer; combine merges into the same label, replace discards.
    let layer = d.path().join("charm.yaml");
    std::fs::write(
        &layer,
        "services:\n  srv:\n    override: merge\n    environment: {EXTRA: x}\n",
    )
    .unwrap();
    d.ok(&["add", "charm", layer.to_str().unwrap()]);
    let out = d.cli(&["add", "charm", layer.to_str().unwrap()]);
    assert!(!out.status.success());
    assert_eq!(
        stderr_of(&out).trim(),
        "error: layer \"charm\" already exists"
    );
    std::fs::write(
        &layer,
        "services:\n  srv:\n    override: replace\n    command: sleep 2000\n",
    )
    .unwrap();
    d.ok(&["add", "charm", layer.to_str().unwrap(), "--combine"]);
    let plan = d.ok(&["plan"]);
    assert!(
        plan.contains("sleep 2000") && !plan.contains("DATABASE"),
        "{plan}"
    );

    // Pebble's errors, one line each, and the plan is unchanged.
    std::fs::write(&layer, "services:\n  y:\n    command: foo\n").unwrap();
    let out = d.cli(&["add", "bad", layer.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr_of(&out).trim(),
        "error: layer \"bad\" must define \"override\" for service \"y\""
    );
    std::fs::write(
        &layer,
        "services:\n  y:\n    override: merge\n    comand: foo\n",
    )
    .unwrap();
    let out = d.cli(&["add", "bad", layer.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_of(&out).contains("comand"), "{}", stderr_of(&out));
    assert_eq!(
        stderr_of(&out).trim().lines().count(),
        1,
        "{}",
        stderr_of(&out)
    );
    std::fs::write(&layer, "services:\n  y:\n    override: merge\n").unwrap();
    let out = d.cli(&["add", "bad", layer.to_str().unwrap()]);
    assert_eq!(
        stderr_of(&out).trim(),
        "error: plan must define \"command\" for service \"y\""
    );
    assert_eq!(d.ok(&["plan"]), plan);

    let out = d.cli(&["start", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr_of(&out).trim(),
        "error: service \"nope\" does not exist"
    );
}

#[test]
fn a_bad_layer_file_stops_the_daemon_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    write_layers(
        dir.path(),
        &[("001-base.yaml", "services:\n  srv:\n    command: sleep 1\n")],
    );
    let out = Command::new(BIN)
        .args(["pebble", "run", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("layer \"base\" must define \"override\" for service \"srv\""),
        "{}",
        stderr_of(&out)
    );
}

#[test]
fn enabled_services_start_unless_held_and_socket_is_private() {
    let layers = [(
        "001-base.yaml",
        "services:\n  on:\n    override: replace\n    command: sleep 1000\n    startup: enabled\n  off:\n    override: replace\n    command: sleep 1000\n",
    )];
    let d = Daemon::start(&layers);
    d.pid("on");
    assert_eq!(d.service("off").current, "inactive");
    let table = d.ok(&["services"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("Service"), "{table}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("on ") && l.contains("enabled") && l.contains("active")),
        "{table}"
    );

    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(d.path().join(".pebble.socket"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let pidfile = std::fs::read_to_string(d.path().join(".pebble.pid")).unwrap();
    assert_eq!(pidfile.trim(), d.child.as_ref().unwrap().id().to_string());
    assert!(d.log().contains("[pebble] Started daemon."), "{}", d.log());

    let info = d.client.block_on(d.client.client().system_info()).unwrap();
    assert!(info
        .daemon_id
        .starts_with(&format!("{} ", d.child.as_ref().unwrap().id()).replace(' ', "-")));

    let held = Daemon::start_with(&layers, &["--hold"]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(held.service("on").current, "inactive");
    let held_info = held
        .client
        .block_on(held.client.client().system_info())
        .unwrap();
    assert_ne!(held_info.daemon_id, info.daemon_id);
    assert_eq!(held_info.boot_id, info.boot_id);
}

#[test]
fn okay_delay_backoff_growth_and_reset() {
    let d = Daemon::start(&[(
        "001-base.yaml",
        "services:\n  quick:\n    override: replace\n    command: sh -c 'echo run; exit 3'\n    backoff-delay: 100ms\n    backoff-factor: 2\n    backoff-limit: 10s\n  slow:\n    override: replace\n    command: sh -c 'sleep 1.5; exit 1'\n    backoff-delay: 100ms\n    backoff-limit: 300ms\n",
    )]);
    // Exits within the okay delay: start fails, but on-failure (restart) still applies.
    let out = d.cli(&["start", "quick"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out)
            .contains("Start service \"quick\" (cannot start service: exited quickly with code 3, will restart)"),
        "{}",
        stderr_of(&out)
    );
    d.wait_for("backoff to grow", || {
        d.log()
            .contains("Service \"quick\" waiting ~400ms before restart (backoff 3)")
    });
    let log = d.log();
    assert!(
        log.contains("waiting ~100ms before restart (backoff 1)"),
        "{log}"
    );
    assert!(
        log.contains("waiting ~200ms before restart (backoff 2)"),
        "{log}"
    );
    assert!(d.service("quick").start_count >= 3);
    d.ok(&["stop", "quick"]);
    assert_eq!(d.service("quick").current, "inactive");

    // Runs longer than backoff-limit each time: the backoff resets to the first delay.
    d.ok(&["start", "slow"]);
    d.wait_for("slow to restart twice", || {
        d.service("slow").start_count >= 3
    });
    let log = d.log();
    assert!(
        log.contains("Service \"slow\" waiting ~100ms before restart (backoff 1)"),
        "{log}"
    );
    assert!(!log.contains("Service \"slow\" waiting ~200ms"), "{log}");
}

#[test]
fn stop_escalates_to_sigkill_after_the_kill_delay() {
    let d = Daemon::start(&[(
        "001-base.yaml",
        "services:\n  stubborn:\n    override: replace\n    command: sh -c 'trap \"\" TERM; echo ready; sleep 100'\n    kill-delay: 300ms\n    startup: enabled\n",
    )]);
    let pid = d.pid("stubborn");
    d.wait_log("stubborn", "ready");
    let start = Instant::now();
    d.ok(&["stop", "stubborn"]);
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(d.log().contains("sending SIGKILL"), "{}", d.log());
    assert_eq!(d.service("stubborn").current, "inactive");
    d.wait_for("the process to be gone", || !alive(pid));
}

#[test]
fn stop_kills_the_whole_process_group_and_orphans_are_reaped() {
    let d = Daemon::start(&[(
        "001-base.yaml",
        "services:\n  tree:\n    override: replace\n    command: sh -c 'sleep 1000 & echo grandchild $!; wait'\n    startup: enabled\n",
    )]);
    d.pid("tree");
    d.wait_log("tree", "grandchild");
    let line = d
        .logs("tree")
        .into_iter()
        .find(|l| l.starts_with("grandchild"))
        .unwrap();
    let grandchild: u32 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(alive(grandchild));
    d.ok(&["stop", "tree"]);
    d.wait_for("the grandchild to die", || !alive(grandchild));

    // A process orphaned by its parent is re-parented to the daemon, which reaps it.
    d.ok(&["exec", "--", "sh", "-c", "(sleep 0.3 &) ; exit 0"]);
    std::thread::sleep(Duration::from_millis(600));
    d.wait_for("no zombie children of the daemon", || {
        let daemon = d.child.as_ref().unwrap().id();
        let children = std::fs::read_to_string(format!("/proc/{daemon}/task/{daemon}/children"))
            .unwrap_or_default();
        children
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
            .all(|p| alive(p) || !exists(p))
    });
}

/// A leader that dies by itself (a gunicorn master SIGKILLed) leaves its children holding
/// the service's listening socket; unless they go, every restart fails to bind. The
/// supervisor sends them SIGTERM at once and SIGKILLs what is left before the restart.
#[test]
fn what_a_dead_leader_leaves_behind_does_not_keep_its_port_from_the_restart() {
    let port = free_port();
    let script = format!(
        "import os, signal, socket, sys, time\n\
         s = socket.socket()\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         try:\n    s.bind(('127.0.0.1', {port})); s.listen()\n\
         except OSError as e:\n    print('cannot bind', e, flush=True); sys.exit(1)\n\
         if os.fork() == 0:\n    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n    while True: time.sleep(1)\n\
         print('serving', os.getpid(), flush=True)\n\
         while True: time.sleep(1)\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("server.py");
    std::fs::write(&file, script).unwrap();
    let d = Daemon::start(&[(
        "001-base.yaml",
        &format!(
            "services:\n  web:\n    override: replace\n    command: python3 {}\n    startup: enabled\n",
            file.display()
        ),
    )]);
    let first = d.pid("web");
    d.wait_log("web", &format!("serving {first}"));
    kill(first, "KILL");
    d.wait_for("the service to run again", || {
        let s = d.service("web");
        s.is_active() && s.pid.is_some_and(|p| p != first)
    });
    let second = d.pid("web");
    d.wait_log("web", &format!("serving {second}"));
    let logs = d.logs("web").join("\n");
    assert!(!logs.contains("cannot bind"), "{logs}");
    assert!(
        d.log()
            .contains("killed what its last process left running"),
        "{}",
        d.log()
    );
}

#[test]
fn stop_lets_the_rest_of_the_group_shut_down_gracefully() {
    // The leader (outer sh) dies on SIGTERM at once; its child traps it and takes 0.5 s.
    let d = Daemon::start(&[(
        "001-base.yaml",
        "services:\n  wrapped:\n    override: replace\n    command: sh -c 'sh -c \"trap \\\"sleep 0.5; echo graceful; exit 0\\\" TERM; echo up; while :; do sleep 0.1; done\" & wait'\n    kill-delay: 5s\n    startup: enabled\n",
    )]);
    d.pid("wrapped");
    d.wait_log("wrapped", "up");
    let start = Instant::now();
    d.ok(&["stop", "wrapped"]);
    let took = start.elapsed();
    d.wait_log("wrapped", "graceful");
    assert!(took >= Duration::from_millis(400), "{took:?}");
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert!(!d.log().contains("sending SIGKILL"), "{}", d.log());
}

#[test]
fn replan_restarts_only_changed_services() {
    let d = Daemon::start(&[(
        "001-base.yaml",
        "services:\n  a:\n    override: replace\n    command: sleep 1000\n    startup: enabled\n  b:\n    override: replace\n    command: sleep 1000\n    startup: enabled\n  c:\n    override: replace\n    command: sleep 1000\n    startup: enabled\n",
    )]);
    let (a, b, c) = (d.pid("a"), d.pid("b"), d.pid("c"));
    let layer = d.path().join("l.yaml");
    std::fs::write(
        &layer,
        "services:\n  b:\n    override: merge\n    environment: {X: '1'}\n  d:\n    override: replace\n    command: sleep 1000\n    startup: enabled\n",
    )
    .unwrap();
    d.ok(&["add", "charm", layer.to_str().unwrap()]);
    // Adding a layer alone changes nothing.
    assert_eq!(d.pid("b"), b);
    assert_eq!(d.service("d").current, "inactive");
    d.ok(&["replan"]);
    assert_eq!(d.pid("a"), a);
    assert_eq!(d.pid("c"), c);
    assert_ne!(d.pid("b"), b);
    assert!(!alive(b));
    d.pid("d");
    // A second replan with nothing changed touches nothing.
    let b2 = d.pid("b");
    d.ok(&["replan"]);
    assert_eq!(d.pid("b"), b2);
    // restart restarts.
    d.ok(&["restart", "a"]);
    assert_ne!(d.pid("a"), a);
}

#[test]
fn start_pulls_in_requires_and_stop_takes_dependents_along() {
    let d = Daemon::start(&[(
        "001-base.yaml",
        "services:\n  db:\n    override: replace\n    command: sleep 1000\n  app:\n    override: replace\n    command: sleep 1000\n    requires: [db]\n    after: [db]\n  lone:\n    override: replace\n    command: sleep 1000\n",
    )]);
    d.ok(&["start", "app"]);
    assert!(d.service("db").is_active());
    assert!(d.service("app").is_active());
    assert_eq!(d.service("lone").current, "inactive");
    let log = d.log();
    let db_at = log.find("Service \"db\" starting").unwrap();
    let app_at = log.find("Service \"app\" starting").unwrap();
    assert!(db_at < app_at, "{log}");
    d.ok(&["stop", "db"]);
    assert_eq!(d.service("app").current, "inactive");
    assert_eq!(d.service("db").current, "inactive");
}

#[test]
fn http_check_goes_down_and_restarts_the_service() {
    let port = free_port();
    let d = Daemon::start(&[(
        "001-base.yaml",
        &format!(
            "services:\n  web:\n    override: replace\n    command: python3 -m http.server {port} --bind 127.0.0.1\n    startup: enabled\n  worker:\n    override: replace\n    command: sleep 1000\n    startup: enabled\n    on-check-failure: {{up: restart}}\nchecks:\n  up:\n    override: replace\n    level: ready\n    period: 200ms\n    timeout: 150ms\n    threshold: 2\n    http: {{url: 'http://127.0.0.1:{port}/'}}\n"
        ),
    )]);
    let worker = d.pid("worker");
    let c = &d.client;
    d.wait_for("the check to succeed", || {
        c.block_on(c.client().checks(&["up"])).unwrap()[0].successes >= 1
    });
    assert!(c.block_on(c.client().health(Some("ready"))).unwrap());
    assert_eq!(
        d.cli(&["health", "--level", "ready"]).status.code(),
        Some(0)
    );
    assert!(d.ok(&["checks"]).contains("up"));

    d.ok(&["stop", "web"]);
    d.wait_for("the check to go down", || {
        c.block_on(c.client().checks(&["up"])).unwrap()[0].status == "down"
    });
    assert!(!c.block_on(c.client().health(Some("ready"))).unwrap());
    // Alive checks are unaffected by a ready check.
    assert!(c.block_on(c.client().health(Some("alive"))).unwrap());
    let out = d.cli(&["health", "--level", "ready"]);
    assert_eq!(out.status.code(), Some(1));
    d.wait_for("the worker to restart", || {
        let s = d.service("worker");
        s.pid.is_some_and(|p| p != worker)
    });

    // A refresh runs the check now.
    d.ok(&["start", "web"]);
    d.wait_for("the refreshed check to pass", || {
        let (info, err) = c.block_on(c.client().refresh_check("up")).unwrap();
        err.is_none() && info.status == "up"
    });
    let metrics = c.block_on(c.client().metrics()).unwrap();
    assert!(
        metrics.contains("pebble_check_up{check=\"up\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pebble_service_active{service=\"web\"} 1"),
        "{metrics}"
    );
    // Restarted on the check's failure: at least once (again, when web took longer than
    // the check's threshold to come back on a loaded machine).
    let worker_starts: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("pebble_service_start_count{service=\"worker\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no worker start count in {metrics}"));
    assert!(worker_starts >= 2, "{metrics}");
}

#[test]
fn tcp_check_goes_down_after_its_threshold() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let closed = free_port();
    let d = Daemon::start(&[(
        "001-base.yaml",
        &format!(
            "checks:\n  port:\n    override: replace\n    level: alive\n    period: 200ms\n    threshold: 3\n    tcp: {{port: {port}, host: 127.0.0.1}}\n  later:\n    override: replace\n    startup: disabled\n    period: 200ms\n    threshold: 1\n    tcp: {{port: {closed}, host: 127.0.0.1}}\n"
        ),
    )]);
    let c = &d.client;
    let check = |name: &str| c.block_on(c.client().checks(&[name])).unwrap()[0].clone();
    d.wait_for("the tcp check to succeed", || check("port").successes >= 1);
    // A disabled check stays inactive, and inactive checks don't count for health.
    assert_eq!(check("later").status, "inactive");
    assert!(c.block_on(c.client().health(None)).unwrap());
    drop(listener);
    d.wait_for("the tcp check to go down", || {
        let info = check("port");
        info.status == "down" && info.failures >= 3
    });
    assert!(!c.block_on(c.client().health(None)).unwrap());
    assert!(check("port").error.unwrap().contains("cannot connect"));
    // start-checks starts it; it then fails like any other.
    assert!(d.ok(&["start-checks", "later"]).contains("later"));
    d.wait_for("the started check to go down", || {
        check("later").status == "down"
    });
    d.ok(&["stop-checks", "later"]);
    assert_eq!(check("later").status, "inactive");
}

#[test]
fn exec_check_failure_can_shut_the_daemon_down_with_11() {
    let flag = tempfile::NamedTempFile::new().unwrap();
    let mut d = Daemon::start(&[(
        "001-base.yaml",
        &format!(
            "services:\n  app:\n    override: replace\n    command: sleep 1000\n    startup: enabled\n    on-check-failure: {{ok: shutdown}}\nchecks:\n  ok:\n    override: replace\n    period: 200ms\n    threshold: 2\n    exec: {{command: 'test -f {}'}}\n",
            flag.path().display()
        ),
    )]);
    let c = &d.client;
    d.wait_for("the exec check to succeed", || {
        c.block_on(c.client().checks(&[])).unwrap()[0].successes >= 1
    });
    let app = d.pid("app");
    drop(flag);
    assert_eq!(d.wait_exit(), 11);
    assert!(!alive(app));
}

#[test]
fn daemon_exit_codes_follow_the_shutdown_actions() {
    let mut failing = Daemon::start(&[(
        "001-base.yaml",
        "services:\n  job:\n    override: replace\n    command: sh -c 'sleep 0.2; exit 4'\n    on-failure: shutdown\n    startup: enabled\n  other:\n    override: replace\n    command: sleep 1000\n    startup: enabled\n",
    )]);
    assert_eq!(failing.wait_exit(), 10);

    let mut done = Daemon::start(&[(
        "001-base.yaml",
        "services:\n  job:\n    override: replace\n    command: sh -c 'sleep 0.2'\n    on-success: shutdown\n    startup: enabled\n",
    )]);
    assert_eq!(done.wait_exit(), 0);

    let mut inverted = Daemon::start(&[(
        "001-base.yaml",
        "services:\n  job:\n    override: replace\n    command: sh -c 'sleep 0.2; exit 1'\n    on-failure: success-shutdown\n    startup: enabled\n",
    )]);
    assert_eq!(inverted.wait_exit(), 0);

    let mut term = Daemon::start(&[(
        "001-base.yaml",
        "services:\n  srv:\n    override: replace\n    command: sleep 1000\n    startup: enabled\n",
    )]);
    let srv = term.pid("srv");
    assert_eq!(term.terminate(), 0);
    assert!(!alive(srv));
    assert!(!term.path().join(".pebble.socket").exists());
}

#[test]
fn logs_are_bounded_and_formatted_like_pebble() {
    let d = Daemon::start(&[(
        "001-base.yaml",
        "services:\n  chatty:\n    override: replace\n    command: sh -c 'i=0; while [ $i -lt 3000 ]; do echo \"line $i xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"; i=$((i+1)); done; echo done >&2; sleep 1000'\n    startup: enabled\n  few:\n    override: replace\n    command: sh -c 'echo one; echo two >&2; sleep 1000'\n",
    )]);
    d.wait_log("chatty", "done");
    let all = d.logs("chatty");
    let bytes: usize = all.iter().map(|l| l.len()).sum();
    assert!(bytes <= 100 * 1024, "{bytes}");
    assert!(bytes > 50 * 1024, "{bytes}");
    assert!(!all.iter().any(|l| l.starts_with("line 0 ")));
    assert!(all.iter().any(|l| l.starts_with("line 2999 ")));

    let text = d.ok(&["logs", "chatty", "-n", "3"]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    // 2021-05-13T03:16:51.001Z [chatty] done
    let last = lines[2];
    assert_eq!(&last[23..], "Z [chatty] done", "{last}");
    assert_eq!(&last[4..5], "-");
    assert_eq!(&last[10..11], "T");
    assert_eq!(&last[19..20], ".");
    assert_eq!(d.ok(&["logs"]).lines().count(), 30);

    // The buffer survives a restart of the service.
    d.ok(&["restart", "chatty"]);
    assert!(d.logs("chatty").iter().any(|l| l.starts_with("line 2999 ")));

    // -f follows (all services, only new lines).
    let mut follow = Command::new(BIN)
        .args(["pebble", "logs", "-f", "-n", "0", "--dir"])
        .arg(d.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    d.ok(&["start", "few"]);
    d.wait_log("few", "two");
    std::thread::sleep(Duration::from_millis(300));
    let _ = follow.kill();
    let _ = follow.wait();
    let mut out = String::new();
    follow
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(
        out.contains("[few] one\n") && out.contains("[few] two\n") && !out.contains("[chatty]"),
        "{}",
        &out[..out.len().min(300)]
    );
}

#[test]
fn exec_returns_exit_code_output_and_uses_the_service_context() {
    let d = Daemon::start(&[(
        "001-base.yaml",
        "services:\n  app:\n    override: replace\n    command: sleep 1000\n    environment: {APP_MODE: prod, SHARED: service}\n    working-dir: /tmp\n",
    )]);
    let out = d.cli(&["exec", "--", "sh", "-c", "echo out; echo err >&2; exit 7"]);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(stderr_of(&out), "err\n");

    let out = d.ok(&[
        "exec",
        "--context",
        "app",
        "--env",
        "SHARED=exec",
        "--",
        "sh",
        "-c",
        "echo $APP_MODE $SHARED $(pwd)",
    ]);
    assert_eq!(out, "prod exec /tmp\n");
    let out = d.ok(&["exec", "-w", "/", "--", "pwd"]);
    assert_eq!(out, "/\n");
    let out = d.cli(&["exec", "-w", "/no/such/dir", "--", "pwd"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("working directory \"/no/such/dir\" does not exist"),
        "{}",
        stderr_of(&out)
    );

    // Megabytes of output.
    let c = &d.client;
    let big = c
        .block_on(c.client().exec(&ExecRequest::new([
            "sh",
            "-c",
            "head -c 3000000 /dev/zero | tr '\\0' a; echo; echo fine >&2",
        ])))
        .unwrap();
    assert_eq!(big.exit_code, 0);
    assert_eq!(big.stdout.len(), 3_000_001);
    assert_eq!(big.stderr, "fine\n");

    // Timeouts kill the command and fail.
    let mut req = ExecRequest::new(["sleep", "30"]);
    req.timeout = Some("300ms".into());
    let start = Instant::now();
    let err = c.block_on(c.client().exec(&req)).unwrap_err();
    assert!(matches!(err, Error::Change { .. }), "{err}");
    assert!(err.to_string().contains("timed out"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(10));

    let err = c
        .block_on(c.client().exec(&ExecRequest::new(["/no/such/binary"])))
        .unwrap_err();
    assert!(err.to_string().contains("/no/such/binary"), "{err}");
}

#[test]
fn services_switch_user_when_running_as_root() {
    if !nobody_exists() || unsafe_geteuid() != 0 {
        eprintln!("skipped: needs root and a nobody user");
        return;
    }
    let d = Daemon::start(&[(
        "001-base.yaml",
        "services:\n  low:\n    override: replace\n    command: sh -c 'echo uid=$(id -u) gid=$(id -g) home=$HOME user=$USER; sleep 1000'\n    user: nobody\n    startup: enabled\n",
    )]);
    d.wait_log("low", "uid=");
    let line = d
        .logs("low")
        .into_iter()
        .find(|l| l.starts_with("uid="))
        .unwrap();
    let nobody = Command::new("id").args(["-u", "nobody"]).output().unwrap();
    let uid = String::from_utf8_lossy(&nobody.stdout).trim().to_string();
    assert!(line.starts_with(&format!("uid={uid} ")), "{line}");
    assert!(line.contains("user=nobody"), "{line}");
    assert!(!line.contains("home=/root"), "{line}");

    let out = d.ok(&["exec", "--context", "low", "--", "id", "-u"]);
    assert_eq!(out.trim(), uid);
    let out = d.ok(&[
        "exec",
        "--user",
        "root",
        "--context",
        "low",
        "--",
        "id",
        "-u",
    ]);
    assert_eq!(out.trim(), "0");
}

#[test]
fn other_users_may_read_but_not_change() {
    if unsafe_geteuid() != 0 || Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("skipped: needs root and setpriv");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let d = Daemon::start(&[(
        "001-base.yaml",
        "services:\n  srv:\n    override: replace\n    command: sleep 1000\n    startup: enabled\n",
    )]);
    d.pid("srv");
    // Let uid 65534 reach the socket (the daemon makes it 0600) and run a copy of the binary.
    let perms = |p: &Path, mode| std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode));
    perms(d.path(), 0o755).unwrap();
    perms(&d.path().join(".pebble.socket"), 0o666).unwrap();
    let bin_dir = tempfile::tempdir().unwrap();
    perms(bin_dir.path(), 0o755).unwrap();
    let bin = bin_dir.path().join("twelve");
    std::fs::copy(BIN, &bin).unwrap();
    let as_nobody = |args: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&bin)
            .arg("pebble")
            .args(args)
            .arg("--dir")
            .arg(d.path())
            .output()
            .unwrap()
    };
    let out = as_nobody(&["services"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("srv"));
    let out = as_nobody(&["stop", "srv"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr_of(&out).trim(), "error: access denied");
    assert!(d.service("srv").is_active());
}

fn nobody_exists() -> bool {
    Command::new("id")
        .arg("nobody")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn unsafe_geteuid() -> u32 {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(1)
}

#[test]
fn signals_go_to_the_main_process() {
    let d = Daemon::start(&[(
        "001-base.yaml",
        "services:\n  hup:\n    override: replace\n    command: sh -c 'trap \"echo got HUP\" HUP; echo ready; while true; do sleep 0.1; done'\n    startup: enabled\n",
    )]);
    d.wait_log("hup", "ready");
    d.ok(&["signal", "HUP", "hup"]);
    d.wait_log("hup", "got HUP");
    let out = d.cli(&["signal", "NOPE", "hup"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("invalid signal"),
        "{}",
        stderr_of(&out)
    );
}

#[test]
fn the_daemon_outlives_its_parent() {
    let dir = tempfile::tempdir().unwrap();
    write_layers(
        dir.path(),
        &[(
            "001-base.yaml",
            "services:\n  srv:\n    override: replace\n    command: sleep 1000\n    startup: enabled\n",
        )],
    );
    // The parent shell starts the daemon in the background and exits at once.
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{BIN} pebble run --dir {} >/dev/null 2>&1 </dev/null &",
            dir.path().display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    let client = BlockingClient::new(dir.path().join(".pebble.socket")).unwrap();
    let start = Instant::now();
    let pidfile: PathBuf = dir.path().join(".pebble.pid");
    let mut ok = false;
    while start.elapsed() < DEADLINE {
        if client
            .block_on(client.client().services(&["srv"]))
            .is_ok_and(|s| s[0].is_active())
        {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = std::fs::read_to_string(&pidfile).unwrap_or_default();
    if let Ok(pid) = pid.trim().parse::<u32>() {
        kill(pid, "TERM");
        let start = Instant::now();
        while exists(pid) && alive(pid) && start.elapsed() < DEADLINE {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    assert!(ok, "the orphaned daemon did not serve");
}

/// The numbers of `tick N` lines.
fn ticks(lines: &[String]) -> Vec<u64> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("tick ")?.parse().ok())
        .collect()
}

const TICKER: &str = "sh -c 'i=0; while true; do echo \"tick $i\"; i=$((i+1)); sleep 0.05; done'";

impl Daemon {
    fn log_target(&self, name: &str) -> twelve_pebble::LogTargetInfo {
        let c = &self.client;
        c.block_on(c.client().log_targets())
            .unwrap()
            .into_iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("no log target {name:?}"))
    }

    /// As `wait_for`, with room for the forwarder's flush period and retry backoff.
    fn wait_long(&self, what: &str, mut f: impl FnMut() -> bool) {
        let start = Instant::now();
        while !f() {
            if start.elapsed() > DEADLINE * 4 {
                panic!(
                    "timed out waiting for {what}\n--- daemon log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// An `https://` location: the lines go over TLS to a receiver whose certificate a CA in
/// `SSL_CERT_FILE` signed. With another CA there, nothing is sent and the target says why.
#[test]
fn log_targets_forward_over_https_trusting_ssl_cert_file() {
    let certs = tempfile::tempdir().unwrap();
    certificates(certs.path(), "loki");
    certificates(certs.path(), "other");
    let read = |f: &str| std::fs::read(certs.path().join(f)).unwrap();
    let loki = Loki::start_tls(0, &read("loki-chain.pem"), &read("loki-key.pem"));
    let layer = format!(
        "services:\n  ticker:\n    override: replace\n    command: {TICKER}\n    startup: enabled\nlog-targets:\n  loki:\n    override: replace\n    type: loki\n    location: https://localhost:{}/loki/api/v1/push\n    services: [all]\n",
        loki.port
    );
    let ca = certs.path().join("loki-ca.pem");
    let d = Daemon::start_env(&[("001-base.yaml", &layer)], &[], &[("SSL_CERT_FILE", &ca)]);
    d.wait_long("ticks in Loki over TLS", || {
        ticks(&loki.lines("ticker")).len() >= 3
    });
    let got = ticks(&loki.lines("ticker"));
    assert_eq!(got, (0..got.len() as u64).collect::<Vec<_>>());
    assert_eq!(d.log_target("loki").status, "active");

    // Trusting another CA only: the handshake fails, nothing arrives, the target says so.
    let before = loki.lines("ticker").len();
    let other = certs.path().join("other-ca.pem");
    let d2 = Daemon::start_env(
        &[("001-base.yaml", &layer)],
        &[],
        &[("SSL_CERT_FILE", &other)],
    );
    d2.wait_long("the untrusted target failing", || {
        d2.log_target("loki").status == "failing"
    });
    let info = d2.log_target("loki");
    let error = info.error.unwrap_or_default();
    assert!(
        error.contains("TLS") && error.contains("certificate"),
        "{error}"
    );
    assert_eq!(info.sent, 0);
    drop(d);
    std::thread::sleep(Duration::from_millis(300));
    let after_first = loki.lines("ticker").len();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        loki.lines("ticker").len(),
        after_first,
        "nothing from the daemon that does not trust the certificate (had {before} before)"
    );
}

#[test]
fn log_targets_forward_selected_services_to_loki_with_labels_in_order() {
    let loki = Loki::start(0);
    let port = loki.port;
    let d = Daemon::start(&[(
        "001-base.yaml",
        &format!(
            "services:\n  ticker:\n    override: replace\n    command: {TICKER}\n    startup: enabled\n    environment: {{UNIT: web/0}}\n  quiet:\n    override: replace\n    command: sh -c 'echo quiet-line; sleep 1000'\n    startup: enabled\nlog-targets:\n  loki:\n    override: replace\n    type: loki\n    location: http://127.0.0.1:{port}/loki/api/v1/push\n    services: [all, -quiet]\n    labels: {{juju_unit: $UNIT, app: 'app-${{UNIT}}'}}\n"
        ),
    )]);
    d.wait_long("30 ticks in Loki", || {
        ticks(&loki.lines("ticker")).len() >= 30
    });

    // The push format: JSON, one stream per service with pebble_service and the
    // target's labels expanded from the service's environment; [nanos, line] values.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    // (`entries` fails on any push that is not Loki's JSON format.)
    let mut last = 0u128;
    let expected: std::collections::BTreeMap<String, String> = [
        ("pebble_service", "ticker"),
        ("juju_unit", "web/0"),
        ("app", "app-web/0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for e in loki.entries() {
        assert_eq!(e.labels, expected);
        let nanos = e.nanos;
        assert!(
            nanos.abs_diff(now) < 3600 * 1_000_000_000,
            "{nanos} vs {now}"
        );
        assert!(nanos >= last, "timestamps go back: {nanos} < {last}");
        last = nanos;
    }
    // Every line, in order, none lost.
    let got = ticks(&loki.lines("ticker"));
    assert_eq!(got, (0..got.len() as u64).collect::<Vec<_>>());

    // `quiet` is not selected: once a tick written after its line has arrived, its line
    // would have too (one queue per target, in order).
    d.wait_log("quiet", "quiet-line");
    let after = *ticks(&d.logs("ticker")).last().unwrap() + 1;
    d.wait_long("a later tick in Loki", || {
        ticks(&loki.lines("ticker")).contains(&after)
    });
    assert!(loki.lines("quiet").is_empty());
    assert!(!loki.entries().iter().any(|e| e.line == "quiet-line"));

    // The state, over the API and the CLI.
    let info = d.log_target("loki");
    assert_eq!(info.type_, "loki");
    assert_eq!(info.services, ["ticker"]);
    assert_eq!(info.status, "active", "{info:?}");
    assert_eq!(info.dropped, 0);
    assert!(info.sent >= 30, "{info:?}");
    let table = d.ok(&["log-targets"]);
    let header = table.lines().next().unwrap();
    assert!(header.starts_with("Target"), "{table}");
    let row = table.lines().nth(1).unwrap();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[..4], ["loki", "loki", "ticker", "active"], "{table}");

    // A layer disabling the target (services: [-all]), then replan: nothing written
    // afterwards is forwarded; the service and its local logs go on.
    let layer = d.path().join("logging.yaml");
    std::fs::write(
        &layer,
        "log-targets:\n  loki:\n    override: merge\n    services: [-all]\n",
    )
    .unwrap();
    d.ok(&["add", "logging", layer.to_str().unwrap()]);
    d.ok(&["replan"]);
    let last_queued = *ticks(&d.logs("ticker")).last().unwrap();
    d.wait_for("the ticker to go on", || {
        ticks(&d.logs("ticker")).last().unwrap() > &(last_queued + 30)
    });
    d.wait_long("the queue to drain", || d.log_target("loki").buffered == 0);
    let info = d.log_target("loki");
    assert!(info.services.is_empty(), "{info:?}");
    let got = ticks(&loki.lines("ticker"));
    assert!(
        got.last().unwrap() <= &last_queued,
        "tick {} forwarded after the target was disabled at {last_queued}",
        got.last().unwrap()
    );
    assert_eq!(got, (0..got.len() as u64).collect::<Vec<_>>());
    assert_eq!(d.service("ticker").current, "active");
}

#[test]
fn a_log_target_down_at_first_gets_the_buffered_lines_once_it_is_up() {
    let port = free_port();
    let d = Daemon::start(&[(
        "001-base.yaml",
        &format!("services:\n  ticker:\n    override: replace\n    command: {TICKER}\n    startup: enabled\n"),
    )]);
    // The target comes in a layer added over the API, as the controller adds it.
    let layer = d.path().join("logging.yaml");
    std::fs::write(
        &layer,
        format!("log-targets:\n  loki:\n    override: replace\n    type: loki\n    location: http://127.0.0.1:{port}/loki/api/v1/push\n    services: [all]\n"),
    )
    .unwrap();
    d.ok(&["add", "logging", layer.to_str().unwrap()]);
    d.wait_long("the target to fail", || {
        let t = d.log_target("loki");
        t.status == "failing" && t.failures >= 1 && t.buffered > 0
    });
    let info = d.log_target("loki");
    assert!(
        info.error
            .as_deref()
            .unwrap_or("")
            .contains("cannot connect"),
        "{info:?}"
    );
    assert!(d.ok(&["log-targets"]).contains("failing"));
    // Meanwhile the service runs and its local logs work.
    d.wait_log("ticker", "tick 5");

    let loki = Loki::start(port);
    d.wait_long("the buffered lines in Loki", || {
        ticks(&loki.lines("ticker")).len() >= 40
    });
    // In order, none lost (from the first line written after the target was added).
    let got = ticks(&loki.lines("ticker"));
    assert_eq!(got, (got[0]..got[0] + got.len() as u64).collect::<Vec<_>>());
    d.wait_long("the target to recover", || {
        d.log_target("loki").status == "active"
    });
    let info = d.log_target("loki");
    assert_eq!((info.dropped, info.failures), (0, 0), "{info:?}");
    assert!(d.log().contains("Resumed sending logs to target \"loki\""));
}

/// A supervisor that leads its session (as twelve starts them) leaves nothing behind: even
/// a process a service moved into a process group of its own, ignoring SIGTERM, dies with
/// it.
#[test]
fn a_session_leading_supervisor_leaves_no_process_behind() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("escaped.pid");
    let script = dir.path().join("escape.py");
    std::fs::write(
        &script,
        format!(
            "import os, signal, time\nif os.fork() == 0:\n    os.setpgid(0, 0)\n    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n    open({:?}, 'w').write(str(os.getpid()))\n    time.sleep(1000)\nelse:\n    time.sleep(1000)\n",
            pidfile.display().to_string()
        ),
    )
    .unwrap();
    write_layers(
        dir.path(),
        &[(
            "001-base.yaml",
            &format!(
                "services:\n  escaper:\n    override: replace\n    command: python3 {}\n    startup: enabled\n    kill-delay: 1s\n",
                script.display()
            ),
        )],
    );
    let mut child = Command::new("setsid")
        .arg(BIN)
        .args(["pebble", "run", "--dir"])
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("daemon.log")).unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let escaped: i32 = loop {
        if let Some(p) = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            break p;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the service never forked"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let alive = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            !s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        })
    };
    assert!(alive(escaped));
    kill(child.id(), "TERM");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let start = Instant::now();
    while alive(escaped) && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default();
    assert!(
        !alive(escaped),
        "process {escaped} outlived its supervisor:\n{log}"
    );
    assert!(log.contains("left over from a service"), "{log}");
}
