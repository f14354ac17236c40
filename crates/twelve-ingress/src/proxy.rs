//! One request: find the app (host label, else path prefix), pick a ready backend, rewrite
//! the head (hop-by-hop headers, `X-Forwarded-*`, `traceparent`) and stream both bodies.
//! HTTP/2 requests come here from hyper; HTTP/1 ones from [`crate::h1`], which shares the
//! head rewriting ([`write_request_head`]) and the exchange with the backend ([`send`]).

use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use hyper::body::{Body as _, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use crate::body::{ConnState, Guard, ResBody};
use crate::server::Shared;
use crate::table::{AppPool, BackendRt, Snapshot};
use crate::upstream::{self, Outgoing, ReqBody, UpResponse};

pub(crate) async fn handle(
    conn: Arc<ConnState>,
    req: Request<Incoming>,
) -> Result<Response<ResBody>, Infallible> {
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
    let path = req.uri().path();
    let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    if let Some(answer) = answer_first(shared, snap, conn.https, host, path, target) {
        return answer.into_response();
    }
    match resolve(snap, host, path) {
        Some((pool, _)) if pool.maintenance.is_some() => maintenance(pool).into_response(),
        Some((pool, strip)) => {
            let hsts = conn.https
                && !pool.hsts.is_empty()
                && host.is_some_and(|h| pool.hsts.iter().any(|d| *d == bare_host(h)));
            let mut response = forward(shared, snap, pool, conn, req, strip, guard).await;
            if hsts {
                response.headers_mut().insert(
                    header::STRICT_TRANSPORT_SECURITY,
                    HeaderValue::from_static(HSTS),
                );
            }
            response
        }
        None => text(
            StatusCode::NOT_FOUND,
            not_found_page(snap, host.unwrap_or(""), path),
        ),
    }
}

/// `Strict-Transport-Security` for domains with `--hsts`: a year.
pub(crate) const HSTS: &str = "max-age=31536000";
/// Where ACME CAs fetch HTTP-01 answers.
pub(crate) const ACME_PREFIX: &str = "/.well-known/acme-challenge/";

/// An answer the ingress gives itself: status, extra header fields, page.
pub(crate) struct Answer {
    pub status: StatusCode,
    pub fields: Vec<(&'static str, String)>,
    pub page: Bytes,
}

impl Answer {
    fn into_response(self) -> Response<ResBody> {
        let mut response = text(self.status, self.page);
        for (name, value) in self.fields {
            if let Ok(value) = HeaderValue::try_from(value) {
                response.headers_mut().insert(name, value);
            }
        }
        response
    }
}

/// 503 with `Retry-After` for an app in maintenance mode.
pub(crate) fn maintenance(pool: &AppPool) -> Answer {
    Answer {
        status: StatusCode::SERVICE_UNAVAILABLE,
        fields: vec![("retry-after", "60".to_string())],
        page: pool.maintenance.clone().unwrap_or_default(),
    }
}

/// The host without its port, lowercased.
pub(crate) fn bare_host(host: &str) -> Cow<'_, str> {
    let host = match host.rsplit_once(':') {
        Some((h, port)) if !host.starts_with('[') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

/// The app a user's domain names.
fn domain_pool<'s>(snap: &'s Snapshot, host: &str) -> Option<&'s Arc<AppPool>> {
    if snap.domains.is_empty() && snap.wildcards.is_empty() {
        return None;
    }
    let host = bare_host(host);
    snap.domains.get(&*host).or_else(|| {
        let (_, suffix) = host.split_once('.')?;
        snap.wildcards.get(suffix)
    })
}

/// What the ingress answers before routing: an ACME HTTP-01 answer, or, on plain HTTP, a
/// 308 to HTTPS for a domain with a certificate.
pub(crate) fn answer_first(
    shared: &Shared,
    snap: &Snapshot,
    https: bool,
    host: Option<&str>,
    path: &str,
    target: &str,
) -> Option<Answer> {
    if https {
        return None;
    }
    if let Some(token) = path.strip_prefix(ACME_PREFIX) {
        let key_authorization = snap.routes.acme_challenges.get(token)?;
        return Some(Answer {
            status: StatusCode::OK,
            fields: vec![],
            page: Bytes::from(key_authorization.clone()),
        });
    }
    let port = match shared.https_port.load(std::sync::atomic::Ordering::Relaxed) {
        0 => return None,
        port => port,
    };
    let host = host?;
    domain_pool(snap, host)?;
    let bare = bare_host(host);
    if !snap.certs.covers(&bare) {
        return None;
    }
    let location = if port == 443 {
        format!("https://{bare}{target}")
    } else {
        format!("https://{bare}:{port}{target}")
    };
    Some(Answer {
        status: StatusCode::PERMANENT_REDIRECT,
        page: Bytes::from(format!("308 Permanent Redirect\n\n{location}\n")),
        fields: vec![("location", location)],
    })
}

/// The app a request goes to: the first label of its host, else the first segment of its
/// path, with then the length of the path after `/<app>` (to strip).
pub(crate) fn resolve<'s>(
    snap: &'s Snapshot,
    host: Option<&str>,
    path: &str,
) -> Option<(&'s AppPool, Option<usize>)> {
    if let Some(pool) = host.and_then(|h| domain_pool(snap, h)) {
        return Some((&**pool, None));
    }
    if let Some(pool) = host.and_then(host_label).and_then(|l| snap.apps.get(&*l)) {
        return Some((&**pool, None));
    }
    let segment = path[1.min(path.len())..].split('/').next().unwrap_or("");
    let pool = snap.apps.get(segment)?;
    Some((&**pool, Some(path.len() - 1 - segment.len())))
}

