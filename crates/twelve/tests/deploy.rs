//! End to end: the real CLI, a real controller in a temporary TWELVE_HOME, real supervisors
//! and real apps (gunicorn/Flask, uvicorn/FastAPI, Express, Go, Java), asserted over HTTP.

mod common;

use std::time::Duration;

use serde_json::Value;

use common::*;

const LONG: Duration = Duration::from_secs(60);

#[test]
fn flask_lifecycle_config_scale_schedulers_and_controller_crash() {
    let t = Twelve::new();
    let src = t.example("flask");
    let out = t.ok(&["deploy", src.to_str().unwrap(), "web"]);
    assert!(
        out.contains("web is active at http://web.localhost:"),
        "{out}"
    );

    let port = t.port("web/0");
    let (code, body) = http_get(port, "/").unwrap();
    assert_eq!((code, body.trim()), (200, "hello from flask-example"));
    let env = app_env(port);
    assert_eq!(env["FLASK_GREETING"], "hello", "option default");
    assert!(
        env["FLASK_SECRET_KEY"].as_str().unwrap().len() >= 64,
        "generated secret key"
    );
    assert!(env.get("FLASK_TOKEN").is_none());

    // A config change reaches the app.
    t.ok(&["config", "web", "greeting=bonjour", "token=xyz"]);
    eventually("the new greeting", LONG, || {
        via_ingress(&t, "web", "/").filter(|(_, b)| b.contains("bonjour"))
    });
    let env = eventually("the token", LONG, || {
        try_app_env(t.port("web/0")).filter(|e| e["FLASK_TOKEN"] == "xyz")
    });
    assert_eq!(env["FLASK_TOKEN"], "xyz");
    let listing = t.ok(&["config", "web"]);
    assert!(
        listing.contains("greeting") && listing.contains("bonjour") && listing.contains("user"),
        "{listing}"
    );
    t.ok(&["config", "web", "--reset", "token"]);
    eventually("token reset", LONG, || {
        try_app_env(t.port("web/0")).filter(|e| e.get("FLASK_TOKEN").is_none())
    });

    // The app runs unprivileged: as its own user when twelve runs as root.
    let uid = t.ok(&["exec", "web/0", "--", "id", "-u"]);
    let want = if is_root() {
        let user = t.ok(&["exec", "web/0", "--", "id", "-un"]);
        assert!(
            user.starts_with("tw") && user.trim().ends_with("-web"),
            "{user}"
        );
        let uid: u32 = uid.trim().parse().unwrap();
        assert!((590_000..=599_999).contains(&uid), "{uid}");
        uid.to_string()
    } else {
        String::from_utf8_lossy(
            &std::process::Command::new("id")
                .arg("-u")
                .output()
                .unwrap()
                .stdout,
        )
        .trim()
        .to_string()
    };
    assert_eq!(uid.trim(), want);

    // Scale to 3: workers on every unit, the scheduler on unit 0 only.
    t.ok(&["scale-application", "web", "3"]);
    eventually("3 active units", LONG, || {
        let st = t.status("web");
        let units = st["units"].as_array()?.clone();
        (units.len() == 3 && units.iter().all(|u| u["status"] == "active")).then_some(())
    });
    for n in 0..3 {
        let unit = format!("web/{n}");
        eventually(&format!("a worker heartbeat on {unit}"), LONG, || {
            t.ok(&["logs", &unit, "heartbeat-worker", "-n", "5"])
                .contains("worker alive")
                .then_some(())
        });
        let sched = t.ok(&["logs", &unit, "heartbeat-scheduler", "-n", "5"]);
        assert_eq!(sched.contains("scheduler alive"), n == 0, "{unit}: {sched}");
        let peers = app_env(t.port(&unit))["FLASK_PEER_FQDNS"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            peers.split(',').count(),
            2,
            "{unit} lists the two other units: {peers}"
        );
    }
    let st = t.status("web");
    assert_eq!(st["scheduler_unit"], 0);

    // `logs APP` merges every unit's lines in time order, naming each unit.
    let merged = t.ok(&[
        "logs",
        "web",
        "heartbeat-worker",
        "--grep",
        "worker alive",
        "--since",
        "1h",
        "-n",
        "100",
    ]);
    for n in 0..3 {
        assert!(
            merged.contains(&format!(" web/{n} [heartbeat-worker] worker alive")),
            "web/{n} missing:\n{merged}"
        );
    }
    let times: Vec<&str> = merged
        .lines()
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted, "merged in time order");
    let err = t.fails(&["logs", "web", "--grep", "("]);
    assert!(err.contains("--grep"), "{err}");

    // Removing unit 0 moves the scheduler to the lowest remaining unit.
    t.ok(&["remove-unit", "web/0"]);
    eventually("the scheduler on web/1", LONG, || {
        t.ok(&["logs", "web/1", "heartbeat-scheduler", "-n", "5"])
            .contains("scheduler alive")
            .then_some(())
    });
    eventually("status naming web/1 the scheduler unit", LONG, || {
        (t.status("web")["scheduler_unit"] == 1).then_some(())
    });

    // kill -9 the controller: apps keep serving, and it comes back with nothing lost.
    let port1 = t.port("web/1");
    t.kill_controller();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        http_get(port1, "/").map(|r| r.0),
        Some(200),
        "apps serve without the controller"
    );
    let st = t.status("web"); // restarts the controller
    let names: Vec<&str> = st["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web/1", "web/2"]);
    assert_eq!(
        app_env(port1)["FLASK_GREETING"],
        "bonjour",
        "config survived"
    );
    let releases = t.ok(&["releases", "web"]);
    assert!(releases.contains("(current)"), "{releases}");
}

