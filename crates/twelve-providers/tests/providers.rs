//! Against the real servers of this machine: PostgreSQL on 5432, MariaDB on 3306, Redis on
//! 6379, RabbitMQ on 5672; plus managed servers started by twelve under temp dirs.

mod common;

use common::*;
use twelve_providers::{Binaries, Kind, ProviderError, Providers, Server};

const PG_ADMIN: &str = "postgresql://postgres@127.0.0.1:5432/postgres";
const MYSQL_ADMIN: &str = "mysql://root@127.0.0.1:3306/";
const REDIS_ADMIN: &str = "redis://127.0.0.1:6379";
const AMQP_ADMIN: &str = "amqp://guest:guest@127.0.0.1:5672/";

/// Provision A and B; A writes and reads its data; A cannot reach B's; re-provisioning
/// resets A's password and keeps its data; revoking locks A out and keeps its data unless
/// destroy_data.
async fn scenario(server: &Server, passwords_enforced: bool) {
    let kind = server.kind();
    let p = Providers::new();
    p.check(server).await.expect("check");
    let s = suffix();
    let (a, b) = (format!("t-a-{s}"), format!("t-b-{s}"));
    let _cleanup = Cleanup {
        server: server.clone(),
        apps: vec![a.clone(), b.clone()],
    };

    let da = p.provision(server, &a).await.expect("provision A");
    let db = p.provision(server, &b).await.expect("provision B");
    let pw = &password(&da);
    assert!(pw.len() >= 24 && pw.chars().all(|c| c.is_ascii_alphanumeric()));
    assert!(uri(&da).contains("127.0.0.1"), "{}", uri(&da));
    let name = twelve_providers::account_name(kind, &a);
    assert!(uri(&da).ends_with(&format!("/{name}")) || kind == Kind::Redis);
    assert!(uri(&da).starts_with(&format!("{}://{name}:{pw}@", scheme(kind))));

    // A writes and reads its own data; so does B.
    write(kind, &a, uri(&da), "from-a").await.expect("A writes");
    assert_eq!(
        read(kind, &a, uri(&da)).await.unwrap().as_deref(),
        Some("from-a")
    );
    write(kind, &b, uri(&db), "from-b").await.expect("B writes");

    // A cannot reach B's data. On a managed Redis each app has a server of its own: B's
    // keys are simply not on A's (and A's user is unknown on B's).
    let own_servers = kind == Kind::Redis && server.is_managed();
    if own_servers {
        assert_eq!(read(kind, &b, uri(&da)).await.unwrap(), None);
        assert_ne!(
            uri(&da).rsplit(':').next(),
            uri(&db).rsplit(':').next(),
            "two servers, two ports"
        );
        let err = login(kind, &uri(&db).replace(&username(&db), &a))
            .await
            .expect_err("A's user on B's server");
        assert!(
            err.contains("WRONGPASS") || err.contains("AuthenticationFailed"),
            "{err}"
        );
    }
    let denied = match kind {
        Kind::Redis if own_servers => Err("NOPERM (own servers)".to_string()),
        Kind::Postgresql => login(kind, &retarget(&da, &sql(&b))).await.map(|_| None),
        Kind::Rabbitmq => login(kind, &retarget(&da, &b)).await.map(|_| None),
        Kind::Mysql | Kind::Redis => read(kind, &b, uri(&da)).await,
    };
    let err = denied.expect_err("A must not reach B's data");
    let expected = match kind {
        Kind::Postgresql => "permission denied for database",
        Kind::Mysql => "denied",
        Kind::Redis => "NOPERM",
        Kind::Rabbitmq => "access to vhost",
    };
    assert!(
        err.to_lowercase().contains(&expected.to_lowercase()),
        "{kind}: {err}"
    );
    if kind == Kind::Postgresql && server.is_managed() {
        // On a server twelve runs, the databases open to every role by default are not.
        for other in ["postgres", "template1"] {
            let err = login(kind, &retarget(&da, other))
                .await
                .err()
                .unwrap_or_else(|| panic!("A connected to {other}"));
            assert!(
                err.contains("permission denied for database"),
                "{other}: {err}"
            );
        }
    }
    if kind == Kind::Mysql {
        // A sees its own database only.
        let mut dbs = mysql_databases(uri(&da))
            .await
            .expect("SHOW DATABASES as A");
        dbs.sort();
        assert_eq!(dbs, ["information_schema".to_string(), name.clone()]);
    }
    if kind == Kind::Redis {
        let mut c = redis::Client::open(uri(&da))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let set = redis::cmd("SET")
            .arg("unprefixed")
            .arg(1)
            .query_async::<()>(&mut c)
            .await;
        if own_servers {
            // Its own server, its whole keyspace.
            set.expect("any key on the app's own server");
        } else {
            // `key_prefix`: keys outside the app's prefix are off limits too.
            let e = set.unwrap_err();
            assert!(e.to_string().to_lowercase().contains("noperm"), "{e}");
        }
        let e = redis::cmd("FLUSHALL")
            .query_async::<()>(&mut c)
            .await
            .unwrap_err();
        assert!(e.to_string().to_lowercase().contains("noperm"), "{e}");
    }

    // Re-provisioning: same names, new password, data kept.
    let da2 = p.provision(server, &a).await.expect("re-provision A");
    assert_eq!(username(&da2), username(&da));
    assert_ne!(password(&da2), password(&da));
    if passwords_enforced {
        assert!(
            login(kind, uri(&da)).await.is_err(),
            "old password still works"
        );
    }
    assert_eq!(
        read(kind, &a, uri(&da2)).await.unwrap().as_deref(),
        Some("from-a")
    );

    // Revoke keeping data: A is locked out; the data is there for the next integration.
    p.revoke(server, &a, false).await.expect("revoke A");
    p.revoke(server, &a, false)
        .await
        .expect("revoke is idempotent");
    let err = login(kind, uri(&da2)).await.expect_err("A still logs in");
    assert!(!err.is_empty());
    let da3 = p.provision(server, &a).await.expect("provision A again");
    assert_eq!(
        read(kind, &a, uri(&da3)).await.unwrap().as_deref(),
        Some("from-a")
    );
    write(kind, &a, uri(&da3), "again")
        .await
        .expect("A writes again");

    // Revoke destroying data.
    p.revoke(server, &a, true)
        .await
        .expect("revoke A with data");
    assert!(login(kind, uri(&da3)).await.is_err());
    let da4 = p.provision(server, &a).await.expect("provision A afresh");
    assert_eq!(read(kind, &a, uri(&da4)).await.unwrap(), None);

    // B was never affected.
    assert_eq!(
        read(kind, &b, uri(&db)).await.unwrap().as_deref(),
        Some("from-b")
    );
}

