//! One request: find the app (host label, else path prefix), pick a ready backend, rewrite
//! the head (hop-by-hop headers, `X-Forwarded-*`, `traceparent`) and stream both bodies.

use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use hyper::body::{Body as _, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::upgrade::OnUpgrade;
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;

use crate::body::{ConnState, Guard, ResBody};
use crate::server::Shared;
use crate::table::{AppPool, BackendRt, Snapshot};
use crate::upstream::{self, Outgoing, UpConn};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

pub(crate) async fn handle(
    conn: Arc<ConnState>,
    req: Request<Incoming>,
) -> Result<Response<ResBody>, Infallible> {
    if req.version() == Version::HTTP_2 {
        conn.set_h2();
    }
    let mut guard = Guard::begin(conn.clone());
    let shared = &*conn.shared;
    let snap = shared.table.load_full();
    let response = route(shared, &snap, &conn, req, &mut guard).await;
    guard.status = response.status().as_u16();
    Ok(response.map(|body| body.with_guard(guard)))
}

async fn route(
    shared: &Shared,
    snap: &Snapshot,
    conn: &ConnState,
    req: Request<Incoming>,
    guard: &mut Guard,
) -> Response<ResBody> {
    let host = request_host(&req);
    if let Some(pool) = host.and_then(host_label).and_then(|l| snap.apps.get(&*l)) {
        return forward(shared, snap, pool, conn, req, None, guard).await;
    }
    let path = req.uri().path();
    let segment = path[1.min(path.len())..].split('/').next().unwrap_or("");
    if let Some(pool) = snap.apps.get(segment) {
        let rest_len = path.len() - 1 - segment.len();
        return forward(shared, snap, pool, conn, req, Some(rest_len), guard).await;
    }
    let mut known: Vec<&str> = snap.apps.keys().map(String::as_str).collect();
    known.sort_unstable();
    let known = if known.is_empty() {
        "none".to_string()
    } else {
        known.join(", ")
    };
    text(
        StatusCode::NOT_FOUND,
        format!(
            "404 Not Found\n\nNo app is routed for host {:?}, path {:?}.\nApps: {known}\n\
             Use http://<app>.localhost:<port>/ or http://localhost:<port>/<app>/\n",
            host.unwrap_or(""),
            path
        ),
    )
}

/// Sends `req` to one of `pool`'s ready backends. `strip` is the length of the path after
/// the `/<app>` prefix when the request was routed by path.
async fn forward(
    shared: &Shared,
    snap: &Snapshot,
    pool: &AppPool,
    conn: &ConnState,
    mut req: Request<Incoming>,
    strip: Option<usize>,
    guard: &mut Guard,
) -> Response<ResBody> {
    let Some(mut backend) = pool.pick(None).cloned() else {
        guard.set_no_unit(&pool.no_unit, &pool.histogram);
        return text(StatusCode::SERVICE_UNAVAILABLE, pool.unavailable.clone());
    };
    let upgrade = req.version() == Version::HTTP_11 && is_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();

    // A request without a body can be sent again on another ready backend: when its
    // backend refused the connection (it just stopped), or, for GET/HEAD/OPTIONS, when a
    // connection failed under it.
    let bodyless = upgrade || body.is_end_stream();
    let chunked = !bodyless
        && (parts.headers.contains_key(header::TRANSFER_ENCODING)
            || !parts.headers.contains_key(header::CONTENT_LENGTH));
    let mut head = Vec::with_capacity(512);
    write_request_head(
        &mut head,
        &parts,
        strip.map(|rest_len| (rest_len, &pool.prefix)),
        &conn.peer_ip,
        backend.authority.as_str(),
        upgrade,
        chunked,
    );
    let method = &parts.method;
    let idempotent = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    let outgoing = |body| Outgoing {
        head: &head,
        body,
        chunked,
        head_method: *method == Method::HEAD,
        idempotent,
    };

    guard.set_backend(backend.clone(), &pool.histogram);
    let deadline = tokio::time::Instant::now() + snap.request_timeout;
    // A macro, not a closure: the future borrows the backend it is given.
    macro_rules! send {
        ($backend:expr, $body:expr) => {{
            let b: &BackendRt = $backend;
            let to = upstream::Target {
                addr: b.addr,
                socket: b.socket.as_deref(),
            };
            let exchange = upstream::request(&conn.pool, to, snap.connect_timeout, outgoing($body));
            tokio::time::timeout_at(deadline, exchange).await
        }};
    }
    let mut result = send!(&backend, (!bodyless).then_some(body));

    if let (Ok(Err(e)), true) = (&result, bodyless && pool.ready.len() > 1) {
        // The newest table: the failed backend may have been replaced meanwhile.
        let latest = shared.table.load();
        let other = latest
            .apps
            .get(&pool.name)
            .and_then(|p| p.pick(Some(backend.addr)))
            .cloned();
        if let (true, Some(next)) = (e.is_connect() || idempotent, other) {
            backend = next;
            guard.set_backend(backend.clone(), &pool.histogram);
            result = send!(&backend, None);
        }
    }

    let response = match result {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => {
            let cause = if e.is_connect() {
                "could not be reached".to_string()
            } else {
                format!("failed: {e}")
            };
            return text(
                StatusCode::BAD_GATEWAY,
                format!("502 Bad Gateway\n\n{} {cause}\n", backend.unit),
            );
        }
        Err(_) => {
            return text(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "504 Gateway Timeout\n\n{} did not answer within {} ms\n",
                    backend.unit,
                    snap.request_timeout.as_millis()
                ),
            );
        }
    };

    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let (parts, body) = response.into_parts();
        if let (Some(client_upgrade), Some(backend_conn)) = (client_upgrade, body.into_conn()) {
            tokio::spawn(tunnel(client_upgrade, backend_conn));
        }
        return Response::from_parts(parts, ResBody::full(Bytes::new()));
    }
    response.map(ResBody::upstream)
}

