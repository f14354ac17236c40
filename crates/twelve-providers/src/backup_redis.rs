//! Redis backups: `BGSAVE`, then a copy of the RDB file it wrote (the file is opened once,
//! so a later save renaming a new file over it does not change what is copied), for the
//! service's server and for each integrated app's own server (`redis.rs`: a managed Redis
//! gives every app a server of its own), one part each. A restore stops the servers, puts
//! the RDB files back and starts them again: Redis loads them whole. Kept apart from
//! `redis.rs`, which it only asks where the app servers are and to stop and start them.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;

use crate::backup::{DumpInfo, DumpPart, PartSink, PartSource};
use crate::util::{self, scrub};
use crate::{ProviderError, Providers, Result, Server};

const PART: &str = "dump.rdb";

struct Conn {
    server: String,
    secrets: Vec<String>,
    c: MultiplexedConnection,
}

impl Conn {
    async fn open(server: &Server) -> Result<Conn> {
        let desc = server.describe();
        let (url, secrets) = match server {
            Server::Managed { dir, port, .. } => {
                let pw =
                    util::read_admin_secret(dir).ok_or_else(|| ProviderError::Unreachable {
                        server: desc.clone(),
                        reason: format!("{} is missing", dir.join("admin.secret").display()),
                    })?;
                (format!("redis://default:{pw}@127.0.0.1:{port}"), vec![pw])
            }
            Server::External { admin_url, .. } => {
                let pw = url::Url::parse(admin_url)
                    .ok()
                    .and_then(|u| u.password().map(util::percent_decode));
                (admin_url.clone(), pw.into_iter().collect())
            }
        };
        let s: Vec<&str> = secrets.iter().map(String::as_str).collect();
        let unreachable = |reason: String| ProviderError::Unreachable {
            server: desc.clone(),
            reason,
        };
        let client = redis::Client::open(url.as_str()).map_err(|e| unreachable(scrub(e, &s)))?;
        let c = tokio::time::timeout(
            Duration::from_secs(10),
            client.get_multiplexed_async_connection(),
        )
        .await
        .map_err(|_| unreachable("timed out after 10 s".into()))?
        .map_err(|e| unreachable(scrub(e, &s)))?;
        Ok(Conn {
            server: desc,
            secrets,
            c,
        })
    }

    async fn run<T: redis::FromRedisValue>(&mut self, action: &str, cmd: &redis::Cmd) -> Result<T> {
        cmd.query_async(&mut self.c).await.map_err(|e| {
            let s: Vec<&str> = self.secrets.iter().map(String::as_str).collect();
            ProviderError::Failed {
                server: self.server.clone(),
                action: action.into(),
                reason: scrub(e, &s),
            }
        })
    }

    async fn info(&mut self, section: &str) -> Result<String> {
        self.run(&format!("INFO {section}"), redis::cmd("INFO").arg(section))
            .await
    }
}

fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
        .map(str::trim)
}

fn managed_only(server: &Server, what: &str) -> Result<()> {
    if server.is_managed() {
        return Ok(());
    }
    Err(ProviderError::Unsupported {
        what: format!("{what} of an adopted Redis"),
        hint: "twelve copies the RDB file of the Redis servers it runs; back an adopted one up where it runs".into(),
    })
}

pub(crate) async fn server_version(server: &Server) -> Result<(String, u64)> {
    let mut c = Conn::open(server).await?;
    let info = c.info("server").await?;
    let v = field(&info, "redis_version").unwrap_or("").to_string();
    let n = crate::backup::version_number(&v);
    Ok((v, n))
}

