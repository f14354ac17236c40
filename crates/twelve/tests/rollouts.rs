//! Rollouts a user can trust: invalid input is refused and changes nothing, a blocked app
//! keeps serving what it runs, a change goes live only once ready everywhere, and a broken
//! one is rolled back by `twelve deploy`, which says why.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const LONG: Duration = Duration::from_secs(90);

fn config_values(t: &Twelve, app: &str) -> serde_json::Value {
    serde_json::from_str(&t.ok(&["config", app, "--format", "json"])).unwrap()
}

#[test]
fn invalid_config_is_refused_naming_the_option_and_changes_nothing() {
    let t = Twelve::new();
    let src = t.example("flask");
    t.ok(&["deploy", src.to_str().unwrap(), "val"]);
    eventually("serving through the ingress", LONG, || {
        via_ingress(&t, "val", "/").filter(|r| r.0 == 200)
    });
    let before = config_values(&t, "val");
    let uri = t.ok(&["add-secret", "not-granted", "value=x"]);
    let ungranted = format!("api-token={}", uri.trim());
    for (setting, named) in [
        ("webserver-workers=-5", "invalid options: webserver-workers"),
        ("webserver-workers=lots", "webserver-workers"),
        ("webserver-timeout=0", "invalid options: webserver-timeout"),
        ("api-token=1234", "invalid options: api-token"),
        (
            "api-token=secret:doesnotexist",
            "secret doesnotexist (option api-token) does not exist or is not granted to val",
        ),
        (
            ungranted.as_str(),
            "secret not-granted is not granted to val",
        ),
    ] {
        let err = t.fails(&["config", "val", setting, "greeting=never"]);
        assert!(err.contains(named), "{setting}: {err}");
        assert_eq!(
            err.trim()
                .lines()
                .filter(|l| l.starts_with("error"))
                .count(),
            1,
            "one message: {err}"
        );
    }
    assert_eq!(config_values(&t, "val"), before, "nothing stored");
    let st = t.status("val");
    assert_eq!(st["release"], 1, "{st}");
    assert_eq!(st["status"], "active", "{st}");
    let (code, body) = via_ingress(&t, "val", "/").unwrap();
    assert_eq!((code, body.contains("hello")), (200, true), "{body}");
}

#[test]
fn a_blocked_app_keeps_serving_the_release_it_runs() {
    let t = Twelve::new();
    let src = t.example("flask");
    t.ok(&["deploy", src.to_str().unwrap(), "held"]);
    let uri = t.ok(&["add-secret", "held-token", "value=abc"]);
    t.ok(&["grant-secret", "held-token", "held"]);
    t.ok(&["config", "held", &format!("api-token={}", uri.trim())]);
    // Revoked later: blocked as paas-charm blocks, and the running plan keeps serving.
    t.ok(&["revoke-secret", "held-token", "held"]);
    let st = eventually("blocked", LONG, || {
        let st = t.status("held");
        (st["status"] == "blocked").then_some(st)
    });
    assert_eq!(
        st["message"], "secret held-token is not granted to held; serving release 1",
        "{st}"
    );
    assert_eq!(st["serving_release"], 1, "{st}");
    for _ in 0..20 {
        let (code, body) = via_ingress(&t, "held", "/").unwrap();
        assert_eq!(code, 200, "{body}");
    }
    let text = t.ok(&["status"]);
    assert!(text.contains("serving release 1"), "{text}");
}

