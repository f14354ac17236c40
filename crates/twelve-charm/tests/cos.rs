//! An app's COS assets: the framework's defaults merged with the charm's `cos_custom/`,
//! scoped to the app; the Prometheus rules pass the real `promtool check rules`.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use twelve_charm::cos;
use twelve_project::Framework;

const PROMTOOL: &str = "/usr/bin/promtool";

fn with_cos(fw: Framework) -> Fixture {
    project(
        fw,
        "",
        "",
        &[
            (
                "charm/cos_custom/prometheus_alert_rules/high.rule",
                "alert: HighErrorRate\nexpr: sum(rate(flask_response_code{status=~\"5..\"}[5m])) by (unit) > 0.1\nfor: 5m\nlabels:\n  severity: warning\nannotations:\n  summary: \"{{ $labels.unit }} fails\"\n",
            ),
            (
                "charm/cos_custom/prometheus_alert_rules/rec.yaml",
                "groups:\n  - name: rates\n    rules:\n      - record: web:requests:rate5m\n        expr: rate(flask_requests[5m])\n  - name: more\n    rules:\n      - alert: Slow\n        expr: web:requests:rate5m < 1\n",
            ),
            (
                "charm/cos_custom/loki_alert_rules/errors.rule",
                "alert: Errors\nexpr: sum(count_over_time({%%juju_topology%%} |= \"Traceback\" [5m])) > 0\n",
            ),
            (
                "charm/cos_custom/grafana_dashboards/mine.json",
                "{\"title\": \"mine\", \"panels\": [], \"templating\": {\"list\": [{\"name\": \"prometheusds\", \"type\": \"datasource\", \"query\": \"prometheus\"}]}}",
            ),
        ],
    )
}

fn promtool_check_rules(file: &Path) {
    assert!(
        Path::new(PROMTOOL).exists(),
        "{PROMTOOL} is missing: scripts/setup.sh installs it with Debian's prometheus package (apt-get install -y prometheus)"
    );
    let out = Command::new(PROMTOOL)
        .args(["check", "rules"])
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool rejects:\n{}\n{}{}",
        std::fs::read_to_string(file).unwrap(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn prometheus_rules_merge_defaults_and_custom_scoped_to_the_app() {
    let f = with_cos(Framework::Flask);
    let groups = cos::prometheus_rules(&f.project, "web").unwrap();
    let names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "web_flask_alerts",
            "web_custom_high_alerts",
            "web_custom_rec_rates_alerts",
            "web_custom_rec_more_alerts"
        ]
    );
    let missing = &groups[0].rules[0];
    assert_eq!(missing.alert.as_deref(), Some("FlaskTargetMissing"));
    assert_eq!(missing.expr, "up{app=\"web\"} == 0");
    assert_eq!(
        groups[1].rules[0].expr,
        "sum(rate(flask_response_code{app=\"web\",status=~\"5..\"}[5m])) by (unit) > 0.1"
    );
    assert_eq!(
        groups[3].rules[0].expr,
        "web:requests:rate5m{app=\"web\"} < 1"
    );
    assert!(groups
        .iter()
        .flat_map(|g| &g.rules)
        .all(|r| r.labels["app"] == "web"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("web.rules.yml");
    std::fs::write(&file, cos::rules_yaml(&groups)).unwrap();
    promtool_check_rules(&file);

    // Go ships no default rule; a project without cos_custom has none at all.
    let plain = project(Framework::Go, "", "", &[]);
    assert!(cos::prometheus_rules(&plain.project, "web")
        .unwrap()
        .is_empty());
    // Django's default rule, as paas-charm's.
    let dj = project(Framework::Django, "", "", &[]);
    let g = cos::prometheus_rules(&dj.project, "d").unwrap();
    assert_eq!(g[0].rules[0].alert.as_deref(), Some("DjangoTargetMissing"));
}

#[test]
fn loki_rules_and_dashboards() {
    let f = with_cos(Framework::Flask);
    let groups = cos::loki_rules(&f.project, "web").unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(
        groups[0].rules[0].expr,
        "sum(count_over_time({app=\"web\"} |= \"Traceback\" [5m])) > 0"
    );
    let yaml = cos::rules_yaml(&groups);
    assert!(yaml.starts_with("groups:"), "{yaml}");

    let d = cos::dashboards(&f.project, "web");
    let names: Vec<&str> = d.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["web-flask.json", "web-custom_mine.json"]);
    for (name, json) in &d {
        let vars: Vec<&str> = json["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        // The custom dashboard's own prometheusds is kept, not doubled.
        assert_eq!(
            vars.iter().filter(|v| **v == "prometheusds").count(),
            1,
            "{name}"
        );
        assert!(
            vars.contains(&"lokids") && vars.contains(&"app"),
            "{name}: {vars:?}"
        );
    }
    let default = serde_json::to_string(&d[0].1).unwrap();
    assert!(
        default.contains("flask_requests{app=\\\"$app\\\"}"),
        "{default}"
    );
}
