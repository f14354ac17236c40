//! HTTP/1.1 to the backends, without a client library: the request head is written by
//! [`crate::proxy`] into one buffer, the response head is parsed with `httparse`, and the
//! response body is read straight from the backend socket by the task serving the client
//! connection. No task, channel or lock stands between the two sockets of a request (hyper's
//! client spends one task per backend connection and a channel hop per request and body
//! chunk), and each worker thread keeps its own pool of idle keep-alive connections.
//!
//! A backend that closes every connection (gunicorn's sync workers) costs one connect per
//! request: the socket is made non-blocking at creation and the request head is sent right
//! after `connect`, which on loopback has usually completed the handshake already, so the
//! proxy does not wait for writability nor ask for `SO_ERROR`. A backend that also listens
//! on a Unix socket (twelve binds one for gunicorn units) is reached there: a Unix connect
//! is a fraction of a loopback TCP one (no handshake through the network stack, no port,
//! no TIME-WAIT), which is most of the proxy's cost per request for such a backend. When
//! the socket cannot be reached (gone, refused, its backlog full) the request goes over TCP.

use std::collections::HashMap;
use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Response, StatusCode};
use socket2::{Domain, Socket, Type};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use crate::table::POOL_IDLE_TIMEOUT;
use crate::trust::{TcpBackend, UnixBackend};

/// Response heads larger than this are a bad gateway.
const MAX_RESPONSE_HEAD: usize = 256 * 1024;
/// Response headers beyond this many are a bad gateway (hyper's limit is 100).
const MAX_RESPONSE_HEADERS: usize = 128;
/// Idle connections kept per backend and worker.
const MAX_IDLE_PER_BACKEND: usize = 128;
/// The read buffer grows by this much when it is full.
pub(crate) const READ_CHUNK: usize = 16 * 1024;

/// A connection to a backend: TCP, or the Unix socket the backend also listens on.
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Stream::Tcp(s) => s.poll_read_ready(cx),
            Stream::Unix(s) => s.poll_read_ready(cx),
        }
    }

    async fn writable(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.writable().await,
            Stream::Unix(s) => s.writable().await,
        }
    }

    fn take_error(&self) -> io::Result<Option<io::Error>> {
        match self {
            Stream::Tcp(s) => s.take_error(),
            Stream::Unix(s) => s.take_error(),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// One connection to a backend with the bytes read from it and not consumed yet.
pub(crate) struct UpConn {
    pub stream: Stream,
    pub buf: BytesMut,
    /// `TCP_NODELAY` is set. A request head goes in one write and finds nothing unacknowledged
    /// in front of it, so Nagle's algorithm only matters from the first body chunk on.
    nodelay: bool,
}

impl UpConn {
    fn new(stream: Stream) -> UpConn {
        UpConn {
            stream,
            buf: BytesMut::with_capacity(8 * 1024),
            nodelay: false,
        }
    }

    /// Sends small writes at once (bodies, tunnels). A Unix socket always does.
    pub(crate) fn set_nodelay(&mut self) {
        if let (false, Stream::Tcp(s)) = (self.nodelay, &self.stream) {
            self.nodelay = s.set_nodelay(true).is_ok();
        }
    }

    /// Closes a connection that cannot carry another request, once its response was read
    /// whole: with a reset, which spares the backend's TIME-WAIT and the FIN and ACK each way.
    fn close_after_response(self) {
        if let Stream::Tcp(s) = &self.stream {
            let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
        }
    }

    /// Whether an idle connection has nothing to read: no early close, reset or stray
    /// byte from its backend. Reads the readiness the event loop already recorded (no
    /// system call).
    fn is_quiet(&self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        self.stream.poll_read_ready(&mut cx).is_pending()
    }
}

struct Idle {
    conn: UpConn,
    since: Instant,
}

/// Idle keep-alive connections of one worker thread, by backend address.
#[derive(Default)]
pub(crate) struct Pool {
    idle: Mutex<HashMap<SocketAddr, Vec<Idle>>>,
}

impl Pool {
    fn checkout(&self, addr: SocketAddr) -> Option<UpConn> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(&addr)?;
        // Most recent first: the least likely to have been closed by the backend.
        while let Some(entry) = list.pop() {
            if entry.since.elapsed() < POOL_IDLE_TIMEOUT && entry.conn.is_quiet() {
                return Some(entry.conn);
            }
        }
        None
    }

    fn checkin(&self, addr: SocketAddr, conn: UpConn) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry(addr).or_default();
        if list.len() >= MAX_IDLE_PER_BACKEND {
            list.remove(0);
        }
        list.push(Idle {
            conn,
            since: Instant::now(),
        });
    }

    /// Closes the connections idle for longer than [`POOL_IDLE_TIMEOUT`] or closed by
    /// their backend.
    pub(crate) fn sweep(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|_, list| {
            list.retain(|e| e.since.elapsed() < POOL_IDLE_TIMEOUT && e.conn.is_quiet());
            !list.is_empty()
        });
    }

    /// Sweeps every half idle timeout, for as long as the runtime runs.
    pub(crate) async fn sweep_forever(self: Arc<Pool>) {
        loop {
            tokio::time::sleep(POOL_IDLE_TIMEOUT / 2).await;
            self.sweep();
        }
    }

    #[cfg(test)]
    fn idle_count(&self, addr: SocketAddr) -> usize {
        let idle = self.idle.lock().unwrap();
        idle.get(&addr).map_or(0, Vec::len)
    }
}

