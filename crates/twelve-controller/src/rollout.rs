//! Carrying out the planner's steps (`planner.rs`): what each unit runs and reports is
//! gathered here, the decisions are the planner's. A change reaches serving units through
//! new incarnations started beside them all at once; traffic moves when every one of them
//! is ready and stable; a change that is not by its deadline is rolled back without
//! waiting on the broken incarnations.

use std::sync::Arc;
use std::time::{Duration, Instant};

use twelve_charm::UnitPlan;
use twelve_layer::{LayerDoc, LogTarget, Override, Startup};
use twelve_pebble::client::Client as Pebble;

use crate::api::AppStatus;
use crate::controller::{log, ready_timeout, Controller};
use crate::model::*;
use crate::planner::{self, Health, NewIncarnation, Stability, Step, SurgeDecision, UnitView};
use crate::substrate::HostUnit;

/// How long new incarnations must stay ready, their processes unchanged, before they take
/// traffic: a gunicorn whose workers cannot boot accepts connections for a second before
/// it exits, and an app may crash a few seconds after it is up (counted from ready, as an
/// app's own timers start when it is imported, just before it answers).
pub(crate) const STABILITY: Duration = Duration::from_millis(3000);

/// A unit's plan, as `reconcile_app` computed it.
pub(crate) type Planned = (UnitRecord, UnitPlan, HostUnit);

impl Controller {
    /// Brings the app's units to their plans, as the planner decides.
    pub(crate) async fn roll_out(
        self: &Arc<Self>,
        app: &AppRecord,
        apps: &[AppRecord],
        plans: &[Planned],
        migration: planner::Migration,
        status: &mut AppStatus,
    ) {
        let Some((_, first, _)) = plans.first() else {
            return;
        };
        let mut units = vec![];
        for (u, _, host) in plans {
            units.push(self.unit_view(app, u.number, host).await);
        }
        let view = planner::AppView {
            services: first.status.services,
            units,
            migration,
            can_roll_back: app
                .last_good
                .as_ref()
                .is_some_and(|g| g.release != app.current_release || g.config != app.config),
            surge_budget: self.surge_budget(app),
        };
        let steps = planner::plan_app(&view);
        // A surge gives units new ports, which units changed in place now must know.
        let surging: Vec<u32> = steps
            .iter()
            .find_map(|s| match s {
                Step::Surge(list) => Some(list.clone()),
                _ => None,
            })
            .unwrap_or_default();
        let next = if surging.is_empty() {
            None
        } else {
            match self.with_new_ports(app, &surging) {
                Ok(next) => Some(next),
                Err(e) => {
                    log(format!("{}: {e}", app.name));
                    return;
                }
            }
        };
        let replanned: Vec<Planned> = match &next {
            Some(next) => plans
                .iter()
                .filter_map(|(u, _, _)| {
                    let (plan, host) = self.unit_plan(next, u.number).ok()?;
                    Some((u.clone(), plan, host))
                })
                .collect(),
            None => vec![],
        };
        let plans = if replanned.len() == plans.len() {
            &replanned[..]
        } else {
            plans
        };
        for step in steps {
            let find = |n: u32| plans.iter().find(|(u, _, _)| u.number == n);
            match step {
                Step::Hold => {}
                Step::RollBack { reason } => {
                    let rec = RollbackRecord {
                        generation: app.generation,
                        reason,
                        ..Default::default()
                    };
                    status.rollback = self.roll_back(app, rec);
                }
                Step::LogTargets(list) => {
                    for (u, _, host) in list.iter().filter_map(|n| find(*n)) {
                        if let Err(e) = self.push_log_targets(app, u.number, host).await {
                            log(format!("{}/{}: log targets: {e}", app.name, u.number));
                        }
                    }
                }
                Step::Stop(list) => {
                    for (u, _, host) in list.iter().filter_map(|n| find(*n)) {
                        if let Err(e) = self.stop_in_place(app, apps, u.number, host).await {
                            log(format!("{}/{}: {e}", app.name, u.number));
                        }
                    }
                }
                Step::Restart(list) => {
                    for (u, _, host) in list.iter().filter_map(|n| find(*n)) {
                        if let Err(e) = self.restart_in_place(app, u.number, host).await {
                            log(format!("{}/{}: {e}", app.name, u.number));
                        }
                    }
                }
                // In the background: other apps reconcile meanwhile, and this one's
                // passes leave it alone until it is done (`surging`).
                Step::Surge(list) => {
                    if let Some(next) = &next {
                        self.spawn_surge(app, next.clone(), list)
                    }
                }
            }
        }
    }

