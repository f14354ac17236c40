//! Backing services (`twelve deploy postgresql [--external URL]`) and integrations
//! (`twelve integrate web postgresql`, `twelve integrate web s3 --data ...`,
//! `twelve remove-relation`). Credentials are provisioned per app with least privilege by
//! twelve-providers; every URL and relation datum is sealed at rest.

use indexmap::IndexMap;
use serde_json::{json, Value};
use twelve_charm::integrations::{validate_data, IntegrationKind, RelationData};
use twelve_providers::{Kind, Server};

use crate::api::{ApiError, IntegrationStatus, ServiceStatus};
use crate::controller::Controller;
use crate::model::{AppRecord, RelationRecord, ServiceRecord};

type ApiResult = Result<Value, ApiError>;

fn store_err(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(format!("cannot update the state store: {e}"))
}

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The integration kind a backing service satisfies.
pub fn kind_of_service(kind: Kind) -> IntegrationKind {
    match kind {
        Kind::Postgresql => IntegrationKind::Postgresql,
        Kind::Mysql => IntegrationKind::Mysql,
        Kind::Redis => IntegrationKind::Redis,
        Kind::Rabbitmq => IntegrationKind::Rabbitmq,
    }
}

impl Controller {
    pub(crate) fn service_record(&self, name: &str) -> Result<Option<ServiceRecord>, ApiError> {
        self.store.service(name).map_err(store_err)
    }

    pub(crate) fn open_server(&self, rec: &ServiceRecord) -> Result<Server, ApiError> {
        let text = self
            .vault
            .open_sealed(&rec.server_sealed)
            .map_err(|e| ApiError::new(e.to_string()))?;
        serde_json::from_str(&text.0)
            .map_err(|e| ApiError::new(format!("the record of {} is damaged: {e}", rec.name)))
    }

    /// The providers for the service `name` on `server`: a managed server's processes run
    /// as the service's own system user (created here when missing; see
    /// `RunAs::service_user`), never as root or the machine's `postgres`.
    pub(crate) fn providers_for(
        &self,
        name: &str,
        server: &Server,
    ) -> Result<twelve_providers::Providers, ApiError> {
        if !server.is_managed() {
            return Ok(self.providers.clone());
        }
        let user = self
            .run_as
            .service_user(&self.home.root, name)
            .map_err(ApiError::new)?;
        Ok(match user {
            Some(u) => self.providers.clone().with_service_user(u.name),
            None => self.providers.clone(),
        })
    }

    pub(crate) async fn deploy_service(
        &self,
        kind: &str,
        name: Option<String>,
        external: Option<String>,
        management: Option<String>,
        key_prefix: bool,
    ) -> ApiResult {
        let k = Kind::parse(kind).ok_or_else(|| {
            ApiError::new(format!(
                "{kind:?} is neither a project directory nor a backing service"
            ))
            .hint("backing services: postgresql, mysql, redis, rabbitmq")
        })?;
        let name = name.unwrap_or_else(|| k.name().to_string());
        if !twelve_project::project::valid_app_name(&name) {
            return Err(ApiError::new(format!("invalid name {name:?}")));
        }
        if self.store.app(&name).map_err(store_err)?.is_some() {
            return Err(ApiError::new(format!("{name:?} is already an app"))
                .hint("give the service another name with --name"));
        }
        if let Some(existing) = self.service_record(&name)? {
            return Err(ApiError::new(format!(
                "{name} is already deployed ({})",
                self.open_server(&existing)?.describe()
            ))
            .hint("use it with `twelve integrate APP NAME`, or deploy another with --name"));
        }
        let server = match external {
            Some(url) => {
                if key_prefix && k != Kind::Redis {
                    return Err(ApiError::new("--key-prefix is for an adopted Redis"));
                }
                let server = Server::External {
                    kind: k,
                    admin_url: url,
                    management_url: management,
                    key_prefix,
                };
                self.providers
                    .check(&server)
                    .await
                    .map_err(|e| ApiError::new(e.to_string()))?;
                server
            }
            None => {
                let dir = self.home.root.join("services").join(&name);
                std::fs::create_dir_all(&dir)
                    .map_err(|e| ApiError::new(format!("cannot create {}: {e}", dir.display())))?;
                let port = twelve_providers::ports::free_tcp_port(&[])
                    .map_err(|e| ApiError::new(format!("cannot find a free port: {e}")))?;
                let server = Server::managed(k, dir.clone(), port);
                let started = self
                    .providers_for(&name, &server)?
                    .start_managed(k, &dir, port)
                    .await;
                if let Err(e) = started {
                    // Nothing is recorded: the service's user goes too.
                    let _ = self.providers.stop_managed(&server).await;
                    let _ = twelve_providers::disown_tree(&dir);
                    self.run_as.remove_service_user(&self.home.root, &name);
                    return Err(ApiError::new(e.to_string()));
                }
                server
            }
        };
        let describe = server.describe();
        let rec = ServiceRecord {
            name: name.clone(),
            kind: k.name().to_string(),
            server_sealed: self
                .vault
                .seal(&serde_json::to_string(&server).unwrap_or_default()),
            created: now(),
            backups: Default::default(),
        };
        self.store.put_service(&rec).map_err(store_err)?;
        self.wake.notify_one();
        Ok(json!({"name": name, "server": describe}))
    }

