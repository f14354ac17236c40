//! Server-side apply of rendered objects to a Kubernetes API server: one `PATCH` per object
//! (`application/apply-patch+yaml`, field manager `twelve`, `force=true`), in render order,
//! waiting for the migration Job to succeed before the pods of the release.

use std::time::Duration;

use serde_json::Value;

/// Where the API server is and how to authenticate.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// `https://HOST:6443`, or `http://127.0.0.1:8001` for `kubectl proxy`.
    pub server: String,
    /// A bearer token (a ServiceAccount token, `kubectl create token ...`).
    pub token: Option<String>,
    /// PEM certificate(s) of the CA that signed the server's certificate.
    pub ca_pem: Option<Vec<u8>>,
    /// Do not verify the server's certificate.
    pub insecure: bool,
}

#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// `dryRun=All`: the server validates and answers without persisting; no Job wait.
    pub dry_run: bool,
    /// How long the migration Job may take.
    pub migration_timeout: Duration,
    /// Pause between polls of the Job's status.
    pub poll_interval: Duration,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            dry_run: false,
            migration_timeout: Duration::from_secs(600),
            poll_interval: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("cannot reach the Kubernetes API server at {server}: {reason}")]
    Unreachable { server: String, reason: String },
    #[error("cannot {verb} {kind} {name} in namespace {namespace}: the API server at {server} answered {status}: {message}")]
    Rejected {
        verb: &'static str,
        kind: String,
        name: String,
        namespace: String,
        server: String,
        status: u16,
        message: String,
    },
    #[error("the migration Job {name} failed: {message}; the StatefulSet and Deployments of this release were not applied (see `kubectl logs -n {namespace} job/{name}`)")]
    MigrationFailed {
        name: String,
        namespace: String,
        message: String,
    },
    #[error("the migration Job {name} did not finish within {secs}s; the StatefulSet and Deployments of this release were not applied (see `kubectl describe -n {namespace} job/{name}`)")]
    MigrationTimeout {
        name: String,
        namespace: String,
        secs: u64,
    },
    #[error("the migration Job {name} disappeared while twelve waited for it")]
    MigrationVanished { name: String },
    #[error("cannot apply an object of kind {0:?}: twelve knows where ConfigMap, Secret, Service, Job, StatefulSet, Deployment, Ingress and Namespace live")]
    UnknownKind(String),
    #[error("invalid API server URL {0:?}: it must start with http:// or https://")]
    BadServer(String),
    #[error("cannot set up the HTTP client: {0}")]
    Client(String),
}

/// A client of the Kubernetes REST API: just enough for server-side apply and reads. One
/// HTTP/1.1 connection per request (an app is a handful of objects).
pub struct Client {
    target: Target,
    host: String,
    port: u16,
    tls: Option<crate::tls::Connector>,
}

/// The REST path of a namespaced object of `kind` (or of a Namespace).
pub fn object_path(api_version: &str, kind: &str, namespace: &str, name: &str) -> Option<String> {
    let plural = match kind {
        "ConfigMap" => "configmaps",
        "Secret" => "secrets",
        "Service" => "services",
        "Job" => "jobs",
        "StatefulSet" => "statefulsets",
        "Deployment" => "deployments",
        "Ingress" => "ingresses",
        "Namespace" => return Some(format!("/api/v1/namespaces/{name}")),
        _ => return None,
    };
    let base = if api_version.contains('/') {
        format!("/apis/{api_version}")
    } else {
        format!("/api/{api_version}")
    };
    Some(format!("{base}/namespaces/{namespace}/{plural}/{name}"))
}

impl Client {
    pub fn new(target: Target) -> Result<Client, ApplyError> {
        let server = target.server.trim_end_matches('/').to_string();
        let bad = || ApplyError::BadServer(target.server.clone());
        let url = url::Url::parse(&server).map_err(|_| bad())?;
        let https = match url.scheme() {
            "http" => false,
            "https" => true,
            _ => return Err(bad()),
        };
        let host = url.host_str().ok_or_else(bad)?.to_string();
        let port = url.port_or_known_default().ok_or_else(bad)?;
        let tls = if https {
            Some(crate::tls::Connector::new(&target, &host)?)
        } else {
            None
        };
        Ok(Client {
            target: Target { server, ..target },
            host,
            port,
            tls,
        })
    }

