//! A real Prometheus (Debian's `prometheus` package, installed by scripts/setup.sh, run
//! here as a child process, never as a service) pointed at twelve's service discovery
//! with the block `twelve metrics prometheus-config` prints. Through Prometheus' own HTTP
//! API: every unit's default job and the `paas-config.yaml` extra job are discovered and
//! up, their series carry twelve's labels, and scaling to one unit drops the others.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

const PROMETHEUS: &str = "/usr/bin/prometheus";
const PROMTOOL: &str = "/usr/bin/promtool";
const APP: &str = "go-example";
/// The extra job of examples/go/charm/paas-config.yaml.
const EXTRA: &str = "go-example-runtime";
const LONG: Duration = Duration::from_secs(120);

/// Prometheus as a child process, killed when the test ends.
struct Prometheus {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(config: &str) -> Prometheus {
        assert!(
            Path::new(PROMETHEUS).exists(),
            "{PROMETHEUS} is missing: scripts/setup.sh installs Debian's prometheus package \
             (apt-get install -y prometheus)"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("prometheus.yml");
        std::fs::write(&file, config).unwrap();
        promtool_check(&["check", "config"], &file);
        let port = free_port();
        let log = dir.path().join("prometheus.log");
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let p = Prometheus {
            child,
            port,
            log,
            _dir: dir,
        };
        eventually("Prometheus ready", LONG, || {
            http_get(p.port, "/-/ready").filter(|r| r.0 == 200)
        });
        p
    }

    /// GET an API path; its `data`.
    fn api(&self, path: &str) -> Option<Value> {
        let (code, body) = http_get(self.port, path)?;
        let v: Value = serde_json::from_str(&body).ok()?;
        (code == 200 && v["status"] == "success").then(|| v["data"].clone())
    }

    fn active_targets(&self) -> Vec<Value> {
        self.api("/api/v1/targets?state=active")
            .and_then(|d| d["activeTargets"].as_array().cloned())
            .unwrap_or_default()
    }

