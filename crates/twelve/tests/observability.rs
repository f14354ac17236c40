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

/// The value of an unlabelled or labelled sample in a Prometheus text page.
fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn flask_units_export_gunicorn_statsd_metrics_like_the_charms() {
    let t = Twelve::new();
    let src = t.example("flask");
    t.ok(&["deploy", src.to_str().unwrap(), "sf", "-n", "2"]);

    // Each unit has its own exporter, listed as the app's default job.
    let groups = eventually("a default target per unit", LONG, || {
        Some(sd(&t)).filter(|g| {
            g.iter()
                .filter(|g| g["labels"]["job"] == "sf" && g["labels"]["framework"] == "flask")
                .count()
                == 2
        })
    });
    let mut targets: Vec<(String, String)> = groups
        .iter()
        .filter(|g| g["labels"]["job"] == "sf")
        .map(|g| {
            assert_eq!(g["labels"]["__metrics_path__"], "/metrics");
            (
                g["labels"]["unit"].as_str().unwrap().to_string(),
                g["targets"][0].as_str().unwrap().to_string(),
            )
        })
        .collect();
    targets.sort();
    assert_ne!(targets[0].1, targets[1].1, "one exporter per unit");
    for (unit, target) in &targets {
        assert_ne!(
            target,
            &format!("127.0.0.1:{}", t.port(unit)),
            "the exporter, not the app"
        );
    }

    // Requests straight to unit 0 are counted by unit 0's exporter.
    let port0 = t.port("sf/0");
    let exporter0: u16 = targets[0].1.rsplit(':').next().unwrap().parse().unwrap();
    const N: f64 = 5.0;
    for _ in 0..N as usize {
        let (code, _) = http_get(port0, "/").unwrap();
        assert_eq!(code, 200);
    }
    let (code, _) = http_get(port0, "/no-such-page").unwrap();
    assert_eq!(code, 404);
    let page = eventually("flask_requests to count the requests", LONG, || {
        let (code, page) = http_get(exporter0, "/metrics")?;
        (code == 200 && sample(&page, "flask_requests").is_some_and(|n| n >= N + 1.0))
            .then_some(page)
    });
    assert!(
        sample(&page, "flask_response_code{status=\"200\"}").is_some_and(|n| n >= N),
        "{page}"
    );
    assert_eq!(
        sample(&page, "flask_response_code{status=\"404\"}"),
        Some(1.0),
        "{page}"
    );
    assert!(
        page.contains("# TYPE flask_request_duration summary")
            && sample(&page, "flask_request_duration_count").is_some_and(|n| n >= N + 1.0),
        "{page}"
    );

    // Through the ingress too, on whichever unit serves.
    let before: f64 = targets
        .iter()
        .map(|(_, target)| {
            let port: u16 = target.rsplit(':').next().unwrap().parse().unwrap();
            http_get(port, "/metrics")
                .and_then(|(_, p)| sample(&p, "flask_requests"))
                .unwrap_or(0.0)
        })
        .sum();
    for _ in 0..4 {
        let (code, _) = via_ingress(&t, "sf", "/").unwrap();
        assert_eq!(code, 200);
    }
    eventually("the ingress requests counted", LONG, || {
        let total: f64 = targets
            .iter()
            .map(|(_, target)| {
                let port: u16 = target.rsplit(':').next().unwrap().parse().unwrap();
                http_get(port, "/metrics")
                    .and_then(|(_, p)| sample(&p, "flask_requests"))
                    .unwrap_or(0.0)
            })
            .sum();
        (total >= before + 4.0).then_some(())
    });

    // The app may push its own statsd metrics to the port it is told.
    let env = app_env(port0);
    assert_eq!(env["STATSD_HOST"], "localhost");
    let statsd_port: u16 = env["STATSD_PORT"].as_str().unwrap().parse().unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.send_to(b"orders.created:3|c|#shop:eu", ("127.0.0.1", statsd_port))
        .unwrap();
    eventually("the app's own metric", LONG, || {
        let (_, page) = http_get(exporter0, "/metrics")?;
        (sample(&page, "orders_created{shop=\"eu\"}") == Some(3.0)).then_some(())
    });

    // The exporter reads what the app sends: it runs as the app's user, not as root.
    if is_root() {
        let listen = format!("127.0.0.1:{statsd_port}");
        let uid = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .find_map(|e| {
                let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                (cmd.contains("statsd-exporter") && cmd.contains(&listen)).then_some(())?;
                let status = std::fs::read_to_string(e.path().join("status")).ok()?;
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("Uid:"))?
                    .split_whitespace()
                    .next()?
                    .parse::<u32>()
                    .ok()
            })
            .expect("the unit's statsd exporter process");
        assert!(
            (590_000..=599_999).contains(&uid),
            "the exporter runs as the app's own user, not {uid}"
        );
    }
}

