//! The charm's custom COS directory (paas-charm 1.11+): `cos_custom/` beside
//! charmcraft.yaml, with `prometheus_alert_rules/`, `loki_alert_rules/` and
//! `grafana_dashboards/`. paas-charm merges these with the framework's own and hands them
//! to the Prometheus, Loki and Grafana integrations; twelve reads and checks them here and
//! exports them with `twelve metrics` (twelve-charm's `cos` module adds the defaults).

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use crate::diagnostic::{parse_yaml, Diagnostic, Loc};

/// The directory's name in the charm (paas-charm's `get_cos_custom_dir`).
pub const COS_CUSTOM_DIR: &str = "cos_custom";
pub const PROMETHEUS_RULES_DIR: &str = "prometheus_alert_rules";
pub const LOKI_RULES_DIR: &str = "loki_alert_rules";
pub const DASHBOARDS_DIR: &str = "grafana_dashboards";
/// The only entries `cos_custom/` may hold (paas-charm's `COS_SUBDIRS`).
pub const COS_SUBDIRS: [&str; 3] = [DASHBOARDS_DIR, LOKI_RULES_DIR, PROMETHEUS_RULES_DIR];
/// Rule file suffixes the charm libraries read; other files are ignored.
pub const RULE_SUFFIXES: [&str; 4] = [".rule", ".rules", ".yml", ".yaml"];

/// What the charm's `cos_custom/` holds, checked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CosAssets {
    pub prometheus_rules: Vec<RuleFile>,
    pub loki_rules: Vec<RuleFile>,
    pub dashboards: Vec<DashboardFile>,
}

impl CosAssets {
    pub fn is_empty(&self) -> bool {
        self.prometheus_rules.is_empty() && self.loki_rules.is_empty() && self.dashboards.is_empty()
    }
}

/// One rule file, as groups (a file holding a single rule, as the charms' `.rule` files
/// do, is one group of one rule).
#[derive(Debug, Clone, PartialEq)]
pub struct RuleFile {
    pub path: PathBuf,
    /// The file name without its suffix, used to name the groups.
    pub stem: String,
    /// Whether the file held `groups:` (else a single rule).
    pub grouped: bool,
    pub groups: Vec<RuleGroup>,
}

/// A Prometheus (or Loki ruler) rule group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleGroup {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    pub rules: Vec<Rule>,
}

/// An alerting (`alert`) or recording (`record`) rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
    pub expr: String,
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    pub for_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_firing_for: Option<String>,
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub labels: IndexMap<String, String>,
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub annotations: IndexMap<String, String>,
}

/// A Grafana dashboard (JSON model).
#[derive(Debug, Clone, PartialEq)]
pub struct DashboardFile {
    pub path: PathBuf,
    /// The file name without `.json`.
    pub stem: String,
    pub json: serde_json::Value,
}

