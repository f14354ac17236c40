//! The ingress process: the public listener, the admin socket, the route table they share,
//! and graceful shutdown.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::header::HeaderValue;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::body::ConnState;
use crate::h1::Outcome;
use crate::routes::{RouteTable, RoutesError};
use crate::table::{BackendInflight, Registry, Snapshot};
use crate::upstream::Pool;

/// The public port when none is given.
pub const DEFAULT_PORT: u16 = 8080;
/// How long a stopping ingress waits for requests in flight.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

pub const ROUTES_FILE: &str = "routes.json";
pub const SOCKET_FILE: &str = "ingress.sock";
pub const PID_FILE: &str = "ingress.pid";

#[derive(Debug, Clone)]
pub struct IngressConfig {
    pub bind: IpAddr,
    /// 0 picks a free port (tests); see [`IngressHandle::addr`].
    pub port: u16,
    /// State directory: `routes.json`, `ingress.sock`, `ingress.pid`.
    pub dir: PathBuf,
    pub drain_timeout: Duration,
    /// Threads serving client connections, each with its own single-threaded runtime and
    /// pool of backend connections; connections are handed to them in turn. 0 serves them on the
    /// caller's runtime.
    pub workers: usize,
    /// The HTTPS listener (port 0 picks one), none by default.
    pub https: Option<SocketAddr>,
}

impl IngressConfig {
    pub fn new(dir: impl Into<PathBuf>) -> IngressConfig {
        IngressConfig {
            bind: IpAddr::from([127, 0, 0, 1]),
            port: DEFAULT_PORT,
            dir: dir.into(),
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            workers: 0,
            https: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Routes(#[from] RoutesError),
}

pub(crate) struct Shared {
    pub table: ArcSwap<Snapshot>,
    /// Set before the ingress stops: HTTP/1 connections close after their response in
    /// progress (an atomic read per response, where the cancellation token takes a lock).
    pub stopping: AtomicBool,
    registry: Mutex<Registry>,
    routes_path: PathBuf,
    /// The HTTPS listener's port: plain HTTP requests to a domain with a certificate are
    /// redirected there.
    pub https_port: Option<u16>,
}

impl Shared {
    /// Validates, persists, then swaps in `table`; requests already routed keep the old one.
    pub(crate) fn set_routes(&self, table: RouteTable) -> Result<(), RoutesError> {
        table.validate()?;
        let mut registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        table.persist(&self.routes_path)?;
        let old = self.table.load();
        let snapshot = registry.build(table, Some(&old));
        self.table.store(Arc::new(snapshot));
        Ok(())
    }

    pub(crate) fn routes(&self) -> RouteTable {
        self.table.load().routes.clone()
    }

    pub(crate) fn inflight(&self) -> Vec<BackendInflight> {
        self.registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .inflight()
    }

    pub(crate) fn metrics(&self) -> String {
        self.registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .render_metrics()
    }
}

/// A running ingress (in this process).
pub struct IngressHandle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    https_addr: Option<SocketAddr>,
    https_task: Option<JoinHandle<()>>,
    socket: PathBuf,
    pid_file: PathBuf,
    cancel: CancellationToken,
    proxy_task: JoinHandle<()>,
    admin_task: JoinHandle<()>,
    drain_timeout: Duration,
}

impl IngressHandle {
    /// Binds the public port and the admin socket, loads `routes.json` if there is one and
    /// serves at once. Must run inside a tokio runtime.
    pub async fn start(config: IngressConfig) -> Result<IngressHandle, IngressError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| IngressError::Io { path, source }
        };
        std::fs::create_dir_all(&config.dir).map_err(io(&config.dir))?;
        let routes_path = config.dir.join(ROUTES_FILE);
        let table = RouteTable::load(&routes_path)?.unwrap_or_default();

        let https_listener = match config.https {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let https_addr = https_listener.as_ref().map(|(_, addr)| *addr);

        let mut registry = Registry::default();
        let snapshot = registry.build(table, None);
        let shared = Arc::new(Shared {
            table: ArcSwap::from_pointee(snapshot),
            registry: Mutex::new(registry),
            routes_path,
            stopping: AtomicBool::new(false),
            https_port: https_addr.map(|a| a.port()),
        });

        let addr = SocketAddr::new(config.bind, config.port);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| IngressError::Listen {
                addr: addr.to_string(),
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| IngressError::Listen {
                addr: addr.to_string(),
                source,
            })?;

        let socket = config.dir.join(SOCKET_FILE);
        let admin = crate::admin::bind(&socket).map_err(io(&socket))?;
        let pid_file = config.dir.join(PID_FILE);
        std::fs::write(&pid_file, format!("{}\n", std::process::id())).map_err(io(&pid_file))?;

        let cancel = CancellationToken::new();
        let acceptor = https_listener
            .is_some()
            .then(|| tokio_rustls::TlsAcceptor::from(crate::tls::server_config(shared.clone())));
        let workers = (0..config.workers)
            .map(|i| {
                Worker::spawn(
                    i,
                    shared.clone(),
                    config.drain_timeout,
                    cancel.clone(),
                    acceptor.clone(),
                )
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| IngressError::Io {
                path: "worker thread".into(),
                source,
            })?;
        // TLS connections go to the same worker threads (handshakes included).
        let tls_workers: Vec<_> = workers.iter().map(|w| w.streams.clone()).collect();
        let https_task = https_listener.map(|(listener, _)| {
            tokio::spawn(crate::tls::accept_loop(
                listener,
                shared.clone(),
                cancel.clone(),
                config.drain_timeout,
                tls_workers,
            ))
        });
        let proxy_task = tokio::spawn(accept_loop(
            listener,
            shared.clone(),
            cancel.clone(),
            config.drain_timeout,
            workers,
        ));
        let admin_task = tokio::spawn(crate::admin::serve(admin, shared.clone(), cancel.clone()));
        Ok(IngressHandle {
            shared,
            addr,
            https_addr,
            https_task,
            socket,
            pid_file,
            cancel,
            proxy_task,
            admin_task,
            drain_timeout: config.drain_timeout,
        })
    }

    /// The public address (with the port picked when the config said 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The HTTPS listener's address, when there is one.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https_addr
    }

    pub fn admin_socket(&self) -> &Path {
        &self.socket
    }

    /// The same as `PUT /routes` on the admin socket.
    pub fn set_routes(&self, table: RouteTable) -> Result<(), RoutesError> {
        self.shared.set_routes(table)
    }

    pub fn routes(&self) -> RouteTable {
        self.shared.routes()
    }

    pub fn inflight(&self) -> Vec<BackendInflight> {
        self.shared.inflight()
    }

    pub fn metrics(&self) -> String {
        self.shared.metrics()
    }

    /// Stops accepting, lets requests in flight finish (up to the drain timeout), removes
    /// the socket and pid file.
    pub async fn shutdown(self) {
        self.shared.stopping.store(true, Ordering::Relaxed);
        self.cancel.cancel();
        let _ = self.proxy_task.await;
        if let Some(task) = self.https_task {
            let _ = task.await;
        }
        let _ = tokio::time::timeout(self.drain_timeout, self.admin_task).await;
        let _ = std::fs::remove_file(&self.socket);
        let _ = std::fs::remove_file(&self.pid_file);
    }
}

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), IngressError> {
    let err = |source| IngressError::Listen {
        addr: addr.to_string(),
        source,
    };
    let listener = TcpListener::bind(addr).await.map_err(err)?;
    let local = listener.local_addr().map_err(err)?;
    Ok((listener, local))
}

