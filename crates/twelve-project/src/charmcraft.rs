//! `charmcraft.yaml`: config options, relations and actions.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use crate::diagnostic::Loc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptionType {
    String,
    Int,
    Float,
    Boolean,
    Secret,
}

impl OptionType {
    pub fn as_str(self) -> &'static str {
        match self {
            OptionType::String => "string",
            OptionType::Int => "int",
            OptionType::Float => "float",
            OptionType::Boolean => "boolean",
            OptionType::Secret => "secret",
        }
    }
}

/// One entry of `config.options`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ConfigOption {
    #[serde(rename = "type")]
    pub type_: OptionType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
    #[serde(skip)]
    pub location: Option<Loc>,
}

impl ConfigOption {
    /// `optional: false` options must be given before the app starts.
    pub fn required(&self) -> bool {
        self.optional == Some(false)
    }
}

/// One entry of `requires` (or `provides`/`peers`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Relation {
    pub interface: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(skip)]
    pub location: Option<Loc>,
}

impl Relation {
    /// Juju treats a relation without `optional:` as optional; paas-charm blocks only on
    /// `optional: false`.
    pub fn required(&self) -> bool {
        self.optional == Some(false)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ActionParam {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<serde_json::Value>,
    #[serde(rename = "enum", default, skip_serializing_if = "Option::is_none")]
    pub enum_: Option<Vec<serde_json::Value>>,
}

/// One entry of `actions` (a JSON-schema-like description of the params).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ActionDef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub params: IndexMap<String, ActionParam>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required: Vec<String>,
    #[serde(
        rename = "additionalProperties",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub additional_properties: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct ConfigSection {
    #[serde(default)]
    pub options: IndexMap<Spanned<String>, ConfigOption>,
}

/// The file as written. Keys twelve does not use are read by `known_keys` checks.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) struct CharmcraftFile {
    #[serde(default)]
    pub extensions: Vec<Spanned<String>>,
    #[serde(default)]
    pub config: Option<ConfigSection>,
    #[serde(default)]
    pub requires: IndexMap<Spanned<String>, Relation>,
    #[serde(default)]
    pub actions: IndexMap<String, ActionDef>,
}

/// Top-level keys charmcraft accepts that twelve reads or does not need.
pub(crate) const CHARMCRAFT_KEYS: &[&str] = &[
    "name",
    "type",
    "title",
    "summary",
    "description",
    "links",
    "license",
    "base",
    "build-base",
    "bases",
    "platforms",
    "parts",
    "charm-libs",
    "assumes",
    "containers",
    "resources",
    "storage",
    "devices",
    "extra-bindings",
    "subordinate",
    "terms",
    "charm-user",
    "config",
    "requires",
    "provides",
    "peers",
    "actions",
    "extensions",
    "series",
    "min-juju-version",
    "analysis",
    "charmhub",
    "actions-file",
    "config-file",
    "hooks",
];
