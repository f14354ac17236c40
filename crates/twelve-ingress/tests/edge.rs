//! The public edge in-process: users' domains, maintenance mode, and HTTPS with
//! certificates made by openssl, checked with curl (HTTP/1.1 and HTTP/2 over TLS) and
//! `openssl s_client` (ALPN, SNI).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use common::pki::{make_ca, make_leaf_files};
use common::*;
use hyper::StatusCode;
use twelve_ingress::{BackendState, Certificate, IngressConfig, IngressHandle, Policy, RouteTable};

/// A leaf certificate for `names` signed by the CA of `dir`, valid for `days` (-1: expired).
fn make_leaf(dir: &Path, tag: &str, names: &[&str], days: i32) -> Certificate {
    let (pem, key) = make_leaf_files(dir, tag, names, days);
    Certificate {
        cert_pem: std::fs::read_to_string(pem).unwrap(),
        key_pem: std::fs::read_to_string(key).unwrap(),
    }
}

async fn start_with_https(dir: &Path) -> IngressHandle {
    let mut config = IngressConfig::new(dir);
    config.port = 0;
    config.workers = 2;
    config.https = Some("127.0.0.1:0".parse().unwrap());
    IngressHandle::start(config).await.unwrap()
}

struct Curl {
    status: u16,
    version: String,
    headers: String,
    body: String,
}

/// curl against `https://HOST:PORT/PATH`, resolving HOST to the listener and trusting
/// `ca` only.
fn curl(https: SocketAddr, host: &str, path: &str, ca: &Path, extra: &[&str]) -> Curl {
    let url = format!("https://{host}:{}{path}", https.port());
    let resolve = format!("{host}:{}:127.0.0.1", https.port());
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--resolve", &resolve, "--cacert"])
        .arg(ca)
        .args(["-D", "-", "-w", "\n%{http_code} %{http_version}"])
        .args(extra)
        .arg(&url)
        .output()
        .expect("curl runs");
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (rest, last) = text.rsplit_once('\n').unwrap();
    let (code, version) = last.split_once(' ').unwrap();
    let (headers, body) = rest.split_once("\r\n\r\n").unwrap_or((rest, ""));
    Curl {
        status: code.parse().unwrap(),
        version: version.to_string(),
        headers: headers.to_ascii_lowercase(),
        body: body.to_string(),
    }
}

/// `openssl s_client` with SNI `host` and ALPN `alpn`: its output (protocol, certificate).
fn s_client(https: SocketAddr, host: &str, alpn: &str, ca: &Path) -> String {
    s_client_with(https, host, alpn, ca, &[])
}