    /// What the planner needs of one unit: does it run its plan, does it serve, is it ready.
    async fn unit_view(&self, app: &AppRecord, unit: u32, host: &HostUnit) -> UnitView {
        let dir = app.unit_dir(&self.home, unit);
        let key = format!("{}/{unit}", app.name);
        let layer = serde_saphyr::to_string(&host.layer).unwrap_or_default();
        let wanted = LayerDigest::of(&layer);
        let previous = self.running_layer(&key, &dir).await;
        let only_log_targets = previous.as_ref().is_some_and(|p| {
            p.sans_log_targets.is_some() && p.sans_log_targets == wanted.sans_log_targets
        });
        let serving = self
            .routes_pushed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(|t| t.apps.get(&app.name))
            .is_some_and(|r| {
                r.backends
                    .iter()
                    .any(|b| b.unit == key && b.state == twelve_ingress::BackendState::Ready)
            });
        let port = app
            .units
            .iter()
            .find(|u| u.number == unit)
            .map(|u| u.app_port);
        let (health, _) = unit_health(&Pebble::for_dir(&dir), host, port).await;
        UnitView {
            number: unit,
            stale: previous.as_ref().map(|p| &p.full) != Some(&wanted.full),
            only_log_targets,
            serving,
            health,
        }
    }

    /// The layer the unit's supervisor runs, as pushed by this controller or an earlier
    /// one (its digests are kept in the unit directory, valid while the same supervisor
    /// runs; never the layer itself, which holds secrets).
    async fn running_layer(&self, key: &str, dir: &std::path::Path) -> Option<LayerDigest> {
        let boot = Pebble::for_dir(dir).system_info().await.ok()?.daemon_id;
        let known = self
            .pushed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .filter(|(b, _)| *b == boot)
            .map(|(_, l)| LayerDigest::of(l));
        if known.is_some() {
            return known;
        }
        let text = std::fs::read_to_string(dir.join(PUSHED_FILE)).ok()?;
        let mut lines = text.lines();
        (lines.next()? == boot).then_some(())?;
        Some(LayerDigest {
            full: lines.next()?.to_string(),
            sans_log_targets: lines.next().filter(|l| !l.is_empty()).map(str::to_string),
        })
    }

