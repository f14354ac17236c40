//! The public edge: users' domains, certificates, maintenance mode and the ingress's
//! listeners, kept in `TWELVE_HOME/edge.json` (mode 0600; private keys sealed by the
//! vault) and handed to the ingress in the route table (docs/domains.md, docs/tls.md).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::json;
use twelve_ingress::{x509, Certificate, RouteTable};

use crate::api::ApiError;
use crate::controller::Controller;

type ApiResult = Result<serde_json::Value, ApiError>;

pub const EDGE_FILE: &str = "edge.json";

/// What the edge verbs ask the controller.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "edge", rename_all = "kebab-case")]
pub enum EdgeRequest {
    DomainAdd {
        app: String,
        host: String,
        #[serde(default)]
        hsts: bool,
    },
    DomainRemove {
        app: String,
        host: String,
    },
    DomainList {
        #[serde(default)]
        app: Option<String>,
    },
    Maintenance {
        app: String,
        on: bool,
        #[serde(default)]
        message: Option<String>,
    },
    TlsCert {
        host: String,
        cert_pem: String,
        key_pem: String,
    },
    TlsStatus,
    TlsAcme {
        email: String,
        #[serde(default)]
        directory: Option<String>,
        #[serde(default)]
        ca_pem: Option<String>,
        /// `http-01` or `tls-alpn-01`; none: chosen from the listeners.
        #[serde(default)]
        challenge: Option<String>,
    },
    IngressConfigure {
        #[serde(default)]
        http: Option<String>,
        #[serde(default)]
        https: Option<String>,
        /// Turn the HTTPS listener off.
        #[serde(default)]
        no_https: bool,
    },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EdgeState {
    /// Each app's domains, the first one its base URL.
    #[serde(default)]
    pub domains: BTreeMap<String, Vec<Domain>>,
    /// Apps in maintenance mode, with their message.
    #[serde(default)]
    pub maintenance: BTreeMap<String, String>,
    #[serde(default)]
    pub certificates: Vec<StoredCert>,
    #[serde(default)]
    pub listeners: Listeners,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acme: Option<crate::acme::AcmeConfig>,
    /// ACME attempts per host.
    #[serde(default)]
    pub acme_hosts: BTreeMap<String, crate::acme::HostAcme>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Domain {
    pub host: String,
    #[serde(default)]
    pub hsts: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredCert {
    pub cert_pem: String,
    /// The private key, sealed by the vault.
    pub key_sealed: String,
    /// `user` (`twelve tls cert`) or `acme`.
    pub source: String,
    pub names: Vec<String>,
    pub issuer: String,
    #[serde(default)]
    pub not_before: i64,
    pub not_after: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listeners {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<SocketAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https: Option<SocketAddr>,
}

impl Controller {
    fn edge_path(&self) -> PathBuf {
        self.home.root.join(EDGE_FILE)
    }

    /// The edge state; empty when there is none yet, or it cannot be read (logged).
    pub(crate) fn edge_state(&self) -> EdgeState {
        match std::fs::read(self.edge_path()) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                crate::controller::log(format!("{}: {e}", self.edge_path().display()));
                EdgeState::default()
            }),
            Err(_) => EdgeState::default(),
        }
    }

    /// Reads, changes and writes edge.json as one step: every writer (the verbs, the ACME
    /// task, `remove-application`) goes through here, one at a time, so none loses
    /// another's change. `f` runs under the lock; nothing is written when it fails.
    pub(crate) fn update_edge<T>(
        &self,
        f: impl FnOnce(&mut EdgeState) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let _one = EDGE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        // Never written over when it cannot be read: what it holds would be lost.
        let path = self.edge_path();
        let mut state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                ApiError::new(format!(
                    "{} cannot be read ({e}): fix it or move it aside",
                    path.display()
                ))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => EdgeState::default(),
            Err(e) => return Err(ApiError::new(format!("{}: {e}", path.display()))),
        };
        let out = f(&mut state)?;
        self.save_edge_state(&state)?;
        Ok(out)
    }

