//! Request smuggling: the ingress in front of a raw backend that records every request it
//! parses. Whatever bytes a client sends, the backend must see exactly the requests the
//! ingress accepted (and answered from the backend), and every answer must reach the client
//! that asked for it. Each backend answer echoes the target the backend parsed
//! (`x-seen`), so a client can tell whose answer it got.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{app, start_ingress, table};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use twelve_ingress::{Backend, BackendState, IngressConfig, IngressHandle, Policy};

/// What the recording backend parsed.
#[derive(Debug, Default)]
struct Record {
    /// Request methods and targets (`GET /a`), in the order they were parsed.
    targets: Vec<String>,
    /// Bytes it could not parse as a request (the connection was closed after them).
    garbage: Vec<String>,
    /// Requests cut short by the end of their connection (a body the client never sent
    /// whole): not a desync.
    incomplete: Vec<String>,
}

/// A backend reading HTTP/1.1 requests the way a lenient server does: a request is chunked
/// when any `Transfer-Encoding` mentions `chunked`, else as long as its first
/// `Content-Length` says; `_` in a field name counts as `-` (as CGI and WSGI servers map
/// them). It answers each request in turn on its connection (keep-alive),
/// with `x-seen: <method> <target>`; a target containing `/slow` is answered after 300 ms.
struct RawBackend {
    addr: SocketAddr,
    record: Arc<Mutex<Record>>,
}

impl RawBackend {
    async fn start() -> RawBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let record = Arc::new(Mutex::new(Record::default()));
        let rec = record.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(serve_raw(stream, rec.clone()));
            }
        });
        RawBackend { addr, record }
    }

    fn route(&self) -> Backend {
        Backend {
            unit: "web/0".into(),
            addr: self.addr,
            socket: None,
            socket_uid: None,
            state: BackendState::Ready,
        }
    }

    fn targets(&self) -> Vec<String> {
        self.record.lock().unwrap().targets.clone()
    }

    fn garbage(&self) -> Vec<String> {
        self.record.lock().unwrap().garbage.clone()
    }
}

/// One parsed request: its target and how many bytes it took, or `None` when incomplete.
fn parse_raw_request(buf: &[u8]) -> Result<Option<(String, usize)>, ()> {
    let mut headers = [httparse::EMPTY_HEADER; 256];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(()),
    };
    // The method too: bytes left before a request would change it (`abcGET`).
    let target = format!("{} {}", req.method.unwrap_or(""), req.path.unwrap_or(""));
    let mut chunked = false;
    let mut length: Option<usize> = None;
    for h in req.headers.iter() {
        let name = h.name.replace('_', "-");
        if name.eq_ignore_ascii_case("transfer-encoding")
            && String::from_utf8_lossy(h.value)
                .to_ascii_lowercase()
                .contains("chunked")
        {
            chunked = true;
        }
        if name.eq_ignore_ascii_case("content-length") && length.is_none() {
            length = Some(
                String::from_utf8_lossy(h.value)
                    .trim()
                    .parse()
                    .map_err(|_| ())?,
            );
        }
    }
    let rest = &buf[head_len..];
    if !chunked {
        let n = length.unwrap_or(0);
        return Ok((rest.len() >= n).then(|| (target, head_len + n)));
    }
    // Chunked, leniently: sizes up to `;`, lines ending in LF (a CR before it is optional).
    let mut at = 0;
    loop {
        let Some(nl) = rest[at..].iter().position(|&b| b == b'\n') else {
            return Ok(None);
        };
        let line = String::from_utf8_lossy(&rest[at..at + nl]).to_string();
        let size = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| ())?;
        at += nl + 1;
        if size == 0 {
            // Trailer lines up to an empty one.
            loop {
                let Some(nl) = rest[at..].iter().position(|&b| b == b'\n') else {
                    return Ok(None);
                };
                let empty = rest[at..at + nl].iter().all(|&b| b == b'\r');
                at += nl + 1;
                if empty {
                    return Ok(Some((target, head_len + at)));
                }
            }
        }
        if rest.len() < at + size + 1 {
            return Ok(None);
        }
        at += size;
        match rest.get(at..at + 2) {
            Some(b"\r\n") => at += 2,
            Some([b'\n', _]) => at += 1,
            None => return Ok(None),
            _ => return Err(()),
        }
    }
}

async fn serve_raw(mut stream: TcpStream, record: Arc<Mutex<Record>>) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match parse_raw_request(&buf) {
            Ok(Some((target, used))) => {
                let head = buf.starts_with(b"HEAD ");
                buf.drain(..used);
                record.lock().unwrap().targets.push(target.clone());
                if target.contains("/slow") {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                let body = format!("seen {target}\n");
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nx-seen: {target}\r\ncontent-length: {}\r\n\r\n{}",
                    body.len(),
                    if head { "" } else { &body }
                );
                if stream.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
                continue;
            }
            Ok(None) => {}
            Err(()) => {
                let text = String::from_utf8_lossy(&buf).into_owned();
                record.lock().unwrap().garbage.push(text);
                return;
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                if !buf.is_empty() {
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    record.lock().unwrap().incomplete.push(text);
                }
                return;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// One answer a client got: its status and, when the backend wrote it, the target it echoes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    status: u16,
    seen: Option<String>,
}

/// Splits what a client received into answers (bodies framed by length, chunks or the end).
/// Bytes that do not parse as a response end the list with status 0.
fn parse_answers(mut bytes: &[u8]) -> Vec<Answer> {
    let mut answers = Vec::new();
    while !bytes.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut res = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(head_len)) = res.parse(bytes) else {
            answers.push(Answer {
                status: 0,
                seen: None,
            });
            break;
        };
        let status = res.code.unwrap_or(0);
        let mut seen = None;
        let mut length = None;
        let mut chunked = false;
        for h in res.headers.iter() {
            let value = String::from_utf8_lossy(h.value).into_owned();
            if h.name.eq_ignore_ascii_case("x-seen") {
                seen = Some(value);
            } else if h.name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse::<usize>().ok();
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = true;
            }
        }
        answers.push(Answer { status, seen });
        bytes = &bytes[head_len..];
        if (100..200).contains(&status) || status == 204 || status == 304 {
            continue;
        }
        if chunked {
            loop {
                let Some(nl) = bytes.windows(2).position(|w| w == b"\r\n") else {
                    return answers;
                };
                let size = std::str::from_utf8(&bytes[..nl])
                    .ok()
                    .and_then(|s| usize::from_str_radix(s.trim(), 16).ok());
                let Some(size) = size else { return answers };
                bytes = &bytes[(nl + 2 + size + 2).min(bytes.len())..];
                if size == 0 {
                    break;
                }
            }
        } else if let Some(n) = length {
            bytes = &bytes[n.min(bytes.len())..];
        } else {
            break;
        }
    }
    answers
}

