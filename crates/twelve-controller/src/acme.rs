//! ACME (RFC 8555) certificates for every domain: an account per directory (its key
//! sealed in edge.json), HTTP-01 answered by the ingress itself (the controller puts the
//! key authorizations in the route table), renewal once a third of the lifetime is left,
//! with exponential backoff and jitter after failures; every attempt and error is kept per
//! host for `twelve tls status` and `twelve status` (docs/tls.md).

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::api::ApiError;
use crate::controller::Controller;
use crate::edge::{EdgeState, StoredCert};

/// Let's Encrypt's production directory, the default.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// HTTP-01 answers being served: token -> key authorization.
pub(crate) static CHALLENGES: LazyLock<Mutex<BTreeMap<String, String>>> =
    LazyLock::new(Default::default);

/// TLS-ALPN-01 answers being served: host -> its challenge certificate.
pub(crate) static ALPN_CHALLENGES: LazyLock<Mutex<BTreeMap<String, twelve_ingress::Certificate>>> =
    LazyLock::new(Default::default);

pub const HTTP_01: &str = "http-01";
pub const TLS_ALPN_01: &str = "tls-alpn-01";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AcmeConfig {
    pub email: String,
    pub directory: String,
    /// A PEM root to trust for the directory (a test CA such as pebble's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// The account's credentials (JSON), sealed; for `directory`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_sealed: Option<String>,
    /// `http-01` or `tls-alpn-01`; none: chosen from the listeners at each order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenge: Option<String>,
}

