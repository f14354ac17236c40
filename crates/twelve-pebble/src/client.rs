//! An async client of the supervisor's API, as the controller and the CLI use it.
//!
//! Operations that make a change (start, stop, restart, replan, autostart, exec) wait for
//! it to finish and turn a failed change into `Error::Change`; the `*_no_wait` forms
//! return the change id instead.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::types::{
    ChangeInfo, CheckInfo, ExecRequest, ExecResult, LogEntry, LogTargetInfo, ServiceInfo,
    SystemInfo,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to the supervisor at {}: {source}", path.display())]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The daemon answered with an error envelope.
    #[error("{message}")]
    Api {
        status_code: u16,
        kind: Option<String>,
        message: String,
    },
    /// A change finished with an error.
    #[error("{}", change.err.as_deref().unwrap_or("change failed"))]
    Change { change: Box<ChangeInfo> },
    #[error("unexpected answer from the supervisor: {0}")]
    Protocol(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The socket of a state directory.
pub fn socket_in(dir: &Path) -> PathBuf {
    dir.join(".pebble.socket")
}

#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

struct Envelope {
    result: Value,
    change: Option<String>,
}

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b',') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn names_query(key: &str, names: &[&str]) -> String {
    if names.is_empty() {
        String::new()
    } else {
        format!("{key}={}", encode(&names.join(",")))
    }
}

