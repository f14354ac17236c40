//! The plan of an app as Kubernetes objects: pure, deterministic (the same input gives the
//! same bytes), no I/O.

use std::collections::BTreeSet;

use base64::Engine;
use indexmap::IndexMap;
use serde_json::{json, Map, Value};
use twelve_charm::plan::{redact_values_with, redact_with, STATSD_SERVICE};
use twelve_charm::{plan_unit, AppState, ServicesAction, Status, UnitPlan, REDACTED};
use twelve_layer::{Check, CheckLevel, Command, Service, Startup};
use twelve_project::Project;

/// The uid of `_daemon_`, the user every rock service runs as (rockcraft's shared user).
pub const DAEMON_UID: u64 = 584792;

/// Retries of the migration Job before it counts as failed (three attempts in all).
pub const MIGRATION_BACKOFF_LIMIT: u32 = 2;

/// What the user chooses beyond the project and its state.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    /// The namespace (also the model name in default base URLs and peer FQDNs); default:
    /// the state's model (`default`).
    pub namespace: Option<String>,
    /// The OCI image (the app's rock); default `<app>:latest`.
    pub image: Option<String>,
    /// Replicas of the web StatefulSet; default: the state's live units.
    pub units: Option<u32>,
    /// Ingress host domain: the app is served at `<app>.<domain>`; no Ingress without it.
    pub domain: Option<String>,
    /// `spec.ingressClassName` of the Ingress.
    pub ingress_class: Option<String>,
    /// The state's secret key is not the user's but one `apply` generates once and keeps
    /// in the cluster: its value is left out of the release hash, so `render`,
    /// `apply --dry-run` and `apply` name the same release.
    pub generated_secret_key: bool,
}

/// The objects of one app, in apply order, with the plan's status and notes.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub app: String,
    pub namespace: String,
    /// A short hash of what the pods run (image, environment, files, commands).
    pub release: String,
    /// Every object, secret values included (base64 in the Secret), as applied.
    pub objects: Vec<Value>,
    /// The plan's status: an app that would not start (blocked, waiting) is rendered but
    /// not applied.
    pub status: Status,
    /// Why the objects are what they are, one line per decision.
    pub notes: Vec<String>,
    secret_values: BTreeSet<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("{0:?} is not a valid Kubernetes name: {1}")]
    Name(String, &'static str),
    #[error("service {service}: {error}")]
    Command {
        service: String,
        error: twelve_layer::CommandError,
    },
    #[error("the project has no {0} service")]
    NoMainService(String),
}

/// The environment variable holding the app's secret key (`FLASK_SECRET_KEY`, `APP_SECRET_KEY`).
pub fn secret_key_env(project: &Project) -> String {
    format!("{}SECRET_KEY", project.framework.prefix())
}

/// The name of the environment ConfigMap and Secret of a release of `app` (per release, so
/// that a release whose migration fails leaves the running release's environment alone;
/// apply looks for the secret key in the running release's Secret).
pub fn env_secret_name(app: &str, release: &str) -> String {
    format!("{app}-env-{release}")
}

/// The state rendering uses: `units` replicas numbered from 0, unit 0 planned (so the
/// scheduler services are enabled), the namespace as the model, and the Ingress URL as the
/// base URL when a domain is given and the state sets none.
pub fn k8s_state(state: &AppState, opts: &RenderOptions) -> AppState {
    let mut s = state.clone();
    let units = opts.units.unwrap_or(state.units.len().max(1) as u32).max(1);
    s.units = (0..units).collect();
    s.unit = 0;
    if let Some(ns) = &opts.namespace {
        s.model = ns.clone();
    }
    if s.base_url.is_none() {
        if let Some(d) = &opts.domain {
            s.base_url = Some(format!("http://{}.{d}", s.app));
        }
    }
    // Kubernetes networking: the rock's defaults, not the local substrate's ports.
    s.network = Default::default();
    s
}