#[derive(Debug)]
pub(crate) enum UpError {
    /// No connection: refused, unreachable or timed out.
    Connect(io::Error),
    /// The exchange failed after connecting.
    Failed(String),
    /// The client's request body was malformed or ended early: the client's fault.
    Client(String),
}

impl UpError {
    pub(crate) fn is_connect(&self) -> bool {
        matches!(self, UpError::Connect(_))
    }
}

impl std::fmt::Display for UpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpError::Connect(e) => write!(f, "connect: {e}"),
            UpError::Failed(e) | UpError::Client(e) => f.write_str(e),
        }
    }
}

/// What one request sends.
pub(crate) struct Outgoing<'a> {
    /// The whole request head, ending with the empty line.
    pub head: &'a [u8],
    /// The body to stream after the head, `None` for a request without one.
    pub body: Option<ReqBody<'a>>,
    /// Whether the body goes chunked (else the head carries its `Content-Length`).
    pub chunked: bool,
    /// A `HEAD` request: the response has no body whatever its head says.
    pub head_method: bool,
    /// Safe to send again when a kept-alive connection turns out closed.
    pub idempotent: bool,
}

/// Where a backend listens: its TCP address, and the Unix socket it may also listen on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target<'a> {
    pub addr: SocketAddr,
    pub socket: Option<&'a UnixBackend>,
    /// The uid the TCP listener must have, when the route names one.
    pub tcp_owner: Option<&'a TcpBackend>,
}

/// Sends one request to `to` on an idle connection of `pool` or a new one, and returns
/// the response once its head is read; its body streams from the socket.
pub(crate) async fn request(
    pool: &Arc<Pool>,
    to: Target<'_>,
    connect_timeout: Duration,
    mut out: Outgoing<'_>,
) -> Result<UpResponse, UpError> {
    let addr = to.addr;
    let (mut conn, mut reused, mut sent) = match pool.checkout(addr) {
        Some(conn) => (conn, true, 0),
        None => {
            let (conn, sent) = connect(to, connect_timeout, out.head).await?;
            (conn, false, sent)
        }
    };
    loop {
        match roundtrip(&mut conn, &out.head[sent..], &mut out).await {
            Ok(head) => return Ok(head.into_response(conn, pool, addr)),
            // A kept-alive connection the backend closed meanwhile: once more on a new one.
            Err(e) if reused && e.nothing_received && out.body.is_none() && out.idempotent => {
                (conn, sent) = connect(to, connect_timeout, out.head).await?;
                reused = false;
            }
            Err(e) if e.client => return Err(UpError::Client(e.message)),
            Err(e) => return Err(UpError::Failed(e.message)),
        }
    }
}

/// Opens a connection, on the Unix socket when there is one that answers and is the app's
/// own ([`crate::trust`]), and sends as much of `head` as the socket takes at once.
async fn connect(
    to: Target<'_>,
    timeout: Duration,
    head: &[u8],
) -> Result<(UpConn, usize), UpError> {
    if let Some(unix) = to.socket.filter(|u| u.worth_trying()) {
        match connect_unix(unix, head) {
            Ok(Some(connected)) => return Ok(connected),
            Ok(None) => {}
            Err(why) => unix.refuse(&why, to.addr),
        }
    }
    if let Some(owner) = to.tcp_owner {
        owner.check(to.addr).map_err(|why| {
            UpError::Connect(io::Error::new(io::ErrorKind::PermissionDenied, why))
        })?;
    }
    connect_tcp(to.addr, timeout, head).await
}

