//! Backups and restores of backing services end to end, with the machine's real servers
//! and a real S3 API (moto, started by the test): an app writes, `create-backup`, the data
//! is changed or dropped, `restore` brings exactly the backed-up data back and the app
//! serves again. PostgreSQL (managed, local storage, under a write load), MySQL (the
//! machine's MariaDB adopted, on S3, sealed), Redis (managed, on a per-minute schedule).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

const LONG: Duration = Duration::from_secs(90);

fn uniq(prefix: &str) -> String {
    let n: u32 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        % 100000;
    format!("{prefix}{n}")
}

/// Runs a shell line inside a unit, with the app's environment; its stdout, trimmed.
fn sh(t: &Twelve, unit: &str, line: &str) -> String {
    let out = t.cmd(&["exec", unit, "--", "bash", "-c", line]);
    assert!(
        out.status.success(),
        "{line}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn run_json(t: &Twelve, args: &[&str]) -> Value {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--format", "json"]);
    serde_json::from_str(&t.ok(&all)).unwrap()
}

/// Deploys the Flask example as `app`, integrates it with `service` and waits for the
/// variables named.
fn app_with(t: &Twelve, app: &str, service: &str, var: &str) -> String {
    t.ok(&["deploy", t.example("flask").to_str().unwrap(), app]);
    t.ok(&["integrate", app, service]);
    let unit = format!("{app}/0");
    eventually(&format!("{var} in {unit}'s env"), LONG, || {
        try_app_env(t.port(&unit)).filter(|e| e.get(var).is_some())
    });
    unit
}

fn serves(t: &Twelve, app: &str) {
    eventually(&format!("{app} serving through the ingress"), LONG, || {
        via_ingress(t, app, "/").filter(|(c, _)| *c == 200)
    });
}

