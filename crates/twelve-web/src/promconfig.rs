//! `/prometheus-config`: a `scrape_configs:` block to paste into `prometheus.yml`.
//!
//! Prometheus honours the labels of a discovered target before its scrape config's
//! defaults (`PopulateDiscoveredLabels` in `scrape/target.go` sets `job`,
//! `__metrics_path__`, `__scheme__`, `__scrape_interval__` and `__scrape_timeout__` only
//! where the target has none). So each target group's `__metrics_path__` label is the
//! path scraped and its `job` label replaces the `job_name`: no relabelling is needed for
//! either. The one relabelling rule below only makes `instance` the unit name.

/// The YAML block for a twelve web server reachable at `base_url` (e.g.
/// `http://127.0.0.1:9180`, no trailing slash).
pub fn prometheus_config(base_url: &str) -> String {
    let base = base_url.trim_end_matches('/');
    let host = base
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or(base)
        .split('/')
        .next()
        .unwrap_or(base);
    format!(
        r#"# Prometheus scrape configs for twelve. Paste under prometheus.yml, or merge
# with an existing scrape_configs: list.
#
# twelve-apps: every unit's metrics target, found through HTTP service discovery.
# Each target group carries the labels app, unit, release, framework, job and
# __metrics_path__ (plus the job's own labels from paas-config.yaml). Prometheus
# uses a discovered __metrics_path__ as the scrape path and a discovered job
# label as the job name, before this config's defaults: no relabelling is
# needed for either.
scrape_configs:
  - job_name: twelve-apps
    http_sd_configs:
      - url: "{base}/sd"
        refresh_interval: 30s
    relabel_configs:
      # instance="web/0" rather than the unit's host:port (kept in __address__).
      - source_labels: [unit]
        regex: "(.+)"
        target_label: instance
  # twelve-controller: twelve's own metrics and the ingress's request metrics.
  - job_name: twelve-controller
    metrics_path: /metrics
    static_configs:
      - targets: ["{host}"]
"#
    )
}

/// A Host header safe to put into the YAML as it is: `name`, `name:port`, `[v6]:port`.
pub(crate) fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_check() {
        assert!(valid_host("127.0.0.1:9180"));
        assert!(valid_host("[::1]:9180"));
        assert!(valid_host("twelve.example"));
        assert!(!valid_host("x\"\n  - evil"));
        assert!(!valid_host(""));
    }

    #[test]
    fn names_sd_url() {
        let y = prometheus_config("http://h:1/");
        assert!(y.contains("url: \"http://h:1/sd\""));
        assert!(y.contains("targets: [\"h:1\"]"));
    }
}