/// Provision A and B, A writes and reads, A cannot reach B, revoke locks A out.
async fn light_scenario(server: &Server) {
    let kind = server.kind();
    let p = Providers::new();
    p.check(server).await.expect("check");
    let s = suffix();
    let (a, b) = (format!("t-a-{s}"), format!("t-b-{s}"));
    let _cleanup = Cleanup {
        server: server.clone(),
        apps: vec![a.clone(), b.clone()],
    };
    let (da, db) = tokio::join!(p.provision(server, &a), p.provision(server, &b));
    let (da, _db) = (da.expect("provision A"), db.expect("provision B"));
    write(kind, &a, uri(&da), "from-a").await.expect("A writes");
    assert_eq!(
        read(kind, &a, uri(&da)).await.unwrap().as_deref(),
        Some("from-a")
    );
    let err = login(kind, &retarget(&da, &b)).await.unwrap_err();
    assert!(err.contains("access to vhost"), "{err}");
    p.revoke(server, &a, true).await.expect("revoke A");
    assert!(login(kind, uri(&da)).await.is_err());
}

fn password(d: &twelve_providers::RelationData) -> String {
    let u = url::Url::parse(uri(d)).unwrap();
    let pw = u.password().unwrap().to_string();
    if let Some(p) = d.get("password") {
        assert_eq!(p, &pw);
    }
    pw
}

