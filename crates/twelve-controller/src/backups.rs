//! Backups of the backing services (`twelve run postgresql create-backup`, `list-backups`,
//! `restore backup-id=ID`), kept in `TWELVE_HOME/backups/<service>/` or on S3 after
//! `twelve integrate postgresql s3 --data ...`, made on a cron schedule
//! (`twelve config postgresql backup-schedule="0 3 * * *" backup-retention=7`).
//!
//! twelve-providers makes the dumps (pg_dump, mysqldump, Redis BGSAVE) and restores them;
//! this module decides where they go: each part is compressed with zstd and, on S3, sealed
//! with the controller's key in chunks (XChaCha20-Poly1305, STREAM nonces: a random prefix,
//! the chunk number and a last-chunk flag, so chunks cannot be dropped, reordered or cut).
//! A backup is a directory (or key prefix) `<id>/` with its parts and a `meta.json`
//! written last: a backup without one is incomplete and not listed.

use std::collections::{HashMap, HashSet};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use chacha20poly1305::aead::Aead;
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use twelve_providers::{DumpInfo, Kind, PartSink, PartSource, PartWrite};

use crate::api::ApiError;
use crate::controller::Controller;
use crate::model::ServiceRecord;

type ApiResult = Result<Value, ApiError>;

/// Per service: the schedule, retention, the S3 integration (sealed) and the last backup.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct BackupSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<u32>,
    /// The s3 integration's data as JSON, sealed by the vault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_sealed: Option<String>,
    /// Unix time up to which scheduled runs are done (a missed run is made once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_slot: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<LastBackup>,
    #[serde(default)]
    pub failures: u64,
    /// When the last successful backup was made (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<String>,
}

/// How the last backup went, for `twelve status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct LastBackup {
    pub time: String,
    pub ok: bool,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub location: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub error: String,
}

impl LastBackup {
    /// `last backup 2026-12-07T03:00:01Z (local, 1.2 MiB)` or `last backup failed at ...`.
    pub fn summary(&self) -> String {
        if self.ok {
            format!(
                "last backup {} ({}, {})",
                self.id.as_deref().unwrap_or(&self.time),
                self.location,
                human_size(self.size)
            )
        } else {
            format!("last backup failed at {}: {}", self.time, self.error)
        }
    }
}

/// What `meta.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct BackupMeta {
    pub id: String,
    pub service: String,
    pub kind: String,
    pub created: String,
    /// `manual`, `scheduled` or `pre-restore`.
    pub trigger: String,
    pub location: String,
    pub encrypted: bool,
    pub apps: Vec<String>,
    pub dump: DumpInfo,
    /// Bytes stored per part (compressed, sealed).
    pub sizes: IndexMap<String, u64>,
    pub size: u64,
}

fn human_size(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc())
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn io_err(what: impl std::fmt::Display, e: impl std::fmt::Display) -> ApiError {
    ApiError::new(format!("{what}: {e}"))
}

// ---- cron ------------------------------------------------------------------------

/// A five-field cron expression (minute hour day-of-month month day-of-week, UTC), with
/// `*`, lists, ranges, steps and `@hourly`/`@daily`/`@weekly`/`@monthly`.
#[derive(Debug, Clone, PartialEq)]
pub struct Cron {
    fields: [u64; 5],
    dom_any: bool,
    dow_any: bool,
}

const CRON_RANGES: [(u32, u32); 5] = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)];
const CRON_NAMES: [&str; 5] = ["minute", "hour", "day of month", "month", "day of week"];

impl Cron {
    pub fn parse(text: &str) -> Result<Cron, String> {
        let expanded = match text.trim() {
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            "@monthly" => "0 0 1 * *",
            "@yearly" | "@annually" => "0 0 1 1 *",
            t => t,
        };
        let parts: Vec<&str> = expanded.split_whitespace().collect();
        if parts.len() != 5 {
            return Err(format!(
                "{text:?} is not a cron schedule: expected 5 fields (minute hour day-of-month month day-of-week), e.g. \"0 3 * * *\""
            ));
        }
        let mut fields = [0u64; 5];
        for (i, p) in parts.iter().enumerate() {
            fields[i] = Self::field(p, CRON_RANGES[i])
                .map_err(|e| format!("{text:?}: the {} field {p:?}: {e}", CRON_NAMES[i]))?;
        }
        // Sunday is 0 or 7.
        if fields[4] & (1 << 7) != 0 {
            fields[4] |= 1;
        }
        Ok(Cron {
            fields,
            dom_any: parts[2] == "*",
            dow_any: parts[4] == "*",
        })
    }

    fn field(text: &str, (lo, hi): (u32, u32)) -> Result<u64, String> {
        let mut bits = 0u64;
        for item in text.split(',') {
            let (range, step) = match item.split_once('/') {
                Some((r, s)) => (
                    r,
                    s.parse::<u32>()
                        .ok()
                        .filter(|s| *s > 0)
                        .ok_or(format!("bad step {s:?}"))?,
                ),
                None => (item, 1),
            };
            let num = |s: &str| {
                s.parse::<u32>()
                    .ok()
                    .filter(|n| (lo..=hi).contains(n))
                    .ok_or(format!("{s:?} is not a number from {lo} to {hi}"))
            };
            let (a, b) = if range == "*" {
                (lo, hi)
            } else if let Some((a, b)) = range.split_once('-') {
                (num(a)?, num(b)?)
            } else {
                let a = num(range)?;
                (a, if item.contains('/') { hi } else { a })
            };
            if a > b {
                return Err(format!("empty range {range:?}"));
            }
            let mut v = a;
            while v <= b {
                bits |= 1 << v;
                v += step;
            }
        }
        Ok(bits)
    }

    fn matches(&self, t: time::OffsetDateTime) -> bool {
        let has = |i: usize, v: u32| self.fields[i] & (1 << v) != 0;
        let dom = has(2, t.day() as u32);
        let dow = has(4, t.weekday().number_days_from_sunday() as u32);
        // As cron: when both days are restricted, either one matching is enough.
        let day = match (self.dom_any, self.dow_any) {
            (false, false) => dom || dow,
            _ => dom && dow,
        };
        has(0, t.minute() as u32)
            && has(1, t.hour() as u32)
            && has(3, u8::from(t.month()) as u32)
            && day
    }

    /// Whether a run is due at `now`, the runs up to `last_slot` being done: one run
    /// however many were missed (the controller was down), none before a first slot.
    pub fn due(&self, last_slot: Option<i64>, now: i64) -> bool {
        let last = last_slot.unwrap_or(now);
        self.next_after(last).is_some_and(|next| next <= now)
    }

    /// The first time strictly after `after` (unix seconds) the schedule fires.
    pub fn next_after(&self, after: i64) -> Option<i64> {
        let mut m = after.div_euclid(60) + 1;
        let end = m + 366 * 24 * 60 * 5;
        while m < end {
            let t = time::OffsetDateTime::from_unix_timestamp(m * 60).ok()?;
            if self.matches(t) {
                return Some(m * 60);
            }
            m += 1;
        }
        None
    }
}

// ---- sealed, compressed parts ------------------------------------------------------

const MAGIC: &[u8; 4] = b"TWB1";
const CHUNK: usize = 1 << 20;