/// How long a client waits for the end of its answers before giving up.
const ANSWER_DEADLINE: Duration = Duration::from_secs(5);

/// Sends `bytes` on a new connection, closes the sending side, reads until the server
/// closes; `None` when it has not closed within [`ANSWER_DEADLINE`] (the backend answers
/// at once: a server that neither answers nor closes is stuck on something).
async fn try_exchange(addr: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(bytes).await;
    let _ = stream.shutdown().await;
    let mut got = Vec::new();
    match tokio::time::timeout(ANSWER_DEADLINE, stream.read_to_end(&mut got)).await {
        Err(_) => None,
        Ok(_) => Some(got),
    }
}

async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    try_exchange(addr, bytes).await.unwrap_or_default()
}

/// One GET with its own target, on its own connection: the answer must be its own.
async fn victim(addr: SocketAddr, target: &str) -> Vec<Answer> {
    let request =
        format!("GET {target} HTTP/1.1\r\nHost: web.localhost\r\nConnection: close\r\n\r\n");
    parse_answers(&exchange(addr, request.as_bytes()).await)
}

async fn ingress_for(backend: &RawBackend, dir: &std::path::Path, workers: usize) -> IngressHandle {
    let ingress = if workers == 2 {
        start_ingress(dir).await
    } else {
        let mut config = IngressConfig::new(dir);
        config.port = 0;
        config.workers = workers;
        IngressHandle::start(config).await.unwrap()
    };
    ingress
        .set_routes(table(vec![(
            "web",
            app(Policy::RoundRobin, vec![backend.route()]),
        )]))
        .unwrap();
    ingress
}

/// Issue 15, item 3: `Connection: content-length` made the ingress drop the length but
/// forward the body, which the backend read as a second request on a pooled connection;
/// the next client got that request's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_naming_content_length_smuggles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let backend = RawBackend::start().await;
    // One worker pool: the second client's request takes the first's pooled connection.
    let ingress = ingress_for(&backend, dir.path(), 0).await;
    let addr = ingress.addr();

    let inner = b"GET /smuggled/slow HTTP/1.1\r\nHost: web.localhost\r\n\r\n";
    let mut attack = format!(
        "POST /first HTTP/1.1\r\nHost: web.localhost\r\nConnection: content-length\r\n\
         Content-Length: {}\r\n\r\n",
        inner.len()
    )
    .into_bytes();
    attack.extend_from_slice(inner);
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&attack).await.unwrap();
    let first = common::read_until(&mut stream, "seen POST /first\n").await;
    assert!(first.contains("x-seen: POST /first\r\n"), "{first}");

    let second = victim(addr, "/second").await;
    assert_eq!(
        second,
        vec![Answer {
            status: 200,
            seen: Some("GET /second".into())
        }],
        "the second client got someone else's answer"
    );
    assert_eq!(backend.targets(), ["POST /first", "GET /second"]);
    assert!(backend.garbage().is_empty(), "{:?}", backend.garbage());
    drop(stream);
}

// ---------------------------------------------------------------------------------------
// The differential corpus: the same bytes to the ingress and to nginx 1.22.

/// A tag of three base-36 digits for the `n`th input (wrapping after 46656).
fn tag(n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let n = n % (36 * 36 * 36);
    [n / 1296, n / 36 % 36, n % 36]
        .iter()
        .map(|&d| DIGITS[d as usize] as char)
        .collect()
}

/// One vector: its name, its bytes (`{T}` is replaced by the vector's tag, which every
/// target of the vector contains as `/{T}/`), and, where the ingress answers with other
/// statuses than nginx, why that is right.
struct Vector {
    name: &'static str,
    bytes: Vec<u8>,
    differs: Option<&'static str>,
}

fn v(name: &'static str, text: &str) -> Vector {
    Vector {
        name,
        bytes: text.as_bytes().to_vec(),
        differs: None,
    }
}

fn vb(name: &'static str, bytes: &[u8]) -> Vector {
    Vector {
        name,
        bytes: bytes.to_vec(),
        differs: None,
    }
}

impl Vector {
    fn differs(mut self, why: &'static str) -> Vector {
        self.differs = Some(why);
        self
    }

    /// The bytes with `tag` for `{T}`: three characters, like `{T}`, so that the lengths
    /// written in the vector stay right.
    fn bytes_for(&self, tag: &str) -> Vec<u8> {
        assert_eq!(tag.len(), 3, "{tag}");
        let mut out = Vec::with_capacity(self.bytes.len());
        let mut rest = &self.bytes[..];
        while let Some(at) = rest.windows(3).position(|w| w == b"{T}") {
            out.extend_from_slice(&rest[..at]);
            out.extend_from_slice(tag.as_bytes());
            rest = &rest[at + 3..];
        }
        out.extend_from_slice(rest);
        out
    }
}

const H: &str = "Host: web.localhost\r\n";