#[test]
fn missing_required_option_blocks_then_starts_when_given() {
    let t = Twelve::new();
    let src = t.example("flask");
    let charm = src.join("charm/charmcraft.yaml");
    let text = std::fs::read_to_string(&charm).unwrap();
    let text = text.replace("      description: An optional token (exported as FLASK_TOKEN when set).\n      type: string\n", "      description: A required token.\n      type: string\n      optional: false\n");
    std::fs::write(&charm, text).unwrap();
    let out = t.ok(&["deploy", src.to_str().unwrap(), "gated"]);
    assert!(
        out.contains("gated: blocked: missing options: token"),
        "{out}"
    );
    let port = t.port("gated/0");
    assert!(
        http_get(port, "/").is_none(),
        "nothing runs while the option is missing"
    );
    t.ok(&["config", "gated", "token=now"]);
    eventually("the app starting", LONG, || {
        http_get(port, "/").filter(|r| r.0 == 200)
    });
    assert_eq!(app_env(port)["FLASK_TOKEN"], "now");
    eventually("active", LONG, || {
        (t.status("gated")["status"] == "active").then_some(())
    });
}

#[test]
fn failing_migration_of_a_new_release_rolls_it_back_then_a_fixed_one_goes_live() {
    let t = Twelve::new();
    let src = t.example("flask");
    let s = src.to_str().unwrap();
    t.ok(&["deploy", s, "mig"]);
    let port = t.port("mig/0");
    assert_eq!(
        http_get(port, "/").unwrap().1.trim(),
        "hello from flask-example"
    );

    // A new release whose migration fails.
    std::fs::write(
        src.join("migrate.sh"),
        "#!/bin/bash\necho 'boom: cannot migrate' >&2\nexit 3\n",
    )
    .unwrap();
    let app = std::fs::read_to_string(src.join("app.py")).unwrap();
    std::fs::write(src.join("app.py"), format!("{app}\n# release 2\n")).unwrap();
    let err = t.fails(&["deploy", s, "mig", "--config", "greeting=v2"]);
    assert!(
        err.contains("the migration of release 2 failed: boom: cannot migrate")
            && err.contains("rolled back to release 1"),
        "{err}"
    );
    let st = t.status("mig");
    assert_eq!(st["release"], 1, "{st}");
    assert_eq!(
        http_get(port, "/").unwrap().1.trim(),
        "hello from flask-example",
        "the old release keeps serving"
    );

    // Fixed: the next deploy migrates and rolls out.
    std::fs::write(src.join("migrate.sh"), "#!/bin/bash\necho migrated\n").unwrap();
    let out = t.ok(&["deploy", s, "mig", "--config", "greeting=v2"]);
    assert!(out.contains("mig is active"), "{out}");
    eventually("the new greeting", LONG, || {
        via_ingress(&t, "mig", "/").filter(|r| r.1.contains("v2"))
    });
}