    fn endpoint_for(
        &self,
        app: &AppRecord,
        kind: IntegrationKind,
        service: &str,
    ) -> Result<String, ApiError> {
        let project = self.project(app).map_err(ApiError::new)?;
        project
            .requires
            .iter()
            .find(|(e, r)| IntegrationKind::detect(e, &r.interface) == Some(kind))
            .map(|(e, _)| e.clone())
            .ok_or_else(|| {
                ApiError::new(format!(
                    "{} does not declare an integration that {service} can satisfy",
                    app.name
                ))
                .hint(format!(
                    "add it under `requires:` in charmcraft.yaml, e.g. {}: {{interface: {}}}",
                    service,
                    match kind {
                        IntegrationKind::Postgresql => "postgresql_client",
                        IntegrationKind::Mysql => "mysql_client",
                        IntegrationKind::Redis => "redis",
                        _ => "rabbitmq",
                    }
                ))
            })
    }

    pub(crate) async fn integrate(
        &self,
        app_name: &str,
        target: &str,
        data: IndexMap<String, String>,
    ) -> ApiResult {
        if target == "s3" && self.is_backing_service(app_name) {
            return self.integrate_service_s3(app_name, data).await;
        }
        let app = self.app(app_name)?;
        let project = self.project(&app).map_err(ApiError::new)?;
        let mut warning = None;
        let (endpoint, service, data) = match self.service_record(target)? {
            Some(rec) => {
                if !data.is_empty() {
                    return Err(ApiError::new(format!("{target} is a backing service twelve provisions; --data is for endpoints given by hand")));
                }
                let server = self.open_server(&rec)?;
                if let Server::External {
                    kind: Kind::Redis,
                    key_prefix: false,
                    ..
                } = &server
                {
                    let others: Vec<String> = self
                        .store
                        .apps()
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|a| {
                            a.name != app_name
                                && a.relations
                                    .values()
                                    .any(|r| r.service.as_deref() == Some(rec.name.as_str()))
                        })
                        .map(|a| a.name)
                        .collect();
                    warning = Some(format!(
                        "{app_name} gets every key of the adopted Redis {}: apps sharing that server ({}) can read and change each other's keys; deploy it with --key-prefix to limit each app to keys <app>:*, or use a managed Redis (twelve deploy redis), which gives each app a server of its own",
                        rec.name,
                        if others.is_empty() { "none of twelve's yet".to_string() } else { others.join(", ") }
                    ));
                }
                let endpoint = self.endpoint_for(&app, kind_of_service(server.kind()), target)?;
                let data = self
                    .providers_for(&rec.name, &server)?
                    .provision(&server, app_name)
                    .await
                    .map_err(|e| ApiError::new(e.to_string()))?;
                (endpoint, Some(rec.name), data)
            }
            None => {
                let Some(rel) = project.requires.get(target) else {
                    let endpoints: Vec<&str> =
                        project.requires.keys().map(String::as_str).collect();
                    let services: Vec<String> = self
                        .store
                        .services()
                        .unwrap_or_default()
                        .into_iter()
                        .map(|s| s.name)
                        .collect();
                    return Err(ApiError::new(format!("{target:?} is neither an endpoint of {app_name} nor a deployed backing service"))
                        .hint(format!("endpoints: {}; backing services: {}", endpoints.join(", "), if services.is_empty() { "none (twelve deploy postgresql)".into() } else { services.join(", ") })));
                };
                let Some(kind) = IntegrationKind::detect(target, &rel.interface) else {
                    return Err(ApiError::new(format!(
                        "twelve does not integrate interface {} ({target})",
                        rel.interface
                    )));
                };
                if data.is_empty() {
                    return Err(ApiError::new(format!("{target} needs its data"))
                        .hint(format!("twelve integrate {app_name} {target} --data key=value ... (see docs/integrations.md)")));
                }
                validate_data(kind, &data).map_err(|e| ApiError::new(format!("{target}: {e}")))?;
                (target.to_string(), None, data)
            }
        };
        let sealed = self
            .vault
            .seal(&serde_json::to_string(&data).unwrap_or_default());
        let record = RelationRecord {
            service: service.clone(),
            data_sealed: sealed,
        };
        let ep = endpoint.clone();
        let changed = self.update(app_name, move |a| {
            a.relations.insert(ep, record);
            Ok(json!({}))
        })?;
        let mut out = json!({"app": app_name, "endpoint": endpoint, "provider": service.unwrap_or_else(|| "external".into()), "generation": changed["generation"]});
        if let Some(w) = warning {
            out["warning"] = json!(w);
        }
        Ok(out)
    }

    pub(crate) async fn remove_relation(
        &self,
        app_name: &str,
        target: &str,
        destroy_data: bool,
    ) -> ApiResult {
        if target == "s3" && self.is_backing_service(app_name) {
            return self.remove_service_s3(app_name);
        }
        let app = self.app(app_name)?;
        let Some((endpoint, rel)) = app
            .relations
            .iter()
            .find(|(e, r)| *e == target || r.service.as_deref() == Some(target))
            .map(|(e, r)| (e.clone(), r.clone()))
        else {
            let current: Vec<&str> = app.relations.keys().map(String::as_str).collect();
            return Err(
                ApiError::new(format!("{app_name} is not integrated with {target}")).hint(
                    if current.is_empty() {
                        "it has no integrations".to_string()
                    } else {
                        format!("integrations: {}", current.join(", "))
                    },
                ),
            );
        };
        if let Some(service) = &rel.service {
            if let Some(rec) = self.service_record(service)? {
                // Not while a restore's replaced databases, owned by the app's role, go.
                let _dropped = crate::backups::replaced_dropped(service).await;
                let server = self.open_server(&rec)?;
                self.providers_for(&rec.name, &server)?
                    .revoke(&server, app_name, destroy_data)
                    .await
                    .map_err(|e| ApiError::new(e.to_string()))?;
            }
        }
        let ep = endpoint.clone();
        let changed = self.update(app_name, move |a| {
            a.relations.shift_remove(&ep);
            Ok(json!({}))
        })?;
        Ok(
            json!({"app": app_name, "endpoint": endpoint, "data-destroyed": destroy_data, "generation": changed["generation"]}),
        )
    }

    pub(crate) async fn remove_service(&self, name: &str, destroy_data: bool) -> ApiResult {
        let rec = self.service_record(name)?.ok_or_else(|| {
            ApiError::new(format!("{name:?} not found")).hint("see `twelve status`")
        })?;
        let users: Vec<String> = self
            .store
            .apps()
            .map_err(store_err)?
            .into_iter()
            .filter(|a| {
                a.relations
                    .values()
                    .any(|r| r.service.as_deref() == Some(name))
            })
            .map(|a| a.name)
            .collect();
        if !users.is_empty() {
            return Err(
                ApiError::new(format!("{name} is integrated with {}", users.join(", "))).hint(
                    format!(
                        "remove the integrations first: twelve remove-relation {} {name}",
                        users[0]
                    ),
                ),
            );
        }
        let server = self.open_server(&rec)?;
        // Not while a reconcile pass runs: it restarts managed servers that are down.
        let _guard = self.reconcile_lock.lock().await;
        if let Server::Managed { dir, .. } = &server {
            self.providers
                .stop_managed(&server)
                .await
                .map_err(|e| ApiError::new(e.to_string()))?;
            if destroy_data {
                let _ = std::fs::remove_dir_all(dir);
            } else if let Err(e) = twelve_providers::disown_tree(dir) {
                // The kept data becomes root's: a later user given the same uid must not
                // read it.
                return Err(ApiError::new(format!(
                    "cannot keep the data of {name} for root: {e}"
                )));
            }
            let mut tries = 0;
            while !self.run_as.remove_service_user(&self.home.root, name) {
                tries += 1;
                if tries == 50 {
                    crate::controller::log(format!(
                        "cannot delete the user of {name}: a process of it still runs"
                    ));
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
        self.store.delete_service(name).map_err(store_err)?;
        self.service_status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        Ok(json!({"removed": name, "data-destroyed": destroy_data && server.is_managed()}))
    }

    /// Relation data of an app, opened for its plan.
    pub(crate) fn relation_data(&self, app: &AppRecord) -> IndexMap<String, RelationData> {
        let mut out = IndexMap::new();
        for (endpoint, rel) in &app.relations {
            if let Ok(text) = self.vault.open_sealed(&rel.data_sealed) {
                if let Ok(data) = serde_json::from_str::<RelationData>(&text.0) {
                    out.insert(endpoint.clone(), data);
                }
            }
        }
        out
    }

    /// Keeps managed servers running and checks every server; called by the reconcile loop.
    pub(crate) async fn reconcile_services(&self) {
        let apps = self.store.apps().unwrap_or_default();
        for rec in self.store.services().unwrap_or_default() {
            let Ok(server) = self.open_server(&rec) else {
                continue;
            };
            if let Server::Managed { kind, dir, port } = &server {
                if !self.providers.is_running(&server).await {
                    let started = match self.providers_for(&rec.name, &server) {
                        Ok(p) => p
                            .start_managed(*kind, dir, *port)
                            .await
                            .map_err(|e| e.to_string()),
                        Err(e) => Err(e.message),
                    };
                    if let Err(e) = started {
                        eprintln!("[controller] cannot restart {}: {e}", rec.name);
                    }
                }
            }
            let (status, mut message) = match self.providers.check(&server).await {
                Ok(()) => ("active".to_string(), String::new()),
                Err(e) => ("blocked".to_string(), e.to_string()),
            };
            if let Some(note) = Self::backup_note(&rec) {
                if message.is_empty() {
                    message = note;
                } else {
                    message = format!("{message}; {note}");
                }
            }
            let users: Vec<String> = apps
                .iter()
                .filter(|a| {
                    a.relations
                        .values()
                        .any(|r| r.service.as_deref() == Some(rec.name.as_str()))
                })
                .map(|a| a.name.clone())
                .collect();
            let (mode, address) = match &server {
                Server::Managed { port, .. } => {
                    ("managed".to_string(), format!("127.0.0.1:{port}"))
                }
                Server::External { .. } => ("external".to_string(), server.describe()),
            };
            self.service_status
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(
                    rec.name.clone(),
                    ServiceStatus {
                        name: rec.name.clone(),
                        kind: rec.kind.clone(),
                        mode,
                        address,
                        status,
                        message,
                        integrated_with: users,
                    },
                );
        }
    }

    pub(crate) fn integration_statuses(&self, app: &AppRecord) -> Vec<IntegrationStatus> {
        let project = self.project(app).ok();
        let services = self
            .service_status
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        app.relations
            .iter()
            .map(|(endpoint, rel)| {
                let interface = project
                    .as_ref()
                    .and_then(|p| p.requires.get(endpoint))
                    .map(|r| r.interface.clone())
                    .unwrap_or_default();
                let (status, message) = match &rel.service {
                    Some(s) => match services.get(s) {
                        Some(st) => (st.status.clone(), st.message.clone()),
                        None => ("unknown".into(), String::new()),
                    },
                    None => ("active".into(), String::new()),
                };
                IntegrationStatus {
                    endpoint: endpoint.clone(),
                    interface,
                    provider: rel.service.clone().unwrap_or_else(|| "external".into()),
                    status,
                    message,
                }
            })
            .collect()
    }

    /// Every backing service, with its last checked status (or `maintenance: checking`
    /// before the first check after a controller start).
    pub(crate) fn service_statuses(&self) -> Vec<ServiceStatus> {
        let cache = self
            .service_status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        self.store
            .services()
            .unwrap_or_default()
            .into_iter()
            .map(|rec| {
                cache
                    .get(&rec.name)
                    .cloned()
                    .unwrap_or_else(|| ServiceStatus {
                        name: rec.name.clone(),
                        kind: rec.kind.clone(),
                        status: "maintenance".into(),
                        message: "checking".into(),
                        ..Default::default()
                    })
            })
            .collect()
    }
}
