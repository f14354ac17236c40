//! Integrations end to end against the real PostgreSQL, MariaDB and Redis on this machine,
//! adopted and managed: apps get credentials of their own, connect with the env vars they
//! were given, cannot reach another app's data, and block/unblock on required ones.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

const LONG: Duration = Duration::from_secs(90);

/// The unit's environment once it has every one of `names`.
fn env_with(t: &Twelve, unit: &str, names: &[&str]) -> serde_json::Value {
    eventually(
        &format!("{} in {unit}'s env", names.join(", ")),
        LONG,
        || try_app_env(t.port(unit)).filter(|e| names.iter().all(|n| e.get(*n).is_some())),
    )
}

/// The app's Redis account writes and reads its own `<app>:` keys and is refused others.
fn assert_redis_prefix_only(t: &Twelve, unit: &str, app: &str) {
    let rd = sh(
        t,
        unit,
        &format!(
            r#"redis-cli -u "$REDIS_DB_CONNECT_STRING" set {app}:k v >/dev/null && redis-cli -u "$REDIS_DB_CONNECT_STRING" get {app}:k && redis-cli -u "$REDIS_DB_CONNECT_STRING" get other:k"#
        ),
    );
    let out = String::from_utf8_lossy(&rd.stdout);
    assert!(out.starts_with('v'), "{out}");
    assert!(
        out.contains("NOPERM"),
        "keys outside the app's prefix are refused: {out}"
    );
}

/// Runs a shell line inside a unit, with the app's environment.
fn sh(t: &Twelve, unit: &str, line: &str) -> std::process::Output {
    t.cmd(&["exec", unit, "--", "bash", "-c", line])
}

fn uniq(prefix: &str) -> String {
    let n: u32 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        % 100000;
    format!("{prefix}{n}")
}

#[test]
fn postgresql_adopted_isolated_required_and_removed() {
    let t = Twelve::new();
    let a = uniq("pga");
    let b = uniq("pgb");
    let src = t.example("flask");
    // The first app requires its database: blocked until integrated.
    let charm = src.join("charm/charmcraft.yaml");
    let text = std::fs::read_to_string(&charm).unwrap().replacen(
        "interface: postgresql_client\n    optional: true",
        "interface: postgresql_client\n    optional: false",
        1,
    );
    std::fs::write(&charm, text).unwrap();
    let out = t.ok(&["deploy", src.to_str().unwrap(), &a]);
    assert!(
        out.contains("blocked: missing integrations: postgresql"),
        "{out}"
    );
    t.ok(&[
        "deploy",
        "postgresql",
        "--external",
        "postgresql://postgres@127.0.0.1:5432/postgres",
    ]);
    t.ok(&["integrate", &a, "postgresql"]);
    let unit_a = format!("{a}/0");
    let env = eventually("A serving with its database env", LONG, || {
        try_app_env(t.port(&unit_a)).filter(|e| e.get("POSTGRESQL_DB_CONNECT_STRING").is_some())
    });
    assert_eq!(env["POSTGRESQL_DB_NAME"], a.as_str());
    assert_eq!(env["POSTGRESQL_DB_USERNAME"], a.as_str());
    assert_eq!(
        env["DATABASE_URL"], env["POSTGRESQL_DB_CONNECT_STRING"],
        "Heroku-style DATABASE_URL"
    );
    eventually("A active", LONG, || {
        (t.status(&a)["status"] == "active").then_some(())
    });

    // migrate.sh ran with the new environment: the table exists in A's database.
    let out = sh(
        &t,
        &unit_a,
        r#"psql -q "$POSTGRESQL_DB_CONNECT_STRING" -tAc "insert into visits default values; select count(*) from visits""#,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");

    // A second app gets its own database; A's credentials cannot reach it.
    t.ok(&["deploy", t.example("flask").to_str().unwrap(), &b]);
    t.ok(&["integrate", &b, "postgresql"]);
    let unit_b = format!("{b}/0");
    eventually("B's env", LONG, || {
        try_app_env(t.port(&unit_b)).filter(|e| e["POSTGRESQL_DB_NAME"] == b.as_str())
    });
    let cross = sh(
        &t,
        &unit_a,
        &format!(
            r#"psql "postgresql://$POSTGRESQL_DB_USERNAME:$POSTGRESQL_DB_PASSWORD@127.0.0.1:5432/{b}" -tAc "select 1""#
        ),
    );
    assert!(
        !cross.status.success(),
        "A must not connect to B's database"
    );
    assert!(
        String::from_utf8_lossy(&cross.stderr).contains("permission denied"),
        "{}",
        String::from_utf8_lossy(&cross.stderr)
    );

    let st = t.ok(&["status", "--format", "json"]);
    assert!(
        st.contains("\"backing-services\"") && st.contains("postgresql_client"),
        "{st}"
    );
    let err = t.fails(&["remove-application", "postgresql"]);
    assert!(err.contains("postgresql is integrated with"), "{err}");
    assert!(
        !st.contains(env["POSTGRESQL_DB_PASSWORD"].as_str().unwrap()),
        "no password in status"
    );

    // Removing a required integration blocks and stops the app; the role is dropped, the data kept.
    t.ok(&["remove-relation", &a, "postgresql"]);
    eventually("A blocked again", LONG, || {
        (t.status(&a)["message"] == "missing integrations: postgresql").then_some(())
    });
    let port_a = t.port(&unit_a);
    eventually("A stopped", LONG, || {
        http_get(port_a, "/").is_none().then_some(())
    });
    let role = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-tAc",
            &format!("select count(*) from pg_roles where rolname = '{a}'"),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&role.stdout).trim(), "0");
    let db = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-tAc",
            &format!("select count(*) from pg_database where datname = '{a}'"),
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&db.stdout).trim(),
        "1",
        "data kept without --destroy-data"
    );

    // Clean up the databases this test made on the shared server.
    t.ok(&["remove-relation", &b, "postgresql", "--destroy-data"]);
    let _ = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-c",
            &format!("drop database if exists {a}"),
        ])
        .output();
    t.ok(&["remove-application", "postgresql"]);
}

