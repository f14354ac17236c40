//! Redis as apps use it: libraries that pick their own keys (RQ's `rq:queue:*`,
//! `rq:job:*`), `INCR counter`, and two apps on one managed Redis that cannot see each
//! other's keys; an adopted Redis gives every key and warns; `--key-prefix` keeps apps to
//! their prefix.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

const LONG: Duration = Duration::from_secs(120);

fn sh(t: &Twelve, unit: &str, line: &str) -> (bool, String) {
    let out = t.cmd(&["exec", unit, "--", "bash", "-c", line]);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The Flask example with an RQ queue: `/enqueue?v=X` queues a job that an `rq-worker`
/// service (on every unit, with the app's environment) runs, storing X under `done`.
fn rq_project(t: &Twelve) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("twelve-rq-")
        .tempdir()
        .unwrap();
    let root = dir.path();
    copy_dir(&t.example("flask"), root);
    let req = std::fs::read_to_string(root.join("requirements.txt")).unwrap();
    std::fs::write(root.join("requirements.txt"), format!("{req}rq\nredis\n")).unwrap();
    std::fs::write(
        root.join("jobs.py"),
        "import os\nimport redis\n\n\ndef mark(value):\n    redis.Redis.from_url(os.environ[\"REDIS_DB_CONNECT_STRING\"]).set(\"done\", value)\n",
    )
    .unwrap();
    std::fs::write(
        root.join("rqworker.py"),
        "import os\nimport redis\nfrom rq import Queue, Worker\n\nconn = redis.Redis.from_url(os.environ[\"REDIS_DB_CONNECT_STRING\"])\nWorker([Queue(connection=conn)], connection=conn).work()\n",
    )
    .unwrap();
    let mut app = std::fs::read_to_string(root.join("app.py")).unwrap();
    app.push_str(
        "\n\n@app.route(\"/enqueue\")\ndef enqueue():\n    import redis\n    import rq\n    import jobs\n    conn = redis.Redis.from_url(os.environ[\"REDIS_DB_CONNECT_STRING\"])\n    job = rq.Queue(connection=conn).enqueue(jobs.mark, flask.request.args[\"v\"])\n    return flask.Response(job.id, mimetype=\"text/plain\")\n\n\n@app.route(\"/done\")\ndef done():\n    import redis\n    conn = redis.Redis.from_url(os.environ[\"REDIS_DB_CONNECT_STRING\"])\n    return flask.Response((conn.get(\"done\") or b\"\").decode(), mimetype=\"text/plain\")\n",
    );
    std::fs::write(root.join("app.py"), app).unwrap();
    let rock = std::fs::read_to_string(root.join("rockcraft.yaml")).unwrap();
    let rock = rock
        .replace(
            "services:\n",
            "services:\n  rq-worker:\n    override: replace\n    command: python3 rqworker.py\n    startup: enabled\n    user: _daemon_\n    working-dir: /flask/app\n",
        )
        .replace(
            "      - flask/app/app.py\n",
            "      - flask/app/app.py\n      - flask/app/jobs.py\n      - flask/app/rqworker.py\n",
        );
    std::fs::write(root.join("rockcraft.yaml"), rock).unwrap();
    let _ = std::fs::set_permissions(root, std::os::unix::fs::PermissionsExt::from_mode(0o755));
    dir
}

fn deploy(t: &Twelve, dir: &Path, app: &str) {
    t.ok(&["deploy", dir.to_str().unwrap(), app]);
}

fn redis_env(t: &Twelve, unit: &str) -> serde_json::Value {
    eventually(&format!("REDIS_DB_CONNECT_STRING in {unit}"), LONG, || {
        try_app_env(t.port(unit)).filter(|e| e.get("REDIS_DB_CONNECT_STRING").is_some())
    })
}

