//! HTTP/1 to clients, without hyper's server side. A client connection is one task that
//! reads a request head into its buffer, parses it with `httparse` and writes the backend's
//! request head straight from the parsed fields ([`crate::proxy::write_request_head`]),
//! with no `Request`, `HeaderMap` or per-request allocation of its own; the response head
//! and body go out in one write when the backend sent them together. Bodies stream both
//! ways: a request body is read from the client socket while it is sent (chunked or with
//! its length), and a response body while the client takes it.
//!
//! The same code serves plain connections and TLS ones whose ALPN is `http/1.1` (or none):
//! it is generic over the stream; every response is flushed once written (a TLS stream
//! may hold the last record back until then). A TLS connection's requests get
//! `X-Forwarded-Proto: https` and, for a domain with `--hsts`, `Strict-Transport-Security`.
//!
//! A plain connection that opens with HTTP/2's preface (h2c with prior knowledge) is handed to
//! hyper ([`Outcome::H2`]). An accepted WebSocket (or other) upgrade becomes a tunnel
//! between the two sockets ([`Outcome::Tunnel`]).
//!
//! Rules kept here, as nginx 1.22 keeps them (tests/smuggling.rs compares the two): a head
//! larger than [`MAX_REQUEST_HEAD`] or with more than [`MAX_HEADERS`] fields gets 431; a
//! malformed one, an HTTP/1.1 request without `Host`, more than one `Host` or
//! `Transfer-Encoding`, conflicting `Content-Length`s, `Transfer-Encoding` with
//! `Content-Length` or on HTTP/1.0, a malformed chunked body (as far as it came with the
//! head), or an authority-form target get 400; a `Transfer-Encoding` other than `chunked`
//! gets 501; the connection closes after the answer. The backend gets the body framed as it
//! was parsed here (`content-length` once, or `transfer-encoding: chunked`), whatever the
//! client's `Connection` names. A connection whose request body was not read to its end
//! (the backend answered early) is closed after the response, so no body byte is taken
//! for a request.

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http_body::Body as _;
use hyper::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::body::{ConnState, Guard};
use crate::proxy::{self, Exchange, RequestHead};
use crate::table::{AppPool, BackendRt, Snapshot, MAX_REQUEST_HEAD};
use crate::upstream::{
    decode, Chunk, Framing, ReqBody, Step, UpConn, UpResponse, UpstreamBody, READ_CHUNK,
};

/// Request header fields beyond this many get 431 (hyper's limit).
pub const MAX_HEADERS: usize = 100;
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Response bytes gathered before a write.
const WRITE_BATCH: usize = 64 * 1024;
/// Body pieces at least this large are written from where they are, not copied.
const COPY_LIMIT: usize = 8 * 1024;

/// How a client connection ended.
pub(crate) enum Outcome<S> {
    Closed,
    /// It speaks HTTP/2 with prior knowledge: hyper serves it, replaying these bytes.
    H2(S, Bytes),
    /// A backend accepted an upgrade: the client's bytes after the request head and the
    /// backend connection (with the bytes it sent after its `101`).
    Tunnel(S, Bytes, UpConn),
}

/// A client connection: plain TCP, or TLS.
pub(crate) trait Stream: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send + Sync> Stream for S {}

/// Writes all of `bytes` and flushes them.
async fn send<S: AsyncWrite + Unpin>(stream: &mut S, bytes: &[u8]) -> io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}

/// What a request head asks for, parsed and checked; the backend head is written.
struct Request<'s> {
    head_len: usize,
    keep_alive: bool,
    http10: bool,
    /// A `HEAD` request: answers carry no body.
    head_method: bool,
    /// How the request body ends; `Framing::Done` for none.
    body: Framing,
    action: Action<'s>,
}

enum Action<'s> {
    Reply(StatusCode, Bytes),
    /// An answer of the ingress's own with header fields (redirect, maintenance, ACME).
    Answer(proxy::Answer),
    Unavailable(&'s AppPool),
    Forward(Forward<'s>),
}

struct Forward<'s> {
    pool: &'s AppPool,
    backend: Arc<BackendRt>,
    chunked: bool,
    idempotent: bool,
    upgrade: bool,
    expect_continue: bool,
    /// Over TLS to a domain with `--hsts`: the response gets `Strict-Transport-Security`.
    hsts: bool,
}

