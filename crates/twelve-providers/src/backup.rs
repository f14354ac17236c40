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
            Kind::Postgresql => {
                let dbs: Vec<(String, String)> = apps
                    .iter()
                    .map(|a| (util::sql_name(a), util::sql_name(a)))
                    .collect();
                pg_dump(self, server, &dbs, sink).await?
            }
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
    /// newer server than this one. The same as [`Providers::restore_stage`], then
    /// [`Providers::restore_commit`], then [`Providers::drop_replaced`].
    pub async fn restore(
        &self,
        server: &Server,
        info: &DumpInfo,
        source: &dyn PartSource,
    ) -> Result<()> {
        let staged = self.restore_stage(server, info, source).await?;
        let replaced = self.restore_commit(server, info, source, staged).await?;
        self.drop_replaced(server, replaced).await;
        Ok(())
    }

    /// The first half of a restore, which changes nothing the apps see: PostgreSQL and MySQL
    /// databases are restored beside the live ones (`<db>$restore`); a failure drops them
    /// and leaves the data as it was. Redis and RabbitMQ have nothing to stage (their restore
    /// is [`Providers::restore_commit`]). Refuses a backup made by a newer server.
    pub async fn restore_stage(
        &self,
        server: &Server,
        info: &DumpInfo,
        source: &dyn PartSource,
    ) -> Result<StagedRestore> {
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
        let mut staged = StagedRestore { databases: vec![] };
        for part in &info.parts {
            let res = match server.kind() {
                Kind::Postgresql => pg_stage(self, server, part, source).await,
                Kind::Mysql => mysql_stage(self, server, part, source).await,
                Kind::Redis | Kind::Rabbitmq => return Ok(staged),
            };
            match res {
                Ok(()) => staged.databases.push(part.database.clone()),
                Err(e) => {
                    self.restore_abort(server, staged).await;
                    return Err(e);
                }
            }
        }
        Ok(staged)
    }

    /// Drops what [`Providers::restore_stage`] made (the restore is not going ahead).
    pub async fn restore_abort(&self, server: &Server, staged: StagedRestore) {
        let names: Vec<String> = staged
            .databases
            .iter()
            .map(|db| format!("{db}{STAGED}"))
            .collect();
        drop_databases(server, &names).await;
    }

    /// The second half of a restore: the staged databases are swapped in for the live ones
    /// (PostgreSQL: renamed; MySQL: every table moved in one `RENAME TABLE`), Redis's RDB
    /// files put in place, RabbitMQ's definitions imported. The replaced copies are kept
    /// (`<db>$old`) until [`Providers::drop_replaced`].
    pub async fn restore_commit(
        &self,
        server: &Server,
        info: &DumpInfo,
        source: &dyn PartSource,
        staged: StagedRestore,
    ) -> Result<Replaced> {
        let mut replaced = Replaced { databases: vec![] };
        match server.kind() {
            Kind::Postgresql | Kind::Mysql => {
                let mut rest = staged.databases.into_iter();
                while let Some(db) = rest.next() {
                    let res = if server.kind() == Kind::Postgresql {
                        pg_swap(server, &db).await
                    } else {
                        mysql_swap(server, &db).await
                    };
                    match res {
                        Ok(()) => replaced.databases.push(format!("{db}{OLD}")),
                        Err(e) => {
                            let left = StagedRestore {
                                databases: std::iter::once(db).chain(rest).collect(),
                            };
                            self.restore_abort(server, left).await;
                            return Err(e);
                        }
                    }
                }
                Ok(replaced)
            }
            Kind::Redis => crate::backup_redis::restore(self, server, info, source)
                .await
                .map(|()| replaced),
            Kind::Rabbitmq => crate::backup_rabbitmq::restore(self, server, info, source)
                .await
                .map(|()| replaced),
        }
    }

    /// Drops the copies a restore replaced (errors are ignored: the next restore clears
    /// what is left).
    pub async fn drop_replaced(&self, server: &Server, replaced: Replaced) {
        drop_databases(server, &replaced.databases).await;
    }

    /// Whether the data a restore replaced can be backed up after the restore, from the
    /// copies it kept ([`Providers::dump_replaced`]): PostgreSQL, whose replaced databases
    /// are whole databases (`<db>$old`).
    pub fn backs_up_replaced(&self, server: &Server) -> bool {
        server.kind() == Kind::Postgresql
    }

    /// A backup of the data a restore replaced, made from the copies it kept: each
    /// `<db>$old` still there, as the part of `<db>` (restoring it puts `<db>` back as it
    /// was before the restore). PostgreSQL only ([`Providers::backs_up_replaced`]).
    pub async fn dump_replaced(
        &self,
        server: &Server,
        replaced: &Replaced,
        sink: &mut dyn PartSink,
    ) -> Result<DumpInfo> {
        if !self.backs_up_replaced(server) {
            return Err(ProviderError::Failed {
                server: server.describe(),
                action: "backing up the replaced data".into(),
                reason: format!("not supported for {}", server.kind().name()),
            });
        }
        let (server_version, version_num) = self.server_version(server).await?;
        // The swap closed the replaced databases to connections (the apps' sessions were
        // ended there); pg_dump needs one.
        let admin = postgres::Admin::of(server)?;
        let c = admin.connect().await?;
        for old in &replaced.databases {
            let exists = c
                .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[old])
                .await
                .map_err(|e| failed(&admin.server, "lookup", e, &admin.secrets()))?
                .is_some();
            if exists {
                c.batch_execute(&format!(
                    "ALTER DATABASE {} WITH ALLOW_CONNECTIONS true",
                    ident(old)
                ))
                .await
                .map_err(|e| {
                    failed(
                        &admin.server,
                        &format!("opening {old} to back it up"),
                        e,
                        &admin.secrets(),
                    )
                })?;
            }
        }
        drop(c);
        let dbs: Vec<(String, String)> = replaced
            .databases
            .iter()
            .filter_map(|old| {
                old.strip_suffix(OLD)
                    .map(|db| (old.clone(), db.to_string()))
            })
            .collect();
        let parts = pg_dump(self, server, &dbs, sink).await?;
        Ok(DumpInfo {
            server_version,
            version_num,
            parts,
        })
    }
}

