//! User secrets (`add-secret`, `grant-secret`, ...) and the app secret key, sealed at rest
//! by the vault and only ever opened for the apps they are granted to.

use indexmap::IndexMap;
use serde_json::{json, Value};
use twelve_charm::SecretView;

use crate::api::ApiError;
use crate::controller::Controller;
use crate::model::{AppRecord, SecretRecord, SecretRevision};

type ApiResult = Result<Value, ApiError>;

fn store_err(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(format!("cannot update the state store: {e}"))
}

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Juju-style ids: 20 characters of base32hex, lower case.
fn new_id() -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuv";
    (0..20)
        .map(|_| ALPHABET[rand::random::<u8>() as usize % 32] as char)
        .collect()
}

fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.as_bytes()[0].is_ascii_lowercase()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(format!("invalid secret name {name:?}"))
            .hint("use lower-case letters, digits and dashes, starting with a letter"))
    }
}

fn check_content(content: &IndexMap<String, String>) -> Result<(), ApiError> {
    if content.is_empty() {
        return Err(ApiError::new("a secret needs at least one key=value")
            .hint("twelve add-secret my-token value=1234"));
    }
    for k in content.keys() {
        let ok = !k.is_empty()
            && k.as_bytes()[0].is_ascii_lowercase()
            && k.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return Err(ApiError::new(format!("invalid secret key {k:?}"))
                .hint("keys are lower-case letters, digits and dashes, starting with a letter"));
        }
    }
    Ok(())
}

impl Controller {
    fn secret_record(&self, name_or_id: &str) -> Result<SecretRecord, ApiError> {
        self.store
            .secret(name_or_id)
            .map_err(store_err)?
            .ok_or_else(|| {
                ApiError::new(format!("secret {name_or_id:?} not found"))
                    .hint("see `twelve secrets`")
            })
    }

    fn seal_content(&self, content: &IndexMap<String, String>) -> String {
        self.vault
            .seal(&serde_json::to_string(content).unwrap_or_default())
    }

    fn open_content(&self, sealed: &str) -> Result<IndexMap<String, String>, ApiError> {
        let text = self
            .vault
            .open_sealed(sealed)
            .map_err(|e| ApiError::new(e.to_string()))?;
        serde_json::from_str(&text.0).map_err(|_| ApiError::new("a stored secret is not valid"))
    }

    pub(crate) fn add_secret(
        &self,
        name: &str,
        content: IndexMap<String, String>,
        description: Option<String>,
    ) -> ApiResult {
        check_name(name)?;
        check_content(&content)?;
        if self.store.secret(name).map_err(store_err)?.is_some() {
            return Err(
                ApiError::new(format!("secret {name:?} already exists")).hint(format!(
                    "use `twelve update-secret {name} ...` for a new revision"
                )),
            );
        }
        let id = new_id();
        let rec = SecretRecord {
            id: id.clone(),
            name: name.to_string(),
            description,
            created: now(),
            revisions: vec![SecretRevision {
                revision: 1,
                created: now(),
                sealed: self.seal_content(&content),
            }],
            grants: vec![],
        };
        self.store.put_secret(&rec).map_err(store_err)?;
        Ok(json!({"id": id, "uri": format!("secret:{id}"), "name": name, "revision": 1}))
    }

    pub(crate) fn update_secret(
        &self,
        secret: &str,
        content: IndexMap<String, String>,
        description: Option<String>,
    ) -> ApiResult {
        check_content(&content)?;
        let mut rec = self.secret_record(secret)?;
        let revision = rec.latest().map(|r| r.revision).unwrap_or(0) + 1;
        rec.revisions.push(SecretRevision {
            revision,
            created: now(),
            sealed: self.seal_content(&content),
        });
        if description.is_some() {
            rec.description = description;
        }
        self.store.put_secret(&rec).map_err(store_err)?;
        // The apps that use it roll the new revision out: a change of their state, whose
        // generation the CLI waits for.
        let uri = format!("secret:{}", rec.id);
        let mut apps = vec![];
        for app in self.store.apps().map_err(store_err)? {
            let uses = app
                .config
                .values()
                .any(|v| v.as_str() == Some(uri.as_str()));
            if uses && rec.grants.contains(&app.name) {
                let changed = self.update(&app.name, |_| Ok(json!({})))?;
                apps.push(json!({"app": app.name, "generation": changed["generation"]}));
            }
        }
        self.wake.notify_one();
        Ok(json!({"id": rec.id, "name": rec.name, "revision": revision, "apps": apps}))
    }