/// A request head the ingress refuses; the connection closes after the answer.
struct Reject(StatusCode, &'static str);

/// Serves HTTP/1 requests on `stream` until the client closes, a request asks for the
/// connection to close, an error, or the ingress stopping (after the response in progress).
/// Only a plain connection may turn out to speak h2c.
pub(crate) async fn serve<S: Stream + 'static>(mut stream: S, conn: Arc<ConnState>) -> Outcome<S> {
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let mut out: Vec<u8> = Vec::with_capacity(8 * 1024);
    let mut up_head: Vec<u8> = Vec::with_capacity(1024);
    let mut first = !conn.https;
    loop {
        // A whole request head.
        let mut snap;
        let request = loop {
            if first && !buf.is_empty() && H2_PREFACE.starts_with(&buf[..buf.len().min(24)]) {
                if buf.len() >= H2_PREFACE.len() {
                    return Outcome::H2(stream, buf.freeze());
                }
            } else if !buf.is_empty() {
                up_head.clear();
                // The table of now, not of when the connection last had a request.
                snap = conn.shared.table.load_full();
                match parse(&buf, &snap, &conn, &mut up_head) {
                    Ok(Some(request)) => break request,
                    Ok(None) if buf.len() >= MAX_REQUEST_HEAD => {
                        reject(
                            &mut stream,
                            Reject(
                                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                                "request head too large",
                            ),
                        )
                        .await;
                        return Outcome::Closed;
                    }
                    Ok(None) => {}
                    Err(rejected) => {
                        reject(&mut stream, rejected).await;
                        return Outcome::Closed;
                    }
                }
            }
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(8 * 1024);
            }
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return Outcome::Closed,
                Ok(_) => {}
            }
        };
        first = false;
        buf.advance(request.head_len);
        let mut keep_alive = request.keep_alive;
        let http10 = request.http10;
        let head_method = request.head_method;
        // A body left unread would be taken for the next request: the connection closes
        // unless the body is read to its end.
        let mut framing = request.body;
        let mut guard = Guard::begin(conn.clone());

        let mut fields = Vec::new();
        let (status, response) = match request.action {
            Action::Reply(status, page) => (status, Err(page)),
            Action::Answer(answer) => {
                for (name, value) in &answer.fields {
                    fields.extend_from_slice(name.as_bytes());
                    fields.extend_from_slice(b": ");
                    fields.extend_from_slice(value.as_bytes());
                    fields.extend_from_slice(b"\r\n");
                }
                (answer.status, Err(answer.page))
            }
            Action::Unavailable(pool) => {
                guard.set_no_unit(&pool.no_unit, &pool.histogram);
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Err(pool.unavailable.clone()),
                )
            }
            Action::Forward(f) => {
                let has_body = framing != Framing::Done;
                if f.expect_continue
                    && has_body
                    && send(&mut stream, b"HTTP/1.1 100 Continue\r\n\r\n")
                        .await
                        .is_err()
                {
                    return Outcome::Closed;
                }
                let body = has_body.then(|| {
                    ReqBody::Client(ClientBody {
                        rd: &mut stream,
                        buf: &mut buf,
                        framing: &mut framing,
                    })
                });
                let exchange = Exchange {
                    head: &up_head,
                    chunked: f.chunked,
                    head_method,
                    idempotent: f.idempotent,
                };
                let sent = proxy::send(
                    &conn.shared,
                    &snap,
                    f.pool,
                    &conn,
                    f.backend,
                    exchange,
                    body,
                    &mut guard,
                )
                .await;
                match sent {
                    Err((status, page)) => (status, Err(Bytes::from(page))),
                    Ok(response) => {
                        let status = response.status;
                        if status == StatusCode::SWITCHING_PROTOCOLS {
                            if !f.upgrade {
                                keep_alive = false;
                                let page =
                                    "502 Bad Gateway\n\nThe backend switched protocols unasked.\n";
                                (
                                    StatusCode::BAD_GATEWAY,
                                    Err(Bytes::from_static(page.as_bytes())),
                                )
                            } else {
                                guard.status = status.as_u16();
                                out.clear();
                                write_head(&mut out, status, &response.fields, Framed::Upgrade);
                                if send(&mut stream, &out).await.is_err() {
                                    return Outcome::Closed;
                                }
                                drop(guard);
                                return match response.body.into_conn() {
                                    Some(backend) => Outcome::Tunnel(stream, buf.freeze(), backend),
                                    None => Outcome::Closed,
                                };
                            }
                        } else {
                            (status, Ok((response, f.hsts)))
                        }
                    }
                }
            }
        };
        guard.status = status.as_u16();
        keep_alive &= matches!(framing, Framing::Done | Framing::Length(0));
        keep_alive &= !conn.shared.stopping.load(Ordering::Relaxed);
        out.clear();
        let written = match response {
            Err(page) => {
                write_page_with(&mut out, status, &fields, &page, keep_alive, http10);
                if head_method {
                    // The length of the page a GET would get, and no page.
                    out.truncate(out.len() - page.len());
                }
                send(&mut stream, &out).await.map(|()| true)
            }
            Ok((response, hsts)) => {
                let UpResponse {
                    fields, mut body, ..
                } = response;
                let framed = if head_method
                    || status.is_informational()
                    || status == StatusCode::NO_CONTENT
                    || status == StatusCode::NOT_MODIFIED
                {
                    Framed::NoBody
                } else if body.size_hint().exact().is_some() {
                    Framed::Length
                } else if http10 {
                    keep_alive = false;
                    Framed::Close
                } else {
                    Framed::Chunked
                };
                if hsts {
                    write_head(&mut out, status, &without_hsts(&fields), framed);
                    out.extend_from_slice(b"strict-transport-security: ");
                    out.extend_from_slice(proxy::HSTS.as_bytes());
                    out.extend_from_slice(b"\r\n");
                } else {
                    write_head(&mut out, status, &fields, framed);
                }
                write_connection(&mut out, keep_alive, http10);
                out.extend_from_slice(b"\r\n");
                write_body(&mut stream, &mut out, &mut body, framed == Framed::Chunked).await
            }
        };
        drop(guard);
        match written {
            Ok(true) if keep_alive => {}
            _ => {
                let _ = stream.shutdown().await;
                return Outcome::Closed;
            }
        }
    }
}

