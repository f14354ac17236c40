//! The little of a kubeconfig twelve reads: the current (or named) context's server, its
//! CA certificate or `insecure-skip-tls-verify`, the user's bearer token or client
//! certificate, and the context's namespace. Found as kubectl finds it: `--kubeconfig`, else
//! `$KUBECONFIG` (a `:`-separated list, merged: the first file to name an entry wins), else
//! `~/.kube/config`. `exec` credential plugins and auth providers are not supported: use a
//! token, or `kubectl proxy` and `--server http://127.0.0.1:8001`.

use std::path::{Path, PathBuf};

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

/// The kubeconfig files kubectl would read, without `--kubeconfig`: the existing files of
/// `$KUBECONFIG` (`kubeconfig_env`), else `~/.kube/config` if it exists. Empty when none.
pub fn default_files(kubeconfig_env: Option<&str>, home: Option<&Path>) -> Vec<PathBuf> {
    if let Some(list) = kubeconfig_env.filter(|l| !l.trim().is_empty()) {
        return std::env::split_paths(list)
            .filter(|p| !p.as_os_str().is_empty() && p.is_file())
            .collect();
    }
    home.map(|h| h.join(".kube/config"))
        .filter(|p| p.is_file())
        .into_iter()
        .collect()
}

/// Reads and merges several kubeconfig files as kubectl does: `current-context` from the
/// first file that sets one, and for each cluster, user and context the first file's entry
/// of that name. Relative paths in a file are taken from that file's directory.
pub fn read_merged(paths: &[PathBuf], context: Option<&str>) -> Result<Kubeconfig, String> {
    if let [one] = paths {
        return read(one, context);
    }
    let mut merged = serde_json::json!({"clusters": [], "users": [], "contexts": []});
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    for path in paths {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read kubeconfig {}: {e}", path.display()))?;
        let mut doc: Value = serde_saphyr::from_str(&text)
            .map_err(|e| format!("kubeconfig {}: invalid YAML: {e}", path.display()))?;
        absolutize(&mut doc, path.parent().unwrap_or(Path::new(".")));
        if merged["current-context"].as_str().unwrap_or("").is_empty() {
            merged["current-context"] = doc["current-context"].clone();
        }
        for list in ["clusters", "users", "contexts"] {
            for entry in doc[list].as_array().into_iter().flatten() {
                let known = merged[list]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|e| e["name"] == entry["name"]));
                if !known {
                    if let Some(l) = merged[list].as_array_mut() {
                        l.push(entry.clone());
                    }
                }
            }
        }
    }
    from_doc(&merged, Path::new("."), context)
        .map_err(|e| format!("kubeconfig {}: {e}", names.join(":")))
}

/// Makes the file paths of a kubeconfig's entries absolute, from `dir`.
fn absolutize(doc: &mut Value, dir: &Path) {
    for (list, field, keys) in [
        ("clusters", "cluster", &["certificate-authority"][..]),
        (
            "users",
            "user",
            &["client-certificate", "client-key", "tokenFile"][..],
        ),
    ] {
        for entry in doc[list].as_array_mut().into_iter().flatten() {
            for key in keys {
                if let Some(p) = entry[field][*key].as_str() {
                    let abs = dir.join(p).display().to_string();
                    entry[field][*key] = abs.into();
                }
            }
        }
    }
}

/// Parses a kubeconfig's text; relative file paths are taken from `dir`.
pub fn parse(text: &str, dir: &Path, context: Option<&str>) -> Result<Kubeconfig, String> {
    let doc: Value = serde_saphyr::from_str(text).map_err(|e| format!("invalid YAML: {e}"))?;
    from_doc(&doc, dir, context)
}