    pub(crate) fn list_secrets(&self) -> ApiResult {
        let list: Vec<Value> = self
            .store
            .secrets()
            .map_err(store_err)?
            .iter()
            .map(|s| {
                json!({
                    "id": s.id, "uri": format!("secret:{}", s.id), "name": s.name, "description": s.description,
                    "revision": s.latest().map(|r| r.revision), "created": s.created, "grants": s.grants,
                })
            })
            .collect();
        Ok(Value::Array(list))
    }

    pub(crate) fn show_secret(
        &self,
        secret: &str,
        reveal: bool,
        revision: Option<u32>,
    ) -> ApiResult {
        let rec = self.secret_record(secret)?;
        let rev = match revision {
            Some(n) => rec
                .revisions
                .iter()
                .find(|r| r.revision == n)
                .ok_or_else(|| {
                    ApiError::new(format!("secret {} has no revision {n}", rec.name)).hint(format!(
                        "revisions: 1..{}",
                        rec.latest().map(|r| r.revision).unwrap_or(0)
                    ))
                })?,
            None => rec
                .latest()
                .ok_or_else(|| ApiError::new("the secret has no revisions"))?,
        };
        let content = self.open_content(&rev.sealed)?;
        let shown: IndexMap<String, String> = content
            .into_iter()
            .map(|(k, v)| (k, if reveal { v } else { "<redacted>".into() }))
            .collect();
        Ok(json!({
            "id": rec.id, "uri": format!("secret:{}", rec.id), "name": rec.name, "description": rec.description,
            "revision": rev.revision, "revisions": rec.revisions.len(), "created": rec.created, "grants": rec.grants,
            "content": shown,
        }))
    }

    pub(crate) fn grant_secret(&self, secret: &str, app: &str, grant: bool) -> ApiResult {
        self.app(app)?;
        let mut rec = self.secret_record(secret)?;
        if grant {
            if !rec.grants.iter().any(|g| g == app) {
                rec.grants.push(app.to_string());
            }
        } else {
            rec.grants.retain(|g| g != app);
        }
        self.store.put_secret(&rec).map_err(store_err)?;
        self.wake.notify_one();
        Ok(json!({"name": rec.name, "grants": rec.grants}))
    }

    pub(crate) fn remove_secret(&self, secret: &str) -> ApiResult {
        let rec = self.secret_record(secret)?;
        self.store.delete_secret(&rec.id).map_err(store_err)?;
        self.wake.notify_one();
        Ok(json!({"removed": rec.name}))
    }

    /// What the app may see of the secrets its config refers to (`secret:<id>` values).
    pub(crate) fn secret_views(&self, app: &AppRecord) -> IndexMap<String, SecretView> {
        let mut views = IndexMap::new();
        for v in app.config.values() {
            let Some(uri) = v.as_str() else { continue };
            let Some(id) = uri.strip_prefix("secret:") else {
                continue;
            };
            let Ok(Some(rec)) = self.store.secret(id) else {
                continue;
            };
            let granted = rec.grants.contains(&app.name);
            let content = if granted {
                rec.latest().and_then(|r| self.open_content(&r.sealed).ok())
            } else {
                None
            };
            views.insert(
                rec.id.clone(),
                SecretView {
                    name: Some(rec.name.clone()),
                    content,
                },
            );
        }
        views
    }

    /// The app's generated secret key, opened from its sealed form.
    pub(crate) fn app_secret_key(&self, app: &AppRecord) -> Option<String> {
        match self.vault.open_sealed(&app.secret_key) {
            Ok(s) => Some(s.0.clone()),
            // A store written before secrets were sealed holds the key as it is: seal it now.
            Err(_) if !app.secret_key.starts_with("v1:") && !app.secret_key.is_empty() => {
                let plain = app.secret_key.clone();
                let sealed = self.vault.seal(&plain);
                let _ = self.store.update_app(&app.name, move |a| {
                    a.secret_key = sealed;
                    Ok(())
                });
                Some(plain)
            }
            Err(_) => None,
        }
    }
}