fn nonce(prefix: &[u8; 19], counter: u32, last: bool) -> XNonce {
    let mut n = [0u8; 24];
    n[..19].copy_from_slice(prefix);
    n[19..23].copy_from_slice(&counter.to_be_bytes());
    n[23] = last as u8;
    *XNonce::from_slice(&n)
}

/// Writes what it is given in sealed chunks: `TWB1`, a 19-byte nonce prefix, then per
/// chunk a 4-byte length and the ciphertext.
struct SealWriter<W: Write> {
    out: W,
    cipher: XChaCha20Poly1305,
    prefix: [u8; 19],
    counter: u32,
    buf: Vec<u8>,
}

impl<W: Write> SealWriter<W> {
    fn new(mut out: W, cipher: XChaCha20Poly1305) -> std::io::Result<Self> {
        let prefix: [u8; 19] = rand::random();
        out.write_all(MAGIC)?;
        out.write_all(&prefix)?;
        Ok(SealWriter {
            out,
            cipher,
            prefix,
            counter: 0,
            buf: Vec::with_capacity(CHUNK),
        })
    }

    fn seal(&mut self, last: bool) -> std::io::Result<()> {
        let ct = self
            .cipher
            .encrypt(
                &nonce(&self.prefix, self.counter, last),
                self.buf.as_slice(),
            )
            .map_err(|_| std::io::Error::other("encryption failed"))?;
        self.counter = self
            .counter
            .checked_add(1)
            .ok_or_else(|| std::io::Error::other("backup part too large"))?;
        self.out.write_all(&(ct.len() as u32).to_be_bytes())?;
        self.out.write_all(&ct)?;
        self.buf.clear();
        Ok(())
    }
}

impl<W: Write> Write for SealWriter<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.seal(false)?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reads what [`SealWriter`] wrote; any change, cut or reordering is an error.
struct OpenReader<R: Read> {
    input: R,
    cipher: XChaCha20Poly1305,
    prefix: [u8; 19],
    counter: u32,
    next_len: Option<u32>,
    plain: Vec<u8>,
    pos: usize,
    done: bool,
}

fn read_len<R: Read>(r: &mut R) -> std::io::Result<Option<u32>> {
    let mut b = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = r.read(&mut b[got..])?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the backup is cut short",
                ))
            };
        }
        got += n;
    }
    Ok(Some(u32::from_be_bytes(b)))
}

impl<R: Read> OpenReader<R> {
    fn new(mut input: R, cipher: XChaCha20Poly1305) -> std::io::Result<Self> {
        let mut head = [0u8; 23];
        input.read_exact(&mut head)?;
        if &head[..4] != MAGIC {
            return Err(std::io::Error::other(
                "not a sealed twelve backup (or sealed with another format)",
            ));
        }
        let mut prefix = [0u8; 19];
        prefix.copy_from_slice(&head[4..]);
        let next_len = read_len(&mut input)?;
        Ok(OpenReader {
            input,
            cipher,
            prefix,
            counter: 0,
            next_len,
            plain: vec![],
            pos: 0,
            done: false,
        })
    }

    fn fill(&mut self) -> std::io::Result<()> {
        let Some(len) = self.next_len else {
            self.done = true;
            return Err(std::io::Error::other("the backup is cut short"));
        };
        if len as usize > CHUNK + 16 {
            return Err(std::io::Error::other("the backup is damaged"));
        }
        let mut ct = vec![0u8; len as usize];
        self.input.read_exact(&mut ct)?;
        self.next_len = read_len(&mut self.input)?;
        let last = self.next_len.is_none();
        self.plain = self
            .cipher
            .decrypt(&nonce(&self.prefix, self.counter, last), ct.as_slice())
            .map_err(|_| {
                std::io::Error::other(
                    "the backup cannot be decrypted: it was changed or cut, or sealed with another controller's key",
                )
            })?;
        self.counter += 1;
        self.pos = 0;
        self.done = last;
        Ok(())
    }
}

