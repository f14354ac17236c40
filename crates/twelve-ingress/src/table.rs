//! The live routing table: a [`Snapshot`] built from a [`RouteTable`] and swapped in whole
//! (arc-swap), plus the [`Registry`] that keeps counters and in-flight gauges alive across
//! swaps so that a draining backend's requests are still counted after it left the table.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::header::HeaderValue;
use hyper::http::uri::Authority;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;

use crate::metrics::{AppHistogram, Inflight, UnitCounters};
use crate::routes::{BackendState, Policy, RouteTable};
use crate::trust::{TcpBackend, UnixBackend};

/// Request heads larger than this are answered 431.
pub const MAX_REQUEST_HEAD: usize = 64 * 1024;

/// Idle pooled upstream connections are dropped after this: below gunicorn's 2 s
/// keep-alive, so the ingress never reuses a connection the backend is closing.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_millis(1000);

pub(crate) type ServerBuilder = auto::Builder<TokioExecutor>;

/// One unit's listening address. The same `Arc` lives on across table swaps as long as
/// the (app, unit, addr) triple stays, so its in-flight gauge is exact.
pub(crate) struct BackendRt {
    pub app: String,
    pub unit: String,
    pub addr: SocketAddr,
    /// The Unix socket the unit also listens on, tried first when it is the app's own.
    pub socket: Option<UnixBackend>,
    /// When the route names the unit's uid: the TCP listener on `addr` must be its.
    pub tcp_owner: Option<TcpBackend>,
    pub authority: Authority,
    pub inflight: Inflight,
    pub counters: Arc<UnitCounters>,
}

pub(crate) struct AppPool {
    pub name: String,
    /// `/<app>`, the `X-Forwarded-Prefix` of path-routed requests.
    pub prefix: HeaderValue,
    pub policy: Policy,
    pub ready: Vec<Arc<BackendRt>>,
    next: AtomicUsize,
    pub histogram: Arc<AppHistogram>,
    /// Counts the answers given without a backend (503).
    pub no_unit: Arc<UnitCounters>,
    /// The 503 page.
    pub unavailable: Bytes,
    /// Maintenance mode: the 503 page every request gets.
    pub maintenance: Option<Bytes>,
    /// Its domains answered over HTTPS with `Strict-Transport-Security`.
    pub hsts: Vec<String>,
}

impl AppPool {
    /// The backend for the next request, never `exclude` (the one that just refused).
    pub(crate) fn pick(&self, exclude: Option<SocketAddr>) -> Option<&Arc<BackendRt>> {
        let n = self.ready.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let candidates = (0..n)
            .map(|i| &self.ready[(start + i) % n])
            .filter(|b| Some(b.addr) != exclude);
        match self.policy {
            Policy::RoundRobin => candidates.into_iter().next(),
            // Ties go to the round-robin order, so idle backends share the load.
            Policy::LeastConnections => candidates.min_by_key(|b| b.inflight.get()),
        }
    }
}

pub(crate) struct Snapshot {
    pub apps: HashMap<String, Arc<AppPool>>,
    pub routes: RouteTable,
    /// Apps by domain (`example.com`), and by the suffix of a wildcard (`example.com` for
    /// `*.example.com`).
    pub domains: HashMap<String, Arc<AppPool>>,
    pub wildcards: HashMap<String, Arc<AppPool>>,
    pub certs: crate::tls::CertStore,
    /// TLS-ALPN-01 challenge certificates by host.
    pub alpn_certs: HashMap<String, Arc<rustls::sign::CertifiedKey>>,
    pub server: Arc<ServerBuilder>,
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    /// Enforced by the connection's watch (`server::watch`), not by a timer per request.
    pub header_read_timeout: Duration,
}

/// App, unit, address, Unix socket and the uid its server must have.
type BackendKey = (String, String, SocketAddr, Option<PathBuf>, Option<u32>);

#[derive(Default)]
pub(crate) struct Registry {
    backends: HashMap<BackendKey, Arc<BackendRt>>,
    counters: BTreeMap<(String, String), Arc<UnitCounters>>,
    histograms: BTreeMap<String, Arc<AppHistogram>>,
}

/// What `GET /inflight` reports for one backend.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BackendInflight {
    pub app: String,
    pub unit: String,
    pub addr: SocketAddr,
    pub inflight: i64,
}

impl Registry {
    fn counters(&mut self, app: &str, unit: &str) -> Arc<UnitCounters> {
        self.counters
            .entry((app.to_string(), unit.to_string()))
            .or_default()
            .clone()
    }

