//! The JSON shapes of the API, shared by the server and the client.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

/// An item of `GET /v1/services`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ServiceInfo {
    pub name: String,
    /// `enabled` or `disabled`.
    pub startup: String,
    /// `active`, `inactive`, `backoff` or `error`.
    pub current: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_since: Option<String>,
    /// The main process (twelve extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// How many times a process was started (twelve extension).
    #[serde(default)]
    pub start_count: u64,
}

impl ServiceInfo {
    pub fn is_active(&self) -> bool {
        self.current == "active"
    }
}

/// An item of `GET /v1/checks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct CheckInfo {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    pub startup: String,
    /// `up`, `down` or `inactive`.
    pub status: String,
    #[serde(default)]
    pub successes: u64,
    #[serde(default)]
    pub failures: u32,
    pub threshold: u32,
    /// The last failure's message (twelve extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `POST /v1/exec`: a one-off command, run to completion.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ExecRequest {
    pub command: Vec<String>,
    /// Take environment, user, group and working dir from this service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_context: Option<String>,
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub environment: IndexMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// A Go duration (`"10m"`); the process group is killed when it passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<u32>,
    /// Written to the command's stdin, which is then closed (twelve extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
}

impl ExecRequest {
    pub fn new<S: Into<String>>(command: impl IntoIterator<Item = S>) -> ExecRequest {
        ExecRequest {
            command: command.into_iter().map(Into::into).collect(),
            ..Default::default()
        }
    }
}

/// What an exec change carries in its `data` when done.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ExecResult {
    /// The exit code; -1 when killed by a signal.
    pub exit_code: i32,
    /// Output as text (invalid UTF-8 replaced), at most 64 MiB each.
    pub stdout: String,
    pub stderr: String,
}

/// A line of `GET /v1/logs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    pub time: String,
    pub service: String,
    pub message: String,
}

impl LogEntry {
    /// `2021-05-13T03:16:51.001Z [svc] message`
    pub fn to_text(&self) -> String {
        format!("{} [{}] {}", self.time, self.service, self.message)
    }
}

/// A log target and how forwarding to it goes, as `GET /v1/log-targets` returns it
/// (twelve extension).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct LogTargetInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub type_: String,
    pub location: String,
    /// The services of the plan whose lines go to this target.
    pub services: Vec<String>,
    /// `active`, `failing` (the last request failed; retrying) or `unsupported` (nothing
    /// is forwarded; see `error`).
    pub status: String,
    /// Lines waiting to be sent.
    pub buffered: u64,
    /// Lines accepted by the receiver.
    pub sent: u64,
    /// Lines dropped: the oldest when the buffer was full, or refused with a 4xx.
    pub dropped: u64,
    /// Consecutive failed requests.
    pub failures: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sent: Option<String>,
}

/// A change, as `GET /v1/changes/{id}` returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ChangeInfo {
    pub id: String,
    pub kind: String,
    pub summary: String,
    /// `Doing`, `Done` or `Error`.
    pub status: String,
    pub ready: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub err: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spawn_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SystemInfo {
    pub version: String,
    /// The kernel's boot id, as Pebble: the same across daemon restarts.
    #[serde(default)]
    pub boot_id: String,
    /// Differs for each run of the daemon (twelve extension): a change means layers
    /// added over the API are gone and must be added again.
    #[serde(default)]
    pub daemon_id: String,
}
