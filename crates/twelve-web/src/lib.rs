//! twelve's read-only web server.
//!
//! The controller runs it on a TCP listener of its choice (documented default
//! `127.0.0.1:9180`) and feeds it through a [`Source`]. It serves:
//!
//! | route | what |
//! | --- | --- |
//! | `GET /sd`, `GET /v1/sd` | Prometheus `http_sd_configs` JSON: every app's [`AppView::scrape`] groups |
//! | `GET /prometheus-config` | a `scrape_configs:` YAML block pointing Prometheus at `/sd` and `/metrics` |
//! | `GET /metrics` | twelve's own metrics (Prometheus text 0.0.4), then the ingress metrics verbatim |
//! | `GET /` | the dashboard: one self-contained HTML page |
//! | `GET /events` | Server-Sent Events: a `state` event with the snapshot JSON whenever it changes |
//! | `GET /api/state` | the snapshot JSON |
//! | `GET /api/logs?unit=web/0&n=50` | the recent log lines of a unit, JSON |
//!
//! Everything is read-only. This crate knows nothing of the controller's types: the
//! controller converts its state into a [`Snapshot`].
//!
//! Every route answers only requests whose `Host` is `localhost`, `127.0.0.1` or `[::1]`
//! (with any port), or that carry the server's token ([`Access`]); others get 403. This
//! keeps a web page that rebinds its name to 127.0.0.1 from reading the server.

mod access;
mod dashboard;
mod metrics;
mod promconfig;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::stream::{self, Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

pub use access::{is_loopback_host, Access, TOKEN_COOKIE};
pub use metrics::render_metrics;
pub use promconfig::prometheus_config;

/// The address the controller listens on unless told otherwise.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9180";

/// How often `/events` looks at [`Source::snapshot`] for a change.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// How often `/events` sends a keep-alive comment when nothing changes.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(15);

/// The largest `n` accepted by `/api/logs`.
pub const MAX_LOG_LINES: usize = 5000;

/// A boxed, sendable future; the same type as `futures::future::BoxFuture<'static, T>`,
/// so `async { .. }.boxed()` from the `futures` crate fits.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Where the server reads the state it shows. Implemented by the controller.
pub trait Source: Send + Sync + 'static {
    /// The current state. Called once per request and every [`POLL_INTERVAL`] per open
    /// `/events` stream, so it must be cheap (a clone of a cached value).
    fn snapshot(&self) -> Snapshot;

    /// The last `n` log lines of `unit` (e.g. `web/0`), oldest first. An unknown unit
    /// gives an empty list.
    fn logs(&self, unit: &str, n: usize) -> BoxFuture<Vec<LogLine>>;
}

/// Everything the server shows at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub apps: Vec<AppView>,
    pub controller: ControllerMetrics,
    /// Prometheus text exposition from the ingress, appended verbatim to `/metrics`.
    /// Not part of the JSON state (`/api/state`, `/events`).
    #[serde(skip)]
    pub ingress_metrics: Option<String>,
    /// The backing services, with their last backup.
    #[serde(default)]
    pub services: Vec<ServiceView>,
    /// The users' domains and the certificates serving them (docs/tls.md).
    #[serde(default)]
    pub certificates: Vec<CertificateView>,
}

/// One domain as the edge serves it: its certificate and the last ACME attempt.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CertificateView {
    pub host: String,
    pub app: String,
    /// `acme`, `user`, or empty when no certificate covers the host.
    pub source: String,
    pub issuer: String,
    /// Unix time the serving certificate expires.
    pub not_after: Option<i64>,
    /// Failed ACME attempts in a row (0 once one succeeds).
    pub renewal_failures: u64,
    /// The last ACME error, empty when the last attempt succeeded.
    pub last_error: String,
}

/// One backing service as shown (`twelve deploy postgresql`), with its backups.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceView {
    pub name: String,
    pub kind: String,
    pub status: String,
    pub message: String,
    /// `last backup ID (where, size)` or `last backup failed at ...`; empty when none.
    pub last_backup: String,
    /// Unix time of the last successful backup.
    pub last_backup_success: Option<i64>,
    pub backup_failures: u64,
}

/// One app as shown.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AppView {
    pub name: String,
    /// `flask`, `django`, `fastapi`, `go`, `expressjs`, `spring-boot`.
    pub framework: String,
    /// Juju-style workload status: `active`, `blocked`, `maintenance`, `waiting`,
    /// `error`, `unknown`. Others are shown as they are.
    pub status: String,
    pub message: String,
    /// Where the app is reachable through the ingress.
    pub url: Option<String>,
    pub release: Option<u32>,
    pub units: Vec<UnitView>,
    /// Integrations, e.g. `postgresql`, `redis`.
    pub relations: Vec<String>,
    /// Prometheus targets of this app, already expanded (`*:PORT` per unit,
    /// `@scheduler:PORT` to the scheduler unit), in `http_sd` form.
    pub scrape: Vec<TargetGroup>,
    /// Requests per second through the ingress, recently.
    pub requests_per_second: Option<f64>,
}

/// One unit of an app.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UnitView {
    /// `web/0`.
    pub name: String,
    pub status: String,
    pub message: String,
    /// `host:port` the app listens on.
    pub address: String,
    pub leader: bool,
    /// Runs the `-scheduler` services.
    pub scheduler: bool,
    pub restarts: u64,
}

/// One Prometheus `http_sd` target group: exactly
/// `{"targets": ["host:port", ..], "labels": {"name": "value", ..}}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetGroup {
    pub targets: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