    /// Forgets what the edge keeps for `app` as it is removed: its domains, maintenance
    /// flag, the ACME certificates and attempts of its hosts, and the certificates the
    /// user installed for them unless one also covers a domain of another app.
    pub(crate) fn forget_app_edge(&self, app: &str) -> Result<(), ApiError> {
        self.update_edge(|state| {
            state.maintenance.remove(app);
            let Some(domains) = state.domains.remove(app) else {
                return Ok(());
            };
            let others: Vec<String> = state
                .domains
                .values()
                .flatten()
                .map(|d| d.host.clone())
                .collect();
            for d in &domains {
                forget_host(state, &d.host);
            }
            state.certificates.retain(|c| {
                let covers = |host: &str| c.names.iter().any(|n| x509::name_matches(n, host));
                c.source != "user"
                    || !domains.iter().any(|d| covers(&d.host))
                    || others.iter().any(|h| covers(h))
            });
            Ok(())
        })
    }

    fn save_edge_state(&self, state: &EdgeState) -> Result<(), ApiError> {
        let text = serde_json::to_string_pretty(state).map_err(|e| ApiError::new(e.to_string()))?;
        crate::vault::write_private(&self.edge_path(), &text)
            .map_err(|e| ApiError::new(format!("{}: {e}", self.edge_path().display())))
    }

    /// The HTTP listener: `ingress configure --http`, else 127.0.0.1 and the port of
    /// `TWELVE_INGRESS_PORT` (8080).
    pub(crate) fn http_listener(&self) -> SocketAddr {
        self.effective_listeners(&self.edge_state().listeners).http
    }

    /// The HTTPS listener: `ingress configure --https`, else `TWELVE_INGRESS_HTTPS`, else none.
    pub(crate) fn https_listener(&self) -> Option<SocketAddr> {
        self.effective_listeners(&self.edge_state().listeners).https
    }

