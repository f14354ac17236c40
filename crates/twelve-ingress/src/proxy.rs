//! One request: find the app (host label, else path prefix), pick a ready backend, rewrite
//! the head (hop-by-hop headers, `X-Forwarded-*`, `traceparent`) and stream both bodies.

use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use hyper::body::{Body as _, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::{self, PathAndQuery, Scheme};
use hyper::upgrade::OnUpgrade;
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;

use crate::body::{ConnState, Guard, ReqBody, ResBody};
use crate::server::Shared;
use crate::table::{AppPool, BackendRt, Snapshot};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

pub(crate) async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnState>,
    req: Request<Incoming>,
) -> Result<Response<ResBody>, Infallible> {
    let mut guard = Guard::begin(conn.clone());
    let snap = shared.table.load_full();
    let response = route(&shared, &snap, &conn, req, &mut guard).await;
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
    let (mut parts, body) = req.into_parts();

    let path_and_query = match strip {
        None => parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
        Some(rest_len) => {
            let path = parts.uri.path();
            let rest = &path[path.len() - rest_len..];
            let rest = if rest.is_empty() { "/" } else { rest };
            let rewritten = match parts.uri.query() {
                Some(q) => PathAndQuery::try_from(format!("{rest}?{q}")),
                None => PathAndQuery::try_from(rest),
            };
            rewritten.unwrap_or_else(|_| PathAndQuery::from_static("/"))
        }
    };

    let headers = &mut parts.headers;
    strip_hop_by_hop(headers, upgrade);
    if !headers.contains_key(header::HOST) {
        // HTTP/2 carries the host in the URI; backends speak HTTP/1.1 and want it here.
        if let Some(value) = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            headers.insert(header::HOST, value);
        }
    }
    if let Some(host) = headers.get(header::HOST).cloned() {
        headers.insert(X_FORWARDED_HOST.clone(), host);
    }
    let forwarded_for = match headers.get(&X_FORWARDED_FOR) {
        None => conn.peer_ip.clone(),
        Some(_) => {
            let mut list = Vec::new();
            for value in headers.get_all(&X_FORWARDED_FOR) {
                list.extend_from_slice(value.as_bytes());
                list.extend_from_slice(b", ");
            }
            list.extend_from_slice(conn.peer_ip.as_bytes());
            HeaderValue::from_bytes(&list).unwrap_or_else(|_| conn.peer_ip.clone())
        }
    };
    headers.insert(X_FORWARDED_FOR.clone(), forwarded_for);
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    match strip {
        Some(_) => headers.insert(X_FORWARDED_PREFIX.clone(), pool.prefix.clone()),
        None => headers.remove(&X_FORWARDED_PREFIX),
    };
    if !headers.contains_key(&TRACEPARENT) {
        headers.insert(TRACEPARENT.clone(), new_traceparent());
    }

    // A request without a body can be sent again on another ready backend: when its
    // backend refused the connection (it just stopped), or, for GET/HEAD/OPTIONS, when a
    // pooled connection failed under it.
    let bodyless = upgrade || body.is_end_stream();
    // Keeping a copy costs an allocation per request: only when a retry could go elsewhere.
    let retry_headers = (bodyless && pool.ready.len() > 1).then(|| parts.headers.clone());
    let method = parts.method.clone();
    parts.version = Version::HTTP_11;
    parts.uri = upstream_uri(&backend, path_and_query.clone());
    let body = if bodyless {
        ReqBody::Empty
    } else {
        ReqBody::Incoming(body)
    };

    guard.set_backend(backend.clone(), &pool.histogram);
    let deadline = tokio::time::Instant::now() + snap.request_timeout;
    let request = Request::from_parts(parts, body);
    let mut result = tokio::time::timeout_at(deadline, conn.client.request(request)).await;

    if let (Ok(Err(e)), Some(headers)) = (&result, retry_headers) {
        let refused = e.is_connect();
        let idempotent = matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
        // The newest table: the failed backend may have been replaced meanwhile.
        let latest = shared.table.load();
        let other = latest
            .apps
            .get(&pool.name)
            .and_then(|p| p.pick(Some(backend.addr)))
            .cloned();
        if let (true, Some(next)) = (refused || idempotent, other) {
            backend = next;
            guard.set_backend(backend.clone(), &pool.histogram);
            let mut request = Request::new(ReqBody::Empty);
            *request.method_mut() = method;
            *request.uri_mut() = upstream_uri(&backend, path_and_query);
            *request.headers_mut() = headers;
            result = tokio::time::timeout_at(deadline, conn.client.request(request)).await;
        }
    }

    let mut response = match result {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => {
            let cause = if e.is_connect() {
                "could not be reached".to_string()
            } else {
                format!("failed: {}", error_chain(&e))
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
        if let Some(client_upgrade) = client_upgrade {
            let backend_upgrade = hyper::upgrade::on(&mut response);
            tokio::spawn(tunnel(client_upgrade, backend_upgrade));
            let (parts, _) = response.into_parts();
            return Response::from_parts(parts, ResBody::full(Bytes::new()));
        }
    }
    strip_hop_by_hop(response.headers_mut(), false);
    response.map(ResBody::upstream)
}

async fn tunnel(client: OnUpgrade, backend: OnUpgrade) {
    let (Ok(client), Ok(backend)) = tokio::join!(client, backend) else {
        return;
    };
    let _ =
        tokio::io::copy_bidirectional(&mut TokioIo::new(client), &mut TokioIo::new(backend)).await;
}

fn upstream_uri(backend: &BackendRt, path_and_query: PathAndQuery) -> Uri {
    let mut parts = uri::Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(backend.authority.clone());
    parts.path_and_query = Some(path_and_query);
    Uri::from_parts(parts).expect("scheme, authority and path make a URI")
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

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
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

/// Removes the headers that describe one connection, not the message (RFC 9110 §7.6.1),
/// keeping `Connection: upgrade` and `Upgrade` when the request asks for an upgrade.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    if headers.contains_key(header::CONNECTION) {
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
        for name in named {
            headers.remove(name);
        }
        if keep_upgrade {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        } else {
            headers.remove(header::CONNECTION);
        }
    }
    if !keep_upgrade {
        headers.remove(header::UPGRADE);
    }
    for name in [
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::PROXY_AUTHENTICATE,
        &header::PROXY_AUTHORIZATION,
    ] {
        if headers.contains_key(name) {
            headers.remove(name);
        }
    }
}

/// A W3C trace context for a request that has none: version 00, random trace and span
/// ids, sampled.
pub fn new_traceparent() -> HeaderValue {
    let trace: u128 = rand::random::<u128>().max(1);
    let span: u64 = rand::random::<u64>().max(1);
    let mut buf = [0u8; 55];
    buf[..3].copy_from_slice(b"00-");
    hex(&trace.to_be_bytes(), &mut buf[3..35]);
    buf[35] = b'-';
    hex(&span.to_be_bytes(), &mut buf[36..52]);
    buf[52..].copy_from_slice(b"-01");
    HeaderValue::from_bytes(&buf).expect("hex digits and dashes are a header value")
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

    #[test]
    fn hop_by_hop_headers_go_and_connection_named_ones_too() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        strip_hop_by_hop(&mut h, false);
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-kept"]);
    }

    #[test]
    fn upgrade_requests_keep_upgrade() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, Upgrade".parse().unwrap());
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h[header::CONNECTION], "upgrade");
        assert_eq!(h[header::UPGRADE], "websocket");
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