/// A thread with its own single-threaded runtime serving the connections it is handed.
/// A connection for a worker: the socket, its peer, whether it speaks TLS.
pub(crate) type Handed = (std::net::TcpStream, SocketAddr, bool);

struct Worker {
    streams: tokio::sync::mpsc::UnboundedSender<Handed>,
    done: tokio::sync::oneshot::Receiver<()>,
}

impl Worker {
    fn spawn(
        index: usize,
        shared: Arc<Shared>,
        drain_timeout: Duration,
        stop: CancellationToken,
        acceptor: Option<tokio_rustls::TlsAcceptor>,
    ) -> std::io::Result<Worker> {
        let (streams, mut incoming) = tokio::sync::mpsc::unbounded_channel();
        let (finished, done) = tokio::sync::oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name(format!("ingress-{index}"))
            .spawn(move || {
                runtime.block_on(async move {
                    let connections = Connections::default();
                    // This thread's backend connections: registered with its event loop,
                    // used by its requests only.
                    let pool = Arc::new(Pool::default());
                    tokio::spawn(pool.clone().sweep_forever());
                    while let Some((stream, peer, tls)) = incoming.recv().await {
                        let Ok(stream) = TcpStream::from_std(stream) else {
                            continue;
                        };
                        match (&acceptor, tls) {
                            (Some(acceptor), true) => {
                                connections.tasks.spawn(crate::tls::serve(
                                    acceptor.clone(),
                                    stream,
                                    peer,
                                    shared.clone(),
                                    pool.clone(),
                                    connections.graceful.watcher(),
                                ));
                            }
                            _ => connections.serve(stream, peer, &shared, &pool, &stop),
                        }
                    }
                    let _ = tokio::time::timeout(drain_timeout, connections.drain()).await;
                });
                let _ = finished.send(());
            })?;
        Ok(Worker { streams, done })
    }
}

