//! Real backends (small hyper servers on 127.0.0.1:0), an in-process ingress and clients.
#![allow(dead_code)]

pub mod pki;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use twelve_ingress::{
    AppRoute, Backend, BackendState, IngressConfig, IngressHandle, Policy, RouteTable, Timeouts,
};

/// How long any test waits for something that should happen at once.
pub const DEADLINE: Duration = Duration::from_secs(20);

pub struct TestBackend {
    pub unit: String,
    pub addr: SocketAddr,
    /// Requests seen.
    pub hits: Arc<AtomicUsize>,
    /// Requests waiting in `/hold`.
    pub held: Arc<AtomicUsize>,
    /// Bytes of `/upload` bodies received so far.
    pub received: Arc<AtomicU64>,
    /// One permit lets one `/hold` request answer.
    pub release: Arc<Semaphore>,
    stop: CancellationToken,
}

#[derive(Clone)]
struct BackendCtx {
    unit: String,
    hits: Arc<AtomicUsize>,
    held: Arc<AtomicUsize>,
    received: Arc<AtomicU64>,
    release: Arc<Semaphore>,
}

impl TestBackend {
    /// Answers:
    /// - an `Upgrade` request with 101 and then echoes bytes;
    /// - `/hold` once the test releases it;
    /// - `/slow?MS` after MS milliseconds;
    /// - `/upload` with the number of body bytes, counting them as they arrive;
    /// - anything else with `unit=..`, `path=..` and the request headers, one a line.
    pub async fn start(unit: &str) -> TestBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ctx = BackendCtx {
            unit: unit.to_string(),
            hits: Arc::default(),
            held: Arc::default(),
            received: Arc::default(),
            release: Arc::new(Semaphore::new(0)),
        };
        let stop = CancellationToken::new();
        let backend = TestBackend {
            unit: unit.to_string(),
            addr,
            hits: ctx.hits.clone(),
            held: ctx.held.clone(),
            received: ctx.received.clone(),
            release: ctx.release.clone(),
            stop: stop.clone(),
        };
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    _ = stop.cancelled() => return,
                    accepted = listener.accept() => accepted.unwrap(),
                };
                let ctx = ctx.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req| backend_handle(ctx.clone(), req));
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades();
                    tokio::select! {
                        _ = conn => {}
                        _ = stop.cancelled() => {}
                    }
                });
            }
        });
        backend
    }

    /// Closes the listener and every connection: new connections are refused.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn route(&self, state: BackendState) -> Backend {
        Backend {
            unit: self.unit.clone(),
            addr: self.addr,
            socket: None,
            socket_uid: None,
            state,
        }
    }
}

async fn backend_handle(
    ctx: BackendCtx,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    ctx.hits.fetch_add(1, Ordering::SeqCst);
    if req.headers().contains_key(hyper::header::UPGRADE) {
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(upgraded) = upgrade.await else { return };
            let (mut r, mut w) = tokio::io::split(TokioIo::new(upgraded));
            let _ = tokio::io::copy(&mut r, &mut w).await;
        });
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        response
            .headers_mut()
            .insert(hyper::header::CONNECTION, "upgrade".parse().unwrap());
        response
            .headers_mut()
            .insert(hyper::header::UPGRADE, "websocket".parse().unwrap());
        return Ok(response);
    }
    let body = match req.uri().path() {
        "/hold" => {
            ctx.held.fetch_add(1, Ordering::SeqCst);
            ctx.release.acquire().await.unwrap().forget();
            ctx.held.fetch_sub(1, Ordering::SeqCst);
            format!("unit={}\nreleased\n", ctx.unit)
        }
        "/slow" => {
            let ms = req.uri().query().and_then(|q| q.parse().ok()).unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            format!("unit={}\nslow\n", ctx.unit)
        }
        "/upload" => {
            let mut body = req.into_body();
            let mut total = 0u64;
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else { break };
                if let Some(data) = frame.data_ref() {
                    total += data.len() as u64;
                    ctx.received.fetch_add(data.len() as u64, Ordering::SeqCst);
                }
            }
            format!("unit={}\nreceived={total}\n", ctx.unit)
        }
        _ => {
            let mut text = format!(
                "unit={}\npath={}\n",
                ctx.unit,
                req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("")
            );
            for (name, value) in req.headers() {
                text.push_str(&format!(
                    "{}: {}\n",
                    name,
                    value.to_str().unwrap_or("<binary>")
                ));
            }
            text
        }
    };
    Ok(Response::new(Full::new(Bytes::from(body))))
}