/// The 404 page: the app is unknown, here are the known ones.
pub(crate) fn not_found_page(snap: &Snapshot, host: &str, path: &str) -> String {
    let mut known: Vec<&str> = snap.apps.keys().map(String::as_str).collect();
    known.sort_unstable();
    let known = if known.is_empty() {
        "none".to_string()
    } else {
        known.join(", ")
    };
    format!(
        "404 Not Found\n\nNo app is routed for host {host:?}, path {path:?}.\nApps: {known}\n\
         Use http://<app>.localhost:<port>/ or http://localhost:<port>/<app>/\n"
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
    let Some(backend) = pool.pick(None).cloned() else {
        guard.set_no_unit(&pool.no_unit, &pool.histogram);
        return text(StatusCode::SERVICE_UNAVAILABLE, pool.unavailable.clone());
    };
    // Upgrades are HTTP/1.1's: over TLS (hyper's HTTP/1 server) they come here; plain
    // HTTP/1 ones are `crate::h1`'s.
    let on_upgrade = asks_upgrade(&req, conn).then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let bodyless = body.is_end_stream();
    let chunked = !bodyless
        && (parts.headers.contains_key(header::TRANSFER_ENCODING)
            || !parts.headers.contains_key(header::CONTENT_LENGTH));
    let mut head = Vec::with_capacity(512);
    write_parts_head(
        &mut head,
        &parts,
        strip.map(|rest_len| (rest_len, &pool.prefix)),
        &conn.peer_ip,
        backend.authority.as_str(),
        on_upgrade.is_some(),
        chunked,
        conn.https,
    );
    let exchange = Exchange {
        head: &head,
        chunked,
        head_method: parts.method == Method::HEAD,
        idempotent: matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS),
    };
    let body = (!bodyless).then_some(ReqBody::Hyper(body));
    match send(shared, snap, pool, conn, backend, exchange, body, guard).await {
        Ok(response) if response.status == StatusCode::SWITCHING_PROTOCOLS => {
            let Some(on_upgrade) = on_upgrade else {
                return text(
                    StatusCode::BAD_GATEWAY,
                    "502 Bad Gateway\n\nThe backend switched protocols unasked.\n",
                );
            };
            // hyper answers the 101, then hands over the client's connection: the two
            // are tunnelled as `crate::h1` does.
            let (head, body) = response.into_http().into_parts();
            if let Some(backend) = body.into_conn() {
                tokio::spawn(async move {
                    if let Ok(upgraded) = on_upgrade.await {
                        let client = hyper_util::rt::TokioIo::new(upgraded);
                        crate::h1::tunnel(client, Bytes::new(), backend).await;
                    }
                });
            }
            Response::from_parts(head, ResBody::full(Bytes::new()))
        }
        Ok(response) => response.into_http().map(ResBody::upstream),
        Err((status, page)) => text(status, page),
    }
}

