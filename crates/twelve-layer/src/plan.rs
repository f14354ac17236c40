//! Combining layers into a plan: Pebble's merge rules and the checks on the result.

use std::collections::BTreeSet;
use std::time::Duration;

use indexmap::IndexMap;

use crate::command::Command;
use crate::layer::*;

/// Pebble's defaults, filled after combining (they never show in the plan itself).
pub const DEFAULT_BACKOFF_DELAY: Duration = Duration::from_millis(500);
pub const DEFAULT_BACKOFF_FACTOR: f64 = 2.0;
pub const DEFAULT_BACKOFF_LIMIT: Duration = Duration::from_secs(30);
pub const DEFAULT_KILL_DELAY: Duration = Duration::from_secs(5);
pub const DEFAULT_CHECK_PERIOD: Duration = Duration::from_secs(10);
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(3);
pub const DEFAULT_CHECK_THRESHOLD: u32 = 3;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayerError {
    #[error("cannot parse layer {label:?}: {message}")]
    Parse {
        label: String,
        message: String,
        line: Option<u64>,
        column: Option<u64>,
    },
    #[error("layer {label:?} must define \"override\" for {kind} {name:?}")]
    MissingOverride {
        label: String,
        kind: &'static str,
        name: String,
    },
    #[error("cannot use reserved {kind} name {name:?}")]
    ReservedName { kind: &'static str, name: String },
    #[error("cannot use layer label {0:?}: labels starting with \"pebble-\" are reserved")]
    ReservedLabel(String),
    #[error("invalid layer file name {0:?}: must look like 001-base-layer.yaml")]
    FileName(String),
    #[error("plan must define \"command\" for service {0:?}")]
    MissingCommand(String),
    #[error("plan service {service:?} command invalid: {error}")]
    BadCommand { service: String, error: String },
    #[error("plan check {0:?} must specify an http, tcp, or exec check")]
    NoCheckType(String),
    #[error("plan check {0:?} must specify only one of http, tcp, or exec check")]
    ManyCheckTypes(String),
    #[error("plan check {check:?} {problem}")]
    BadCheck { check: String, problem: String },
    #[error("plan service {service:?} {problem}")]
    BadService { service: String, problem: String },
    #[error("plan log target {target:?} {problem}")]
    BadLogTarget { target: String, problem: String },
    #[error("services in before/after loop: {0}")]
    Loop(String),
    #[error("service {service:?} {relation} unknown service {other:?}")]
    UnknownService {
        service: String,
        relation: &'static str,
        other: String,
    },
}

impl Layer {
    /// Parses one layer's YAML. Entries must say how they override.
    pub fn parse(order: u32, label: &str, yaml: &str) -> Result<Layer, LayerError> {
        let doc: LayerDoc = if yaml.trim().is_empty() {
            LayerDoc::default()
        } else {
            serde_saphyr::from_str(yaml).map_err(|e| {
                let loc = e.location();
                LayerError::Parse {
                    label: label.to_string(),
                    message: e.without_snippet().to_string(),
                    line: loc.map(|l| l.line()),
                    column: loc.map(|l| l.column()),
                }
            })?
        };
        let layer = Layer {
            order,
            label: label.to_string(),
            doc,
        };
        layer.check_entries()?;
        Ok(layer)
    }

    fn check_entries(&self) -> Result<(), LayerError> {
        let missing = |kind, name: &String| LayerError::MissingOverride {
            label: self.label.clone(),
            kind,
            name: name.clone(),
        };
        for (name, s) in &self.doc.services {
            check_service_name(name)?;
            if s.override_.is_none() {
                return Err(missing("service", name));
            }
        }
        for (name, c) in &self.doc.checks {
            if c.override_.is_none() {
                return Err(missing("check", name));
            }
        }
        for (name, t) in &self.doc.log_targets {
            if t.override_.is_none() {
                return Err(missing("log target", name));
            }
        }
        Ok(())
    }
}

fn check_service_name(name: &str) -> Result<(), LayerError> {
    if name == "pebble" || name.starts_with('-') || name.is_empty() {
        return Err(LayerError::ReservedName {
            kind: "service",
            name: name.into(),
        });
    }
    Ok(())
}

/// Reads `001-base-layer.yaml` into (1, "base-layer"); `None` for files Pebble ignores.
pub fn parse_layer_file_name(file: &str) -> Result<Option<(u32, String)>, LayerError> {
    let Some(stem) = file.strip_suffix(".yaml") else {
        return Ok(None);
    };
    let bad = || LayerError::FileName(file.to_string());
    let (order, label) = stem.split_once('-').ok_or_else(bad)?;
    if order.len() != 3 || !order.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    if !valid_label(label) {
        return Err(bad());
    }
    Ok(Some((order.parse().map_err(|_| bad())?, label.to_string())))
}

/// `[a-z](?:-?[a-z0-9]){2,}`
pub fn valid_label(label: &str) -> bool {
    let b = label.as_bytes();
    if b.len() < 3 || !b[0].is_ascii_lowercase() || b[b.len() - 1] == b'-' {
        return false;
    }
    let mut prev_dash = false;
    let mut chunks = 0;
    for &c in &b[1..] {
        if c == b'-' {
            if prev_dash {
                return false;
            }
            prev_dash = true;
        } else if c.is_ascii_lowercase() || c.is_ascii_digit() {
            prev_dash = false;
            chunks += 1;
        } else {
            return false;
        }
    }
    chunks >= 2
}

impl Service {
    /// Pebble's `override: merge` for one service: set scalars replace, lists append,
    /// maps merge key by key.
    pub fn merge(&mut self, other: &Service) {
        macro_rules! take {
            ($($f:ident),*) => { $( if other.$f.is_some() { self.$f = other.$f.clone(); } )* };
        }
        take!(
            summary,
            description,
            command,
            startup,
            user,
            user_id,
            group,
            group_id,
            working_dir,
            on_success,
            on_failure,
            backoff_delay,
            backoff_factor,
            backoff_limit,
            kill_delay
        );
        self.after.extend(other.after.iter().cloned());
        self.before.extend(other.before.iter().cloned());
        self.requires.extend(other.requires.iter().cloned());
        for (k, v) in &other.environment {
            self.environment.insert(k.clone(), v.clone());
        }
        for (k, v) in &other.on_check_failure {
            self.on_check_failure.insert(k.clone(), *v);
        }
    }

    pub fn startup(&self) -> Startup {
        self.startup.unwrap_or_default()
    }
    pub fn on_success(&self) -> ServiceAction {
        self.on_success.unwrap_or(ServiceAction::Restart)
    }
    pub fn on_failure(&self) -> ServiceAction {
        self.on_failure.unwrap_or(ServiceAction::Restart)
    }
    pub fn backoff_delay(&self) -> Duration {
        self.backoff_delay
            .map(|d| d.0)
            .unwrap_or(DEFAULT_BACKOFF_DELAY)
    }
    pub fn backoff_factor(&self) -> f64 {
        self.backoff_factor.unwrap_or(DEFAULT_BACKOFF_FACTOR)
    }
    pub fn backoff_limit(&self) -> Duration {
        self.backoff_limit
            .map(|d| d.0)
            .unwrap_or(DEFAULT_BACKOFF_LIMIT)
    }
    pub fn kill_delay(&self) -> Duration {
        self.kill_delay.map(|d| d.0).unwrap_or(DEFAULT_KILL_DELAY)
    }
    /// The parsed command; only valid on a validated plan's services.
    pub fn parsed_command(&self) -> Result<Command, crate::command::CommandError> {
        Command::parse(self.command.as_deref().unwrap_or(""))
    }
}

impl Check {
    pub fn merge(&mut self, other: &Check) {
        macro_rules! take {
            ($($f:ident),*) => { $( if other.$f.is_some() { self.$f = other.$f.clone(); } )* };
        }
        take!(level, startup, period, timeout, threshold);
        if let Some(h) = &other.http {
            let mine = self.http.get_or_insert_with(Default::default);
            if h.url.is_some() {
                mine.url = h.url.clone();
            }
            mine.headers.extend(h.headers.clone());
        }
        if let Some(t) = &other.tcp {
            let mine = self.tcp.get_or_insert_with(Default::default);
            if t.port.is_some() {
                mine.port = t.port;
            }
            if t.host.is_some() {
                mine.host = t.host.clone();
            }
        }
        if let Some(e) = &other.exec {
            let mine = self.exec.get_or_insert_with(Default::default);
            macro_rules! take_e {
                ($($f:ident),*) => { $( if e.$f.is_some() { mine.$f = e.$f.clone(); } )* };
            }
            take_e!(
                command,
                service_context,
                user,
                user_id,
                group,
                group_id,
                working_dir
            );
            mine.environment.extend(e.environment.clone());
        }
    }

    pub fn period(&self) -> Duration {
        self.period.map(|d| d.0).unwrap_or(DEFAULT_CHECK_PERIOD)
    }
    /// The timeout, capped to the period as Pebble does.
    pub fn timeout(&self) -> Duration {
        self.timeout
            .map(|d| d.0)
            .unwrap_or(DEFAULT_CHECK_TIMEOUT)
            .min(self.period())
    }
    pub fn threshold(&self) -> u32 {
        self.threshold.unwrap_or(DEFAULT_CHECK_THRESHOLD)
    }
    pub fn startup(&self) -> Startup {
        self.startup.unwrap_or(Startup::Enabled)
    }
}

impl LogTarget {
    pub fn merge(&mut self, other: &LogTarget) {
        if other.type_.is_some() {
            self.type_ = other.type_.clone();
        }
        if other.location.is_some() {
            self.location = other.location.clone();
        }
        self.services.extend(other.services.iter().cloned());
        self.labels.extend(other.labels.clone());
    }
}

/// The combined plan: what the supervisor runs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    pub summary: Option<String>,
    pub description: Option<String>,
    pub services: IndexMap<String, Service>,
    pub checks: IndexMap<String, Check>,
    pub log_targets: IndexMap<String, LogTarget>,
}