/// The controller's own counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ControllerMetrics {
    /// Duration of the last reconcile pass.
    pub reconcile_seconds_last: f64,
    /// Total duration of all reconcile passes.
    pub reconcile_seconds_sum: f64,
    pub reconciles_total: u64,
    pub migrations_total: u64,
    pub migration_failures_total: u64,
}

/// One log line of a unit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// RFC 3339.
    pub time: String,
    pub unit: String,
    /// The Pebble service that wrote it.
    pub service: String,
    pub message: String,
}

/// Counters about the web server itself, shown in `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct WebStats {
    pub(crate) page_loads: AtomicU64,
    pub(crate) event_streams: AtomicU64,
}

#[derive(Clone)]
struct AppState {
    source: Arc<dyn Source>,
    stats: Arc<WebStats>,
    stop: CancellationToken,
}

/// The routes, for a caller that runs its own server, answering loopback `Host`s only.
/// Its `/events` streams end only when the client leaves; [`serve`] also ends them at
/// shutdown.
pub fn router(source: Arc<dyn Source>) -> Router {
    router_with(source, Access::local_only())
}

/// [`router`] with the access rule `access`.
pub fn router_with(source: Arc<dyn Source>, access: Access) -> Router {
    router_with_stop(source, access, CancellationToken::new())
}

fn router_with_stop(source: Arc<dyn Source>, access: Access, stop: CancellationToken) -> Router {
    let state = AppState {
        source,
        stats: Arc::new(WebStats::default()),
        stop,
    };
    Router::new()
        .route("/", get(dashboard_page))
        .route("/sd", get(sd))
        .route("/v1/sd", get(sd))
        .route("/prometheus-config", get(prom_config))
        .route("/metrics", get(metrics_handler))
        .route("/events", get(events))
        .route("/api/state", get(api_state))
        .route("/api/logs", get(api_logs))
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(access, access::guard))
}

/// Serves until `shutdown` completes, then closes the `/events` streams and waits for
/// the requests under way. Answers loopback `Host`s only.
pub async fn serve(
    listener: tokio::net::TcpListener,
    source: Arc<dyn Source>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, source, Access::local_only(), shutdown).await
}

/// [`serve`] with the access rule `access` (e.g. [`Access::with_token`]).
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    source: Arc<dyn Source>,
    access: Access,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stop = CancellationToken::new();
    let app = router_with_stop(source, access, stop.clone());
    let trigger = stop.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown => trigger.cancel(),
            _ = trigger.cancelled() => {}
        }
    });
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(stop.clone().cancelled_owned())
        .await;
    stop.cancel();
    result
}

/// The `http_sd` document: every app's target groups, in app order.
pub fn service_discovery(snapshot: &Snapshot) -> Vec<TargetGroup> {
    snapshot
        .apps
        .iter()
        .flat_map(|app| app.scrape.iter().cloned())
        .collect()
}

async fn sd(State(st): State<AppState>) -> Json<Vec<TargetGroup>> {
    Json(service_discovery(&st.source.snapshot()))
}

async fn prom_config(State(_st): State<AppState>, headers: HeaderMap) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| promconfig::valid_host(h))
        .unwrap_or(DEFAULT_ADDR);
    (
        [(header::CONTENT_TYPE, "application/yaml; charset=utf-8")],
        prometheus_config(&format!("http://{host}")),
    )
        .into_response()
}

async fn metrics_handler(State(st): State<AppState>) -> Response {
    let body = metrics::render(&st.source.snapshot(), &st.stats);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn api_state(State(st): State<AppState>) -> Json<Snapshot> {
    Json(st.source.snapshot())
}

#[derive(Deserialize)]
struct LogsQuery {
    unit: String,
    n: Option<usize>,
}

async fn api_logs(
    State(st): State<AppState>,
    q: Result<Query<LogsQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return (
            StatusCode::BAD_REQUEST,
            "usage: /api/logs?unit=<app>/<number>&n=<lines>\n",
        )
            .into_response();
    };
    let n = q.n.unwrap_or(100).min(MAX_LOG_LINES);
    Json(st.source.logs(&q.unit, n).await).into_response()
}

async fn dashboard_page(State(st): State<AppState>) -> Response {
    st.stats.page_loads.fetch_add(1, Ordering::Relaxed);
    let snapshot = st.source.snapshot();
    (
        [(header::CACHE_CONTROL, "no-store")],
        Html(dashboard::page(&snapshot)),
    )
        .into_response()
}

fn state_json(snapshot: &Snapshot) -> String {
    serde_json::to_string(snapshot).unwrap_or_else(|_| "{}".into())
}

/// Yields the snapshot JSON at once, then each time it differs from the last one sent.
fn state_changes(source: Arc<dyn Source>) -> impl Stream<Item = String> + Send {
    struct S {
        source: Arc<dyn Source>,
        last: Option<String>,
        tick: tokio::time::Interval,
    }
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let init = S {
        source,
        last: None,
        tick,
    };
    stream::unfold(init, |mut s| async move {
        loop {
            s.tick.tick().await;
            let json = state_json(&s.source.snapshot());
            if s.last.as_deref() != Some(json.as_str()) {
                s.last = Some(json.clone());
                return Some((json, s));
            }
        }
    })
}

struct StreamGuard(Arc<WebStats>);
impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.event_streams.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn events(
    State(st): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>> + Send> {
    st.stats.event_streams.fetch_add(1, Ordering::Relaxed);
    let guard = StreamGuard(st.stats.clone());
    let stream = state_changes(st.source.clone())
        .map(move |json| {
            let _ = &guard;
            Ok(Event::default().event("state").data(json))
        })
        .take_until(st.stop.clone().cancelled_owned());
    Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE_INTERVAL))
}