/// An HTTP/1.1 request asking to switch protocols (`Connection: upgrade` and `Upgrade`).
fn asks_upgrade(req: &Request<Incoming>, conn: &ConnState) -> bool {
    !conn.is_h2()
        && req.version() == hyper::Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// What [`send`] sends besides the body.
pub(crate) struct Exchange<'a> {
    pub head: &'a [u8],
    pub chunked: bool,
    pub head_method: bool,
    pub idempotent: bool,
}

/// Sends a request to `backend`, one of `pool`'s, and returns the response once its head
/// is read, or the status and page to answer with when there is none. A request without a
/// body can be sent again on another ready backend: when its backend refused the
/// connection (it just stopped), or, for GET/HEAD/OPTIONS, when a connection failed under
/// it.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn send(
    shared: &Shared,
    snap: &Snapshot,
    pool: &AppPool,
    conn: &ConnState,
    mut backend: Arc<BackendRt>,
    exchange: Exchange<'_>,
    body: Option<ReqBody<'_>>,
    guard: &mut Guard,
) -> Result<UpResponse, (StatusCode, String)> {
    let bodyless = body.is_none();
    let outgoing = |body| Outgoing {
        head: exchange.head,
        body,
        chunked: exchange.chunked,
        head_method: exchange.head_method,
        idempotent: exchange.idempotent,
    };
    guard.set_backend(backend.clone(), &pool.histogram);
    let deadline = tokio::time::Instant::now() + snap.request_timeout;
    // A macro, not a closure: the future borrows the backend it is given.
    macro_rules! send {
        ($backend:expr, $body:expr) => {{
            let b: &BackendRt = $backend;
            let to = upstream::Target {
                addr: b.addr,
                socket: b.socket.as_ref(),
                tcp_owner: b.tcp_owner.as_ref(),
            };
            let exchange = upstream::request(&conn.pool, to, snap.connect_timeout, outgoing($body));
            tokio::time::timeout_at(deadline, exchange).await
        }};
    }
    let mut result = send!(&backend, body);

    if let (Ok(Err(e)), true) = (&result, bodyless && pool.ready.len() > 1) {
        // The newest table: the failed backend may have been replaced meanwhile.
        let latest = shared.table.load();
        let other = latest
            .apps
            .get(&pool.name)
            .and_then(|p| p.pick(Some(backend.addr)))
            .cloned();
        if let (true, Some(next)) = (e.is_connect() || exchange.idempotent, other) {
            backend = next;
            guard.set_backend(backend.clone(), &pool.histogram);
            result = send!(&backend, None);
        }
    }

    match result {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(upstream::UpError::Client(e))) => Err((
            StatusCode::BAD_REQUEST,
            format!("400 Bad Request\n\nThe request body was malformed or cut short: {e}\n"),
        )),
        Ok(Err(e)) => {
            let cause = if e.is_connect() {
                "could not be reached".to_string()
            } else {
                format!("failed: {e}")
            };
            Err((
                StatusCode::BAD_GATEWAY,
                format!("502 Bad Gateway\n\n{} {cause}\n", backend.unit),
            ))
        }
        Err(_) => Err((
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "504 Gateway Timeout\n\n{} did not answer within {} ms\n",
                backend.unit,
                snap.request_timeout.as_millis()
            ),
        )),
    }
}

/// [`write_request_head`] for a request hyper parsed (HTTP/2: the host may be the
/// `:authority`).
#[allow(clippy::too_many_arguments)]
fn write_parts_head(
    out: &mut Vec<u8>,
    parts: &hyper::http::request::Parts,
    strip: Option<(usize, &HeaderValue)>,
    peer_ip: &HeaderValue,
    fallback_host: &str,
    upgrade: bool,
    chunked: bool,
    https: bool,
) {
    let host = parts
        .headers
        .get(header::HOST)
        .map(HeaderValue::as_bytes)
        .or_else(|| parts.uri.authority().map(|a| a.as_str().as_bytes()));
    // hyper checked that the body matches its `Content-Length`.
    let content_length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.trim().parse().ok())
        .filter(|_| !chunked);
    let request = RequestHead {
        method: parts.method.as_str(),
        target: parts.uri.path_and_query().map_or("/", |pq| pq.as_str()),
        host,
        strip,
        peer_ip,
        fallback_host,
        upgrade,
        chunked,
        content_length,
        https,
    };
    let fields = || {
        parts
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()))
    };
    write_request_head(out, &request, fields);
}

