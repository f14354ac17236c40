//! PostgreSQL: a role and a database per app, the role owning its database.

use std::path::Path;
use std::time::Duration;

use postgres_protocol::escape::{escape_identifier as ident, escape_literal as literal};
use tokio_postgres::{Client, Config, NoTls};

use crate::util::{self, scrub};
use crate::{Kind, ManagedInfo, ProviderError, Providers, RelationData, Result, Server};

const ADMIN_USER: &str = "postgres";

/// How to reach a server as its admin.
pub(crate) struct Admin {
    pub(crate) server: String,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) user: String,
    pub(crate) password: Option<String>,
    pub(crate) dbname: String,
}

impl Admin {
    pub(crate) fn of(server: &Server) -> Result<Admin> {
        match server {
            Server::Managed { dir, port, .. } => Ok(Admin {
                server: server.describe(),
                host: "127.0.0.1".into(),
                port: *port,
                user: ADMIN_USER.into(),
                password: Some(util::read_admin_secret(dir).ok_or_else(|| {
                    ProviderError::Unreachable {
                        server: server.describe(),
                        reason: format!(
                            "{} is missing: the server was never started by twelve; start it first",
                            dir.join("admin.secret").display()
                        ),
                    }
                })?),
                dbname: "postgres".into(),
            }),
            Server::External { admin_url, .. } => {
                let bad = |reason: &str| ProviderError::InvalidUrl {
                    kind: "postgresql".into(),
                    url: util::redact_url(admin_url),
                    reason: reason.into(),
                };
                let u = url::Url::parse(admin_url).map_err(|e| bad(&e.to_string()))?;
                if !matches!(u.scheme(), "postgresql" | "postgres") {
                    return Err(bad("the scheme must be postgresql://"));
                }
                let (host, port) = util::host_port(&u, 5432);
                let dbname = u.path().trim_start_matches('/');
                Ok(Admin {
                    server: server.describe(),
                    host,
                    port,
                    user: if u.username().is_empty() {
                        ADMIN_USER.into()
                    } else {
                        util::percent_decode(u.username())
                    },
                    password: u.password().map(util::percent_decode),
                    dbname: if dbname.is_empty() {
                        "postgres".into()
                    } else {
                        util::percent_decode(dbname)
                    },
                })
            }
        }
    }

    pub(crate) fn secrets(&self) -> Vec<&str> {
        self.password.iter().map(String::as_str).collect()
    }

    pub(crate) async fn connect_db(&self, db: &str) -> Result<Client> {
        let mut cfg = Config::new();
        cfg.host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(db)
            .application_name("twelve")
            .connect_timeout(Duration::from_secs(5));
        if let Some(pw) = &self.password {
            cfg.password(pw);
        }
        let (client, conn) = cfg
            .connect(NoTls)
            .await
            .map_err(|e| ProviderError::Unreachable {
                server: self.server.clone(),
                reason: scrub(pg_err(&e), &self.secrets()),
            })?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    pub(crate) async fn connect(&self) -> Result<Client> {
        self.connect_db(&self.dbname).await
    }

    fn failed(&self, action: &str, e: &tokio_postgres::Error, extra: &[&str]) -> ProviderError {
        let mut secrets = self.secrets();
        secrets.extend_from_slice(extra);
        ProviderError::Failed {
            server: self.server.clone(),
            action: action.into(),
            reason: scrub(pg_err(e), &secrets),
        }
    }
}

fn pg_err(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}: {}", db.severity(), db.message());
    }
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

async fn exec(admin: &Admin, c: &Client, action: &str, sql: &str) -> Result<()> {
    c.batch_execute(sql)
        .await
        .map_err(|e| admin.failed(action, &e, &[]))
}

async fn exists(admin: &Admin, c: &Client, sql: &str, name: &str) -> Result<bool> {
    c.query_opt(sql, &[&name])
        .await
        .map(|r| r.is_some())
        .map_err(|e| admin.failed("lookup", &e, &[]))
}

const ROLE_EXISTS: &str = "SELECT 1 FROM pg_roles WHERE rolname = $1";
const DB_EXISTS: &str = "SELECT 1 FROM pg_database WHERE datname = $1";

