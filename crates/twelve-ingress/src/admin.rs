//! The admin API on `D/ingress.sock` (mode 0600): HTTP/1.1 with JSON bodies, and a client
//! for it.
//!
//! | request          | answer                                                        |
//! |------------------|---------------------------------------------------------------|
//! | `PUT /routes`    | replaces the route table (body: [`RouteTable`]); 400 if invalid |
//! | `GET /routes`    | the route table                                               |
//! | `GET /inflight`  | `{"backends": [BackendInflight, ...]}`                        |
//! | `GET /metrics`   | Prometheus text format                                        |
//! | `GET /listeners` | `{"http": ADDR, "https": ADDR or null}` ([`ListenerAddrs`])   |
//! | `PUT /listeners` | moves the listeners without dropping connections; the bound addresses, 400 if one cannot be bound |

use std::convert::Infallible;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use crate::routes::RouteTable;
use crate::server::{ListenerAddrs, ListenerSet, Shared};
use crate::table::BackendInflight;

const MAX_ROUTES_BODY: usize = 16 * 1024 * 1024;

/// The body of `GET /inflight`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InflightReport {
    pub backends: Vec<BackendInflight>,
}

pub(crate) fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "another ingress is serving this socket",
        ));
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

pub(crate) async fn serve(
    listener: UnixListener,
    shared: Arc<Shared>,
    listeners: Arc<ListenerSet>,
    cancel: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (shared, listeners) = (shared.clone(), listeners.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(shared.clone(), listeners.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(
    shared: Arc<Shared>,
    listeners: Arc<ListenerSet>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let response = match (req.method(), req.uri().path()) {
        (&Method::PUT, "/routes") => {
            let body = match Limited::new(req.into_body(), MAX_ROUTES_BODY)
                .collect()
                .await
            {
                Ok(body) => body.to_bytes(),
                Err(e) => return Ok(error(StatusCode::BAD_REQUEST, &e.to_string())),
            };
            match RouteTable::from_json(&body).and_then(|t| shared.set_routes(t)) {
                Ok(()) => json(&serde_json::json!({"ok": true})),
                Err(e) => error(StatusCode::BAD_REQUEST, &e.to_string()),
            }
        }
        (&Method::GET, "/routes") => json(&shared.routes()),
        (&Method::GET, "/listeners") => json(&listeners.addrs()),
        (&Method::PUT, "/listeners") => {
            let body = match Limited::new(req.into_body(), 4096).collect().await {
                Ok(body) => body.to_bytes(),
                Err(e) => return Ok(error(StatusCode::BAD_REQUEST, &e.to_string())),
            };
            match serde_json::from_slice::<ListenerAddrs>(&body) {
                Ok(want) => match listeners.configure(want).await {
                    Ok(now) => json(&now),
                    Err(e) => error(StatusCode::BAD_REQUEST, &e.to_string()),
                },
                Err(e) => error(StatusCode::BAD_REQUEST, &format!("listeners: {e}")),
            }
        }
        (&Method::GET, "/inflight") => json(&InflightReport {
            backends: shared.inflight(),
        }),
        (&Method::GET, "/metrics") => {
            let mut r = Response::new(Full::new(Bytes::from(shared.metrics())));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        (_, "/routes" | "/inflight" | "/metrics" | "/listeners") => {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        (_, path) => error(StatusCode::NOT_FOUND, &format!("no such endpoint: {path}")),
    };
    Ok(response)
}

fn json<T: Serialize>(value: &T) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let mut r = json(&serde_json::json!({ "error": message }));
    *r.status_mut() = status;
    r
}

/// Talks to a running ingress through its admin socket (`D/ingress.sock`).
pub mod client {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    pub enum AdminError {
        #[error("cannot reach the ingress at {socket}: {source}")]
        Connect {
            socket: String,
            #[source]
            source: std::io::Error,
        },
        #[error("ingress admin API: {0}")]
        Http(#[from] hyper::Error),
        #[error("ingress admin API answered {status}: {message}")]
        Status { status: StatusCode, message: String },
        #[error("ingress admin API sent invalid JSON: {0}")]
        Json(#[from] serde_json::Error),
    }

    /// One request; returns the body of a 2xx answer.
    pub async fn call(
        socket: &Path,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, AdminError> {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|source| AdminError::Connect {
                socket: socket.display().to_string(),
                source,
            })?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "ingress")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .expect("a valid request");
        let response = sender.send_request(req).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            let message = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("error")?.as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            return Err(AdminError::Status { status, message });
        }
        Ok(bytes)
    }

    /// Replaces the route table; the ingress has persisted it when this returns.
    pub async fn put_routes(socket: &Path, table: &RouteTable) -> Result<(), AdminError> {
        let body = serde_json::to_vec(table)?;
        call(socket, Method::PUT, "/routes", Some(body)).await?;
        Ok(())
    }

    pub async fn get_routes(socket: &Path) -> Result<RouteTable, AdminError> {
        let bytes = call(socket, Method::GET, "/routes", None).await?;
        Ok(serde_json::from_slice(&bytes)?)
    }

    pub async fn get_inflight(socket: &Path) -> Result<Vec<BackendInflight>, AdminError> {
        let bytes = call(socket, Method::GET, "/inflight", None).await?;
        Ok(serde_json::from_slice::<InflightReport>(&bytes)?.backends)
    }

    /// Moves the ingress's listeners without dropping connections; the addresses
    /// bound when this returns, the old ones closed.
    pub async fn put_listeners(
        socket: &Path,
        want: &ListenerAddrs,
    ) -> Result<ListenerAddrs, AdminError> {
        let body = serde_json::to_vec(want)?;
        let bytes = call(socket, Method::PUT, "/listeners", Some(body)).await?;
        Ok(serde_json::from_slice(&bytes)?)
    }

    pub async fn get_listeners(socket: &Path) -> Result<ListenerAddrs, AdminError> {
        let bytes = call(socket, Method::GET, "/listeners", None).await?;
        Ok(serde_json::from_slice(&bytes)?)
    }

    pub async fn get_metrics(socket: &Path) -> Result<String, AdminError> {
        let bytes = call(socket, Method::GET, "/metrics", None).await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}