fn username(d: &twelve_providers::RelationData) -> String {
    url::Url::parse(uri(d)).unwrap().username().to_string()
}

fn scheme(kind: Kind) -> &'static str {
    match kind {
        Kind::Postgresql => "postgresql",
        Kind::Mysql => "mysql",
        Kind::Redis => "redis",
        Kind::Rabbitmq => "amqp",
    }
}

#[tokio::test]
async fn postgresql_external() {
    // Trust auth on this server: isolation is by privileges, not passwords.
    scenario(&Server::external(Kind::Postgresql, PG_ADMIN), false).await;
}

#[tokio::test]
async fn mysql_external() {
    scenario(&Server::external(Kind::Mysql, MYSQL_ADMIN), true).await;
}

#[tokio::test]
async fn redis_external() {
    let server = match Server::external(Kind::Redis, REDIS_ADMIN) {
        Server::External {
            kind,
            admin_url,
            management_url,
            ..
        } => Server::External {
            kind,
            admin_url,
            management_url,
            key_prefix: true,
        },
        s => s,
    };
    scenario(&server, true).await;
}

/// Without `key_prefix`, an app's user on an adopted Redis has every key (as under
/// paas-charm); revoking it keeps the keys, which cannot be told apart.
#[tokio::test]
async fn redis_external_gives_every_key_by_default() {
    let server = Server::external(Kind::Redis, REDIS_ADMIN);
    let p = Providers::new();
    let a = format!("t-w-{}", suffix());
    let _cleanup = Cleanup {
        server: server.clone(),
        apps: vec![a.clone()],
    };
    let da = p.provision(&server, &a).await.expect("provision");
    let mut c = redis::Client::open(uri(&da))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let key = format!("celery-{a}");
    redis::cmd("SET")
        .arg(&key)
        .arg(1)
        .query_async::<()>(&mut c)
        .await
        .expect("any key");
    p.revoke(&server, &a, true).await.expect("revoke");
    let mut admin = redis::Client::open(REDIS_ADMIN)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let left: Option<String> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(left.as_deref(), Some("1"));
    let _: i64 = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut admin)
        .await
        .unwrap();
}

#[tokio::test]
async fn rabbitmq_external() {
    scenario(&Server::external(Kind::Rabbitmq, AMQP_ADMIN), true).await;
}