/// Parses the request head at the start of `buf` (`None`: not complete yet), routes it and,
/// when it goes to a backend, writes the backend's head into `up_head`.
fn parse<'s>(
    buf: &[u8],
    snap: &'s Snapshot,
    conn: &ConnState,
    up_head: &mut Vec<u8>,
) -> Result<Option<Request<'s>>, Reject> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Reject(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "too many header fields",
            ))
        }
        Err(_) => return Err(Reject(StatusCode::BAD_REQUEST, "malformed request head")),
    };
    let bad = |why| Err(Reject(StatusCode::BAD_REQUEST, why));
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return bad("malformed request head");
    };
    let http10 = version == 0;
    let head_method = method == "HEAD";

    let mut host: Option<&[u8]> = None;
    let mut content_length: Option<u64> = None;
    let mut transfer_encoding: Option<&[u8]> = None;
    let (mut close, mut keep_alive_token, mut upgrade_token) = (false, false, false);
    let (mut upgrade_field, mut expect_continue) = (false, false);
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        let value = h.value;
        match name.len() {
            4 if name.eq_ignore_ascii_case(b"host") => {
                if host.is_some() {
                    return bad("more than one Host");
                }
                host = Some(value);
            }
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                let Some(n) = parse_length(value) else {
                    return bad("invalid Content-Length");
                };
                // The same length twice is one length (RFC 9112 §6.3): forwarded once.
                if content_length.is_some_and(|m| m != n) {
                    return bad("conflicting Content-Length");
                }
                content_length = Some(n);
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                if transfer_encoding.is_some() {
                    return bad("more than one Transfer-Encoding");
                }
                transfer_encoding = Some(value.trim_ascii());
            }
            10 if name.eq_ignore_ascii_case(b"connection") => {
                for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    close |= token.eq_ignore_ascii_case(b"close");
                    keep_alive_token |= token.eq_ignore_ascii_case(b"keep-alive");
                    upgrade_token |= token.eq_ignore_ascii_case(b"upgrade");
                }
            }
            7 if name.eq_ignore_ascii_case(b"upgrade") => upgrade_field = true,
            6 if name.eq_ignore_ascii_case(b"expect") => {
                expect_continue = value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
            }
            _ => {}
        }
    }
    // As nginx: HTTP/1.1 needs a Host; Transfer-Encoding is `chunked` alone or unknown
    // (501), never on HTTP/1.0 nor with Content-Length.
    if host.is_none() && !http10 {
        return bad("HTTP/1.1 request without Host");
    }
    let body = match (transfer_encoding, content_length) {
        (Some(_), _) if http10 => return bad("Transfer-Encoding on HTTP/1.0"),
        (Some(te), _) if !te.eq_ignore_ascii_case(b"chunked") => {
            return Err(Reject(
                StatusCode::NOT_IMPLEMENTED,
                "unknown Transfer-Encoding (only chunked is)",
            ))
        }
        (Some(_), Some(_)) => return bad("Transfer-Encoding with Content-Length"),
        (Some(_), None) => Framing::Chunked(Chunk::Size),
        (None, Some(n)) if n > 0 => Framing::Length(n),
        (None, _) => Framing::Done,
    };
    // A malformed chunked body is refused before anything reaches a backend, as far as
    // it is here already.
    if body != Framing::Done && transfer_encoding.is_some() && !chunks_look_valid(&buf[head_len..])
    {
        return bad("malformed chunked body");
    }
    let keep_alive = !close && (!http10 || keep_alive_token);
    let upgrade = !http10 && upgrade_field && upgrade_token;

    // The target: origin form, absolute form (its authority is the host), or `*`.
    let (target, authority) = if target.starts_with('/') || target == "*" {
        (target, None)
    } else if let Some(rest) = strip_scheme(target) {
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let path = &rest[end..];
        if !path.starts_with('/') && !path.is_empty() {
            return bad("absolute target without a path");
        }
        if end == 0 || rest[..end].contains('@') {
            return bad("absolute target without a valid host");
        }
        (if path.is_empty() { "/" } else { path }, Some(&rest[..end]))
    } else {
        return bad("unsupported request target");
    };
    let route_host = authority.or_else(|| host.and_then(|h| std::str::from_utf8(h).ok()));
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    let answer = proxy::answer_first(&conn.shared, snap, conn.https, route_host, path, target)
        .or_else(|| {
            let (pool, _) = proxy::resolve(snap, route_host, path)?;
            pool.maintenance.is_some().then(|| proxy::maintenance(pool))
        });
    if let Some(answer) = answer {
        return Ok(Some(Request {
            head_len,
            keep_alive,
            http10,
            head_method,
            body,
            action: Action::Answer(answer),
        }));
    }
    let Some((pool, strip)) = proxy::resolve(snap, route_host, path) else {
        let page = proxy::not_found_page(snap, route_host.unwrap_or(""), path);
        return Ok(Some(Request {
            head_len,
            keep_alive,
            http10,
            head_method,
            body,
            action: Action::Reply(StatusCode::NOT_FOUND, Bytes::from(page)),
        }));
    };
    let Some(backend) = pool.pick(None).cloned() else {
        return Ok(Some(Request {
            head_len,
            keep_alive,
            http10,
            head_method,
            body,
            action: Action::Unavailable(pool),
        }));
    };

    let chunked = body != Framing::Done && transfer_encoding.is_some();
    let hsts = conn.https
        && !pool.hsts.is_empty()
        && route_host.is_some_and(|h| pool.hsts.iter().any(|d| *d == proxy::bare_host(h)));
    // The authority of an absolute-form target is the request's host (RFC 9112 §3.2.2).
    let forwarded_host = authority.map(str::as_bytes).or(host);
    proxy::write_request_head(
        up_head,
        &RequestHead {
            method,
            target,
            host: forwarded_host,
            strip: strip.map(|rest_len| (rest_len, &pool.prefix)),
            peer_ip: &conn.peer_ip,
            fallback_host: backend.authority.as_str(),
            upgrade,
            chunked,
            content_length: content_length.filter(|_| !chunked),
            https: conn.https,
        },
        || req.headers.iter().map(|h| (h.name.as_bytes(), h.value)),
    );
    Ok(Some(Request {
        head_len,
        keep_alive,
        http10,
        head_method,
        body,
        action: Action::Forward(Forward {
            pool,
            backend,
            chunked,
            idempotent: matches!(method, "GET" | "HEAD" | "OPTIONS"),
            upgrade,
            expect_continue,
            hsts,
        }),
    }))
}

