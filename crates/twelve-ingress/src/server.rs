//! The ingress process: the public listener, the admin socket, the route table they share,
//! and graceful shutdown.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
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
    /// redirected there; 0 without one.
    pub https_port: AtomicU16,
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

/// The public listeners of a running ingress, which `PUT /listeners` on the admin socket
/// changes without dropping connections: the new ones are bound and accepting before
/// the old ones stop accepting; connections already accepted go on on the worker
/// threads, which outlive any listener.
pub(crate) struct ListenerSet {
    shared: Arc<Shared>,
    workers: Arc<[Sender]>,
    next: Arc<AtomicUsize>,
    cancel: CancellationToken,
    bound: tokio::sync::Mutex<Bound>,
    /// The bound addresses, for synchronous readers.
    addrs: Mutex<(SocketAddr, Option<SocketAddr>)>,
}

struct Bound {
    http: Running,
    https: Option<Running>,
}

/// One listener's accept loop.
struct Running {
    /// The address asked for (port 0 stays 0 here).
    requested: SocketAddr,
    addr: SocketAddr,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Running {
    fn spawn(
        listener: TcpListener,
        requested: SocketAddr,
        addr: SocketAddr,
        tls: bool,
        set: (&Arc<[Sender]>, &Arc<AtomicUsize>, &CancellationToken),
    ) -> Running {
        let stop = set.2.child_token();
        let task = tokio::spawn(accept_loop(
            listener,
            tls,
            set.0.clone(),
            set.1.clone(),
            stop.clone(),
        ));
        Running {
            requested,
            addr,
            stop,
            task: Some(task),
        }
    }

    /// Whether asking for `addr` asks for this listener (port 0 asks for a new one).
    fn is(&self, addr: SocketAddr) -> bool {
        (self.requested == addr && addr.port() != 0) || self.addr == addr
    }

    /// Stops accepting; the socket is closed when this returns.
    async fn close(&mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

type Sender = tokio::sync::mpsc::UnboundedSender<Handed>;

/// The listeners' addresses, as `GET /listeners` and `PUT /listeners` carry them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ListenerAddrs {
    pub http: SocketAddr,
    #[serde(default)]
    pub https: Option<SocketAddr>,
}

impl ListenerSet {
    pub(crate) fn addrs(&self) -> ListenerAddrs {
        let (http, https) = *self.addrs.lock().unwrap_or_else(|e| e.into_inner());
        ListenerAddrs { http, https }
    }

    fn start(
        &self,
        listener: std::net::TcpListener,
        requested: SocketAddr,
        tls: bool,
    ) -> Result<Running, IngressError> {
        let err = |source| IngressError::Listen {
            addr: requested.to_string(),
            source,
        };
        listener.set_nonblocking(true).map_err(err)?;
        let addr = listener.local_addr().map_err(err)?;
        let listener = TcpListener::from_std(listener).map_err(err)?;
        if tls {
            self.shared.https_port.store(addr.port(), Ordering::Relaxed);
        }
        Ok(Running::spawn(
            listener,
            requested,
            addr,
            tls,
            (&self.workers, &self.next, &self.cancel),
        ))
    }

    /// Moves the listeners to `want`: binds the new addresses first (an error changes
    /// nothing), serves on them, then stops accepting on the old ones (closed when this
    /// returns); connections already accepted go on. A new address on the port of an old
    /// one it replaces, which the kernel refuses to bind beside it (`127.0.0.1:80` to
    /// `0.0.0.0:80`), is bound right after the old one closes: the only case where a port
    /// refuses connections, for a moment.
    pub(crate) async fn configure(
        &self,
        want: ListenerAddrs,
    ) -> Result<ListenerAddrs, IngressError> {
        let listen = |addr: SocketAddr, source| IngressError::Listen {
            addr: addr.to_string(),
            source,
        };
        if Some(want.http) == want.https {
            return Err(listen(
                want.http,
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "the HTTP and HTTPS listeners must be different addresses",
                ),
            ));
        }
        let mut bound = self.bound.lock().await;
        let http_changes = !bound.http.is(want.http);
        let https_changes = match (&bound.https, want.https) {
            (Some(r), Some(a)) => !r.is(a),
            (None, None) => false,
            _ => true,
        };
        let mut replaced = vec![];
        if http_changes {
            replaced.push(bound.http.addr.port());
        }
        if https_changes {
            replaced.extend(bound.https.as_ref().map(|r| r.addr.port()));
        }
        // Bind first; None: it waits for the old listener on its port to close.
        let try_bind = |addr: SocketAddr| match std::net::TcpListener::bind(addr) {
            Ok(l) => Ok(Some(l)),
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && addr.port() != 0
                    && replaced.contains(&addr.port()) =>
            {
                Ok(None)
            }
            Err(source) => Err(listen(addr, source)),
        };
        let new_http = match http_changes {
            true => Some(try_bind(want.http)?),
            false => None,
        };
        let new_https = match want.https {
            Some(addr) if https_changes => Some((addr, try_bind(addr)?)),
            _ => None,
        };
        let mut old = vec![];
        let mut deferred = vec![];
        match new_http {
            Some(Some(l)) => {
                let running = self.start(l, want.http, false)?;
                old.push(std::mem::replace(&mut bound.http, running));
            }
            Some(None) => deferred.push((want.http, false)),
            None => {}
        }
        match new_https {
            Some((addr, Some(l))) => {
                let running = self.start(l, addr, true)?;
                old.extend(bound.https.replace(running));
            }
            Some((addr, None)) => deferred.push((addr, true)),
            None if https_changes => {
                self.shared.https_port.store(0, Ordering::Relaxed);
                old.extend(bound.https.take());
            }
            None => {}
        }
        for running in &mut old {
            running.close().await;
        }
        for &(_, tls) in &deferred {
            match tls {
                false => bound.http.close().await,
                true => {
                    if let Some(r) = bound.https.as_mut() {
                        r.close().await;
                    }
                }
            }
        }
        for (addr, tls) in deferred {
            let l = std::net::TcpListener::bind(addr).map_err(|source| listen(addr, source))?;
            let running = self.start(l, addr, tls)?;
            match tls {
                false => bound.http = running,
                true => bound.https = Some(running),
            }
        }
        let now = (bound.http.addr, bound.https.as_ref().map(|r| r.addr));
        *self.addrs.lock().unwrap_or_else(|e| e.into_inner()) = now;
        Ok(ListenerAddrs {
            http: now.0,
            https: now.1,
        })
    }

    /// Stops every accept loop and waits for them.
    async fn stopped(&self) {
        let mut bound = self.bound.lock().await;
        bound.http.close().await;
        if let Some(r) = bound.https.as_mut() {
            r.close().await;
        }
    }
}

/// A running ingress (in this process).
pub struct IngressHandle {
    shared: Arc<Shared>,
    listeners: Arc<ListenerSet>,
    socket: PathBuf,
    pid_file: PathBuf,
    cancel: CancellationToken,
    workers_done: Vec<tokio::sync::oneshot::Receiver<()>>,
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
            https_port: AtomicU16::new(https_addr.map_or(0, |a| a.port())),
        });

        let requested_http = SocketAddr::new(config.bind, config.port);
        let (listener, addr) = bind(requested_http).await?;

        let socket = config.dir.join(SOCKET_FILE);
        let admin = crate::admin::bind(&socket).map_err(io(&socket))?;
        let pid_file = config.dir.join(PID_FILE);
        std::fs::write(&pid_file, format!("{}\n", std::process::id())).map_err(io(&pid_file))?;

        let cancel = CancellationToken::new();
        // Always ready for TLS: `PUT /listeners` may add an HTTPS listener later.
        let acceptor = tokio_rustls::TlsAcceptor::from(crate::tls::server_config(shared.clone()));
        let mut senders = vec![];
        let mut workers_done = vec![];
        for i in 0..config.workers.max(1) {
            let (streams, incoming) = tokio::sync::mpsc::unbounded_channel();
            let (finished, done) = tokio::sync::oneshot::channel();
            let work = worker_loop(
                incoming,
                shared.clone(),
                config.drain_timeout,
                cancel.clone(),
                acceptor.clone(),
            );
            if config.workers == 0 {
                // Served on the caller's runtime.
                tokio::spawn(async move {
                    work.await;
                    let _ = finished.send(());
                });
            } else {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|source| IngressError::Io {
                        path: "worker thread".into(),
                        source,
                    })?;
                std::thread::Builder::new()
                    .name(format!("ingress-{i}"))
                    .spawn(move || {
                        runtime.block_on(work);
                        let _ = finished.send(());
                    })
                    .map_err(|source| IngressError::Io {
                        path: "worker thread".into(),
                        source,
                    })?;
            }
            senders.push(streams);
            workers_done.push(done);
        }
        let workers: Arc<[Sender]> = senders.into();
        let next = Arc::new(AtomicUsize::new(0));
        let set = (&workers, &next, &cancel);
        let http = Running::spawn(listener, requested_http, addr, false, set);
        let https =
            https_listener.map(|(l, a)| Running::spawn(l, config.https.unwrap_or(a), a, true, set));
        let listeners = Arc::new(ListenerSet {
            shared: shared.clone(),
            workers: workers.clone(),
            next: next.clone(),
            cancel: cancel.clone(),
            bound: tokio::sync::Mutex::new(Bound { http, https }),
            addrs: Mutex::new((addr, https_addr)),
        });
        let admin_task = tokio::spawn(crate::admin::serve(
            admin,
            shared.clone(),
            listeners.clone(),
            cancel.clone(),
        ));
        Ok(IngressHandle {
            shared,
            listeners,
            socket,
            pid_file,
            cancel,
            workers_done,
            admin_task,
            drain_timeout: config.drain_timeout,
        })
    }

    /// The HTTP listener's address (with the port picked when the config said 0).
    pub fn addr(&self) -> SocketAddr {
        self.listeners.addrs().http
    }

    /// The HTTPS listener's address, when there is one.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.listeners.addrs().https
    }

    /// The same as `PUT /listeners` on the admin socket.
    pub async fn set_listeners(&self, want: ListenerAddrs) -> Result<ListenerAddrs, IngressError> {
        self.listeners.configure(want).await
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
        self.listeners.stopped().await;
        let _ = tokio::time::timeout(self.drain_timeout + Duration::from_secs(1), async {
            for done in self.workers_done {
                let _ = done.await;
            }
        })
        .await;
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

/// A connection for a worker: the socket, its peer, whether it speaks TLS.
pub(crate) type Handed = (std::net::TcpStream, SocketAddr, bool);

/// A worker (a thread with its own single-threaded runtime, or a task on the caller's
/// runtime with `workers: 0`) serving the connections it is handed until `stop`, then
/// letting them finish (up to `drain_timeout`).
async fn worker_loop(
    mut incoming: tokio::sync::mpsc::UnboundedReceiver<Handed>,
    shared: Arc<Shared>,
    drain_timeout: Duration,
    stop: CancellationToken,
    acceptor: tokio_rustls::TlsAcceptor,
) {
    let connections = Connections::default();
    // This worker's backend connections: registered with its event loop, used by its
    // requests only.
    let pool = Arc::new(Pool::default());
    let sweeper = tokio::spawn(pool.clone().sweep_forever());
    loop {
        let (stream, peer, tls) = tokio::select! {
            biased;
            handed = incoming.recv() => match handed {
                Some(handed) => handed,
                None => break,
            },
            _ = stop.cancelled() => break,
        };
        let Ok(stream) = TcpStream::from_std(stream) else {
            continue;
        };
        if tls {
            connections.tasks.spawn(crate::tls::serve(
                acceptor.clone(),
                stream,
                peer,
                shared.clone(),
                pool.clone(),
                connections.graceful.watcher(),
                stop.clone(),
            ));
        } else {
            connections.serve(stream, peer, &shared, &pool, &stop);
        }
    }
    drop(incoming);
    let _ = tokio::time::timeout(drain_timeout, connections.drain()).await;
    sweeper.abort();
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

/// Accepts connections until `stop` and hands them to the workers in turn; the
/// listening socket closes when it returns.
async fn accept_loop(
    listener: TcpListener,
    tls: bool,
    workers: Arc<[Sender]>,
    next: Arc<AtomicUsize>,
    stop: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => {
                    // Out of file descriptors, most likely: let others finish first.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if let Ok(stream) = stream.into_std() {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let _ = workers[i % workers.len()].send((stream, peer, tls));
        }
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
    let conn = Arc::new(ConnState::new(shared, peer_ip(peer), pool));
    serve_http1(stream, conn, watcher, stop).await;
}

/// The `X-Forwarded-For` value of a client.
pub(crate) fn peer_ip(peer: SocketAddr) -> HeaderValue {
    HeaderValue::from_str(&peer.ip().to_string())
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Serves an HTTP/1 client connection, plain or TLS, with [`crate::h1`] (and a plain one
/// that turns out to speak h2c with hyper) until it closes, times out (idle, or slow to
/// send a head) or the ingress stops.
pub(crate) async fn serve_http1<S: crate::h1::Stream + 'static>(
    stream: S,
    conn: Arc<ConnState>,
    watcher: Watcher,
    stop: CancellationToken,
) {
    let snap = conn.shared.table.load_full();
    let server = snap.server.clone();
    let (idle, header_read) = (snap.idle_timeout, snap.header_read_timeout);
    drop(snap);

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