    /// The listeners `l` gives, with the defaults filled in.
    fn effective_listeners(&self, l: &Listeners) -> twelve_ingress::ListenerAddrs {
        twelve_ingress::ListenerAddrs {
            http: l
                .http
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], self.ingress_port))),
            https: l.https.or_else(|| {
                std::env::var("TWELVE_INGRESS_HTTPS")
                    .ok()
                    .and_then(|a| a.parse().ok())
            }),
        }
    }

    /// The app's base URL when it has a domain: its first (non-wildcard) one, `https` when
    /// a certificate covers it and HTTPS is on; `None` otherwise.
    pub(crate) fn domain_url(&self, app: &str) -> Option<String> {
        let state = self.edge_state();
        let host = state
            .domains
            .get(app)?
            .iter()
            .find(|d| !d.host.starts_with("*."))?
            .host
            .clone();
        let covered = state
            .certificates
            .iter()
            .any(|c| c.names.iter().any(|n| x509::name_matches(n, &host)));
        let https = self.https_listener().filter(|_| covered);
        Some(match https {
            Some(a) if a.port() == 443 => format!("https://{host}"),
            Some(a) => format!("https://{host}:{}", a.port()),
            None => match self.http_listener().port() {
                80 => format!("http://{host}"),
                port => format!("http://{host}:{port}"),
            },
        })
    }

    /// Adds the edge's parts to the route table: domains, HSTS, maintenance, certificates
    /// (keys unsealed here, in memory; the ingress keeps them in its 0600 routes.json).
    pub(crate) fn edge_routes(&self, table: &mut RouteTable) {
        let state = self.edge_state();
        for (app, route) in table.apps.iter_mut() {
            if let Some(domains) = state.domains.get(app) {
                route.domains = domains.iter().map(|d| d.host.clone()).collect();
                route.hsts = domains
                    .iter()
                    .filter(|d| d.hsts)
                    .map(|d| d.host.clone())
                    .collect();
            }
            route.maintenance = state.maintenance.get(app).cloned();
        }
        table.acme_challenges = crate::acme::CHALLENGES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        table.acme_tls_alpn = crate::acme::ALPN_CHALLENGES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for cert in &state.certificates {
            match self.vault.open_sealed(&cert.key_sealed) {
                Ok(key) => table.certificates.push(Certificate {
                    cert_pem: cert.cert_pem.clone(),
                    key_pem: key.0.clone(),
                }),
                Err(e) => crate::controller::log(format!(
                    "certificate for {}: cannot unseal its key: {e}",
                    cert.names.join(", ")
                )),
            }
        }
    }

    pub(crate) async fn push_routes_now(&self) {
        let apps = self.store.apps().unwrap_or_default();
        self.push_routes(&apps).await;
        self.wake.notify_one();
    }

    pub(crate) async fn edge(&self, req: EdgeRequest) -> ApiResult {
        match req {
            EdgeRequest::DomainAdd { app, host, hsts } => {
                self.app(&app)?;
                let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
                if !twelve_ingress::routes::valid_domain(&host) {
                    return Err(ApiError::new(format!(
                        "invalid domain {host:?}: a DNS name of at least two labels (a-z, 0-9, '-'), '*.' only as the first label, no port"
                    ))
                    .hint(format!("twelve domain add {app} shop.example.com")));
                }
                self.update_edge(|state| {
                    if let Some((other, _)) = state
                        .domains
                        .iter()
                        .find(|(a, ds)| **a != app && ds.iter().any(|d| d.host == host))
                    {
                        return Err(ApiError::new(format!(
                            "{host} is already a domain of {other}"
                        ))
                        .hint(format!("twelve domain remove {other} {host}")));
                    }
                    let list = state.domains.entry(app.clone()).or_default();
                    match list.iter_mut().find(|d| d.host == host) {
                        Some(d) => d.hsts = hsts,
                        None => list.push(Domain {
                            host: host.clone(),
                            hsts,
                        }),
                    }
                    Ok(())
                })?;
                self.push_routes_now().await;
                crate::controller::log(format!("{app}: domain {host} added"));
                Ok(json!({"app": app, "host": host, "hsts": hsts, "url": self.domain_url(&app)}))
            }
            EdgeRequest::DomainRemove { app, host } => {
                let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
                self.update_edge(|state| {
                    let list = state.domains.entry(app.clone()).or_default();
                    let before = list.len();
                    list.retain(|d| d.host != host);
                    if list.len() == before {
                        return Err(ApiError::new(format!("{host} is not a domain of {app}"))
                            .hint(format!("twelve domain list {app}")));
                    }
                    if list.is_empty() {
                        state.domains.remove(&app);
                    }
                    forget_host(state, &host);
                    Ok(())
                })?;
                self.push_routes_now().await;
                crate::controller::log(format!("{app}: domain {host} removed"));
                Ok(json!({"app": app, "host": host}))
            }
            EdgeRequest::DomainList { app } => {
                if let Some(app) = &app {
                    self.app(app)?;
                }
                let state = self.edge_state();
                let now = now();
                let mut rows = vec![];
                for (a, domains) in &state.domains {
                    if app.as_ref().is_some_and(|x| x != a) {
                        continue;
                    }
                    for d in domains {
                        let cert = best_cert(&state, &d.host, now);
                        rows.push(json!({
                            "app": a,
                            "host": d.host,
                            "hsts": d.hsts,
                            "tls": cert.map(|c| c.source.clone()),
                            "expires": cert.map(|c| c.not_after),
                        }));
                    }
                }
                Ok(json!({"domains": rows}))
            }
            EdgeRequest::Maintenance { app, on, message } => {
                self.app(&app)?;
                self.update_edge(|state| {
                    if on {
                        state
                            .maintenance
                            .insert(app.clone(), message.unwrap_or_default());
                    } else {
                        state.maintenance.remove(&app);
                    }
                    Ok(())
                })?;
                self.push_routes_now().await;
                crate::controller::log(format!(
                    "{app}: maintenance {}",
                    if on { "on" } else { "off" }
                ));
                Ok(json!({"app": app, "maintenance": on}))
            }
            EdgeRequest::TlsCert {
                host,
                cert_pem,
                key_pem,
            } => {
                let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
                let cert = Certificate { cert_pem, key_pem };
                let info = twelve_ingress::check_certificate(&cert).map_err(|e| {
                    ApiError::new(format!("the certificate for {host} cannot be used: {e}"))
                })?;
                if !info
                    .names
                    .iter()
                    .any(|n| *n == host || x509::name_matches(n, &host))
                {
                    return Err(ApiError::new(format!(
                        "the certificate does not name {host}: it is for {}",
                        info.names.join(", ")
                    )));
                }
                if info.not_after <= now() {
                    return Err(ApiError::new(format!(
                        "the certificate for {host} has expired"
                    )));
                }
                let stored = StoredCert {
                    cert_pem: cert.cert_pem,
                    key_sealed: self.vault.seal(&cert.key_pem),
                    source: "user".into(),
                    names: info.names.clone(),
                    issuer: info.issuer.clone(),
                    not_before: info.not_before,
                    not_after: info.not_after,
                };
                self.update_edge(|state| {
                    // It replaces the user's certificates for the same names.
                    state
                        .certificates
                        .retain(|c| !(c.source == "user" && c.names == info.names));
                    state.certificates.push(stored);
                    Ok(())
                })?;
                self.push_routes_now().await;
                crate::controller::log(format!(
                    "certificate installed for {}",
                    info.names.join(", ")
                ));
                Ok(json!({"names": info.names, "issuer": info.issuer, "not_after": info.not_after}))
            }
            EdgeRequest::TlsStatus => {
                let state = self.edge_state();
                let now = now();
                let mut rows = vec![];
                for (app, domains) in &state.domains {
                    for d in domains {
                        let cert = best_cert(&state, &d.host, now);
                        let acme = state.acme_hosts.get(&d.host);
                        rows.push(json!({
                            "app": app,
                            "host": d.host,
                            "last_attempt": acme.and_then(|a| a.last_attempt),
                            "last_error": acme.and_then(|a| a.last_error.clone()),
                            "failures": acme.map_or(0, |a| a.failures),
                            "source": cert.map(|c| c.source.clone()),
                            "issuer": cert.map(|c| c.issuer.clone()),
                            "not_after": cert.map(|c| c.not_after),
                            "valid": cert.is_some_and(|c| c.not_after > now),
                        }));
                    }
                }
                let acme = state
                    .acme
                    .as_ref()
                    .map(|a| json!({"email": a.email, "directory": a.directory}));
                Ok(json!({"hosts": rows, "https": self.https_listener(), "acme": acme}))
            }
            EdgeRequest::TlsAcme {
                email,
                directory,
                ca_pem,
                challenge,
            } => {
                self.acme_configure(email, directory, ca_pem, challenge)
                    .await
            }
            EdgeRequest::IngressConfigure {
                http,
                https,
                no_https,
            } => {
                let parse = |flag: &str, a: &str| {
                    a.parse::<SocketAddr>().map_err(|_| {
                        ApiError::new(format!("--{flag} {a:?}: give an IP address and port"))
                            .hint("twelve ingress configure --http 0.0.0.0:80 --https 0.0.0.0:443")
                    })
                };
                let mut listeners = self.edge_state().listeners;
                let before = self.effective_listeners(&listeners);
                if let Some(a) = http {
                    listeners.http = Some(parse("http", &a)?);
                }
                if let Some(a) = https {
                    listeners.https = Some(parse("https", &a)?);
                }
                if no_https {
                    listeners.https = None;
                }
                if listeners.http.is_some() && listeners.http == listeners.https {
                    return Err(ApiError::new(
                        "--http and --https must be different addresses",
                    ));
                }
                let want = self.effective_listeners(&listeners);
                // The running ingress moves its listeners without dropping connections;
                // when none runs (or an older one without `PUT /listeners`), one starts on
                // the new ones.
                let mut restarted = false;
                let live = match want == before {
                    true => Ok(()),
                    false => twelve_ingress::client::put_listeners(&self.ingress_socket(), &want)
                        .await
                        .map(|_| ()),
                };
                let save = |l: Listeners| {
                    self.update_edge(move |state| {
                        state.listeners = l;
                        Ok(())
                    })
                };
                match live {
                    Ok(()) => save(listeners)?,
                    Err(twelve_ingress::client::AdminError::Status { status, message })
                        if status.as_u16() == 400 =>
                    {
                        return Err(ApiError::new(format!(
                            "the ingress cannot move its listeners: {message}"
                        ))
                        .hint("pick free addresses; nothing was changed"));
                    }
                    Err(e) => {
                        crate::controller::log(format!(
                            "ingress: {e}; restarting it on the new listeners"
                        ));
                        save(listeners)?;
                        self.restart_ingress().await;
                        restarted = true;
                    }
                }
                if want != before {
                    crate::controller::log(format!(
                        "ingress listeners: http {}, https {}",
                        want.http,
                        want.https.map_or("off".to_string(), |a| a.to_string())
                    ));
                    self.push_routes_now().await;
                }
                Ok(json!({
                    "http": self.http_listener(),
                    "https": self.https_listener(),
                    "changed": want != before,
                    "restarted": restarted,
                }))
            }
        }
    }
}

