//! Prometheus service discovery, twelve's metrics and the dashboard, from a real controller.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const LONG: Duration = Duration::from_secs(90);

fn sd(t: &Twelve) -> Vec<Value> {
    serde_json::from_str::<Value>(&t.ok(&["metrics", "sd"]))
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn service_discovery_follows_units_and_paas_config_jobs() {
    let t = Twelve::new();
    let src = t.example("go");
    std::fs::write(
        src.join("charm/paas-config.yaml"),
        "prometheus:\n  scrape_configs:\n    - job_name: custom\n      metrics_path: /custom-metrics\n      static_configs:\n        - targets: ['*:9090']\n          labels: {team: web}\n    - job_name: sched\n      static_configs:\n        - targets: ['@scheduler:8082']\n",
    )
    .unwrap();
    t.ok(&["deploy", src.to_str().unwrap(), "obs", "-n", "3"]);
    let groups = eventually("7 target groups", LONG, || {
        Some(sd(&t)).filter(|g| g.len() == 7)
    });
    let default: Vec<&Value> = groups
        .iter()
        .filter(|g| g["labels"]["job"] == "obs")
        .collect();
    assert_eq!(default.len(), 3, "one default target per unit");
    for g in &default {
        assert_eq!(g["labels"]["__metrics_path__"], "/metrics");
        assert_eq!(g["labels"]["framework"], "go");
        assert_eq!(g["labels"]["app"], "obs");
        let unit = g["labels"]["unit"].as_str().unwrap();
        let port = t.port(unit);
        assert_eq!(
            g["targets"][0],
            format!("127.0.0.1:{port}"),
            "the unit's own port"
        );
    }
    let custom: Vec<&Value> = groups
        .iter()
        .filter(|g| g["labels"]["job"] == "custom")
        .collect();
    assert_eq!(custom.len(), 3);
    assert!(custom
        .iter()
        .all(|g| g["labels"]["team"] == "web"
            && g["labels"]["__metrics_path__"] == "/custom-metrics"));
    let sched: Vec<&Value> = groups
        .iter()
        .filter(|g| g["labels"]["job"] == "sched")
        .collect();
    assert_eq!(sched.len(), 1);
    assert_eq!(
        sched[0]["labels"]["unit"], "obs/0",
        "@scheduler is the scheduler unit"
    );

    // Scaling to one unit drops the stale targets.
    t.ok(&["scale-application", "obs", "1"]);
    eventually("3 target groups", LONG, || {
        Some(sd(&t)).filter(|g| g.len() == 3)
    });

    let metrics = t.ok(&["metrics", "show"]);
    assert!(
        metrics.contains("twelve_apps{status=\"active\"} 1") || metrics.contains("twelve_apps"),
        "{metrics}"
    );
    assert!(metrics.contains("twelve_reconcile"), "{metrics}");
    let config = t.ok(&["metrics", "prometheus-config"]);
    assert!(
        config.contains("http_sd_configs") && config.contains("/sd"),
        "{config}"
    );

    let url = t.ok(&["dashboard"]);
    let addr = url
        .trim()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    let (code, page) = http_get(port, "/").unwrap();
    assert_eq!(code, 200);
    assert!(
        page.contains("<html") || page.contains("<!doctype") || page.contains("<!DOCTYPE"),
        "{}",
        &page[..page.len().min(200)]
    );
    let (_, state) = http_get(port, "/api/state").unwrap();
    assert!(state.contains("\"obs\""), "{state}");
}