/// What a Redis command line run in the unit prints, once the restarted server answers it.
fn restored_keys(t: &Twelve, unit: &str, line: &str) -> String {
    eventually(&format!("{line} after the restore"), LONG, || {
        let out = t.cmd(&["exec", unit, "--", "bash", "-c", line]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        (out.status.success() && !text.contains("ERR") && !text.trim().is_empty()).then_some(text)
    })
}

const PSQL: &str = r#"psql -q -v ON_ERROR_STOP=1 "$POSTGRESQL_DB_CONNECT_STRING" -tA"#;

#[test]
fn postgresql_backup_under_load_restores_a_consistent_state_locally() {
    let t = Twelve::new();
    let app = uniq("bkpg");
    t.ok(&["deploy", "postgresql", "pg"]);
    let unit = app_with(&t, &app, "pg", "POSTGRESQL_DB_CONNECT_STRING");

    let actions = t.ok(&["actions", "pg"]);
    for a in [
        "create-backup",
        "list-backups",
        "restore",
        "backup-id:string*",
    ] {
        assert!(actions.contains(a), "{actions}");
    }

    // The app's invariant: acct.n is the number of rows in moves, both written in one
    // transaction.
    sh(
        &t,
        &unit,
        &format!(
            r#"{PSQL} -c "create table acct(id int primary key, n int not null); insert into acct values (1, 0); create table moves(id serial primary key, v int not null)""#
        ),
    );
    const TOTAL: u32 = 600;
    let id = std::thread::scope(|s| {
        let load = s.spawn(|| {
            sh(
                &t,
                &unit,
                &format!(
                    r#"for i in $(seq 1 {TOTAL}); do echo "begin; update acct set n = n + 1 where id = 1; select pg_sleep(0.01); insert into moves(v) values ($i); commit;"; done | {PSQL} >/dev/null"#
                ),
            )
        });
        eventually("the write load under way", LONG, || {
            let n: u32 = sh(
                &t,
                &unit,
                &format!(r#"{PSQL} -c "select count(*) from moves""#),
            )
            .parse()
            .unwrap();
            (n >= 20).then_some(())
        });
        let r = run_json(&t, &["pg/leader", "create-backup"]);
        assert_eq!(r["where"], "local", "{r}");
        assert!(
            r["apps"]
                .as_array()
                .unwrap()
                .contains(&Value::from(app.as_str())),
            "{r}"
        );
        load.join().unwrap();
        r["backup-id"].as_str().unwrap().to_string()
    });
    let counts = |t: &Twelve| {
        sh(
            t,
            &unit,
            &format!(
                r#"{PSQL} -c "select (select n from acct where id = 1) || ' ' || (select count(*) from moves)""#
            ),
        )
    };
    assert_eq!(counts(&t), format!("{TOTAL} {TOTAL}"));

    // Backups live under TWELVE_HOME/backups/<service>, closed to others.
    let dir = t.home.path().join("backups/pg");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }
    assert!(dir.join(&id).join("meta.json").exists());

    // The data changes, then the backup comes back.
    sh(
        &t,
        &unit,
        &format!(
            r#"{PSQL} -c "drop table moves; update acct set n = -1; create table extra(x int)""#
        ),
    );
    serves(&t, &app);
    // While the data is replaced, the app is out of the ingress, with a maintenance page.
    let done = std::sync::atomic::AtomicBool::new(false);
    let (r, pages) = std::thread::scope(|s| {
        let watch = s.spawn(|| {
            let mut pages = vec![];
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(p) = via_ingress(&t, &app, "/") {
                    pages.push(p);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            pages
        });
        let r = run_json(&t, &["pg", "restore", &format!("backup-id={id}")]);
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (r, watch.join().unwrap())
    });
    let maintenance = format!("{app} is maintenance: restoring backup {id} of pg");
    assert!(
        pages
            .iter()
            .any(|(code, body)| *code == 503 && body.contains(&maintenance)),
        "{maintenance:?} not among {:?}",
        pages
            .iter()
            .map(|(c, b)| format!("{c} {}", b.lines().nth(2).unwrap_or("")))
            .collect::<std::collections::BTreeSet<_>>()
    );
    assert!(
        pages.iter().all(|(code, _)| *code == 200 || *code == 503),
        "only the app or the maintenance page: {:?}",
        pages
            .iter()
            .map(|(c, _)| *c)
            .collect::<std::collections::BTreeSet<_>>()
    );
    assert_eq!(r["backup-id"], id.as_str(), "{r}");
    let pre = r["pre-restore-backup-id"].as_str().unwrap().to_string();
    let restored = counts(&t);
    let (n, moves) = restored.split_once(' ').unwrap();
    assert_eq!(n, moves, "the two tables written in one transaction agree");
    let n: u32 = n.parse().unwrap();
    assert!((20..=TOTAL).contains(&n), "{restored}");
    let extra = sh(
        &t,
        &unit,
        &format!(r#"{PSQL} -c "select count(*) from pg_tables where tablename = 'extra'""#),
    );
    assert_eq!(
        extra, "0",
        "exactly the backed-up data: tables made later are gone"
    );
    serves(&t, &app);

    // The state before the restore was saved, and can be restored in turn.
    let list = run_json(&t, &["pg", "list-backups"]);
    let rows = list["backups"].as_array().unwrap();
    let kinds: Vec<(&str, &str)> = rows
        .iter()
        .map(|b| (b["id"].as_str().unwrap(), b["kind"].as_str().unwrap()))
        .collect();
    assert!(kinds.contains(&(id.as_str(), "manual")), "{list}");
    assert!(kinds.contains(&(pre.as_str(), "pre-restore")), "{list}");
    run_json(&t, &["pg", "restore", &format!("backup-id={pre}")]);
    assert_eq!(
        sh(&t, &unit, &format!(r#"{PSQL} -c "select n from acct""#)),
        "-1"
    );

    // `twelve status`, the dashboard's state and the metrics show the last backup.
    let status = t.ok(&["status"]);
    assert!(status.contains("last backup"), "{status}");
    let web = t.web_port();
    let state: Value = eventually("the dashboard's state with the backup", LONG, || {
        let (_, body) = http_get(web, "/api/state")?;
        let v: Value = serde_json::from_str(&body).ok()?;
        let pg = v["services"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == "pg")?;
        pg["last_backup"]
            .as_str()?
            .contains("last backup")
            .then(|| pg.clone())
    });
    assert_eq!(state["backup_failures"], 0, "{state}");
    let (_, metrics) = http_get(web, "/metrics").unwrap();
    assert!(
        metrics.contains(
            "twelve_backup_last_success_timestamp_seconds{service=\"pg\",kind=\"postgresql\"}"
        ) && metrics.contains("twelve_backup_failures_total{service=\"pg\",kind=\"postgresql\"} 0"),
        "{metrics}"
    );

    // A backup made by a newer server is refused, naming both versions.
    let meta_path = dir.join(&id).join("meta.json");
    let mut meta: Value = serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
    meta["dump"]["server_version"] = "99.1".into();
    meta["dump"]["version_num"] = 990001.into();
    std::fs::write(&meta_path, serde_json::to_vec(&meta).unwrap()).unwrap();
    let err = t.fails(&["run", "pg", "restore", &format!("backup-id={id}")]);
    assert!(
        err.contains("PostgreSQL 99.1") && err.contains("newer"),
        "{err}"
    );
    let err = t.fails(&["run", "pg", "restore", "backup-id=nope"]);
    assert!(err.contains("no backup \"nope\""), "{err}");

    // The same round trip on S3 (moto): the object is sealed, the restore exact.
    let moto = Moto::start();
    integrate_s3(&t, &moto, "pg", "twelve-pg");
    sh(
        &t,
        &unit,
        &format!(
            r#"{PSQL} -c "create table notes(id int primary key, body text); insert into notes values (1, 'plaintext-marker-pg'), (2, 'two')""#
        ),
    );
    let r = run_json(&t, &["pg", "create-backup"]);
    assert_eq!(r["where"], "s3", "{r}");
    let id = r["backup-id"].as_str().unwrap().to_string();
    assert_sealed(
        &moto,
        &format!("/twelve-pg/pg/{id}/{app}.pgdump.zst"),
        b"plaintext-marker",
    );
    sh(
        &t,
        &unit,
        &format!(
            r#"{PSQL} -c "update notes set body = 'changed'; insert into notes values (3, 'later'); drop table acct""#
        ),
    );
    let r = run_json(&t, &["pg", "restore", &format!("backup-id={id}")]);
    assert_eq!(r["backup-id"], id.as_str(), "{r}");
    assert_eq!(
        sh(
            &t,
            &unit,
            &format!(
                r#"{PSQL} -c "select string_agg(body, ',' order by id) from notes; select n from acct""#
            )
        ),
        "plaintext-marker-pg,two\n-1"
    );
    serves(&t, &app);
    assert!(
        !t.home.path().join("backups/pg").join(&id).exists(),
        "nothing kept locally"
    );

    t.ok(&["remove-relation", &app, "pg", "--destroy-data"]);
}

/// `twelve integrate SERVICE s3` with moto's endpoint and `bucket`.
fn integrate_s3(t: &Twelve, moto: &Moto, service: &str, bucket: &str) {
    t.ok(&[
        "integrate",
        service,
        "s3",
        "--data",
        &format!("endpoint=http://127.0.0.1:{}", moto.port),
        &format!("bucket={bucket}"),
        "access-key=testing",
        "secret-key=moto-secret-key-42",
        "region=eu-west-1",
    ]);
}

/// The object at `path` is there and sealed: twelve's header, and `plain` nowhere in it.
fn assert_sealed(moto: &Moto, path: &str, plain: &[u8]) {
    let (code, body) = moto.get(path);
    assert_eq!(code, 200, "{path}: {}", String::from_utf8_lossy(&body));
    assert_eq!(&body[..4], b"TWB1", "{path}");
    assert!(
        !body.windows(plain.len()).any(|w| w == plain),
        "{path} holds {:?} in plaintext",
        String::from_utf8_lossy(plain)
    );
}

/// moto's S3 server on a free port, stopped when dropped.
struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    fn start() -> Moto {
        let cache = std::env::var("TWELVE_CACHE")
            .unwrap_or_else(|_| format!("{}/.cache/twelve", std::env::var("HOME").unwrap()));
        let venv = std::path::Path::new(&cache).join("moto-venv/bin/moto_server");
        let bin = if venv.exists() {
            venv.display().to_string()
        } else {
            "moto_server".to_string()
        };
        let port = free_port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {bin} ({e}): run scripts/setup.sh, which installs moto[server]"
                )
            });
        eventually("moto listening", Duration::from_secs(30), || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        });
        Moto { child, port }
    }

    /// An object's bytes. moto does not check signatures, but treats a request without
    /// any as anonymous (refused by the bucket's ACL).
    fn get(&self, path: &str) -> (u16, Vec<u8>) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\nAuthorization: AWS4-HMAC-SHA256 Credential=testing/20260101/eu-west-1/s3/aws4_request, SignedHeaders=host, Signature=00\r\n\r\n",
            self.port
        )
        .unwrap();
        let mut buf = vec![];
        s.read_to_end(&mut buf).unwrap();
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        (code, buf[end + 4..].to_vec())
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn mysql_backup_on_s3_is_sealed_and_restores() {
    let moto = Moto::start();
    let t = Twelve::new();
    let app = uniq("bkmy");
    t.ok(&[
        "deploy",
        "mysql",
        "my",
        "--external",
        "mysql://root@127.0.0.1:3306/",
    ]);
    let unit = app_with(&t, &app, "my", "MYSQL_DB_CONNECT_STRING");
    let mysql = r#"mariadb -h "$MYSQL_DB_HOSTNAME" -P "$MYSQL_DB_PORT" -u "$MYSQL_DB_USERNAME" -p"$MYSQL_DB_PASSWORD" "$MYSQL_DB_NAME" -N"#;
    sh(
        &t,
        &unit,
        &format!(
            r#"{mysql} -e "create table notes(id int primary key, body text); insert into notes values (1, 'plaintext-marker-one'), (2, 'two'); insert into visits () values (), (); create table audit(n int); create trigger notes_ai after insert on notes for each row insert into audit values (NEW.id); create view bodies as select id, body from notes""#
        ),
    );

    let secret = "moto-secret-key-42";
    let endpoint = format!("endpoint=http://127.0.0.1:{}", moto.port);
    t.ok(&[
        "integrate",
        "my",
        "s3",
        "--data",
        &endpoint,
        "bucket=twelve-backups",
        "access-key=testing",
        &format!("secret-key={secret}"),
        "path=ci/run",
        "region=eu-west-1",
    ]);
    let r = run_json(&t, &["my", "create-backup"]);
    assert_eq!(r["where"], "s3", "{r}");
    let id = r["backup-id"].as_str().unwrap().to_string();

    // On S3, sealed: neither zstd's magic nor the rows can be seen.
    let db = app.replace('-', "_");
    let (code, body) = moto.get(&format!("/twelve-backups/ci/run/my/{id}/{db}.sql.zst"));
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(&body[..4], b"TWB1");
    assert!(!body.windows(5).any(|w| w == b"plain"));
    let (code, _) = moto.get(&format!("/twelve-backups/ci/run/my/{id}/meta.json"));
    assert_eq!(code, 200);
    assert!(
        !t.home.path().join("backups/my").join(&id).exists(),
        "nothing kept locally"
    );

    sh(
        &t,
        &unit,
        &format!(
            r#"{mysql} -e "delete from visits; update notes set body = 'changed'; create table later(x int); drop view bodies; drop trigger notes_ai""#
        ),
    );
    let r = run_json(&t, &["my/leader", "restore", &format!("backup-id={id}")]);
    assert_eq!(r["backup-id"], id.as_str(), "{r}");
    // The tables, the view and the trigger of the backup, nothing made since.
    let state = format!(
        r#"{mysql} -e "select count(*) from visits; select group_concat(body order by id) from bodies; show tables like 'later'""#
    );
    assert_eq!(sh(&t, &unit, &state), "2\nplaintext-marker-one,two");
    sh(
        &t,
        &unit,
        &format!(r#"{mysql} -e "insert into notes values (3, 'three')""#),
    );
    assert_eq!(
        sh(
            &t,
            &unit,
            &format!(r#"{mysql} -e "select group_concat(n order by n) from audit""#)
        ),
        "3",
        "the trigger is back"
    );
    serves(&t, &app);

    let listed = t.ok(&["run", "my", "list-backups"]);
    assert!(
        listed.contains(&id) && listed.contains("pre-restore"),
        "{listed}"
    );
    let everything = format!("{listed}{}", t.ok(&["status"]));
    assert!(!everything.contains(secret));

    // A restore that fails midway changes nothing: a local backup whose dump is cut in the
    // middle of its second table (`notes` loads, `visits` does not).
    t.ok(&["remove-relation", "my", "s3"]);
    let r = run_json(&t, &["my", "create-backup"]);
    assert_eq!(r["where"], "local", "{r}");
    let cut_id = r["backup-id"].as_str().unwrap().to_string();
    let part = t
        .home
        .path()
        .join(format!("backups/my/{cut_id}/{db}.sql.zst"));
    let sql = zstd::decode_all(std::fs::File::open(&part).unwrap()).unwrap();
    let at = sql
        .windows(20)
        .position(|w| w == b"INSERT INTO `visits`")
        .expect("the dump inserts into visits");
    std::fs::write(&part, zstd::encode_all(&sql[..at + 30], 3).unwrap()).unwrap();
    sh(
        &t,
        &unit,
        &format!(
            r#"{mysql} -e "update notes set body = 'kept' where id = 3; insert into visits () values ()""#
        ),
    );
    let before = sh(&t, &unit, &state);
    assert_eq!(before, "3\nplaintext-marker-one,two,kept");
    let err = t.fails(&["run", "my", "restore", &format!("backup-id={cut_id}")]);
    assert!(
        err.contains(&format!("restoring database {db}")) && err.contains("nothing was changed"),
        "{err}"
    );
    assert_eq!(sh(&t, &unit, &state), before, "the data is as it was");
    let left = Command::new("mariadb")
        .args(["-h", "127.0.0.1", "-u", "root", "-N", "-e"])
        .arg(format!("show databases like '{db}$%'"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&left.stdout).trim(),
        "",
        "no scratch database left"
    );
    serves(&t, &app);

    t.ok(&["remove-relation", &app, "my", "--destroy-data"]);
}

#[test]
fn redis_backup_on_a_schedule_restores_the_keys() {
    let t = Twelve::new();
    let app = uniq("bkrd");
    t.ok(&["deploy", "redis", "cache"]);
    let unit = app_with(&t, &app, "cache", "REDIS_DB_CONNECT_STRING");
    let cli = r#"redis-cli --no-auth-warning -u "$REDIS_DB_CONNECT_STRING""#;
    sh(
        &t,
        &unit,
        &format!(r#"{cli} set {app}:a 1 >/dev/null && {cli} set {app}:b 2 >/dev/null"#),
    );

    let err = t.fails(&["config", "cache", "backup-schedule=every day"]);
    assert!(err.contains("5 fields"), "{err}");
    t.ok(&[
        "config",
        "cache",
        "backup-schedule=* * * * *",
        "backup-retention=1",
    ]);
    let cfg = t.ok(&["config", "cache"]);
    assert!(cfg.contains("* * * * *"), "{cfg}");

    // The controller makes it within the minute.
    let id = eventually("a scheduled backup", Duration::from_secs(75), || {
        let list = run_json(&t, &["cache", "list-backups"]);
        list["backups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["kind"] == "scheduled")
            .map(|b| b["id"].as_str().unwrap().to_string())
    });
    sh(
        &t,
        &unit,
        &format!(
            r#"{cli} set {app}:a 100 >/dev/null && {cli} del {app}:b >/dev/null && {cli} set {app}:c 3 >/dev/null"#
        ),
    );
    // With a retention of 1, the backup being restored outlives the pre-restore one.
    let r = run_json(&t, &["cache/leader", "restore", &format!("backup-id={id}")]);
    let pre = r["pre-restore-backup-id"].as_str().unwrap().to_string();
    let ids: Vec<String> = run_json(&t, &["cache", "list-backups"])["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect();
    assert!(ids.contains(&id) && ids.contains(&pre), "{ids:?}");
    let keys = restored_keys(&t, &unit, &format!("{cli} mget {app}:a {app}:b {app}:c"));
    assert_eq!(
        keys.split_whitespace().collect::<Vec<_>>(),
        vec!["1", "2"],
        "{keys}"
    );
    serves(&t, &app);
    let status = t.ok(&["status"]);
    assert!(status.contains("last backup"), "{status}");

    // A run missed while the controller is down is made once when it starts again: a
    // schedule for the next minute, the controller stopped until that minute has passed.
    t.ok(&["config", "cache", "--reset", "backup-retention"]);
    let scheduled = |t: &Twelve| -> Vec<String> {
        run_json(t, &["cache", "list-backups"])["backups"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["kind"] == "scheduled")
            .map(|b| b["id"].as_str().unwrap().to_string())
            .collect()
    };
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    if now() % 60 > 45 {
        std::thread::sleep(Duration::from_secs(61 - now() % 60));
    }
    let next_minute = (now() / 60 + 1) % 60;
    t.ok(&[
        "config",
        "cache",
        &format!("backup-schedule={next_minute} * * * *"),
    ]);
    let before = scheduled(&t);
    t.ok(&["controller", "stop"]);
    std::thread::sleep(Duration::from_secs(62 - now() % 60));
    // Any command starts the controller again.
    let caught_up = eventually("the catch-up backup", LONG, || {
        let now = scheduled(&t);
        (now.len() > before.len()).then_some(now)
    });
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        scheduled(&t).len(),
        before.len() + 1,
        "one run however many were missed: {caught_up:?}"
    );

    // The same round trip on S3 (moto): the app's server's RDB is sealed there.
    let moto = Moto::start();
    integrate_s3(&t, &moto, "cache", "twelve-redis");
    t.ok(&["config", "cache", "--reset", "backup-schedule"]);
    sh(
        &t,
        &unit,
        &format!(r#"{cli} set {app}:s plaintext-marker-redis >/dev/null"#),
    );
    let r = run_json(&t, &["cache", "create-backup"]);
    assert_eq!(r["where"], "s3", "{r}");
    let id = r["backup-id"].as_str().unwrap().to_string();
    assert_sealed(
        &moto,
        &format!("/twelve-redis/cache/{id}/app-{app}.rdb.zst"),
        b"plaintext-marker",
    );
    sh(
        &t,
        &unit,
        &format!(r#"{cli} set {app}:s changed >/dev/null && {cli} set {app}:later 1 >/dev/null"#),
    );
    run_json(&t, &["cache", "restore", &format!("backup-id={id}")]);
    let keys = restored_keys(
        &t,
        &unit,
        &format!("{cli} mget {app}:s {app}:later {app}:a"),
    );
    assert_eq!(
        keys.lines().map(str::trim).collect::<Vec<_>>(),
        vec!["plaintext-marker-redis", "", "1"],
        "{keys}"
    );
    serves(&t, &app);

    t.ok(&["remove-relation", &app, "cache", "--destroy-data"]);
}

#[test]
fn rabbitmq_definitions_backup_brings_back_a_deleted_vhost_user_and_queue() {
    let t = Twelve::new();
    let app = uniq("bkmq");
    t.ok(&["deploy", "rabbitmq", "mq"]);
    let unit = app_with(&t, &app, "mq", "RABBITMQ_CONNECT_STRING");
    let env = app_env(t.port(&unit));
    let var = |k: &str| {
        env[k]
            .as_str()
            .unwrap_or_else(|| panic!("{k} not in {env}"))
            .to_string()
    };
    let (port, vhost, user) = (
        var("RABBITMQ_PORT"),
        var("RABBITMQ_VHOST"),
        var("RABBITMQ_USERNAME"),
    );
    // The managed broker's node, as the provider names it.
    let node = format!("twelve-{port}@localhost");
    // The broker's Erlang cookie is its own, in its directory (HOME for rabbitmqctl).
    let broker_home = t.home.path().join("services").join("mq");
    let ctl = |args: &[&str]| -> String {
        // The real script: Debian's /usr/sbin wrapper switches to the machine's `rabbitmq`
        // user and its cookie.
        let real = std::path::Path::new("/usr/lib/rabbitmq/bin/rabbitmqctl");
        let out = Command::new(if real.exists() {
            real
        } else {
            std::path::Path::new("rabbitmqctl")
        })
        .env("HOME", &broker_home)
        .args(["-q", "-n", &node])
        .args(args)
        .output()
        .unwrap();
        assert!(
            out.status.success(),
            "rabbitmqctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let queue = |body: &str| http_get(t.port(&unit), &format!("/queue?body={body}"));
    assert_eq!(queue("one"), Some((200, "one".to_string())));
    let has = |text: &str, name: &str| text.lines().any(|l| l.trim() == name);
    assert!(has(&ctl(&["list_queues", "-p", &vhost, "name"]), "probe"));

    let r = run_json(&t, &["mq", "create-backup"]);
    assert_eq!(r["where"], "local", "{r}");
    let id = r["backup-id"].as_str().unwrap().to_string();

    ctl(&["delete_vhost", &vhost]);
    ctl(&["delete_user", &user]);
    assert!(!has(&ctl(&["list_vhosts", "name"]), &vhost));
    assert_ne!(
        queue("two").map(|(c, _)| c),
        Some(200),
        "the app lost its broker"
    );

    run_json(&t, &["mq", "restore", &format!("backup-id={id}")]);
    assert!(has(&ctl(&["list_vhosts", "name"]), &vhost));
    assert!(ctl(&["list_users"]).lines().any(|l| l.starts_with(&user)));
    assert!(
        has(&ctl(&["list_queues", "-p", &vhost, "name"]), "probe"),
        "the queue is back before the app declares it again"
    );
    // The user's password hash and permissions came back with it.
    eventually("the app using its broker again", LONG, || {
        queue("three").filter(|(c, b)| *c == 200 && b == "three")
    });
    serves(&t, &app);

    t.ok(&["remove-relation", &app, "mq", "--destroy-data"]);
}

/// PostgreSQL: a restore swaps the restored databases in and backs up the replaced ones
/// after the apps are back. A controller killed before that backup is made keeps the
/// replaced database and makes the backup when it starts again; nothing is lost.
#[test]
fn a_pre_restore_backup_cut_short_by_a_killed_controller_is_made_at_the_next_start() {
    let t = Twelve::new();
    let app = uniq("bkpx");
    t.ok(&[
        "deploy",
        "postgresql",
        "pgx",
        "--external",
        "postgresql://postgres@127.0.0.1:5432/postgres",
    ]);
    let unit = app_with(&t, &app, "pgx", "POSTGRESQL_DB_CONNECT_STRING");
    let db = sh(
        &t,
        &unit,
        &format!(r#"{PSQL} -c "select current_database()""#),
    );
    // Big enough (about 150 MB) that its dump takes longer than killing the controller.
    sh(
        &t,
        &unit,
        &format!(
            r#"{PSQL} -c "create table big as select i, repeat(md5(i::text), 16) as pad from generate_series(1, 300000) i; create table state(v text); insert into state values ('backed up')""#
        ),
    );
    let id = run_json(&t, &["pgx", "create-backup"])["backup-id"]
        .as_str()
        .unwrap()
        .to_string();
    sh(
        &t,
        &unit,
        &format!(r#"{PSQL} -c "update state set v = 'before the restore'""#),
    );
    let r = run_json(&t, &["pgx", "restore", &format!("backup-id={id}")]);
    t.kill_controller();
    let pre = r["pre-restore-backup-id"].as_str().unwrap().to_string();
    let admin = |sql: &str| {
        let out = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-tAc",
                sql,
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let old = format!("{db}$old");
    assert_eq!(
        admin(&format!("select 1 from pg_database where datname = '{old}'")),
        "1",
        "the replaced database is kept until its backup is made (a dump this size should outlast the kill)"
    );
    // The restored data is in place already.
    assert_eq!(
        sh(&t, &unit, &format!(r#"{PSQL} -c "select v from state""#)),
        "backed up"
    );

    // Any command starts the controller again; it makes the backup, then drops the copy.
    let finished = eventually(
        "the pre-restore backup made after the restart",
        LONG,
        || {
            let list = run_json(&t, &["pgx", "list-backups"]);
            list["backups"]
                .as_array()
                .unwrap()
                .iter()
                .any(|b| b["id"] == pre.as_str() && b["status"] == "finished")
                .then_some(list)
        },
    );
    eventually("the replaced database dropped", LONG, || {
        admin(&format!(
            "select count(*) from pg_database where datname = '{old}'"
        ))
        .eq("0")
        .then_some(())
    });
    // And it holds the data from before the restore.
    run_json(&t, &["pgx", "restore", &format!("backup-id={pre}")]);
    assert_eq!(
        sh(&t, &unit, &format!(r#"{PSQL} -c "select v from state""#)),
        "before the restore",
        "{finished}"
    );
    assert_eq!(
        sh(
            &t,
            &unit,
            &format!(r#"{PSQL} -c "select count(*) from big""#)
        ),
        "300000"
    );
    t.ok(&["remove-relation", &app, "pgx", "--destroy-data"]);
}
