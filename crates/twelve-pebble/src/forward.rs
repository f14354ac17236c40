//! Log forwarding (Pebble's `log-targets`): each target of the plan gets a bounded queue
//! and a sender task. `LogStore::write` offers every line to the queues of the targets
//! whose `services` select its service (a short lock, never I/O), so a slow or dead
//! receiver never holds up a service or its local logs. The sender batches lines (100, or
//! whatever arrived within 1 s), POSTs them as a Loki push or an OTLP/HTTP JSON request,
//! and retries with a backoff while the receiver is down; when a queue is full its oldest
//! lines are dropped and counted.
//!
//! Targets follow the plan: `reconcile` is called on every plan change (layers added over
//! the API included), so adding, changing or disabling a target takes effect at once.
//!
//! `https://` locations are reached over TLS (rustls), trusting the certificates of
//! `SSL_CERT_FILE` when it is set, else the system's bundle
//! (`/etc/ssl/certs/ca-certificates.crt`), else the Mozilla roots built in, as Pebble (Go)
//! trusts the system's.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use twelve_layer::{LogTarget, Plan};

use crate::logs::Entry;
use crate::types::LogTargetInfo;

/// Lines per request (Pebble's OpenTelemetry client and gatherer use 100).
pub const BATCH_ENTRIES: usize = 100;
/// A partial batch is sent once its first line has waited this long.
pub const FLUSH_PERIOD: Duration = Duration::from_secs(1);
/// Bounds of each target's queue; past either, the oldest lines are dropped.
pub const MAX_BUFFERED_ENTRIES: usize = 10_000;
pub const MAX_BUFFERED_BYTES: usize = 4 * 1024 * 1024;
/// Pebble's request timeout.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Retry delays after a failed request: doubling from the first to the last.
pub const RETRY_MIN: Duration = Duration::from_secs(1);
pub const RETRY_MAX: Duration = Duration::from_secs(10);
/// How long a removed target (or the daemon at exit) keeps trying to send what it holds.
pub const FINAL_FLUSH: Duration = Duration::from_secs(2);
/// Bytes counted for each queued line on top of its message.
const ENTRY_OVERHEAD: usize = 32;
/// The OpenTelemetry instrumentation scope name.
const OTEL_SCOPE: &str = "pebble";

/// Whether `target` forwards the logs of `service`: its `services` list read from the
/// end, the last entry that names the service (or `all`) wins (Pebble's `LogsTo`).
pub fn logs_to(target: &LogTarget, service: &str) -> bool {
    for s in target.services.iter().rev() {
        if s == service {
            return true;
        }
        if s.strip_prefix('-') == Some(service) {
            return false;
        }
        match s.as_str() {
            "all" => return true,
            "-all" => return false,
            _ => {}
        }
    }
    false
}

fn is_shell_special(c: u8) -> bool {
    matches!(c, b'*' | b'#' | b'$' | b'@' | b'!' | b'?' | b'-') || c.is_ascii_digit()
}

fn is_alnum(c: u8) -> bool {
    c == b'_' || c.is_ascii_alphanumeric()
}

/// The name after a `$` and how many bytes it spans (Go's `getShellName`).
fn shell_name(s: &str) -> (&str, usize) {
    let b = s.as_bytes();
    if b[0] == b'{' {
        if b.len() > 2 && is_shell_special(b[1]) && b[2] == b'}' {
            return (&s[1..2], 3);
        }
        for i in 1..b.len() {
            if b[i] == b'}' {
                if i == 1 {
                    return ("", 2); // `${}`: bad syntax, eaten
                }
                return (&s[1..i], i + 1);
            }
        }
        return ("", 1); // `${` without `}`: bad syntax, eaten
    }
    if is_shell_special(b[0]) {
        return (&s[..1], 1);
    }
    let n = b.iter().take_while(|c| is_alnum(**c)).count();
    (&s[..n], n)
}

/// Expands `$VAR` and `${VAR}` as Go's `os.Expand` (what Pebble uses for labels):
/// unknown variables become empty; a `$` not followed by a name stays.
pub fn expand(s: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    let mut j = 0;
    while j < b.len() {
        if b[j] == b'$' && j + 1 < b.len() {
            out.push_str(&s[i..j]);
            let (name, w) = shell_name(&s[j + 1..]);
            if name.is_empty() && w > 0 {
                // invalid syntax: eaten
            } else if name.is_empty() {
                out.push('$');
            } else {
                out.push_str(&lookup(name).unwrap_or_default());
            }
            j += w;
            i = j + 1;
        }
        j += 1;
    }
    out.push_str(&s[i.min(s.len())..]);
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Loki,
    OpenTelemetry,
}

