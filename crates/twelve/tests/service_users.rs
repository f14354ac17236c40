//! The trust boundary around managed backing servers (docs/security.md): each managed
//! PostgreSQL, MySQL, Redis (with the per-app servers it runs) and RabbitMQ runs as a
//! system user of its own, never root nor the machine's `postgres`, and its directory is
//! that user's alone (0700): an app's user cannot open a file in it. A directory an older
//! twelve made (owned by root or `postgres`) is taken over on the next start, data kept.
//! Real controller, real servers, real Flask units; these need root (CI runs as root).

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

const LONG: Duration = Duration::from_secs(120);

fn need_root() -> bool {
    if !is_root() {
        eprintln!("SKIPPED: per-service users need root (CI runs as root)");
        return false;
    }
    true
}

/// The four uids (real, effective, saved, filesystem) of a process.
fn uids(pid: i32) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .unwrap()
        .split_whitespace()
        .map(|u| u.parse().unwrap())
        .collect()
}

fn pid_in(file: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(file).ok()?;
    let pid: i32 = text.lines().next()?.trim().parse().ok()?;
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

/// The running server's pid, from its pid file.
fn server_pid(file: &Path) -> i32 {
    eventually(&format!("a live pid in {}", file.display()), LONG, || {
        pid_in(file)
    })
}

fn pid_file(dir: &Path, kind: &str) -> PathBuf {
    match kind {
        "postgresql" => dir.join("data/postmaster.pid"),
        "mysql" => dir.join("mariadb.pid"),
        "redis" => dir.join("redis.pid"),
        "rabbitmq" => dir.join("rabbit.pid"),
        _ => unreachable!(),
    }
}

fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .unwrap()
        .map(|u| u.name)
        .unwrap_or_default()
}

fn uid_of(name: &str) -> Option<u32> {
    nix::unistd::User::from_name(name)
        .unwrap()
        .map(|u| u.uid.as_raw())
}

/// `twelve exec UNIT -- bash -c LINE` (as the app's user): success, stdout + stderr.
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

fn sh_ok(t: &Twelve, unit: &str, line: &str) -> String {
    let (ok, out) = sh(t, unit, line);
    assert!(ok, "{line}: {out}");
    out.trim().to_string()
}

const SERVICES: [(&str, &str); 4] = [
    ("postgresql", "pg"),
    ("mysql", "my"),
    ("redis", "rd"),
    ("rabbitmq", "mq"),
];

/// Deploys the four services and the Flask example `web` integrated with all of them.
fn deploy_all(t: &Twelve) {
    for (kind, name) in SERVICES {
        t.ok(&["deploy", kind, name]);
    }
    t.ok(&["deploy", t.example("flask").to_str().unwrap(), "web"]);
    for (_, name) in SERVICES {
        t.ok(&["integrate", "web", name]);
    }
    eventually("web's environment with every integration", LONG, || {
        try_app_env(t.port("web/0")).filter(|e| {
            [
                "POSTGRESQL_DB_CONNECT_STRING",
                "MYSQL_DB_CONNECT_STRING",
                "REDIS_DB_CONNECT_STRING",
                "RABBITMQ_CONNECT_STRING",
            ]
            .iter()
            .all(|v| e.get(*v).is_some())
        })
    });
}