/// Whether the chunked body at the start of `buffered` is well formed as far as it goes.
fn chunks_look_valid(buffered: &[u8]) -> bool {
    let mut rest = BytesMut::from(buffered);
    let mut framing = Framing::Chunked(Chunk::Size);
    loop {
        match decode(&mut framing, &mut rest) {
            Ok(Step::Data(_)) => {}
            Ok(Step::End | Step::More) => return true,
            Err(_) => return false,
        }
    }
}

fn strip_scheme(target: &str) -> Option<&str> {
    ["http://", "https://"].into_iter().find_map(|scheme| {
        let n = scheme.len();
        let head = target.as_bytes().get(..n)?;
        // ASCII bytes: `n` is a character boundary.
        head.eq_ignore_ascii_case(scheme.as_bytes())
            .then(|| &target[n..])
    })
}

fn parse_length(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// A request body read from a client connection: its read half, the bytes read and not
/// consumed yet (what follows the body stays there), and how far the body has come.
pub(crate) struct ClientBody<'a> {
    pub rd: &'a mut (dyn AsyncRead + Send + Sync + Unpin + 'static),
    pub buf: &'a mut BytesMut,
    pub framing: &'a mut Framing,
}

impl ClientBody<'_> {
    pub(crate) async fn next(&mut self) -> Option<io::Result<Bytes>> {
        loop {
            match decode(self.framing, self.buf) {
                Ok(Step::Data(data)) if data.is_empty() => continue,
                Ok(Step::Data(data)) => return Some(Ok(data)),
                Ok(Step::End) => return None,
                Err(e) => return Some(Err(e)),
                Ok(Step::More) => {
                    if self.buf.capacity() - self.buf.len() < 1024 {
                        self.buf.reserve(READ_CHUNK);
                    }
                    match self.rd.read_buf(self.buf).await {
                        Ok(0) => {
                            return Some(Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "the client closed the connection before the end of the body",
                            )))
                        }
                        Ok(_) => {}
                        Err(e) => return Some(Err(e)),
                    }
                }
            }
        }
    }
}

