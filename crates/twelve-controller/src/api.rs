//! The controller's API: one JSON request per line on the unix socket, one JSON response
//! per line back. The CLI is its only client.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    Ping,
    /// Deploy a packed release of a project (a new app, or a new release of one).
    Deploy {
        app: String,
        project_dir: String,
        #[serde(default)]
        charm_dir: Option<String>,
        release_id: String,
        #[serde(default)]
        num_units: Option<u32>,
        /// `key=value` settings, parsed against the project's options.
        #[serde(default)]
        config: IndexMap<String, String>,
        /// Seconds the change may take to be ready everywhere before it is rolled back.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout: Option<u64>,
        /// Juju-style constraints (`mem=512M cores=1.5`) for every unit.
        #[serde(default)]
        constraints: Option<String>,
    },
    /// Change an app's constraints; running units get the new limits at once.
    SetConstraints {
        app: String,
        constraints: String,
    },
    /// Go back to an earlier release of an app.
    Rollback {
        app: String,
        release: u32,
    },
    Status {
        #[serde(default)]
        app: Option<String>,
    },
    GetConfig {
        app: String,
    },
    SetConfig {
        app: String,
        #[serde(default)]
        set: IndexMap<String, String>,
        #[serde(default)]
        reset: Vec<String>,
    },
    Scale {
        app: String,
        units: u32,
    },
    RemoveUnit {
        app: String,
        unit: u32,
    },
    Remove {
        app: String,
        #[serde(default)]
        destroy_data: bool,
    },
    Releases {
        app: String,
    },
    Exec {
        app: String,
        unit: u32,
        command: Vec<String>,
        #[serde(default)]
        env: IndexMap<String, String>,
        #[serde(default)]
        timeout: Option<String>,
    },
    AddSecret {
        name: String,
        content: IndexMap<String, String>,
        #[serde(default)]
        description: Option<String>,
    },
    UpdateSecret {
        secret: String,
        content: IndexMap<String, String>,
        #[serde(default)]
        description: Option<String>,
    },
    Secrets,
    /// An app's project and state (config, opened secrets, relation data, secret key) as
    /// the rules see them, without this machine's ports: for `twelve k8s --from-app`.
    /// Carries secret values: the socket is the user's own (0600).
    ExportState {
        app: String,
    },
    ShowSecret {
        secret: String,
        #[serde(default)]
        reveal: bool,
        #[serde(default)]
        revision: Option<u32>,
    },
    GrantSecret {
        secret: String,
        app: String,
    },
    RevokeSecret {
        secret: String,
        app: String,
    },
    RemoveSecret {
        secret: String,
    },
    Actions {
        app: String,
    },
    RunAction {
        app: String,
        unit: u32,
        action: String,
        #[serde(default)]
        params: IndexMap<String, String>,
    },
    /// Start a managed backing service, or adopt an external one.
    DeployService {
        kind: String,
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        external: Option<String>,
        #[serde(default)]
        management: Option<String>,
        /// An adopted Redis: limit each app to keys `<app>:*`.
        #[serde(default)]
        key_prefix: bool,
    },
    /// Integrate an app with a backing service, or give an endpoint's data by hand.
    Integrate {
        app: String,
        target: String,
        #[serde(default)]
        data: IndexMap<String, String>,
    },
    RemoveRelation {
        app: String,
        target: String,
        #[serde(default)]
        destroy_data: bool,
    },
    RemoveService {
        name: String,
        #[serde(default)]
        destroy_data: bool,
    },
    Shutdown,
    /// Domains, certificates, maintenance mode, listeners (`crate::edge`).
    Edge(crate::edge::EdgeRequest),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default)]
    pub result: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
}

/// An error for the user: what went wrong and what to do.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl ApiError {
    pub fn new(message: impl Into<String>) -> ApiError {
        ApiError {
            message: message.into(),
            hint: None,
        }
    }
    pub fn hint(mut self, hint: impl Into<String>) -> ApiError {
        self.hint = Some(hint.into());
        self
    }
}

impl Response {
    pub fn ok(result: serde_json::Value) -> Response {
        Response {
            ok: true,
            result,
            error: None,
        }
    }
    pub fn err(e: ApiError) -> Response {
        Response {
            ok: false,
            result: serde_json::Value::Null,
            error: Some(e),
        }
    }
}

/// `twelve status --format json`, per app.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct AppStatus {
    pub name: String,
    pub framework: String,
    pub status: String,
    pub message: String,
    pub url: Option<String>,
    pub release: Option<u32>,
    pub scheduler_unit: Option<u32>,
    pub units: Vec<UnitStatus>,
    pub integrations: Vec<IntegrationStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<MigrationStatus>,
    /// The generation of desired state this status reflects (see `Deploy`'s answer).
    #[serde(default)]
    pub generation: u64,
    /// While the app is blocked but its units keep running what they ran: that release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving_release: Option<u32>,
    /// The last change that was rolled back, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<crate::model::RollbackRecord>,
    /// Each unit's limits (`mem` in bytes, `cores`), when the app has constraints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraints: Option<crate::model::Constraints>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct UnitStatus {
    pub name: String,
    pub status: String,
    pub message: String,
    pub address: String,
    pub leader: bool,
    pub scheduler: bool,
    /// The unit's supervisor directory (`twelve pebble --dir`, and where `logs` reads).
    #[serde(default)]
    pub supervisor: String,
    /// In the ingress's rotation: ready, and running its plan (or the plan it keeps while
    /// the app is blocked).
    #[serde(default)]
    pub serving: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct MigrationStatus {
    pub command: Vec<String>,
    pub state: String,
    pub attempts: u32,
    #[serde(default)]
    pub output_tail: String,
}

/// One integration of an app, in `status`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct IntegrationStatus {
    pub endpoint: String,
    pub interface: String,
    /// The backing service, or `external` for data given by hand.
    pub provider: String,
    pub status: String,
    #[serde(default)]
    pub message: String,
}

/// A backing service, in `status`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ServiceStatus {
    pub name: String,
    pub kind: String,
    pub mode: String,
    pub address: String,
    pub status: String,
    pub message: String,
    pub integrated_with: Vec<String>,
}