/// A Unix stream connect completes or fails at once (a full backlog says `EAGAIN` on a
/// non-blocking socket rather than waiting): `Ok(None)` sends the caller to TCP, and so
/// does `Err`, which says why the server on the socket is not trusted. Nothing is sent
/// before the server's credentials are checked.
fn connect_unix(unix: &UnixBackend, head: &[u8]) -> Result<Option<(UpConn, usize)>, String> {
    let Ok(socket) = Socket::new(Domain::UNIX, Type::STREAM.nonblocking(), None) else {
        return Ok(None);
    };
    let Ok(addr) = socket2::SockAddr::unix(&unix.path) else {
        return Ok(None);
    };
    if socket.connect(&addr).is_err() {
        return Ok(None);
    }
    let Ok(stream) = UnixStream::from_std(std::os::unix::net::UnixStream::from(socket)) else {
        return Ok(None);
    };
    let peer = stream
        .peer_cred()
        .map_err(|e| format!("its server's credentials cannot be read: {e}"))?;
    unix.check(peer.uid())?;
    let sent = match stream.try_write(head) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
        Err(_) => return Ok(None),
    };
    Ok(Some((UpConn::new(Stream::Unix(stream)), sent)))
}

async fn connect_tcp(
    addr: SocketAddr,
    timeout: Duration,
    head: &[u8],
) -> Result<(UpConn, usize), UpError> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM.nonblocking(), None)
        .map_err(UpError::Connect)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(UpError::Connect(e)),
    }
    // Sending on a socket still connecting says EAGAIN; a refused one says so.
    let sent = match socket.send(head) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
        Err(e) => return Err(UpError::Connect(e)),
    };
    let stream = Stream::Tcp(TcpStream::from_std(socket.into()).map_err(UpError::Connect)?);
    if sent == 0 {
        match tokio::time::timeout(timeout, stream.writable()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(UpError::Connect(e)),
            Err(_) => {
                return Err(UpError::Connect(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connect timed out",
                )))
            }
        }
        if let Some(e) = stream.take_error().map_err(UpError::Connect)? {
            return Err(UpError::Connect(e));
        }
    }
    Ok((UpConn::new(stream), sent))
}

struct RtError {
    message: String,
    /// Not a byte came back: the backend may never have seen the request.
    nothing_received: bool,
    /// The client's body failed (malformed, cut short), not the backend.
    client: bool,
}

fn rt_error(what: &str, e: impl std::fmt::Display, nothing_received: bool) -> RtError {
    RtError {
        message: format!("{what}: {e}"),
        nothing_received,
        client: false,
    }
}

/// Writes the rest of the head and the body while reading the response head. A backend
/// may answer before it has read the whole body (413, say): the rest is not sent and the
/// connection is not kept.
async fn roundtrip(
    conn: &mut UpConn,
    head: &[u8],
    out: &mut Outgoing<'_>,
) -> Result<Parsed, RtError> {
    if out.body.is_some() {
        conn.set_nodelay();
    }
    let UpConn { stream, buf, .. } = conn;
    if !head.is_empty() {
        stream
            .write_all(head)
            .await
            .map_err(|e| rt_error("sending the request", e, true))?;
    }
    let Some(body) = out.body.take() else {
        return read_head(stream, buf, out.head_method).await;
    };
    match stream {
        Stream::Tcp(s) => {
            let (rd, wr) = s.split();
            exchange(rd, wr, buf, body, out).await
        }
        Stream::Unix(s) => {
            let (rd, wr) = s.split();
            exchange(rd, wr, buf, body, out).await
        }
    }
}

/// Sends the body while reading the response head, on the two halves of a connection.
async fn exchange<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    mut rd: R,
    mut wr: W,
    buf: &mut BytesMut,
    body: ReqBody<'_>,
    out: &Outgoing<'_>,
) -> Result<Parsed, RtError> {
    let mut send = pin!(send_body(&mut wr, body, out.chunked));
    let mut recv = pin!(read_head(&mut rd, buf, out.head_method));
    let mut sent = false;
    loop {
        tokio::select! {
            biased;
            result = &mut send, if !sent => {
                result?;
                sent = true;
            }
            parsed = &mut recv => {
                let mut parsed = parsed?;
                parsed.keep_alive &= sent;
                return Ok(parsed);
            }
        }
    }
}