#[test]
fn commands_return_once_their_change_is_live() {
    let t = Twelve::new();
    let src = t.example("flask");
    t.ok(&["deploy", src.to_str().unwrap(), "sync"]);
    // scale-application: the new units exist, run and serve when it returns.
    let out = t.cmd(&["scale-application", "sync", "3"]);
    assert!(out.status.success());
    let progress = String::from_utf8_lossy(&out.stderr);
    assert!(progress.contains("sync/2:"), "a line per unit: {progress}");
    let st = t.status("sync");
    assert_eq!(st["status"], "active", "{st}");
    assert_eq!(st["units"].as_array().unwrap().len(), 3, "{st}");
    t.ok(&["logs", "sync/2"]);
    // config: every unit serves the new value when it returns.
    t.ok(&["config", "sync", "greeting=synced"]);
    every_unit_serves(&t, "sync", 3, "synced").expect("the new config everywhere");
    // remove-unit: gone when it returns.
    t.ok(&["remove-unit", "sync/1"]);
    assert_eq!(t.status("sync")["units"].as_array().unwrap().len(), 2);
    // run APP ACTION runs on the leader, and waits for the new key.
    let key = || {
        let port = t.port("sync/2");
        app_env(port)["FLASK_SECRET_KEY"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let before = key();
    t.ok(&["run", "sync", "rotate-secret-key"]);
    assert_ne!(key(), before, "rotated when `run` returned");
    t.ok(&["run", "sync/leader", "rotate-secret-key"]);
    let err = t.fails(&["run", "sync/2", "rotate-secret-key"]);
    assert!(err.contains("only leader unit"), "{err}");
    // --no-wait returns at once.
    t.ok(&["config", "sync", "greeting=later", "--no-wait"]);
}

fn every_unit_serves(t: &Twelve, app: &str, n: usize, needle: &str) -> Option<()> {
    let st = t.status(app);
    let units = st["units"].as_array()?;
    (units.len() == n).then_some(())?;
    for u in units {
        (u["status"] == "active").then_some(())?;
        let port: u16 = u["address"].as_str()?.rsplit(':').next()?.parse().ok()?;
        http_get(port, "/").filter(|(c, b)| *c == 200 && b.contains(needle))?;
    }
    Some(())
}

/// The pid of the gunicorn master a unit's supervisor runs.
fn gunicorn_master(t: &Twelve, unit: &str) -> i32 {
    let app = unit.split('/').next().unwrap();
    let st = t.status(app);
    let dir = st["units"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == unit)
        .unwrap()["supervisor"]
        .as_str()
        .unwrap()
        .to_string();
    let pebble: i32 = std::fs::read_to_string(Path::new(&dir).join(".pebble.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1))
            .and_then(|p| p.parse::<i32>().ok());
        let cmd = std::fs::read_to_string(e.path().join("cmdline")).unwrap_or_default();
        if ppid == Some(pebble) && cmd.contains("gunicorn") {
            return pid;
        }
    }
    panic!("no gunicorn under {unit}'s supervisor {pebble}");
}

/// Which processes listen on each unit's port (`ss -ltnp`), with their working
/// directories: tells whether the unit's own processes answer there.
fn listeners_of(t: &Twelve, app: &str) -> String {
    let st = t.status(app);
    let mut out = String::new();
    for u in st["units"].as_array().into_iter().flatten() {
        let addr = u["address"].as_str().unwrap_or_default();
        let port = addr.rsplit(':').next().unwrap_or_default();
        let ss = Command::new("ss")
            .args(["-Hltnp", &format!("sport = :{port}")])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        out.push_str(&format!(
            "{} {addr} (supervisor {}):\n{ss}",
            u["name"], u["supervisor"]
        ));
        for pid in ss.split("pid=").skip(1).filter_map(|r| r.split(',').next()) {
            let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
            let cmd = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            out.push_str(&format!(
                "  pid {pid} cwd {} cmd {}\n",
                cwd.display(),
                cmd.replace('\0', " ")
            ));
        }
    }
    out
}

/// Without a healthcheck path the ready check only connects, which a gunicorn master
/// passes before its worker has imported the app. The stability window starts at the
/// app's first HTTP answer, so a release that crashes 2 s after a slow (2 s) import is
/// rolled back instead of going live between its start and its crash.
#[test]
fn a_release_crashing_after_a_slow_start_is_rolled_back_without_a_healthcheck_path() {
    let t = Twelve::new();
    let src = t.example("flask");
    std::fs::remove_file(src.join("charm/paas-config.yaml")).unwrap();
    let s = src.to_str().unwrap();
    let good_app = std::fs::read_to_string(src.join("app.py")).unwrap();
    t.ok(&["deploy", s, "slowstart"]);
    eventually("serving", LONG, || {
        every_unit_serves(&t, "slowstart", 1, "hello")
    });
    std::fs::write(
        src.join("app.py"),
        format!(
            "import os, signal, threading, time\n\
             time.sleep(2)\n\
             {good_app}\n\
             def _crash():\n    time.sleep(2)\n    os.kill(os.getppid(), signal.SIGKILL)\n\
             threading.Thread(target=_crash, daemon=True).start()\n"
        ),
    )
    .unwrap();
    let out = t.cmd(&["deploy", s, "slowstart", "--timeout", "15s"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the crashing release went live: {err}"
    );
    assert!(err.contains("rolled back to release 1"), "{err}");
    assert_eq!(t.status("slowstart")["release"], 1);
    assert_eq!(via_ingress(&t, "slowstart", "/").unwrap().0, 200);
}

/// The "done when": a Flask app with 3 units under a client loop through the
/// ingress, and everything that can go wrong with a change. Not one request fails.
#[test]
fn chaos_three_units_under_load_fail_no_request() {
    let t = Twelve::new();
    let src = t.example("flask");
    let s = src.to_str().unwrap();
    let good_app = std::fs::read_to_string(src.join("app.py")).unwrap();
    let good_migrate = std::fs::read_to_string(src.join("migrate.sh")).unwrap();
    t.ok(&["deploy", s, "chaos", "-n", "3"]);
    eventually("3 units serving", LONG, || {
        every_unit_serves(&t, "chaos", 3, "hello")
    });
    let load = Load::start(&t, "chaos");
    std::thread::sleep(Duration::from_millis(300));

    // Five kinds of broken release: each rolled back, `deploy` failing and saying why.
    let crash_later = "import os, signal, threading, time\n\
        def _crash():\n    time.sleep(2)\n    print(f'crash: {os.getpid()} kills {os.getppid()}', flush=True)\n    os.kill(os.getppid(), signal.SIGKILL)\n\
        threading.Thread(target=_crash, daemon=True).start()\n";
    let broken: [(&str, String, Option<&str>, &str); 5] = [
        (
            "import error",
            format!("import module_that_does_not_exist\n{good_app}"),
            None,
            "module_that_does_not_exist",
        ),
        (
            "crash 2 s after start",
            format!("{good_app}\n{crash_later}"),
            None,
            "did not become ready",
        ),
        (
            "never serves on its port",
            format!("import time\ntime.sleep(3600)\n{good_app}"),
            None,
            "did not become ready",
        ),
        (
            "ready check answers 500",
            good_app.replace(
                "return flask.Response(\"ok\\n\", mimetype=\"text/plain\")",
                "return flask.Response(\"sick\\n\", status=500)",
            ),
            None,
            "flask-ready",
        ),
        (
            "migration exits 1",
            format!("{good_app}\n# needs a migration\n"),
            Some("#!/bin/bash\necho 'boom: cannot migrate' >&2\nexit 1\n"),
            "boom: cannot migrate",
        ),
    ];
    for (what, app_py, migrate, cause) in &broken {
        assert_ne!(app_py, &good_app, "{what}: the release differs");
        std::fs::write(src.join("app.py"), app_py).unwrap();
        std::fs::write(src.join("migrate.sh"), migrate.unwrap_or(&good_migrate)).unwrap();
        let started = Instant::now();
        let out = t.cmd(&["deploy", s, "chaos", "--timeout", "10s"]);
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            // What the units printed, to tell why the broken release looked stable.
            let logs = t.cmd(&["logs", "chaos", "--since", "1m", "-n", "-1"]);
            let logs = String::from_utf8_lossy(&logs.stdout);
            panic!(
                "{what}: deploy succeeded: {err}\nlogs (without the access log):\n{}\nlisteners:\n{}",
                logs.lines()
                    .filter(|l| !l.contains("\"GET "))
                    .collect::<Vec<_>>()
                    .join("\n"),
                listeners_of(&t, "chaos")
            );
        }
        assert!(
            err.contains("rolled back to release 1") && err.contains(cause),
            "{what}: {err}"
        );
        let st = t.status("chaos");
        assert_eq!(st["release"], 1, "{what}: {st}");
        eprintln!(
            "{what}: rolled back in {:.1}s, {} failed requests so far",
            started.elapsed().as_secs_f64(),
            load.failed()
        );
    }
    std::fs::write(src.join("app.py"), &good_app).unwrap();
    std::fs::write(src.join("migrate.sh"), &good_migrate).unwrap();
    // The good files again, without `--timeout`: the same release, and the default
    // deadline back for the changes below (10 s is short for a Flask boot on a loaded
    // machine).
    t.ok(&["deploy", s, "chaos"]);
    assert_eq!(t.status("chaos")["release"], 1);

    // Three invalid values: refused, nothing changes.
    let before = config_values(&t, "chaos");
    for setting in [
        "webserver-workers=-5",
        "webserver-timeout=soon",
        "api-token=secret:doesnotexist",
    ] {
        let err = t.fails(&["config", "chaos", setting]);
        let option = setting.split('=').next().unwrap();
        assert!(err.contains(option), "{setting}: {err}");
    }
    assert_eq!(config_values(&t, "chaos"), before);
    assert_eq!(t.status("chaos")["release"], 1);

    // A secret in use, then revoked: blocked, and still serving release 1.
    let uri = t.ok(&["add-secret", "chaos-token", "value=first"]);
    t.ok(&["grant-secret", "chaos-token", "chaos"]);
    t.ok(&["config", "chaos", &format!("api-token={}", uri.trim())]);
    t.ok(&["revoke-secret", "chaos-token", "chaos"]);
    let st = eventually("blocked, serving", LONG, || {
        let st = t.status("chaos");
        (st["status"] == "blocked").then_some(st)
    });
    let msg = st["message"].as_str().unwrap();
    assert!(
        msg.contains("not granted to chaos") && msg.contains("serving release 1"),
        "{st}"
    );
    assert_eq!(via_ingress(&t, "chaos", "/").unwrap().0, 200);
    t.ok(&["grant-secret", "chaos-token", "chaos"]);
    eventually("active again", LONG, || {
        every_unit_serves(&t, "chaos", 3, "hello")
    });

    // A unit's app process killed: restarted, the others serve meanwhile.
    sigkill(gunicorn_master(&t, "chaos/1"));
    eventually("the killed unit back", LONG, || {
        every_unit_serves(&t, "chaos", 3, "hello")
    });

    // The controller SIGKILLed in the middle of a rollout: the next one finishes it.
    t.ok(&["config", "chaos", "greeting=after-kill", "--no-wait"]);
    eventually("new instances starting", LONG, || {
        let st = t.status("chaos");
        st["units"]
            .as_array()?
            .iter()
            .any(|u| {
                u["message"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("new instance")
            })
            .then_some(())
    });
    t.kill_controller();
    eventually("the change live after the restart", LONG, || {
        every_unit_serves(&t, "chaos", 3, "after-kill")
    });
    assert_eq!(t.status("chaos")["release"], 1);

    std::thread::sleep(Duration::from_millis(300));
    let (ok, failed, errors) = load.finish();
    assert!(ok > 500, "the load ran ({ok} requests)");
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed: {errors:?}",
        ok + failed
    );
}
