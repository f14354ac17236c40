//! Redis. A managed Redis gives each integrated app a `redis-server` of its own (own port,
//! password and data directory under the service's, `apps/<app>/`; a few MiB each), where
//! the app's ACL user has the whole keyspace: Celery, RQ, Flask-Session and Django's cache
//! pick their own keys, as they do under paas-charm with redis-k8s, and no app can read
//! another's. On an adopted server the app's user also gets every key (apps sharing that
//! server can read each other's keys: `integrate` says so), unless the relation asks for
//! the `<app>:` prefix (`key-prefix`).

use std::path::Path;
use std::time::Duration;

use redis::aio::MultiplexedConnection;

use crate::util::{self, scrub};
use crate::{Kind, ManagedInfo, ProviderError, Providers, RelationData, Result, Server};

struct Admin {
    server: String,
    url: String,
    password: Option<String>,
    host: String,
    port: u16,
    user: String,
}

impl Admin {
    fn of(server: &Server) -> Result<Admin> {
        match server {
            Server::Managed { dir, port, .. } => {
                let pw =
                    util::read_admin_secret(dir).ok_or_else(|| ProviderError::Unreachable {
                        server: server.describe(),
                        reason: format!(
                            "{} is missing: the server was never started by twelve; start it first",
                            dir.join("admin.secret").display()
                        ),
                    })?;
                Ok(Admin {
                    server: server.describe(),
                    url: format!("redis://default:{pw}@127.0.0.1:{port}"),
                    password: Some(pw),
                    host: "127.0.0.1".into(),
                    port: *port,
                    user: "default".into(),
                })
            }
            Server::External { admin_url, .. } => {
                let bad = |reason: &str| ProviderError::InvalidUrl {
                    kind: "redis".into(),
                    url: util::redact_url(admin_url),
                    reason: reason.into(),
                };
                let u = url::Url::parse(admin_url).map_err(|e| bad(&e.to_string()))?;
                if u.scheme() != "redis" {
                    return Err(bad("the scheme must be redis:// (TLS is not supported)"));
                }
                let (host, port) = util::host_port(&u, 6379);
                Ok(Admin {
                    server: server.describe(),
                    url: admin_url.clone(),
                    password: u.password().map(util::percent_decode),
                    host,
                    port,
                    user: util::percent_decode(u.username()),
                })
            }
        }
    }

    fn secrets(&self) -> Vec<&str> {
        self.password.iter().map(String::as_str).collect()
    }

    async fn connect(&self) -> Result<MultiplexedConnection> {
        let unreachable = |reason: String| ProviderError::Unreachable {
            server: self.server.clone(),
            reason,
        };
        let client = redis::Client::open(self.url.as_str())
            .map_err(|e| unreachable(scrub(e, &self.secrets())))?;
        match tokio::time::timeout(
            Duration::from_secs(10),
            client.get_multiplexed_async_connection(),
        )
        .await
        {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(unreachable(scrub(e, &self.secrets()))),
            Err(_) => Err(unreachable("timed out after 10 s".into())),
        }
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        c: &mut MultiplexedConnection,
        action: &str,
        cmd: &redis::Cmd,
        extra: &[&str],
    ) -> Result<T> {
        cmd.query_async(c).await.map_err(|e| {
            let mut secrets = self.secrets();
            secrets.extend_from_slice(extra);
            ProviderError::Failed {
                server: self.server.clone(),
                action: action.into(),
                reason: scrub(e, &secrets),
            }
        })
    }

