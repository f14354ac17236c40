//! The listeners: statsd over UDP (one packet, several lines) and TCP (one line per `\n`) on
//! one address, and HTTP serving the exposition on `/metrics`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::http::header::CONTENT_TYPE;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::Router;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use crate::line::{parse_line, parse_packet};
use crate::registry::Registry;

pub const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Where the exporter listens and how it names gunicorn's metrics.
#[derive(Debug, Clone)]
pub struct Config {
    /// statsd over UDP; `None` for none.
    pub statsd_udp: Option<SocketAddr>,
    /// statsd over TCP; `None` for none.
    pub statsd_tcp: Option<SocketAddr>,
    /// The HTTP address of `/metrics`.
    pub web: SocketAddr,
    /// The path of the exposition (default `/metrics`).
    pub metrics_path: String,
    /// The framework prefix of the gunicorn mapping (`flask`, `django`).
    pub prefix: String,
}

pub type Shared = Arc<Mutex<Registry>>;

/// Binds every listener (failing early if one is taken), then serves until an error.
pub async fn serve(config: Config) -> std::io::Result<()> {
    let registry: Shared = Arc::new(Mutex::new(Registry::new(&config.prefix)));
    let bound = Bound::bind(&config).await?;
    bound.run(registry, &config.metrics_path).await
}

/// The bound sockets, so a caller (or a test) knows the ports before serving.
pub struct Bound {
    pub udp: Option<UdpSocket>,
    pub tcp: Option<TcpListener>,
    pub web: TcpListener,
}

impl Bound {
    pub async fn bind(config: &Config) -> std::io::Result<Bound> {
        let named = |what: &'static str, addr: SocketAddr| {
            move |e: std::io::Error| std::io::Error::new(e.kind(), format!("{what} {addr}: {e}"))
        };
        let udp = match config.statsd_udp {
            Some(a) => Some(
                UdpSocket::bind(a)
                    .await
                    .map_err(named("cannot listen for statsd on UDP", a))?,
            ),
            None => None,
        };
        let tcp = match config.statsd_tcp {
            Some(a) => Some(
                TcpListener::bind(a)
                    .await
                    .map_err(named("cannot listen for statsd on TCP", a))?,
            ),
            None => None,
        };
        let web = TcpListener::bind(config.web)
            .await
            .map_err(named("cannot serve metrics on", config.web))?;
        Ok(Bound { udp, tcp, web })
    }

    pub async fn run(self, registry: Shared, metrics_path: &str) -> std::io::Result<()> {
        if let Some(udp) = self.udp {
            tokio::spawn(udp_loop(udp, registry.clone()));
        }
        if let Some(tcp) = self.tcp {
            tokio::spawn(tcp_loop(tcp, registry.clone()));
        }
        axum::serve(self.web, router(registry, metrics_path)).await
    }
}

/// `/metrics` (or the given path) and a landing page at `/`.
pub fn router(registry: Shared, metrics_path: &str) -> Router {
    let page = format!(
        "<html><head><title>StatsD Exporter</title></head><body><h1>StatsD Exporter</h1>\
         <p><a href=\"{metrics_path}\">Metrics</a></p></body></html>"
    );
    Router::new()
        .route(
            metrics_path,
            get(move || {
                let text = lock(&registry).render(Instant::now());
                async move { ([(CONTENT_TYPE, CONTENT_TYPE_TEXT)], text).into_response() }
            }),
        )
        .route("/", get(move || async move { Html(page) }))
}

fn lock(r: &Shared) -> std::sync::MutexGuard<'_, Registry> {
    r.lock().unwrap_or_else(|e| e.into_inner())
}

async fn udp_loop(socket: UdpSocket, registry: Shared) {
    let mut buf = vec![0u8; 65535];
    loop {
        let n = match socket.recv_from(&mut buf).await {
            Ok((n, _)) => n,
            Err(e) => {
                eprintln!("statsd-exporter: UDP receive failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let text = String::from_utf8_lossy(&buf[..n]);
        let lines = text.split('\n').filter(|l| !l.is_empty()).count() as u64;
        let parsed = parse_packet(&text);
        let mut r = lock(&registry);
        r.count_udp_packet();
        r.handle(parsed, lines, Instant::now());
    }
}

async fn tcp_loop(listener: TcpListener, registry: Shared) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                lock(&registry).count_tcp_connection();
                tokio::spawn(tcp_conn(stream, registry.clone()));
            }
            Err(e) => {
                eprintln!("statsd-exporter: TCP accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn tcp_conn(stream: TcpStream, registry: Shared) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        let parsed = parse_line(line);
        lock(&registry).handle(parsed, 1, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get_metrics(port: u16) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).await.unwrap();
        buf
    }

    #[tokio::test]
    async fn udp_and_tcp_lines_reach_the_metrics_page() {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let config = Config {
            statsd_udp: Some(any),
            statsd_tcp: Some(any),
            web: any,
            metrics_path: "/metrics".into(),
            prefix: "flask".into(),
        };
        let bound = Bound::bind(&config).await.unwrap();
        let udp_addr = bound.udp.as_ref().unwrap().local_addr().unwrap();
        let tcp_addr = bound.tcp.as_ref().unwrap().local_addr().unwrap();
        let web_port = bound.web.local_addr().unwrap().port();
        let registry: Shared = Arc::new(Mutex::new(Registry::new("flask")));
        tokio::spawn(bound.run(registry, "/metrics"));

        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client
            .send_to(
                b"gunicorn.requests:1|c|@1.0\ngunicorn.request.status.200:1|c|@1.0",
                udp_addr,
            )
            .await
            .unwrap();
        let mut tcp = TcpStream::connect(tcp_addr).await.unwrap();
        tcp.write_all(b"gunicorn.requests:2|c\nmy.gauge:5|g\n")
            .await
            .unwrap();
        tcp.flush().await.unwrap();

        // Delivery is asynchronous: poll, with a generous limit.
        let mut page = String::new();
        for _ in 0..300 {
            page = get_metrics(web_port).await;
            if page.contains("\nflask_requests 3\n") && page.contains("\nmy_gauge 5\n") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(page.starts_with("HTTP/1.0 200") || page.starts_with("HTTP/1.1 200"));
        assert!(
            page.contains("content-type: text/plain; version=0.0.4"),
            "{page}"
        );
        assert!(page.contains("\nflask_requests 3\n"), "{page}");
        assert!(
            page.contains("\nflask_response_code{status=\"200\"} 1\n"),
            "{page}"
        );
        assert!(page.contains("\nmy_gauge 5\n"), "{page}");
        assert!(page.contains("statsd_exporter_udp_packets_total 1\n"));
        assert!(page.contains("statsd_exporter_tcp_connections_total 1\n"));
    }

    #[tokio::test]
    async fn a_taken_port_is_a_clear_error() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        let config = Config {
            statsd_udp: None,
            statsd_tcp: None,
            web: addr,
            metrics_path: "/metrics".into(),
            prefix: "flask".into(),
        };
        let err = Bound::bind(&config).await.err().unwrap();
        assert!(
            err.to_string()
                .starts_with(&format!("cannot serve metrics on {addr}")),
            "{err}"
        );
    }
}