/// The client connections of one runtime, waited for at shutdown: HTTP/1 ones close once
/// their response in progress is written (`stop`), HTTP/2 ones through hyper's graceful
/// shutdown.
#[derive(Default)]
struct Connections {
    tasks: TaskTracker,
    graceful: GracefulShutdown,
}

impl Connections {
    fn serve(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        shared: &Arc<Shared>,
        pool: &Arc<Pool>,
        stop: &CancellationToken,
    ) {
        self.tasks.spawn(serve_connection(
            stream,
            peer,
            shared.clone(),
            pool.clone(),
            self.graceful.watcher(),
            stop.clone(),
        ));
    }

    async fn drain(self) {
        self.tasks.close();
        tokio::join!(self.graceful.shutdown(), self.tasks.wait());
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    drain_timeout: Duration,
    workers: Vec<Worker>,
) {
    let connections = Connections::default();
    let pool = Arc::new(Pool::default());
    let sweeper = workers
        .is_empty()
        .then(|| tokio::spawn(pool.clone().sweep_forever()));
    let mut next = 0;
    loop {
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => {
                    // Out of file descriptors, most likely: let others finish first.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if workers.is_empty() {
            connections.serve(stream, peer, &shared, &pool, &cancel);
            continue;
        }
        if let Ok(stream) = stream.into_std() {
            let _ = workers[next % workers.len()]
                .streams
                .send((stream, peer, false));
            next += 1;
        }
    }
    drop(listener);
    let mut done = Vec::new();
    for worker in workers {
        drop(worker.streams);
        done.push(worker.done);
    }
    let drained = async {
        connections.drain().await;
        for d in done {
            let _ = d.await;
        }
    };
    let _ = tokio::time::timeout(drain_timeout + Duration::from_secs(1), drained).await;
    if let Some(sweeper) = sweeper {
        sweeper.abort();
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    pool: Arc<Pool>,
    watcher: Watcher,
    stop: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let peer_ip = HeaderValue::from_str(&peer.ip().to_string())
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
    let snap = shared.table.load_full();
    let server = snap.server.clone();
    let (idle, header_read) = (snap.idle_timeout, snap.header_read_timeout);
    drop(snap);
    let conn = Arc::new(ConnState::new(shared, peer_ip, pool));

    let outcome = tokio::select! {
        outcome = crate::h1::serve(stream, conn.clone()) => outcome,
        _ = watch(&conn, idle, header_read, &stop) => return,
    };
    match outcome {
        Outcome::Closed => {}
        Outcome::Tunnel(client, from_client, backend) => {
            crate::h1::tunnel(client, from_client, backend).await;
        }
        Outcome::H2(stream, preface) => {
            conn.set_h2();
            let service = {
                let conn = conn.clone();
                service_fn(move |req| crate::proxy::handle(conn.clone(), req))
            };
            let io = TokioIo::new(crate::h1::Rewind::new(stream, preface));
            let connection = watcher.watch(server.serve_connection(io, service));
            tokio::select! {
                _ = connection => {}
                _ = watch(&conn, idle, header_read, &stop) => {}
            }
        }
    }
}

/// Returns once the connection has had no request in flight for `idle`, or, on HTTP/1, for
/// `header_read`: a keep-alive connection waiting for its next request, or a client slow to
/// send a whole head (a request counts from its complete head on). One timer per
/// connection, re-armed only when it fires, instead of one per request head. Once `stop`
/// is cancelled, returns as soon as no request is in flight.
pub(crate) async fn watch(
    conn: &ConnState,
    idle: Duration,
    header_read: Duration,
    stop: &CancellationToken,
) {
    loop {
        if stop.is_cancelled() {
            if conn.idle_for_ms().is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        let limit = if conn.is_h2() {
            idle
        } else {
            idle.min(header_read)
        };
        let limit_ms = limit.as_millis() as u64;
        let wait = match conn.idle_for_ms() {
            Some(ms) if ms >= limit_ms => return,
            Some(ms) => Duration::from_millis(limit_ms - ms),
            None => limit,
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => {}
        }
    }
}
