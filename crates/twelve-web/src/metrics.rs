//! `/metrics`: Prometheus text exposition format 0.0.4, written by hand from a
//! [`Snapshot`] (every value is derived from it, so there is no registry to keep).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering;

use crate::{Snapshot, WebStats};

/// Statuses always exported (with 0 when no app or unit has them), so an alert on
/// `twelve_apps{status="blocked"} > 0` sees the series go back to 0.
pub const KNOWN_STATUSES: [&str; 6] = [
    "active",
    "blocked",
    "error",
    "maintenance",
    "unknown",
    "waiting",
];

/// twelve's own metrics from `snapshot`, followed by `snapshot.ingress_metrics`.
pub fn render_metrics(snapshot: &Snapshot) -> String {
    render_inner(snapshot, None)
}

pub(crate) fn render(snapshot: &Snapshot, stats: &WebStats) -> String {
    render_inner(snapshot, Some(stats))
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn render_inner(s: &Snapshot, stats: Option<&WebStats>) -> String {
    let mut out = String::new();

    header(&mut out, "twelve_apps", "gauge", "Apps by status.");
    let mut apps: BTreeMap<&str, u64> = KNOWN_STATUSES.iter().map(|k| (*k, 0)).collect();
    for app in &s.apps {
        *apps.entry(app.status.as_str()).or_default() += 1;
    }
    for (status, n) in apps {
        let _ = writeln!(out, "twelve_apps{{status=\"{}\"}} {n}", escape(status));
    }

    header(
        &mut out,
        "twelve_units",
        "gauge",
        "Units by app and status.",
    );
    for app in &s.apps {
        let mut units: BTreeMap<&str, u64> = KNOWN_STATUSES.iter().map(|k| (*k, 0)).collect();
        for unit in &app.units {
            *units.entry(unit.status.as_str()).or_default() += 1;
        }
        for (status, n) in units {
            let _ = writeln!(
                out,
                "twelve_units{{app=\"{}\",status=\"{}\"}} {n}",
                escape(&app.name),
                escape(status)
            );
        }
    }

    header(
        &mut out,
        "twelve_unit_restarts_total",
        "counter",
        "Restarts of a unit's services.",
    );
    for app in &s.apps {
        for unit in &app.units {
            let _ = writeln!(
                out,
                "twelve_unit_restarts_total{{app=\"{}\",unit=\"{}\"}} {}",
                escape(&app.name),
                escape(&unit.name),
                unit.restarts
            );
        }
    }

    if !s.services.is_empty() {
        header(
            &mut out,
            "twelve_backup_last_success_timestamp_seconds",
            "gauge",
            "Unix time of the last successful backup of a backing service.",
        );
        for svc in &s.services {
            if let Some(t) = svc.last_backup_success {
                let _ = writeln!(
                    out,
                    "twelve_backup_last_success_timestamp_seconds{{service=\"{}\",kind=\"{}\"}} {t}",
                    escape(&svc.name),
                    escape(&svc.kind)
                );
            }
        }
        header(
            &mut out,
            "twelve_backup_failures_total",
            "counter",
            "Backups of a backing service that failed.",
        );
        for svc in &s.services {
            let _ = writeln!(
                out,
                "twelve_backup_failures_total{{service=\"{}\",kind=\"{}\"}} {}",
                escape(&svc.name),
                escape(&svc.kind),
                svc.backup_failures
            );
        }
    }

    if !s.certificates.is_empty() {
        header(
            &mut out,
            "twelve_certificate_expiry_timestamp_seconds",
            "gauge",
            "Unix time the certificate serving a domain expires.",
        );
        for c in &s.certificates {
            if let Some(t) = c.not_after {
                let _ = writeln!(
                    out,
                    "twelve_certificate_expiry_timestamp_seconds{{host=\"{}\",app=\"{}\",source=\"{}\"}} {t}",
                    escape(&c.host),
                    escape(&c.app),
                    escape(&c.source)
                );
            }
        }
        header(
            &mut out,
            "twelve_certificate_renewal_failures",
            "gauge",
            "Failed ACME attempts in a row for a domain (0 once one succeeds).",
        );
        for c in &s.certificates {
            let _ = writeln!(
                out,
                "twelve_certificate_renewal_failures{{host=\"{}\",app=\"{}\"}} {}",
                escape(&c.host),
                escape(&c.app),
                c.renewal_failures
            );
        }
    }

    let c = &s.controller;
    header(
        &mut out,
        "twelve_migrations_total",
        "counter",
        "Database migration runs.",
    );
    let _ = writeln!(out, "twelve_migrations_total {}", c.migrations_total);
    header(
        &mut out,
        "twelve_migration_failures_total",
        "counter",
        "Database migration runs that failed.",
    );
    let _ = writeln!(
        out,
        "twelve_migration_failures_total {}",
        c.migration_failures_total
    );
    header(
        &mut out,
        "twelve_reconcile_duration_seconds",
        "summary",
        "Duration of the controller's reconcile passes.",
    );
    let _ = writeln!(
        out,
        "twelve_reconcile_duration_seconds_sum {}",
        float(c.reconcile_seconds_sum)
    );
    let _ = writeln!(
        out,
        "twelve_reconcile_duration_seconds_count {}",
        c.reconciles_total
    );
    header(
        &mut out,
        "twelve_reconcile_last_duration_seconds",
        "gauge",
        "Duration of the last reconcile pass.",
    );
    let _ = writeln!(
        out,
        "twelve_reconcile_last_duration_seconds {}",
        float(c.reconcile_seconds_last)
    );

    if let Some(stats) = stats {
        header(
            &mut out,
            "twelve_dashboard_page_loads_total",
            "counter",
            "Loads of the dashboard page.",
        );
        let _ = writeln!(
            out,
            "twelve_dashboard_page_loads_total {}",
            stats.page_loads.load(Ordering::Relaxed)
        );
        header(
            &mut out,
            "twelve_dashboard_event_streams",
            "gauge",
            "Open /events streams.",
        );
        let _ = writeln!(
            out,
            "twelve_dashboard_event_streams {}",
            stats.event_streams.load(Ordering::Relaxed)
        );
    }

    if let Some(ingress) = s.ingress_metrics.as_deref() {
        out.push_str(ingress);
        if !ingress.is_empty() && !ingress.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

/// A label value, escaped as the text format wants.
pub(crate) fn escape(v: &str) -> String {
    let mut o = String::with_capacity(v.len());
    for ch in v.chars() {
        match ch {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o
}

fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_label_values() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn floats() {
        assert_eq!(float(0.25), "0.25");
        assert_eq!(float(f64::INFINITY), "+Inf");
        assert_eq!(float(f64::NAN), "NaN");
        assert_eq!(float(3.0), "3");
    }

    #[test]
    fn certificates_show_their_expiry_and_failures() {
        let s = Snapshot {
            certificates: vec![
                crate::CertificateView {
                    host: "shop.example.com".into(),
                    app: "web".into(),
                    source: "acme".into(),
                    not_after: Some(1_900_000_000),
                    renewal_failures: 3,
                    last_error: "connection refused".into(),
                    ..Default::default()
                },
                crate::CertificateView {
                    host: "new.example.com".into(),
                    app: "web".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let text = render_metrics(&s);
        assert!(text.contains("twelve_certificate_expiry_timestamp_seconds{host=\"shop.example.com\",app=\"web\",source=\"acme\"} 1900000000\n"), "{text}");
        assert!(
            text.contains(
                "twelve_certificate_renewal_failures{host=\"shop.example.com\",app=\"web\"} 3\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "twelve_certificate_renewal_failures{host=\"new.example.com\",app=\"web\"} 0\n"
            ),
            "{text}"
        );
        assert!(
            !text.contains("expiry_timestamp_seconds{host=\"new.example.com\""),
            "{text}"
        );
    }

    #[test]
    fn appends_newline_to_ingress_text() {
        let s = Snapshot {
            ingress_metrics: Some("x 1".into()),
            ..Default::default()
        };
        assert!(render_metrics(&s).ends_with("\nx 1\n"));
    }
}
