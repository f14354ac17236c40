//! The controller daemon: serves the API and reconciles desired state into running units.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use indexmap::IndexMap;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Notify;
use twelve_charm::config::{effective_options, parse_cli_value};
use twelve_charm::{plan_unit, AppState, ServicesAction, UnitPlan};
use twelve_pebble::client::Client as Pebble;
use twelve_project::{LoadOptions, Project};

use crate::api::*;
use crate::home::Home;
use crate::model::*;
use crate::releases::release_map;
use crate::store::Store;
use crate::substrate::{host_unit, AppUser, HostUnit, RunAs};

const MODEL: &str = "local";
const READY_TIMEOUT_DEFAULT: u64 = 120;

/// `TWELVE_READY_TIMEOUT` seconds, else 120: how long a change may take to be ready
/// everywhere before it is rolled back (`twelve deploy --timeout` sets it per app).
pub(crate) fn ready_timeout() -> Duration {
    Duration::from_secs(
        std::env::var("TWELVE_READY_TIMEOUT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(READY_TIMEOUT_DEFAULT),
    )
}

pub struct Controller {
    pub(crate) home: Home,
    pub(crate) store: Store,
    pub(crate) exe: PathBuf,
    /// This binary as the units run it (`twelve statsd-exporter` as `_daemon_`): a copy in
    /// `TWELVE_HOME/bin`, which the app user can read (the build may sit in root's home).
    pub(crate) unit_exe: PathBuf,
    pub(crate) run_as: RunAs,
    /// Each app's system user, once looked up or created.
    app_users: Mutex<HashMap<String, AppUser>>,
    /// The cgroup hierarchies units are contained in.
    pub(crate) cgroups: crate::cgroup::Cgroups,
    /// Which app groups each release directory was last opened to.
    release_grants: Mutex<HashMap<String, Vec<u32>>>,
    pub(crate) vault: crate::vault::Vault,
    pub(crate) providers: twelve_providers::Providers,
    pub(crate) service_status: Mutex<HashMap<String, ServiceStatus>>,
    pub(crate) ingress_port: u16,
    /// Why the ingress is not serving this controller's apps, when it is not.
    pub(crate) ingress_error: Mutex<Option<String>>,
    pub(crate) routes_pushed: Mutex<Option<twelve_ingress::RouteTable>>,
    /// Units taken out of rotation while they restart or stop.
    pub(crate) draining: Mutex<std::collections::BTreeSet<String>>,
    /// Units being replaced beside their old incarnation right now.
    pub(crate) surging: Mutex<std::collections::BTreeSet<String>>,
    pub(crate) web: Arc<crate::web::WebState>,
    pub(crate) web_stop: Notify,
    pub(crate) wake: Notify,
    shutdown: Notify,
    projects: Mutex<HashMap<String, (String, Arc<Project>)>>,
    pub(crate) statuses: Mutex<HashMap<String, AppStatus>>,
    /// What was last pushed to each unit's supervisor: (daemon id, layer).
    pub(crate) pushed: Mutex<HashMap<String, (String, String)>>,
    /// Serialises reconciles with requests that stop units.
    pub(crate) reconcile_lock: tokio::sync::Mutex<()>,
    /// Ports handed out lately, which may not be in the store yet (a replacement unit
    /// starting, a deploy being written), with when; the lock also serialises allocations.
    /// Deploys and scaling allocate under it instead of waiting for a reconcile pass (which
    /// may be waiting for a unit to become ready).
    reserved_ports: Mutex<Vec<(u16, std::time::Instant)>>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn generate_secret_key() -> String {
    use base64::Engine;
    let bytes: [u8; 64] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub(crate) fn log(msg: impl AsRef<str>) {
    eprintln!("{} [controller] {}", now_rfc3339(), msg.as_ref());
}

type ApiResult = Result<Value, ApiError>;

/// Copies this binary to `TWELVE_HOME/bin/twelve` (0755) when that copy is not this
/// build, written aside and renamed in (running units keep the file they started). If the
/// copy cannot be made, units run the binary where it is.
fn unit_binary(home: &Home, exe: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = home.root.join("bin");
    let target = dir.join("twelve");
    let id_file = dir.join("twelve.id");
    let id = crate::client::binary_identity();
    if std::fs::read_to_string(&id_file).is_ok_and(|s| s == id) && target.is_file() {
        return target;
    }
    let tmp = dir.join(format!("twelve.tmp-{}", std::process::id()));
    let copied = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)))
        .and_then(|()| std::fs::copy(exe, &tmp))
        .and_then(|_| std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)))
        .and_then(|()| std::fs::rename(&tmp, &target))
        .and_then(|()| std::fs::write(&id_file, id));
    match copied {
        Ok(()) => target,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            log(format!(
                "cannot copy {} to {}: {e}; units run it where it is",
                exe.display(),
                target.display()
            ));
            exe.to_path_buf()
        }
    }
}

fn store_err(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(format!("cannot update the state store: {e}"))
}

impl Controller {
    pub fn new(home: Home) -> anyhow::Result<Arc<Controller>> {
        home.ensure()?;
        // Remember which binary this controller runs, before it can be replaced on disk.
        let _ = crate::client::binary_identity();
        let store = Store::open(&home.db())?;
        let run_as = RunAs::detect();
        let tag = crate::substrate::home_tag(
            &std::fs::canonicalize(&home.root).unwrap_or_else(|_| home.root.clone()),
        );
        let cgroups = crate::cgroup::Cgroups::detect(&tag);
        if !cgroups.is_enabled() {
            log(format!(
                "units are not contained in cgroups ({}): a unit's processes may outlive its supervisor",
                cgroups.limits_unsupported.as_deref().unwrap_or("unknown reason")
            ));
        }
        let vault = crate::vault::Vault::open(&home.root.join("secret.key"))?;
        let exe = std::env::current_exe()?;
        Ok(Arc::new(Controller {
            unit_exe: unit_binary(&home, &exe),
            exe,
            home,
            store,
            run_as,
            app_users: Mutex::new(HashMap::new()),
            cgroups,
            release_grants: Mutex::new(HashMap::new()),
            vault,
            providers: twelve_providers::Providers::new(),
            service_status: Mutex::new(HashMap::new()),
            ingress_port: crate::ingress::port_from_env(),
            ingress_error: Mutex::new(None),
            routes_pushed: Mutex::new(None),
            draining: Mutex::new(Default::default()),
            surging: Mutex::new(Default::default()),
            web: Arc::new(Default::default()),
            web_stop: Notify::new(),
            wake: Notify::new(),
            shutdown: Notify::new(),
            projects: Mutex::new(HashMap::new()),
            statuses: Mutex::new(HashMap::new()),
            pushed: Mutex::new(HashMap::new()),
            reconcile_lock: tokio::sync::Mutex::new(()),
            reserved_ports: Mutex::new(vec![]),
        }))
    }