async fn send_body<W: AsyncWrite + Unpin>(
    wr: &mut W,
    mut body: ReqBody<'_>,
    chunked: bool,
) -> Result<(), RtError> {
    while let Some(data) = body.next().await {
        let mut data = data.map_err(|e| RtError {
            client: true,
            ..rt_error("reading the request body", e, false)
        })?;
        let written = if chunked {
            let mut chunk = Bytes::from(format!("{:x}\r\n", data.len()))
                .chain(data)
                .chain(&b"\r\n"[..]);
            wr.write_all_buf(&mut chunk).await
        } else {
            wr.write_all_buf(&mut data).await
        };
        written.map_err(|e| rt_error("sending the request body", e, false))?;
    }
    if chunked {
        wr.write_all(b"0\r\n\r\n")
            .await
            .map_err(|e| rt_error("sending the request body", e, false))?;
    }
    Ok(())
}

/// A request body to send: hyper's (HTTP/2 clients), or one read from an HTTP/1 client
/// connection by [`crate::h1`].
pub(crate) enum ReqBody<'a> {
    Hyper(Incoming),
    Client(crate::h1::ClientBody<'a>),
}

impl ReqBody<'_> {
    /// The next non-empty piece of data; `None` at the end. Trailers are not forwarded.
    async fn next(&mut self) -> Option<Result<Bytes, String>> {
        match self {
            ReqBody::Hyper(body) => loop {
                match body.frame().await? {
                    Err(e) => return Some(Err(e.to_string())),
                    Ok(frame) => match frame.into_data() {
                        Ok(data) if !data.is_empty() => return Some(Ok(data)),
                        _ => continue,
                    },
                }
            },
            ReqBody::Client(body) => body.next().await.map(|r| r.map_err(|e| e.to_string())),
        }
    }
}

/// How a message body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// This many bytes are left.
    Length(u64),
    Chunked(Chunk),
    /// At the end of the connection.
    Eof,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunk {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk with this many bytes left.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// The trailer section after the last chunk.
    Trailers,
}

struct Parsed {
    status: StatusCode,
    fields: Bytes,
    framing: Framing,
    keep_alive: bool,
}

/// A backend's answer: its status, the header fields to pass on and its body, streaming.
pub(crate) struct UpResponse {
    pub status: StatusCode,
    /// `name: value\r\n` lines as the backend wrote them, without hop-by-hop fields (a
    /// `101` keeps `upgrade` and says `connection: upgrade`) and without a
    /// `Content-Length` that `Transfer-Encoding` overrides.
    pub fields: Bytes,
    pub body: UpstreamBody,
}

impl UpResponse {
    /// The answer as hyper wants it (HTTP/2 clients).
    pub(crate) fn into_http(self) -> Response<UpstreamBody> {
        let mut response = Response::new(self.body);
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        for line in self.fields.split(|&b| b == b'\n') {
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let value = line[colon + 1..].trim_ascii();
            let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(&line[..colon]),
                HeaderValue::from_maybe_shared(self.fields.slice_ref(value)),
            ) else {
                continue;
            };
            headers.append(name, value);
        }
        response
    }
}

impl Parsed {
    fn into_response(self, conn: UpConn, pool: &Arc<Pool>, addr: SocketAddr) -> UpResponse {
        let mut body = UpstreamBody {
            conn: Some(conn),
            framing: self.framing,
            home: self.keep_alive.then(|| (pool.clone(), addr)),
        };
        // A body that is already complete (none at all) sends its connection home now.
        if self.status != StatusCode::SWITCHING_PROTOCOLS {
            body.finish_if_done();
        }
        UpResponse {
            status: self.status,
            fields: self.fields,
            body,
        }
    }
}

