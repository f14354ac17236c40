//! An app's COS assets as paas-charm hands them to the Prometheus, Loki and Grafana
//! integrations: the framework's defaults merged with the charm's `cos_custom/` (read by
//! twelve-project), scoped to the app. paas-charm's libraries scope rules with Juju's
//! topology labels; on this machine the topology is the `app` label every target, series
//! and forwarded log line carries, so each expression gets `app="<app>"` matchers and
//! each rule an `app` label.

use serde_json::{json, Value};
use twelve_project::{Framework, Project, Rule, RuleGroup};

/// The label that stands for Juju's topology here.
pub const APP_LABEL: &str = "app";
/// Loki rule expressions name the topology with this placeholder (loki_push_api).
pub const LOKI_TOPOLOGY: &str = "%%juju_topology%%";

/// The framework's default Prometheus alert rules (paas-charm ships one for Flask and
/// Django: the target is missing for 2 minutes; none for the other frameworks).
pub fn default_prometheus_rules(fw: Framework) -> Vec<RuleGroup> {
    let title = match fw {
        Framework::Flask => "Flask",
        Framework::Django => "Django",
        _ => return vec![],
    };
    let rule = Rule {
        alert: Some(format!("{title}TargetMissing")),
        record: None,
        expr: "up == 0".into(),
        for_: Some("2m".into()),
        keep_firing_for: None,
        labels: [("severity".to_string(), "critical".to_string())]
            .into_iter()
            .collect(),
        annotations: [
            (
                "summary".to_string(),
                "Prometheus target missing (instance {{ $labels.instance }})".to_string(),
            ),
            (
                "description".to_string(),
                format!("{title} has disappeared: the unit or its metrics exporter is down.\n  VALUE = {{{{ $value }}}}\n  LABELS = {{{{ $labels }}}}"),
            ),
        ]
        .into_iter()
        .collect(),
    };
    vec![RuleGroup {
        name: fw.name().to_string(),
        interval: None,
        limit: None,
        rules: vec![rule],
    }]
}

/// The app's Prometheus rule groups: the framework's, then the charm's, each named
/// `<app>_<file>_alerts` (custom files `custom_<file>`, as paas-charm's merge names them;
/// a file's own group names follow when it has several), expressions scoped to the app.
pub fn prometheus_rules(project: &Project, app: &str) -> Result<Vec<RuleGroup>, String> {
    let mut out = vec![];
    for g in default_prometheus_rules(project.framework) {
        let name = format!("{app}_{}_alerts", g.name);
        out.push(scoped(g, name, app, |e| scope_promql(e, APP_LABEL, app))?);
    }
    for file in &project.cos.prometheus_rules {
        let several = file.groups.len() > 1 || file.grouped;
        for g in &file.groups {
            let name = group_name(app, &file.stem, several.then_some(g.name.as_str()));
            out.push(scoped(g.clone(), name, app, |e| {
                scope_promql(e, APP_LABEL, app).map_err(|m| format!("{}: {m}", file.path.display()))
            })?);
        }
    }
    Ok(out)
}

/// The app's Loki ruler groups (the charm's; paas-charm ships none): `%%juju_topology%%`
/// becomes `app="<app>"`.
pub fn loki_rules(project: &Project, app: &str) -> Result<Vec<RuleGroup>, String> {
    let mut out = vec![];
    for file in &project.cos.loki_rules {
        let several = file.groups.len() > 1 || file.grouped;
        for g in &file.groups {
            let name = group_name(app, &file.stem, several.then_some(g.name.as_str()));
            out.push(scoped(g.clone(), name, app, |e| {
                Ok(e.replace(LOKI_TOPOLOGY, &format!("{APP_LABEL}=\"{app}\"")))
            })?);
        }
    }
    Ok(out)
}

fn group_name(app: &str, stem: &str, group: Option<&str>) -> String {
    match group {
        Some(g) => format!("{app}_custom_{stem}_{g}_alerts"),
        None => format!("{app}_custom_{stem}_alerts"),
    }
}

