//! A Loki push endpoint for the log-forwarding tests (`mod loki;` in a test file):
//! checks every request as Loki would and keeps what it accepted.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use serde_json::Value;

/// One line as Loki would store it: the stream's labels and the line.
#[derive(Debug, Clone)]
pub struct Entry {
    pub labels: BTreeMap<String, String>,
    pub nanos: u128,
    pub line: String,
}

/// A Loki push endpoint (`POST /loki/api/v1/push`, JSON) that checks every request the way
/// Loki does and keeps what it accepted. A request in any other shape is recorded as an
/// error, answered 400, and fails the test.
pub struct Loki {
    pub port: u16,
    entries: Arc<Mutex<Vec<Entry>>>,
    errors: Arc<Mutex<Vec<String>>>,
}

fn check_push(path: &str, content_type: &str, body: &[u8]) -> Result<Vec<Entry>, String> {
    if path != "/loki/api/v1/push" {
        return Err(format!("pushed to {path}"));
    }
    if !content_type.starts_with("application/json") {
        return Err(format!("content-type {content_type:?}"));
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let streams = v["streams"].as_array().ok_or("no streams array")?;
    let mut out = vec![];
    for s in streams {
        let labels: BTreeMap<String, String> = s["stream"]
            .as_object()
            .ok_or("a stream without labels")?
            .iter()
            .map(|(k, v)| {
                Ok((
                    k.clone(),
                    v.as_str()
                        .ok_or("a label that is not a string")?
                        .to_string(),
                ))
            })
            .collect::<Result<_, String>>()?;
        for pair in s["values"].as_array().ok_or("a stream without values")? {
            let pair = pair
                .as_array()
                .filter(|p| p.len() == 2)
                .ok_or("a value that is not a pair")?;
            let nanos: u128 = pair[0]
                .as_str()
                .ok_or("a timestamp that is not a string")?
                .parse()
                .map_err(|_| "a timestamp that is not nanoseconds")?;
            let line = pair[1]
                .as_str()
                .ok_or("a line that is not a string")?
                .to_string();
            out.push(Entry {
                labels: labels.clone(),
                nanos,
                line,
            });
        }
    }
    Ok(out)
}

type Shared = (Arc<Mutex<Vec<Entry>>>, Arc<Mutex<Vec<String>>>);

/// Serves one connection: requests until the client closes it.
fn serve<S: Read + Write>(conn: S, (e, errs): Shared) {
    let mut reader = BufReader::new(conn);
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = request.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("").to_string(),
        );
        let (mut length, mut content_type) = (0usize, String::new());
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                match k.to_ascii_lowercase().as_str() {
                    "content-length" => length = v.trim().parse().unwrap_or(0),
                    "content-type" => content_type = v.trim().to_string(),
                    _ => {}
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let result = if method == "POST" {
            check_push(&path, &content_type, &body)
        } else {
            Err(format!("{method} {path}"))
        };
        let status = match result {
            Ok(got) => {
                e.lock().unwrap().extend(got);
                "204 No Content"
            }
            Err(why) => {
                errs.lock().unwrap().push(why);
                "400 Bad Request"
            }
        };
        let conn = reader.get_mut();
        let _ = write!(conn, "HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
        let _ = conn.flush();
    }
}

impl Loki {
    /// Listens on `port` (0: any free port).
    pub fn start(port: u16) -> Loki {
        Loki::listen(port, None)
    }

    /// Listens on `port` over TLS with this certificate chain and key (PEM).
    pub fn start_tls(port: u16, chain_pem: &[u8], key_pem: &[u8]) -> Loki {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
            .map(|c| c.unwrap())
            .collect();
        let key = PrivateKeyDer::from_pem_slice(key_pem).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        Loki::listen(port, Some(Arc::new(config)))
    }

    fn listen(port: u16, tls: Option<Arc<rustls::ServerConfig>>) -> Loki {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let entries = Arc::new(Mutex::new(vec![]));
        let errors = Arc::new(Mutex::new(vec![]));
        let shared: Shared = (entries.clone(), errors.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (shared, tls) = (shared.clone(), tls.clone());
                std::thread::spawn(move || match tls {
                    Some(config) => {
                        let Ok(session) = rustls::ServerConnection::new(config) else {
                            return;
                        };
                        serve(rustls::StreamOwned::new(session, conn), shared)
                    }
                    None => serve(conn, shared),
                });
            }
        });
        Loki {
            port,
            entries,
            errors,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/loki/api/v1/push", self.port)
    }

    /// What was accepted so far; fails the test if any push was one Loki would refuse.
    pub fn entries(&self) -> Vec<Entry> {
        let errors = self.errors.lock().unwrap();
        assert!(errors.is_empty(), "pushes Loki would refuse: {errors:?}");
        self.entries.lock().unwrap().clone()
    }

    /// The lines received from a service (`pebble_service`), in arrival order.
    pub fn lines(&self, service: &str) -> Vec<String> {
        self.entries()
            .into_iter()
            .filter(|e| e.labels.get("pebble_service").map(String::as_str) == Some(service))
            .map(|e| e.line)
            .collect()
    }
}

/// Runs openssl with `args` in `dir`; the test fails with its stderr if it does.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs (scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`<name>-ca.pem`) and a server certificate it signed for localhost and 127.0.0.1
/// (`<name>-chain.pem`, `<name>-key.pem`), as a private Loki would have.
pub fn certificates(dir: &Path, name: &str) {
    let ca_key = format!("{name}-ca-key.pem");
    let ca = format!("{name}-ca.pem");
    let key = format!("{name}-key.pem");
    let csr = format!("{name}.csr");
    let cert = format!("{name}.pem");
    let ext = format!("{name}.ext");
    std::fs::write(
        dir.join(&ext),
        "basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let subject = format!("/CN={name} test CA");
    let mut args = vec!["req", "-x509", "-days", "2", "-subj", &subject];
    args.extend(ec);
    args.extend(["-keyout", &ca_key, "-out", &ca]);
    openssl(dir, &args);
    let mut args = vec!["req", "-subj", "/CN=localhost"];
    args.extend(ec);
    args.extend(["-keyout", &key, "-out", &csr]);
    openssl(dir, &args);
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &cert,
        ],
    );
    let chain = [
        std::fs::read(dir.join(&cert)).unwrap(),
        std::fs::read(dir.join(&ca)).unwrap(),
    ]
    .concat();
    std::fs::write(dir.join(format!("{name}-chain.pem")), chain).unwrap();
}
