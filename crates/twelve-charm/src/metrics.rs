//! Prometheus scrape targets of an app (reference/paas-charm.md §9): the framework's default
//! job on every unit, and the extra jobs of `paas-config.yaml`, with `*:PORT` on every unit
//! and `@scheduler:PORT` on the scheduler unit. Pure: the caller says where units listen.
//! A `*:PORT` naming the charm's metrics port (paas-config `metrics-port`, else the
//! framework's default) is each unit's own metrics port; any other port is used as is.

use std::collections::BTreeMap;

use twelve_project::Project;

/// Where one unit listens.
#[derive(Debug, Clone, PartialEq)]
pub struct ScrapeUnit {
    pub number: u32,
    pub host: String,
    /// The port the framework's metrics are served on (Flask and Django: the statsd
    /// exporter's).
    pub metrics_port: u16,
}

/// One Prometheus http_sd target group.
#[derive(Debug, Clone, PartialEq)]
pub struct ScrapeGroup {
    pub targets: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

/// The groups of `app`; each carries `app`, `unit`, `release`, `framework`, `job` and
/// `__metrics_path__` labels plus the job's own. The default job is on every unit's metrics
/// port: the app's own endpoint, or for Flask and Django the unit's statsd exporter (the
/// `statsd-exporter` service of its plan), as the charms' `*:9102` `/metrics`.
pub fn scrape_groups(
    project: &Project,
    app: &str,
    release: u32,
    units: &[ScrapeUnit],
    scheduler_unit: Option<u32>,
    metrics_path: &str,
) -> Vec<ScrapeGroup> {
    let labels = |unit: u32, job: &str, path: &str| {
        let mut l = BTreeMap::new();
        l.insert("app".to_string(), app.to_string());
        l.insert("unit".to_string(), format!("{app}/{unit}"));
        l.insert("release".to_string(), release.to_string());
        l.insert(
            "framework".to_string(),
            project.framework.name().to_string(),
        );
        l.insert("job".to_string(), job.to_string());
        l.insert("__metrics_path__".to_string(), path.to_string());
        l
    };
    let mut groups = vec![];
    for u in units {
        groups.push(ScrapeGroup {
            targets: vec![format!("{}:{}", u.host, u.metrics_port)],
            labels: labels(u.number, app, metrics_path),
        });
    }
    let Some(prom) = &project.paas_config.prometheus else {
        return groups;
    };
    let charm_metrics_port = project
        .paas_config
        .metrics_port
        .unwrap_or(project.framework.default_metrics().0);
    for job in &prom.scrape_configs {
        for sc in &job.static_configs {
            for target in &sc.targets {
                let mut add = |unit: u32, addr: String| {
                    let mut l = labels(unit, &job.job_name, &job.metrics_path);
                    l.extend(sc.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
                    groups.push(ScrapeGroup {
                        targets: vec![addr],
                        labels: l,
                    });
                };
                if let Some(port) = target.strip_prefix("*:") {
                    // The charm's metrics port is each unit's own metrics port here.
                    let theirs = port.parse::<u16>().ok() == Some(charm_metrics_port);
                    for u in units {
                        let port = if theirs {
                            u.metrics_port.to_string()
                        } else {
                            port.to_string()
                        };
                        add(u.number, format!("{}:{port}", u.host));
                    }
                } else if let Some(port) = target.strip_prefix("@scheduler:") {
                    if let Some(u) = units.iter().find(|u| Some(u.number) == scheduler_unit) {
                        add(u.number, format!("{}:{port}", u.host));
                    }
                } else if let Some(first) = units.first() {
                    add(first.number, target.clone());
                }
            }
        }
    }
    groups
}
