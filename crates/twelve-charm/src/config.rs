//! Config options: which exist, their values with defaults, type checks, and how a value
//! becomes an environment variable (paas-charm's `encode_env`).

use indexmap::IndexMap;
use serde_json::Value;
use twelve_project::{ConfigOption, Framework, OptionType, Project};

use crate::integrations::{oauth_options, IntegrationKind};

/// Every option of the app: the project's and those paas-charm adds per oauth endpoint.
pub fn effective_options(project: &Project) -> IndexMap<String, ConfigOption> {
    let mut options = project.options.clone();
    for (endpoint, rel) in &project.requires {
        if IntegrationKind::detect(endpoint, &rel.interface) == Some(IntegrationKind::Oauth) {
            for (name, opt) in oauth_options(project.framework, endpoint) {
                options.entry(name).or_insert(opt);
            }
        }
    }
    options
}

/// Whether an option is one of the framework's (handled by the framework rules) rather
/// than the user's (exported as `<P><NAME>`).
///
/// paas-charm treats every option that does not start with `<framework>-`, `webserver-` or
/// `app-` as the user's, which silently drops user options named `app-*` and leaks
/// `metrics-port` as `APP_METRICS_PORT` on Spring Boot. twelve asks the extension instead:
/// its options are the framework's, every other option is the user's.
pub fn is_framework_option(framework: Framework, name: &str) -> bool {
    framework.extension_options().iter().any(|(n, _)| *n == name)
        // 2.x spellings of the secret key options, accepted for every framework.
        || name == "app-secret-key"
        || name == "app-secret-key-id"
}

/// Checks a value's JSON type against the option type. The error says what was expected.
pub fn check_type(option: &ConfigOption, value: &Value) -> Result<(), String> {
    let ok = match option.type_ {
        OptionType::String | OptionType::Secret => value.is_string(),
        OptionType::Int => value.is_i64() || value.is_u64(),
        OptionType::Float => value.is_number(),
        OptionType::Boolean => value.is_boolean(),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "expected {}, got {}",
            type_phrase(option.type_),
            describe(value)
        ))
    }
}

fn type_phrase(t: OptionType) -> &'static str {
    match t {
        OptionType::String => "a string",
        OptionType::Secret => "a secret URI (secret:<id>)",
        OptionType::Int => "an integer",
        OptionType::Float => "a number",
        OptionType::Boolean => "true or false",
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "nothing".into(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string {s:?}"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

/// Reads a value typed on the command line (`key=value`) as the option's type, the way
/// `juju config` does.
pub fn parse_cli_value(option: &ConfigOption, text: &str) -> Result<Value, String> {
    match option.type_ {
        OptionType::String | OptionType::Secret => Ok(Value::String(text.to_string())),
        OptionType::Int => text
            .trim()
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| format!("expected an integer, got {text:?}")),
        OptionType::Float => text
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| format!("expected a number, got {text:?}")),
        OptionType::Boolean => match text.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Ok(Value::Bool(true)),
            "false" | "no" | "off" | "0" => Ok(Value::Bool(false)),
            _ => Err(format!("expected true or false, got {text:?}")),
        },
    }
}

/// paas-charm's `encode_env`: strings as they are, everything else JSON-encoded.
pub fn encode_env(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => {
            // Python's json.dumps writes floats with a fraction (2.0), ints without.
            if n.is_f64() {
                let f = n.as_f64().unwrap_or_default();
                if f.fract() == 0.0 && f.is_finite() && f.abs() < 1e16 {
                    format!("{f:.1}")
                } else {
                    n.to_string()
                }
            } else {
                n.to_string()
            }
        }
        other => python_json(other),
    }
}

/// JSON as Python's `json.dumps` writes it (`", "` and `": "` separators), which is what
/// apps of the 12-factor charms see for lists and mappings.
pub fn python_json(value: &Value) -> String {
    match value {
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(python_json).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("{}: {}", Value::String(k.clone()), python_json(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Number(_) => encode_env(value),
        other => other.to_string(),
    }
}

/// `<prefix><NAME>`: dashes to underscores, upper case.
pub fn env_name(prefix: &str, option: &str) -> String {
    format!("{prefix}{}", option.replace('-', "_").to_ascii_uppercase())
}

/// Option values with defaults applied; options with neither are absent.
pub fn resolved_values(
    options: &IndexMap<String, ConfigOption>,
    set: &IndexMap<String, Value>,
) -> IndexMap<String, Value> {
    let mut out = IndexMap::new();
    for (name, opt) in options {
        if let Some(v) = set
            .get(name)
            .filter(|v| !v.is_null())
            .or(opt.default.as_ref())
        {
            out.insert(name.clone(), v.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_encode_like_paas_charm() {
        assert_eq!(encode_env(&json!("a b")), "a b");
        assert_eq!(encode_env(&json!(true)), "true");
        assert_eq!(encode_env(&json!(42)), "42");
        assert_eq!(encode_env(&json!(2.0)), "2.0");
        assert_eq!(encode_env(&json!(1.5)), "1.5");
        assert_eq!(encode_env(&json!(["a", "b"])), r#"["a", "b"]"#);
        assert_eq!(encode_env(&json!({"k": 1})), r#"{"k": 1}"#);
    }

    #[test]
    fn names_map_dashes_and_case() {
        assert_eq!(
            env_name("APP_", "config-option-name"),
            "APP_CONFIG_OPTION_NAME"
        );
        assert_eq!(env_name("FLASK_", "token"), "FLASK_TOKEN");
    }

    #[test]
    fn cli_values_follow_the_option_type() {
        let opt = |t| ConfigOption {
            type_: t,
            default: None,
            description: None,
            optional: None,
            location: None,
        };
        assert_eq!(
            parse_cli_value(&opt(OptionType::Int), "4").unwrap(),
            json!(4)
        );
        assert!(parse_cli_value(&opt(OptionType::Int), "four")
            .unwrap_err()
            .contains("expected an integer"));
        assert_eq!(
            parse_cli_value(&opt(OptionType::Boolean), "True").unwrap(),
            json!(true)
        );
        assert_eq!(
            parse_cli_value(&opt(OptionType::Float), "0.5").unwrap(),
            json!(0.5)
        );
        assert_eq!(
            parse_cli_value(&opt(OptionType::String), "4").unwrap(),
            json!("4")
        );
    }
}