#[test]
fn other_frameworks_deploy_and_see_their_port_variables() {
    let t = Twelve::new();
    for (example, var) in [
        ("fastapi", "UVICORN_PORT"),
        ("expressjs", "PORT"),
        ("go", "APP_PORT"),
        ("spring-boot", "SERVER_PORT"),
    ] {
        let src = t.example(example);
        let out = t.ok(&["deploy", src.to_str().unwrap()]);
        let app = format!("{example}-example");
        assert!(
            out.contains(&format!("{app} is active")),
            "{example}: {out}"
        );
        let port = t.port(&format!("{app}/0"));
        let env = app_env(port);
        assert_eq!(env[var], port.to_string(), "{example}");
        assert_eq!(env["APP_GREETING"], "hello", "{example}");
        let worker = t.ok(&["logs", &format!("{app}/0"), "-n", "50"]);
        eventually(&format!("{example} worker heartbeat"), LONG, || {
            t.ok(&["logs", &format!("{app}/0"), "-n", "50"])
                .contains("worker alive")
                .then_some(())
        });
        let _ = worker;
    }
    // Django waits for its database, as the charm does.
    let src = t.example("django");
    let out = t.ok(&["deploy", src.to_str().unwrap()]);
    assert!(
        out.contains("blocked: Django requires a database integration to work"),
        "{out}"
    );
}

/// Spring Boot projects built as the spring-boot-framework extension builds them: a Maven
/// project whose dependency (commons-lang3) and fat-jar plugin (maven-shade) come from
/// Debian's Maven repository, and the `init` template (a pom.xml too), which serves its
/// metrics where the charm's management.server.port and actuator paths say.
#[test]
fn maven_built_spring_boot_apps_serve_through_the_ingress_with_metrics() {
    let t = Twelve::new();
    let src = t.example("spring-boot-maven");
    let out = t.ok(&["deploy", src.to_str().unwrap()]);
    assert!(out.contains("spring-boot-maven-example is active"), "{out}");
    let (code, body) = eventually("the Maven-built app through the ingress", LONG, || {
        via_ingress(&t, "spring-boot-maven-example", "/").filter(|r| r.0 == 200)
    });
    assert_eq!(code, 200);
    assert!(
        body.contains("Hello from a jar built by Maven, OFFLINE"),
        "{body}"
    );

    let tpl = t.home.path().join("src/spring-tpl");
    t.ok(&[
        "init",
        "--profile",
        "spring-boot-framework",
        "--name",
        "spring-tpl",
        tpl.to_str().unwrap(),
    ]);
    assert!(tpl.join("pom.xml").is_file() && !tpl.join("build.sh").exists());
    let out = t.ok(&["deploy", tpl.to_str().unwrap()]);
    assert!(out.contains("spring-tpl is active"), "{out}");
    eventually("the template through the ingress", LONG, || {
        via_ingress(&t, "spring-tpl", "/").filter(|r| r.0 == 200 && r.1.contains("Hello, world!"))
    });
    let port = t.port("spring-tpl/0");
    let (code, metrics) = eventually("the template's metrics", LONG, || {
        http_get(port, "/actuator/prometheus").filter(|r| r.0 == 200)
    });
    assert_eq!(code, 200);
    if !(metrics
        .contains("http_server_requests_seconds_count{method=\"GET\",status=\"200\",uri=\"/\"}")
        && metrics.contains("jvm_memory_used_bytes"))
    {
        // Once (under load, in a full run) the process answering had just started: what
        // the unit and the controller said, to tell why it restarted.
        let logs = t.cmd(&["logs", "spring-tpl", "-n", "80"]);
        let controller =
            std::fs::read_to_string(t.home.path().join("controller.log")).unwrap_or_default();
        let tail: Vec<&str> = controller.lines().rev().take(60).collect();
        panic!(
            "{metrics}\nunit logs:\n{}\ncontroller log (last lines, newest first):\n{}",
            String::from_utf8_lossy(&logs.stdout),
            tail.join("\n")
        );
    }
}