    pub fn server(&self) -> &str {
        &self.target.server
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<(u16, Vec<u8>), ApplyError> {
        use http_body_util::{BodyExt, Full};
        use hyper::body::Bytes;
        let unreachable = |reason: String| ApplyError::Unreachable {
            server: self.target.server.clone(),
            reason,
        };
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        let tcp = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::net::TcpStream::connect((host, self.port)),
        )
        .await
        .map_err(|_| unreachable("no answer within 10s".into()))?
        .map_err(|e| unreachable(e.to_string()))?;
        let io: crate::tls::Stream = match &self.tls {
            Some(t) => t.connect(tcp).await.map_err(unreachable)?,
            None => Box::new(tcp),
        };
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
                .await
                .map_err(|e| unreachable(cause(&e)))?;
        tokio::spawn(conn);
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("Host", format!("{}:{}", self.host, self.port))
            .header("Accept", "application/json")
            .header("User-Agent", "twelve");
        if let Some(ct) = content_type {
            req = req.header("Content-Type", ct);
        }
        if let Some(t) = &self.target.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ApplyError::Client(e.to_string()))?;
        let resp = tokio::time::timeout(Duration::from_secs(60), sender.send_request(req))
            .await
            .map_err(|_| unreachable("no answer within 60s".into()))?
            .map_err(|e| unreachable(cause(&e)))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| unreachable(cause(&e)))?
            .to_bytes();
        Ok((status, body.to_vec()))
    }

    /// GETs an object; `None` when it does not exist.
    pub async fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Value>, ApplyError> {
        let path = object_path(api_version, kind, namespace, name)
            .ok_or_else(|| ApplyError::UnknownKind(kind.to_string()))?;
        let (status, body) = self.send("GET", &path, None, vec![]).await?;
        match status {
            200..=299 => Ok(serde_json::from_slice(&body).ok()),
            404 => Ok(None),
            _ => Err(self.rejected("read", kind, namespace, name, status, &body)),
        }
    }

    /// Server-side applies one object; returns the object as the server has it.
    pub async fn apply(&self, object: &Value, dry_run: bool) -> Result<Value, ApplyError> {
        let (api_version, kind, namespace, name) = identity(object);
        let path = object_path(api_version, kind, namespace, name)
            .ok_or_else(|| ApplyError::UnknownKind(kind.to_string()))?;
        let mut url = format!("{path}?fieldManager=twelve&force=true");
        if dry_run {
            url.push_str("&dryRun=All");
        }
        // JSON is YAML: the apply-patch+yaml content type takes it as it is.
        let body = serde_json::to_vec(object).unwrap_or_default();
        let (status, resp) = self
            .send("PATCH", &url, Some("application/apply-patch+yaml"), body)
            .await?;
        if !(200..=299).contains(&status) {
            return Err(self.rejected("apply", kind, namespace, name, status, &resp));
        }
        Ok(serde_json::from_slice(&resp).unwrap_or(Value::Null))
    }

    fn rejected(
        &self,
        verb: &'static str,
        kind: &str,
        namespace: &str,
        name: &str,
        status: u16,
        body: &[u8],
    ) -> ApplyError {
        // The API server answers errors with a Status object whose `message` says why.
        let message = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| {
                let text = String::from_utf8_lossy(body);
                let text = text.trim();
                if text.is_empty() {
                    "(no message)".to_string()
                } else {
                    text.chars().take(300).collect()
                }
            });
        ApplyError::Rejected {
            verb,
            kind: kind.to_string(),
            name: name.to_string(),
            namespace: namespace.to_string(),
            server: self.target.server.clone(),
            status,
            message,
        }
    }

    /// Waits for a Job to succeed: polls its status until `succeeded`, a `Failed`
    /// condition (or more failures than `backoffLimit`), or the timeout.
    pub async fn wait_for_job(
        &self,
        namespace: &str,
        name: &str,
        opts: &ApplyOptions,
    ) -> Result<(), ApplyError> {
        let start = tokio::time::Instant::now();
        loop {
            let Some(job) = self.get("batch/v1", "Job", namespace, name).await? else {
                return Err(ApplyError::MigrationVanished {
                    name: name.to_string(),
                });
            };
            let status = &job["status"];
            if status["succeeded"].as_u64().unwrap_or(0) >= 1 {
                return Ok(());
            }
            let failed_condition = status["conditions"].as_array().and_then(|cs| {
                cs.iter()
                    .find(|c| c["type"] == "Failed" && c["status"] == "True")
            });
            let limit = job["spec"]["backoffLimit"].as_u64().unwrap_or(6);
            let failures = status["failed"].as_u64().unwrap_or(0);
            if failed_condition.is_some() || failures > limit {
                let message = failed_condition
                    .and_then(|c| c["message"].as_str().or(c["reason"].as_str()))
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{failures} failed attempt(s)"));
                return Err(ApplyError::MigrationFailed {
                    name: name.to_string(),
                    namespace: namespace.to_string(),
                    message,
                });
            }
            if start.elapsed() >= opts.migration_timeout {
                return Err(ApplyError::MigrationTimeout {
                    name: name.to_string(),
                    namespace: namespace.to_string(),
                    secs: opts.migration_timeout.as_secs(),
                });
            }
            tokio::time::sleep(opts.poll_interval).await;
        }
    }
}

