//! TLS to the API server with rustls (ring as the crypto provider): the server's CA from
//! the kubeconfig (or Mozilla's roots when none is given), or no verification at all when
//! the kubeconfig says `insecure-skip-tls-verify`; a client certificate when the user has one.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::apply::{ApplyError, Target};

/// A connection to the API server, plain or TLS.
pub type Stream = Box<dyn ReadWrite>;

pub trait ReadWrite: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ReadWrite for T {}

pub struct Connector {
    inner: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
}

impl Connector {
    pub fn new(target: &Target, host: &str) -> Result<Connector, ApplyError> {
        let err = |m: String| ApplyError::Client(m);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| err(e.to_string()))?;
        let builder = if target.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerifier(provider)))
        } else {
            let mut roots = RootCertStore::empty();
            match &target.ca_pem {
                Some(pem) => {
                    for cert in CertificateDer::pem_slice_iter(pem) {
                        let cert =
                            cert.map_err(|e| err(format!("cannot read the CA certificate: {e}")))?;
                        roots
                            .add(cert)
                            .map_err(|e| err(format!("cannot use the CA certificate: {e}")))?;
                    }
                    if roots.is_empty() {
                        return Err(err("the CA certificate holds no PEM certificate".into()));
                    }
                }
                None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            }
            builder.with_root_certificates(roots)
        };
        let mut config = match &target.client_cert {
            Some((cert_pem, key_pem)) => {
                let certs = CertificateDer::pem_slice_iter(cert_pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| err(format!("cannot read the client certificate: {e}")))?;
                if certs.is_empty() {
                    return Err(err("the client certificate holds no PEM certificate".into()));
                }
                let key = PrivateKeyDer::from_pem_slice(key_pem)
                    .map_err(|e| err(format!("cannot read the client key: {e}")))?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| err(format!("cannot use the client certificate: {e}")))?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let name = ServerName::try_from(
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
        )
        .map_err(|e| err(format!("invalid server name {host:?}: {e}")))?;
        Ok(Connector {
            inner: tokio_rustls::TlsConnector::from(Arc::new(config)),
            name,
        })
    }

    pub async fn connect(&self, tcp: tokio::net::TcpStream) -> Result<Stream, String> {
        let tls = self
            .inner
            .connect(self.name.clone(), tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        Ok(Box::new(tls))
    }
}

/// `insecure-skip-tls-verify: true`: any certificate, but still a real TLS handshake.
#[derive(Debug)]
struct NoVerifier(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