/// How a response's body is delimited towards the client.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Framed {
    /// None (HEAD, 1xx, 204, 304): the fields are sent as they came.
    NoBody,
    /// The backend's `Content-Length`, among the fields.
    Length,
    Chunked,
    /// By closing the connection (an HTTP/1.0 client, a body of unknown length).
    Close,
    /// A `101`: the fields as they came, then the tunnel.
    Upgrade,
}

/// The status line, the backend's `fields` (`name: value\r\n` lines) and the framing.
fn write_head(out: &mut Vec<u8>, status: StatusCode, fields: &[u8], framed: Framed) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(fields);
    match framed {
        Framed::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framed::Upgrade => out.extend_from_slice(b"\r\n"),
        Framed::NoBody | Framed::Length | Framed::Close => {}
    }
}

fn write_connection(out: &mut Vec<u8>, keep_alive: bool, http10: bool) {
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if http10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
}

/// A page the ingress answers itself (404, 502, 503, 504).
fn write_page(out: &mut Vec<u8>, status: StatusCode, page: &[u8], keep_alive: bool, http10: bool) {
    write_page_with(out, status, b"", page, keep_alive, http10);
}

/// [`write_page`] with header `fields` (`name: value\r\n` lines).
fn write_page_with(
    out: &mut Vec<u8>,
    status: StatusCode,
    fields: &[u8],
    page: &[u8],
    keep_alive: bool,
    http10: bool,
) {
    write_head(out, status, fields, Framed::Length);
    out.extend_from_slice(b"date: ");
    out.extend_from_slice(httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
    out.extend_from_slice(b"\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ");
    out.extend_from_slice(page.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    write_connection(out, keep_alive, http10);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(page);
}

async fn reject<S: Stream>(stream: &mut S, Reject(status, why): Reject) {
    let mut out = Vec::with_capacity(256);
    write_page(
        &mut out,
        status,
        format!("{} {why}\n", status).as_bytes(),
        false,
        false,
    );
    let _ = send(stream, &out).await;
    let _ = stream.shutdown().await;
}

/// The backend's response `fields` without its own `Strict-Transport-Security`, which the
/// ingress's replaces.
fn without_hsts(fields: &[u8]) -> Vec<u8> {
    let mut kept = Vec::with_capacity(fields.len());
    for line in fields.split_inclusive(|&b| b == b'\n') {
        let name = line.split(|&b| b == b':').next().unwrap_or(b"");
        if !name
            .trim_ascii()
            .eq_ignore_ascii_case(b"strict-transport-security")
        {
            kept.extend_from_slice(line);
        }
    }
    kept
}

/// Writes `out` (the head) and the body after it, gathering what the backend has already
/// sent into one write and writing whenever the body has nothing more ready. `Ok(false)`
/// when the backend's body failed midway: the client got a truncated response and the
/// connection must close.
async fn write_body<S: Stream>(
    stream: &mut S,
    out: &mut Vec<u8>,
    body: &mut UpstreamBody,
    chunked: bool,
) -> io::Result<bool> {
    loop {
        let next = match poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx))).await {
            Poll::Ready(next) => next,
            Poll::Pending => {
                if !out.is_empty() {
                    stream.write_all(out).await?;
                    out.clear();
                }
                // What is written reaches the client while the backend is slow.
                stream.flush().await?;
                poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
            }
        };
        let data = match next {
            None => {
                if chunked {
                    out.extend_from_slice(b"0\r\n\r\n");
                }
                send(stream, out).await?;
                out.clear();
                return Ok(true);
            }
            Some(Err(_)) => {
                send(stream, out).await?;
                out.clear();
                return Ok(false);
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if !data.is_empty() => data,
                _ => continue,
            },
        };
        if chunked {
            out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        }
        if data.len() >= COPY_LIMIT {
            let mut both = Buf::chain(&out[..], data);
            stream.write_all_buf(&mut both).await?;
            out.clear();
        } else {
            out.extend_from_slice(&data);
        }
        if chunked {
            out.extend_from_slice(b"\r\n");
        }
        if out.len() >= WRITE_BATCH {
            stream.write_all(out).await?;
            out.clear();
        }
    }
}

