//! The plan of one unit: services with their environment, files, checks, the migration
//! and the actions, with the status that explains them.

use std::collections::BTreeSet;

use indexmap::IndexMap;
use serde::Serialize;
use serde_json::Value;
use twelve_layer::{
    Check, CheckLevel, Command, GoDuration, HttpCheck, LogTarget, Override, Service, Startup,
    TcpCheck,
};
use twelve_project::{Framework, OptionType, PaasCharmLine, Project};

use crate::config::{
    effective_options, encode_env, env_name, is_framework_option, python_json, resolved_values,
};
use crate::integrations::{
    integration_env, log_targets, IntegrationContext, IntegrationKind, RelationDataError,
};
use crate::state::AppState;
use crate::status::{ServicesAction, State, Status};

/// A `*-worker` service (paas-charm): it runs on every unit with the app's environment.
pub fn is_worker(service: &str) -> bool {
    service.to_ascii_lowercase().ends_with("-worker")
}

/// A `*-scheduler` service (paas-charm): it runs on one unit only, with the app's
/// environment.
pub fn is_scheduler(service: &str) -> bool {
    service.to_ascii_lowercase().ends_with("-scheduler")
}

/// The plan for one unit, derived from (project, state) alone.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnitPlan {
    pub status: Status,
    /// The app's environment, shared by the main service, workers and schedulers.
    pub environment: IndexMap<String, String>,
    /// The Pebble services of the unit (a complete layer, `override: replace`).
    pub services: IndexMap<String, Service>,
    /// Pebble checks; `<service>-ready` gates traffic to the unit.
    pub checks: IndexMap<String, Check>,
    /// Pebble log-targets: where the supervisor forwards the services' output (the
    /// `logging` integration).
    #[serde(rename = "log-targets", skip_serializing_if = "IndexMap::is_empty")]
    pub log_targets: IndexMap<String, LogTarget>,
    /// Files to write before starting, by rock path (the gunicorn config).
    pub files: IndexMap<String, String>,
    pub migration: Option<Migration>,
    pub actions: IndexMap<String, ActionPlan>,
    pub ports: Ports,
    pub scheduler_unit: Option<u32>,
    /// Why the plan is what it is, one line per decision, for `twelve render`.
    pub notes: Vec<String>,
    /// Input values that must not be shown (passwords, keys, secret contents).
    #[serde(skip)]
    pub secret_values: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ports {
    pub app: u16,
    pub metrics: u16,
    #[serde(rename = "metrics-path")]
    pub metrics_path: String,
    /// Flask and Django: where the unit's statsd exporter receives gunicorn's (and the
    /// app's) statsd metrics; it serves them on `metrics`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statsd: Option<u16>,
}

/// The statsd port of the Flask and Django rocks (`statsd_host = "localhost:9125"`).
pub const STATSD_PORT: u16 = 9125;
/// The name of the exporter's service, as in the rocks.
pub const STATSD_SERVICE: &str = "statsd-exporter";

/// The migration command, run with the app environment in the app directory.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Migration {
    pub command: Vec<String>,
    #[serde(rename = "working-dir")]
    pub working_dir: String,
    pub user: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActionPlan {
    pub description: Option<String>,
    pub params: IndexMap<String, twelve_project::ActionParam>,
    pub required: Vec<String>,
    /// How it runs: built into twelve, or a command run with the app environment.
    #[serde(flatten)]
    pub run: ActionRun,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "runs", rename_all = "kebab-case")]
pub enum ActionRun {
    /// Handled by the controller (`rotate-secret-key`).
    Builtin,
    /// A command in the app directory, with extra environment from the parameters.
    Command {
        command: Vec<String>,
        #[serde(rename = "working-dir")]
        working_dir: String,
    },
    /// Declared but without a handler in `actions/`.
    Missing,
}

pub const SECRET_URI_PREFIX: &str = "secret:";

/// Computes the plan and status of `state.unit` of the app in `project`.
pub fn plan_unit(project: &Project, state: &AppState) -> UnitPlan {
    Planner {
        project,
        state,
        fw: project.framework,
        notes: vec![],
        secrets: BTreeSet::new(),
        usable: BTreeSet::new(),
    }
    .plan()
}

struct Planner<'a> {
    project: &'a Project,
    state: &'a AppState,
    fw: Framework,
    notes: Vec<String>,
    secrets: BTreeSet<String>,
    /// Endpoints whose relation data gave the app its variables (complete data).
    usable: BTreeSet<String>,
}

/// A problem that decides the status; the first one found wins, in paas-charm's order.
struct Blocker(Status);

