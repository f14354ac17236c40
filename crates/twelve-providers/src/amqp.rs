//! A very small AMQP 0-9-1 client: enough to log in to a vhost (liveness and credential
//! checks) and, for tests, to publish and fetch a message.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Why logging in to a broker failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AmqpLoginError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("login refused (wrong username or password, or the user does not exist)")]
    AuthFailed,
    #[error("access to vhost `{vhost}` refused: {reply}")]
    VhostDenied { vhost: String, reply: String },
    #[error("the broker closed the channel: {0}")]
    ChannelClosed(String),
    #[error("AMQP protocol error: {0}")]
    Protocol(String),
    #[error("invalid AMQP URL: {0}")]
    InvalidUrl(String),
}

type R<T> = std::result::Result<T, AmqpLoginError>;

/// Open a connection to the URL's vhost with its credentials, then close it.
pub async fn amqp_login(url: &str) -> R<()> {
    let mut c = AmqpConn::open(url).await?;
    c.close().await;
    Ok(())
}

pub(crate) struct Parsed {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub vhost: String,
}

pub(crate) fn parse_url(raw: &str) -> R<Parsed> {
    let u = url::Url::parse(raw).map_err(|e| AmqpLoginError::InvalidUrl(e.to_string()))?;
    if u.scheme() != "amqp" {
        return Err(AmqpLoginError::InvalidUrl(
            "the scheme must be amqp:// (TLS is not supported)".into(),
        ));
    }
    let (host, port) = crate::util::host_port(&u, 5672);
    let path = u.path().strip_prefix('/').unwrap_or(u.path());
    Ok(Parsed {
        host,
        port,
        user: if u.username().is_empty() {
            "guest".into()
        } else {
            crate::util::percent_decode(u.username())
        },
        password: u
            .password()
            .map(crate::util::percent_decode)
            .unwrap_or_else(|| "guest".into()),
        vhost: if path.is_empty() {
            "/".into()
        } else {
            crate::util::percent_decode(path)
        },
    })
}

/// An open AMQP connection (channel 1 opened on demand).
#[doc(hidden)]
pub struct AmqpConn {
    sock: TcpStream,
    channel_open: bool,
}

struct Frame {
    kind: u8,
    payload: Vec<u8>,
}

#[derive(Default)]
struct Buf(Vec<u8>);

