//! Helpers: app names, clean-up guards and per-kind clients acting with an app's
//! credentials.
#![allow(dead_code)]

use std::path::PathBuf;

use mysql_async::prelude::Queryable;
use rand::distr::{Alphanumeric, SampleString};
use twelve_providers::{AmqpConn, Kind, Providers, RelationData, Server};

pub fn suffix() -> String {
    Alphanumeric
        .sample_string(&mut rand::rng(), 6)
        .to_lowercase()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Revokes the apps with destroy_data when dropped, even when the test panicked.
pub struct Cleanup {
    pub server: Server,
    pub apps: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let server = self.server.clone();
        let apps = std::mem::take(&mut self.apps);
        // Drop may run inside a tokio runtime: use a thread of our own.
        let _ = std::thread::spawn(move || {
            block_on(async {
                for app in apps {
                    if let Err(e) = Providers::new().revoke(&server, &app, true).await {
                        eprintln!("cleanup of {app}: {e}");
                    }
                }
            })
        })
        .join();
    }
}

/// A managed server in a temporary directory, stopped when dropped.
pub struct Managed {
    pub server: Server,
    pub tmp: tempfile::TempDir,
}

impl Managed {
    pub async fn start(kind: Kind) -> Managed {
        let tmp = tempfile::Builder::new()
            .prefix("twelve-prov-")
            .tempdir()
            .unwrap();
        // PostgreSQL runs as an unprivileged user when the tests run as root.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let dir: PathBuf = tmp.path().join(kind.name());
        let port = free_port();
        let p = Providers::new();
        let info = p
            .start_managed(kind, &dir, port)
            .await
            .unwrap_or_else(|e| panic!("start {kind}: {e}"));
        assert!(info.pid > 0);
        assert!(!info.admin_url.contains(':') || !info.admin_url.contains("@127.0.0.1:0"));
        let server = Server::managed(kind, dir, port);
        Managed { server, tmp }
    }
}

impl Drop for Managed {
    fn drop(&mut self) {
        let server = self.server.clone();
        let _ = std::thread::spawn(move || {
            block_on(async { Providers::new().stop_managed(&server).await })
        })
        .join();
    }
}

pub fn uri(d: &RelationData) -> &str {
    d.get("uri").expect("uri in relation data")
}

/// URL of `data` but for database/vhost `target`: app A's credentials, B's database.
pub fn retarget(data: &RelationData, target: &str) -> String {
    let mut u = url::Url::parse(uri(data)).unwrap();
    u.set_path(&format!("/{target}"));
    u.to_string()
}

// ---- acting as an app ----

pub async fn pg(url: &str) -> Result<tokio_postgres::Client, String> {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| pg_err(&e))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(c)
}

fn pg_err(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_else(|| format!("{e:?}"))
}

async fn my(url: &str) -> Result<mysql_async::Conn, String> {
    let opts = mysql_async::Opts::from_url(url).map_err(|e| e.to_string())?;
    mysql_async::Conn::new(opts)
        .await
        .map_err(|e| e.to_string())
}

async fn rd(url: &str) -> Result<redis::aio::MultiplexedConnection, String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())
}

/// The databases the app's MySQL user sees (`SHOW DATABASES`).
pub async fn mysql_databases(url: &str) -> Result<Vec<String>, String> {
    let mut c = my(url).await?;
    let dbs = c.query("SHOW DATABASES").await.map_err(|e| e.to_string());
    let _ = c.disconnect().await;
    dbs
}