/// The suffix of the database a restore is loaded into, beside the live one.
const STAGED: &str = "$restore";
/// The suffix of the database a restore replaced, until it is dropped.
const OLD: &str = "$old";

/// Databases restored beside the live ones, not yet swapped in.
#[derive(Debug)]
#[must_use = "a staged restore is committed or aborted"]
pub struct StagedRestore {
    databases: Vec<String>,
}

/// The copies of the databases a restore replaced, until they are dropped.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replaced {
    databases: Vec<String>,
}

impl Replaced {
    pub fn is_empty(&self) -> bool {
        self.databases.is_empty()
    }

    /// What a commit of `staged` will replace: `<db>$old` for each staged database (the
    /// names are known before the swap, to be recorded first).
    pub fn of_staged(staged: &StagedRestore) -> Replaced {
        Replaced {
            databases: staged
                .databases
                .iter()
                .map(|db| format!("{db}{OLD}"))
                .collect(),
        }
    }

    /// The databases' names (`<db>$old`).
    pub fn databases(&self) -> &[String] {
        &self.databases
    }
}

async fn drop_databases(server: &Server, names: &[String]) {
    if names.is_empty() {
        return;
    }
    match server.kind() {
        Kind::Postgresql => {
            let Ok(admin) = postgres::Admin::of(server) else {
                return;
            };
            if let Ok(c) = admin.connect().await {
                for n in names {
                    let _ = c
                        .batch_execute(&format!(
                            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                            ident(n)
                        ))
                        .await;
                }
            }
        }
        Kind::Mysql => {
            use mysql_async::prelude::Queryable;
            let Ok(admin) = mysql::Admin::of(server) else {
                return;
            };
            if let Ok(mut c) = admin.connect().await {
                for n in names {
                    let _ = c
                        .query_drop(format!("DROP DATABASE IF EXISTS {}", mysql_ident(n)))
                        .await;
                }
                let _ = c.disconnect().await;
            }
        }
        Kind::Redis | Kind::Rabbitmq => {}
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

/// Reads the child's stderr on a thread of its own (so a chatty tool never blocks on it).
fn collect_stderr(
    child: &mut std::process::Child,
) -> std::result::Result<std::thread::JoinHandle<String>, String> {
    let mut stderr = child.stderr.take().ok_or("no stderr")?;
    Ok(std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    }))
}

