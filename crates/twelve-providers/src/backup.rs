//! Backups of the app data on a server, as the machine's own tools make them: `pg_dump`
//! (custom format, uncompressed: the caller compresses) of each app database,
//! `mysqldump --single-transaction` of each app database, Redis's `BGSAVE` + a copy of
//! its RDB file (`backup_redis.rs`), RabbitMQ's definitions (`backup_rabbitmq.rs`).
//!
//! The data flows through [`PartSink`] and [`PartSource`]: this crate never decides where a
//! backup lives, how it is compressed or encrypted. Restores replace the app databases
//! whole, so a restore brings back exactly what was backed up.

use std::io::{Read, Write};
use std::process::{Command, Stdio};

use postgres_protocol::escape::escape_identifier as ident;
use serde::{Deserialize, Serialize};

use crate::util::{self, scrub};
use crate::{mysql, postgres, Kind, ProviderError, Providers, Result, Server};

/// A writer for one part of a backup; `finish` flushes whatever framing it has.
pub trait PartWrite: Write + Send {
    fn finish(self: Box<Self>) -> std::io::Result<()>;
}

/// Where the parts of a backup go.
pub trait PartSink: Send {
    fn create(&mut self, part: &str) -> std::io::Result<Box<dyn PartWrite>>;
}

/// Where the parts of a backup come from.
pub trait PartSource: Send + Sync {
    fn open(&self, part: &str) -> std::io::Result<Box<dyn Read + Send>>;
}

/// One part of a backup: the data of one app (a database dump, or the server's RDB file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpPart {
    /// The part's name in the backup (`web.pgdump`, `web.sql`, `dump.rdb`).
    pub name: String,
    /// The database (or `*` for a whole Redis server).
    pub database: String,
}

/// What [`Providers::dump`] made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpInfo {
    /// The server's version as it reports it (`15.20`, `10.11.19-MariaDB`, `7.0.15`).
    pub server_version: String,
    /// The same as a number that orders versions (`150020`, `101119`, `70015`).
    pub version_num: u64,
    pub parts: Vec<DumpPart>,
}

/// `10.11.19-MariaDB-0+deb12u1` -> 101119; `7.0.15` -> 70015 (PostgreSQL gives its own
/// `server_version_num`).
pub fn version_number(v: &str) -> u64 {
    let nums: Vec<u64> = v
        .split(|c: char| !c.is_ascii_digit())
        .take(3)
        .map(|n| n.parse().unwrap_or(0))
        .collect();
    nums.first().copied().unwrap_or(0) * 10000
        + nums.get(1).copied().unwrap_or(0) * 100
        + nums.get(2).copied().unwrap_or(0)
}

impl Providers {
    /// The server's version (`15.20`) and its comparable number.
    pub async fn server_version(&self, server: &Server) -> Result<(String, u64)> {
        match server.kind() {
            Kind::Postgresql => {
                let admin = postgres::Admin::of(server)?;
                let c = admin.connect().await?;
                let row = c
                    .query_one(
                        "SELECT current_setting('server_version'), current_setting('server_version_num')::int",
                        &[],
                    )
                    .await
                    .map_err(|e| failed(&admin.server, "reading the server version", e, &admin.secrets()))?;
                let text: String = row.get(0);
                let num: i32 = row.get(1);
                // 150020 is 15.20 (PostgreSQL 10 and later: major * 10000 + minor).
                Ok((
                    text.split_whitespace().next().unwrap_or("").to_string(),
                    num as u64,
                ))
            }
            Kind::Mysql => {
                use mysql_async::prelude::Queryable;
                let admin = mysql::Admin::of(server)?;
                let mut c = admin.connect().await?;
                let v: Option<String> = c.query_first("SELECT VERSION()").await.map_err(|e| {
                    failed(
                        &admin.server,
                        "reading the server version",
                        e,
                        &admin.secrets(),
                    )
                })?;
                let _ = c.disconnect().await;
                let v = v.unwrap_or_default();
                Ok((short_mysql_version(&v), version_number(&v)))
            }
            Kind::Redis => crate::backup_redis::server_version(server).await,
            Kind::Rabbitmq => crate::backup_rabbitmq::server_version(self, server).await,
        }
    }