fn s_client_with(https: SocketAddr, host: &str, alpn: &str, ca: &Path, extra: &[&str]) -> String {
    let connect = format!("127.0.0.1:{}", https.port());
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &connect, "-alpn", alpn])
        .args(if extra.contains(&"-noservername") {
            vec![]
        } else {
            vec!["-servername", host]
        })
        .arg("-CAfile")
        .arg(ca)
        .arg("-verify_return_error")
        .args(extra)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl runs");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn seen<'a>(body: &'a str, name: &str) -> Option<&'a str> {
    body.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(": ").or_else(|| rest.strip_prefix('=')))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domains_route_to_their_app_with_the_path_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let web = TestBackend::start("web/0").await;
    let api = TestBackend::start("api/0").await;
    let ingress = start_ingress(dir.path()).await;
    let mut web_route = app(Policy::RoundRobin, vec![web.route(BackendState::Ready)]);
    web_route.domains = vec!["shop.example".into(), "*.wild.example".into()];
    let api_route = app(Policy::RoundRobin, vec![api.route(BackendState::Ready)]);
    ingress
        .set_routes(table(vec![("web", web_route), ("api", api_route)]))
        .unwrap();

    for (host, unit) in [
        ("shop.example", "web/0"),
        ("Shop.Example:8080", "web/0"),
        ("x.wild.example", "web/0"),
        // A domain wins over the first-label rule; the rule still works elsewhere.
        ("api.wild.example", "web/0"),
        ("web.localhost", "web/0"),
        ("api.localhost", "api/0"),
    ] {
        let reply = get(ingress.addr(), host, "/a/b?c=d").await;
        assert_eq!(reply.status, StatusCode::OK, "{host}");
        assert_eq!(reply.unit(), unit, "{host}");
        assert_eq!(reply.seen("path"), Some("/a/b?c=d"), "{host}");
        assert_eq!(reply.seen("x-forwarded-proto"), Some("http"), "{host}");
    }
    // One label under the wildcard only; other names are not the app's.
    for host in ["a.b.wild.example", "wild.example", "other.example"] {
        let reply = get(ingress.addr(), host, "/").await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{host}");
    }
    // Without a certificate, plain HTTP serves the domain (no redirect).
    let reply = get(ingress.addr(), "shop.example", "/").await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_given_to_two_apps_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ingress = start_ingress(dir.path()).await;
    let mut a = app(Policy::RoundRobin, vec![]);
    a.domains = vec!["x.example".into()];
    let b = a.clone();
    let e = ingress
        .set_routes(table(vec![("a", a), ("b", b)]))
        .unwrap_err();
    assert!(e.to_string().contains("x.example"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_answers_503_with_retry_after_and_units_get_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (web, ingress) = web_behind_ingress(dir.path()).await;
    let mut routes = ingress.routes();
    routes.apps.get_mut("web").unwrap().maintenance = Some("Upgrading the database.".into());
    ingress.set_routes(routes.clone()).unwrap();

    let before = web.hits();
    for reply in [
        get(ingress.addr(), "web.localhost", "/").await,
        get(ingress.addr(), "localhost", "/web/x").await,
        get_h2c(ingress.addr(), "http://web.localhost/").await,
    ] {
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(reply.headers["retry-after"], "60");
        assert!(
            reply.body.contains("web is down for maintenance"),
            "{}",
            reply.body
        );
        assert!(
            reply.body.contains("Upgrading the database."),
            "{}",
            reply.body
        );
    }
    assert_eq!(web.hits(), before, "no request reached the unit");

    routes.apps.get_mut("web").unwrap().maintenance = None;
    ingress.set_routes(routes).unwrap();
    let reply = get(ingress.addr(), "web.localhost", "/").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.unit(), "web/0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_http1_and_http2_picks_by_sni_and_http_redirects() {
    let dir = tempfile::tempdir().unwrap();
    let pki = tempfile::tempdir().unwrap();
    let ca = make_ca(pki.path());
    let shop = make_leaf(pki.path(), "shop", &["shop.example"], 30);
    let wild = make_leaf(pki.path(), "wild", &["*.wild.example"], 30);

    let web = TestBackend::start("web/0").await;
    let ingress = start_with_https(dir.path()).await;
    let https = ingress.https_addr().unwrap();
    let mut route = app(Policy::RoundRobin, vec![web.route(BackendState::Ready)]);
    route.domains = vec![
        "shop.example".into(),
        "*.wild.example".into(),
        "plain.example".into(),
    ];
    route.hsts = vec!["shop.example".into()];
    let mut routes = table(vec![("web", route)]);
    routes.certificates = vec![shop, wild];
    routes.acme_challenges = [("tok123".to_string(), "tok123.thumb".to_string())].into();
    ingress.set_routes(routes).unwrap();

    let (ca_c, https_c) = (ca.clone(), https);
    let (h1, h2, wildcard) = tokio::task::spawn_blocking(move || {
        (
            curl(https_c, "shop.example", "/a/b?c=d", &ca_c, &["--http1.1"]),
            curl(https_c, "shop.example", "/a/b?c=d", &ca_c, &["--http2"]),
            curl(https_c, "x.wild.example", "/w", &ca_c, &[]),
        )
    })
    .await
    .unwrap();
    for (reply, version) in [(&h1, "1.1"), (&h2, "2")] {
        assert_eq!(reply.status, 200);
        assert_eq!(reply.version, version);
        assert_eq!(seen(&reply.body, "unit"), Some("web/0"));
        assert_eq!(seen(&reply.body, "path"), Some("/a/b?c=d"));
        assert_eq!(seen(&reply.body, "x-forwarded-proto"), Some("https"));
        assert!(
            reply
                .headers
                .contains("strict-transport-security: max-age=31536000"),
            "{}",
            reply.headers
        );
    }
    assert_eq!(wildcard.status, 200);
    assert_eq!(seen(&wildcard.body, "path"), Some("/w"));
    assert!(!wildcard.headers.contains("strict-transport-security"));

    // ALPN and SNI as openssl sees them: the certificate of the name asked for.
    let (ca_c, https_c) = (ca.clone(), https);
    let (h2_shop, h1_wild, tls12, tls13, no_sni) = tokio::task::spawn_blocking(move || {
        (
            s_client(https_c, "shop.example", "h2,http/1.1", &ca_c),
            s_client(https_c, "y.wild.example", "http/1.1", &ca_c),
            s_client_with(https_c, "shop.example", "http/1.1", &ca_c, &["-tls1_2"]),
            s_client_with(https_c, "shop.example", "http/1.1", &ca_c, &["-tls1_3"]),
            s_client_with(
                https_c,
                "shop.example",
                "http/1.1",
                &ca_c,
                &["-noservername"],
            ),
        )
    })
    .await
    .unwrap();
    assert!(tls12.contains("Protocol  : TLSv1.2"), "{tls12}");
    assert!(tls13.contains("TLSv1.3"), "{tls13}");
    // Without SNI (a client given an IP address): the table's first certificate.
    assert!(no_sni.contains("subject=CN = shop"), "{no_sni}");
    assert!(h2_shop.contains("ALPN protocol: h2"), "{h2_shop}");
    assert!(h2_shop.contains("subject=CN = shop"), "{h2_shop}");
    assert!(h1_wild.contains("ALPN protocol: http/1.1"), "{h1_wild}");
    assert!(h1_wild.contains("subject=CN = wild"), "{h1_wild}");

    // Plain HTTP to a domain with a certificate: 308 to https, path and query kept;
    // the ACME path is answered, and a domain without a certificate is served.
    let reply = get(ingress.addr(), "shop.example", "/a/b?c=d").await;
    assert_eq!(reply.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        reply.headers["location"],
        format!("https://shop.example:{}/a/b?c=d", https.port())
    );
    let reply = get(
        ingress.addr(),
        "shop.example",
        "/.well-known/acme-challenge/tok123",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "tok123.thumb");
    let reply = get(ingress.addr(), "plain.example", "/").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.unit(), "web/0");
    let reply = get(ingress.addr(), "web.localhost", "/").await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "<app>.localhost is never redirected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_certificate_serves_at_once_and_an_expired_one_never_wins() {
    let dir = tempfile::tempdir().unwrap();
    let pki = tempfile::tempdir().unwrap();
    let ca = make_ca(pki.path());
    let expired = make_leaf(pki.path(), "expired", &["shop.example"], -1);
    let short = make_leaf(pki.path(), "short", &["shop.example"], 1);
    let long = make_leaf(pki.path(), "long", &["shop.example"], 20);

    let web = TestBackend::start("web/0").await;
    let ingress = start_with_https(dir.path()).await;
    let https = ingress.https_addr().unwrap();
    let mut route = app(Policy::RoundRobin, vec![web.route(BackendState::Ready)]);
    route.domains = vec!["shop.example".into()];
    let mut routes: RouteTable = table(vec![("web", route)]);

    let served = |routes: &RouteTable| {
        ingress.set_routes(routes.clone()).unwrap();
        s_client(https, "shop.example", "http/1.1", &ca)
    };
    // Listed before the valid one and expiring later than nothing: still not picked.
    routes.certificates = vec![expired.clone(), short.clone()];
    let out = served(&routes);
    assert!(out.contains("subject=CN = short"), "{out}");
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    // A later one is used by the next handshake, without a restart.
    routes.certificates = vec![expired, short, long];
    let out = served(&routes);
    assert!(out.contains("subject=CN = long"), "{out}");
    // A key that is not the certificate's is refused, naming the certificate.
    let mut wrong = make_leaf(pki.path(), "other", &["shop.example"], 5);
    wrong.key_pem = std::fs::read_to_string(pki.path().join("long.key")).unwrap();
    routes.certificates.push(wrong);
    let e = ingress.set_routes(routes).unwrap_err().to_string();
    assert!(
        e.contains("certificate 3") && e.contains("does not match"),
        "{e}"
    );
}