#[derive(Debug, Clone, PartialEq)]
struct Endpoint {
    kind: Kind,
    /// Where requests are POSTed.
    uri: hyper::Uri,
}

/// The push endpoint of a target, or why it cannot be forwarded to.
fn endpoint(t: &LogTarget) -> Result<Endpoint, String> {
    let location = t.location.as_deref().unwrap_or("");
    let (kind, url) = match t.type_.as_deref() {
        Some("loki") => (Kind::Loki, location.to_string()),
        Some("opentelemetry") => (
            Kind::OpenTelemetry,
            format!("{}/v1/logs", location.trim_end_matches('/')),
        ),
        Some(other) => return Err(format!("type {other:?} is not supported by twelve pebble")),
        None => return Err("no type".into()),
    };
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| format!("invalid location {location:?}: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(s) => {
            return Err(format!(
                "location {location:?}: scheme {s:?} is not supported (http:// or https://)"
            ))
        }
        None => return Err(format!("location {location:?} is not an http(s):// URL")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("location {location:?} has no host"));
    }
    Ok(Endpoint { kind, uri })
}

#[derive(Debug, Default, Clone)]
struct Stats {
    sent: u64,
    dropped: u64,
    /// Consecutive failed requests.
    failures: u64,
    last_error: Option<String>,
    last_sent: Option<SystemTime>,
}

struct TargetState {
    config: LogTarget,
    endpoint: Result<Endpoint, String>,
    /// Services of the plan whose lines go to this target.
    selected: BTreeSet<String>,
    queue: VecDeque<Arc<Entry>>,
    queued_bytes: usize,
    /// Lines ever removed from the front of the queue (sent or dropped).
    popped: u64,
    stats: Stats,
    stopping: bool,
}

impl TargetState {
    fn pop_front(&mut self) -> Option<Arc<Entry>> {
        let e = self.queue.pop_front()?;
        self.queued_bytes -= e.message.len() + ENTRY_OVERHEAD;
        self.popped += 1;
        Some(e)
    }

    fn push(&mut self, entry: Arc<Entry>) {
        self.queued_bytes += entry.message.len() + ENTRY_OVERHEAD;
        self.queue.push_back(entry);
        while self.queue.len() > MAX_BUFFERED_ENTRIES
            || (self.queued_bytes > MAX_BUFFERED_BYTES && self.queue.len() > 1)
        {
            self.pop_front();
            self.stats.dropped += 1;
        }
    }

    /// Removes what is left of a batch of `n` lines taken when `popped` was `popped_then`
    /// (lines dropped meanwhile were the batch's first ones); returns how many.
    fn remove_batch(&mut self, n: usize, popped_then: u64) -> u64 {
        let gone = (self.popped - popped_then).min(n as u64);
        let left = n as u64 - gone;
        for _ in 0..left {
            self.pop_front();
        }
        left
    }

    fn clear(&mut self) {
        while self.pop_front().is_some() {}
    }
}

struct Target {
    name: String,
    state: Mutex<TargetState>,
    /// Lines were queued.
    wake: Notify,
    /// The target was removed or the daemon is stopping.
    stop: Notify,
}

impl Target {
    fn lock(&self) -> MutexGuard<'_, TargetState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn offer(&self, entry: &Arc<Entry>) {
        {
            let mut s = self.lock();
            if s.stopping || s.endpoint.is_err() || !s.selected.contains(&*entry.service) {
                return;
            }
            s.push(entry.clone());
        }
        self.wake.notify_one();
    }

    fn begin_stop(&self) {
        self.lock().stopping = true;
        self.stop.notify_one();
    }

    fn info(&self) -> LogTargetInfo {
        let s = self.lock();
        let (status, error) = match &s.endpoint {
            Err(e) => ("unsupported", Some(e.clone())),
            Ok(_) if s.stats.failures > 0 => ("failing", s.stats.last_error.clone()),
            Ok(_) => ("active", s.stats.last_error.clone()),
        };
        LogTargetInfo {
            name: self.name.clone(),
            type_: s.config.type_.clone().unwrap_or_default(),
            location: s.config.location.clone().unwrap_or_default(),
            services: s.selected.iter().cloned().collect(),
            status: status.into(),
            buffered: s.queue.len() as u64,
            sent: s.stats.sent,
            dropped: s.stats.dropped,
            failures: s.stats.failures,
            error,
            last_sent: s.stats.last_sent.map(crate::timefmt::format_time),
        }
    }
}