/// Waits for the child; on failure, its stderr with the secrets scrubbed is the reason.
fn wait_scrubbed(
    mut child: std::process::Child,
    errs: std::thread::JoinHandle<String>,
    secrets: &[String],
) -> std::result::Result<(), String> {
    let status = child.wait().map_err(|e| e.to_string())?;
    let err = errs.join().unwrap_or_default();
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    if !status.success() {
        return Err(scrub(err.trim(), &secrets));
    }
    Ok(())
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
    let errs = collect_stderr(&mut child)?;
    let copied = std::io::copy(&mut stdout, out);
    drop(stdout);
    wait_scrubbed(child, errs, secrets)?;
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
    let errs = collect_stderr(&mut child)?;
    let copied = std::io::copy(&mut input, &mut stdin);
    drop(stdin);
    wait_scrubbed(child, errs, secrets)?;
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

/// Dumps each `(source, as_db)`: database `source`, as the part of database `as_db`.
async fn pg_dump(
    p: &Providers,
    server: &Server,
    dbs: &[(String, String)],
    sink: &mut dyn PartSink,
) -> Result<Vec<DumpPart>> {
    let admin = postgres::Admin::of(server)?;
    let c = admin.connect().await?;
    let mut parts = vec![];
    for (db, as_db) in dbs {
        let exists = c
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[db])
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
        let name = format!("{as_db}.pgdump");
        let mut w = sink
            .create(&name)
            .map_err(|e| failed(&admin.server, "writing the backup", e, &[]))?;
        let mut cmd = pg_command(p, "pg_dump", &admin)?;
        // Custom format without compression: the backup is compressed with zstd as a whole.
        cmd.args(["-Fc", "-Z0", "-d", db]);
        let secrets: Vec<String> = admin.password.iter().cloned().collect();
        let res = blocking(move || {
            run_into(cmd, &mut w, &secrets)?;
            w.finish().map_err(|e| format!("writing the backup: {e}"))
        })
        .await;
        res.map_err(|reason| dump_error(&admin.server, db, &admin.user, reason))?;
        parts.push(DumpPart {
            name,
            database: as_db.clone(),
        });
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

/// Restores one database into `<db>$restore` beside the live one; on failure, drops it.
async fn pg_stage(
    p: &Providers,
    server: &Server,
    part: &DumpPart,
    source: &dyn PartSource,
) -> Result<()> {
    let admin = postgres::Admin::of(server)?;
    let c = admin.connect().await?;
    let db = &part.database;
    let tmp = format!("{db}{STAGED}");
    let old = format!("{db}{OLD}");
    let err =
        |action: &str, e: tokio_postgres::Error| failed(&admin.server, action, e, &admin.secrets());
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
    let (t, r) = (ident(&tmp), ident(&owner));
    // Who may connect, as provisioning set it.
    // (CREATE DATABASE cannot share a batch: that would be one transaction.)
    c.batch_execute(&format!("CREATE DATABASE {t} OWNER {r} TEMPLATE template0"))
        .await
        .map_err(|e| err(&format!("creating database {tmp}"), e))?;
    c.batch_execute(&format!(
        "REVOKE ALL ON DATABASE {t} FROM PUBLIC; GRANT CONNECT, TEMPORARY ON DATABASE {t} TO {r};"
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
            .batch_execute(&format!("DROP DATABASE IF EXISTS {t} WITH (FORCE)"))
            .await;
        return Err(ProviderError::Failed {
            server: admin.server.clone(),
            action: format!("restoring database {db}"),
            reason,
        });
    }
    Ok(())
}

/// Swaps `<db>$restore` in for `db`, which becomes `<db>$old`, ending its sessions (its
/// apps are out of the ingress meanwhile).
async fn pg_swap(server: &Server, db: &str) -> Result<()> {
    let admin = postgres::Admin::of(server)?;
    let c = admin.connect().await?;
    let err =
        |action: &str, e: tokio_postgres::Error| failed(&admin.server, action, e, &admin.secrets());
    let (t, d, o) = (
        ident(&format!("{db}{STAGED}")),
        ident(db),
        ident(&format!("{db}{OLD}")),
    );
    let exists = c
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&db])
        .await
        .map_err(|e| err("lookup", e))?
        .is_some();
    if exists {
        c.batch_execute(&format!(
            "ALTER DATABASE {d} WITH ALLOW_CONNECTIONS false; \
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = {lit} AND pid <> pg_backend_pid();",
            lit = postgres_protocol::escape::escape_literal(db)
        ))
        .await
        .map_err(|e| err(&format!("preparing database {db} for the restore"), e))?;
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
                            &[&db],
                        )
                        .await;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => {
                    // Leave the current database as it was.
                    let _ = c
                        .batch_execute(&format!("ALTER DATABASE {d} WITH ALLOW_CONNECTIONS true"))
                        .await;
                    return Err(err(&format!("replacing database {db}"), e));
                }
            }
        }
    }
    if let Err(e) = c
        .batch_execute(&format!("ALTER DATABASE {t} RENAME TO {d}"))
        .await
    {
        if exists {
            let _ = c
                .batch_execute(&format!(
                    "ALTER DATABASE {o} RENAME TO {d}; ALTER DATABASE {d} WITH ALLOW_CONNECTIONS true"
                ))
                .await;
        }
        return Err(err(&format!("replacing database {db}"), e));
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

/// Passes a dump through, and fails at its end unless it ends as a complete `mysqldump`
/// does (`-- Dump completed`): a cut dump is refused, not half loaded.
struct DumpComplete<R> {
    inner: R,
    tail: Vec<u8>,
}

impl<R: Read> Read for DumpComplete<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            const END: &[u8] = b"-- Dump completed";
            if !self.tail.windows(END.len()).any(|w| w == END) {
                return Err(std::io::Error::other(
                    "the dump is cut short (it does not end with mysqldump's `-- Dump completed`)",
                ));
            }
            return Ok(0);
        }
        self.tail.extend_from_slice(&buf[..n]);
        if self.tail.len() > 512 {
            self.tail.drain(..self.tail.len() - 256);
        }
        Ok(n)
    }
}