impl Planner<'_> {
    fn plan(mut self) -> UnitPlan {
        let options = effective_options(self.project);
        let values = resolved_values(&options, &self.state.config);
        let ports = self.ports(&values);
        let base_url = self.base_url(ports.app);
        let mut blockers: Vec<Blocker> = vec![];

        // 1. Config: missing required options, then invalid values.
        let missing: Vec<String> = options
            .iter()
            .filter(|(n, o)| o.required() && !values.contains_key(*n))
            .map(|(n, _)| n.clone())
            .collect();
        let mut invalid: Vec<String> = vec![];
        let mut env: IndexMap<String, String> = IndexMap::new();

        // User options, then the contents of secret options.
        for (name, value) in &values {
            if is_framework_option(self.fw, name) {
                continue;
            }
            let opt = &options[name];
            if opt.type_ == OptionType::Secret {
                match self.secret_content(name, value) {
                    Ok(Some(content)) => {
                        for (k, v) in content {
                            self.secrets.insert(v.clone());
                            env.insert(
                                format!(
                                    "{}_{}",
                                    env_name(self.fw.prefix(), name),
                                    k.replace('-', "_").to_ascii_uppercase()
                                ),
                                v,
                            );
                        }
                    }
                    Ok(None) => {}
                    Err(SecretProblem::Invalid) => invalid.push(name.clone()),
                    // A config error, as paas-charm's: blocked, and what runs keeps
                    // running (it does not replan).
                    Err(SecretProblem::Blocked(msg)) => {
                        blockers.push(Blocker(Status::blocked(msg, ServicesAction::Hold)))
                    }
                }
                continue;
            }
            env.insert(env_name(self.fw.prefix(), name), encode_env(value));
        }

        // Framework options.
        let fw_env = self.framework_env(&values, &ports, &base_url, &mut invalid);
        let secret_key = match self.secret_key(&values, &mut invalid) {
            Ok(k) => k,
            Err(b) => {
                blockers.push(b);
                None
            }
        };
        env.extend(fw_env);

        if let Some(msg) = Status::config_message(&missing, &invalid) {
            let action = if missing.is_empty() {
                ServicesAction::Hold
            } else {
                ServicesAction::Stop
            };
            if !missing.is_empty() {
                self.notes.push(format!(
                    "required options not set: {}; the app waits for them",
                    missing.join(", ")
                ));
            }
            blockers.insert(0, Blocker(Status::blocked(msg, action)));
        }

        // Built-ins.
        env.insert(format!("{}BASE_URL", self.fw.prefix()), base_url.clone());
        match &secret_key {
            Some(k) => {
                self.secrets.insert(k.clone());
                let name = format!("{}SECRET_KEY", self.fw.prefix());
                env.entry(name).or_insert_with(|| k.clone());
            }
            None => blockers.push(Blocker(Status::waiting("Waiting for peer integration"))),
        }
        let others: Vec<String> = {
            let mut u: Vec<u32> = self
                .state
                .units
                .iter()
                .copied()
                .filter(|u| *u != self.state.unit)
                .collect();
            u.sort_unstable();
            u.dedup();
            u.into_iter().map(|n| self.state.peer_address(n)).collect()
        };
        if !others.is_empty() {
            env.insert(format!("{}PEER_FQDNS", self.fw.prefix()), others.join(","));
        }

        // Integrations.
        let (int_env, int_blockers) = self.integrations(&values, &base_url);
        let proxy = self.proxy_env(&int_env);
        env.extend(proxy);
        env.extend(
            int_env
                .into_iter()
                .filter(|(k, _)| !k.to_ascii_lowercase().ends_with("_proxy")),
        );
        if self.fw == Framework::SpringBoot
            && !self
                .usable
                .iter()
                .any(|e| self.kind(e) == Some(IntegrationKind::Tracing))
        {
            for k in [
                "OTEL_TRACES_EXPORTER",
                "OTEL_METRICS_EXPORTER",
                "OTEL_LOGS_EXPORTER",
            ] {
                env.insert(k.into(), "none".into());
            }
        }
        self.heroku_urls(&mut env);
        self.statsd_env(&mut env, &ports);
        blockers.extend(int_blockers);

        // Services.
        let scheduler_unit = self.state.scheduler_unit();
        let (services, files, svc_blocker) = self.services(&env, &values, &ports);
        if let Some(b) = svc_blocker {
            blockers.push(b);
        }

        let status = blockers
            .into_iter()
            .next()
            .map(|b| b.0)
            .unwrap_or_else(Status::active);
        let services = if status.services == ServicesAction::Run {
            services
        } else {
            services
                .into_iter()
                .map(|(n, mut s)| {
                    s.startup = Some(Startup::Disabled);
                    (n, s)
                })
                .collect()
        };
        let checks = self.checks(&ports);
        let log_targets = self.log_targets();
        let migration = self.migration();
        let actions = self.actions();

        UnitPlan {
            status,
            environment: env,
            services,
            checks,
            log_targets,
            files,
            migration,
            actions,
            ports,
            scheduler_unit,
            notes: self.notes,
            secret_values: self.secrets,
        }
    }

    /// The `logging` relation's Loki targets, whatever the status (logs of a blocked or
    /// stopped unit are worth forwarding too).
    fn log_targets(&mut self) -> IndexMap<String, LogTarget> {
        let unit = format!("{}/{}", self.state.app, self.state.unit);
        let mut out = IndexMap::new();
        for (endpoint, data) in &self.state.integrations {
            if self.kind(endpoint) == Some(IntegrationKind::Logging) {
                out.extend(log_targets(data, &self.state.app, &unit));
            }
        }
        if !out.is_empty() {
            // Not the URLs: a push URL may carry credentials.
            self.notes.push(format!(
                "logs of every service are forwarded to {} Loki endpoint(s): {}",
                out.len(),
                out.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        out
    }

    fn kind(&self, endpoint: &str) -> Option<IntegrationKind> {
        self.project
            .requires
            .get(endpoint)
            .and_then(|r| IntegrationKind::detect(endpoint, &r.interface))
    }

    fn ports(&mut self, values: &IndexMap<String, Value>) -> Ports {
        let int = |name: &str| {
            values
                .get(name)
                .and_then(Value::as_u64)
                .and_then(|v| u16::try_from(v).ok())
        };
        let pc = &self.project.paas_config;
        let (configured_app, configured_metrics, metrics_path) = match self.project.paas_charm {
            PaasCharmLine::Main => {
                // paas-charm main: paas-config.yaml, else the framework's defaults; of the
                // options only the aliases its config models still read (FastAPI's
                // `webserver-port`, Spring Boot's `app-port`), when set.
                let explicit = |name: &str| {
                    self.state
                        .config
                        .get(name)
                        .and_then(Value::as_u64)
                        .and_then(|v| u16::try_from(v).ok())
                };
                let app = pc
                    .port
                    .or_else(|| match self.fw {
                        Framework::FastApi => explicit("webserver-port"),
                        Framework::SpringBoot => explicit("app-port"),
                        _ => None,
                    })
                    .unwrap_or(self.fw.main_default_port());
                let (default_port, default_path) = self.fw.main_default_metrics();
                if let (Some(port), None) = (pc.port, pc.metrics_port) {
                    if default_port == self.fw.main_default_port() && port != default_port {
                        self.notes.push(format!(
                            "metrics are expected on port {default_port}, not the app's {port}: paas-charm main keeps the default metrics port when only port is set; set metrics-port: {port} in paas-config.yaml if the app serves metrics on its own port"
                        ));
                    }
                }
                for opt in ["metrics-port", "metrics-path"] {
                    if self.state.config.contains_key(opt) {
                        self.notes.push(format!(
                            "option {opt} is not read under paas-charm main: set {opt} in paas-config.yaml"
                        ));
                    }
                }
                self.notes.push(format!(
                    "ports follow paas-charm main (paas-config.yaml sets port, metrics-port or metrics-path): app {app}, metrics {} {}",
                    pc.metrics_port.unwrap_or(default_port),
                    pc.metrics_path.as_deref().unwrap_or(default_path)
                ));
                (
                    app,
                    pc.metrics_port.unwrap_or(default_port),
                    pc.metrics_path
                        .clone()
                        .unwrap_or_else(|| default_path.to_string()),
                )
            }
            PaasCharmLine::V1_12 => {
                let (default_metrics_port, default_metrics_path) = self.fw.default_metrics();
                let configured_app = pc.port.or_else(|| match self.fw {
                    Framework::FastApi => int("webserver-port"),
                    Framework::Go | Framework::ExpressJs | Framework::SpringBoot => int("app-port"),
                    _ => None,
                });
                let configured_metrics = pc
                    .metrics_port
                    .or_else(|| int("metrics-port"))
                    .unwrap_or(default_metrics_port);
                let metrics_path = pc
                    .metrics_path
                    .clone()
                    .or_else(|| {
                        values
                            .get("metrics-path")
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    })
                    .unwrap_or_else(|| default_metrics_path.to_string());
                (
                    configured_app.unwrap_or(self.fw.default_port()),
                    configured_metrics,
                    metrics_path,
                )
            }
        };
        let app = self.state.network.app_port.unwrap_or(configured_app);
        // An app that serves metrics on its own port keeps doing so on the assigned port.
        let metrics = if configured_metrics == configured_app {
            app
        } else {
            self.state
                .network
                .metrics_port
                .unwrap_or(configured_metrics)
        };
        if self.state.network.app_port.is_some() && app != configured_app {
            self.notes.push(format!(
                "listens on port {app}, assigned to this unit (the project says {configured_app})"
            ));
        }
        // Gunicorn sends statsd to an exporter serving on the metrics port, as in the rocks.
        let statsd = (self.fw.is_gunicorn() && metrics != app)
            .then(|| self.state.network.statsd_port.unwrap_or(STATSD_PORT));
        Ports {
            app,
            metrics,
            metrics_path,
            statsd,
        }
    }

    fn base_url(&self, port: u16) -> String {
        match &self.state.base_url {
            Some(u) => u.clone(),
            None => format!("http://{}.{}:{port}", self.state.app, self.state.model),
        }
    }

    fn secret_content(
        &self,
        option: &str,
        value: &Value,
    ) -> Result<Option<IndexMap<String, String>>, SecretProblem> {
        let Some(uri) = value.as_str() else {
            return Err(SecretProblem::Invalid);
        };
        let Some(id) = uri
            .strip_prefix(SECRET_URI_PREFIX)
            .filter(|id| !id.is_empty())
        else {
            return Err(SecretProblem::Invalid);
        };
        match self.state.secrets.get(id) {
            Some(view) => match &view.content {
                Some(content) => Ok(Some(content.clone())),
                None => Err(SecretProblem::Blocked(format!(
                    "secret {} is not granted to {}",
                    view.name.as_deref().unwrap_or(id),
                    self.state.app
                ))),
            },
            None => Err(SecretProblem::Blocked(format!(
                "secret {id} (option {option}) does not exist or is not granted to {}",
                self.state.app
            ))),
        }
    }

    /// The app secret key: from `<opt>-id` (a secret with one key `value`), from `<opt>`,
    /// else the generated one. `<opt>` is `app-secret-key` (paas-charm main, every
    /// framework) or, for Flask and Django, the 1.x `flask-secret-key`/`django-secret-key`;
    /// more than one of them set is `invalid options: ...` naming them.
    fn secret_key(
        &mut self,
        values: &IndexMap<String, Value>,
        invalid: &mut Vec<String>,
    ) -> Result<Option<String>, Blocker> {
        let mut candidates = vec!["app-secret-key"];
        if self.fw.is_gunicorn() {
            candidates.push(self.fw.secret_key_option());
        }
        let set: Vec<(&str, String)> = candidates
            .iter()
            .flat_map(|opt| [opt.to_string(), format!("{opt}-id")].map(|n| (*opt, n)))
            .filter(|(_, n)| match values.get(n) {
                Some(Value::String(v)) => !v.is_empty(),
                Some(v) => !v.is_null(),
                None => false,
            })
            .collect();
        if set.len() > 1 {
            for (_, n) in &set {
                if !invalid.contains(n) {
                    invalid.push(n.clone());
                }
            }
            self.notes.push(format!(
                "the secret key is set more than once ({}): set one of them",
                set.iter()
                    .map(|(_, n)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            return Ok(self.state.secret_key.clone());
        }
        let Some((opt, name)) = set.into_iter().next() else {
            return Ok(self.state.secret_key.clone());
        };
        let id_opt = format!("{opt}-id");
        if name != id_opt {
            let k = values.get(opt).and_then(Value::as_str).unwrap_or_default();
            self.notes.push(format!("secret key from option {opt}"));
            return Ok(Some(k.to_string()));
        }
        let content = match self.secret_content(&id_opt, &values[&id_opt]) {
            Ok(c) => c.unwrap_or_default(),
            Err(SecretProblem::Invalid) => {
                invalid.push(id_opt);
                return Ok(self.state.secret_key.clone());
            }
            Err(SecretProblem::Blocked(m)) => {
                return Err(Blocker(Status::blocked(m, ServicesAction::Hold)))
            }
        };
        if content.len() > 1 {
            return Err(Blocker(Status::blocked(
                format!("{id_opt} secret contains multiple values"),
                ServicesAction::Hold,
            )));
        }
        match content.get("value") {
            Some(v) => {
                self.notes
                    .push(format!("secret key from the secret in {id_opt}"));
                Ok(Some(v.clone()))
            }
            None => Err(Blocker(Status::blocked(
                format!("{id_opt} missing 'value' key in the secret content"),
                ServicesAction::Hold,
            ))),
        }
    }

    /// The framework's own options as environment variables (paas-charm's `*Config` models).
    fn framework_env(
        &mut self,
        values: &IndexMap<String, Value>,
        ports: &Ports,
        base_url: &str,
        invalid: &mut Vec<String>,
    ) -> IndexMap<String, String> {
        let mut env = IndexMap::new();
        let p = self.fw.framework_config_prefix();
        let main = self.project.paas_charm == PaasCharmLine::Main;
        let get = |n: &str| values.get(n);
        let positive = |n: &str, invalid: &mut Vec<String>| -> Option<i64> {
            let v = get(n)?.as_i64()?;
            if v <= 0 {
                invalid.push(n.to_string());
                None
            } else {
                Some(v)
            }
        };
        match self.fw {
            Framework::Flask => {
                for (opt, var) in [
                    ("flask-env", "ENV"),
                    ("flask-debug", "DEBUG"),
                    ("flask-application-root", "APPLICATION_ROOT"),
                    ("flask-session-cookie-secure", "SESSION_COOKIE_SECURE"),
                ] {
                    if let Some(v) = get(opt) {
                        env.insert(format!("{p}{var}"), encode_env(v));
                    }
                }
                if let Some(v) = positive("flask-permanent-session-lifetime", invalid) {
                    env.insert(format!("{p}PERMANENT_SESSION_LIFETIME"), v.to_string());
                }
                if let Some(v) = get("flask-preferred-url-scheme").and_then(Value::as_str) {
                    let upper = v.to_ascii_uppercase();
                    if upper == "HTTP" || upper == "HTTPS" {
                        env.insert(format!("{p}PREFERRED_URL_SCHEME"), upper);
                    } else {
                        invalid.push("flask-preferred-url-scheme".into());
                    }
                }
                self.check_webserver_numbers(values, invalid);
            }
            Framework::Django => {
                if let Some(v) = get("django-debug") {
                    env.insert(format!("{p}DEBUG"), encode_env(v));
                }
                let mut hosts: Vec<String> = get("django-allowed-hosts")
                    .and_then(Value::as_str)
                    .map(|s| {
                        s.split(',')
                            .map(|h| h.trim().to_string())
                            .filter(|h| !h.is_empty())
                            .collect()
                    })
                    .unwrap_or_default();
                if let Some(host) = url::Url::parse(base_url)
                    .ok()
                    .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
                {
                    if !hosts.contains(&host) {
                        hosts.push(host);
                    }
                }
                env.insert(
                    format!("{p}ALLOWED_HOSTS"),
                    python_json(&Value::from(hosts)),
                );
                self.check_webserver_numbers(values, invalid);
            }
            Framework::FastApi => {
                env.insert("UVICORN_PORT".into(), ports.app.to_string());
                env.insert("UVICORN_HOST".into(), self.bind_host());
                if let Some(v) = positive("webserver-workers", invalid) {
                    env.insert("WEB_CONCURRENCY".into(), v.to_string());
                }
                if let Some(v) = get("webserver-log-level").and_then(Value::as_str) {
                    if ["critical", "error", "warning", "info", "debug", "trace"].contains(&v) {
                        env.insert("UVICORN_LOG_LEVEL".into(), v.to_string());
                    } else {
                        invalid.push("webserver-log-level".into());
                    }
                }
                env.insert("METRICS_PORT".into(), ports.metrics.to_string());
                env.insert("METRICS_PATH".into(), ports.metrics_path.clone());
                if self.json_logs() {
                    // paas-charm 1.11: uvicorn loads a dictConfig file (its
                    // `--log-config`, read from UVICORN_LOG_CONFIG) whose formatter
                    // module is found through PYTHONPATH.
                    env.insert("PYTHONPATH".into(), UVICORN_LOG_DIR.into());
                    env.insert(
                        "UVICORN_LOG_CONFIG".into(),
                        format!("{UVICORN_LOG_DIR}/{UVICORN_LOG_CONFIG_FILE}"),
                    );
                }
            }
            Framework::Go => {
                // paas-charm main drops Go's `APP_` framework prefix: `PORT`, `METRICS_*`.
                let p = if main { "" } else { p };
                env.insert(format!("{p}PORT"), ports.app.to_string());
                env.insert(format!("{p}METRICS_PORT"), ports.metrics.to_string());
                env.insert(format!("{p}METRICS_PATH"), ports.metrics_path.clone());
            }
            Framework::ExpressJs => {
                env.insert("NODE_ENV".into(), "production".into());
                env.insert("PORT".into(), ports.app.to_string());
                env.insert("METRICS_PORT".into(), ports.metrics.to_string());
                env.insert("METRICS_PATH".into(), ports.metrics_path.clone());
            }
            Framework::SpringBoot => {
                env.insert("SERVER_PORT".into(), ports.app.to_string());
                if let Some(v) = get("app-profiles").and_then(Value::as_str) {
                    env.insert("APP_PROFILES".into(), v.to_string());
                    env.insert("spring.profiles.active".into(), v.to_string());
                }
                if main {
                    // paas-charm main: the property itself, and no METRICS_* variables.
                    env.insert("management.server.port".into(), ports.metrics.to_string());
                } else {
                    env.insert("MANAGEMENT_SERVER_PORT".into(), ports.metrics.to_string());
                    env.insert("METRICS_PATH".into(), ports.metrics_path.clone());
                }
                env.insert("server.forward-headers-strategy".into(), "framework".into());
                env.insert(
                    "management.endpoints.web.exposure.include".into(),
                    "prometheus".into(),
                );
                let path = ports.metrics_path.trim_end_matches('/');
                let (base, last) = path.rsplit_once('/').unwrap_or(("", path));
                env.insert(
                    "management.endpoints.web.base-path".into(),
                    format!("/{}", base.trim_start_matches('/')),
                );
                env.insert(
                    "management.endpoints.web.path-mapping.prometheus".into(),
                    last.to_string(),
                );
            }
        }
        if main && self.fw.is_gunicorn() {
            // paas-charm main exposes the resolved metrics endpoint to every framework;
            // Flask and Django get it with their prefix (the statsd exporter's port).
            env.insert(format!("{p}METRICS_PORT"), ports.metrics.to_string());
            env.insert(format!("{p}METRICS_PATH"), ports.metrics_path.clone());
        }
        for opt in ["app-port", "metrics-port", "webserver-port"] {
            if let Some(v) = get(opt).and_then(Value::as_i64) {
                if !(1..=65535).contains(&v) && !invalid.iter().any(|i| i == opt) {
                    invalid.push(opt.to_string());
                }
            }
        }
        env
    }

    fn check_webserver_numbers(&self, values: &IndexMap<String, Value>, invalid: &mut Vec<String>) {
        for opt in [
            "webserver-workers",
            "webserver-threads",
            "webserver-timeout",
            "webserver-keepalive",
        ] {
            if values
                .get(opt)
                .and_then(Value::as_i64)
                .is_some_and(|v| v <= 0)
            {
                invalid.push(opt.into());
            }
        }
    }

    fn bind_host(&self) -> String {
        self.state
            .network
            .bind_host
            .clone()
            .unwrap_or_else(|| "0.0.0.0".into())
    }

    fn integrations(
        &mut self,
        values: &IndexMap<String, Value>,
        base_url: &str,
    ) -> (IndexMap<String, String>, Vec<Blocker>) {
        let mut env = IndexMap::new();
        let mut blockers = vec![];
        let mut missing: Vec<(IntegrationKind, String)> = vec![];
        let oauth_endpoints: Vec<&String> = self
            .project
            .requires
            .keys()
            .filter(|e| {
                self.kind(e) == Some(IntegrationKind::Oauth)
                    && self.state.integrations.contains_key(*e)
            })
            .collect();
        for (endpoint, rel) in &self.project.requires {
            let Some(kind) = self.kind(endpoint) else {
                continue;
            };
            match self.state.integrations.get(endpoint) {
                None => {
                    if rel.required() && kind.checked_when_required() {
                        missing.push((kind, endpoint.clone()));
                    }
                }
                Some(data) => {
                    let ctx = IntegrationContext {
                        framework: self.fw,
                        app: &self.state.app,
                        endpoint,
                        base_url,
                        config: values,
                    };
                    match integration_env(kind, &ctx, data) {
                        Ok(out) => {
                            self.secrets.extend(out.secrets);
                            env.extend(out.env);
                            self.usable.insert(endpoint.clone());
                        }
                        // Data that is not complete yet (no password, `redis://host:None`):
                        // paas-charm's requirers give no relation data then, and the
                        // integration counts as not there: no variables, and `missing
                        // integrations` when it is required. Only http-proxy blocks.
                        Err(RelationDataError::Unusable { reason, .. })
                            if kind != IntegrationKind::HttpProxy =>
                        {
                            self.notes.push(format!(
                                "{endpoint}: relation data not complete yet ({reason}); treated as not integrated, as paas-charm does"
                            ));
                            if rel.required() && kind.checked_when_required() {
                                missing.push((kind, endpoint.clone()));
                            }
                        }
                        Err(e) => {
                            let msg = match (&e, kind) {
                                (
                                    RelationDataError::Invalid { reason, .. },
                                    IntegrationKind::Oauth,
                                ) if reason.contains("'openid' scope") => reason.clone(),
                                _ => e.to_string(),
                            };
                            blockers.push(Blocker(Status::blocked(msg, ServicesAction::Hold)));
                        }
                    }
                }
            }
        }
        let mut ordered: Vec<Blocker> = vec![];
        if !missing.is_empty() {
            missing.sort_by_key(|(k, _)| IntegrationKind::CHECK_ORDER.iter().position(|o| o == k));
            let names: Vec<String> = missing.into_iter().map(|(_, e)| e).collect();
            self.notes.push(format!("required integrations missing: {}; services stay stopped until they are integrated", names.join(", ")));
            ordered.push(Blocker(Status::blocked(
                format!("missing integrations: {}", names.join(", ")),
                ServicesAction::Stop,
            )));
        }
        if oauth_endpoints.len() > 1 {
            ordered.push(Blocker(Status::blocked(
                "Multiple OAuth relations are not supported at the moment",
                ServicesAction::Hold,
            )));
        } else if oauth_endpoints.len() == 1 && self.state.base_url.is_none() {
            ordered.push(Blocker(Status::blocked(
                "Ingress relation is required for OIDC to work correctly!",
                ServicesAction::Hold,
            )));
        }
        if self.fw == Framework::Django {
            let has_db = self.usable.iter().any(|e| {
                matches!(
                    self.kind(e),
                    Some(
                        IntegrationKind::Postgresql
                            | IntegrationKind::Mysql
                            | IntegrationKind::Mongodb
                    )
                )
            });
            if !has_db {
                ordered.push(Blocker(Status::blocked(
                    "Django requires a database integration to work",
                    ServicesAction::Stop,
                )));
            }
        }
        // Relation data errors come from building the charm state, before the readiness checks.
        blockers.extend(ordered);
        (env, blockers)
    }

    fn proxy_env(&self, int_env: &IndexMap<String, String>) -> IndexMap<String, String> {
        let mut env = IndexMap::new();
        let p = &self.state.proxy;
        let http = int_env
            .get("HTTP_PROXY")
            .cloned()
            .or_else(|| p.http_proxy.clone());
        let https = int_env
            .get("HTTPS_PROXY")
            .cloned()
            .or_else(|| p.https_proxy.clone());
        for (name, value) in [
            ("http_proxy", http),
            ("https_proxy", https),
            ("no_proxy", p.no_proxy.clone()),
        ] {
            if let Some(v) = value.filter(|v| !v.is_empty()) {
                env.insert(name.to_string(), v.clone());
                env.insert(name.to_ascii_uppercase(), v);
            }
        }
        env
    }

    /// `DATABASE_URL` (exactly one SQL database integrated) and `REDIS_URL`, so that
    /// Heroku-style apps run unchanged.
    fn heroku_urls(&mut self, env: &mut IndexMap<String, String>) {
        let sql: Vec<String> = ["POSTGRESQL_DB_CONNECT_STRING", "MYSQL_DB_CONNECT_STRING"]
            .iter()
            .filter_map(|k| env.get(*k).cloned())
            .collect();
        match sql.len() {
            1 => {
                env.insert("DATABASE_URL".into(), sql[0].clone());
            }
            2 => self
                .notes
                .push("DATABASE_URL is not set: both postgresql and mysql are integrated".into()),
            _ => {}
        }
        if let Some(r) = env.get("REDIS_DB_CONNECT_STRING").cloned() {
            env.insert("REDIS_URL".into(), r);
        }
    }

    /// `STATSD_HOST`/`STATSD_PORT` (the variables pystatsd's `statsd.defaults.env` reads)
    /// when the substrate gave the unit its own statsd port: the charms' apps push to
    /// `localhost:9125`, which on one machine is shared by every unit.
    fn statsd_env(&mut self, env: &mut IndexMap<String, String>, ports: &Ports) {
        if let (Some(port), Some(_)) = (ports.statsd, self.state.network.statsd_port) {
            env.insert("STATSD_HOST".into(), "localhost".into());
            env.insert("STATSD_PORT".into(), port.to_string());
        }
    }

    fn services(
        &mut self,
        env: &IndexMap<String, String>,
        values: &IndexMap<String, Value>,
        ports: &Ports,
    ) -> (
        IndexMap<String, Service>,
        IndexMap<String, String>,
        Option<Blocker>,
    ) {
        let main_name = self.fw.service_name();
        let scheduler_unit = self.state.scheduler_unit();
        let mut blocker = None;
        let mut files = IndexMap::new();
        let mut services = IndexMap::new();
        for (name, svc) in &self.project.services {
            let mut s = svc.clone();
            s.override_ = Some(Override::Replace);
            if name == main_name || is_worker(name) || is_scheduler(name) {
                for (k, v) in env {
                    s.environment.insert(k.clone(), v.clone());
                }
            }
            if is_scheduler(name) {
                if scheduler_unit == Some(self.state.unit) {
                    self.notes.push(format!(
                        "{name} runs on this unit: it is the scheduler unit"
                    ));
                } else {
                    s.startup = Some(Startup::Disabled);
                    if let Some(u) = scheduler_unit {
                        self.notes
                            .push(format!("{name} is disabled here: it runs on unit {u} only"));
                    }
                }
            }
            if name == main_name && self.fw == Framework::FastApi && self.json_logs() {
                files.insert(
                    format!("{UVICORN_LOG_DIR}/{UVICORN_LOG_CONFIG_FILE}"),
                    UVICORN_LOG_CONFIG.to_string(),
                );
                files.insert(
                    format!("{UVICORN_LOG_DIR}/{UVICORN_LOG_MODULE_FILE}"),
                    UVICORN_JSON_LOGGING.to_string(),
                );
                self.notes.push(format!(
                    "framework_logging_format: json: uvicorn logs one JSON object per line (UVICORN_LOG_CONFIG={UVICORN_LOG_DIR}/{UVICORN_LOG_CONFIG_FILE})"
                ));
            }
            if name == main_name && self.fw.is_gunicorn() {
                match self.gunicorn(&mut s, values, ports) {
                    Ok(conf) => {
                        files.insert(format!("/{}/gunicorn.conf.py", self.fw.name()), conf);
                    }
                    Err(b) => blocker = Some(b),
                }
            }
            services.insert(name.clone(), s);
        }
        if let (Some(statsd), Some(main)) = (ports.statsd, services.get_mut(main_name)) {
            if !main.after.iter().any(|a| a == STATSD_SERVICE) {
                main.after.push(STATSD_SERVICE.into());
            }
            if services.contains_key(STATSD_SERVICE) {
                self.notes.push(format!(
                    "the project's {STATSD_SERVICE} service is replaced by twelve's built-in exporter"
                ));
            }
            services.insert(STATSD_SERVICE.into(), self.statsd_exporter(statsd, ports));
            self.notes.push(format!(
                "gunicorn sends statsd metrics to localhost:{statsd}; {STATSD_SERVICE} serves them as {fw}_requests, {fw}_response_code and {fw}_request_duration on port {} {}",
                ports.metrics,
                ports.metrics_path,
                fw = self.fw.name()
            ));
        }
        (services, files, blocker)
    }

    /// The rock's `statsd-exporter` service, run by twelve's own exporter: statsd on
    /// localhost (UDP and TCP), Prometheus metrics on the metrics port.
    fn statsd_exporter(&self, statsd: u16, ports: &Ports) -> Service {
        let mut command = format!(
            "twelve statsd-exporter --statsd-listen 127.0.0.1:{statsd} --web-listen {}:{} --prefix {}",
            self.bind_host(),
            ports.metrics,
            self.fw.name()
        );
        if ports.metrics_path != "/metrics" {
            command.push_str(&format!(
                " --web-path {}",
                twelve_layer::quote_word(&ports.metrics_path)
            ));
        }
        Service {
            override_: Some(Override::Replace),
            summary: Some("statsd exporter service".into()),
            command: Some(command),
            startup: Some(Startup::Enabled),
            // As every service of the rocks (run-user `_daemon_`): it reads what the app
            // sends, so it runs with the app's rights, not the supervisor's.
            user: Some("_daemon_".into()),
            ..Default::default()
        }
    }

    /// The gunicorn config file and the worker class after `-k`.
    fn gunicorn(
        &mut self,
        s: &mut Service,
        values: &IndexMap<String, Value>,
        ports: &Ports,
    ) -> Result<String, Blocker> {
        let fw = self.fw.name();
        let doc = format!("https://bit.ly/{fw}-async-doc");
        let configured = values.get("webserver-worker-class").and_then(Value::as_str);
        let class = match configured {
            Some(c) if c != "sync" && c != "gevent" => {
                return Err(Blocker(Status::blocked(
                    format!("Only 'gevent' and 'sync' are allowed. {doc}"),
                    ServicesAction::Hold,
                )))
            }
            Some(c) => c.to_string(),
            None if self.project.files.gevent => "gevent".into(),
            None => "sync".into(),
        };
        if class == "gevent" && !self.project.files.gevent_worker {
            // paas-charm checks `import gevent`; gunicorn 22+'s gevent worker also imports
            // `packaging`, which only `gunicorn[gevent]` brings: gevent alone would pass
            // that check and crash gunicorn at start.
            if self.project.files.gevent {
                self.notes.push(
                    "gevent is required but not gunicorn[gevent]: gunicorn's gevent worker also needs packaging; require gunicorn[gevent] (or add packaging)".into(),
                );
            }
            return Err(Blocker(Status::blocked(
                format!("gunicorn[gevent] must be installed in the rock. {doc}"),
                ServicesAction::Hold,
            )));
        }
        if let Some(cmd) = s.command.as_deref().and_then(|c| Command::parse(c).ok()) {
            let mut words: Vec<String> = cmd.argv();
            let k = words
                .iter()
                .position(|w| w == "-k" || w == "--worker-class");
            match k {
                Some(i) if i + 1 < words.len() => {
                    words[i + 1] = class.clone();
                    let base_len = cmd.base.len();
                    let rebuilt = Command {
                        base: words[..base_len.min(words.len())].to_vec(),
                        default_args: words[base_len.min(words.len())..].to_vec(),
                        has_args_group: cmd.has_args_group,
                    };
                    s.command = Some(rebuilt.to_string());
                }
                _ if configured.is_some() => {
                    return Err(Blocker(Status::blocked(
                        "Worker class is set through `juju config` but the `-k` worker class argument is not in the service command.",
                        ServicesAction::Hold,
                    )))
                }
                _ => {}
            }
        }
        let mut conf = String::new();
        conf.push_str(&format!("bind = ['{}:{}']\n", self.bind_host(), ports.app));
        conf.push_str(&format!("chdir = '{}'\n", self.fw.app_dir()));
        conf.push_str("accesslog = '-'\nerrorlog = '-'\n");
        if let Some(statsd) = ports.statsd {
            conf.push_str(&format!("statsd_host = 'localhost:{statsd}'\n"));
        }
        for (opt, key) in [
            ("webserver-workers", "workers"),
            ("webserver-threads", "threads"),
            ("webserver-keepalive", "keepalive"),
            ("webserver-timeout", "timeout"),
        ] {
            if let Some(v) = values.get(opt).and_then(Value::as_i64) {
                conf.push_str(&format!("{key} = {v}\n"));
            }
        }
        if self.json_logs() {
            conf.push_str(GUNICORN_JSON_LOGGING);
        }
        Ok(conf)
    }

    /// `framework_logging_format: json`, for a framework whose server paas-charm
    /// configures for it (gunicorn, uvicorn); the others ignore it (with a project note).
    fn json_logs(&self) -> bool {
        self.project.paas_config.framework_logging_format.as_deref() == Some("json")
            && self.fw.supports_json_logs()
    }

    fn checks(&self, ports: &Ports) -> IndexMap<String, Check> {
        let name = format!("{}-ready", self.fw.service_name());
        let mut check = Check {
            override_: Some(Override::Replace),
            level: Some(CheckLevel::Ready),
            period: Some(GoDuration(std::time::Duration::from_secs(2))),
            threshold: Some(3),
            ..Default::default()
        };
        match &self.project.paas_config.healthcheck {
            Some(h) => {
                check.http = Some(HttpCheck {
                    url: Some(format!("http://127.0.0.1:{}{}", ports.app, h.path)),
                    headers: Default::default(),
                })
            }
            None => {
                check.tcp = Some(TcpCheck {
                    port: Some(ports.app),
                    host: Some("127.0.0.1".into()),
                })
            }
        }
        [(name, check)].into_iter().collect()
    }

    /// paas-charm checks `migrate`, `migrate.sh`, `migrate.py`, `manage.py` in that order and
    /// the last one present wins.
    fn migration(&mut self) -> Option<Migration> {
        let f = &self.project.files;
        let app_dir = self.fw.app_dir();
        let mut command: Option<Vec<String>> = None;
        let mut chosen = "";
        let words = |ws: &[&str]| ws.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        if f.migrate {
            command = Some(vec![format!("{app_dir}/migrate")]);
            chosen = "migrate";
        }
        if f.migrate_sh {
            command = Some(words(&["bash", "-eo", "pipefail", "migrate.sh"]));
            chosen = "migrate.sh";
        }
        if f.migrate_py {
            command = Some(words(&["python3", "migrate.py"]));
            chosen = "migrate.py";
        }
        if f.manage_py {
            command = Some(words(&["python3", "manage.py", "migrate"]));
            chosen = "manage.py";
        }
        let command = command?;
        let present: Vec<&str> = [
            (f.migrate, "migrate"),
            (f.migrate_sh, "migrate.sh"),
            (f.migrate_py, "migrate.py"),
            (f.manage_py, "manage.py"),
        ]
        .into_iter()
        .filter(|(p, n)| *p && *n != chosen)
        .map(|(_, n)| n)
        .collect();
        if !present.is_empty() {
            self.notes.push(format!(
                "migration: {chosen} takes precedence over {}",
                present.join(", ")
            ));
        }
        Some(Migration {
            command,
            working_dir: app_dir.to_string(),
            user: "_daemon_".into(),
        })
    }

    fn actions(&self) -> IndexMap<String, ActionPlan> {
        let app_dir = self.fw.app_dir().to_string();
        self.project
            .actions
            .iter()
            .map(|(name, def)| {
                let run = match name.as_str() {
                    "rotate-secret-key" => ActionRun::Builtin,
                    "create-superuser" if self.fw == Framework::Django => ActionRun::Command {
                        command: ["python3", "manage.py", "createsuperuser", "--noinput"]
                            .map(String::from)
                            .to_vec(),
                        working_dir: app_dir.clone(),
                    },
                    _ => match self.project.files.action_handlers.get(name) {
                        Some(file) => {
                            let path = format!("actions/{file}");
                            let command = if file.ends_with(".sh") {
                                vec!["bash".into(), "-eo".into(), "pipefail".into(), path]
                            } else if file.ends_with(".py") {
                                vec!["python3".into(), path]
                            } else {
                                vec![format!("{app_dir}/{path}")]
                            };
                            ActionRun::Command {
                                command,
                                working_dir: app_dir.clone(),
                            }
                        }
                        None => ActionRun::Missing,
                    },
                };
                (
                    name.clone(),
                    ActionPlan {
                        description: def.description.clone(),
                        params: def.params.clone(),
                        required: def.required.clone(),
                        run,
                    },
                )
            })
            .collect()
    }
}

enum SecretProblem {
    /// The value is not a secret URI.
    Invalid,
    /// The secret cannot be read by the app.
    Blocked(String),
}

impl UnitPlan {
    pub fn state(&self) -> State {
        self.status.state
    }

    /// Replaces secret values in `text` with a marker: every occurrence of a long secret
    /// (so a URL keeps its host but not its password), and of a short one where it stands
    /// as a word of its own (`:pw@`, `=pw`), never inside another word.
    pub fn redact(&self, text: &str) -> String {
        redact_with(&self.secret_values, text)
    }
}

pub const REDACTED: &str = "<redacted>";

/// Secrets at least this long are hidden wherever they occur; shorter ones only as whole
/// words, so a password like `fig` does not hide `ConfigMap`.
pub const SUBSTRING_SECRET_LEN: usize = 8;

/// The secrets and their percent-encoded forms, longest first (so a secret containing
/// another is replaced whole).
fn secret_forms(secrets: &BTreeSet<String>) -> Vec<String> {
    let mut forms: Vec<String> = secrets
        .iter()
        .filter(|s| !s.is_empty())
        .flat_map(|s| {
            let encoded =
                percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC)
                    .to_string();
            [s.clone(), encoded]
        })
        .collect();
    forms.sort_by_key(|s| std::cmp::Reverse(s.len()));
    forms.dedup();
    forms
}

/// `text` with secrets hidden: a text equal to a secret becomes the marker; inside a longer
/// text, long secrets are replaced wherever they occur and short ones only where they
/// stand as a word (the characters around them are not letters or digits).
pub fn redact_with(secrets: &BTreeSet<String>, text: &str) -> String {
    let forms = secret_forms(secrets);
    if forms.iter().any(|f| f == text) {
        return REDACTED.to_string();
    }
    let mut out = text.to_string();
    for form in &forms {
        if !out.contains(form.as_str()) {
            continue;
        }
        out = if form.len() >= SUBSTRING_SECRET_LEN {
            out.replace(form.as_str(), REDACTED)
        } else {
            replace_words(&out, form)
        };
    }
    out
}

/// Only whole values that are secrets, and long secrets inside longer texts: for texts that
/// are not meant to hold secrets at all (names, kinds, labels), where a short secret
/// matching part of a word is a coincidence.
pub fn redact_values_with(secrets: &BTreeSet<String>, text: &str) -> String {
    let forms = secret_forms(secrets);
    if forms.iter().any(|f| f == text) {
        return REDACTED.to_string();
    }
    let mut out = text.to_string();
    for form in forms.iter().filter(|f| f.len() >= SUBSTRING_SECRET_LEN) {
        out = out.replace(form.as_str(), REDACTED);
    }
    out
}

/// Replaces the occurrences of `word` not preceded or followed by a letter or digit.
fn replace_words(text: &str, word: &str) -> String {
    let is_word_char = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut before: Option<char> = None;
    while let Some(i) = rest.find(word) {
        let prev = rest[..i].chars().next_back().or(before);
        let next = rest[i + word.len()..].chars().next();
        out.push_str(&rest[..i]);
        if is_word_char(prev) || is_word_char(next) {
            out.push_str(word);
        } else {
            out.push_str(REDACTED);
        }
        before = word.chars().next_back();
        rest = &rest[i + word.len()..];
    }
    out.push_str(rest);
    out
}

/// `framework_logging_format: json` (paas-charm 1.11): gunicorn's error and access logs as
/// one JSON object per line, in OpenTelemetry's log data model (`timestamp`,
/// `severityText`, `body`, `attributes` with the HTTP semantic conventions), so that Loki
/// and other collectors get fields, not lines. Appended to the unit's gunicorn.conf.py.
pub const GUNICORN_JSON_LOGGING: &str = r#"
# framework_logging_format: json: one JSON object per log line.
import json as _json
import logging as _logging
import time as _time

from gunicorn import glogging as _glogging

_LEVELS = {"WARNING": "WARN", "CRITICAL": "FATAL"}


def _when(epoch):
    return _time.strftime("%Y-%m-%dT%H:%M:%S", _time.gmtime(epoch)) + ".%03dZ" % int(epoch % 1 * 1000)


class _JsonLines(_logging.Formatter):
    def format(self, record):
        attrs = {"logger.name": record.name}
        if record.exc_info and record.exc_info[0] is not None:
            attrs["exception.type"] = record.exc_info[0].__qualname__
            attrs["exception.message"] = str(record.exc_info[1])
            attrs["exception.stacktrace"] = self.formatException(record.exc_info)
        return _json.dumps({
            "timestamp": _when(record.created),
            "severityText": _LEVELS.get(record.levelname, record.levelname),
            "body": record.getMessage(),
            "attributes": attrs,
        }, default=str)


class TwelveJsonLogger(_glogging.Logger):
    def setup(self, cfg):
        super().setup(cfg)
        for handler in self.error_log.handlers:
            handler.setFormatter(_JsonLines())

    def access(self, resp, req, environ, request_time):
        if not self.cfg.accesslog:
            return
        try:
            status = int(str(resp.status).split(" ", 1)[0])
        except ValueError:
            status = resp.status
        method = environ.get("REQUEST_METHOD", "")
        path = environ.get("PATH_INFO", "")
        client = environ.get("REMOTE_ADDR", "")
        attrs = {
            "logger.name": "gunicorn.access",
            "http.request.method": method,
            "url.path": path,
            "http.response.status_code": status,
            "duration_ms": round(request_time.total_seconds() * 1000, 3),
        }
        if environ.get("QUERY_STRING"):
            attrs["url.query"] = environ["QUERY_STRING"]
        if client:
            attrs["client.address"] = client
        if environ.get("HTTP_X_REQUEST_ID"):
            attrs["http.request.header.x-request-id"] = environ["HTTP_X_REQUEST_ID"]
        if environ.get("HTTP_TRACEPARENT"):
            parts = environ["HTTP_TRACEPARENT"].split("-")
            if len(parts) == 4:
                attrs["trace_id"], attrs["span_id"] = parts[1], parts[2]
        self.access_log.info(_json.dumps({
            "timestamp": _when(_time.time()),
            "severityText": "INFO",
            "body": '%s - "%s %s %s" %s' % (client, method, path, environ.get("SERVER_PROTOCOL", ""), status),
            "attributes": attrs,
        }, default=str))


logger_class = TwelveJsonLogger
"#;

/// Where a FastAPI unit's logging files go with `framework_logging_format: json`: a rock
/// path under `/tmp`, as paas-charm (1.11) pushes them (on this machine, under the unit's
/// own files directory, as the gunicorn config).
pub const UVICORN_LOG_DIR: &str = "/tmp/fastapi/log_config";
pub const UVICORN_LOG_CONFIG_FILE: &str = "uvicorn-log-config.json";
pub const UVICORN_LOG_MODULE_FILE: &str = "uvicorn_log_handler.py";

/// uvicorn's `--log-config` (a `logging.config.dictConfig` in JSON): its error logger
/// to stderr and its access logger to stdout, both through the JSON formatter of
/// [`UVICORN_JSON_LOGGING`].
pub const UVICORN_LOG_CONFIG: &str = r#"{
  "version": 1,
  "disable_existing_loggers": false,
  "formatters": {"json": {"()": "uvicorn_log_handler.JsonLines"}},
  "handlers": {
    "default": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "formatter": "json"},
    "access": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout", "formatter": "json"}
  },
  "loggers": {
    "uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": false},
    "uvicorn.error": {"handlers": ["default"], "level": "INFO", "propagate": false},
    "uvicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": false}
  }
}
"#;

