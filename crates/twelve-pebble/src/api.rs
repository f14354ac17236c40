//! The HTTP API on the unix socket, with Pebble's JSON envelopes. Callers whose uid
//! (SO_PEERCRED) is neither root nor the daemon's may only read.

// Handlers return early with a ready error response; its size does not matter here.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::UnixListener;
use tokio::sync::mpsc;
use twelve_layer::CheckLevel;

use crate::manager::{Manager, OpError};
use crate::types::{ExecRequest, ExecResult};

pub type Body = BoxBody<Bytes, Infallible>;

const MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;

/// Serves the API until the listener fails.
pub async fn serve(listener: UnixListener, mgr: Arc<Manager>) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                crate::log(&format!("Cannot accept API connection: {e}"));
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let uid = stream.peer_cred().ok().map(|c| c.uid());
        let admin = uid == Some(0) || uid == Some(mgr.uid);
        let mgr = mgr.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let mgr = mgr.clone();
                async move { Ok::<_, Infallible>(route(mgr, admin, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn reason(status: StatusCode) -> &'static str {
    status.canonical_reason().unwrap_or("")
}

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

pub fn sync(result: Value) -> Response<Body> {
    json_response(
        StatusCode::OK,
        &json!({"type": "sync", "status-code": 200, "status": "OK", "result": result}),
    )
}

pub fn async_change(id: u64) -> Response<Body> {
    json_response(
        StatusCode::ACCEPTED,
        &json!({"type": "async", "status-code": 202, "status": "Accepted",
                "change": id.to_string(), "result": null}),
    )
}

pub fn error(status: StatusCode, message: &str, kind: Option<&str>) -> Response<Body> {
    let mut result = json!({ "message": message });
    if let Some(kind) = kind {
        result["kind"] = json!(kind);
    }
    json_response(
        status,
        &json!({"type": "error", "status-code": status.as_u16(), "status": reason(status),
                "result": result}),
    )
}

fn bad_request(message: impl AsRef<str>) -> Response<Body> {
    error(StatusCode::BAD_REQUEST, message.as_ref(), None)
}

fn op_error(e: OpError) -> Response<Body> {
    let status = match e.kind {
        Some("not-found") => StatusCode::NOT_FOUND,
        _ => StatusCode::BAD_REQUEST,
    };
    error(status, &e.message, e.kind)
}

fn percent_decode(s: &str) -> String {
    fn hex(c: u8) -> Option<u8> {
        (c as char).to_digit(16).map(|d| d as u8)
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Query parameters; repeated keys and commas both give lists.
fn query(req: &Request<Incoming>) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pair in req.uri().query().unwrap_or("").split('&') {
        if pair.is_empty() {
            continue;
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.entry(percent_decode(k))
            .or_default()
            .push(percent_decode(v));
    }
    out
}

fn list(q: &BTreeMap<String, Vec<String>>, key: &str) -> Vec<String> {
    q.get(key)
        .into_iter()
        .flatten()
        .flat_map(|v| v.split(','))
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

fn one<'a>(q: &'a BTreeMap<String, Vec<String>>, key: &str) -> Option<&'a str> {
    q.get(key).and_then(|v| v.first()).map(String::as_str)
}

async fn body_json<T: for<'de> Deserialize<'de>>(
    req: Request<Incoming>,
) -> Result<T, Response<Body>> {
    let bytes = Limited::new(req.into_body(), MAX_REQUEST_BYTES)
        .collect()
        .await
        .map_err(|e| bad_request(format!("cannot read request body: {e}")))?
        .to_bytes();
    serde_json::from_slice(&bytes)
        .map_err(|e| bad_request(format!("cannot decode request body: {e}")))
}

fn parse_level(s: Option<&str>) -> Result<Option<CheckLevel>, Response<Body>> {
    match s {
        None | Some("") => Ok(None),
        Some("alive") => Ok(Some(CheckLevel::Alive)),
        Some("ready") => Ok(Some(CheckLevel::Ready)),
        Some(other) => Err(bad_request(format!(
            "level must be \"alive\" or \"ready\", not {other:?}"
        ))),
    }
}

async fn route(mgr: Arc<Manager>, admin: bool, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let method = req.method().clone();
    let open = matches!(path.as_str(), "/v1/system-info" | "/v1/health");
    if method != Method::GET && !admin && !open {
        return error(
            StatusCode::FORBIDDEN,
            "access denied",
            Some("permission-denied"),
        );
    }
    let q = query(&req);
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match (method.clone(), segments.as_slice()) {
        (Method::GET, ["v1", "system-info"]) => sync(json!({
            "version": env!("CARGO_PKG_VERSION"),
            "boot-id": mgr.boot_id,
            "daemon-id": mgr.daemon_id,
        })),
        (Method::GET, ["v1", "health"]) => {
            let level = match parse_level(one(&q, "level")) {
                Ok(l) => l,
                Err(r) => return r,
            };
            let healthy = mgr.checks.healthy(level, &list(&q, "names"));
            let status = if healthy {
                StatusCode::OK
            } else {
                StatusCode::BAD_GATEWAY
            };
            json_response(
                status,
                &json!({"type": "sync", "status-code": status.as_u16(),
                        "status": reason(status), "result": {"healthy": healthy}}),
            )
        }
        (Method::GET, ["v1", "services"]) => sync(json!(mgr.service_infos(&list(&q, "names")))),
        (Method::POST, ["v1", "services"]) => post_services(mgr, req).await,
        (Method::GET, ["v1", "plan"]) => match one(&q, "format") {
            Some("yaml") => sync(json!(mgr.plan().to_yaml())),
            _ => bad_request("invalid format; must be \"yaml\""),
        },
        (Method::POST, ["v1", "layers"]) => post_layers(mgr, req).await,
        (Method::GET, ["v1", "logs"]) => logs(mgr, &q),
        (Method::GET, ["v1", "log-targets"]) => sync(json!(mgr.logs.forwarder.infos())),
        (Method::POST, ["v1", "exec"]) => post_exec(mgr, req).await,
        (Method::GET, ["v1", "changes"]) => {
            let select = one(&q, "select").unwrap_or("in-progress");
            let all: Vec<Value> = mgr
                .changes
                .all()
                .into_iter()
                .filter(|c| match select {
                    "all" => true,
                    "ready" => c.ready,
                    _ => !c.ready,
                })
                .map(|c| c.to_json())
                .collect();
            sync(json!(all))
        }
        (Method::GET, ["v1", "changes", id]) => {
            match id.parse().ok().and_then(|id| mgr.changes.get(id)) {
                Some(c) => sync(c.to_json()),
                None => change_not_found(id),
            }
        }
        (Method::GET, ["v1", "changes", id, "wait"]) => {
            let Ok(id) = id.parse::<u64>() else {
                return change_not_found(id);
            };
            let timeout = match one(&q, "timeout") {
                Some(t) if !t.is_empty() => match twelve_layer::parse_go_duration(t) {
                    Ok(d) => Some(d),
                    Err(e) => return bad_request(e),
                },
                _ => None,
            };
            let wait = mgr.changes.wait(id);
            let change = match timeout {
                None => wait.await,
                Some(t) => match tokio::time::timeout(t, wait).await {
                    Ok(c) => c,
                    Err(_) => {
                        return error(
                            StatusCode::GATEWAY_TIMEOUT,
                            &format!(
                                "timed out waiting for change after {}",
                                twelve_layer::format_go_duration(t)
                            ),
                            None,
                        )
                    }
                },
            };
            match change {
                Some(c) => sync(c.to_json()),
                None => change_not_found(&id.to_string()),
            }
        }
        (Method::GET, ["v1", "checks"]) => {
            let level = match parse_level(one(&q, "level")) {
                Ok(l) => l,
                Err(r) => return r,
            };
            sync(json!(mgr.checks.infos(&list(&q, "names"), level)))
        }
        (Method::POST, ["v1", "checks"]) => post_checks(mgr, req).await,
        (Method::POST, ["v1", "checks", "refresh"]) => {
            #[derive(Deserialize)]
            struct Body {
                name: String,
            }
            let body: Body = match body_json(req).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            match crate::checks::refresh(&mgr, &body.name).await {
                Some((info, err)) => sync(json!({"info": info, "error": err})),
                None => error(
                    StatusCode::NOT_FOUND,
                    &format!("cannot find check with name {:?}", body.name),
                    Some("not-found"),
                ),
            }
        }
        (Method::POST, ["v1", "signals"]) => {
            #[derive(Deserialize)]
            struct Body {
                signal: String,
                services: Vec<String>,
            }
            let body: Body = match body_json(req).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let Some(sig) = parse_signal(&body.signal) else {
                return bad_request(format!("invalid signal name {:?}", body.signal));
            };
            if body.services.is_empty() {
                return bad_request("must specify one or more services");
            }
            match mgr.signal(sig, &body.services).await {
                Ok(()) => sync(json!(true)),
                Err(e) => op_error(e),
            }
        }
        (Method::GET, ["v1", "metrics"]) => {
            let mut r = Response::new(Full::new(Bytes::from(metrics(&mgr))).boxed());
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            r
        }
        (_, ["v1", ..]) => error(StatusCode::NOT_FOUND, "not found", Some("not-found")),
        _ => error(StatusCode::NOT_FOUND, "not found", Some("not-found")),
    }
}

fn change_not_found(id: &str) -> Response<Body> {
    error(
        StatusCode::NOT_FOUND,
        &format!("cannot find change with id \"{id}\""),
        Some("not-found"),
    )
}

pub fn parse_signal(name: &str) -> Option<nix::sys::signal::Signal> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse().ok()
}

async fn post_services(mgr: Arc<Manager>, req: Request<Incoming>) -> Response<Body> {
    #[derive(Deserialize)]
    struct Body {
        action: String,
        #[serde(default)]
        services: Vec<String>,
    }
    let body: Body = match body_json(req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let names = body.services;
    let quoted = |names: &[String]| {
        names
            .iter()
            .map(|n| format!("{n:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let needs_names = matches!(body.action.as_str(), "start" | "stop" | "restart");
    if needs_names && names.is_empty() {
        return bad_request(format!("must specify services for {} action", body.action));
    }
    if needs_names {
        if let Err(e) = mgr.check_names(&names, body.action == "stop") {
            return op_error(e);
        }
    }
    let m = mgr.clone();
    let id = match body.action.as_str() {
        "start" => mgr.changes.spawn(
            "start",
            format!("Start service {}", quoted(&names)),
            async move { m.start(&names).await.map(|_| None).map_err(|e| (e, None)) },
        ),
        "stop" => mgr.changes.spawn(
            "stop",
            format!("Stop service {}", quoted(&names)),
            async move { m.stop(&names).await.map(|_| None).map_err(|e| (e, None)) },
        ),
        "restart" => mgr.changes.spawn(
            "restart",
            format!("Restart service {}", quoted(&names)),
            async move { m.restart(&names).await.map(|_| None).map_err(|e| (e, None)) },
        ),
        "replan" => mgr
            .changes
            .spawn("replan", "Replan".to_string(), async move {
                m.replan().await.map(|_| None).map_err(|e| (e, None))
            }),
        "autostart" => {
            let defaults = mgr.default_services();
            if defaults.is_empty() {
                return error(
                    StatusCode::BAD_REQUEST,
                    "no default services",
                    Some("no-default-services"),
                );
            }
            mgr.changes.spawn(
                "autostart",
                format!("Autostart service {}", quoted(&defaults)),
                async move {
                    m.start(&defaults)
                        .await
                        .map(|_| None)
                        .map_err(|e| (e, None))
                },
            )
        }
        other => return bad_request(format!("invalid action {other:?}")),
    };
    async_change(id)
}

async fn post_layers(mgr: Arc<Manager>, req: Request<Incoming>) -> Response<Body> {
    #[derive(Deserialize)]
    struct Body {
        action: String,
        label: String,
        #[serde(default)]
        format: Option<String>,
        layer: String,
        #[serde(default)]
        combine: bool,
    }
    let body: Body = match body_json(req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if body.action != "add" {
        return bad_request(format!("invalid action {:?}", body.action));
    }
    if body.format.as_deref().is_some_and(|f| f != "yaml") {
        return bad_request("invalid format; must be \"yaml\"");
    }
    match mgr.add_layer(&body.label, &body.layer, body.combine) {
        Ok(()) => sync(json!(true)),
        Err(e) => op_error(e),
    }
}

async fn post_exec(mgr: Arc<Manager>, req: Request<Incoming>) -> Response<Body> {
    let body: ExecRequest = match body_json(req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if body.command.is_empty() {
        return bad_request("must specify command");
    }
    let summary = format!(
        "Execute command {:?}",
        body.command.first().cloned().unwrap_or_default()
    );
    let m = mgr.clone();
    let id = mgr.changes.spawn("exec", summary.clone(), async move {
        match m.exec(body).await {
            Ok(out) => {
                let data = serde_json::to_value(ExecResult {
                    exit_code: out.exit_code,
                    stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                    stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                })
                .ok();
                if out.timed_out {
                    Err((
                        crate::changes::tasks_error(&[(summary, "timed out".into())]),
                        data,
                    ))
                } else {
                    Ok(data)
                }
            }
            Err(e) => Err((crate::changes::tasks_error(&[(summary, e)]), None)),
        }
    });
    async_change(id)
}

async fn post_checks(mgr: Arc<Manager>, req: Request<Incoming>) -> Response<Body> {
    #[derive(Deserialize)]
    struct Body {
        action: String,
        checks: Vec<String>,
    }
    let body: Body = match body_json(req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    for name in &body.checks {
        if !mgr.checks.exists(name) {
            return error(
                StatusCode::NOT_FOUND,
                &format!("cannot find check with name {name:?}"),
                Some("not-found"),
            );
        }
    }
    let mut changed = Vec::new();
    for name in &body.checks {
        let was_active = mgr
            .checks
            .infos(std::slice::from_ref(name), None)
            .first()
            .is_some_and(|c| c.status != "inactive");
        match body.action.as_str() {
            "start" => {
                crate::checks::start(&mgr, name);
                if !was_active {
                    changed.push(name.clone());
                }
            }
            "stop" => {
                crate::checks::stop(&mgr, name);
                if was_active {
                    changed.push(name.clone());
                }
            }
            other => return bad_request(format!("invalid action {other:?}")),
        }
    }
    sync(json!({ "changed": changed }))
}

/// A body fed by a channel: for streaming logs.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

fn logs(mgr: Arc<Manager>, q: &BTreeMap<String, Vec<String>>) -> Response<Body> {
    let services = list(q, "services");
    let n: Option<usize> = match one(q, "n") {
        None | Some("") => Some(30),
        Some(s) => match s.parse::<i64>() {
            Ok(n) if n < 0 => None,
            Ok(n) => Some(n as usize),
            Err(_) => {
                return bad_request(format!("n must be -1, 0 or a positive integer, not {s:?}"))
            }
        },
    };
    let follow = matches!(one(q, "follow"), Some("true" | "1"));
    let line = |e: &crate::logs::Entry| {
        let mut s = e.to_json().to_string();
        s.push('\n');
        Bytes::from(s)
    };
    let mut sub = follow.then(|| mgr.logs.subscribe());
    let history = mgr.logs.last(&services, n);
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    // Followers resume after the last entry they were sent, by sequence number.
    let written = mgr.logs.next_seq().checked_sub(1);
    let mut last_seq = history.last().map(|e| e.seq).max(written);
    let logs = mgr.logs.clone();
    tokio::spawn(async move {
        for e in &history {
            if tx.send(line(e)).await.is_err() {
                return;
            }
        }
        let Some(sub) = sub.as_mut() else {
            return;
        };
        let wanted = |e: &crate::logs::Entry| {
            services.is_empty() || services.iter().any(|s| **s == *e.service)
        };
        loop {
            let batch = tokio::select! {
                r = sub.recv() => match r {
                    Ok(e) => vec![e],
                    // Fell behind the broadcast: take what was missed from the buffers.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        logs.after(&services, last_seq)
                    }
                    Err(_) => return,
                },
                _ = tx.closed() => return,
            };
            for e in batch {
                if last_seq.is_some_and(|s| e.seq <= s) || !wanted(&e) {
                    continue;
                }
                last_seq = Some(e.seq);
                if tx.send(line(&e)).await.is_err() {
                    return;
                }
            }
        }
    });
    let mut r = Response::new(BoxBody::new(ChannelBody(rx)));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/x-ndjson"),
    );
    r
}

fn metrics(mgr: &Manager) -> String {
    let mut out = String::new();
    let infos = mgr.service_infos(&[]);
    out.push_str("# HELP pebble_service_active Whether the service is active (1) or not (0)\n");
    out.push_str("# TYPE pebble_service_active gauge\n");
    for s in &infos {
        out.push_str(&format!(
            "pebble_service_active{{service=\"{}\"}} {}\n",
            s.name,
            u8::from(s.is_active())
        ));
    }
    out.push_str("# HELP pebble_service_start_count Number of times the service has started\n");
    out.push_str("# TYPE pebble_service_start_count counter\n");
    for s in &infos {
        out.push_str(&format!(
            "pebble_service_start_count{{service=\"{}\"}} {}\n",
            s.name, s.start_count
        ));
    }
    let checks = mgr.checks.metrics();
    out.push_str("# HELP pebble_check_up Whether the health check is up (1) or not (0)\n");
    out.push_str("# TYPE pebble_check_up gauge\n");
    for (name, up, _, _) in &checks {
        out.push_str(&format!(
            "pebble_check_up{{check=\"{name}\"}} {}\n",
            u8::from(*up)
        ));
    }
    out.push_str("# HELP pebble_check_success_count Number of times the check has succeeded\n");
    out.push_str("# TYPE pebble_check_success_count counter\n");
    for (name, _, successes, _) in &checks {
        out.push_str(&format!(
            "pebble_check_success_count{{check=\"{name}\"}} {successes}\n"
        ));
    }
    out.push_str("# HELP pebble_check_failure_count Number of consecutive failures of the check\n");
    out.push_str("# TYPE pebble_check_failure_count counter\n");
    for (name, _, _, failures) in &checks {
        out.push_str(&format!(
            "pebble_check_failure_count{{check=\"{name}\"}} {failures}\n"
        ));
    }
    out.push_str("# EOF\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_query_values() {
        assert_eq!(percent_decode("a%2Cb+c"), "a,b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn signal_names() {
        assert_eq!(
            parse_signal("SIGHUP"),
            Some(nix::sys::signal::Signal::SIGHUP)
        );
        assert_eq!(parse_signal("hup"), Some(nix::sys::signal::Signal::SIGHUP));
        assert_eq!(parse_signal("NOPE"), None);
    }
}