    /// Make ACL changes survive a restart: `ACL SAVE` with an aclfile, else `CONFIG
    /// REWRITE` with a config file; else they live until the server restarts.
    async fn persist(&self, c: &mut MultiplexedConnection) -> Result<()> {
        let aclfile: Vec<String> = self
            .run(
                c,
                "CONFIG GET aclfile",
                redis::cmd("CONFIG").arg("GET").arg("aclfile"),
                &[],
            )
            .await?;
        if aclfile.get(1).is_some_and(|f| !f.is_empty()) {
            return self
                .run(c, "ACL SAVE", redis::cmd("ACL").arg("SAVE"), &[])
                .await;
        }
        let info: String = self
            .run(c, "INFO server", redis::cmd("INFO").arg("server"), &[])
            .await?;
        let config_file = info
            .lines()
            .find_map(|l| l.strip_prefix("config_file:"))
            .map(str::trim)
            .unwrap_or("");
        if !config_file.is_empty() {
            return self
                .run(
                    c,
                    "CONFIG REWRITE",
                    redis::cmd("CONFIG").arg("REWRITE"),
                    &[],
                )
                .await;
        }
        tracing::warn!(
            server = %self.server,
            "Redis has neither an aclfile nor a config file: its ACL users last until it restarts"
        );
        Ok(())
    }
}

pub(crate) async fn check(server: &Server) -> Result<()> {
    let admin = Admin::of(server)?;
    let mut c = admin.connect().await?;
    let _: Vec<String> = admin
        .run(&mut c, "ACL LIST", redis::cmd("ACL").arg("LIST"), &[])
        .await
        .map_err(|e| ProviderError::NotAdmin {
            server: admin.server.clone(),
            reason: format!("{e}; give an admin URL for a user allowed to run ACL commands"),
        })?;
    Ok(())
}

/// The directory of an app's own server under a managed service's.
pub(crate) fn app_dir(dir: &Path, app: &str) -> std::path::PathBuf {
    dir.join("apps").join(app)
}

/// Marks an app's server as wanted (restarted with the service) until it is revoked.
const ACTIVE: &str = "active";