async fn managed(kind: Kind) {
    let t0 = std::time::Instant::now();
    let m = Managed::start(kind).await;
    eprintln!("{kind}: started in {:?}", t0.elapsed());
    let p = Providers::new();
    assert!(p.is_running(&m.server).await);
    let Server::Managed { dir, port, .. } = &m.server else {
        unreachable!()
    };
    // Idempotent start; the admin secret is private.
    let info = p
        .start_managed(kind, dir, *port)
        .await
        .expect("start again");
    assert!(!info
        .admin_url
        .contains(&std::fs::read_to_string(dir.join("admin.secret")).unwrap()));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("admin.secret"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "admin.secret is {mode:o}");
    assert!(dir.join("server.log").exists());
    // Listens on loopback only.
    let listening = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let hex_port = format!(":{:04X}", port);
    for line in listening
        .lines()
        .filter(|l| l.contains(&hex_port) && l.contains(" 0A "))
    {
        assert!(
            line.split_whitespace()
                .nth(1)
                .unwrap()
                .starts_with("0100007F"),
            "{line}"
        );
    }

    if kind == Kind::Rabbitmq {
        // Every rabbitmqctl call takes about a second and the broker ~10 s to boot: the
        // full scenario runs against the external broker (same code path, without `-n`).
        light_scenario(&m.server).await;
        return;
    }
    scenario(&m.server, true).await;
    eprintln!("{kind}: scenario done at {:?}", t0.elapsed());

    // Stop, then start again: the accounts survive.
    let s = suffix();
    let app = format!("t-keep-{s}");
    let _cleanup = Cleanup {
        server: m.server.clone(),
        apps: vec![app.clone()],
    };
    let d = p.provision(&m.server, &app).await.unwrap();
    write(kind, &app, uri(&d), "kept").await.unwrap();
    p.stop_managed(&m.server).await.unwrap();
    eprintln!("{kind}: stopped at {:?}", t0.elapsed());
    assert!(!p.is_running(&m.server).await);
    let err = p.check(&m.server).await.unwrap_err();
    assert!(err.to_string().starts_with("cannot reach server"), "{err}");
    // As an older twelve left it: everything root's (PostgreSQL's `postgres`'s), the
    // directory open; and a link planted by the server's user towards a file of root's.
    let outside = tempfile::NamedTempFile::new().unwrap();
    let root = nix::unistd::geteuid().is_root();
    if root {
        let owner = if kind == Kind::Postgresql {
            "postgres:postgres"
        } else {
            "root:root"
        };
        let ok = std::process::Command::new("chown")
            .args(["-R", owner])
            .arg(dir)
            .status()
            .unwrap()
            .success();
        assert!(ok);
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.join("planted")).unwrap();
    }
    let info = p.start_managed(kind, dir, *port).await.expect("restart");
    eprintln!("{kind}: restarted at {:?}", t0.elapsed());
    {
        use std::os::unix::fs::MetadataExt;
        let status = std::fs::read_to_string(format!("/proc/{}/status", info.pid)).unwrap();
        let uid: u32 = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap()
            .parse()
            .unwrap();
        let meta = std::fs::metadata(dir).unwrap();
        assert_eq!(
            meta.mode() & 0o777,
            0o700,
            "{kind}: the directory is private"
        );
        assert_eq!(
            meta.uid(),
            uid,
            "{kind}: the server's user owns its directory"
        );
        assert_eq!(
            std::fs::metadata(dir.join("admin.secret")).unwrap().uid(),
            nix::unistd::geteuid().as_raw()
        );
        if root {
            // Never root, never the machine's postgres: `nobody` without a service user.
            let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
            assert_eq!(uid, nobody.uid.as_raw(), "{kind} runs as uid {uid}");
            // The link was taken over itself, not followed.
            assert_eq!(std::fs::metadata(outside.path()).unwrap().uid(), 0);
            assert_eq!(
                std::fs::symlink_metadata(dir.join("planted"))
                    .unwrap()
                    .uid(),
                uid
            );
        }
    }
    assert_eq!(
        read(kind, &app, uri(&d)).await.unwrap().as_deref(),
        Some("kept")
    );
}

#[tokio::test]
async fn postgresql_managed() {
    managed(Kind::Postgresql).await;
}

#[tokio::test]
async fn mysql_managed() {
    managed(Kind::Mysql).await;
}

#[tokio::test]
async fn redis_managed() {
    managed(Kind::Redis).await;
}

#[tokio::test]
async fn rabbitmq_managed() {
    managed(Kind::Rabbitmq).await;
}