/// Each target with its sender task.
type Targets = BTreeMap<String, (Arc<Target>, JoinHandle<()>)>;

type Envs = Arc<Mutex<HashMap<String, Arc<HashMap<String, String>>>>>;

/// All log targets of the plan.
#[derive(Default)]
pub struct Forwarder {
    targets: Mutex<Targets>,
    /// The environment each service was last started with, for label expansion.
    envs: Envs,
}

impl Forwarder {
    fn targets(&self) -> MutexGuard<'_, Targets> {
        self.targets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a service's line for the targets that select the service. Never blocks
    /// on I/O.
    pub fn offer(&self, entry: &Arc<Entry>) {
        for (t, _) in self.targets().values() {
            t.offer(entry);
        }
    }

    /// Records the environment a service (re)starts with: labels expand from it.
    pub fn set_env(&self, service: &str, env: &[(String, String)]) {
        let env: HashMap<String, String> = env.iter().cloned().collect();
        self.envs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(service.to_string(), Arc::new(env));
    }

    /// Brings the targets in line with the plan. Must run inside the tokio runtime.
    pub fn reconcile(&self, plan: &Plan) {
        let mut targets = self.targets();
        let gone: Vec<String> = targets
            .keys()
            .filter(|n| !plan.log_targets.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            if let Some((t, _)) = targets.remove(&name) {
                t.begin_stop();
                crate::log(&format!("Stopped forwarding logs to target {name:?}."));
            }
        }
        for (name, config) in &plan.log_targets {
            let selected: BTreeSet<String> = plan
                .services
                .keys()
                .filter(|s| logs_to(config, s))
                .cloned()
                .collect();
            let endpoint = endpoint(config);
            if let Some((t, _)) = targets.get(name) {
                let mut s = t.lock();
                if let (Err(e), false) = (&endpoint, s.endpoint == endpoint) {
                    crate::log(&format!("Cannot forward logs to target {name:?}: {e}."));
                }
                if endpoint.is_err() {
                    s.clear();
                }
                s.config = config.clone();
                s.endpoint = endpoint;
                s.selected = selected;
                continue;
            }
            match &endpoint {
                Ok(_) => crate::log(&format!(
                    "Forwarding logs of {} to target {name:?}.",
                    describe(&selected)
                )),
                Err(e) => crate::log(&format!("Cannot forward logs to target {name:?}: {e}.")),
            }
            let t = Arc::new(Target {
                name: name.clone(),
                state: Mutex::new(TargetState {
                    config: config.clone(),
                    endpoint,
                    selected,
                    queue: VecDeque::new(),
                    queued_bytes: 0,
                    popped: 0,
                    stats: Stats::default(),
                    stopping: false,
                }),
                wake: Notify::new(),
                stop: Notify::new(),
            });
            let task = tokio::spawn(run(t.clone(), self.envs.clone()));
            targets.insert(name.clone(), (t, task));
        }
    }

    /// The state of each target, by name.
    pub fn infos(&self) -> Vec<LogTargetInfo> {
        self.targets().values().map(|(t, _)| t.info()).collect()
    }

    /// Stops every target after a last attempt (bounded) to send what it holds.
    pub async fn shutdown(&self) {
        let tasks: Vec<JoinHandle<()>> = {
            let mut targets = self.targets();
            let all = std::mem::take(&mut *targets);
            all.into_values()
                .map(|(t, h)| {
                    t.begin_stop();
                    h
                })
                .collect()
        };
        let deadline = Instant::now() + FINAL_FLUSH + Duration::from_millis(500);
        for mut h in tasks {
            if tokio::time::timeout_at(deadline, &mut h).await.is_err() {
                h.abort();
            }
        }
    }
}

fn describe(selected: &BTreeSet<String>) -> String {
    if selected.is_empty() {
        "no services".into()
    } else {
        selected.iter().cloned().collect::<Vec<_>>().join(", ")
    }
}

enum Outcome {
    /// Nothing to send.
    Empty,
    /// Sent (or refused for good and dropped): go on.
    Done,
    /// Failed; the lines stay queued.
    Retry,
}

