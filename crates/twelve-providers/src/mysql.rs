//! MySQL/MariaDB: a database and a user per app, with privileges on that database only.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};

use crate::util::{self, scrub};
use crate::{Kind, ManagedInfo, ProviderError, Providers, RelationData, Result, Server};

pub(crate) struct Admin {
    pub(crate) server: String,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) user: String,
    pub(crate) password: Option<String>,
}

impl Admin {
    pub(crate) fn of(server: &Server) -> Result<Admin> {
        match server {
            Server::Managed { dir, port, .. } => Ok(Admin {
                server: server.describe(),
                host: "127.0.0.1".into(),
                port: *port,
                user: "root".into(),
                password: Some(util::read_admin_secret(dir).ok_or_else(|| {
                    ProviderError::Unreachable {
                        server: server.describe(),
                        reason: format!(
                            "{} is missing: the server was never started by twelve; start it first",
                            dir.join("admin.secret").display()
                        ),
                    }
                })?),
            }),
            Server::External { admin_url, .. } => {
                let bad = |reason: &str| ProviderError::InvalidUrl {
                    kind: "mysql".into(),
                    url: util::redact_url(admin_url),
                    reason: reason.into(),
                };
                let u = url::Url::parse(admin_url).map_err(|e| bad(&e.to_string()))?;
                if !matches!(u.scheme(), "mysql" | "mariadb") {
                    return Err(bad("the scheme must be mysql://"));
                }
                let (host, port) = util::host_port(&u, 3306);
                Ok(Admin {
                    server: server.describe(),
                    host,
                    port,
                    user: if u.username().is_empty() {
                        "root".into()
                    } else {
                        util::percent_decode(u.username())
                    },
                    password: u.password().map(util::percent_decode),
                })
            }
        }
    }

    pub(crate) fn secrets(&self) -> Vec<&str> {
        self.password.iter().map(String::as_str).collect()
    }

    async fn connect_with(&self, password: Option<&str>) -> Result<Conn> {
        let opts = OptsBuilder::default()
            .ip_or_hostname(self.host.clone())
            .tcp_port(self.port)
            .user(Some(self.user.clone()))
            .pass(password.map(str::to_string))
            .prefer_socket(false);
        let mut secrets = self.secrets();
        secrets.extend(password);
        match tokio::time::timeout(Duration::from_secs(10), Conn::new(opts)).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(ProviderError::Unreachable {
                server: self.server.clone(),
                reason: scrub(e, &secrets),
            }),
            Err(_) => Err(ProviderError::Unreachable {
                server: self.server.clone(),
                reason: "timed out after 10 s".into(),
            }),
        }
    }

    pub(crate) async fn connect(&self) -> Result<Conn> {
        self.connect_with(self.password.as_deref()).await
    }

    async fn exec(&self, c: &mut Conn, action: &str, sql: &str, extra: &[&str]) -> Result<()> {
        c.query_drop(sql).await.map_err(|e| {
            let mut secrets = self.secrets();
            secrets.extend_from_slice(extra);
            ProviderError::Failed {
                server: self.server.clone(),
                action: action.into(),
                reason: scrub(e, &secrets),
            }
        })
    }
}

/// The database name as a GRANT pattern: `_` and `%` are wildcards there.
fn grant_pattern(db: &str) -> String {
    db.replace('_', "\\_").replace('%', "\\%")
}

const HOSTS: [&str; 2] = ["%", "localhost"];

pub(crate) async fn check(server: &Server) -> Result<()> {
    let admin = Admin::of(server)?;
    let mut c = admin.connect().await?;
    let grants: Vec<String> = c
        .query("SHOW GRANTS")
        .await
        .map_err(|e| ProviderError::Failed {
            server: admin.server.clone(),
            action: "SHOW GRANTS".into(),
            reason: scrub(e, &admin.secrets()),
        })?;
    let _ = c.disconnect().await;
    let admin_like = grants.iter().any(|g| {
        let g = g.to_uppercase();
        g.contains("ON *.*") && g.contains("WITH GRANT OPTION")
    });
    if !admin_like {
        return Err(ProviderError::NotAdmin {
            server: admin.server,
            reason: format!(
                "user `{}` cannot grant privileges on *.*; give an admin URL for root",
                admin.user
            ),
        });
    }
    Ok(())
}