fn scoped(
    mut g: RuleGroup,
    name: String,
    app: &str,
    expr: impl Fn(&str) -> Result<String, String>,
) -> Result<RuleGroup, String> {
    g.name = name;
    for r in &mut g.rules {
        r.expr = expr(&r.expr)?;
        r.labels.insert(APP_LABEL.into(), app.into());
    }
    Ok(g)
}

/// A rule file (`groups:`) as YAML.
pub fn rules_yaml(groups: &[RuleGroup]) -> String {
    #[derive(serde::Serialize)]
    struct Doc<'a> {
        groups: &'a [RuleGroup],
    }
    serde_saphyr::to_string(&Doc { groups }).unwrap_or_default()
}

/// The app's Grafana dashboards, by file name: twelve's default one for the framework,
/// then the charm's (`custom_<file>.json`), with the `prometheusds` and `lokids`
/// data source variables the charms' dashboards use added where missing, and `$app`
/// (with Juju's `$juju_application`) set to the app.
pub fn dashboards(project: &Project, app: &str) -> Vec<(String, Value)> {
    let mut out = vec![(
        format!("{app}-{}.json", project.framework.name()),
        default_dashboard(project.framework, app),
    )];
    for d in &project.cos.dashboards {
        let mut json = d.json.clone();
        add_variables(&mut json, app);
        out.push((format!("{app}-custom_{}.json", d.stem), json));
    }
    out
}

fn add_variables(dashboard: &mut Value, app: &str) {
    let Some(obj) = dashboard.as_object_mut() else {
        return;
    };
    let templating = obj
        .entry("templating")
        .or_insert_with(|| json!({"list": []}));
    if !templating.get("list").is_some_and(Value::is_array) {
        *templating = json!({"list": []});
    }
    let Some(list) = templating["list"].as_array_mut() else {
        return;
    };
    let has = |list: &Vec<Value>, n: &str| list.iter().any(|v| v["name"] == n);
    for (name, kind) in [("prometheusds", "prometheus"), ("lokids", "loki")] {
        if !has(list, name) {
            list.push(json!({
                "name": name, "label": format!("{kind} data source"), "type": "datasource",
                "query": kind, "hide": 0, "current": {}, "options": [], "refresh": 1
            }));
        }
    }
    for name in [APP_LABEL, "juju_application"] {
        if !has(list, name) {
            list.push(json!({
                "name": name, "type": "constant", "query": app, "hide": 2,
                "current": {"text": app, "value": app}
            }));
        }
    }
}

/// twelve's default dashboard of an app: its targets, the ingress's requests and
/// latency for the app, and the framework's own request series where it has them.
pub fn default_dashboard(fw: Framework, app: &str) -> Value {
    let ds = json!({"type": "prometheus", "uid": "${prometheusds}"});
    let panel = |id: u32, title: &str, exprs: &[(&str, &str)], y: u32, x: u32| {
        json!({
            "id": id, "title": title, "type": "timeseries", "datasource": ds,
            "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
            "targets": exprs.iter().enumerate().map(|(i, (e, legend))| json!({
                "datasource": ds, "expr": e, "legendFormat": legend,
                "refId": ((b'A' + i as u8) as char).to_string()
            })).collect::<Vec<_>>()
        })
    };
    let mut panels = vec![
        panel(1, "Targets up", &[("up{app=\"$app\"}", "{{unit}} {{job}}")], 0, 0),
        panel(
            2,
            "Requests per second (ingress)",
            &[(
                "sum by (class) (rate(twelve_ingress_requests_total{app=\"$app\"}[5m]))",
                "{{class}}",
            )],
            0,
            12,
        ),
        panel(
            3,
            "Request latency p50 / p95 (ingress)",
            &[
                (
                    "histogram_quantile(0.5, sum by (le) (rate(twelve_ingress_request_duration_seconds_bucket{app=\"$app\"}[5m])))",
                    "p50",
                ),
                (
                    "histogram_quantile(0.95, sum by (le) (rate(twelve_ingress_request_duration_seconds_bucket{app=\"$app\"}[5m])))",
                    "p95",
                ),
            ],
            8,
            0,
        ),
    ];
    if fw.is_gunicorn() {
        let n = fw.name();
        let requests = format!("sum(rate({n}_requests{{app=\"$app\"}}[5m]))");
        let codes = format!("sum by (status) (rate({n}_response_code{{app=\"$app\"}}[5m]))");
        panels.push(panel(
            4,
            &format!("{} requests (gunicorn)", fw),
            &[
                (requests.as_str(), "requests/s"),
                (codes.as_str(), "{{status}}"),
            ],
            8,
            12,
        ));
    }
    let mut d = json!({
        "title": format!("{app} ({fw})"),
        "uid": format!("twelve-{app}"),
        "tags": ["twelve", fw.name()],
        "schemaVersion": 39,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "panels": panels,
        "templating": {"list": []},
    });
    add_variables(&mut d, app);
    d
}