/// Renders the objects of the app in `project` with desired `state`.
pub fn render(
    project: &Project,
    state: &AppState,
    opts: &RenderOptions,
) -> Result<Rendered, RenderError> {
    let state = k8s_state(state, opts);
    let app = state.app.clone();
    check_name(&app)?;
    let ns = state.model.clone();
    let replicas = state.units.len() as u32;
    let plan = plan_unit(project, &state);
    let fw = project.framework;
    let main = fw.service_name().to_string();
    if !plan.services.contains_key(&main) {
        return Err(RenderError::NoMainService(main));
    }
    let mut notes = vec![];
    let image = match &opts.image {
        Some(i) => i.clone(),
        None => {
            notes.push(format!(
                "image {app}:latest: build and push the image to a registry the cluster can pull from (`twelve pack --oci --push REGISTRY/{app}:TAG`, or a rock) and pass --image"
            ));
            format!("{app}:latest")
        }
    };

    // The environment: every pod of the app gets the same one, so `<P>PEER_FQDNS` lists
    // every unit (a pod template cannot vary by pod).
    let mut env = plan.environment.clone();
    let peers_key = format!("{}PEER_FQDNS", fw.prefix());
    if replicas > 1 {
        let all: Vec<String> = state.units.iter().map(|u| state.peer_address(*u)).collect();
        env.insert(peers_key.clone(), all.join(","));
        notes.push(format!(
            "{peers_key} lists all {replicas} pods (itself included): a pod template cannot vary by pod"
        ));
    }
    let secret_values = plan.secret_values.clone();
    let is_secret = |v: &str| redact_with(&secret_values, v) != v;
    let mut config_env = Map::new();
    let mut secret_env = Map::new();
    for (k, v) in &env {
        if is_secret(v) {
            secret_env.insert(k.clone(), Value::String(b64(v)));
        } else {
            config_env.insert(k.clone(), Value::String(v.clone()));
        }
    }

    // What the pods run, for the release hash (not the peer list: scaling alone is no release).
    let mut hashed_env = env.clone();
    hashed_env.shift_remove(&peers_key);
    if opts.generated_secret_key {
        if let Some(v) = hashed_env.get_mut(&secret_key_env(project)) {
            *v = "<generated>".into();
        }
    }
    let release = {
        let services: IndexMap<&String, &Option<String>> =
            plan.services.iter().map(|(n, s)| (n, &s.command)).collect();
        let doc = json!({
            "image": image, "env": hashed_env, "files": plan.files,
            "services": services, "migration": plan.migration,
        });
        format!("{:016x}", fnv1a(doc.to_string().as_bytes()))[..10].to_string()
    };

    let labels = |component: Option<&str>| {
        let mut m = Map::new();
        m.insert("app.kubernetes.io/name".into(), app.clone().into());
        if let Some(c) = component {
            m.insert("app.kubernetes.io/component".into(), c.into());
        }
        m.insert("app.kubernetes.io/managed-by".into(), "twelve".into());
        m.insert("twelve.dev/release".into(), release.clone().into());
        Value::Object(m)
    };
    let selector = |component: &str| json!({"app.kubernetes.io/name": app, "app.kubernetes.io/component": component});
    let meta = |name: &str, component: Option<&str>| json!({"name": name, "namespace": ns, "labels": labels(component)});

    let mut objects = vec![];
    let env_name = env_secret_name(&app, &release);
    objects.push(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": meta(&env_name, None),
        "data": config_env,
    }));
    // Files (the gunicorn config) by rock path, mounted one by one with subPath.
    let files_name = format!("{app}-files-{release}");
    let mut file_data = Map::new();
    let mut mounts = vec![];
    for (path, content) in &plan.files {
        let key = file_key(path);
        file_data.insert(key.clone(), content.clone().into());
        mounts.push(json!({"name": "files", "mountPath": path, "subPath": key, "readOnly": true}));
    }
    if !plan.files.is_empty() {
        objects.push(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": meta(&files_name, None),
            "data": file_data,
        }));
    }
    objects.push(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": meta(&env_name, None),
        "type": "Opaque",
        "data": secret_env,
    }));

    // Services: the app (port 80 and its own port, so the default base URL
    // `http://<app>.<ns>:<port>` works in the cluster) and the headless one that names the
    // pods `<app>-<n>.<app>-endpoints.<ns>.svc.cluster.local`, as Juju's.
    let ports = &plan.ports;
    let mut svc_ports =
        vec![json!({"name": "http", "port": 80, "targetPort": ports.app, "protocol": "TCP"})];
    if ports.app != 80 {
        svc_ports.push(
            json!({"name": "app", "port": ports.app, "targetPort": ports.app, "protocol": "TCP"}),
        );
    }
    if ports.metrics != ports.app && ports.metrics != 80 {
        svc_ports.push(json!({"name": "metrics", "port": ports.metrics, "targetPort": ports.metrics, "protocol": "TCP"}));
    }
    objects.push(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": meta(&app, None),
        "spec": {"type": "ClusterIP", "selector": selector("web"), "ports": svc_ports},
    }));
    objects.push(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": meta(&format!("{app}-endpoints"), None),
        "spec": {
            "clusterIP": "None", "publishNotReadyAddresses": true, "selector": selector("web"),
            "ports": [{"name": "app", "port": ports.app, "targetPort": ports.app, "protocol": "TCP"}],
        },
    }));

    let builder = Builder {
        plan: &plan,
        image: &image,
        env_name: &env_name,
        mounts: &mounts,
        files_name: (!plan.files.is_empty()).then_some(&files_name),
    };

    // The migration, before the pods of the release start (apply waits for it).
    if let Some(m) = &plan.migration {
        let mut c = builder.container("migrate", &m.command, Some(&m.working_dir), Some(&m.user));
        builder.env_from(&mut c);
        objects.push(json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": meta(&format!("{app}-migrate-{release}"), Some("migrate")),
            "spec": {
                "backoffLimit": MIGRATION_BACKOFF_LIMIT,
                "template": {
                    "metadata": {"labels": labels(Some("migrate"))},
                    "spec": builder.pod_spec(vec![c], "Never"),
                },
            },
        }));
        notes.push(format!(
            "migration ({}) runs as Job {app}-migrate-{release} before the pods of this release",
            m.command.join(" ")
        ));
    }

    // The web pods: the app, its workers (on every unit, as in the charms) and the
    // statsd exporter as containers of one pod.
    let mut web = vec![];
    let mut schedulers = vec![];
    for (name, svc) in &plan.services {
        if twelve_charm::is_scheduler(name) {
            schedulers.push(builder.service_container(name, svc)?);
        } else if *name == main
            || twelve_charm::is_worker(name)
            || name == STATSD_SERVICE
            || project.services.get(name).and_then(|s| s.startup) == Some(Startup::Enabled)
        {
            web.push(builder.service_container(name, svc)?);
        } else {
            notes.push(format!(
                "service {name} is not started automatically: not rendered"
            ));
        }
    }
    // The main container first: `kubectl logs` and `exec` pick it by default.
    web.sort_by_key(|c| c["name"] != container_name(&main));
    if let Some(c) = web.first_mut() {
        let mut cports =
            vec![json!({"name": "app", "containerPort": ports.app, "protocol": "TCP"})];
        if ports.metrics != ports.app {
            cports.push(
                json!({"name": "metrics", "containerPort": ports.metrics, "protocol": "TCP"}),
            );
        }
        c["ports"] = Value::Array(cports);
        for (check_name, check) in &plan.checks {
            let field = match check.level {
                Some(CheckLevel::Ready) => "readinessProbe",
                Some(CheckLevel::Alive) => "livenessProbe",
                None => continue,
            };
            if let Some(p) = probe(check) {
                c[field] = p;
                notes.push(format!("{field} from the check {check_name}"));
            }
        }
    }
    let mut web_template_meta = json!({"labels": labels(Some("web"))});
    web_template_meta["annotations"] = json!({
        "prometheus.io/scrape": "true",
        "prometheus.io/port": ports.metrics.to_string(),
        "prometheus.io/path": ports.metrics_path,
    });
    objects.push(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": meta(&app, Some("web")),
        "spec": {
            "serviceName": format!("{app}-endpoints"),
            "replicas": replicas,
            "podManagementPolicy": "Parallel",
            "updateStrategy": {"type": "RollingUpdate"},
            "selector": {"matchLabels": selector("web")},
            "template": {"metadata": web_template_meta, "spec": builder.pod_spec(web, "Always")},
        },
    }));
    if !schedulers.is_empty() {
        let names: Vec<&str> = schedulers
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        notes.push(format!(
            "schedulers ({}) run in Deployment {app}-scheduler with one replica (the charms run them on unit 0 only)",
            names.join(", ")
        ));
        objects.push(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": meta(&format!("{app}-scheduler"), Some("scheduler")),
            "spec": {
                "replicas": 1,
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": selector("scheduler")},
                "template": {
                    "metadata": {"labels": labels(Some("scheduler"))},
                    "spec": builder.pod_spec(schedulers, "Always"),
                },
            },
        }));
    }
    match &opts.domain {
        Some(domain) => {
            let mut spec = Map::new();
            if let Some(class) = &opts.ingress_class {
                spec.insert("ingressClassName".into(), class.clone().into());
            }
            spec.insert(
                "rules".into(),
                json!([{
                    "host": format!("{app}.{domain}"),
                    "http": {"paths": [{
                        "path": "/", "pathType": "Prefix",
                        "backend": {"service": {"name": app, "port": {"name": "http"}}},
                    }]},
                }]),
            );
            objects.push(json!({
                "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                "metadata": meta(&app, None),
                "spec": spec,
            }));
        }
        None => notes.push(format!(
            "no Ingress: pass --domain to serve the app at http://{app}.<domain>/"
        )),
    }
    if plan.status.services != ServicesAction::Run {
        notes.push(format!(
            "the app would not start: {} ({})",
            plan.status.message,
            plan.status.state.as_str()
        ));
    }
    // Not the plan's notes about unit 0 being the scheduler unit: a Deployment is here.
    notes.extend(
        plan.notes
            .iter()
            .filter(|n| !n.contains("scheduler unit"))
            .cloned(),
    );
    Ok(Rendered {
        app,
        namespace: ns,
        release,
        objects,
        status: plan.status.clone(),
        notes,
        secret_values,
    })
}