pub fn app(policy: Policy, backends: Vec<Backend>) -> AppRoute {
    AppRoute {
        policy,
        backends,
        ..AppRoute::default()
    }
}

pub fn table(apps: Vec<(&str, AppRoute)>) -> RouteTable {
    RouteTable {
        apps: apps
            .into_iter()
            .map(|(name, app)| (name.to_string(), app))
            .collect(),
        timeouts: Timeouts::default(),
        ..RouteTable::default()
    }
}

pub async fn start_ingress(dir: &Path) -> IngressHandle {
    let mut config = IngressConfig::new(dir);
    config.port = 0;
    // As `twelve ingress run` does: connections served on threads of their own.
    config.workers = 2;
    IngressHandle::start(config).await.unwrap()
}

/// One backend, `web/0`, routed as app `web` (round-robin) by a new ingress in `dir`.
pub async fn web_behind_ingress(dir: &Path) -> (TestBackend, IngressHandle) {
    let web = TestBackend::start("web/0").await;
    let ingress = start_ingress(dir).await;
    ingress
        .set_routes(table(vec![(
            "web",
            app(Policy::RoundRobin, vec![web.route(BackendState::Ready)]),
        )]))
        .unwrap();
    (web, ingress)
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: String,
}

impl Reply {
    /// The value of a `name: value` line the echo backend wrote.
    pub fn seen(&self, name: &str) -> Option<&str> {
        self.body.lines().find_map(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(": ").or_else(|| rest.strip_prefix('=')))
        })
    }
    pub fn unit(&self) -> &str {
        self.seen("unit").unwrap_or("")
    }
}

/// One request on a fresh HTTP/1.1 connection.
pub async fn send<B>(addr: SocketAddr, req: Request<B>) -> Reply
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::time::timeout(DEADLINE, async {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let response = sender.send_request(req).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    })
    .await
    .expect("the request finished in time")
}

pub async fn get(addr: SocketAddr, host: &str, path: &str) -> Reply {
    let req = Request::get(path)
        .header(hyper::header::HOST, host)
        .body(Full::new(Bytes::new()))
        .unwrap();
    send(addr, req).await
}

/// One request over HTTP/2 without TLS (prior knowledge).
pub async fn get_h2c(addr: SocketAddr, uri: &str) -> Reply {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get(uri).body(Full::new(Bytes::new())).unwrap();
    let response = sender.send_request(req).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Writes raw bytes and reads until the peer closes or `until` appears; returns what came.
pub async fn raw(stream: &mut TcpStream, bytes: &[u8], until: &str) -> String {
    stream.write_all(bytes).await.unwrap();
    read_until(stream, until).await
}

/// Reads until `until` appears or the peer closes (at most [`DEADLINE`]), from any stream
/// (plain TCP or TLS).
pub async fn read_until<S: tokio::io::AsyncRead + Unpin>(stream: &mut S, until: &str) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(DEADLINE, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            if String::from_utf8_lossy(&got).contains(until) {
                break;
            }
        }
    })
    .await;
    String::from_utf8_lossy(&got).into_owned()
}

/// Polls `check` until it holds, failing after [`DEADLINE`].
pub async fn eventually<F: FnMut() -> bool>(what: &str, mut check: F) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
