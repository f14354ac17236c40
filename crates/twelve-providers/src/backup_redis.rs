//! Redis backups: `BGSAVE`, then a copy of the RDB file it wrote (the file is opened once,
//! so a later save renaming a new file over it does not change what is copied), for the
//! service's server and each integrated app's own server (`apps/<app>/`, see `redis.rs`).
//! A restore stops those servers, puts the RDB files back and starts the service again:
//! Redis loads each file whole. Kept apart from `redis.rs`, which it only asks to stop and start the server.

use std::io::Read;
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

    async fn config(&mut self, key: &str) -> Result<String> {
        let v: Vec<String> = self
            .run(
                &format!("CONFIG GET {key}"),
                redis::cmd("CONFIG").arg("GET").arg(key),
            )
            .await?;
        Ok(v.get(1).cloned().unwrap_or_default())
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

/// The servers of a managed Redis service: its own (`dump.rdb`) and each app's own
/// server under `apps/<app>/` (`<app>.rdb`), as (part, server).
fn servers(server: &Server, apps: &[String]) -> Vec<(String, Server)> {
    let Server::Managed { dir, .. } = server else {
        return vec![];
    };
    let mut out = vec![(PART.to_string(), server.clone())];
    for app in apps {
        let d = dir.join("apps").join(app);
        let port = std::fs::read_to_string(d.join("port"))
            .ok()
            .and_then(|s| s.trim().parse::<u16>().ok());
        if let Some(p) = port {
            out.push((
                format!("{app}.rdb"),
                Server::managed(crate::Kind::Redis, d, p),
            ));
        }
    }
    out
}

pub(crate) async fn dump(
    server: &Server,
    apps: &[String],
    sink: &mut dyn PartSink,
) -> Result<Vec<DumpPart>> {
    managed_only(server, "backups")?;
    let mut parts = vec![];
    for (part, one) in servers(server, apps) {
        dump_one(&one, &part, sink).await?;
        parts.push(DumpPart {
            name: part.clone(),
            database: part.trim_end_matches(".rdb").to_string(),
        });
    }
    Ok(parts)
}

async fn dump_one(server: &Server, part: &str, sink: &mut dyn PartSink) -> Result<()> {
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
    let dir = c.config("dir").await?;
    let file = PathBuf::from(dir).join(c.config("dbfilename").await?);
    let mut input = std::fs::File::open(&file).map_err(|e| ProviderError::io(&file, e))?;
    let mut w = sink.create(part).map_err(|e| ProviderError::io(&file, e))?;
    let path = file.clone();
    tokio::task::spawn_blocking(move || {
        std::io::copy(&mut input, &mut w)?;
        w.finish()
    })
    .await
    .expect("backup worker panicked")
    .map_err(|e| ProviderError::io(&path, e))?;
    Ok(())
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
    if info.parts.is_empty() {
        return Err(ProviderError::Failed {
            server: server.describe(),
            action: "restoring the backup".into(),
            reason: "the backup has no RDB file".into(),
        });
    }
    let apps: Vec<String> = info
        .parts
        .iter()
        .filter_map(|p| p.name.strip_suffix(".rdb"))
        .filter(|n| format!("{n}.rdb") != PART)
        .map(str::to_string)
        .collect();
    let targets = servers(server, &apps);
    // Every file is staged beside the server's own first, so a read error changes nothing.
    let mut staged = vec![];
    for part in &info.parts {
        let Some((_, one)) = targets.iter().find(|(n, _)| *n == part.name) else {
            continue;
        };
        let mut c = Conn::open(one).await?;
        let rdb_dir = PathBuf::from(c.config("dir").await?);
        let file = rdb_dir.join(c.config("dbfilename").await?);
        drop(c);
        let tmp = rdb_dir.join(".twelve-restore.rdb");
        let mut input = source
            .open(&part.name)
            .map_err(|e| ProviderError::io(&tmp, e))?;
        let st = tmp.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut out = std::fs::File::create(&st)?;
            std::io::copy(&mut input, &mut out)?;
            out.sync_all()
        })
        .await
        .expect("restore worker panicked")
        .map_err(|e| ProviderError::io(&tmp, e))?;
        let mut magic = [0u8; 5];
        let ok = std::fs::File::open(&tmp)
            .and_then(|mut f| f.read_exact(&mut magic))
            .is_ok()
            && &magic == b"REDIS";
        if !ok {
            let _ = std::fs::remove_file(&tmp);
            return Err(ProviderError::Failed {
                server: server.describe(),
                action: "restoring the backup".into(),
                reason: format!("{} is not a Redis RDB file", part.name),
            });
        }
        let Server::Managed { dir: d, .. } = one else {
            unreachable!()
        };
        staged.push((d.clone(), tmp, file));
    }
    // Redis saves its data as it stops: each restored file goes in after its server stopped;
    // then the service starts again, with the apps' own servers.
    for (d, tmp, file) in staged {
        if let Some(pid) = util::pid_from_file(&d.join("redis.pid")) {
            util::terminate(pid, Duration::from_secs(20)).await;
        }
        std::fs::rename(&tmp, &file).map_err(|e| ProviderError::io(&file, e))?;
    }
    p.start_managed(*kind, dir, *port).await?;
    Ok(())
}
