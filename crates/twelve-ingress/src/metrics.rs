//! Request metrics. The hot path only touches atomics; the text format is built when
//! `GET /metrics` asks for it.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency histogram, in microseconds (5 ms .. 10 s).
const BUCKETS_US: [u64; 11] = [
    5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000,
    10_000_000,
];
const BUCKET_LABELS: [&str; 11] = [
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10",
];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Requests per status class of one unit (or of an app's "no unit" pseudo-unit, which
/// counts the 503s answered while it had no ready backend).
#[derive(Default)]
pub(crate) struct UnitCounters {
    classes: [AtomicU64; 5],
}

impl UnitCounters {
    pub(crate) fn count(&self, status: u16) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.classes[class].fetch_add(1, Ordering::Relaxed);
    }
}

/// The latency histogram of one app (time to the end of the response body).
#[derive(Default)]
pub(crate) struct AppHistogram {
    buckets: [AtomicU64; BUCKETS_US.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl AppHistogram {
    pub(crate) fn observe(&self, elapsed: Duration) {
        let us = elapsed.as_micros().min(u64::MAX as u128) as u64;
        if let Some(i) = BUCKETS_US.iter().position(|&b| us <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }
}

/// A gauge of requests in flight to one backend.
#[derive(Default)]
pub(crate) struct Inflight(AtomicI64);

impl Inflight {
    pub(crate) fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
    pub(crate) fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders the Prometheus text format from sorted snapshots of the registries.
pub(crate) fn render(
    units: &[(&str, &str, &UnitCounters)],
    histograms: &[(&str, &AppHistogram)],
    inflight: &[(&str, &str, i64)],
) -> String {
    let mut out = String::with_capacity(4096);
    out.push_str(
        "# HELP twelve_ingress_requests_total Requests answered, by app, unit and status class.\n\
         # TYPE twelve_ingress_requests_total counter\n",
    );
    for (app, unit, counters) in units {
        let (app, unit) = (escape(app), escape(unit));
        for (class, n) in CLASSES.iter().zip(&counters.classes) {
            let n = n.load(Ordering::Relaxed);
            if n > 0 || *class != "1xx" {
                let _ = writeln!(
                    out,
                    "twelve_ingress_requests_total{{app=\"{app}\",unit=\"{unit}\",class=\"{class}\"}} {n}"
                );
            }
        }
    }
    out.push_str(
        "# HELP twelve_ingress_request_duration_seconds Time from a request's arrival to the end of its response.\n\
         # TYPE twelve_ingress_request_duration_seconds histogram\n",
    );
    for (app, h) in histograms {
        let app = escape(app);
        let mut cumulative = 0;
        for (le, n) in BUCKET_LABELS.iter().zip(&h.buckets) {
            cumulative += n.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "twelve_ingress_request_duration_seconds_bucket{{app=\"{app}\",le=\"{le}\"}} {cumulative}"
            );
        }
        let count = h.count.load(Ordering::Relaxed);
        let sum = h.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "twelve_ingress_request_duration_seconds_bucket{{app=\"{app}\",le=\"+Inf\"}} {count}\n\
             twelve_ingress_request_duration_seconds_sum{{app=\"{app}\"}} {sum}\n\
             twelve_ingress_request_duration_seconds_count{{app=\"{app}\"}} {count}"
        );
    }
    out.push_str(
        "# HELP twelve_ingress_inflight Requests in flight, by app and unit.\n\
         # TYPE twelve_ingress_inflight gauge\n",
    );
    for (app, unit, n) in inflight {
        let _ = writeln!(
            out,
            "twelve_ingress_inflight{{app=\"{}\",unit=\"{}\"}} {n}",
            escape(app),
            escape(unit)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = AppHistogram::default();
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_secs(30));
        let text = render(&[], &[("web", &h)], &[]);
        assert!(
            text.contains("_bucket{app=\"web\",le=\"0.005\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("_bucket{app=\"web\",le=\"0.05\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("_bucket{app=\"web\",le=\"10\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("_bucket{app=\"web\",le=\"+Inf\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("_count{app=\"web\"} 3\n"), "{text}");
    }

    #[test]
    fn counts_by_class() {
        let c = UnitCounters::default();
        c.count(200);
        c.count(204);
        c.count(503);
        let text = render(&[("web", "web/0", &c)], &[], &[("web", "web/0", 1)]);
        assert!(text.contains("{app=\"web\",unit=\"web/0\",class=\"2xx\"} 2\n"));
        assert!(text.contains("{app=\"web\",unit=\"web/0\",class=\"5xx\"} 1\n"));
        assert!(!text.contains("1xx"));
        assert!(text.contains("twelve_ingress_inflight{app=\"web\",unit=\"web/0\"} 1\n"));
    }
}