    fn remember_pushed(&self, key: &str, dir: &std::path::Path, boot: String, layer: String) {
        let d = LayerDigest::of(&layer);
        let _ = std::fs::write(
            dir.join(PUSHED_FILE),
            format!(
                "{boot}\n{}\n{}\n",
                d.full,
                d.sans_log_targets.unwrap_or_default()
            ),
        );
        self.pushed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_string(), (boot, layer));
    }

    async fn push_log_targets(
        &self,
        app: &AppRecord,
        unit: u32,
        host: &HostUnit,
    ) -> Result<(), String> {
        let dir = app.unit_dir(&self.home, unit);
        let pebble = Pebble::for_dir(&dir);
        let boot = pebble
            .system_info()
            .await
            .map_err(|e| e.to_string())?
            .daemon_id;
        let mut push = host.layer.clone();
        disable_dropped_log_targets(&pebble, &mut push).await;
        let targets = LayerDoc {
            log_targets: push.log_targets,
            ..Default::default()
        };
        let yaml = serde_saphyr::to_string(&targets).map_err(|e| e.to_string())?;
        pebble
            .add_layer("twelve", &yaml, true)
            .await
            .map_err(|e| e.to_string())?;
        let layer = serde_saphyr::to_string(&host.layer).map_err(|e| e.to_string())?;
        self.remember_pushed(&format!("{}/{unit}", app.name), &dir, boot, layer);
        Ok(())
    }

    /// Writes the unit's files and pushes its layer; returns the supervisor's boot id.
    async fn push_layer(&self, dir: &std::path::Path, host: &HostUnit) -> Result<String, String> {
        let pebble = Pebble::for_dir(dir);
        let boot = pebble
            .system_info()
            .await
            .map_err(|e| e.to_string())?
            .daemon_id;
        let mut push = host.layer.clone();
        disable_dropped_log_targets(&pebble, &mut push).await;
        let push = serde_saphyr::to_string(&push).map_err(|e| e.to_string())?;
        self.unit_own_dirs(dir)?;
        write_files(host)?;
        pebble
            .add_layer("twelve", &push, true)
            .await
            .map_err(|e| e.to_string())?;
        Ok(boot)
    }

    /// A unit that serves nothing takes its new plan in place; the ready check says when
    /// it joins the rotation.
    async fn restart_in_place(
        &self,
        app: &AppRecord,
        unit: u32,
        host: &HostUnit,
    ) -> Result<(), String> {
        let dir = app.unit_dir(&self.home, unit);
        let boot = self.push_layer(&dir, host).await?;
        if let Err(e) = Pebble::for_dir(&dir)
            .services_action_no_wait("replan", &[])
            .await
        {
            log(format!("{}/{unit}: replan: {e}", app.name));
        }
        let layer = serde_saphyr::to_string(&host.layer).map_err(|e| e.to_string())?;
        self.remember_pushed(&format!("{}/{unit}", app.name), &dir, boot, layer);
        Ok(())
    }

    /// A unit whose plan says stop leaves the rotation, then its services stop.
    async fn stop_in_place(
        &self,
        app: &AppRecord,
        apps: &[AppRecord],
        unit: u32,
        host: &HostUnit,
    ) -> Result<(), String> {
        let dir = app.unit_dir(&self.home, unit);
        self.drain_unit(app, unit, apps).await;
        let pushed = self.push_layer(&dir, host).await;
        let boot = match pushed {
            Ok(b) => b,
            Err(e) => {
                self.undrain_unit(&app.name, unit);
                return Err(e);
            }
        };
        let names: Vec<&str> = host.layer.services.keys().map(String::as_str).collect();
        let _ = Pebble::for_dir(&dir).stop(&names).await;
        self.undrain_unit(&app.name, unit);
        let layer = serde_saphyr::to_string(&host.layer).map_err(|e| e.to_string())?;
        self.remember_pushed(&format!("{}/{unit}", app.name), &dir, boot, layer);
        Ok(())
    }

    /// How many new incarnations may start beside the old ones: all of them, unless free
    /// memory cannot hold that many more of the app's units.
    fn surge_budget(&self, app: &AppRecord) -> usize {
        let n = app.units.len().max(1);
        let Some(available) = mem_available() else {
            return n;
        };
        let per_unit = app
            .units
            .iter()
            .filter_map(|u| {
                let dir = app.unit_dir(&self.home, u.number);
                let pid = std::fs::read_to_string(dir.join(".pebble.pid")).ok()?;
                tree_rss(pid.trim().parse().ok()?)
            })
            .max()
            .unwrap_or(0);
        if per_unit == 0 {
            return n;
        }
        // Keep a quarter of what is free for everything else.
        ((available * 3 / 4) / per_unit).clamp(1, n as u64) as usize
    }

    /// Starts a new incarnation of each serving unit beside it, waits until all are ready
    /// and stable, then moves traffic and stops the old ones; or rolls back at the deadline.
    fn spawn_surge(self: &Arc<Self>, app: &AppRecord, next: AppRecord, units: Vec<u32>) {
        let keys: Vec<String> = units.iter().map(|n| format!("{}/{n}", app.name)).collect();
        self.surging
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(keys.iter().cloned());
        let me = self.clone();
        let app = app.clone();
        tokio::spawn(async move {
            if let Err(Surged::Failed(e)) = me.surge_inner(&app, next, &units).await {
                log(format!("{}: {e}", app.name));
            }
            let mut surging = me.surging.lock().unwrap_or_else(|e| e.into_inner());
            for k in &keys {
                surging.remove(k);
            }
            drop(surging);
            me.wake.notify_one();
        });
    }

    /// Whether a surge of the app runs now.
    pub(crate) fn is_surging(&self, app: &str) -> bool {
        let prefix = format!("{app}/");
        self.surging
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|k| k.starts_with(&prefix))
    }

    /// The app as it will be once `units` live in new incarnations on new ports (reserved
    /// now): every new incarnation at once, so peers see each other's new addresses.
    fn with_new_ports(&self, app: &AppRecord, units: &[u32]) -> Result<AppRecord, String> {
        let mut next = app.clone();
        let olds: Vec<UnitRecord> = app
            .units
            .iter()
            .filter(|u| units.contains(&u.number))
            .cloned()
            .collect();
        let ports = self
            .allocate(|used| {
                let mut out = vec![];
                for old in &olds {
                    let app_port = Self::allocate_port(used)?;
                    let metrics_port = match old.metrics_port {
                        Some(_) => Some(Self::allocate_port(used)?),
                        None => None,
                    };
                    let statsd_port = match old.statsd_port {
                        Some(_) => Some(Self::allocate_udp_port(used)?),
                        None => None,
                    };
                    out.push((old.number, app_port, metrics_port, statsd_port));
                }
                Ok(out)
            })
            .map_err(|e| e.message)?;
        for (n, app_port, metrics_port, statsd_port) in &ports {
            for u in next.units.iter_mut().filter(|u| u.number == *n) {
                u.app_port = *app_port;
                u.metrics_port = *metrics_port;
                u.statsd_port = *statsd_port;
                u.incarnation += 1;
            }
        }
        Ok(next)
    }

    async fn surge_inner(
        &self,
        app: &AppRecord,
        next: AppRecord,
        units: &[u32],
    ) -> Result<(), Surged> {
        let started = Instant::now();
        let deadline = app
            .rollout_timeout
            .map(Duration::from_secs)
            .unwrap_or_else(ready_timeout);
        let olds: Vec<UnitRecord> = app
            .units
            .iter()
            .filter(|u| units.contains(&u.number))
            .cloned()
            .collect();
        let mut new: Vec<NewInc> = vec![];
        for n in units {
            match self.start_incarnation(&next, *n).await {
                Ok(inc) => new.push(inc),
                Err(e) => {
                    stop_now(&new);
                    return Err(Surged::Failed(format!(
                        "cannot start a new instance of {}/{n}: {e}",
                        app.name
                    )));
                }
            }
        }
        // Wait until every one is ready and stable, or the deadline.
        let mut stability: Vec<Stability> = vec![Stability::default(); new.len()];
        // For the incarnations whose ready checks only connect: the processes (fingerprint)
        // whose app has answered HTTP on its port (see `answers_http`). Until they have,
        // and again after any restart, the check proves nothing.
        let probe: Vec<bool> = new.iter().map(|inc| connect_only(&inc.host)).collect();
        let mut answered: Vec<Option<Vec<(String, i64)>>> = vec![None; new.len()];
        let decision = loop {
            // Every new incarnation looked at together (a check may take seconds to answer
            // on a loaded machine: one after the other, the first look would be stale by
            // the time of the decision), each look timed when its answer came. Timing them
            // all at the start of the round made a unit that turned ready late in a slow
            // round look ready for longer than it was, and a release that crashed every
            // 4 s passed a 3 s window.
            let looks = futures_util::future::join_all(new.iter().zip(&probe).zip(&answered).map(
                |((inc, &probe), answered)| {
                    let port = next
                        .units
                        .iter()
                        .find(|u| u.number == inc.unit)
                        .map(|u| u.app_port);
                    async move {
                        let (mut health, fingerprint) =
                            unit_health(&inc.pebble, &inc.host, port).await;
                        let mut answered = answered.clone();
                        let unproven = probe && answered.as_ref() != Some(&fingerprint);
                        if let (Health::Ready, true, Some(port)) = (&health, unproven, port) {
                            match answers_http(port).await {
                                Ok(()) => answered = Some(fingerprint.clone()),
                                Err(e) => {
                                    health = Health::Starting(format!(
                                        "port {port} accepts connections, but the app does not answer HTTP yet ({e})"
                                    ))
                                }
                            }
                        }
                        (
                            health,
                            fingerprint,
                            started.elapsed().as_millis() as u64,
                            answered,
                        )
                    }
                },
            ))
            .await;
            let mut seen = vec![];
            for (((inc, stab), (health, fingerprint, at_ms, now_answered)), answered) in new
                .iter()
                .zip(stability.iter_mut())
                .zip(looks)
                .zip(answered.iter_mut())
            {
                *answered = now_answered;
                stab.observe(at_ms, &health, fingerprint);
                seen.push(NewIncarnation {
                    unit: inc.unit,
                    health,
                    ready_for: stab.ready_for(at_ms),
                });
            }
            self.show_progress(app, &seen);
            match planner::judge_surge(&seen, started.elapsed(), deadline, STABILITY) {
                SurgeDecision::Wait => tokio::time::sleep(Duration::from_millis(150)).await,
                d => break d,
            }
        };
        if let SurgeDecision::RollBack { unit, reason } = decision {
            let inc = new.iter().find(|i| i.unit == unit);
            let (service, log_tail) = match inc {
                Some(i) => failing_service_logs(&i.pebble, &i.host).await,
                None => (String::new(), vec![]),
            };
            // The broken instances are told to stop; nobody waits for them (the next
            // pass removes what is left of them).
            stop_now(&new);
            let rec = RollbackRecord {
                generation: app.generation,
                reason: format!(
                    "{}/{unit} did not become ready within {}s: {reason}",
                    app.name,
                    deadline.as_secs()
                ),
                unit: format!("{}/{unit}", app.name),
                service,
                log_tail,
                release: 0,
            };
            return Err(match self.roll_back(app, rec) {
                Some(rec) => {
                    // Said at once (the next pass may first clean up what is left of the
                    // broken instances): the change was acted on, and went back.
                    if let Some(st) = self
                        .statuses
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get_mut(&app.name)
                    {
                        st.generation = app.generation;
                        st.release = Some(rec.release);
                        st.rollback = Some(rec);
                        for u in st.units.iter_mut() {
                            u.message.clear();
                        }
                    }
                    Surged::RolledBack
                }
                None => Surged::Failed(format!(
                    "{}/{unit} did not become ready within {}s ({reason}); the old instances keep serving",
                    app.name,
                    deadline.as_secs()
                )),
            });
        }
        // Commit: the units now live in their new incarnations, all in one write.
        let committed: Vec<UnitRecord> = next
            .units
            .iter()
            .filter(|u| units.contains(&u.number))
            .cloned()
            .collect();
        let stored = self.store.update_app(&app.name, move |a| {
            for u in a.units.iter_mut() {
                if let Some(c) = committed.iter().find(|c| c.number == u.number) {
                    *u = c.clone();
                }
            }
            Ok(())
        });
        if !matches!(stored, Ok(Ok(()))) {
            stop_now(&new);
            return Err(Surged::Failed(
                "cannot record the new instances; the old ones keep serving".into(),
            ));
        }
        for inc in &new {
            self.remember_pushed(
                &format!("{}/{}", app.name, inc.unit),
                &inc.dir,
                inc.boot.clone(),
                inc.layer.clone(),
            );
        }
        // Switch traffic, let the old instances finish what they have, then stop them.
        let fresh: Vec<AppRecord> = self.store.apps().unwrap_or_default();
        self.push_routes(&fresh).await;
        let old_addrs: Vec<String> = olds
            .iter()
            .map(|o| format!("127.0.0.1:{}", o.app_port))
            .collect();
        let drain_deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < drain_deadline {
            let busy = match twelve_ingress::client::get_inflight(
                &self.home.root.join("ingress/ingress.sock"),
            )
            .await
            {
                Ok(list) => list
                    .iter()
                    .any(|b| old_addrs.contains(&b.addr.to_string()) && b.inflight > 0),
                Err(_) => false,
            };
            if !busy {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let old_dirs: Vec<std::path::PathBuf> = olds
            .iter()
            .map(|o| self.home.unit_dir_at(&app.name, o.number, o.incarnation))
            .collect();
        // Tell them all first, so that they stop side by side.
        for d in &old_dirs {
            signal_supervisor(d);
        }
        for d in &old_dirs {
            self.stop_supervisor(d).await;
        }
        for inc in &new {
            inc.start_held().await;
        }
        log(format!(
            "{}: {} replaced beside their old instances in {:.1}s",
            app.name,
            units
                .iter()
                .map(|n| format!("{}/{n}", app.name))
                .collect::<Vec<_>>()
                .join(", "),
            started.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    /// Starts the supervisor of a unit's new incarnation (as `rec` records it) with the
    /// plan, schedulers held until the old incarnation has stopped.
    async fn start_incarnation(&self, rec: &AppRecord, unit: u32) -> Result<NewInc, String> {
        let (_, host) = self.unit_plan(rec, unit)?;
        let dir = rec.unit_dir(&self.home, unit);
        self.ensure_pebble(&dir).await?;
        let pebble = Pebble::for_dir(&dir);
        write_files(&host)?;
        let layer = serde_saphyr::to_string(&host.layer).map_err(|e| e.to_string())?;
        // A scheduler runs on one unit only: the new instance's waits until the old
        // instance has stopped.
        let mut held_layer = host.layer.clone();
        let mut held = vec![];
        for (name, svc) in held_layer.services.iter_mut() {
            if twelve_charm::is_scheduler(name) && svc.startup == Some(Startup::Enabled) {
                svc.startup = Some(Startup::Disabled);
                held.push(name.clone());
            }
        }
        let first = serde_saphyr::to_string(&held_layer).map_err(|e| e.to_string())?;
        pebble
            .add_layer("twelve", &first, true)
            .await
            .map_err(|e| e.to_string())?;
        if let Err(e) = pebble.services_action_no_wait("replan", &[]).await {
            log(format!("{}/{unit} (new): replan: {e}", rec.name));
        }
        let boot = pebble
            .system_info()
            .await
            .map_err(|e| e.to_string())?
            .daemon_id;
        let mut host = host;
        // Readiness is judged on what runs now (without the held schedulers).
        let full = std::mem::replace(&mut host.layer, held_layer);
        Ok(NewInc {
            unit,
            dir,
            pebble,
            host,
            full_layer: full,
            layer,
            boot,
            held,
        })
    }

    /// While new incarnations start, `status` says how far each one is.
    fn show_progress(&self, app: &AppRecord, seen: &[NewIncarnation]) {
        let mut statuses = self.statuses.lock().unwrap_or_else(|e| e.into_inner());
        let Some(shown) = statuses.get_mut(&app.name) else {
            return;
        };
        for n in seen {
            let name = format!("{}/{}", app.name, n.unit);
            let what = match (&n.health, n.ready_for) {
                (Health::Ready, Some(r)) if r >= STABILITY => "ready".to_string(),
                (Health::Ready, _) => "ready, checking it stays up".to_string(),
                (Health::Starting(_), _) => "starting".to_string(),
                (h, _) => h.reason().to_string(),
            };
            if let Some(u) = shown.units.iter_mut().find(|u| u.name == name) {
                u.message = format!("new instance: {what}");
            }
        }
    }

    /// Restores the last good release and config after a change that did not become
    /// ready, and records why. `None` when there is nothing to go back to.
    pub(crate) fn roll_back(
        &self,
        app_rec: &AppRecord,
        mut rec: RollbackRecord,
    ) -> Option<RollbackRecord> {
        let good = app_rec.last_good.clone()?;
        if good.release == app_rec.current_release && good.config == app_rec.config {
            return None;
        }
        let what = match (
            good.release == app_rec.current_release,
            good.config == app_rec.config,
        ) {
            (false, true) => format!("release {}", app_rec.current_release),
            (true, false) => "the new config".to_string(),
            _ => format!("release {} with the new config", app_rec.current_release),
        };
        rec.release = good.release;
        let note = format!(
            "{what} rolled back to release {} and its config: {}",
            good.release, rec.reason
        );
        log(format!("{}: {note}", app_rec.name));
        let stored = rec.clone();
        let _ = self.store.update_app(&app_rec.name, move |a| {
            a.current_release = good.release;
            a.config = good.config;
            a.rollback_note = Some(note);
            a.rollback = Some(stored);
            Ok(())
        });
        self.wake.notify_one();
        Some(rec)
    }
}

/// How a surge ended when it did not go live.
pub(crate) enum Surged {
    RolledBack,
    Failed(String),
}

/// A new incarnation being started.
struct NewInc {
    unit: u32,
    dir: std::path::PathBuf,
    pebble: Pebble,
    /// Its plan as started (schedulers held).
    host: HostUnit,
    full_layer: LayerDoc,
    /// The full layer's text, recorded as pushed once it is committed.
    layer: String,
    boot: String,
    held: Vec<String>,
}

impl NewInc {
    /// The schedulers held while the old incarnation ran.
    async fn start_held(&self) {
        if self.held.is_empty() {
            return;
        }
        let names: Vec<&str> = self.held.iter().map(String::as_str).collect();
        let started = match serde_saphyr::to_string(&self.full_layer) {
            Ok(full) => match self.pebble.add_layer("twelve", &full, true).await {
                Ok(()) => self
                    .pebble
                    .start(&names)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = started {
            log(format!(
                "unit {}: starting {}: {e}",
                self.unit,
                self.held.join(", ")
            ));
        }
    }
}

const PUSHED_FILE: &str = ".twelve-layer";

/// What identifies a layer without holding it (it holds the app's secrets): digests of
/// its text, and of its text without log targets.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LayerDigest {
    full: String,
    sans_log_targets: Option<String>,
}

impl LayerDigest {
    fn of(layer: &str) -> LayerDigest {
        use sha2::{Digest, Sha256};
        let hex = |t: &str| format!("{:x}", Sha256::digest(t.as_bytes()));
        LayerDigest {
            full: hex(layer),
            sans_log_targets: without_log_targets(layer).map(|t| hex(&t)),
        }
    }
}

fn write_files(host: &HostUnit) -> Result<(), String> {
    crate::substrate::write_unit_files(&host.files, host.app_user.as_ref())
}

/// SIGTERM to a unit supervisor, without waiting (it stops its services and exits).
fn signal_supervisor(dir: &std::path::Path) {
    let pid = std::fs::read_to_string(dir.join(".pebble.pid"))
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok());
    if let Some(pid) = pid {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}

fn stop_now(new: &[NewInc]) {
    for inc in new {
        signal_supervisor(&inc.dir);
    }
}

/// What a unit's supervisor reports now: every enabled service running, every check
/// passing when run now, and the socket listening on the unit's `port` its app user's;
/// with the services' pids (a restart changes them).
pub(crate) async fn unit_health(
    pebble: &Pebble,
    host: &HostUnit,
    port: Option<u16>,
) -> (Health, Vec<(String, i64)>) {
    let services = match pebble.services(&[]).await {
        Ok(s) => s,
        Err(e) => {
            return (
                Health::Down(format!("supervisor not answering: {e}")),
                vec![],
            )
        }
    };
    let mut pids = vec![];
    for s in &services {
        if s.startup != "enabled" {
            continue;
        }
        match s.current.as_str() {
            // The pid and how many times it was started: a restart changes the count even
            // when it is quick enough to be missed between two looks (or reuses the pid).
            "active" => pids.push((
                format!("{}#{}", s.name, s.start_count),
                s.pid.map(i64::from).unwrap_or(0),
            )),
            "backoff" => {
                return (
                    Health::Restarting(format!("service {} is restarting (backoff)", s.name)),
                    vec![],
                )
            }
            // Between a replan's stop and start.
            "inactive" | "starting" => {
                return (
                    Health::Starting(format!("service {} is starting", s.name)),
                    vec![],
                )
            }
            other => {
                return (
                    Health::Down(format!("service {} is {other}", s.name)),
                    vec![],
                )
            }
        }
    }
    // A check is "up" until it has failed `threshold` times, so a fresh one says nothing:
    // run the checks now and trust only that.
    for c in host.layer.checks.keys() {
        match pebble.refresh_check(c).await {
            Ok((_, None)) => {}
            Ok((_, Some(e))) => {
                return (
                    Health::Starting(format!("waiting for the app to be ready ({c}: {e})")),
                    vec![],
                )
            }
            Err(_) => {
                return (
                    Health::Starting("waiting for the app to be ready".into()),
                    vec![],
                )
            }
        }
    }
    // A check that connects to the port says only that *something* answers there: another
    // app, or another twelve's unit, may hold the port while this unit's server cannot
    // bind it. Ready means the unit's own server answers (the ingress checks the same
    // before it connects).
    if let (Some(port), Some(user)) = (port, &host.app_user) {
        if let Some(other) = foreign_listener(port, user.uid) {
            return (
                Health::Starting(format!(
                    "port {port} is held by a process of uid {other}, not by the app's user {} (uid {}): the app cannot listen there",
                    user.name, user.uid
                )),
                vec![],
            );
        }
    }
    (Health::Ready, pids)
}

/// Whether the unit's ready checks only connect (TCP, no HTTP check): then a gunicorn or
/// uvicorn master that has bound the port passes them before its workers have imported
/// the app, and the stability window would start before the app can serve.
fn connect_only(host: &HostUnit) -> bool {
    !host.layer.checks.values().any(|c| c.http.is_some())
}

/// One `GET /` on the app's port: any HTTP answer (even 404 or 500) means the app itself
/// serves there.
async fn answers_http(port: u16) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let probe = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| e.to_string())?;
        s.write_all(
            b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: twelve-rollout\r\nConnection: close\r\n\r\n",
        )
        .await
        .map_err(|e| e.to_string())?;
        let mut head = Vec::with_capacity(32);
        let mut buf = [0u8; 64];
        while head.len() < 12 {
            let n = s.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        if is_status_line(&head) {
            Ok(())
        } else {
            Err("no HTTP status line in its answer".to_string())
        }
    };
    tokio::time::timeout(Duration::from_secs(3), probe)
        .await
        .unwrap_or_else(|_| Err("no answer within 3 s".to_string()))
}

/// `HTTP/1.x NNN` at the start of `head`.
fn is_status_line(head: &[u8]) -> bool {
    head.len() >= 12
        && head.starts_with(b"HTTP/1.")
        && head[8] == b' '
        && head[9..12].iter().all(u8::is_ascii_digit)
}

/// The uid of a socket listening on 127.0.0.1:`port` (or a wildcard covering it) that is
/// not `uid`'s, if any.
fn foreign_listener(port: u16, uid: u32) -> Option<u32> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    twelve_ingress::listener_uids(addr)
        .ok()?
        .into_iter()
        .find(|&owner| owner != uid)
}

/// The service that is not running (else the one the ready check watches, else the
/// first) and its last 20 log lines.
async fn failing_service_logs(pebble: &Pebble, host: &HostUnit) -> (String, Vec<String>) {
    let services = pebble.services(&[]).await.unwrap_or_default();
    let name = services
        .iter()
        .find(|s| s.startup == "enabled" && s.current != "active")
        .map(|s| s.name.clone())
        .or_else(|| host.layer.services.keys().next().cloned())
        .unwrap_or_default();
    let lines = pebble
        .logs(&[name.as_str()], Some(20))
        .await
        .map(|entries| entries.iter().map(|e| e.message.clone()).collect())
        .unwrap_or_default();
    (name, lines)
}

/// A layer's text with its log-targets left out: two layers that differ only there need no
/// restart.
fn without_log_targets(layer: &str) -> Option<String> {
    let mut doc: LayerDoc = serde_saphyr::from_str(layer).ok()?;
    doc.log_targets.clear();
    serde_saphyr::to_string(&doc).ok()
}

/// Layers combine, so a log target that is no longer planned would stay: switch it off
/// (`services: [-all]`, as Pebble documents) unless it is off already.
async fn disable_dropped_log_targets(pebble: &Pebble, layer: &mut LayerDoc) {
    let Ok(current) = pebble.log_targets().await else {
        return;
    };
    for t in current {
        if !layer.log_targets.contains_key(&t.name) && !t.services.is_empty() {
            layer.log_targets.insert(
                t.name,
                LogTarget {
                    override_: Some(Override::Merge),
                    services: vec!["-all".into()],
                    ..Default::default()
                },
            );
        }
    }
}

/// `MemAvailable` in bytes.
fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The resident memory of a process and all its descendants, in bytes.
fn tree_rss(root: i32) -> Option<u64> {
    let mut parent = std::collections::HashMap::new();
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`: comm may hold spaces, so split after the `)`.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<i32>().ok());
        if let Some(ppid) = ppid {
            parent.insert(pid, ppid);
        }
    }
    let in_tree = |mut p: i32| {
        for _ in 0..64 {
            if p == root {
                return true;
            }
            match parent.get(&p) {
                Some(&pp) if pp > 0 => p = pp,
                _ => return false,
            }
        }
        false
    };
    let mut total = 0;
    for &pid in parent.keys() {
        if in_tree(pid) {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            if let Some(kb) = status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
            {
                total += kb * 1024;
            }
        }
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::foreign_listener;

    #[test]
    fn an_http_answer_starts_with_a_status_line() {
        assert!(super::is_status_line(b"HTTP/1.1 404 NOT FOUND\r\n"));
        assert!(super::is_status_line(b"HTTP/1.0 200 OK"));
        assert!(!super::is_status_line(b"SSH-2.0-OpenSSH"));
        assert!(!super::is_status_line(b"HTTP/1.1 2"));
        assert!(!super::is_status_line(b""));
    }

    #[tokio::test]
    async fn a_port_that_accepts_but_does_not_answer_http_is_not_serving() {
        // A bound, listening socket nobody accepts on: what a gunicorn master is until a
        // worker has imported the app.
        let quiet = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = quiet.local_addr().unwrap().port();
        assert!(super::answers_http(port).await.is_err());
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = server.local_addr().unwrap().port();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut c, _) = server.accept().await.unwrap();
            let mut buf = [0u8; 512];
            let _ = c.read(&mut buf).await;
            c.write_all(b"HTTP/1.1 500 INTERNAL SERVER ERROR\r\ncontent-length: 0\r\n\r\n")
                .await
                .unwrap();
        });
        assert_eq!(super::answers_http(port).await, Ok(()));
    }

    #[test]
    fn a_port_another_user_listens_on_is_foreign() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // SAFETY: geteuid cannot fail.
        let me = unsafe { libc::geteuid() };
        assert_eq!(foreign_listener(port, me), None);
        assert_eq!(foreign_listener(port, me + 1), Some(me));
        drop(listener);
        // Nothing listening: nothing foreign (the check says what there is).
        assert_eq!(foreign_listener(port, me + 1), None);
    }
}