#[test]
fn managed_postgresql_and_mysql_and_redis_serve_apps() {
    let t = Twelve::new();
    let app = uniq("mix");
    let src = t.example("flask");
    t.ok(&["deploy", src.to_str().unwrap(), &app]);
    t.ok(&["deploy", "postgresql", "pg"]);
    t.ok(&[
        "deploy",
        "mysql",
        "--external",
        "mysql://root@127.0.0.1:3306/",
    ]);
    t.ok(&["deploy", "redis", "cache"]);
    for target in ["pg", "mysql", "cache"] {
        t.ok(&["integrate", &app, target]);
    }
    let unit = format!("{app}/0");
    let env = env_with(
        &t,
        &unit,
        &[
            "POSTGRESQL_DB_CONNECT_STRING",
            "MYSQL_DB_CONNECT_STRING",
            "REDIS_DB_CONNECT_STRING",
        ],
    );
    assert!(
        env.get("DATABASE_URL").is_none(),
        "two SQL databases: DATABASE_URL is ambiguous and not set"
    );
    assert_eq!(env["REDIS_URL"], env["REDIS_DB_CONNECT_STRING"]);
    assert_ne!(
        env["POSTGRESQL_DB_PORT"], "5432",
        "the managed server is twelve's own"
    );

    let pg = sh(
        &t,
        &unit,
        r#"psql -q "$POSTGRESQL_DB_CONNECT_STRING" -tAc "create table if not exists t(x int); insert into t values (7); select sum(x) from t""#,
    );
    assert_eq!(
        String::from_utf8_lossy(&pg.stdout).trim(),
        "7",
        "{}",
        String::from_utf8_lossy(&pg.stderr)
    );
    let my = sh(
        &t,
        &unit,
        r#"mariadb -h "$MYSQL_DB_HOSTNAME" -P "$MYSQL_DB_PORT" -u "$MYSQL_DB_USERNAME" -p"$MYSQL_DB_PASSWORD" "$MYSQL_DB_NAME" -N -e "create table if not exists t(x int); insert into t values (5); select sum(x) from t""#,
    );
    assert_eq!(
        String::from_utf8_lossy(&my.stdout).trim(),
        "5",
        "{}",
        String::from_utf8_lossy(&my.stderr)
    );
    let other = sh(
        &t,
        &unit,
        r#"mariadb -h "$MYSQL_DB_HOSTNAME" -P "$MYSQL_DB_PORT" -u "$MYSQL_DB_USERNAME" -p"$MYSQL_DB_PASSWORD" mysql -N -e "select count(*) from user""#,
    );
    assert!(
        !other.status.success(),
        "the app's MySQL user reaches only its own database"
    );
    // A managed Redis gives the app a server of its own, with every key.
    let rd = sh(
        &t,
        &unit,
        r#"redis-cli -u "$REDIS_DB_CONNECT_STRING" incr counter && redis-cli -u "$REDIS_DB_CONNECT_STRING" set other:k v"#,
    );
    assert_eq!(
        String::from_utf8_lossy(&rd.stdout).trim(),
        "1\nOK",
        "{}",
        String::from_utf8_lossy(&rd.stderr)
    );

    // Managed servers survive a controller restart.
    t.ok(&["controller", "stop"]);
    let st = t.ok(&["status", "--format", "json"]);
    assert!(st.contains("\"pg\""), "{st}");
    eventually("pg active after restart", LONG, || {
        let v: serde_json::Value =
            serde_json::from_str(&t.ok(&["status", "--format", "json"])).ok()?;
        v["backing-services"]
            .as_array()?
            .iter()
            .any(|s| s["name"] == "pg" && s["status"] == "active")
            .then_some(())
    });

    for target in ["pg", "mysql", "cache"] {
        t.ok(&["remove-relation", &app, target, "--destroy-data"]);
    }
    t.ok(&["remove-application", "pg", "--destroy-data"]);
    t.ok(&["remove-application", "cache", "--destroy-data"]);
    t.ok(&["remove-application", "mysql"]);
}