/// Loads one database's dump into `<db>$restore` beside the live one; on failure, drops it.
async fn mysql_stage(
    p: &Providers,
    server: &Server,
    part: &DumpPart,
    source: &dyn PartSource,
) -> Result<()> {
    use mysql_async::prelude::Queryable;
    let admin = mysql::Admin::of(server)?;
    let db = part.database.clone();
    let tmp = format!("{db}{STAGED}");
    let input = source
        .open(&part.name)
        .map_err(|e| failed(&admin.server, "reading the backup", e, &[]))?;
    let err =
        |action: &str, e: mysql_async::Error| failed(&admin.server, action, e, &admin.secrets());
    let mut c = admin.connect().await?;
    let charset: Option<(String, String)> = c
        .exec_first(
            "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
            (db.clone(),),
        )
        .await
        .map_err(|e| err("lookup", e))?;
    for name in [&tmp, &format!("{db}{OLD}")] {
        c.query_drop(format!("DROP DATABASE IF EXISTS {}", mysql_ident(name)))
            .await
            .map_err(|e| err("clearing a previous restore", e))?;
    }
    let mut create = format!("CREATE DATABASE {}", mysql_ident(&tmp));
    if let Some((cs, coll)) = charset {
        create.push_str(&format!(" CHARACTER SET {cs} COLLATE {coll}"));
    }
    c.query_drop(create)
        .await
        .map_err(|e| err(&format!("creating database {tmp}"), e))?;
    let _ = c.disconnect().await;
    let input: Box<dyn Read + Send> = Box::new(DumpComplete {
        inner: input,
        tail: vec![],
    });
    let mut cmd = mysql_command(p, "mysql", &admin)?;
    cmd.args(["--batch", &tmp]);
    let secrets: Vec<String> = admin.password.iter().cloned().collect();
    if let Err(reason) = blocking(move || run_from(cmd, input, &secrets)).await {
        drop_databases(server, &[tmp]).await;
        return Err(ProviderError::Failed {
            server: admin.server.clone(),
            action: format!("restoring database {db}"),
            reason,
        });
    }
    Ok(())
}

