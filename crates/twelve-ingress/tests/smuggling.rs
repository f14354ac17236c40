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
    /// Request targets, in the order they were parsed.
    targets: Vec<String>,
    /// Bytes it could not parse as a request (the connection was closed after them).
    garbage: Vec<String>,
}

/// A backend reading HTTP/1.1 requests the way a lenient server does: a request is chunked
/// when any `Transfer-Encoding` mentions `chunked`, else as long as its first
/// `Content-Length` says. It answers each request in turn on its connection (keep-alive),
/// with `x-seen: <target>`; a target containing `/slow` is answered after 300 ms.
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
    let target = req.path.unwrap_or("").to_string();
    let mut chunked = false;
    let mut length: Option<usize> = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding")
            && String::from_utf8_lossy(h.value)
                .to_ascii_lowercase()
                .contains("chunked")
        {
            chunked = true;
        }
        if h.name.eq_ignore_ascii_case("content-length") && length.is_none() {
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
                buf.drain(..used);
                record.lock().unwrap().targets.push(target.clone());
                if target.contains("/slow") {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                let body = format!("seen {target}\n");
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nx-seen: {target}\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
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
                    record.lock().unwrap().garbage.push(text);
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
/// closes (or [`ANSWER_DEADLINE`]).
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(bytes).await;
    let _ = stream.shutdown().await;
    let mut got = Vec::new();
    let _ = tokio::time::timeout(ANSWER_DEADLINE, stream.read_to_end(&mut got)).await;
    got
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
    let first = common::read_until(&mut stream, "seen /first\n").await;
    assert!(first.contains("x-seen: /first\r\n"), "{first}");

    let second = victim(addr, "/second").await;
    assert_eq!(
        second,
        vec![Answer {
            status: 200,
            seen: Some("/second".into())
        }],
        "the second client got someone else's answer"
    );
    assert_eq!(backend.targets(), ["/first", "/second"]);
    assert!(backend.garbage().is_empty(), "{:?}", backend.garbage());
    drop(stream);
}