#[test]
fn django_superuser_logs_in_to_the_admin() {
    let t = Twelve::new();
    let app = uniq("dj");
    let src = t.example("django");
    let out = t.ok(&["deploy", src.to_str().unwrap(), &app]);
    assert!(
        out.contains("Django requires a database integration to work"),
        "{out}"
    );
    t.ok(&[
        "deploy",
        "postgresql",
        "--external",
        "postgresql://postgres@127.0.0.1:5432/postgres",
    ]);
    t.ok(&["integrate", &app, "postgresql"]);
    eventually("django active", LONG, || {
        (t.status(&app)["status"] == "active").then_some(())
    });
    let err = t.fails(&[
        "run",
        &format!("{app}/0"),
        "create-superuser",
        "username=admin",
    ]);
    assert!(err.contains("needs email"), "{err}");
    let out = t.ok(&[
        "run",
        &format!("{app}/0"),
        "create-superuser",
        "username=admin",
        "email=admin@example.com",
        "--format",
        "json",
    ]);
    let pw = serde_json::from_str::<serde_json::Value>(&out).unwrap()["password"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(pw.len() >= 16);

    // Log in through the admin form at the app's URL, as a person would: through the
    // ingress (which reaches gunicorn on its Unix socket), CSRF cookie and check included.
    let host = format!("{app}.localhost:{}", t.ingress_port);
    let resolve = format!("{host}:127.0.0.1");
    let jar = t.home.path().join("cookies");
    let base = format!("http://{host}/admin/");
    let curl = |args: &[&str]| {
        Command::new("curl")
            .args([
                "-s",
                "--resolve",
                &resolve,
                "-c",
                jar.to_str().unwrap(),
                "-b",
                jar.to_str().unwrap(),
            ])
            .args(args)
            .output()
            .unwrap()
    };
    curl(&["-o", "/dev/null", &format!("{base}login/")]);
    let cookies = std::fs::read_to_string(&jar).unwrap();
    let csrf = cookies
        .lines()
        .find(|l| l.contains("csrftoken"))
        .and_then(|l| l.split('\t').nth(6))
        .unwrap()
        .to_string();
    let login = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        &format!("Referer: {base}login/"),
        "--data",
        &format!("csrfmiddlewaretoken={csrf}&username=admin&password={pw}&next=/admin/"),
        &format!("{base}login/"),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&login.stdout),
        "302",
        "login redirects on success"
    );
    let page = curl(&[&base]);
    assert!(String::from_utf8_lossy(&page.stdout).contains("Site administration"));

    t.ok(&["remove-relation", &app, "postgresql", "--destroy-data"]);
}