/// The objects of a database besides its tables, as `SHOW CREATE` gives them.
#[derive(Default)]
struct SchemaObjects {
    /// (name, CREATE VIEW ...)
    views: Vec<(String, String)>,
    triggers: Vec<(String, String)>,
    /// ("PROCEDURE" | "FUNCTION" | "EVENT", name, CREATE ...)
    routines: Vec<(String, String, String)>,
}

async fn mysql_objects(
    c: &mut mysql_async::Conn,
    schema: &str,
) -> mysql_async::Result<SchemaObjects> {
    use mysql_async::prelude::Queryable;
    // Each kind of object: how to list (kind, name), and the column of `SHOW CREATE` that
    // holds its statement.
    const KINDS: [(&str, usize); 4] = [
        (
            "SELECT 'VIEW', TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA = ?",
            1,
        ),
        (
            "SELECT 'TRIGGER', TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ? ORDER BY EVENT_OBJECT_TABLE, ACTION_ORDER",
            2,
        ),
        (
            "SELECT ROUTINE_TYPE, ROUTINE_NAME FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = ?",
            2,
        ),
        (
            "SELECT 'EVENT', EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = ?",
            3,
        ),
    ];
    let q = mysql_ident(schema);
    let mut o = SchemaObjects::default();
    for (list, col) in KINDS {
        let found: Vec<(String, String)> = c.exec(list, (schema,)).await?;
        for (kind, name) in found {
            let row: Option<mysql_async::Row> = c
                .query_first(format!("SHOW CREATE {kind} {q}.{}", mysql_ident(&name)))
                .await?;
            let sql = row
                .and_then(|r| r.get::<Option<String>, usize>(col).flatten())
                .unwrap_or_default();
            match kind.as_str() {
                "VIEW" => o.views.push((name, sql)),
                "TRIGGER" => o.triggers.push((name, sql)),
                _ => o.routines.push((kind, name, sql)),
            }
        }
    }
    Ok(o)
}

/// Runs `CREATE` statements in the current database, views again while one depends on
/// another not made yet; the errors left.
async fn mysql_create_all(c: &mut mysql_async::Conn, mut todo: Vec<String>) -> Vec<String> {
    use mysql_async::prelude::Queryable;
    loop {
        let mut failed = vec![];
        let mut errors = vec![];
        let before = todo.len();
        for sql in todo {
            if let Err(e) = c.query_drop(sql.as_str()).await {
                errors.push(e.to_string());
                failed.push(sql);
            }
        }
        if failed.is_empty() || failed.len() == before {
            return errors;
        }
        todo = failed;
    }
}