#[test]
fn user_mistakes_get_one_clear_error() {
    let t = Twelve::new();
    let err = t.fails(&["config", "nope", "a=1"]);
    assert!(err.contains("app \"nope\" not found"), "{err}");
    let err = t.fails(&["deploy", t.home.path().to_str().unwrap()]);
    assert!(err.contains("is not a twelve project"), "{err}");
    let src = t.example("flask");
    t.ok(&["deploy", src.to_str().unwrap(), "w", "--no-wait"]);
    let err = t.fails(&["config", "w", "greeting"]);
    assert!(err.contains("not key=value"), "{err}");
    let err = t.fails(&["config", "w", "webserver-workers=lots"]);
    assert!(
        err.contains("option \"webserver-workers\": expected an integer"),
        "{err}"
    );
    let err = t.fails(&["config", "w", "colour=blue"]);
    assert!(
        err.contains("unknown option \"colour\"") && err.contains("greeting"),
        "{err}"
    );
    let err = t.fails(&["exec", "w/7", "--", "true"]);
    assert!(err.contains("unit w/7 not found"), "{err}");
    let err = t.fails(&["logs", "w/x", "-n", "1"]);
    assert!(err.contains("is not a unit name"), "{err}");
    let err = t.fails(&["scale-application", "w", "0"]);
    assert!(err.contains("at least one unit"), "{err}");
    let err = t.fails(&["deploy", src.to_str().unwrap(), "w", "--release", "9"]);
    assert!(err.contains("w has no release 9"), "{err}");
    let err = t.fails(&["status", "--watch", "soon"]);
    assert!(err.contains("--watch"), "{err}");
}