async fn read_head<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    head_method: bool,
) -> Result<Parsed, RtError> {
    let mut received = false;
    loop {
        if !buf.is_empty() {
            received = true;
            match parse_head(buf, head_method) {
                Ok(Some(parsed)) => return Ok(parsed),
                Ok(None) => {}
                Err(e) => return Err(rt_error("invalid response", e, false)),
            }
            if buf.len() >= MAX_RESPONSE_HEAD {
                return Err(rt_error("invalid response", "head too large", false));
            }
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(READ_CHUNK);
        }
        match rd.read_buf(buf).await {
            Ok(0) => {
                return Err(rt_error(
                    "reading the response",
                    "connection closed before a response",
                    !received,
                ))
            }
            Ok(_) => {}
            Err(e) => return Err(rt_error("reading the response", e, !received)),
        }
    }
}

/// Parses a response head at the start of `buf` and consumes it; `None` if incomplete.
/// Informational answers (`100 Continue`, `103 Early Hints`) are skipped. Hop-by-hop
/// headers are left out.
fn parse_head(buf: &mut BytesMut, head_method: bool) -> Result<Option<Parsed>, String> {
    loop {
        let mut slots =
            [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_RESPONSE_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            buf,
            &mut slots,
        ) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let code = response.code.unwrap_or(0);
        let status = StatusCode::from_u16(code).map_err(|e| e.to_string())?;
        if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
            buf.advance(len);
            continue;
        }
        let upgrade = status == StatusCode::SWITCHING_PROTOCOLS;
        let mut keep_alive = response.version == Some(1);
        let mut content_length: Option<u64> = None;
        let mut transfer_encoding: Option<bool> = None; // Some(last coding is chunked)
        let mut named: Vec<&[u8]> = Vec::new();
        for h in response.headers.iter() {
            let name = h.name.as_bytes();
            if name.eq_ignore_ascii_case(b"connection") {
                for token in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    if token.eq_ignore_ascii_case(b"close") {
                        keep_alive = false;
                    } else if !token.is_empty()
                        && !token.eq_ignore_ascii_case(b"upgrade")
                        && !token.eq_ignore_ascii_case(b"keep-alive")
                    {
                        named.push(token);
                    }
                }
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                let last = h.value.rsplit(|&b| b == b',').next().unwrap_or(b"");
                transfer_encoding = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            } else if name.eq_ignore_ascii_case(b"content-length") {
                let n = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .ok_or("invalid Content-Length")?;
                if content_length.is_some_and(|m| m != n) {
                    return Err("conflicting Content-Length".into());
                }
                content_length = Some(n);
            }
        }
        // The fields passed on, as they came.
        let mut fields = Vec::with_capacity(len);
        let mut length_written = false;
        for h in response.headers.iter() {
            let name = h.name.as_bytes();
            let dropped = (crate::proxy::is_hop_by_hop(name)
                && !(upgrade && name.eq_ignore_ascii_case(b"upgrade")))
                || named.iter().any(|n| n.eq_ignore_ascii_case(name));
            if dropped {
                continue;
            }
            if name.eq_ignore_ascii_case(b"content-length") {
                // Transfer-Encoding wins over Content-Length (RFC 9112 §6.3); one is enough.
                if transfer_encoding.is_some() || length_written {
                    continue;
                }
                length_written = true;
            }
            fields.extend_from_slice(name);
            fields.extend_from_slice(b": ");
            fields.extend_from_slice(h.value);
            fields.extend_from_slice(b"\r\n");
        }
        if upgrade {
            fields.extend_from_slice(b"connection: upgrade\r\n");
        }
        buf.advance(len);
        let no_body = head_method
            || upgrade
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let framing = if no_body {
            Framing::Length(0)
        } else if let Some(chunked) = transfer_encoding {
            if chunked {
                Framing::Chunked(Chunk::Size)
            } else {
                keep_alive = false;
                Framing::Eof
            }
        } else if let Some(n) = content_length {
            Framing::Length(n)
        } else {
            keep_alive = false;
            Framing::Eof
        };
        return Ok(Some(Parsed {
            status,
            fields: Bytes::from(fields),
            framing,
            keep_alive: keep_alive && !upgrade,
        }));
    }
}

/// A response body read from its backend connection, which goes back to its pool once the
/// body is complete (when the backend keeps connections alive), and is closed when the
/// body is dropped before.
pub struct UpstreamBody {
    conn: Option<UpConn>,
    framing: Framing,
    /// The pool to return the connection to, when it can carry another request.
    home: Option<(Arc<Pool>, SocketAddr)>,
}

impl UpstreamBody {
    /// The connection of a `101 Switching Protocols` answer, with any bytes the backend
    /// sent after it.
    pub(crate) fn into_conn(mut self) -> Option<UpConn> {
        self.home = None;
        self.conn.take()
    }