/// A TLS connection to the HTTPS listener for `host` (SNI), ALPN http/1.1, trusting `ca`.
async fn tls_connect(
    https: SocketAddr,
    host: &str,
    ca: &Path,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(https).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).unwrap();
    connector.connect(name, tcp).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_upgrade_over_tls() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let pki = tempfile::tempdir().unwrap();
    let ca = make_ca(pki.path());
    let shop = make_leaf(pki.path(), "shop", &["shop.example"], 30);
    let web = TestBackend::start("web/0").await;
    let ingress = start_with_https(dir.path()).await;
    let mut route = app(Policy::RoundRobin, vec![web.route(BackendState::Ready)]);
    route.domains = vec!["shop.example".into()];
    let mut routes = table(vec![("web", route)]);
    routes.certificates = vec![shop];
    ingress.set_routes(routes).unwrap();

    let mut tls = tls_connect(ingress.https_addr().unwrap(), "shop.example", &ca).await;
    tls.write_all(
        b"GET /socket HTTP/1.1\r\nHost: shop.example\r\nConnection: Upgrade\r\n\
          Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let head = read_until(&mut tls, "\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );
    for message in ["hello", "world, over TLS"] {
        tls.write_all(message.as_bytes()).await.unwrap();
        let echoed = read_until(&mut tls, message).await;
        assert_eq!(echoed, message);
    }
}