pub(crate) async fn provision(server: &Server, app: &str) -> Result<RelationData> {
    let admin = Admin::of(server)?;
    let name = util::sql_name(app);
    if name == admin.user {
        return Err(ProviderError::Failed {
            server: admin.server,
            action: format!("provisioning `{app}`"),
            reason: "the app has the same name as the admin user; rename the app".into(),
        });
    }
    let pw = util::password();
    let mut c = admin.connect().await?;
    let res = async {
        admin
            .exec(
                &mut c,
                &format!("creating database {name}"),
                &format!("CREATE DATABASE IF NOT EXISTS `{name}`"),
                &[],
            )
            .await?;
        for host in HOSTS {
            let action = format!("creating user '{name}'@'{host}'");
            admin
                .exec(
                    &mut c,
                    &action,
                    &format!("CREATE USER IF NOT EXISTS '{name}'@'{host}' IDENTIFIED BY '{pw}'"),
                    &[&pw],
                )
                .await?;
            admin
                .exec(
                    &mut c,
                    &action,
                    &format!("ALTER USER '{name}'@'{host}' IDENTIFIED BY '{pw}' ACCOUNT UNLOCK"),
                    &[&pw],
                )
                .await?;
            admin
                .exec(
                    &mut c,
                    &format!("granting '{name}'@'{host}' access to database {name}"),
                    &format!(
                        "GRANT ALL PRIVILEGES ON `{}`.* TO '{name}'@'{host}'",
                        grant_pattern(&name)
                    ),
                    &[],
                )
                .await?;
        }
        Ok::<(), ProviderError>(())
    }
    .await;
    let _ = c.disconnect().await;
    res?;

    let host = if server.is_managed() {
        "127.0.0.1".to_string()
    } else {
        admin.host.clone()
    };
    let endpoint = util::endpoint(&host, admin.port);
    let mut data = RelationData::new();
    data.insert(
        "uri".into(),
        format!("mysql://{name}:{pw}@{endpoint}/{name}"),
    );
    data.insert("username".into(), name.clone());
    data.insert("password".into(), pw);
    data.insert("endpoints".into(), endpoint);
    data.insert("database".into(), name);
    Ok(data)
}

pub(crate) async fn revoke(server: &Server, app: &str, destroy_data: bool) -> Result<()> {
    let admin = Admin::of(server)?;
    let name = util::sql_name(app);
    let mut c = admin.connect().await?;
    let res = async {
        let users = HOSTS
            .iter()
            .map(|h| format!("'{name}'@'{h}'"))
            .collect::<Vec<_>>()
            .join(", ");
        // No new sessions, then end the current ones, then drop the accounts.
        admin
            .exec(
                &mut c,
                &format!("locking user {name}"),
                &format!("ALTER USER IF EXISTS {users} ACCOUNT LOCK"),
                &[],
            )
            .await?;
        let ids: Vec<u64> = c
            .exec(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = ?",
                (name.clone(),),
            )
            .await
            .map_err(|e| ProviderError::Failed {
                server: admin.server.clone(),
                action: format!("listing the sessions of {name}"),
                reason: scrub(e, &admin.secrets()),
            })?;
        for id in ids {
            // A session may end by itself meanwhile.
            let _ = c.query_drop(format!("KILL CONNECTION {id}")).await;
        }
        admin
            .exec(
                &mut c,
                &format!("dropping user {name}"),
                &format!("DROP USER IF EXISTS {users}"),
                &[],
            )
            .await?;
        if destroy_data {
            admin
                .exec(
                    &mut c,
                    &format!("dropping database {name}"),
                    &format!("DROP DATABASE IF EXISTS `{name}`"),
                    &[],
                )
                .await?;
        }
        Ok::<(), ProviderError>(())
    }
    .await;
    let _ = c.disconnect().await;
    res
}

// ---- managed server ----

pub(crate) fn running_pid(dir: &Path) -> Option<u32> {
    util::pid_from_file(&dir.join("mariadb.pid"))
}

fn admin_url(port: u16) -> String {
    format!("mysql://root@127.0.0.1:{port}/")
}