    fn finish_if_done(&mut self) {
        if self.framing == Framing::Length(0) {
            self.finish();
        }
    }

    fn finish(&mut self) {
        self.framing = Framing::Done;
        match (self.home.take(), self.conn.take()) {
            (Some((pool, addr)), Some(conn)) if conn.buf.is_empty() => pool.checkin(addr, conn),
            (None, Some(conn)) => conn.close_after_response(),
            _ => {}
        }
    }

    /// Reads more from the backend into the buffer; `Ok(false)` at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(Ok(false));
        };
        if conn.buf.capacity() - conn.buf.len() < 1024 {
            conn.buf.reserve(READ_CHUNK);
        }
        match tokio_util::io::poll_read_buf(Pin::new(&mut conn.stream), cx, &mut conn.buf) {
            Poll::Ready(Ok(n)) => Poll::Ready(Ok(n > 0)),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

fn truncated() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the backend closed the connection before the end of the response body",
    )
}

fn bad_chunk() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "invalid chunked response body")
}

/// Parses a chunk-size line (`1a;ext=1\r\n`) at the start of `buf`.
/// The line ends with CRLF (a bare LF is refused: another parser may not end the line
/// there); the size is hex digits from the start of the line, then optional spaces or tabs
/// before an extension (`;...`).
fn chunk_size(buf: &mut BytesMut) -> io::Result<Option<u64>> {
    let Some(lf) = buf.iter().position(|&b| b == b'\n') else {
        return if buf.len() > 1024 {
            Err(bad_chunk())
        } else {
            Ok(None)
        };
    };
    if lf == 0 || buf[lf - 1] != b'\r' {
        return Err(bad_chunk());
    }
    let end = lf - 1;
    let line = &buf[..end];
    let digits = line
        .split(|&b| b == b';')
        .next()
        .unwrap_or(b"")
        .trim_ascii_end();
    if digits.is_empty() || digits.len() > 15 {
        return Err(bad_chunk());
    }
    let mut size = 0u64;
    for &d in digits {
        let v = (d as char).to_digit(16).ok_or_else(bad_chunk)?;
        size = size * 16 + u64::from(v);
    }
    buf.advance(end + 2);
    Ok(Some(size))
}

/// What [`decode`] found in the buffer.
pub(crate) enum Step {
    Data(Bytes),
    /// The body is complete.
    End,
    /// More bytes are needed (or, for [`Framing::Eof`], the end of the stream).
    More,
}