/// The formatter module uvicorn's log config names (standard library only): each record
/// as one JSON object in OpenTelemetry's log data model, as [`GUNICORN_JSON_LOGGING`];
/// access records (`uvicorn.access`, whose arguments are the client, method, path with
/// query, HTTP version and status) get the HTTP semantic-convention attributes, and the
/// trace and span ids of the active OpenTelemetry span when the app uses one.
pub const UVICORN_JSON_LOGGING: &str = r#""""JSON log lines for uvicorn (twelve, framework_logging_format: json)."""

import json
import logging
import time

_LEVELS = {"WARNING": "WARN", "CRITICAL": "FATAL"}


def _when(epoch):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + ".%03dZ" % int(epoch % 1 * 1000)


def _span_ids():
    try:
        from opentelemetry import trace
    except ImportError:
        return {}
    ctx = trace.get_current_span().get_span_context()
    if not ctx or not ctx.is_valid:
        return {}
    return {"traceId": "%032x" % ctx.trace_id, "spanId": "%016x" % ctx.span_id}


def _http(args):
    attrs = {}
    if not isinstance(args, (tuple, list)) or len(args) < 5:
        return attrs
    client, method, target, _version, status = args[:5]
    attrs["http.request.method"] = str(method)
    path, _, query = str(target).partition("?")
    attrs["url.path"] = path
    if query:
        attrs["url.query"] = query
    if client:
        attrs["client.address"] = str(client).rsplit(":", 1)[0]
    try:
        attrs["http.response.status_code"] = int(status)
    except (TypeError, ValueError):
        attrs["http.response.status_code"] = status
    return attrs


class JsonLines(logging.Formatter):
    def format(self, record):
        line = {
            "timestamp": _when(record.created),
            "severityText": _LEVELS.get(record.levelname, record.levelname),
            "body": record.getMessage(),
        }
        line.update(_span_ids())
        attrs = {"logger.name": record.name}
        if record.name == "uvicorn.access":
            attrs.update(_http(record.args))
        if record.exc_info and record.exc_info[0] is not None:
            attrs["exception.type"] = record.exc_info[0].__qualname__
            attrs["exception.message"] = str(record.exc_info[1])
            attrs["exception.stacktrace"] = self.formatException(record.exc_info)
        line["attributes"] = attrs
        return json.dumps(line, default=str)
"#;