/// The port an app's own server listens on, once it has one.
pub(crate) fn recorded_port(app_dir: &Path) -> Option<u16> {
    util::read_nofollow(&app_dir.join("port"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// The port of an app's own server: the one it had, else a free one.
fn app_port(dir: &Path) -> Result<u16> {
    if let Some(p) = util::read_nofollow(&dir.join("port"))
        .ok()
        .and_then(|s| s.trim().parse::<u16>().ok())
    {
        if running_pid(dir).is_some() || util::port_free(p) {
            return Ok(p);
        }
    }
    let port = crate::ports::free_tcp_port(&[]).map_err(|e| ProviderError::io(dir, e))?;
    util::write_private(&dir.join("port"), &port.to_string())?;
    Ok(port)
}

/// Starts (or finds running) an app's own server; its port.
async fn start_app_server(p: &Providers, dir: &Path, app: &str) -> Result<u16> {
    let d = app_dir(dir, app);
    let apps = dir.join("apps");
    util::create_dir(&apps, 0o700)?;
    // The app servers run as the service's user, which must enter `apps`.
    let desc = Server::managed(Kind::Redis, dir, 0).describe();
    if let Some(u) = util::server_user(p.service_user.as_deref(), &desc)? {
        util::chown_tree(&apps, &u, Some("admin.secret"))?;
    }
    util::create_dir(&d, 0o700)?;
    let port = app_port(&d)?;
    start_one(p, &d, port).await?;
    util::write_private(&d.join(ACTIVE), "")?;
    Ok(port)
}

/// The apps whose own servers should run.
pub(crate) fn active_apps(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir.join("apps"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join(ACTIVE).is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

pub(crate) async fn provision(p: &Providers, server: &Server, app: &str) -> Result<RelationData> {
    if let Server::Managed { dir, .. } = server {
        let port = start_app_server(p, dir, app).await?;
        let own = Server::managed(Kind::Redis, app_dir(dir, app), port);
        return provision_user(&own, app, true).await;
    }
    let key_prefix = matches!(
        server,
        Server::External {
            key_prefix: true,
            ..
        }
    );
    provision_user(server, app, !key_prefix).await
}

/// Creates (or resets) the app's ACL user on `server`: every key and channel when
/// `whole`, else those prefixed `<app>:`.
async fn provision_user(server: &Server, app: &str, whole: bool) -> Result<RelationData> {
    let admin = Admin::of(server)?;
    if app == admin.user {
        return Err(ProviderError::Failed {
            server: admin.server,
            action: format!("provisioning `{app}`"),
            reason: "the app has the same name as the admin user; rename the app".into(),
        });
    }
    let pw = util::password();
    let mut c = admin.connect().await?;
    let mut cmd = redis::cmd("ACL");
    cmd.arg("SETUSER")
        .arg(app)
        .arg("reset")
        .arg("on")
        .arg(format!(">{pw}"))
        .arg(if whole {
            "~*".to_string()
        } else {
            format!("~{app}:*")
        })
        .arg(if whole {
            "&*".to_string()
        } else {
            format!("&{app}:*")
        })
        .arg("+@all")
        .arg("-@admin")
        .arg("-@dangerous");
    let () = admin
        .run(&mut c, &format!("creating ACL user {app}"), &cmd, &[&pw])
        .await?;
    admin.persist(&mut c).await?;
    let host = if server.is_managed() {
        "127.0.0.1".to_string()
    } else {
        admin.host.clone()
    };
    let endpoint = util::endpoint(&host, admin.port);
    let mut data = RelationData::new();
    data.insert("uri".into(), format!("redis://{app}:{pw}@{endpoint}"));
    Ok(data)
}

pub(crate) async fn revoke(server: &Server, app: &str, destroy_data: bool) -> Result<()> {
    if let Server::Managed { dir, .. } = server {
        // The app's own server stops (its clients are cut off); its data stays unless
        // asked, for a later integration.
        let d = app_dir(dir, app);
        let _ = std::fs::remove_file(d.join(ACTIVE));
        stop_one(&d).await;
        if destroy_data {
            std::fs::remove_dir_all(&d)
                .or_else(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => Ok(()),
                    _ => Err(e),
                })
                .map_err(|e| ProviderError::io(&d, e))?;
        }
        return Ok(());
    }
    let admin = Admin::of(server)?;
    let mut c = admin.connect().await?;
    // ACL DELUSER also closes the user's connections.
    let _: i64 = admin
        .run(
            &mut c,
            &format!("deleting ACL user {app}"),
            redis::cmd("ACL").arg("DELUSER").arg(app),
            &[],
        )
        .await?;
    admin.persist(&mut c).await?;
    // Keys are the app's to destroy only where they carry its prefix; with every key, an
    // app's keys cannot be told from others' on a shared server.
    let prefixed = matches!(
        server,
        Server::External {
            key_prefix: true,
            ..
        }
    );
    if destroy_data && prefixed {
        let dbs: Vec<String> = admin
            .run(
                &mut c,
                "CONFIG GET databases",
                redis::cmd("CONFIG").arg("GET").arg("databases"),
                &[],
            )
            .await?;
        let n: u32 = dbs.get(1).and_then(|s| s.parse().ok()).unwrap_or(16);
        for db in 0..n {
            let () = admin
                .run(&mut c, "SELECT", redis::cmd("SELECT").arg(db), &[])
                .await?;
            let mut cursor: u64 = 0;
            loop {
                let (next, keys): (u64, Vec<String>) = admin
                    .run(
                        &mut c,
                        &format!("finding the {app}:* keys"),
                        redis::cmd("SCAN")
                            .arg(cursor)
                            .arg("MATCH")
                            .arg(format!("{app}:*"))
                            .arg("COUNT")
                            .arg(1000),
                        &[],
                    )
                    .await?;
                if !keys.is_empty() {
                    let _: i64 = admin
                        .run(
                            &mut c,
                            &format!("deleting the {app}:* keys"),
                            redis::cmd("UNLINK").arg(&keys),
                            &[],
                        )
                        .await?;
                }
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        let () = admin
            .run(&mut c, "SELECT", redis::cmd("SELECT").arg(0), &[])
            .await?;
    }
    Ok(())
}

// ---- managed server ----

/// The service's server pid, when it and every wanted app server run (so that a dead app
/// server gets the service restarted).
pub(crate) fn running_pid(dir: &Path) -> Option<u32> {
    let pid = util::pid_from_file(&dir.join("redis.pid"))?;
    active_apps(dir)
        .iter()
        .all(|a| util::pid_from_file(&app_dir(dir, a).join("redis.pid")).is_some())
        .then_some(pid)
}

fn admin_url(port: u16) -> String {
    format!("redis://default@127.0.0.1:{port}")
}

/// Starts the service's server and the own servers of the apps integrated with it.
pub(crate) async fn start(p: &Providers, dir: &Path, port: u16) -> Result<ManagedInfo> {
    let info = start_one(p, dir, port).await?;
    for app in active_apps(dir) {
        start_app_server(p, dir, &app).await?;
    }
    Ok(info)
}

async fn start_one(p: &Providers, dir: &Path, port: u16) -> Result<ManagedInfo> {
    let server = Server::managed(Kind::Redis, dir, port);
    let desc = server.describe();
    let redis_server = p
        .binaries
        .find("redis-server", Kind::Redis.debian_package())?;
    if let Some(pid) = util::pid_from_file(&dir.join("redis.pid")) {
        return Ok(ManagedInfo {
            pid,
            admin_url: admin_url(port),
        });
    }
    if !util::port_free(port) {
        return Err(ProviderError::PortInUse {
            kind: "Redis".into(),
            port,
        });
    }
    util::create_dir(dir, 0o700)?;
    let pw = util::admin_secret(dir)?;
    let aclfile = dir.join("users.acl");
    if !aclfile.exists() {
        // The default (admin) user needs the password in dir/admin.secret; apps get their
        // own users. Redis rewrites this file with hashed passwords on ACL SAVE.
        util::write_private(&aclfile, &format!("user default on >{pw} ~* &* +@all\n"))?;
    }
    // The server's user owns the directory (data, ACL file, log), 0700; one an older
    // twelve made (owned by root, the server ran as root) is taken over.
    let user = util::server_user(p.service_user.as_deref(), &desc)?;
    util::hand_over(dir, user.as_ref())?;
    let log = dir.join("server.log");
    let mut cmd = util::detached(&redis_server, user.as_ref());
    cmd.arg("--port")
        .arg(port.to_string())
        .args(["--bind", "127.0.0.1", "--protected-mode", "yes"])
        .arg("--dir")
        .arg(dir)
        .args(["--daemonize", "yes"])
        .arg("--aclfile")
        .arg(&aclfile)
        .arg("--pidfile")
        .arg(dir.join("redis.pid"))
        .arg("--logfile")
        .arg(&log);
    util::run_setup(cmd, &desc, "redis-server")
        .await
        .map_err(|e| ProviderError::StartFailed {
            server: desc.clone(),
            reason: format!("{e}; last log lines: {}", util::tail(&log, 5)),
            log: log.clone(),
        })?;
    let admin = Admin::of(&server)?;
    util::wait_for(Duration::from_secs(30), || async {
        let mut c = admin.connect().await.map_err(|e| e.to_string())?;
        let _: String = admin
            .run(&mut c, "PING", &redis::cmd("PING"), &[])
            .await
            .map_err(|e| e.to_string())?;
        util::pid_from_file(&dir.join("redis.pid")).ok_or_else(|| "no pid file yet".to_string())
    })
    .await
    .map(|pid| ManagedInfo {
        pid,
        admin_url: admin_url(port),
    })
    .map_err(|reason| ProviderError::StartFailed {
        server: desc.clone(),
        reason: format!("{reason}; last log lines: {}", util::tail(&log, 5)),
        log: log.clone(),
    })
}

pub(crate) async fn stop(dir: &Path, _port: u16) -> Result<()> {
    for app in active_apps(dir) {
        stop_one(&app_dir(dir, &app)).await;
    }
    stop_one(dir).await;
    Ok(())
}

async fn stop_one(dir: &Path) {
    if let Some(pid) = util::pid_from_file(&dir.join("redis.pid")) {
        util::terminate(pid, Duration::from_secs(20)).await;
    }
}