    /// Runs until asked to shut down. Units keep running after it exits.
    pub async fn run(self: Arc<Self>) -> anyhow::Result<()> {
        let sock = self.home.socket();
        if sock.exists() {
            if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
                anyhow::bail!("a controller is already running on {}", sock.display());
            }
            std::fs::remove_file(&sock)?;
        }
        let listener = UnixListener::bind(&sock)?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600))?;
        }
        // A controller owns its ingress: it does not start when the ingress port is held
        // by anything else (it would report URLs that reach someone else's server).
        if let Err(e) = self.ensure_ingress().await {
            let _ = std::fs::remove_file(&sock);
            anyhow::bail!("{e}");
        }
        std::fs::write(self.home.pid_file(), std::process::id().to_string())?;
        log(format!(
            "started (pid {}, home {})",
            std::process::id(),
            self.home.root.display()
        ));

        self.start_web().await;
        let me = self.clone();
        tokio::spawn(async move { me.reconcile_loop().await });
        self.resume_pending_pre_restores();
        tokio::spawn(self.clone().backup_scheduler());
        tokio::spawn(self.clone().acme_loop());
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    if let Ok((stream, _)) = accepted {
                        let me = self.clone();
                        tokio::spawn(async move { me.serve(stream).await });
                    }
                }
                _ = self.shutdown.notified() => break,
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        self.web_stop.notify_waiters();
        self.stop_ingress_if_unused().await;
        self.cgroups.remove_empty_bases();
        let _ = std::fs::remove_file(&sock);
        let _ = std::fs::remove_file(self.home.pid_file());
        let _ = std::fs::remove_file(self.home.root.join("web.addr"));
        log("stopped; units keep running");
        Ok(())
    }

    async fn serve(self: Arc<Self>, stream: UnixStream) {
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let resp = match serde_json::from_str::<Request>(&line) {
                Ok(req) => match self.clone().handle(req).await {
                    Ok(v) => Response::ok(v),
                    Err(e) => Response::err(e),
                },
                Err(e) => Response::err(ApiError::new(format!("bad request: {e}"))),
            };
            let mut text = serde_json::to_string(&resp).unwrap_or_else(|_| "{\"ok\":false}".into());
            text.push('\n');
            if write.write_all(text.as_bytes()).await.is_err() {
                return;
            }
        }
    }

    async fn handle(self: Arc<Self>, req: Request) -> ApiResult {
        match req {
            Request::Ping => Ok(
                json!({"pid": std::process::id(), "home": self.home.root, "binary": crate::client::binary_identity()}),
            ),
            Request::Deploy {
                app,
                project_dir,
                charm_dir,
                release_id,
                num_units,
                config,
                timeout,
                constraints,
            } => {
                // Checked first: a bad constraint changes nothing.
                let constraints = constraints
                    .map(|c| crate::cgroup::parse_constraints(&c))
                    .transpose()
                    .map_err(|e| {
                        ApiError::new(e)
                            .hint("twelve deploy DIR --constraints \"mem=512M cores=1.5\"")
                    })?;
                let name = app.clone();
                self.set_rollout_timeout(&name, timeout);
                let mut out = self
                    .deploy(app, project_dir, charm_dir, release_id, num_units, config)
                    .await?;
                self.set_rollout_timeout(&name, timeout);
                if let Some(c) = constraints {
                    let applied = self.set_constraints(&name, c)?;
                    out["constraints"] = applied["constraints"].clone();
                }
                Ok(out)
            }
            Request::SetConstraints { app, constraints } => {
                let c = crate::cgroup::parse_constraints(&constraints).map_err(|e| {
                    ApiError::new(e)
                        .hint(format!("twelve set-constraints {app} mem=512M cores=1.5"))
                })?;
                self.set_constraints(&app, c)
            }
            Request::Rollback { app, release } => self.rollback(&app, release),
            Request::Edge(req) => self.edge(req).await,
            Request::Status { app } => self.status(app.as_deref()),
            Request::GetConfig { app } if self.is_backing_service(&app) => {
                self.service_config(&app)
            }
            Request::SetConfig { app, set, reset } if self.is_backing_service(&app) => {
                self.set_service_config(&app, set, reset)
            }
            Request::GetConfig { app } => self.get_config(&app),
            Request::SetConfig { app, set, reset } => self.set_config(&app, set, reset),
            Request::Scale { app, units } => self.scale(&app, units),
            Request::RemoveUnit { app, unit } => self.remove_unit(&app, unit),
            Request::Remove { app, destroy_data } => {
                let is_service = self.store.app(&app).map_err(store_err)?.is_none()
                    && self.service_record(&app)?.is_some();
                if is_service {
                    self.remove_service(&app, destroy_data).await
                } else {
                    self.remove(&app).await
                }
            }
            Request::Releases { app } => self.releases(&app),
            Request::ExportState { app } => self.export_state(&app),
            Request::Exec {
                app,
                unit,
                command,
                env,
                timeout,
            } => self.exec(&app, unit, command, env, timeout).await,
            Request::AddSecret {
                name,
                content,
                description,
            } => self.add_secret(&name, content, description),
            Request::UpdateSecret {
                secret,
                content,
                description,
            } => self.update_secret(&secret, content, description),
            Request::Secrets => self.list_secrets(),
            Request::ShowSecret {
                secret,
                reveal,
                revision,
            } => self.show_secret(&secret, reveal, revision),
            Request::GrantSecret { secret, app } => self.grant_secret(&secret, &app, true),
            Request::RevokeSecret { secret, app } => self.grant_secret(&secret, &app, false),
            Request::RemoveSecret { secret } => self.remove_secret(&secret),
            Request::Actions { app } => self.list_actions(&app),
            Request::RunAction {
                app,
                unit,
                action,
                params,
            } => self.run_action(&app, unit, &action, params).await,
            Request::DeployService {
                kind,
                name,
                external,
                management,
                key_prefix,
            } => {
                self.deploy_service(&kind, name, external, management, key_prefix)
                    .await
            }
            Request::Integrate { app, target, data } => self.integrate(&app, &target, data).await,
            Request::RemoveRelation {
                app,
                target,
                destroy_data,
            } => self.remove_relation(&app, &target, destroy_data).await,
            Request::RemoveService { name, destroy_data } => {
                self.remove_service(&name, destroy_data).await
            }
            Request::Shutdown => {
                // What stops with the controller, for the CLI to say: its ingress when no
                // app is left; units and managed backing servers never.
                let apps = self.store.apps().map(|a| a.len()).unwrap_or_default();
                let services = self
                    .store
                    .services()
                    .unwrap_or_default()
                    .iter()
                    .filter(|r| self.open_server(r).is_ok_and(|s| s.is_managed()))
                    .count();
                let ingress_stops = self.ingress_unused();
                self.shutdown.notify_one();
                Ok(
                    json!({"stopping": true, "apps": apps, "services": services, "ingress-stops": ingress_stops}),
                )
            }
        }
    }

    pub(crate) fn app(&self, name: &str) -> Result<AppRecord, ApiError> {
        self.store.app(name).map_err(store_err)?.ok_or_else(|| {
            let known: Vec<String> = self
                .store
                .apps()
                .unwrap_or_default()
                .into_iter()
                .map(|a| a.name)
                .collect();
            let hint = if known.is_empty() {
                "no apps are deployed; deploy one with `twelve deploy`".to_string()
            } else {
                format!("deployed apps: {}", known.join(", "))
            };
            ApiError::new(format!("app {name:?} not found")).hint(hint)
        })
    }

    pub(crate) fn update(
        &self,
        name: &str,
        f: impl FnOnce(&mut AppRecord) -> Result<Value, String>,
    ) -> ApiResult {
        let mut out = self
            .store
            .update_app(name, |a| {
                a.rollback_note = None;
                a.rollback = None;
                f(a)
            })
            .map_err(store_err)?
            .map_err(ApiError::new)?;
        // The answer carries the new generation, which `status` reports once acted on.
        if let (Some(obj), Ok(Some(app))) = (out.as_object_mut(), self.store.app(name)) {
            obj.insert("generation".into(), json!(app.generation));
        }
        self.wake.notify_one();
        Ok(out)
    }

    fn load_project(dir: &str, charm_dir: Option<&str>) -> Result<Project, ApiError> {
        Project::load_with(
            Path::new(dir),
            &LoadOptions {
                charm_dir: charm_dir.map(PathBuf::from),
            },
        )
        .map_err(|d| ApiError::new(d.to_string()))
    }

    /// Where the project of the app's current release is: its snapshot, or (for releases
    /// recorded before snapshots) the directory it was deployed from.
    pub(crate) fn project_dirs(app: &AppRecord) -> (String, Option<String>) {
        match app
            .releases
            .iter()
            .find(|r| r.number == app.current_release)
            .and_then(|r| r.project.clone().map(|p| (p, r.charm.clone())))
        {
            Some(dirs) => dirs,
            None => (app.project_dir.clone(), app.charm_dir.clone()),
        }
    }

    /// Keeps a copy of the project being deployed under `TWELVE_HOME/projects/<app>/`.
    fn snapshot_project(
        &self,
        app: &str,
        project_dir: &str,
        charm_dir: Option<&str>,
        release_id: &str,
    ) -> Result<(String, Option<String>, String), ApiError> {
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let dir = self
            .home
            .root
            .join("projects")
            .join(app)
            .join(format!("{release_id}-{stamp}"));
        let snap = crate::snapshot::take(
            Path::new(project_dir),
            charm_dir.map(Path::new),
            &dir,
            &self.home.root,
        )
        .map_err(|e| ApiError::new(format!("cannot keep a copy of {project_dir}: {e}")))?;
        Ok((
            snap.project_dir.display().to_string(),
            snap.charm_dir.map(|c| c.display().to_string()),
            snap.digest,
        ))
    }

    /// Removes a snapshot given by its project path (`.../<snapshot>/project`).
    fn drop_snapshot(project: &str) {
        if let Some(dir) = Path::new(project).parent() {
            if dir
                .parent()
                .and_then(|p| p.parent())
                .is_some_and(|p| p.ends_with("projects"))
            {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    pub(crate) fn project(&self, app: &AppRecord) -> Result<Arc<Project>, String> {
        let (project_dir, charm_dir) = Self::project_dirs(app);
        let key = format!(
            "{}\0{}\0{}",
            project_dir,
            charm_dir.as_deref().unwrap_or(""),
            app.current_release
        );
        if let Some((k, p)) = self
            .projects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&app.name)
        {
            if *k == key {
                return Ok(p.clone());
            }
        }
        let p = Arc::new(
            Self::load_project(&project_dir, charm_dir.as_deref()).map_err(|e| e.message)?,
        );
        self.projects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(app.name.clone(), (key, p.clone()));
        Ok(p)
    }

    fn parse_config(
        project: &Project,
        set: &IndexMap<String, String>,
    ) -> Result<IndexMap<String, Value>, ApiError> {
        let options = effective_options(project);
        let mut out = IndexMap::new();
        for (k, v) in set {
            let Some(opt) = options.get(k) else {
                let mut names: Vec<&str> = options.keys().map(String::as_str).collect();
                names.sort_unstable();
                return Err(
                    ApiError::new(format!("unknown option {k:?} for {}", project.name))
                        .hint(format!("options: {}", names.join(", "))),
                );
            };
            let value =
                parse_cli_value(opt, v).map_err(|e| ApiError::new(format!("option {k:?}: {e}")))?;
            out.insert(k.clone(), value);
        }
        Ok(out)
    }

    /// Runs `f` with every port in use or reserved, and reserves the ports it adds.
    pub(crate) fn allocate<T>(
        &self,
        f: impl FnOnce(&mut Vec<u16>) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let mut reserved = self
            .reserved_ports
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Long enough for a replacement to start and be committed to the store.
        reserved.retain(|(_, at)| at.elapsed() < Duration::from_secs(600));
        let mut used = self.used_ports();
        used.extend(reserved.iter().map(|(p, _)| *p));
        let before = used.len();
        let out = f(&mut used)?;
        let now = std::time::Instant::now();
        reserved.extend(used[before..].iter().map(|p| (*p, now)));
        Ok(out)
    }

    fn used_ports(&self) -> Vec<u16> {
        self.store
            .apps()
            .unwrap_or_default()
            .iter()
            .flat_map(|a| {
                a.units.iter().flat_map(|u| {
                    std::iter::once(u.app_port)
                        .chain(u.metrics_port)
                        .chain(u.statsd_port)
                })
            })
            .collect()
    }

    /// A port nothing listens on, outside the kernel's ephemeral range (see
    /// `twelve_providers::ports`), and not given to another unit.
    pub(crate) fn allocate_port(used: &mut Vec<u16>) -> Result<u16, ApiError> {
        let port = twelve_providers::ports::free_tcp_port(used)
            .map_err(|e| ApiError::new(format!("cannot find a free TCP port: {e}")))?;
        used.push(port);
        Ok(port)
    }

    /// A port free for TCP and for UDP too (a statsd exporter listens on both).
    pub(crate) fn allocate_udp_port(used: &mut Vec<u16>) -> Result<u16, ApiError> {
        let port = twelve_providers::ports::free_tcp_udp_port(used)
            .map_err(|e| ApiError::new(format!("cannot find a free port for TCP and UDP: {e}")))?;
        used.push(port);
        Ok(port)
    }

    fn new_unit(
        &self,
        number: u32,
        needs: PortNeeds,
        used: &mut Vec<u16>,
    ) -> Result<UnitRecord, ApiError> {
        let app_port = Self::allocate_port(used)?;
        let metrics_port = if needs.metrics {
            Some(Self::allocate_port(used)?)
        } else {
            None
        };
        let statsd_port = if needs.statsd {
            Some(Self::allocate_udp_port(used)?)
        } else {
            None
        };
        Ok(UnitRecord {
            number,
            app_port,
            metrics_port,
            statsd_port,
            incarnation: 0,
        })
    }

    /// New units that bring `app` up to `n` units, numbered after its highest ever.
    fn units_to_add(
        &self,
        app: &AppRecord,
        n: u32,
        separate: PortNeeds,
        used: &mut Vec<u16>,
    ) -> Result<Vec<UnitRecord>, ApiError> {
        let missing = n.saturating_sub(app.units.len() as u32);
        (app.next_unit..app.next_unit + missing)
            .map(|number| self.new_unit(number, separate, used))
            .collect()
    }

    /// The ports a unit of `project` needs besides its app port (the plan says).
    fn separate_metrics(project: &Project) -> PortNeeds {
        let plan = plan_unit(project, &AppState::new(&project.name));
        PortNeeds {
            // A `metrics-port` option can move metrics off the app port at any time
            // (`twelve config web metrics-port=9000`): such units keep a port ready.
            metrics: plan.ports.metrics != plan.ports.app
                || effective_options(project).contains_key("metrics-port"),
            statsd: plan.ports.statsd.is_some(),
        }
    }

    async fn deploy(
        &self,
        name: String,
        project_dir: String,
        charm_dir: Option<String>,
        release_id: String,
        num_units: Option<u32>,
        config: IndexMap<String, String>,
    ) -> ApiResult {
        let project = Self::load_project(&project_dir, charm_dir.as_deref())?;
        let values = Self::parse_config(&project, &config)?;
        let separate = Self::separate_metrics(&project);
        let (snap_project, snap_charm, digest) =
            self.snapshot_project(&name, &project_dir, charm_dir.as_deref(), &release_id)?;
        let deployed = self.deploy_record(
            name,
            project_dir,
            charm_dir,
            release_id,
            num_units,
            values,
            &project,
            separate,
            (snap_project.clone(), snap_charm, digest),
        );
        match &deployed {
            // Unchanged: the release keeps the copy it has.
            Ok((_, true)) | Err(_) => Self::drop_snapshot(&snap_project),
            Ok((_, false)) => {}
        }
        deployed.map(|(v, _)| v)
    }

    #[allow(clippy::too_many_arguments)]
    fn deploy_record(
        &self,
        name: String,
        project_dir: String,
        charm_dir: Option<String>,
        release_id: String,
        num_units: Option<u32>,
        values: IndexMap<String, Value>,
        project: &Project,
        separate: PortNeeds,
        (snap_project, snap_charm, digest): (String, Option<String>, String),
    ) -> Result<(Value, bool), ApiError> {
        match self.store.app(&name).map_err(store_err)? {
            Some(existing) => {
                if existing.framework != project.framework.name() {
                    return Err(ApiError::new(format!(
                        "app {name:?} is a {} app; this project is {}",
                        existing.framework, project.framework
                    ))
                    .hint("deploy it under another name, or remove the app first"));
                }
                let (extra_ports, new_units) = self.allocate(|used| {
                    // Units made before the project needed a metrics or statsd port of
                    // their own (an older twelve, or another metrics-port) get one now.
                    let mut extra_ports = vec![];
                    for u in &existing.units {
                        let metrics = match separate.metrics && u.metrics_port.is_none() {
                            true => Some(Self::allocate_port(used)?),
                            false => None,
                        };
                        let statsd = match separate.statsd && u.statsd_port.is_none() {
                            true => Some(Self::allocate_udp_port(used)?),
                            false => None,
                        };
                        extra_ports.push((u.number, metrics, statsd));
                    }
                    let new_units = match num_units {
                        Some(n) => self.units_to_add(&existing, n, separate, used)?,
                        None => vec![],
                    };
                    Ok((extra_ports, new_units))
                })?;
                let mut unchanged = false;
                let unchanged_ref = &mut unchanged;
                let out = self.update(&name, move |app| {
                    app.project_dir = project_dir;
                    app.charm_dir = charm_dir;
                    for u in app.units.iter_mut() {
                        if let Some((_, metrics, statsd)) =
                            extra_ports.iter().find(|(n, _, _)| *n == u.number)
                        {
                            u.metrics_port = u.metrics_port.or(*metrics);
                            u.statsd_port = u.statsd_port.or(*statsd);
                        }
                    }
                    let current = app.current_release;
                    let number = match app.releases.iter().find(|r| {
                        r.id == release_id
                            && r.number == current
                            && r.project_digest.as_deref() == Some(digest.as_str())
                    }) {
                        // The same app files and project: the same release.
                        Some(r) => {
                            *unchanged_ref = true;
                            r.number
                        }
                        None => {
                            let number = app.releases.iter().map(|r| r.number).max().unwrap_or(0) + 1;
                            app.releases.push(ReleaseRecord {
                                number,
                                id: release_id,
                                created: now_rfc3339(),
                                project: Some(snap_project),
                                charm: snap_charm,
                                project_digest: Some(digest),
                            });
                            number
                        }
                    };
                    app.current_release = number;
                    app.config.extend(values);
                    if let Some(n) = num_units {
                        app.next_unit += new_units.len() as u32;
                        app.units.extend(new_units);
                        app.units.truncate(n.max(1) as usize);
                    }
                    Ok(json!({"app": app.name, "release": number, "units": app.unit_numbers(), "new": false}))
                });
                out.map(|v| (v, unchanged))
            }
            None => {
                let n = num_units.unwrap_or(1).max(1);
                let units = self.allocate(|used| {
                    (0..n)
                        .map(|i| self.new_unit(i, separate, used))
                        .collect::<Result<Vec<_>, _>>()
                })?;
                let record = AppRecord {
                    name: name.clone(),
                    project_dir,
                    charm_dir,
                    framework: project.framework.name().to_string(),
                    config: values,
                    units,
                    next_unit: n,
                    releases: vec![ReleaseRecord {
                        number: 1,
                        id: release_id,
                        created: now_rfc3339(),
                        project: Some(snap_project),
                        charm: snap_charm,
                        project_digest: Some(digest),
                    }],
                    current_release: 1,
                    secret_key: self.vault.seal(&generate_secret_key()),
                    migration: Default::default(),
                    generation: 1,
                    relations: IndexMap::new(),
                    last_good: None,
                    rollback_note: None,
                    rollback: None,
                    rollout_timeout: None,
                    constraints: Default::default(),
                };
                self.store.put_app(&record).map_err(store_err)?;
                self.statuses
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(
                        name.clone(),
                        AppStatus {
                            name: name.clone(),
                            framework: record.framework.clone(),
                            status: "maintenance".into(),
                            message: "deploying".into(),
                            release: Some(1),
                            ..Default::default()
                        },
                    );
                self.wake.notify_one();
                Ok((
                    json!({"app": name, "release": 1, "units": record.unit_numbers(), "new": true, "generation": record.generation}),
                    false,
                ))
            }
        }
    }

    /// Stores an app's constraints (the whole set, as Juju's `set-constraints` does: a key
    /// not given has no limit) and applies them to every running unit at once: cgroup
    /// limits change live.
    fn set_constraints(&self, name: &str, given: Constraints) -> ApiResult {
        self.app(name)?;
        if self.cgroups.limits_unsupported.is_some()
            && (given.mem.is_some() || given.cores.is_some())
        {
            return Err(ApiError::new(format!(
                "constraints cannot be enforced on this machine: {}",
                self.cgroups
                    .limits_unsupported
                    .as_deref()
                    .unwrap_or_default()
            )));
        }
        let rec = self
            .store
            .update_app(name, move |a| {
                a.constraints = given;
                Ok(a.clone())
            })
            .map_err(store_err)?
            .map_err(ApiError::new)?;
        let prefix = format!("{name}-");
        if let Ok(entries) = std::fs::read_dir(self.home.units()) {
            for e in entries.flatten() {
                let file = e.file_name().to_string_lossy().into_owned();
                let ours = file.strip_prefix(&prefix).is_some_and(|rest| {
                    let n = rest.split('.').next().unwrap_or_default();
                    !n.is_empty() && n.chars().all(|c| c.is_ascii_digit())
                });
                if ours {
                    crate::cgroup::UnitCgroup::recorded(&e.path())
                        .set_limits(rec.constraints.limits());
                }
            }
        }
        log(format!(
            "{name}: constraints {:?}",
            rec.constraints.to_juju()
        ));
        Ok(json!({"app": name, "constraints": rec.constraints.to_juju()}))
    }

    fn rollback(&self, name: &str, release: u32) -> ApiResult {
        let app = self.app(name)?;
        if app.release_id(release).is_none() {
            let known: Vec<String> = app.releases.iter().map(|r| r.number.to_string()).collect();
            return Err(ApiError::new(format!("{name} has no release {release}"))
                .hint(format!("releases: {}", known.join(", "))));
        }
        self.update(name, |app| {
            app.current_release = release;
            Ok(json!({"app": app.name, "release": release}))
        })
    }

    fn get_config(&self, name: &str) -> ApiResult {
        let app = self.app(name)?;
        let project = self.project(&app).map_err(ApiError::new)?;
        let options = effective_options(&project);
        let mut out = serde_json::Map::new();
        for (opt_name, opt) in &options {
            let value = app.config.get(opt_name).cloned();
            out.insert(
                opt_name.clone(),
                json!({
                    "type": opt.type_.as_str(),
                    "value": value.clone().or_else(|| opt.default.clone()),
                    "default": opt.default,
                    "source": if value.is_some() { "user" } else if opt.default.is_some() { "default" } else { "unset" },
                    "description": opt.description,
                }),
            );
        }
        Ok(Value::Object(out))
    }

    fn set_config(
        &self,
        name: &str,
        set: IndexMap<String, String>,
        reset: Vec<String>,
    ) -> ApiResult {
        let app = self.app(name)?;
        let project = self.project(&app).map_err(ApiError::new)?;
        let values = Self::parse_config(&project, &set)?;
        let options = effective_options(&project);
        for r in &reset {
            if !options.contains_key(r) {
                return Err(ApiError::new(format!("unknown option {r:?} for {name}")));
            }
        }
        let mut proposed = app.config.clone();
        for r in &reset {
            proposed.shift_remove(r);
        }
        proposed.extend(values.clone());
        self.refuse_blocking_config(&app, &project, &proposed)?;
        self.update(name, move |app| {
            for r in &reset {
                app.config.shift_remove(r);
            }
            app.config.extend(values);
            Ok(json!({"app": app.name}))
        })
    }

    fn scale(&self, name: &str, n: u32) -> ApiResult {
        if n == 0 {
            return Err(
                ApiError::new("an app needs at least one unit").hint(format!(
                    "use `twelve remove-application {name}` to remove it"
                )),
            );
        }
        let app = self.app(name)?;
        let project = self.project(&app).map_err(ApiError::new)?;
        let separate = Self::separate_metrics(&project);
        let new_units = self.allocate(|used| self.units_to_add(&app, n, separate, used))?;
        self.update(name, move |app| {
            app.next_unit += new_units.len() as u32;
            app.units.extend(new_units);
            // Scaling down removes the highest-numbered units, as Juju does.
            app.units.sort_by_key(|u| u.number);
            app.units.truncate(n as usize);
            Ok(json!({"app": app.name, "units": app.unit_numbers()}))
        })
    }

    fn remove_unit(&self, name: &str, unit: u32) -> ApiResult {
        let app = self.app(name)?;
        if !app.units.iter().any(|u| u.number == unit) {
            return Err(
                ApiError::new(format!("unit {name}/{unit} not found")).hint(format!(
                    "units of {name}: {}",
                    app.units
                        .iter()
                        .map(|u| format!("{name}/{}", u.number))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            );
        }
        if app.units.len() == 1 {
            return Err(
                ApiError::new(format!("{name}/{unit} is the app's last unit"))
                    .hint(format!("use `twelve remove-application {name}`")),
            );
        }
        self.update(name, move |app| {
            app.units.retain(|u| u.number != unit);
            Ok(json!({"app": app.name, "units": app.unit_numbers()}))
        })
    }

    async fn remove(&self, name: &str) -> ApiResult {
        let app = self.app(name)?;
        let _guard = self.reconcile_lock.lock().await;
        for u in &app.units {
            self.stop_unit(&app.name, u.number).await;
        }
        self.store.delete_app(name).map_err(store_err)?;
        // A new app of the same name starts with no domain, certificate or maintenance.
        if let Err(e) = self.forget_app_edge(name) {
            log(format!("{name}: cannot forget its domains: {}", e.message));
        }
        let _ = std::fs::remove_dir_all(self.home.root.join("projects").join(name));
        // No process of the app is left (its units' cgroups are empty): its user goes.
        self.app_users
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        self.run_as.remove_app_user(&self.home.root, name);
        self.statuses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        self.projects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        Ok(json!({"removed": name}))
    }

    fn export_state(&self, name: &str) -> ApiResult {
        let app = self.app(name)?;
        let mut state = self.app_state(&app, 0);
        // What belongs to this machine stays here: ports, addresses, its URL and proxy.
        state.model = AppState::new(name).model;
        state.unit = 0;
        state.network = Default::default();
        state.base_url = None;
        state.proxy = Default::default();
        let local: Vec<&String> = state
            .integrations
            .iter()
            .filter(|(_, data)| {
                data.values()
                    .any(|v| v.contains("127.0.0.1") || v.contains("localhost"))
            })
            .map(|(endpoint, _)| endpoint)
            .collect();
        let (project_dir, charm_dir) = Self::project_dirs(&app);
        Ok(json!({
            "project_dir": project_dir,
            "charm_dir": charm_dir,
            "units": app.units.len(),
            "release": app.current_release,
            "local_integrations": local,
            "state": state,
        }))
    }

    fn releases(&self, name: &str) -> ApiResult {
        let app = self.app(name)?;
        let list: Vec<Value> = app
            .releases
            .iter()
            .map(|r| json!({"number": r.number, "id": r.id, "created": r.created, "current": r.number == app.current_release}))
            .collect();
        Ok(Value::Array(list))
    }

    async fn exec(
        &self,
        name: &str,
        unit: u32,
        command: Vec<String>,
        env: IndexMap<String, String>,
        timeout: Option<String>,
    ) -> ApiResult {
        let app = self.app(name)?;
        if !app.units.iter().any(|u| u.number == unit) {
            return Err(ApiError::new(format!("unit {name}/{unit} not found")));
        }
        if command.is_empty() {
            return Err(
                ApiError::new("no command given").hint(format!("twelve exec {name}/{unit} -- env"))
            );
        }
        let (_, host) = self.unit_plan(&app, unit).map_err(ApiError::new)?;
        let mut environment = host.environment.clone();
        environment.extend(env);
        let req = twelve_pebble::types::ExecRequest {
            command: crate::releases::map_argv(&self.home, &app, &command),
            environment,
            working_dir: Some(host.app_dir.display().to_string()),
            user: host.user.clone(),
            timeout,
            ..Default::default()
        };
        let pebble = Pebble::for_dir(app.unit_dir(&self.home, unit));
        let out = pebble
            .exec(&req)
            .await
            .map_err(|e| ApiError::new(format!("exec on {name}/{unit} failed: {e}")))?;
        Ok(json!({"exit-code": out.exit_code, "stdout": out.stdout, "stderr": out.stderr}))
    }

    fn status(&self, only: Option<&str>) -> ApiResult {
        let apps = self.store.apps().map_err(store_err)?;
        if let Some(name) = only {
            self.app(name)?;
        }
        let statuses = self.statuses.lock().unwrap_or_else(|e| e.into_inner());
        let list: Vec<AppStatus> = apps
            .iter()
            .filter(|a| only.is_none_or(|n| n == a.name))
            .map(|a| {
                statuses.get(&a.name).cloned().unwrap_or_else(|| AppStatus {
                    name: a.name.clone(),
                    framework: a.framework.clone(),
                    status: "maintenance".into(),
                    message: "waiting for the controller".into(),
                    release: Some(a.current_release),
                    url: Some(format!("{}/", self.app_url(&a.name))),
                    // Units are known from the store before the first reconcile checks them.
                    units: a
                        .units
                        .iter()
                        .map(|u| UnitStatus {
                            name: format!("{}/{}", a.name, u.number),
                            status: "unknown".into(),
                            message: "not checked yet".into(),
                            address: format!("127.0.0.1:{}", u.app_port),
                            leader: Some(u.number) == a.units.first().map(|f| f.number),
                            scheduler: false,
                            supervisor: a.unit_dir(&self.home, u.number).display().to_string(),
                            serving: false,
                        })
                        .collect(),
                    ..Default::default()
                })
            })
            .collect();
        let mut list = list;
        // Constraints as stored, even before the next reconcile pass.
        for st in &mut list {
            if let Some(a) = apps.iter().find(|a| a.name == st.name) {
                st.constraints = (a.constraints != Constraints::default()).then_some(a.constraints);
            }
        }
        if let Some(e) = self
            .ingress_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            // No URL to give: it would not reach the app.
            for a in &mut list {
                a.url = None;
                a.status = "error".into();
                a.message = format!("not reachable: {e}");
            }
        }
        Ok(
            json!({"apps": list, "backing-services": self.service_statuses(), "edge": self.edge_problems()}),
        )
    }

    // ---- reconciling -------------------------------------------------------------

    async fn reconcile_loop(self: Arc<Self>) {
        loop {
            {
                let _guard = self.reconcile_lock.lock().await;
                let started = std::time::Instant::now();
                let apps = self.store.apps().unwrap_or_default();
                if let Err(e) = self.ensure_ingress().await {
                    log(format!("ingress: {e}"));
                }
                // Units that are going away leave rotation before they stop.
                self.push_routes(&apps).await;
                self.grant_releases(&apps);
                self.remove_stray_units(&apps).await;
                self.reconcile_services().await;
                for app in &apps {
                    let status = self.reconcile_app(app, &apps).await;
                    self.statuses
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(app.name.clone(), status);
                    // Re-read: a replacement may have moved units to new ports.
                    let fresh = self.store.apps().unwrap_or_else(|_| apps.clone());
                    self.push_routes(&fresh).await;
                }
                let micros = started.elapsed().as_micros() as u64;
                let w = &self.web;
                w.reconciles
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                w.reconcile_micros_sum
                    .fetch_add(micros, std::sync::atomic::Ordering::Relaxed);
                w.reconcile_micros_last
                    .store(micros, std::sync::atomic::Ordering::Relaxed);
                let fresh = self.store.apps().unwrap_or_default();
                self.refresh_web(&fresh).await;
            }
            // While a unit is starting, look again soon so it enters rotation as soon as it
            // is ready; otherwise every 2 s (or at once when something changes).
            let starting = self
                .statuses
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .any(|a| a.units.iter().any(|u| u.status == "maintenance"));
            let pause = if starting {
                Duration::from_millis(100)
            } else {
                Duration::from_secs(2)
            };
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    pub(crate) fn app_state(&self, app: &AppRecord, unit: u32) -> AppState {
        let mut state = AppState::new(&app.name);
        state.model = MODEL.into();
        state.unit = unit;
        state.units = app.unit_numbers();
        state.config = app.config.clone();
        state.secret_key = self.app_secret_key(app);
        state.secrets = self.secret_views(app);
        state.integrations = self.relation_data(app);
        state.network.bind_host = Some("127.0.0.1".into());
        if let Some(u) = app.units.iter().find(|u| u.number == unit) {
            state.network.app_port = Some(u.app_port);
            state.network.metrics_port = u.metrics_port;
            state.network.statsd_port = u.statsd_port;
        }
        for u in &app.units {
            state
                .network
                .peer_addresses
                .insert(u.number, format!("127.0.0.1:{}", u.app_port));
        }
        state.base_url = Some(self.app_url(&app.name));
        for (k, v) in [
            ("http_proxy", "HTTP_PROXY"),
            ("https_proxy", "HTTPS_PROXY"),
            ("no_proxy", "NO_PROXY"),
        ] {
            let val = std::env::var(v)
                .ok()
                .or_else(|| std::env::var(k).ok())
                .filter(|s| !s.is_empty());
            match k {
                "http_proxy" => state.proxy.http_proxy = val,
                "https_proxy" => state.proxy.https_proxy = val,
                _ => state.proxy.no_proxy = val,
            }
        }
        state
    }

    pub(crate) fn unit_plan(
        &self,
        app: &AppRecord,
        unit: u32,
    ) -> Result<(UnitPlan, HostUnit), String> {
        let project = self.project(app)?;
        let release_id = app
            .release_id(app.current_release)
            .ok_or("the current release is missing")?;
        let mut map = release_map(&self.home, release_id)?;
        // Plans run twelve's own roles (the statsd exporter) as `twelve ...`: this binary.
        map.add_program("twelve", self.unit_exe.clone());
        let plan = plan_unit(&project, &self.app_state(app, unit));
        let user = self.app_user(&app.name)?;
        let host = host_unit(
            &plan,
            &map,
            &app.unit_dir(&self.home, unit),
            user.as_ref(),
            project.framework.app_dir(),
        );
        Ok((plan, host))
    }

    async fn reconcile_app(self: &Arc<Self>, app: &AppRecord, apps: &[AppRecord]) -> AppStatus {
        if self.is_surging(&app.name) {
            // A rollout of this app runs in the background and reports its own progress.
            if let Some(st) = self
                .statuses
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&app.name)
            {
                return st.clone();
            }
        }
        let mut status = AppStatus {
            name: app.name.clone(),
            framework: app.framework.clone(),
            release: Some(app.current_release),
            url: Some(format!("{}/", self.app_url(&app.name))),
            generation: app.generation,
            constraints: (app.constraints != Constraints::default()).then_some(app.constraints),
            ..Default::default()
        };
        let mut plans = vec![];
        for u in &app.units {
            match self.unit_plan(app, u.number) {
                Ok(p) => plans.push((u.clone(), p.0, p.1)),
                Err(e) => {
                    status.status = "blocked".into();
                    status.message = format!("cannot prepare the app: {e}");
                    return status;
                }
            }
        }
        let Some((_, first_plan, first_host)) = plans.first() else {
            status.status = "waiting".into();
            status.message = "no units".into();
            return status;
        };
        status.scheduler_unit = first_plan.scheduler_unit;
        status.integrations = self.integration_statuses(app);
        status.status = first_plan.status.state.as_str().into();
        status.message = first_plan.status.message.clone();

        for (u, _, _) in &plans {
            if let Err(e) = self
                .ensure_pebble(&app.unit_dir(&self.home, u.number))
                .await
            {
                status.status = "blocked".into();
                status.message = format!(
                    "cannot start the supervisor of {}/{}: {e}",
                    app.name, u.number
                );
                return status;
            }
        }

        // Migrations: once per key, on the first unit, before any unit gets the new plan.
        let mut migration = crate::planner::Migration::Done;
        if first_plan.status.services == ServicesAction::Run {
            if let Some(m) = &first_plan.migration {
                let key = crate::migration::key(app, first_plan);
                if app.migration.completed.as_deref() != Some(key.as_str()) {
                    let due = app.migration.failing.as_deref() != Some(key.as_str())
                        || now_secs() >= app.migration.retry_at;
                    let outcome = if due {
                        Some(
                            crate::migration::run(
                                &self.home,
                                &self.store,
                                app,
                                first_plan,
                                first_host,
                                m,
                                &key,
                                app.units[0].number,
                            )
                            .await,
                        )
                    } else {
                        None
                    };
                    if let Some(ok) = outcome {
                        use std::sync::atomic::Ordering::Relaxed;
                        self.web.migrations.fetch_add(1, Relaxed);
                        if !ok {
                            self.web.migration_failures.fetch_add(1, Relaxed);
                        }
                    }
                    let rec = self
                        .store
                        .app(&app.name)
                        .ok()
                        .flatten()
                        .map(|a| a.migration)
                        .unwrap_or_default();
                    status.migration = Some(MigrationStatus {
                        command: m.command.clone(),
                        state: if rec.completed.as_deref() == Some(key.as_str()) {
                            "completed".into()
                        } else {
                            "failed".into()
                        },
                        attempts: rec.attempts,
                        output_tail: rec.last_output.clone(),
                    });
                    if outcome != Some(true) {
                        let message = crate::migration::failure_message(
                            &m.command,
                            rec.retry_at.saturating_sub(now_secs()),
                        );
                        status.status = "blocked".into();
                        status.message = message.clone();
                        migration = crate::planner::Migration::Failed {
                            // A new release's migration failing rolls the release back.
                            new_release: app
                                .last_good
                                .as_ref()
                                .is_some_and(|g| g.release != app.current_release),
                            message: format!(
                                "the migration of release {} failed: {}",
                                app.current_release,
                                rec.last_output.lines().last().unwrap_or("no output")
                            ),
                        };
                    }
                }
            }
        }
        let held = matches!(migration, crate::planner::Migration::Failed { .. })
            .then(|| status.message.clone());

        self.roll_out(app, apps, &plans, migration, &mut status)
            .await;
        if let Some(rb) = &status.rollback {
            // Rolled back in this pass: the release that serves is the one it went back to.
            status.release = Some(rb.release);
        }
        if self.is_surging(&app.name) {
            // Not acted on until the rollout it started is live or rolled back.
            status.generation = self
                .statuses
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&app.name)
                .map(|s| s.generation.min(app.generation.saturating_sub(1)))
                .unwrap_or(0);
        }

        // What each unit runs and reports now (a surge may have moved units to new
        // incarnations and ports), ranked by the planner's types.
        let fresh = self.store.app(&app.name).ok().flatten();
        let mut worst: Option<(crate::planner::Rank, String)> = None;
        for (u, plan, host) in &plans {
            let unit_name = format!("{}/{}", app.name, u.number);
            let current = fresh
                .as_ref()
                .and_then(|a| a.units.iter().find(|x| x.number == u.number).cloned())
                .unwrap_or_else(|| u.clone());
            let dir = self
                .home
                .unit_dir_at(&app.name, u.number, current.incarnation);
            let (health, _) =
                crate::rollout::unit_health(&Pebble::for_dir(&dir), host, Some(current.app_port))
                    .await;
            let st = crate::planner::unit_state(&plan.status, &health, held.as_deref());
            if st.rank > crate::planner::Rank::Active
                && worst.as_ref().is_none_or(|w| st.rank > w.0)
            {
                worst = Some((st.rank, format!("{unit_name}: {}", st.message)));
            }
            status.units.push(UnitStatus {
                name: unit_name,
                status: st.rank.as_str().into(),
                message: st.message,
                address: format!("127.0.0.1:{}", current.app_port),
                leader: Some(u.number) == app.units.first().map(|f| f.number),
                scheduler: plan.scheduler_unit == Some(u.number),
                supervisor: dir.display().to_string(),
                serving: st.serving,
            });
        }
        if status.rollback.is_none() {
            status.rollback = app.rollback.clone();
        }
        // The release and config become the ones to roll back to only when the units
        // were seen running them: not while a surge runs (the old incarnations answer
        // then), and not when the desired state moved since the plans were made (a new
        // deploy, a rollback). The store is compared again in the write, so a rollback
        // landing meanwhile keeps the release it went back to.
        let unchanged = fresh
            .as_ref()
            .filter(|f| f.current_release == app.current_release && f.config == app.config);
        if let Some(fresh) = unchanged {
            if status.status == "active"
                && worst.is_none()
                && !self.is_surging(&app.name)
                && status
                    .rollback
                    .as_ref()
                    .is_none_or(|r| r.generation < app.generation)
                && fresh
                    .last_good
                    .as_ref()
                    .is_none_or(|g| g.release != app.current_release || g.config != app.config)
            {
                let good = GoodState {
                    release: app.current_release,
                    config: app.config.clone(),
                };
                let seen = fresh.generation;
                let _ = self.store.update_app(&app.name, move |a| {
                    if a.generation != seen {
                        return Err("changed meanwhile; the next pass decides".into());
                    }
                    a.last_good = Some(good);
                    Ok(())
                });
            }
        }
        if let Some(note) = &app.rollback_note {
            if status.status == "active" {
                status.message = note.clone();
            }
        }
        if status.status == "active" {
            if let Some((rank, msg)) = worst {
                status.status = rank.as_str().into();
                status.message = msg;
            }
        }
        // Blocked, but what the units run keeps serving: say which release that is.
        if status.status == "blocked" && status.units.iter().any(|u| u.serving) {
            let release = app
                .last_good
                .as_ref()
                .map(|g| g.release)
                .unwrap_or(app.current_release);
            status.serving_release = Some(release);
            status.message = format!("{}; serving release {release}", status.message);
        }
        status
    }

    /// The app's own system user (`None` when twelve runs unprivileged), created the first
    /// time it is needed.
    pub(crate) fn app_user(&self, app: &str) -> Result<Option<AppUser>, String> {
        if let Some(u) = self
            .app_users
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(app)
        {
            return Ok(Some(u.clone()));
        }
        let user = self.run_as.app_user(&self.home.root, app)?;
        if let Some(u) = &user {
            self.app_users
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(app.to_string(), u.clone());
        }
        Ok(user)
    }

    /// Opens each release directory to the groups of the apps that have it (in any
    /// release, for rollbacks) and closes it to everyone else (`substrate::restrict_release`).
    pub(crate) fn grant_releases(&self, apps: &[AppRecord]) {
        if self.run_as == RunAs::Invoker {
            return;
        }
        let mut want: HashMap<String, Vec<u32>> = HashMap::new();
        for app in apps {
            let Ok(Some(user)) = self.app_user(&app.name) else {
                continue;
            };
            for r in &app.releases {
                want.entry(r.id.clone()).or_default().push(user.gid);
            }
        }
        let mut done = self
            .release_grants
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for (id, mut gids) in want {
            gids.sort_unstable();
            gids.dedup();
            if done.get(&id) == Some(&gids) {
                continue;
            }
            let dir = self.home.releases().join(&id);
            if !dir.is_dir() {
                continue;
            }
            match crate::substrate::restrict_release(&dir, &gids) {
                Ok(()) => {}
                Err(e) => log(format!(
                    "cannot restrict {} to its apps ({e}): other apps can read its code",
                    dir.display()
                )),
            }
            done.insert(id, gids);
        }
    }

    /// The unit directory laid out for its app's user (`substrate::unit_dirs`). Also
    /// called before a unit's files are written, for a unit an older twelve started.
    pub(crate) fn unit_own_dirs(&self, dir: &Path) -> Result<(), String> {
        let app = crate::substrate::app_of_unit_dir(dir)
            .ok_or_else(|| format!("{} is not a unit directory", dir.display()))?;
        let user = self.app_user(&app)?;
        crate::substrate::unit_dirs(dir, user.as_ref())
            .map_err(|e| format!("cannot prepare {}: {e}", dir.display()))
    }

    /// The pid of a unit's supervisor when it is alive.
    fn supervisor_pid(dir: &Path) -> Option<nix::unistd::Pid> {
        let pid = std::fs::read_to_string(dir.join(".pebble.pid"))
            .ok()?
            .trim()
            .parse::<i32>()
            .ok()?;
        let pid = nix::unistd::Pid::from_raw(pid);
        nix::sys::signal::kill(pid, None).ok().map(|()| pid)
    }

    /// Makes sure the unit's supervisor runs. A supervisor that died leaves nothing
    /// behind: what its services left in the unit's cgroup is killed before a new one
    /// starts, in a fresh cgroup with the app's constraints.
    pub(crate) async fn ensure_pebble(&self, dir: &Path) -> Result<(), String> {
        let dir = dir.to_path_buf();
        let pebble = Pebble::for_dir(&dir);
        if pebble.system_info().await.is_ok() {
            return Ok(());
        }
        let old = crate::cgroup::UnitCgroup::recorded(&dir);
        if !old.is_empty_record() {
            let alive =
                Self::supervisor_pid(&dir).is_some_and(|pid| old.procs().contains(&pid.as_raw()));
            if alive {
                return Err(format!(
                    "the supervisor in {} runs but does not answer",
                    dir.display()
                ));
            }
            let left = old.procs();
            if !left.is_empty() {
                log(format!(
                    "the supervisor of {} is gone; killing the {} process(es) it left: {left:?}",
                    dir.display(),
                    left.len()
                ));
            }
            let cleaned = {
                let old = old.clone();
                tokio::task::spawn_blocking(move || {
                    let empty = old.kill_all(Duration::from_secs(5));
                    old.remove();
                    empty
                })
                .await
                .unwrap_or(false)
            };
            if !cleaned {
                return Err(format!(
                    "processes of {} survive SIGKILL; not starting another supervisor",
                    dir.display()
                ));
            }
        }
        self.unit_own_dirs(&dir)?;
        // The app's constraints as stored now.
        let constraints = crate::substrate::app_of_unit_dir(&dir)
            .and_then(|app| self.store.app(&app).ok().flatten())
            .map(|a| a.constraints)
            .unwrap_or_default();
        let cgroup = if self.cgroups.is_enabled() {
            Some(
                self.cgroups
                    .create(&dir, constraints.limits())
                    .map_err(|e| format!("cannot create the cgroup of {}: {e}", dir.display()))?,
            )
        } else {
            None
        };
        let fds = match &cgroup {
            Some(c) => c.join_files().map_err(|e| e.to_string())?,
            None => vec![],
        };
        let dir_s = dir.display().to_string();
        let child = crate::client::spawn_detached_in(
            &self.exe,
            &["pebble", "run", "--dir", &dir_s],
            None,
            &dir.join("pebble.log"),
            true,
            &crate::cgroup::raw(&fds),
        )
        .map_err(|e| e.to_string())?;
        drop(fds);
        // Reap it if it ever exits while we live; it runs on after we are gone.
        std::thread::spawn(move || {
            let mut child = child;
            let _ = child.wait();
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if pebble.system_info().await.is_ok() {
                log(format!("started the supervisor in {}", dir.display()));
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!(
            "no answer on {} after 10 s (see {})",
            dir.join(".pebble.socket").display(),
            dir.join("pebble.log").display()
        ))
    }

    /// Stops every incarnation of a unit and removes their directories.
    async fn stop_unit(&self, app: &str, unit: u32) {
        let prefix = format!("{app}-{unit}");
        if let Ok(entries) = std::fs::read_dir(self.home.units()) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let ours = name == prefix
                    || name
                        .strip_prefix(&prefix)
                        .and_then(|r| r.strip_prefix('.'))
                        .is_some_and(|k| k.parse::<u32>().is_ok());
                if ours {
                    self.stop_supervisor(&e.path()).await;
                }
            }
        }
        self.pushed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&format!("{app}/{unit}"));
        log(format!("removed unit {app}/{unit}"));
    }

    /// Stops one supervisor (which stops its services within their kill delays) and
    /// removes its directory.
    pub(crate) async fn stop_supervisor(&self, dir: &Path) {
        let pid = std::fs::read_to_string(dir.join(".pebble.pid"))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        if let Some(pid) = pid {
            let pid = nix::unistd::Pid::from_raw(pid);
            if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).is_ok() {
                let deadline = std::time::Instant::now() + Duration::from_secs(30);
                while std::time::Instant::now() < deadline
                    && nix::sys::signal::kill(pid, None).is_ok()
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        // Whatever the services left (or a supervisor that would not stop) goes with the
        // unit's cgroup.
        let cgroup = crate::cgroup::UnitCgroup::recorded(dir);
        let _ = tokio::task::spawn_blocking(move || cgroup.remove()).await;
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Unit directories with no unit in the store (scaled down, removed while we were away).
    async fn remove_stray_units(&self, apps: &[AppRecord]) {
        let Ok(entries) = std::fs::read_dir(self.home.units()) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            // `<app>-<n>` (incarnation 0) or `<app>-<n>.<k>`.
            let (base, k) = match name.rsplit_once('.') {
                Some((b, k)) => match k.parse::<u32>() {
                    Ok(k) => (b.to_string(), k),
                    Err(_) => continue,
                },
                None => (name.clone(), 0),
            };
            let Some((app, n)) = base.rsplit_once('-') else {
                continue;
            };
            let Ok(n) = n.parse::<u32>() else { continue };
            let unit = apps
                .iter()
                .find(|a| a.name == app)
                .and_then(|a| a.units.iter().find(|u| u.number == n));
            match unit {
                None => self.stop_unit(app, n).await,
                // An older incarnation left behind (e.g. a crash during a replacement).
                Some(u)
                    if u.incarnation != k
                        && !self
                            .surging
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .contains(&format!("{app}/{n}")) =>
                {
                    self.stop_supervisor(&e.path()).await
                }
                Some(_) => {}
            }
        }
    }
}

/// Which ports a new unit needs besides its app port.
#[derive(Debug, Clone, Copy)]
struct PortNeeds {
    /// The app serves metrics on a port of its own (or, for Flask and Django, the exporter).
    metrics: bool,
    /// A statsd exporter receives on a port of its own (Flask and Django).
    statsd: bool,
}
