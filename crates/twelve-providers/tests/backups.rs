//! Dumps and restores against the real servers of this machine (PostgreSQL on 5432,
//! MariaDB on 3306, Redis on 6379) and a managed Redis: what was written before the dump
//! is what a restore brings back, and refusals are clear.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

use common::*;
use twelve_providers::{
    DumpInfo, Kind, PartSink, PartSource, PartWrite, ProviderError, Providers, Server,
};

const PG_ADMIN: &str = "postgresql://postgres@127.0.0.1:5432/postgres";
const MYSQL_ADMIN: &str = "mysql://root@127.0.0.1:3306/";

/// Parts kept in memory.
#[derive(Clone, Default)]
struct Memory(Arc<Mutex<HashMap<String, Vec<u8>>>>);

struct MemWriter {
    name: String,
    buf: Vec<u8>,
    store: Memory,
}

impl Write for MemWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl PartWrite for MemWriter {
    fn finish(self: Box<Self>) -> std::io::Result<()> {
        self.store.0.lock().unwrap().insert(self.name, self.buf);
        Ok(())
    }
}

impl PartSink for Memory {
    fn create(&mut self, part: &str) -> std::io::Result<Box<dyn PartWrite>> {
        Ok(Box::new(MemWriter {
            name: part.into(),
            buf: vec![],
            store: self.clone(),
        }))
    }
}

impl PartSource for Memory {
    fn open(&self, part: &str) -> std::io::Result<Box<dyn Read + Send>> {
        let data = self
            .0
            .lock()
            .unwrap()
            .get(part)
            .cloned()
            .unwrap_or_default();
        Ok(Box::new(std::io::Cursor::new(data)))
    }
}

/// Write "before", dump, write "after", restore: "before" is back.
async fn round_trip(server: &Server) -> (DumpInfo, Memory) {
    let kind = server.kind();
    let p = Providers::new();
    let app = format!("bk-{}", suffix());
    let _cleanup = Cleanup {
        server: server.clone(),
        apps: vec![app.clone()],
    };
    let data = p.provision(server, &app).await.expect("provision");
    write(kind, &app, uri(&data), "before").await.unwrap();
    let mut mem = Memory::default();
    let info = p
        .dump(server, std::slice::from_ref(&app), &mut mem)
        .await
        .expect("dump");
    assert!(info.version_num > 0, "{info:?}");
    assert!(!info.parts.is_empty(), "{info:?}");
    write(kind, &app, uri(&data), "after").await.unwrap();
    p.restore(server, &info, &mem).await.expect("restore");
    assert_eq!(
        read(kind, &app, uri(&data)).await.unwrap().as_deref(),
        Some("before"),
        "{kind}"
    );
    // A backup from a newer server is refused before anything changes.
    let mut newer = info.clone();
    newer.version_num += 10000;
    newer.server_version = "99.9".into();
    let err = p
        .restore(server, &newer, &mem)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("99.9") && err.contains("newer"), "{err}");
    assert_eq!(
        read(kind, &app, uri(&data)).await.unwrap().as_deref(),
        Some("before")
    );
    (info, mem)
}

#[tokio::test]
async fn postgresql_dump_and_restore_on_an_adopted_server() {
    let server = Server::external(Kind::Postgresql, PG_ADMIN);
    let (info, mem) = round_trip(&server).await;
    // pg_dump's custom format, uncompressed (twelve compresses the whole).
    let part = mem.0.lock().unwrap()[&info.parts[0].name].clone();
    assert_eq!(&part[..5], b"PGDMP");
    // A backup whose part cannot be read leaves no half-made database behind.
    struct Missing;
    impl PartSource for Missing {
        fn open(&self, _: &str) -> std::io::Result<Box<dyn Read + Send>> {
            Err(std::io::ErrorKind::NotFound.into())
        }
    }
    let err = Providers::new()
        .restore(&server, &info, &Missing)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("reading the backup"), "{err}");
    let c = pg(PG_ADMIN).await.unwrap();
    let left = c
        .query_opt(
            "SELECT datname FROM pg_database WHERE datname = $1",
            &[&format!("{}$restore", info.parts[0].database)],
        )
        .await
        .unwrap();
    assert!(left.is_none());
}