pub(crate) async fn start(p: &Providers, dir: &Path, port: u16) -> Result<ManagedInfo> {
    let server = Server::managed(Kind::Mysql, dir, port);
    let desc = server.describe();
    let pkg = Kind::Mysql.debian_package();
    let mariadbd = p
        .binaries
        .find("mariadbd", pkg)
        .or_else(|_| p.binaries.find("mysqld", pkg))?;
    let install = p
        .binaries
        .find("mariadb-install-db", pkg)
        .or_else(|_| p.binaries.find("mysql_install_db", pkg))?;
    if let Some(pid) = running_pid(dir) {
        return Ok(ManagedInfo {
            pid,
            admin_url: admin_url(port),
        });
    }
    if !util::port_free(port) {
        return Err(ProviderError::PortInUse {
            kind: "MySQL".into(),
            port,
        });
    }
    util::create_dir(dir, 0o700)?;
    let user = util::server_user(p.service_user.as_deref(), &desc)?;
    let data = dir.join("data");
    let log = dir.join("server.log");
    let pw = util::admin_secret(dir)?;
    // mariadbd writes its log itself (--log-error) as the server's user.
    util::open_log(&log)?;
    // The server's user owns the directory, 0700; one an older twelve made (owned by
    // root, the server ran with --user=root) is taken over.
    util::hand_over(dir, user.as_ref())?;
    if !data.join("mysql").exists() {
        if data.exists() {
            std::fs::remove_dir_all(&data).map_err(|e| ProviderError::io(&data, e))?;
        }
        let mut cmd = util::detached(&install, user.as_ref());
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg("--auth-root-authentication-method=normal")
            .arg("--skip-test-db");
        util::run_setup(cmd, &desc, "mariadb-install-db").await?;
    }

    let mut cmd = util::detached(&mariadbd, user.as_ref());
    cmd.arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--port={port}"))
        .arg("--bind-address=127.0.0.1")
        .arg(format!("--socket={}", dir.join("mysqld.sock").display()))
        .arg(format!("--pid-file={}", dir.join("mariadb.pid").display()))
        .arg(format!("--log-error={}", log.display()));
    util::log_to(&mut cmd, &log)?;
    let mut child = cmd.spawn().map_err(|e| ProviderError::StartFailed {
        server: desc.clone(),
        reason: e.to_string(),
        log: log.clone(),
    })?;
    let exited: Arc<Mutex<Option<String>>> = Arc::default();
    let exited2 = exited.clone();
    tokio::spawn(async move {
        if let Ok(status) = child.wait().await {
            *exited2.lock().unwrap() = Some(status.to_string());
        }
    });

    let admin = Admin::of(&server)?;
    util::wait_for(Duration::from_secs(30), || async {
        if let Some(status) = exited.lock().unwrap().clone() {
            return Ok(Err(format!(
                "mariadbd exited ({status}); last log lines: {}",
                util::tail(&log, 5)
            )));
        }
        match admin.connect().await {
            Ok(c) => {
                let _ = c.disconnect().await;
                Ok(Ok(()))
            }
            Err(e) => match admin.connect_with(None).await {
                // First start: root has no password yet.
                Ok(c) => Ok(bootstrap(&admin, c, &pw).await.map_err(|e| e.to_string())),
                Err(_) => Err(e.to_string()),
            },
        }
    })
    .await
    .and_then(|r| r)
    .map_err(|reason| ProviderError::StartFailed {
        server: desc.clone(),
        reason,
        log: log.clone(),
    })?;
    let pid = util::wait_for(Duration::from_secs(5), || async {
        running_pid(dir).ok_or_else(String::new)
    })
    .await
    .map_err(|_| ProviderError::StartFailed {
        server: desc.clone(),
        reason: "no pid file after start".into(),
        log: log.clone(),
    })?;
    Ok(ManagedInfo {
        pid,
        admin_url: admin_url(port),
    })
}

/// Give every root account the admin password and drop anonymous accounts.
async fn bootstrap(admin: &Admin, mut c: Conn, pw: &str) -> Result<()> {
    let res = async {
        let rows: Vec<(String, String)> = c
            .query("SELECT User, Host FROM mysql.user WHERE User IN ('root', '')")
            .await
            .map_err(|e| ProviderError::Failed {
                server: admin.server.clone(),
                action: "listing accounts".into(),
                reason: e.to_string(),
            })?;
        for (user, host) in rows {
            let host = host.replace('\'', "''");
            let sql = if user == "root" {
                format!("ALTER USER 'root'@'{host}' IDENTIFIED BY '{pw}'")
            } else {
                format!("DROP USER ''@'{host}'")
            };
            admin.exec(&mut c, "securing root", &sql, &[pw]).await?;
        }
        Ok::<(), ProviderError>(())
    }
    .await;
    let _ = c.disconnect().await;
    res
}

pub(crate) async fn stop(dir: &Path, _port: u16) -> Result<()> {
    if let Some(pid) = running_pid(dir) {
        util::terminate(pid, Duration::from_secs(30)).await;
    }
    Ok(())
}
