//! twelve's ingress: one long-lived reverse proxy in front of every app's units.
//!
//! `http://<app>.localhost:<port>/` (routing by the first host label) and
//! `http://localhost:<port>/<app>/` (routing by path prefix, stripped) go to the app's
//! ready units, round-robin or least-connections. The controller drives it through the admin
//! socket ([`admin`]): it puts a whole [`routes::RouteTable`] at each change and waits on
//! `GET /inflight` before stopping a draining unit. See `docs/ingress.md`.
//!
//! Architecture invariant: nothing on the request path waits on another thread or does I/O
//! besides the two sockets of the request; the table is read through arc-swap, figures are
//! atomics, and the only lock is the one around a worker thread's own pool of idle backend
//! connections (module `upstream`, where HTTP/1.1 to backends is written and parsed), which
//! only that thread takes (with `workers: 0`, one pool serves the caller's runtime). The
//! exceptions are module `trust`'s checks that a backend's Unix socket or TCP port is the
//! app's own: a `getsockopt` per new Unix connection, and a `stat` of the socket's
//! directory or a `NETLINK_SOCK_DIAG` query at most once a second per backend.
//! HTTP/1 clients are served by module `h1` (one task per connection, no hyper), HTTP/2
//! (h2c) clients by hyper through module `proxy`. HTTPS (`--https`) is module `tls`:
//! rustls, the certificate picked by SNI from the table of now, then hyper's HTTP/2 or
//! HTTP/1 server through `proxy`; module `x509` reads the names and validity of a
//! certificate; ACME TLS-ALPN-01 handshakes get their challenge certificate there. Users'
//! domains, maintenance mode, the 308 to https and ACME HTTP-01 answers are decided
//! before routing (`proxy::answer_first`). The listeners' accept loops only hand
//! connections to the workers, which outlive them: `PUT /listeners` replaces a listener
//! (`server::ListenerSet`) while the connections it accepted go on.

pub mod admin;
mod body;
mod cli;
mod h1;
mod metrics;
mod proxy;
pub mod routes;
mod server;
mod table;
mod tls;
mod trust;
mod upstream;
pub mod x509;

pub use admin::client;
pub use admin::InflightReport;
pub use body::ResBody;
pub use cli::{cli_main, DirArg, IngressArgs, IngressCommand, RunArgs};
pub use proxy::new_traceparent;

/// Checks a certificate and its key as the ingress would load them: PEM chain, X.509
/// leaf naming at least one host, a key rustls can sign with that matches it.
pub fn check_certificate(cert: &Certificate) -> Result<x509::CertInfo, String> {
    tls::load(cert).map(|loaded| loaded.info)
}
pub use routes::{
    AppRoute, Backend, BackendState, Certificate, Policy, RouteTable, RoutesError, Timeouts,
};
pub use server::{
    IngressConfig, IngressError, IngressHandle, ListenerAddrs, DEFAULT_DRAIN_TIMEOUT, DEFAULT_PORT,
    PID_FILE, ROUTES_FILE, SOCKET_FILE,
};
pub use table::{BackendInflight, MAX_REQUEST_HEAD, POOL_IDLE_TIMEOUT};
pub use trust::listener_uids;