#[test]
fn each_managed_server_runs_as_a_user_of_its_own_that_apps_cannot_read() {
    if !need_root() {
        return;
    }
    let t = Twelve::new();
    deploy_all(&t);
    let services = t.home.path().join("services");
    let postgres = uid_of("postgres");
    let app_uid = {
        let line = sh_ok(&t, "web/0", "id -u");
        line.parse::<u32>().unwrap()
    };
    assert_ne!(app_uid, 0, "the app runs as its own user");

    let mut seen = vec![];
    for (kind, name) in SERVICES {
        let dir = services.join(name);
        let pid = server_pid(&pid_file(&dir, kind));
        let ids = uids(pid);
        let uid = ids[0];
        assert!(ids.iter().all(|u| *u == uid), "{kind}: uids {ids:?}");
        assert_ne!(uid, 0, "{kind} runs as root");
        assert_ne!(Some(uid), postgres, "{kind} runs as the machine's postgres");
        assert_ne!(uid, app_uid, "{kind} runs as the app's user");
        assert!(
            (590_000..=599_999).contains(&uid),
            "{kind}: uid {uid} outside twelve's range"
        );
        let user = user_name(uid);
        assert!(
            user.starts_with("tw") && user.ends_with(&format!("-{name}")),
            "{kind} runs as {user}"
        );
        assert!(!seen.contains(&uid), "{kind} shares uid {uid}");
        seen.push(uid);

        // Its directory is that user's alone.
        let meta = std::fs::metadata(&dir).unwrap();
        assert_eq!(meta.uid(), uid, "{kind}: owner of {}", dir.display());
        assert_eq!(
            meta.mode() & 0o777,
            0o700,
            "{kind}: mode of {}",
            dir.display()
        );
        // The admin password stays twelve's (root's).
        assert_eq!(
            std::fs::metadata(dir.join("admin.secret")).unwrap().uid(),
            0
        );

        // The app's user cannot open a file in it (EACCES), nor list it.
        let (ok, out) = sh(
            &t,
            "web/0",
            &format!("cat {}/server.log >/dev/null", dir.display()),
        );
        assert!(
            !ok && out.contains("Permission denied"),
            "{kind}: the app read {}/server.log: {out}",
            dir.display()
        );
        let (ok, out) = sh(&t, "web/0", &format!("ls {}", dir.display()));
        assert!(!ok && out.contains("Permission denied"), "{kind}: {out}");
        // The proof that the file is there: root reads it.
        assert!(dir.join("server.log").is_file(), "{kind}");
    }

    // The app's own Redis server runs as the Redis service's user, in its directory.
    let rd = services.join("rd");
    let app_dir = rd.join("apps/web");
    let pid = server_pid(&app_dir.join("redis.pid"));
    let rd_uid = std::fs::metadata(&rd).unwrap().uid();
    assert_eq!(uids(pid), vec![rd_uid; 4]);
    assert_eq!(std::fs::metadata(&app_dir).unwrap().uid(), rd_uid);
    assert_eq!(std::fs::metadata(&app_dir).unwrap().mode() & 0o777, 0o700);

    // Removing a service deletes its user; kept data becomes root's (a later user with
    // the same uid must not read it).
    let mq = services.join("mq");
    let mq_user = user_name(std::fs::metadata(&mq).unwrap().uid());
    t.ok(&["remove-relation", "web", "mq"]);
    t.ok(&["remove-application", "mq"]);
    assert!(uid_of(&mq_user).is_none(), "{mq_user} still exists");
    let meta = std::fs::metadata(&mq).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (0, 0o700));
    // Destroyed with its data: directory and user gone.
    let my = services.join("my");
    let my_user = user_name(std::fs::metadata(&my).unwrap().uid());
    t.ok(&["remove-relation", "web", "my", "--destroy-data"]);
    t.ok(&["remove-application", "my", "--destroy-data"]);
    assert!(uid_of(&my_user).is_none() && !my.exists());
}

