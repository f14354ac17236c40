//! `rockcraft.yaml`: the rock's name, its framework extension and extra Pebble services.

use indexmap::IndexMap;
use serde::Deserialize;
use serde_saphyr::Spanned;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) struct RockcraftFile {
    #[serde(default)]
    pub name: Option<Spanned<String>>,
    #[serde(default)]
    pub extensions: Vec<Spanned<String>>,
    #[serde(default)]
    pub services: IndexMap<Spanned<String>, twelve_layer::Service>,
}

pub(crate) const ROCKCRAFT_KEYS: &[&str] = &[
    "name",
    "title",
    "summary",
    "description",
    "version",
    "license",
    "base",
    "build-base",
    "platforms",
    "parts",
    "extensions",
    "services",
    "checks",
    "entrypoint-service",
    "run-user",
    "environment",
    "package-repositories",
    "adopt-info",
    "contact",
    "issues",
    "source-code",
];