async fn wait_no_save(c: &mut Conn, deadline: Instant) -> Result<String> {
    loop {
        let info = c.info("persistence").await?;
        if field(&info, "rdb_bgsave_in_progress") != Some("1") {
            return Ok(info);
        }
        if Instant::now() > deadline {
            return Err(ProviderError::Failed {
                server: c.server.clone(),
                action: "BGSAVE".into(),
                reason: "the save did not finish within 10 minutes".into(),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) async fn dump(server: &Server, sink: &mut dyn PartSink) -> Result<Vec<DumpPart>> {
    managed_only(server, "backups")?;
    let Server::Managed { dir, .. } = server else {
        unreachable!()
    };
    let mut parts = vec![save_one(server, PART, "*", sink).await?];
    for app in crate::redis::active_apps(dir) {
        let d = crate::redis::app_dir(dir, &app);
        let Some(port) = crate::redis::recorded_port(&d) else {
            continue;
        };
        let own = Server::managed(crate::Kind::Redis, d, port);
        parts.push(save_one(&own, &app_part(&app), &app, sink).await?);
    }
    Ok(parts)
}

/// The part holding an app's own server's RDB file (a flat name: parts are files).
fn app_part(app: &str) -> String {
    format!("app-{app}.rdb")
}

/// `BGSAVE` on one server and a copy of its RDB file as the part `name`.
async fn save_one(
    server: &Server,
    name: &str,
    database: &str,
    sink: &mut dyn PartSink,
) -> Result<DumpPart> {
    let mut c = Conn::open(server).await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    // One save of our own: wait out one already running, then start ours.
    loop {
        wait_no_save(&mut c, deadline).await?;
        let r: std::result::Result<String, _> = c.run("BGSAVE", &redis::cmd("BGSAVE")).await;
        match r {
            Ok(_) => break,
            Err(ProviderError::Failed { reason, .. })
                if reason.contains("in progress") && Instant::now() < deadline =>
            {
                continue
            }
            Err(e) => return Err(e),
        }
    }
    let info = wait_no_save(&mut c, deadline).await?;
    if field(&info, "rdb_last_bgsave_status") != Some("ok") {
        return Err(ProviderError::Failed {
            server: c.server.clone(),
            action: "BGSAVE".into(),
            reason: "the background save failed; see the server's log".into(),
        });
    }
    let file = rdb_file(server)?;
    let (mut input, _) =
        util::open_regular_nofollow(&file).map_err(|e| ProviderError::io(&file, e))?;
    let mut w = sink.create(name).map_err(|e| ProviderError::io(&file, e))?;
    let path = file.clone();
    tokio::task::spawn_blocking(move || {
        std::io::copy(&mut input, &mut w)?;
        w.finish()
    })
    .await
    .expect("backup worker panicked")
    .map_err(|e| ProviderError::io(&path, e))?;
    Ok(DumpPart {
        name: name.into(),
        database: database.into(),
    })
}

pub(crate) async fn restore(
    p: &Providers,
    server: &Server,
    info: &DumpInfo,
    source: &dyn PartSource,
) -> Result<()> {
    managed_only(server, "restores")?;
    let Server::Managed { kind, dir, port } = server else {
        unreachable!()
    };
    let Some(part) = info.parts.iter().find(|p| p.name == PART) else {
        return Err(ProviderError::Failed {
            server: server.describe(),
            action: "restoring the backup".into(),
            reason: "the backup has no RDB file".into(),
        });
    };
    // Every file is written beside the real one first, so a read error leaves the servers
    // as they were; then they stop, the files go in, and they start again.
    let mut staged = vec![stage(server, &part.name, source).await?];
    for part in info.parts.iter().filter(|p| p.name != PART) {
        let Some(app) = part
            .name
            .strip_prefix("app-")
            .and_then(|r| r.strip_suffix(".rdb"))
        else {
            continue;
        };
        let d = crate::redis::app_dir(dir, app);
        // An app no longer integrated (or not yet again) has no server to restore into.
        let Some(port) = crate::redis::recorded_port(&d) else {
            continue;
        };
        let own = Server::managed(crate::Kind::Redis, d, port);
        staged.push(stage(&own, &part.name, source).await?);
    }
    // Redis saves its data as it stops: the restored files go in after.
    crate::redis::stop(dir, *port).await?;
    for (staged, file) in &staged {
        std::fs::rename(staged, file).map_err(|e| ProviderError::io(file, e))?;
    }
    p.start_managed(*kind, dir, *port).await?;
    Ok(())
}

/// The RDB file of a managed server: `dump.rdb` in the directory twelve starts it with
/// (`--dir`). Not what the server says (`CONFIG GET dir`): it runs as a user of its own,
/// and root must not read or replace a file a server names.
fn rdb_file(server: &Server) -> Result<PathBuf> {
    match server {
        Server::Managed { dir, .. } => Ok(dir.join("dump.rdb")),
        _ => managed_only(server, "backups").map(|()| PathBuf::new()),
    }
}

/// Writes a part beside the server's RDB file and checks it is one; (staged, real) paths.
async fn stage(server: &Server, part: &str, source: &dyn PartSource) -> Result<(PathBuf, PathBuf)> {
    let file = rdb_file(server)?;
    let staged = file.with_file_name(".twelve-restore.rdb");
    let mut input = source
        .open(part)
        .map_err(|e| ProviderError::io(&staged, e))?;
    let st = staged.clone();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        // A new file: never through a link the server's user planted.
        match std::fs::remove_file(&st) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&st)?;
        std::io::copy(&mut input, &mut out)?;
        out.sync_all()
    })
    .await
    .expect("restore worker panicked")
    .map_err(|e| ProviderError::io(&staged, e))?;
    let mut magic = [0u8; 5];
    let ok = util::open_regular_nofollow(&staged)
        .and_then(|(mut f, _)| f.read_exact(&mut magic))
        .is_ok()
        && &magic == b"REDIS";
    if !ok {
        let _ = std::fs::remove_file(&staged);
        return Err(ProviderError::Failed {
            server: server.describe(),
            action: "restoring the backup".into(),
            reason: format!("the backed-up {part} is not a Redis RDB file"),
        });
    }
    Ok((staged, file))
}