/// One GET on a new connection: its status, or why there is none.
async fn try_get(addr: SocketAddr, host: &str, path: &str) -> Result<StatusCode, String> {
    use http_body_util::BodyExt;
    let attempt = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = hyper::Request::get(path)
            .header(hyper::header::HOST, host)
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let response = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = response.status();
        response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok(status)
    };
    tokio::time::timeout(DEADLINE, attempt)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

/// A client sending requests one after the other (each on a new connection) on a thread
/// of its own until finished.
struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    done: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<(usize, Vec<String>)>,
}

impl Load {
    /// `request` answers `Ok` for a success, else what went wrong.
    fn start(request: impl Fn() -> Result<(), String> + Send + 'static) -> Load {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let task = tokio::task::spawn_blocking({
            let (stop, done) = (stop.clone(), done.clone());
            move || {
                let (mut ok, mut failed) = (0, vec![]);
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    match request() {
                        Ok(()) => ok += 1,
                        Err(e) => failed.push(e),
                    }
                    done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                (ok, failed)
            }
        });
        Load { stop, done, task }
    }

    /// Waits until `n` more requests are done.
    async fn more(&self, n: usize) {
        let target = self.done.load(std::sync::atomic::Ordering::SeqCst) + n;
        eventually("requests of the client loop", || {
            self.done.load(std::sync::atomic::Ordering::SeqCst) >= target
        })
        .await;
    }

    /// Stops it: (successes, failures).
    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.task.await.unwrap()
    }
}

/// GET / of app `web` over plain HTTP/1.0 (a new connection): 200 is a success.
fn plain_request(addr: SocketAddr) -> Result<(), String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\nHost: web.localhost\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)
        .map_err(|e| format!("read: {e}"))?;
    match answer.starts_with("HTTP/1.1 200") {
        true => Ok(()),
        false => Err(answer.lines().next().unwrap_or("nothing").to_string()),
    }
}

