//! The desired state of one app, as the rules see it: plain data, no I/O.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::integrations::RelationData;

/// Everything about an app (and the unit being planned) that the rules depend on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AppState {
    /// The app's name (Juju application name).
    pub app: String,
    /// The model name, used in default base URLs and peer FQDNs like paas-charm.
    pub model: String,
    /// This unit's number.
    pub unit: u32,
    /// Live unit numbers (including this one).
    pub units: Vec<u32>,
    /// The app's URL; default `http://<app>.<model>:<port>` as paas-charm.
    pub base_url: Option<String>,
    /// Config values the user set (defaults are not here), by option name.
    pub config: IndexMap<String, serde_json::Value>,
    /// Secrets referenced by the config: id -> what the app may see of them.
    pub secrets: IndexMap<String, SecretView>,
    /// Relation data by endpoint name.
    pub integrations: IndexMap<String, RelationData>,
    /// The generated app secret key (`<P>SECRET_KEY`); `None` until it exists.
    pub secret_key: Option<String>,
    /// Model-level proxy settings (Juju's `juju-http-proxy` etc.).
    pub proxy: ProxySettings,
    /// Ports and addresses the substrate assigned to this unit.
    pub network: UnitNetwork,
}

/// A secret as one app sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SecretView {
    /// The secret's name (label), for messages.
    pub name: Option<String>,
    /// The content of the revision the app tracks; `None` when not granted to the app.
    pub content: Option<IndexMap<String, String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProxySettings {
    pub http_proxy: Option<String>,
    pub https_proxy: Option<String>,
    pub no_proxy: Option<String>,
}

/// Where this unit listens and how its peers are reached. Empty means the rock's defaults
/// (port 8000/8080 on 0.0.0.0, Kubernetes-style peer FQDNs).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UnitNetwork {
    /// The address the app binds to (default `0.0.0.0`).
    pub bind_host: Option<String>,
    /// The app's port, overriding configuration (each local unit has its own).
    pub app_port: Option<u16>,
    /// The metrics port, when the app serves metrics on a port of its own (for Flask and
    /// Django, the statsd exporter's).
    pub metrics_port: Option<u16>,
    /// Flask and Django: the port the unit's statsd exporter receives on (UDP and TCP);
    /// default 9125 as in the charms.
    #[serde(default)]
    pub statsd_port: Option<u16>,
    /// Addresses of units by number (for `<P>PEER_FQDNS`); default
    /// `<app>-<n>.<app>-endpoints.<model>.svc.cluster.local`.
    pub peer_addresses: IndexMap<u32, String>,
}

impl AppState {
    pub fn new(app: &str) -> AppState {
        AppState {
            app: app.to_string(),
            model: "default".into(),
            unit: 0,
            units: vec![0],
            ..Default::default()
        }
    }

    /// The unit that runs `-scheduler` services: unit 0 when it is live, else the lowest
    /// live unit, so scaling down never leaves the app without its scheduler.
    pub fn scheduler_unit(&self) -> Option<u32> {
        if self.units.contains(&0) {
            Some(0)
        } else {
            self.units.iter().copied().min()
        }
    }

    pub fn peer_address(&self, unit: u32) -> String {
        self.network
            .peer_addresses
            .get(&unit)
            .cloned()
            .unwrap_or_else(|| {
                format!(
                    "{app}-{unit}.{app}-endpoints.{model}.svc.cluster.local",
                    app = self.app,
                    model = self.model
                )
            })
    }
}