#[test]
fn other_apps_deploy_and_scale_while_a_rollout_waits_for_readiness() {
    let t = Twelve::new();
    let src = t.example("flask");
    let s = src.to_str().unwrap();
    t.ok(&["deploy", s, "stuck"]);
    // A release that never becomes ready: the controller starts it beside the serving unit
    // and waits (TWELVE_READY_TIMEOUT, 30 s in tests) before rolling back.
    std::fs::write(src.join("app.py"), "raise SystemExit('never ready')\n").unwrap();
    t.ok(&["deploy", s, "stuck", "--no-wait"]);
    eventually(
        "the replacement starting beside the serving unit",
        LONG,
        || t.home.path().join("units/stuck-0.1").exists().then_some(()),
    );

    // Meanwhile another app deploys, scales and is reported, without waiting for it.
    let other = t.example("go");
    t.ok(&["deploy", other.to_str().unwrap(), "free", "--no-wait"]);
    t.ok(&["scale-application", "free", "2"]);
    let st = t.status("stuck");
    assert!(
        !st["message"].as_str().unwrap_or("").contains("rolled back"),
        "deploy and scale of another app waited for the rollout: {st}"
    );
    eventually("the other app's two units serving", LONG, || {
        (0..2)
            .all(|u| {
                t.try_port(&format!("free/{u}"))
                    .and_then(|p| http_get(p, "/"))
                    .is_some_and(|(c, _)| c == 200)
            })
            .then_some(())
    });
    // And the stuck release is still rolled back in the end.
    // (The rollback comes after the ready timeout; allow for a loaded machine.)
    let started = std::time::Instant::now();
    loop {
        let st = t.status("stuck");
        if st["message"]
            .as_str()
            .is_some_and(|m| m.contains("rolled back to release 1"))
        {
            break;
        }
        assert!(
            started.elapsed() < 3 * LONG,
            "no automatic rollback; last status: {st}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn a_lone_units_scheduler_never_runs_twice_while_the_unit_is_replaced() {
    use std::os::unix::fs::PermissionsExt;
    let t = Twelve::new();
    let src = t.example("flask");
    // A scheduler that records when it runs and notices when another one already does.
    let marks = t.home.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    std::fs::set_permissions(&marks, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::write(
        src.join("scheduler.py"),
        format!(
            r#"import os, signal, sys, time
marks = {marks:?}
running = os.path.join(marks, "running")
def note(line):
    with open(os.path.join(marks, "log"), "a") as f:
        f.write(line + "\n")
try:
    os.close(os.open(running, os.O_CREAT | os.O_EXCL))
    note("start %d %s" % (os.getpid(), os.environ.get("FLASK_GREETING")))
except FileExistsError:
    note("OVERLAP %d" % os.getpid())
def stop(*_):
    os.unlink(running)
    note("stop %d" % os.getpid())
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
while True:
    time.sleep(0.2)
"#,
            marks = marks.display().to_string()
        ),
    )
    .unwrap();
    t.ok(&["deploy", src.to_str().unwrap(), "sched"]);
    let log = || std::fs::read_to_string(marks.join("log")).unwrap_or_default();
    eventually("the scheduler started", LONG, || {
        log().contains("start").then_some(())
    });
    // A config change on the only serving unit: its replacement starts beside it.
    t.ok(&["config", "sched", "greeting=second"]);
    eventually("the scheduler running with the new config", LONG, || {
        let text = log();
        (text.contains(" second") || text.contains("OVERLAP")).then_some(())
    });
    assert!(
        t.home.path().join("units/sched-0.1").exists(),
        "the unit was replaced beside its old instance"
    );
    let text = log();
    assert!(!text.contains("OVERLAP"), "two schedulers at once:\n{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "start, stop, start:\n{text}");
    assert!(
        lines[0].starts_with("start")
            && lines[1].starts_with("stop")
            && lines[2].starts_with("start"),
        "{text}"
    );
}

#[test]
fn an_app_runs_the_project_it_was_deployed_with_until_the_next_deploy() {
    let t = Twelve::new();
    let src = t.example("flask");
    t.ok(&["deploy", src.to_str().unwrap(), "kept"]);
    eventually("serving", LONG, || {
        t.try_port("kept/0").and_then(|p| http_get(p, "/"))
    });

    // Editing the source after the deploy changes nothing, even across a controller
    // restart: a new required option is not asked for until the next deploy.
    let charm = src.join("charm/charmcraft.yaml");
    let required = std::fs::read_to_string(&charm).unwrap().replace(
        "      description: An optional token (exported as FLASK_TOKEN when set).\n      type: string\n",
        "      description: A required token.\n      type: string\n      optional: false\n",
    );
    std::fs::write(&charm, &required).unwrap();
    t.ok(&["controller", "stop"]);
    t.ok(&["config", "kept", "greeting=still"]);
    eventually("the new greeting, the app not blocked", LONG, || {
        let st = t.status("kept");
        (st["status"] == "active").then_some(())?;
        let (_, body) = http_get(t.try_port("kept/0")?, "/")?;
        body.contains("still").then_some(())
    });

    // Even the source directory going away does not matter.
    let moved = t.home.path().join("src/moved");
    std::fs::rename(&src, &moved).unwrap();
    t.ok(&["controller", "stop"]);
    t.ok(&["scale-application", "kept", "2"]);
    // A unit answers on its port a moment before its ready check has passed: the status
    // says active once both have.
    eventually("two units serving, the app active", LONG, || {
        (0..2)
            .all(|u| {
                t.try_port(&format!("kept/{u}"))
                    .and_then(|p| http_get(p, "/"))
                    .is_some_and(|(c, _)| c == 200)
            })
            .then_some(())?;
        (t.status("kept")["status"] == "active").then_some(())
    });

    // The next deploy takes the project as it is now.
    t.ok(&["deploy", moved.to_str().unwrap(), "kept"]);
    eventually("blocked on the new required option", LONG, || {
        (t.status("kept")["message"] == "missing options: token").then_some(())
    });
    t.ok(&["config", "kept", "token=x"]);
    eventually("active again", LONG, || {
        (t.status("kept")["status"] == "active").then_some(())
    });
    assert_eq!(
        t.status("kept")["release"],
        2,
        "a changed charm is a new release"
    );
    // Rolling back to release 1 takes its project too: there the token is optional.
    t.ok(&["deploy", moved.to_str().unwrap(), "kept", "--release", "1"]);
    t.ok(&["config", "kept", "--reset", "token"]);
    eventually("release 1 active without a token", LONG, || {
        let st = t.status("kept");
        (st["release"] == 1 && st["status"] == "active").then_some(())
    });
    // Deleting the app removes its copies.
    t.ok(&["remove-application", "kept"]);
    let left = std::fs::read_dir(t.home.path().join("projects"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(left, 0, "the app's project copies are removed with it");
}

/// The ingress reaches a gunicorn unit on the Unix socket gunicorn binds beside its port (a
/// connection per request, as gunicorn's sync workers take them, costs far less there than
/// over loopback TCP). The app still sees a client address and the forwarded headers, and
/// the ingress goes over TCP when the socket is not there.
#[test]
fn the_ingress_reaches_gunicorn_units_on_a_unix_socket() {
    let t = Twelve::new();
    let src = t.example("flask");
    t.ok(&["deploy", src.to_str().unwrap(), "sock"]);
    let request = |t: &Twelve| -> Option<Value> {
        let (code, body) = via_ingress(t, "sock", "/request")?;
        (code == 200).then(|| serde_json::from_str(&body).ok())?
    };
    let seen = eventually("served through the ingress", LONG, || request(&t));
    assert_eq!(seen["transport"], "unix", "{seen}");
    assert_eq!(seen["remote_addr"], "127.0.0.1", "{seen}");
    assert_eq!(seen["forwarded_for"], "127.0.0.1", "{seen}");
    assert_eq!(seen["scheme"], "http", "{seen}");
    assert_eq!(
        seen["host"],
        format!("sock.localhost:{}", t.ingress_port),
        "{seen}"
    );
    let (_, direct) = http_get(t.port("sock/0"), "/request").unwrap();
    let direct: Value = serde_json::from_str(&direct).unwrap();
    assert_eq!(
        direct["transport"], "tcp",
        "the port still answers: {direct}"
    );

    // Without the socket file every request still succeeds, over TCP.
    let sock = t.home.path().join("units/sock-0/run/gunicorn.sock");
    assert!(sock.exists(), "{} missing", sock.display());
    std::fs::remove_file(&sock).unwrap();
    for _ in 0..5 {
        let seen = request(&t).expect("answered without the socket");
        assert_eq!(seen["transport"], "tcp", "{seen}");
    }

    // The unit's next instance binds its own socket, and the ingress uses it.
    t.ok(&["config", "sock", "greeting=again"]);
    eventually("the new instance, on its socket", LONG, || {
        let (_, body) = via_ingress(&t, "sock", "/")?;
        body.contains("again").then_some(())?;
        request(&t).filter(|s| s["transport"] == "unix")
    });
}