/// A request as the backend gets it, before its header fields.
pub(crate) struct RequestHead<'a> {
    pub method: &'a str,
    /// The origin-form target as the client sent it: path and query.
    pub target: &'a str,
    /// `Host`, else the authority of the target.
    pub host: Option<&'a [u8]>,
    /// The length of the path after the `/<app>` prefix, and the prefix, when the request
    /// was routed by path.
    pub strip: Option<(usize, &'a HeaderValue)>,
    pub peer_ip: &'a HeaderValue,
    /// The `Host` to send when the client sent none (HTTP/1.0): the backend's address.
    pub fallback_host: &'a str,
    pub upgrade: bool,
    /// The body goes chunked: the head says `transfer-encoding: chunked`.
    pub chunked: bool,
    /// The client came over TLS: `X-Forwarded-Proto: https`.
    pub https: bool,
    /// The body's length when it goes with one (never with `chunked`): the head says
    /// `content-length` once, whatever the client's fields say.
    pub content_length: Option<u64>,
}

/// Writes the request head for the backend: origin-form target (without the `/<app>`
/// prefix when `strip` says so), no hop-by-hop headers, `X-Forwarded-*` set by the
/// ingress, a `traceparent` when the client sent none, `Host` always. The body's framing is
/// the ingress's own: `content-length` or `transfer-encoding: chunked` as the request was
/// parsed, never the client's fields, so the backend reads the body exactly as the ingress
/// did (a `Connection` option cannot remove it). `headers` are the client's fields (an
/// iterator made twice), names in any case.
pub(crate) fn write_request_head<'h, F, I>(out: &mut Vec<u8>, req: &RequestHead<'_>, headers: F)
where
    F: Fn() -> I,
    I: Iterator<Item = (&'h [u8], &'h [u8])>,
{
    out.extend_from_slice(req.method.as_bytes());
    out.push(b' ');
    match req.strip {
        None => out.extend_from_slice(req.target.as_bytes()),
        Some((rest_len, _)) => {
            let (path, query) = match req.target.split_once('?') {
                Some((path, query)) => (path, Some(query)),
                None => (req.target, None),
            };
            let rest = &path[path.len() - rest_len..];
            out.extend_from_slice(if rest.is_empty() { "/" } else { rest }.as_bytes());
            if let Some(q) = query {
                out.push(b'?');
                out.extend_from_slice(q.as_bytes());
            }
        }
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");

    let named = connection_named(headers());
    let mut field = |name: &[u8], value: &[u8]| {
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    };
    field(b"host", req.host.unwrap_or(req.fallback_host.as_bytes()));
    let mut forwarded_for: Option<Vec<u8>> = None;
    let mut traceparent = false;
    for (name, value) in headers() {
        if name.eq_ignore_ascii_case(b"x-forwarded-for") {
            let list = forwarded_for.get_or_insert_with(Vec::new);
            list.extend_from_slice(value);
            list.extend_from_slice(b", ");
            continue;
        }
        traceparent |= name.eq_ignore_ascii_case(b"traceparent");
        let dropped = (is_hop_by_hop(name)
            && !(req.upgrade && name.eq_ignore_ascii_case(b"upgrade")))
            || name.eq_ignore_ascii_case(b"host")
            || name.eq_ignore_ascii_case(b"x-forwarded-proto")
            || name.eq_ignore_ascii_case(b"x-forwarded-prefix")
            || (req.host.is_some() && name.eq_ignore_ascii_case(b"x-forwarded-host"))
            || name.eq_ignore_ascii_case(b"content-length")
            || underscored_lookalike(name)
            || named.iter().any(|n| n.eq_ignore_ascii_case(name));
        if dropped {
            continue;
        }
        field(name, value);
    }
    match forwarded_for {
        None => field(b"x-forwarded-for", req.peer_ip.as_bytes()),
        Some(mut list) => {
            list.extend_from_slice(req.peer_ip.as_bytes());
            field(b"x-forwarded-for", &list);
        }
    }
    if let Some(host) = req.host {
        field(b"x-forwarded-host", host);
    }
    field(
        b"x-forwarded-proto",
        if req.https { b"https" } else { b"http" },
    );
    if let Some((_, prefix)) = req.strip {
        field(b"x-forwarded-prefix", prefix.as_bytes());
    }
    if !traceparent {
        field(b"traceparent", &traceparent_bytes());
    }
    if req.upgrade {
        field(b"connection", b"upgrade");
    }
    if req.chunked {
        field(b"transfer-encoding", b"chunked");
    } else if let Some(n) = req.content_length {
        let mut digits = [0u8; 20];
        field(b"content-length", decimal(n, &mut digits));
    }
    out.extend_from_slice(b"\r\n");
}

/// A field name with `_` that reads, with `-` for `_`, as a field the ingress frames,
/// routes or sets itself (`Transfer_Encoding`, `X_Forwarded_For`...): CGI and WSGI servers
/// map both spellings to the same variable, so the client's copy could stand for the
/// ingress's. Such fields are not forwarded (nginx drops every name with `_`).
fn underscored_lookalike(name: &[u8]) -> bool {
    if !name.contains(&b'_') {
        return false;
    }
    const GUARDED: [&[u8]; 8] = [
        b"content-length",
        b"transfer-encoding",
        b"host",
        b"connection",
        b"x-forwarded-for",
        b"x-forwarded-host",
        b"x-forwarded-proto",
        b"x-forwarded-prefix",
    ];
    GUARDED.iter().any(|g| {
        g.len() == name.len()
            && g.iter().zip(name).all(|(&g, &n)| {
                let n = if n == b'_' {
                    b'-'
                } else {
                    n.to_ascii_lowercase()
                };
                g == n
            })
    })
}

/// `n` in decimal digits, written at the end of `buf`.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// Header names the `Connection` header lists (besides `close`, `keep-alive`, `upgrade`),
/// without the fields that frame the message or name its host (`Content-Length`,
/// `Transfer-Encoding`, `Host`): the ingress writes those itself, and a client naming them
/// must not make a backend read the body as another request.
fn connection_named<'h>(headers: impl Iterator<Item = (&'h [u8], &'h [u8])>) -> Vec<&'h [u8]> {
    let mut named = Vec::new();
    for (name, value) in headers {
        if !name.eq_ignore_ascii_case(b"connection") {
            continue;
        }
        for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            const KEPT: [&[u8]; 7] = [
                b"close",
                b"keep-alive",
                b"upgrade",
                b"",
                b"content-length",
                b"transfer-encoding",
                b"host",
            ];
            if KEPT.iter().any(|t| token.eq_ignore_ascii_case(t)) {
                continue;
            }
            named.push(token);
        }
    }
    named
}

