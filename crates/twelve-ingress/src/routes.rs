//! The route table: what the controller sends (`PUT /routes`) and what the ingress keeps in
//! `routes.json` so that a restarted ingress serves the last routes at once.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The whole routing state. Every `PUT /routes` replaces it in one piece.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteTable {
    /// Apps by name. The name is both the host label (`<app>.localhost`) and the path
    /// prefix (`/<app>/`).
    #[serde(default)]
    pub apps: BTreeMap<String, AppRoute>,
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Certificates the HTTPS listener serves, picked by SNI (docs/tls.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<Certificate>,
    /// ACME HTTP-01 answers: `GET /.well-known/acme-challenge/TOKEN` on the HTTP listener,
    /// any host, gets the key authorization.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub acme_challenges: BTreeMap<String, String>,
    /// ACME TLS-ALPN-01 answers (RFC 8737), by host: a TLS handshake for the host that
    /// offers ALPN `acme-tls/1` gets this self-signed certificate, and nothing is served
    /// on that connection.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub acme_tls_alpn: BTreeMap<String, Certificate>,
}

/// A certificate chain and its private key, both PEM. The names it serves are its own
/// (subject alternative names, `*.example.com` too), read from the certificate.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Certificate")
            .field("cert_pem", &self.cert_pem.len())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppRoute {
    /// The app's status as the controller sees it (`active`, `blocked`, `waiting`, ...),
    /// shown on the 503 page when no backend is ready.
    #[serde(default = "default_status")]
    pub status: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub policy: Policy,
    #[serde(default)]
    pub backends: Vec<Backend>,
    /// Host names routed to this app besides `<app>.*`: `example.com`, `*.example.com`
    /// (any one label in place of `*`), lowercase, no port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<String>,
    /// Domains of this app with a certificate: `Strict-Transport-Security` on HTTPS answers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hsts: Vec<String>,
    /// Maintenance mode: every request gets 503 with this message and `Retry-After`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<String>,
}

fn default_status() -> String {
    "active".to_string()
}

