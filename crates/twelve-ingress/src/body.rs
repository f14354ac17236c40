//! Streaming bodies in both directions, and the guard that closes a request's books (in-flight
//! gauges, status counters, latency) when its response body is done or dropped.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::header::HeaderValue;

use crate::metrics::{AppHistogram, UnitCounters};
use crate::server::Shared;
use crate::table::BackendRt;
use crate::upstream::{Pool, UpstreamBody};

/// The body sent to the client: the backend's, streamed, or one the ingress wrote.
pub struct ResBody {
    inner: ResInner,
    _guard: Option<Guard>,
}

enum ResInner {
    Full(Option<Bytes>),
    Upstream(UpstreamBody),
}

impl ResBody {
    pub(crate) fn full(bytes: impl Into<Bytes>) -> ResBody {
        ResBody {
            inner: ResInner::Full(Some(bytes.into())),
            _guard: None,
        }
    }

    pub(crate) fn upstream(body: UpstreamBody) -> ResBody {
        ResBody {
            inner: ResInner::Upstream(body),
            _guard: None,
        }
    }

    pub(crate) fn with_guard(mut self, guard: Guard) -> ResBody {
        self._guard = Some(guard);
        self
    }
}

impl Body for ResBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match &mut self.get_mut().inner {
            ResInner::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ResInner::Upstream(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            ResInner::Full(bytes) => bytes.is_none(),
            ResInner::Upstream(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            ResInner::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            ResInner::Full(None) => SizeHint::with_exact(0),
            ResInner::Upstream(body) => body.size_hint(),
        }
    }
}

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

fn now_ms() -> u64 {
    EPOCH.elapsed().as_millis() as u64
}

/// One client connection: the ingress state, its peer address, its thread's pool of
/// backend connections, whether it is idle. Its requests reach the shared state through it,
/// so a request clones no `Arc` that other threads' requests clone too.
pub(crate) struct ConnState {
    pub shared: Arc<Shared>,
    pub peer_ip: HeaderValue,
    pub pool: Arc<Pool>,
    inflight: AtomicUsize,
    last_ms: AtomicU64,
    /// The connection speaks HTTP/2 (it has had an HTTP/2 request).
    h2: AtomicBool,
    /// It came through the HTTPS listener.
    pub https: bool,
}

impl ConnState {
    pub(crate) fn new(shared: Arc<Shared>, peer_ip: HeaderValue, pool: Arc<Pool>) -> ConnState {
        ConnState {
            shared,
            peer_ip,
            pool,
            inflight: AtomicUsize::new(0),
            last_ms: AtomicU64::new(now_ms()),
            h2: AtomicBool::new(false),
            https: false,
        }
    }

    pub(crate) fn with_https(mut self) -> ConnState {
        self.https = true;
        self
    }

    pub(crate) fn set_h2(&self) {
        self.h2.store(true, Ordering::Relaxed);
    }

    pub(crate) fn is_h2(&self) -> bool {
        self.h2.load(Ordering::Relaxed)
    }

    /// How long the connection has had no request in flight; `None` while it has one.
    pub(crate) fn idle_for_ms(&self) -> Option<u64> {
        if self.inflight.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(now_ms().saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// Where a request's figures go once it is done.
pub(crate) enum Target {
    None,
    Backend(Arc<BackendRt>, Arc<AppHistogram>),
    NoUnit(Arc<UnitCounters>, Arc<AppHistogram>),
}

/// Lives from a request's arrival to the end of its response body.
pub(crate) struct Guard {
    conn: Arc<ConnState>,
    start: Instant,
    pub status: u16,
    target: Target,
}

impl Guard {
    pub(crate) fn begin(conn: Arc<ConnState>) -> Guard {
        conn.inflight.fetch_add(1, Ordering::AcqRel);
        Guard {
            conn,
            start: Instant::now(),
            status: 0,
            target: Target::None,
        }
    }

    /// Counts the request against `backend` (in flight from now on).
    pub(crate) fn set_backend(&mut self, backend: Arc<BackendRt>, histogram: &Arc<AppHistogram>) {
        backend.inflight.inc();
        if let Target::Backend(old, _) = &self.target {
            old.inflight.dec();
        }
        self.target = Target::Backend(backend, histogram.clone());
    }

    pub(crate) fn set_no_unit(&mut self, counters: &Arc<UnitCounters>, h: &Arc<AppHistogram>) {
        self.target = Target::NoUnit(counters.clone(), h.clone());
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let status = if self.status == 0 { 499 } else { self.status };
        match &self.target {
            Target::None => {}
            Target::Backend(backend, histogram) => {
                backend.inflight.dec();
                backend.counters.count(status);
                histogram.observe(self.start.elapsed());
            }
            Target::NoUnit(counters, histogram) => {
                counters.count(status);
                histogram.observe(self.start.elapsed());
            }
        }
        self.conn.last_ms.store(now_ms(), Ordering::Relaxed);
        self.conn.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}
