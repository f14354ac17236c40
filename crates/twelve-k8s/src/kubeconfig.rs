//! The little of a kubeconfig twelve reads: the current (or named) context's server, its
//! CA certificate or `insecure-skip-tls-verify`, the user's bearer token, and the
//! context's namespace. Client certificates and `exec` credential plugins are not
//! supported: use a token, or `kubectl proxy` and `--server http://127.0.0.1:8001`.

use std::path::Path;

use base64::Engine;
use serde_json::Value;

use crate::apply::Target;

#[derive(Debug, Clone, Default)]
pub struct Kubeconfig {
    pub target: Target,
    pub namespace: Option<String>,
}

/// Reads `path`; `context` overrides `current-context`.
pub fn read(path: &Path, context: Option<&str>) -> Result<Kubeconfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read kubeconfig {}: {e}", path.display()))?;
    parse(&text, path.parent().unwrap_or(Path::new(".")), context)
        .map_err(|e| format!("kubeconfig {}: {e}", path.display()))
}

/// Parses a kubeconfig's text; relative file paths are taken from `dir`.
pub fn parse(text: &str, dir: &Path, context: Option<&str>) -> Result<Kubeconfig, String> {
    let doc: Value = serde_saphyr::from_str(text).map_err(|e| format!("invalid YAML: {e}"))?;
    let ctx_name = match context {
        Some(c) => c.to_string(),
        None => doc["current-context"]
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or("no current-context (pass --context)")?
            .to_string(),
    };
    let named = |list: &str, name: &str, field: &str| -> Result<Value, String> {
        doc[list]
            .as_array()
            .and_then(|l| l.iter().find(|e| e["name"] == name))
            .map(|e| e[field].clone())
            .ok_or_else(|| format!("no {field} named {name:?} in {list}"))
    };
    let ctx = named("contexts", &ctx_name, "context")?;
    let cluster_name = ctx["cluster"]
        .as_str()
        .ok_or("the context names no cluster")?;
    let cluster = named("clusters", cluster_name, "cluster")?;
    let server = cluster["server"]
        .as_str()
        .ok_or_else(|| format!("cluster {cluster_name:?} has no server"))?
        .to_string();
    let read_file = |p: &str| {
        let p = dir.join(p);
        std::fs::read(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))
    };
    let b64 = |s: &str, what: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .map_err(|e| format!("{what} is not base64: {e}"))
    };
    let ca_pem = if let Some(data) = cluster["certificate-authority-data"].as_str() {
        Some(b64(data, "certificate-authority-data")?)
    } else if let Some(file) = cluster["certificate-authority"].as_str() {
        Some(read_file(file)?)
    } else {
        None
    };
    let insecure = cluster["insecure-skip-tls-verify"]
        .as_bool()
        .unwrap_or(false);
    let mut token = None;
    if let Some(user_name) = ctx["user"].as_str() {
        let user = named("users", user_name, "user")?;
        if let Some(t) = user["token"].as_str() {
            token = Some(t.trim().to_string());
        } else if let Some(f) = user["tokenFile"].as_str() {
            let t = read_file(f)?;
            token = Some(String::from_utf8_lossy(&t).trim().to_string());
        } else if !user["client-certificate-data"].is_null()
            || !user["client-certificate"].is_null()
            || !user["exec"].is_null()
            || !user["auth-provider"].is_null()
        {
            return Err(format!(
                "user {user_name:?} authenticates with a client certificate or a credential plugin, which twelve does not support: give a bearer token (--token-file, e.g. from `kubectl create token`) or run `kubectl proxy` and pass --server http://127.0.0.1:8001"
            ));
        }
    }
    Ok(Kubeconfig {
        target: Target {
            server,
            token,
            ca_pem,
            insecure,
        },
        namespace: ctx["namespace"].as_str().map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
apiVersion: v1
kind: Config
current-context: dev
clusters:
- name: c1
  cluster:
    server: https://10.0.0.1:6443
    certificate-authority-data: LS0tLS1CRUdJTg==
- name: c2
  cluster: {server: "https://k8s.example:443", insecure-skip-tls-verify: true}
contexts:
- name: dev
  context: {cluster: c1, user: u1, namespace: apps}
- name: other
  context: {cluster: c2, user: u2}
users:
- name: u1
  user: {token: abc}
- name: u2
  user: {client-certificate-data: eA==, client-key-data: eA==}
"#;

    #[test]
    fn current_context() {
        let k = parse(CONFIG, Path::new("."), None).unwrap();
        assert_eq!(k.target.server, "https://10.0.0.1:6443");
        assert_eq!(k.target.token.as_deref(), Some("abc"));
        assert_eq!(k.target.ca_pem.as_deref(), Some(&b"-----BEGIN"[..]));
        assert!(!k.target.insecure);
        assert_eq!(k.namespace.as_deref(), Some("apps"));
    }

    #[test]
    fn client_certificates_are_refused_with_a_way_out() {
        let e = parse(CONFIG, Path::new("."), Some("other")).unwrap_err();
        assert!(e.contains("kubectl proxy"), "{e}");
        let e = parse(CONFIG, Path::new("."), Some("nope")).unwrap_err();
        assert!(e.contains("no context named \"nope\""), "{e}");
    }
}