impl Default for AppRoute {
    fn default() -> Self {
        AppRoute {
            status: default_status(),
            message: String::new(),
            policy: Policy::default(),
            backends: Vec::new(),
            domains: Vec::new(),
            hsts: Vec::new(),
            maintenance: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    #[default]
    RoundRobin,
    LeastConnections,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backend {
    /// The unit name, `web/0`; a metrics label.
    pub unit: String,
    /// Where the unit listens: an IP address and port (no host names).
    pub addr: SocketAddr,
    /// A Unix socket the unit also listens on (twelve binds one for gunicorn): requests
    /// go there, and to `addr` when it cannot be reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
    /// The uid the unit's processes run as: `socket` is used only when the server on it
    /// runs as this uid and its directory is owned by root or this uid and writable by
    /// nobody else. Without it, the server must run as the ingress's own effective uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_uid: Option<u32>,
    #[serde(default)]
    pub state: BackendState,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendState {
    /// Gets new requests.
    #[default]
    Ready,
    /// Gets no new request; finishes the ones it has (see `GET /inflight`).
    Draining,
}

/// All in milliseconds; each must be above zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Timeouts {
    /// Connecting to a backend.
    pub connect_ms: u64,
    /// From sending the request to a backend to its response headers (then 504).
    pub request_ms: u64,
    /// A client connection with no request in flight and no traffic is closed.
    pub idle_ms: u64,
    /// A client must send a whole request head within this time (slowloris), and an
    /// HTTP/1 keep-alive connection waiting for its next request is closed after it.
    pub header_read_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect_ms: 2000,
            request_ms: 60_000,
            idle_ms: 60_000,
            header_read_ms: 10_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RoutesError {
    #[error("invalid app name {0:?}: use lowercase letters, digits and '-'")]
    AppName(String),
    #[error("timeout {0} must be above zero")]
    Timeout(&'static str),
    #[error("app {app}: unit {unit}: socket {socket:?} must be an absolute path")]
    Socket {
        app: String,
        unit: String,
        socket: PathBuf,
    },
    #[error("app {app}: invalid domain {domain:?}: use a lowercase DNS name (a-z, 0-9, '-', '.'), at least two labels, '*.' only as the first label")]
    Domain { app: String, domain: String },
    #[error("domain {domain:?} is routed to both {first} and {second}")]
    DomainTwice {
        domain: String,
        first: String,
        second: String,
    },
    #[error("certificate {index}: {why}")]
    Certificate { index: usize, why: String },
    #[error("the TLS-ALPN-01 certificate for {host}: {why}")]
    AlpnCertificate { host: String, why: String },
    #[error("app {app}: unit {unit} is listed twice")]
    DuplicateUnit { app: String, unit: String },
    #[error("invalid route table: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl RouteTable {
    /// Parses and validates a route table.
    pub fn from_json(bytes: &[u8]) -> Result<RouteTable, RoutesError> {
        let table: RouteTable = serde_json::from_slice(bytes)?;
        table.validate()?;
        Ok(table)
    }

    pub fn validate(&self) -> Result<(), RoutesError> {
        for (name, app) in &self.apps {
            let valid = !name.is_empty()
                && name.len() <= 63
                && !name.starts_with('-')
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !valid {
                return Err(RoutesError::AppName(name.clone()));
            }
            for domain in &app.domains {
                if !valid_domain(domain) {
                    return Err(RoutesError::Domain {
                        app: name.clone(),
                        domain: domain.clone(),
                    });
                }
                if let Some((first, _)) = self
                    .apps
                    .iter()
                    .find(|(other, a)| *other != name && a.domains.contains(domain))
                {
                    let (first, second) = if first < name {
                        (first.clone(), name.clone())
                    } else {
                        (name.clone(), first.clone())
                    };
                    return Err(RoutesError::DomainTwice {
                        domain: domain.clone(),
                        first,
                        second,
                    });
                }
            }
            for (i, b) in app.backends.iter().enumerate() {
                if app.backends[..i].iter().any(|o| o.unit == b.unit) {
                    return Err(RoutesError::DuplicateUnit {
                        app: name.clone(),
                        unit: b.unit.clone(),
                    });
                }
                if let Some(socket) = b.socket.as_ref().filter(|p| !p.is_absolute()) {
                    return Err(RoutesError::Socket {
                        app: name.clone(),
                        unit: b.unit.clone(),
                        socket: socket.clone(),
                    });
                }
            }
        }
        for (index, cert) in self.certificates.iter().enumerate() {
            crate::tls::load(cert).map_err(|why| RoutesError::Certificate { index, why })?;
        }
        for (host, cert) in &self.acme_tls_alpn {
            crate::tls::load_challenge(cert).map_err(|why| RoutesError::AlpnCertificate {
                host: host.clone(),
                why,
            })?;
        }
        let t = &self.timeouts;
        for (value, name) in [
            (t.connect_ms, "connect_ms"),
            (t.request_ms, "request_ms"),
            (t.idle_ms, "idle_ms"),
            (t.header_read_ms, "header_read_ms"),
        ] {
            if value == 0 {
                return Err(RoutesError::Timeout(name));
            }
        }
        Ok(())
    }

    /// Writes the table with mode 0600: it holds the certificates' private keys.
    fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
    }

    /// Reads `path`; `Ok(None)` when it does not exist.
    pub fn load(path: &Path) -> Result<Option<RouteTable>, RoutesError> {
        match std::fs::read(path) {
            Ok(bytes) => RouteTable::from_json(&bytes).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(RoutesError::Io {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    /// Writes `path` so that a crash leaves either the old or the new table: a temporary
    /// file, fsync, rename, fsync of the directory.
    pub fn persist(&self, path: &Path) -> Result<(), RoutesError> {
        let io = |source| RoutesError::Io {
            path: path.display().to_string(),
            source,
        };
        let tmp = path.with_extension("json.tmp");
        let mut bytes = serde_json::to_vec_pretty(self)?;
        bytes.push(b'\n');
        let mut file = RouteTable::create_private(&tmp).map_err(io)?;
        file.write_all(&bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(io)?;
        if let Some(dir) = path.parent() {
            // The rename is durable only once the directory is.
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
        }
        Ok(())
    }
}

/// A host name the ingress routes: lowercase labels of a-z, 0-9 and '-' (not at either
/// end), at least two, `*` alone as the first label for a wildcard.
pub fn valid_domain(domain: &str) -> bool {
    let rest = domain.strip_prefix("*.").unwrap_or(domain);
    let labels: Vec<&str> = rest.split('.').collect();
    domain.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
        && !labels
            .last()
            .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let table = RouteTable::from_json(
            br#"{"apps": {"web": {"status": "active", "message": "", "policy": "least-connections",
               "backends": [{"unit": "web/0", "addr": "127.0.0.1:34567", "state": "draining"}]}},
               "timeouts": {"connect_ms": 2000, "request_ms": 60000, "idle_ms": 60000, "header_read_ms": 10000}}"#,
        )
        .unwrap();
        let web = &table.apps["web"];
        assert_eq!(web.policy, Policy::LeastConnections);
        assert_eq!(web.backends[0].state, BackendState::Draining);
        assert_eq!(table.timeouts, Timeouts::default());
    }

    #[test]
    fn everything_but_backends_has_a_default() {
        let table = RouteTable::from_json(
            br#"{"apps": {"web": {"backends": [{"unit": "web/0", "addr": "127.0.0.1:1"}]}}}"#,
        )
        .unwrap();
        assert_eq!(table.apps["web"].status, "active");
        assert_eq!(table.apps["web"].backends[0].state, BackendState::Ready);
    }

    #[test]
    fn rejects_bad_names_duplicates_zero_timeouts_and_relative_sockets() {
        for bad in [
            r#"{"apps": {"Web": {}}}"#,
            r#"{"apps": {"a.b": {}}}"#,
            r#"{"apps": {"w": {"backends": [{"unit": "w/0", "addr": "127.0.0.1:1"}, {"unit": "w/0", "addr": "127.0.0.1:2"}]}}}"#,
            r#"{"timeouts": {"request_ms": 0}}"#,
            r#"{"apps": {"w": {"backends": [{"unit": "w/0", "addr": "localhost:1"}]}}}"#,
            r#"{"apps": {"w": {"backends": [{"unit": "w/0", "addr": "127.0.0.1:1", "socket": "run/g.sock"}]}}}"#,
        ] {
            assert!(RouteTable::from_json(bad.as_bytes()).is_err(), "{bad}");
        }
        let ok = r#"{"apps": {"w": {"backends": [{"unit": "w/0", "addr": "127.0.0.1:1", "socket": "/u/run/g.sock"}]}}}"#;
        let table = RouteTable::from_json(ok.as_bytes()).unwrap();
        assert_eq!(
            table.apps["w"].backends[0].socket.as_deref(),
            Some(Path::new("/u/run/g.sock"))
        );
    }

    #[test]
    fn socket_uid_is_optional_and_left_out_when_absent() {
        let with = r#"{"apps": {"w": {"backends": [{"unit": "w/0", "addr": "127.0.0.1:1", "socket": "/u/run/g.sock", "socket_uid": 4242}]}}}"#;
        let table = RouteTable::from_json(with.as_bytes()).unwrap();
        assert_eq!(table.apps["w"].backends[0].socket_uid, Some(4242));
        let json = serde_json::to_string(&table).unwrap();
        assert!(json.contains(r#""socket_uid":4242"#), "{json}");

        let without = r#"{"apps": {"w": {"backends": [{"unit": "w/0", "addr": "127.0.0.1:1"}]}}}"#;
        let table = RouteTable::from_json(without.as_bytes()).unwrap();
        assert_eq!(table.apps["w"].backends[0].socket_uid, None);
        let json = serde_json::to_string(&table).unwrap();
        assert!(!json.contains("socket_uid"), "{json}");
    }

    #[test]
    fn domains_are_checked_and_given_to_one_app() {
        for good in [
            "example.com",
            "*.example.com",
            "a-b.example.co.uk",
            "x1.localhost",
        ] {
            assert!(valid_domain(good), "{good}");
        }
        for bad in [
            "com",
            "Example.com",
            "a..b",
            "-a.com",
            "a.*.com",
            "*",
            "1.2.3.4",
            "a.com:443",
            "a_b.com",
        ] {
            assert!(!valid_domain(bad), "{bad}");
        }
        let twice =
            r#"{"apps": {"a": {"domains": ["x.example"]}, "b": {"domains": ["x.example"]}}}"#;
        let e = RouteTable::from_json(twice.as_bytes()).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"domain "x.example" is routed to both a and b"#
        );
    }
}
