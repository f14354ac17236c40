//! The data keys each integration takes, and the checks `twelve integrate --data` makes before
//! accepting data given by hand (`validate_data`).

use super::super::{IntegrationKind, RelationData};
use super::common::{check_host_ports, get, parse_bool, parse_port};
use super::urlparse::ParsedUrl;
use super::{oauth, s3, saml, smtp};

/// What must be present.
enum Required {
    /// Every one of these keys.
    All(&'static [&'static str]),
    /// `uri`, or every one of these keys.
    UriOr(&'static [&'static str]),
    /// At least one of these keys.
    AnyOf(&'static [&'static str]),
}

/// The checks on one kind's data.
struct Spec {
    accepted: &'static [&'static str],
    required: Required,
    /// Values that must be URLs with a scheme and a host (comma-separated lists for `url_lists`).
    urls: &'static [&'static str],
    url_lists: &'static [&'static str],
    ports: &'static [&'static str],
    host_ports: &'static [&'static str],
    bools: &'static [&'static str],
    choices: &'static [(&'static str, &'static [&'static str])],
    /// Keys that must be given together.
    pairs: &'static [(&'static str, &'static str)],
    json_lists: &'static [&'static str],
}

const NONE: &[&str] = &[];
const DB_KEYS: &[&str] = &["uri", "username", "password", "endpoints", "database"];
const DB_PARTS: &[&str] = &["username", "password", "endpoints"];

const fn spec(accepted: &'static [&'static str], required: Required) -> Spec {
    Spec {
        accepted,
        required,
        urls: NONE,
        url_lists: NONE,
        ports: NONE,
        host_ports: NONE,
        bools: NONE,
        choices: &[],
        pairs: &[],
        json_lists: NONE,
    }
}

/// The name an integration kind is known by (its usual endpoint name).
pub(crate) fn label(kind: IntegrationKind) -> &'static str {
    use IntegrationKind::*;
    match kind {
        Postgresql => "postgresql",
        Mysql => "mysql",
        Mongodb => "mongodb",
        Rabbitmq => "rabbitmq",
        Redis => "redis",
        S3 => "s3",
        Openfga => "openfga",
        Saml => "saml",
        Tracing => "tracing",
        Smtp => "smtp",
        Kafka => "kafka",
        Oauth => "oauth",
        Valkey => "valkey",
        HttpProxy => "http-proxy",
        Logging => "logging",
    }
}

fn spec_of(kind: IntegrationKind) -> Spec {
    use IntegrationKind::*;
    match kind {
        Postgresql | Mysql | Mongodb => Spec {
            urls: &["uri"],
            host_ports: &["endpoints"],
            ..spec(DB_KEYS, Required::UriOr(DB_PARTS))
        },
        Redis => Spec {
            urls: &["uri"],
            ..spec(&["uri"], Required::All(&["uri"]))
        },
        Valkey => Spec {
            urls: &["uri"],
            ports: &["port"],
            host_ports: &["endpoints"],
            bools: &["tls"],
            ..spec(
                &[
                    "uri",
                    "endpoints",
                    "host",
                    "port",
                    "username",
                    "password",
                    "read-only-endpoints",
                    "sentinel-endpoints",
                    "mode",
                    "version",
                    "tls",
                ],
                Required::AnyOf(&["uri", "endpoints", "host"]),
            )
        },
        Rabbitmq => Spec {
            urls: &["uri"],
            ports: &["port"],
            ..spec(
                &[
                    "uri",
                    "username",
                    "password",
                    "hostname",
                    "hostnames",
                    "vhost",
                    "port",
                ],
                Required::UriOr(&["username", "password", "hostname"]),
            )
        },
        S3 => Spec {
            urls: &["endpoint"],
            choices: &[
                ("uri-style", &["path", "host"]),
                ("s3-uri-style", &["path", "host"]),
                ("addressing-style", &["path", "virtual", "host"]),
            ],
            json_lists: &["attributes", "tls-ca-chain"],
            ..spec(
                &[
                    "access-key",
                    "secret-key",
                    "bucket",
                    "region",
                    "storage-class",
                    "endpoint",
                    "path",
                    "api-version",
                    "s3-api-version",
                    "uri-style",
                    "s3-uri-style",
                    "addressing-style",
                    "attributes",
                    "tls-ca-chain",
                ],
                Required::All(&s3::REQUIRED),
            )
        },
        Saml => Spec {
            urls: &["metadata-url", "single-sign-on-redirect-url"],
            ..spec(
                &[
                    "entity-id",
                    "metadata-url",
                    "single-sign-on-redirect-url",
                    "signing-certificate",
                ],
                Required::All(&saml::REQUIRED),
            )
        },
        Tracing => Spec {
            url_lists: &["endpoint"],
            ..spec(&["endpoint"], Required::All(&["endpoint"]))
        },
        Smtp => Spec {
            ports: &["port"],
            bools: &["skip-ssl-verify"],
            choices: &[
                ("auth-type", &smtp::AUTH_TYPES),
                ("transport-security", &smtp::TRANSPORT_SECURITIES),
            ],
            ..spec(
                &[
                    "host",
                    "port",
                    "user",
                    "password",
                    "auth-type",
                    "transport-security",
                    "domain",
                    "skip-ssl-verify",
                ],
                Required::All(&smtp::REQUIRED),
            )
        },
        Openfga => Spec {
            urls: &["grpc-api-url", "http-api-url"],
            ..spec(
                &["store-id", "token", "grpc-api-url", "http-api-url"],
                Required::All(&["store-id", "http-api-url"]),
            )
        },
        Kafka => Spec {
            host_ports: &["bootstrap-servers"],
            pairs: &[("username", "password")],
            ..spec(
                &[
                    "bootstrap-servers",
                    "username",
                    "password",
                    "topic",
                    "consumer-group-prefix",
                    "tls-ca",
                ],
                Required::All(&["bootstrap-servers"]),
            )
        },
        Oauth => Spec {
            urls: &[
                "issuer-url",
                "authorization-endpoint",
                "token-endpoint",
                "userinfo-endpoint",
                "jwks-endpoint",
            ],
            ..spec(&oauth::REQUIRED, Required::All(&oauth::REQUIRED))
        },
        Logging => Spec {
            url_lists: &["url"],
            ..spec(&["url"], Required::All(&["url"]))
        },
        HttpProxy => Spec {
            urls: &["http-proxy", "https-proxy"],
            ..spec(
                &["http-proxy", "https-proxy"],
                Required::AnyOf(&["http-proxy", "https-proxy"]),
            )
        },
    }
}