fn from_doc(doc: &Value, dir: &Path, context: Option<&str>) -> Result<Kubeconfig, String> {
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
    let mut client_cert = None;
    if let Some(user_name) = ctx["user"].as_str() {
        let user = named("users", user_name, "user")?;
        if let Some(t) = user["token"].as_str() {
            token = Some(t.trim().to_string());
        } else if let Some(f) = user["tokenFile"].as_str() {
            let t = read_file(f)?;
            token = Some(String::from_utf8_lossy(&t).trim().to_string());
        }
        let cert = if let Some(d) = user["client-certificate-data"].as_str() {
            Some(b64(d, "client-certificate-data")?)
        } else if let Some(f) = user["client-certificate"].as_str() {
            Some(read_file(f)?)
        } else {
            None
        };
        let key = if let Some(d) = user["client-key-data"].as_str() {
            Some(b64(d, "client-key-data")?)
        } else if let Some(f) = user["client-key"].as_str() {
            Some(read_file(f)?)
        } else {
            None
        };
        match (cert, key) {
            (Some(c), Some(k)) => client_cert = Some((c, k)),
            (None, None) => {}
            _ => {
                return Err(format!(
                    "user {user_name:?} has a client certificate without its key (or a key without its certificate): give both client-certificate[-data] and client-key[-data]"
                ))
            }
        }
        if token.is_none()
            && client_cert.is_none()
            && (!user["exec"].is_null() || !user["auth-provider"].is_null())
        {
            return Err(format!(
                "user {user_name:?} authenticates with a credential plugin (exec or auth-provider), which twelve does not support: give a bearer token (--token-file, e.g. from `kubectl create token`) or run `kubectl proxy` and pass --server http://127.0.0.1:8001"
            ));
        }
    }
    Ok(Kubeconfig {
        target: Target {
            server,
            token,
            ca_pem,
            insecure,
            client_cert,
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
- name: u3
  user: {exec: {command: gke-gcloud-auth-plugin}}
- name: u4
  user: {client-certificate-data: eA==}
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
    fn client_certificates_are_read_and_plugins_refused_with_a_way_out() {
        let k = parse(CONFIG, Path::new("."), Some("other")).unwrap();
        assert_eq!(k.target.client_cert, Some((b"x".to_vec(), b"x".to_vec())));
        assert!(k.target.insecure);
        let plugin = CONFIG.replace("user: u2}", "user: u3}");
        let e = parse(&plugin, Path::new("."), Some("other")).unwrap_err();
        assert!(e.contains("kubectl proxy"), "{e}");
        let half = CONFIG.replace("user: u2}", "user: u4}");
        let e = parse(&half, Path::new("."), Some("other")).unwrap_err();
        assert!(e.contains("client-key"), "{e}");
        let e = parse(CONFIG, Path::new("."), Some("nope")).unwrap_err();
        assert!(e.contains("no context named \"nope\""), "{e}");
    }

    #[test]
    fn kubeconfig_env_is_a_merged_list_and_home_is_the_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::write(&a, "clusters: [{name: c, cluster: {server: 'https://a:1', certificate-authority: ca.pem}}]\nusers: [{name: u, user: {token: ta}}]\n").unwrap();
        std::fs::write(&b, CONFIG.replace("u1", "u")).unwrap();
        std::fs::write(dir.path().join("ca.pem"), "CA").unwrap();
        let list = std::env::join_paths([&a, &dir.path().join("missing"), &b]).unwrap();
        let files = default_files(list.to_str(), None);
        assert_eq!(files, vec![a.clone(), b.clone()]);
        // `a` has no current-context: `b`'s; `b`'s context "dev" names cluster c1 and user u.
        let k = read_merged(&files, None).unwrap();
        assert_eq!(k.target.server, "https://10.0.0.1:6443");
        assert_eq!(
            k.target.token.as_deref(),
            Some("ta"),
            "the first file's user wins"
        );
        let ctx = CONFIG
            .replace("u1", "u")
            .replace("cluster: c1,", "cluster: c,");
        std::fs::write(&b, ctx).unwrap();
        let k = read_merged(&files, None).unwrap();
        assert_eq!(k.target.server, "https://a:1");
        assert_eq!(k.target.ca_pem.as_deref(), Some(&b"CA"[..]));
        assert!(default_files(Some(""), None).is_empty());
        std::fs::create_dir(dir.path().join(".kube")).unwrap();
        std::fs::write(dir.path().join(".kube/config"), CONFIG).unwrap();
        assert_eq!(
            default_files(None, Some(dir.path())),
            vec![dir.path().join(".kube/config")]
        );
    }
}