    fn query(&self, q: &str) -> Vec<Value> {
        let q: String = q
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        self.api(&format!("/api/v1/query?query={q}"))
            .and_then(|d| d["result"].as_array().cloned())
            .unwrap_or_default()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Active targets of the app's two jobs: (job, unit) -> (health, scrape URL).
fn app_targets(targets: &[Value]) -> BTreeMap<(String, String), (String, String)> {
    targets
        .iter()
        .filter(|t| t["labels"]["app"] == APP)
        .map(|t| {
            let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
            (
                (s(&t["labels"]["job"]), s(&t["labels"]["unit"])),
                (s(&t["health"]), s(&t["scrapeUrl"])),
            )
        })
        .collect()
}

#[test]
fn prometheus_discovers_every_unit_and_extra_job_and_follows_scaling() {
    let t = Twelve::new().with_fixed_web_addr();
    let src = t.example("go");
    let out = t.ok(&["deploy", src.to_str().unwrap(), "-n", "3"]);
    assert!(out.contains(&format!("{APP} is active")), "{out}");
    let units: Vec<String> = (0..3).map(|n| format!("{APP}/{n}")).collect();
    let ports: BTreeMap<&str, u16> = units.iter().map(|u| (u.as_str(), t.port(u))).collect();

    // The config twelve prints, refreshed and scraped every second instead of 30 s / 1 m.
    let rules = tempfile::tempdir().unwrap();
    let block = t.ok(&[
        "metrics",
        "prometheus-config",
        "--rules-dir",
        rules.path().to_str().unwrap(),
    ]);
    let web = t.web_addr();
    // The charm's cos_custom/prometheus_alert_rules, scoped to the app, where rule_files
    // says; promtool accepts the file (and the whole config, in Prometheus::start).
    let rule_file = rules.path().join(format!("{APP}.rules.yml"));
    let rules_text = std::fs::read_to_string(&rule_file).unwrap_or_else(|e| panic!("{e}\n{block}"));
    assert!(
        block.contains(&format!(
            "{}/*.rules.yml",
            rules.path().canonicalize().unwrap().display()
        )),
        "{block}"
    );
    assert!(
        rules_text.contains("go_example_up{app=\"go-example\"} == 0"),
        "{rules_text}"
    );
    promtool_check(&["check", "rules"], &rule_file);
    assert!(
        block.contains(&format!("http://{web}/sd")),
        "the SD URL of this controller:\n{block}"
    );
    assert!(block.contains("refresh_interval: 30s"), "{block}");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n{}",
        block.replace("refresh_interval: 30s", "refresh_interval: 1s")
    );
    let prom = Prometheus::start(&config);

    // 3 units x (default job + extra job), each scraping its own unit, all up.
    let mut expected = BTreeMap::new();
    for (unit, port) in &ports {
        let unit = unit.to_string();
        expected.insert(
            (APP.to_string(), unit.clone()),
            ("up".to_string(), format!("http://127.0.0.1:{port}/metrics")),
        );
        expected.insert(
            (EXTRA.to_string(), unit),
            (
                "up".to_string(),
                format!("http://127.0.0.1:{port}/metrics/runtime"),
            ),
        );
    }
    let mut last = BTreeMap::new();
    let found = eventually_or(LONG, || {
        let targets = prom.active_targets();
        last = app_targets(&targets);
        let controller_up = targets
            .iter()
            .any(|t| t["labels"]["job"] == "twelve-controller" && t["health"] == "up");
        (last == expected && controller_up).then_some(targets)
    });
    let targets = found.unwrap_or_else(|| {
        panic!(
            "Prometheus never had every target up.\nexpected {expected:#?}\nlast {last:#?}\n\
             targets {:#}\nlog:\n{}",
            Value::Array(prom.active_targets()),
            prom.log()
        )
    });
    for t in targets.iter().filter(|t| t["labels"]["app"] == APP) {
        // instance is the unit (the relabelling rule of the printed block).
        assert_eq!(t["labels"]["instance"], t["labels"]["unit"], "{t}");
        if t["labels"]["job"] == EXTRA {
            assert_eq!(t["labels"]["kind"], "runtime", "the job's own label: {t}");
        }
    }

    // up == 1 for all six, with twelve's labels on the stored series.
    let up = eventually("six up series", LONG, || {
        let r = prom.query(&format!("up{{app=\"{APP}\"}}"));
        (r.len() == 6).then_some(r)
    });
    for s in &up {
        let m = &s["metric"];
        assert_eq!(s["value"][1], "1", "{s}");
        assert_eq!(m["app"], APP, "{s}");
        assert_eq!(m["framework"], "go", "{s}");
        assert!(
            units.iter().any(|u| m["unit"] == u.as_str()),
            "unit label: {s}"
        );
        assert!(m["release"].as_str().is_some_and(|r| !r.is_empty()), "{s}");
        assert!(m["job"] == APP || m["job"] == EXTRA, "{s}");
        assert!(m.get("__metrics_path__").is_none(), "{s}");
    }
    // The app's own series came from both paths of every unit.
    for (q, job) in [
        ("go_example_up", APP),
        ("go_example_requests_total", APP),
        ("go_example_goroutines", EXTRA),
    ] {
        let r = eventually(&format!("{q} from 3 units"), LONG, || {
            let r = prom.query(q);
            (r.len() == 3).then_some(r)
        });
        assert!(r.iter().all(|s| s["metric"]["job"] == job), "{q}: {r:?}");
    }
    assert!(prom
        .query("go_example_up")
        .iter()
        .all(|s| s["value"][1] == "1"));

    // Prometheus loaded both custom rule files; the recording rule, scoped to the app,
    // evaluates over the three units.
    let groups: Vec<String> = eventually("the rule groups loaded", LONG, || {
        let g = prom.api("/api/v1/rules")?["groups"].as_array()?.clone();
        let names: Vec<String> = g
            .iter()
            .filter_map(|g| g["name"].as_str().map(str::to_string))
            .collect();
        (!names.is_empty()).then_some(names)
    });
    assert_eq!(
        groups,
        [
            "go-example_custom_go-example_alerts",
            "go-example_custom_requests_requests_alerts"
        ],
        "{}",
        prom.log()
    );
    eventually("the recording rule's series", LONG, || {
        let r = prom.query("go_example:requests:rate1m");
        (r.len() == 3 && r.iter().all(|s| s["metric"]["app"] == APP)).then_some(())
    });

    // Loki's ruler files and Grafana dashboards of the same charm.
    let loki = tempfile::tempdir().unwrap();
    t.ok(&["metrics", "loki-rules", loki.path().to_str().unwrap()]);
    let loki_rules =
        std::fs::read_to_string(loki.path().join("fake").join(format!("{APP}.yaml"))).unwrap();
    assert!(
        loki_rules.contains("count_over_time({app=\"go-example\"} |= \"error\" [5m])"),
        "{loki_rules}"
    );
    let dash = tempfile::tempdir().unwrap();
    let out = t.ok(&["metrics", "dashboards", dash.path().to_str().unwrap()]);
    let mut files: Vec<String> = std::fs::read_dir(dash.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        ["go-example-custom_go-example.json", "go-example-go.json"],
        "{out}"
    );
    for f in &files {
        let d: Value =
            serde_json::from_str(&std::fs::read_to_string(dash.path().join(f)).unwrap()).unwrap();
        let vars: Vec<&str> = d["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v["name"].as_str())
            .collect();
        assert!(
            vars.contains(&"prometheusds") && vars.contains(&"app"),
            "{f}: {vars:?}"
        );
        assert!(d["panels"].as_array().is_some_and(|p| !p.is_empty()), "{f}");
    }

    // Scaling to one unit: Prometheus drops two targets of each job at its next refresh.
    t.ok(&["scale-application", APP, "1"]);
    let remaining = eventually_or(LONG, || {
        last = app_targets(&prom.active_targets());
        let per_job = |job: &str| last.keys().filter(|(j, _)| j == job).count();
        (per_job(APP) == 1 && per_job(EXTRA) == 1 && last.len() == 2).then(|| last.clone())
    })
    .unwrap_or_else(|| {
        panic!(
            "Prometheus kept more than one target per job after scaling to 1: {last:#?}\nlog:\n{}",
            prom.log()
        )
    });
    let unit = &remaining.keys().next().unwrap().1;
    assert!(
        remaining.keys().all(|(_, u)| u == unit),
        "both jobs on the remaining unit: {remaining:#?}"
    );
    assert_eq!(
        t.status(APP)["units"].as_array().unwrap().len(),
        1,
        "twelve has one unit left"
    );
    eventually("the remaining unit's targets up", LONG, || {
        let now = app_targets(&prom.active_targets());
        (now.len() == 2 && now.values().all(|(h, _)| h == "up")).then_some(())
    });
}

/// Runs promtool on a file; fails the test with its output, or clearly when it is missing.
fn promtool_check(args: &[&str], file: &Path) {
    assert!(
        Path::new(PROMTOOL).exists(),
        "{PROMTOOL} is missing: scripts/setup.sh installs it with Debian's prometheus package \
         (apt-get install -y prometheus)"
    );
    let out = Command::new(PROMTOOL)
        .args(args)
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool {args:?} rejects {}:\n{}{}{}",
        file.display(),
        std::fs::read_to_string(file).unwrap_or_default(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Polls `f` until it returns Some, or gives up after `limit` with `None`.
fn eventually_or<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