    /// Writes a backup of the databases (or keys) of `apps` on `server` into `sink`.
    pub async fn dump(
        &self,
        server: &Server,
        apps: &[String],
        sink: &mut dyn PartSink,
    ) -> Result<DumpInfo> {
        for app in apps {
            util::validate_app(app)?;
        }
        let (server_version, version_num) = self.server_version(server).await?;
        let parts = match server.kind() {
            Kind::Postgresql => pg_dump(self, server, apps, sink).await?,
            Kind::Mysql => mysql_dump(self, server, apps, sink).await?,
            Kind::Redis => crate::backup_redis::dump(server, sink).await?,
            Kind::Rabbitmq => crate::backup_rabbitmq::dump(self, server, sink).await?,
        };
        Ok(DumpInfo {
            server_version,
            version_num,
            parts,
        })
    }

    /// Replaces the data of each part with the backed-up one. Refuses a backup made by a
    /// newer server than this one.
    pub async fn restore(
        &self,
        server: &Server,
        info: &DumpInfo,
        source: &dyn PartSource,
    ) -> Result<()> {
        let (now, num) = self.server_version(server).await?;
        if info.version_num > num {
            return Err(ProviderError::Failed {
                server: server.describe(),
                action: "restoring the backup".into(),
                reason: format!(
                    "the backup was made by {} {}, newer than this server's {now}: restore it on a server of version {} or newer",
                    server.kind().display_name(),
                    info.server_version,
                    info.server_version
                ),
            });
        }
        match server.kind() {
            Kind::Postgresql => {
                for part in &info.parts {
                    pg_restore(self, server, part, source).await?;
                }
                Ok(())
            }
            Kind::Mysql => {
                for part in &info.parts {
                    mysql_restore(self, server, part, source).await?;
                }
                Ok(())
            }
            Kind::Redis => crate::backup_redis::restore(self, server, info, source).await,
            Kind::Rabbitmq => crate::backup_rabbitmq::restore(self, server, info, source).await,
        }
    }
}

fn failed(
    server: &str,
    action: &str,
    e: impl std::fmt::Display,
    secrets: &[&str],
) -> ProviderError {
    ProviderError::Failed {
        server: server.to_string(),
        action: action.to_string(),
        reason: scrub(e, secrets),
    }
}

fn short_mysql_version(v: &str) -> String {
    // `10.11.19-MariaDB-0+deb12u1` -> `10.11.19-MariaDB`
    let mut parts = v.splitn(3, '-');
    match (parts.next(), parts.next()) {
        (Some(a), Some(b)) if b.chars().all(|c| c.is_ascii_alphabetic()) => format!("{a}-{b}"),
        (Some(a), _) => a.to_string(),
        _ => v.to_string(),
    }
}

/// Runs `cmd`, its stdout into `out`; on failure, its stderr (scrubbed) as the reason.
fn run_into(
    mut cmd: Command,
    out: &mut dyn Write,
    secrets: &[String],
) -> std::result::Result<(), String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| e.to_string())?;
    let mut stdout = child.stdout.take().ok_or("no stdout")?;
    let mut stderr = child.stderr.take().ok_or("no stderr")?;
    let errs = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let copied = std::io::copy(&mut stdout, out);
    drop(stdout);
    let status = child.wait().map_err(|e| e.to_string())?;
    let err = errs.join().unwrap_or_default();
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    if !status.success() {
        return Err(scrub(err.trim(), &secrets));
    }
    copied
        .map(|_| ())
        .map_err(|e| format!("writing the backup: {e}"))
}

/// Runs `cmd` with `input` on its stdin; on failure, its stderr (scrubbed) as the reason.
fn run_from(
    mut cmd: Command,
    mut input: Box<dyn Read + Send>,
    secrets: &[String],
) -> std::result::Result<(), String> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| e.to_string())?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let mut stderr = child.stderr.take().ok_or("no stderr")?;
    let errs = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let copied = std::io::copy(&mut input, &mut stdin);
    drop(stdin);
    let status = child.wait().map_err(|e| e.to_string())?;
    let err = errs.join().unwrap_or_default();
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    if !status.success() {
        return Err(scrub(err.trim(), &secrets));
    }
    // A tool that stopped reading early and still succeeded is fine; a read error is not.
    match copied {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(format!("reading the backup: {e}"))
        }
        _ => Ok(()),
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("backup worker panicked")
}

