//! The scenario file of `twelve render`: a public, documented way to write an app's desired
//! state by hand (docs/render.md).

use std::path::Path;

use indexmap::IndexMap;
use serde::Deserialize;
use serde_saphyr::Spanned;
use twelve_project::diagnostic::{parse_yaml, Loc};
use twelve_project::{Diagnostic, Project};

use crate::config::{check_type, effective_options};
use crate::integrations::{IntegrationKind, RelationData};
use crate::state::{AppState, ProxySettings, SecretView};

/// What `render` shows as the generated secret key when the scenario gives none.
pub const PLACEHOLDER_SECRET_KEY: &str = "generated-at-deploy-time";

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct ScenarioFile {
    app: Option<String>,
    unit: Option<u32>,
    units: Option<Vec<u32>>,
    base_url: Option<String>,
    model: Option<String>,
    #[serde(default)]
    config: IndexMap<Spanned<String>, Spanned<serde_json::Value>>,
    #[serde(default)]
    secrets: IndexMap<String, IndexMap<String, Scalar>>,
    secret_key: Option<String>,
    #[serde(default)]
    integrations: IndexMap<Spanned<String>, IndexMap<String, Scalar>>,
    #[serde(default)]
    proxy: Proxy,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct Proxy {
    http_proxy: Option<String>,
    https_proxy: Option<String>,
    no_proxy: Option<String>,
}

/// A YAML scalar read as text (`port: 25` is "25").
#[derive(Debug)]
struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        Ok(Scalar(match v {
            serde_json::Value::String(s) => s,
            serde_json::Value::Null => String::new(),
            serde_json::Value::Array(_) | serde_json::Value::Object(_) => v.to_string(),
            other => other.to_string(),
        }))
    }
}

/// Reads a scenario's text (from `file`, named in errors) for `project`, checking option
/// names and types and endpoint names. The caller reads the file: this crate does no I/O.
pub fn parse_scenario(project: &Project, file: &Path, src: &str) -> Result<AppState, Diagnostic> {
    let sc: ScenarioFile = if src.trim().is_empty() {
        ScenarioFile::default()
    } else {
        parse_yaml(file, src)?
    };
    let at = |msg: String, loc: &serde_saphyr::Location| {
        Diagnostic::error(msg)
            .in_file(file)
            .at(Loc::from_saphyr(loc), src)
    };

    let mut state = AppState::new(sc.app.as_deref().unwrap_or(&project.name));
    if let Some(m) = sc.model {
        state.model = m;
    }
    state.unit = sc.unit.unwrap_or(0);
    state.units = sc.units.unwrap_or_else(|| vec![state.unit]);
    if !state.units.contains(&state.unit) {
        return Err(Diagnostic::error(format!(
            "unit {} is not among the live units {:?}",
            state.unit, state.units
        ))
        .in_file(file)
        .with_help("add it to `units:` or pick another `unit:`"));
    }
    state.base_url = sc.base_url;
    state.secret_key = Some(
        sc.secret_key
            .unwrap_or_else(|| PLACEHOLDER_SECRET_KEY.to_string()),
    );
    state.proxy = ProxySettings {
        http_proxy: sc.proxy.http_proxy,
        https_proxy: sc.proxy.https_proxy,
        no_proxy: sc.proxy.no_proxy,
    };

    let options = effective_options(project);
    for (key, value) in sc.config {
        let Some(opt) = options.get(&key.value) else {
            let mut names: Vec<&str> = options.keys().map(String::as_str).collect();
            names.sort_unstable();
            return Err(
                at(format!("unknown option {:?}", key.value), &key.referenced).with_help(format!(
                    "the options of {} are: {}",
                    project.name,
                    names.join(", ")
                )),
            );
        };
        if !value.value.is_null() {
            check_type(opt, &value.value)
                .map_err(|e| at(format!("option {:?}: {e}", key.value), &value.referenced))?;
        }
        state.config.insert(key.value, value.value);
    }
    for (id, content) in sc.secrets {
        let content = content.into_iter().map(|(k, v)| (k, v.0)).collect();
        state.secrets.insert(
            id,
            SecretView {
                name: None,
                content: Some(content),
            },
        );
    }
    for (key, data) in sc.integrations {
        let endpoint = key.value;
        let known = project
            .requires
            .get(&endpoint)
            .and_then(|r| IntegrationKind::detect(&endpoint, &r.interface));
        if known.is_none() {
            let declared: Vec<&str> = project
                .requires
                .iter()
                .filter(|(e, r)| IntegrationKind::detect(e, &r.interface).is_some())
                .map(|(e, _)| e.as_str())
                .collect();
            let help = if project.requires.contains_key(&endpoint) {
                format!("{endpoint} is declared but its interface is not one twelve integrates")
            } else if declared.is_empty() {
                "the project declares no integrations: add them under `requires:` in charmcraft.yaml".to_string()
            } else {
                format!(
                    "the project's integration endpoints are: {}",
                    declared.join(", ")
                )
            };
            return Err(at(
                format!("unknown integration endpoint {endpoint:?}"),
                &key.referenced,
            )
            .with_help(help));
        }
        let data: RelationData = data.into_iter().map(|(k, v)| (k, v.0)).collect();
        state.integrations.insert(endpoint, data);
    }
    Ok(state)
}