/// A request whose body is the request `inner`, framed by `Content-Length` of its length.
fn with_inner(head: &str, inner: &str) -> String {
    format!("{head}Content-Length: {}\r\n\r\n{inner}", inner.len())
}

fn corpus() -> Vec<Vector> {
    let smuggled = format!("GET /web/{{T}}/smuggled HTTP/1.1\r\n{H}\r\n");
    let big = "a".repeat(70 * 1024);
    let many: String = (0..120).map(|i| format!("X-F{i}: {i}\r\n")).collect();
    let long_target = "b".repeat(10 * 1024);
    let chunk_inner = format!("{:x}\r\n{smuggled}\r\n0\r\n\r\n", smuggled.len());
    vec![
        // Plain requests, for a baseline.
        v("get", &format!("GET /web/{{T}}/a HTTP/1.1\r\n{H}\r\n")),
        v("post-length", &format!("POST /web/{{T}}/a HTTP/1.1\r\n{H}Content-Length: 3\r\n\r\nabc")),
        v("post-chunked", &format!("POST /web/{{T}}/a HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")),
        v("pipelined", &format!("GET /web/{{T}}/a HTTP/1.1\r\n{H}\r\nGET /web/{{T}}/b HTTP/1.1\r\n{H}\r\n")),
        v("head", &format!("HEAD /web/{{T}}/a HTTP/1.1\r\n{H}\r\n")),
        v("http10", "GET /web/{T}/a HTTP/1.0\r\n\r\n"),
        v("http10-keep-alive", &format!("GET /web/{{T}}/a HTTP/1.0\r\n{H}Connection: keep-alive\r\n\r\nGET /web/{{T}}/b HTTP/1.0\r\n{H}\r\n")),
        v("expect-continue", &format!("POST /web/{{T}}/a HTTP/1.1\r\n{H}Expect: 100-continue\r\nContent-Length: 3\r\n\r\nabc")),
        // CL.TE and TE.CL.
        v("cl-te", &format!("POST /web/{{T}}/a HTTP/1.1\r\n{H}Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG")),
        v("te-cl", &format!("POST /web/{{T}}/a HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n{chunk_inner}")),
        v("cl-te-smuggled", &format!("POST /web/{{T}}/a HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n{}", with_inner("", &format!("0\r\n\r\n{smuggled}")))),
        // TE.TE: obfuscated Transfer-Encoding.
        v("te-xchunked", &format!("POST /web/{{T}}/a HTTP/1.1\r\n{H}Transfer-Encoding: xchunked\r\n{}", with_inner("", &smuggled))),
        v("te-space-before-colon", &format!("POST /web/{{T}}/a HTTP/1.1\r\n{H}Transfer-Encoding : chunked\r\n\r\n{chunk_inner}")),
        v("te-twice", &format!("POST /web/{{T}}/a HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n{chunk_inner}")),
        v("te-tab", &format!("POST /web/{{T}}/a HTTP/1.1\r\n{H}Transfer-Encoding:\tchunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"))
            .differs("RFC 9110 §5.6.3: whitespace before a value is spaces and tabs, so this is `chunked` (and forwarded as such); nginx skips only spaces and finds an unknown coding (501)"),
        v("te-bare-lf", &format!("POST /web/{{T}}/a HTTP/1.1\r\n{H}X: y\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")),
        v("te-obs-fold", &format!("POST /web/{{T}}/a HTTP/1.1\r\n{H}Transfer-Encoding:\r\n chunked\r\n\r\n{chunk_inner}")),
        v("te-chunked-identity", &format!("POST /web/{{T}}/a HTTP/1.1\r\n{H}Transfer-Encoding: chunked, identity\r\n\r\n{chunk_inner}")),
        v("te-identity-chunked", &format!("POST /web/{{T}}/a HTTP/1.1\r\n{H}Transfer-Encoding: identity, chunked\r\n\r\n{chunk_inner}")),
        v("te-gzip-chunked", &format!("POST /web/{{T}}/a HTTP/1.1\r\n{H}Transfer-Encoding: gzip, chunked\r\n\r\n{chunk_inner}")),
        v("te-uppercase", &format!("POST /web/{{T}}/a HTTP/1.1\r\n{H}Transfer-Encoding: CHUNKED\r\n\r\n3\r\nabc\r\n0\r\n\r\n")),
        v("te-quoted", &format!("POST /web/{{T}}/a HTTP/1.1\r\n{H}Transfer-Encoding: \"chunked\"\r\n\r\n{chunk_inner}")),
        v("te-chunk", &format!("POST /web/{{T}}/a HTTP/1.1\r\n{H}Transfer-Encoding: chunk\r\n\r\n{chunk_inner}")),
        v("te-underscore", &format!("POST /web/{{T}}/a HTTP/1.1\r\n{H}Transfer_Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc")),
        v("te-http10", &format!("POST /web/{{T}}/a HTTP/1.0\r\n{H}Transfer-Encoding: chunked\r\n\r\n{chunk_inner}")),
        vb("te-nul", format!("POST /web/{{T}}/a HTTP/1.1\r\n{H}Transfer-Encoding: chunked\0\r\n\r\n{chunk_inner}").as_bytes()),
        v("te-vertical-tab", &format!("POST /web/{{T}}/a HTTP/1.1\r\n{H}Transfer-Encoding:\x0bchunked\r\n\r\n{chunk_inner}"))
            .differs("both refuse: httparse refuses a control character in a field value (400); nginx takes it as an unknown coding (501)"),
        // Chunk sizes and lines.
        v("chunk-size-overflow", &format!("POST /web/{{T}}/a HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\nffffffffffffffffff1\r\nabc\r\n0\r\n\r\n")),
        v("chunk-size-negative", &format!("POST /web/{{T}}/a HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n0\r\n\r\n")),
        v("chunk-size-0x", &format!("POST /web/{{T}}/a HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n")),
        v("chunk-size-space", &format!("POST /web/{{T}}/a HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n 3\r\nabc\r\n0\r\n\r\n")),
        v("chunk-bare-lf", &format!("POST /web/{{T}}/a HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n3\nabc\n0\n\n"))
            .differs("the ingress reads chunk lines ending in CRLF only (RFC 9112 §7.1); nginx also takes a bare LF. Refused before the backend sees anything"),
        v("chunk-extension", &format!("POST /web/{{T}}/a HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n3;name=value\r\nabc\r\n0\r\n\r\n")),
        v("chunk-trailer", &format!("POST /web/{{T}}/a HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n")),
        v("chunk-data-too-long", &format!("POST /web/{{T}}/a HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n")),
        v("chunk-missing-crlf", &format!("POST /web/{{T}}/a HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n3\r\nabc0\r\n\r\n")),
        v("chunk-then-pipelined", &format!("POST /web/{{T}}/a HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /web/{{T}}/b HTTP/1.1\r\n{H}\r\n")),
        v("chunk-body-holds-request", &format!("POST /web/{{T}}/a HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n{chunk_inner}")),
        // Content-Length.
        v("cl-twice-same", &format!("POST /web/{{T}}/a HTTP/1.1\r\n{H}Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc"))
            .differs("RFC 9112 §6.3 lets a recipient take identical lengths as one; the backend gets one Content-Length (issue 15). nginx refuses any duplicate"),
        v("cl-twice-different", &format!("POST /web/{{T}}/a HTTP/1.1\r\n{H}Content-Length: 3\r\nContent-Length: 30\r\n\r\nabc{smuggled}")),
        v("cl-list", &format!("POST /web/{{T}}/a HTTP/1.1\r\n{H}Content-Length: 3, 3\r\n\r\nabc")),
        v("cl-plus", &format!("POST /web/{{T}}/a HTTP/1.1\r\n{H}Content-Length: +3\r\n\r\nabc")),
        v("cl-negative", &format!("POST /web/{{T}}/a HTTP/1.1\r\n{H}Content-Length: -3\r\n\r\nabc")),
        v("cl-hex", &format!("POST /web/{{T}}/a HTTP/1.1\r\n{H}Content-Length: 0x3\r\n\r\nabc")),
        v("cl-huge", &format!("POST /web/{{T}}/a HTTP/1.1\r\n{H}Content-Length: 99999999999999999999\r\n\r\nabc")),
        v("cl-empty", &format!("POST /web/{{T}}/a HTTP/1.1\r\n{H}Content-Length: \r\n\r\nabc")),
        v("cl-spaces", &format!("POST /web/{{T}}/a HTTP/1.1\r\n{H}Content-Length:   3   \r\n\r\nabc")),
        v("cl-space-before-colon", &format!("POST /web/{{T}}/a HTTP/1.1\r\n{H}Content-Length : 40\r\n\r\n{smuggled}")),
        v("cl-underscore", &format!("POST /web/{{T}}/a HTTP/1.1\r\n{H}Content_Length: 40\r\n\r\n{smuggled}")),
        v("cl-zero-then-request", &format!("POST /web/{{T}}/a HTTP/1.1\r\n{H}Content-Length: 0\r\n\r\n{smuggled}")),
        v("cl-body-holds-request", &format!("POST /web/{{T}}/a HTTP/1.1\r\n{H}{}", with_inner("", &smuggled))),
        v("get-with-body", &format!("GET /web/{{T}}/a HTTP/1.1\r\n{H}{}", with_inner("", &smuggled))),
        // Connection naming the framing or the host.
        v("connection-content-length", &format!("POST /web/{{T}}/a HTTP/1.1\r\n{H}Connection: content-length\r\n{}", with_inner("", &smuggled))),
        v("connection-close-content-length", &format!("POST /web/{{T}}/a HTTP/1.1\r\n{H}Connection: close, Content-Length\r\n{}", with_inner("", &smuggled))),
        v("connection-transfer-encoding", &format!("POST /web/{{T}}/a HTTP/1.1\r\n{H}Connection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n{chunk_inner}")),
        v("connection-host", &format!("GET /web/{{T}}/a HTTP/1.1\r\n{H}Connection: host\r\n\r\n")),
        v("connection-keep-alive-te", &format!("POST /web/{{T}}/a HTTP/1.1\r\n{H}Connection: keep-alive, transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /web/{{T}}/b HTTP/1.1\r\n{H}\r\n")),
        // Host.
        v("no-host-http11", "GET /web/{T}/a HTTP/1.1\r\n\r\n"),
        v("two-hosts", &format!("GET /web/{{T}}/a HTTP/1.1\r\n{H}Host: other.localhost\r\n\r\n")),
        v("empty-host", "GET /web/{T}/a HTTP/1.1\r\nHost:\r\n\r\n")
            .differs("the ingress routes an empty host by path; nginx refuses it"),
        v("host-with-path", "GET /web/{T}/a HTTP/1.1\r\nHost: web.localhost/x\r\n\r\n")
            .differs("nginx validates Host as a name; the ingress only routes on its first label"),
        v("absolute-form", &format!("GET http://web.localhost/web/{{T}}/a HTTP/1.1\r\n{H}\r\n")),
        v("absolute-form-other-host", "GET http://web.localhost/web/{T}/a HTTP/1.1\r\nHost: other.localhost\r\n\r\n"),
        v("absolute-form-https", &format!("GET https://web.localhost/web/{{T}}/a HTTP/1.1\r\n{H}\r\n")),
        v("absolute-form-no-host", "GET http://web.localhost/web/{T}/a HTTP/1.1\r\n\r\n"),
        v("absolute-form-userinfo", &format!("GET http://evil@web.localhost/web/{{T}}/a HTTP/1.1\r\n{H}\r\n")),
        v("absolute-form-unknown-app", "GET http://nope.localhost/{T}/a HTTP/1.1\r\nHost: web.localhost\r\n\r\n")
            .differs("the ingress routes by the target's authority (RFC 9112 §3.2.2), an app it does not know: 404; nginx has one catch-all server"),
        // Malformed heads.
        v("bare-lf-head", "GET /web/{T}/a HTTP/1.1\nHost: web.localhost\n\n"),
        v("obs-fold", &format!("GET /web/{{T}}/a HTTP/1.1\r\n{H}X-Folded: a\r\n b\r\n\r\n")),
        v("space-before-colon", "GET /web/{T}/a HTTP/1.1\r\nHost : web.localhost\r\n\r\n"),
        vb("nul-in-value", format!("GET /web/{{T}}/a HTTP/1.1\r\n{H}X-A: a\0b\r\n\r\n").as_bytes()),
        vb("nul-in-target", format!("GET /web/{{T}}/a\0b HTTP/1.1\r\n{H}\r\n").as_bytes()),
        v("cr-in-value", &format!("GET /web/{{T}}/a HTTP/1.1\r\n{H}X-A: a\rb\r\n\r\n")),
        v("bad-header-name", &format!("GET /web/{{T}}/a HTTP/1.1\r\n{H}X@Y: 1\r\n\r\n"))
            .differs("a field name that is not a token is refused (RFC 9110 §5.1); nginx drops the field (ignore_invalid_headers). Neither forwards it"),
        v("empty-header-name", &format!("GET /web/{{T}}/a HTTP/1.1\r\n{H}: x\r\n\r\n")),
        v("http12", &format!("GET /web/{{T}}/a HTTP/1.2\r\n{H}\r\n"))
            .differs("the ingress serves HTTP/1.0 and 1.1 only; nginx takes any 1.x as 1.1"),
        v("http20-line", &format!("GET /web/{{T}}/a HTTP/2.0\r\n{H}\r\n"))
            .differs("400 for a request line the ingress does not parse; nginx says 505"),
        v("http09", "GET /web/{T}/a\r\n\r\n")
            .differs("nginx answers HTTP/0.9 (a body without status line); the ingress refuses it"),
        v("lowercase-method", &format!("get /web/{{T}}/a HTTP/1.1\r\n{H}\r\n"))
            .differs("methods are case-sensitive tokens (RFC 9110 §9.1): the ingress forwards `get` as the app's business; nginx refuses lowercase methods"),
        v("tab-in-request-line", &format!("GET\t/web/{{T}}/a HTTP/1.1\r\n{H}\r\n")),
        v("double-space-request-line", &format!("GET  /web/{{T}}/a HTTP/1.1\r\n{H}\r\n"))
            .differs("RFC 9112 §3: one space between method, target and version; nginx tolerates more"),
        v("fragment-in-target", &format!("GET /web/{{T}}/a#frag HTTP/1.1\r\n{H}\r\n")),
        v("authority-form", &format!("CONNECT web.localhost:80 HTTP/1.1\r\n{H}\r\n")),
        v("asterisk-form", &format!("OPTIONS * HTTP/1.1\r\n{H}\r\n"))
            .differs("OPTIONS * is valid HTTP/1.1 (RFC 9112 §3.2.4) and goes to the app of the Host; nginx refuses it"),
        v("huge-header", &format!("GET /web/{{T}}/a HTTP/1.1\r\n{H}X-Big: {big}\r\n\r\n"))
            .differs("431 Request Header Fields Too Large from the ingress (64 KiB head); nginx says 400 for a field over its 8 KiB buffer"),
        v("many-headers", &format!("GET /web/{{T}}/a HTTP/1.1\r\n{H}{many}\r\n"))
            .differs("the ingress takes at most 100 fields (431); nginx has no count limit"),
        v("long-target", &format!("GET /web/{{T}}/{long_target} HTTP/1.1\r\n{H}\r\n"))
            .differs("nginx's request line buffer is 8 KiB (414); the ingress takes heads up to 64 KiB"),
        // Pipelining after a bad message: nothing after it is served.
        v("pipelined-after-bad", &format!("GET /web/{{T}}/a HTTP/1.1\r\n{H}\r\nGET /web/{{T}}/b HTTP/1.1\r\n{H}Content-Length: x\r\n\r\nGET /web/{{T}}/c HTTP/1.1\r\n{H}\r\n")),
        v("pipelined-after-cl-te", &format!("POST /web/{{T}}/a HTTP/1.1\r\n{H}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /web/{{T}}/b HTTP/1.1\r\n{H}\r\n")),
        v("pipelined-after-unknown-te", &format!("POST /web/{{T}}/a HTTP/1.1\r\n{H}Transfer-Encoding: gzip\r\n\r\n0\r\n\r\nGET /web/{{T}}/b HTTP/1.1\r\n{H}\r\n")),
        // Bodies cut short (the client closes its sending side).
        v("body-shorter-than-length", &format!("POST /web/{{T}}/a HTTP/1.1\r\n{H}Content-Length: 10\r\n\r\nabc"))
            .differs("the client closed before the end of its body: the ingress says 400 (it may still read); nginx closes without an answer"),
        v("chunked-unfinished", &format!("POST /web/{{T}}/a HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"))
            .differs("the client closed before the end of its body: the ingress says 400 (it may still read); nginx closes without an answer"),
        v("head-unfinished", &format!("GET /web/{{T}}/a HTTP/1.1\r\n{H}X-A: b")),
        // Upgrades the backend does not take.
        v("upgrade-websocket", &format!("GET /web/{{T}}/a HTTP/1.1\r\n{H}Connection: Upgrade\r\nUpgrade: websocket\r\n\r\nGET /web/{{T}}/b HTTP/1.1\r\n{H}\r\n")),
        v("upgrade-h2c", &format!("GET /web/{{T}}/a HTTP/1.1\r\n{H}Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")),
    ]
}

