//! `paas-config.yaml`: ports, metrics and extra Prometheus scrape jobs (paas-charm 1.10+/2.x).

use std::fmt;
use std::str::FromStr;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

/// Which paas-charm's rules a project runs under where paas-charm 1.12 and main differ
/// (ports and metrics variables; docs/compatibility.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PaasCharmLine {
    /// paas-charm 1.12, the released line: ports from the `app-port`/`webserver-port`/
    /// `metrics-port`/`metrics-path` options.
    #[default]
    #[serde(rename = "1.12")]
    V1_12,
    /// paas-charm main (unreleased): ports from `paas-config.yaml`, the resolved defaults
    /// always exposed.
    #[serde(rename = "main")]
    Main,
}

impl PaasCharmLine {
    pub fn name(self) -> &'static str {
        match self {
            PaasCharmLine::V1_12 => "1.12",
            PaasCharmLine::Main => "main",
        }
    }
}

impl fmt::Display for PaasCharmLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PaasCharmLine {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "1.12" | "1" | "1.x" => Ok(PaasCharmLine::V1_12),
            "main" | "2" | "2.x" => Ok(PaasCharmLine::Main),
            _ => Err(format!("unknown paas-charm line {s:?}: use 1.12 or main")),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PaasConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_path: Option<String>,
    #[serde(
        rename = "framework_logging_format",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub framework_logging_format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<Prometheus>,
    /// twelve's readiness check for the web service (an HTTP path; TCP connect when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
}

impl PaasConfig {
    /// The line a project is written for: paas-charm 1.12 refuses the top-level `port`,
    /// `metrics-port` and `metrics-path` keys (its model forbids extra keys), so a file that
    /// sets one of them is for paas-charm main.
    pub fn line(&self) -> PaasCharmLine {
        if self.port.is_some() || self.metrics_port.is_some() || self.metrics_path.is_some() {
            PaasCharmLine::Main
        } else {
            PaasCharmLine::V1_12
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prometheus {
    #[serde(default)]
    pub scrape_configs: Vec<ScrapeConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeConfig {
    pub job_name: String,
    #[serde(default = "default_metrics_path")]
    pub metrics_path: String,
    #[serde(default)]
    pub static_configs: Vec<StaticConfig>,
}

fn default_metrics_path() -> String {
    "/metrics".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticConfig {
    #[serde(default)]
    pub targets: Vec<String>,
    #[serde(default)]
    pub labels: IndexMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Healthcheck {
    pub path: String,
}