/// Writes the request head for the backend: origin-form target (without the `/<app>`
/// prefix when `strip` says so), no hop-by-hop headers, `X-Forwarded-*` set by the
/// ingress, a `traceparent` when the client sent none, `Host` always (`fallback_host`
/// when the client gave none).
fn write_request_head(
    out: &mut Vec<u8>,
    parts: &hyper::http::request::Parts,
    strip: Option<(usize, &HeaderValue)>,
    peer_ip: &HeaderValue,
    fallback_host: &str,
    upgrade: bool,
    chunked: bool,
) {
    let headers = &parts.headers;
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let path = parts.uri.path();
    match strip {
        None => out.extend_from_slice(
            parts
                .uri
                .path_and_query()
                .map_or("/", |pq| pq.as_str())
                .as_bytes(),
        ),
        Some((rest_len, _)) => {
            let rest = &path[path.len() - rest_len..];
            out.extend_from_slice(if rest.is_empty() { "/" } else { rest }.as_bytes());
            if let Some(q) = parts.uri.query() {
                out.push(b'?');
                out.extend_from_slice(q.as_bytes());
            }
        }
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");

    // HTTP/2 carries the host in the URI; backends speak HTTP/1.1 and want it in `Host`.
    let host = headers
        .get(header::HOST)
        .map(HeaderValue::as_bytes)
        .or_else(|| parts.uri.authority().map(|a| a.as_str().as_bytes()));
    let named = connection_named(headers);
    let mut field = |name: &[u8], value: &[u8]| {
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    };
    // An HTTP/1.0 client may send none: the backend's address, as HTTP/1.1 needs one.
    field(b"host", host.unwrap_or(fallback_host.as_bytes()));
    let mut forwarded_for: Option<Vec<u8>> = None;
    let mut traceparent = false;
    for (name, value) in headers {
        if *name == X_FORWARDED_FOR {
            let list = forwarded_for.get_or_insert_with(Vec::new);
            list.extend_from_slice(value.as_bytes());
            list.extend_from_slice(b", ");
            continue;
        }
        traceparent |= *name == TRACEPARENT;
        let dropped = (is_hop_by_hop(name) && !(upgrade && *name == header::UPGRADE))
            || *name == header::HOST
            || *name == X_FORWARDED_PROTO
            || *name == X_FORWARDED_PREFIX
            || (*name == X_FORWARDED_HOST && host.is_some())
            || (*name == header::CONTENT_LENGTH && chunked)
            || named.contains(name);
        if dropped {
            continue;
        }
        field(name.as_str().as_bytes(), value.as_bytes());
    }
    match forwarded_for {
        None => field(b"x-forwarded-for", peer_ip.as_bytes()),
        Some(mut list) => {
            list.extend_from_slice(peer_ip.as_bytes());
            field(b"x-forwarded-for", &list);
        }
    }
    if let Some(host) = host {
        field(b"x-forwarded-host", host);
    }
    field(b"x-forwarded-proto", b"http");
    if let Some((_, prefix)) = strip {
        field(b"x-forwarded-prefix", prefix.as_bytes());
    }
    if !traceparent {
        field(b"traceparent", &traceparent_bytes());
    }
    if upgrade {
        field(b"connection", b"upgrade");
    }
    if chunked {
        field(b"transfer-encoding", b"chunked");
    }
    out.extend_from_slice(b"\r\n");
}

/// Header names the `Connection` header lists (besides `close`, `keep-alive`, `upgrade`).
fn connection_named(headers: &HeaderMap) -> Vec<HeaderName> {
    let mut named = Vec::new();
    for value in headers.get_all(header::CONNECTION) {
        let Ok(value) = value.to_str() else { continue };
        for token in value.split(',').map(str::trim) {
            if ["close", "keep-alive", "upgrade", ""]
                .iter()
                .any(|t| token.eq_ignore_ascii_case(t))
            {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                named.push(name);
            }
        }
    }
    named
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    *name == header::CONNECTION
        || *name == header::UPGRADE
        || *name == KEEP_ALIVE
        || *name == PROXY_CONNECTION
        || *name == header::TE
        || *name == header::TRAILER
        || *name == header::TRANSFER_ENCODING
        || *name == header::PROXY_AUTHENTICATE
        || *name == header::PROXY_AUTHORIZATION
}

async fn tunnel(client: OnUpgrade, mut backend: UpConn) {
    let Ok(client) = client.await else {
        return;
    };
    let mut client = TokioIo::new(client);
    backend.set_nodelay();
    // Bytes the backend sent right after its 101 answer.
    if !backend.buf.is_empty() && client.write_all(&backend.buf).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut backend.stream).await;
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<ResBody> {
    let mut response = Response::new(ResBody::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The host the client asked for: the URI's authority (HTTP/2, absolute-form) or `Host`.
fn request_host<B>(req: &Request<B>) -> Option<&str> {
    if let Some(host) = req.uri().host() {
        return Some(host);
    }
    req.headers().get(header::HOST)?.to_str().ok()
}

/// The first DNS label of a host name with at least two labels, lowercased:
/// `web.localhost:8080` -> `web`. IP literals give labels no app can have (`127`, `[::1]`)
/// except digit-only app names, which routing by path still reaches.
pub(crate) fn host_label(host: &str) -> Option<Cow<'_, str>> {
    if host.starts_with('[') {
        return None;
    }
    let (label, rest) = host.split_once('.')?;
    if label.is_empty() || rest.is_empty() || rest.starts_with(':') {
        return None;
    }
    if label.bytes().any(|b| b.is_ascii_uppercase()) {
        Some(Cow::Owned(label.to_ascii_lowercase()))
    } else {
        Some(Cow::Borrowed(label))
    }
}

fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && has_token(headers, &header::CONNECTION, "upgrade")
}

/// A W3C trace context for a request that has none: version 00, random trace and span
/// ids, sampled.
pub fn new_traceparent() -> HeaderValue {
    HeaderValue::from_bytes(&traceparent_bytes()).expect("hex digits and dashes are a header value")
}

fn traceparent_bytes() -> [u8; 55] {
    let trace: u128 = rand::random::<u128>().max(1);
    let span: u64 = rand::random::<u64>().max(1);
    let mut buf = [0u8; 55];
    buf[..3].copy_from_slice(b"00-");
    hex(&trace.to_be_bytes(), &mut buf[3..35]);
    buf[35] = b'-';
    hex(&span.to_be_bytes(), &mut buf[36..52]);
    buf[52..].copy_from_slice(b"-01");
    buf
}

fn hex(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = DIGITS[(b >> 4) as usize];
        out[2 * i + 1] = DIGITS[(b & 15) as usize];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_labels() {
        let cases = [
            ("web.localhost", Some("web")),
            ("web.localhost:8080", Some("web")),
            ("Web.example.com", Some("web")),
            ("localhost", None),
            ("localhost:8080", None),
            ("127.0.0.1", Some("127")),
            ("[::1]:8080", None),
            (".localhost", None),
        ];
        for (host, want) in cases {
            assert_eq!(host_label(host).as_deref(), want, "{host}");
        }
    }

    fn head_for(request: Request<()>, strip: Option<usize>, upgrade: bool) -> String {
        let (parts, ()) = request.into_parts();
        let mut out = Vec::new();
        let prefix = HeaderValue::from_static("/web");
        let peer = HeaderValue::from_static("10.0.0.9");
        let chunked = parts.headers.contains_key(header::TRANSFER_ENCODING);
        write_request_head(
            &mut out,
            &parts,
            strip.map(|n| (n, &prefix)),
            &peer,
            "127.0.0.1:9",
            upgrade,
            chunked,
        );
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn hop_by_hop_headers_go_and_connection_named_ones_too() {
        let req = Request::get("/a?b=1")
            .header("host", "web.localhost")
            .header("connection", "keep-alive, x-secret")
            .header("x-secret", "1")
            .header("keep-alive", "timeout=5")
            .header("transfer-encoding", "chunked")
            .header("content-length", "12")
            .header("upgrade", "websocket")
            .header("x-kept", "1")
            .header("traceparent", "00-1-2-01")
            .body(())
            .unwrap();
        let head = head_for(req, None, false);
        assert_eq!(
            head,
            "GET /a?b=1 HTTP/1.1\r\nhost: web.localhost\r\nx-kept: 1\r\n\
             traceparent: 00-1-2-01\r\nx-forwarded-for: 10.0.0.9\r\n\
             x-forwarded-host: web.localhost\r\nx-forwarded-proto: http\r\n\
             transfer-encoding: chunked\r\n\r\n"
        );
    }

    #[test]
    fn forwarded_headers_are_the_ingress_own_and_the_prefix_goes() {
        let req = Request::get("/web/a/b?q")
            .header("host", "localhost:8080")
            .header("x-forwarded-for", "1.1.1.1")
            .header("x-forwarded-for", "2.2.2.2")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-prefix", "/evil")
            .header("x-forwarded-host", "evil")
            .body(())
            .unwrap();
        let head = head_for(req, Some("/a/b".len()), false);
        assert!(head.starts_with("GET /a/b?q HTTP/1.1\r\nhost: localhost:8080\r\n"));
        for line in [
            "x-forwarded-for: 1.1.1.1, 2.2.2.2, 10.0.0.9\r\n",
            "x-forwarded-host: localhost:8080\r\n",
            "x-forwarded-proto: http\r\n",
            "x-forwarded-prefix: /web\r\n",
            "traceparent: 00-",
        ] {
            assert!(head.contains(line), "{line:?} in {head}");
        }
        for gone in ["https", "evil"] {
            assert!(!head.contains(gone), "{gone:?} in {head}");
        }
        let head = head_for(Request::get("/web").body(()).unwrap(), Some(0), false);
        assert!(head.starts_with("GET / HTTP/1.1\r\n"), "{head}");
    }

    #[test]
    fn upgrade_requests_keep_upgrade() {
        let req = Request::get("/socket")
            .header("host", "web.localhost")
            .header("connection", "keep-alive, Upgrade")
            .header("upgrade", "websocket")
            .body(())
            .unwrap();
        assert!(is_upgrade(req.headers()));
        let head = head_for(req, None, true);
        assert!(head.contains("\r\nupgrade: websocket\r\n"), "{head}");
        assert!(head.ends_with("\r\nconnection: upgrade\r\n\r\n"), "{head}");
        assert_eq!(head.matches("connection").count(), 1, "{head}");
    }

    #[test]
    fn traceparent_is_well_formed() {
        let tp = new_traceparent();
        let tp = tp.to_str().unwrap();
        let parts: Vec<_> = tp.split('-').collect();
        assert_eq!(parts.len(), 4);
        assert_eq!(
            (parts[0], parts[1].len(), parts[2].len(), parts[3]),
            ("00", 32, 16, "01")
        );
        assert_ne!(tp, new_traceparent().to_str().unwrap());
    }
}
