//! Rolling changes: pushing a unit's new plan (one unit at a time behind the ingress),
//! replacing a lone serving unit beside its old incarnation (surge), and rolling back a
//! change whose units never become ready.

use std::time::Duration;

use twelve_charm::{ServicesAction, UnitPlan};
use twelve_layer::{LayerDoc, LogTarget, Override, Startup};
use twelve_pebble::client::Client as Pebble;

use crate::controller::{log, ready_timeout, Controller};
use crate::model::*;
use crate::substrate::HostUnit;

impl Controller {
    /// Pushes the unit's plan to its supervisor when it changed (or the supervisor
    /// restarted). A unit in rotation leaves it first and comes back once ready, so units
    /// restart one at a time behind the ingress.
    pub(crate) async fn apply(
        &self,
        app_rec: &AppRecord,
        apps: &[AppRecord],
        unit: u32,
        plan: &UnitPlan,
        host: &HostUnit,
    ) -> Result<(), String> {
        let app = app_rec.name.as_str();
        let dir = app_rec.unit_dir(&self.home, unit);
        let pebble = Pebble::for_dir(&dir);
        let boot = pebble
            .system_info()
            .await
            .map_err(|e| e.to_string())?
            .daemon_id;
        let layer = serde_saphyr::to_string(&host.layer).map_err(|e| e.to_string())?;
        let key = format!("{app}/{unit}");
        let previous = self
            .pushed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .filter(|(b, _)| *b == boot)
            .map(|(_, l)| l.clone());
        if previous.as_deref() == Some(layer.as_str()) {
            return Ok(());
        }
        match plan.status.services {
            ServicesAction::Hold => return Ok(()),
            ServicesAction::Run | ServicesAction::Stop => {}
        }
        let mut push = host.layer.clone();
        disable_dropped_log_targets(&pebble, &mut push).await;
        let only_log_targets = previous.is_some_and(|p| {
            matches!(
                (without_log_targets(&p), without_log_targets(&layer)),
                (Some(a), Some(b)) if a == b
            )
        });
        if only_log_targets {
            // Only where the logs go changed: the supervisor takes it live, nothing restarts.
            let targets = LayerDoc {
                log_targets: push.log_targets,
                ..Default::default()
            };
            let yaml = serde_saphyr::to_string(&targets).map_err(|e| e.to_string())?;
            pebble
                .add_layer("twelve", &yaml, true)
                .await
                .map_err(|e| e.to_string())?;
            self.pushed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key, (boot, layer));
            return Ok(());
        }
        let push = serde_saphyr::to_string(&push).map_err(|e| e.to_string())?;
        self.unit_own_dirs(&dir)?;
        crate::substrate::write_unit_files(&host.files, host.app_user.as_ref())?;
        let serving = self
            .routes_pushed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(|t| t.apps.get(app))
            .is_some_and(|r| r.backends.iter().any(|b| b.unit == key));
        let others_ready = self
            .routes_pushed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(|t| t.apps.get(app))
            .is_some_and(|r| {
                r.backends
                    .iter()
                    .any(|b| b.unit != key && b.state == twelve_ingress::BackendState::Ready)
            });
        if serving && !others_ready && plan.status.services == ServicesAction::Run {
            // The only unit in rotation: start its replacement beside it instead.
            return self.surge(app_rec, apps, unit).await;
        }
        if serving {
            self.drain_unit(app_rec, unit, apps).await;
        }
        let pushed = pebble
            .add_layer("twelve", &push, true)
            .await
            .map_err(|e| e.to_string());
        if let Err(e) = pushed {
            self.undrain_unit(app, unit);
            return Err(e);
        }
        if plan.status.services == ServicesAction::Stop {
            let names: Vec<&str> = host.layer.services.keys().map(String::as_str).collect();
            let _ = pebble.stop(&names).await;
        } else if !serving {
            // Nothing is served from this unit yet: do not wait out the supervisor's okay
            // delay; the ready check says when it can take traffic.
            if let Err(e) = pebble.services_action_no_wait("replan", &[]).await {
                log(format!("{key}: replan: {e}"));
            }
        } else if let Err(e) = pebble.replan().await {
            // A service that exits at once is reported by its state; keep going.
            log(format!("{key}: replan: {e}"));
        }
        self.pushed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone(), (boot, layer));
        if serving {
            // Back in rotation only once the ready check passes; if it never does, the
            // rollout stops here and the app goes back to its last good state.
            let ready =
                plan.status.services != ServicesAction::Run || wait_ready(&pebble, host).await;
            self.undrain_unit(app, unit);
            // Back in the table before the next unit leaves it.
            self.push_routes(apps).await;
            if !ready {
                self.roll_back(app_rec, &key);
                return Err(format!(
                    "{key} did not become ready within {}s",
                    ready_timeout().as_secs()
                ));
            }
        }
        Ok(())
    }

    /// Replaces the only serving unit without a gap: a new incarnation on new ports starts
    /// beside the old one, takes the traffic once ready, and the old one drains and stops.
    /// If the new one never becomes ready, it is stopped and the old one keeps serving.
    /// Restores the last good release and config after a change whose unit never became
    /// ready, and records why.
    fn roll_back(&self, app_rec: &AppRecord, unit: &str) {
        let Some(good) = app_rec.last_good.clone() else {
            return;
        };
        if good.release == app_rec.current_release && good.config == app_rec.config {
            return;
        }
        let what = match (
            good.release == app_rec.current_release,
            good.config == app_rec.config,
        ) {
            (false, true) => format!("release {}", app_rec.current_release),
            (true, false) => "the new config".to_string(),
            _ => format!("release {} with the new config", app_rec.current_release),
        };
        let note = format!(
            "{what} did not become ready on {unit} within {}s; rolled back to release {} and its config",
            ready_timeout().as_secs(),
            good.release
        );
        log(format!("{}: {note}", app_rec.name));
        let _ = self.store.update_app(&app_rec.name, move |a| {
            a.current_release = good.release;
            a.config = good.config;
            a.rollback_note = Some(note);
            Ok(())
        });
        self.wake.notify_one();
    }

    async fn surge(
        &self,
        app_rec: &AppRecord,
        apps: &[AppRecord],
        unit: u32,
    ) -> Result<(), String> {
        let key = format!("{}/{unit}", app_rec.name);
        self.surging
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone());
        let result = self.surge_inner(app_rec, apps, unit).await;
        self.surging
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        result
    }

    async fn surge_inner(
        &self,
        app_rec: &AppRecord,
        apps: &[AppRecord],
        unit: u32,
    ) -> Result<(), String> {
        let key = format!("{}/{unit}", app_rec.name);
        let old = app_rec
            .units
            .iter()
            .find(|u| u.number == unit)
            .cloned()
            .ok_or("unit vanished")?;
        let (app_port, metrics_port, statsd_port) = self
            .allocate(|used| {
                let app_port = Self::allocate_port(used)?;
                let metrics_port = match old.metrics_port {
                    Some(_) => Some(Self::allocate_port(used)?),
                    None => None,
                };
                let statsd_port = match old.statsd_port {
                    Some(_) => Some(Self::allocate_udp_port(used)?),
                    None => None,
                };
                Ok((app_port, metrics_port, statsd_port))
            })
            .map_err(|e| e.message)?;
        let next = UnitRecord {
            number: unit,
            app_port,
            metrics_port,
            statsd_port,
            incarnation: old.incarnation + 1,
        };
        let mut rec2 = app_rec.clone();
        for u in rec2.units.iter_mut().filter(|u| u.number == unit) {
            *u = next.clone();
        }
        let (plan2, host2) = self.unit_plan(&rec2, unit)?;
        let dir2 = rec2.unit_dir(&self.home, unit);
        self.ensure_pebble(&dir2).await?;
        let pebble2 = Pebble::for_dir(&dir2);
        crate::substrate::write_unit_files(&host2.files, host2.app_user.as_ref())?;
        let layer2 = serde_saphyr::to_string(&host2.layer).map_err(|e| e.to_string())?;
        // A scheduler runs on one unit only: the new instance's waits until the old
        // instance has stopped.
        let mut held_layer = host2.layer.clone();
        let mut held = vec![];
        for (name, svc) in held_layer.services.iter_mut() {
            if twelve_charm::is_scheduler(name) && svc.startup == Some(Startup::Enabled) {
                svc.startup = Some(Startup::Disabled);
                held.push(name.clone());
            }
        }
        let first = serde_saphyr::to_string(&held_layer).map_err(|e| e.to_string())?;
        pebble2
            .add_layer("twelve", &first, true)
            .await
            .map_err(|e| e.to_string())?;
        if let Err(e) = pebble2.replan().await {
            log(format!("{key} (new): replan: {e}"));
        }
        if !wait_ready(&pebble2, &host2).await || plan2.status.services != ServicesAction::Run {
            self.stop_supervisor(&dir2).await;
            self.roll_back(app_rec, &key);
            return Err(format!("the new instance of {key} did not become ready within {}s; the old one keeps serving", ready_timeout().as_secs()));
        }
        let boot2 = pebble2
            .system_info()
            .await
            .map_err(|e| e.to_string())?
            .daemon_id;
        // Commit: the unit now lives in the new incarnation.
        let committed = next.clone();
        self.store
            .update_app(&app_rec.name, move |a| {
                for u in a.units.iter_mut().filter(|u| u.number == unit) {
                    *u = committed.clone();
                }
                Ok(())
            })
            .map_err(|e| e.to_string())??;
        self.pushed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone(), (boot2, layer2.clone()));
        // Switch traffic, then let the old instance finish what it has.
        let fresh: Vec<AppRecord> = self.store.apps().unwrap_or_else(|_| apps.to_vec());
        self.push_routes(&fresh).await;
        let old_addr = format!("127.0.0.1:{}", old.app_port);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            let busy = match twelve_ingress::client::get_inflight(
                &self.home.root.join("ingress/ingress.sock"),
            )
            .await
            {
                Ok(list) => list
                    .iter()
                    .any(|b| b.unit == key && b.addr.to_string() == old_addr && b.inflight > 0),
                Err(_) => false,
            };
            if !busy {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.stop_supervisor(&app_rec.unit_dir(&self.home, unit))
            .await;
        if !held.is_empty() {
            let names: Vec<&str> = held.iter().map(String::as_str).collect();
            let started = match pebble2.add_layer("twelve", &layer2, true).await {
                Ok(()) => pebble2.start(&names).await.map(|_| ()),
                Err(e) => Err(e),
            };
            if let Err(e) = started {
                // The next reconcile pass pushes the whole layer again.
                self.pushed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&key);
                log(format!("{key}: starting {}: {e}", held.join(", ")));
            }
        }
        log(format!(
            "{key} replaced beside its old instance (port {} -> {})",
            old.app_port, app_port
        ));
        Ok(())
    }
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

/// Waits until every check of the unit passes when run now and every enabled service is
/// running, and stays so for a moment (a gunicorn whose workers cannot boot accepts
/// connections for a second before it exits), or `TWELVE_READY_TIMEOUT`.
async fn wait_ready(pebble: &Pebble, host: &HostUnit) -> bool {
    let checks: Vec<String> = host.layer.checks.keys().cloned().collect();
    let deadline = std::time::Instant::now() + ready_timeout();
    let healthy = |pebble: &Pebble| {
        let checks = checks.clone();
        let pebble = pebble.clone();
        async move {
            for c in &checks {
                if !matches!(pebble.refresh_check(c).await, Ok((_, None))) {
                    return None;
                }
            }
            let services = pebble.services(&[]).await.ok()?;
            let mut starts = vec![];
            for s in &services {
                if s.startup == "enabled" {
                    if s.current != "active" {
                        return None;
                    }
                    starts.push((s.name.clone(), s.pid));
                }
            }
            Some(starts)
        }
    };
    while std::time::Instant::now() < deadline {
        if let Some(first) = healthy(pebble).await {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            if healthy(pebble).await.as_ref() == Some(&first) {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}
