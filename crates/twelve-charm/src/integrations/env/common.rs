//! Helpers shared by every integration: reading data keys, collecting env entries and
//! secrets, the two error kinds, and Python-compatible JSON text.

use super::super::{IntegrationContext, IntegrationEnv, RelationData, RelationDataError};
use twelve_project::Framework;

/// A data value, or None when the key is absent or blank (providers send "" for "not yet").
pub(crate) fn get<'d>(data: &'d RelationData, key: &str) -> Option<&'d str> {
    data.get(key)
        .map(String::as_str)
        .filter(|v| !v.trim().is_empty())
}

/// The first of `keys` that has a value (for keys with an alias).
pub(crate) fn get_any<'d>(data: &'d RelationData, keys: &[&str]) -> Option<&'d str> {
    keys.iter().find_map(|k| get(data, k))
}

/// The keys of `keys` that have no value.
pub(crate) fn missing<'k>(data: &RelationData, keys: &[&'k str]) -> Vec<&'k str> {
    keys.iter()
        .copied()
        .filter(|k| get(data, k).is_none())
        .collect()
}

pub(crate) fn invalid(
    ctx: &IntegrationContext<'_>,
    reason: impl Into<String>,
) -> RelationDataError {
    RelationDataError::Invalid {
        endpoint: ctx.endpoint.to_string(),
        reason: reason.into(),
    }
}

pub(crate) fn unusable(
    ctx: &IntegrationContext<'_>,
    reason: impl Into<String>,
) -> RelationDataError {
    RelationDataError::Unusable {
        endpoint: ctx.endpoint.to_string(),
        reason: reason.into(),
    }
}

pub(crate) fn is_spring(ctx: &IntegrationContext<'_>) -> bool {
    ctx.framework == Framework::SpringBoot
}

/// `true`/`false` as a user or a provider may write them.
pub(crate) fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" => Some(true),
        "false" | "no" | "0" => Some(false),
        _ => None,
    }
}

/// A TCP port as text: digits only, 0..=65535 (Python's `urlparse(...).port` rule).
pub(crate) fn parse_port(value: &str) -> Option<u16> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// Checks a comma-separated `host:port` list; returns the first bad entry's message.
pub(crate) fn check_host_ports(value: &str) -> Result<(), String> {
    for item in value.split(',').map(str::trim) {
        let Some((host, port)) = item.rsplit_once(':') else {
            return Err(format!("{item:?} is not host:port"));
        };
        if host.is_empty() {
            return Err(format!("{item:?} has no host"));
        }
        if parse_port(port).is_none() {
            return Err(format!(
                "{item:?} has a port that is not a number from 0 to 65535"
            ));
        }
    }
    Ok(())
}

/// The env entries being built and the values to hide.
#[derive(Default)]
pub(crate) struct EnvBuilder {
    out: IntegrationEnv,
}

impl EnvBuilder {
    pub(crate) fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.out.env.insert(key.into(), value.into());
    }

    /// Sets an entry whose value must never be shown.
    pub(crate) fn set_secret(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let value = value.into();
        self.secret(&value);
        self.out.env.insert(key.into(), value);
    }

    pub(crate) fn set_opt(&mut self, key: &str, value: Option<&str>) {
        if let Some(v) = value {
            self.set(key, v);
        }
    }

    pub(crate) fn set_secret_opt(&mut self, key: &str, value: Option<&str>) {
        if let Some(v) = value {
            self.set_secret(key, v);
        }
    }

    /// Marks a value as secret without adding an entry.
    pub(crate) fn secret(&mut self, value: &str) {
        if !value.is_empty() && !self.out.secrets.iter().any(|s| s == value) {
            self.out.secrets.push(value.to_string());
        }
    }

    pub(crate) fn finish(self) -> IntegrationEnv {
        self.out
    }
}

/// JSON text exactly as Python's `json.dumps` writes it (`", "` and `": "` separators,
/// non-ASCII escaped), so `S3_ATTRIBUTES` and `*_CLIENT_KWARGS` match paas-charm byte for byte.
pub(crate) fn py_json(value: &serde_json::Value) -> String {
    use serde_json::Value;
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => if *b { "true" } else { "false" }.into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => py_json_str(s),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(py_json).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("{}: {}", py_json_str(k), py_json(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn py_json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