fn combine_map<T: Clone>(
    into: &mut IndexMap<String, T>,
    from: &IndexMap<String, T>,
    how: impl Fn(&T) -> Option<Override>,
    merge: impl Fn(&mut T, &T),
) {
    for (name, entry) in from {
        match (how(entry), into.get_mut(name)) {
            (Some(Override::Merge), Some(existing)) => merge(existing, entry),
            _ => {
                into.insert(name.clone(), entry.clone());
            }
        }
    }
}

impl Plan {
    /// Combines layers in order (lowest first) without validating.
    pub fn combine<'a>(layers: impl IntoIterator<Item = &'a Layer>) -> Plan {
        let mut layers: Vec<&Layer> = layers.into_iter().collect();
        layers.sort_by_key(|l| l.order);
        let mut plan = Plan::default();
        for layer in layers {
            plan.apply(&layer.doc);
        }
        plan
    }

    /// Applies one layer document on top of this plan.
    pub fn apply(&mut self, doc: &LayerDoc) {
        if doc.summary.is_some() {
            self.summary = doc.summary.clone();
        }
        if doc.description.is_some() {
            self.description = doc.description.clone();
        }
        combine_map(
            &mut self.services,
            &doc.services,
            |s| s.override_,
            Service::merge,
        );
        combine_map(&mut self.checks, &doc.checks, |c| c.override_, Check::merge);
        combine_map(
            &mut self.log_targets,
            &doc.log_targets,
            |t| t.override_,
            LogTarget::merge,
        );
    }

    /// Combines and validates.
    pub fn from_layers<'a>(
        layers: impl IntoIterator<Item = &'a Layer>,
    ) -> Result<Plan, LayerError> {
        let plan = Plan::combine(layers);
        plan.validate()?;
        Ok(plan)
    }

    pub fn validate(&self) -> Result<(), LayerError> {
        for (name, s) in &self.services {
            check_service_name(name)?;
            let Some(command) = s.command.as_deref() else {
                return Err(LayerError::MissingCommand(name.clone()));
            };
            Command::parse(command).map_err(|e| LayerError::BadCommand {
                service: name.clone(),
                error: e.to_string(),
            })?;
            if let Some(f) = s.backoff_factor {
                if f < 1.0 {
                    return Err(LayerError::BadService {
                        service: name.clone(),
                        problem: format!("backoff-factor must be 1.0 or greater, not {f}"),
                    });
                }
            }
            if (s.group.is_some() || s.group_id.is_some())
                && s.user.is_none()
                && s.user_id.is_none()
            {
                return Err(LayerError::BadService {
                    service: name.clone(),
                    problem: "must specify user, not just group".into(),
                });
            }
            for (relation, others) in [
                ("requires", &s.requires),
                ("after", &s.after),
                ("before", &s.before),
            ] {
                for other in others {
                    if !self.services.contains_key(other) {
                        return Err(LayerError::UnknownService {
                            service: name.clone(),
                            relation,
                            other: other.clone(),
                        });
                    }
                }
            }
        }
        for (name, c) in &self.checks {
            let kinds = [c.http.is_some(), c.tcp.is_some(), c.exec.is_some()];
            match kinds.iter().filter(|k| **k).count() {
                0 => return Err(LayerError::NoCheckType(name.clone())),
                1 => {}
                _ => return Err(LayerError::ManyCheckTypes(name.clone())),
            }
            let bad = |problem: &str| LayerError::BadCheck {
                check: name.clone(),
                problem: problem.into(),
            };
            if c.period.is_some_and(|p| p.0.is_zero()) {
                return Err(bad("period must not be zero"));
            }
            if c.timeout.is_some_and(|p| p.0.is_zero()) {
                return Err(bad("timeout must not be zero"));
            }
            if c.threshold == Some(0) {
                return Err(bad("threshold must be greater than zero"));
            }
            if let Some(h) = &c.http {
                if h.url.as_deref().unwrap_or("").is_empty() {
                    return Err(bad("must set http.url"));
                }
            }
            if let Some(t) = &c.tcp {
                if t.port.unwrap_or(0) == 0 {
                    return Err(bad("must set tcp.port"));
                }
            }
            if let Some(e) = &c.exec {
                let Some(cmd) = e.command.as_deref() else {
                    return Err(bad("must set exec.command"));
                };
                Command::parse(cmd).map_err(|err| bad(&format!("command invalid: {err}")))?;
                if let Some(ctx) = &e.service_context {
                    if !self.services.contains_key(ctx) {
                        return Err(bad(&format!("specifies unknown service-context {ctx:?}")));
                    }
                }
            }
        }
        for (name, s) in &self.services {
            for check in s.on_check_failure.keys() {
                if !self.checks.contains_key(check) {
                    return Err(LayerError::BadService {
                        service: name.clone(),
                        problem: format!("on-check-failure refers to unknown check {check:?}"),
                    });
                }
            }
        }
        for (name, t) in &self.log_targets {
            let bad = |problem: String| LayerError::BadLogTarget {
                target: name.clone(),
                problem,
            };
            match t.type_.as_deref() {
                Some("loki" | "opentelemetry" | "syslog") => {}
                Some(other) => return Err(bad(format!("has unsupported type {other:?}"))),
                None => return Err(bad("must have a type".into())),
            }
            if t.location.as_deref().unwrap_or("").is_empty() {
                return Err(bad("must have a location".into()));
            }
            for key in t.labels.keys() {
                if key.starts_with("pebble_") {
                    return Err(bad(format!(
                        "has label {key:?} with the reserved prefix \"pebble_\""
                    )));
                }
            }
            for svc in &t.services {
                let svc = svc.strip_prefix('-').unwrap_or(svc);
                if svc != "all" && !self.services.contains_key(svc) {
                    return Err(bad(format!("specifies unknown service {svc:?}")));
                }
            }
        }
        self.start_order(self.services.keys().cloned().collect::<Vec<_>>().as_slice())?;
        Ok(())
    }

    /// The names to start, with their transitive `requires`, in before/after order.
    pub fn start_order(&self, names: &[String]) -> Result<Vec<String>, LayerError> {
        let mut selected = BTreeSet::new();
        let mut stack: Vec<String> = names.to_vec();
        while let Some(n) = stack.pop() {
            if let Some(s) = self.services.get(&n) {
                if selected.insert(n.clone()) {
                    stack.extend(s.requires.iter().cloned());
                }
            }
        }
        self.order(&selected)
    }

    /// The names to stop, with services that require them, in reverse order.
    pub fn stop_order(&self, names: &[String]) -> Result<Vec<String>, LayerError> {
        let mut selected: BTreeSet<String> = names
            .iter()
            .filter(|n| self.services.contains_key(*n))
            .cloned()
            .collect();
        loop {
            let before = selected.len();
            for (name, s) in &self.services {
                if s.requires.iter().any(|r| selected.contains(r)) {
                    selected.insert(name.clone());
                }
            }
            if selected.len() == before {
                break;
            }
        }
        let mut order = self.order(&selected)?;
        order.reverse();
        Ok(order)
    }

    /// Topological order over before/after among `selected`; ties in name order.
    fn order(&self, selected: &BTreeSet<String>) -> Result<Vec<String>, LayerError> {
        let names: Vec<&str> = selected.iter().map(String::as_str).collect();
        let index = |n: &str| names.binary_search(&n).ok();
        // succ[a] holds b when a must start before b.
        let mut succ: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); names.len()];
        for (i, name) in names.iter().enumerate() {
            let s = &self.services[*name];
            for a in s.after.iter().filter_map(|a| index(a)) {
                succ[a].insert(i);
            }
            for b in s.before.iter().filter_map(|b| index(b)) {
                succ[i].insert(b);
            }
        }
        let mut indeg = vec![0usize; names.len()];
        for next in &succ {
            for &b in next {
                indeg[b] += 1;
            }
        }
        let mut ready: BTreeSet<usize> = (0..names.len()).filter(|&i| indeg[i] == 0).collect();
        let mut out = Vec::new();
        while let Some(i) = ready.pop_first() {
            out.push(names[i].to_string());
            for &b in &succ[i] {
                indeg[b] -= 1;
                if indeg[b] == 0 {
                    ready.insert(b);
                }
            }
        }
        if out.len() != names.len() {
            let stuck: Vec<&str> = (0..names.len())
                .filter(|&i| indeg[i] > 0)
                .map(|i| names[i])
                .collect();
            return Err(LayerError::Loop(stuck.join(", ")));
        }
        Ok(out)
    }

    /// The plan as a layer document, for `plan` output.
    pub fn to_doc(&self) -> LayerDoc {
        let mut doc = LayerDoc {
            summary: self.summary.clone(),
            description: self.description.clone(),
            services: self.services.clone(),
            checks: self.checks.clone(),
            log_targets: self.log_targets.clone(),
        };
        for s in doc.services.values_mut() {
            s.override_ = Some(Override::Replace);
        }
        for c in doc.checks.values_mut() {
            c.override_ = Some(Override::Replace);
        }
        for t in doc.log_targets.values_mut() {
            t.override_ = Some(Override::Replace);
        }
        doc
    }

    pub fn to_yaml(&self) -> String {
        serde_saphyr::to_string(&self.to_doc()).unwrap_or_default()
    }
}