/// Takes the next piece of a body framed by `framing` from the start of `buf`: data, the
/// end, or a request for more bytes. Chunk sizes, extensions and trailers are consumed; the
/// bytes after the body stay in `buf`.
pub(crate) fn decode(framing: &mut Framing, buf: &mut BytesMut) -> io::Result<Step> {
    loop {
        match *framing {
            Framing::Done => return Ok(Step::End),
            Framing::Length(0) => {
                *framing = Framing::Done;
                return Ok(Step::End);
            }
            _ if buf.is_empty() => return Ok(Step::More),
            Framing::Length(left) => {
                let take = left.min(buf.len() as u64);
                *framing = Framing::Length(left - take);
                return Ok(Step::Data(buf.split_to(take as usize).freeze()));
            }
            Framing::Eof => return Ok(Step::Data(buf.split().freeze())),
            Framing::Chunked(state) => {
                let before = buf.len();
                match state {
                    Chunk::Size => match chunk_size(buf)? {
                        Some(0) => *framing = Framing::Chunked(Chunk::Trailers),
                        Some(n) => *framing = Framing::Chunked(Chunk::Data(n)),
                        None => {}
                    },
                    Chunk::Data(left) => {
                        let take = left.min(buf.len() as u64);
                        *framing = Framing::Chunked(if left == take {
                            Chunk::DataEnd
                        } else {
                            Chunk::Data(left - take)
                        });
                        return Ok(Step::Data(buf.split_to(take as usize).freeze()));
                    }
                    Chunk::DataEnd => {
                        if buf.len() >= 2 {
                            if &buf[..2] != b"\r\n" {
                                return Err(bad_chunk());
                            }
                            buf.advance(2);
                            *framing = Framing::Chunked(Chunk::Size);
                        }
                    }
                    Chunk::Trailers => {
                        // Trailer fields are dropped; the section ends with an empty line.
                        match buf.windows(2).position(|w| w == b"\r\n") {
                            Some(0) => {
                                buf.advance(2);
                                *framing = Framing::Done;
                                return Ok(Step::End);
                            }
                            Some(end) => buf.advance(end + 2),
                            None if buf.len() > 64 * 1024 => return Err(bad_chunk()),
                            None => {}
                        }
                    }
                }
                // No progress with the bytes there are: more are needed.
                if *framing == Framing::Chunked(state) && buf.len() == before {
                    return Ok(Step::More);
                }
            }
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match decode(&mut this.framing, &mut conn.buf) {
                Ok(Step::Data(data)) => {
                    // The last bytes: the connection goes home before the client has them.
                    if this.framing == Framing::Length(0) {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Step::End) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Err(e) => return Poll::Ready(Some(Err(e))),
                Ok(Step::More) => match this.poll_fill(cx) {
                    Poll::Ready(Ok(true)) => {}
                    Poll::Ready(Ok(false)) if this.framing == Framing::Eof => {
                        this.framing = Framing::Done;
                        if let Some(conn) = this.conn.take() {
                            conn.close_after_response();
                        }
                        return Poll::Ready(None);
                    }
                    Poll::Ready(Ok(false)) => return Poll::Ready(Some(Err(truncated()))),
                    Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
                    Poll::Pending => return Poll::Pending,
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Done | Framing::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    fn parse(text: &str, head_method: bool) -> (Parsed, BytesMut) {
        let mut buf = BytesMut::from(text.as_bytes());
        let parsed = parse_head(&mut buf, head_method).unwrap().unwrap();
        (parsed, buf)
    }

    #[test]
    fn heads_say_how_the_body_ends_and_lose_hop_by_hop_headers() {
        let (p, rest) = parse(
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive, x-hop\r\n\
             X-Hop: 1\r\nKeep-Alive: timeout=5\r\nX-Kept: 1\r\n\r\nok",
            false,
        );
        assert_eq!(p.framing, Framing::Length(2));
        assert!(p.keep_alive);
        assert_eq!(&p.fields[..], b"Content-Length: 2\r\nX-Kept: 1\r\n");
        assert_eq!(&rest[..], b"ok");

        let (p, _) = parse(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n",
            false,
        );
        assert_eq!(p.framing, Framing::Chunked(Chunk::Size));
        assert!(p.fields.is_empty());

        let (p, _) = parse("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", false);
        assert_eq!((p.framing, p.keep_alive), (Framing::Eof, false));

        let (p, _) = parse("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n", false);
        assert!(!p.keep_alive);

        let (p, _) = parse("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", true);
        assert_eq!(p.framing, Framing::Length(0));
        assert_eq!(&p.fields[..], b"Content-Length: 2\r\n");

        let (p, _) = parse("HTTP/1.1 304 Not Modified\r\n\r\n", false);
        assert_eq!(p.framing, Framing::Length(0));

        let (p, rest) = parse(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
            false,
        );
        assert_eq!(p.status, StatusCode::CREATED);
        assert!(rest.is_empty());

        let (p, _) = parse(
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            false,
        );
        assert_eq!(
            &p.fields[..],
            b"Upgrade: websocket\r\nconnection: upgrade\r\n"
        );
        assert!(!p.keep_alive);

        let mut partial = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Le"[..]);
        assert!(parse_head(&mut partial, false).unwrap().is_none());
        let mut bad = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"[..],
        );
        assert!(parse_head(&mut bad, false).is_err());
    }

    /// Reads request heads from `s` and answers each with `answer` (in small pieces, to
    /// cross read boundaries); closes after the first when `close`.
    async fn answer_on<S: AsyncRead + AsyncWrite + Unpin>(
        mut s: S,
        answer: &'static [u8],
        close: bool,
    ) {
        let mut buf = vec![0u8; 4096];
        loop {
            let mut seen = Vec::new();
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            for piece in answer.chunks(3) {
                if s.write_all(piece).await.is_err() {
                    return;
                }
                tokio::task::yield_now().await;
            }
            if close {
                return;
            }
        }
    }

    /// A backend on a TCP socket that answers each connection with `answer`, then leaves
    /// it open (keep-alive) or closes it.
    async fn backend(answer: &'static [u8], close: bool) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (s, _) = listener.accept().await.unwrap();
                tokio::spawn(answer_on(s, answer, close));
            }
        });
        addr
    }

    /// `GET /`, without a body.
    fn get_request() -> Outgoing<'static> {
        Outgoing {
            head: b"GET / HTTP/1.1\r\nhost: x\r\n\r\n",
            body: None,
            chunked: false,
            head_method: false,
            idempotent: true,
        }
    }

    fn tcp(addr: SocketAddr) -> Target<'static> {
        Target {
            addr,
            socket: None,
            tcp_owner: None,
        }
    }

    async fn get(pool: &Arc<Pool>, addr: SocketAddr) -> (StatusCode, Bytes) {
        let out = get_request();
        let response = request(pool, tcp(addr), Duration::from_secs(5), out)
            .await
            .unwrap();
        let status = response.status;
        let body = response.body.collect().await.unwrap().to_bytes();
        (status, body)
    }

    #[tokio::test]
    async fn chunked_bodies_are_decoded_and_the_connection_reused() {
        let addr = backend(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
              5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\n",
            false,
        )
        .await;
        let pool = Arc::new(Pool::default());
        for _ in 0..3 {
            let (status, body) = get(&pool, addr).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(&body[..], b"hello, world");
            assert_eq!(pool.idle_count(addr), 1);
        }
    }

    #[tokio::test]
    async fn bodies_up_to_the_end_of_the_connection_are_not_reused() {
        let addr = backend(b"HTTP/1.1 200 OK\r\n\r\nuntil the end", true).await;
        let pool = Arc::new(Pool::default());
        let (_, body) = get(&pool, addr).await;
        assert_eq!(&body[..], b"until the end");
        assert_eq!(pool.idle_count(addr), 0);
    }

    #[tokio::test]
    async fn a_kept_connection_closed_by_its_backend_is_replaced() {
        // Answers with keep-alive, then closes anyway.
        let addr = backend(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", true).await;
        let pool = Arc::new(Pool::default());
        for _ in 0..3 {
            let (status, body) = get(&pool, addr).await;
            assert_eq!((status, &body[..]), (StatusCode::OK, &b"ok"[..]));
        }
    }

    #[tokio::test]
    async fn a_truncated_body_is_an_error() {
        let addr = backend(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", true).await;
        let pool = Arc::new(Pool::default());
        let out = get_request();
        let response = request(&pool, tcp(addr), Duration::from_secs(5), out)
            .await
            .unwrap();
        assert!(response.body.collect().await.is_err());
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let pool = Arc::new(Pool::default());
        let out = get_request();
        let Err(e) = request(&pool, tcp(addr), Duration::from_secs(5), out).await else {
            panic!("nothing listens there");
        };
        assert!(e.is_connect(), "{e}");
    }

    /// A backend listening on TCP and on a Unix socket, answering which one carried the
    /// request: the Unix socket while it is there, TCP once it is gone.
    #[tokio::test]
    async fn the_unix_socket_is_preferred_and_tcp_takes_over_without_it() {
        const BY_TCP: &[u8] =
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\ntcp";
        const BY_UNIX: &[u8] =
            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\nunix";
        let addr = backend(BY_TCP, true).await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let accepting = tokio::spawn(async move {
            loop {
                let (s, _) = listener.accept().await.unwrap();
                tokio::spawn(answer_on(s, BY_UNIX, true));
            }
        });
        let pool = Arc::new(Pool::default());
        let get = |pool: Arc<Pool>, socket: std::path::PathBuf| async move {
            let out = get_request();
            // Served by this process: its uid is the ingress's own.
            let unix = UnixBackend::new("web/0", socket, None);
            let to = Target {
                addr,
                socket: Some(&unix),
                tcp_owner: None,
            };
            let response = request(&pool, to, Duration::from_secs(5), out)
                .await
                .unwrap();
            response.body.collect().await.unwrap().to_bytes()
        };
        for _ in 0..3 {
            assert_eq!(&get(pool.clone(), path.clone()).await[..], b"unix");
        }
        // The backend stopped listening there (its socket file stays: refused).
        accepting.abort();
        let _ = accepting.await;
        assert_eq!(&get(pool.clone(), path.clone()).await[..], b"tcp");
        // The socket file is gone.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(&get(pool.clone(), path.clone()).await[..], b"tcp");
    }
}