impl Buf {
    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn short(&mut self, s: &str) -> &mut Self {
        let b = &s.as_bytes()[..s.len().min(255)];
        self.u8(b.len() as u8);
        self.0.extend_from_slice(b);
        self
    }
    fn long(&mut self, b: &[u8]) -> &mut Self {
        self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
        self
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> R<&[u8]> {
        if self.0.len() < n {
            return Err(AmqpLoginError::Protocol("short frame".into()));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u16(&mut self) -> R<u16> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> R<u32> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn short(&mut self) -> R<String> {
        let n = self.take(1)?[0] as usize;
        Ok(String::from_utf8_lossy(self.take(n)?).into_owned())
    }
}

const TIMEOUT: Duration = Duration::from_secs(10);

impl AmqpConn {
    /// Connect and open the URL's vhost.
    pub async fn open(url: &str) -> R<AmqpConn> {
        let p = parse_url(url)?;
        let sock = tokio::time::timeout(TIMEOUT, TcpStream::connect((p.host.as_str(), p.port)))
            .await
            .map_err(|_| AmqpLoginError::Connect("timed out".into()))?
            .map_err(|e| AmqpLoginError::Connect(e.to_string()))?;
        let mut c = AmqpConn {
            sock,
            channel_open: false,
        };
        c.write_raw(b"AMQP\x00\x00\x09\x01").await?;
        let (class, method, _) = c.method(0).await?;
        if (class, method) != (10, 10) {
            return Err(AmqpLoginError::Protocol("expected Connection.Start".into()));
        }
        let mut response = vec![0u8];
        response.extend_from_slice(p.user.as_bytes());
        response.push(0);
        response.extend_from_slice(p.password.as_bytes());
        let mut b = Buf::default();
        b.u16(10)
            .u16(11)
            .u32(0)
            .short("PLAIN")
            .long(&response)
            .short("en_US");
        c.send_method(0, &b.0).await?;
        let (class, method, args) = match c.method(0).await {
            Ok(m) => m,
            // Without the authentication_failure_close capability the broker just hangs up.
            Err(AmqpLoginError::Connect(_)) => return Err(AmqpLoginError::AuthFailed),
            Err(e) => return Err(e),
        };
        match (class, method) {
            (10, 30) => {}
            (10, 50) => return Err(AmqpLoginError::AuthFailed),
            _ => return Err(AmqpLoginError::Protocol("expected Connection.Tune".into())),
        }
        let mut r = Reader(&args);
        let channel_max = r.u16()?;
        let frame_max = r.u32()?;
        let mut b = Buf::default();
        b.u16(10).u16(31).u16(channel_max).u32(frame_max).u16(0);
        c.send_method(0, &b.0).await?;
        let mut b = Buf::default();
        b.u16(10).u16(40).short(&p.vhost).short("").u8(0);
        c.send_method(0, &b.0).await?;
        let (class, method, args) = match c.method(0).await {
            Ok(m) => m,
            Err(AmqpLoginError::Connect(e)) => {
                return Err(AmqpLoginError::VhostDenied {
                    vhost: p.vhost,
                    reply: e,
                })
            }
            Err(e) => return Err(e),
        };
        match (class, method) {
            (10, 41) => Ok(c),
            (10, 50) => Err(AmqpLoginError::VhostDenied {
                vhost: p.vhost,
                reply: close_reason(&args),
            }),
            _ => Err(AmqpLoginError::Protocol(
                "expected Connection.Open-Ok".into(),
            )),
        }
    }

    async fn write_raw(&mut self, b: &[u8]) -> R<()> {
        tokio::time::timeout(TIMEOUT, self.sock.write_all(b))
            .await
            .map_err(|_| AmqpLoginError::Connect("timed out".into()))?
            .map_err(|e| AmqpLoginError::Connect(e.to_string()))
    }

    async fn send_frame(&mut self, kind: u8, channel: u16, payload: &[u8]) -> R<()> {
        let mut b = Buf::default();
        b.u8(kind).u16(channel).long(payload).u8(0xCE);
        self.write_raw(&b.0).await
    }

    async fn send_method(&mut self, channel: u16, payload: &[u8]) -> R<()> {
        self.send_frame(1, channel, payload).await
    }

    async fn read_frame(&mut self) -> R<Frame> {
        let read = async {
            let mut head = [0u8; 7];
            self.sock.read_exact(&mut head).await?;
            let size = u32::from_be_bytes(head[3..7].try_into().unwrap()) as usize;
            let mut payload = vec![0u8; size + 1];
            self.sock.read_exact(&mut payload).await?;
            payload.pop();
            Ok::<Frame, std::io::Error>(Frame {
                kind: head[0],
                payload,
            })
        };
        tokio::time::timeout(TIMEOUT, read)
            .await
            .map_err(|_| AmqpLoginError::Connect("timed out".into()))?
            .map_err(|e| AmqpLoginError::Connect(format!("connection closed: {e}")))
    }

    /// The next method frame (skipping heartbeats): class, method, arguments.
    async fn method(&mut self, _channel: u16) -> R<(u16, u16, Vec<u8>)> {
        loop {
            let f = self.read_frame().await?;
            match f.kind {
                8 => continue,
                1 => {
                    let mut r = Reader(&f.payload);
                    let class = r.u16()?;
                    let method = r.u16()?;
                    return Ok((class, method, r.0.to_vec()));
                }
                k => {
                    return Err(AmqpLoginError::Protocol(format!(
                        "unexpected frame type {k}"
                    )))
                }
            }
        }
    }

    async fn ensure_channel(&mut self) -> R<()> {
        if self.channel_open {
            return Ok(());
        }
        let mut b = Buf::default();
        b.u16(20).u16(10).short("");
        self.send_method(1, &b.0).await?;
        self.expect(20, 11).await?;
        self.channel_open = true;
        Ok(())
    }

    async fn expect(&mut self, class: u16, method: u16) -> R<Vec<u8>> {
        let (c, m, args) = self.method(1).await?;
        match (c, m) {
            (c2, m2) if (c2, m2) == (class, method) => Ok(args),
            (20, 40) | (10, 50) => {
                self.channel_open = false;
                Err(AmqpLoginError::ChannelClosed(close_reason(&args)))
            }
            _ => Err(AmqpLoginError::Protocol(format!(
                "expected {class}.{method}, got {c}.{m}"
            ))),
        }
    }

    /// Declare a durable queue on channel 1.
    pub async fn queue_declare(&mut self, queue: &str) -> R<()> {
        self.ensure_channel().await?;
        let mut b = Buf::default();
        b.u16(50).u16(10).u16(0).short(queue).u8(0b10).u32(0);
        self.send_method(1, &b.0).await?;
        self.expect(50, 11).await.map(|_| ())
    }

    /// Publish `body` (persistent) to `queue` through the default exchange.
    pub async fn publish(&mut self, queue: &str, body: &[u8]) -> R<()> {
        self.ensure_channel().await?;
        let mut b = Buf::default();
        b.u16(60).u16(40).u16(0).short("").short(queue).u8(0);
        self.send_method(1, &b.0).await?;
        let mut h = Buf::default();
        // Property flags: delivery-mode only, 2 = persistent.
        h.u16(60).u16(0).u64(body.len() as u64).u16(0x1000).u8(2);
        self.send_frame(2, 1, &h.0).await?;
        self.send_frame(3, 1, body).await
    }

    /// Fetch one message from `queue` (auto-ack), or None when it is empty.
    pub async fn get(&mut self, queue: &str) -> R<Option<Vec<u8>>> {
        self.ensure_channel().await?;
        let mut b = Buf::default();
        b.u16(60).u16(70).u16(0).short(queue).u8(1);
        self.send_method(1, &b.0).await?;
        let (c, m, args) = self.method(1).await?;
        match (c, m) {
            (60, 72) => Ok(None),
            (60, 71) => {
                let head = self.read_frame().await?;
                if head.kind != 2 || head.payload.len() < 12 {
                    return Err(AmqpLoginError::Protocol("expected a content header".into()));
                }
                let size = u64::from_be_bytes(head.payload[4..12].try_into().unwrap()) as usize;
                let mut body = Vec::with_capacity(size);
                while body.len() < size {
                    let f = self.read_frame().await?;
                    if f.kind != 3 {
                        return Err(AmqpLoginError::Protocol("expected a body frame".into()));
                    }
                    body.extend_from_slice(&f.payload);
                }
                Ok(Some(body))
            }
            (20, 40) | (10, 50) => {
                self.channel_open = false;
                Err(AmqpLoginError::ChannelClosed(close_reason(&args)))
            }
            _ => Err(AmqpLoginError::Protocol(format!("unexpected {c}.{m}"))),
        }
    }

    /// Close the connection politely (errors ignored).
    pub async fn close(&mut self) {
        let mut b = Buf::default();
        b.u16(10).u16(50).u16(200).short("bye").u16(0).u16(0);
        if self.send_method(0, &b.0).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), self.method(0)).await;
        }
        let _ = self.sock.shutdown().await;
    }
}

fn close_reason(args: &[u8]) -> String {
    let mut r = Reader(args);
    match (r.u16(), r.short()) {
        (Ok(code), Ok(text)) => format!("{code} {text}"),
        _ => "closed".into(),
    }
}