/// Hop-by-hop fields: they describe one connection and are not forwarded (RFC 9110 §7.6.1).
pub(crate) fn is_hop_by_hop(name: &[u8]) -> bool {
    const NAMES: [&[u8]; 9] = [
        b"connection",
        b"upgrade",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"proxy-authenticate",
        b"proxy-authorization",
    ];
    NAMES.iter().any(|n| n.eq_ignore_ascii_case(name))
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
        write_parts_head(
            &mut out,
            &parts,
            strip.map(|n| (n, &prefix)),
            &peer,
            "127.0.0.1:9",
            upgrade,
            chunked,
            false,
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
    fn connection_never_removes_framing_nor_host() {
        let req = Request::post("/a")
            .header("host", "web.localhost")
            .header(
                "connection",
                "content-length, transfer-encoding, host, x-hop",
            )
            .header("content-length", "12")
            .header("content-length", "12")
            .header("x-hop", "1")
            .body(())
            .unwrap();
        let head = head_for(req, None, false);
        assert!(
            head.starts_with("POST /a HTTP/1.1\r\nhost: web.localhost\r\n"),
            "{head}"
        );
        assert_eq!(head.matches("content-length: 12\r\n").count(), 1, "{head}");
        assert!(!head.contains("x-hop"), "{head}");
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
