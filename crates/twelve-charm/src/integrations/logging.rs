//! The `logging` integration (`loki_push_api`): as paas-charm's `LogForwarder`, every
//! service's output is forwarded to Loki by the unit's supervisor, through Pebble
//! log-targets in the unit's layer. The app's environment does not change.

use indexmap::IndexMap;
use twelve_layer::{LogTarget, Override};

use super::RelationData;

/// The log-targets of one unit for a `logging` relation's data: one `loki` target per push
/// URL in `url` (comma-separated, one per Loki unit), named `loki-<n>`, forwarding every
/// service, labelled with the app and the unit (Pebble adds `pebble_service`).
pub fn log_targets(data: &RelationData, app: &str, unit: &str) -> IndexMap<String, LogTarget> {
    let urls = data.get("url").map(String::as_str).unwrap_or("");
    urls.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .enumerate()
        .map(|(n, url)| {
            let labels = IndexMap::from([
                ("app".to_string(), app.to_string()),
                ("unit".to_string(), unit.to_string()),
            ]);
            let target = LogTarget {
                override_: Some(Override::Replace),
                type_: Some("loki".into()),
                location: Some(url.to_string()),
                services: vec!["all".into()],
                labels,
            };
            (format!("loki-{n}"), target)
        })
        .collect()
}