/// apiVersion, kind, namespace and name of an object.
pub fn identity(o: &Value) -> (&str, &str, &str, &str) {
    (
        o["apiVersion"].as_str().unwrap_or(""),
        o["kind"].as_str().unwrap_or(""),
        o["metadata"]["namespace"].as_str().unwrap_or(""),
        o["metadata"]["name"].as_str().unwrap_or(""),
    )
}

/// Applies `objects` in order; after a Job (the migration), waits for it to succeed before
/// going on, so a failed migration leaves the running release alone. `progress` gets one
/// line per step.
pub async fn apply_all(
    client: &Client,
    objects: &[Value],
    opts: &ApplyOptions,
    progress: &mut dyn FnMut(String),
) -> Result<(), ApplyError> {
    for o in objects {
        let (_, kind, ns, name) = identity(o);
        let applied = client.apply(o, opts.dry_run).await?;
        let how = if opts.dry_run {
            " (dry run: validated, not stored)"
        } else {
            ""
        };
        let rv = applied["metadata"]["resourceVersion"]
            .as_str()
            .map(|v| format!(" (resourceVersion {v})"))
            .unwrap_or_default();
        progress(format!(
            "applied {kind} {ns}/{name}{}",
            if how.is_empty() { rv } else { how.to_string() }
        ));
        if kind == "Job" && !opts.dry_run {
            progress(format!(
                "waiting for the migration Job {ns}/{name} to succeed"
            ));
            client.wait_for_job(ns, name, opts).await?;
            progress(format!("migration Job {ns}/{name} succeeded"));
        }
    }
    Ok(())
}

/// The innermost cause of an error (`Connection refused`, not "error sending request").
fn cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last: &dyn std::error::Error = e;
    while let Some(s) = last.source() {
        last = s;
    }
    let inner = last.to_string();
    let outer = e.to_string();
    if inner == outer {
        outer
    } else {
        format!("{outer}: {inner}")
    }
}

/// The app's secret key for a cluster: the one already in the app's Secret (so applying
/// again does not log every user out), else a new random one. `Ok((key, true))` when kept.
pub async fn cluster_secret_key(
    client: &Client,
    namespace: &str,
    app: &str,
    env_var: &str,
) -> Result<(String, bool), ApplyError> {
    let name = crate::render::env_secret_name(app);
    if let Some(secret) = client.get("v1", "Secret", namespace, &name).await? {
        if let Some(key) = secret["data"][env_var]
            .as_str()
            .and_then(|d| {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.decode(d).ok()
            })
            .and_then(|b| String::from_utf8(b).ok())
            .filter(|k| !k.is_empty())
        {
            return Ok((key, true));
        }
    }
    use rand::distr::{Alphanumeric, SampleString};
    Ok((Alphanumeric.sample_string(&mut rand::rng(), 50), false))
}