    /// Builds the snapshot for `table`, reusing the old snapshot's server settings (they
    /// do not depend on the table).
    pub(crate) fn build(&mut self, table: RouteTable, old: Option<&Snapshot>) -> Snapshot {
        let t = table.timeouts;
        let server = match old {
            Some(old) => old.server.clone(),
            None => Arc::new(server_builder()),
        };

        let mut backends = HashMap::new();
        let mut apps = HashMap::new();
        let (mut domains, mut wildcards) = (HashMap::new(), HashMap::new());
        for (name, route) in &table.apps {
            let mut ready = Vec::new();
            for b in &route.backends {
                let key = (
                    name.clone(),
                    b.unit.clone(),
                    b.addr,
                    b.socket.clone(),
                    b.socket_uid,
                );
                let rt = match self.backends.get(&key) {
                    Some(rt) => rt.clone(),
                    None => Arc::new(BackendRt {
                        app: name.clone(),
                        unit: b.unit.clone(),
                        addr: b.addr,
                        socket: b
                            .socket
                            .clone()
                            .map(|path| UnixBackend::new(&b.unit, path, b.socket_uid)),
                        tcp_owner: b.socket_uid.map(|uid| TcpBackend::new(&b.unit, uid)),
                        authority: Authority::try_from(b.addr.to_string().as_str())
                            .expect("a socket address is an authority"),
                        inflight: Inflight::default(),
                        counters: self.counters(name, &b.unit),
                    }),
                };
                if b.state == BackendState::Ready {
                    ready.push(rt.clone());
                }
                backends.insert(key, rt);
            }
            let headline = if route.message.is_empty() {
                format!("{name} is {}", route.status)
            } else {
                format!("{name} is {}: {}", route.status, route.message)
            };
            let page = format!(
                "503 Service Unavailable\n\n{headline}\nNo unit of {name} is ready to serve requests.\n"
            );
            let pool = AppPool {
                name: name.clone(),
                prefix: HeaderValue::try_from(format!("/{name}"))
                    .expect("app names are header-safe"),
                policy: route.policy,
                ready,
                next: AtomicUsize::new(0),
                histogram: self.histograms.entry(name.clone()).or_default().clone(),
                no_unit: self.counters(name, ""),
                unavailable: Bytes::from(page),
                maintenance: route.maintenance.as_ref().map(|message| {
                    let message = if message.is_empty() {
                        "It will be back soon."
                    } else {
                        message
                    };
                    Bytes::from(format!(
                        "503 Service Unavailable\n\n{name} is down for maintenance.\n{message}\n"
                    ))
                }),
                hsts: route.hsts.clone(),
            };
            let pool = Arc::new(pool);
            for domain in &route.domains {
                match domain.strip_prefix("*.") {
                    Some(suffix) => wildcards.insert(suffix.to_string(), pool.clone()),
                    None => domains.insert(domain.clone(), pool.clone()),
                };
            }
            apps.insert(name.clone(), pool);
        }
        // Backends that left the table stay listed while they still have requests.
        for (key, rt) in self.backends.drain() {
            if !backends.contains_key(&key) && rt.inflight.get() > 0 {
                backends.insert(key, rt);
            }
        }
        self.backends = backends;

        Snapshot {
            apps,
            request_timeout: Duration::from_millis(t.request_ms),
            connect_timeout: Duration::from_millis(t.connect_ms),
            idle_timeout: Duration::from_millis(t.idle_ms),
            header_read_timeout: Duration::from_millis(t.header_read_ms),
            certs: crate::tls::CertStore::build(&table.certificates),
            alpn_certs: table
                .acme_tls_alpn
                .iter()
                .filter_map(|(host, c)| {
                    Some((host.clone(), crate::tls::load_challenge(c).ok()?.key))
                })
                .collect(),
            domains,
            wildcards,
            routes: table,
            server,
        }
    }

    pub(crate) fn inflight(&self) -> Vec<BackendInflight> {
        let mut list: Vec<BackendInflight> = self
            .backends
            .values()
            .map(|b| BackendInflight {
                app: b.app.clone(),
                unit: b.unit.clone(),
                addr: b.addr,
                inflight: b.inflight.get(),
            })
            .collect();
        list.sort_by(|a, b| (&a.app, &a.unit, a.addr).cmp(&(&b.app, &b.unit, b.addr)));
        list
    }

    pub(crate) fn render_metrics(&self) -> String {
        let units: Vec<_> = self
            .counters
            .iter()
            .map(|((app, unit), c)| (app.as_str(), unit.as_str(), &**c))
            .collect();
        let histograms: Vec<_> = self
            .histograms
            .iter()
            .map(|(app, h)| (app.as_str(), &**h))
            .collect();
        let mut inflight: BTreeMap<(&str, &str), i64> = BTreeMap::new();
        for b in self.backends.values() {
            *inflight.entry((&b.app, &b.unit)).or_default() += b.inflight.get();
        }
        let inflight: Vec<_> = inflight.into_iter().map(|((a, u), n)| (a, u, n)).collect();
        crate::metrics::render(&units, &histograms, &inflight)
    }
}

/// hyper serves HTTP/2 only (h2c connections, handed over by `crate::h1` when they open
/// with the preface); HTTP/1 is `crate::h1`'s.
fn server_builder() -> ServerBuilder {
    let mut builder = auto::Builder::new(TokioExecutor::new()).http2_only();
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_REQUEST_HEAD as u32);
    builder
}