/// Adds `label="value"` to every vector selector of a PromQL expression (what the
/// Prometheus charm library does with Juju's topology): `up == 0` becomes
/// `up{app="web"} == 0`, `rate(x{code="500"}[5m])` becomes `rate(x{app="web",code="500"}[5m])`.
/// Function and aggregation names, keywords, label lists (`by (...)`, `on (...)`),
/// strings, numbers and durations are left alone. A selector already matching `label`
/// is left as it is.
pub fn scope_promql(expr: &str, label: &str, value: &str) -> Result<String, String> {
    const KEYWORDS: [&str; 14] = [
        "and",
        "or",
        "unless",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "offset",
        "inf",
        "nan",
        "atan2",
    ];
    const LISTS: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let matcher = format!(
        "{label}=\"{}\"",
        value.replace('\\', "\\\\").replace('"', "\\\"")
    );
    let b = expr.as_bytes();
    let mut out = String::with_capacity(expr.len() + 32);
    let mut i = 0;
    let next_non_space = |mut j: usize| {
        while j < b.len() && b[j].is_ascii_whitespace() {
            j += 1;
        }
        j
    };
    // Copies a `{...}` matcher block starting at `start` (at `{`), adding the matcher
    // unless the label is already there; returns the index after `}`.
    let block = |start: usize, out: &mut String| -> Result<usize, String> {
        let mut j = start + 1;
        let mut quote: Option<u8> = None;
        while j < b.len() {
            match (quote, b[j]) {
                (Some(_), b'\\') => j += 1,
                (Some(q), c) if c == q => quote = None,
                (None, b'"' | b'\'' | b'`') => quote = Some(b[j]),
                (None, b'}') => break,
                _ => {}
            }
            j += 1;
        }
        if j >= b.len() {
            return Err(format!("unclosed {{ in {expr:?}"));
        }
        let inner = &expr[start + 1..j];
        let already = inner.split(',').any(|m| {
            let m = m.trim_start();
            m.strip_prefix(label)
                .is_some_and(|r| r.trim_start().starts_with(['=', '!']))
        });
        out.push('{');
        if !already {
            out.push_str(&matcher);
            if !inner.trim().is_empty() {
                out.push(',');
            }
        }
        out.push_str(inner);
        out.push('}');
        Ok(j + 1)
    };
    let mut after_list_keyword = false;
    while i < b.len() {
        let c = b[i];
        if c == b'"' || c == b'\'' || c == b'`' {
            let start = i;
            i += 1;
            while i < b.len() && b[i] != c {
                if b[i] == b'\\' && c != b'`' {
                    i += 1;
                }
                i += 1;
            }
            i = (i + 1).min(b.len());
            out.push_str(&expr[start..i]);
            continue;
        }
        if c == b'#' {
            // A comment runs to the end of the line.
            let end = expr[i..].find('\n').map_or(b.len(), |n| i + n);
            out.push_str(&expr[i..end]);
            i = end;
            continue;
        }
        if c == b'[' {
            let end = expr[i..]
                .find(']')
                .map(|n| i + n + 1)
                .ok_or_else(|| format!("unclosed [ in {expr:?}"))?;
            out.push_str(&expr[i..end]);
            i = end;
            continue;
        }
        if c == b'{' {
            i = block(i, &mut out)?;
            continue;
        }
        if c == b'(' && after_list_keyword {
            let end = expr[i..]
                .find(')')
                .map(|n| i + n + 1)
                .ok_or_else(|| format!("unclosed ( in {expr:?}"))?;
            out.push_str(&expr[i..end]);
            i = end;
            after_list_keyword = false;
            continue;
        }
        if c.is_ascii_digit() || (c == b'.' && i + 1 < b.len() && b[i + 1].is_ascii_digit()) {
            // Numbers and durations (5m, 1e3, 0x1f).
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.' || b[i] == b'_') {
                i += 1;
            }
            out.push_str(&expr[start..i]);
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' || c == b':' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
                i += 1;
            }
            let word = &expr[start..i];
            out.push_str(word);
            let lower = word.to_ascii_lowercase();
            let j = next_non_space(i);
            if LISTS.contains(&lower.as_str()) {
                after_list_keyword = true;
                continue;
            }
            after_list_keyword = false;
            if KEYWORDS.contains(&lower.as_str()) {
                continue;
            }
            if j < b.len() && b[j] == b'(' {
                continue; // a function or aggregation
            }
            let rest = &expr[j..];
            let modifier = ["by", "without"].iter().any(|m| {
                rest.get(..m.len())
                    .is_some_and(|p| p.eq_ignore_ascii_case(m))
                    && !rest[m.len()..].starts_with(|ch: char| {
                        ch.is_ascii_alphanumeric() || ch == '_' || ch == ':'
                    })
            });
            if modifier {
                continue; // an aggregation with its modifier first: `sum by (x) (...)`
            }
            if j < b.len() && b[j] == b'{' {
                out.push_str(&expr[i..j]);
                i = block(j, &mut out)?;
            } else {
                out.push('{');
                out.push_str(&matcher);
                out.push('}');
            }
            continue;
        }
        if !c.is_ascii_whitespace() {
            after_list_keyword = false;
        }
        let ch = expr[i..].chars().next().unwrap_or(' ');
        out.push(ch);
        i += ch.len_utf8();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_get_the_app_matcher() {
        let s = |e: &str| scope_promql(e, "app", "web").unwrap();
        assert_eq!(s("up == 0"), "up{app=\"web\"} == 0");
        assert_eq!(
            s("rate(http_requests_total{code=~\"5..\"}[5m]) > 0.1"),
            "rate(http_requests_total{app=\"web\",code=~\"5..\"}[5m]) > 0.1"
        );
        assert_eq!(
            s("sum by (job) (rate(x[1m])) / on(job) group_left(a) y"),
            "sum by (job) (rate(x{app=\"web\"}[1m])) / on(job) group_left(a) y{app=\"web\"}"
        );
        assert_eq!(
            s("sum(rate(x[5m])) by (code) > bool 3"),
            "sum(rate(x{app=\"web\"}[5m])) by (code) > bool 3"
        );
        assert_eq!(s("{__name__=\"up\"}"), "{app=\"web\",__name__=\"up\"}");
        assert_eq!(s("x{}"), "x{app=\"web\"}");
        assert_eq!(s("x{app=\"other\"}"), "x{app=\"other\"}");
        assert_eq!(
            s("job:req:rate5m offset 5m > 1e3"),
            "job:req:rate5m{app=\"web\"} offset 5m > 1e3"
        );
        assert_eq!(
            s("label_replace(up, \"a\", \"$1\", \"b\", \"(.*)\")"),
            "label_replace(up{app=\"web\"}, \"a\", \"$1\", \"b\", \"(.*)\")"
        );
        assert_eq!(
            s("absent(up{job=\"a}b\"})"),
            "absent(up{app=\"web\",job=\"a}b\"})"
        );
        assert!(scope_promql("up{job=\"x\"", "app", "web").is_err());
    }
}