struct Builder<'a> {
    plan: &'a UnitPlan,
    image: &'a str,
    env_name: &'a str,
    mounts: &'a [Value],
    files_name: Option<&'a String>,
}

impl Builder<'_> {
    fn container(
        &self,
        name: &str,
        argv: &[String],
        working_dir: Option<&str>,
        user: Option<&str>,
    ) -> Value {
        let mut c = Map::new();
        c.insert("name".into(), container_name(name).into());
        c.insert("image".into(), self.image.into());
        c.insert("command".into(), json!(argv));
        if let Some(d) = working_dir {
            c.insert("workingDir".into(), d.into());
        }
        if user == Some("_daemon_") {
            c.insert(
                "securityContext".into(),
                json!({"runAsUser": DAEMON_UID, "runAsGroup": DAEMON_UID, "runAsNonRoot": true}),
            );
        }
        Value::Object(c)
    }

    fn env_from(&self, c: &mut Value) {
        c["envFrom"] = json!([
            {"configMapRef": {"name": self.env_name}},
            {"secretRef": {"name": self.env_name}},
        ]);
        if !self.mounts.is_empty() {
            c["volumeMounts"] = Value::Array(self.mounts.to_vec());
        }
    }

    fn service_container(&self, name: &str, svc: &Service) -> Result<Value, RenderError> {
        if name == STATSD_SERVICE {
            return Ok(self.statsd_exporter());
        }
        let text = svc.command.as_deref().unwrap_or_default();
        let argv = Command::parse(text)
            .map_err(|error| RenderError::Command {
                service: name.to_string(),
                error,
            })?
            .argv();
        let mut c = self.container(name, &argv, svc.working_dir.as_deref(), svc.user.as_deref());
        self.env_from(&mut c);
        // The service's own variables (rockcraft.yaml), over the app's.
        let own: Vec<Value> = svc
            .environment
            .iter()
            .filter(|(k, v)| self.plan.environment.get(*k) != Some(*v))
            .filter(|(k, _)| !k.ends_with("PEER_FQDNS"))
            .map(|(k, v)| json!({"name": k, "value": v}))
            .collect();
        if !own.is_empty() {
            c["env"] = Value::Array(own);
        }
        Ok(c)
    }

    /// The rock's own statsd exporter (twelve's runs only on the local substrate).
    fn statsd_exporter(&self) -> Value {
        let ports = &self.plan.ports;
        let statsd = ports.statsd.unwrap_or(twelve_charm::plan::STATSD_PORT);
        let mut argv = vec![
            "/bin/statsd_exporter".to_string(),
            "--statsd.mapping-config=/statsd-mapping.conf".into(),
            format!("--statsd.listen-udp=localhost:{statsd}"),
            format!("--statsd.listen-tcp=localhost:{statsd}"),
        ];
        if ports.metrics != 9102 {
            argv.push(format!("--web.listen-address=:{}", ports.metrics));
        }
        if ports.metrics_path != "/metrics" {
            argv.push(format!("--web.telemetry-path={}", ports.metrics_path));
        }
        self.container(STATSD_SERVICE, &argv, None, None)
    }

    fn pod_spec(&self, containers: Vec<Value>, restart: &str) -> Value {
        let mut spec = Map::new();
        spec.insert("restartPolicy".into(), restart.into());
        spec.insert("containers".into(), Value::Array(containers));
        if let Some(name) = self.files_name {
            spec.insert(
                "volumes".into(),
                json!([{"name": "files", "configMap": {"name": name}}]),
            );
        }
        Value::Object(spec)
    }
}

