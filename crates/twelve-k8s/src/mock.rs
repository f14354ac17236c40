//! A **mock** Kubernetes API server, for tests only: no API server can run where twelve's
//! tests run (no container runtime, no registry, no cluster), so `apply` is tested against
//! this small HTTP/1.1 server. It records every request and answers as the real one does
//! for the calls twelve makes: server-side apply (`PATCH ...?fieldManager=twelve`) stores
//! the object and returns it with `metadata.uid`/`resourceVersion`; `GET` returns the
//! stored object (404 with a `Status` otherwise); a Job's `GET` shows it active on the
//! first poll and then succeeded (or failed, with the `Failed` condition); a collection's
//! `GET` lists the stored objects matching `labelSelector`; `DELETE` removes one; configured
//! rejections answer with a `Status` and an HTTP error code. The real API server
//! (scripts/kube-apiserver.sh) is in `crates/twelve/tests/k8s_apiserver.rs`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

/// How the mock's migration Jobs end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JobOutcome {
    #[default]
    Succeed,
    Fail,
    /// Stays active forever (for timeouts).
    Hang,
}

#[derive(Debug, Clone, Default)]
pub struct MockConfig {
    pub job: JobOutcome,
    /// Requests whose path contains `.0` are answered with HTTP `.1` and message `.2`.
    pub reject: Option<(String, u16, String)>,
}

/// One request the mock received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query.
    pub target: String,
    pub content_type: Option<String>,
    pub authorization: Option<String>,
    pub body: String,
}

#[derive(Default)]
struct State {
    requests: Vec<Recorded>,
    objects: BTreeMap<String, Value>,
    job_polls: BTreeMap<String, u32>,
    version: u64,
}

pub struct MockApi {
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl MockApi {
    /// Starts the mock on 127.0.0.1 (an ephemeral port) in a thread of its own.
    pub fn start(config: MockConfig) -> MockApi {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the mock API server");
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let state = shared.clone();
                let config = config.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, &state, &config);
                });
            }
        });
        MockApi { url, state }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// The stored object at a REST path.
    pub fn object(&self, path: &str) -> Option<Value> {
        self.state.lock().unwrap().objects.get(path).cloned()
    }

    /// Stores an object as if it existed before (e.g. the app's Secret).
    pub fn put(&self, path: &str, object: Value) {
        self.state
            .lock()
            .unwrap()
            .objects
            .insert(path.to_string(), object);
    }
}

fn serve(conn: TcpStream, state: &Mutex<State>, config: &MockConfig) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    let body = String::from_utf8_lossy(&body).to_string();
    let (status, answer) = {
        let mut st = state.lock().unwrap();
        st.requests.push(Recorded {
            method: method.clone(),
            target: target.clone(),
            content_type: headers.get("content-type").cloned(),
            authorization: headers.get("authorization").cloned(),
            body: body.clone(),
        });
        respond(&mut st, config, &method, &target, &body)
    };
    let text = answer.to_string();
    let reason = match status {
        200 => "OK",
        201 => "Created",
        404 => "Not Found",
        _ => "Error",
    };
    let mut conn = conn;
    write!(
        conn,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    )?;
    conn.flush()
}

fn status_object(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn respond(
    st: &mut State,
    config: &MockConfig,
    method: &str,
    target: &str,
    body: &str,
) -> (u16, Value) {
    let path = target.split('?').next().unwrap_or_default().to_string();
    if let Some((needle, code, message)) = &config.reject {
        if target.contains(needle.as_str()) {
            return (*code, status_object(*code, "Invalid", message));
        }
    }
    match method {
        "PATCH" => {
            let Ok(mut obj) = serde_json::from_str::<Value>(body) else {
                return (
                    400,
                    status_object(400, "BadRequest", "the body is not JSON"),
                );
            };
            let dry_run = target.contains("dryRun=All");
            st.version += 1;
            let created = !st.objects.contains_key(&path);
            let uid = format!("00000000-0000-0000-0000-{:012}", st.version);
            obj["metadata"]["uid"] = uid.into();
            obj["metadata"]["resourceVersion"] = st.version.to_string().into();
            if !dry_run {
                st.objects.insert(path, obj.clone());
            }
            (if created { 201 } else { 200 }, obj)
        }
        "GET" if is_collection(&path) => {
            let selector = query_param(target, "labelSelector").unwrap_or_default();
            let prefix = format!("{path}/");
            let items: Vec<Value> = st
                .objects
                .iter()
                .filter(|(p, _)| p.starts_with(&prefix) && !p[prefix.len()..].contains('/'))
                .filter(|(_, o)| {
                    selector.split(',').filter(|s| !s.is_empty()).all(|kv| {
                        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                        o["metadata"]["labels"][k] == v
                    })
                })
                .map(|(_, o)| o.clone())
                .collect();
            (
                200,
                json!({"kind": "List", "apiVersion": "v1", "items": items}),
            )
        }
        "DELETE" => {
            if target.contains("dryRun=All") {
                return match st.objects.get(&path) {
                    Some(_) => (200, status_object(200, "", "deleted")),
                    None => (404, status_object(404, "NotFound", "not found")),
                };
            }
            st.job_polls.remove(&path);
            match st.objects.remove(&path) {
                Some(_) => (200, json!({"kind": "Status", "status": "Success"})),
                None => (404, status_object(404, "NotFound", "not found")),
            }
        }
        "GET" => match st.objects.get(&path).cloned() {
            Some(mut obj) => {
                if path.contains("/jobs/") {
                    let polls = st.job_polls.entry(path).or_insert(0);
                    *polls += 1;
                    obj["status"] = match (config.job, *polls) {
                        (_, 1) | (JobOutcome::Hang, _) => json!({"active": 1}),
                        (JobOutcome::Succeed, _) => json!({"succeeded": 1}),
                        (JobOutcome::Fail, _) => json!({
                            "failed": 3,
                            "conditions": [{"type": "Failed", "status": "True",
                                "reason": "BackoffLimitExceeded",
                                "message": "Job has reached the specified backoff limit"}],
                        }),
                    };
                }
                (200, obj)
            }
            None => {
                let name = path.rsplit('/').next().unwrap_or_default();
                (
                    404,
                    status_object(404, "NotFound", &format!("{name:?} not found")),
                )
            }
        },
        _ => (
            405,
            status_object(405, "MethodNotAllowed", "method not allowed"),
        ),
    }
}

/// A collection path (`.../namespaces/NS/configmaps`), not an object's.
fn is_collection(path: &str) -> bool {
    let last = path.rsplit('/').next().unwrap_or_default();
    matches!(
        last,
        "configmaps"
            | "secrets"
            | "services"
            | "jobs"
            | "statefulsets"
            | "deployments"
            | "ingresses"
    )
}

/// A query parameter, percent-decoded.
fn query_param(target: &str, name: &str) -> Option<String> {
    let query = target.split_once('?')?.1;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}
