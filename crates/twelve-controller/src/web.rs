//! What the observability server (twelve-web: Prometheus SD, metrics, dashboard) shows:
//! a snapshot the reconciler rebuilds after every pass, and unit logs read on demand.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use twelve_charm::metrics::{scrape_groups, ScrapeUnit};
use twelve_pebble::client::Client as Pebble;
use twelve_web::{
    AppView, BoxFuture, ControllerMetrics, LogLine, Snapshot, Source, TargetGroup, UnitView,
};

use crate::controller::Controller;
use crate::model::AppRecord;

#[derive(Default)]
pub struct WebState {
    pub snapshot: RwLock<Snapshot>,
    /// Unit name -> supervisor directory, for logs.
    pub units: RwLock<HashMap<String, PathBuf>>,
    pub reconciles: AtomicU64,
    pub reconcile_micros_sum: AtomicU64,
    pub reconcile_micros_last: AtomicU64,
    pub migrations: AtomicU64,
    pub migration_failures: AtomicU64,
}

pub struct WebSource(pub Arc<WebState>);

impl Source for WebSource {
    fn snapshot(&self) -> Snapshot {
        self.0
            .snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn logs(&self, unit: &str, n: usize) -> BoxFuture<Vec<LogLine>> {
        let dir = self
            .0
            .units
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(unit)
            .cloned();
        let unit = unit.to_string();
        Box::pin(async move {
            let Some(dir) = dir else { return vec![] };
            let n = i64::try_from(n).unwrap_or(100);
            Pebble::for_dir(dir)
                .logs(&[], Some(n))
                .await
                .unwrap_or_default()
                .into_iter()
                .map(|e| LogLine {
                    time: e.time,
                    unit: unit.clone(),
                    service: e.service,
                    message: e.message,
                })
                .collect()
        })
    }
}

impl Controller {
    /// Prometheus targets of an app (the rule is twelve-charm's `scrape_groups`).
    fn scrape_groups(&self, app: &AppRecord) -> Vec<TargetGroup> {
        let Ok(project) = self.project(app) else {
            return vec![];
        };
        let Some(first) = app.units.first() else {
            return vec![];
        };
        let Ok((plan, _)) = self.unit_plan(app, first.number) else {
            return vec![];
        };
        // Units keep a metrics port ready; the plan says whether metrics are served there
        // or on the app port (the same decision for every unit of the app).
        let own_port = plan.ports.metrics != plan.ports.app;
        let units: Vec<ScrapeUnit> = app
            .units
            .iter()
            .map(|u| ScrapeUnit {
                number: u.number,
                host: "127.0.0.1".into(),
                metrics_port: match own_port {
                    true => u.metrics_port.unwrap_or(u.app_port),
                    false => u.app_port,
                },
            })
            .collect();
        scrape_groups(
            &project,
            &app.name,
            app.current_release,
            &units,
            plan.scheduler_unit,
            &plan.ports.metrics_path,
        )
        .into_iter()
        .map(|g| TargetGroup {
            targets: g.targets,
            labels: g.labels,
        })
        .collect()
    }

    /// Rebuilds the snapshot the observability server shows.
    pub(crate) async fn refresh_web(&self, apps: &[AppRecord]) {
        let statuses = self
            .statuses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut views = vec![];
        let mut dirs = HashMap::new();
        for app in apps {
            let Some(st) = statuses.get(&app.name) else {
                continue;
            };
            for u in &st.units {
                dirs.insert(u.name.clone(), PathBuf::from(&u.supervisor));
            }
            views.push(AppView {
                name: app.name.clone(),
                framework: app.framework.clone(),
                status: st.status.clone(),
                message: st.message.clone(),
                url: st.url.clone(),
                release: st.release,
                units: st
                    .units
                    .iter()
                    .map(|u| UnitView {
                        name: u.name.clone(),
                        status: u.status.clone(),
                        message: u.message.clone(),
                        address: u.address.clone(),
                        leader: u.leader,
                        scheduler: u.scheduler,
                        restarts: 0,
                    })
                    .collect(),
                relations: st
                    .integrations
                    .iter()
                    .map(|i| format!("{}:{}", i.endpoint, i.provider))
                    .collect(),
                scrape: self.scrape_groups(app),
                requests_per_second: None,
            });
        }
        let w = &self.web;
        let micros = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64 / 1e6;
        let snapshot = Snapshot {
            apps: views,
            controller: ControllerMetrics {
                reconcile_seconds_last: micros(&w.reconcile_micros_last),
                reconcile_seconds_sum: micros(&w.reconcile_micros_sum),
                reconciles_total: w.reconciles.load(Ordering::Relaxed),
                migrations_total: w.migrations.load(Ordering::Relaxed),
                migration_failures_total: w.migration_failures.load(Ordering::Relaxed),
            },
            ingress_metrics: twelve_ingress::client::get_metrics(
                &self.home.root.join("ingress/ingress.sock"),
            )
            .await
            .ok(),
            services: self.service_views(),
            certificates: self.certificate_views(),
        };
        *w.snapshot.write().unwrap_or_else(|e| e.into_inner()) = snapshot;
        *w.units.write().unwrap_or_else(|e| e.into_inner()) = dirs;
    }

    /// Starts the observability server on `TWELVE_WEB_ADDR` (default 127.0.0.1:9180) and
    /// writes the address it got to `TWELVE_HOME/web.addr`. It answers loopback `Host`
    /// names, and any other with the token of `TWELVE_HOME/web-token`.
    pub(crate) async fn start_web(self: &Arc<Self>) {
        let addr = std::env::var("TWELVE_WEB_ADDR")
            .unwrap_or_else(|_| twelve_web::DEFAULT_ADDR.to_string());
        let listener = match tokio::net::TcpListener::bind(&addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("[controller] the observability server cannot listen on {addr}: {e} (set TWELVE_WEB_ADDR)");
                return;
            }
        };
        if let Ok(local) = listener.local_addr() {
            let _ = std::fs::write(self.home.root.join("web.addr"), local.to_string());
            eprintln!("[controller] observability on http://{local}/ (dashboard), /sd, /metrics");
        }
        // Loopback Host names, or any with the token (`twelve dashboard --token`).
        let access = match self.home.web_token() {
            Ok(token) => twelve_web::Access::with_token(token),
            Err(e) => {
                eprintln!(
                    "[controller] cannot keep a dashboard token in {}: {e}; the observability server answers localhost only",
                    self.home.web_token_file().display()
                );
                twelve_web::Access::local_only()
            }
        };
        let source: Arc<dyn Source> = Arc::new(WebSource(self.web.clone()));
        let me = self.clone();
        tokio::spawn(async move {
            let stop = async move { me.web_stop.notified().await };
            let _ = twelve_web::serve_with(listener, source, access, stop).await;
        });
    }
}