/// Stops a server the way its owner would (PostgreSQL: fast shutdown) and waits for it.
fn kill_server(file: &Path, kind: &str) {
    let pid = server_pid(file);
    let sig = if kind == "postgresql" {
        "-INT"
    } else {
        "-TERM"
    };
    assert!(std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success());
    eventually(&format!("{kind} (pid {pid}) gone"), LONG, || {
        (!Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    });
}

fn chown_r(owner: &str, dir: &Path) {
    assert!(std::process::Command::new("chown")
        .args(["-R", owner])
        .arg(dir)
        .status()
        .unwrap()
        .success());
}

#[test]
fn a_directory_an_older_twelve_made_is_taken_over_with_its_data() {
    if !need_root() {
        return;
    }
    let t = Twelve::new();
    deploy_all(&t);
    let services = t.home.path().join("services");
    let psql = r#"psql -q -v ON_ERROR_STOP=1 "$POSTGRESQL_DB_CONNECT_STRING" -tA"#;
    let mysql = r#"mariadb -h "$MYSQL_DB_HOSTNAME" -P "$MYSQL_DB_PORT" -u "$MYSQL_DB_USERNAME" -p"$MYSQL_DB_PASSWORD" "$MYSQL_DB_NAME" -N"#;
    let redis = r#"redis-cli --no-auth-warning -u "$REDIS_DB_CONNECT_STRING""#;
    sh_ok(
        &t,
        "web/0",
        &format!(
            r#"{psql} -c "create table kept(v text); insert into kept values ('pg-kept')" && {mysql} -e "create table kept(v text); insert into kept values ('my-kept')" && {redis} set kept rd-kept"#
        ),
    );
    let users: Vec<(String, u32)> = SERVICES
        .iter()
        .map(|(_, name)| {
            let uid = std::fs::metadata(services.join(name)).unwrap().uid();
            (name.to_string(), uid)
        })
        .collect();
    // Redis saves its data as it stops.
    // An older twelve: PostgreSQL ran as the machine's postgres, MariaDB and Redis as
    // root, RabbitMQ as the machine's rabbitmq. The controller is stopped so that it does
    // not restart them while their files change hands.
    let said = t.ok(&["controller", "stop"]);
    assert!(
        said.contains(
            "controller stopped; apps, the ingress and managed backing services keep running"
        ),
        "{said}"
    );
    for (kind, name) in SERVICES {
        let dir = services.join(name);
        if kind == "redis" {
            kill_server(&dir.join("apps/web/redis.pid"), kind);
        }
        kill_server(&pid_file(&dir, kind), kind);
        let owner = match kind {
            "postgresql" => "postgres:postgres",
            "rabbitmq" => "rabbitmq:rabbitmq",
            _ => "root:root",
        };
        chown_r(owner, &dir);
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }

    // The next controller starts them again, as their own users, with their data.
    t.ok(&["status"]);
    for (kind, name) in SERVICES {
        let dir = services.join(name);
        let pid = server_pid(&pid_file(&dir, kind));
        let uid = users.iter().find(|(n, _)| n == name).unwrap().1;
        assert_eq!(uids(pid), vec![uid; 4], "{kind}");
        let meta = std::fs::metadata(&dir).unwrap();
        assert_eq!((meta.uid(), meta.mode() & 0o777), (uid, 0o700), "{kind}");
    }
    let app_redis = server_pid(&services.join("rd/apps/web/redis.pid"));
    assert_eq!(
        uids(app_redis)[0],
        std::fs::metadata(services.join("rd")).unwrap().uid()
    );
    let out = eventually("the data through the restarted servers", LONG, || {
        let (ok, out) = sh(
            &t,
            "web/0",
            &format!(
                r#"{psql} -c "select v from kept" && {mysql} -e "select v from kept" && {redis} get kept"#
            ),
        );
        ok.then_some(out)
    });
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["pg-kept", "my-kept", "rd-kept"],
        "{out}"
    );
    // RabbitMQ's Mnesia database kept the app's vhost, and twelve administers the broker
    // (with the cookie in its directory): the service is active.
    eventually("every service active", LONG, || {
        let st: serde_json::Value =
            serde_json::from_str(&t.ok(&["status", "--format", "json"])).unwrap();
        let services = st["backing-services"].as_array()?.clone();
        (services.len() == 4 && services.iter().all(|s| s["status"] == "active")).then_some(())
    });
    let mq = services.join("mq");
    let port = {
        let st: serde_json::Value =
            serde_json::from_str(&t.ok(&["status", "--format", "json"])).unwrap();
        let s = st["backing-services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "mq")
            .unwrap()
            .clone();
        s["address"]
            .as_str()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .to_string()
    };
    let out = std::process::Command::new("/usr/lib/rabbitmq/bin/rabbitmqctl")
        .args([
            "-q",
            "-n",
            &format!("twelve-{port}@localhost"),
            "list_vhosts",
        ])
        .env("HOME", &mq)
        .output()
        .unwrap();
    let vhosts = String::from_utf8_lossy(&out.stdout);
    assert!(
        vhosts.lines().any(|l| l.trim() == "web"),
        "{vhosts}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `twelve controller stop` says what stops with it: with no app deployed, its ingress.
#[test]
fn controller_stop_says_whether_the_ingress_stopped_too() {
    let t = Twelve::new();
    t.ok(&["status"]);
    let pid_file = t.home.path().join("ingress/ingress.pid");
    let pid = eventually("the ingress's pid", LONG, || pid_in(&pid_file));
    let said = t.ok(&["controller", "stop"]);
    assert_eq!(
        said.trim(),
        "controller stopped with its ingress (no app is deployed)"
    );
    eventually("the ingress gone", LONG, || {
        (!Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    });
}