#[test]
fn endpoints_given_by_hand_are_validated_and_reach_the_app() {
    let t = Twelve::new();
    let src = t.example("flask");
    let charm = src.join("charm/charmcraft.yaml");
    let mut text = std::fs::read_to_string(&charm).unwrap();
    text.push_str("  s3:\n    interface: s3\n    optional: true\n  smtp:\n    interface: smtp\n    optional: true\n  tracing:\n    interface: tracing\n    optional: true\n");
    std::fs::write(&charm, text).unwrap();
    t.ok(&["deploy", src.to_str().unwrap(), "ext"]);
    let err = t.fails(&[
        "integrate",
        "ext",
        "s3",
        "--data",
        "access-key=k",
        "secret-key=Zsecret-s3-key-91",
    ]);
    assert!(err.contains("bucket"), "{err}");
    let err = t.fails(&["integrate", "ext", "nosuch", "--data", "a=b"]);
    assert!(
        err.contains("neither an endpoint of ext nor a deployed backing service"),
        "{err}"
    );
    t.ok(&[
        "integrate",
        "ext",
        "s3",
        "--data",
        "access-key=k",
        "secret-key=Zsecret-s3-key-91",
        "bucket=files",
        "endpoint=http://127.0.0.1:9000",
    ]);
    std::fs::write(
        t.home.path().join("smtp.yaml"),
        "host: 127.0.0.1\nport: 2525\nuser: u\npassword: Zsmtp-pass-42\ntransport-security: none\n",
    )
    .unwrap();
    t.ok(&[
        "integrate",
        "ext",
        "smtp",
        "--data-file",
        t.home.path().join("smtp.yaml").to_str().unwrap(),
    ]);
    t.ok(&[
        "integrate",
        "ext",
        "tracing",
        "--data",
        "endpoint=http://127.0.0.1:4318",
    ]);
    let env = eventually("the endpoints' env", LONG, || {
        try_app_env(t.port("ext/0")).filter(|e| {
            e.get("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
                && e.get("SMTP_HOST").is_some()
                && e.get("S3_BUCKET").is_some()
        })
    });
    assert_eq!(env["S3_SECRET_KEY"], "Zsecret-s3-key-91");
    assert_eq!(env["SMTP_PORT"], "2525");
    assert_eq!(env["OTEL_SERVICE_NAME"], "ext");
    let mut hits = vec![];
    for needle in ["Zsecret-s3-key-91", "Zsmtp-pass-42"] {
        let out = Command::new("grep")
            .args([
                "-rl",
                needle,
                t.home.path().to_str().unwrap(),
                "--exclude=smtp.yaml",
            ])
            .output()
            .unwrap();
        hits.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string),
        );
    }
    assert!(
        hits.is_empty(),
        "credentials given with --data are sealed at rest: {hits:?}"
    );
    t.ok(&["remove-relation", "ext", "s3"]);
    eventually("S3 vars gone", LONG, || {
        try_app_env(t.port("ext/0")).filter(|e| e.get("S3_BUCKET").is_none())
    });
}

/// A PostgreSQL cluster of the test's own (not the machine's shared one), so that it can be
/// stopped and started again: initdb as `postgres`, trust auth, on a free port.
struct OwnPostgres {
    dir: tempfile::TempDir,
    port: u16,
}