#[derive(Deserialize)]
struct GroupsDoc {
    groups: Vec<Spanned<RuleGroupIn>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleGroupIn {
    name: Spanned<String>,
    #[serde(default)]
    interval: Option<String>,
    #[serde(default)]
    limit: Option<u64>,
    rules: Vec<Spanned<Rule>>,
}

/// Reads `<charm_dir>/cos_custom/`; no directory is no assets.
pub fn read_cos_custom(charm_dir: &Path) -> Result<CosAssets, Diagnostic> {
    let dir = charm_dir.join(COS_CUSTOM_DIR);
    let mut assets = CosAssets::default();
    if !dir.is_dir() {
        return Ok(assets);
    }
    let help = format!(
        "{COS_CUSTOM_DIR}/ may only hold the directories {}",
        COS_SUBDIRS.join(", ")
    );
    for entry in sorted_entries(&dir)? {
        let name = entry.file_name().map(|n| n.to_string_lossy().into_owned());
        let name = name.unwrap_or_default();
        if !entry.is_dir() {
            return Err(Diagnostic::error(format!(
                "{COS_CUSTOM_DIR}/ cannot contain a file ({name})"
            ))
            .in_file(&entry)
            .with_help(help));
        }
        if !COS_SUBDIRS.contains(&name.as_str()) {
            return Err(Diagnostic::error(format!(
                "{COS_CUSTOM_DIR}/ cannot contain a directory named {name}"
            ))
            .in_file(&entry)
            .with_help(help));
        }
    }
    for (sub, is_loki) in [(PROMETHEUS_RULES_DIR, false), (LOKI_RULES_DIR, true)] {
        let subdir = dir.join(sub);
        if !subdir.is_dir() {
            continue;
        }
        for file in sorted_entries(&subdir)? {
            let name = file_name(&file);
            let Some(suffix) = RULE_SUFFIXES.iter().find(|s| name.ends_with(*s)) else {
                continue;
            };
            if !file.is_file() {
                continue;
            }
            let stem = name[..name.len() - suffix.len()].to_string();
            let rules = read_rule_file(&file, stem, is_loki)?;
            if is_loki {
                assets.loki_rules.push(rules);
            } else {
                assets.prometheus_rules.push(rules);
            }
        }
    }
    let subdir = dir.join(DASHBOARDS_DIR);
    if subdir.is_dir() {
        for file in sorted_entries(&subdir)? {
            let name = file_name(&file);
            let Some(stem) = name.strip_suffix(".json") else {
                continue;
            };
            if !file.is_file() {
                continue;
            }
            let src = read(&file)?;
            let json: serde_json::Value = serde_json::from_str(&src).map_err(|e| {
                let loc = Loc {
                    line: e.line() as u64,
                    column: e.column().max(1) as u64,
                };
                Diagnostic::error(format!("invalid dashboard {name}: {e}"))
                    .in_file(&file)
                    .at((e.line() > 0).then_some(loc), &src)
                    .with_help("a Grafana dashboard is its JSON model (Dashboard settings > JSON Model > copy)")
            })?;
            if !json.is_object() {
                return Err(Diagnostic::error(format!(
                    "invalid dashboard {name}: the JSON model must be an object"
                ))
                .in_file(&file));
            }
            assets.dashboards.push(DashboardFile {
                path: file.clone(),
                stem: stem.to_string(),
                json,
            });
        }
    }
    Ok(assets)
}

/// A rule file: `groups:` of rules, or one rule (`alert:`/`record:` and `expr:` at the top).
pub fn read_rule_file(path: &Path, stem: String, is_loki: bool) -> Result<RuleFile, Diagnostic> {
    let src = read(path)?;
    let kind = if is_loki { "Loki" } else { "Prometheus" };
    let help = format!(
        "a {kind} rule file holds `groups:` (each with `name:` and `rules:`), or one rule: `alert: Name` (or `record: name`) and `expr: ...`, with optional `for`, `labels`, `annotations`"
    );
    if src.trim().is_empty() {
        return Err(Diagnostic::error(format!("empty {kind} rule file"))
            .in_file(path)
            .with_help(help));
    }
    let keys: IndexMap<Spanned<String>, serde::de::IgnoredAny> =
        parse_yaml(path, &src).map_err(|d| d.with_help(help.clone()))?;
    let check = |rule: &Spanned<Rule>| -> Result<(), Diagnostic> {
        let r = &rule.value;
        let problem = match (&r.alert, &r.record) {
            (None, None) => {
                Some("a rule needs `alert:` (an alerting rule) or `record:` (a recording rule)")
            }
            (Some(_), Some(_)) => Some("a rule has `alert:` or `record:`, not both"),
            _ if r.expr.trim().is_empty() => Some("a rule's `expr:` is empty"),
            (None, Some(_)) if r.for_.is_some() => Some("a recording rule has no `for:`"),
            _ => None,
        };
        match problem {
            Some(p) => Err(Diagnostic::error(p)
                .in_file(path)
                .at(Loc::from_saphyr(&rule.referenced), &src)
                .with_help(help.clone())),
            None => Ok(()),
        }
    };
    if keys.keys().any(|k| k.value == "groups") {
        let doc: GroupsDoc = parse_yaml(path, &src).map_err(|d| d.with_help(help.clone()))?;
        let mut groups = vec![];
        for g in doc.groups {
            let g = g.value;
            if g.name.value.trim().is_empty() {
                return Err(Diagnostic::error("a rule group needs a name")
                    .in_file(path)
                    .at(Loc::from_saphyr(&g.name.referenced), &src));
            }
            for r in &g.rules {
                check(r)?;
            }
            groups.push(RuleGroup {
                name: g.name.value,
                interval: g.interval,
                limit: g.limit,
                rules: g.rules.into_iter().map(|r| r.value).collect(),
            });
        }
        Ok(RuleFile {
            path: path.to_path_buf(),
            stem,
            grouped: true,
            groups,
        })
    } else {
        let rule: Spanned<Rule> = parse_yaml(path, &src).map_err(|d| d.with_help(help.clone()))?;
        check(&rule)?;
        Ok(RuleFile {
            path: path.to_path_buf(),
            groups: vec![RuleGroup {
                name: stem.clone(),
                interval: None,
                limit: None,
                rules: vec![rule.value],
            }],
            stem,
            grouped: false,
        })
    }
}

fn read(path: &Path) -> Result<String, Diagnostic> {
    std::fs::read_to_string(path)
        .map_err(|e| Diagnostic::error(format!("cannot read {}: {e}", path.display())))
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The entries of `dir` by name, hidden ones (`.gitkeep`) left out.
fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, Diagnostic> {
    let rd = std::fs::read_dir(dir)
        .map_err(|e| Diagnostic::error(format!("cannot read {}: {e}", dir.display())))?;
    let mut out: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| !file_name(p).starts_with('.'))
        .collect();
    out.sort();
    Ok(out)
}