// ---- PostgreSQL ----

fn pg_command(p: &Providers, binary: &str, admin: &postgres::Admin) -> Result<Command> {
    let path = p.binaries.find(binary, "postgresql-client")?;
    let mut cmd = Command::new(path);
    cmd.args(["--no-password", "-h", &admin.host, "-p"])
        .arg(admin.port.to_string())
        .args(["-U", &admin.user]);
    cmd.env("PGAPPNAME", "twelve-backup");
    if let Some(pw) = &admin.password {
        cmd.env("PGPASSWORD", pw);
    }
    Ok(cmd)
}

async fn pg_dump(
    p: &Providers,
    server: &Server,
    apps: &[String],
    sink: &mut dyn PartSink,
) -> Result<Vec<DumpPart>> {
    let admin = postgres::Admin::of(server)?;
    let c = admin.connect().await?;
    let mut parts = vec![];
    for app in apps {
        let db = util::sql_name(app);
        let exists = c
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&db])
            .await
            .map_err(|e| failed(&admin.server, "lookup", e, &admin.secrets()))?
            .is_some();
        if !exists {
            continue;
        }
        // An adopted server's admin may be allowed to create roles without being able to
        // read what they own: say so instead of pg_dump's first permission error.
        let row = c
            .query_one(
                "SELECT rolsuper OR pg_has_role(current_user, (SELECT datdba FROM pg_database WHERE datname = $1), 'USAGE') FROM pg_roles WHERE rolname = current_user",
                &[&db],
            )
            .await
            .map_err(|e| failed(&admin.server, "checking rights", e, &admin.secrets()))?;
        let can: bool = row.get(0);
        if !can {
            return Err(ProviderError::NotAdmin {
                server: admin.server.clone(),
                reason: format!(
                    "role `{}` cannot read database `{db}`: backups need a superuser, or membership in the database's owner role (GRANT {db} TO {})",
                    admin.user, admin.user
                ),
            });
        }
        let name = format!("{db}.pgdump");
        let mut w = sink
            .create(&name)
            .map_err(|e| failed(&admin.server, "writing the backup", e, &[]))?;
        let mut cmd = pg_command(p, "pg_dump", &admin)?;
        // Custom format without compression: the backup is compressed with zstd as a whole.
        cmd.args(["-Fc", "-Z0", "-d", &db]);
        let secrets: Vec<String> = admin.password.iter().cloned().collect();
        let res = blocking(move || {
            run_into(cmd, &mut w, &secrets)?;
            w.finish().map_err(|e| format!("writing the backup: {e}"))
        })
        .await;
        res.map_err(|reason| dump_error(&admin.server, &db, &admin.user, reason))?;
        parts.push(DumpPart { name, database: db });
    }
    Ok(parts)
}

fn dump_error(server: &str, db: &str, user: &str, reason: String) -> ProviderError {
    let lower = reason.to_lowercase();
    if lower.contains("permission denied") || lower.contains("access denied") {
        return ProviderError::NotAdmin {
            server: server.to_string(),
            reason: format!("`{user}` may not read all of database `{db}` ({reason}); give an admin URL whose account can read every app database"),
        };
    }
    ProviderError::Failed {
        server: server.to_string(),
        action: format!("backing up database {db}"),
        reason,
    }
}

