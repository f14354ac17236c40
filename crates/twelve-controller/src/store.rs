//! The embedded store: SQLite with full synchronous commits, one JSON document per app.
//! Every change is one transaction, so the state survives a kill -9 at any point.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};

use crate::model::{AppRecord, SecretRecord, ServiceRecord};

pub struct Store {
    conn: Mutex<Connection>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("state store holds a record it cannot read: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("state store {path}: {error}")]
    Io { path: String, error: std::io::Error },
}

/// Makes `path` 0600, creating it (empty) when `create` and it is missing.
fn make_private(path: &Path, create: bool) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io = |error| StoreError::Io {
        path: path.display().to_string(),
        error,
    };
    if create {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
    } else if !path.exists() {
        return Ok(());
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)
}

impl Store {
    /// Opens (or creates) the store at `path`. The database, its write-ahead log and its
    /// shared-memory index are 0600: SQLite gives the `-wal` and `-shm` files the mode of
    /// the database file, so that file is made 0600 before SQLite opens it.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        make_private(path, true)?;
        let conn = Connection::open(path)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=FULL;
             PRAGMA busy_timeout=5000;
             CREATE TABLE IF NOT EXISTS apps (name TEXT PRIMARY KEY, doc TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS secrets (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, doc TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS services (name TEXT PRIMARY KEY, doc TEXT NOT NULL);",
        )?;
        // A store an older twelve created may have left them readable.
        for f in &Store::files(path)[1..] {
            make_private(f, false)?;
        }
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    /// The store's files, for tests and checks: the database, `-wal` and `-shm`.
    pub fn files(path: &Path) -> [std::path::PathBuf; 3] {
        let with = |suffix: &str| {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            std::path::PathBuf::from(p)
        };
        [path.to_path_buf(), with("-wal"), with("-shm")]
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One JSON document, decoded.
    fn one<T: serde::de::DeserializeOwned>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Option<T>, StoreError> {
        let doc: Option<String> = self
            .conn()
            .query_row(sql, params, |r| r.get(0))
            .optional()?;
        doc.map(|d| serde_json::from_str(&d).map_err(StoreError::from))
            .transpose()
    }

    /// Every JSON document a query returns, decoded.
    fn all<T: serde::de::DeserializeOwned>(&self, sql: &str) -> Result<Vec<T>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(sql)?;
        let docs: Vec<String> = stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        docs.iter()
            .map(|d| serde_json::from_str(d).map_err(StoreError::from))
            .collect()
    }

    pub fn app(&self, name: &str) -> Result<Option<AppRecord>, StoreError> {
        self.one("SELECT doc FROM apps WHERE name = ?1", params![name])
    }

    pub fn apps(&self) -> Result<Vec<AppRecord>, StoreError> {
        self.all("SELECT doc FROM apps ORDER BY name")
    }

    pub fn put_app(&self, app: &AppRecord) -> Result<(), StoreError> {
        let doc = serde_json::to_string(app)?;
        self.conn().execute(
            "INSERT INTO apps (name, doc) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET doc = excluded.doc",
            params![app.name, doc],
        )?;
        Ok(())
    }

    /// Reads, changes and writes one app in a single transaction.
    pub fn update_app<T>(
        &self,
        name: &str,
        f: impl FnOnce(&mut AppRecord) -> Result<T, String>,
    ) -> Result<Result<T, String>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let doc: Option<String> = tx
            .query_row("SELECT doc FROM apps WHERE name = ?1", params![name], |r| {
                r.get(0)
            })
            .optional()?;
        let Some(doc) = doc else {
            return Ok(Err(format!("app {name:?} not found")));
        };
        let mut app: AppRecord = serde_json::from_str(&doc)?;
        let out = match f(&mut app) {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        };
        app.generation += 1;
        tx.execute(
            "UPDATE apps SET doc = ?2 WHERE name = ?1",
            params![name, serde_json::to_string(&app)?],
        )?;
        tx.commit()?;
        Ok(Ok(out))
    }

    pub fn delete_app(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .execute("DELETE FROM apps WHERE name = ?1", params![name])?
            > 0)
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| {
                r.get(0)
            })
            .optional()?)
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    /// A secret by name, or by id (with or without `secret:`).
    pub fn secret(&self, name_or_id: &str) -> Result<Option<SecretRecord>, StoreError> {
        let id = name_or_id.strip_prefix("secret:").unwrap_or(name_or_id);
        self.one(
            "SELECT doc FROM secrets WHERE name = ?1 OR id = ?2",
            params![name_or_id, id],
        )
    }

    pub fn secrets(&self) -> Result<Vec<SecretRecord>, StoreError> {
        self.all("SELECT doc FROM secrets ORDER BY name")
    }

    pub fn put_secret(&self, s: &SecretRecord) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO secrets (id, name, doc) VALUES (?1, ?2, ?3)
             ON CONFLICT(id) DO UPDATE SET name = excluded.name, doc = excluded.doc",
            params![s.id, s.name, serde_json::to_string(s)?],
        )?;
        Ok(())
    }

    pub fn delete_secret(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .execute("DELETE FROM secrets WHERE id = ?1", params![id])?
            > 0)
    }

    pub fn service(&self, name: &str) -> Result<Option<ServiceRecord>, StoreError> {
        self.one("SELECT doc FROM services WHERE name = ?1", params![name])
    }

    pub fn services(&self) -> Result<Vec<ServiceRecord>, StoreError> {
        self.all("SELECT doc FROM services ORDER BY name")
    }

    pub fn put_service(&self, s: &ServiceRecord) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO services (name, doc) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET doc = excluded.doc",
            params![s.name, serde_json::to_string(s)?],
        )?;
        Ok(())
    }

    pub fn delete_service(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .execute("DELETE FROM services WHERE name = ?1", params![name])?
            > 0)
    }
}
