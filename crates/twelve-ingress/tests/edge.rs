//! The public edge in-process: users' domains, maintenance mode, and HTTPS with
//! certificates made by openssl, checked with curl (HTTP/1.1 and HTTP/2 over TLS) and
//! `openssl s_client` (ALPN, SNI).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use hyper::StatusCode;
use twelve_ingress::{BackendState, Certificate, IngressConfig, IngressHandle, Policy, RouteTable};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA (ECDSA P-256) in `dir`: `ca.pem`, `ca.key`.
fn make_ca(dir: &Path) -> PathBuf {
    openssl(
        dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "ca.key",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-subj",
            "/CN=twelve test CA",
            "-days",
            "2",
            "-out",
            "ca.pem",
        ],
    );
    dir.join("ca.pem")
}

/// A leaf certificate for `names` signed by the CA of `dir`, valid for `days` (-1: expired).
fn make_leaf(dir: &Path, tag: &str, names: &[&str], days: i32) -> Certificate {
    let key = format!("{tag}.key");
    let csr = format!("{tag}.csr");
    let pem = format!("{tag}.pem");
    let ext = format!("{tag}.ext");
    let sans: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
    std::fs::write(
        dir.join(&ext),
        format!("subjectAltName={}\n", sans.join(",")),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            &key,
        ],
    );
    let subj = format!("/CN={tag}");
    openssl(
        dir,
        &["req", "-new", "-key", &key, "-subj", &subj, "-out", &csr],
    );
    let days = days.to_string();
    openssl(
        dir,
        &[
            "x509", "-req", "-in", &csr, "-CA", "ca.pem", "-CAkey", "ca.key", "-days", &days,
            "-extfile", &ext, "-out", &pem,
        ],
    );
    Certificate {
        cert_pem: std::fs::read_to_string(dir.join(pem)).unwrap(),
        key_pem: std::fs::read_to_string(dir.join(key)).unwrap(),
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