/// Role that owns a kept database while its app has no integration.
fn kept_role(name: &str) -> String {
    format!("{name}$kept")
}

pub(crate) async fn check(server: &Server) -> Result<()> {
    let admin = Admin::of(server)?;
    let c = admin.connect().await?;
    let row = c
        .query_one(
            "SELECT rolsuper, rolcreaterole AND rolcreatedb FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .map_err(|e| admin.failed("checking the admin role", &e, &[]))?;
    let (sup, create): (bool, bool) = (row.get(0), row.get(1));
    if !sup && !create {
        return Err(ProviderError::NotAdmin {
            server: admin.server,
            reason: format!(
                "role `{}` is neither a superuser nor allowed to create roles and databases; \
                 give an admin URL for a superuser such as postgres",
                admin.user
            ),
        });
    }
    Ok(())
}

pub(crate) async fn provision(server: &Server, app: &str) -> Result<RelationData> {
    let admin = Admin::of(server)?;
    let name = util::sql_name(app);
    let pw = util::password();
    let verifier = postgres_protocol::password::scram_sha_256(pw.as_bytes());
    let c = admin.connect().await?;
    let (q, v) = (ident(&name), literal(&verifier));

    let clash = c
        .query_opt(
            "SELECT 1 FROM pg_roles WHERE rolname = $1 AND (rolsuper OR rolname = current_user)",
            &[&name],
        )
        .await
        .map_err(|e| admin.failed("lookup", &e, &[]))?;
    if clash.is_some() {
        return Err(ProviderError::Failed {
            server: admin.server.clone(),
            action: format!("provisioning `{app}`"),
            reason: format!("role `{name}` is a superuser or the admin role; rename the app"),
        });
    }
    let attrs = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS";
    let sql = if exists(&admin, &c, ROLE_EXISTS, &name).await? {
        format!("ALTER ROLE {q} WITH {attrs} PASSWORD {v}")
    } else {
        format!("CREATE ROLE {q} WITH {attrs} PASSWORD {v}")
    };
    c.batch_execute(&sql)
        .await
        .map_err(|e| admin.failed(&format!("creating role {name}"), &e, &[&pw, &verifier]))?;

    if exists(&admin, &c, DB_EXISTS, &name).await? {
        exec(
            &admin,
            &c,
            &format!("giving database {name} to role {name}"),
            &format!("ALTER DATABASE {q} OWNER TO {q}"),
        )
        .await?;
        let kept = kept_role(&name);
        if exists(&admin, &c, ROLE_EXISTS, &kept).await? {
            let k = ident(&kept);
            let db = admin.connect_db(&name).await?;
            exec(
                &admin,
                &db,
                &format!("giving the kept data of database {name} back to role {name}"),
                &format!("REASSIGN OWNED BY {k} TO {q}; DROP OWNED BY {k}"),
            )
            .await?;
            drop(db);
            exec(
                &admin,
                &c,
                "dropping the kept-data role",
                &format!("DROP OWNED BY {k}; DROP ROLE {k}"),
            )
            .await?;
        }
    } else {
        exec(
            &admin,
            &c,
            &format!("creating database {name}"),
            &format!("CREATE DATABASE {q} OWNER {q}"),
        )
        .await?;
    }
    // Only its owner may connect to an app's database.
    exec(
        &admin,
        &c,
        &format!("restricting database {name}"),
        &format!("REVOKE ALL ON DATABASE {q} FROM PUBLIC; GRANT CONNECT, TEMPORARY ON DATABASE {q} TO {q}"),
    )
    .await?;
    if server.is_managed() {
        // On a server of its own, twelve also closes the databases every role may
        // connect to by default. An adopted server's other databases are its admin's.
        exec(
            &admin,
            &c,
            "restricting databases postgres and template1",
            &format!(
                "REVOKE CONNECT, TEMPORARY ON DATABASE {}, {} FROM PUBLIC",
                ident("postgres"),
                ident("template1")
            ),
        )
        .await?;
    }

    let host = if server.is_managed() {
        "127.0.0.1".to_string()
    } else {
        admin.host.clone()
    };
    let endpoint = util::endpoint(&host, admin.port);
    let mut data = RelationData::new();
    data.insert(
        "uri".into(),
        format!("postgresql://{name}:{pw}@{endpoint}/{name}"),
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
    let kept = kept_role(&name);
    let (q, k) = (ident(&name), ident(&kept));
    let c = admin.connect().await?;
    let role = exists(&admin, &c, ROLE_EXISTS, &name).await?;
    let db = exists(&admin, &c, DB_EXISTS, &name).await?;

    if role {
        // No new sessions, then end the current ones.
        exec(
            &admin,
            &c,
            &format!("disabling login of role {name}"),
            &format!("ALTER ROLE {q} NOLOGIN PASSWORD NULL"),
        )
        .await?;
        c.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
            &[&name],
        )
        .await
        .map_err(|e| admin.failed(&format!("ending the sessions of {name}"), &e, &[]))?;
    }

    if destroy_data {
        if db {
            exec(
                &admin,
                &c,
                &format!("dropping database {name}"),
                &format!("DROP DATABASE IF EXISTS {q} WITH (FORCE)"),
            )
            .await?;
        }
        for (r, present) in [
            (&q, role),
            (&k, exists(&admin, &c, ROLE_EXISTS, &kept).await?),
        ] {
            if present {
                exec(
                    &admin,
                    &c,
                    &format!("dropping role {r}"),
                    &format!(
                        "REASSIGN OWNED BY {r} TO CURRENT_USER; DROP OWNED BY {r}; DROP ROLE {r}"
                    ),
                )
                .await?;
            }
        }
        return Ok(());
    }

    if !role {
        return Ok(());
    }
    if db {
        // Keep the data: a login-less role owns it until the app is integrated again.
        if !exists(&admin, &c, ROLE_EXISTS, &kept).await? {
            exec(
                &admin,
                &c,
                "creating the kept-data role",
                &format!("CREATE ROLE {k} NOLOGIN"),
            )
            .await?;
        }
        exec(
            &admin,
            &c,
            &format!("keeping database {name}"),
            &format!("ALTER DATABASE {q} OWNER TO {k}"),
        )
        .await?;
        let dbc = admin.connect_db(&name).await?;
        exec(
            &admin,
            &dbc,
            &format!("keeping the objects of role {name}"),
            &format!("REASSIGN OWNED BY {q} TO {k}; DROP OWNED BY {q}"),
        )
        .await?;
    }
    let sql = if exists(&admin, &c, ROLE_EXISTS, &kept).await? {
        format!("REASSIGN OWNED BY {q} TO {k}; DROP OWNED BY {q}; DROP ROLE {q}")
    } else {
        format!("DROP OWNED BY {q}; DROP ROLE {q}")
    };
    c.batch_execute(&sql).await.map_err(|e| {
        let mut err = admin.failed(&format!("dropping role {name}"), &e, &[]);
        if let ProviderError::Failed { reason, .. } = &mut err {
            reason.push_str(
                " (the role still owns objects or holds privileges in another database: \
                 run `REASSIGN OWNED BY ...; DROP OWNED BY ...` there, then remove the integration again)",
            );
        }
        err
    })?;
    Ok(())
}

// ---- managed server ----

pub(crate) fn running_pid(dir: &Path) -> Option<u32> {
    util::pid_from_file(&dir.join("data").join("postmaster.pid"))
}

fn admin_url(port: u16) -> String {
    format!("postgresql://{ADMIN_USER}@127.0.0.1:{port}/postgres")
}

pub(crate) async fn start(p: &Providers, dir: &Path, port: u16) -> Result<ManagedInfo> {
    let server = Server::managed(Kind::Postgresql, dir, port);
    let desc = server.describe();
    let initdb = p
        .binaries
        .find("initdb", Kind::Postgresql.debian_package())?;
    let pg_ctl = p
        .binaries
        .find("pg_ctl", Kind::Postgresql.debian_package())?;
    if let Some(pid) = running_pid(dir) {
        return Ok(ManagedInfo {
            pid,
            admin_url: admin_url(port),
        });
    }
    if !util::port_free(port) {
        return Err(ProviderError::PortInUse {
            kind: "PostgreSQL".into(),
            port,
        });
    }
    util::create_dir(dir, 0o700)?;
    let user = util::server_user(p.service_user.as_deref(), &desc)?;
    let pw = util::admin_secret(dir)?;
    let data = dir.join("data");
    let log = dir.join("server.log");
    // The server's own user owns the directory (socket, log, data), 0700; a directory an
    // older twelve made (owned by `postgres`) is taken over.
    util::hand_over(dir, user.as_ref())?;

    if !data.join("PG_VERSION").exists() {
        if data.exists() {
            std::fs::remove_dir_all(&data).map_err(|e| ProviderError::io(&data, e))?;
        }
        let pwfile = dir.join("initdb.pw");
        util::write_private(&pwfile, &pw)?;
        if let Some(u) = &user {
            util::chown_tree(&pwfile, u, None)?;
        }
        let mut cmd = util::detached(&initdb, user.as_ref());
        cmd.arg("-D")
            .arg(&data)
            .args(["-U", ADMIN_USER, "-A", "scram-sha-256", "-E", "UTF8"])
            .args(["--locale=C", "--pwfile"])
            .arg(&pwfile);
        let res = util::run_setup(cmd, &desc, "initdb").await;
        let _ = std::fs::remove_file(&pwfile);
        res.map_err(|e| match (e, &user) {
            (ProviderError::Failed { server, action, reason }, Some(u)) => ProviderError::Failed {
                server,
                action,
                reason: format!(
                    "{reason}; initdb runs as `{}`: every parent directory of {} must be searchable by that user",
                    u.name,
                    dir.display()
                ),
            },
            (e, _) => e,
        })?;
        let conf = data.join("postgresql.conf");
        let mut text = util::read_nofollow(&conf).map_err(|e| ProviderError::io(&conf, e))?;
        text.push_str("\n# Added by twelve: listen address, port and socket directory.\ninclude_if_exists = 'twelve.conf'\n");
        util::write_private(&conf, &text)?;
        if let Some(u) = &user {
            util::chown_tree(&conf, u, None)?;
        }
    }
    let quote = |s: &str| s.replace('\'', "''");
    let twelve_conf = data.join("twelve.conf");
    util::write_private(
        &twelve_conf,
        &format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\nunix_socket_permissions = 0700\n",
            quote(&dir.display().to_string())
        ),
    )?;
    if let Some(u) = &user {
        util::chown_tree(&twelve_conf, u, None)?;
    }

    let mut cmd = util::detached(&pg_ctl, user.as_ref());
    cmd.arg("start")
        .arg("-D")
        .arg(&data)
        .arg("-l")
        .arg(&log)
        .args(["-w", "-t", "30", "-s"]);
    util::run_setup(cmd, &desc, "pg_ctl start")
        .await
        .map_err(|e| ProviderError::StartFailed {
            server: desc.clone(),
            reason: format!("{e}; last log lines: {}", util::tail(&log, 5)),
            log: log.clone(),
        })?;

    let admin = Admin::of(&server)?;
    util::wait_for(Duration::from_secs(30), || async {
        admin.connect().await.map(|_| ()).map_err(|e| e.to_string())
    })
    .await
    .map_err(|reason| ProviderError::StartFailed {
        server: desc.clone(),
        reason,
        log: log.clone(),
    })?;
    let pid = running_pid(dir).ok_or_else(|| ProviderError::StartFailed {
        server: desc.clone(),
        reason: "no postmaster.pid after start".into(),
        log: log.clone(),
    })?;
    Ok(ManagedInfo {
        pid,
        admin_url: admin_url(port),
    })
}

pub(crate) async fn stop(p: &Providers, dir: &Path, _port: u16) -> Result<()> {
    let Some(pid) = running_pid(dir) else {
        return Ok(());
    };
    // SIGINT is PostgreSQL's "fast" shutdown: sessions are ended, data is flushed.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGINT,
    );
    let _ = p;
    for _ in 0..150 {
        if !util::pid_alive(pid) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    util::terminate(pid, Duration::from_secs(5)).await;
    Ok(())
}