impl OwnPostgres {
    fn bin(name: &str) -> String {
        let base = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries (Debian postgresql) under /usr/lib/postgresql")
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .max()
            .unwrap();
        base.join("bin").join(name).to_string_lossy().into_owned()
    }

    fn as_postgres(args: &[&str]) -> std::process::Output {
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn new() -> OwnPostgres {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix("twelve-own-pg-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let data = dir.path().join("data");
        Self::as_postgres(&[
            &Self::bin("initdb"),
            "-D",
            data.to_str().unwrap(),
            "-A",
            "trust",
            "-U",
            "postgres",
        ]);
        let pg = OwnPostgres { dir, port };
        pg.start();
        pg
    }

    fn ctl(&self, action: &str) {
        let dir = self.dir.path();
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            dir.display()
        );
        Self::as_postgres(&[
            &Self::bin("pg_ctl"),
            "-D",
            dir.join("data").to_str().unwrap(),
            "-l",
            dir.join("server.log").to_str().unwrap(),
            "-o",
            &opts,
            "-m",
            "fast",
            "-w",
            action,
        ]);
    }

    fn start(&self) {
        self.ctl("start")
    }

    fn stop(&self) {
        self.ctl("stop")
    }

    fn url(&self) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--", &Self::bin("pg_ctl")])
            .args(["-D", self.dir.path().join("data").to_str().unwrap()])
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

fn service_status(t: &Twelve, name: &str) -> Option<(String, String)> {
    let v: serde_json::Value = serde_json::from_str(&t.ok(&["status", "--format", "json"])).ok()?;
    let s = v["backing-services"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == name)?
        .clone();
    Some((
        s["status"].as_str()?.to_string(),
        s["message"].as_str().unwrap_or("").to_string(),
    ))
}

fn relation_status(t: &Twelve, app: &str, endpoint: &str) -> Option<(String, String)> {
    let i = t.status(app)["integrations"]
        .as_array()?
        .iter()
        .find(|i| i["endpoint"] == endpoint)?
        .clone();
    Some((
        i["status"].as_str()?.to_string(),
        i["message"].as_str().unwrap_or("").to_string(),
    ))
}

const SUM: &str = r#"psql -q "$POSTGRESQL_DB_CONNECT_STRING" -tAc "select sum(x) from t""#;

#[test]
fn a_server_that_goes_down_blocks_its_relations_and_recovers_with_nothing_lost() {
    let t = Twelve::new();
    let own = OwnPostgres::new();
    let app = uniq("down");
    let src = t.example("flask");
    t.ok(&["deploy", src.to_str().unwrap(), &app]);
    t.ok(&["deploy", "postgresql", "own", "--external", &own.url()]);
    t.ok(&["integrate", &app, "own"]);
    let unit = format!("{app}/0");
    let env = env_with(&t, &unit, &["POSTGRESQL_DB_CONNECT_STRING"]);
    let out = sh(
        &t,
        &unit,
        r#"psql -q "$POSTGRESQL_DB_CONNECT_STRING" -tAc "create table t(x int); insert into t values (41), (1)""#,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The server goes away: the service and the app's relation say so, the app keeps
    // serving what does not need its database.
    own.stop();
    let (status, message) = eventually("the service blocked", LONG, || {
        service_status(&t, "own").filter(|(s, _)| s == "blocked")
    });
    assert!(
        message.contains("cannot reach server"),
        "{status}: {message}"
    );
    let (_, rel_message) = eventually("the relation blocked", LONG, || {
        relation_status(&t, &app, "postgresql").filter(|(s, _)| s == "blocked")
    });
    assert!(rel_message.contains("cannot reach server"), "{rel_message}");
    assert!(
        !rel_message.contains(env["POSTGRESQL_DB_PASSWORD"].as_str().unwrap()),
        "no password in the status"
    );
    let text = t.ok(&["status"]);
    assert!(text.contains("blocked: cannot reach server"), "{text}");
    let (code, _) = http_get(t.port(&unit), "/").expect("the app still answers");
    assert_eq!(code, 200);

    // It comes back: active again, same credentials, the data is there.
    own.start();
    eventually("the service active again", LONG, || {
        service_status(&t, "own").filter(|(s, _)| s == "active")
    });
    eventually("the relation active again", LONG, || {
        relation_status(&t, &app, "postgresql").filter(|(s, _)| s == "active")
    });
    let after = app_env(t.port(&unit));
    assert_eq!(
        after["POSTGRESQL_DB_CONNECT_STRING"], env["POSTGRESQL_DB_CONNECT_STRING"],
        "the relation survived the outage unchanged"
    );
    let out = sh(&t, &unit, SUM);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "42",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.ok(&["remove-relation", &app, "own"]);
    t.ok(&["remove-application", "own"]);
}

#[test]
fn a_managed_server_that_dies_is_restarted_with_its_data() {
    let t = Twelve::new();
    let app = uniq("crash");
    let src = t.example("flask");
    t.ok(&["deploy", src.to_str().unwrap(), &app]);
    t.ok(&["deploy", "postgresql", "pg"]);
    t.ok(&["integrate", &app, "pg"]);
    let unit = format!("{app}/0");
    env_with(&t, &unit, &["POSTGRESQL_DB_CONNECT_STRING"]);
    let out = sh(
        &t,
        &unit,
        r#"psql -q "$POSTGRESQL_DB_CONNECT_STRING" -tAc "create table t(x int); insert into t values (42)""#,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let pidfile = t.home.path().join("services/pg/data/postmaster.pid");
    let pid_of = || -> Option<i32> {
        std::fs::read_to_string(&pidfile)
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    };
    let before = pid_of().expect("the managed server's postmaster.pid");
    sigkill(before);
    eventually("a new server process", LONG, || {
        pid_of().filter(|p| *p != before && std::path::Path::new(&format!("/proc/{p}")).exists())
    });
    let sum = eventually("the data back after the restart", LONG, || {
        let out = sh(&t, &unit, SUM);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    });
    assert_eq!(sum, "42");
    eventually("pg active", LONG, || {
        service_status(&t, "pg").filter(|(s, _)| s == "active")
    });
    t.ok(&["remove-relation", &app, "pg", "--destroy-data"]);
    t.ok(&["remove-application", "pg", "--destroy-data"]);
}

#[test]
fn rabbitmq_adopted_apps_queue_in_their_own_vhosts() {
    let t = Twelve::new();
    let a = uniq("rmqa");
    let b = uniq("rmqb");
    let src = t.example("flask");
    t.ok(&["deploy", src.to_str().unwrap(), &a]);
    t.ok(&["deploy", src.to_str().unwrap(), &b]);
    t.ok(&[
        "deploy",
        "rabbitmq",
        "--external",
        "amqp://guest:guest@127.0.0.1:5672/",
    ]);
    t.ok(&["integrate", &a, "rabbitmq"]);
    t.ok(&["integrate", &b, "rabbitmq"]);
    let env_of = |app: &str| {
        let unit = format!("{app}/0");
        eventually("RabbitMQ in the env", LONG, || {
            try_app_env(t.port(&unit)).filter(|e| e.get("RABBITMQ_CONNECT_STRING").is_some())
        })
    };
    let (ea, eb) = (env_of(&a), env_of(&b));
    assert_eq!(ea["RABBITMQ_VHOST"], a.as_str(), "{ea}");
    assert_eq!(eb["RABBITMQ_VHOST"], b.as_str(), "{eb}");
    assert_eq!(ea["RABBITMQ_USERNAME"], a.as_str());
    assert_ne!(ea["RABBITMQ_PASSWORD"], "guest");

    // The app itself publishes and consumes with pika and the URL it was given.
    let (code, body) = http_get(t.port(&format!("{a}/0")), "/queue?body=hello-rabbit")
        .expect("the app answers /queue");
    assert_eq!((code, body.as_str()), (200, "hello-rabbit"), "{body}");

    // b's account cannot open a's vhost.
    let probe = format!(
        r#"python3 -c '
import os, sys, urllib.parse, pika
base = os.environ["RABBITMQ_CONNECT_STRING"].rsplit("/", 1)[0]
url = base + "/" + urllib.parse.quote(sys.argv[1], safe="")
try:
    pika.BlockingConnection(pika.URLParameters(url)).close()
except Exception as e:
    print("refused", type(e).__name__)
    sys.exit(3)
print("opened")
' {a}"#
    );
    let out = sh(&t, &format!("{b}/0"), &probe);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("refused"), "{text}");

    // remove-relation revokes a's account: its old URL no longer logs in.
    let old = ea["RABBITMQ_CONNECT_STRING"].as_str().unwrap().to_string();
    t.ok(&["remove-relation", &a, "rabbitmq", "--destroy-data"]);
    let login = format!(
        r#"python3 -c '
import sys, pika
try:
    pika.BlockingConnection(pika.URLParameters(sys.argv[1])).close()
except Exception as e:
    print("refused", type(e).__name__)
    sys.exit(3)
print("opened")
' '{old}'"#
    );
    let out = sh(&t, &format!("{b}/0"), &login);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let gone = eventually("RABBITMQ_* gone from a", LONG, || {
        try_app_env(t.port(&format!("{a}/0")))
            .filter(|e| e.get("RABBITMQ_CONNECT_STRING").is_none())
    });
    assert!(gone.get("RABBITMQ_PASSWORD").is_none());
    t.ok(&["remove-relation", &b, "rabbitmq", "--destroy-data"]);
    t.ok(&["remove-application", "rabbitmq"]);
}

#[test]
fn managed_mysql_and_rabbitmq_and_adopted_redis_serve_an_app() {
    let t = Twelve::new();
    let app = uniq("mgd");
    let src = t.example("flask");
    t.ok(&["deploy", src.to_str().unwrap(), &app]);
    t.ok(&["deploy", "mysql", "my"]);
    t.ok(&["deploy", "rabbitmq", "mq"]);
    // --key-prefix: the app's user has its `<app>:` keys only (the default is every key).
    t.ok(&[
        "deploy",
        "redis",
        "--external",
        "redis://127.0.0.1:6379",
        "--key-prefix",
    ]);
    for target in ["my", "mq", "redis"] {
        t.ok(&["integrate", &app, target]);
    }
    let unit = format!("{app}/0");
    let env = env_with(
        &t,
        &unit,
        &[
            "MYSQL_DB_CONNECT_STRING",
            "RABBITMQ_CONNECT_STRING",
            "REDIS_DB_CONNECT_STRING",
        ],
    );
    assert_ne!(
        env["MYSQL_DB_PORT"], "3306",
        "the managed server is twelve's own"
    );
    assert_ne!(
        env["RABBITMQ_PORT"], "5672",
        "the managed broker is twelve's own"
    );
    assert_eq!(env["REDIS_DB_PORT"], "6379", "{env}");

    // migrate.sh created the table in the managed MariaDB before the app started.
    let my = sh(
        &t,
        &unit,
        r#"mariadb -h "$MYSQL_DB_HOSTNAME" -P "$MYSQL_DB_PORT" -u "$MYSQL_DB_USERNAME" -p"$MYSQL_DB_PASSWORD" "$MYSQL_DB_NAME" -N -e "insert into visits () values (); select count(*) from visits""#,
    );
    assert_eq!(
        String::from_utf8_lossy(&my.stdout).trim(),
        "1",
        "{}",
        String::from_utf8_lossy(&my.stderr)
    );
    let (code, body) =
        http_get(t.port(&unit), "/queue?body=managed-broker").expect("the app answers /queue");
    assert_eq!((code, body.as_str()), (200, "managed-broker"));
    assert_redis_prefix_only(&t, &unit, &app);

    for target in ["my", "mq", "redis"] {
        t.ok(&["remove-relation", &app, target, "--destroy-data"]);
    }
    t.ok(&["remove-application", "my", "--destroy-data"]);
    t.ok(&["remove-application", "mq", "--destroy-data"]);
    t.ok(&["remove-application", "redis"]);
}
