//! The service manager: the layer stack and plan, one driver per service, and the
//! operations (start, stop, restart, replan, autostart, exec, signal) the API runs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indexmap::IndexMap;
use nix::sys::signal::Signal;
use tokio::sync::mpsc;
use twelve_layer::{Layer, Plan, Service, Startup};

use crate::changes::{tasks_error, Changes};
use crate::checks::Checks;
use crate::logs::LogStore;
use crate::process::{self, IdentitySpec, Spec};
use crate::service::{self, Handle};
use crate::state::{Policy, State};
use crate::types::{ExecRequest, ServiceInfo};

pub struct Manager {
    inner: Mutex<Inner>,
    pub logs: Arc<LogStore>,
    pub changes: Arc<Changes>,
    pub checks: Checks,
    shutdown: mpsc::UnboundedSender<i32>,
    /// The uid the daemon runs as: it and root may change things.
    pub uid: u32,
    pub boot_id: String,
    /// `PID-STARTMILLIS`: unique to this run of the daemon.
    pub daemon_id: String,
}

struct Inner {
    layers: Vec<Layer>,
    plan: Arc<Plan>,
    services: BTreeMap<String, Handle>,
}

/// An error the API reports as a 400 (or with the given kind).
#[derive(Debug, Clone, PartialEq)]
pub struct OpError {
    pub message: String,
    pub kind: Option<&'static str>,
}