fn give(keys: &[&str]) -> String {
    keys.iter()
        .map(|k| format!("--data {k}=..."))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Checks data given by hand for `kind`; the message names what to fix and the accepted keys.
pub fn validate_data(kind: IntegrationKind, data: &RelationData) -> Result<(), String> {
    let name = label(kind);
    let spec = spec_of(kind);
    let accepted = spec.accepted.join(", ");

    let unknown: Vec<&str> = data
        .keys()
        .map(String::as_str)
        .filter(|k| !spec.accepted.contains(k))
        .collect();
    if !unknown.is_empty() {
        let list = unknown
            .iter()
            .map(|k| format!("{k:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        let noun = if unknown.len() == 1 { "key" } else { "keys" };
        return Err(format!(
            "{name} does not take the {noun} {list}; accepted keys: {accepted}"
        ));
    }

    let absent = |keys: &[&'static str]| -> Vec<&'static str> {
        keys.iter()
            .copied()
            .filter(|k| get(data, k).is_none())
            .collect()
    };
    match spec.required {
        Required::All(keys) => {
            let gaps = absent(keys);
            if !gaps.is_empty() {
                return Err(format!(
                    "{name} needs {}: give {} (accepted keys: {accepted})",
                    gaps.join(", "),
                    give(&gaps)
                ));
            }
        }
        Required::UriOr(parts) if get(data, "uri").is_none() => {
            let gaps = absent(parts);
            if gaps.len() == parts.len() {
                return Err(format!(
                    "{name} needs a uri, or {}: give --data uri=... or {} (accepted keys: {accepted})",
                    parts.join(", "),
                    give(parts)
                ));
            }
            if !gaps.is_empty() {
                return Err(format!(
                    "{name} needs {} (or a whole uri): give {} (accepted keys: {accepted})",
                    gaps.join(", "),
                    give(&gaps)
                ));
            }
        }
        Required::UriOr(_) => {}
        Required::AnyOf(keys) => {
            if absent(keys).len() == keys.len() {
                return Err(format!(
                    "{name} needs one of {}: give e.g. --data {}=... (accepted keys: {accepted})",
                    keys.join(", "),
                    keys[0]
                ));
            }
        }
    }

    for (a, b) in spec.pairs {
        if get(data, a).is_some() != get(data, b).is_some() {
            let (given, lacking) = if get(data, a).is_some() {
                (a, b)
            } else {
                (b, a)
            };
            return Err(format!(
                "{name} has {given} but no {lacking}: give both, or neither"
            ));
        }
    }
    for key in spec.urls {
        if let Some(v) = get(data, key) {
            check_url(v.trim()).map_err(|e| format!("{name} {key}: {e}"))?;
        }
    }
    for key in spec.url_lists {
        if let Some(v) = get(data, key) {
            for item in v.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                check_url(item).map_err(|e| format!("{name} {key}: {e}"))?;
            }
        }
    }
    for key in spec.ports {
        if let Some(v) = get(data, key) {
            if parse_port(v.trim()).is_none() {
                return Err(format!(
                    "{name} {key}: {v:?} is not a port number (0 to 65535)"
                ));
            }
        }
    }
    for key in spec.host_ports {
        if let Some(v) = get(data, key) {
            check_host_ports(v)
                .map_err(|e| format!("{name} {key}: {e}; give host:port[,host:port...]"))?;
        }
    }
    for key in spec.bools {
        if let Some(v) = get(data, key) {
            if parse_bool(v).is_none() {
                return Err(format!("{name} {key}: {v:?} is not true or false"));
            }
        }
    }
    for (key, allowed) in spec.choices {
        if let Some(v) = get(data, key) {
            if !allowed.contains(&v) {
                return Err(format!(
                    "{name} {key}: {v:?} is not one of {}",
                    allowed.join(", ")
                ));
            }
        }
    }
    for key in spec.json_lists {
        if let Some(v) = get(data, key) {
            s3::json_list(v).map_err(|e| format!("{name} {key}: {e}"))?;
        }
    }
    Ok(())
}

/// A URL with a scheme and a host, and a numeric port if any.
fn check_url(value: &str) -> Result<(), String> {
    let parsed = ParsedUrl::parse(value).map_err(|e| format!("{value:?} is not a URL: {e}"))?;
    if parsed.scheme.is_empty() || parsed.netloc.is_empty() || parsed.hostname().is_none() {
        return Err(format!(
            "{value:?} is not a URL of the form scheme://host[:port][/path]"
        ));
    }
    parsed.port().map_err(|e| format!("{value:?}: {e}"))?;
    Ok(())
}
