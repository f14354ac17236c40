//! Server-side apply of rendered objects to a Kubernetes API server: one `PATCH` per object
//! (`application/apply-patch+yaml`, field manager `twelve`), in render order, waiting for the
//! migration Job to succeed before the pods of the release, then pruning what twelve applied
//! before for the app and no longer renders (by its labels, as `kubectl apply --prune`).

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
    /// A client certificate (PEM, with its chain) and its private key (PEM), for users
    /// that authenticate with one (kubeconfig `client-certificate[-data]`).
    pub client_cert: Option<(Vec<u8>, Vec<u8>)>,
}

#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// `dryRun=All`: the server validates and answers without persisting; no Job wait.
    pub dry_run: bool,
    /// How long the migration Job may take.
    pub migration_timeout: Duration,
    /// Pause between polls of the Job's status.
    pub poll_interval: Duration,
    /// `force=true`: take over fields another field manager owns (`kubectl scale`, `edit`)
    /// instead of failing with a conflict.
    pub force_conflicts: bool,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            dry_run: false,
            migration_timeout: Duration::from_secs(600),
            poll_interval: Duration::from_secs(2),
            force_conflicts: false,
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
    #[error("the migration Job {name} failed: {message}; not applied, so the running release is left alone: {held_back} (see `kubectl logs -n {namespace} job/{name}`; applying again reruns the migration)")]
    MigrationFailed {
        name: String,
        namespace: String,
        message: String,
        /// The objects of the release that were not applied, `Kind name, ...`.
        held_back: String,
    },
    #[error("the migration Job {name} did not finish within {secs}s; not applied, so the running release is left alone: {held_back} (see `kubectl describe -n {namespace} job/{name}`)")]
    MigrationTimeout {
        name: String,
        namespace: String,
        secs: u64,
        held_back: String,
    },
    #[error("cannot apply {kind} {name} in namespace {namespace}: another field manager owns fields twelve sets: {message}; pass --force-conflicts to take them over (or undo the other change)")]
    Conflict {
        kind: String,
        name: String,
        namespace: String,
        message: String,
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

    /// Server-side applies one object; returns the object as the server has it. Without
    /// `force`, fields another manager owns make a [`ApplyError::Conflict`].
    pub async fn apply(&self, object: &Value, dry_run: bool) -> Result<Value, ApplyError> {
        self.apply_with(object, dry_run, true).await
    }

    /// [`Client::apply`] with `force=true` or not.
    pub async fn apply_with(
        &self,
        object: &Value,
        dry_run: bool,
        force: bool,
    ) -> Result<Value, ApplyError> {
        let (api_version, kind, namespace, name) = identity(object);
        let path = object_path(api_version, kind, namespace, name)
            .ok_or_else(|| ApplyError::UnknownKind(kind.to_string()))?;
        let mut url = format!("{path}?fieldManager=twelve");
        if force {
            url.push_str("&force=true");
        }
        if dry_run {
            url.push_str("&dryRun=All");
        }
        // JSON is YAML: the apply-patch+yaml content type takes it as it is.
        let body = serde_json::to_vec(object).unwrap_or_default();
        let (status, resp) = self
            .send("PATCH", &url, Some("application/apply-patch+yaml"), body)
            .await?;
        if status == 409 {
            if let ApplyError::Rejected { message, .. } =
                self.rejected("apply", kind, namespace, name, status, &resp)
            {
                return Err(ApplyError::Conflict {
                    kind: kind.to_string(),
                    name: name.to_string(),
                    namespace: namespace.to_string(),
                    message,
                });
            }
        }
        if !(200..=299).contains(&status) {
            return Err(self.rejected("apply", kind, namespace, name, status, &resp));
        }
        Ok(serde_json::from_slice(&resp).unwrap_or(Value::Null))
    }

    /// Any request to the API: `(status, body)`. For tests and tools (`kubectl`'s raw mode).
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<(u16, Vec<u8>), ApplyError> {
        self.send(method, path, content_type, body).await
    }

    /// The objects of `kind` in `namespace` matching a label selector.
    pub async fn list(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        selector: &str,
    ) -> Result<Vec<Value>, ApplyError> {
        let path = object_path(api_version, kind, namespace, "-")
            .ok_or_else(|| ApplyError::UnknownKind(kind.to_string()))?;
        let path = format!(
            "{}?labelSelector={}",
            path.trim_end_matches("/-"),
            url::form_urlencoded::byte_serialize(selector.as_bytes()).collect::<String>()
        );
        let (status, body) = self.send("GET", &path, None, vec![]).await?;
        if !(200..=299).contains(&status) {
            return Err(self.rejected("list", kind, namespace, "", status, &body));
        }
        let list: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Ok(list["items"].as_array().cloned().unwrap_or_default())
    }

    /// Deletes an object (its Pods too, for a Job: propagation `Background`); `false` when
    /// it was already gone.
    pub async fn delete(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
        dry_run: bool,
    ) -> Result<bool, ApplyError> {
        let mut path = object_path(api_version, kind, namespace, name)
            .ok_or_else(|| ApplyError::UnknownKind(kind.to_string()))?;
        if dry_run {
            path.push_str("?dryRun=All");
        }
        let body = serde_json::to_vec(&serde_json::json!({
            "kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background",
        }))
        .unwrap_or_default();
        let (status, resp) = self
            .send("DELETE", &path, Some("application/json"), body)
            .await?;
        match status {
            200..=299 => Ok(true),
            404 => Ok(false),
            _ => Err(self.rejected("delete", kind, namespace, name, status, &resp)),
        }
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
    /// condition (or more failures than `backoffLimit`), or the timeout. `held_back` names
    /// what is not applied when it fails.
    pub async fn wait_for_job(
        &self,
        namespace: &str,
        name: &str,
        opts: &ApplyOptions,
        held_back: &str,
    ) -> Result<(), ApplyError> {
        let start = tokio::time::Instant::now();
        loop {
            let Some(job) = self.get("batch/v1", "Job", namespace, name).await? else {
                return Err(ApplyError::MigrationVanished {
                    name: name.to_string(),
                });
            };
            if job_succeeded(&job) {
                return Ok(());
            }
            if let Some(message) = job_failure(&job) {
                return Err(ApplyError::MigrationFailed {
                    name: name.to_string(),
                    namespace: namespace.to_string(),
                    message,
                    held_back: held_back.to_string(),
                });
            }
            if start.elapsed() >= opts.migration_timeout {
                return Err(ApplyError::MigrationTimeout {
                    name: name.to_string(),
                    namespace: namespace.to_string(),
                    secs: opts.migration_timeout.as_secs(),
                    held_back: held_back.to_string(),
                });
            }
            tokio::time::sleep(opts.poll_interval).await;
        }
    }

    /// Deletes a Job and waits until the API server no longer has it (its finalizers and
    /// Pods go in the background).
    async fn replace_job(
        &self,
        namespace: &str,
        name: &str,
        opts: &ApplyOptions,
    ) -> Result<(), ApplyError> {
        self.delete("batch/v1", "Job", namespace, name, false)
            .await?;
        let start = tokio::time::Instant::now();
        while self
            .get("batch/v1", "Job", namespace, name)
            .await?
            .is_some()
        {
            if start.elapsed() >= Duration::from_secs(60) {
                return Err(ApplyError::Client(format!(
                    "the failed migration Job {namespace}/{name} was deleted but is still there after 60s; delete it (`kubectl delete -n {namespace} job/{name}`) and apply again"
                )));
            }
            tokio::time::sleep(opts.poll_interval.min(Duration::from_millis(500))).await;
        }
        Ok(())
    }
}

fn job_succeeded(job: &Value) -> bool {
    job["status"]["succeeded"].as_u64().unwrap_or(0) >= 1
}

/// Why a Job failed (its `Failed` condition, or more failures than `backoffLimit`).
fn job_failure(job: &Value) -> Option<String> {
    let status = &job["status"];
    let failed_condition = status["conditions"].as_array().and_then(|cs| {
        cs.iter()
            .find(|c| c["type"] == "Failed" && c["status"] == "True")
    });
    let limit = job["spec"]["backoffLimit"].as_u64().unwrap_or(6);
    let failures = status["failed"].as_u64().unwrap_or(0);
    if failed_condition.is_none() && failures <= limit {
        return None;
    }
    Some(
        failed_condition
            .and_then(|c| c["message"].as_str().or(c["reason"].as_str()))
            .map(str::to_string)
            .unwrap_or_else(|| format!("{failures} failed attempt(s)")),
    )
}

/// The label twelve puts the release in.
pub const RELEASE_LABEL: &str = "twelve.dev/release";

/// The kinds twelve renders, as (apiVersion, kind), in the order pruning deletes them
/// (workloads first, so that nothing running still uses a ConfigMap that goes).
pub const PRUNED_KINDS: [(&str, &str); 7] = [
    ("networking.k8s.io/v1", "Ingress"),
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("batch/v1", "Job"),
    ("v1", "Service"),
    ("v1", "Secret"),
    ("v1", "ConfigMap"),
];

/// The label selector of every object twelve applied for `app`.
pub fn app_selector(app: &str) -> String {
    format!("app.kubernetes.io/name={app},app.kubernetes.io/managed-by=twelve")
}

/// `Kind name, Kind name` of objects.
fn names(objects: &[Value]) -> String {
    let v: Vec<String> = objects
        .iter()
        .map(|o| {
            let (_, kind, _, name) = identity(o);
            format!("{kind} {name}")
        })
        .collect();
    if v.is_empty() {
        "nothing".into()
    } else {
        v.join(", ")
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

/// Applies `objects`: the ConfigMaps and Secrets (named per release), the Job (the
/// migration), then the rest in order; after the Job, waits for it to succeed before going
/// on, so a failed migration leaves the running release alone (a Job that failed
/// before is replaced, so applying again reruns the migration). Then prunes what twelve
/// applied before for this app and no longer renders, but the previous release's
/// environment (its pods may still be rolling). `progress` gets one line per step.
pub async fn apply_all(
    client: &Client,
    objects: &[Value],
    opts: &ApplyOptions,
    progress: &mut dyn FnMut(String),
) -> Result<(), ApplyError> {
    let Some(first) = objects.first() else {
        return Ok(());
    };
    let app = first["metadata"]["labels"]["app.kubernetes.io/name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (_, _, ns, _) = identity(first);
    let ns = ns.to_string();
    let running = running_release(client, &ns, &app).await?;
    // What the migration needs (its release's ConfigMaps and Secret) before it, everything
    // that serves after it: a failed migration leaves every shared object as it was.
    let mut ordered: Vec<&Value> = objects.iter().collect();
    ordered.sort_by_key(|o| match o["kind"].as_str() {
        Some("ConfigMap" | "Secret") => 0,
        Some("Job") => 1,
        _ => 2,
    });
    let objects: Vec<Value> = ordered.into_iter().cloned().collect();
    let objects = &objects[..];
    for (i, o) in objects.iter().enumerate() {
        let (_, kind, ns, name) = identity(o);
        if kind == "Job" && !opts.dry_run {
            if let Some(job) = client.get("batch/v1", "Job", ns, name).await? {
                if let Some(why) = job_failure(&job) {
                    progress(format!(
                        "the migration Job {ns}/{name} failed before ({why}): replacing it to run the migration again"
                    ));
                    client.replace_job(ns, name, opts).await?;
                }
            }
        }
        let applied = client
            .apply_with(o, opts.dry_run, opts.force_conflicts)
            .await?;
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
            client
                .wait_for_job(ns, name, opts, &names(&objects[i + 1..]))
                .await?;
            progress(format!("migration Job {ns}/{name} succeeded"));
        }
    }
    if !app.is_empty() {
        prune(
            client,
            objects,
            &ns,
            &app,
            running.as_deref(),
            opts,
            progress,
        )
        .await?;
    }
    Ok(())
}

/// The release the app's StatefulSet runs now (before this apply), if any.
pub async fn running_release(
    client: &Client,
    namespace: &str,
    app: &str,
) -> Result<Option<String>, ApplyError> {
    Ok(client
        .get("apps/v1", "StatefulSet", namespace, app)
        .await?
        .and_then(|s| {
            s["metadata"]["labels"][RELEASE_LABEL]
                .as_str()
                .map(str::to_string)
        }))
}

/// Deletes the objects labelled as twelve's for `app` that `objects` does not have, but the
/// ConfigMaps and Secrets of the release that was running (`keep_release`).
async fn prune(
    client: &Client,
    objects: &[Value],
    namespace: &str,
    app: &str,
    keep_release: Option<&str>,
    opts: &ApplyOptions,
    progress: &mut dyn FnMut(String),
) -> Result<(), ApplyError> {
    let wanted: std::collections::BTreeSet<(String, String)> = objects
        .iter()
        .map(|o| {
            let (_, kind, _, name) = identity(o);
            (kind.to_string(), name.to_string())
        })
        .collect();
    let new_release = objects
        .first()
        .and_then(|o| o["metadata"]["labels"][RELEASE_LABEL].as_str());
    for (api_version, kind) in PRUNED_KINDS {
        for live in client
            .list(api_version, kind, namespace, &app_selector(app))
            .await?
        {
            let name = live["metadata"]["name"].as_str().unwrap_or_default();
            if name.is_empty() || wanted.contains(&(kind.to_string(), name.to_string())) {
                continue;
            }
            let release = live["metadata"]["labels"][RELEASE_LABEL].as_str();
            if matches!(kind, "ConfigMap" | "Secret")
                && release.is_some()
                && release == keep_release
                && release != new_release
            {
                progress(format!(
                    "kept {kind} {namespace}/{name} of the previous release {} until its pods are replaced (the next apply prunes it)",
                    release.unwrap_or_default()
                ));
                continue;
            }
            if client
                .delete(api_version, kind, namespace, name, opts.dry_run)
                .await?
            {
                progress(format!(
                    "pruned {kind} {namespace}/{name}{}",
                    if opts.dry_run {
                        " (dry run: not deleted)"
                    } else {
                        ""
                    }
                ));
            }
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

/// The app's secret key for a cluster: the one in the Secret of the release running there
/// (or in the `<app>-env` Secret of twelve before releases named them), so applying again
/// does not log every user out; else a new random one. `Ok((key, true))` when kept.
pub async fn cluster_secret_key(
    client: &Client,
    namespace: &str,
    app: &str,
    env_var: &str,
) -> Result<(String, bool), ApplyError> {
    let mut names = vec![];
    if let Some(release) = running_release(client, namespace, app).await? {
        names.push(crate::render::env_secret_name(app, &release));
    }
    names.push(format!("{app}-env"));
    for name in names {
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
    }
    use rand::distr::{Alphanumeric, SampleString};
    Ok((Alphanumeric.sample_string(&mut rand::rng(), 50), false))
}