impl OpError {
    pub fn new(message: impl Into<String>) -> OpError {
        OpError {
            message: message.into(),
            kind: None,
        }
    }
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Splits `ordered` into lanes: services connected by `requires` share a lane and run
/// one after the other; lanes run side by side (Pebble's `createLanes`).
pub fn lanes(plan: &Plan, ordered: &[String]) -> Vec<Vec<String>> {
    let index: BTreeMap<&str, usize> = ordered
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let mut parent: Vec<usize> = (0..ordered.len()).collect();
    fn find(p: &mut [usize], mut i: usize) -> usize {
        while p[i] != i {
            p[i] = p[p[i]];
            i = p[i];
        }
        i
    }
    for (i, name) in ordered.iter().enumerate() {
        if let Some(s) = plan.services.get(name) {
            for r in &s.requires {
                if let Some(&j) = index.get(r.as_str()) {
                    let (a, b) = (find(&mut parent, i), find(&mut parent, j));
                    parent[a] = b;
                }
            }
        }
    }
    let mut groups: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    let mut first_seen: Vec<usize> = Vec::new();
    for (i, name) in ordered.iter().enumerate() {
        let root = find(&mut parent, i);
        if !groups.contains_key(&root) {
            first_seen.push(root);
        }
        groups.entry(root).or_default().push(name.clone());
    }
    first_seen
        .into_iter()
        .filter_map(|r| groups.remove(&r))
        .collect()
}

impl Manager {
    pub fn new(
        layers: Vec<Layer>,
        plan: Plan,
        logs: Arc<LogStore>,
        shutdown: mpsc::UnboundedSender<i32>,
    ) -> Arc<Manager> {
        Arc::new(Manager {
            inner: Mutex::new(Inner {
                layers,
                plan: Arc::new(plan),
                services: BTreeMap::new(),
            }),
            logs,
            changes: Arc::new(Changes::default()),
            checks: Checks::default(),
            shutdown,
            uid: nix::unistd::Uid::effective().as_raw(),
            boot_id: boot_id(),
            daemon_id: format!("{}-{}", std::process::id(), crate::timefmt::now_millis()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn plan(&self) -> Arc<Plan> {
        self.lock().plan.clone()
    }

    pub fn request_shutdown(&self, code: i32) {
        let _ = self.shutdown.send(code);
    }

    /// Adds a layer (in memory) and updates the plan; nothing is restarted.
    pub fn add_layer(
        self: &Arc<Self>,
        label: &str,
        yaml: &str,
        combine: bool,
    ) -> Result<(), OpError> {
        {
            let mut inner = self.lock();
            let (layers, plan) = crate::layers::add(&inner.layers, label, yaml, combine)
                .map_err(|e| OpError::new(e.to_string()))?;
            inner.layers = layers;
            inner.plan = Arc::new(plan);
        }
        self.plan_changed();
        Ok(())
    }

    /// Brings checks and log targets in line with the plan.
    pub fn plan_changed(self: &Arc<Self>) {
        let plan = self.plan();
        crate::checks::reconcile(self, &plan);
        self.logs.forwarder.reconcile(&plan);
    }

    fn handle(&self, name: &str) -> Option<Handle> {
        self.lock().services.get(name).cloned()
    }

    fn handle_or_new(&self, name: &str) -> Handle {
        let mut inner = self.lock();
        inner
            .services
            .entry(name.to_string())
            .or_insert_with(|| {
                service::spawn_driver(name, self.logs.clone(), self.shutdown.clone())
            })
            .clone()
    }

    pub fn service_infos(&self, names: &[String]) -> Vec<ServiceInfo> {
        let inner = self.lock();
        let mut all: BTreeSet<&String> = inner.plan.services.keys().collect();
        all.extend(inner.services.keys());
        all.into_iter()
            .filter(|n| names.is_empty() || names.contains(n))
            .map(|name| {
                let info = inner.services.get(name).map(|h| h.info());
                let startup = inner
                    .plan
                    .services
                    .get(name)
                    .map(|s| s.startup())
                    .unwrap_or_default();
                ServiceInfo {
                    name: name.clone(),
                    startup: startup.as_str().to_string(),
                    current: info
                        .as_ref()
                        .map(|i| i.state.status())
                        .unwrap_or(State::Initial.status())
                        .as_str()
                        .to_string(),
                    current_since: info
                        .as_ref()
                        .and_then(|i| i.since)
                        .map(crate::timefmt::format_time),
                    pid: info.as_ref().and_then(|i| i.pid),
                    start_count: info.as_ref().map(|i| i.start_count).unwrap_or(0),
                }
            })
            .collect()
    }

    /// The states of services that have a driver.
    pub fn states(&self) -> BTreeMap<String, State> {
        self.lock()
            .services
            .iter()
            .map(|(n, h)| (n.clone(), h.info().state))
            .collect()
    }

    /// Checks that each name is a service in the plan (or, with `running_ok`, one that
    /// still runs after leaving the plan).
    pub fn check_names(&self, names: &[String], running_ok: bool) -> Result<(), OpError> {
        let inner = self.lock();
        for n in names {
            let known = inner.plan.services.contains_key(n)
                || (running_ok && inner.services.contains_key(n));
            if !known {
                return Err(OpError {
                    message: format!("service \"{n}\" does not exist"),
                    kind: Some("not-found"),
                });
            }
        }
        Ok(())
    }

    /// The process spec for a service of the plan.
    fn spec_for(&self, name: &str) -> Result<(Spec, Policy, Service), String> {
        let plan = self.plan();
        let svc = plan
            .services
            .get(name)
            .ok_or_else(|| format!("service \"{name}\" does not exist"))?;
        let command = svc.parsed_command().map_err(|e| e.to_string())?;
        let identity = identity_of(svc).resolve()?;
        let env = process::build_env(&[&svc.environment], identity.as_ref());
        Ok((
            Spec {
                argv: command.argv(),
                env,
                working_dir: svc.working_dir.as_ref().map(PathBuf::from),
                identity,
            },
            Policy::of(svc),
            svc.clone(),
        ))
    }

    async fn start_one(self: &Arc<Self>, name: &str) -> Result<(), String> {
        let (spec, policy, config) = self.spec_for(name)?;
        self.logs.forwarder.set_env(name, &spec.env);
        self.handle_or_new(name).start(spec, policy, config).await
    }

    async fn stop_one(self: &Arc<Self>, name: &str) -> Result<(), String> {
        match self.handle(name) {
            Some(h) => h.stop().await,
            None => Ok(()),
        }
    }

    /// Runs `op` over each lane in parallel, in order within a lane; a failure ends its
    /// lane. Returns the failures as (task summary, error).
    async fn run_lanes(
        self: &Arc<Self>,
        lanes: Vec<Vec<String>>,
        starting: bool,
    ) -> Vec<(String, String)> {
        let mut set = tokio::task::JoinSet::new();
        for lane in lanes {
            let me = self.clone();
            set.spawn(async move {
                for name in lane {
                    let (verb, r) = if starting {
                        ("Start", me.start_one(&name).await)
                    } else {
                        ("Stop", me.stop_one(&name).await)
                    };
                    if let Err(e) = r {
                        return Some((format!("{verb} service \"{name}\""), e));
                    }
                }
                None
            });
        }
        let mut failures = Vec::new();
        while let Some(r) = set.join_next().await {
            if let Ok(Some(f)) = r {
                failures.push(f);
            }
        }
        failures.sort();
        failures
    }

    fn result(failures: Vec<(String, String)>) -> Result<(), String> {
        if failures.is_empty() {
            Ok(())
        } else {
            Err(tasks_error(&failures))
        }
    }

    /// Starts the services (with what they require), in order.
    pub async fn start(self: &Arc<Self>, names: &[String]) -> Result<(), String> {
        let plan = self.plan();
        let order = plan.start_order(names).map_err(|e| e.to_string())?;
        let lanes = lanes(&plan, &order);
        Self::result(self.run_lanes(lanes, true).await)
    }

    /// The live services among `names`, with those that require them, in stop order.
    fn stop_set(&self, names: &[String]) -> Result<Vec<String>, String> {
        let plan = self.plan();
        let states = self.states();
        let live = |n: &String| states.get(n).is_some_and(|s| s.is_live());
        let mut order = plan.stop_order(names).map_err(|e| e.to_string())?;
        // Services no longer in the plan can still be running: stop those first.
        let mut gone: Vec<String> = names
            .iter()
            .filter(|n| !plan.services.contains_key(*n))
            .cloned()
            .collect();
        gone.append(&mut order);
        gone.retain(live);
        Ok(gone)
    }

    pub async fn stop(self: &Arc<Self>, names: &[String]) -> Result<(), String> {
        let order = self.stop_set(names)?;
        let lanes = lanes(&self.plan(), &order);
        Self::result(self.run_lanes(lanes, false).await)
    }

    /// Stops the named services that are live, then starts them all again.
    pub async fn restart(self: &Arc<Self>, names: &[String]) -> Result<(), String> {
        let states = self.states();
        let plan = self.plan();
        let mut to_stop: Vec<String> = plan
            .stop_order(names)
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|n| names.contains(n))
            .collect();
        to_stop.retain(|n| states.get(n).is_some_and(|s| s.is_live()));
        let failures = self.run_lanes(lanes(&plan, &to_stop), false).await;
        if !failures.is_empty() {
            return Self::result(failures);
        }
        self.start(names).await
    }

    /// Enabled services of the plan.
    pub fn default_services(&self) -> Vec<String> {
        self.plan()
            .services
            .iter()
            .filter(|(_, s)| s.startup() == Startup::Enabled)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Restarts the services whose config changed since they started and starts the
    /// enabled ones that are not running. Nothing else is touched (services removed from
    /// the plan keep running, as in Pebble).
    pub async fn replan(self: &Arc<Self>) -> Result<(), String> {
        let plan = self.plan();
        let changed: Vec<String> = {
            let inner = self.lock();
            inner
                .services
                .iter()
                .filter_map(|(name, h)| {
                    let info = h.info();
                    let now = plan.services.get(name)?;
                    let live = matches!(
                        info.state,
                        State::Starting | State::Running | State::Backoff
                    );
                    (live && info.started_with.as_ref() != Some(now)).then(|| name.clone())
                })
                .collect()
        };
        let stop = self.stop_set(&changed)?;
        let failures = self.run_lanes(lanes(&plan, &stop), false).await;
        if !failures.is_empty() {
            return Self::result(failures);
        }
        let mut start = self.default_services();
        start.extend(stop);
        self.start(&start).await
    }

    /// Stops everything still running, in reverse dependency order (daemon shutdown).
    pub async fn stop_all(self: &Arc<Self>) -> Result<(), String> {
        let names: Vec<String> = self.states().into_keys().collect();
        self.stop(&names).await
    }

    pub async fn signal(&self, signal: Signal, names: &[String]) -> Result<(), OpError> {
        let mut errors = Vec::new();
        for name in names {
            let r = match self.handle(name) {
                Some(h) => h.signal(signal).await,
                None => Err(format!(
                    "cannot send signal to \"{name}\": service is not running"
                )),
            };
            if let Err(e) = r {
                errors.push(e);
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(OpError::new(errors.join("; ")))
        }
    }

    /// Dispatches a check going down to the services that list it.
    pub fn check_failed(&self, check: &str) {
        let plan = self.plan();
        for (name, svc) in &plan.services {
            if let Some(action) = svc.on_check_failure.get(check) {
                self.handle_or_new(name).check_failed(check, *action);
            }
        }
    }

    /// The spec for a one-off command (exec, exec checks), with its service context.
    pub fn context_spec(&self, ctx: ExecContext<'_>) -> Result<Spec, String> {
        let plan = self.plan();
        let svc = match ctx.service_context {
            Some(name) => Some(
                plan.services
                    .get(name)
                    .ok_or_else(|| format!("context service \"{name}\" not found"))?
                    .clone(),
            ),
            None => None,
        };
        let base = svc.as_ref().map(identity_of).unwrap_or_default();
        let identity = ctx.identity.or(&base).resolve()?;
        let empty = IndexMap::new();
        let service_env = svc.as_ref().map(|s| &s.environment).unwrap_or(&empty);
        let env = process::build_env(&[service_env, ctx.environment], identity.as_ref());
        let working_dir = ctx
            .working_dir
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                svc.as_ref()
                    .and_then(|s| s.working_dir.as_ref().map(PathBuf::from))
            });
        Ok(Spec {
            argv: ctx.argv,
            env,
            working_dir,
            identity,
        })
    }

    /// Runs a one-off command and returns its exit code and output.
    pub async fn exec(&self, req: ExecRequest) -> Result<process::Output, String> {
        if req.command.is_empty() {
            return Err("must specify command".into());
        }
        let timeout = match req.timeout.as_deref() {
            Some(t) if !t.is_empty() => Some(twelve_layer::parse_go_duration(t)?),
            _ => None,
        };
        let spec = self.context_spec(ExecContext {
            argv: req.command.clone(),
            service_context: req.service_context.as_deref(),
            environment: &req.environment,
            working_dir: req.working_dir.clone(),
            identity: IdentitySpec {
                user: req.user.clone(),
                user_id: req.user_id,
                group: req.group.clone(),
                group_id: req.group_id,
            },
        })?;
        let stdin = req.stdin.map(String::into_bytes);
        process::run_to_completion(&spec, stdin, timeout, process::MAX_OUTPUT_BYTES).await
    }

    /// The longest kill delay of the plan's services.
    pub fn max_kill_delay(&self) -> Duration {
        self.plan()
            .services
            .values()
            .map(|s| s.kill_delay())
            .max()
            .unwrap_or_default()
    }
}

pub struct ExecContext<'a> {
    pub argv: Vec<String>,
    pub service_context: Option<&'a str>,
    pub environment: &'a IndexMap<String, String>,
    pub working_dir: Option<String>,
    pub identity: IdentitySpec,
}

fn identity_of(s: &Service) -> IdentitySpec {
    IdentitySpec {
        user: s.user.clone(),
        user_id: s.user_id,
        group: s.group.clone(),
        group_id: s.group_id,
    }
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_group_services_by_requires() {
        let layer = Layer::parse(
            1,
            "base",
            "services:\n  a: {override: replace, command: a}\n  b: {override: replace, command: b, requires: [a], after: [a]}\n  c: {override: replace, command: c}\n  d: {override: replace, command: d, requires: [b]}\n",
        )
        .unwrap();
        let plan = Plan::from_layers([&layer]).unwrap();
        let order = plan
            .start_order(&["d".to_string(), "c".to_string()])
            .unwrap();
        let got = lanes(&plan, &order);
        assert_eq!(
            got,
            vec![
                vec!["a".to_string(), "b".to_string(), "d".to_string()],
                vec!["c".to_string()]
            ]
        );
    }
}