#[test]
fn the_metrics_port_option_moves_each_units_metrics_to_a_port_of_its_own() {
    let t = Twelve::new();
    let src = t.example("go");
    t.ok(&["deploy", src.to_str().unwrap(), "mp", "-n", "2"]);
    let targets = |t: &Twelve| -> Option<Vec<(String, u16)>> {
        let mut out = vec![];
        for g in sd(t).iter().filter(|g| g["labels"]["job"] == "mp") {
            let unit = g["labels"]["unit"].as_str()?.to_string();
            let port = g["targets"][0].as_str()?.rsplit(':').next()?.parse().ok()?;
            out.push((unit, port));
        }
        out.sort();
        (out.len() == 2).then_some(out)
    };
    let before = eventually("a default target per unit", LONG, || targets(&t));
    for (unit, port) in &before {
        assert_eq!(*port, t.port(unit), "metrics on the app port by default");
    }

    t.ok(&["config", "mp", "metrics-port=9000"]);
    let after = eventually("targets on ports of their own, answering", LONG, || {
        let after = targets(&t)?;
        for (unit, port) in &after {
            if *port == t.try_port(unit)? {
                return None;
            }
            let (code, page) = http_get(*port, "/metrics")?;
            if code != 200 || !page.contains("go_example_up 1") {
                return None;
            }
        }
        Some(after)
    });
    assert_ne!(after[0].1, after[1].1, "each unit has its own metrics port");
    assert!(after.iter().all(|(_, p)| *p != 9000), "{after:?}");
}

/// `twelve init` then `twelve deploy`: the FastAPI, Go and Express templates serve real
/// metrics where their default Prometheus job scrapes them (a 200 with a series, not a
/// 404). FastAPI under paas-charm 1.12's rules (metrics on the app's port); Go under
/// main's with `metrics-path: /stats` (it reads `METRICS_PATH`, not `APP_METRICS_PATH`);
/// Express under main's (`METRICS_PORT` is a port of its own, 9464 in the charm).
#[test]
fn init_templates_serve_metrics_where_prometheus_scrapes() {
    let t = Twelve::new();
    let cases = [
        ("fastapi-framework", "tf", None),
        ("go-framework", "tg", Some("metrics-path: /stats\n")),
        ("expressjs-framework", "te", Some("port: 8080\n")),
    ];
    for (profile, name, paas_config) in cases {
        let dir = t.home.path().join("src").join(name);
        std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
        t.ok(&[
            "init",
            "--profile",
            profile,
            "--name",
            name,
            dir.to_str().unwrap(),
        ]);
        if let Some(pc) = paas_config {
            std::fs::write(dir.join("charm/paas-config.yaml"), pc).unwrap();
        }
        t.ok(&["deploy", dir.to_str().unwrap(), name]);
    }
    for (profile, name, paas_config) in cases {
        let group = eventually(&format!("{name}'s default target"), LONG, || {
            sd(&t)
                .into_iter()
                .find(|g| g["labels"]["app"] == name && g["labels"]["job"] == name)
        });
        let target = group["targets"][0].as_str().unwrap();
        let port: u16 = target.rsplit(':').next().unwrap().parse().unwrap();
        let path = group["labels"]["__metrics_path__"].as_str().unwrap();
        let app_port = t.port(&format!("{name}/0"));
        match paas_config {
            Some(pc) if pc.starts_with("metrics-path") => assert_eq!(path, "/stats"),
            Some(_) => assert_ne!(port, app_port, "{profile}: metrics on a port of their own"),
            None => assert_eq!(port, app_port, "{profile}: metrics on the app's port"),
        }
        let (code, body) = eventually(&format!("{profile}'s metrics"), LONG, || {
            http_get(port, path)
        });
        assert_eq!(code, 200, "{profile} {target}{path}: {body}");
        assert!(body.contains("app_requests_total"), "{profile}: {body}");
    }
}