/// What happened last for one host.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HostAcme {
    #[serde(default)]
    pub last_attempt: Option<i64>,
    #[serde(default)]
    pub last_success: Option<i64>,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub failures: u32,
    /// Not before this time (backoff).
    #[serde(default)]
    pub next_attempt: i64,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn env_secs(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// How long to wait after `failures` failed attempts: 1 min, 2, 4... up to 6 h
/// (`TWELVE_ACME_RETRY` sets the first step, in seconds), times 0.75 to 1.25.
fn backoff(failures: u32) -> i64 {
    let base = env_secs("TWELVE_ACME_RETRY", 60) as f64;
    let step = (base * 2f64.powi(failures.saturating_sub(1).min(20) as i32)).min(6.0 * 3600.0);
    let jitter = rand::rng().random_range(0.75..1.25);
    (step * jitter).max(1.0) as i64
}

/// Whether `cert` should be renewed at `now`: a third of its lifetime or less is left.
pub(crate) fn renewal_due(cert: &StoredCert, now: i64) -> bool {
    let lifetime = (cert.not_after - cert.not_before).max(0);
    now >= cert.not_after - lifetime / 3
}

impl Controller {
    /// The hosts ACME looks after: every non-wildcard domain that no certificate of the
    /// user's covers.
    fn acme_hosts(state: &EdgeState) -> Vec<String> {
        let mut hosts: Vec<String> = state
            .domains
            .values()
            .flatten()
            .map(|d| d.host.clone())
            .filter(|h| !h.starts_with("*."))
            .filter(|h| {
                !state.certificates.iter().any(|c| {
                    c.source == "user"
                        && c.names
                            .iter()
                            .any(|n| twelve_ingress::x509::name_matches(n, h))
                })
            })
            .collect();
        hosts.sort();
        hosts.dedup();
        hosts
    }

    /// `twelve tls acme`: stores the configuration, then obtains what is missing now.
    pub(crate) async fn acme_configure(
        &self,
        email: String,
        directory: Option<String>,
        ca_pem: Option<String>,
        challenge: Option<String>,
    ) -> Result<serde_json::Value, ApiError> {
        if let Some(c) = &challenge {
            if c != HTTP_01 && c != TLS_ALPN_01 {
                return Err(ApiError::new(format!(
                    "--challenge {c:?}: give http-01, tls-alpn-01 or auto"
                )));
            }
            if c == TLS_ALPN_01 && self.https_listener().is_none() {
                return Err(ApiError::new(
                    "--challenge tls-alpn-01 needs the HTTPS listener, which is off",
                )
                .hint("twelve ingress configure --https 0.0.0.0:443"));
            }
        }
        if !email.contains('@') || email.contains(char::is_whitespace) {
            return Err(
                ApiError::new(format!("--email {email:?} is not an email address"))
                    .hint("twelve tls acme --email you@example.com"),
            );
        }
        let directory = directory.unwrap_or_else(|| LETS_ENCRYPT.to_string());
        if !directory.starts_with("https://") {
            return Err(ApiError::new(format!(
                "--directory {directory:?} must be an https:// URL (RFC 8555)"
            )));
        }
        if let Some(pem) = &ca_pem {
            if !pem.contains("BEGIN CERTIFICATE") {
                return Err(ApiError::new("--ca-file holds no PEM certificate"));
            }
        }
        self.update_edge(|state| {
            let same = state
                .acme
                .as_ref()
                .is_some_and(|a| a.directory == directory && a.email == email);
            let account_sealed = if same {
                state.acme.as_ref().and_then(|a| a.account_sealed.clone())
            } else {
                None
            };
            state.acme = Some(AcmeConfig {
                email,
                directory,
                ca_pem,
                account_sealed,
                challenge,
            });
            // A new configuration is tried at once.
            for h in state.acme_hosts.values_mut() {
                h.next_attempt = 0;
                h.failures = 0;
            }
            Ok(())
        })?;
        self.acme_pass().await;
        let state = self.edge_state();
        let hosts: Vec<_> = Self::acme_hosts(&state)
            .into_iter()
            .map(|h| {
                let s = state.acme_hosts.get(&h).cloned().unwrap_or_default();
                json!({"host": h, "ok": s.last_error.is_none() && s.last_success.is_some(), "error": s.last_error})
            })
            .collect();
        Ok(json!({"hosts": hosts}))
    }

    async fn acme_account(&self, cfg: &AcmeConfig) -> Result<(Account, Option<String>), String> {
        let builder = match &cfg.ca_pem {
            Some(pem) => {
                let path = self.home.root.join("acme-ca.pem");
                std::fs::write(&path, pem).map_err(|e| format!("{}: {e}", path.display()))?;
                Account::builder_with_root(&path)
            }
            None => Account::builder(),
        }
        .map_err(|e| format!("cannot set up the ACME client: {e}"))?;
        if let Some(sealed) = &cfg.account_sealed {
            let json = self
                .vault
                .open_sealed(sealed)
                .map_err(|e| format!("cannot unseal the ACME account: {e}"))?;
            let creds: AccountCredentials = serde_json::from_str(&json.0)
                .map_err(|e| format!("the stored ACME account is unreadable: {e}"))?;
            let account = builder
                .from_credentials(creds)
                .await
                .map_err(|e| format!("{}: {e}", cfg.directory))?;
            return Ok((account, None));
        }
        let contact = format!("mailto:{}", cfg.email);
        let (account, creds) = builder
            .create(
                &NewAccount {
                    contact: &[&contact],
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                cfg.directory.clone(),
                None,
            )
            .await
            .map_err(|e| format!("cannot register with {}: {e}", cfg.directory))?;
        let json = serde_json::to_string(&creds).map_err(|e| e.to_string())?;
        Ok((account, Some(self.vault.seal(&json))))
    }

    /// The challenge types to try, in order: the configured one, else TLS-ALPN-01 first
    /// when HTTPS is on port 443 and HTTP is not on port 80 (the CA reaches only 443),
    /// else HTTP-01 first; TLS-ALPN-01 only with an HTTPS listener.
    fn challenge_order(&self, cfg: &AcmeConfig) -> Vec<ChallengeType> {
        let https = self.https_listener();
        match cfg.challenge.as_deref() {
            Some(HTTP_01) => vec![ChallengeType::Http01],
            Some(TLS_ALPN_01) => vec![ChallengeType::TlsAlpn01],
            _ if https.is_none() => vec![ChallengeType::Http01],
            _ if https.is_some_and(|a| a.port() == 443) && self.http_listener().port() != 80 => {
                vec![ChallengeType::TlsAlpn01, ChallengeType::Http01]
            }
            _ => vec![ChallengeType::Http01, ChallengeType::TlsAlpn01],
        }
    }

    /// One order for `host`: HTTP-01 or TLS-ALPN-01 answered by the ingress, then the
    /// certificate.
    async fn acme_issue(
        &self,
        account: &Account,
        host: &str,
        kinds: &[ChallengeType],
    ) -> Result<StoredCert, String> {
        let identifiers = [Identifier::Dns(host.to_string())];
        let mut order = account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(|e| format!("new order: {e}"))?;
        let mut tokens = vec![];
        let mut alpn = false;
        let result = async {
            let mut authorizations = order.authorizations();
            while let Some(authz) = authorizations.next().await {
                let mut authz = authz.map_err(|e| format!("authorization: {e}"))?;
                match authz.status {
                    AuthorizationStatus::Pending => {}
                    AuthorizationStatus::Valid => continue,
                    other => return Err(format!("authorization is {other:?}")),
                }
                let kind = kinds
                    .iter()
                    .find(|k| authz.challenges.iter().any(|c| c.r#type == **k))
                    .cloned()
                    .ok_or_else(|| format!("the CA offers none of the challenges {kinds:?}"))?;
                let mut challenge = authz
                    .challenge(kind.clone())
                    .ok_or("the CA's challenge went away")?;
                if kind == ChallengeType::TlsAlpn01 {
                    let key_authorization = challenge.key_authorization();
                    let digest = key_authorization.digest();
                    let cert = alpn_certificate(host, digest.as_ref())?;
                    ALPN_CHALLENGES
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(host.to_string(), cert);
                    alpn = true;
                } else {
                    let key_authorization = challenge.key_authorization().as_str().to_string();
                    let token = challenge.token.clone();
                    CHALLENGES
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(token.clone(), key_authorization);
                    tokens.push(token);
                }
                // The ingress answers before the CA is told to look.
                self.push_routes_now().await;
                challenge
                    .set_ready()
                    .await
                    .map_err(|e| format!("challenge: {e}"))?;
            }
            let retry = RetryPolicy::new().timeout(Duration::from_secs(60));
            match order.poll_ready(&retry).await {
                Ok(OrderStatus::Ready) => {}
                Ok(status) => {
                    let why = order
                        .state()
                        .error
                        .as_ref()
                        .map(|p| p.to_string())
                        .unwrap_or_default();
                    return Err(format!("the order is {status:?} {why}").trim().to_string());
                }
                Err(e) => return Err(format!("validation: {e}")),
            }
            let key_pem = order
                .finalize()
                .await
                .map_err(|e| format!("finalize: {e}"))?;
            let chain = order
                .poll_certificate(&retry)
                .await
                .map_err(|e| format!("certificate: {e}"))?;
            Ok((chain, key_pem))
        }
        .await;
        {
            let mut challenges = CHALLENGES.lock().unwrap_or_else(|e| e.into_inner());
            for t in &tokens {
                challenges.remove(t);
            }
        }
        if alpn {
            ALPN_CHALLENGES
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(host);
        }
        let (chain, key_pem) = result?;
        let cert = twelve_ingress::Certificate {
            cert_pem: chain,
            key_pem,
        };
        let info = twelve_ingress::check_certificate(&cert)
            .map_err(|e| format!("the CA's certificate cannot be used: {e}"))?;
        Ok(StoredCert {
            cert_pem: cert.cert_pem,
            key_sealed: self.vault.seal(&cert.key_pem),
            source: "acme".into(),
            names: info.names,
            issuer: info.issuer,
            not_before: info.not_before,
            not_after: info.not_after,
        })
    }

    /// Obtains or renews every certificate that is due and not backing off.
    pub(crate) async fn acme_pass(&self) {
        let _one = ACME_LOCK.lock().await;
        let state = self.edge_state();
        let Some(cfg) = state.acme.clone() else {
            return;
        };
        let now = now();
        let due: Vec<String> = Self::acme_hosts(&state)
            .into_iter()
            .filter(|h| {
                let waited = state
                    .acme_hosts
                    .get(h)
                    .is_none_or(|s| s.next_attempt <= now);
                let cert = state
                    .certificates
                    .iter()
                    .filter(|c| c.source == "acme" && c.names.iter().any(|n| n == h))
                    .max_by_key(|c| c.not_after);
                waited && cert.is_none_or(|c| renewal_due(c, now))
            })
            .collect();
        if due.is_empty() {
            return;
        }
        let account = self.acme_account(&cfg).await;
        let kinds = self.challenge_order(&cfg);
        for host in due {
            let result = match &account {
                Ok((account, _)) => self.acme_issue(account, &host, &kinds).await,
                Err(e) => Err(e.clone()),
            };
            let sealed = match &account {
                Ok((_, Some(sealed))) => Some(sealed.clone()),
                _ => None,
            };
            if let Err(e) = self.acme_record(&host, now, sealed, result) {
                crate::controller::log(format!("ACME: {}", e.message));
            }
            self.push_routes_now().await;
        }
    }

    /// Records an attempt for `host` in edge.json (the new certificate, or the error and
    /// when to try again), with the account's credentials when they are new.
    pub(crate) fn acme_record(
        &self,
        host: &str,
        now: i64,
        account_sealed: Option<String>,
        result: Result<StoredCert, String>,
    ) -> Result<(), ApiError> {
        self.update_edge(|state| {
            if let (Some(sealed), Some(acme)) = (account_sealed, state.acme.as_mut()) {
                acme.account_sealed = Some(sealed);
            }
            // The domain went away during the attempt: nothing to keep for it.
            let wanted = state.domains.values().flatten().any(|d| d.host == host);
            let entry = state.acme_hosts.entry(host.to_string()).or_default();
            entry.last_attempt = Some(now);
            match result {
                Ok(cert) => {
                    entry.last_success = Some(now);
                    entry.last_error = None;
                    entry.failures = 0;
                    entry.next_attempt = 0;
                    crate::controller::log(format!(
                        "ACME: certificate for {host} from {}, valid until {}",
                        cert.issuer, cert.not_after
                    ));
                    // The new one replaces older ACME certificates for the same names.
                    state
                        .certificates
                        .retain(|c| !(c.source == "acme" && c.names == cert.names));
                    if wanted {
                        state.certificates.push(cert);
                    }
                }
                Err(e) => {
                    entry.failures += 1;
                    entry.next_attempt = now + backoff(entry.failures);
                    crate::controller::log(format!(
                        "ACME: {host}: {e} (attempt {}, next in {} s)",
                        entry.failures,
                        entry.next_attempt - now
                    ));
                    entry.last_error = Some(e);
                }
            }
            if !wanted {
                state.acme_hosts.remove(host);
            }
            Ok(())
        })
    }

    /// Checks every `TWELVE_ACME_CHECK` seconds (60) what is due.
    pub async fn acme_loop(self: Arc<Self>) {
        loop {
            self.acme_pass().await;
            let secs = env_secs("TWELVE_ACME_CHECK", 60).max(1);
            tokio::time::sleep(Duration::from_secs(secs)).await;
        }
    }
}

/// The TLS-ALPN-01 certificate for `host` (RFC 8737): self-signed, naming only `host`,
/// with the critical acmeIdentifier extension holding the key authorization's SHA-256.
fn alpn_certificate(host: &str, digest: &[u8]) -> Result<twelve_ingress::Certificate, String> {
    let key = rcgen::KeyPair::generate().map_err(|e| format!("tls-alpn-01 key: {e}"))?;
    let mut params = rcgen::CertificateParams::new(vec![host.to_string()])
        .map_err(|e| format!("tls-alpn-01 certificate for {host}: {e}"))?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("tls-alpn-01 certificate for {host}: {e}"))?;
    Ok(twelve_ingress::Certificate {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// One ACME pass at a time (the loop and `twelve tls acme`).
static ACME_LOCK: LazyLock<tokio::sync::Mutex<()>> = LazyLock::new(Default::default);

#[cfg(test)]
mod tests {
    use super::*;

    /// The TLS-ALPN-01 certificate loads in the ingress as its route table will carry it.
    #[test]
    fn alpn_certificates_load_in_the_ingress() {
        let cert = alpn_certificate("c.acme.test", &[7u8; 32]).unwrap();
        let mut table = twelve_ingress::RouteTable::default();
        table.acme_tls_alpn.insert("c.acme.test".into(), cert);
        table.validate().unwrap();
    }
}