impl<R: Read> Read for OpenReader<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.plain.len() {
            if self.done {
                return Ok(0);
            }
            self.fill()?;
        }
        let n = out.len().min(self.plain.len() - self.pos);
        out[..n].copy_from_slice(&self.plain[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

trait FinishWrite: Write + Send {
    fn done(self: Box<Self>) -> std::io::Result<()>;
}

impl FinishWrite for BufWriter<std::fs::File> {
    fn done(self: Box<Self>) -> std::io::Result<()> {
        let f = self.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()
    }
}

impl FinishWrite for SealWriter<BufWriter<std::fs::File>> {
    fn done(mut self: Box<Self>) -> std::io::Result<()> {
        self.seal(true)?;
        let f = self.out.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()
    }
}

struct ZstdPart(zstd::Encoder<'static, Box<dyn FinishWrite>>);

impl Write for ZstdPart {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.write(data)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl PartWrite for ZstdPart {
    fn finish(self: Box<Self>) -> std::io::Result<()> {
        self.0.finish()?.done()
    }
}

fn part_file(part: &str) -> String {
    format!("{part}.zst")
}

/// Writes parts as files in a directory.
struct DirSink {
    dir: PathBuf,
    cipher: Option<XChaCha20Poly1305>,
}

impl PartSink for DirSink {
    fn create(&mut self, part: &str) -> std::io::Result<Box<dyn PartWrite>> {
        let f = BufWriter::with_capacity(1 << 20, create_private(&self.dir.join(part_file(part)))?);
        let inner: Box<dyn FinishWrite> = match &self.cipher {
            Some(c) => Box::new(SealWriter::new(f, c.clone())?),
            None => Box::new(f),
        };
        let mut enc = zstd::Encoder::new(inner, 3)?;
        enc.include_checksum(true)?;
        Ok(Box::new(ZstdPart(enc)))
    }
}

/// Reads parts from files in a directory.
struct DirSource {
    dir: PathBuf,
    cipher: Option<XChaCha20Poly1305>,
}

impl PartSource for DirSource {
    fn open(&self, part: &str) -> std::io::Result<Box<dyn Read + Send>> {
        let f = BufReader::with_capacity(
            1 << 20,
            std::fs::File::open(self.dir.join(part_file(part)))?,
        );
        let inner: Box<dyn Read + Send> = match &self.cipher {
            Some(c) => Box::new(OpenReader::new(f, c.clone())?),
            None => Box::new(f),
        };
        Ok(Box::new(zstd::Decoder::new(inner)?))
    }
}

fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

fn create_dir_private(dir: &Path) -> Result<(), ApiError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io_err(format!("cannot create {}", dir.display()), e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| io_err(format!("cannot protect {}", dir.display()), e))
}

// ---- S3 ----------------------------------------------------------------------------

/// The s3 integration's data (the s3-integrator's keys).
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct S3Config {
    pub endpoint: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub region: String,
}

const S3_KEYS: &[&str] = &[
    "endpoint",
    "bucket",
    "access-key",
    "secret-key",
    "path",
    "region",
];

impl S3Config {
    pub fn from_data(data: &IndexMap<String, String>) -> Result<S3Config, ApiError> {
        for k in data.keys() {
            if !S3_KEYS.contains(&k.as_str()) {
                return Err(ApiError::new(format!("unknown s3 key {k:?}"))
                    .hint(format!("keys: {}", S3_KEYS.join(", "))));
            }
        }
        let get = |k: &str| {
            data.get(k)
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        let missing: Vec<&str> = ["endpoint", "bucket", "access-key", "secret-key"]
            .into_iter()
            .filter(|k| get(k).is_empty())
            .collect();
        if !missing.is_empty() {
            return Err(ApiError::new(format!("the s3 integration needs {}", missing.join(", ")))
                .hint("twelve integrate SERVICE s3 --data endpoint=https://... bucket=... access-key=... secret-key=... [path=...] [region=...]"));
        }
        let endpoint = get("endpoint");
        let u = url::Url::parse(&endpoint).map_err(|e| {
            ApiError::new(format!("s3 endpoint {endpoint:?} is not a URL: {e}"))
                .hint("e.g. endpoint=https://s3.eu-west-1.amazonaws.com")
        })?;
        if !matches!(u.scheme(), "http" | "https") {
            return Err(ApiError::new(format!(
                "s3 endpoint {endpoint:?}: the scheme must be http:// or https://"
            )));
        }
        Ok(S3Config {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            bucket: get("bucket"),
            access_key: get("access-key"),
            secret_key: get("secret-key"),
            path: get("path").trim_matches('/').to_string(),
            region: match get("region") {
                r if r.is_empty() => "us-east-1".into(),
                r => r,
            },
        })
    }

    fn region(&self) -> s3::Region {
        s3::Region::Custom {
            region: self.region.clone(),
            endpoint: self.endpoint.clone(),
        }
    }

    fn credentials(&self) -> Result<s3::creds::Credentials, ApiError> {
        s3::creds::Credentials::new(
            Some(&self.access_key),
            Some(&self.secret_key),
            None,
            None,
            None,
        )
        .map_err(|e| ApiError::new(format!("s3 credentials: {e}")))
    }

    fn bucket(&self) -> Result<Box<s3::Bucket>, ApiError> {
        let b = s3::Bucket::new(&self.bucket, self.region(), self.credentials()?)
            .map_err(|e| self.error("opening the bucket", e))?;
        Ok(b.with_path_style())
    }

    fn error(&self, action: &str, e: impl std::fmt::Display) -> ApiError {
        let text = e.to_string().replace(&self.secret_key, "<redacted>");
        ApiError::new(format!(
            "S3 {} bucket {}: {action} failed: {text}",
            self.endpoint, self.bucket
        ))
    }

    /// Reaches the bucket, creating it when it does not exist.
    pub async fn check(&self) -> Result<(), ApiError> {
        let b = self.bucket()?;
        let exists = b
            .exists()
            .await
            .map_err(|e| self.error("reaching the bucket", e))?;
        if !exists && self.region == "us-east-1" {
            // The client would send us-east-1 as a location constraint, which S3 refuses
            // for that region.
            return Err(self.error(
                "reaching the bucket",
                "it does not exist; create it first (or give the region it should be made in)",
            ));
        }
        if !exists {
            let r = s3::Bucket::create_with_path_style(
                &self.bucket,
                self.region(),
                self.credentials()?,
                s3::BucketConfiguration::default(),
            )
            .await
            .map_err(|e| self.error("creating the bucket", e))?;
            if !(200..300).contains(&r.response_code) {
                return Err(self.error(
                    "creating the bucket",
                    format!("HTTP {}: {}", r.response_code, r.response_text),
                ));
            }
        }
        Ok(())
    }
}

fn status_ok(cfg: &S3Config, action: &str, code: u16) -> Result<(), ApiError> {
    if (200..300).contains(&code) {
        Ok(())
    } else {
        Err(cfg.error(action, format!("HTTP {code}")))
    }
}

// ---- storage -------------------------------------------------------------------------

enum Storage {
    Local {
        dir: PathBuf,
    },
    S3 {
        cfg: S3Config,
        prefix: String,
        staging: PathBuf,
    },
}

impl Storage {
    fn location(&self) -> &'static str {
        match self {
            Storage::Local { .. } => "local",
            Storage::S3 { .. } => "s3",
        }
    }

    async fn list(&self) -> Result<Vec<BackupMeta>, ApiError> {
        let mut out = vec![];
        match self {
            Storage::Local { dir } => {
                let Ok(entries) = std::fs::read_dir(dir) else {
                    return Ok(vec![]);
                };
                for e in entries.flatten() {
                    let meta = e.path().join("meta.json");
                    if let Ok(text) = std::fs::read_to_string(&meta) {
                        if let Ok(m) = serde_json::from_str::<BackupMeta>(&text) {
                            out.push(m);
                        }
                    }
                }
            }
            Storage::S3 { cfg, prefix, .. } => {
                let b = cfg.bucket()?;
                let pages = b
                    .list(prefix.clone(), None)
                    .await
                    .map_err(|e| cfg.error("listing backups", e))?;
                for page in pages {
                    for obj in page.contents {
                        if !obj.key.ends_with("/meta.json") {
                            continue;
                        }
                        let r = b
                            .get_object(&obj.key)
                            .await
                            .map_err(|e| cfg.error("reading a backup's meta.json", e))?;
                        if let Ok(m) = serde_json::from_slice::<BackupMeta>(r.bytes()) {
                            out.push(m);
                        }
                    }
                }
            }
        }
        out.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// A directory to write a new backup's parts into.
    fn staging(&self, id: &str) -> PathBuf {
        match self {
            Storage::Local { dir } => dir.join(format!(".{id}.partial")),
            Storage::S3 { staging, .. } => staging.join(id),
        }
    }

    /// Makes the staged backup the stored one (meta.json last).
    async fn commit(&self, staged: &Path, meta: &BackupMeta) -> Result<(), ApiError> {
        let text = serde_json::to_vec_pretty(meta).unwrap_or_default();
        match self {
            Storage::Local { dir } => {
                let meta_path = staged.join("meta.json");
                let mut f =
                    create_private(&meta_path).map_err(|e| io_err(meta_path.display(), e))?;
                f.write_all(&text)
                    .and_then(|_| f.sync_all())
                    .map_err(|e| io_err(meta_path.display(), e))?;
                let fin = dir.join(&meta.id);
                std::fs::rename(staged, &fin).map_err(|e| io_err(fin.display(), e))?;
                Ok(())
            }
            Storage::S3 { cfg, prefix, .. } => {
                let b = cfg.bucket()?;
                for part in meta.sizes.keys() {
                    let file = staged.join(part_file(part));
                    let mut f = tokio::fs::File::open(&file)
                        .await
                        .map_err(|e| io_err(file.display(), e))?;
                    let key = format!("{prefix}{}/{}", meta.id, part_file(part));
                    let r = b
                        .put_object_stream(&mut f, &key)
                        .await
                        .map_err(|e| cfg.error("uploading the backup", e))?;
                    status_ok(cfg, "uploading the backup", r.status_code())?;
                }
                let key = format!("{prefix}{}/meta.json", meta.id);
                let r = b
                    .put_object(&key, &text)
                    .await
                    .map_err(|e| cfg.error("uploading the backup", e))?;
                status_ok(cfg, "uploading the backup", r.status_code())?;
                let _ = std::fs::remove_dir_all(staged);
                Ok(())
            }
        }
    }

    /// Where a backup's parts can be read from (downloaded first from S3).
    async fn fetch(&self, meta: &BackupMeta) -> Result<PathBuf, ApiError> {
        match self {
            Storage::Local { dir } => Ok(dir.join(&meta.id)),
            Storage::S3 {
                cfg,
                prefix,
                staging,
            } => {
                let dir = staging.join(format!("restore-{}", meta.id));
                let _ = std::fs::remove_dir_all(&dir);
                create_dir_private(&dir)?;
                let b = cfg.bucket()?;
                for part in meta.sizes.keys() {
                    let file = dir.join(part_file(part));
                    create_private(&file).map_err(|e| io_err(file.display(), e))?;
                    let mut f = tokio::fs::OpenOptions::new()
                        .write(true)
                        .open(&file)
                        .await
                        .map_err(|e| io_err(file.display(), e))?;
                    let key = format!("{prefix}{}/{}", meta.id, part_file(part));
                    let code = b
                        .get_object_to_writer(&key, &mut f)
                        .await
                        .map_err(|e| cfg.error("downloading the backup", e))?;
                    status_ok(cfg, "downloading the backup", code)?;
                    tokio::io::AsyncWriteExt::flush(&mut f)
                        .await
                        .map_err(|e| io_err(file.display(), e))?;
                }
                Ok(dir)
            }
        }
    }

    fn fetched_done(&self, dir: &Path) {
        if let Storage::S3 { .. } = self {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    async fn delete(&self, meta: &BackupMeta) -> Result<(), ApiError> {
        match self {
            Storage::Local { dir } => {
                let d = dir.join(&meta.id);
                // meta.json first: a half-deleted backup is not listed.
                let _ = std::fs::remove_file(d.join("meta.json"));
                std::fs::remove_dir_all(&d).map_err(|e| io_err(d.display(), e))
            }
            Storage::S3 { cfg, prefix, .. } => {
                let b = cfg.bucket()?;
                let mut keys = vec![format!("{prefix}{}/meta.json", meta.id)];
                keys.extend(
                    meta.sizes
                        .keys()
                        .map(|p| format!("{prefix}{}/{}", meta.id, part_file(p))),
                );
                for k in keys {
                    b.delete_object(&k)
                        .await
                        .map_err(|e| cfg.error("deleting an old backup", e))?;
                }
                Ok(())
            }
        }
    }
}

/// Services with a backup or restore running (one at a time per service).
fn busy() -> &'static Mutex<HashSet<String>> {
    static BUSY: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    BUSY.get_or_init(Default::default)
}

struct BusyGuard(String);

impl BusyGuard {
    fn take(service: &str) -> Result<BusyGuard, ApiError> {
        let mut set = busy().lock().unwrap_or_else(|e| e.into_inner());
        if !set.insert(service.to_string()) {
            return Err(ApiError::new(format!(
                "a backup or restore of {service} is already running"
            ))
            .hint("wait for it to finish, then try again"));
        }
        Ok(BusyGuard(service.to_string()))
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        busy()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.0);
    }
}

/// A new backup id: the time it was made, unique in `storage`.
fn new_backup_id(storage: &Storage, existing: &HashSet<String>, created: &str) -> String {
    let mut id = created.to_string();
    let mut n = 2;
    while existing.contains(&id)
        || matches!(storage, Storage::Local { dir } if dir.join(&id).exists())
    {
        id = format!("{created}-{n}");
        n += 1;
    }
    id
}

/// The backup of what a PostgreSQL restore replaced, made after the restore from the
/// databases it kept (`<db>$old`) so that the apps are back as soon as the restored data
/// is in place. Written (`TWELVE_HOME/backups/.pending/<service>.json`) before the swap,
/// removed once the backup is stored; until then the kept databases are never dropped,
/// and a controller that stopped meanwhile makes the backup when it starts again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PendingPreRestore {
    /// The pre-restore backup's id (given in the restore's result).
    id: String,
    created: String,
    /// The backup that was restored.
    restored: String,
    apps: Vec<String>,
    replaced: twelve_providers::Replaced,
}

/// Per service: held while the databases a restore replaced are backed up and dropped (in
/// the background, after the restore); what would race with that waits for it (removing an
/// app's data: its role owns them; the next restore).
pub(crate) async fn replaced_dropped(service: &str) -> tokio::sync::OwnedMutexGuard<()> {
    static LOCKS: OnceLock<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> = OnceLock::new();
    let lock = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(service.to_string())
        .or_default()
        .clone();
    lock.lock_owned().await
}

/// The actions a backing service has (`twelve actions postgresql`), in the shape of an
/// app's.
pub fn service_actions(kind: Kind) -> Value {
    let what = match kind {
        Kind::Rabbitmq => "Back up the broker's definitions (vhosts, users, permissions, queues, exchanges, bindings, policies; not messages), locally or on S3.",
        Kind::Redis => "Back up the server's data (BGSAVE and its RDB file), locally or on S3 when integrated with s3.",
        _ => "Back up the data of every app integrated with the service (locally, or on S3 when integrated with s3).",
    };
    json!({
        "create-backup": {
            "description": what,
            "params": {},
            "required": [],
        },
        "list-backups": {
            "description": "List the backups: id, time, size, trigger, where.",
            "params": {},
            "required": [],
        },
        "restore": {
            "description": "Restore a backup (the current data is backed up too, never lost; integrated apps are out of the ingress meanwhile).",
            "params": {"backup-id": {"type": "string", "description": "The id create-backup gave."}},
            "required": ["backup-id"],
        },
    })
}

impl Controller {
    fn backup_storage(&self, rec: &ServiceRecord) -> Result<Storage, ApiError> {
        let root = self.home.root.join("backups");
        create_dir_private(&root)?;
        match &rec.backups.s3_sealed {
            None => {
                let dir = root.join(&rec.name);
                create_dir_private(&dir)?;
                Ok(Storage::Local { dir })
            }
            Some(sealed) => {
                let text = self
                    .vault
                    .open_sealed(sealed)
                    .map_err(|e| ApiError::new(e.to_string()))?;
                let cfg: S3Config = serde_json::from_str(&text.0).map_err(|e| {
                    ApiError::new(format!(
                        "the s3 integration of {} is damaged: {e}",
                        rec.name
                    ))
                })?;
                let mut prefix = cfg.path.clone();
                if !prefix.is_empty() {
                    prefix.push('/');
                }
                prefix.push_str(&rec.name);
                prefix.push('/');
                let staging = root.join(".staging").join(&rec.name);
                create_dir_private(&staging)?;
                Ok(Storage::S3 {
                    cfg,
                    prefix,
                    staging,
                })
            }
        }
    }

    fn service_users(&self, service: &str) -> Vec<String> {
        self.store
            .apps()
            .unwrap_or_default()
            .into_iter()
            .filter(|a| {
                a.relations
                    .values()
                    .any(|r| r.service.as_deref() == Some(service))
            })
            .map(|a| a.name)
            .collect()
    }

    fn record_backup(&self, service: &str, last: LastBackup) {
        if let Ok(Some(mut rec)) = self.store.service(service) {
            if last.ok {
                rec.backups.last_success = Some(last.time.clone());
            } else {
                rec.backups.failures += 1;
            }
            rec.backups.last = Some(last);
            let _ = self.store.put_service(&rec);
        }
    }

    /// `create-backup`: one backup of the service, then old ones past the retention go.
    pub(crate) async fn create_backup(
        &self,
        service: &str,
        trigger: &str,
    ) -> Result<BackupMeta, ApiError> {
        let _busy = BusyGuard::take(service)?;
        let res = self
            .create_backup_locked(service, trigger, None, None)
            .await;
        if let Err(e) = &res {
            self.record_backup(
                service,
                LastBackup {
                    time: now_rfc3339(),
                    ok: false,
                    error: e.message.clone(),
                    ..Default::default()
                },
            );
        }
        res
    }

    /// Makes a backup, then deletes the oldest past the retention, never `protect` (the
    /// backup a restore is about to read). `replaced`: a backup of the data a restore
    /// replaced, made from the copies it kept, with the id and time chosen at the restore
    /// (made already, it is not made again).
    async fn create_backup_locked(
        &self,
        service: &str,
        trigger: &str,
        protect: Option<&str>,
        replaced: Option<&PendingPreRestore>,
    ) -> Result<BackupMeta, ApiError> {
        let rec = self.service_rec(service)?;
        let server = self.open_server(&rec)?;
        let kind = server.kind();
        let providers = self.providers_for(service, &server)?;
        let storage = self.backup_storage(&rec)?;
        let listed = storage.list().await?;
        if let Some(done) = replaced.and_then(|p| listed.iter().find(|m| m.id == p.id)) {
            return Ok(done.clone());
        }
        let existing: HashSet<String> = listed.into_iter().map(|m| m.id).collect();
        let (created, id) = match replaced {
            Some(p) => (p.created.clone(), p.id.clone()),
            None => {
                let created = now_rfc3339();
                let id = new_backup_id(&storage, &existing, &created);
                (created, id)
            }
        };
        let staged = storage.staging(&id);
        let _ = std::fs::remove_dir_all(&staged);
        create_dir_private(&staged)?;
        let encrypted = matches!(storage, Storage::S3 { .. });
        let mut sink = DirSink {
            dir: staged.clone(),
            cipher: encrypted.then(|| self.vault.cipher().clone()),
        };
        let apps = match replaced {
            Some(p) => p.apps.clone(),
            None => self.service_users(service),
        };
        let dumped = match replaced {
            Some(p) => {
                providers
                    .dump_replaced(&server, &p.replaced, &mut sink)
                    .await
            }
            None => providers.dump(&server, &apps, &mut sink).await,
        };
        let dump = match dumped {
            Ok(d) => d,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staged);
                return Err(ApiError::new(e.to_string()));
            }
        };
        let mut sizes = IndexMap::new();
        for p in &dump.parts {
            let len = std::fs::metadata(staged.join(part_file(&p.name)))
                .map(|m| m.len())
                .unwrap_or(0);
            sizes.insert(p.name.clone(), len);
        }
        let meta = BackupMeta {
            id: id.clone(),
            service: service.to_string(),
            kind: kind.name().to_string(),
            created,
            trigger: trigger.to_string(),
            location: storage.location().to_string(),
            encrypted,
            apps,
            size: sizes.values().sum(),
            sizes,
            dump,
        };
        if let Err(e) = storage.commit(&staged, &meta).await {
            let _ = std::fs::remove_dir_all(&staged);
            return Err(e);
        }
        self.record_backup(
            service,
            LastBackup {
                time: meta.created.clone(),
                ok: true,
                id: Some(meta.id.clone()),
                location: meta.location.clone(),
                size: meta.size,
                error: String::new(),
            },
        );
        if let Some(keep) = rec.backups.retention {
            let all = storage.list().await.unwrap_or_default();
            let extra = all.len().saturating_sub(keep.max(1) as usize);
            let doomed = all
                .iter()
                .filter(|m| Some(m.id.as_str()) != protect && m.id != meta.id)
                .take(extra);
            for old in doomed {
                if let Err(e) = storage.delete(old).await {
                    crate::controller::log(format!(
                        "{service}: cannot delete backup {}: {}",
                        old.id, e.message
                    ));
                }
            }
        }
        Ok(meta)
    }

    /// Whether `name` is a backing service (and not an app).
    pub(crate) fn is_backing_service(&self, name: &str) -> bool {
        self.store.app(name).ok().flatten().is_none()
            && self.service_record(name).ok().flatten().is_some()
    }

    fn service_rec(&self, service: &str) -> Result<ServiceRecord, ApiError> {
        self.service_record(service)?.ok_or_else(|| {
            ApiError::new(format!("{service:?} not found")).hint("see `twelve status`")
        })
    }

    pub(crate) async fn list_backups(&self, service: &str) -> ApiResult {
        let rec = self.service_rec(service)?;
        let storage = self.backup_storage(&rec)?;
        let list = storage.list().await?;
        let rows: Vec<Value> = list
            .iter()
            .map(|m| {
                json!({
                    "id": m.id,
                    "time": m.created,
                    "size": m.size,
                    "kind": m.trigger,
                    "where": m.location,
                    "status": "finished",
                    "apps": m.apps,
                    "server-version": m.dump.server_version,
                })
            })
            .collect();
        let mut rows = rows;
        if let Some(p) = self.read_pending(service) {
            if !list.iter().any(|m| m.id == p.id) {
                rows.push(json!({
                    "id": p.id,
                    "time": p.created,
                    "size": 0,
                    "kind": "pre-restore",
                    "where": storage.location(),
                    "status": "in progress",
                    "apps": p.apps,
                }));
            }
        }
        Ok(json!({"backups": rows}))
    }

    fn pending_path(&self, service: &str) -> PathBuf {
        self.home
            .root
            .join("backups")
            .join(".pending")
            .join(format!("{service}.json"))
    }

    /// The backup of what the last restore of `service` replaced, if it is not made yet.
    pub(crate) fn read_pending(&self, service: &str) -> Option<PendingPreRestore> {
        let text = std::fs::read_to_string(self.pending_path(service)).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn write_pending(&self, service: &str, p: &PendingPreRestore) -> Result<(), ApiError> {
        let path = self.pending_path(service);
        if let Some(dir) = path.parent() {
            create_dir_private(dir)?;
        }
        let text = serde_json::to_string(p).unwrap_or_default();
        crate::vault::write_private(&path, &text).map_err(|e| {
            io_err(
                format!("cannot record the restore in {}", path.display()),
                e,
            )
        })
    }

    /// Makes the backup of what a restore replaced (unless made already), then drops the
    /// replaced databases; a failure keeps them (and the record) for the next try, and
    /// shows as the service's last backup.
    pub(crate) async fn finish_pre_restore(
        &self,
        service: &str,
        pending: &PendingPreRestore,
    ) -> Result<(), ApiError> {
        match self
            .create_backup_locked(
                service,
                "pre-restore",
                Some(&pending.restored),
                Some(pending),
            )
            .await
        {
            Ok(_) => {
                let _ = std::fs::remove_file(self.pending_path(service));
                let rec = self.service_rec(service)?;
                let server = self.open_server(&rec)?;
                let providers = self.providers_for(service, &server)?;
                providers
                    .drop_replaced(&server, pending.replaced.clone())
                    .await;
                Ok(())
            }
            Err(e) => {
                let message = format!(
                    "the backup of the data restore {} replaced failed ({}); that data is kept in {} and is backed up again at the next restore or controller start",
                    pending.restored,
                    e.message,
                    pending.replaced.databases().join(", ")
                );
                self.record_backup(
                    service,
                    LastBackup {
                        time: now_rfc3339(),
                        ok: false,
                        error: message.clone(),
                        ..Default::default()
                    },
                );
                Err(ApiError::new(message))
            }
        }
    }

    /// At start: the backups of what restores replaced that a stopped controller did not
    /// make.
    pub(crate) fn resume_pending_pre_restores(self: &Arc<Self>) {
        let dir = self.home.root.join("backups").join(".pending");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let Some(service) = name.strip_suffix(".json").map(str::to_string) else {
                continue;
            };
            let me = self.clone();
            tokio::spawn(async move {
                let _cleanup = replaced_dropped(&service).await;
                if let Some(pending) = me.read_pending(&service) {
                    match me.finish_pre_restore(&service, &pending).await {
                        Ok(()) => crate::controller::log(format!(
                            "{service}: backed up what restore {} replaced (backup {})",
                            pending.restored, pending.id
                        )),
                        Err(e) => crate::controller::log(format!("{service}: {}", e.message)),
                    }
                }
            });
        }
    }

    /// `restore backup-id=ID`.
    pub(crate) async fn restore_backup(self: &Arc<Self>, service: &str, id: &str) -> ApiResult {
        let _busy = BusyGuard::take(service)?;
        let cleanup = replaced_dropped(service).await;
        // What the last restore replaced is backed up before anything else is restored
        // (normally done already, in the background; after a controller restart, maybe not).
        if let Some(pending) = self.read_pending(service) {
            self.finish_pre_restore(service, &pending)
                .await
                .map_err(|e| {
                    ApiError::new(format!(
                        "the data the last restore of {service} replaced is not backed up yet, so nothing was restored: {}",
                        e.message
                    ))
                })?;
        }
        let rec = self.service_rec(service)?;
        let server = self.open_server(&rec)?;
        let storage = self.backup_storage(&rec)?;
        let list = storage.list().await?;
        let Some(meta) = list.iter().find(|m| m.id == id).cloned() else {
            let ids: Vec<&str> = list.iter().rev().take(5).map(|m| m.id.as_str()).collect();
            return Err(ApiError::new(format!("{service} has no backup {id:?}")).hint(
                if ids.is_empty() {
                    format!("it has no backups ({} storage); make one with: twelve run {service} create-backup", storage.location())
                } else {
                    format!("recent backups: {} (twelve run {service} list-backups)", ids.join(", "))
                },
            ));
        };
        if meta.kind != server.kind().name() {
            return Err(ApiError::new(format!(
                "backup {id} is of {}, {service} is {}",
                meta.kind,
                server.kind().name()
            )));
        }
        let (version, num) = self
            .providers
            .server_version(&server)
            .await
            .map_err(|e| ApiError::new(e.to_string()))?;
        if meta.dump.version_num > num {
            return Err(ApiError::new(format!(
                "backup {id} was made by {} {}, newer than {service}'s {version}: it cannot be restored here",
                server.kind().display_name(),
                meta.dump.server_version
            ))
            .hint(format!(
                "restore it on a server of version {} or newer",
                meta.dump.server_version
            )));
        }
        let dir = storage.fetch(&meta).await?;
        let source = DirSource {
            dir: dir.clone(),
            cipher: meta.encrypted.then(|| self.vault.cipher().clone()),
        };
        // The server's own user (managed servers): known before any app leaves the ingress.
        let providers = self.providers_for(service, &server)?;
        // The integrated apps leave the ingress while their data is replaced, before the
        // backup of the current state: what they wrote until then is in it.
        let apps: Vec<_> = self
            .store
            .apps()
            .unwrap_or_default()
            .into_iter()
            .filter(|a| {
                a.relations
                    .values()
                    .any(|r| r.service.as_deref() == Some(service))
            })
            .collect();
        let all = self.store.apps().unwrap_or_default();
        for a in &apps {
            for u in &a.units {
                self.drain_unit(a, u.number, &all).await;
            }
        }
        let mut deferred: Option<PendingPreRestore> = None;
        let result = {
            let _guard = self.reconcile_lock.lock().await;
            {
                let mut st = self.statuses.lock().unwrap_or_else(|e| e.into_inner());
                for a in &apps {
                    if let Some(s) = st.get_mut(&a.name) {
                        s.status = "maintenance".into();
                        s.message = format!("restoring backup {id} of {service}");
                    }
                }
            }
            self.push_routes(&all).await;
            if providers.backs_up_replaced(&server) {
                // PostgreSQL: the backup is restored beside the live databases and swapped
                // in; the replaced databases are kept, and backed up once the apps are back
                // (recorded before the swap, so that nothing drops them unsaved).
                match providers.restore_stage(&server, &meta.dump, &source).await {
                    Err(e) => Err(ApiError::new(format!("{e} (nothing was changed)"))),
                    Ok(staged) => {
                        let listed: HashSet<String> = storage
                            .list()
                            .await
                            .unwrap_or_default()
                            .into_iter()
                            .map(|m| m.id)
                            .collect();
                        let created = now_rfc3339();
                        let pending = PendingPreRestore {
                            id: new_backup_id(&storage, &listed, &created),
                            created,
                            restored: id.to_string(),
                            apps: self.service_users(service),
                            replaced: twelve_providers::Replaced::of_staged(&staged),
                        };
                        if let Err(e) = self.write_pending(service, &pending) {
                            providers.restore_abort(&server, staged).await;
                            Err(ApiError::new(format!(
                                "{} (nothing was changed)",
                                e.message
                            )))
                        } else {
                            let committed = providers
                                .restore_commit(&server, &meta.dump, &source, staged)
                                .await;
                            deferred = Some(pending.clone());
                            match committed {
                                Ok(_) => Ok((pending.id, twelve_providers::Replaced::default())),
                                Err(e) => Err(ApiError::new(format!(
                                    "{e} (what was replaced is kept and backed up as {})",
                                    pending.id
                                ))),
                            }
                        }
                    }
                }
            } else {
                // Never destroy the only copy: the current state is backed up while the backup
                // is restored beside it (MySQL restores into a new database), and nothing is
                // swapped in unless both succeeded.
                let (pre, staged) = tokio::join!(
                    self.create_backup_locked(service, "pre-restore", Some(id), None),
                    providers.restore_stage(&server, &meta.dump, &source)
                );
                match (pre, staged) {
                    (Err(e), staged) => {
                        if let Ok(s) = staged {
                            providers.restore_abort(&server, s).await;
                        }
                        Err(ApiError::new(format!(
                        "the current data could not be backed up before the restore, so nothing was restored: {}",
                        e.message
                    )))
                    }
                    (Ok(pre), Err(e)) => Err(ApiError::new(format!(
                    "{e} (nothing was changed; the data from before the restore is also backup {})",
                    pre.id
                ))),
                    (Ok(pre), Ok(staged)) => providers
                        .restore_commit(&server, &meta.dump, &source, staged)
                        .await
                        .map(|replaced| (pre.id.clone(), replaced))
                        .map_err(|e| {
                            ApiError::new(format!(
                                "{e} (the data from before the restore is backup {})",
                                pre.id
                            ))
                        }),
                }
            }
        };
        for a in &apps {
            for u in &a.units {
                self.undrain_unit(&a.name, u.number);
            }
        }
        self.wake.notify_one();
        storage.fetched_done(&dir);
        let background = deferred.is_some();
        let replaced = match &result {
            Ok((_, replaced)) => replaced.clone(),
            Err(_) => Default::default(),
        };
        // Once the apps are back, in the background: PostgreSQL backs up what the restore
        // replaced (also after a failed swap: what it replaced is kept), then drops it; the
        // others drop the replaced copies (PostgreSQL's DROP DATABASE waits for a
        // checkpoint).
        let me = self.clone();
        let name = service.to_string();
        tokio::spawn(async move {
            match deferred {
                Some(pending) => {
                    if let Err(e) = me.finish_pre_restore(&name, &pending).await {
                        crate::controller::log(format!("{name}: {}", e.message));
                    }
                }
                None => providers.drop_replaced(&server, replaced).await,
            }
            drop(cleanup);
        });
        let (pre_id, _) = result?;
        let mut out = json!({
            "backup-id": id,
            "pre-restore-backup-id": pre_id,
            "restored": meta.dump.parts.iter().map(|p| p.database.clone()).collect::<Vec<_>>(),
            "apps": apps.iter().map(|a| a.name.clone()).collect::<Vec<_>>(),
        });
        if background {
            out["pre-restore-backup"] = json!(
                "being made from the replaced data (list-backups shows it in progress until it is stored)"
            );
        }
        Ok(out)
    }

    /// `twelve run SERVICE[/leader] ACTION`.
    pub(crate) async fn run_service_action(
        self: &Arc<Self>,
        service: &str,
        action: &str,
        params: IndexMap<String, String>,
    ) -> ApiResult {
        let rec = self.service_rec(service)?;
        let kind = Kind::parse(&rec.kind).unwrap_or(Kind::Postgresql);
        let actions = service_actions(kind);
        let Some(spec) = actions.get(action) else {
            let known: Vec<&String> = actions
                .as_object()
                .map(|o| o.keys().collect())
                .unwrap_or_default();
            return Err(
                ApiError::new(format!("{service} has no action {action:?}")).hint(
                    if known.is_empty() {
                        format!("{} has no actions", kind.display_name())
                    } else {
                        format!(
                            "actions: {}",
                            known.into_iter().cloned().collect::<Vec<_>>().join(", ")
                        )
                    },
                ),
            );
        };
        for k in params.keys() {
            if spec["params"].get(k).is_none() {
                return Err(
                    ApiError::new(format!("unknown parameter {k:?} for {action}")).hint(
                        if action == "restore" {
                            "restore takes: backup-id".to_string()
                        } else {
                            format!("{action} takes no parameters")
                        },
                    ),
                );
            }
        }
        match action {
            "create-backup" => {
                let m = self.create_backup(service, "manual").await?;
                Ok(json!({
                    "backup-id": m.id,
                    "where": m.location,
                    "size": m.size,
                    "apps": m.apps,
                    "status": "finished",
                }))
            }
            "list-backups" => self.list_backups(service).await,
            "restore" => {
                let Some(id) = params.get("backup-id").filter(|v| !v.trim().is_empty()) else {
                    return Err(ApiError::new("restore needs backup-id").hint(format!(
                        "twelve run {service} restore backup-id=ID (ids: twelve run {service} list-backups)"
                    )));
                };
                self.restore_backup(service, id.trim()).await
            }
            _ => unreachable!("listed above"),
        }
    }

    /// `twelve integrate SERVICE s3 --data ...`: backups go to S3 from now on.
    pub(crate) async fn integrate_service_s3(
        &self,
        service: &str,
        data: IndexMap<String, String>,
    ) -> ApiResult {
        let mut rec = self.service_rec(service)?;
        let cfg = S3Config::from_data(&data)?;
        cfg.check().await?;
        rec.backups.s3_sealed = Some(
            self.vault
                .seal(&serde_json::to_string(&cfg).unwrap_or_default()),
        );
        self.store
            .put_service(&rec)
            .map_err(|e| ApiError::new(format!("cannot update the state store: {e}")))?;
        Ok(
            json!({"app": service, "endpoint": "s3", "provider": format!("s3 {} bucket {}", cfg.endpoint, cfg.bucket)}),
        )
    }

    /// `twelve remove-relation SERVICE s3`: backups go back to the local directory.
    pub(crate) fn remove_service_s3(&self, service: &str) -> ApiResult {
        let mut rec = self.service_rec(service)?;
        if rec.backups.s3_sealed.take().is_none() {
            return Err(ApiError::new(format!(
                "{service} is not integrated with s3"
            )));
        }
        self.store
            .put_service(&rec)
            .map_err(|e| ApiError::new(format!("cannot update the state store: {e}")))?;
        Ok(json!({"app": service, "endpoint": "s3", "data-destroyed": false}))
    }

    /// `twelve config SERVICE`: its backup options.
    pub(crate) fn service_config(&self, service: &str) -> ApiResult {
        let rec = self.service_rec(service)?;
        let b = &rec.backups;
        let src = |set: bool| if set { "user" } else { "default" };
        Ok(json!({
            "backup-schedule": {"type": "string", "source": src(b.schedule.is_some()), "value": b.schedule, "description": "When to back up (cron, UTC), e.g. \"0 3 * * *\"; empty: never"},
            "backup-retention": {"type": "int", "source": src(b.retention.is_some()), "value": b.retention, "description": "How many backups to keep; empty: all"},
        }))
    }

    /// `twelve config SERVICE backup-schedule=... backup-retention=...`.
    pub(crate) fn set_service_config(
        &self,
        service: &str,
        set: IndexMap<String, String>,
        reset: Vec<String>,
    ) -> ApiResult {
        let mut rec = self.service_rec(service)?;
        let hint =
            format!("twelve config {service} backup-schedule=\"0 3 * * *\" backup-retention=7");
        for k in set.keys().chain(reset.iter()) {
            if k != "backup-schedule" && k != "backup-retention" {
                return Err(
                    ApiError::new(format!("{service} has no option {k:?}")).hint(format!(
                        "options: backup-schedule, backup-retention; e.g. {hint}"
                    )),
                );
            }
        }
        for k in &reset {
            match k.as_str() {
                "backup-schedule" => rec.backups.schedule = None,
                _ => rec.backups.retention = None,
            }
        }
        for (k, v) in &set {
            let v = v.trim();
            match k.as_str() {
                "backup-schedule" if v.is_empty() => rec.backups.schedule = None,
                "backup-schedule" => {
                    Cron::parse(v).map_err(|e| ApiError::new(e).hint(hint.clone()))?;
                    if rec.backups.schedule.as_deref() != Some(v) {
                        // The first run is the schedule's next time, not a catch-up.
                        rec.backups.last_slot =
                            Some(time::OffsetDateTime::now_utc().unix_timestamp());
                    }
                    rec.backups.schedule = Some(v.to_string());
                }
                _ if v.is_empty() => rec.backups.retention = None,
                _ => {
                    let n: u32 = v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                        ApiError::new(format!("backup-retention must be a whole number of backups to keep (1 or more), got {v:?}"))
                            .hint(hint.clone())
                    })?;
                    rec.backups.retention = Some(n);
                }
            }
        }
        self.store
            .put_service(&rec)
            .map_err(|e| ApiError::new(format!("cannot update the state store: {e}")))?;
        self.service_config(service)
    }

    /// Runs scheduled backups; a run missed while the controller was down is made once.
    pub(crate) async fn backup_scheduler(self: Arc<Self>) {
        loop {
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            for mut rec in self.store.services().unwrap_or_default() {
                let Some(text) = rec.backups.schedule.clone() else {
                    continue;
                };
                let Ok(cron) = Cron::parse(&text) else {
                    continue;
                };
                let due = cron.due(rec.backups.last_slot, now);
                if rec.backups.last_slot.is_none() || due {
                    rec.backups.last_slot = Some(now);
                    let _ = self.store.put_service(&rec);
                }
                if !due {
                    continue;
                }
                let me = self.clone();
                let name = rec.name.clone();
                tokio::spawn(async move {
                    match me.create_backup(&name, "scheduled").await {
                        Ok(m) => crate::controller::log(format!(
                            "{name}: scheduled backup {} ({})",
                            m.id,
                            human_size(m.size)
                        )),
                        Err(e) => crate::controller::log(format!(
                            "{name}: scheduled backup failed: {}",
                            e.message
                        )),
                    }
                });
            }
            // Wake shortly after each minute starts.
            let secs = 60
                - (time::OffsetDateTime::now_utc()
                    .unix_timestamp()
                    .rem_euclid(60)) as u64;
            tokio::time::sleep(std::time::Duration::from_secs(secs.clamp(1, 60))).await;
        }
    }

    /// The backing services for the dashboard and metrics.
    pub(crate) fn service_views(&self) -> Vec<twelve_web::ServiceView> {
        let statuses = self.service_statuses();
        self.store
            .services()
            .unwrap_or_default()
            .into_iter()
            .map(|rec| {
                let st = statuses.iter().find(|s| s.name == rec.name);
                twelve_web::ServiceView {
                    name: rec.name.clone(),
                    kind: rec.kind.clone(),
                    status: st.map(|s| s.status.clone()).unwrap_or_default(),
                    message: st.map(|s| s.message.clone()).unwrap_or_default(),
                    last_backup: Self::backup_note(&rec).unwrap_or_default(),
                    last_backup_success: rec.backups.last_success.as_deref().and_then(|t| {
                        time::OffsetDateTime::parse(
                            t,
                            &time::format_description::well_known::Rfc3339,
                        )
                        .ok()
                        .map(|t| t.unix_timestamp())
                    }),
                    backup_failures: rec.backups.failures,
                }
            })
            .collect()
    }

    /// The last backup of a service, for its status line.
    pub(crate) fn backup_note(rec: &ServiceRecord) -> Option<String> {
        rec.backups.last.as_ref().map(LastBackup::summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .unwrap()
            .unix_timestamp()
    }

    #[test]
    fn cron_next() {
        let c = Cron::parse("0 3 * * *").unwrap();
        assert_eq!(
            c.next_after(at("2026-12-07T02:59:00Z")),
            Some(at("2026-12-07T03:00:00Z"))
        );
        assert_eq!(
            c.next_after(at("2026-12-07T03:00:00Z")),
            Some(at("2026-12-08T03:00:00Z"))
        );
        let every = Cron::parse("* * * * *").unwrap();
        assert_eq!(
            every.next_after(at("2026-12-07T02:59:30Z")),
            Some(at("2026-12-07T03:00:00Z"))
        );
        let steps = Cron::parse("*/15 9-17 * * 1-5").unwrap();
        // Saturday 2026-12-12 -> Monday 09:00.
        assert_eq!(
            steps.next_after(at("2026-12-11T17:45:00Z")),
            Some(at("2026-12-14T09:00:00Z"))
        );
        let sunday = Cron::parse("30 1 * * 7").unwrap();
        assert_eq!(
            sunday.next_after(at("2026-12-07T00:00:00Z")),
            Some(at("2026-12-13T01:30:00Z"))
        );
        assert_eq!(
            Cron::parse("@daily").unwrap(),
            Cron::parse("0 0 * * *").unwrap()
        );
        // Runs missed while the controller was down: due once, at start.
        let nightly = Cron::parse("0 3 * * *").unwrap();
        let down_since = at("2026-12-05T02:00:00Z");
        let back = at("2026-12-07T10:00:00Z");
        assert!(nightly.due(Some(down_since), back));
        assert!(
            !nightly.due(Some(back), back + 3600),
            "caught up: the next is tomorrow"
        );
        assert!(
            !nightly.due(None, back),
            "a new schedule waits for its next time"
        );
        assert!(nightly.due(Some(back), at("2026-12-08T03:00:00Z")));
        for bad in [
            "",
            "0 3 * *",
            "60 * * * *",
            "* 24 * * *",
            "*/0 * * * *",
            "5-1 * * * *",
            "a * * * *",
        ] {
            assert!(Cron::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sealed_parts_round_trip_and_detect_tampering() {
        let dir = tempfile::tempdir().unwrap();
        let cipher = {
            use chacha20poly1305::KeyInit;
            XChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(&[7u8; 32]))
        };
        let data: Vec<u8> = (0..(3 * CHUNK + 123))
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let mut sink = DirSink {
            dir: dir.path().into(),
            cipher: Some(cipher.clone()),
        };
        let mut w = sink.create("p").unwrap();
        w.write_all(&data).unwrap();
        w.finish().unwrap();
        let src = DirSource {
            dir: dir.path().into(),
            cipher: Some(cipher.clone()),
        };
        let mut back = vec![];
        src.open("p").unwrap().read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
        // The stored bytes are not the plaintext's zstd frame.
        let stored = std::fs::read(dir.path().join("p.zst")).unwrap();
        assert_eq!(&stored[..4], MAGIC);
        // Cutting the last chunk off is detected.
        let file = dir.path().join("p.zst");
        let len = stored.len();
        std::fs::write(&file, &stored[..len - 10]).unwrap();
        let mut out = vec![];
        assert!(src
            .open("p")
            .and_then(|mut r| r.read_to_end(&mut out))
            .is_err());
        // So is a flipped byte.
        let mut flipped = stored.clone();
        flipped[40] ^= 1;
        std::fs::write(&file, &flipped).unwrap();
        assert!(src
            .open("p")
            .and_then(|mut r| r.read_to_end(&mut out))
            .is_err());
        // And another key.
        std::fs::write(&file, &stored).unwrap();
        let other = DirSource {
            dir: dir.path().into(),
            cipher: Some({
                use chacha20poly1305::KeyInit;
                XChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(&[8u8; 32]))
            }),
        };
        assert!(other
            .open("p")
            .and_then(|mut r| r.read_to_end(&mut out))
            .is_err());
    }
}