#[test]
fn managed_redis_gives_each_app_a_whole_keyspace_of_its_own() {
    let t = Twelve::new();
    let rq = rq_project(&t);
    t.ok(&["deploy", "redis", "cache"]);
    deploy(&t, rq.path(), "queue");
    deploy(&t, &t.example("flask"), "other");
    for app in ["queue", "other"] {
        t.ok(&["integrate", app, "cache"]);
    }
    let (q, o) = (redis_env(&t, "queue/0"), redis_env(&t, "other/0"));
    assert_ne!(
        q["REDIS_DB_PORT"], o["REDIS_DB_PORT"],
        "each app has a server of its own"
    );

    // RQ picks its own keys (rq:queue:default, rq:job:<id>): the job runs on the worker.
    let (code, id) = eventually("the job queued", LONG, || {
        http_get(t.port("queue/0"), "/enqueue?v=42").filter(|(c, _)| *c == 200)
    });
    assert_eq!(code, 200);
    assert!(!id.trim().is_empty());
    eventually("the RQ worker ran the job", LONG, || {
        http_get(t.port("queue/0"), "/done").filter(|(_, b)| b.trim() == "42")
    });

    // Any key: INCR counter, as an app written for Heroku or Dokku does.
    let (ok, out) = sh(
        &t,
        "queue/0",
        r#"redis-cli --no-auth-warning -u "$REDIS_DB_CONNECT_STRING" incr counter && redis-cli --no-auth-warning -u "$REDIS_DB_CONNECT_STRING" incr counter"#,
    );
    assert!(ok && out.trim().ends_with('2'), "{out}");

    // The other app sees none of it: not the counter, not RQ's keys.
    let (ok, out) = sh(
        &t,
        "other/0",
        r#"redis-cli --no-auth-warning -u "$REDIS_DB_CONNECT_STRING" get counter; redis-cli --no-auth-warning -u "$REDIS_DB_CONNECT_STRING" --scan --pattern '*' | wc -l"#,
    );
    assert!(ok, "{out}");
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["0"], "{out}");
    // Nor can it log in to the first app's server with its own password.
    let (ok, out) = sh(
        &t,
        "other/0",
        &format!(
            r#"redis-cli --no-auth-warning -h 127.0.0.1 -p {} --user "$REDIS_DB_USERNAME" --pass "$REDIS_DB_PASSWORD" get counter"#,
            q["REDIS_DB_PORT"].as_str().unwrap()
        ),
    );
    assert!(
        out.contains("WRONGPASS") || out.contains("NOAUTH") || !ok,
        "{out}"
    );

    // The app's server survives the service's restart with its data.
    t.ok(&["controller", "stop"]);
    let (ok, out) = eventually("the counter after a controller restart", LONG, || {
        let r = sh(
            &t,
            "queue/0",
            r#"redis-cli --no-auth-warning -u "$REDIS_DB_CONNECT_STRING" get counter"#,
        );
        r.1.trim().ends_with('2').then_some(r)
    });
    assert!(ok, "{out}");

    // Removing the relation with its data stops and deletes the app's server.
    let dir = t.home.path().join("services/cache/apps/queue");
    assert!(dir.join("port").is_file());
    // (--no-wait: the app's rq-worker needs Redis, so without it the app would not
    // become ready again; the relation's data is what is checked here.)
    t.ok(&[
        "remove-relation",
        "queue",
        "cache",
        "--destroy-data",
        "--no-wait",
    ]);
    assert!(!dir.exists(), "the app's server and data are gone");
}

#[test]
fn an_adopted_redis_gives_every_key_and_warns_unless_key_prefix() {
    let t = Twelve::new();
    let src = t.example("flask");
    let app = format!("ad{}", std::process::id());
    deploy(&t, &src, &app);
    t.ok(&[
        "deploy",
        "redis",
        "shared",
        "--external",
        "redis://127.0.0.1:6379",
    ]);
    let out = t.cmd(&["integrate", &app, "shared"]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning:") && err.contains("can read and change each other's keys"),
        "{err}"
    );
    redis_env(&t, &format!("{app}/0"));
    let key = format!("twelve-test-any-{}", std::process::id());
    let (ok, out) = sh(
        &t,
        &format!("{app}/0"),
        &format!(
            r#"redis-cli --no-auth-warning -u "$REDIS_DB_CONNECT_STRING" set {key} v && redis-cli --no-auth-warning -u "$REDIS_DB_CONNECT_STRING" del {key}"#
        ),
    );
    assert!(ok && out.contains("OK") && !out.contains("NOPERM"), "{out}");
    t.ok(&["remove-relation", &app, "shared"]);
    t.ok(&["remove-application", "shared"]);

    // --key-prefix is refused for anything but Redis.
    let err = t.fails(&[
        "deploy",
        "postgresql",
        "pgx",
        "--external",
        "postgresql://postgres@127.0.0.1:5432/postgres",
        "--key-prefix",
    ]);
    assert!(
        err.contains("--key-prefix is for an adopted Redis"),
        "{err}"
    );
}