/// Log in with the app's credentials.
pub async fn login(kind: Kind, url: &str) -> Result<(), String> {
    match kind {
        Kind::Postgresql => pg(url).await.map(|_| ()),
        Kind::Mysql => my(url).await.map(|c| drop(c.disconnect())),
        Kind::Redis => {
            let mut c = rd(url).await?;
            redis::cmd("PING")
                .query_async::<String>(&mut c)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        Kind::Rabbitmq => {
            let mut c = AmqpConn::open(url).await.map_err(|e| e.to_string())?;
            c.close().await;
            Ok(())
        }
    }
}

/// Store `value` in the app's space (table `notes`, key `<app>:note`, queue `notes`).
pub async fn write(kind: Kind, app: &str, url: &str, value: &str) -> Result<(), String> {
    match kind {
        Kind::Postgresql => {
            let c = pg(url).await?;
            c.batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS notes (v text); DELETE FROM notes; INSERT INTO notes VALUES ('{value}')"
            ))
            .await
            .map_err(|e| pg_err(&e))
        }
        Kind::Mysql => {
            let mut c = my(url).await?;
            let r = c
                .query_drop(format!(
                    "CREATE TABLE IF NOT EXISTS notes (v TEXT); DELETE FROM notes; INSERT INTO notes VALUES ('{value}')"
                ))
                .await
                .map_err(|e| e.to_string());
            let _ = c.disconnect().await;
            r
        }
        Kind::Redis => {
            let mut c = rd(url).await?;
            redis::cmd("SET")
                .arg(format!("{app}:note"))
                .arg(value)
                .query_async::<()>(&mut c)
                .await
                .map_err(|e| e.to_string())
        }
        Kind::Rabbitmq => {
            let mut c = AmqpConn::open(url).await.map_err(|e| e.to_string())?;
            c.queue_declare("notes").await.map_err(|e| e.to_string())?;
            while c.get("notes").await.map_err(|e| e.to_string())?.is_some() {}
            c.publish("notes", value.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            // A round trip so that the publish has been handled before closing.
            c.queue_declare("notes").await.map_err(|e| e.to_string())?;
            c.close().await;
            Ok(())
        }
    }
}

/// Read what `write` stored in `app`'s space (None: nothing there). `url` may carry
/// another app's credentials.
pub async fn read(kind: Kind, app: &str, url: &str) -> Result<Option<String>, String> {
    match kind {
        Kind::Postgresql => {
            let c = pg(url).await?;
            let exists = c
                .query_opt("SELECT 1 FROM pg_tables WHERE tablename = 'notes'", &[])
                .await
                .map_err(|e| pg_err(&e))?;
            if exists.is_none() {
                return Ok(None);
            }
            let row = c
                .query_opt("SELECT v FROM notes LIMIT 1", &[])
                .await
                .map_err(|e| pg_err(&e))?;
            Ok(row.map(|r| r.get(0)))
        }
        Kind::Mysql => {
            let mut c = my(url).await?;
            let db = sql(app);
            let r: Result<Option<String>, String> = c
                .query_first(format!("SELECT v FROM `{db}`.notes LIMIT 1"))
                .await
                .map_err(|e| e.to_string());
            let _ = c.disconnect().await;
            match r {
                Err(e) if e.contains("doesn't exist") => Ok(None),
                r => r,
            }
        }
        Kind::Redis => {
            let mut c = rd(url).await?;
            redis::cmd("GET")
                .arg(format!("{app}:note"))
                .query_async::<Option<String>>(&mut c)
                .await
                .map_err(|e| e.to_string())
        }
        Kind::Rabbitmq => {
            let mut c = AmqpConn::open(url).await.map_err(|e| e.to_string())?;
            c.queue_declare("notes").await.map_err(|e| e.to_string())?;
            let got = c.get("notes").await.map_err(|e| e.to_string())?;
            if let Some(body) = &got {
                // Put it back: reading is a peek.
                c.publish("notes", body).await.map_err(|e| e.to_string())?;
                c.queue_declare("notes").await.map_err(|e| e.to_string())?;
            }
            c.close().await;
            Ok(got.map(|b| String::from_utf8_lossy(&b).into_owned()))
        }
    }
}

pub fn sql(app: &str) -> String {
    app.replace('-', "_")
}