async fn pg_restore(
    p: &Providers,
    server: &Server,
    part: &DumpPart,
    source: &dyn PartSource,
) -> Result<()> {
    let admin = postgres::Admin::of(server)?;
    let c = admin.connect().await?;
    let db = &part.database;
    let tmp = format!("{db}$restore");
    let old = format!("{db}$old");
    let err =
        |action: &str, e: tokio_postgres::Error| failed(&admin.server, action, e, &admin.secrets());
    // The restored database is built aside, then swapped in: a failed restore leaves the
    // current data as it was.
    let owner: Option<String> = c
        .query_opt(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1",
            &[db],
        )
        .await
        .map_err(|e| err("lookup", e))?
        .map(|r| r.get(0));
    let owner_exists = c
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[db])
        .await
        .map_err(|e| err("lookup", e))?
        .is_some();
    let owner = owner.unwrap_or_else(|| {
        if owner_exists {
            db.clone()
        } else {
            admin.user.clone()
        }
    });
    // Opened first: a backup that cannot be read leaves nothing behind.
    let input = source
        .open(&part.name)
        .map_err(|e| failed(&admin.server, "reading the backup", e, &[]))?;
    for name in [&tmp, &old] {
        c.batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            ident(name)
        ))
        .await
        .map_err(|e| err("clearing a previous restore", e))?;
    }
    c.batch_execute(&format!(
        "CREATE DATABASE {} OWNER {} TEMPLATE template0",
        ident(&tmp),
        ident(&owner)
    ))
    .await
    .map_err(|e| err(&format!("creating database {tmp}"), e))?;
    let mut cmd = pg_command(p, "pg_restore", &admin)?;
    // Not --single-transaction: the database is new and dropped on failure, and one
    // transaction made pg_restore 10% slower (bench/backup/RESULTS.md).
    cmd.args(["--exit-on-error", "-d", &tmp]);
    let secrets: Vec<String> = admin.password.iter().cloned().collect();
    if let Err(reason) = blocking(move || run_from(cmd, input, &secrets)).await {
        let _ = c
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                ident(&tmp)
            ))
            .await;
        return Err(ProviderError::Failed {
            server: admin.server.clone(),
            action: format!("restoring database {db}"),
            reason,
        });
    }
    let (t, d, o, r) = (ident(&tmp), ident(db), ident(&old), ident(&owner));
    // Who may connect, as provisioning set it; then the swap, ending the sessions of the
    // database being replaced (its apps are out of the ingress meanwhile).
    let mut sql = format!(
        "REVOKE ALL ON DATABASE {t} FROM PUBLIC; GRANT CONNECT, TEMPORARY ON DATABASE {t} TO {r};"
    );
    let exists = c
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[db])
        .await
        .map_err(|e| err("lookup", e))?
        .is_some();
    if exists {
        sql.push_str(&format!(
            "ALTER DATABASE {d} WITH ALLOW_CONNECTIONS false; \
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = {lit} AND pid <> pg_backend_pid();",
            lit = postgres_protocol::escape::escape_literal(db)
        ));
    }
    c.batch_execute(&sql)
        .await
        .map_err(|e| err(&format!("preparing database {db} for the restore"), e))?;
    if exists {
        // Sessions may take a moment to end.
        let rename = format!("ALTER DATABASE {d} RENAME TO {o}");
        let mut tries = 0;
        loop {
            match c.batch_execute(&rename).await {
                Ok(()) => break,
                Err(_) if tries < 50 => {
                    tries += 1;
                    let _ = c
                        .execute(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                            &[db],
                        )
                        .await;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => {
                    // Leave the current database as it was.
                    let _ = c
                        .batch_execute(&format!(
                            "ALTER DATABASE {d} WITH ALLOW_CONNECTIONS true; DROP DATABASE IF EXISTS {t} WITH (FORCE)"
                        ))
                        .await;
                    return Err(err(&format!("replacing database {db}"), e));
                }
            }
        }
    }
    c.batch_execute(&format!("ALTER DATABASE {t} RENAME TO {d}"))
        .await
        .map_err(|e| err(&format!("replacing database {db}"), e))?;
    if exists {
        c.batch_execute(&format!("DROP DATABASE IF EXISTS {o} WITH (FORCE)"))
            .await
            .map_err(|e| err(&format!("dropping the replaced copy of {db}"), e))?;
    }
    Ok(())
}

// ---- MySQL / MariaDB ----