/// nginx in front of `backend`, with a config of its own in `dir`: keep-alive upstream
/// connections over HTTP/1.1, no request buffering (the ingress streams bodies too).
struct Nginx {
    child: std::process::Child,
    addr: SocketAddr,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const NGINX: &str = "/usr/sbin/nginx";

async fn start_nginx(dir: &std::path::Path, backend: SocketAddr) -> Nginx {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = dir.display();
    let config = format!(
        "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
         events {{ worker_connections 512; }}\n\
         http {{\n  access_log off;\n\
           client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
           fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
           upstream web {{ server {backend}; keepalive 8; }}\n\
           server {{\n    listen 127.0.0.1:{port};\n\
             location / {{\n      proxy_pass http://web;\n      proxy_http_version 1.1;\n\
               proxy_set_header Connection \"\";\n      proxy_set_header Host $host;\n\
               proxy_request_buffering off;\n      proxy_ignore_client_abort on;\n    }}\n  }}\n}}\n"
    );
    std::fs::write(dir.join("nginx.conf"), config).unwrap();
    let child = std::process::Command::new(NGINX)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-e")
        .arg(dir.join("error.log"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("nginx starts");
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let nginx = Nginx { child, addr };
    let start = std::time::Instant::now();
    while TcpStream::connect(addr).await.is_err() {
        assert!(
            start.elapsed() < common::DEADLINE,
            "nginx never listened on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    nginx
}

fn statuses(answers: &[Answer]) -> Vec<u16> {
    answers.iter().map(|a| a.status).collect()
}

/// Answers for a request whose method the client never sent: bytes left over on a
/// backend connection became the start of a request (`abcPOST`).
fn foreign_methods(answers: &[Answer], sent: &[u8]) -> Vec<String> {
    answers
        .iter()
        .filter_map(|a| a.seen.as_deref())
        .filter(|seen| {
            let method = seen.split(' ').next().unwrap_or("");
            let needle = format!("{method} ");
            !sent.windows(needle.len()).any(|w| w == needle.as_bytes())
        })
        .map(str::to_string)
        .collect()
}

/// The targets the client's answers came from (the backend's echo), sorted.
fn answered_for(answers: &[Answer]) -> Vec<String> {
    let mut list: Vec<String> = answers.iter().filter_map(|a| a.seen.clone()).collect();
    list.sort();
    list
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_corpus_smuggles_nothing_through_the_ingress_and_matches_nginx() {
    let corpus = corpus();
    assert!(corpus.len() >= 60, "{} vectors", corpus.len());
    let dir = tempfile::tempdir().unwrap();
    let ingress_backend = RawBackend::start().await;
    let ingress = ingress_for(&ingress_backend, &dir.path().join("ingress"), 2).await;
    let nginx_backend = RawBackend::start().await;
    let nginx = if std::path::Path::new(NGINX).exists() {
        let nginx_dir = dir.path().join("nginx");
        std::fs::create_dir(&nginx_dir).unwrap();
        Some(start_nginx(&nginx_dir, nginx_backend.addr).await)
    } else {
        eprintln!(
            "nginx is missing ({NGINX}; scripts/setup.sh installs it): checking the ingress alone"
        );
        None
    };

    // What each backend parsed during a vector and its victim, without the victim's.
    let window = |backend: &RawBackend, from: usize, victim: &str| -> Vec<String> {
        let mut list: Vec<String> = backend.targets()[from..]
            .iter()
            .filter(|t| *t != victim)
            .cloned()
            .collect();
        list.sort();
        list
    };
    let mut results = Vec::new();
    for (i, vector) in corpus.iter().enumerate() {
        let tag = tag(i as u64);
        let bytes = vector.bytes_for(&tag);
        let from = ingress_backend.targets().len();
        let Some(ours) = try_exchange(ingress.addr(), &bytes).await else {
            panic!("{}: the ingress neither answered nor closed", vector.name);
        };
        let ours = parse_answers(&ours);
        let path = format!("/web/victim-{tag}/ingress");
        let victim_ours = victim(ingress.addr(), &path).await;
        let mine = format!("GET {path}");
        let parsed = window(&ingress_backend, from, &mine);
        let foreign = foreign_methods(&ours, &bytes);
        assert!(
            foreign.is_empty(),
            "{}: answers for requests the client never sent: {foreign:?}",
            vector.name
        );
        assert_eq!(
            answered_for(&victim_ours),
            std::slice::from_ref(&mine),
            "{}: a client after it got another's answer: {victim_ours:?}",
            vector.name
        );
        let theirs = match &nginx {
            Some(nginx) => {
                let from = nginx_backend.targets().len();
                let answers = parse_answers(&exchange(nginx.addr, &bytes).await);
                let path = format!("/web/victim-{tag}/nginx");
                let victim_theirs = victim(nginx.addr, &path).await;
                let victim_target = format!("GET {path}");
                if answered_for(&victim_theirs) != std::slice::from_ref(&victim_target) {
                    eprintln!(
                        "note: {}: behind nginx a later client got {victim_theirs:?}",
                        vector.name
                    );
                }
                Some((answers, window(&nginx_backend, from, &victim_target)))
            }
            None => None,
        };
        results.push((parsed, ours, theirs));
    }
    let victims = ingress_backend
        .targets()
        .iter()
        .filter(|t| t.contains("/victim-"))
        .count();
    assert_eq!(
        victims,
        corpus.len(),
        "every victim reached the backend once"
    );

    // Every request the backend parsed behind the ingress is one the ingress accepted
    // and answered to the client that sent it; nothing unparsable reached it.
    let mut failures = Vec::new();
    let mut table = String::from("vector | ingress | nginx | documented reason\n");
    for (vector, (parsed, ours, theirs)) in corpus.iter().zip(&results) {
        let answered = answered_for(ours);
        if *parsed != answered {
            failures.push(format!(
                "{}: the backend parsed {parsed:?}, the client was answered for {answered:?}",
                vector.name
            ));
        }
        let Some((theirs, nginx_parsed)) = theirs else {
            continue;
        };
        if *nginx_parsed != answered_for(theirs) {
            eprintln!(
                "note: {}: behind nginx the backend parsed {nginx_parsed:?}, the client got {:?}",
                vector.name,
                answered_for(theirs)
            );
        }
        let (a, b) = (statuses(ours), statuses(theirs));
        if a != b {
            table.push_str(&format!(
                "{} | {a:?} | {b:?} | {}\n",
                vector.name,
                vector.differs.unwrap_or("UNDOCUMENTED")
            ));
            if vector.differs.is_none() {
                failures.push(format!(
                    "{}: the ingress answered {a:?}, nginx {b:?} (document why, or match nginx)",
                    vector.name
                ));
            }
        } else if vector.differs.is_some() {
            table.push_str(&format!(
                "{} | {a:?} | same | (documented, but the same now)\n",
                vector.name
            ));
        }
    }
    let garbage = ingress_backend.garbage();
    if !garbage.is_empty() {
        failures.push(format!(
            "the backend behind the ingress could not parse {garbage:?}"
        ));
    }
    eprintln!("{table}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------
// Fuzzing: byte mutations of valid requests, for a few seconds, with a fixed seed.

/// Panics in the ingress's code (not in the tests' own asserts).
static INGRESS_PANICS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn count_ingress_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info
            .location()
            .is_some_and(|l| !l.file().contains("tests/"))
        {
            INGRESS_PANICS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        default(info);
    }));
}

/// Pieces a mutation inserts anywhere: separators, framing, a whole request.
const TOKENS: &[&str] = &[
    "\r\n",
    "\n",
    "\r",
    "\0",
    " ",
    "\t",
    ":",
    ",",
    ";",
    "0",
    "f",
    "0\r\n\r\n",
    "GET /web/{T}/smuggled HTTP/1.1\r\nHost: web.localhost\r\n\r\n",
];

/// Header lines a mutation inserts at the start of a line of the head.
const FIELDS: &[&str] = &[
    "Transfer-Encoding: chunked\r\n",
    "Transfer-Encoding: identity\r\n",
    "Content-Length: 5\r\n",
    "Content-Length: 0\r\n",
    "Connection: content-length\r\n",
    "Connection: transfer-encoding\r\n",
    "Connection: close\r\n",
    "Host: web.localhost\r\n",
    "Expect: 100-continue\r\n",
    "Transfer_Encoding: chunked\r\n",
];

fn mutate(rng: &mut impl rand::Rng, input: &mut Vec<u8>, tag: &str) {
    for _ in 0..rng.random_range(1..=3) {
        let at = rng.random_range(0..=input.len());
        match rng.random_range(0..7) {
            0 if at < input.len() => input[at] = rng.random(),
            1 if at < input.len() => {
                input.remove(at);
            }
            2 => {
                let token = TOKENS[rng.random_range(0..TOKENS.len())].replace("{T}", tag);
                input.splice(at..at, token.into_bytes());
            }
            3 if at < input.len() => {
                // A slice of the input again, somewhere else.
                let end = rng.random_range(at..=input.len().min(at + 64));
                let piece = input[at..end].to_vec();
                let to = rng.random_range(0..=input.len());
                input.splice(to..to, piece);
            }
            4 | 5 => {
                // A field at the start of a line of the first head.
                let head_end = input
                    .windows(4)
                    .position(|w| w == b"\r\n\r\n")
                    .unwrap_or(input.len());
                let lines: Vec<usize> = (1..head_end).filter(|&i| input[i - 1] == b'\n').collect();
                if let Some(&at) = lines.get(rng.random_range(0..lines.len().max(1))) {
                    let field = FIELDS[rng.random_range(0..FIELDS.len())];
                    input.splice(at..at, field.bytes());
                }
            }
            _ => {
                const BYTES: &[u8] = b"\r\n\0 \t:;,0aF-";
                let byte = BYTES[rng.random_range(0..BYTES.len())];
                input.insert(at, byte);
            }
        }
    }
}

fn escaped(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_requests_never_desync_the_backend_nor_panic() {
    count_ingress_panics();
    // A fixed seed, so a failure repeats; TWELVE_FUZZ_SEED and TWELVE_FUZZ_SECS explore more.
    let seed: u64 = std::env::var("TWELVE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x7477_656c_7665);
    let secs: f64 = std::env::var("TWELVE_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let seeds: Vec<Vector> = corpus()
        .into_iter()
        .filter(|v| {
            [
                "get",
                "post-length",
                "post-chunked",
                "pipelined",
                "http10-keep-alive",
                "expect-continue",
                "chunk-extension",
                "chunk-trailer",
                "chunk-then-pipelined",
                "cl-body-holds-request",
                "chunk-body-holds-request",
                "connection-keep-alive-te",
                "absolute-form",
                "get-with-body",
            ]
            .contains(&v.name)
        })
        .collect();
    assert_eq!(seeds.len(), 14);

    let dir = tempfile::tempdir().unwrap();
    let backend = RawBackend::start().await;
    let ingress = ingress_for(&backend, dir.path(), 2).await;
    let addr = ingress.addr();
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
    let start = std::time::Instant::now();
    let mut inputs = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        let tag = tag(inputs);
        let seed_vector = &seeds[rand::Rng::random_range(&mut rng, 0..seeds.len())];
        let mut input = seed_vector.bytes_for(&tag);
        mutate(&mut rng, &mut input, &tag);
        let from = backend.targets().len();
        let Some(answers) = try_exchange(addr, &input).await else {
            panic!(
                "the ingress neither answered nor closed; seed {seed}, input {inputs}: \"{}\"",
                escaped(&input)
            );
        };
        let answers = parse_answers(&answers);
        let path = format!("/web/victim-{tag}");
        let victim_answers = victim(addr, &path).await;
        let mine = format!("GET {path}");
        let parsed: Vec<String> = {
            let mut list: Vec<String> = backend.targets()[from..]
                .iter()
                .filter(|t| **t != mine)
                .cloned()
                .collect();
            list.sort();
            list
        };
        let context = format!(
            "seed {seed}, input {inputs} (from {}): \"{}\"",
            seed_vector.name,
            escaped(&input)
        );
        assert_eq!(
            answered_for(&victim_answers),
            std::slice::from_ref(&mine),
            "a later client got another's answer; {context}"
        );
        let foreign = foreign_methods(&answers, &input);
        assert!(
            foreign.is_empty(),
            "answers for requests the client never sent: {foreign:?}; {context}"
        );
        assert_eq!(
            parsed,
            answered_for(&answers),
            "the backend parsed requests the ingress did not answer for; {context}; answers {answers:?}"
        );
        assert!(
            backend.garbage().is_empty(),
            "the backend could not parse {:?}; {context}",
            backend.garbage()
        );
        inputs += 1;
    }
    assert_eq!(INGRESS_PANICS.load(std::sync::atomic::Ordering::SeqCst), 0);
    eprintln!("fuzz: {inputs} mutated inputs in {secs} s, seed {seed}, no desync, no panic");
    assert!(inputs > 50, "only {inputs} inputs in {secs} s");
}

// ---------------------------------------------------------------------------------------
// The same corpus over TLS: HTTP/1 over TLS is served by the same code as plain HTTP
// (`h1.rs`), so it must parse, answer and forward every vector as plain HTTP does.

/// A client for the HTTPS listener: SNI `web.localhost`, ALPN http/1.1, trusting `ca`.
fn tls_connector(ca: &std::path::Path) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// [`try_exchange`] over TLS: sends `bytes`, closes the sending side (close_notify), reads
/// until the server closes.
async fn try_exchange_tls(
    tls: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
    bytes: &[u8],
) -> Option<Vec<u8>> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("web.localhost").unwrap();
    let mut stream = tls.connect(name, tcp).await.unwrap();
    assert_eq!(
        stream.get_ref().1.alpn_protocol(),
        Some(&b"http/1.1"[..]),
        "ALPN"
    );
    let _ = stream.write_all(bytes).await;
    let _ = stream.shutdown().await;
    let mut got = Vec::new();
    let read = async {
        let mut buf = vec![0u8; 16 * 1024];
        // A server closing without close_notify is an error here, not a different answer.
        while let Ok(n @ 1..) = stream.read(&mut buf).await {
            got.extend_from_slice(&buf[..n]);
        }
    };
    match tokio::time::timeout(ANSWER_DEADLINE, read).await {
        Err(_) => None,
        Ok(()) => Some(got),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_corpus_is_answered_the_same_over_tls_as_over_plain_http() {
    let corpus = corpus();
    let dir = tempfile::tempdir().unwrap();
    let pki = tempfile::tempdir().unwrap();
    let ca = common::pki::make_ca(pki.path());
    let (cert, key) = common::pki::make_leaf_files(pki.path(), "web", &["web.localhost"], 30);
    let backend = RawBackend::start().await;
    let mut config = IngressConfig::new(dir.path());
    config.port = 0;
    config.workers = 2;
    config.https = Some("127.0.0.1:0".parse().unwrap());
    let ingress = IngressHandle::start(config).await.unwrap();
    let mut routes = table(vec![(
        "web",
        app(Policy::RoundRobin, vec![backend.route()]),
    )]);
    routes.certificates = vec![twelve_ingress::Certificate {
        cert_pem: std::fs::read_to_string(cert).unwrap(),
        key_pem: std::fs::read_to_string(key).unwrap(),
    }];
    ingress.set_routes(routes).unwrap();
    let (plain, https) = (ingress.addr(), ingress.https_addr().unwrap());
    let tls = tls_connector(&ca);

    // What the backend parsed since `from`, sorted.
    let since = |from: usize| -> Vec<String> {
        let mut list = backend.targets()[from..].to_vec();
        list.sort();
        list
    };
    let mut failures = Vec::new();
    for (i, vector) in corpus.iter().enumerate() {
        // The same tag both ways: the same targets reach the backend.
        let bytes = vector.bytes_for(&tag(i as u64));
        let from = backend.targets().len();
        let Some(over_plain) = try_exchange(plain, &bytes).await else {
            panic!("{}: the ingress neither answered nor closed", vector.name);
        };
        let parsed_plain = since(from);
        let from = backend.targets().len();
        let Some(over_tls) = try_exchange_tls(&tls, https, &bytes).await else {
            panic!(
                "{}: over TLS the ingress neither answered nor closed",
                vector.name
            );
        };
        let parsed_tls = since(from);
        let (over_plain, over_tls) = (parse_answers(&over_plain), parse_answers(&over_tls));
        let foreign = foreign_methods(&over_tls, &bytes);
        if !foreign.is_empty() {
            failures.push(format!(
                "{}: over TLS, answers for requests the client never sent: {foreign:?}",
                vector.name
            ));
        }
        if statuses(&over_plain) != statuses(&over_tls) {
            failures.push(format!(
                "{}: plain HTTP answered {:?}, TLS {:?}",
                vector.name,
                statuses(&over_plain),
                statuses(&over_tls)
            ));
        }
        if parsed_plain != parsed_tls || answered_for(&over_tls) != parsed_tls {
            failures.push(format!(
                "{}: the backend parsed {parsed_plain:?} from plain HTTP, {parsed_tls:?} from \
                 TLS, whose client was answered for {:?}",
                vector.name,
                answered_for(&over_tls)
            ));
        }
    }
    let garbage = backend.garbage();
    assert!(
        garbage.is_empty(),
        "the backend could not parse {garbage:?}"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