impl Client {
    /// A client of the daemon listening on `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Client {
        Client {
            socket: socket.into(),
        }
    }

    /// A client of the daemon whose state directory is `dir`.
    pub fn for_dir(dir: impl AsRef<Path>) -> Client {
        Client::new(socket_in(dir.as_ref()))
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Response<Incoming>> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| Error::Connect {
                path: self.socket.clone(),
                source,
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Error::Protocol(e.to_string()))?;
        tokio::spawn(conn);
        let body = match body {
            Some(v) => Full::new(Bytes::from(v.to_string())),
            None => Full::new(Bytes::new()),
        };
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "localhost")
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(body)
            .map_err(|e| Error::Protocol(e.to_string()))?;
        sender
            .send_request(req)
            .await
            .map_err(|e| Error::Protocol(e.to_string()))
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Envelope> {
        let resp = self.send(method, path, body).await?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| Error::Protocol(e.to_string()))?
            .to_bytes();
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
            Error::Protocol(format!(
                "status {status}, body is not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            ))
        })?;
        if v["type"] == "error" {
            return Err(Error::Api {
                status_code: status.as_u16(),
                kind: v["result"]["kind"].as_str().map(String::from),
                message: v["result"]["message"]
                    .as_str()
                    .unwrap_or("unknown error")
                    .to_string(),
            });
        }
        Ok(Envelope {
            result: v["result"].clone(),
            change: v["change"].as_str().map(String::from),
        })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let env = self.call(Method::GET, path, None).await?;
        serde_json::from_value(env.result).map_err(|e| Error::Protocol(e.to_string()))
    }

    async fn post_change(&self, path: &str, body: Value) -> Result<String> {
        let env = self.call(Method::POST, path, Some(body)).await?;
        env.change
            .ok_or_else(|| Error::Protocol("expected a change id".into()))
    }

    pub async fn system_info(&self) -> Result<SystemInfo> {
        self.get("/v1/system-info").await
    }

    /// Adds a layer (in memory). With `combine`, merges it into the layer of the same
    /// label. Nothing restarts until `replan`.
    pub async fn add_layer(&self, label: &str, yaml: &str, combine: bool) -> Result<()> {
        self.call(
            Method::POST,
            "/v1/layers",
            Some(json!({"action": "add", "label": label, "format": "yaml",
                        "layer": yaml, "combine": combine})),
        )
        .await?;
        Ok(())
    }

    /// The combined plan, as YAML.
    pub async fn plan(&self) -> Result<String> {
        self.get("/v1/plan?format=yaml").await
    }

    /// The log targets of the plan and how forwarding to each goes (twelve extension).
    pub async fn log_targets(&self) -> Result<Vec<LogTargetInfo>> {
        self.get("/v1/log-targets").await
    }

    /// The services (all of the plan if `names` is empty), sorted by name.
    pub async fn services(&self, names: &[&str]) -> Result<Vec<ServiceInfo>> {
        self.get(&format!("/v1/services?{}", names_query("names", names)))
            .await
    }

    /// Posts a service action and returns the change id without waiting.
    pub async fn services_action_no_wait(&self, action: &str, names: &[&str]) -> Result<String> {
        self.post_change("/v1/services", json!({"action": action, "services": names}))
            .await
    }

    async fn services_action(&self, action: &str, names: &[&str]) -> Result<ChangeInfo> {
        let id = self.services_action_no_wait(action, names).await?;
        self.wait_ok(&id).await
    }

    /// Starts services (and what they require); fails if one exits within 1 s.
    pub async fn start(&self, names: &[&str]) -> Result<ChangeInfo> {
        self.services_action("start", names).await
    }

    /// Stops services (and those that require them).
    pub async fn stop(&self, names: &[&str]) -> Result<ChangeInfo> {
        self.services_action("stop", names).await
    }

    pub async fn restart(&self, names: &[&str]) -> Result<ChangeInfo> {
        self.services_action("restart", names).await
    }

    /// Restarts services whose config changed and starts enabled services not running.
    pub async fn replan(&self) -> Result<ChangeInfo> {
        self.services_action("replan", &[]).await
    }

    /// Starts the enabled services; `Error::Api` with kind `no-default-services` if none.
    pub async fn autostart(&self) -> Result<ChangeInfo> {
        self.services_action("autostart", &[]).await
    }

    /// The last `n` log lines of the services (all if empty), merged in time order.
    /// `n`: None for Pebble's default 30, `Some(-1)` for everything buffered.
    pub async fn logs(&self, services: &[&str], n: Option<i64>) -> Result<Vec<LogEntry>> {
        let mut out = Vec::new();
        self.stream_logs(services, n, false, |e| out.push(e))
            .await?;
        Ok(out)
    }

    /// Calls `each` for the last `n` lines and then, with `follow`, for every new line
    /// until the daemon goes away.
    pub async fn stream_logs(
        &self,
        services: &[&str],
        n: Option<i64>,
        follow: bool,
        mut each: impl FnMut(LogEntry),
    ) -> Result<()> {
        let mut path = format!("/v1/logs?{}", names_query("services", services));
        if let Some(n) = n {
            path.push_str(&format!("&n={n}"));
        }
        if follow {
            path.push_str("&follow=true");
        }
        let resp = self.send(Method::GET, &path, None).await?;
        if !resp.status().is_success() {
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let v: Value = serde_json::from_slice(&bytes).unwrap_or_default();
            return Err(Error::Api {
                status_code: 400,
                kind: None,
                message: v["result"]["message"]
                    .as_str()
                    .unwrap_or("cannot read logs")
                    .to_string(),
            });
        }
        let mut body = resp.into_body();
        let mut buf: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| Error::Protocol(e.to_string()))?;
            if let Some(data) = frame.data_ref() {
                buf.extend_from_slice(data);
                while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    if let Ok(e) = serde_json::from_slice::<LogEntry>(&line) {
                        each(e);
                    }
                }
            }
        }
        Ok(())
    }

    /// Starts a one-off command; returns the change id to wait on.
    pub async fn exec_no_wait(&self, req: &ExecRequest) -> Result<String> {
        let body = serde_json::to_value(req).map_err(|e| Error::Protocol(e.to_string()))?;
        self.post_change("/v1/exec", body).await
    }

    /// Runs a one-off command to completion: its exit code, stdout and stderr. A non-zero
    /// exit code is not an error; a command that cannot start or times out is.
    pub async fn exec(&self, req: &ExecRequest) -> Result<ExecResult> {
        let id = self.exec_no_wait(req).await?;
        let change = self.wait_ok(&id).await?;
        let data = change
            .data
            .ok_or_else(|| Error::Protocol("exec change has no data".into()))?;
        serde_json::from_value(data).map_err(|e| Error::Protocol(e.to_string()))
    }

    pub async fn checks(&self, names: &[&str]) -> Result<Vec<CheckInfo>> {
        self.get(&format!("/v1/checks?{}", names_query("names", names)))
            .await
    }

    /// Runs a check now and returns its state and this run's error, if any.
    pub async fn refresh_check(&self, name: &str) -> Result<(CheckInfo, Option<String>)> {
        let env = self
            .call(
                Method::POST,
                "/v1/checks/refresh",
                Some(json!({"name": name})),
            )
            .await?;
        let info = serde_json::from_value(env.result["info"].clone())
            .map_err(|e| Error::Protocol(e.to_string()))?;
        Ok((info, env.result["error"].as_str().map(String::from)))
    }

    /// Starts (`"start"`) or stops (`"stop"`) checks; returns those whose state changed.
    pub async fn checks_action(&self, action: &str, names: &[&str]) -> Result<Vec<String>> {
        let env = self
            .call(
                Method::POST,
                "/v1/checks",
                Some(json!({"action": action, "checks": names})),
            )
            .await?;
        serde_json::from_value(env.result["changed"].clone())
            .map_err(|e| Error::Protocol(e.to_string()))
    }

    /// Whether every check of the level (`"alive"`, `"ready"`, or all) is up.
    pub async fn health(&self, level: Option<&str>) -> Result<bool> {
        let path = match level {
            Some(l) => format!("/v1/health?level={}", encode(l)),
            None => "/v1/health".to_string(),
        };
        let env = self.call(Method::GET, &path, None).await?;
        env.result["healthy"]
            .as_bool()
            .ok_or_else(|| Error::Protocol("health has no \"healthy\"".into()))
    }

    /// Sends a signal (`"SIGHUP"` or `"HUP"`) to the main process of each service.
    pub async fn signal(&self, signal: &str, names: &[&str]) -> Result<()> {
        self.call(
            Method::POST,
            "/v1/signals",
            Some(json!({"signal": signal, "services": names})),
        )
        .await?;
        Ok(())
    }

    pub async fn change(&self, id: &str) -> Result<ChangeInfo> {
        self.get(&format!("/v1/changes/{}", encode(id))).await
    }

    /// Waits until the change is ready and returns it (whatever its status).
    pub async fn wait_change(&self, id: &str) -> Result<ChangeInfo> {
        self.get(&format!("/v1/changes/{}/wait", encode(id))).await
    }

    /// Waits for the change; a change that failed is `Error::Change`.
    pub async fn wait_ok(&self, id: &str) -> Result<ChangeInfo> {
        let change = self.wait_change(id).await?;
        if change.err.is_some() {
            return Err(Error::Change {
                change: Box::new(change),
            });
        }
        Ok(change)
    }

    /// The OpenMetrics text of `/v1/metrics`.
    pub async fn metrics(&self) -> Result<String> {
        let resp = self.send(Method::GET, "/v1/metrics", None).await?;
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| Error::Protocol(e.to_string()))?
            .to_bytes();
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// A client for synchronous callers (tests, scripts): the async client with its own
/// single-threaded runtime. Don't use it from inside an async runtime.
pub struct BlockingClient {
    client: Client,
    rt: tokio::runtime::Runtime,
}

impl BlockingClient {
    pub fn new(socket: impl Into<PathBuf>) -> std::io::Result<BlockingClient> {
        Ok(BlockingClient {
            client: Client::new(socket),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Runs one client call to completion: `bc.block_on(bc.client().services(&[]))`.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }
}