/// Copies both ways between an upgraded client connection and its backend, starting with
/// the bytes each side sent before the tunnel began.
pub(crate) async fn tunnel<C: AsyncRead + AsyncWrite + Unpin>(
    mut client: C,
    from_client: Bytes,
    mut backend: UpConn,
) {
    backend.set_nodelay();
    if !backend.buf.is_empty() && send(&mut client, &backend.buf).await.is_err() {
        return;
    }
    if !from_client.is_empty() && backend.stream.write_all(&from_client).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut backend.stream).await;
}

/// A connection whose first bytes were already read: they are read again first.
pub(crate) struct Rewind<S> {
    prefix: Bytes,
    stream: S,
}

impl<S> Rewind<S> {
    pub(crate) fn new(stream: S, prefix: Bytes) -> Rewind<S> {
        Rewind { prefix, stream }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::without_hsts;

    #[test]
    fn the_backend_hsts_field_goes_and_the_others_stay() {
        let fields = b"content-type: text/plain\r\nStrict-Transport-Security: max-age=1\r\n\
                       x-strict-transport-security: kept\r\ncontent-length: 2\r\n";
        assert_eq!(
            String::from_utf8(without_hsts(fields)).unwrap(),
            "content-type: text/plain\r\nx-strict-transport-security: kept\r\n\
             content-length: 2\r\n"
        );
    }
}