impl Controller {
    /// Every domain with the certificate serving it and its last ACME attempt, for the
    /// dashboard and `/metrics`.
    pub(crate) fn certificate_views(&self) -> Vec<twelve_web::CertificateView> {
        let state = self.edge_state();
        let now = now();
        let mut views = vec![];
        for (app, domains) in &state.domains {
            for d in domains {
                let cert = best_cert(&state, &d.host, now);
                let acme = state.acme_hosts.get(&d.host);
                views.push(twelve_web::CertificateView {
                    host: d.host.clone(),
                    app: app.clone(),
                    source: cert.map(|c| c.source.clone()).unwrap_or_default(),
                    issuer: cert.map(|c| c.issuer.clone()).unwrap_or_default(),
                    not_after: cert.map(|c| c.not_after),
                    renewal_failures: acme.map_or(0, |a| u64::from(a.failures)),
                    last_error: acme.and_then(|a| a.last_error.clone()).unwrap_or_default(),
                });
            }
        }
        views
    }

    /// Lines for `twelve status`: hosts whose certificate cannot be obtained or renewed.
    pub(crate) fn edge_problems(&self) -> Vec<String> {
        let state = self.edge_state();
        let now = now();
        let mut lines = vec![];
        for (host, acme) in &state.acme_hosts {
            let Some(error) = &acme.last_error else {
                continue;
            };
            let serving = match best_cert(&state, host, now) {
                Some(c) if c.not_after > now => {
                    format!("still serving the certificate valid until {}", c.not_after)
                }
                Some(_) => "its certificate has EXPIRED".to_string(),
                None => "no certificate yet".to_string(),
            };
            lines.push(format!(
                "tls {host}: blocked: certificate renewal failing ({} attempts): {error}; {serving}",
                acme.failures
            ));
        }
        lines
    }
}