/// A Kubernetes probe from a Pebble check (HTTP or TCP or exec).
fn probe(check: &Check) -> Option<Value> {
    let mut p = if let Some(http) = &check.http {
        let url = url::Url::parse(http.url.as_deref()?).ok()?;
        let mut path = url.path().to_string();
        if let Some(q) = url.query() {
            path = format!("{path}?{q}");
        }
        let mut get = json!({
            "path": path,
            "port": url.port_or_known_default()?,
            "scheme": url.scheme().to_ascii_uppercase(),
        });
        if !http.headers.is_empty() {
            get["httpHeaders"] = http
                .headers
                .iter()
                .map(|(k, v)| json!({"name": k, "value": v}))
                .collect();
        }
        json!({ "httpGet": get })
    } else if let Some(tcp) = &check.tcp {
        json!({"tcpSocket": {"port": tcp.port?}})
    } else if let Some(exec) = &check.exec {
        let argv = Command::parse(exec.command.as_deref()?).ok()?.argv();
        json!({"exec": {"command": argv}})
    } else {
        return None;
    };
    if let Some(period) = check.period {
        p["periodSeconds"] = period.0.as_secs().max(1).into();
    }
    if let Some(timeout) = check.timeout {
        p["timeoutSeconds"] = timeout.0.as_secs().max(1).into();
    }
    if let Some(t) = check.threshold {
        p["failureThreshold"] = t.into();
    }
    Some(p)
}