/// `PUT /listeners` moves the listeners with connections going on: no failure on the
/// listener that stays, the new one serves when the call returns, the old one refuses
/// then, and a request in flight on it (and its keep-alive connection) finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_move_without_dropping_connections() {
    use twelve_ingress::{client, ListenerAddrs};
    let dir = tempfile::tempdir().unwrap();
    let pki = tempfile::tempdir().unwrap();
    let ca = make_ca(pki.path());
    let shop = make_leaf(pki.path(), "shop", &["shop.example"], 30);
    let (web, ingress) = web_behind_ingress(dir.path()).await;
    let mut routes = ingress.routes();
    routes.apps.get_mut("web").unwrap().domains = vec!["shop.example".into()];
    routes.certificates = vec![shop];
    ingress.set_routes(routes).unwrap();
    let socket = ingress.admin_socket().to_path_buf();
    let http = ingress.addr();
    // No HTTPS yet: the domain is served over plain HTTP.
    assert_eq!(get(http, "shop.example", "/").await.status, StatusCode::OK);

    // 1. HTTPS is added while clients keep coming on HTTP.
    let load = Load::start(move || plain_request(http));
    load.more(3).await;
    let now = client::put_listeners(
        &socket,
        &ListenerAddrs {
            http,
            https: Some("127.0.0.1:0".parse().unwrap()),
        },
    )
    .await
    .unwrap();
    let https = now.https.expect("an HTTPS listener");
    assert_eq!(now.http, http);
    let served = tokio::task::spawn_blocking({
        let ca = ca.clone();
        move || curl(https, "shop.example", "/", &ca, &[])
    })
    .await
    .unwrap();
    assert_eq!(served.status, 200);
    // The redirect points at the new port.
    let redirect = get(http, "shop.example", "/x").await;
    assert_eq!(redirect.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        redirect.headers["location"],
        format!("https://shop.example:{}/x", https.port()).as_str()
    );
    load.more(3).await;
    let (ok, failed) = load.finish().await;
    assert!(failed.is_empty(), "{ok} ok, failed: {failed:?}");

    // 2. HTTP moves while a request is in flight on it and clients keep coming on HTTPS.
    let held = tokio::spawn(try_get(http, "web.localhost", "/hold"));
    eventually("the held request at the backend", || {
        web.held.load(std::sync::atomic::Ordering::SeqCst) == 1
    })
    .await;
    let load = {
        let ca = ca.clone();
        Load::start(
            move || match curl(https, "shop.example", "/", &ca, &[]).status {
                200 => Ok(()),
                other => Err(other.to_string()),
            },
        )
    };
    load.more(2).await;
    let moved = client::put_listeners(
        &socket,
        &ListenerAddrs {
            http: "127.0.0.1:0".parse().unwrap(),
            https: Some(https),
        },
    )
    .await
    .unwrap();
    assert_ne!(moved.http, http);
    assert_eq!(moved.https, Some(https));
    assert_eq!(ingress.addr(), moved.http);
    assert_eq!(
        try_get(moved.http, "web.localhost", "/").await,
        Ok(StatusCode::OK)
    );
    assert!(
        tokio::net::TcpStream::connect(http).await.is_err(),
        "the old HTTP listener still accepts"
    );
    web.release.add_permits(1);
    assert_eq!(held.await.unwrap(), Ok(StatusCode::OK));
    load.more(2).await;
    let (ok, failed) = load.finish().await;
    assert!(failed.is_empty(), "{ok} ok, failed: {failed:?}");

    // 3. An address that cannot be bound changes nothing, and says which.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap();
    let e = client::put_listeners(
        &socket,
        &ListenerAddrs {
            http: moved.http,
            https: Some(taken_addr),
        },
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains(&taken_addr.to_string()), "{e}");
    assert_eq!(client::get_listeners(&socket).await.unwrap(), moved);
    let served = tokio::task::spawn_blocking(move || curl(https, "shop.example", "/", &ca, &[]))
        .await
        .unwrap();
    assert_eq!(served.status, 200);

    // 4. HTTPS off: the redirect stops with it.
    client::put_listeners(
        &socket,
        &ListenerAddrs {
            http: moved.http,
            https: None,
        },
    )
    .await
    .unwrap();
    assert!(tokio::net::TcpStream::connect(https).await.is_err());
    assert_eq!(
        get(moved.http, "shop.example", "/").await.status,
        StatusCode::OK
    );
}

/// TLS-ALPN-01 (RFC 8737): a handshake offering `acme-tls/1` gets the host's challenge
/// certificate, or fails when there is none; other handshakes never get it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_tls_alpn_handshakes_get_the_challenge_certificate_only() {
    let dir = tempfile::tempdir().unwrap();
    let pki = tempfile::tempdir().unwrap();
    let ca = make_ca(pki.path());
    let shop = make_leaf(pki.path(), "shop", &["shop.example"], 30);
    let challenge = make_leaf(pki.path(), "challenge", &["shop.example"], 1);
    let ingress = start_with_https(dir.path()).await;
    let https = ingress.https_addr().unwrap();
    let mut routes = table(vec![]);
    routes.certificates = vec![shop];
    routes.acme_tls_alpn = [("shop.example".to_string(), challenge)].into();
    ingress.set_routes(routes).unwrap();

    let (ca_c, https_c) = (ca.clone(), https);
    let (acme, normal, none) = tokio::task::spawn_blocking(move || {
        (
            s_client(https_c, "shop.example", "acme-tls/1", &ca_c),
            s_client(https_c, "shop.example", "h2,http/1.1", &ca_c),
            s_client(https_c, "other.example", "acme-tls/1", &ca_c),
        )
    })
    .await
    .unwrap();
    assert!(acme.contains("ALPN protocol: acme-tls/1"), "{acme}");
    assert!(
        acme.contains("CN = challenge") || acme.contains("CN=challenge"),
        "{acme}"
    );
    assert!(!normal.contains("challenge"), "{normal}");
    assert!(
        normal.contains("CN = shop") || normal.contains("CN=shop"),
        "{normal}"
    );
    assert!(!none.contains("ALPN protocol: acme-tls/1"), "{none}");
}