fn mysql_command(p: &Providers, binary: &str, admin: &mysql::Admin) -> Result<Command> {
    let path = p.binaries.find(binary, "mariadb-client")?;
    let mut cmd = Command::new(path);
    cmd.args(["--protocol=TCP", "-h", &admin.host, "-P"])
        .arg(admin.port.to_string())
        .args(["-u", &admin.user]);
    if let Some(pw) = &admin.password {
        // Not on the command line, where other users could read it.
        cmd.env("MYSQL_PWD", pw);
    }
    Ok(cmd)
}

fn mysql_ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

async fn mysql_dump(
    p: &Providers,
    server: &Server,
    apps: &[String],
    sink: &mut dyn PartSink,
) -> Result<Vec<DumpPart>> {
    use mysql_async::prelude::Queryable;
    let admin = mysql::Admin::of(server)?;
    let mut c = admin.connect().await?;
    let mut parts = vec![];
    for app in apps {
        let db = util::sql_name(app);
        let exists: Option<String> = c
            .exec_first(
                "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
                (db.clone(),),
            )
            .await
            .map_err(|e| failed(&admin.server, "lookup", e, &admin.secrets()))?;
        if exists.is_none() {
            continue;
        }
        let name = format!("{db}.sql");
        let mut w = sink
            .create(&name)
            .map_err(|e| failed(&admin.server, "writing the backup", e, &[]))?;
        let mut cmd = mysql_command(p, "mysqldump", &admin)?;
        // One consistent snapshot (InnoDB), without locking the app's tables.
        cmd.args([
            "--single-transaction",
            "--routines",
            "--triggers",
            "--events",
            "--hex-blob",
            "--no-tablespaces",
            "--skip-lock-tables",
            &db,
        ]);
        let secrets: Vec<String> = admin.password.iter().cloned().collect();
        let res = blocking(move || {
            run_into(cmd, &mut w, &secrets)?;
            w.finish().map_err(|e| format!("writing the backup: {e}"))
        })
        .await;
        res.map_err(|reason| dump_error(&admin.server, &db, &admin.user, reason))?;
        parts.push(DumpPart { name, database: db });
    }
    let _ = c.disconnect().await;
    Ok(parts)
}

async fn mysql_restore(
    p: &Providers,
    server: &Server,
    part: &DumpPart,
    source: &dyn PartSource,
) -> Result<()> {
    use mysql_async::prelude::Queryable;
    let admin = mysql::Admin::of(server)?;
    let db = part.database.clone();
    let mut c = admin.connect().await?;
    // End the app's sessions: a session holding a table would block dropping it.
    let ids: Vec<u64> = c
        .exec(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = ? AND ID <> CONNECTION_ID()",
            (db.clone(),),
        )
        .await
        .map_err(|e| failed(&admin.server, "listing sessions", e, &admin.secrets()))?;
    for id in ids {
        let _ = c.query_drop(format!("KILL {id}")).await;
    }
    let _ = c.disconnect().await;
    let input = source
        .open(&part.name)
        .map_err(|e| failed(&admin.server, "reading the backup", e, &[]))?;
    let q = mysql_ident(&db);
    // The database is replaced whole (its grants live in mysql.db and stay).
    let prologue = format!("DROP DATABASE IF EXISTS {q};\nCREATE DATABASE {q};\nUSE {q};\n");
    let input: Box<dyn Read + Send> =
        Box::new(std::io::Cursor::new(prologue.into_bytes()).chain(input));
    let mut cmd = mysql_command(p, "mysql", &admin)?;
    cmd.arg("--batch");
    let secrets: Vec<String> = admin.password.iter().cloned().collect();
    blocking(move || run_from(cmd, input, &secrets))
        .await
        .map_err(|reason| ProviderError::Failed {
            server: admin.server.clone(),
            action: format!("restoring database {db}"),
            reason,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order() {
        assert_eq!(version_number("10.11.19-MariaDB-0+deb12u1"), 101119);
        assert_eq!(version_number("7.0.15"), 70015);
        assert!(version_number("16.1") > version_number("15.20"));
        assert_eq!(
            short_mysql_version("10.11.19-MariaDB-0+deb12u1"),
            "10.11.19-MariaDB"
        );
        assert_eq!(short_mysql_version("8.0.36"), "8.0.36");
    }
}