impl Rendered {
    /// The objects as shown: the Secret's values replaced with `<redacted>` (which is not
    /// base64, so a redacted render cannot be applied by mistake), and secret values
    /// redacted anywhere else.
    pub fn redacted(&self) -> Vec<Value> {
        self.objects
            .iter()
            .map(|o| {
                let mut o = o.clone();
                if o["kind"] == "Secret" {
                    if let Some(data) = o.get_mut("data").and_then(Value::as_object_mut) {
                        for v in data.values_mut() {
                            *v = REDACTED.into();
                        }
                    }
                    o
                } else {
                    redact_strings(o, &self.secret_values)
                }
            })
            .collect()
    }

    /// The objects as a multi-document YAML stream.
    pub fn to_yaml(&self, reveal: bool) -> Result<String, serde_saphyr::ser::Error> {
        let objects = if reveal {
            self.objects.clone()
        } else {
            self.redacted()
        };
        to_yaml(&objects)
    }

    /// The name of the migration Job, if the app has a migration.
    pub fn migration_job(&self) -> Option<&str> {
        self.objects
            .iter()
            .find(|o| o["kind"] == "Job")
            .and_then(|o| o["metadata"]["name"].as_str())
    }
}

/// A multi-document YAML stream, `---` before each document.
pub fn to_yaml(objects: &[Value]) -> Result<String, serde_saphyr::ser::Error> {
    let mut out = String::new();
    for o in objects {
        out.push_str("---\n");
        let text = serde_saphyr::to_string(o)?;
        out.push_str(text.trim_end());
        out.push('\n');
    }
    Ok(out)
}

fn redact_strings(v: Value, secrets: &BTreeSet<String>) -> Value {
    match v {
        // Values, not substrings: outside the Secret only a value that is a secret (or holds
        // a long one) is hidden, so a short password never hides kinds or names.
        Value::String(s) => Value::String(redact_values_with(secrets, &s)),
        Value::Array(a) => a.into_iter().map(|v| redact_strings(v, secrets)).collect(),
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| (k, redact_strings(v, secrets)))
                .collect(),
        ),
        other => other,
    }
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// 64-bit FNV-1a: stable across Rust versions and platforms, unlike `DefaultHasher`.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// A ConfigMap key for a file path: `/flask/gunicorn.conf.py` -> `flask-gunicorn.conf.py`.
fn file_key(path: &str) -> String {
    path.trim_start_matches('/')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// A container name (a DNS-1123 label) for a service name.
fn container_name(service: &str) -> String {
    let s: String = service
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let s = s.trim_matches('-');
    s[..s.len().min(63)].trim_end_matches('-').to_string()
}

/// App names become object names with suffixes (`-migrate-<release>`, pod ordinals):
/// a DNS-1123 label of at most 40 characters.
fn check_name(app: &str) -> Result<(), RenderError> {
    let err = |why| Err(RenderError::Name(app.to_string(), why));
    if app.is_empty() || app.len() > 40 {
        return err("it must have 1 to 40 characters");
    }
    if !app
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return err("only lowercase letters, digits and '-' are allowed");
    }
    if app.starts_with('-') || app.ends_with('-') {
        return err("it must start and end with a letter or digit");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            file_key("/flask/gunicorn.conf.py"),
            "flask-gunicorn.conf.py"
        );
        assert_eq!(container_name("Celery_Worker"), "celery-worker");
        assert!(check_name("web").is_ok());
        assert!(check_name("Web").is_err());
        assert!(check_name("-web").is_err());
        assert!(check_name(&"a".repeat(41)).is_err());
    }

    #[test]
    fn fnv_is_stable() {
        assert_eq!(fnv1a(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a(b"a"), 0xaf63dc4c8601ec8c);
    }
}