/// One edge.json writer at a time (see [`Controller::update_edge`]).
static EDGE_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Forgets ACME's part for a host no app has any more: its attempts (no `blocked` line
/// for a domain that is gone) and its ACME certificates (not renewed either way).
fn forget_host(state: &mut EdgeState, host: &str) {
    state.acme_hosts.remove(host);
    state
        .certificates
        .retain(|c| !(c.source == "acme" && c.names.iter().all(|n| n == host)));
}

/// The certificate that serves `host`: a valid one expiring last, else the latest.
fn best_cert<'s>(state: &'s EdgeState, host: &str, now: i64) -> Option<&'s StoredCert> {
    state
        .certificates
        .iter()
        .filter(|c| c.names.iter().any(|n| x509::name_matches(n, host)))
        .max_by_key(|c| (c.not_after > now, c.not_after))
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::home::Home;

    fn controller(dir: &std::path::Path) -> std::sync::Arc<Controller> {
        let c = Controller::new(Home::at(dir)).unwrap();
        let app: crate::model::AppRecord = serde_json::from_value(json!({
            "name": "web", "project_dir": "/nonexistent", "framework": "flask",
            "next_unit": 0, "current_release": 0, "secret_key": "k",
        }))
        .unwrap();
        c.store.put_app(&app).unwrap();
        c
    }

    /// `domain add` and the ACME task write edge.json at the same time: neither loses
    /// the other's changes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn domain_add_and_the_acme_task_never_lose_each_others_writes() {
        let dir = tempfile::tempdir().unwrap();
        let c = controller(dir.path());
        const N: usize = 40;
        for i in 0..N {
            c.edge(EdgeRequest::DomainAdd {
                app: "web".into(),
                host: format!("acme{i}.example.com"),
                hsts: false,
            })
            .await
            .unwrap();
        }
        let acme = {
            let c = c.clone();
            std::thread::spawn(move || {
                for i in 0..N {
                    let host = format!("acme{i}.example.com");
                    c.acme_record(&host, 1, None, Err("CA down".into()))
                        .unwrap();
                }
            })
        };
        let adds = (0..2).map(|t| {
            let c = c.clone();
            tokio::spawn(async move {
                for i in 0..N / 2 {
                    c.edge(EdgeRequest::DomainAdd {
                        app: "web".into(),
                        host: format!("new{t}-{i}.example.com"),
                        hsts: false,
                    })
                    .await
                    .unwrap();
                }
            })
        });
        for a in adds.collect::<Vec<_>>() {
            a.await.unwrap();
        }
        acme.join().unwrap();
        let state = c.edge_state();
        assert_eq!(state.domains["web"].len(), 2 * N, "{:?}", state.domains);
        assert_eq!(state.acme_hosts.len(), N, "{:?}", state.acme_hosts);
        assert!(state.acme_hosts.values().all(|h| h.failures == 1));
    }

    /// `remove-application` forgets the app's domains, maintenance flag, ACME state and
    /// the user's certificates for its hosts, but keeps a certificate another app uses.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_removed_app_leaves_nothing_in_the_edge_for_a_new_one_of_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let c = controller(dir.path());
        let cert = |names: &[&str], source: &str| StoredCert {
            cert_pem: String::new(),
            key_sealed: String::new(),
            source: source.into(),
            names: names.iter().map(|s| s.to_string()).collect(),
            issuer: "test".into(),
            not_before: 0,
            not_after: i64::MAX,
        };
        c.update_edge(|s| {
            s.domains.insert(
                "web".into(),
                vec![Domain {
                    host: "shop.example.com".into(),
                    hsts: true,
                }],
            );
            s.domains.insert(
                "api".into(),
                vec![Domain {
                    host: "api.example.com".into(),
                    hsts: false,
                }],
            );
            s.maintenance.insert("web".into(), "soon".into());
            s.acme_hosts
                .insert("shop.example.com".into(), Default::default());
            s.certificates.push(cert(&["shop.example.com"], "acme"));
            s.certificates.push(cert(&["shop.example.com"], "user"));
            s.certificates.push(cert(&["*.example.com"], "user"));
            s.certificates.push(cert(&["other.test"], "user"));
            Ok(())
        })
        .unwrap();
        c.forget_app_edge("web").unwrap();
        let s = c.edge_state();
        assert!(!s.domains.contains_key("web"));
        assert!(s.domains.contains_key("api"));
        assert!(s.maintenance.is_empty());
        assert!(s.acme_hosts.is_empty());
        let left: Vec<_> = s.certificates.iter().map(|c| c.names[0].as_str()).collect();
        // The wildcard also serves api's domain; other.test is no app's.
        assert_eq!(left, ["*.example.com", "other.test"]);
    }
}