#[tokio::test]
async fn missing_binaries_name_the_debian_package() {
    let empty = tempfile::tempdir().unwrap();
    let p = Providers::with_binaries(Binaries::in_dirs([empty.path()]));
    for kind in Kind::ALL {
        let dir = empty.path().join(kind.name());
        let err = p.start_managed(kind, &dir, free_port()).await.unwrap_err();
        let ProviderError::MissingBinary { package, .. } = &err else {
            panic!("{kind}: {err:?}");
        };
        assert_eq!(package, kind.debian_package());
        let msg = err.to_string();
        assert!(msg.contains(&format!("apt-get install {package}")), "{msg}");
        assert!(msg.contains(&empty.path().display().to_string()), "{msg}");
        assert!(
            !dir.exists(),
            "nothing is created before the binaries are found"
        );
    }
    // Local RabbitMQ brokers are administered with rabbitmqctl.
    let err = p
        .provision(&Server::external(Kind::Rabbitmq, AMQP_ADMIN), "web")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("apt-get install rabbitmq-server"),
        "{err}"
    );
}

#[tokio::test]
async fn port_in_use_is_refused() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let tmp = tempfile::tempdir().unwrap();
    let err = Providers::new()
        .start_managed(Kind::Redis, &tmp.path().join("r"), port)
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::PortInUse { .. }), "{err:?}");
    assert!(err.to_string().contains(&port.to_string()));
}

#[tokio::test]
async fn errors_never_show_passwords() {
    let p = Providers::new();
    let port = free_port(); // nothing listens there
    for (kind, url) in [
        (
            Kind::Postgresql,
            format!("postgresql://postgres:Sekr1tPw@127.0.0.1:{port}/postgres"),
        ),
        (
            Kind::Mysql,
            format!("mysql://root:Sekr1tPw@127.0.0.1:{port}/"),
        ),
        (
            Kind::Redis,
            format!("redis://default:Sekr1tPw@127.0.0.1:{port}"),
        ),
        (
            Kind::Rabbitmq,
            format!("amqp://guest:Sekr1tPw@127.0.0.1:{port}/"),
        ),
    ] {
        let server = Server::external(kind, url);
        let err = p.check(&server).await.unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("cannot reach server"), "{msg}");
        assert!(!msg.contains("Sekr1tPw"), "{msg}");
        assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
    }
    // Wrong admin password on a real server.
    let server = Server::external(Kind::Rabbitmq, "amqp://guest:Sekr1tPw@127.0.0.1:5672/");
    let msg = p.check(&server).await.unwrap_err().to_string();
    assert!(
        msg.contains("login refused") && !msg.contains("Sekr1tPw"),
        "{msg}"
    );
}

#[tokio::test]
async fn bad_names_are_refused() {
    let p = Providers::new();
    let server = Server::external(Kind::Postgresql, PG_ADMIN);
    for bad in ["Web", "a'b", "1web", "a;b"] {
        let err = p.provision(&server, bad).await.unwrap_err();
        assert!(
            matches!(err, ProviderError::InvalidAppName { .. }),
            "{err:?}"
        );
    }
    for (kind, url, name) in [
        (Kind::Postgresql, PG_ADMIN, "postgres"),
        (Kind::Postgresql, PG_ADMIN, "template1"),
        (Kind::Mysql, MYSQL_ADMIN, "mysql"),
        (Kind::Redis, REDIS_ADMIN, "default"),
        (Kind::Rabbitmq, AMQP_ADMIN, "guest"),
    ] {
        let err = p
            .provision(&Server::external(kind, url), name)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("rename the app"), "{err}");
    }
}

#[test]
fn servers_round_trip_through_json() {
    let s = Server::managed(Kind::Postgresql, "/var/lib/twelve/pg", 5433);
    let j = serde_json::to_string(&s).unwrap();
    assert_eq!(
        j,
        r#"{"mode":"managed","kind":"postgresql","dir":"/var/lib/twelve/pg","port":5433}"#
    );
    assert_eq!(serde_json::from_str::<Server>(&j).unwrap(), s);
    let e = Server::external(Kind::Redis, "redis://:pw@127.0.0.1:6379");
    let j = serde_json::to_string(&e).unwrap();
    assert_eq!(serde_json::from_str::<Server>(&j).unwrap(), e);
    assert_eq!(
        e.describe(),
        "Redis at redis://:***@127.0.0.1:6379 (external)"
    );
}
