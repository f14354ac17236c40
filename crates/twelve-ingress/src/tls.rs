//! HTTPS: the certificates of the route table, picked by SNI at each handshake from the
//! table of now (a new certificate serves without a restart), and the TLS listener's
//! connections: TLS 1.2 and 1.3 (rustls, ring), ALPN `h2` (hyper's HTTP/2 server, through
//! [`crate::proxy::handle`]) and `http/1.1` or none (the ingress's own HTTP/1 code,
//! [`crate::h1`], as on plain HTTP).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::body::ConnState;
use crate::routes::Certificate;
use crate::server::Shared;
use crate::upstream::Pool;
use crate::x509::{self, CertInfo};

/// The ALPN protocol of ACME's TLS-ALPN-01 validation (RFC 8737).
const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// One certificate of the table, ready for rustls.
pub(crate) struct Loaded {
    pub info: CertInfo,
    pub key: Arc<CertifiedKey>,
}

/// Parses a PEM chain and key; the error names what is wrong.
pub(crate) fn load(cert: &Certificate) -> Result<Loaded, String> {
    load_with(cert, true)
}

/// A TLS-ALPN-01 challenge certificate: its critical `acmeIdentifier` extension is one
/// webpki refuses to parse, so the key is not compared with it (the ACME CA does that).
pub(crate) fn load_challenge(cert: &Certificate) -> Result<Loaded, String> {
    load_with(cert, false)
}

fn load_with(cert: &Certificate, check_key: bool) -> Result<Loaded, String> {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("the certificate is not PEM: {e}"))?;
    let Some(leaf) = chain.first() else {
        return Err("no CERTIFICATE block in the certificate file".into());
    };
    let info = x509::parse(leaf).ok_or("the certificate is not an X.509 certificate")?;
    if info.names.is_empty() {
        return Err("the certificate names no host (no DNS subject alternative name)".into());
    }
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes())
        .map_err(|e| format!("the key is not a PEM private key: {e}"))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("unsupported private key: {e}"))?;
    let key = CertifiedKey::new(chain, signer);
    if check_key {
        key.keys_match()
            .map_err(|_| "the private key does not match the certificate".to_string())?;
    }
    Ok(Loaded {
        info,
        key: Arc::new(key),
    })
}

/// The certificates of one table.
#[derive(Default)]
pub(crate) struct CertStore {
    certs: Vec<Loaded>,
}

impl CertStore {
    pub(crate) fn build(certs: &[Certificate]) -> CertStore {
        // The table was validated: every certificate loads.
        CertStore {
            certs: certs.iter().filter_map(|c| load(c).ok()).collect(),
        }
    }

    /// Whether some certificate covers `host` (no port), valid or not.
    pub(crate) fn covers(&self, host: &str) -> bool {
        self.certs
            .iter()
            .any(|c| c.info.names.iter().any(|n| x509::name_matches(n, host)))
    }

    /// The certificate for `host`: among those naming it, a valid one expiring last, else
    /// the one expiring last (never an expired one when a valid one exists).
    pub(crate) fn pick(&self, host: &str, now: i64) -> Option<&Arc<CertifiedKey>> {
        self.certs
            .iter()
            .filter(|c| c.info.names.iter().any(|n| x509::name_matches(n, host)))
            .max_by_key(|c| {
                let valid = c.info.not_before <= now && now < c.info.not_after;
                (valid, c.info.not_after)
            })
            .map(|c| &c.key)
    }
}

pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Picks the certificate of the handshake's SNI name from the table of now; without SNI,
/// the table's first certificate.
struct Resolver(Arc<Shared>);

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resolver")
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let snap = self.0.table.load();
        if hello
            .alpn()
            .is_some_and(|mut offered| offered.any(|p| p == ACME_TLS_ALPN))
        {
            // An ACME CA validating TLS-ALPN-01: the challenge certificate or nothing.
            let host = hello.server_name()?.to_ascii_lowercase();
            return snap.alpn_certs.get(&host).cloned();
        }
        match hello.server_name() {
            Some(host) => snap.certs.pick(&host.to_ascii_lowercase(), now()).cloned(),
            // No SNI (a client given an IP address): the first certificate of the table,
            // as nginx's default server.
            None => snap.certs.certs.first().map(|c| c.key.clone()),
        }
    }
}

pub(crate) fn server_config(shared: Arc<Shared>) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("ring supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Resolver(shared)));
    // `acme-tls/1` last: only an ACME CA offers it, and alone (RFC 8737).
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()];
    Arc::new(config)
}

pub(crate) async fn serve(
    acceptor: tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    pool: Arc<Pool>,
    watcher: hyper_util::server::graceful::Watcher,
    stop: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let Ok(Ok(tls)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await else {
        return;
    };
    let alpn = tls.get_ref().1.alpn_protocol();
    if alpn == Some(ACME_TLS_ALPN) {
        // The CA has seen the certificate: nothing else is spoken on this connection.
        return;
    }
    let h2 = alpn == Some(b"h2");
    let conn = Arc::new(ConnState::new(shared, crate::server::peer_ip(peer), pool).with_https());
    if !h2 {
        return crate::server::serve_http1(tls, conn, watcher, stop).await;
    }
    let snap = conn.shared.table.load_full();
    let (server, idle) = (snap.server.clone(), snap.idle_timeout);
    drop(snap);
    let service = {
        let conn = conn.clone();
        service_fn(move |req| crate::proxy::handle(conn.clone(), req))
    };
    let io = TokioIo::new(tls);
    let never = CancellationToken::new();
    conn.set_h2();
    let connection = watcher.watch(server.serve_connection(io, service));
    tokio::select! {
        _ = connection => {}
        _ = crate::server::watch(&conn, idle, idle, &never) => {}
    }
}