#[tokio::test]
async fn mysql_dump_and_restore_on_an_adopted_server() {
    let (info, mem) = round_trip(&Server::external(Kind::Mysql, MYSQL_ADMIN)).await;
    let part = String::from_utf8(mem.0.lock().unwrap()[&info.parts[0].name].clone()).unwrap();
    assert!(part.contains("INSERT INTO `notes`"), "{part}");
}

#[tokio::test]
async fn redis_dump_and_restore_on_a_managed_server() {
    let m = Managed::start(Kind::Redis).await;
    let (info, mem) = round_trip(&m.server).await;
    // The service's server and the app's own one.
    assert_eq!(info.parts.len(), 2, "{info:?}");
    assert_eq!(info.parts[0].name, "dump.rdb");
    assert!(info.parts[1].name.starts_with("app-bk-"), "{info:?}");
    for p in &info.parts {
        assert_eq!(&mem.0.lock().unwrap()[&p.name][..5], b"REDIS");
    }
}

#[tokio::test]
async fn rabbitmq_definitions_export_and_import() {
    let server = Server::external(Kind::Rabbitmq, "amqp://guest:guest@127.0.0.1:5672/");
    let p = Providers::new();
    let app = format!("bk-{}", suffix());
    let _cleanup = Cleanup {
        server: server.clone(),
        apps: vec![app.clone()],
    };
    let data = p.provision(&server, &app).await.expect("provision");
    let mut mem = Memory::default();
    let info = p.dump(&server, &[], &mut mem).await.expect("dump");
    assert!(info.server_version.starts_with('3'), "{info:?}");
    let defs: serde_json::Value =
        serde_json::from_slice(&mem.0.lock().unwrap()["definitions.json"]).unwrap();
    assert!(
        defs["vhosts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == app.as_str()),
        "{defs}"
    );
    // The app's vhost and user go; the restore brings both back, password included.
    p.revoke(&server, &app, true).await.unwrap();
    assert!(login(Kind::Rabbitmq, uri(&data)).await.is_err());
    p.restore(&server, &info, &mem).await.expect("restore");
    login(Kind::Rabbitmq, uri(&data))
        .await
        .expect("the app's account is back");
}

#[tokio::test]
async fn adopted_redis_backups_are_refused_clearly() {
    let server = Server::external(Kind::Redis, "redis://127.0.0.1:6379");
    let err = Providers::new()
        .dump(&server, &[], &mut Memory::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains("adopted Redis"), "{err}");
}

/// An adopted server's admin that cannot read an app's database: a message naming the
/// role, the database and the grant that fixes it, not pg_dump's first error.
#[tokio::test]
async fn postgresql_admin_without_read_rights_is_refused_clearly() {
    let admin = Server::external(Kind::Postgresql, PG_ADMIN);
    let p = Providers::new();
    let s = suffix();
    let app = format!("bk-{s}");
    let weak = format!("bk_weak_{s}");
    let _cleanup = Cleanup {
        server: admin.clone(),
        apps: vec![app.clone()],
    };
    p.provision(&admin, &app).await.expect("provision");
    let c = pg(PG_ADMIN).await.unwrap();
    c.batch_execute(&format!("CREATE ROLE {weak} LOGIN CREATEROLE CREATEDB"))
        .await
        .unwrap();
    let server = Server::external(
        Kind::Postgresql,
        format!("postgresql://{weak}@127.0.0.1:5432/postgres"),
    );
    let err = p
        .dump(&server, std::slice::from_ref(&app), &mut Memory::default())
        .await
        .unwrap_err()
        .to_string();
    c.batch_execute(&format!("DROP ROLE {weak}")).await.unwrap();
    let db = app.replace('-', "_");
    assert!(
        err.contains(&format!("cannot read database `{db}`"))
            && err.contains(&format!("GRANT {db} TO {weak}")),
        "{err}"
    );
}