/// The sender task of one target.
async fn run(t: Arc<Target>, envs: Envs) {
    let mut retry = RETRY_MIN;
    loop {
        // Wait for a first line...
        loop {
            {
                let s = t.lock();
                if s.stopping || !s.queue.is_empty() {
                    break;
                }
            }
            tokio::select! {
                _ = t.wake.notified() => {}
                _ = t.stop.notified() => {}
            }
        }
        // ...then for a full batch or the end of the period.
        let deadline = Instant::now() + FLUSH_PERIOD;
        loop {
            {
                let s = t.lock();
                if s.stopping || s.queue.len() >= BATCH_ENTRIES {
                    break;
                }
            }
            tokio::select! {
                _ = t.wake.notified() => {}
                _ = t.stop.notified() => {}
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        // Send full batches, and one partial batch.
        loop {
            if t.lock().stopping {
                final_flush(&t, &envs).await;
                return;
            }
            match send_batch(&t, &envs).await {
                Outcome::Empty => break,
                Outcome::Done => {
                    retry = RETRY_MIN;
                    if t.lock().queue.len() < BATCH_ENTRIES {
                        break;
                    }
                }
                Outcome::Retry => {
                    tokio::select! {
                        _ = tokio::time::sleep(retry) => {}
                        _ = t.stop.notified() => {}
                    }
                    retry = (retry * 2).min(RETRY_MAX);
                }
            }
        }
    }
}

async fn final_flush(t: &Arc<Target>, envs: &Envs) {
    let deadline = Instant::now() + FINAL_FLUSH;
    loop {
        match tokio::time::timeout_at(deadline, send_batch(t, envs)).await {
            Ok(Outcome::Done) => {}
            _ => return,
        }
    }
}

/// Sends up to one batch from the front of the queue.
async fn send_batch(t: &Arc<Target>, envs: &Envs) -> Outcome {
    let (batch, popped_then, endpoint, labels) = {
        let s = t.lock();
        let Ok(endpoint) = s.endpoint.clone() else {
            return Outcome::Empty;
        };
        if s.queue.is_empty() {
            return Outcome::Empty;
        }
        let batch: Vec<Arc<Entry>> = s.queue.iter().take(BATCH_ENTRIES).cloned().collect();
        (batch, s.popped, endpoint, s.config.labels.clone())
    };
    let envs: HashMap<String, Arc<HashMap<String, String>>> =
        envs.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let labels_of = |service: &str| -> Vec<(String, String)> {
        let env = envs.get(service);
        labels
            .iter()
            .map(|(k, v)| {
                let value = expand(v, |name| env.and_then(|e| e.get(name).cloned()));
                (k.clone(), value)
            })
            .collect()
    };
    let body = match endpoint.kind {
        Kind::Loki => loki_body(&batch, labels_of),
        Kind::OpenTelemetry => otel_body(&batch, labels_of),
    };
    let result = post(&endpoint.uri, body.to_string()).await;
    let n = batch.len();
    let mut s = t.lock();
    match result {
        Ok((status, _)) if status.is_success() => {
            let sent = s.remove_batch(n, popped_then);
            s.stats.sent += sent;
            if s.stats.failures > 0 {
                crate::log(&format!("Resumed sending logs to target {:?}.", t.name));
            }
            s.stats.failures = 0;
            s.stats.last_error = None;
            s.stats.last_sent = Some(SystemTime::now());
            Outcome::Done
        }
        Ok((status, body)) if status.is_client_error() && status.as_u16() != 429 => {
            // Retrying will not help: drop the batch, as Pebble.
            let dropped = s.remove_batch(n, popped_then);
            s.stats.dropped += dropped;
            let e = format!("server returned HTTP {status}{body}");
            crate::log(&format!(
                "Target {:?}: request failed ({e}), dropping {dropped} logs.",
                t.name
            ));
            s.stats.last_error = Some(e);
            s.stats.failures = 0;
            Outcome::Done
        }
        Ok((status, body)) => fail(t, &mut s, format!("server returned HTTP {status}{body}")),
        Err(e) => fail(t, &mut s, e),
    }
}

fn fail(t: &Target, s: &mut TargetState, e: String) -> Outcome {
    if s.stats.failures == 0 {
        crate::log(&format!(
            "Cannot send logs to target {:?}: {e}; will retry.",
            t.name
        ));
    }
    s.stats.failures += 1;
    s.stats.last_error = Some(e);
    Outcome::Retry
}

/// Splits a batch by service, keeping the order of lines; services in name order.
fn by_service(batch: &[Arc<Entry>]) -> BTreeMap<&str, Vec<&Entry>> {
    let mut out: BTreeMap<&str, Vec<&Entry>> = BTreeMap::new();
    for e in batch {
        out.entry(&*e.service).or_default().push(e);
    }
    out
}

/// `{"streams":[{"stream":{labels},"values":[["<unix nanos>","<line>"]]}]}`
fn loki_body(batch: &[Arc<Entry>], labels_of: impl Fn(&str) -> Vec<(String, String)>) -> Value {
    let streams: Vec<Value> = by_service(batch)
        .into_iter()
        .map(|(service, entries)| {
            let mut stream = serde_json::Map::new();
            stream.insert("pebble_service".into(), json!(service));
            for (k, v) in labels_of(service) {
                stream.insert(k, json!(v));
            }
            let values: Vec<Value> = entries
                .iter()
                .map(|e| json!([e.nanos.to_string(), e.message]))
                .collect();
            json!({"stream": stream, "values": values})
        })
        .collect();
    json!({ "streams": streams })
}

/// OTLP/HTTP JSON: one resource per service, with `service.name` and the labels as
/// resource attributes.
fn otel_body(batch: &[Arc<Entry>], labels_of: impl Fn(&str) -> Vec<(String, String)>) -> Value {
    let resources: Vec<Value> = by_service(batch)
        .into_iter()
        .map(|(service, entries)| {
            let mut labels = labels_of(service);
            labels.sort();
            let mut attributes =
                vec![json!({"key": "service.name", "value": {"stringValue": service}})];
            attributes.extend(
                labels
                    .into_iter()
                    .map(|(k, v)| json!({"key": k, "value": {"stringValue": v}})),
            );
            let records: Vec<Value> = entries
                .iter()
                .map(|e| {
                    json!({"timeUnixNano": e.nanos.to_string(),
                           "body": {"stringValue": e.message}})
                })
                .collect();
            json!({
                "resource": {"attributes": attributes},
                "scopeLogs": [{"scope": {"name": OTEL_SCOPE}, "logRecords": records}],
            })
        })
        .collect();
    json!({ "resourceLogs": resources })
}

/// POSTs a JSON body over a new connection; returns the status and an excerpt of the
/// response body (`; ...`, empty when there is none).
async fn post(uri: &hyper::Uri, body: String) -> Result<(hyper::StatusCode, String), String> {
    tokio::time::timeout(REQUEST_TIMEOUT, post_inner(uri, body))
        .await
        .unwrap_or_else(|_| Err(format!("no response within {}s", REQUEST_TIMEOUT.as_secs())))
}

async fn post_inner(uri: &hyper::Uri, body: String) -> Result<(hyper::StatusCode, String), String> {
    let host = uri.host().unwrap_or_default();
    let tls = uri.scheme_str() == Some("https");
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let bare = host.trim_matches(['[', ']']);
    let stream = tokio::net::TcpStream::connect((bare, port))
        .await
        .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
    let mut sender = if tls {
        let name = rustls::pki_types::ServerName::try_from(bare.to_string())
            .map_err(|e| format!("invalid server name {host:?}: {e}"))?;
        let stream = tls_connector()?
            .connect(name, stream)
            .await
            .map_err(|e| format!("TLS with {host}:{port}: {e}"))?;
        handshake(stream).await?
    } else {
        handshake(stream).await?
    };
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or(host);
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let req = hyper::Request::post(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(
            hyper::header::USER_AGENT,
            concat!("twelve-pebble/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = Limited::new(resp.into_body(), 1024 * 1024)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    let text = text.trim();
    let excerpt = if text.is_empty() || status.is_success() {
        String::new()
    } else {
        format!("; {text}")
    };
    Ok((status, excerpt))
}

/// An HTTP/1 connection over `io`, driven by a task of its own.
async fn handshake<T>(io: T) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(sender)
}

/// The TLS client of every `https://` target, built on first use.
fn tls_connector() -> Result<tokio_rustls::TlsConnector, String> {
    static CONNECTOR: std::sync::OnceLock<Result<tokio_rustls::TlsConnector, String>> =
        std::sync::OnceLock::new();
    CONNECTOR
        .get_or_init(|| {
            let roots = trusted_roots(std::env::var_os("SSL_CERT_FILE").map(Into::into))?;
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
        })
        .clone()
}

/// The certificates of `cert_file` (`SSL_CERT_FILE`), else of the system's bundle, else
/// the Mozilla roots built in. A named file that cannot be used is an error (said in the
/// target's status), not a silent fallback.
fn trusted_roots(cert_file: Option<std::path::PathBuf>) -> Result<rustls::RootCertStore, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    const SYSTEM: &str = "/etc/ssl/certs/ca-certificates.crt";
    let (path, named) = match cert_file {
        Some(p) => (p, true),
        None => (std::path::PathBuf::from(SYSTEM), false),
    };
    let mut roots = rustls::RootCertStore::empty();
    match std::fs::read(&path) {
        Ok(pem) => {
            for cert in CertificateDer::pem_slice_iter(&pem) {
                match cert {
                    // A bundle may hold a certificate rustls cannot use: skip it.
                    Ok(cert) => {
                        let _ = roots.add(cert);
                    }
                    Err(e) if named => {
                        return Err(format!("SSL_CERT_FILE {}: {e}", path.display()))
                    }
                    Err(_) => {}
                }
            }
            if roots.is_empty() && named {
                return Err(format!(
                    "SSL_CERT_FILE {}: no usable PEM certificate",
                    path.display()
                ));
            }
        }
        Err(e) if named => return Err(format!("SSL_CERT_FILE {}: {e}", path.display())),
        Err(_) => {}
    }
    if roots.is_empty() {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn target(services: &[&str]) -> LogTarget {
        LogTarget {
            type_: Some("loki".into()),
            location: Some("http://localhost:3100/loki/api/v1/push".into()),
            services: services.iter().map(|s| s.to_string()).collect(),
            ..LogTarget::default()
        }
    }

    #[test]
    fn services_are_selected_last_match_wins() {
        assert!(!logs_to(&target(&[]), "a"));
        assert!(logs_to(&target(&["all"]), "a"));
        assert!(logs_to(&target(&["a", "b"]), "a"));
        assert!(!logs_to(&target(&["a", "b", "-a"]), "a"));
        assert!(logs_to(&target(&["a", "b", "-a"]), "b"));
        assert!(!logs_to(&target(&["all", "-all"]), "a"));
        assert!(logs_to(&target(&["-all", "a"]), "a"));
        assert!(!logs_to(&target(&["-all", "a"]), "b"));
        assert!(logs_to(&target(&["-a", "all"]), "a"));
        assert!(!logs_to(&target(&["all", "-a"]), "a"));
    }

    #[test]
    fn labels_expand_like_go_os_expand() {
        let env: HashMap<String, String> = [("UNIT", "web/0"), ("A_1", "x")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let e = |s: &str| expand(s, |n| env.get(n).cloned());
        assert_eq!(e("$UNIT"), "web/0");
        assert_eq!(e("${UNIT}-app"), "web/0-app");
        assert_eq!(e("unit=$UNIT."), "unit=web/0.");
        assert_eq!(e("$A_1$A_1"), "xx");
        assert_eq!(e("$MISSING|"), "|");
        assert_eq!(e("cost $"), "cost $");
        assert_eq!(e("a $ b"), "a $ b");
        assert_eq!(e("${}x"), "x");
        assert_eq!(e("${UNIT"), "UNIT");
        assert_eq!(e("plain"), "plain");
        assert_eq!(e("é$UNIT€"), "éweb/0€");
    }

    #[test]
    fn tls_roots_come_from_ssl_cert_file_else_the_system_else_built_in() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = trusted_roots(Some(missing)).unwrap_err();
        assert!(
            e.starts_with("SSL_CERT_FILE ") && e.contains("missing.pem"),
            "{e}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = trusted_roots(Some(empty)).unwrap_err();
        assert!(e.contains("no usable PEM certificate"), "{e}");
        // The system's bundle or, without one, the built-in roots: never empty.
        assert!(!trusted_roots(None).unwrap().is_empty());
    }

    #[test]
    fn endpoints_are_http_or_https_and_otel_gets_the_logs_path() {
        let mut t = target(&["all"]);
        assert_eq!(
            endpoint(&t).unwrap().uri.to_string(),
            "http://localhost:3100/loki/api/v1/push"
        );
        t.location = Some("https://loki/x".into());
        assert_eq!(endpoint(&t).unwrap().uri.to_string(), "https://loki/x");
        t.location = Some("ftp://loki/x".into());
        assert!(endpoint(&t).unwrap_err().contains("http:// or https://"));
        t.type_ = Some("opentelemetry".into());
        t.location = Some("http://collector:4318/".into());
        let ep = endpoint(&t).unwrap();
        assert_eq!(ep.kind, Kind::OpenTelemetry);
        assert_eq!(ep.uri.to_string(), "http://collector:4318/v1/logs");
        t.type_ = Some("syslog".into());
        assert!(endpoint(&t).unwrap_err().contains("not supported"));
    }

    fn entry(seq: u64, service: &str, message: &str) -> Arc<Entry> {
        Arc::new(Entry {
            seq,
            time: 1_700_000_000_000,
            nanos: 1_700_000_000_000_000_000 + seq as i64,
            service: Arc::from(service),
            message: message.into(),
        })
    }

    #[test]
    fn loki_and_otel_bodies() {
        let batch = vec![
            entry(1, "b", "one"),
            entry(2, "a", "two"),
            entry(3, "b", "three"),
        ];
        let labels = |s: &str| vec![("unit".to_string(), format!("u-{s}"))];
        let body = loki_body(&batch, labels);
        assert_eq!(
            body,
            json!({"streams": [
                {"stream": {"pebble_service": "a", "unit": "u-a"},
                 "values": [["1700000000000000002", "two"]]},
                {"stream": {"pebble_service": "b", "unit": "u-b"},
                 "values": [["1700000000000000001", "one"], ["1700000000000000003", "three"]]},
            ]})
        );
        let body = otel_body(&batch[..1], labels);
        assert_eq!(
            body,
            json!({"resourceLogs": [{
                "resource": {"attributes": [
                    {"key": "service.name", "value": {"stringValue": "b"}},
                    {"key": "unit", "value": {"stringValue": "u-b"}},
                ]},
                "scopeLogs": [{"scope": {"name": "pebble"}, "logRecords": [
                    {"timeUnixNano": "1700000000000000001", "body": {"stringValue": "one"}},
                ]}],
            }]})
        );
    }

    fn state() -> TargetState {
        let config = target(&["all"]);
        TargetState {
            endpoint: endpoint(&config),
            config,
            selected: ["svc".to_string()].into(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            popped: 0,
            stats: Stats::default(),
            stopping: false,
        }
    }

    #[test]
    fn a_full_queue_drops_its_oldest_lines_and_counts_them() {
        let mut s = state();
        for i in 0..(MAX_BUFFERED_ENTRIES as u64 + 50) {
            s.push(entry(i, "svc", "x"));
        }
        assert_eq!(s.queue.len(), MAX_BUFFERED_ENTRIES);
        assert_eq!(s.stats.dropped, 50);
        assert_eq!(s.queue.front().unwrap().seq, 50);
        // Bytes bound too.
        let mut s = state();
        let big = "y".repeat(64 * 1024);
        for i in 0..100 {
            s.push(entry(i, "svc", &big));
        }
        assert!(s.queued_bytes <= MAX_BUFFERED_BYTES);
        assert_eq!(s.stats.dropped as usize + s.queue.len(), 100);
    }

    #[test]
    fn a_batch_sent_while_lines_were_dropped_removes_only_what_is_left_of_it() {
        let mut s = state();
        for i in 0..10 {
            s.push(entry(i, "svc", "x"));
        }
        let popped_then = s.popped;
        // A batch of the first 4 is in flight; meanwhile 3 old lines are dropped.
        for _ in 0..3 {
            s.pop_front();
        }
        assert_eq!(s.remove_batch(4, popped_then), 1);
        assert_eq!(s.queue.front().unwrap().seq, 4);
        // More dropped than the batch held: nothing more to remove.
        let popped_then = s.popped;
        for _ in 0..3 {
            s.pop_front();
        }
        assert_eq!(s.remove_batch(2, popped_then), 0);
        assert_eq!(s.queue.front().unwrap().seq, 7);
    }

    /// A one-connection-per-request HTTP server answering each request with the next
    /// status of `statuses` (then 200), recording the JSON bodies.
    async fn receiver(statuses: Vec<u16>) -> (u16, Arc<Mutex<Vec<Value>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let seen = got.clone();
        tokio::spawn(async move {
            let mut statuses = statuses.into_iter();
            loop {
                let (mut sock, _) = listener.accept().await.unwrap();
                let mut buf = Vec::new();
                let body = loop {
                    let mut chunk = [0u8; 4096];
                    let n = sock.read(&mut chunk).await.unwrap();
                    if n == 0 {
                        break None;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len: usize = text[..end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap())
                            })
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            break Some(buf[end + 4..end + 4 + len].to_vec());
                        }
                    }
                };
                let status = statuses.next().unwrap_or(200);
                if status == 200 {
                    if let Some(body) = body {
                        seen.lock()
                            .unwrap()
                            .push(serde_json::from_slice::<Value>(&body).unwrap());
                    }
                }
                let resp = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 4\r\nconnection: close\r\n\r\nnope"
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            }
        });
        (port, got)
    }

    fn plan(yaml: &str) -> Plan {
        let layer = twelve_layer::Layer::parse(1, "base", yaml).unwrap();
        Plan::from_layers([&layer]).unwrap()
    }

    fn lines(got: &Mutex<Vec<Value>>) -> Vec<String> {
        got.lock()
            .unwrap()
            .iter()
            .flat_map(|b| b["streams"].as_array().unwrap().clone())
            .flat_map(|s| s["values"].as_array().unwrap().clone())
            .map(|v| v[1].as_str().unwrap().to_string())
            .collect()
    }

    async fn eventually(what: &str, f: impl Fn() -> bool) {
        let start = std::time::Instant::now();
        while !f() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn lines_go_through_after_server_errors_and_a_refused_batch_is_dropped() {
        // 503 and 429 are retried; 400 drops the batch.
        let (port, got) = receiver(vec![503, 429, 400]).await;
        let store = crate::logs::LogStore::new(false);
        let p = plan(&format!(
            "services:\n  a: {{override: replace, command: x}}\n  b: {{override: replace, command: x}}\nlog-targets:\n  t:\n    override: replace\n    type: loki\n    location: http://127.0.0.1:{port}/loki/api/v1/push\n    services: [a]\n    labels: {{unit: '$UNIT'}}\n"
        ));
        store.forwarder.reconcile(&p);
        store
            .forwarder
            .set_env("a", &[("UNIT".to_string(), "u/0".to_string())]);
        store.write("a", "first".into());
        store.write("b", "not selected".into());
        let info = || store.forwarder.infos().pop().unwrap();
        // 503, 429, then 400: "first" is dropped.
        eventually("the refused batch", || info().dropped == 1).await;
        assert_eq!(info().sent, 0);
        assert!(info().error.unwrap().contains("400"), "{:?}", info());
        store.write("a", "second".into());
        store.write("a", "third".into());
        eventually("two lines sent", || info().sent == 2).await;
        assert_eq!(lines(&got), ["second", "third"]);
        let body = got.lock().unwrap()[0].clone();
        assert_eq!(
            body["streams"][0]["stream"],
            json!({"pebble_service": "a", "unit": "u/0"})
        );
        let i = info();
        assert_eq!(
            (i.status.as_str(), i.failures, i.buffered),
            ("active", 0, 0)
        );
        assert_eq!(i.services, ["a"]);

        // Disabled by a later layer: nothing more is queued.
        let mut p2 = p.clone();
        p2.log_targets["t"].services.push("-all".into());
        store.forwarder.reconcile(&p2);
        store.write("a", "fourth".into());
        assert_eq!(info().buffered, 0);
        assert!(info().services.is_empty());
        // Removed: gone from the list.
        store.forwarder.reconcile(&Plan::default());
        assert!(store.forwarder.infos().is_empty());
        store.forwarder.shutdown().await;
    }

    #[tokio::test]
    async fn shutdown_sends_what_is_still_queued() {
        let (port, got) = receiver(vec![]).await;
        let store = crate::logs::LogStore::new(false);
        store.forwarder.reconcile(&plan(&format!(
            "services:\n  a: {{override: replace, command: x}}\nlog-targets:\n  t:\n    override: replace\n    type: loki\n    location: http://127.0.0.1:{port}/loki/api/v1/push\n    services: [all]\n"
        )));
        for i in 0..3 {
            store.write("a", format!("last words {i}"));
        }
        // Well within the flush period: only the final flush can send them.
        store.forwarder.shutdown().await;
        assert_eq!(
            lines(&got),
            ["last words 0", "last words 1", "last words 2"]
        );
        store.write("a", "after".into());
        assert!(store.forwarder.infos().is_empty());
    }

    #[tokio::test]
    async fn unsupported_targets_queue_nothing_and_say_why() {
        let store = crate::logs::LogStore::new(false);
        store.forwarder.reconcile(&plan(
            "services:\n  a: {override: replace, command: x}\nlog-targets:\n  s:\n    override: replace\n    type: syslog\n    location: tcp://127.0.0.1:514\n    services: [all]\n  h:\n    override: replace\n    type: loki\n    location: ftp://loki/loki/api/v1/push\n    services: [all]\n",
        ));
        store.write("a", "line".into());
        let infos = store.forwarder.infos();
        assert_eq!(infos.len(), 2);
        for i in infos {
            assert_eq!((i.status.as_str(), i.buffered), ("unsupported", 0), "{i:?}");
            assert!(i.error.unwrap().contains("not supported"));
        }
        store.forwarder.shutdown().await;
    }
}
