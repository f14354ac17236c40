//! From statsd names to Prometheus names: the mapping the Flask and Django rocks ship in
//! `/statsd-mapping.conf`, with the framework's prefix,
//!
//! ```yaml
//! mappings:
//!   - match: gunicorn.request.status.*
//!     name: flask_response_code
//!     labels: {status: $1}
//!   - match: gunicorn.requests
//!     name: flask_requests
//!   - match: gunicorn.request.duration
//!     name: flask_request_duration
//! ```
//!
//! and, for every other name, `statsd_exporter`'s default: invalid characters become `_`
//! (`gunicorn.workers` is `gunicorn_workers`, `my.app.logins` is `my_app_logins`).

/// Maps names for one framework prefix (`flask`, `django`).
#[derive(Debug, Clone, PartialEq)]
pub struct Mapper {
    prefix: String,
}

impl Mapper {
    pub fn new(prefix: &str) -> Mapper {
        Mapper {
            prefix: escape_metric_name(prefix),
        }
    }

    /// The Prometheus name of a statsd name and the labels the mapping adds.
    pub fn map(&self, name: &str) -> (String, Vec<(String, String)>) {
        let p = &self.prefix;
        match name {
            "gunicorn.requests" => (format!("{p}_requests"), vec![]),
            "gunicorn.request.duration" => (format!("{p}_request_duration"), vec![]),
            _ => match name.strip_prefix("gunicorn.request.status.") {
                // A glob `*` matches one dot-separated component.
                Some(status) if !status.is_empty() && !status.contains('.') => (
                    format!("{p}_response_code"),
                    vec![("status".into(), status.to_string())],
                ),
                _ => (escape_metric_name(name), vec![]),
            },
        }
    }
}

/// `statsd_exporter`'s `EscapeMetricName`: characters other than `[a-zA-Z0-9_]` become `_`
/// (a second `-` in a row is dropped), and a leading digit gets a `_` before it.
pub fn escape_metric_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 1);
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        out.push('_');
    }
    let mut prev = '\0';
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            out.push(c);
        } else if !(c == '-' && prev == '-') {
            out.push('_');
        }
        prev = c;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::type_complexity)] // a table reads best written out inline
    fn the_gunicorn_mapping_with_the_framework_prefix() {
        let cases: &[(&str, &str, &str, &[(&str, &str)])] = &[
            ("flask", "gunicorn.requests", "flask_requests", &[]),
            (
                "flask",
                "gunicorn.request.duration",
                "flask_request_duration",
                &[],
            ),
            (
                "flask",
                "gunicorn.request.status.200",
                "flask_response_code",
                &[("status", "200")],
            ),
            (
                "django",
                "gunicorn.request.status.503",
                "django_response_code",
                &[("status", "503")],
            ),
            ("django", "gunicorn.requests", "django_requests", &[]),
            // Not mapped: the default escaping.
            ("flask", "gunicorn.workers", "gunicorn_workers", &[]),
            ("flask", "gunicorn.log.error", "gunicorn_log_error", &[]),
            (
                "flask",
                "gunicorn.request.status.2.0",
                "gunicorn_request_status_2_0",
                &[],
            ),
            (
                "flask",
                "gunicorn.request.status.",
                "gunicorn_request_status_",
                &[],
            ),
            ("flask", "my_counter", "my_counter", &[]),
        ];
        for (prefix, name, want, labels) in cases {
            let (got, got_labels) = Mapper::new(prefix).map(name);
            assert_eq!(got, *want, "{prefix} {name}");
            let labels: Vec<(String, String)> = labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            assert_eq!(got_labels, labels, "{prefix} {name}");
        }
    }

    #[test]
    fn escaping_follows_statsd_exporter() {
        for (name, want) in [
            ("my.app.logins", "my_app_logins"),
            ("already_fine", "already_fine"),
            ("9lives", "_9lives"),
            ("a-b", "a_b"),
            ("a--b", "a_b"),
            ("a---b", "a_b"),
            ("a b/c", "a_b_c"),
            ("caf\u{e9}", "caf_"),
            ("", ""),
        ] {
            assert_eq!(escape_metric_name(name), want, "{name:?}");
        }
    }
}