/// Swaps the tables of `<db>$restore` in for those of `db` in one `RENAME TABLE` (the
/// replaced ones go to `<db>$old`), then makes the backup's views, triggers, routines and
/// events in `db` in place of its own.
async fn mysql_swap(server: &Server, db: &str) -> Result<()> {
    use mysql_async::prelude::Queryable;
    let admin = mysql::Admin::of(server)?;
    let tmp = format!("{db}{STAGED}");
    let old = format!("{db}{OLD}");
    let (d, t, o) = (mysql_ident(db), mysql_ident(&tmp), mysql_ident(&old));
    let err =
        |action: &str, e: mysql_async::Error| failed(&admin.server, action, e, &admin.secrets());
    let mut c = admin.connect().await?;
    // End the app's sessions: an open transaction would hold the tables being moved.
    let ids: Vec<u64> = c
        .exec(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = ? AND ID <> CONNECTION_ID()",
            (db,),
        )
        .await
        .map_err(|e| err("listing sessions", e))?;
    for id in ids {
        let _ = c.query_drop(format!("KILL {id}")).await;
    }
    let tables = |schema: String| {
        format!(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = {} AND TABLE_TYPE = 'BASE TABLE'",
            mysql_literal(&schema)
        )
    };
    let current: Vec<String> = c
        .query(tables(db.to_string()))
        .await
        .map_err(|e| err("lookup", e))?;
    let restored: Vec<String> = c
        .query(tables(tmp.clone()))
        .await
        .map_err(|e| err("lookup", e))?;
    let cur = mysql_objects(&mut c, db)
        .await
        .map_err(|e| err("lookup", e))?;
    let new = mysql_objects(&mut c, &tmp)
        .await
        .map_err(|e| err("lookup", e))?;
    // Tables with triggers cannot move between databases, nor can views: they are made
    // again after the move.
    let mut drops = vec![];
    drops.extend(
        cur.triggers
            .iter()
            .map(|(n, _)| format!("DROP TRIGGER {d}.{}", mysql_ident(n))),
    );
    drops.extend(
        cur.views
            .iter()
            .map(|(n, _)| format!("DROP VIEW {d}.{}", mysql_ident(n))),
    );
    drops.extend(
        new.triggers
            .iter()
            .map(|(n, _)| format!("DROP TRIGGER {t}.{}", mysql_ident(n))),
    );
    let mut rename: Vec<String> = current
        .iter()
        .map(|x| format!("{d}.{q} TO {o}.{q}", q = mysql_ident(x)))
        .collect();
    rename.extend(
        restored
            .iter()
            .map(|x| format!("{t}.{q} TO {d}.{q}", q = mysql_ident(x))),
    );
    let moved = async {
        c.query_drop(format!("CREATE DATABASE {o}")).await?;
        for sql in &drops {
            c.query_drop(sql.as_str()).await?;
        }
        if !rename.is_empty() {
            c.query_drop(format!("RENAME TABLE {}", rename.join(", ")))
                .await?;
        }
        c.query_drop(format!("USE {d}")).await?;
        Ok::<(), mysql_async::Error>(())
    }
    .await;
    if moved.is_err() {
        // Nothing moved (RENAME TABLE is all or nothing): the current views and triggers
        // are made again as they were.
        let _ = c.query_drop(format!("USE {d}")).await;
        let again = cur
            .views
            .iter()
            .chain(cur.triggers.iter())
            .map(|(_, sql)| sql.clone())
            .collect();
        mysql_create_all(&mut c, again).await;
        let _ = c.query_drop(format!("DROP DATABASE IF EXISTS {o}")).await;
    }
    moved.map_err(|e| err(&format!("replacing the tables of database {db}"), e))?;
    // The backup's objects in place of the current ones. Their definitions name the
    // database they were loaded into.
    let from = format!("{t}.");
    let to = format!("{d}.");
    for (kind, name, _) in &cur.routines {
        let _ = c
            .query_drop(format!("DROP {kind} IF EXISTS {d}.{}", mysql_ident(name)))
            .await;
    }
    let mut todo: Vec<String> = new
        .routines
        .iter()
        .map(|(_, _, sql)| sql.replace(&from, &to))
        .collect();
    todo.extend(new.views.iter().map(|(_, sql)| sql.replace(&from, &to)));
    todo.extend(new.triggers.iter().map(|(_, sql)| sql.replace(&from, &to)));
    let errors = mysql_create_all(&mut c, todo).await;
    let _ = c.disconnect().await;
    if !errors.is_empty() {
        return Err(ProviderError::Failed {
            server: admin.server.clone(),
            action: format!("restoring the views, triggers and routines of database {db}"),
            reason: format!(
                "its tables are restored, but: {}",
                scrub(errors.join("; "), &admin.secrets())
            ),
        });
    }
    Ok(())
}

fn mysql_literal(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
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
